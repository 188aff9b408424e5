"""The engine: everything that happens to one pending note.

read → parse → check → plan → run → render → splice → write. Each write goes through
:class:`_Session`, which re-reads the note just before writing (inside the writer's
compare-and-write): when the user changed the note meanwhile, their change wins. vaultd
splices its parts into their text, or starts the note over when its query, answer or
measures changed, or leaves the note alone when they took it out of ``Pending``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from vaultd.config import Settings
from vaultd.edges.vault import LinkError, locate, open_note
from vaultd.edges.writer import Writer
from vaultd.errors import (
    FormatError,
    MeasureError,
    ModelUnavailable,
    NoteReadError,
    Problem,
    WriteConflict,
    WriteError,
    one_line,
)
from vaultd.evaluate.ask import Deferred, ModelReply, ModelRequest
from vaultd.evaluate.cost import Usage
from vaultd.evaluate.estimate import note_over_budget
from vaultd.evaluate.graph import Plan, plan
from vaultd.evaluate.runner import Effects, ModelChoice, run_plan, shared_contexts
from vaultd.note.measures import Measure, read_block
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.overrides import Overrides, read_overrides
from vaultd.note.properties import Collision, property_changes
from vaultd.note.render import error_callout, evaluation_block, evaluation_pair
from vaultd.note.splice import Changes, apply
from vaultd.note.text import RUNNABLE, Note, decode, frontmatter_problem, not_vaultds, parse

log = logging.getLogger("vaultd.engine")

Status = Literal["done", "error", "not_pending", "unreadable", "gone", "left_alone", "deferred",
                 "waiting"]
DEFERRED = Skipped("deferred to a batch")  # the answer, when a batch will write it
MAX_RESTARTS = 5
MAX_CONFLICTS = 10
TOO_LARGE_READ = 4  # a note left Processing is read up to this many times max_note_bytes


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


@dataclass(frozen=True)
class EngineOptions:
    # The model, token limits, note size limit, prices, cache and property prefix: as set.
    settings: Settings
    live_interval: float = 0.25  # at most this often a live (partial) write
    # Write ``Processing`` as soon as a run starts (the daemon: someone may be watching), or
    # only with the first live write, so a note that finishes within ``live_interval`` is
    # written once (``--once``).
    announce_at_start: bool = True


class _Restart(Exception):
    """The note's query, answer or measures changed under a run: start over."""


class _Waiting(Exception):
    """The model cannot be asked at all: the note is left as it was, to run later."""

    def __init__(self, why: str) -> None:
        self.why = why


class _Stop(Exception):
    """The run must end without another write (note gone, or taken out of Pending)."""

    def __init__(self, result: Status, summary: str) -> None:
        self.result = result
        self.summary = summary


def fingerprint(note: Note) -> tuple[str | None, ...]:
    """What decides the results: the query, the answer and the measures block."""
    block = note.measures_block
    return (
        note.block_text("query", ("text",)),
        note.block_text("answer", ("text",)),
        block.info.lower() if block else None,
        block.content if block else None,
    )


def read_note(path: Path, max_bytes: int, vault: Path | None = None) -> tuple[bytes, Note]:
    """The note's bytes and structure, or a :class:`NoteReadError` saying why not.

    With ``vault``, the note is read as a note of that vault: never through a symbolic link
    (:func:`vaultd.edges.vault.open_note`). Never more than ``max_bytes`` are read, however the file
    grows meanwhile."""
    try:
        fd = _open_for_reading(path, vault)
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(st.st_mode):
                raise NoteReadError(f"{path}: not a regular file")
            if st.st_size > max_bytes:
                raise NoteReadError(
                    f"{path}: the note is too large ({st.st_size} bytes, limit {max_bytes})")
            data = handle.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise NoteReadError(f"{path}: the note is too large (more than {max_bytes} "
                                    f"bytes, limit {max_bytes})")
    except FileNotFoundError as exc:
        raise NoteReadError(f"{path}: the note vanished") from exc
    except IsADirectoryError as exc:
        raise NoteReadError(f"{path}: is a folder, not a note") from exc
    except LinkError as exc:
        raise NoteReadError(f"{path}: is a symbolic link, or inside a linked folder: vaultd "
                            "does not follow links") from exc
    except OSError as exc:
        raise NoteReadError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return data, parse(decode(data, str(path)))


