"""The measures: read from a ``measures-md`` or ``measures-yaml`` block into typed models.

Both forms become the same list of raw mappings, each field remembering its line, and
then one pydantic model validates them. Every problem is collected, with its line in the
note, so that one look at the error names them all.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vaultd.errors import Problem, did_you_mean
from vaultd.note import yamlread
from vaultd.note.text import CodeBlock

RESERVED_INPUTS = ("answer", "query")
ID_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_BULLET = re.compile(r"^(\s*)[*+-](?:[ \t]+(.*))?$")
_FIELD = re.compile(r"^([^\s:]+)[ \t]*:(?:[ \t]+(.*)|[ \t]*)$")

Located = list[tuple[str, int]]  # text, and the 1-based note line it is on
_UNREADABLE = object()  # a value that could not be read (its problem is already reported)
TOO_DEEP = "nested too deeply"


class Measure(BaseModel):
    """One measure, validated. ``line`` is where it starts in the note (1-based)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    type: Literal["ai", "programmatic"]
    description: str = ""
    input: tuple[str, ...] = ("answer",)
    input_is_list: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    logic: str | None = None
    model: str | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    line: int = 0

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(f"`{value}` is not a valid id (use letters, digits and _)")
        if value in RESERVED_INPUTS:
            raise ValueError(f"`{value}` is reserved (it names the note's {value})")
        return value

    @field_validator("description", "prompt", "logic", "model", mode="before")
    @classmethod
    def _scalar_text(cls, value: Any) -> Any:
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
        return value

    @property
    def label(self) -> str:
        return self.description or self.id


@dataclass
class _Raw:
    """A measure as written, before validation: fields and the line each was on."""

    line: int
    fields: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    unread: set[str] = field(default_factory=set)  # fields given but not readable (reported)


_FIELD_NAMES = ("id", "type", "description", "input", "params", "prompt", "logic", "model",
                "max_tokens")
# Fields that hold ids or text: a plain scalar is the text as written there, so that `on`,
# `no`, `1` or `2024-01-01` is that text and not what YAML 1.1 makes of it.
_TEXT_FIELDS = ("id", "input", "description", "prompt", "logic", "model")


@dataclass(frozen=True)
class ReadMeasures:
    """A measures block as read: its valid measures, its problems, and the ids it declares
    whose measures are not valid."""

    measures: tuple[Measure, ...]
    problems: tuple[Problem, ...]
    unreadable: frozenset[str]


def read_block(block: CodeBlock) -> ReadMeasures:
    """A note's ``measures-md`` or ``measures-yaml`` block (:attr:`Note.measures_block`),
    read as the run reads it: the one way the engine and the report read measures."""
    fmt = block.info.lower().removeprefix("measures-")
    return read_measures(block.content, fmt, block.first_line + 1)


def read_measures(content: str, fmt: str, first_line: int) -> ReadMeasures:
    """A measures block, read once: notes asked the same questions share their measures.

    The block is read as if it began on line 1 and its measures moved to ``first_line``; a
    block with problems is read again in place, since messages may name lines too.
    """
    read = _read_from_line_1(content, fmt)
    if read.problems:
        return _read(content, fmt, first_line)
    if first_line == 1:
        return read
    shift = first_line - 1
    return ReadMeasures(
        tuple(m.model_copy(update={"line": m.line + shift}) for m in read.measures),
        (), read.unreadable)


@functools.lru_cache(maxsize=512)
def _read_from_line_1(content: str, fmt: str) -> ReadMeasures:
    return _read(content, fmt, 1)


def _read(content: str, fmt: str, first_line: int) -> ReadMeasures:
    raws, measures, problems = _parse(content, fmt, first_line)
    declared = {raw.fields["id"] for raw in raws if isinstance(raw.fields.get("id"), str)}
    return ReadMeasures(tuple(measures), tuple(problems),
                        frozenset(declared - {m.id for m in measures}))


def parse_measures(
    content: str, fmt: str, first_line: int
) -> tuple[list[Measure], list[Problem]]:
    """Measures from a block's content. ``first_line`` is the 1-based line of its first line."""
    _, measures, problems = _parse(content, fmt, first_line)
    return measures, problems


def _parse(content: str, fmt: str, first_line: int
           ) -> tuple[list[_Raw], list[Measure], list[Problem]]:
    if fmt == "yaml":
        raws, problems = _read_yaml(content, first_line)
    else:
        raws, problems = _read_md(content, first_line)
    measures: list[Measure] = []
    for raw in raws:
        measure, found = _validate(raw)
        problems.extend(found)
        if measure:
            measures.append(measure)
    if not raws and not problems:
        problems.append(Problem(first_line - 1, "the measures block lists no measures",
                                "start each measure with `* ---`" if fmt != "yaml" else
                                "each measure is a `- id: ...` mapping"))
    return raws, measures, problems


