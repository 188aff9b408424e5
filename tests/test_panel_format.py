"""The panel note format (vaultd.note.panel): panel settings, answer notes, the summary, the
splice of the ``[!panel]`` callout. Pure functions, real note text, byte-exact results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vaultd.errors import Problem
from vaultd.note.measures import read_block
from vaultd.note.outcomes import Failure, Outcome, Success
from vaultd.note.overrides import read_overrides
from vaultd.note.panel import (
    AnswerNote,
    PanelSpec,
    answer_file_name,
    answer_note_text,
    read_answer,
    read_panel,
)
from vaultd.note.properties import property_changes
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.note.splice import Changes, apply
from vaultd.note.text import parse

SEED = (Path(__file__).parent / "data" / "seed-note.md").read_text(encoding="utf-8")
RUN = "2026-12-02T14:35:07Z"


def seed_panel(properties: str = "samples: 5\n", newline: str = "\n") -> str:
    """The seed note as a panel note: its query and measures, no answer, no results."""
    lines = SEED.split("\n")
    query_at = lines.index("> [!query]")
    answer_at = lines.index("> [!answer]")
    measures_at = lines.index("> [!measures]-")
    end = lines.index("***", measures_at)
    body = lines[query_at - 2 : answer_at - 2] + lines[measures_at - 2 : end]
    text = "---\nStatus: Pending\n" + properties + "---\n" + "\n".join(body)
    return text.replace("\n", newline)


def measures_lines(text: str) -> str:
    """The ``[!measures]`` callout's lines of ``text``, endings included."""
    note = parse(text)
    callout = note.first("measures")
    assert callout is not None
    return "".join(note.lines[callout.start : callout.end])


def judged(text: str, outcomes: dict[str, Outcome], status: str = "Done") -> str:
    """``text`` (a pending note) as the engine leaves it: Status, eval_ properties, pairs."""
    note = parse(text)
    block = note.measures_block
    assert block is not None
    measures = read_block(block).measures
    props = property_changes(note, "eval_", measures, outcomes).changes
    pairs = [evaluation_pair(m.label, m.type, outcomes[m.id]) for m in measures
             if m.id in outcomes]
    return apply(note, Changes(status=status, properties=props,
                               results=evaluation_block(pairs)))


# --- read_panel -------------------------------------------------------------------------


def panel_of(frontmatter: str) -> tuple[PanelSpec | None, list[Problem]]:
    return read_panel(parse(f"---\nStatus: Pending\n{frontmatter}---\n\nBody.\n"))


def test_a_note_without_samples_or_assistants_is_not_a_panel_note() -> None:
    assert panel_of("model: claude-haiku-4-5\n") == (None, [])
    assert read_panel(parse("No frontmatter.\n")) == (None, [])
    assert panel_of("samples:\nassistants: []\n") == (None, [])  # left empty in Obsidian


def test_samples_and_assistants_as_a_name_or_a_list() -> None:
    assert panel_of("samples: 10\n") == (PanelSpec(10, ()), [])
    assert panel_of("assistants: claude-opus-5\n") == (PanelSpec(1, ("claude-opus-5",)), [])
    assert panel_of("Samples: 3\nassistants: [claude-opus-5, claude-sonnet-5-5]\n") == (
        PanelSpec(3, ("claude-opus-5", "claude-sonnet-5-5")), [])
    assert panel_of("assistants:\n  - claude-opus-5\n  - ' gpt '\nsamples: 100\n") == (
        PanelSpec(100, ("claude-opus-5", "gpt")), [])


@pytest.mark.parametrize(("frontmatter", "message"), [
    ("samples: 0\n", "property `samples`: `0` is not a whole number from 1 to 100"),
    ("samples: lots\n", "property `samples`: `lots` is not a whole number from 1 to 100"),
    ("samples: 2.5\n", "property `samples`: `2.5` is not a whole number from 1 to 100"),
    ("samples: true\n", "property `samples`: `true` is not a whole number from 1 to 100"),
    ("samples: 101\n", "property `samples`: 101 is more than 100 samples"),
    ("assistants: 3\n", "property `assistants`: `3` is not a name"),
    ("assistants: [claude-opus-5, '']\n", "property `assistants`: an empty name"),
    ("assistants: [claude-opus-5, ~]\n", "property `assistants`: an empty name"),
    ("assistants: [\"my:model\"]\n",
     "property `assistants`: `my:model` holds \":\", not allowed in a file name"),
    ("assistants: [a/b, a/b]\n",
     "property `assistants`: `a/b` holds \"/\", not allowed in a file name"),
    ("assistants: [gpt, gpt]\n", "property `assistants`: `gpt` is named twice"),
    ("assistants: [gpt\n", "property `assistants`: not a valid YAML value"),
])
def test_a_bad_setting_is_a_problem_on_its_line(frontmatter: str, message: str) -> None:
    spec, problems = panel_of("title: x\n" + frontmatter)
    assert spec is not None  # still a panel note: run as an ordinary note it would not be
    assert [(p.line, p.message) for p in problems][:1] == [(4, message)]


