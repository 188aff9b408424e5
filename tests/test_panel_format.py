"""The panel note format (vaultd.note.panel): panel settings, answer notes, the summary, the
splice of the ``[!panel]`` callout. Pure functions, real note text, byte-exact results."""

# ruff: noqa: RUF001  (the contract's cells put an en dash between an interval's ends)

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import mistune
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from vaultd.errors import Problem
from vaultd.note.measures import Measure, read_block
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.overrides import read_overrides
from vaultd.note.panel import (
    AnswerNote,
    PanelSpec,
    answer_file_name,
    answer_note_text,
    panel_figures,
    read_answer,
    read_panel,
    summary_lines,
)
from vaultd.note.properties import property_changes
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.note.splice import Changes, apply
from vaultd.note.text import parse

from .conftest import run_cli, run_process

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


# --- the summary ------------------------------------------------------------------------

A, B = "claude-opus-5", "claude-sonnet-5-5"
EARLIER = "2026-11-25T09:00:00Z"


def answer_of(panel_text: str, who: str, k: int, values: list[object] | None,
              run: str = RUN, status: str = "Done") -> AnswerNote:
    """An answer note of the panel as the run leaves it: ``values`` are the measures'
    outcomes in declared order (a value, or a Failure / Skipped); None: not judged yet."""
    panel = parse(panel_text)
    text = answer_note_text(panel, "Queries/Sezary second-line.md", run, who, who, k, "x")
    if values is not None:
        block = panel.measures_block
        assert block is not None
        ids = [m.id for m in read_block(block).measures]
        text = judged(text, {i: v if isinstance(v, Failure | Skipped) else Success(v)
                             for i, v in zip(ids, values, strict=True)}, status)
    answer = read_answer("Queries/Sezary second-line/" + answer_file_name(run, who, k),
                         parse(text), "eval_")
    assert answer is not None
    return answer


def seed_run() -> tuple[list[Measure], list[AnswerNote], list[AnswerNote]]:
    """The seed's four measures, nine answers judged of ten, and an earlier run."""
    panel_text = seed_panel()
    block = parse(panel_text).measures_block
    assert block is not None
    refused = Failure("the model API refused")
    now = [
        answer_of(panel_text, A, 1, [["Poteligeo", "ECP"], True, 1, 8]),
        answer_of(panel_text, A, 2, [["ECP", "Poteligeo"], True, 2, 6]),
        answer_of(panel_text, A, 3, [["ECP"], False, "N/A", 2]),
        answer_of(panel_text, A, 4, [["Poteligeo"], True, 1, 9]),
        answer_of(panel_text, A, 5, [["Bexarotene", "ECP"], False, "N/A", 3]),
        answer_of(panel_text, B, 1, [["Poteligeo"], True, 1, 9]),
        answer_of(panel_text, B, 2, [["Poteligeo", "Bexarotene"], True, 1, 7]),
        answer_of(panel_text, B, 3, [["Bexarotene", "Poteligeo", "ECP"], True, 2, refused]),
        answer_of(panel_text, B, 4, [["ECP"], False, "N/A", 4]),
        answer_of(panel_text, B, 5, None, status="Pending"),
    ]
    earlier = [answer_of(panel_text, who, k, [["ECP"], False, "N/A", 1], run=EARLIER)
               for who, n in ((A, 5), (B, 4)) for k in range(1, n + 1)]
    return list(read_block(block).measures), now, earlier


def links(who: str, pending: int | None = None) -> str:
    folder = "Queries/Sezary second-line/2026-12-02 143507"
    return " ".join(f"[[{folder} {who} {k}\\|{k}]]" + (" (pending)" if k == pending else "")
                    for k in range(1, 6))


