"""What a run of one note would cost, before it is started. Pure.

The requests a run would send are counted from the note's plan, and their tokens are
**estimated**, not counted by the API:

- the tokens of a text are estimated as ``ceil(len(text) / 4)`` (about four characters a
  token in English; the API's own count differs by model and language);
- an ai measure's input is its prompt (placeholders filled) plus its input value where it is
  known now (the note's answer or query, as the model reads it); the output of another
  measure it reads is estimated as that measure's ``max_tokens`` (an ai measure's) or the
  sum of its own inputs (a programmatic measure's); an answer still to be written counts as
  ``answer_max_tokens``;
- every request's output is counted as its ``max_tokens``: an **upper bound**, since a
  reply stops when it is done;
- nothing is taken off for vaultd's response cache or the API's prompt cache: whether a
  reply is cached is not known without the cache, so the figure is the upper bound of a
  run in which nothing is cached; a panel run that resumes sends only the answers it lacks,
  and the estimate is for the whole run.

Prices come from the vault's table (:mod:`vaultd.evaluate.cost`, the ``prices`` setting,
then the family defaults); ``batch`` halves them, as the Message Batches API bills.
:func:`over_budget` compares an estimate with ``max_cost_usd``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from vaultd.config import Price, Settings
from vaultd.evaluate.cost import BATCH_DISCOUNT, price_for
from vaultd.evaluate.graph import Plan
from vaultd.evaluate.runner import as_context, fill_placeholders
from vaultd.note.measures import Measure
from vaultd.note.overrides import Overrides
from vaultd.note.panel import PanelSpec, read_panel
from vaultd.note.text import Note

CHARS_PER_TOKEN = 4
HOW = ("estimated: tokens as characters/4, every reply at its max_tokens, nothing from "
       "the cache")


def estimated_tokens(text: str) -> int:
    """The tokens of ``text``, estimated as ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Request:
    """One request a run would send, with its estimated tokens."""

    kind: Literal["answer", "judgment"]
    model: str
    input_tokens: int
    output_tokens: int  # its max_tokens: an upper bound


@dataclass(frozen=True)
class ModelFigures:
    """The requests to one model, their estimated tokens and cost (None: no price known)."""

    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


@dataclass(frozen=True)
class Estimate:
    """The requests of a run (of one note, or of several added up) and their estimated cost.

    ``cost_usd`` is over the models with a price; ``unpriced`` names the others."""

    answers: int = 0
    judgments: int = 0
    by_model: tuple[ModelFigures, ...] = ()
    panel: bool = False  # a panel note's run (or a sum with one in it)

    @property
    def requests(self) -> int:
        return self.answers + self.judgments

    @property
    def input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.by_model)

    @property
    def output_tokens(self) -> int:
        return sum(m.output_tokens for m in self.by_model)

    @property
    def cost_usd(self) -> float:
        return sum(m.cost_usd or 0.0 for m in self.by_model)

    @property
    def unpriced(self) -> tuple[str, ...]:
        return tuple(m.model for m in self.by_model if m.cost_usd is None)

    def __add__(self, other: Estimate) -> Estimate:
        merged: dict[str, ModelFigures] = {m.model: m for m in self.by_model}
        for m in other.by_model:
            had = merged.get(m.model)
            if had is None:
                merged[m.model] = m
                continue
            cost = None if had.cost_usd is None or m.cost_usd is None \
                else had.cost_usd + m.cost_usd
            merged[m.model] = ModelFigures(m.model, had.requests + m.requests,
                                           had.input_tokens + m.input_tokens,
                                           had.output_tokens + m.output_tokens, cost)
        return Estimate(self.answers + other.answers, self.judgments + other.judgments,
                        tuple(merged.values()), self.panel or other.panel)

    def cost_text(self) -> str:
        """``~$0.12``, and what it leaves out when some model has no price."""
        unpriced = self.unpriced
        return f"~{dollars(self.cost_usd)}" + (
            f" (not counted: no price for {', '.join(unpriced)})" if unpriced else "")

    def counts(self) -> str:
        """``12 requests (2 answers, 10 judgments)``."""
        return (f"{self.requests} {_plural(self.requests, 'request')} ({self.answers} "
                f"{_plural(self.answers, 'answer')}, {self.judgments} "
                f"{_plural(self.judgments, 'judgment')})")

    def tokens(self) -> str:
        """``12,345 tokens in, 8,192 out``."""
        return f"{self.input_tokens:,} tokens in, {self.output_tokens:,} out"


def over_budget(estimate: Estimate, limit: float | None) -> str | None:
    """Why a run with this estimate must not start, with the figures; None when ``limit``
    (``max_cost_usd``, the note's own or the vault's) is not set or not exceeded.

    A model with no price adds nothing to the estimate, so it cannot exceed the limit: the
    message names such models when the priced ones exceed it."""
    if limit is None or estimate.cost_usd <= limit:
        return None
    unpriced = estimate.unpriced
    left_out = f"; no price for {', '.join(unpriced)}" if unpriced else ""
    lower = "samples" if estimate.panel else "max_tokens"
    return (f"estimated cost {dollars(estimate.cost_usd)} is above max_cost_usd "
            f"{dollars(limit)[1:]} ({estimate.requests} "
            f"{_plural(estimate.requests, 'request')}: {estimate.answers} "
            f"{_plural(estimate.answers, 'answer')}, {estimate.judgments} "
            f"{_plural(estimate.judgments, 'judgment')}; {estimate.tokens()}, {HOW}"
            f"{left_out}); raise max_cost_usd or lower {lower}")


