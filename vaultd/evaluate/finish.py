"""A run's outcomes become the changes that finish its note. Pure.

:func:`verdict` decides, against the note as it is on disk when it is written, what a
finished run writes: ``Status`` (``Done``, or ``Error`` when a measure did not succeed),
why, when, what it cost, and the result properties (the user's own keys win). It is
called again on every retry of a write, so the note it sees is always the current one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from vaultd.errors import Problem, one_line
from vaultd.evaluate.cost import Usage
from vaultd.note.measures import Measure
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.properties import Collision, property_changes
from vaultd.note.render import error_callout
from vaultd.note.splice import Changes
from vaultd.note.text import Note


@dataclass(frozen=True)
class Verdict:
    """How a finished run ends: the changes to write and what to say of them."""

    changes: Changes
    failed: tuple[tuple[Measure, Outcome], ...]
    summary: str  # why it failed, in one line; "" when every measure succeeded
    collisions: tuple[Collision, ...]  # result properties left as the user wrote them


def own_properties(error: str | None, evaluated: datetime, usage: Usage | None = None
                   ) -> dict[str, str | None]:
    """``Error`` (removed when None), ``Evaluated`` and, with ``usage``, the token and cost
    properties, as YAML values."""
    props: dict[str, str | None] = {
        "Error": json.dumps(error, ensure_ascii=False) if error else None,
        "Evaluated": evaluated.replace(microsecond=0).isoformat(),
    }
    if usage is not None:
        props.update(usage_properties(usage))
    return props


def usage_properties(usage: Usage) -> dict[str, str | None]:
    return {
        "tokens_in": str(usage.input_tokens + usage.cache_read_tokens
                         + usage.cache_write_tokens),
        "tokens_out": str(usage.output_tokens),
        "cost_usd": f"{usage.cost:.6f}".rstrip("0").rstrip(".") or "0",
    }


def verdict(
    current: Note,
    measures: Sequence[Measure],
    outcomes: Mapping[str, Outcome],
    *,
    answer: Outcome | None,
    usage: Usage | None,
    prefix: str,
    evaluated: datetime,
    results: list[str],
) -> Verdict:
    """The changes that finish ``current`` with ``outcomes`` (one for every measure).

    ``answer`` is the answer's outcome (a failure to generate it is the note's error),
    ``usage`` what the run spent (None: it asked no model, so no cost properties) and
    ``results`` the rendered evaluation pairs."""
    failed = tuple((m, outcomes[m.id]) for m in measures
                   if not isinstance(outcomes[m.id], Success))
    summary = failure_summary(failed, len(measures), answer)
    props = property_changes(current, prefix, measures, outcomes)
    own = own_properties(summary if failed else None, evaluated, usage)
    changes = Changes(
        status="Error" if failed else "Done",
        properties={**own, **props.changes},
        results=results,
        clear_error=True,
    )
    return Verdict(changes, failed, summary, props.collisions)


def failure_summary(failed: Sequence[tuple[Measure, Outcome]], total: int,
                    answer: Outcome | None) -> str:
    """Why a run failed, in one line for the ``Error`` property."""
    if isinstance(answer, Failure):
        return one_line(answer.message, 300)
    if not failed:
        return ""
    measure, outcome = next(((m, o) for m, o in failed if isinstance(o, Failure)), failed[0])
    why = outcome.message if isinstance(outcome, Failure) else (
        outcome.reason if isinstance(outcome, Skipped) else "")
    return one_line(f"{len(failed)} of {total} measures did not succeed; {measure.id}: {why}", 300)


def rejected(problems: Sequence[Problem], evaluated: datetime) -> tuple[Changes, str]:
    """The changes for a note that cannot run (its problems, in its error callout), and the
    one-line summary of them."""
    lines = [f"line {p.line}: {p.text}" if p.line else p.text for p in problems]
    summary = one_line(f"{len(lines)} problem(s): {lines[0]}")
    return Changes(status="Error", properties=own_properties(summary, evaluated),
                   error=error_callout(lines), results=None), summary