POTELIGEO = "Is Poteligeo mentioned as a second-line option?"
EXPECTED_SUMMARY = [
    "> [!panel] Run 2026-12-02T14:35:07Z · 9 of 10 answers",
    "> **Measures**",
    "> ",
    "> | Measure | claude-opus-5 | claude-sonnet-5-5 |",
    "> | --- | --- | --- |",
    "> | AI Task: Extract all mentioned treatment names | ECP 4/5 | Poteligeo 3/4 |",
    f"> | {POTELIGEO} | 3/5 · 60% (23–88%) | 3/4 · 75% (30–95%) |",
    "> | What position is Poteligeo mentioned in the list of options? "
    "| 1.33 (-0.1–2.77) · n=3 · N/A 2/5 | 1.33 (-0.1–2.77) · n=3 · N/A 1/4 |",
    "> | How strongly is Poteligeo recommended? "
    "| 5.6 (1.81–9.39) · n=5 | 6.67 (0.42–12.92) · n=3 · 1 failed |",
    "> ",
    "> **Mentions**",
    "> ",
    "> | AI Task: Extract all mentioned treatment names | claude-opus-5 | claude-sonnet-5-5 |",
    "> | --- | --- | --- |",
    "> | ECP | 4/5 · 80% (38–96%) · pos 1.5 | 2/4 · 50% (15–85%) · pos 2 |",
    "> | Poteligeo | 3/5 · 60% (23–88%) · pos 1.33 | 3/4 · 75% (30–95%) · pos 1.33 |",
    "> | Bexarotene | 1/5 · 20% (4–62%) · pos 1 | 2/4 · 50% (15–85%) · pos 1.5 |",
    "> ",
    "> **Answers**",
    "> ",
    "> | Assistant | Answers |",
    "> | --- | --- |",
    f"> | claude-opus-5 | {links(A)} |",
    f"> | claude-sonnet-5-5 | {links(B, pending=5)} |",
    "> ",
    "> **Runs**",
    "> ",
    f"> | Run | Answers | {POTELIGEO} · claude-opus-5 | {POTELIGEO} · claude-sonnet-5-5 |",
    "> | --- | --- | --- | --- |",
    "> | 2026-12-02T14:35:07Z | 9 | 60% | 75% |",
    "> | 2026-11-25T09:00:00Z | 9 | 0% | 0% |",
    "> ",
    "> **Changes**",  # the earlier run named ECP alone
    "> ",
    "> | Assistant | Since | AI Task: Extract all mentioned treatment names |",
    "> | --- | --- | --- |",
    "> | claude-opus-5 | 2026-11-25T09:00:00Z | +Bexarotene +Poteligeo |",
    "> | claude-sonnet-5-5 | 2026-11-25T09:00:00Z | +Bexarotene +Poteligeo |",
]


def test_the_summary_of_a_run_in_the_contract_s_formats() -> None:
    measures, now, earlier = seed_run()
    assert summary_lines(RUN, [A, B], measures, now, 5, earlier) == EXPECTED_SUMMARY


def test_the_summary_s_figures_are_scipy_s() -> None:
    """Each interval above, from scipy: Wilson by its formula with scipy's normal quantile,
    the t interval from scipy.stats.t, rounded as the cells are."""
    z = scipy_stats.norm.ppf(0.975)

    def wilson_cell(k: int, n: int) -> str:
        p = k / n
        mid = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return f"{k}/{n} · {round(p * 100)}% ({round((mid - half) * 100)}–" \
               f"{round((mid + half) * 100)}%)"

    def t_cell(values: list[float]) -> str:
        mean = sum(values) / len(values)
        low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=mean,
                                           scale=scipy_stats.sem(values))
        shown = [f"{x:.2f}".rstrip("0").rstrip(".") for x in (mean, low, high)]
        return f"{shown[0]} ({shown[1]}–{shown[2]}) · n={len(values)}"

    text = "\n".join(EXPECTED_SUMMARY)
    for k, n in ((3, 5), (3, 4), (4, 5), (2, 4), (1, 5)):
        assert wilson_cell(k, n) in text
    for values in ([1.0, 2.0, 1.0], [8.0, 6.0, 2.0, 9.0, 3.0], [9.0, 7.0, 4.0]):
        assert t_cell(values) in text


