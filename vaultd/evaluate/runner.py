"""Running a plan: each measure as soon as its inputs are known, independent ones at once.

The runner knows nothing of files. It takes the plan, the values of ``answer`` and
``query``, and the two effects a measure can have (the model and the sandbox), and
reports each outcome as it arrives. A measure whose input failed is skipped and says
which input; every other measure still runs.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from vaultd.config import Price
from vaultd.errors import MeasureError, ModelUnavailable
from vaultd.evaluate.ask import Deferred, Model, ModelRequest
from vaultd.evaluate.cost import Usage
from vaultd.evaluate.graph import Plan
from vaultd.evaluate.reply import read_reply
from vaultd.note.measures import Measure
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


class Sandbox(Protocol):
    def submit(self, logic: str, input: Any, params: Mapping[str, Any], *,
               key: Hashable) -> Future[Any]: ...


@dataclass(frozen=True)
class ModelChoice:
    """How one note asks the model: defaults for its measures, and where its usage goes."""

    model: str
    max_tokens: int
    usage: Usage = field(default_factory=Usage)
    prices: dict[str, Price] = field(default_factory=dict)
    use_cache: bool = True
    shared_context: frozenset[str] = frozenset()  # ai measures whose context another shares


class ModelSlots:
    """The one limit on model requests in flight, shared by every note and worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_use = 0

    def __enter__(self) -> ModelSlots:
        self._semaphore.acquire()
        with self._lock:
            self.in_use += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.in_use -= 1
        self._semaphore.release()


@dataclass
class Effects:
    """The edges a measure reaches: the model, the sandbox, and the threads to wait on them."""

    model: Model
    sandbox: Sandbox
    executor: Executor
    model_slots: ModelSlots


def evaluate(
    measure: Measure, value: Any, effects: Effects, choice: ModelChoice
) -> Outcome:
    """One ai measure over its input value. Never raises for the measure's own failures."""
    try:
        return _ask(measure, value, effects, choice)
    except ModelUnavailable:  # not this measure's failure: the whole note waits
        raise
    except MeasureError as exc:
        return Failure(str(exc))


def start(measure: Measure, value: Any, effects: Effects, choice: ModelChoice,
          note: Hashable) -> Future[Any]:
    """One measure, started: an ai measure on the threads (its future holds its outcome),
    a programmatic one in the sandbox, in the turn of ``note`` (its future holds the
    value): a note's JavaScript waits behind its own, not behind every other note's."""
    if measure.type == "programmatic":
        assert measure.logic is not None
        return effects.sandbox.submit(measure.logic, value, measure.params, key=note)
    return effects.executor.submit(evaluate, measure, value, effects, choice)


def outcome_of(measure: Measure, future: Future[Any]) -> Outcome:
    """What a finished :func:`start` came to; :class:`Deferred` if the model deferred it."""
    if measure.type != "programmatic":
        return cast(Outcome, future.result())
    try:
        return Success(future.result())
    except MeasureError as exc:
        return Failure(str(exc))


def _ask(measure: Measure, value: Any, effects: Effects, choice: ModelChoice) -> Outcome:
    assert measure.prompt is not None
    max_tokens = measure.max_tokens or choice.max_tokens
    request = ModelRequest(
        model=measure.model or choice.model,
        max_tokens=max_tokens,
        prompt=fill_placeholders(measure.prompt, measure.params),
        context=as_context(value),
        cache_context=measure.id in choice.shared_context,
        use_cache=choice.use_cache,
    )
    with effects.model_slots:
        reply = effects.model.complete(request)
    choice.usage.add(reply, choice.prices)
    if reply.stop_reason == "max_tokens":
        return Failure(f"the reply was cut off at max_tokens ({max_tokens}); raise max_tokens")
    if reply.stop_reason == "refusal":
        return Failure("the model declined to answer")
    if not reply.text.strip():
        return Failure("the model returned an empty reply")
    reading = read_reply(reply.text)
    return Success(reading.value, reading.comment)