def _validate(raw: _Raw) -> tuple[Measure | None, list[Problem]]:
    data = dict(raw.fields)
    problems: list[Problem] = []
    for key in data:
        if key not in _FIELD_NAMES:
            problems.append(Problem(raw.lines.get(key, raw.line), f"unknown field `{key}`",
                                    _field_hint(key)))
    data = {k: v for k, v in data.items() if k in _FIELD_NAMES}
    label = f"measure `{data['id']}`" if isinstance(data.get("id"), str) else "measure"
    if "input" in data:
        value = data["input"]
        if value is None:
            data.pop("input")
        elif isinstance(value, list):
            data["input"] = tuple(str(v) for v in value)
            data["input_is_list"] = True
        else:
            data["input"] = (str(value),)
    if data.get("params") is None:
        data.pop("params", None)
    kind = data.get("type")
    if kind == "ai" and not data.get("prompt") and "prompt" not in raw.unread:
        problems.append(Problem(raw.line, f"{label}: an ai measure needs a `prompt`",
                                "add `* prompt: \"...\"`, the instruction to the model"))
    if kind == "programmatic" and not data.get("logic") and "logic" not in raw.unread:
        problems.append(Problem(raw.line, f"{label}: a programmatic measure needs `logic`",
                                "add `* logic: \"return ...;\"`, a JavaScript function body"))
    try:
        measure = Measure(line=raw.line, **data)
    except ValidationError as exc:
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            if key not in raw.unread:  # its problem is already reported
                message, hint = _explain(label, key, error)
                problems.append(Problem(raw.lines.get(key, raw.line), message, hint))
        return None, problems
    return (None, problems) if problems or raw.unread else (measure, [])


def _field_hint(key: str) -> str:
    return did_you_mean(key, _FIELD_NAMES) or f"known: {', '.join(_FIELD_NAMES)}"


_MISSING_HINTS = {
    "id": "add `* id: ...`, a name of letters, digits and _",
    "type": "type is ai or programmatic",
}


def _explain(label: str, key: str, error: Any) -> tuple[str, str]:
    """A validation error as a message and a hint."""
    kind = error["type"]
    if kind == "missing":
        return f"{label}: missing required field `{key}`", _MISSING_HINTS.get(key, "")
    if key == "type" and kind == "literal_error":
        value = str(error["input"])
        hint = did_you_mean(value, ("ai", "programmatic"))
        return f"{label}: unknown type `{value}`", hint or "type is ai or programmatic"
    if key == "max_tokens":
        return (f"{label}: field `max_tokens`: `{error['input']}` is not a whole number above 0",
                "e.g. `* max_tokens: 1024`")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{label}: field `{key}`: {message}", ""


# -- measures-md ------------------------------------------------------------------------


def _read_md(content: str, first_line: int) -> tuple[list[_Raw], list[Problem]]:
    """The seed's form: ``* ---`` starts a measure, nested ``* key: value`` items are fields."""
    raws: list[_Raw] = []
    problems: list[Problem] = []
    top: int | None = None  # indent of the top-level bullets
    current: _Raw | None = None
    last: tuple[str, int, int] | None = None  # field key, its indent, its line
    parts: Located = []  # the text of the field being read (continuation lines join it)
    children: Located = []  # nested bullet values under a field with no inline value

    def finish() -> None:
        nonlocal last, parts, children
        if current is not None and last is not None:
            key, _, line = last
            _store(current, key, line, parts, children, problems)
        last, parts, children = None, [], []

    for offset, text in enumerate(content.split("\n")):
        line = first_line + offset
        if not text.strip():
            continue
        bullet = _BULLET.match(text)
        indent = len(text) - len(text.lstrip())
        if bullet and top is None:
            top = indent
        if bullet and indent <= (top or 0):
            finish()
            item = (bullet.group(2) or "").strip()
            if item != "---":
                problems.append(Problem(line, "expected `* ---` to start a measure"))
                current = None
                continue
            current = _Raw(line)
            raws.append(current)
            continue
        if current is None:
            if top is None:
                problems.append(Problem(line, "expected `* ---` to start a measure"))
            continue
        if bullet and (last is None or indent <= last[1]):
            finish()
            item = (bullet.group(2) or "").strip()
            match = _FIELD.match(item)
            if not match:
                problems.append(Problem(line, f"expected `* key: value`, found `{item}`"))
                continue
            last = (match.group(1), indent, line)
            parts = [(match.group(2) or "", line)]
        elif bullet and last is not None:
            children.append(((bullet.group(2) or "").strip(), line))
        elif last is not None:
            parts.append((text.strip(), line))
        else:
            problems.append(Problem(line, f"expected `* key: value`, found `{text.strip()}`"))
    finish()
    return raws, problems


