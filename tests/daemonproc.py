"""A real vaultd daemon process for tests, and waiting on what it does to files.

Readiness is not guessed: the test listens on its own ``NOTIFY_SOCKET``, as systemd does,
and waits for ``READY=1``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .notes import programmatic_note

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0  # generous: a loaded 2-core machine

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = DEADLINE, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def note_says(path: Path, *needles: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        return all(needle in text for needle in needles)
    return check


def marker_done(vault: Path, name: str = "marker.md") -> None:
    """Write a new pending note at ``name`` and wait until it is done. With ``--workers 1``
    the daemon looks at one note at a time, in the order their file events came: the
    marker done proves it has finished the note it was running, and dealt with every
    event before the marker's (but for those that came while their note ran: that note
    gets its one more look once its run ends, which may be after the marker)."""
    marker = vault / name
    marker.write_text(programmatic_note(), encoding="utf-8")
    wait_for(note_says(marker, "Status: Done"), what=f"the marker {name} done")


class DaemonProcess:
    """``python -m vaultd run VAULT`` with its own notify socket; stop() sends SIGTERM.

    ``prefix`` goes before the command (e.g. :func:`tests.privileges.obeying_permissions`)."""

    def __init__(self, vault: Path, *args: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, log_level: str = "INFO") -> None:
        self.vault = vault
        self._dir = tempfile.TemporaryDirectory(prefix="vaultd-notify-")
        self.notify_path = os.path.join(self._dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.messages: list[str] = []
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["NOTIFY_SOCKET"] = self.notify_path
        self.log_path = Path(self._dir.name) / "stderr.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "vaultd", "run", str(vault),
             "--log-level", log_level, *args],
            env=full_env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )

    def wait_ready(self, timeout: float = DEADLINE) -> None:
        self.wait_message("READY=1", timeout)

    def wait_message(self, message: str, timeout: float = DEADLINE, count: int = 1) -> None:
        """Wait until ``message`` has come ``count`` times in all (since the start)."""
        end = time.monotonic() + timeout
        while self.messages.count(message) < count:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no {message} from the daemon; log:\n{self.log()}")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.extend(data.decode().splitlines())

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the daemon did not stop; log:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self._log.close()
        self._dir.cleanup()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
