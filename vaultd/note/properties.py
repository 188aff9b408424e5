"""Results as properties: each measure's value in the note's frontmatter. Pure.

A measure whose value is a string, a number, a boolean or a list of those is also written
to the frontmatter under ``<prefix><id>`` (``eval_`` by default), typed as Obsidian,
Dataview and Bases read it: ``9``, ``0.5``, ``true``, ``Poteligeo``, ``"1.0"`` (quoted only
where YAML would read the text as something else), a list as a block list, an empty list
as ``[]``. Any other value (``null``, an object, a nested list) and a failed or skipped
measure get no property: the key is removed, so a key never holds an error message in
place of its value and keeps its type from note to note.

vaultd only ever changes keys it wrote. The keys it wrote are listed in the note's own
``vaultd_properties`` property, so the record travels with the note (renamed, moved, synced
or copied). A property of the user's with a measure's key is never overwritten: it is a
:class:`Collision`, reported. Keys vaultd wrote for measures the note no longer has are
removed when the note is run again. Since anyone can write that record by hand, only the
keys in it that start with the property prefix count (a record listing ``tags`` or
``title`` removes nothing): with a prefix that ends in ``_`` or ``-``, as the default
``eval_`` does, no key of the user's can be reached through it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from vaultd.note.measures import Measure
from vaultd.note.outcomes import Outcome, Success
from vaultd.note.text import Note

DEFAULT_PREFIX = "eval_"  # the property_prefix setting's default
RECORD_KEY = "vaultd_properties"  # the keys vaultd wrote in this note, as a block list
# Keys vaultd reads or writes for its own reasons: never a measure's, never in the record.
OWN_KEYS = frozenset({
    "status", "error", "evaluated", "tokens_in", "tokens_out", "cost_usd", RECORD_KEY,
    "model", "answer_model", "max_tokens", "answer_max_tokens", "cache",
})
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_ODD = re.compile(r"[^A-Za-z0-9_-]")
_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")
# Plain text YAML 1.2's core schema (Obsidian's) reads as something else than a string.
# PyYAML reads YAML 1.1; text either would mistype is quoted.
_YAML12_NOT_TEXT = re.compile(
    r"~|null|Null|NULL|true|True|TRUE|false|False|FALSE"
    r"|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN"
)
# And what the YAML 1.1 spec's types read as something else, in full (PyYAML leaves out
# y/n), more than PyYAML reads: quoting text that needs no quotes reads the same anywhere.
_YAML11_NOT_TEXT = re.compile(
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|~|null|Null|NULL"
    r"|[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
    r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9.]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
    r"|=|<<"
)


@dataclass(frozen=True)
class Collision:
    """A measure's key that vaultd may not write: a user's property holds it, or another's."""

    key: str  # as the note spells it
    measure_id: str
    line: int  # 1-based: the property's line, or the measure's
    why: str

    @property
    def message(self) -> str:
        return f"measure `{self.measure_id}`'s result is not written to `{self.key}`: {self.why}"

    hint = "rename the property or the measure, or set property_prefix"


@dataclass(frozen=True)
class PropertyChanges:
    """What to write: key → YAML text (``None`` removes the key), and what was left alone."""

    changes: dict[str, str | None]
    collisions: tuple[Collision, ...]


def property_key(prefix: str, measure_id: str) -> str:
    """``prefix`` + ``id``. Ids are letters, digits and ``_``; anything else becomes ``_``."""
    return _ODD.sub("_", prefix + measure_id)


def yaml_value(value: Any) -> str | None:
    """``value`` as the YAML text after ``key:``, or None when it is not written as a property.

    A list is a block list: its text starts with a line break and holds ``  - item`` lines.
    Every result is read back with ``yaml.safe_load`` and must give the value, typed alike.
    """
    # The same few values recur across notes (a brand, true, 1): each is worked out once.
    # A block list is its items' lines, each of which reads back alone as a one-item list.
    if isinstance(value, list):
        if all(isinstance(item, _HASHABLE) for item in value):
            items = [_list_item(type(item).__name__, item) for item in value]
            if any(item is None for item in items):
                return None
            return "".join(f"\n  - {item}" for item in items) if items else "[]"
    elif isinstance(value, _HASHABLE):
        return _yaml_value_of(("scalar", ((type(value), value),)))
    return _yaml_value(value)


_HASHABLE = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=4096)
def _yaml_value_of(frozen: tuple[str, tuple[tuple[type, Any], ...]]) -> str | None:
    kind, items = frozen
    return _yaml_value([v for _, v in items] if kind == "list" else items[0][1])


