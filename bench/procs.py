"""vaultd as real processes for the benchmark: ``--once`` runs and daemons, always bounded.

Every process is started in its own session, so that on a timeout the whole group (vaultd
and its QuickJS workers) can be ended by that one id.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# the environment a parent may carry that must not reach the vaultd under test
_STRIP_PREFIXES = ("VAULTD_", "ANTHROPIC_")
_STRIP = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "PYTHONPATH"}


def vaultd_env(src: Path, api_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _STRIP and not k.startswith(_STRIP_PREFIXES)}
    env.update(PYTHONPATH=str(src), ANTHROPIC_BASE_URL=api_url, ANTHROPIC_API_KEY="bench-key",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc``, its process group and every process below it (vaultd starts its
    QuickJS workers in sessions of their own), each by its id."""
    below = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _kill(below)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@dataclass
class OnceRun:
    wall: float  # seconds, from process start to exit
    started: float  # time.monotonic() at the start (the fake API stamps requests with it)
    returncode: int | None  # None: killed at the timeout
    cpu_user: float  # CPU seconds of vaultd and the worker processes it reaped
    cpu_system: float
    output: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


def run_once(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> OnceRun:
    """Run ``cmd`` to the end (or ``timeout``); its output goes to ``log``.

    It runs in ``log``'s folder: ``python -m`` puts the current folder first on sys.path,
    and the vaultd under test is the one on PYTHONPATH, not whatever the caller's folder has.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as out:
        started = time.monotonic()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=log.parent, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        code: int | None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            wall = time.perf_counter() - start
            if proc.poll() is None:
                kill_tree(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return OnceRun(wall, started, code, after.ru_utime - before.ru_utime,
                   after.ru_stime - before.ru_stime,
                   log.read_text(encoding="utf-8", errors="replace"))


class Daemon:
    """``python -m vaultd run VAULT ARGS...`` with its own NOTIFY_SOCKET, as systemd runs it
    (in ``log``'s folder, as :func:`run_once`)."""

    def __init__(self, vault: Path, args: list[str], env: dict[str, str], log: Path) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-notify-")
        self.notify_path = os.path.join(self._dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.messages: list[tuple[float, str]] = []
        self.log_path = log
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaultd", "run", str(vault), *args],
            env={**env, "NOTIFY_SOCKET": self.notify_path}, cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_message(self, message: str, timeout: float) -> float:
        """When (``perf_counter``) the daemon sent ``message``; RuntimeError on timeout."""
        end = time.perf_counter() + timeout
        while True:
            for at, seen in self.messages:
                if seen == message:
                    return at
            left = end - time.perf_counter()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"no {message} from the daemon within {timeout:.0f} s "
                                   f"(exit code {self.proc.poll()}); log:\n{self.log_tail()}")
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            at = time.perf_counter()
            self.messages.extend((at, line) for line in data.decode().splitlines())

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> tuple[int | None, float, int]:
        """SIGTERM, then wait. The exit code (None: it had to be killed), how long it took,
        and how many of its worker processes were still alive a second later (then killed)."""
        below = descendants(self.proc.pid)
        start = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        took = time.perf_counter() - start
        self.close()
        end = time.perf_counter() + 1.0
        left = [pid for pid in below if _alive(pid)]
        while left and time.perf_counter() < end:
            time.sleep(0.05)
            left = [pid for pid in left if _alive(pid)]
        _kill(left)
        return code, took, len(left)

    def close(self) -> None:
        """Make sure nothing of it is left running."""
        if self.proc.poll() is None:
            kill_tree(self.proc)
        self.sock.close()
        self._log.close()
        self._dir.cleanup()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- /proc ---------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (threads included, children not), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
