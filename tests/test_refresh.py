"""The debounced refresh: one run per burst of pokes, never starved, never stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from vaultd.refresh import Debounced

from .daemonproc import wait_for


class Action:
    def __init__(self, fail: bool = False, hold: float = 0.0) -> None:
        self.times: list[float] = []
        self.fail = fail
        self.hold = hold
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.times.append(time.monotonic())
        time.sleep(self.hold)
        if self.fail:
            raise RuntimeError("boom")


@pytest.fixture
def made() -> Iterator[list[Debounced]]:
    found: list[Debounced] = []
    yield found
    for debounced in found:
        debounced.close()


def start(made: list[Debounced], action: Action, delay: float, max_wait: float) -> Debounced:
    debounced = Debounced(action, delay, max_wait, name="test-debounced")
    debounced.start()
    made.append(debounced)
    return debounced


def test_a_burst_of_pokes_runs_once_after_the_last(made: list[Debounced]) -> None:
    action = Action()
    debounced = start(made, action, delay=0.3, max_wait=10)
    began = time.monotonic()
    last = began
    for _ in range(5):
        debounced.poke()
        last = time.monotonic()
        time.sleep(0.05)
    wait_for(lambda: debounced.runs == 1, timeout=10, what="one run")
    time.sleep(0.6)
    assert debounced.runs == 1 and len(action.times) == 1
    assert action.times[0] - last >= 0.29 and action.times[0] - began >= 0.45


def test_steady_pokes_still_run_by_max_wait(made: list[Debounced]) -> None:
    action = Action()
    debounced = start(made, action, delay=0.3, max_wait=0.6)
    began = time.monotonic()
    while time.monotonic() - began < 1.5:  # never quiet for 0.3 s
        debounced.poke()
        time.sleep(0.05)
    assert len(action.times) >= 1
    assert action.times[0] - began < 1.2


def test_pokes_during_a_run_earn_one_more_and_failures_do_not_stop_it(
    made: list[Debounced]
) -> None:
    action = Action(fail=True, hold=0.4)
    debounced = start(made, action, delay=0.05, max_wait=1)
    debounced.poke()
    wait_for(lambda: len(action.times) == 1, timeout=10, what="the first run")
    for _ in range(3):
        debounced.poke()  # while it runs
    wait_for(lambda: debounced.runs == 2, timeout=10, what="one more run")
    time.sleep(0.6)
    assert debounced.runs == 2


def test_close_drops_a_run_not_yet_due(made: list[Debounced]) -> None:
    action = Action()
    debounced = start(made, action, delay=0.5, max_wait=1)
    debounced.poke()
    debounced.close()
    time.sleep(0.7)
    assert action.times == [] and debounced.runs == 0
