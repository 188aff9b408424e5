"""Results read back out of notes: values typed as they were written, pairs matched to ids."""

from __future__ import annotations

import pytest

from vaultd.note.outcomes import Failure, Skipped, Success
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.note.results import note_results, scalar
from vaultd.note.text import parse

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
    assert results.results[3].value == 9 and results.results[1].value is True
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
    assert results.results[0].items == ("x", "y") and results.results[0].value == ("x", "y")
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
