"""Splicing: vaultd's parts put into the text the user has now. Pure: text in, text out.

vaultd owns its frontmatter properties (``Status``'s value, ``Error``, ``Evaluated``, the
results it writes as properties and their record), an answer callout it generated, the
evaluation pairs, its ``[!error]`` callout, and a panel note's ``[!panel]`` summary (the
one whose title starts ``Run ``). Every other line is copied through
untouched, line ending and all. New lines take the note's dominant line ending (a
rewritten property line keeps its own, and its comment and trailing spaces); a note that
ended without a final newline still does. A property is edited line by line: replacing a
block list removes its ``- item`` lines and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vaultd.note.render import ERROR_TITLE, PANEL_TITLE, code_block, code_callout
from vaultd.note.text import (
    Callout,
    Note,
    Property,
    is_blank,
    is_thematic_break,
    line_ending,
    strip_eol,
)

_TRAILING_COMMENT = re.compile(r"\s+#.*$")
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"")
_FLOW_ITEM = re.compile(r"(\[[ \t]*)('[^']*'|\"[^\"]*\"|[^,\]#]*?)([ \t]*\])")  # [Pending]
_BLOCK_ITEM = re.compile(r"^([ \t]*-[ \t]+)('[^']*'|\"[^\"]*\"|[^#]*?)([ \t]*(?:#.*)?)$")

Lines = list[str]


@dataclass(frozen=True)
class Changes:
    """What vaultd wants the note to say. ``None`` leaves that part as it is."""

    status: str | None = None
    # key -> the YAML text after "key:"; None removes the key. Text that starts with a line
    # break is a block value: its further lines ("  - item") follow the key's line.
    properties: dict[str, str | None] = field(default_factory=dict)
    answer: str | None = None
    results: Lines | None = None
    error: Lines | None = None
    clear_error: bool = False
    # a panel note's whole ``> [!panel]`` callout (vaultd.note.panel.summary_lines)
    panel: Lines | None = None


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    lines: Lines  # without endings
    ending: str | None = None  # the last line's ending; None: the note's own newline
    first_ending: str | None = None  # the first line's, when there are several


def apply(note: Note, changes: Changes) -> str:
    """The note's text with ``changes`` made, and nothing else changed."""
    edits: list[_Edit] = []
    appends: list[Lines] = []
    if note.frontmatter:
        edits.extend(_property_edits(note, changes))
    if changes.answer is not None:
        edits.extend(_answer_edits(note, changes.answer, appends))
    if changes.results is not None:
        edits.extend(_replace_units(note, _evaluation_units(note), changes.results, appends))
    if changes.error is not None or changes.clear_error:
        edits.extend(_replace_units(note, _error_units(note), changes.error, appends))
    if changes.panel is not None:
        edits.extend(_panel_edits(note, changes.panel, appends))
    return _render(note, edits, appends)


def _render(note: Note, edits: list[_Edit], appends: list[Lines]) -> str:
    lines = list(note.lines)
    newline = note.newline
    ends_open = bool(lines) and not line_ending(lines[-1])  # no final newline
    if appends:
        block: Lines = []
        for part in appends:
            block.extend(["", *part])
        edits.append(_Edit(len(lines), len(lines), block))
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        new = [line + newline for line in edit.lines]
        if edit.first_ending is not None and new:
            new[0] = edit.lines[0] + edit.first_ending
        if edit.ending is not None and new:
            new[-1] = edit.lines[-1] + edit.ending
        elif edit.end == len(lines) and ends_open and new:
            new[-1] = new[-1][: -len(newline)]
            if edit.start == len(lines) and lines:
                lines[-1] += newline
        elif edit.end == len(lines) and ends_open and not new and edit.start > 0:
            lines[edit.start - 1] = strip_eol(lines[edit.start - 1])
        lines[edit.start : edit.end] = new
    return "".join(lines)


# -- frontmatter -----------------------------------------------------------------------


