"""The report note and the Bases file: finished notes' results in, their text out. Pure.

:func:`summarise` turns every finished note's results into one summary per measure id;
:func:`report_text` writes the report note (overview, one section per measure with its
figures and Mermaid charts, then a table with a row per note); :func:`base_text` writes
``vaultd.base``, the same table as a live Obsidian Bases view. Reading the vault and
writing the files is :mod:`vaultd.obsidian.publish`'s business.

What a measure is, is read off its values across all notes, each typed as the run recorded
it (see :mod:`vaultd.note.results`: by the property the run wrote, never by its text): a
*boolean* when every value is a boolean, a *number* when every value is a number, *text*
otherwise (text, lists, or a mix such as positions that are a number or ``N/A``). ``null``
values and failed or skipped results are counted but take no part in the figures. A text
measure's distribution counts, for each value, the notes whose result holds it (a list
counts each of its items once; a text of several lines is one value).

Panels get a section of their own: figures per assistant over each panel note's latest
run, and, once runs span two dates, each list measure's most named items followed over
every run by run date (see :func:`_over_time`).

Trends by month use the month of each note's ``Evaluated`` property (when vaultd last
finished it), not the file's modification time, which any edit or sync changes. A note
without a readable ``Evaluated`` is left out of the trends only.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

import yaml

from vaultd.note.panel import (
    AnswerNote,
    change_flag,
    collect,
    is_judged,
    kind_of,
    measure_cell,
    mention_rows,
    run_start,
)
from vaultd.note.panel import share as share_cell
from vaultd.note.properties import DEFAULT_PREFIX, property_key
from vaultd.note.results import NoteResults, Result, scalar
from vaultd.obsidian import charts

REPORT_MARKER = "<!-- vaultd report:"
BASE_MARKER = "# vaultd base:"
TOP_VALUES = 10  # rows of a text measure's distribution table
PIE_SLICES = 8  # slices of its pie; the rest is one "other" slice
DISTINCT_BARS = 12  # a number with more distinct values than this is shown in ranges
BINS = 10
NONE = "\u2013"  # an en dash: no figure
TREND_ITEMS = 5  # the most named items of a list measure followed over time

Kind = Literal["boolean", "number", "text"]


@dataclass(frozen=True)
class Gathered:
    """What the vault holds: finished notes, and what was left out and why.

    ``notes`` are the single notes; a panel's finished answer notes are ``answers`` and the
    panel notes themselves ``panels`` (their vault paths), reported apart."""

    notes: tuple[NoteResults, ...]
    waiting: int = 0  # notes Pending or Processing
    unreadable: tuple[str, ...] = ()
    answers: tuple[AnswerNote, ...] = ()
    panels: tuple[str, ...] = ()


@dataclass
class MeasureSummary:
    """One measure id across all finished notes."""

    id: str
    labels: list[str] = field(default_factory=list)
    kind: Kind = "text"
    results: int = 0  # notes with a result for it
    failed: int = 0  # of which Error or Skipped
    nulls: int = 0
    true: int = 0
    false: int = 0
    numbers: list[tuple[float, str]] = field(default_factory=list)  # value, as written
    counts: Counter[str] = field(default_factory=Counter)  # value -> notes holding it
    months: dict[str, list[float]] = field(default_factory=dict)  # month -> values

    @property
    def ok(self) -> int:
        return self.results - self.failed


# -- figures ------------------------------------------------------------------------------


def summarise(notes: tuple[NoteResults, ...]) -> list[MeasureSummary]:
    """One summary per measure id, in the order ids first appear (notes in vault order)."""
    by_id: dict[str, list[tuple[NoteResults, Result]]] = {}
    for note in notes:
        for result in note.results:
            by_id.setdefault(result.measure, []).append((note, result))
    return [_summary(measure, found) for measure, found in by_id.items()]


def _summary(measure: str, found: list[tuple[NoteResults, Result]]) -> MeasureSummary:
    summary = MeasureSummary(measure, results=len(found))
    good: list[tuple[NoteResults, Result]] = []
    for _, result in found:
        if result.label not in summary.labels:
            summary.labels.append(result.label)
    for note, result in found:
        if result.state != "ok":
            summary.failed += 1
        elif result.value is None:
            summary.nulls += 1
        else:
            good.append((note, result))
    values = [r.value for _, r in good]
    if values and all(isinstance(v, bool) for v in values):
        summary.kind = "boolean"
    elif values and all(_is_number(v) for v in values):
        summary.kind = "number"
    for note, result in good:
        value = result.value
        if isinstance(value, bool):
            summary.true += value
            summary.false += not value
        if _is_number(value):
            assert isinstance(value, int | float)
            summary.numbers.append((float(value), result.text))
        summary.counts.update(set(result.items))
        if note.month and summary.kind != "text":
            point = float(value) if isinstance(value, int | float) else 0.0
            summary.months.setdefault(note.month, []).append(point)
    return summary


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: float) -> str:
    """A computed figure: at most four decimals, no exponent."""
    return charts.number(value)


def mean(values: list[float]) -> float:
    try:
        return statistics.fmean(values)
    except OverflowError:  # a sum past the largest float: divide first
        return math.fsum(v / len(values) for v in values)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return ordered[middle - 1] / 2 + ordered[middle] / 2  # halves first: no overflow


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else NONE


def number_figures(numbers: list[tuple[float, str]]) -> dict[str, str]:
    """Mean and median (computed), min and max (as the notes write them)."""
    values = [v for v, _ in numbers]
    low = min(numbers, key=lambda pair: pair[0])
    high = max(numbers, key=lambda pair: pair[0])
    return {"mean": fmt(mean(values)), "median": fmt(median(values)),
            "min": low[1], "max": high[1]}


# -- the report note ----------------------------------------------------------------------


def report_text(gathered: Gathered, base_link: str | None = None) -> str:
    """The report note's Markdown (see the module docstring)."""
    notes = gathered.notes
    measures = summarise(notes)
    lines = [
        f"{REPORT_MARKER} generated by vaultd; rewritten whenever the results change, so "
        "edits here are lost -->",
        "# vaultd report",
        "",
        "> [!info] Generated by vaultd",
        "> Built by `vaultd report` from the evaluation results in this vault's notes, and "
        "rewritten by the vaultd daemon a few seconds after notes finish. Edits made here "
        "are lost." + (f" The same table, live: [[{base_link}]]." if base_link else ""),
        "",
        *_overview(gathered, measures),
    ]
    if measures:
        lines += ["", "## Measures", "", *_measure_table(measures)]
        for summary in measures:
            lines += ["", *_measure_section(summary)]
    if gathered.answers or gathered.panels:
        lines += ["", *_panels_section(gathered)]
    if notes:
        lines += ["", "## Notes", "", *_notes_table(notes, [m.id for m in measures])]
    return "\n".join(lines) + "\n"


