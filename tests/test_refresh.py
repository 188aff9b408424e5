"""The debounced refresh: one run per burst of pokes, never starved, never stuck.

The rule is checked on a clock the test moves by hand, one step at a time
(:meth:`Debounced.run_due` is the loop's own step), so no assertion depends on how fast
the machine is; the last test shows that the thread of a started one keeps to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from vaultd.runs.refresh import Debounced

from .daemonproc import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Action:
    """Records the clock at each run (and the thread it ran on); may fail, or poke."""

    def __init__(self, clock: Clock, fail: bool = False) -> None:
        self.clock = clock
        self.fail = fail
        self.times: list[float] = []
        self.threads: list[str] = []
        self.during: list[Debounced] = []  # poked once from inside the next run
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.times.append(self.clock.now)
            self.threads.append(threading.current_thread().name)
        while self.during:
            self.during.pop().poke()
        if self.fail:
            raise RuntimeError("boom")


@pytest.fixture
def made() -> Iterator[list[Debounced]]:
    found: list[Debounced] = []
    yield found
    for debounced in found:
        debounced.close()


def make(made: list[Debounced], action: Action, delay: float,
         max_wait: float) -> Debounced:
    debounced = Debounced(action, delay, max_wait, name="test-debounced", clock=action.clock)
    made.append(debounced)
    return debounced


def test_a_burst_of_pokes_runs_once_after_the_last(made: list[Debounced]) -> None:
    clock = Clock()
    action = Action(clock)
    debounced = make(made, action, delay=3, max_wait=100)
    began = clock.now
    for _ in range(5):  # a poke every half second: never quiet for 3 s
        debounced.poke()
        clock.now += 0.5
        assert not debounced.run_due()
    last = began + 2.0
    clock.now = last + 2.5
    assert not debounced.run_due()  # not yet 3 s after the last poke
    clock.now = last + 3
    assert debounced.run_due()
    clock.now += 100
    assert not debounced.run_due()  # once for the burst
    assert action.times == [last + 3] and debounced.runs == 1


def test_steady_pokes_still_run_by_max_wait(made: list[Debounced]) -> None:
    clock = Clock()
    action = Action(clock)
    debounced = make(made, action, delay=3, max_wait=6)
    began = clock.now
    while clock.now < began + 15:  # a poke every half second: never quiet for 3 s
        debounced.poke()
        clock.now += 0.5
        debounced.run_due()
    # 6 s after the first poke of each burst; the next burst starts with the next poke
    assert action.times == [began + 6, began + 12]


def test_pokes_during_a_run_earn_one_more_and_failures_do_not_stop_it(
    made: list[Debounced], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    action = Action(clock, fail=True)
    debounced = make(made, action, delay=1, max_wait=10)
    action.during = [debounced, debounced, debounced]  # three pokes while it runs
    debounced.poke()
    clock.now += 1
    logger = logging.getLogger("vaultd.refresh")
    logger.addHandler(caplog.handler)  # vaultd's logger may not propagate (the CLI's setup)
    try:
        assert debounced.run_due()  # it fails, and says so
    finally:
        logger.removeHandler(caplog.handler)
    assert "test-debounced failed" in caplog.text and "boom" in caplog.text
    assert not debounced.run_due()  # the pokes during it wait their own delay
    clock.now += 1
    assert debounced.run_due()  # one more run for the three pokes
    clock.now += 100
    assert not debounced.run_due()
    assert action.times == [1001, 1002] and debounced.runs == 2


def test_close_drops_a_run_not_yet_due(made: list[Debounced]) -> None:
    clock = Clock()
    action = Action(clock)
    debounced = make(made, action, delay=1, max_wait=10)
    debounced.start()
    debounced.poke()
    debounced.close()  # its thread has ended when this returns
    clock.now += 100
    assert not debounced.run_due()
    assert action.times == [] and debounced.runs == 0


def test_the_thread_of_a_started_one_runs_when_due(made: list[Debounced]) -> None:
    clock = Clock()
    action = Action(clock)
    debounced = make(made, action, delay=0.05, max_wait=10)  # its thread looks every 0.05 s
    debounced.start()
    debounced.poke()
    assert not debounced.run_due()
    clock.now += 0.05
    wait_for(lambda: debounced.runs == 1, timeout=30, what="the run on its thread")
    assert action.times == [clock.now] and action.threads == ["test-debounced"]