def test_a_quoted_number_of_samples_hints_at_the_quotes() -> None:
    _, problems = panel_of('samples: "5"\n')
    assert problems[0].text == ("property `samples`: `5` is not a whole number from 1 to 100 "
                                "(write the number without quotes)")


# --- answer file names ------------------------------------------------------------------


def test_answer_file_names() -> None:
    assert answer_file_name(RUN, "gpt", 3) == "2026-12-02 143507 gpt 3.md"
    assert answer_file_name("2026-01-09T00:00:59Z", "claude-sonnet-5-5", 10) == (
        "2026-01-09 000059 claude-sonnet-5-5 10.md")
    assert answer_file_name(RUN, 'a#b^c[d]e|f:g*h?i"j<k>l\\m/n', 1) == (
        "2026-12-02 143507 a-b-c-d-e-f-g-h-i-j-k-l-m-n 1.md")
    assert answer_file_name(RUN, "tab\there", 2) == "2026-12-02 143507 tab-here 2.md"
    with pytest.raises(ValueError, match="not a run id"):
        answer_file_name("2026-12-02 14:35:07", "gpt", 1)


# --- answer notes -----------------------------------------------------------------------

EXPECTED_HEAD = (
    "---\n"
    "Status: Pending\n"
    'panel: "[[Sezary second-line]]"\n'
    "assistant: claude-sonnet-5-5\n"
    "model: claude-sonnet-5-5\n"
    "sample: 3\n"
    'run: "2026-12-02T14:35:07Z"\n'
    "---\n"
    "\n"
    "***\n"
    "\n"
    "> [!query]\n"
    "> ```query-text\n"
    "> My Sezary Syndrome is resistant to first-line treatments. What are the best "
    "second-line treatment options?\n"
    "> ```\n"
    "\n"
    "***\n"
    "\n"
    "> [!answer]\n"
    "> ```answer-text\n"
    "> Try Poteligeo.\n"
    "> \n"
    "> Or ```ECP```.\n"
    "> ```\n"
    "\n"
    "***\n"
    "\n"
)


def test_the_answer_note_is_in_the_seed_s_shape_with_the_measures_verbatim() -> None:
    panel_text = seed_panel()
    text = answer_note_text(parse(panel_text), "Queries/Sezary second-line.md", RUN,
                            "claude-sonnet-5-5", "claude-sonnet-5-5", 3,
                            "Try Poteligeo.\n\nOr ```ECP```.")
    measures = measures_lines(panel_text)
    assert measures.startswith("> [!measures]-\n> ```measures-md\n> * ---\n")
    assert text == EXPECTED_HEAD + measures


def test_a_crlf_panel_note_gives_a_crlf_answer_note() -> None:
    panel_text = seed_panel(newline="\r\n")
    text = answer_note_text(parse(panel_text), "Sezary second-line", RUN,
                            "claude-sonnet-5-5", "claude-sonnet-5-5", 3, "Try Poteligeo.")
    assert "\n" not in text.replace("\r\n", "")
    assert text.endswith(measures_lines(panel_text))
    assert text.startswith("---\r\nStatus: Pending\r\npanel: \"[[Sezary second-line]]\"\r\n")


def test_the_panel_note_s_model_is_the_answer_note_s_judge() -> None:
    panel = parse(seed_panel("samples: 2\nmodel: claude-haiku-4-5\n"))
    text = answer_note_text(panel, "Sezary second-line.md", RUN, "claude-opus-5",
                            "claude-opus-5", 1, "Poteligeo.")
    assert "model: claude-opus-5\nsample: 1\nrun: \"2026-12-02T14:35:07Z\"\n" \
           "judge: claude-haiku-4-5\n---\n" in text
    assert read_overrides(parse(text))[0].model == "claude-haiku-4-5"