def _open_for_reading(path: Path, vault: Path | None) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK  # a FIFO named *.md must not block the reader
    if vault is None:
        return os.open(path, flags | os.O_CLOEXEC)
    found = locate(vault, path)
    if found is None:
        raise NoteReadError(f"{path}: not inside the vault {vault}")
    return open_note(*found, flags)


@dataclass(frozen=True)
class Checked:
    """A note that passed every check: what to run it with."""

    plan: Plan
    query: str | None
    answer: str | None
    overrides: Overrides = field(default_factory=Overrides)


# The properties vaultd rewrites or removes in every note it runs (besides its results').
REWRITTEN = ("Status", "Error", "Evaluated", "tokens_in", "tokens_out", "cost_usd",
             "vaultd_properties")
_YAML_NODE_PROPERTIES = {"&": "an anchor", "!": "a tag", "*": "an alias"}


def unwritable_property(note: Note) -> Problem | None:
    """A property vaultd would rewrite whose value carries a YAML anchor (``&s``), tag
    (``!!str``) or alias (``*s``): rewriting its value would leave the frontmatter invalid
    (an alias elsewhere pointing at an anchor that is gone), so the note is not written."""
    if note.frontmatter is None:
        return None
    for key in REWRITTEN:
        prop = note.frontmatter.get(key)
        if prop is None:
            continue
        value = (prop.raw_value.strip() or prop.more.strip()).split(maxsplit=1)
        what = _YAML_NODE_PROPERTIES.get(value[0][:1]) if value else None
        if what is not None:
            return Problem(prop.start + 1,
                           f"{prop.key.strip()} carries {what} (`{value[0]}`): vaultd cannot "
                           "rewrite it without breaking the frontmatter's YAML, so the note is "
                           "left as it is",
                           f"write it plainly, as `{prop.key.strip()}: "
                           f"{value[1] if len(value) > 1 else 'Pending'}`")
    return None


def check_note(note: Note) -> Checked:
    """Everything wrong with the note's callouts, measures and own settings, all at once,
    or its plan."""
    overrides, problems = read_overrides(note)
    unwritable = unwritable_property(note)
    if unwritable is not None:
        problems.append(unwritable)
    broken = frontmatter_problem(note)
    if broken and not problems:  # results written into it would be read by no parser
        problems.append(Problem(broken[0], f"frontmatter is not valid YAML: {broken[1]}",
                                'put a value holding ": " or "#" in double quotes'))
    query = note.block_text("query", ("text",))  # a callout without it is the user's text
    answer = note.block_text("answer", ("text",))
    measures: list[Measure] = []
    unreadable: set[str] = set()  # measures declared but not valid
    callouts = note.callouts_of("measures")
    if not callouts:
        problems.append(Problem(None, "no [!measures] callout",
                                "add a `> [!measures]` callout holding a `measures-md` block"))
    else:
        block = note.measures_block
        if block is not None:  # always: a [!measures] callout without one is the user's
            read = read_block(block)
            measures = list(read.measures)
            problems.extend(read.problems)
            unreadable = set(read.unreadable)
        for extra in callouts[1:]:
            problems.append(Problem(extra.start + 1, "a second [!measures] callout (only one "
                                                     "is allowed)", "merge it into the first"))
    if not (query or "").strip() and not (answer or "").strip():
        problems.append(Problem(None, "the note has neither a query nor an answer",
                                "write the question in a `[!query]` callout's `query-text` "
                                "block"))
    graph: Plan | None = None
    try:
        graph = plan(measures, unreadable)
    except FormatError as exc:
        problems.extend(exc.problems)
    if problems or graph is None:
        raise FormatError(problems)
    return Checked(graph, query, answer, overrides)