def _overview(gathered: Gathered, measures: list[MeasureSummary]) -> list[str]:
    notes = gathered.notes
    done = sum(1 for n in notes if n.status.lower() == "done")
    error = len(notes) - done
    dates = sorted(n.evaluated for n in notes if n.evaluated)
    lines = ["## Overview", "", *table(
        ["notes evaluated", "Done", "Error", "measures", "last evaluated"],
        [[str(len(notes)), str(done), str(error), str(len(measures)),
          inline(dates[-1]) if dates else NONE]],
    )]
    extra = []
    if gathered.waiting:
        extra.append(f"{gathered.waiting} note(s) still Pending or Processing are not counted.")
    if gathered.unreadable:
        names = ", ".join(wikilink(name) for name in gathered.unreadable)
        extra.append(f"Could not be read, and are not counted: {names}.")
    unmatched = [n for n in notes if n.unmatched]
    if unmatched:
        names = ", ".join(wikilink(n.link) for n in unmatched)
        extra.append(f"Results that name no measure their note declares (the measures were "
                     f"edited after the run) are left out: {names}.")
    if extra:
        lines += ["", *extra]
    if notes:
        lines += ["", *charts.block(charts.pie("Notes by status",
                                                [("Done", done), ("Error", error)]))]
    return lines


def _measure_table(measures: list[MeasureSummary]) -> list[str]:
    rows = [[f"`{m.id}`", inline(" / ".join(m.labels)), m.kind if m.ok > m.nulls else NONE,
             str(m.results), str(m.failed), inline(_headline(m))] for m in measures]
    return table(["measure", "description", "kind", "results", "failed", "summary"], rows)


