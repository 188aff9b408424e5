"""What every vaultd process sets up: logs on stderr, output nobody reads, a quick exit.

Used by the command line (:mod:`vaultd.cli`) and by a shard's child process
(:mod:`vaultd.runs.shard_child`) alike, so both log and end the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO, cast

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
# syslog priorities: journald reads a "<N>" prefix on each stderr line as the level
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def configure_logging(level: str) -> None:
    """Logs go to stderr: with a level prefix journald understands when run by systemd."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vaultd")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False




class Unread:
    """A text stream whose reader may go away (``vaultd check VAULT | head -1``): once
    writing to it fails with a broken pipe, what follows is dropped, and the work goes on.

    Its file descriptor is pointed at ``/dev/null`` then, so the text still buffered is
    flushed somewhere (at exit, too) rather than failing again."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
        return getattr(self._stream, name)


def run_process(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its code, without waiting for threads.

    Every note's writes are finished and the cache is closed when ``main`` returns; what is
    left are idle pool threads and, at most, a model request or an import of the SDK nobody
    needs any more. Joining them would only delay the exit. Output nobody reads never stops
    the work (nor prints a traceback): the exit code still says how the notes ended.
    """
    sys.stdout = cast(TextIO, Unread(sys.stdout))
    sys.stderr = cast(TextIO, Unread(sys.stderr))
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
