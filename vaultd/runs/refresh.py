"""A debounced background task: the daemon's refresh of the report.

:meth:`Debounced.poke` says "something changed"; the action runs ``delay`` seconds after
the last poke, so a burst of pokes (a batch of notes finishing) runs it once, and never
later than ``max_wait`` after the first poke of a burst, so a steady stream of pokes
still runs it now and then: the scheduler's rule (:func:`vaultd.runs.scheduler.settled_at`).
It runs on one thread of its own, one run at a time; pokes during a run earn one more
run afterwards. A run that fails is logged and the next poke
runs it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from vaultd.runs.scheduler import settled_at

log = logging.getLogger("vaultd.refresh")


class Debounced:
    def __init__(self, action: Callable[[], None], delay: float, max_wait: float,
                 name: str = "vaultd-debounced",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.action = action
        self.delay = delay
        self.max_wait = max(max_wait, delay)
        self.clock = clock
        self.runs = 0  # finished runs, failed ones included
        self._cond = threading.Condition()
        self._first: float | None = None  # the first poke of the burst waiting to run
        self._due: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        log.debug("%s: poked", self._thread.name)
        with self._cond:
            now = self.clock()
            if self._first is None:
                self._first = now
            self._due = settled_at(self._first, now, self.delay, self.max_wait)
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Stop; a run not yet due is dropped, a run under way is waited for (a while)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_due(self) -> bool:
        """Run the action here and now if a run is due by the clock; whether it ran. One
        step of the loop :meth:`start` runs, for a caller that moves the clock itself."""
        with self._cond:
            if self._closed or self._take() != 0.0:
                return False
        self._run()
        return True

    def _loop(self) -> None:
        while self._wait_due():
            self._run()

    def _run(self) -> None:
        try:
            self.action()
        except Exception:
            log.exception("%s failed", self._thread.name)
        finally:
            with self._cond:
                self.runs += 1
                self._cond.notify_all()

    def _take(self) -> float | None:
        """Under the lock: take the waiting run if it is due (0.0); else the seconds until
        it is, or None when no run is waiting."""
        if self._due is None:
            return None
        left = self._due - self.clock()
        if left > 0:
            return left
        self._first = self._due = None
        return 0.0

    def _wait_due(self) -> bool:
        """Wait until a run is due (True), or until closed (False)."""
        with self._cond:
            while not self._closed:
                left = self._take()
                if left == 0.0:
                    return True
                self._cond.wait(left)  # None: until a poke or close
            return False
