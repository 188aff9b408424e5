"""The note: its text, read into frontmatter and callouts, with every position kept.

Parsing is pure (text in, an immutable :class:`Note` out) and keeps each line exactly as
it was, line ending included, so that the splicer can rewrite the parts vaultd owns and
leave every other byte alone. Line indexes are 0-based inside the code; lines shown to
people are 1-based.

The scanner follows CommonMark where it matters for finding structure: a fenced code
block at the top level hides everything inside it, a callout is a run of ``>`` lines whose
first line is ``> [!type]``, and a fence inside a callout closes only on a fence of the
same character at least as long.
"""

from __future__ import annotations

import copy
import functools
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import yaml

from vaultd.errors import NoteReadError
from vaultd.note import yamlread

BOM = "\ufeff"
RUNNABLE = ("pending", "processing")  # a note left Processing by a run that died runs again
SHOWN = (*RUNNABLE, "done", "error")  # the statuses status and the report count

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_QUOTE = re.compile(r"^ {0,3}>")
_CALLOUT_HEAD = re.compile(r"^\[!([^\]\s]+)\]([+-]?)[ \t]*(.*?)\s*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_PROPERTY = re.compile(r"^([^\s#:'\"-][^:]*?|'[^']*'|\"[^\"]*\")[ \t]*:(?=[ \t]|$)")
# A Status line where it means nothing: a Dataview inline field (``Status:: Pending``, also
# ``[status:: pending]``), or a property line outside a frontmatter block.
_STRAY_STATUS = re.compile(r"^\s*[\[(]?\s*status\s*(::?)\s*pending\s*[\])]?\s*$", re.I)

# vaultd's callout types, each with the code blocks (``<kind>-<suffix>``) that make it
# vaultd's: a callout of one of these types without such a block is the user's text.
OWN_BLOCKS: dict[str, tuple[str, ...]] = {
    "query": ("text",),
    "answer": ("text",),
    "measures": ("md", "yaml"),
    "evaluation": ("yaml",),
    "evaluation-result": ("text",),
}


def split_lines(text: str) -> tuple[str, ...]:
    """The text's lines with their endings (``\\n``, ``\\r\\n`` or a lone ``\\r``)."""
    return tuple(re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text))


def strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def line_ending(line: str) -> str:
    return line[len(strip_eol(line)) :]


def dominant_newline(lines: tuple[str, ...]) -> str:
    """The line ending most lines use (``\\n`` for a note with none, or on a tie)."""
    counts = Counter(line_ending(line) for line in lines)
    return max(("\n", "\r\n", "\r"), key=counts.__getitem__)


def is_thematic_break(line: str) -> bool:
    return bool(_THEMATIC_BREAK.match(strip_eol(line)))


def is_blank(line: str) -> bool:
    """Only spaces and tabs, as CommonMark says (a no-break space is text)."""
    return not line.strip(" \t\r\n")


def unquote(line: str) -> str:
    """A callout line with its ``>`` marker (and the one space after it) removed."""
    body = strip_eol(line).lstrip(" ")
    body = body[1:]  # the ">"
    return body[1:] if body.startswith((" ", "\t")) else body


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block inside a callout."""

    info: str
    content: str  # without the callout markers, lines joined by "\n"
    fence_line: int  # 0-based index of the opening fence
    first_line: int  # 0-based index of the first content line
    closed: bool
    end: int  # 0-based index just past the closing fence (the callout's end if unclosed)


@dataclass(frozen=True)
class Callout:
    """A top-level Obsidian callout: ``start``..``end`` (exclusive) are 0-based line indexes."""

    kind: str  # lower-case type, e.g. "query"
    fold: str
    title: str
    start: int
    end: int
    blocks: tuple[CodeBlock, ...]

    def block(self, suffixes: tuple[str, ...] | None = None) -> CodeBlock | None:
        """The first code block whose info string is ``<kind>-<suffix>`` (any suffix if None)."""
        prefix = self.kind + "-"
        for block in self.blocks:
            info = block.info.lower()
            suffix = info[len(prefix) :] if info.startswith(prefix) else ""
            if suffix and (suffixes is None or suffix in suffixes):
                return block
        return None

    @property
    def is_own(self) -> bool:
        """Not of one of vaultd's types, or holding that type's block (see ``OWN_BLOCKS``)."""
        suffixes = OWN_BLOCKS.get(self.kind)
        return suffixes is None or self.block(suffixes) is not None


@dataclass(frozen=True)
class Property:
    """A top-level frontmatter property: lines ``start``..``end`` (exclusive), 0-based."""

    key: str  # as the user spelled it
    raw_value: str  # the text after the colon on the key's line
    start: int
    end: int
    more: str = ""  # the property's further lines (a multi-line value), joined by "\n"

    def value(self) -> object:
        """The property's value as YAML reads it (``None`` when it cannot be read)."""
        text = f"{self.raw_value}\n{self.more}\n" if self.more else self.raw_value
        value = _yaml_value(text)
        return copy.deepcopy(value) if isinstance(value, list | dict) else value


@functools.lru_cache(maxsize=1024)
def _yaml_value(text: str) -> object:
    """``text`` as YAML reads it; the same few values (``Pending``, ``Done``...) recur."""
    try:
        return yamlread.load(text) if text.strip() else None
    except (yaml.YAMLError, RecursionError):  # PyYAML recurses once per level of nesting
        return None


@dataclass(frozen=True)
class Frontmatter:
    """Lines ``0``..``end`` (exclusive): the opening ``---``, the YAML, the closing ``---``."""

    end: int
    properties: tuple[Property, ...]

    def get(self, key: str) -> Property | None:
        """The last property whose key matches ``key`` case-insensitively."""
        found = None
        for prop in self.properties:
            if prop.key.strip("'\"").lower() == key.lower():
                found = prop
        return found


@dataclass(frozen=True)
class Note:
    """A parsed note. Immutable; every position refers to ``lines``."""

    text: str
    lines: tuple[str, ...]
    frontmatter: Frontmatter | None
    callouts: tuple[Callout, ...]  # every callout; :meth:`callouts_of` gives vaultd's

    @cached_property
    def newline(self) -> str:
        return dominant_newline(self.lines)

    @property
    def status(self) -> str | None:
        """The ``Status`` property's value as text (a one-item list's item), or None."""
        prop = self.frontmatter.get("status") if self.frontmatter else None
        value = prop.value() if prop else None
        if isinstance(value, list) and len(value) == 1:  # as Obsidian writes a list property
            value = value[0]
        return value if isinstance(value, str) else None

    @property
    def is_pending(self) -> bool:
        return (self.status or "").strip().lower() == "pending"

    def callouts_of(self, kind: str) -> list[Callout]:
        """The callouts of ``kind`` that are vaultd's (see :attr:`Callout.is_own`)."""
        return [c for c in self.callouts if c.kind == kind and c.is_own]

    @property
    def foreign(self) -> list[Callout]:
        """Callouts of vaultd's types that are the user's text (a flashcard's
        ``> [!answer]- Reveal answer``, with no ``answer-text`` block)."""
        return [c for c in self.callouts if not c.is_own]

    def first(self, kind: str) -> Callout | None:
        found = self.callouts_of(kind)
        return found[0] if found else None

    @property
    def measures_block(self) -> CodeBlock | None:
        """The ``measures-md`` or ``measures-yaml`` block of the first own ``[!measures]``."""
        callout = self.first("measures")
        return callout.block(OWN_BLOCKS["measures"]) if callout else None

    def block_text(self, kind: str, suffixes: tuple[str, ...] | None = None) -> str | None:
        """The content of the first ``[!kind]`` callout's code block, or None."""
        callout = self.first(kind)
        block = callout.block(suffixes) if callout else None
        return block.content if block else None

    @cached_property
    def properties(self) -> dict[str, object]:
        """Frontmatter properties by lower-cased key, as YAML reads them (best effort)."""
        if not self.frontmatter:
            return {}
        return {p.key.strip("'\"").lower(): p.value() for p in self.frontmatter.properties}


def decode(data: bytes, path: str = "<note>") -> str:
    """The note's text; a note that is not UTF-8 is a :class:`NoteReadError`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise NoteReadError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from exc


def parse(text: str) -> Note:
    """Read a note's structure. Never fails: whatever is not structure is prose."""
    lines = split_lines(text)
    frontmatter = _parse_frontmatter(lines)
    callouts = _scan_callouts(lines, frontmatter.end if frontmatter else 0)
    return Note(text=text, lines=lines, frontmatter=frontmatter, callouts=callouts)


def parse_head(text: str) -> Note:
    """Only the frontmatter of ``text`` (a note's head), for a quick look at its Status."""
    lines = split_lines(text)
    return Note(text=text, lines=lines, frontmatter=_parse_frontmatter(lines), callouts=())


def not_vaultds(note: Note, statuses: tuple[str, ...] | None = RUNNABLE) -> str | None:
    """Why the note is not one of vaultd's, or None when it is: the one rule that the run,
    the daemon, ``vaultd status`` and ``vaultd check`` all follow.

    A note is vaultd's when its frontmatter's Status is one of ``statuses`` (lower-case;
    None: whatever it is, or none) and it holds vaultd's own parts: a ``[!query]`` callout
    with a ``query-text`` block or an ``[!answer]`` with an ``answer-text`` block, and a
    ``[!measures]`` callout with a ``measures-md`` or ``measures-yaml`` block. Any other
    note is a person's (a task note with ``status: pending``): never written, never counted.
    """
    missing = []
    if not (note.first("query") or note.first("answer")):
        missing.append("no `[!query]` callout with a `query-text` block (nor an `[!answer]` "
                       "with an `answer-text` block)")
    if not note.first("measures"):
        missing.append("no `[!measures]` callout with a `measures-md` or `measures-yaml` block")
    status = (note.status or "").strip().lower()
    if missing:
        why = "it has " + ", and ".join(missing)
        near = [c for c in note.foreign if c.kind in ("query", "answer", "measures")]
        if near:
            c = near[0]
            why += (f" (line {c.start + 1}: its `[!{c.kind}]` callout holds no "
                    f"`{c.kind}-{OWN_BLOCKS[c.kind][0]}` block, so it is the note's own text)")
        return why
    if statuses is None or status in statuses:
        return None
    wanted = " or ".join(s.capitalize() for s in statuses)
    if note.status is None:
        return f"its frontmatter has no `Status: {wanted}`"
    return f"its Status is `{note.status.strip()}`, not {wanted}"


def fingerprint(note: Note) -> tuple[str | None, ...]:
    """What decides a note's results: its query, its answer and its measures block. A run
    whose note's fingerprint changed under it starts over."""
    block = note.measures_block
    return (
        note.block_text("query", ("text",)),
        note.block_text("answer", ("text",)),
        block.info.lower() if block else None,
        block.content if block else None,
    )


def frontmatter_problem(note: Note) -> tuple[int, str] | None:
    """(1-based line, why) when the frontmatter is not valid YAML, else None. Results
    written into such a block would be read by no parser (nor Bases, nor Dataview)."""
    if note.frontmatter is None:
        return None
    # A tab past a line's indent (``key:\tvalue``, ``value\t``) is fine in YAML 1.2 and
    # to Obsidian; PyYAML alone refuses some. Only a tab in the indent is an error.
    kept: list[str] = []
    for line in note.lines[1 : note.frontmatter.end - 1]:
        body = line.lstrip(" \t")
        kept.append(line[: len(line) - len(body)] + body.replace("\t", " "))
    text = "".join(kept)
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = mark.line + 2 if mark is not None else 1  # past the opening ---, 1-based
        return min(at, note.frontmatter.end - 1), exc.problem or exc.context or "unreadable"
    except yaml.YAMLError as exc:
        return 1, " ".join(str(exc).split())
    except RecursionError:  # PyYAML recurses once per level of nesting
        return 1, "nested too deeply"
    return None


def pending_hint(note: Note) -> tuple[int, str] | None:
    """Where a note meant to be pending says ``Status: Pending`` in a way that does not make
    it pending (a Dataview ``Status:: Pending`` field, or a Status line outside a frontmatter
    block), as (1-based line, what it is); None when it says nothing of the kind, or its
    frontmatter has a Status."""
    if note.status is not None:
        return None
    start = note.frontmatter.end if note.frontmatter else 0
    for i in range(start, len(note.lines)):
        match = _STRAY_STATUS.match(strip_eol(note.lines[i]))
        if match:
            what = ("a Dataview inline field, not a property" if match.group(1) == "::"
                    else "a line outside a frontmatter block, not a property")
            return i + 1, what
    return None


def _parse_frontmatter(lines: tuple[str, ...]) -> Frontmatter | None:
    if not lines or strip_eol(lines[0]).removeprefix(BOM).rstrip() != "---":
        return None
    for end in range(1, len(lines)):
        if strip_eol(lines[end]).rstrip() == "---":
            return Frontmatter(end=end + 1, properties=_scan_properties(lines, 1, end))
    return None


def _scan_properties(lines: tuple[str, ...], start: int, stop: int) -> tuple[Property, ...]:
    """Top-level ``key: value`` lines; indented and list lines that follow belong to the key."""
    heads: list[tuple[int, re.Match[str]]] = []
    for i in range(start, stop):
        match = _PROPERTY.match(strip_eol(lines[i]))
        if match:
            heads.append((i, match))
    found: list[Property] = []
    for number, (first, match) in enumerate(heads):
        end = heads[number + 1][0] if number + 1 < len(heads) else stop
        # A property runs until the next property, but not over trailing comments or blanks.
        while end - 1 > first and (
            is_blank(lines[end - 1]) or strip_eol(lines[end - 1]).startswith("#")
        ):
            end -= 1
        line = strip_eol(lines[first])
        more = "\n".join(strip_eol(text) for text in lines[first + 1 : end])
        found.append(Property(match.group(1), line[match.end() :].strip(), first, end, more))
    return tuple(found)


def topic(text: str) -> str:
    """What the note asks the model about: its answer block's content, else (no answer, or
    a blank one) its query block's; what ``parse(text)``'s first own ``[!answer]`` and
    ``[!query]`` hold, read only as far as it takes (a ``--once`` run deals notes out by it)."""
    lines = split_lines(text)
    frontmatter = _parse_frontmatter(lines)
    query: str | None = None
    answered = False
    for callout in _callouts(lines, frontmatter.end if frontmatter else 0):
        block = callout.block(OWN_BLOCKS.get(callout.kind, ()))
        if block is None:  # not vaultd's (nor one of its types)
            continue
        if callout.kind == "answer" and not answered:
            if block.content.strip():
                return block.content
            answered = True
        elif callout.kind == "query" and query is None:
            query = block.content
        if answered and query is not None:
            return query
    return query or ""


def _scan_callouts(lines: tuple[str, ...], start: int) -> tuple[Callout, ...]:
    return tuple(_callouts(lines, start))


def _callouts(lines: tuple[str, ...], start: int) -> Iterator[Callout]:
    i = start
    fence: tuple[str, int] | None = None  # an open top-level fence: (char, length)
    while i < len(lines):
        line = strip_eol(lines[i])
        if fence:
            if _closes(line, fence):
                fence = None
            i += 1
            continue
        match = _FENCE.match(line)
        if match and not (match.group(2)[0] == "`" and "`" in match.group(3)):
            fence = (match.group(2)[0], len(match.group(2)))
            i += 1
            continue
        if _QUOTE.match(line):
            end = i
            while end < len(lines) and _QUOTE.match(lines[end]):
                end += 1
            head = _CALLOUT_HEAD.match(unquote(lines[i]))
            if head:
                yield Callout(
                    kind=head.group(1).lower(),
                    fold=head.group(2),
                    title=head.group(3),
                    start=i,
                    end=end,
                    blocks=_scan_blocks(lines, i + 1, end),
                )
            i = end
            continue
        i += 1


def _closes(line: str, fence: tuple[str, int]) -> bool:
    if not line.lstrip(" ").startswith(fence[0] * 3):  # most lines: no regex needed
        return False
    match = _FENCE.match(line)
    return bool(
        match
        and match.group(2)[0] == fence[0]
        and len(match.group(2)) >= fence[1]
        and not match.group(3).strip(" \t")
    )


def _scan_blocks(lines: tuple[str, ...], start: int, end: int) -> tuple[CodeBlock, ...]:
    blocks: list[CodeBlock] = []
    i = start
    while i < end:
        inner = unquote(lines[i])
        match = _FENCE.match(inner)
        if not match or (match.group(2)[0] == "`" and "`" in match.group(3)):
            i += 1
            continue
        fence = (match.group(2)[0], len(match.group(2)))
        indent = len(match.group(1))
        j = i + 1
        content: list[str] = []
        while j < end:
            text = unquote(lines[j])
            if _closes(text, fence):
                break
            if indent:
                text = text[min(indent, len(text) - len(text.lstrip(" "))):]
            content.append(text)
            j += 1
        blocks.append(
            CodeBlock(
                info=match.group(3).strip(),
                content="\n".join(content),
                fence_line=i,
                first_line=i + 1,
                closed=j < end,
                end=min(j + 1, end),
            )
        )
        i = j + 1
    return tuple(blocks)
