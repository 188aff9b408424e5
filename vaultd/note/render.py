"""Rendering: results in, note text out, in the seed note's exact shape. Pure.

Every block is built as a list of lines without endings; the splicer joins them with the
note's own line ending. Values go inside fenced code blocks whose fence is longer than any
fence-like line in the value, so nothing a model or a script returns can close its block
or forge note structure.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vaultd.errors import one_line
from vaultd.note.outcomes import Failure, Outcome, Success

_FENCE_RUN = re.compile(r"[ \t]*(`{3,}|~{3,})")
_NEWLINES = re.compile(r"\r\n|\r|\n")




def render_value(value: Any) -> str:
    """A result as the note shows it: strings as they are, scalars as JSON, lists a line each."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        return "\n".join(v if isinstance(v, str) else _json(v) for v in value)
    return _json(value)


def render_outcome(outcome: Outcome) -> str:
    if isinstance(outcome, Success):
        return render_value(outcome.value)
    if isinstance(outcome, Failure):
        return f"Error: {one_line(outcome.message)}"
    return f"Skipped: {one_line(outcome.reason)}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fence_for(text: str) -> str:
    """A backtick fence longer than any fence-like run at the start of a line in ``text``."""
    runs = (_FENCE_RUN.match(line) for line in _NEWLINES.split(text))
    longest = max((len(m.group(1)) for m in runs if m), default=0)
    return "`" * max(3, longest + 1)


def quote(lines: list[str]) -> list[str]:
    """Lines put inside a callout: ``> `` before each, as the seed writes them."""
    return [f"> {line}" for line in lines]


def code_callout(head: str, info: str, body: str, after: list[str] | None = None) -> list[str]:
    """``> [!kind]`` with one fenced code block holding ``body`` (and plain lines after it)."""
    return [head, *code_block(info, body), *quote(after or [])]


def code_block(info: str, body: str) -> list[str]:
    """A fenced code block holding ``body``, as lines of a callout."""
    fence = fence_for(body)
    return quote([fence + info, *_NEWLINES.split(body), fence])


def evaluation_pair(label: str, kind: str, outcome: Outcome) -> list[str]:
    """One measure's result, exactly in the seed's shape, starting with its ``***``."""
    measure = json.dumps(one_line(label), ensure_ascii=False)
    comment = outcome.comment if isinstance(outcome, Success) else None
    after = [_escape_text_line(line) for line in _NEWLINES.split(comment)] if comment else None
    return [
        "***",
        "",
        *code_callout("> [!evaluation]", "evaluation-yaml", f"- measure: {measure}\n  type: {kind}"
                      ),
        "",
        *code_callout(
            "> [!evaluation-result]", "evaluation-result-text", render_outcome(outcome), after
        ),
    ]


def _escape_text_line(line: str) -> str:
    """A comment line as plain text: a line that would open a fence is escaped."""
    stripped = line.lstrip()
    if stripped.startswith(("```", "~~~")):
        return line[: len(line) - len(stripped)] + "\\" + stripped
    return line


def evaluation_block(pairs: list[list[str]]) -> list[str]:
    lines: list[str] = []
    for pair in pairs:
        if lines:
            lines.append("")
        lines.extend(pair)
    return lines


ERROR_TITLE = "vaultd could not run this note"
PANEL_TITLE = "Run "  # how vaultd's [!panel] summary's title starts: Run <run id> · ...


def error_callout(messages: list[str]) -> list[str]:
    """vaultd's ``[!error]`` callout, naming every problem (``line N: message``)."""
    body = "\n".join(messages)
    return ["***", "", *code_callout(f"> [!error] {ERROR_TITLE}", "error-text", body)]