def note_over_budget(note: Note, plan: Plan, query: str | None, answer: str | None,
                     overrides: Overrides, settings: Settings,
                     batch: bool = False) -> str | None:
    """:func:`over_budget` for a checked note, against its own ``max_cost_usd`` or else the
    vault's; None at once when neither is set (nothing is estimated then)."""
    limit = overrides.max_cost_usd or settings.max_cost_usd
    if limit is None:
        return None
    panel, _ = read_panel(note)  # its problems are the check's to report
    return over_budget(estimate_note(plan, query, answer, overrides, settings, panel, batch),
                       limit)


def dollars(amount: float) -> str:
    """``$1.23``; an amount under a cent with four decimals (``$0.0042``), not as $0.00."""
    return f"${amount:.2f}" if amount == 0 or amount >= 0.005 else f"${amount:.4f}"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def assistant_model(assistant: str) -> str:
    """The model an assistant name stands for: in issue 14 the name is the Anthropic model's
    own (``[assistants.NAME]`` in the config is issue 15)."""
    return assistant


def estimate_note(plan: Plan, query: str | None, answer: str | None, overrides: Overrides,
                  settings: Settings, panel: PanelSpec | None = None,
                  batch: bool = False) -> Estimate:
    """The requests a run of the note would send and their estimated cost (see the module).

    An ordinary note: one request per ai measure, and one more to write its answer when it
    has none. A panel note (``panel``): ``samples`` answers from each assistant, and each
    answer judged by every ai measure (an answer the note holds itself is not judged).
    """
    judge = overrides.model or settings.model
    judge_max = overrides.max_tokens or settings.max_tokens
    answer_max = overrides.answer_max_tokens or settings.answer_max_tokens
    query_tokens = estimated_tokens(query or "")
    requests: list[Request] = []
    if panel is not None:
        assistants = panel.assistants or (overrides.answer_model or settings.answer_model,)
        judgments = _judgments(plan, query, None, answer_max, judge, judge_max)
        for assistant in assistants:
            model = assistant_model(assistant)
            for _ in range(panel.samples):
                requests.append(Request("answer", model, query_tokens, answer_max))
                requests.extend(judgments)
    else:
        if not (answer or "").strip():
            requests.append(Request("answer", overrides.answer_model or settings.answer_model,
                                    query_tokens, answer_max))
            answer = None
        requests.extend(_judgments(plan, query, answer, answer_max, judge, judge_max))
    return priced(requests, settings.prices, batch, panel=panel is not None)


def priced(requests: Iterable[Request], prices: dict[str, Price], batch: bool = False,
           panel: bool = False) -> Estimate:
    """The requests added up per model and priced (at half price through a batch)."""
    discount = BATCH_DISCOUNT if batch else 1.0
    tally: dict[str, list[int]] = {}
    answers = judgments = 0
    for request in requests:
        counts = tally.setdefault(request.model, [0, 0, 0])
        counts[0] += 1
        counts[1] += request.input_tokens
        counts[2] += request.output_tokens
        if request.kind == "answer":
            answers += 1
        else:
            judgments += 1
    figures = []
    for model, (n, tokens_in, tokens_out) in tally.items():
        price = price_for(model, prices)
        cost = None if price is None else \
            discount * (tokens_in * price.input + tokens_out * price.output) / 1_000_000
        figures.append(ModelFigures(model, n, tokens_in, tokens_out, cost))
    return Estimate(answers, judgments, tuple(figures), panel)


def _judgments(plan: Plan, query: str | None, answer: str | None, answer_max: int,
               judge: str, judge_max: int) -> list[Request]:
    """One request per ai measure; ``answer`` None: an answer of ``answer_max`` tokens."""
    # what each input is estimated to be, in tokens; a measure reading an input that has
    # none (a note without a query) is skipped by the run, and so is what reads that
    out_tokens = {"answer": estimated_tokens(answer) if answer is not None else answer_max}
    if query is not None:
        out_tokens["query"] = estimated_tokens(as_context(query))
    requests: list[Request] = []
    for measure in _in_order(plan):
        if any(name not in out_tokens for name in measure.input):
            continue
        inputs = sum(out_tokens[name] for name in measure.input)
        if measure.type != "ai":
            out_tokens[measure.id] = inputs  # a programmatic measure: no more than it reads
            continue
        assert measure.prompt is not None
        max_tokens = measure.max_tokens or judge_max
        prompt = estimated_tokens(fill_placeholders(measure.prompt, measure.params))
        requests.append(Request("judgment", measure.model or judge, prompt + inputs,
                                max_tokens))
        out_tokens[measure.id] = max_tokens
    return requests


def _in_order(plan: Plan) -> list[Measure]:
    """The measures with each after the measures it reads (the plan is a DAG)."""
    done: set[str] = set()
    ordered: list[Measure] = []
    left = list(plan.measures)
    while left:
        ready = [m for m in left if all(d in done for d in plan.depends_on[m.id])]
        ordered.extend(ready)
        done.update(m.id for m in ready)
        left = [m for m in left if m.id not in done]
    return ordered