def _store(
    raw: _Raw, key: str, line: int, parts: Located, children: Located,
    problems: list[Problem],
) -> None:
    if not _KEY.match(key):
        problems.append(Problem(line, f"`{key}` is not a valid field name", _field_hint(key)))
        return
    parts = [(text, at) for text, at in parts if text]
    value: Any = None
    if children and parts:
        problems.append(Problem(children[0][1], f"field `{key}` has a value and nested items "
                                                "(give one or the other)"))
        value = _UNREADABLE
    elif children:
        value = [_scalar([child], key, problems) for child in children]
        value = _UNREADABLE if any(v is _UNREADABLE for v in value) else value
    elif parts:
        value = _scalar(parts, key, problems)
    if value is _UNREADABLE:
        raw.unread.add(key.split(".")[0])
        return
    _put(raw, key, value, line, problems)


def _scalar(parts: Located, key: str, problems: list[Problem]) -> Any:
    """A value written over one or more lines, joined by spaces and read as YAML."""
    text = " ".join(part for part, _ in parts)
    try:
        value = yamlread.load(text)
        if value is not None and key in _TEXT_FIELDS:
            value = yamlread.load_text(text)  # every scalar as text
        return value
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, start = parts[0][1], 0
        for part, at in parts:  # the line the error is on
            if mark is not None and start > mark.index:
                break
            line, start = at, start + len(part) + 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, yamlread.AliasError):
            problems.append(Problem(line, f"field `{key}`: {reason}"))
        else:
            problems.append(Problem(line, f"field `{key}`: not a valid YAML value ({reason})",
                                    'put text in double quotes: "..."'))
        return _UNREADABLE
    except RecursionError:  # PyYAML recurses once per level of nesting
        problems.append(Problem(parts[0][1], f"field `{key}`: {TOO_DEEP}"))
        return _UNREADABLE


def _put(raw: _Raw, key: str, value: Any, line: int, problems: list[Problem]) -> None:
    """Set a field; a dotted key (``params.target``) builds nested mappings."""
    head, *rest = key.split(".")
    if head in raw.lines and not rest:
        problems.append(Problem(line, f"field `{key}` is given twice (first on line "
                                      f"{raw.lines[head]})", "remove one of them"))
        return
    raw.lines.setdefault(head, line)
    if not rest:
        raw.fields[head] = value
        return
    target = raw.fields.setdefault(head, {})
    if not isinstance(target, dict):
        problems.append(Problem(line, f"field `{key}`: `{head}` is not a mapping"))
        return
    for part in rest[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            problems.append(Problem(line, f"field `{key}`: `{part}` is not a mapping"))
            return
    if rest[-1] in target:
        first = raw.lines.get(key, raw.lines[head])
        problems.append(Problem(line, f"field `{key}` is given twice (first on line {first})",
                                "remove one of them"))
        return
    target[rest[-1]] = value
    raw.lines[key] = line


# -- measures-yaml ----------------------------------------------------------------------


def _read_yaml(content: str, first_line: int) -> tuple[list[_Raw], list[Problem]]:
    """The same data as a YAML list of mappings; lines come from the YAML node marks."""
    try:
        root = yamlread.compose(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = _line_of(content, first_line, mark) if mark else first_line
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [], [Problem(line, f"the measures are not valid YAML: {reason}")]
    except RecursionError:
        return [], [Problem(first_line, f"the measures are not valid YAML: {TOO_DEEP}")]
    if root is None:
        return [], []
    if not isinstance(root, yaml.SequenceNode):
        return [], [Problem(first_line, "the measures must be a YAML list of mappings")]
    raws: list[_Raw] = []
    problems: list[Problem] = []
    constructor = yaml.SafeLoader("")
    as_text = yaml.BaseLoader("")  # every scalar as text
    for item in root.value:
        line = _line_of(content, first_line, item.start_mark)
        if not isinstance(item, yaml.MappingNode):
            problems.append(Problem(line, "each measure must be a mapping of fields"))
            continue
        raw = _Raw(line)
        for key_node, value_node in item.value:
            key = str(key_node.value)
            key_line = _line_of(content, first_line, key_node.start_mark)
            try:
                value = constructor.construct_object(value_node, deep=True)
                if value is not None and key in _TEXT_FIELDS:
                    value = as_text.construct_object(value_node, deep=True)
            except (yaml.YAMLError, RecursionError) as exc:
                reason = (TOO_DEEP if isinstance(exc, RecursionError) else
                          getattr(exc, "problem", None) or str(exc).splitlines()[0])
                problems.append(Problem(key_line, f"field `{key}`: {reason}"))
                raw.unread.add(key.split(".")[0])
                continue
            _put(raw, key, value, key_line, problems)
        raws.append(raw)
    constructor.dispose()
    as_text.dispose()
    return raws, problems


def _line_of(content: str, first_line: int, mark: yaml.Mark) -> int:
    """The note line of a YAML mark (PyYAML also counts U+2028, U+2029 and NEL as breaks)."""
    return first_line + content.count("\n", 0, mark.index)
