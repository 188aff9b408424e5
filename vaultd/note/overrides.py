"""A note's own settings: the frontmatter properties that override the vault's. Pure.

``model`` and ``answer_model`` (text), ``max_tokens`` and ``answer_max_tokens`` (a whole
number above 0), ``max_cost_usd`` (a number above 0: the most a run of the note may be
estimated to cost, :mod:`vaultd.evaluate.estimate`) and ``cache`` (true or false), matched
case-insensitively. In an answer note (a note with a ``panel`` property, see
:mod:`vaultd.note.panel`) ``model`` is the model that wrote the answer, not a setting:
there the judge comes from ``judge``. A property
that is missing or empty leaves the vault's setting; any other value that is not of its
kind is a :class:`Problem` on the property's line, so a note with ``max_tokens: lots``
is not run but says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from vaultd.config import DEFAULT_MODEL
from vaultd.errors import Problem
from vaultd.note import yamlread
from vaultd.note.text import Note, Property

_TEXT = ("model", "answer_model")
_COUNTS = ("max_tokens", "answer_max_tokens")


@dataclass(frozen=True)
class Overrides:
    model: str | None = None
    answer_model: str | None = None
    max_tokens: int | None = None
    answer_max_tokens: int | None = None
    cache: bool | None = None
    max_cost_usd: float | None = None


def read_overrides(note: Note) -> tuple[Overrides, list[Problem]]:
    """The note's overrides, and a problem for each one that is not of its kind."""
    texts: dict[str, str] = {}
    counts: dict[str, int] = {}
    cache: bool | None = None
    max_cost: float | None = None
    problems: list[Problem] = []
    if note.frontmatter is None:
        return Overrides(), problems
    answer_note = note.frontmatter.get("panel") is not None
    for name in (*_TEXT, *_COUNTS, "cache", "max_cost_usd"):
        prop = note.frontmatter.get("judge" if answer_note and name == "model" else name)
        if prop is None:
            continue
        line = prop.start + 1
        key = prop.key.strip("'\"")
        try:
            value = _value(prop)
        except yamlread.AliasError as exc:
            problems.append(Problem(line, f"property `{key}`: {exc.problem}"))
            continue
        except yaml.YAMLError:
            problems.append(Problem(line, f"property `{key}`: not a valid YAML value",
                                    'put text in double quotes: "..."'))
            continue
        except RecursionError:  # PyYAML recurses once per level of nesting
            problems.append(Problem(line, f"property `{key}`: nested too deeply"))
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if name in _TEXT:
            if isinstance(value, str):
                texts[name] = value.strip()
            else:
                problems.append(Problem(line, f"property `{key}`: `{_shown(value)}` is not a "
                                        "model name", f"e.g. {key}: {DEFAULT_MODEL}"))
        elif name in _COUNTS:
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                counts[name] = value
            else:
                hint = ("write the number without quotes"
                        if isinstance(value, str) and value.strip().isdigit()
                        else f"e.g. {key}: 1024")
                problems.append(Problem(line, f"property `{key}`: `{_shown(value)}` is not a "
                                        "whole number above 0", hint))
        elif name == "max_cost_usd":
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                max_cost = float(value)
            else:
                hint = ("write the number without quotes or $"
                        if isinstance(value, str) and _is_number(value.strip().lstrip("$"))
                        else f"e.g. {key}: 2.50")
                problems.append(Problem(line, f"property `{key}`: `{_shown(value)}` is not a "
                                        "number of US dollars above 0", hint))
        elif isinstance(value, bool):
            cache = value
        else:
            problems.append(Problem(line, f"property `{key}`: `{_shown(value)}` is not true "
                                    "or false", f"e.g. {key}: false"))
    overrides = Overrides(
        model=texts.get("model"),
        answer_model=texts.get("answer_model"),
        max_tokens=counts.get("max_tokens"),
        answer_max_tokens=counts.get("answer_max_tokens"),
        cache=cache,
        max_cost_usd=max_cost,
    )
    return overrides, problems


def _value(prop: Property) -> object:
    text = f"{prop.raw_value}\n{prop.more}\n" if prop.more else prop.raw_value
    return yamlread.load(text) if text.strip() else None


def _is_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    return text if len(text) <= 40 else text[:39] + "…"
