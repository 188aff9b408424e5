"""The panel note format: a note that asks many answers to one question. Pure.

A **panel note** is a note whose frontmatter has ``samples`` (a whole number, 1 to 100) or
``assistants`` (one name, or a list of names), or both; a note with neither is an
ordinary note, untouched by anything here (the contract: shared/panel-format.md).

Each answer a run receives becomes an **answer note** beside the panel note, in the seed's
shape (:func:`answer_note_text`), named by :func:`answer_file_name`, and read back by
:func:`read_answer`. The run's figures (:func:`panel_figures`) and the ``[!panel]`` summary
callout (:func:`summary_lines`) are computed from those answer notes' typed results.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import yaml

from vaultd.config import UNSAFE_NAME, UNSAFE_NAME_CHARS
from vaultd.errors import Problem, one_line
from vaultd.note import yamlread
from vaultd.note.measures import Measure
from vaultd.note.overrides import read_overrides
from vaultd.note.properties import DEFAULT_PREFIX, yaml_value
from vaultd.note.render import PANEL_TITLE, code_callout, quote, render_value
from vaultd.note.results import NoteResults, Typed, note_results
from vaultd.note.text import Note, Property, strip_eol
from vaultd.stats import fisher_exact, mean_interval, wilson

MAX_SAMPLES = 100
RUN_ID = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d):(\d\d):(\d\d)Z$")  # 2026-12-02T14:35:07Z
_UNSAFE = UNSAFE_NAME  # the one rule for names in file names (vaultd.config)
_LINK = re.compile(r"^\[\[([^\]|#^]*)(?:[#^][^\]|]*)?(?:\|[^\]]*)?\]\]$")


@dataclass(frozen=True)
class PanelSpec:
    """What a panel note asks for: ``samples`` answers from each of ``assistants``.

    ``assistants == ()`` means "the vault's answer model"."""

    samples: int = 1
    assistants: tuple[str, ...] = ()
    every: timedelta | None = None  # a new run this long after the last one started


EVERY = {"12h": timedelta(hours=12), "1d": timedelta(days=1), "7d": timedelta(days=7),
         "30d": timedelta(days=30)}


def run_start(run: str) -> datetime | None:
    """A run id's start, in UTC; None when it is not a run id."""
    if not RUN_ID.match(run):
        return None
    return datetime.strptime(run, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def run_id(at: datetime) -> str:
    """The id of a run started at ``at``: its UTC time to the second."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_run(last: str | None, every: timedelta, now: datetime) -> datetime:
    """When a scheduled panel runs next: ``every`` after the last run's start, or now when
    it never ran (a week offline makes one run, not seven)."""
    start = run_start(last) if last else None
    return now if start is None else start + every


def read_panel(note: Note) -> tuple[PanelSpec | None, list[Problem]]:
    """The note's panel settings and a problem (on the property's line) for each bad one.

    ``(None, [])`` when the frontmatter has neither ``samples`` nor ``assistants`` (or
    both are empty): the note is an ordinary note. A note with a bad setting still gets a
    spec (with the default in place of the bad value), so that it is known as a panel note
    and its problems are reported rather than it being run as an ordinary note.
    """
    if note.frontmatter is None:
        return None, []
    samples_prop = note.frontmatter.get("samples")
    assistants_prop = note.frontmatter.get("assistants")
    every_prop = note.frontmatter.get("every")
    problems: list[Problem] = []
    samples_value = _read(samples_prop, problems)
    assistants_value = _read(assistants_prop, problems)
    if samples_value is None and assistants_value is None and not problems:
        return None, []
    every = _every(every_prop, _read(every_prop, problems), problems)
    samples = 1
    if samples_prop is not None and samples_value is not None:
        found = _samples(samples_prop, samples_value, problems)
        samples = found if found is not None else samples
    assistants: tuple[str, ...] = ()
    if assistants_prop is not None and assistants_value is not None:
        assistants = _assistants(assistants_prop, assistants_value, problems)
    return PanelSpec(samples, assistants, every), problems


def _every(prop: Property | None, value: object, problems: list[Problem]) -> timedelta | None:
    if prop is None or value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in EVERY:
        return EVERY[value.strip().lower()]
    problems.append(Problem(prop.start + 1, f"property `{_key(prop)}`: `{_shown(value)}` is not "
                            f"one of {', '.join(EVERY)}", f"e.g. {_key(prop)}: 7d"))
    return None


def _read(prop: Property | None, problems: list[Problem]) -> object:
    """The property's YAML value; None when it is missing or empty (or unreadable, with a
    problem added)."""
    if prop is None:
        return None
    key = _key(prop)
    line = prop.start + 1
    text = f"{prop.raw_value}\n{prop.more}\n" if prop.more else prop.raw_value
    if not text.strip():
        return None
    try:
        value = yamlread.load(text)
    except yamlread.AliasError as exc:
        problems.append(Problem(line, f"property `{key}`: {exc.problem}"))
        return None
    except yaml.YAMLError:
        problems.append(Problem(line, f"property `{key}`: not a valid YAML value",
                                'put text in double quotes: "..."'))
        return None
    except RecursionError:  # PyYAML recurses once per level of nesting
        problems.append(Problem(line, f"property `{key}`: nested too deeply"))
        return None
    if value == [] or (isinstance(value, str) and not value.strip()):
        return None  # as Obsidian writes a property left empty
    return value


def _samples(prop: Property, value: object, problems: list[Problem]) -> int | None:
    key = _key(prop)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SAMPLES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_SAMPLES:
        problems.append(Problem(prop.start + 1, f"property `{key}`: {value} is more than "
                                f"{MAX_SAMPLES} samples", f"e.g. {key}: {MAX_SAMPLES}"))
        return None
    hint = ("write the number without quotes"
            if isinstance(value, str) and value.strip().isdigit() else f"e.g. {key}: 10")
    problems.append(Problem(prop.start + 1, f"property `{key}`: `{_shown(value)}` is not a "
                            f"whole number from 1 to {MAX_SAMPLES}", hint))
    return None


def _assistants(prop: Property, value: object, problems: list[Problem]) -> tuple[str, ...]:
    key = _key(prop)
    line = prop.start + 1
    items = value if isinstance(value, list) else [value]
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            what = "an empty name" if item is None else f"`{_shown(item)}` is not a name"
            problems.append(Problem(line, f"property `{key}`: {what}",
                                    "e.g. assistants: [claude-sonnet-5-5, claude-opus-4-1]"))
            continue
        name = item.strip()
        if not name:
            problems.append(Problem(line, f"property `{key}`: an empty name"))
        elif _UNSAFE.search(name):
            bad = "".join(sorted(set(_UNSAFE.findall(name))))
            problems.append(Problem(line, f"property `{key}`: `{_shown(name)}` holds "
                                    f"{json.dumps(bad)}, not allowed in a file name",
                                    f"no {UNSAFE_NAME_CHARS} in a name"))
        elif name in names:
            problems.append(Problem(line, f"property `{key}`: `{_shown(name)}` is named twice"))
        else:
            names.append(name)
    return tuple(names)


def _key(prop: Property) -> str:
    return prop.key.strip("'\"")


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    return text if len(text) <= 40 else text[:39] + "…"


# --- answer notes -----------------------------------------------------------------------


def answer_file_name(run: str, assistant: str, sample: int) -> str:
    """``2026-12-02T14:35:07Z``, ``gpt``, 3 -> ``2026-12-02 143507 gpt 3.md``; characters
    not allowed in a file name or an Obsidian link in the assistant's name become ``-``.
    A run id not of that form is a ``ValueError``."""
    match = RUN_ID.match(run)
    if not match:
        raise ValueError(f"not a run id (YYYY-MM-DDTHH:MM:SSZ): {run!r}")
    day, hours, minutes, seconds = match.groups()
    return f"{day} {hours}{minutes}{seconds} {_UNSAFE.sub('-', assistant)} {sample}.md"


def answer_note_text(panel: Note, panel_name: str, run: str, assistant: str, model: str,
                     sample: int, answer: str, provider: str | None = None) -> str:
    """The answer note as vaultd creates it, before it is judged (``Status: Pending``).

    ``panel_name`` is the panel note's name or vault path (``Queries/Sezary
    second-line.md``); the link is to its name without folder and ``.md`` (Obsidian
    resolves the shortest name). The panel note's ``[!query]`` text is copied into a fresh
    ``[!query]`` callout, and its ``[!measures]`` callout line for line as it stands, line
    endings included; every other line takes the panel note's own line ending. A panel
    note's ``model`` (its judge) is written as the answer note's ``judge``. A panel note
    without a ``[!query]`` or a ``[!measures]`` callout is a ``ValueError``.
    """
    query = panel.first("query")
    measures = panel.first("measures")
    query_block = query.block(("text",)) if query else None
    if query_block is None or measures is None:
        raise ValueError("a panel note needs a `[!query]` and a `[!measures]` callout")
    newline = panel.newline
    name = panel_name.replace("\\", "/").rsplit("/", 1)[-1]
    name = name[:-3] if name.lower().endswith(".md") else name
    head = [
        "---",
        "Status: Pending",
        f"panel: {_yaml_text(f'[[{name}]]')}",
        f"assistant: {_yaml_text(assistant)}",
        *([f"provider: {_yaml_text(provider)}"] if provider else []),
        f"model: {_yaml_text(model)}",
        f"sample: {int(sample)}",
        f"run: {_yaml_text(run)}",
    ]
    judge = read_overrides(panel)[0].model
    if judge is not None:
        head.append(f"judge: {_yaml_text(judge)}")
    head.append("---")
    lines = [
        *head,
        "",
        "***",
        "",
        *code_callout("> [!query]", "query-text", query_block.content),
        "",
        "***",
        "",
        *code_callout("> [!answer]", "answer-text", answer),
        "",
        "***",
        "",
    ]
    text = "".join(line + newline for line in lines)
    verbatim = panel.lines[measures.start : measures.end]
    for line in verbatim:
        text += line if line != strip_eol(line) else line + newline
    return text


def _yaml_text(text: str) -> str:
    """``text`` as a YAML value that reads back as that text in YAML 1.1 and 1.2 alike:
    plain where that is safe, else double-quoted (as results are written as properties)."""
    return yaml_value(text) or json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class AnswerNote:
    """An answer note, read back: who answered, in which run, and its results."""

    name: str  # vault path with "/" and without ".md" (for wikilinks)
    panel: str  # the panel link's target, e.g. "Sezary second-line"
    run: str
    assistant: str
    model: str
    sample: int
    status: str  # as written: Done / Error / Pending / Processing
    results: NoteResults
    tokens_in: int = 0  # what asking for it and judging it took, as its properties say
    tokens_out: int = 0
    cost_usd: float = 0.0
    provider: str = ""  # "anthropic", "openai"; "" in notes written before providers


def read_answer(name: str, note: Note, prefix: str = DEFAULT_PREFIX) -> AnswerNote | None:
    """The answer note ``note`` (at vault path ``name``), or None when it is not one: it
    lacks one of ``panel``, ``run``, ``assistant`` and a whole-number ``sample``."""
    panel = _text_property(note, "panel")
    run = _text_property(note, "run")
    assistant = _text_property(note, "assistant")
    sample = _sample(note)
    if not panel or not run or not assistant or sample is None:
        return None
    match = _LINK.match(panel)
    target = match.group(1).strip() if match else panel
    link = name.replace("\\", "/")
    link = link[:-3] if link.lower().endswith(".md") else link
    return AnswerNote(
        name=link,
        panel=target,
        run=run,
        assistant=assistant,
        model=_text_property(note, "model") or "",
        provider=_text_property(note, "provider") or "",
        sample=sample,
        status=(note.status or "").strip(),
        results=note_results(name, note, prefix),
        tokens_in=_count(note, "tokens_in"),
        tokens_out=_count(note, "tokens_out"),
        cost_usd=_dollars(note),
    )


def _count(note: Note, key: str) -> int:
    value = note.properties.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _dollars(note: Note) -> float:
    value = note.properties.get("cost_usd")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


def _text_property(note: Note, key: str) -> str | None:
    """A property's value as text, as written (an unquoted date stays the text it is)."""
    prop = note.frontmatter.get(key) if note.frontmatter else None
    if prop is None:
        return None
    text = f"{prop.raw_value}\n{prop.more}\n" if prop.more else prop.raw_value
    try:
        value = yamlread.load_text(text) if text.strip() else None
    except (yaml.YAMLError, RecursionError):
        return None
    if isinstance(value, list) and len(value) == 1:  # as Obsidian writes a list property
        value = value[0]
    return value.strip() if isinstance(value, str) else None


