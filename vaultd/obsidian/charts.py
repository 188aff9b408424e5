"""Mermaid charts for the report, as text. Pure.

Obsidian renders a ```` ```mermaid ```` code block natively. Two diagram types are used:
``pie`` (shares: a boolean's true and false, the most common values of a text measure,
notes by status) and ``xychart-beta`` (bars: how many notes have each number; a line:
a figure by month). ``xychart-beta`` is the name every Mermaid since 10.5 knows, so older
Obsidian versions render it too.

Mermaid's grammar has no escapes in these strings, so labels are made safe rather than
escaped: double quotes and backticks become single quotes, a backslash (which would
escape the closing quote) a slash, ``%%`` (a Mermaid comment) one ``%``, a ``<`` gets
a space after it (``<x`` would open an HTML tag, which Mermaid strips before parsing, up
to the next ``>`` anywhere in the chart), line breaks become spaces, and a long label is
cut (with ``…``). Numbers are written plainly (Mermaid does not read ``1e+20``), at most
four decimals. The exact values are always in the report's tables; a chart's labels only
illustrate them.
"""

from __future__ import annotations

import math
import re

LABEL_LIMIT = 40
_SPACE = re.compile(r"\s+")
_TAG_OPEN = re.compile(r"<(?=\S)")


def label(text: str, limit: int = LABEL_LIMIT) -> str:
    """``text`` made safe to stand inside a Mermaid string (see the module docstring)."""
    text = text.replace('"', "'").replace("`", "'").replace("\\", "/")
    while "%%" in text:
        text = text.replace("%%", "%")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _TAG_OPEN.sub("< ", _SPACE.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or "(empty)"


def number(value: float) -> str:
    """A number as Mermaid reads it: plain digits, at most four decimals."""
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"not a chartable number: {value!r}")
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def pie(title: str, slices: list[tuple[str, int]]) -> str:
    """A pie chart of counts (slices with a count of 0 are left out)."""
    lines = ["pie showData", f"    title {label(title, 80)}"]
    lines += [f'    "{label(name)}" : {count}' for name, count in slices if count > 0]
    return "\n".join(lines)


def bars(title: str, categories: list[str], values: list[float], y_title: str,
         y_max: float | None = None) -> str:
    """A bar chart: one bar per category."""
    return _xy(title, categories, "bar", [values], y_title, y_max)


def line(title: str, categories: list[str], values: list[float], y_title: str,
         y_range: tuple[float, float] | None = None) -> str:
    """A line over the categories (months, say)."""
    return lines(title, categories, [values], y_title, y_range)


def lines(title: str, categories: list[str], series: list[list[float]], y_title: str,
          y_range: tuple[float, float] | None = None) -> str:
    """Several lines over the same categories, drawn in the order given (Mermaid's
    ``xychart-beta`` has no legend: say in the text which line is which)."""
    lo_hi = y_range or _range([v for values in series for v in values])
    return _xy(title, categories, "line", series, y_title, lo_hi[1], lo_hi[0])


def _xy(title: str, categories: list[str], kind: str, series: list[list[float]],
        y_title: str, y_max: float | None, y_min: float = 0.0) -> str:
    if not series or not categories or any(len(values) != len(categories)
                                           for values in series):
        raise ValueError("a chart needs one value per category, and at least one")
    top = max(max(values) for values in series) if y_max is None else y_max
    if top <= y_min:
        top = y_min + 1
    axis = ", ".join(f'"{label(c, 24)}"' for c in categories)
    return "\n".join([
        "xychart-beta",
        f'    title "{label(title, 80)}"',
        f"    x-axis [{axis}]",
        f'    y-axis "{label(y_title)}" {number(y_min)} --> {number(top)}',
        *(f"    {kind} [{', '.join(number(v) for v in values)}]" for values in series),
    ])


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    lo = min(lo, 0.0)
    return lo, hi if hi > lo else lo + 1


def block(chart: str) -> list[str]:
    """The chart as a fenced ``mermaid`` code block, line by line."""
    return ["```mermaid", *chart.split("\n"), "```"]