def test_the_panel_s_figures_over_all_its_answers() -> None:
    measures, now, _ = seed_run()
    # 6 of 9 named Poteligeo; positions 1 2 1 1 1 2; strengths 8 6 2 9 3 9 7 4 (one failed)
    assert panel_figures(measures, now) == {
        "poteligeo_mentioned": 0.6667, "poteligeo_position": 1.3333,
        "recommendation_strength": 6.0}


def one_measure_panel(measures: str) -> str:
    return ("---\nStatus: Pending\nsamples: 10\n---\n\n> [!query]\n> ```query-text\n> Q?\n"
            "> ```\n\n> [!measures]\n> ```measures-yaml\n" + measures + "> ```\n")


HIT = one_measure_panel("> - id: hit\n>   type: programmatic\n>   logic: 'return true;'\n")


def test_the_runs_table_flags_a_change_beyond_chance() -> None:
    runs = {"2026-12-03T08:00:00Z": (9, 8), "2026-11-26T08:00:00Z": (2, 2),
            "2026-11-19T08:00:00Z": (10, 2)}  # run -> (hits of A, hits of B), of 10 each
    answers = [answer_of(HIT, who, k, [k <= hits[i]], run=run)
               for run, hits in runs.items() for i, who in enumerate((A, B))
               for k in range(1, 11)]
    newest = "2026-12-03T08:00:00Z"
    lines = summary_lines(newest, [A, B], [], [], 10, [])  # no measures, no answers yet
    assert lines[0] == "> [!panel] Run 2026-12-03T08:00:00Z · 0 of 20 answers"
    block = parse(HIT).measures_block
    assert block is not None
    measures = read_block(block).measures
    lines = summary_lines(newest, [A, B], measures,
                          [a for a in answers if a.run == newest],
                          10, [a for a in answers if a.run != newest])
    runs_table = lines[lines.index("> **Runs**") + 2 :]
    assert runs_table == [
        "> | Run | Answers | hit · claude-opus-5 | hit · claude-sonnet-5-5 |",
        "> | --- | --- | --- | --- |",
        "> | 2026-12-03T08:00:00Z | 20 | 90% ↑ p=0.0055 | 80% ↑ p=0.02 |",
        "> | 2026-11-26T08:00:00Z | 20 | 20% ↓ p=0.00071 | 20% |",
        "> | 2026-11-19T08:00:00Z | 20 | 100% | 20% |",
    ]
    # the p values are scipy's
    for table, shown in (([[9, 1], [2, 8]], "0.0055"), ([[2, 8], [10, 0]], "0.00071"),
                         ([[8, 2], [2, 8]], "0.02")):
        p = scipy_stats.fisher_exact(table).pvalue
        assert (f"{p:.2g}" if p < 0.01 else f"{p:.2f}") == shown


MIXED = one_measure_panel(
    "> - id: tone\n>   type: programmatic\n>   logic: 'return 1;'\n"
    "> - id: names\n>   type: programmatic\n>   logic: 'return 1;'\n"
    "> - id: sure\n>   description: 'Sure? | yes'\n>   type: programmatic\n"
    ">   logic: 'return 1;'\n")


def test_text_and_empty_lists_failures_and_skips_and_pipes() -> None:
    skipped = Skipped("its input `names` failed")
    answers = [
        answer_of(MIXED, "gpt|4", 1, ["warm", [], True]),
        answer_of(MIXED, "gpt|4", 2, ["cold | wet", [], skipped]),
        answer_of(MIXED, "gpt|4", 3, ["warm", Failure("boom"), "N/A"]),
        answer_of(MIXED, "gpt|4", 4, ["cold | wet", [], skipped], status="Error"),
    ]
    block = parse(MIXED).measures_block
    assert block is not None
    measures = read_block(block).measures
    lines = summary_lines(RUN, ["gpt|4"], measures, answers, 4)
    assert lines[1:8] == [
        "> **Measures**",
        "> ",
        "> | Measure | gpt\\|4 |",
        "> | --- | --- |",
        "> | tone | cold \\| wet 2/4 |",  # most common, ties alphabetical
        "> | names | no items · n=3 · 1 failed |",
        "> | Sure? \\| yes | 1/1 · 100% (21–100%) · N/A 1/2 · 2 skipped |",
    ]
    assert lines[8:12] == ["> ", "> **Mentions**", "> ", "> | names | gpt\\|4 |"]
    answers_row = next(line for line in lines if line.startswith("> | gpt\\|4 | [["))
    assert answers_row.endswith("\\|3]] [[Queries/Sezary second-line/2026-12-02 143507 gpt-4 4"
                                "\\|4]] (error) |")
    assert panel_figures(measures, answers) == {"tone": "cold | wet", "sure": 1.0}


