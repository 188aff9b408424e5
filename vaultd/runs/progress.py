"""Progress of a ``--once`` run: a bar on a terminal, nothing extra off one.

The bar is one line on stderr, redrawn at most a few times a second: notes done of the
total, model requests in flight, tokens, cost and time left. Off a terminal the per-note
lines on stdout are the progress, as plain log lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

from vaultd.evaluate.cost import Usage

WIDTH = 24


class Tally:
    """A panel run's answers and judgments, done of those it will make; safe to add to from
    several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answers = [0, 0]  # done, total
        self.judgments = [0, 0]

    def expect(self, answers: int, judgments: int) -> None:
        with self._lock:
            self.answers[1] += answers
            self.judgments[1] += judgments

    def finished(self, answers: int, judgments: int) -> None:
        with self._lock:
            self.answers[0] += answers
            self.judgments[0] += judgments

    def shown(self) -> str:
        """`` · 12/50 answers · 48/200 judgments``, or "" when no panel ran."""
        with self._lock:
            if not self.answers[1]:
                return ""
            return (f" · {self.answers[0]}/{self.answers[1]} answers · "
                    f"{self.judgments[0]}/{self.judgments[1]} judgments")


def format_bar(done: int, total: int, in_flight: int, usage: Usage, elapsed: float,
               panels: str = "") -> str:
    """``[#####-----] 12/40 notes · 3 in flight · 12,345 tokens · ~$0.0400 · 0:32 left``,
    with a panel's answers and judgments (``panels``) after the notes."""
    filled = WIDTH * done // total if total else WIDTH
    left = "?"
    if done and total > done:
        seconds = int(elapsed / done * (total - done))
        left = f"{seconds // 60}:{seconds % 60:02d}"
    elif total and done >= total:
        left = "0:00"
    tokens = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    tokens += usage.output_tokens
    return (f"[{'#' * filled}{'-' * (WIDTH - filled)}] {done}/{total} notes{panels} · "
            f"{in_flight} in flight · {tokens:,} tokens · ~${usage.cost:.4f} · {left} left")


class ProgressBar:
    """Redraws the bar from a background thread until closed; draws nothing off a terminal."""

    def __init__(self, stream: TextIO, total: int, usage: Usage,
                 in_flight: Callable[[], int], interval: float = 0.2,
                 tally: Tally | None = None) -> None:
        self.stream = stream
        self.total = total
        self.usage = usage
        self.in_flight = in_flight
        self.tally = tally
        self.interval = interval
        self.done = 0
        self.enabled = stream.isatty()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="vaultd-progress", daemon=True)
        if self.enabled:
            self._thread.start()

    def advance(self) -> None:
        with self._lock:
            self.done += 1

    def print_above(self, line: str, out: TextIO) -> None:
        """A line of output that must not be overwritten by the bar."""
        with self._lock:
            if self.enabled:
                self.stream.write("\r\033[K")
            print(line, file=out, flush=True)
            if self.enabled:
                self._draw()

    def _draw(self) -> None:
        bar = format_bar(self.done, self.total, self.in_flight(), self.usage,
                         time.monotonic() - self._start,
                         self.tally.shown() if self.tally else "")
        self.stream.write("\r\033[K" + bar)
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._draw()

    def close(self) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()
