"""One run's view of one note on disk: what vaultd last read or wrote there, and its writes.

Each write goes through :meth:`Session.commit`, which re-reads the note inside the writer's
compare-and-write: when the user changed the note meanwhile, their change wins. vaultd
splices its parts into their text, or starts the note over when its query, answer or
measures changed (:class:`Restart`), or stops when they took it out of ``Pending``
(:class:`Stop`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from vaultd.edges.writer import Writer
from vaultd.errors import NoteReadError, WriteConflict, WriteError
from vaultd.evaluate.cost import Usage
from vaultd.note.measures import Measure
from vaultd.note.outcomes import Failure, Outcome, Success
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.note.splice import Changes, apply
from vaultd.note.text import RUNNABLE, Note, decode, fingerprint, parse

log = logging.getLogger("vaultd.engine")

Status = Literal["done", "error", "not_pending", "unreadable", "gone", "left_alone", "deferred",
                 "waiting"]
MAX_CONFLICTS = 10


@dataclass(frozen=True)
class NoteResult:
    """How one note ended. ``summary`` is one line for people."""

    path: Path
    status: Status
    summary: str = ""
    measures: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    transient: bool = False  # the write failed for a reason outside the note: try again later


class Waiting(Exception):
    """The model cannot be asked at all: the note is left as it was, to run later."""

    def __init__(self, why: str) -> None:
        self.why = why


class Restart(Exception):
    """The note's query, answer or measures changed under a run: start over."""


class Stop(Exception):
    """The run must end without another write (note gone, or taken out of Pending)."""

    def __init__(self, result: Status, summary: str) -> None:
        self.result = result
        self.summary = summary


class Session:
    """One note on disk during one run: its bytes as vaultd last saw them, its results so
    far, and the writes that put them there."""

    def __init__(self, path: Path, data: bytes, note: Note, writer: Writer, *,
                 max_bytes: int, clock: Callable[[], float], live_interval: float,
                 answering: Callable[[], bool]) -> None:
        self.path = path
        self.data = data
        self.original = data  # as it was read: what :meth:`restore` puts back
        self._note: Note | None = note
        self._text: str | None = None
        self.print = fingerprint(note)
        self.writer = writer
        self.max_bytes = max_bytes
        self.clock = clock
        self.live_interval = live_interval
        self._answering = answering
        self.measures: Sequence[Measure] = ()
        self.outcomes: dict[str, Outcome] = {}
        self.dirty = False
        self.stale = False
        self.announced = False  # Status: Processing written
        self.too_large: dict[str, Outcome] = {}  # results refused: the note would be too large
        self.hold = False  # no live write until the model has answered
        self.last_write = clock()

    def begin(self, measures: Sequence[Measure], *, hold: bool) -> None:
        """The run's measures; with ``hold``, no live write until the model has answered
        once (a refused key found out on the way leaves the note as it was)."""
        self.measures = measures
        self.hold = hold

    def rendered(self) -> list[str]:
        return evaluation_block([
            evaluation_pair(m.label, m.type, self.outcomes[m.id])
            for m in self.measures if m.id in self.outcomes
        ])

    def record(self, measure_id: str, outcome: Outcome) -> None:
        self.outcomes[measure_id] = outcome
        self.dirty = True

    def settle(self, outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
        """The run's outcomes, with the results a live write refused as too large kept
        refused; they are the session's from now on."""
        self.outcomes = {**outcomes, **self.too_large}
        return self.outcomes

    def live_changes(self) -> Changes:
        """The results so far, and ``Status: Processing`` if that is not written yet."""
        if self.announced:
            return Changes(results=self.rendered())
        return Changes(status="Processing", properties={"Error": None}, clear_error=True,
                       results=self.rendered())

    @property
    def holding(self) -> bool:
        if self.hold and not self._answering():
            return True
        self.hold = False
        return False

    def due(self) -> bool:
        """Whether a live write may be made now: at most every ``live_interval`` seconds,
        and not while holding."""
        return (not self.stale and not self.holding
                and self.clock() - self.last_write >= self.live_interval)

    def maybe_flush(self) -> None:
        """A live write of the results so far, at most every ``live_interval`` seconds."""
        if not (self.dirty or not self.announced) or not self.due():
            return
        self.dirty = False
        try:
            self.commit(self.live_changes())
        except Restart:
            self.stale = True

    def commit(self, changes: Changes | Callable[[Note], Changes]) -> None:
        """Write ``changes`` into the note as it is on disk now; the user's edits win.

        ``changes`` may be a function of that note, for changes decided by what it says.
        """
        conflicts = 0
        minimal = False  # only Status: Error and why, the rest being too large
        while conflicts < MAX_CONFLICTS:
            wanted = changes(self.note) if callable(changes) else changes
            if self.too_large and wanted.results is not None:
                wanted = replace(wanted, results=self.rendered())
            text = apply(self.note, wanted)
            new = text.encode("utf-8")
            limit = self.max_bytes
            if len(new) > max(limit, len(self.data)):
                if self._refuse_latest(len(new), limit):
                    continue  # that result is now its measure's error: render again
                why = (f"the note would be {len(new)} bytes, above max_note_bytes {limit}; "
                       "not written")
                if self.announced and not minimal:  # never leave it Processing
                    changes, minimal = Changes(status="Error", properties={
                        "Error": json.dumps(why)}), True
                    continue
                raise WriteError(f"{self.path}: {why}")
            try:
                self.writer.write(self.path, self.data, new)
            except WriteConflict as conflict:
                conflicts += 1
                self._reload(conflict.current)
                continue
            # The note is parsed again only if it is needed (a further write or a conflict).
            self.data, self._text, self._note = new, text, None
            self.last_write = self.clock()
            if wanted.status is not None:
                self.announced = True
            if wanted.answer is not None:  # vaultd's own answer is part of what it runs on
                self.print = fingerprint(self.note)
            return
        raise WriteError(f"{self.path}: the note kept changing; gave up writing")

    def _refuse_latest(self, size: int, limit: int) -> bool:
        """Make the latest result its measure's error, since with it the note would be
        ``size`` bytes, above ``limit``; False when there is none left to refuse."""
        written = [mid for mid, o in self.outcomes.items() if isinstance(o, Success)]
        if not written:
            return False
        failure = Failure(f"result too large: would make the note {size} bytes, above "
                          f"max_note_bytes {limit}")
        self.outcomes[written[-1]] = self.too_large[written[-1]] = failure
        log.warning("%s: %s: %s", self.path, written[-1], failure.message)
        return True

    def restore(self) -> None:
        """Put the note back as it was read, if this run wrote it; an edit of the user's since
        is kept, with vaultd's Status back at ``Pending``."""
        if self.data == self.original:
            return
        try:
            self.writer.write(self.path, self.data, self.original)
        except WriteConflict as conflict:
            self._reload(conflict.current)
            self.commit(Changes(status="Pending"))
            return
        self.data, self._text, self._note = self.original, None, None

    def _reload(self, current: bytes | None) -> None:
        if current is None:
            raise Stop("gone", "the note vanished while it ran")
        try:
            note = parse(decode(current, str(self.path)))
        except NoteReadError as exc:
            raise Stop("unreadable", str(exc)) from exc
        if (note.status or "").strip().lower() not in RUNNABLE:
            raise Stop("left_alone", "its Status was changed while it ran; left as it is")
        if fingerprint(note) != self.print:
            raise Restart
        self.data, self._text, self._note = current, None, note

    @property
    def note(self) -> Note:
        if self._note is None:
            assert self._text is not None
            self._note = parse(self._text)
        return self._note
