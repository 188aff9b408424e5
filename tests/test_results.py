"""Results read back out of notes: values typed as they were written, pairs matched to ids."""

from __future__ import annotations

import pytest

from vaultd.note.measures import parse_measures
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.properties import property_changes
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.note.results import note_results, scalar
from vaultd.note.splice import Changes, apply
from vaultd.note.text import parse
from vaultd.obsidian.report import Gathered, report_text, summarise

from .notes import SEED


@pytest.mark.parametrize(("text", "value"), [
    ("9", 9), ("-2.5", -2.5), ("1e3", 1000.0), ("true", True), ("false", False),
    ("null", None), ("N/A", "N/A"), ("Poteligeo", "Poteligeo"), (" 9", " 9"), ("9 ", "9 "),
    ('"9"', '"9"'), ("NaN", "NaN"), ("Infinity", "Infinity"), ("007", "007"), ("", ""),
    ("[1,2]", "[1,2]"), ("trueish", "trueish"), ("1e400", "1e400"), ("-1e400", "-1e400"),
])
def test_scalar_reads_what_render_value_wrote(text: str, value: object) -> None:
    got = scalar(text)
    assert got == value and type(got) is type(value)


def test_the_seed_notes_results_are_matched_to_their_ids() -> None:
    results = note_results("seed.md", parse(SEED))
    assert [(r.measure, r.text, r.state) for r in results.results] == [
        ("mentioned_treatments", "Poteligeo", "ok"),
        ("poteligeo_mentioned", "true", "ok"),
        ("poteligeo_position", "1", "ok"),
        ("recommendation_strength", "9", "ok"),
    ]
    # The seed has no properties: nothing recorded a type, so its results are text.
    assert results.results[3].value == "9" and results.results[1].value == "true"
    assert results.unmatched == 0 and results.link == "seed"


def _note(measures: list[tuple[str, str]], pairs: list[list[str]]) -> str:
    lines = ["---", "Status: Done", "Evaluated: 2025-03-04T05:06:07", "---", "",
             "> [!measures]", "> ```measures-md"]
    for measure_id, description in measures:
        lines += ["> * ---", f">   * id: {measure_id}", f'>   * description: "{description}"',
                  ">   * type: programmatic", ">   * logic: 'return 1;'"]
    lines += ["> ```", "", *evaluation_block(pairs), ""]
    return "\n".join(lines)


def test_same_labels_are_told_apart_by_order_and_strays_are_counted() -> None:
    text = _note(
        [("a", "Same"), ("b", "Same"), ("c", "Other")],
        [evaluation_pair("Same", "programmatic", Success(["x", "y"])),
         evaluation_pair("Same", "programmatic", Failure("boom")),
         evaluation_pair("Gone", "programmatic", Success(1)),
         evaluation_pair("Other", "programmatic", Skipped("input `b` failed"))],
    )
    results = note_results("dir/n.md", parse(text))
    assert [(r.measure, r.state) for r in results.results] == [
        ("a", "ok"), ("b", "error"), ("c", "skipped")]
    # No property recorded a list: two lines of text are one value.
    assert results.results[0].items == ("x\ny",) and results.results[0].value == "x\ny"
    assert results.results[1].text == "Error: boom"
    assert results.unmatched == 1
    assert results.evaluated == "2025-03-04T05:06:07" and results.month == "2025-03"
    assert results.link == "dir/n"


def test_figures_of_the_largest_numbers_do_not_overflow() -> None:
    from vaultd.obsidian.report import number_figures

    big = [(1.7e308, "1.7e308"), (1.6e308, "1.6e308")]
    figures = number_figures(big)
    assert figures["min"] == "1.6e308" and figures["max"] == "1.7e308"
    assert figures["mean"] == figures["median"] and len(figures["mean"]) == 309


def _run_note(outcomes: dict[str, Outcome], prefix: str = "eval_") -> str:
    """A note as a run leaves it: its evaluation pairs, and its results as properties."""
    text = _note([(m, m) for m in outcomes],
                 [evaluation_pair(m, "programmatic", o) for m, o in outcomes.items()])
    note = parse(text)
    block = note.first("measures").block(("md",))  # type: ignore[union-attr]
    assert block is not None
    measures, _ = parse_measures(block.content, "md", block.first_line + 1)
    props = property_changes(note, prefix, measures, outcomes)
    return apply(note, Changes(properties=props.changes))


OUTCOMES: dict[str, Outcome] = {
    "digits": Success("9"), "nine": Success(9), "lines": Success("one\ntwo"),
    "yes": Success(True), "list": Success(["a", 2]), "none": Success(None),
    "obj": Success({"k": 1}), "bad": Failure("boom"), "errtext": Success("Error: not one"),
}


def test_results_keep_the_type_the_run_recorded() -> None:
    text = _run_note(OUTCOMES)
    assert 'eval_digits: "9"' in text and "eval_nine: 9" in text  # the property's types
    values = {r.measure: r.value for r in note_results("n.md", parse(text)).results}
    assert values == {
        "digits": "9", "nine": 9, "lines": "one\ntwo", "yes": True, "list": ("a", 2),
        "none": None, "obj": '{"k":1}', "bad": None, "errtext": "Error: not one",
    }
    assert type(values["digits"]) is str and type(values["yes"]) is bool
    states = {r.measure: r.state for r in note_results("n.md", parse(text)).results}
    assert states["bad"] == "error" and states["errtext"] == "ok"


def test_a_text_9_is_text_in_the_report_and_many_lines_are_one_value() -> None:
    notes = (note_results("a.md", parse(_run_note({"digits": Success("9"),
                                                   "lines": Success("one\ntwo")}))),
             note_results("b.md", parse(_run_note({"digits": Success("10"),
                                                   "lines": Success("one")}))))
    by_id = {m.id: m for m in summarise(notes)}
    assert by_id["digits"].kind == "text" and not by_id["digits"].numbers
    assert by_id["lines"].counts == {"one\ntwo": 1, "one": 1}
    report = report_text(Gathered(notes))
    assert "| one, two | 1 | 50.0% |" in report  # one value, on one table line


def test_a_property_that_is_not_the_runs_types_nothing() -> None:
    text = _run_note({"nine": Success(9)})
    hand = text.replace("vaultd_properties:\n  - eval_nine\n", "")  # not in the record
    assert hand != text
    [result] = note_results("n.md", parse(hand)).results
    assert result.value == "9"
    edited = text.replace("> 9\n", "> 10\n")  # the result edited: the property is stale
    [result] = note_results("n.md", parse(edited)).results
    assert result.value == "10"
    [result] = note_results("n.md", parse(_run_note({"nine": Success(9)}, "x_")), "x_").results
    assert result.value == 9
