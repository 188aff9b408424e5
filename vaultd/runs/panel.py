"""A panel note's run: each assistant asked ``samples`` times, each answer judged in a note
of its own, the summary rewritten in the panel note as they come in.

The run has an id, its UTC start to the second, written into the panel note (``run``) with
``Status: Processing``. Its answer notes, in the folder named as the panel note without
``.md``, are the run's record: a run found ``Processing`` resumes, asking only for the
answers it has no note of (an answer received but not yet in a note is in the response
cache under its own draw, so even that is not asked again). Each draw is its own request
(:attr:`~vaultd.evaluate.ask.ModelRequest.sample`): never merged with another draw's.

An answer is judged as the note it becomes: the answer note's text is made
(:func:`~vaultd.note.panel.answer_note_text`), checked and planned like any note, its plan
run, its verdict spliced in, and only then is the note created, whole
(:meth:`~vaultd.edges.writer.Writer.create`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

from vaultd.config import resolve_assistant
from vaultd.edges.vault import iter_notes, read_note
from vaultd.errors import FormatError, ModelUnavailable, NoteReadError, WriteError, one_line
from vaultd.evaluate.cost import Usage
from vaultd.evaluate.finish import own_properties, usage_properties, verdict
from vaultd.evaluate.prepare import Checked, check_note
from vaultd.evaluate.runner import run_plan
from vaultd.note.measures import Measure
from vaultd.note.outcomes import Failure, Outcome, Success
from vaultd.note.panel import (
    RUN_ID,
    AnswerNote,
    PanelSpec,
    answer_file_name,
    answer_note_text,
    panel_figures,
    read_answer,
    summary_lines,
)
from vaultd.note.properties import property_changes
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.note.splice import Changes, apply
from vaultd.note.text import Note, parse
from vaultd.runs.session import NoteResult, Restart, Session, Waiting

if TYPE_CHECKING:
    from vaultd.runs.engine import Engine

log = logging.getLogger("vaultd.panel")


@dataclass(frozen=True)
class Draw:
    """One answer a run asks for: the ``sample``-th of ``assistant``."""

    assistant: str
    sample: int


class _Deferred:
    """A draw a batch will answer (or judge): the run goes on in a later round."""


_DEFERRED = _Deferred()
_STOPPED = None


def resumed_run(note: Note) -> str | None:
    """The id of the run a note left ``Processing`` was in the middle of, if any."""
    if (note.status or "").strip().lower() != "processing":
        return None
    run = note.properties.get("run")
    return run if isinstance(run, str) and RUN_ID.match(run) else None


def answers_folder(path: Path) -> Path:
    """``Queries/Sezary second-line.md`` -> ``Queries/Sezary second-line``."""
    return path.with_name(path.name[:-3] if path.name.endswith(".md") else path.name)


def vault_name(path: Path, vault: Path) -> str:
    """The note's path in the vault, with ``/``."""
    try:
        return path.relative_to(vault).as_posix()
    except ValueError:
        return path.name


def read_answers(folder: Path, vault: Path, panel: str, max_bytes: int, prefix: str
                 ) -> list[AnswerNote]:
    """The answer notes of the panel note named ``panel`` (its name without ``.md``) found
    in ``folder``, in name order; a note that cannot be read is passed over."""
    found: list[AnswerNote] = []
    if not folder.is_dir() or folder.is_symlink():
        return found
    for path in sorted(iter_notes(folder, vault)):
        if path.parent != folder:
            continue
        try:
            _, note = read_note(path, max_bytes, vault)
        except NoteReadError:
            continue
        answer = read_answer(vault_name(path, vault), note, prefix)
        if answer is not None and answer.panel.rsplit("/", 1)[-1] == panel:
            found.append(answer)
    return found