def _headline(m: MeasureSummary) -> str:
    if m.kind == "boolean":
        return f"{share(m.true, m.true + m.false)} true ({m.true} of {m.true + m.false})"
    if m.kind == "number":
        f = number_figures(m.numbers)
        return f"mean {f['mean']}, median {f['median']}, min {f['min']}, max {f['max']}"
    top = _ranked(m.counts)[:3]
    return ", ".join(f"{_shown(value)} ({count})" for value, count in top)


def _ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most notes first; ties in a stable order (numbers by value, then text)."""
    return sorted(counts.items(), key=lambda item: (-item[1], _order(item[0])))


def _order(text: str) -> tuple[int, float, str]:
    value = scalar(text)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), text)
    return (1, 0.0, text)


def _shown(value: str) -> str:
    return _flat(value) if value else "(empty)"


def _measure_section(m: MeasureSummary) -> list[str]:
    lines = [f"### `{m.id}`", ""]
    labels = " / ".join(m.labels)
    if labels != m.id:
        lines += [inline(labels), ""]
    counts = [str(m.results), str(m.failed)]
    if m.kind == "boolean":
        lines += table(["results", "failed", "true", "false", "null", "share true"],
                       [[*counts, str(m.true), str(m.false), str(m.nulls),
                         share(m.true, m.true + m.false)]])
        lines += ["", *charts.block(charts.pie(f"{m.id}: true and false",
                                                [("true", m.true), ("false", m.false)]))]
    elif m.kind == "number":
        f = number_figures(m.numbers)
        lines += table(["results", "failed", "null", "mean", "median", "min", "max"],
                       [[*counts, str(m.nulls), f["mean"], f["median"], inline(f["min"]),
                         inline(f["max"])]])
        lines += ["", *charts.block(_number_bars(m))]
    else:
        lines += _text_section(m, counts)
    lines += _trend(m)
    return lines


def _text_section(m: MeasureSummary, counts: list[str]) -> list[str]:
    ranked = _ranked(m.counts)
    lines = table(["results", "failed", "null", "distinct values"],
                  [[*counts, str(m.nulls), str(len(ranked))]])
    if m.numbers and len(m.numbers) < m.ok - m.nulls:
        f = number_figures(m.numbers)
        lines += ["", f"The {len(m.numbers)} numeric values among them: mean {f['mean']}, "
                      f"median {f['median']}, min {inline(f['min'])}, max {inline(f['max'])}."]
    if not ranked:
        return lines
    with_value = m.ok - m.nulls
    rows = [[inline(_shown(value)), str(count), share(count, with_value)]
            for value, count in ranked[:TOP_VALUES]]
    lines += ["", *table(["value", "notes", "share of notes"], rows)]
    if len(ranked) > TOP_VALUES:
        rest = ranked[TOP_VALUES:]
        lines += ["", f"And {len(rest)} more value(s), in {sum(c for _, c in rest)} "
                      "result(s)."]
    slices = [(_shown(value), count) for value, count in ranked[:PIE_SLICES]]
    other = sum(count for _, count in ranked[PIE_SLICES:])
    if other:
        slices.append((f"other ({len(ranked) - PIE_SLICES} values)", other))
    lines += ["", *charts.block(charts.pie(f"{m.id}: notes per value", slices))]
    return lines


def _number_bars(m: MeasureSummary) -> str:
    """Notes per value, or per range of values when there are many distinct ones."""
    by_value: Counter[float] = Counter(v for v, _ in m.numbers)
    written = {v: text for v, text in sorted(m.numbers, reverse=True)}
    if len(by_value) <= DISTINCT_BARS:
        keys = sorted(by_value)
        names, counts = [written[k] for k in keys], [by_value[k] for k in keys]
    else:
        low, high = min(by_value), max(by_value)
        width = (high - low) / BINS
        counts = [0] * BINS
        for value, count in by_value.items():
            counts[min(int((value - low) / width), BINS - 1)] += count
        names = [f"{fmt(low + i * width)} to {fmt(low + (i + 1) * width)}" for i in range(BINS)]
    return charts.bars(f"{m.id}: notes per value", names, [float(c) for c in counts],
                       "notes", float(max(counts)))


def _trend(m: MeasureSummary) -> list[str]:
    """A figure by month, when the results span two months or more."""
    if m.kind == "text" or len(m.months) < 2:
        return []
    months = sorted(m.months)
    if m.kind == "boolean":
        figures = [100 * sum(m.months[k]) / len(m.months[k]) for k in months]
        what, y_range = "% true", (0.0, 100.0)
    else:
        figures = [mean(m.months[k]) for k in months]
        values = [v for v, _ in m.numbers]  # the axis spans every value, not just the means
        what, y_range = "mean", (min(0.0, *values), max(values))
    rows = [[month, str(len(m.months[month])), fmt(value)]
            for month, value in zip(months, figures, strict=True)]
    chart = charts.line(f"{m.id}: {what} by month", months, figures, what, y_range)
    return ["", "By month (of `Evaluated`):", "",
            *table(["month", "results", what], rows), "", *charts.block(chart)]


# -- panels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelRun:
    """One panel note's latest run, as its answer notes tell it."""

    link: str  # the panel note's path without .md: its answer notes' folder
    run: str | None  # None: no answer note of it is finished yet
    answers: tuple[AnswerNote, ...]  # the latest run's finished answer notes
    earlier: int  # earlier runs, whose answer notes are left out