def shared_contexts(plan: Plan) -> frozenset[str]:
    """The ai measures that read the same input as another ai measure of the note: their
    context is worth sending as a cacheable prefix."""
    readers: dict[tuple[str, ...], list[str]] = {}
    for measure in plan.measures:
        if measure.type == "ai":
            readers.setdefault(measure.input, []).append(measure.id)
    return frozenset(i for ids in readers.values() if len(ids) > 1 for i in ids)


def as_context(value: Any) -> str:
    """An input value as the model reads it: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)


def fill_placeholders(prompt: str, params: Mapping[str, Any]) -> str:
    """``{{target}}`` (or ``{{params.target}}``) in a prompt becomes that param's value."""

    def value_of(match: re.Match[str]) -> str:
        current: Any = params
        for part in match.group(1).removeprefix("params.").split("."):
            if not isinstance(current, Mapping) or part not in current:
                return match.group(0)
            current = current[part]
        return current if isinstance(current, str) else json.dumps(current, ensure_ascii=False)

    return _PLACEHOLDER.sub(value_of, prompt)


def run_plan(
    plan: Plan,
    known: Mapping[str, Outcome],
    effects: Effects,
    choice: ModelChoice,
    on_result: Callable[[str, Outcome], None],
    on_tick: Callable[[], None] = lambda: None,
    tick: float = 0.1,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Outcome]:
    """Run every measure; ``known`` holds the outcomes of ``answer`` and ``query``.

    Measures whose model request was deferred, and those that read them, have no outcome
    in what is returned. When the model cannot be asked at all, :class:`ModelUnavailable`
    is raised (what is still running is abandoned).

    ``on_result`` is called in this thread as each outcome arrives, ``on_tick`` at least
    every ``tick`` seconds while measures are running. When ``should_stop`` turns true no
    new measure starts; the outcomes so far are returned.
    """
    outcomes: dict[str, Outcome] = dict(known)
    waiting = {m.id: set(plan.depends_on[m.id]) for m in plan.measures}
    running: dict[Future[Any], Measure] = {}
    started: set[str] = set()
    note = object()  # this run's turn in the sandbox

    def settle(measure_id: str, outcome: Outcome) -> None:
        outcomes[measure_id] = outcome
        on_result(measure_id, outcome)
        for other in plan.dependents[measure_id]:
            waiting[other].discard(measure_id)

    def start_ready() -> None:
        progressed = True
        while progressed and not should_stop():
            progressed = False
            for measure in plan.measures:
                if measure.id in outcomes or measure.id in started:
                    continue
                if waiting[measure.id]:
                    continue
                problem = _failed_input(measure, outcomes)
                if problem:
                    settle(measure.id, Skipped(problem))
                    progressed = True
                    continue
                value = _input_value(measure, outcomes)
                running[start(measure, value, effects, choice, note)] = measure
                started.add(measure.id)

    start_ready()
    while running:
        done, _ = wait(running, timeout=tick, return_when=FIRST_COMPLETED)
        for future in done:
            measure = running.pop(future)
            try:
                outcome = outcome_of(measure, future)
            except Deferred:  # answered in a later round; what reads it waits too
                continue
            except ModelUnavailable:
                raise
            except Exception as exc:  # a bug, not a measure failure: still only this measure
                outcome = Failure(f"internal error: {type(exc).__name__}: {exc}")
            settle(measure.id, outcome)
        on_tick()
        if should_stop():  # what is still running is abandoned; its note is left for later
            break
        start_ready()
    for future in running:  # what has not started yet never will
        future.cancel()
    return {m.id: outcomes[m.id] for m in plan.measures if m.id in outcomes}


def _failed_input(measure: Measure, outcomes: Mapping[str, Outcome]) -> str | None:
    for name in measure.input:
        outcome = outcomes.get(name)
        if isinstance(outcome, Failure):
            return f"input `{name}` failed"
        if isinstance(outcome, Skipped):
            return f"input `{name}` was skipped"
        if outcome is None:
            return f"input `{name}` has no value"
    return None


def _input_value(measure: Measure, outcomes: Mapping[str, Outcome]) -> Any:
    values = [outcomes[name] for name in measure.input]
    plain = [o.value if isinstance(o, Success) else None for o in values]
    return plain if measure.input_is_list else plain[0]