class PanelRun:
    """One run of one panel note, from its first write to its last."""

    def __init__(self, engine: Engine, session: Session, checked: Checked,
                 should_stop: Callable[[], bool]) -> None:
        assert checked.panel is not None
        self.engine = engine
        self.session = session
        self.checked = checked
        self.spec: PanelSpec = checked.panel
        self.should_stop = should_stop
        self.settings = engine.settings
        vault = engine.writer.vault
        self.vault = vault
        self.name = vault_name(session.path, vault)
        self.panel = session.path.name[:-3]
        self.folder = answers_folder(session.path)
        note = session.note
        self.run = resumed_run(note) or engine.now().astimezone(UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        self.template = note  # the panel note as the run started: what each answer copies
        names = self.spec.assistants or (
            checked.overrides.answer_model or self.settings.answer_model,)
        self.assistants = {name: resolve_assistant(self.settings, name) for name in names}
        self.answers: list[AnswerNote] = []
        self.earlier: list[AnswerNote] = []
        self.failed: dict[Draw, str] = {}
        self.created = 0  # answer notes this call created
        self._stop = threading.Event()

    @property
    def measures(self) -> tuple[Measure, ...]:
        return tuple(self.checked.plan.measures)

    def _judge_unavailable(self) -> str | None:
        """Why the note's ai measures cannot be asked now, if they cannot."""
        if not any(m.type == "ai" for m in self.measures):
            return None
        return self.engine.effects.model.unavailable(
            self.checked.overrides.model or self.settings.model)

    def start(self) -> NoteResult:
        model = self.engine.effects.model
        down = {name: model.unavailable(name) for name in self.assistants}
        why = self._judge_unavailable() or (
            next(iter(down.values())) if all(down.values()) else None)
        if why:  # no answer could be judged, or none had: the note is left as it is
            if self.spec.every is not None:  # ... or, scheduled, tried at the next period
                return self._failed_outside(why)
            raise Waiting(why)
        self.session.begin(self.measures, hold=True)
        self._live()  # the run's id goes into the note first: a crash from here on resumes it
        for answer in read_answers(self.folder, self.vault, self.panel,
                                   self.settings.max_note_bytes, self.settings.property_prefix):
            (self.answers if answer.run == self.run else self.earlier).append(answer)
        have = {(a.assistant, a.sample) for a in self.answers}
        draws = [Draw(name, k) for name in self.assistants
                 for k in range(1, self.spec.samples + 1) if (name, k) not in have]
        self.engine.tally.expect(len(draws), len(draws) * len(self.measures))
        try:
            deferred, stopped = self._ask_all(draws)
        except ModelUnavailable as exc:
            if self.spec.every is not None:
                return self._failed_outside(str(exc))
            if self.created == 0:
                self.session.restore()
            else:
                self._live()
            raise Waiting(str(exc)) from exc
        if self.session.stale:
            raise Restart
        if stopped:
            self._live()
            return NoteResult(self.session.path, "left_alone",
                              f"stopped with {len(self.answers)} of {self.expected} answers; "
                              "the run goes on at the next start")
        if deferred:
            self._live()
            return NoteResult(self.session.path, "deferred",
                              f"waiting for a batch: {deferred} of {self.expected} answers")
        return self._finish()

    def _failed_outside(self, why: str) -> NoteResult:
        """A scheduled run that cannot reach its models: the note says why, and its run
        counts as tried (the next one is a period later); what earlier runs wrote stays."""
        self.session.commit(Changes(status="Error", properties={
            "Error": json.dumps(why, ensure_ascii=False), "run": json.dumps(self.run)}))
        log.warning("%s: run %s: %s; tried again at the next period", self.session.path,
                    self.run, why)
        return NoteResult(self.session.path, "error", why)

    @property
    def expected(self) -> int:
        return len(self.assistants) * self.spec.samples

    # -- asking --------------------------------------------------------------------------

    def _ask_all(self, draws: list[Draw]) -> tuple[int, bool]:
        """Ask for and judge every draw; (how many a batch will answer, stopped)."""
        deferred = 0
        if not draws:
            return 0, False
        dirty = True
        workers = max(1, min(len(draws), self.settings.concurrency))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="vaultd-panel")
        try:
            running: dict[Future[AnswerNote | Failure | _Deferred | None], Draw] = {
                pool.submit(self._draw, d): d for d in draws}
            while running:
                done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    draw = running.pop(future)
                    got = future.result()  # ModelUnavailable: the whole run waits
                    if isinstance(got, AnswerNote):
                        self.answers.append(got)
                        self.created += 1
                        dirty = True
                    elif isinstance(got, Failure):
                        self.failed[draw] = got.message
                        dirty = True
                    elif got is _DEFERRED:
                        deferred += 1
                if self.should_stop() or self.session.stale:
                    break
                if dirty and self.session.due():
                    dirty = False
                    try:
                        self._live()
                    except Restart:
                        self.session.stale = True
            return deferred, bool(running)
        finally:
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.should_stop()

    def _draw(self, draw: Draw) -> AnswerNote | Failure | _Deferred | None:
        """Ask for one answer, judge it, and create its note."""
        engine = self.engine
        usage = Usage()
        assistant = self.assistants[draw.assistant]
        request = engine.answer_request(
            self.checked.query or "", self.checked.overrides, model=draw.assistant,
            max_tokens=assistant.max_tokens, sample=f"{self.run}/{draw.assistant}/{draw.sample}")
        try:
            answer = engine.generate_answer(request, usage, self._stopping)
        except ModelUnavailable as exc:  # this assistant's provider: the others go on,
            if self._judge_unavailable():  # unless nothing could be judged anyway
                raise
            return Failure(f"{draw.assistant} {draw.sample}: {exc}")
        if answer is None:
            return _STOPPED
        if not isinstance(answer, Success):
            if isinstance(answer, Failure):
                return Failure(f"{draw.assistant} {draw.sample}: {answer.message}")
            return _DEFERRED
        text = answer_note_text(self.template, self.name, self.run, draw.assistant,
                                assistant.model, draw.sample, answer.value, assistant.provider)
        note = parse(text)
        try:
            checked = check_note(note)
        except FormatError as exc:  # the panel's own measures passed: not expected
            return Failure(f"{draw.assistant} {draw.sample}: {exc}")
        known: dict[str, Outcome] = {"answer": answer}
        if checked.query is not None:
            known["query"] = Success(checked.query)
        outcomes = run_plan(checked.plan, known, engine.effects,
                            engine.choice(checked.overrides, usage, checked),
                            on_result=lambda _id, _o: None, should_stop=self._stopping)
        if len(outcomes) < len(checked.plan.measures):
            return _STOPPED if self._stopping() else _DEFERRED
        results = evaluation_block([evaluation_pair(m.label, m.type, outcomes[m.id])
                                    for m in checked.plan.measures])
        end = verdict(note, checked.plan.measures, outcomes, answer=answer, usage=usage,
                      prefix=self.settings.property_prefix, evaluated=engine.now(),
                      results=results)
        final = apply(note, end.changes)
        try:
            path = engine.writer.create(self.folder, answer_file_name(
                self.run, draw.assistant, draw.sample), final.encode("utf-8"))
        except WriteError as exc:
            return Failure(f"{draw.assistant} {draw.sample}: could not create its note: {exc}")
        made = read_answer(vault_name(path, self.vault), parse(final),
                           self.settings.property_prefix)
        assert made is not None
        self.engine.tally.finished(1, len(checked.plan.measures))
        return made

    # -- writing the panel note ----------------------------------------------------------

    def _summary(self) -> list[str]:
        return summary_lines(
            run=self.run,
            assistants=list(self.assistants),
            measures=self.measures,
            answers=sorted(self.answers, key=lambda a: (a.assistant, a.sample)),
            samples=self.spec.samples,
            earlier=self.earlier,
        )

    def _live(self) -> None:
        """Processing, the run's id and, once it has an answer, its summary so far (until
        then an earlier run's summary stays as it is)."""
        self.session.commit(Changes(
            status="Processing",
            properties={"Error": None, "run": json.dumps(self.run)},
            clear_error=True,
            panel=self._summary() if self.answers else None,
        ))

    def _finish(self) -> NoteResult:
        usage = self._usage()
        figures = panel_figures(self.measures, self.answers)
        outcomes: dict[str, Outcome] = {mid: Success(value) for mid, value in figures.items()}
        error = None
        if self.failed:
            why = next(iter(self.failed.values()))
            error = one_line(f"{len(self.failed)} of {self.expected} answers could not be "
                             f"had; {why}", 300)
        summary = self._summary()
        collisions: list[str] = []

        def final(current: Note) -> Changes:
            props = property_changes(current, self.settings.property_prefix, self.measures,
                                     outcomes)
            collisions[:] = [c.message for c in props.collisions]
            own = own_properties(error, self.engine.now())
            return Changes(
                status="Error" if error else "Done",
                properties={**own, **usage, "run": json.dumps(self.run), **props.changes},
                clear_error=True,
                panel=summary,
            )

        self.session.commit(final)
        figures_line = f"{len(self.answers)} of {self.expected} answers" + "".join(
            f", {mid} {value}" for mid, value in figures.items())
        kept = "".join(f"; {c}" for c in collisions)
        log.info("%s: run %s: %s%s", self.session.path, self.run, figures_line, kept)
        if error:
            return NoteResult(self.session.path, "error", error + kept, len(self.answers),
                              len(self.failed))
        return NoteResult(self.session.path, "done", figures_line + kept, len(self.answers))

    def _usage(self) -> dict[str, str | None]:
        """The token and cost properties: the run's answer notes' summed."""
        total = Usage()
        for answer in self.answers:
            total.input_tokens += answer.tokens_in
            total.output_tokens += answer.tokens_out
            total.cost += answer.cost_usd
        return usage_properties(total)