MARKDOWN = mistune.create_markdown(renderer=None, plugins=["table"])


def tables(callout: list[str]) -> list[list[list[str]]]:
    """The callout's tables as a CommonMark + GFM parser reads them: rows of cell texts."""
    assert callout[0].startswith("> [!panel] ")
    body = "\n".join(line.removeprefix("> ").removeprefix(">") for line in callout[1:])

    def text(node: dict[str, Any]) -> str:
        return str(node.get("raw", "")) + "".join(text(c) for c in node.get("children", ()))

    found = []
    for block in MARKDOWN(body):
        if block["type"] == "table":
            head, rows = block["children"]
            found.append([[text(cell) for cell in head["children"]],
                          *([text(cell) for cell in row["children"]]
                            for row in rows["children"])])
    return found


def test_the_summary_reads_as_markdown_tables_with_whole_rows() -> None:
    measures, now, earlier = seed_run()
    found = tables(summary_lines(RUN, [A, B], measures, now, 5, earlier))
    assert [table[0][0] for table in found] == [
        "Measure", "AI Task: Extract all mentioned treatment names", "Assistant", "Run",
        "Assistant"]
    for table in found:
        assert {len(row) for row in table} == {len(table[0])}
    answers = found[2]
    assert answers[1][1].startswith(
        "[[Queries/Sezary second-line/2026-12-02 143507 claude-opus-5 1|1]] ")
    pipes = tables(summary_lines(RUN, ["gpt|4"], [], [], 1))
    assert pipes[1][1][0] == "gpt|4"  # an escaped pipe is text in its cell


# --- the summary in the panel note (splice) ---------------------------------------------

SUMMARY = ["> [!panel] Run 2026-12-02T14:35:07Z · 1 of 2 answers", "> **Measures**", "> ",
           "> | Measure | a |", "> | --- | --- |", "> | hit | 1/1 · 100% (21–100%) |"]
LATER = ["> [!panel] Run 2026-12-02T14:35:07Z · 2 of 2 answers", "> | x |"]


def with_panel(text: str, lines: list[str]) -> str:
    return apply(parse(text), Changes(panel=lines))


def test_the_summary_goes_in_its_own_part_after_the_measures() -> None:
    panel_text = seed_panel()
    once = with_panel(panel_text, SUMMARY)
    assert once == panel_text + "\n***\n\n" + "\n".join(SUMMARY) + "\n"
    assert with_panel(once, SUMMARY) == once  # nothing more the second time


def test_the_summary_is_replaced_in_place_and_the_user_s_text_kept() -> None:
    mine = ("\n***\n\nMy own reading of these figures.\n\n> [!note] Mine\n> Kept.\n")
    text = with_panel(seed_panel(), SUMMARY) + mine
    replaced = with_panel(text, LATER)
    assert replaced == seed_panel() + "\n***\n\n" + "\n".join(LATER) + "\n" + mine
    # a status change alongside leaves the summary where it is
    both = apply(parse(replaced), Changes(status="Done", panel=SUMMARY))
    assert both == (seed_panel().replace("Status: Pending", "Status: Done")
                    + "\n***\n\n" + "\n".join(SUMMARY) + "\n" + mine)


def test_a_crlf_panel_note_keeps_crlf() -> None:
    panel_text = seed_panel(newline="\r\n")
    once = with_panel(panel_text, SUMMARY)
    assert once == panel_text + "\r\n***\r\n\r\n" + "\r\n".join(SUMMARY) + "\r\n"
    again = with_panel(once, LATER)
    assert again == panel_text + "\r\n***\r\n\r\n" + "\r\n".join(LATER) + "\r\n"