def _sample(note: Note) -> int | None:
    text = _text_property(note, "sample")
    return int(text) if text is not None and text.isdigit() and text.isascii() else None


# --- the summary ------------------------------------------------------------------------

Kind = Literal["boolean", "number", "text", "list"]
Value = bool | int | float | str | tuple[str, ...]
_JUDGED = ("done", "error")
_NONE = "\u2014"  # an em dash: a cell with nothing to show
_TO = "\u2013"  # an en dash, between an interval's ends
_TEXT_LIMIT = 80  # a text value's characters in a cell


@dataclass(frozen=True)
class Values:
    """One measure over some answers: the values of those it succeeded in, and the rest."""

    values: tuple[Value, ...]
    failed: int = 0
    skipped: int = 0


def summary_lines(run: str, assistants: Sequence[str], measures: Sequence[Measure],
                  answers: Sequence[AnswerNote], samples: int,
                  earlier: Sequence[AnswerNote] = ()) -> list[str]:
    """The panel note's whole ``> [!panel]`` callout, as lines without endings (the splicer
    gives them the note's own): a title naming the run and how many of its
    ``samples`` times ``assistants`` answers are judged, then the Measures, Mentions, Answers and
    Runs tables of the contract.

    ``assistants`` are the columns, in order (an assistant found only in ``answers`` gets a
    column after them); ``answers`` are the run's answer notes (others are left out),
    ``earlier`` the answer notes of the note's earlier runs. An answer note counts once it
    is judged (``Done`` or ``Error``); the Answers table links every one.
    """
    now = [a for a in answers if a.run == run]
    before = [a for a in earlier if a.run != run]
    names = list(dict.fromkeys([*assistants, *(a.assistant for a in now)]))
    judged = [a for a in now if is_judged(a)]
    kinds = {m.id: kind_of(collect(m.id, [*judged, *filter(is_judged, before)]).values)
             for m in measures}
    total = samples * len(list(dict.fromkeys(assistants))) or len(now)
    lines = [f"> [!panel] {PANEL_TITLE}{run} · {len(judged)} of {total} answers"]
    body: list[str] = []
    body += _section("Measures", _measures_table(names, measures, kinds, judged))
    for measure in measures:
        if kinds[measure.id] == "list":
            if "**Mentions**" not in body:
                body += ["**Mentions**", ""]
            body += [*_mentions_table(names, measure, judged), ""]
    body += _section("Answers", _answers_table(names, now))
    body += _section("Runs", _runs_table(names, measures, kinds, [*now, *before]))
    changes = _changes_table(names, [m for m in measures if kinds[m.id] == "list"], judged,
                             [a for a in before if is_judged(a)])
    if changes:
        body += _section("Changes", changes)
    return lines + quote(body[:-1])