def _property_edits(note: Note, changes: Changes) -> list[_Edit]:
    assert note.frontmatter
    wanted: dict[str, str | None] = dict(changes.properties)
    if changes.status is not None:
        wanted["Status"] = changes.status
    edits: list[_Edit] = []
    added: Lines = []
    for key, value in wanted.items():
        prop = note.frontmatter.get(key)
        if prop is None:
            if value is not None:
                inline, *more = value.split("\n")
                added.extend([f"{key}: {inline}" if inline else f"{key}:", *more])
            continue
        if value is None:  # the key's line and every line of its value
            edits.append(_Edit(prop.start, prop.end, []))
            continue
        listed = _list_item_edit(note, prop, value) if key == "Status" else None
        if listed:
            edits.append(listed)
            continue
        line = note.lines[prop.start]
        inline, *more = value.split("\n")
        new_line = _with_value(strip_eol(line), prop.raw_value, inline)
        if more:  # a block value replaces the old value's lines, and only those
            edits.append(_Edit(prop.start, prop.end, [new_line, *more],
                               first_ending=line_ending(line)))
        else:
            edits.append(_Edit(prop.start, prop.end, [new_line], line_ending(line)))
    if added:
        closing = note.frontmatter.end - 1
        edits.append(_Edit(closing, closing, added))
    return edits


def _list_item_edit(note: Note, prop: Property, value: str) -> _Edit | None:
    """A one-item list property (``[Pending]``, or ``- Pending`` on the line below, as a
    vault that types the property as a list has it) with ``value`` as its item, in the same
    form: brackets, dash, indent, comment and spaces kept. None for any other form."""
    item = prop.value()
    if not (isinstance(item, list) and len(item) == 1):
        return None
    first = strip_eol(note.lines[prop.start])
    at = len(first.rstrip()) - len(prop.raw_value)  # where the value starts
    flow = _FLOW_ITEM.match(first, at)
    if flow:
        new = first[:at] + flow.group(1) + value + flow.group(3) + first[flow.end():]
        return _Edit(prop.start, prop.start + 1, [new], line_ending(note.lines[prop.start]))
    for i in range(prop.start + 1, prop.end):
        block = _BLOCK_ITEM.match(strip_eol(note.lines[i]))
        if block:
            return _Edit(i, i + 1, [block.group(1) + value + block.group(3)],
                         line_ending(note.lines[i]))
    return None


def _with_value(line: str, raw: str, value: str) -> str:
    """A property's line with its value ``raw`` now ``value``; its comment and spaces kept."""
    body = line.rstrip()
    trailing = line[len(body) :]
    if not raw:
        return f"{body} {value}{trailing}" if value else line
    head = body[: len(body) - len(raw)]
    if not value:  # the value goes on the lines below: the key (and its comment) stays
        head = head.rstrip()
    if raw.startswith("#"):  # no value, only a comment
        return f"{head}{value} {raw}{trailing}"
    quoted = _QUOTED.match(raw)
    if raw.startswith(("'", '"')) and not quoted:
        return head + value + trailing  # a quoted value that goes on over further lines
    comment = _TRAILING_COMMENT.search(raw, quoted.end() if quoted else 0)
    return head + value + (comment.group(0) if comment else "") + trailing


# -- the answer ------------------------------------------------------------------------


def _answer_edits(note: Note, answer: str, appends: list[Lines]) -> list[_Edit]:
    existing = note.first("answer")  # one with an answer-text block: others are the user's
    empty = existing.block(("text",)) if existing else None
    if empty is not None:  # the user's own callout: only its block is vaultd's to fill
        return [_Edit(empty.fence_line, empty.end, code_block("answer-text", answer))]
    query = note.first("query")
    block = ["***", "", *code_callout("> [!answer]", "answer-text", answer)]
    if query is None:
        appends.append(block)
        return []
    return [_Edit(query.end, query.end, ["", *block])]


# -- the panel summary -----------------------------------------------------------------