def latest_runs(gathered: Gathered) -> list[PanelRun]:
    """Per panel note (in vault order), its latest run and that run's answer notes. An
    answer note belongs to the panel note whose folder it is in (a panel note
    ``Queries/X.md`` keeps them in ``Queries/X/``); one not in a folder, to the panel its
    ``panel`` property names."""
    by_panel: dict[str, list[AnswerNote]] = {_link(name): [] for name in gathered.panels}
    for answer in gathered.answers:
        by_panel.setdefault(_panel_of(answer), []).append(answer)
    found = []
    for link, answers in by_panel.items():
        runs = sorted({a.run for a in answers}, reverse=True)
        latest = runs[0] if runs else None
        found.append(PanelRun(link, latest, tuple(a for a in answers if a.run == latest),
                              max(len(runs) - 1, 0)))
    return found


def _panel_of(answer: AnswerNote) -> str:
    """The panel note an answer note belongs to, as a link target (see :func:`latest_runs`)."""
    return answer.name.rpartition("/")[0] or answer.panel


def _link(name: str) -> str:
    return name[:-3] if name.lower().endswith(".md") else name


def _panels_section(gathered: Gathered) -> list[str]:
    """Figures per assistant over every panel note's latest run: a row per measure (the
    panel summary's cells), and for each list-valued measure a row per item named."""
    panels = latest_runs(gathered)
    answers = [a for p in panels for a in p.answers if is_judged(a)]
    assistants = sorted({a.assistant for a in answers})
    lines = ["## Panels", "",
             f"Figures per assistant over the answer notes of {len(panels)} panel note(s), "
             "each panel's latest run only (earlier runs' answer notes are left out): "
             f"{len(answers)} answer(s) from {len(assistants)} assistant(s). A share is of "
             "the answers whose measure succeeded, with its 95% Wilson interval; a mean has "
             "its 95% t interval.", "",
             *table(["panel", "latest run", "answers", "earlier runs"],
                    [[wikilink(p.link), inline(p.run) if p.run else NONE, str(len(p.answers)),
                      str(p.earlier)] for p in panels])]
    labels: dict[str, list[str]] = {}
    for answer in answers:
        for result in answer.results.results:
            found = labels.setdefault(result.measure, [])
            if result.label not in found:
                found.append(result.label)
    if not labels or not assistants:
        return lines
    kinds = {measure: kind_of(collect(measure, answers).values) for measure in labels}
    by_assistant = {name: [a for a in answers if a.assistant == name] for name in assistants}
    rows = [[f"`{measure}`", inline(" / ".join(labels[measure])), kinds[measure],
             *(measure_cell(kinds[measure], collect(measure, by_assistant[name]))
               for name in assistants)]
            for measure in labels if kinds[measure] != "list"]
    head = [*(inline(name) for name in assistants)]
    if rows:
        lines += ["", "### Panel measures", "",
                  *table(["measure", "description", "kind", *head], rows)]
    for measure in labels:
        if kinds[measure] != "list":
            continue
        items = [[inline(_shown(item)), *cells]
                 for item, cells in mention_rows(assistants, measure, answers)]
        lines += ["", f"### Panel mentions: `{measure}`", "",
                  f"{inline(' / '.join(labels[measure]))}: per item named, the share of each "
                  "assistant's answers naming it and its mean position in the list "
                  "(pos, 1 = first), most named first.", "",
                  *table(["item", *head], items)]
    every = [a for a in gathered.answers if is_judged(a)]
    for measure in labels:
        if kinds[measure] == "list":
            lines += _over_time(every, measure, " / ".join(labels[measure]))
    return lines