def _named(measure: Measure, answers: Iterable[AnswerNote]) -> set[str]:
    return {item for value in collect(measure.id, answers).values
            if isinstance(value, tuple) for item in value}


def _changes_table(names: Sequence[str], lists: Sequence[Measure],
                   judged: Sequence[AnswerNote], before: Sequence[AnswerNote]) -> list[str]:
    """Per assistant and list-valued measure, the items its answers named in this run and
    not in its run before (``+Adcetris``), and the other way round (a minus sign and the
    item); none when no assistant has a run before."""
    rows = []
    for name in names:
        mine = _of(before, name)
        if not mine or not _of(judged, name):
            continue
        previous = max(a.run for a in mine)
        cells = [name, previous]
        for measure in lists:
            now = _named(measure, _of(judged, name))
            then = _named(measure, [a for a in mine if a.run == previous])
            moved = [f"+{item}" for item in sorted(now - then)]
            moved += [f"\u2212{item}" for item in sorted(then - now)]
            cells.append(cell_text(" ".join(moved)) if moved else "no change")
        rows.append(cells)
    if not rows or not lists:
        return []
    return _table(["Assistant", "Since", *(cell_text(m.label) for m in lists)], rows)


def panel_figures(measures: Sequence[Measure], answers: Sequence[AnswerNote]) -> dict[str, Typed]:
    """The run's figure per measure id, over all ``answers`` (those it succeeded in): the
    share true of a boolean (four decimals), the mean of a number (four decimals; text
    values beside the numbers left out), the most common value of a text; no figure for a
    list, nor for a measure with no value."""
    judged = [a for a in answers if is_judged(a)]
    figures: dict[str, Typed] = {}
    for measure in measures:
        values = collect(measure.id, judged).values
        kind = kind_of(values)
        if kind == "boolean":
            bools = [v for v in values if isinstance(v, bool)]
            figures[measure.id] = round(sum(bools) / len(bools), 4)
        elif kind == "number":
            numbers = _numbers(values)
            figures[measure.id] = round(math.fsum(numbers) / len(numbers), 4)
        elif kind == "text" and values:
            figures[measure.id] = _ranked(_texts(values))[0][0]
    return figures