class Engine:
    """Processes notes, one call each; safe to call from several threads for different notes."""

    def __init__(
        self,
        effects: Effects,
        writer: Writer,
        options: EngineOptions,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.effects = effects
        self.writer = writer
        self.options = options
        self.clock = clock
        self.now = now

    def process(self, path: Path, should_stop: Callable[[], bool] = lambda: False) -> NoteResult:
        """Run the note at ``path`` if it is pending, and write its results back."""
        for _ in range(MAX_RESTARTS):
            try:
                return self._process(path, should_stop)
            except _Restart:
                log.info("%s: the note changed while it ran; starting over", path)
            except _Stop as stop:
                return NoteResult(path, stop.result, stop.summary)
            except NoteReadError as exc:
                return NoteResult(path, "unreadable", str(exc))
            except _Waiting as waiting:
                return NoteResult(path, "waiting", waiting.why)
            except WriteError as exc:
                return NoteResult(path, "error", f"could not write the note: {exc}",
                                  transient=exc.transient)
        return NoteResult(path, "error", "the note kept changing while it ran; set it to "
                                         "Pending again")

    def _process(self, path: Path, should_stop: Callable[[], bool]) -> NoteResult:
        try:
            data, note = read_note(path, self.options.settings.max_note_bytes, self.writer.vault)
        except NoteReadError:
            marked = self._mark_too_large(path)
            if marked is None:
                raise
            return marked
        if not_vaultds(note) is not None:  # a person's note: never written
            return NoteResult(path, "not_pending")
        unwritable = unwritable_property(note)
        if unwritable is not None:  # reported, not written: any write would break its YAML
            log.error("%s", unwritable.format(str(path)))
            return NoteResult(path, "error", one_line(f"line {unwritable.line}: "
                                                      f"{unwritable.text}"))
        session = _Session(self, path, data, note)
        try:
            checked = check_note(note)
        except FormatError as exc:
            lines = [f"line {p.line}: {p.text}" if p.line else p.text
                     for p in exc.problems]
            summary = one_line(f"{len(lines)} problem(s): {lines[0]}")
            session.commit(Changes(status="Error", properties=self._final_props(summary),
                                   error=error_callout(lines), results=None))
            return NoteResult(path, "error", summary)
        why = note_over_budget(note, checked.plan, checked.query, checked.answer,
                               checked.overrides, self.options.settings)
        if why is not None:  # its estimated cost is above max_cost_usd: nothing is sent
            session.commit(Changes(status="Error", properties=self._final_props(why),
                                   error=error_callout([why]), results=None))
            return NoteResult(path, "error", why)
        session.plan = checked.plan
        # A note that asks the model when no request can be made (no key, a refused key, the
        # API unreachable) waits, untouched: its results so far stay as they are.
        asks_model = any(m.type == "ai" for m in checked.plan.measures) or not (
            checked.answer or "").strip()
        if asks_model:
            why = self.effects.model.unavailable()
            if why:
                raise _Waiting(why)
            # until the API has answered once, no live write (a refused key or no connection
            # found out on the way leaves the note as it was); the daemon's Processing at the
            # start is put back then
            session.hold = True
        try:
            return self._run(session, checked, should_stop)
        except ModelUnavailable as exc:  # found out while it ran: undo what it wrote
            session.restore()
            raise _Waiting(str(exc)) from exc

    def _run(self, session: _Session, checked: Checked,
             should_stop: Callable[[], bool]) -> NoteResult:
        path = session.path
        if self.options.announce_at_start:  # undone if the model cannot be asked after all
            session.commit(session.live_changes())
        overrides = checked.overrides
        known: dict[str, Outcome] = {}
        if checked.query is not None:
            known["query"] = Success(checked.query)
        answer = checked.answer
        if answer is None or not answer.strip():
            generated = self._generate_answer(session, checked.query or "", overrides,
                                              should_stop)
            if generated is None:  # stopped while the model was writing it
                session.commit(Changes(status="Pending"))
                return NoteResult(path, "left_alone", "stopped before it finished; left Pending")
            if generated is DEFERRED:
                return NoteResult(path, "deferred", "waiting for a batch to write the answer")
            known["answer"] = generated
        else:
            known["answer"] = Success(answer)
        choice = ModelChoice(
            model=overrides.model or self.options.settings.model,
            max_tokens=overrides.max_tokens or self.options.settings.max_tokens,
            usage=session.usage,
            prices=self.options.settings.prices,
            use_cache=self.options.settings.cache and overrides.cache is not False,
            shared_context=shared_contexts(checked.plan),
        )
        outcomes = run_plan(
            checked.plan,
            known,
            self.effects,
            choice,
            on_result=session.record,
            on_tick=session.maybe_flush,
            should_stop=lambda: should_stop() or session.stale,
        )
        outcomes.update(session.too_large)  # results refused by a live write stay refused
        session.outcomes = outcomes
        if session.stale:
            raise _Restart
        if len(outcomes) < len(checked.plan.measures):
            if should_stop():  # leave it for the next start
                session.commit(Changes(status="Pending", results=session.rendered()))
                return NoteResult(path, "left_alone", "stopped before it finished; left Pending")
            session.commit(session.live_changes())  # the rest comes in a batch
            return NoteResult(path, "deferred", "waiting for a batch", len(outcomes), 0,
                              session.usage)
        answer_failed = known.get("answer")
        asks = session.usage.used or any(m.type == "ai" for m in checked.plan.measures)
        collisions: tuple[Collision, ...] = ()
        failed: list[tuple[Measure, Outcome]] = []
        summary = ""

        def final(current: Note) -> Changes:
            # decided against the note as it is on disk when written: the user's keys win;
            # and against the outcomes as they are then (a result too large is an error)
            nonlocal collisions, failed, summary
            failed = [(m, outcomes[m.id]) for m in checked.plan.measures
                      if not isinstance(outcomes[m.id], Success)]
            summary = _summary(failed, len(checked.plan.measures), answer_failed)
            own = self._final_props(summary if failed else None,
                                    session.usage if asks else None)
            props = property_changes(current, self.options.settings.property_prefix,
                                     checked.plan.measures, outcomes)
            collisions = props.collisions
            return Changes(
                status="Error" if failed else "Done",
                properties={**own, **props.changes},
                results=session.rendered(),
                clear_error=True,
            )

        session.commit(final)
        for collision in collisions:
            log.warning("%s:%d: %s", path, collision.line, collision.message)
        kept = "".join(f"; {c.message}" for c in collisions)
        if failed:
            return NoteResult(path, "error", summary + kept, len(outcomes), len(failed),
                              session.usage)
        return NoteResult(path, "done", f"{len(outcomes)} measures{kept}", len(outcomes), 0,
                          session.usage)

    def _mark_too_large(self, path: Path) -> NoteResult | None:
        """A note left ``Processing`` (by a crash) that is now too large to run: its Status
        becomes Error, with the reason, so it is never left Processing. Read up to
        ``TOO_LARGE_READ`` times the limit; None when it is not such a note."""
        limit = self.options.settings.max_note_bytes
        try:
            data, note = read_note(path, limit * TOO_LARGE_READ, self.writer.vault)
        except NoteReadError:
            return None
        if len(data) <= limit or (note.status or "").strip().lower() != "processing" \
                or not_vaultds(note) is not None or unwritable_property(note) is not None:
            return None  # a person's note, however large, is never written
        why = (f"the note is too large to run ({len(data)} bytes, above max_note_bytes "
               f"{limit}); shorten it and set Status: Pending")
        new = apply(note, Changes(status="Error", properties={"Error": json.dumps(why)}))
        try:
            self.writer.write(path, data, new.encode("utf-8"))
        except WriteConflict:
            return None  # changed meanwhile: it is looked at again
        log.error("%s: %s", path, why)
        return NoteResult(path, "error", why)

    def _generate_answer(self, session: _Session, query: str, overrides: Overrides,
                         should_stop: Callable[[], bool]) -> Outcome | None:
        request = ModelRequest(
            model=overrides.answer_model or self.options.settings.answer_model,
            max_tokens=overrides.answer_max_tokens or self.options.settings.answer_max_tokens,
            prompt=query,
            use_cache=self.options.settings.cache and overrides.cache is not False,
        )
        future = self.effects.executor.submit(self._ask, request, session.usage)
        while True:  # waited on here, so that a shutdown need not wait for the model
            try:
                reply = future.result(timeout=0.2)
                break
            except FutureTimeout:
                if should_stop():
                    return None
            except Deferred:
                return DEFERRED
            except ModelUnavailable:
                raise
            except MeasureError as exc:
                return Failure(f"could not generate the answer: {exc}")
            except Exception as exc:  # a bug, not a model failure: still only this note
                return Failure(f"could not generate the answer: internal error: "
                               f"{type(exc).__name__}: {exc}")
        if reply.stop_reason == "max_tokens":  # a cut-off answer is not the answer to judge
            return Failure(f"could not generate the answer: the reply was cut off at "
                           f"answer_max_tokens ({request.max_tokens}); raise answer_max_tokens")
        if reply.stop_reason == "refusal":
            return Failure("could not generate the answer: the model declined to answer")
        if not reply.text.strip():
            return Failure("could not generate the answer: the model returned an empty reply")
        text = reply.text.strip("\r\n")
        session.commit(Changes(answer=text))
        return Success(text)

    def _ask(self, request: ModelRequest, usage: Usage) -> ModelReply:
        with self.effects.model_slots:
            reply = self.effects.model.complete(request)
        usage.add(reply, self.options.settings.prices)
        return reply

    def _final_props(self, error: str | None, usage: Usage | None = None
                     ) -> dict[str, str | None]:
        props: dict[str, str | None] = {
            "Error": json.dumps(error, ensure_ascii=False) if error else None,
            "Evaluated": self.now().replace(microsecond=0).isoformat(),
        }
        if usage is not None:
            props["tokens_in"] = str(usage.input_tokens + usage.cache_read_tokens
                                     + usage.cache_write_tokens)
            props["tokens_out"] = str(usage.output_tokens)
            props["cost_usd"] = f"{usage.cost:.6f}".rstrip("0").rstrip(".") or "0"
        return props


def _summary(failed: list[tuple[Measure, Outcome]], total: int, answer: Outcome | None) -> str:
    if isinstance(answer, Failure):
        return one_line(answer.message, 300)
    if not failed:
        return ""
    measure, outcome = next(((m, o) for m, o in failed if isinstance(o, Failure)), failed[0])
    why = outcome.message if isinstance(outcome, Failure) else (
        outcome.reason if isinstance(outcome, Skipped) else "")
    return one_line(f"{len(failed)} of {total} measures did not succeed; {measure.id}: {why}", 300)


class _Session:
    """One run's view of one note on disk: what vaultd last read or wrote, and its results."""

    def __init__(self, engine: Engine, path: Path, data: bytes, note: Note) -> None:
        self.engine = engine
        self.path = path
        self.data = data
        self.original = data  # as it was read: what :meth:`restore` puts back
        self._note: Note | None = note
        self._text: str | None = None
        self.print = fingerprint(note)
        self.outcomes: dict[str, Outcome] = {}
        self.usage = Usage()
        self.plan: Plan | None = None
        self.dirty = False
        self.stale = False
        self.announced = False  # Status: Processing written
        self.too_large: dict[str, Outcome] = {}  # results refused: the note would be too large
        self.hold = False  # no live write until the model has answered
        self.last_write = engine.clock()

    def rendered(self) -> list[str]:
        measures = self.plan.measures if self.plan else ()
        return evaluation_block([
            evaluation_pair(m.label, m.type, self.outcomes[m.id])
            for m in measures if m.id in self.outcomes
        ])

    def record(self, measure_id: str, outcome: Outcome) -> None:
        self.outcomes[measure_id] = outcome
        self.dirty = True

    def live_changes(self) -> Changes:
        """The results so far, and ``Status: Processing`` if that is not written yet."""
        if self.announced:
            return Changes(results=self.rendered())
        return Changes(status="Processing", properties={"Error": None}, clear_error=True,
                       results=self.rendered())

    @property
    def holding(self) -> bool:
        if self.hold and not self.engine.effects.model.answering():
            return True
        self.hold = False
        return False

    def maybe_flush(self) -> None:
        """A live write of the results so far, at most every ``live_interval`` seconds."""
        if not (self.dirty or not self.announced) or self.stale or self.holding:
            return
        if self.engine.clock() - self.last_write < self.engine.options.live_interval:
            return
        self.dirty = False
        try:
            self.commit(self.live_changes())
        except _Restart:
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
            limit = self.engine.options.settings.max_note_bytes
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
                self.engine.writer.write(self.path, self.data, new)
            except WriteConflict as conflict:
                conflicts += 1
                self._reload(conflict.current)
                continue
            # The note is parsed again only if it is needed (a further write or a conflict).
            self.data, self._text, self._note = new, text, None
            self.last_write = self.engine.clock()
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
            self.engine.writer.write(self.path, self.data, self.original)
        except WriteConflict as conflict:
            self._reload(conflict.current)
            self.commit(Changes(status="Pending"))
            return
        self.data, self._text, self._note = self.original, None, None

    def _reload(self, current: bytes | None) -> None:
        if current is None:
            raise _Stop("gone", "the note vanished while it ran")
        try:
            note = parse(decode(current, str(self.path)))
        except NoteReadError as exc:
            raise _Stop("unreadable", str(exc)) from exc
        if (note.status or "").strip().lower() not in RUNNABLE:
            raise _Stop("left_alone", "its Status was changed while it ran; left as it is")
        if fingerprint(note) != self.print:
            raise _Restart
        self.data, self._text, self._note = current, None, note

    @property
    def note(self) -> Note:
        if self._note is None:
            assert self._text is not None
            self._note = parse(self._text)
        return self._note