def _over_time(answers: list[AnswerNote], measure: str, description: str) -> list[str]:
    """Per assistant, the share of its answers naming each of the list measure's most named
    items, by run date (UTC), over every run of every panel note: a table (newest first)
    and a line chart (oldest first). A share is flagged where it differs from that
    assistant's date before by more than chance allows (two-sided Fisher exact test,
    p < 0.05), but only where the same panel notes answered on both dates: a pooled share
    of other questions is another figure, not a change. Nothing when the runs span one
    date."""
    groups: dict[str, dict[str, list[AnswerNote]]] = {}  # assistant -> run date -> answers
    for answer in answers:
        start = run_start(answer.run)
        if start is not None:
            day = start.date().isoformat()
            groups.setdefault(answer.assistant, {}).setdefault(day, []).append(answer)
    if len({day for days in groups.values() for day in days}) < 2:
        return []
    lists = {who: {day: [v for v in collect(measure, group).values if isinstance(v, tuple)]
                   for day, group in days.items()} for who, days in groups.items()}
    items = [item for item, _ in _ranked(Counter(
        item for days in lists.values() for found in days.values() for value in found
        for item in set(value)))][:TREND_ITEMS]
    if not items:
        return []
    order = ", ".join(_shown(item) for item in items)
    lines = ["", f"### Panel mentions over time: `{measure}`", "",
             f"{inline(description)}: per assistant, the share of its answers naming each of "
             f"the {len(items)} most named items, by run date (UTC), over every run of every "
             "panel note. ↑ or ↓ with its p marks a share that differs from that assistant's "
             "date before by more than chance allows (two-sided Fisher exact test, p < 0.05); "
             "it is only worked out where the same panel notes answered on both dates. In "
             f"each chart the lines are the table's items in order: {inline(order)}."]
    for who in sorted(lists):
        days = sorted(day for day, found in lists[who].items() if found)
        if not days:
            continue
        panels = {day: {_panel_of(a) for a in groups[who][day]} for day in days}
        counts = {day: [(sum(1 for v in lists[who][day] if item in v), len(lists[who][day]))
                        for item in items] for day in days}
        rows = []
        for index, day in enumerate(days):
            before = days[index - 1] if index and panels[days[index - 1]] == panels[day] else None
            cells = [share_cell(*now) + change_flag(now, counts[before][i] if before else None)
                     for i, now in enumerate(counts[day])]
            rows.append([day, str(len(panels[day])), str(len(lists[who][day])), *cells])
        lines += ["", f"**{inline(who)}**", "",
                  *table(["run date", "panel notes", "answers", *(inline(_shown(item))
                                                                  for item in items)],
                         rows[::-1])]
        if len(days) > 1:
            series = [[100 * counts[day][i][0] / counts[day][i][1] for day in days]
                      for i in range(len(items))]
            lines += ["", *charts.block(charts.lines(
                f"{who}: share of answers naming each, by run date", days, series,
                "% of answers", (0.0, 100.0)))]
    return lines


def _notes_table(notes: tuple[NoteResults, ...], ids: list[str]) -> list[str]:
    rows = []
    for note in notes:
        cells = [wikilink(note.link), inline(note.status), inline(note.evaluated or "")]
        for measure in ids:
            result = note.result(measure)
            cells.append(cell(result) if result else "")
        rows.append(cells)
    return table(["note", "status", "evaluated", *(f"`{m}`" for m in ids)], rows)


def cell(result: Result) -> str:
    """A result in a table cell: as the note shows it, a list's items (and the lines of a
    text of several lines) joined with ``, ``."""
    return inline(_flat("\n".join(result.items)))


def _flat(text: str) -> str:
    """A value of several lines on one line of a table: its lines joined with ``, ``."""
    return ", ".join(text.split("\n"))


# -- Markdown -----------------------------------------------------------------------------

_SPECIAL = frozenset("\\`*_[]<>|$#^&")  # markup wherever they stand
_PAIRED = frozenset("=~%")  # markup only doubled: ==highlight==, ~~strike~~, %%comment%%