def is_judged(answer: AnswerNote) -> bool:
    """Whether the answer note is judged (Done or Error): only those count in figures."""
    return answer.status.lower() in _JUDGED


def collect(measure_id: str, answers: Iterable[AnswerNote]) -> Values:
    """The measure's values over ``answers`` (a list's items as a tuple), and how many of
    them it failed or was skipped in."""
    values: list[Value] = []
    failed = skipped = 0
    for answer in answers:
        result = answer.results.result(measure_id)
        state = result.state if result is not None else "error"
        if result is None or state == "error":
            failed += 1
        elif state == "skipped":
            skipped += 1
        elif isinstance(result.value, tuple):
            values.append(result.items)
        else:
            values.append("null" if result.value is None else result.value)
    return Values(tuple(values), failed, skipped)


def kind_of(values: Sequence[Value]) -> Kind:
    """A list measure if any answer gave a list; else number if any gave a number; else
    boolean if any gave true or false; else text."""
    if any(isinstance(v, tuple) for v in values):
        return "list"
    if _numbers(values):
        return "number"
    if any(isinstance(v, bool) for v in values):
        return "boolean"
    return "text"


def _numbers(values: Sequence[Value]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def _texts(values: Sequence[Value]) -> list[str]:
    """Each value as the text a cell shows of it (a list's items joined)."""
    return [", ".join(v) if isinstance(v, tuple) else render_value(v) for v in values]


def _ranked(items: Iterable[str]) -> list[tuple[str, int]]:
    """Counted, most first; ties in alphabetical order."""
    return sorted(Counter(items).items(), key=lambda pair: (-pair[1], pair[0]))


def measure_cell(kind: Kind, found: Values) -> str:
    """One measure's figure over some answers (``found``), as the summary's Measures table
    shows it for a measure of ``kind`` (see the contract)."""
    values = found.values
    ok = len(values)
    parts: list[str] = []
    others: list[Value] = []
    if kind == "boolean":
        bools = [v for v in values if isinstance(v, bool)]
        others = [v for v in values if not isinstance(v, bool)]
        if bools:
            parts.append(share(sum(bools), len(bools)))
    elif kind == "number":
        numbers = _numbers(values)
        others = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
        if numbers:
            mean, interval = mean_interval(numbers)
            spread = f" ({number(interval.low)}{_TO}{number(interval.high)})" if interval else ""
            parts.append(f"{number(mean)}{spread} · n={len(numbers)}")
    elif kind == "list":
        named = _ranked(item for v in values if isinstance(v, tuple) for item in set(v))
        if named:
            parts.append(f"{cell_text(named[0][0])} {named[0][1]}/{ok}")
        elif ok:
            parts.append(f"no items · n={ok}")
    elif values:
        value, count = _ranked(_texts(values))[0]
        parts.append(f"{cell_text(value)} {count}/{ok}")
    parts += [f"{cell_text(value)} {count}/{ok}" for value, count in _ranked(_texts(others))]
    if found.failed:
        parts.append(f"{found.failed} failed")
    if found.skipped:
        parts.append(f"{found.skipped} skipped")
    return " · ".join(parts) or _NONE


def share(count: int, n: int) -> str:
    """``3/5 · 60% (23-88%)`` (an en dash): the count, the share, its 95% Wilson interval."""
    interval = wilson(count, n)
    return (f"{count}/{n} · {_percent(count / n)}% "
            f"({_percent(interval.low)}{_TO}{_percent(interval.high)}%)")


def change_flag(now: tuple[int, int], before: tuple[int, int] | None) -> str:
    """`` ↑ p=0.0079`` where ``now`` (count, n) differs from ``before`` by more than chance
    allows (two-sided Fisher exact test, p < 0.05), ``""`` otherwise or with no before."""
    if before is None or now[1] == 0 or before[1] == 0:
        return ""
    p = fisher_exact(now[0], now[1] - now[0], before[0], before[1] - before[0])
    if p >= 0.05:
        return ""
    arrow = "↑" if now[0] / now[1] > before[0] / before[1] else "↓"
    return f" {arrow} p={_p_value(p)}"


def _percent(fraction: float) -> str:
    return str(math.floor(fraction * 100 + 0.5))  # half up, as people round


def number(value: float) -> str:
    """At most two decimals, trailing zeros dropped: ``2.4``, ``-0.1``, ``3``."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _p_value(p: float) -> str:
    """Two decimals, or two significant digits below 0.01 (``0.0083``, ``0.008``); a p
    below 0.05 never reads as ``0.05`` (0.0496 is ``0.0496``)."""
    if p >= 0.01:
        return f"{p:.2f}" if p >= 0.05 or f"{p:.2f}" != "0.05" else f"{p:.4f}".rstrip("0")
    digits = 1 - math.floor(math.log10(p)) if p > 0 else 2
    return f"{p:.{digits}f}".rstrip("0").rstrip(".")


def cell_text(text: str) -> str:
    """Text for a table cell: one line, not too long, its pipes escaped."""
    return one_line(text, _TEXT_LIMIT).replace("|", "\\|")


def _section(title: str, table: list[str]) -> list[str]:
    return [f"**{title}**", "", *table, ""]


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(row) for row in rows)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _of(answers: Sequence[AnswerNote], assistant: str) -> list[AnswerNote]:
    return [a for a in answers if a.assistant == assistant]


def _measures_table(names: Sequence[str], measures: Sequence[Measure], kinds: dict[str, Kind],
                    judged: Sequence[AnswerNote]) -> list[str]:
    rows = [[cell_text(m.label), *(measure_cell(kinds[m.id], collect(m.id, _of(judged, name)))
                               for name in names)] for m in measures]
    return _table(["Measure", *map(cell_text, names)], rows)


def _mentions_table(names: Sequence[str], measure: Measure,
                    judged: Sequence[AnswerNote]) -> list[str]:
    rows = [[cell_text(item), *cells] for item, cells in mention_rows(names, measure.id, judged)]
    return _table([cell_text(measure.label), *map(cell_text, names)], rows)


def mention_rows(names: Sequence[str], measure_id: str,
                 judged: Sequence[AnswerNote]) -> list[tuple[str, list[str]]]:
    """Share of voice: per item any of ``judged`` names (most named first), the item as
    written and a cell per assistant of ``names``: the share of its answers naming the
    item, with its interval, and its mean position in the list (``pos``, 1 = first)."""
    lists = {name: [v for v in collect(measure_id, _of(judged, name)).values
                    if isinstance(v, tuple)] for name in names}
    every = [item for found in lists.values() for items in found for item in set(items)]
    rows = []
    for item, _count in _ranked(every):
        row: list[str] = []
        for name in names:
            found = lists[name]
            positions = [items.index(item) + 1 for items in found if item in items]
            cell = share(len(positions), len(found)) if found else _NONE
            if positions:
                cell += f" · pos {number(math.fsum(positions) / len(positions))}"
            row.append(cell)
        rows.append((item, row))
    return rows


def _answers_table(names: Sequence[str], answers: Sequence[AnswerNote]) -> list[str]:
    rows = []
    for name in names:
        links = []
        for answer in sorted(_of(answers, name), key=lambda a: (a.sample, a.name)):
            link = f"[[{answer.name.replace('|', '-')}\\|{answer.sample}]]"
            status = answer.status.lower()
            links.append(link if status == "done" else f"{link} ({status or 'pending'})")
        rows.append([cell_text(name), " ".join(links) or _NONE])
    return _table(["Assistant", "Answers"], rows)


def _runs_table(names: Sequence[str], measures: Sequence[Measure], kinds: dict[str, Kind],
                answers: Sequence[AnswerNote]) -> list[str]:
    """A row per run, newest first: its judged answers, and each boolean measure's share per
    assistant, flagged where it differs from that assistant's run before (Fisher exact)."""
    judged = [a for a in answers if is_judged(a)]
    runs = sorted({a.run for a in answers}, reverse=True)
    booleans = [m for m in measures if kinds[m.id] == "boolean"]
    head = ["Run", "Answers"]
    columns: list[tuple[Measure, str]] = [(m, name) for m in booleans for name in names]
    head += [cell_text(m.label if len(names) == 1 else f"{m.label} · {name}")
             for m, name in columns]
    counts: dict[tuple[str, str, str], tuple[int, int]] = {}  # (measure, who, run) -> t, n
    for measure, name in columns:
        for run in runs:
            bools = [v for v in collect(measure.id, [a for a in _of(judged, name)
                                                      if a.run == run]).values
                     if isinstance(v, bool)]
            if bools:
                counts[(measure.id, name, run)] = (sum(bools), len(bools))
    rows = []
    for index, run in enumerate(runs):
        row = [run, str(sum(1 for a in judged if a.run == run))]
        for measure, name in columns:
            now = counts.get((measure.id, name, run))
            if now is None:
                row.append(_NONE)
                continue
            older = next((counts[key] for key in ((measure.id, name, r) for r in runs[index + 1:])
                          if key in counts), None)
            row.append(f"{_percent(now[0] / now[1])}%{change_flag(now, older)}")
        rows.append(row)
    return _table(head, rows)
