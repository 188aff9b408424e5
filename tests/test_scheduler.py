"""The scheduler's promises, on a clock the test moves by hand."""

from __future__ import annotations

import threading
from pathlib import Path

from vaultd.evaluate.cost import Usage
from vaultd.runs.progress import format_bar
from vaultd.runs.scheduler import NoteQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B = Path("/v/a.md"), Path("/v/b.md")


def test_a_note_is_taken_once_it_has_settled() -> None:
    clock = Clock()
    queue = NoteQueue(settle=0.5, max_wait=5, clock=clock)
    queue.touch(A)
    assert queue.take(timeout=0) is None  # still settling
    clock.now += 0.4
    queue.touch(A)  # another save: the settle time starts again
    clock.now += 0.4
    assert queue.take(timeout=0) is None
    clock.now += 0.1
    assert queue.take(timeout=0) == A
    assert queue.take(timeout=0) is None  # taken once


def test_a_note_that_keeps_changing_is_taken_within_the_bounded_wait() -> None:
    clock = Clock()
    queue = NoteQueue(settle=0.5, max_wait=2, clock=clock)
    queue.touch(A)
    for _ in range(5):  # a save every 0.4 s, forever
        clock.now += 0.4
        queue.touch(A)
        assert queue.take(timeout=0) is None
    clock.now += 0.1  # 2.1 s after the first event
    assert queue.take(timeout=0) == A


def test_events_during_a_run_earn_exactly_one_more_look() -> None:
    clock = Clock()
    queue = NoteQueue(settle=0.5, max_wait=5, clock=clock)
    queue.touch(A, now=True)
    assert queue.take(timeout=0) == A
    for _ in range(10):
        queue.touch(A)  # while it runs
    assert queue.take(timeout=0) is None  # never handed to a second worker
    queue.done(A)
    clock.now += 0.5
    assert queue.take(timeout=0) == A
    queue.done(A)
    clock.now += 10
    assert queue.take(timeout=0) is None  # one more look, not ten


def test_forget_and_order() -> None:
    clock = Clock()
    queue = NoteQueue(settle=0.5, max_wait=5, clock=clock)
    queue.touch(B, now=True)
    queue.touch(A)
    queue.forget(A)
    clock.now += 1
    assert queue.take(timeout=0) == B
    assert queue.take(timeout=0) is None
    assert len(queue) == 0


def test_close_wakes_waiting_workers() -> None:
    queue = NoteQueue(settle=0.5, max_wait=5)
    got: list[Path | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.take()))
    worker.start()
    queue.close()
    worker.join(30)
    assert not worker.is_alive() and got == [None]


def test_progress_bar_line() -> None:
    usage = Usage(input_tokens=12_000, output_tokens=345, cost=0.04)
    assert format_bar(12, 48, 3, usage, elapsed=10.0) == (
        "[######------------------] 12/48 notes · 3 in flight · 12,345 tokens · ~$0.0400 · "
        "0:30 left"
    )
    assert format_bar(0, 0, 0, Usage(), 0.0).startswith("[" + "#" * 24 + "] 0/0 notes")


def test_one_debounce_rule_for_notes_and_the_report() -> None:
    from vaultd.runs.refresh import Debounced
    from vaultd.runs.scheduler import settled_at

    assert settled_at(0.0, 1.0, 2.0, 10.0) == 3.0  # settle after the latest event
    assert settled_at(0.0, 9.0, 2.0, 10.0) == 10.0  # but no later than max_wait
    assert settled_at(0.0, 1.0, 2.0, 0.5) == 2.0  # max_wait is at least settle
    now = [0.0]
    debounced = Debounced(lambda: None, 2.0, 10.0, clock=lambda: now[0])
    for now[0] in (0.0, 1.0, 9.0):
        debounced.poke()
    now[0] = 9.9
    assert not debounced.run_due()
    now[0] = 10.0
    assert debounced.run_due()