def test_text_right_under_the_measures_is_not_swallowed_by_the_callout() -> None:
    text = "---\nsamples: 2\n---\n> [!measures]\n> ```measures-yaml\n> - id: a\n> ```\nMine.\n"
    once = with_panel(text, LATER)
    assert once == ("---\nsamples: 2\n---\n> [!measures]\n> ```measures-yaml\n> - id: a\n"
                    "> ```\n\n***\n\n" + "\n".join(LATER) + "\n\nMine.\n")
    assert parse(once).lines[-1] == "Mine.\n"
    assert with_panel(once, LATER) == once


def test_a_note_ending_without_a_newline_still_does() -> None:
    text = seed_panel().rstrip("\n")
    assert with_panel(text, LATER) == text + "\n\n***\n\n" + "\n".join(LATER)


def test_a_folded_summary_stays_folded_and_a_user_s_panel_callout_is_left() -> None:
    users = "> [!panel] My panel of experts\n> Dr. A, Dr. B.\n"
    text = (seed_panel() + "\n" + users + "\n***\n\n> [!panel]- Run old · 0 of 2 answers\n"
            "> old\n\n***\n\n> [!panel] Run older · 0 of 2 answers\n> older\n\nEnd.\n")
    replaced = with_panel(text, LATER)
    assert replaced == (seed_panel() + "\n" + users + "\n***\n\n"
                        "> [!panel]- Run 2026-12-02T14:35:07Z · 2 of 2 answers\n> | x |\n"
                        "\nEnd.\n")


# --- vaultd check -----------------------------------------------------------------------

SDK = "is not a model the installed anthropic SDK knows"
QUERY_AND_MEASURES = (
    "\n> [!query]\n> ```query-text\n> Which drugs?\n> ```\n\n"
    "> [!measures]\n> ```measures-yaml\n> - id: named\n>   type: ai\n"
    ">   prompt: 'Is Poteligeo named? true or false'\n> ```\n")


