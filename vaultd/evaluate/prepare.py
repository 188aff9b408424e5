"""A parsed note becomes a plan: every check of its callouts, measures and own settings. Pure.

:func:`check_note` is the one step between a parsed :class:`~vaultd.note.text.Note` and a
run: it reports everything wrong with the note at once (a :class:`FormatError` holding a
:class:`Problem` a line) or returns what to run it with (:class:`Checked`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vaultd.errors import FormatError, Problem
from vaultd.evaluate.graph import Plan, plan
from vaultd.note.measures import Measure, read_block
from vaultd.note.overrides import Overrides, read_overrides
from vaultd.note.panel import PanelSpec, read_panel
from vaultd.note.text import Note, frontmatter_problem


@dataclass(frozen=True)
class Checked:
    """A note that passed every check: what to run it with."""

    plan: Plan
    query: str | None
    answer: str | None
    overrides: Overrides = field(default_factory=Overrides)
    panel: PanelSpec | None = None  # a panel note: its answers come from its assistants


# The properties vaultd rewrites or removes in every note it runs (besides its results').
REWRITTEN = ("Status", "Error", "Evaluated", "tokens_in", "tokens_out", "cost_usd",
             "vaultd_properties", "run")
_YAML_NODE_PROPERTIES = {"&": "an anchor", "!": "a tag", "*": "an alias"}


def unwritable_property(note: Note) -> Problem | None:
    """A property vaultd would rewrite whose value carries a YAML anchor (``&s``), tag
    (``!!str``) or alias (``*s``): rewriting its value would leave the frontmatter invalid
    (an alias elsewhere pointing at an anchor that is gone), so the note is not written."""
    if note.frontmatter is None:
        return None
    for key in REWRITTEN:
        prop = note.frontmatter.get(key)
        if prop is None:
            continue
        value = (prop.raw_value.strip() or prop.more.strip()).split(maxsplit=1)
        what = _YAML_NODE_PROPERTIES.get(value[0][:1]) if value else None
        if what is not None:
            return Problem(prop.start + 1,
                           f"{prop.key.strip()} carries {what} (`{value[0]}`): vaultd cannot "
                           "rewrite it without breaking the frontmatter's YAML, so the note is "
                           "left as it is",
                           f"write it plainly, as `{prop.key.strip()}: "
                           f"{value[1] if len(value) > 1 else 'Pending'}`")
    return None


def check_note(note: Note) -> Checked:
    """Everything wrong with the note's callouts, measures and own settings, all at once,
    or its plan."""
    overrides, problems = read_overrides(note)
    unwritable = unwritable_property(note)
    if unwritable is not None:
        problems.append(unwritable)
    broken = frontmatter_problem(note)
    if broken and not problems:  # results written into it would be read by no parser
        problems.append(Problem(broken[0], f"frontmatter is not valid YAML: {broken[1]}",
                                'put a value holding ": " or "#" in double quotes'))
    query = note.block_text("query", ("text",))  # a callout without it is the user's text
    answer = note.block_text("answer", ("text",))
    measures: list[Measure] = []
    unreadable: set[str] = set()  # measures declared but not valid
    callouts = note.callouts_of("measures")
    if not callouts:
        problems.append(Problem(None, "no [!measures] callout",
                                "add a `> [!measures]` callout holding a `measures-md` block"))
    else:
        block = note.measures_block
        if block is not None:  # always: a [!measures] callout without one is the user's
            read = read_block(block)
            measures = list(read.measures)
            problems.extend(read.problems)
            unreadable = set(read.unreadable)
        for extra in callouts[1:]:
            problems.append(Problem(extra.start + 1, "a second [!measures] callout (only one "
                                                     "is allowed)", "merge it into the first"))
    panel, panel_problems = read_panel(note)
    problems.extend(panel_problems)
    if panel is not None:
        answer = None  # a panel's answers come from its assistants; one written here is the user's
        if not (query or "").strip():
            problems.append(Problem(None, "a panel note needs a question to ask",
                                    "write it in a `[!query]` callout's `query-text` block"))
    elif not (query or "").strip() and not (answer or "").strip():
        problems.append(Problem(None, "the note has neither a query nor an answer",
                                "write the question in a `[!query]` callout's `query-text` "
                                "block"))
    graph: Plan | None = None
    try:
        graph = plan(measures, unreadable)
    except FormatError as exc:
        problems.extend(exc.problems)
    if problems or graph is None:
        raise FormatError(problems)
    return Checked(graph, query, answer, overrides, panel)


