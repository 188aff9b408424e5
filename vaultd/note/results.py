"""Results read back out of a note: its evaluation pairs, matched to its measures. Pure.

vaultd writes each measure's result as an ``[!evaluation]`` / ``[!evaluation-result]``
pair (see :mod:`vaultd.note.render`). The pair names the measure by its label (the
description, or the id when there is none), not by its id, so each pair is matched to
the note's declared measures by label, in declared order (the order vaultd writes them
in); two measures with the same label are told apart by that order. A pair that names no
declared measure (the measures were edited after the run) is counted, not guessed at.

A result is kept as the text the note shows, and typed as the run recorded it, never
guessed back from that text: where the run wrote the measure's ``<prefix><id>`` property
(the note's ``vaultd_properties`` record lists it, see :mod:`vaultd.note.properties`) and the
property's value renders as the text shown, the value is the property's (a string, a
number, a boolean, or a list of those). A result with no such property is one the run
wrote none for: an ``Error: ...`` or ``Skipped: ...`` line is a failure, ``null`` is null,
anything else (an object, a nested list) is text, one value however many lines it has.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Literal

import yaml

from vaultd.errors import one_line
from vaultd.note import yamlread
from vaultd.note.measures import Measure, read_block
from vaultd.note.properties import DEFAULT_PREFIX, property_key, recorded_keys
from vaultd.note.render import render_value
from vaultd.note.text import Callout, Note, not_vaultds

Scalar = bool | int | float | str | None
Typed = bool | int | float | str | tuple[bool | int | float | str, ...]  # a property's value
State = Literal["ok", "error", "skipped"]
_MONTH = re.compile(r"^(\d{4}-\d\d)-\d\d")


@dataclass(frozen=True)
class Result:
    """One measure's result in one note, as the note shows it."""

    measure: str  # the measure's id
    label: str
    kind: str  # "ai" or "programmatic", as the pair says
    text: str  # the result block's content, exactly
    typed: Typed | None = None  # the value of the property the run wrote for it, if any

    @property
    def state(self) -> State:
        if self.typed is not None:
            return "ok"
        if self.text.startswith("Error: ") and "\n" not in self.text:
            return "error"
        if self.text.startswith("Skipped: ") and "\n" not in self.text:
            return "skipped"
        return "ok"

    @property
    def items(self) -> tuple[str, ...]:
        """The value's items as the note shows them: one for a scalar, one per list item."""
        if isinstance(self.typed, tuple):
            return tuple(render_value(item) for item in self.typed)
        return (self.text,)

    @property
    def value(self) -> Scalar | tuple[Scalar, ...]:
        """The typed value (see the module docstring); a failure's is None."""
        if self.typed is not None:
            return self.typed
        return None if self.state != "ok" or self.text == "null" else self.text


@dataclass(frozen=True)
class NoteResults:
    """A finished note's results. ``name`` is its path in the vault, with ``/``."""

    name: str
    status: str  # as the note spells it: "Done" or "Error"
    evaluated: str | None  # the Evaluated property as written, if any
    results: tuple[Result, ...]
    unmatched: int = 0  # pairs that name no declared measure
    properties: frozenset[str] = frozenset()  # the note's property keys, lowercased

    @property
    def link(self) -> str:
        """The note's wikilink target: its path without ``.md``."""
        return self.name[:-3] if self.name.lower().endswith(".md") else self.name

    @property
    def month(self) -> str | None:
        """``YYYY-MM`` of the Evaluated property, when it holds a date."""
        match = _MONTH.match(self.evaluated or "")
        return match.group(1) if match else None

    def result(self, measure: str) -> Result | None:
        for result in self.results:
            if result.measure == measure:
                return result
        return None


def scalar(text: str) -> Scalar:
    """A line of text as the JSON scalar it spells (numbers, booleans, null), else the text.
    For ordering and display only: a result's type is never read back this way."""
    if not text or text != text.strip() or text[0] not in "-0123456789tfn":
        return text
    try:
        value = json.loads(text, parse_constant=_reject)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text  # 1e400: too large to be a number vaultd wrote
    return value if value is None or isinstance(value, bool | int | float) else text


def _reject(name: str) -> object:
    raise ValueError(name)  # NaN and Infinity are not JSON numbers vaultd writes


def is_evaluated(note: Note) -> bool:
    """Done or Error, and one of vaultd's notes (a task note with ``Status: Done`` is not)."""
    return not_vaultds(note, ("done", "error")) is None


def note_results(name: str, note: Note, prefix: str = DEFAULT_PREFIX) -> NoteResults:
    """The results of a parsed note, matched to its measures and typed by the properties the
    run wrote with ``prefix`` (see the module docstring)."""
    measures = _declared(note)
    recorded = {key.lower() for key in recorded_keys(note, prefix)}
    used: set[int] = set()
    results: list[Result] = []
    unmatched = 0
    last = -1
    for head, body in _pairs(note):
        label, kind = head
        index = _match(measures, label, used, last)
        if index is None:
            unmatched += 1
            continue
        used.add(index)
        last = index
        key = property_key(prefix, measures[index].id).lower()
        typed = _typed(note.properties.get(key), body) if key in recorded else None
        results.append(Result(measures[index].id, label, kind or measures[index].type, body,
                              typed))
    prop = note.frontmatter.get("evaluated") if note.frontmatter else None
    evaluated = prop.raw_value.strip().strip("'\"") if prop else None
    status = (note.status or "").strip()
    keys = frozenset(p.key.strip("'\"").lower() for p in note.frontmatter.properties) \
        if note.frontmatter else frozenset()
    return NoteResults(name, status, evaluated or None, tuple(results), unmatched, keys)


def _typed(value: object, text: str) -> Typed | None:
    """A property's value, when it is one vaultd writes and renders as the result's text."""
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        typed: Typed = tuple(value)
    elif isinstance(value, str | int | float):  # bool is an int
        typed = value
    else:
        return None
    shown = render_value(list(typed) if isinstance(typed, tuple) else typed)
    return typed if shown == text else None


def _declared(note: Note) -> list[Measure]:
    block = note.measures_block
    if block is None:
        return []
    measures = read_block(block).measures  # as the engine read them
    seen: set[str] = set()
    unique = []
    for measure in measures:  # as the engine runs them: the first of a duplicated id
        if measure.id not in seen:
            seen.add(measure.id)
            unique.append(measure)
    return unique


def _match(measures: list[Measure], label: str, used: set[int], last: int) -> int | None:
    """The declared measure this label names: the next one after ``last``, else any unused."""
    candidates = [i for i, m in enumerate(measures)
                  if i not in used and one_line(m.label) == label]
    later = [i for i in candidates if i > last]
    found = later or candidates
    return found[0] if found else None


def _pairs(note: Note) -> list[tuple[tuple[str, str], str]]:
    """Each ``[!evaluation]`` callout's (label, type) and the result callout after it."""
    pairs: list[tuple[tuple[str, str], str]] = []
    head: tuple[str, str] | None = None
    for callout in note.callouts:
        if callout.kind == "evaluation":
            head = _head(callout)
        elif callout.kind == "evaluation-result" and head is not None:
            block = callout.block(("text",))
            if block is not None:
                pairs.append((head, block.content))
            head = None
    return pairs


def _head(callout: Callout) -> tuple[str, str] | None:
    block = callout.block(("yaml",))
    if block is None:
        return None
    try:
        data = yamlread.load(block.content)
    except yaml.YAMLError:
        return None
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict) or entry.get("measure") is None:
        return None
    kind = entry.get("type")
    return str(entry["measure"]), str(kind) if kind is not None else ""