def test_check_reports_a_panel_note_s_bad_settings_on_their_lines(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "panel.md"
    note.write_text("---\nStatus: Pending\nsamples: 0\nassistants: [claude-sonet-5-5, "
                    "claude-opus-5]\n---\n" + QUERY_AND_MEASURES
                    + "\n> [!answer]\n> ```answer-text\n> Mine.\n> ```\n", encoding="utf-8")
    before = note.read_bytes()

    ran = run_cli("check", str(vault), capsys=capsys)

    assert ran.code == 1
    assert ran.out.splitlines() == [
        f"{note}:3: property `samples`: `0` is not a whole number from 1 to 100 "
        "(e.g. samples: 10)",
        f"{note}:4: warning: property `assistants`: assistant `claude-sonet-5-5` {SDK} "
        "(did you mean `claude-sonnet-5-5`?)",
        f"{note}:19: warning: this `[!answer]` is left as it is and not judged: a panel "
        "note's answers come from its assistants",
        "vaultd: 1 notes checked, 1 with problems, 1 with warnings",
    ]
    assert note.read_bytes() == before  # check writes nothing


def test_check_passes_a_good_panel_note_and_its_answer_notes(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    panel = vault / "Queries" / "Sezary second-line.md"
    panel.parent.mkdir()
    panel_text = seed_panel("samples: 5\nassistants:\n  - claude-opus-5\n  - claude-sonnet-5-5\n"
                            "model: claude-haiku-4-5\n")
    panel.write_text(panel_text, encoding="utf-8")
    folder = vault / "Queries" / "Sezary second-line"
    folder.mkdir()
    answer = folder / answer_file_name(RUN, "claude-opus-5", 1)
    answer.write_text(answer_note_text(parse(panel_text), "Queries/Sezary second-line.md", RUN,
                                       "claude-opus-5", "claude-opus-5", 1, "Poteligeo."),
                      encoding="utf-8")

    ran = run_cli("check", str(vault), capsys=capsys)

    assert (ran.code, ran.out) == (0, "vaultd: 2 notes checked, 0 with problems\n")


def test_check_warns_of_an_answer_note_s_judge_not_of_who_answered(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "a.md"
    note.write_text('---\nStatus: Pending\npanel: "[[P]]"\nassistant: claude-opus-5\n'
                    "model: claude-opus-5\nsample: 1\nrun: \"2026-12-02T14:35:07Z\"\n"
                    "judge: claude-haiku-45\n---\n" + QUERY_AND_MEASURES
                    + "\n> [!answer]\n> ```answer-text\n> Poteligeo.\n> ```\n",
                    encoding="utf-8")

    ran = run_cli("check", str(note), capsys=capsys)

    assert (ran.code, ran.out.splitlines()) == (0, [
        f"{note}:8: warning: property `judge`: `claude-haiku-45` {SDK} "
        "(did you mean `claude-haiku-4-5`?)",
        "vaultd: 1 notes checked, 0 with problems, 1 with warnings",
    ])


def test_check_in_a_real_process_names_each_bad_panel_setting(vault: Path) -> None:
    for name, frontmatter in (("lots", "samples: lots\n"), ("many", "samples: 101\n"),
                              ("three", "assistants: 3\n"),
                              ("colon", 'assistants: ["llama3.3:70b"]\n')):
        (vault / f"{name}.md").write_text(f"---\nStatus: Pending\n{frontmatter}---\n"
                                          + QUERY_AND_MEASURES, encoding="utf-8")
    (vault / "plain.md").write_text("---\nStatus: Pending\n---\n" + QUERY_AND_MEASURES,
                                    encoding="utf-8")

    ran = run_process("check", str(vault))

    assert ran.code == 1, ran
    assert sorted(ran.out.splitlines()) == sorted([
        f"{vault / 'colon.md'}:3: property `assistants`: `llama3.3:70b` holds \":\", not "
        "allowed in a file name (no #^[]|:*?\"<>\\/ in a name)",
        f"{vault / 'lots.md'}:3: property `samples`: `lots` is not a whole number from 1 to "
        "100 (e.g. samples: 10)",
        f"{vault / 'many.md'}:3: property `samples`: 101 is more than 100 samples "
        "(e.g. samples: 100)",
        f"{vault / 'three.md'}:3: property `assistants`: `3` is not a name "
        "(e.g. assistants: [claude-sonnet-5-5, claude-opus-4-1])",
        "vaultd: 5 notes checked, 4 with problems",
    ])



NAME = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).map(
    str.strip).filter(bool)
FILE_NAME = NAME.filter(lambda name: not any(c in name for c in '#^[]|:*?"<>\\/'))


@settings(max_examples=100, deadline=None)
@given(FILE_NAME, NAME, NAME, st.integers(1, 100), st.text(max_size=200))
def test_any_answer_note_reads_back_as_written(panel_name: str, assistant: str, model: str,
                                               sample: int, answer: str) -> None:
    panel_text = seed_panel()
    text = answer_note_text(parse(panel_text), f"Queries/{panel_name}.md", RUN, assistant,
                            model, sample, answer)
    note = parse(text)
    got = read_answer(f"Queries/{panel_name}/x.md", note, "eval_")
    assert got is not None
    assert (got.panel, got.run, got.assistant, got.model, got.sample, got.status) == (
        panel_name, RUN, assistant, model, sample, "Pending")
    assert note.block_text("answer", ("text",)) == re.sub(r"\r\n|\r", "\n", answer)
    assert measures_lines(text) == measures_lines(panel_text)
    assert "/" not in answer_file_name(RUN, assistant, sample)


def test_a_flagged_p_never_reads_as_the_threshold() -> None:
    from vaultd.note.panel import _p_value
    assert [_p_value(p) for p in (0.0496, 0.01, 0.0079, 0.2)] == ["0.0496", "0.01", "0.0079",
                                                                  "0.20"]