def test_in_an_answer_note_model_is_who_answered_and_judge_the_judge() -> None:
    answer = parse('---\npanel: "[[P]]"\nmodel: claude-opus-5\n---\n')
    assert read_overrides(answer) == read_overrides(parse("---\n---\n"))  # no judge set
    bad = parse('---\npanel: "[[P]]"\nmodel: claude-opus-5\njudge: 3\n---\n')
    overrides, problems = read_overrides(bad)
    assert overrides.model is None
    assert [(p.line, p.message) for p in problems] == [
        (4, "property `judge`: `3` is not a model name")]
    # an ordinary note's judge is still its model (and `judge` means nothing there)
    plain = parse("---\nmodel: claude-opus-5\njudge: claude-haiku-4-5\n---\n")
    assert read_overrides(plain)[0].model == "claude-opus-5"


def test_names_yaml_would_misread_are_quoted() -> None:
    panel = parse(seed_panel())
    text = answer_note_text(panel, 'Odd "panel"', RUN, "yes", "2026-01-01", 1, "x")
    assert 'panel: "[[Odd \\"panel\\"]]"\nassistant: "yes"\nmodel: "2026-01-01"\n' in text
    answer = read_answer('Odd "panel"/a.md', parse(text), "eval_")
    assert answer is not None
    assert (answer.panel, answer.assistant, answer.model) == ('Odd "panel"', "yes", "2026-01-01")


def test_an_answer_note_round_trips_through_the_engine_s_writes() -> None:
    panel_text = seed_panel()
    pending = answer_note_text(parse(panel_text), "Queries/Sezary second-line.md", RUN,
                               "claude-sonnet-5-5", "claude-sonnet-5-5", 3, "Try Poteligeo.")
    name = "Queries/Sezary second-line/" + answer_file_name(RUN, "claude-sonnet-5-5", 3)

    before = read_answer(name, parse(pending), "eval_")
    assert before == AnswerNote(
        name="Queries/Sezary second-line/2026-12-02 143507 claude-sonnet-5-5 3",
        panel="Sezary second-line", run=RUN, assistant="claude-sonnet-5-5",
        model="claude-sonnet-5-5", sample=3, status="Pending", results=before.results)
    assert before.results.results == ()

    done = judged(pending, {
        "mentioned_treatments": Success(["Poteligeo", "ECP"]),
        "poteligeo_mentioned": Success(True),
        "poteligeo_position": Success(1),
        "recommendation_strength": Failure("the model API refused"),
    })
    after = read_answer(name, parse(done), "eval_")
    assert after is not None
    assert (after.status, after.run, after.sample, after.panel) == (
        "Done", RUN, 3, "Sezary second-line")
    values: dict[str, Any] = {r.measure: r.value for r in after.results.results}
    states = {r.measure: r.state for r in after.results.results}
    assert values == {"mentioned_treatments": ("Poteligeo", "ECP"),
                      "poteligeo_mentioned": True, "poteligeo_position": 1,
                      "recommendation_strength": None}
    assert states["recommendation_strength"] == "error"
    # the measures callout is still the panel's, byte for byte
    assert measures_lines(done) == measures_lines(panel_text)


def test_a_note_is_an_answer_note_only_with_panel_run_assistant_and_sample() -> None:
    full = '---\npanel: "[[P]]"\nrun: "2026-12-02T14:35:07Z"\nassistant: a\nsample: 2\n---\n'
    assert read_answer("P/x.md", parse(full), "eval_") is not None
    for key in ("panel", "run", "assistant", "sample"):
        kept = "".join(line for line in full.splitlines(keepends=True)
                       if not line.startswith(key + ":"))
        assert read_answer("P/x.md", parse(kept), "eval_") is None, key
    assert read_answer("x.md", parse(full.replace("sample: 2", "sample: two")), "eval_") is None
    # an unquoted run id (as a person may retype it) is still the text written
    unquoted = parse(full.replace('"2026-12-02T14:35:07Z"', "2026-12-02T14:35:07Z"))
    answer = read_answer("P/x.md", unquoted, "eval_")
    assert answer is not None and answer.run == RUN
    linked = parse(full.replace('"[[P]]"', '"[[Folder/P|the panel]]"'))
    answer = read_answer("P/x", linked, "eval_")
    assert answer is not None and (answer.panel, answer.name) == ("Folder/P", "P/x")