def _panel_edits(note: Note, panel: Lines, appends: list[Lines]) -> list[_Edit]:
    """The summary where vaultd's ``[!panel]`` callout stands (its fold kept, any second one
    removed), else in its own part after the ``[!measures]`` callout, else at the end."""
    own = [c for c in note.callouts if c.kind == "panel" and c.title.startswith(PANEL_TITLE)]
    if own:
        first, *rest = own
        head = "> [!panel]"
        if first.fold and panel and panel[0].startswith(head + " "):
            panel = [head + first.fold + panel[0][len(head):], *panel[1:]]
        return [_Edit(first.start, first.end, list(panel)),
                *_replace_units(note, [(_lead_in(note, c), c.end) for c in rest], None, [])]
    measures = note.first("measures")
    if measures is None:
        appends.append(["***", "", *panel])
        return []
    after = measures.end
    apart = [""] if after < len(note.lines) and not is_blank(note.lines[after]) else []
    return [_Edit(after, after, ["", "***", "", *panel, *apart])]


# -- owned units: evaluation pairs and the error callout ------------------------------


def _evaluation_units(note: Note) -> list[tuple[int, int]]:
    """Line ranges of every evaluation pair, each with the ``***`` that leads it (a
    callout without its ``evaluation-yaml`` or ``evaluation-result-text`` block is the
    user's, and stays)."""
    units: list[tuple[int, int]] = []
    callouts = [c for c in note.callouts if c.is_own]
    skip: set[int] = set()
    for index, callout in enumerate(callouts):
        if index in skip or callout.kind not in ("evaluation", "evaluation-result"):
            continue
        end = callout.end
        nxt = callouts[index + 1] if index + 1 < len(callouts) else None
        if (
            callout.kind == "evaluation"
            and nxt is not None
            and nxt.kind == "evaluation-result"
            and all(is_blank(note.lines[i]) for i in range(callout.end, nxt.start))
        ):
            end = nxt.end
            skip.add(index + 1)
        units.append((_lead_in(note, callout), end))
    return units


def _error_units(note: Note) -> list[tuple[int, int]]:
    return [
        (_lead_in(note, c), c.end)
        for c in note.callouts
        if c.kind == "error" and c.title.startswith(ERROR_TITLE)
    ]


def _lead_in(note: Note, callout: Callout) -> int:
    """The start of a unit: the callout, or the ``***`` just before it (blank lines between).

    A ``---`` right under a line of text is not a break but that text's heading underline.
    """
    i = callout.start - 1
    while i >= 0 and is_blank(note.lines[i]):
        i -= 1
    if i < _body_start(note) or not is_thematic_break(note.lines[i]):
        return callout.start
    underline = (
        i > _body_start(note)
        and note.lines[i].lstrip(" ").startswith("-")
        and not is_blank(note.lines[i - 1])
    )
    return callout.start if underline else i


def _body_start(note: Note) -> int:
    return note.frontmatter.end if note.frontmatter else 0


def _replace_units(
    note: Note, units: list[tuple[int, int]], block: Lines | None, appends: list[Lines]
) -> list[_Edit]:
    """Put ``block`` where the first unit stands and remove the rest; none: append it."""
    if not units:
        if block:
            appends.append(block)
        return []
    regions = _merge(note, units)
    edits: list[_Edit] = []
    for number, (start, end) in enumerate(regions):
        if number == 0 and block:
            edits.append(_Edit(start, end, block))
        else:
            # a removed unit takes the blank lines before it along
            while start > _body_start(note) and is_blank(note.lines[start - 1]):
                start -= 1
            edits.append(_Edit(start, end, []))
    return edits


def _merge(note: Note, units: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Units with only blank lines between them, joined into one region."""
    regions: list[tuple[int, int]] = []
    for start, end in sorted(units):
        if regions and all(is_blank(note.lines[i]) for i in range(regions[-1][1], start)):
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions
