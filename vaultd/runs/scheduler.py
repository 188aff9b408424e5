"""The scheduler: paths waiting to be looked at, each picked up once it has settled.

A path is due ``settle`` seconds after its last event, but no later than ``max_wait``
after its first, so a note being typed into is read whole and a note that never stops
changing is still read. A path is handed to one worker at a time; events that arrive
while it is being processed mark it for one more look afterwards, never for a pile of
runs. The queue holds paths, not contents.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def settled_at(first: float, now: float, settle: float, max_wait: float) -> float:
    """The debounce rule (of this queue and of :class:`vaultd.runs.refresh.Debounced`): due
    ``settle`` after the latest event (``now``), but no later than ``max_wait`` (at least
    ``settle``) after the first of the burst."""
    return min(now + settle, first + max(max_wait, settle))


@dataclass
class _Entry:
    first: float
    due: float


class NoteQueue:
    def __init__(self, settle: float, max_wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.max_wait = max(max_wait, settle)
        self.clock = clock
        self._cond = threading.Condition()
        self._waiting: dict[Path, _Entry] = {}
        self._heap: list[tuple[float, str, Path]] = []
        self._running: set[Path] = set()
        self._again: set[Path] = set()
        self._closed = False

    def touch(self, path: Path, *, now: bool = False) -> None:
        """Something happened to ``path``: look at it once it has settled (or at once)."""
        with self._cond:
            if self._closed:
                return
            if path in self._running:
                self._again.add(path)
                return
            self._schedule(path, immediate=now)
            self._cond.notify()

    def _schedule(self, path: Path, immediate: bool = False) -> None:
        t = self.clock()
        entry = self._waiting.get(path)
        if entry is None:
            entry = _Entry(first=t, due=t if immediate else t + self.settle)
            self._waiting[path] = entry
        else:
            entry.due = t if immediate else settled_at(entry.first, t, self.settle, self.max_wait)
        heapq.heappush(self._heap, (entry.due, str(path), path))

    def take(self, timeout: float | None = None) -> Path | None:
        """The next settled path, now marked running; None when closed (or on timeout)."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while not self._closed:
                wait = self._pop_due()
                if isinstance(wait, Path):
                    return wait
                if deadline is not None:
                    left = deadline - self.clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def _pop_due(self) -> Path | float | None:
        """A due path (marked running), or how long until the next one is due."""
        while self._heap:
            due, _, path = self._heap[0]
            entry = self._waiting.get(path)
            if entry is None or entry.due != due:  # superseded by a later event
                heapq.heappop(self._heap)
                continue
            left = due - self.clock()
            if left > 0:
                return left
            heapq.heappop(self._heap)
            del self._waiting[path]
            self._running.add(path)
            return path
        return None

    def done(self, path: Path, again_in: float | None = None) -> None:
        """The worker is finished with ``path``; events meanwhile earn it one more look, and
        so does ``again_in`` (seconds from now: a retry)."""
        with self._cond:
            self._running.discard(path)
            if self._closed:
                return
            if path in self._again:
                self._again.discard(path)
                self._schedule(path)
                self._cond.notify()
            elif again_in is not None:
                t = self.clock()
                self._waiting[path] = _Entry(first=t, due=t + again_in)
                heapq.heappush(self._heap, (t + again_in, str(path), path))
                self._cond.notify()

    def forget(self, path: Path) -> None:
        """``path`` is gone: drop it unless it is running."""
        with self._cond:
            self._waiting.pop(path, None)
            self._again.discard(path)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)
