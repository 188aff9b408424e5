"""The engine: the journey of one pending note, one named step at a time.

:meth:`Engine.process` reads the note (:func:`~vaultd.edges.vault.read_note`), decides whether
it is vaultd's (:func:`~vaultd.note.text.not_vaultds`), checks it and makes its plan
(:func:`~vaultd.evaluate.prepare.check_note`), waits when the model cannot be asked, writes
the answer when the note has none, runs the plan (:func:`~vaultd.evaluate.runner.run_plan`),
decides how it ends (:func:`~vaultd.evaluate.finish.verdict`) and writes it. Every write goes
through the note's :class:`~vaultd.runs.session.Session`, which splices vaultd's parts into
the note as it is on disk at that moment. A panel note's run is :mod:`vaultd.runs.panel`'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vaultd.config import Settings
from vaultd.edges.vault import conflict_copy, read_note
from vaultd.edges.writer import Writer
from vaultd.errors import (
    FormatError,
    MeasureError,
    ModelUnavailable,
    NoteReadError,
    WriteConflict,
    WriteError,
    one_line,
)
from vaultd.evaluate.ask import Deferred, ModelReply, ModelRequest
from vaultd.evaluate.cost import Usage
from vaultd.evaluate.estimate import note_over_budget
from vaultd.evaluate.finish import Verdict, own_properties, rejected, verdict
from vaultd.evaluate.prepare import Checked, check_note, unwritable_property
from vaultd.evaluate.runner import Effects, ModelChoice, run_plan, shared_contexts
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.overrides import Overrides
from vaultd.note.render import error_callout
from vaultd.note.splice import Changes, apply
from vaultd.note.text import Note, not_vaultds
from vaultd.runs.panel import PanelRun
from vaultd.runs.progress import Tally
from vaultd.runs.session import NoteResult, Restart, Session, Stop, Waiting

log = logging.getLogger("vaultd.engine")

DEFERRED = Skipped("deferred to a batch")  # the answer, when a batch will write it
MAX_RESTARTS = 5
TOO_LARGE_READ = 4  # a note left Processing is read up to this many times max_note_bytes


@dataclass(frozen=True)
class EngineOptions:
    # The model, token limits, note size limit, prices, cache and property prefix: as set.
    settings: Settings
    live_interval: float = 0.25  # at most this often a live (partial) write
    # Write ``Processing`` as soon as a run starts (the daemon: someone may be watching), or
    # only with the first live write, so a note that finishes within ``live_interval`` is
    # written once (``--once``).
    announce_at_start: bool = True


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
        self.settings = options.settings
        self.clock = clock
        self.now = now
        self.tally = Tally()  # panels' answers and judgments, for the progress bar

    def process(self, path: Path, should_stop: Callable[[], bool] = lambda: False) -> NoteResult:
        """Run the note at ``path`` if it is pending, and write its results back."""
        for _ in range(MAX_RESTARTS):
            try:
                return self._journey(path, should_stop)
            except Restart:
                log.info("%s: the note changed while it ran; starting over", path)
            except Stop as stop:
                return NoteResult(path, stop.result, stop.summary)
            except NoteReadError as exc:
                return NoteResult(path, "unreadable", str(exc))
            except Waiting as waiting:
                return NoteResult(path, "waiting", waiting.why)
            except WriteError as exc:
                return NoteResult(path, "error", f"could not write the note: {exc}",
                                  transient=exc.transient)
        return NoteResult(path, "error", "the note kept changing while it ran; set it to "
                                         "Pending again")

    def _journey(self, path: Path, should_stop: Callable[[], bool]) -> NoteResult:
        try:
            data, note = read_note(path, self.settings.max_note_bytes, self.writer.vault)
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
        session = self.session(path, data, note)
        try:
            checked = check_note(note)
        except FormatError as exc:
            changes, summary = rejected(exc.problems, self.now())
            session.commit(changes)
            return NoteResult(path, "error", summary)
        why = note_over_budget(note, checked.plan, checked.query, checked.answer,
                               checked.overrides, self.settings)
        if why is not None:  # its estimated cost is above max_cost_usd: nothing is sent
            session.commit(Changes(status="Error", properties=own_properties(why, self.now()),
                                   error=error_callout([why]), results=None))
            return NoteResult(path, "error", why)
        if checked.panel is not None:
            tool = conflict_copy(path)
            if tool is not None:  # never a new panel, whatever it says
                return NoteResult(path, "left_alone", f"a conflict copy made by {tool}: vaultd "
                                  "never runs it; merge it into the original note")
            return PanelRun(self, session, checked, should_stop).start()
        asks = self.asks_model(checked)
        session.begin(checked.plan.measures, hold=asks)
        try:
            return self._run(session, checked, should_stop)
        except ModelUnavailable as exc:  # found out while it ran: undo what it wrote
            session.restore()
            raise Waiting(str(exc)) from exc

    def session(self, path: Path, data: bytes, note: Note) -> Session:
        """The note's session on disk, with this engine's writer, limits and clock."""
        return Session(path, data, note, self.writer, max_bytes=self.settings.max_note_bytes,
                       clock=self.clock, live_interval=self.options.live_interval,
                       answering=self.effects.model.answering)

    def asks_model(self, checked: Checked) -> bool:
        """Whether the run asks the model; if it does and no request can be made now (no
        key, a refused key, the API unreachable), :class:`Waiting`: the note is left as it
        is, its results so far too."""
        models = set()
        if any(m.type == "ai" for m in checked.plan.measures):
            models.add(checked.overrides.model or self.settings.model)
        if not (checked.answer or "").strip():
            models.add(checked.overrides.answer_model or self.settings.answer_model)
        for model in sorted(models):
            why = self.effects.model.unavailable(model)
            if why:
                raise Waiting(why)
        return bool(models)

    def choice(self, overrides: Overrides, usage: Usage, checked: Checked) -> ModelChoice:
        """How the note's ai measures ask the model: the vault's settings, the note's own."""
        return ModelChoice(
            model=overrides.model or self.settings.model,
            max_tokens=overrides.max_tokens or self.settings.max_tokens,
            usage=usage,
            prices=self.settings.prices,
            use_cache=self.settings.cache and overrides.cache is not False,
            shared_context=shared_contexts(checked.plan),
        )

    def _run(self, session: Session, checked: Checked,
             should_stop: Callable[[], bool]) -> NoteResult:
        path = session.path
        if self.options.announce_at_start:  # undone if the model cannot be asked after all
            session.commit(session.live_changes())
        usage = Usage()
        known: dict[str, Outcome] = {}
        if checked.query is not None:
            known["query"] = Success(checked.query)
        answer = self._answer(session, checked, usage, should_stop)
        if answer is None:  # stopped while the model was writing it
            session.commit(Changes(status="Pending"))
            return NoteResult(path, "left_alone", "stopped before it finished; left Pending")
        if answer is DEFERRED:
            return NoteResult(path, "deferred", "waiting for a batch to write the answer")
        known["answer"] = answer
        outcomes = session.settle(run_plan(
            checked.plan,
            known,
            self.effects,
            self.choice(checked.overrides, usage, checked),
            on_result=session.record,
            on_tick=session.maybe_flush,
            should_stop=lambda: should_stop() or session.stale,
        ))
        if session.stale:
            raise Restart
        if len(outcomes) < len(checked.plan.measures):
            if should_stop():  # leave it for the next start
                session.commit(Changes(status="Pending", results=session.rendered()))
                return NoteResult(path, "left_alone", "stopped before it finished; left Pending")
            session.commit(session.live_changes())  # the rest comes in a batch
            return NoteResult(path, "deferred", "waiting for a batch", len(outcomes), 0, usage)
        return self._finish(session, checked, outcomes, answer, usage)

    def _answer(self, session: Session, checked: Checked, usage: Usage,
                should_stop: Callable[[], bool]) -> Outcome | None:
        """The note's answer: as written, or asked of the model and written into the note."""
        if checked.answer is not None and checked.answer.strip():
            return Success(checked.answer)
        generated = self.generate_answer(
            self.answer_request(checked.query or "", checked.overrides), usage, should_stop)
        if isinstance(generated, Success):
            session.commit(Changes(answer=generated.value))
        return generated

    def _finish(self, session: Session, checked: Checked, outcomes: dict[str, Outcome],
                answer: Outcome, usage: Usage) -> NoteResult:
        asks = usage.used or any(m.type == "ai" for m in checked.plan.measures)
        decided: list[Verdict] = []

        def final(current: Note) -> Changes:
            # decided against the note as it is on disk when written: the user's keys win;
            # and against the outcomes as they are then (a result too large is an error)
            decided[:] = [verdict(current, checked.plan.measures, session.outcomes,
                                  answer=answer, usage=usage if asks else None,
                                  prefix=self.settings.property_prefix,
                                  evaluated=self.now(), results=session.rendered())]
            return decided[0].changes

        session.commit(final)
        end = decided[0]
        for collision in end.collisions:
            log.warning("%s:%d: %s", session.path, collision.line, collision.message)
        kept = "".join(f"; {c.message}" for c in end.collisions)
        if end.failed:
            return NoteResult(session.path, "error", end.summary + kept, len(outcomes),
                              len(end.failed), usage)
        return NoteResult(session.path, "done", f"{len(outcomes)} measures{kept}",
                          len(outcomes), 0, usage)

    def _mark_too_large(self, path: Path) -> NoteResult | None:
        """A note left ``Processing`` (by a crash) that is now too large to run: its Status
        becomes Error, with the reason, so it is never left Processing. Read up to
        ``TOO_LARGE_READ`` times the limit; None when it is not such a note."""
        limit = self.settings.max_note_bytes
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

    def answer_request(self, query: str, overrides: Overrides, *, model: str | None = None,
                       max_tokens: int | None = None, sample: str | None = None
                       ) -> ModelRequest:
        """The request that asks the model (or assistant) to answer ``query``; ``sample``
        names one draw of several (a panel's): requests differing by it are never merged."""
        return ModelRequest(
            model=model or overrides.answer_model or self.settings.answer_model,
            max_tokens=(max_tokens or overrides.answer_max_tokens
                        or self.settings.answer_max_tokens),
            prompt=query,
            use_cache=self.settings.cache and overrides.cache is not False,
            sample=sample,
        )

    def generate_answer(self, request: ModelRequest, usage: Usage,
                        should_stop: Callable[[], bool]) -> Outcome | None:
        """The model's answer to ``request``: a Success with its text, a Failure saying why
        there is none, :data:`DEFERRED` (a batch will answer), or None when stopped."""
        future = self.effects.executor.submit(self._ask, request, usage)
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
        return Success(reply.text.strip("\r\n"))

    def _ask(self, request: ModelRequest, usage: Usage) -> ModelReply:
        with self.effects.model_slots:
            reply = self.effects.model.complete(request)
        usage.add(reply, self.settings.prices)
        return reply