@functools.lru_cache(maxsize=4096)
def _list_item(kind: str, value: Any) -> str | None:
    """One item of a block list (``kind`` keeps ``1`` and ``True`` apart in the cache)."""
    text = _yaml_value([value])  # "\n  - item", read back as a whole
    return text.removeprefix("\n  - ") if text else None


def _yaml_value(value: Any) -> str | None:
    if isinstance(value, list):
        items = [_scalar(item) for item in value]
        if any(item is None for item in items):
            return None
        text = "".join(f"\n  - {item}" for item in items) if items else "[]"
    else:
        scalar = _scalar(value)
        if scalar is None:
            return None
        text = scalar
    return text if _reads_back(text, value) else None


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text: str = yaml.safe_dump(value).splitlines()[0]  # 1.0e+21, which YAML 1.1 reads too
        return text
    if isinstance(value, str):
        return value if _plain_is_safe(value) else _double_quoted(value)
    return None


def _plain_is_safe(text: str) -> bool:
    """Whether ``key: text`` reads back as exactly ``text`` in YAML 1.1 and 1.2 alike."""
    if not text or text != text.strip() or any(b in text for b in _BREAKS):
        return False
    if _YAML12_NOT_TEXT.fullmatch(text) or _YAML11_NOT_TEXT.fullmatch(text):
        return False
    try:
        loaded = yaml.safe_load(f"k: {text}\n")
    except yaml.YAMLError:
        return False
    return isinstance(loaded, dict) and type(loaded.get("k")) is str and loaded["k"] == text


def _double_quoted(text: str) -> str:
    dumped: str = yaml.safe_dump(text, default_style='"', allow_unicode=True,
                                 width=float("inf"))
    return dumped.rstrip("\n")


def _reads_back(text: str, value: Any) -> bool:
    try:
        loaded = yaml.safe_load(f"k: {text}\n")
    except yaml.YAMLError:
        return False
    return isinstance(loaded, dict) and _same(loaded.get("k"), value)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        return (isinstance(got, list) and len(got) == len(want)
                and all(_same(g, w) for g, w in zip(got, want, strict=True)))
    return type(got) is type(want) and got == want


def recorded_keys(note: Note, prefix: str) -> list[str]:
    """The keys the note's record says vaultd wrote: only keys that start with ``prefix``
    (vaultd's own keys never count), so a record a user wrote by hand, or one that lists
    ``tags`` or ``title``, never reaches a key vaultd could not have written."""
    value = note.properties.get(RECORD_KEY)
    if not isinstance(value, list):
        return []
    folded = prefix.lower()
    return [key for key in value if isinstance(key, str) and _KEY_PATTERN.match(key)
            and key.lower() not in OWN_KEYS and key.lower().startswith(folded)]


def collisions(note: Note, prefix: str, measures: Sequence[Measure]) -> list[Collision]:
    """The user's properties that hold a key one of ``measures`` would be written to."""
    return list(property_changes(note, prefix, measures, {}).collisions)


def property_changes(note: Note, prefix: str, measures: Sequence[Measure],
                     outcomes: Mapping[str, Outcome]) -> PropertyChanges:
    """The frontmatter edits that make the note's properties say ``outcomes``.

    Decided against ``note`` as it is now: a key is vaultd's to write if the note's record
    lists it or the note does not have it yet; a key the record lists that no measure
    writes any more is removed; the record itself is rewritten to list what is written.
    """
    if note.frontmatter is None:
        return PropertyChanges({}, ())
    recorded = recorded_keys(note, prefix)
    owned = {key.lower() for key in recorded}
    changes: dict[str, str | None] = {}
    found: list[Collision] = []
    written: list[str] = []
    taken: set[str] = set()  # keys already given to a measure (case-insensitively)
    for measure in measures:
        key = property_key(prefix, measure.id)
        folded = key.lower()
        prop = note.frontmatter.get(key)
        why = ("vaultd uses that property itself" if folded in OWN_KEYS
               else "another measure's result goes there (keys ignore case)" if folded in taken
               else "a property of yours has that name" if prop is not None and folded not in owned
               else "")
        if why:
            line = prop.start + 1 if prop is not None and folded not in taken else measure.line
            found.append(Collision(prop.key.strip("'\"") if prop else key, measure.id, line, why))
            continue
        taken.add(folded)
        outcome = outcomes.get(measure.id)
        text = yaml_value(outcome.value) if isinstance(outcome, Success) else None
        if text is None:
            if prop is not None:
                changes[key] = None
            continue
        changes[key] = text
        written.append(key)
    for key in recorded:  # written by an earlier run for a measure now gone
        if key.lower() not in taken and note.frontmatter.get(key) is not None:
            changes[key] = None
    changes[RECORD_KEY] = yaml_value(written) if written else None
    return PropertyChanges(changes, tuple(found))
