"""The panel note format: a note that asks many answers to one question. Pure.

A **panel note** is a note whose frontmatter has ``samples`` (a whole number, 1 to 100) or
``assistants`` (one name, or a list of names), or both; a note with neither is an
ordinary note, untouched by anything here (see /work/shared/panel-format.md, the contract).

Each answer a run receives becomes an **answer note** beside the panel note, in the seed's
shape (:func:`answer_note_text`), named by :func:`answer_file_name`, and read back by
:func:`read_answer`. The run's figures (:func:`panel_figures`) and the ``[!panel]`` summary
callout (:func:`summary_lines`) are computed from those answer notes' typed results.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml

from vaultd.errors import Problem
from vaultd.note import yamlread
from vaultd.note.overrides import read_overrides
from vaultd.note.properties import DEFAULT_PREFIX
from vaultd.note.render import code_callout
from vaultd.note.results import NoteResults, note_results
from vaultd.note.text import Note, Property, strip_eol

MAX_SAMPLES = 100
RUN_ID = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d):(\d\d):(\d\d)Z$")  # 2026-12-02T14:35:07Z
# Not allowed in a file name on Windows or macOS, nor in an Obsidian link.
UNSAFE_NAME_CHARS = '#^[]|:*?"<>\\/'
_UNSAFE = re.compile("[" + re.escape(UNSAFE_NAME_CHARS) + r"\x00-\x1f\x7f]")
_LINK = re.compile(r"^\[\[([^\]|#^]*)(?:[#^][^\]|]*)?(?:\|[^\]]*)?\]\]$")


@dataclass(frozen=True)
class PanelSpec:
    """What a panel note asks for: ``samples`` answers from each of ``assistants``.

    ``assistants == ()`` means "the vault's answer model"."""

    samples: int = 1
    assistants: tuple[str, ...] = ()


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
    problems: list[Problem] = []
    samples_value = _read(samples_prop, problems)
    assistants_value = _read(assistants_prop, problems)
    if samples_value is None and assistants_value is None and not problems:
        return None, []
    samples = 1
    if samples_prop is not None and samples_value is not None:
        found = _samples(samples_prop, samples_value, problems)
        samples = found if found is not None else samples
    assistants: tuple[str, ...] = ()
    if assistants_prop is not None and assistants_value is not None:
        assistants = _assistants(assistants_prop, assistants_value, problems)
    return PanelSpec(samples, assistants), problems


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
                     sample: int, answer: str) -> str:
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
        f"panel: {json.dumps(f'[[{name}]]', ensure_ascii=False)}",
        f"assistant: {_yaml_text(assistant)}",
        f"model: {_yaml_text(model)}",
        f"sample: {int(sample)}",
        f"run: {json.dumps(run)}",
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
    """``text`` as a YAML value: plain where YAML reads it back as that text, else quoted."""
    if text == text.strip() and text and "\n" not in text and "\r" not in text:
        try:
            if yamlread.load(text) == text:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


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
        sample=sample,
        status=(note.status or "").strip(),
        results=note_results(name, note, prefix),
    )


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