def inline(text: str) -> str:
    """Text shown as it is in Obsidian: every character that could start markup escaped."""
    out = []
    for i, ch in enumerate(text):
        doubled = ch in _PAIRED and ch in (text[i - 1 : i] + text[i + 1 : i + 2])
        out.append("\\" + ch if ch in _SPECIAL or doubled else ch)
    return "".join(out)


def wikilink(target: str) -> str:
    """``[[target]]``, safe inside a table cell (its ``|`` escaped)."""
    return "[[" + target.replace("|", "\\|") + "]]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# -- the Bases file -----------------------------------------------------------------------


@dataclass(frozen=True)
class PanelColumns:
    """The answer notes' measures, for the base's view of them: their summaries, and the
    property keys the answer notes have (lowercased)."""

    measures: list[MeasureSummary]
    written: Collection[str] | None = None


def base_text(measures: list[MeasureSummary], prefix: str = DEFAULT_PREFIX,
              written: Collection[str] | None = None,
              panel: PanelColumns | None = None) -> str:
    """``vaultd.base``: the evaluated notes as a live table, one column per measure.

    Notes are those with an ``Evaluated`` property (vaultd writes it when a note
    finishes), newest first; each measure's column is its ``<prefix><id>`` property.
    With ``written`` (the property keys the notes have, lowercased), a measure no note has
    a property for (its results are objects, null, or failed) gets no column: it would
    never fill.

    With ``panel`` (the vault has answer notes), a second view shows the answer notes
    (those with a ``panel`` property) grouped by assistant, newest run first, with a
    column per measure of theirs; the first view then leaves out answer notes and panel
    notes, as the report does.
    """
    properties: dict[str, dict[str, str]] = {"file.name": {"displayName": "Note"}}
    order, summaries = _columns(["file.name", "note.Status", "note.Evaluated"], measures,
                                prefix, written, properties)
    view: dict[str, object] = {
        "type": "table",
        "name": "Evaluated notes",
    }
    if panel is not None:
        view["filters"] = {"and": ['!file.hasProperty("panel")',
                                   '!file.hasProperty("samples")',
                                   '!file.hasProperty("assistants")']}
    view["order"] = order
    view["sort"] = [{"property": "note.Evaluated", "direction": "DESC"}]
    if summaries:
        view["summaries"] = summaries
    views = [view]
    if panel is not None:
        order, summaries = _columns(
            ["file.name", "note.assistant", "note.model", "note.sample", "note.run",
             "note.Status"], panel.measures, prefix, panel.written, properties)
        answers: dict[str, object] = {
            "type": "table",
            "name": "Panel answers by assistant",
            "filters": {"and": ['file.hasProperty("panel")', "note.panel.isTruthy()"]},
            "groupBy": {"property": "note.assistant", "direction": "ASC"},
            "order": order,
            "sort": [{"property": "note.run", "direction": "DESC"},
                     {"property": "note.sample", "direction": "ASC"}],
        }
        if summaries:
            answers["summaries"] = summaries
        views.append(answers)
    data = {
        "filters": {"and": ['file.ext == "md"', 'file.hasProperty("Evaluated")']},
        "properties": properties,
        "views": views,
    }
    head = [
        f"{BASE_MARKER} generated by vaultd (`vaultd report`), rewritten when the measures "
        "change.",
        "# Once you change this view in Obsidian, it is yours: vaultd leaves it alone.",
    ]
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    return "\n".join(head) + "\n" + body


def _columns(order: list[str], measures: list[MeasureSummary], prefix: str,
             written: Collection[str] | None, properties: dict[str, dict[str, str]]
             ) -> tuple[list[str], dict[str, str]]:
    """A view's columns: ``order`` then one per measure (see :func:`base_text`), each
    measure's display name added to ``properties``; and the view's summaries."""
    order = list(order)
    summaries: dict[str, str] = {}
    for m in measures:
        if written is not None and property_key(prefix, m.id).lower() not in written:
            continue
        key = f"note.{prefix}{m.id}"
        order.append(key)
        properties[key] = {"displayName": m.id}
        if m.kind == "number":
            summaries[key] = "Average"
        elif m.kind == "boolean":
            summaries[key] = "Checked"
    return order, summaries
