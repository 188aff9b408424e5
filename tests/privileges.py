"""Faults that need the machine's help: a small disk that fills up, and a process that obeys
file permissions even when the tests run as root (as CI does).

``python -m tests.privileges CMD...`` runs CMD without the two capabilities that let root
ignore file permissions (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``), so that a note of mode
0444 or a journal folder of mode 0500 refuses it exactly as it refuses an ordinary user.
For anyone else it just runs CMD.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
DROPPED = (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)
PAGE = os.sysconf("SC_PAGE_SIZE")


def obeying_permissions() -> list[str]:
    """The command prefix that makes what follows obey file permissions."""
    return [sys.executable, "-m", "tests.privileges"]


def capabilities(pid: int, kind: str = "CapEff") -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {kind} in /proc/{pid}/status")


def ignores_permissions(pid: int) -> bool:
    """Whether the process ``pid`` can ignore file permissions."""
    return any(capabilities(pid) & (1 << cap) for cap in DROPPED)


@contextlib.contextmanager
def small_disk(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` (root only, as in CI), unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "vaultd-test", str(where)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full tests ({done.stderr.strip()});"
                    " they need root, as CI has")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(path: Path, leave: int = 0) -> int:
    """Write ``path`` until the disk is full, then give back ``leave`` pages; bytes written."""
    written = 0
    chunk = b"\0" * (64 * 1024)
    with path.open("wb", buffering=0) as handle:
        while True:
            try:
                written += handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        for size in (PAGE, 512, 1):  # the last partial chunk, down to the byte
            while True:
                try:
                    written += handle.write(b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        if leave:
            written = max(0, (written // PAGE - leave) * PAGE)
            os.ftruncate(handle.fileno(), written)
    return written


def free_pages(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // PAGE


def main(argv: list[str]) -> int:
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in DROPPED:
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")
        if any(capabilities(os.getpid(), "CapInh") & (1 << cap) for cap in DROPPED):
            raise SystemExit("inheritable capabilities would keep CAP_DAC_OVERRIDE")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
