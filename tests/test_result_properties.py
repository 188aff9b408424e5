"""Results as properties: typed YAML, only vaultd's keys, edited line by line.

Every written note is read back with the real YAML parser (``yaml.safe_load``), and the
values must come back with the Python types the measures returned.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.note.measures import Measure
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.properties import (
    RECORD_KEY,
    collisions,
    property_changes,
    property_key,
    yaml_value,
)
from vaultd.note.splice import Changes, apply
from vaultd.note.text import parse

from .conftest import run_cli
from .fakeapi import FakeMessagesAPI
from .notes import note_with_measures


def frontmatter(text: str) -> dict[str, Any]:
    """The note's frontmatter as YAML reads it."""
    lines = text.splitlines()
    end = lines.index("---", 1)
    loaded = yaml.safe_load("\n".join(lines[1:end]))
    assert isinstance(loaded, dict)
    return loaded


def read_back(text: str) -> Any:
    return yaml.safe_load(f"k: {text}\n")["k"]


def same(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            same(g, w) for g, w in zip(got, want, strict=True))
    return type(got) is type(want) and got == want


def measure(measure_id: str, line: int = 20) -> Measure:
    return Measure(id=measure_id, type="programmatic", logic="return 1", line=line)


# -- the YAML of one value -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (9, "9"),
        (-3, "-3"),
        (0.5, "0.5"),
        (1e21, "1.0e+21"),
        (True, "true"),
        (False, "false"),
        ("Poteligeo", "Poteligeo"),
        ("N/A", "N/A"),
        ("two words", "two words"),
        ("日本語 — ok", "日本語 — ok"),
        ("yes", '"yes"'),
        ("No", '"No"'),
        ("1.0", '"1.0"'),
        ("42", '"42"'),
        ("1e3", '"1e3"'),  # a string in YAML 1.1, a number in YAML 1.2 (Obsidian)
        ("0o17", '"0o17"'),  # likewise
        ("null", '"null"'),
        ("~", '"~"'),
        ("", '""'),
        ("2024-01-01", '"2024-01-01"'),
        ("12:30", '"12:30"'),
        ("a: b", '"a: b"'),
        ("a #b", '"a #b"'),
        ("#tag", '"#tag"'),
        ("[[Link]]", '"[[Link]]"'),
        ("- item", '"- item"'),
        ("@x", '"@x"'),
        (" padded", '" padded"'),
        ("two\nlines", '"two\\nlines"'),
        ("tab\there", '"tab\\there"'),
        ('say "hi"', 'say "hi"'),
        ('"quoted"', '"\\"quoted\\""'),
        (["Poteligeo", "Adcetris"], "\n  - Poteligeo\n  - Adcetris"),
        ([1, True, "yes", 2.5], '\n  - 1\n  - true\n  - "yes"\n  - 2.5'),
        ([], "[]"),
    ],
)
def test_values_are_typed_as_yaml_reads_them(value: Any, text: str) -> None:
    assert yaml_value(value) == text
    assert same(read_back(text), value)


@pytest.mark.parametrize("value", [None, {"a": 1}, [[1]], [None], [{"a": 1}], math.nan, math.inf])
def test_other_values_are_not_properties(value: Any) -> None:
    assert yaml_value(value) is None


SCALARS = st.one_of(
    st.text(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@given(st.one_of(SCALARS, st.lists(SCALARS, max_size=5)))
@settings(max_examples=300, deadline=None)
def test_every_scalar_and_list_reads_back_as_itself(value: Any) -> None:
    text = yaml_value(value)
    assert text is not None
    assert same(read_back(text), value)
    if isinstance(value, list) and value:
        assert all(line.startswith("  - ") for line in text.split("\n")[1:])
    else:
        assert "\n" not in text


OUTCOMES = st.one_of(
    SCALARS.map(Success),
    st.lists(SCALARS, max_size=3).map(Success),
    st.sampled_from([Success(None), Success({"a": 1}), Failure("boom"), Skipped("why")]),
)
USER_LINES = st.sampled_from([
    "title: t", "# a comment", "tags:\n  - a\n  - b", "eval_a: mine", "Eval_B: 1  # x",
    "aliases: []", "desc: |\n  two\n  lines", "",
])


@given(st.lists(USER_LINES, max_size=5),
       st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), OUTCOMES, max_size=4),
       st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), OUTCOMES, max_size=4),
       st.sampled_from(["\n", "\r\n"]))
@settings(max_examples=150, deadline=None)
def test_writing_properties_twice_changes_nothing_more(
    user: list[str], first: dict[str, Outcome], second: dict[str, Outcome], newline: str
) -> None:
    text = "---\nStatus: Pending\n" + "".join(line + "\n" for line in user) + "---\nBody\n"
    text = text.replace("\n", newline)
    once, _ = run(text, first)
    twice, _ = run(once, first)
    assert twice == once
    later, _ = run(once, second)
    props = frontmatter(later.replace("\r\n", "\n"))
    for line in user:  # the user's properties are all still there, as they were
        assert line.replace("\n", newline) + newline in later
    written = props.get(RECORD_KEY, [])
    for measure_id, outcome in second.items():
        key = f"eval_{measure_id}"
        if key in written:
            assert isinstance(outcome, Success) and same(props[key], outcome.value)
    user_keys = {line.split(":")[0] for line in user if ":" in line}
    assert {key for key in props if key.lower().startswith("eval_")} <= {*written, *user_keys}


def test_keys_are_prefix_and_id() -> None:
    assert property_key("eval_", "poteligeo_position") == "eval_poteligeo_position"
    assert property_key("eval_", "odd.id with space") == "eval_odd_id_with_space"


# -- which keys are vaultd's -----------------------------------------------------------

NOTE = (
    "---\n"
    "title: My note   # the user's\n"
    "# a comment between properties\n"
    "Status: Pending\n"
    "tags:\n"
    "  - medicine\n"
    "---\n"
    "Body.\n"
)


def run(text: str, outcomes: dict[str, Outcome], prefix: str = "eval_") -> tuple[str, Any]:
    note = parse(text)
    measures = [measure(measure_id) for measure_id in outcomes]
    changes = property_changes(note, prefix, measures, outcomes)
    return apply(note, Changes(status="Done", properties=changes.changes)), changes.collisions


def test_results_are_written_typed_after_the_user_s_properties() -> None:
    text, found = run(NOTE, {
        "names": Success(["Poteligeo", "Adcetris"]),
        "mentioned": Success(True),
        "position": Success(1),
        "strength": Success(8.5),
        "verdict": Success("yes"),
        "none": Success([]),
    })
    assert found == ()
    assert text == (
        "---\ntitle: My note   # the user's\n# a comment between properties\nStatus: Done\n"
        "tags:\n  - medicine\n"
        "eval_names:\n  - Poteligeo\n  - Adcetris\n"
        "eval_mentioned: true\neval_position: 1\neval_strength: 8.5\neval_verdict: \"yes\"\n"
        "eval_none: []\n"
        "vaultd_properties:\n  - eval_names\n  - eval_mentioned\n  - eval_position\n"
        "  - eval_strength\n  - eval_verdict\n  - eval_none\n"
        "---\nBody.\n"
    )
    assert frontmatter(text) == {
        "title": "My note", "Status": "Done", "tags": ["medicine"],
        "eval_names": ["Poteligeo", "Adcetris"], "eval_mentioned": True, "eval_position": 1,
        "eval_strength": 8.5, "eval_verdict": "yes", "eval_none": [],
        RECORD_KEY: ["eval_names", "eval_mentioned", "eval_position", "eval_strength",
                     "eval_verdict", "eval_none"],
    }


def test_a_failed_skipped_or_null_measure_has_no_property() -> None:
    first, _ = run(NOTE, {"a": Success(1), "b": Success("x"), "c": Success(True),
                          "d": Success(None)})
    assert frontmatter(first)[RECORD_KEY] == ["eval_a", "eval_b", "eval_c"]
    again, _ = run(first, {"a": Failure("boom"), "b": Skipped("input `a` failed"),
                           "c": Success(False), "d": Success({"x": 1})})
    props = frontmatter(again)
    assert "eval_a" not in props and "eval_b" not in props and "eval_d" not in props
    assert props["eval_c"] is False and props[RECORD_KEY] == ["eval_c"]
    none, _ = run(again, {"c": Failure("boom")})
    assert none == NOTE.replace("Status: Pending", "Status: Done")


def test_a_user_property_with_a_measure_s_key_is_never_overwritten() -> None:
    text = NOTE.replace("tags:", "EVAL_Score: 10   # my own grade\ntags:")
    written, found = run(text, {"score": Success(3), "other": Success(4)})
    assert "EVAL_Score: 10   # my own grade\n" in written
    assert [(c.key, c.measure_id, c.line) for c in found] == [("EVAL_Score", "score", 5)]
    assert found[0].message == ("measure `score`'s result is not written to `EVAL_Score`: "
                                "a property of yours has that name")
    props = frontmatter(written)
    assert props["EVAL_Score"] == 10 and props["eval_other"] == 4
    assert props[RECORD_KEY] == ["eval_other"]
    # and it stays the user's when the note runs again
    again, found_again = run(written, {"score": Success(5), "other": Success(6)})
    assert "EVAL_Score: 10   # my own grade\n" in again and len(found_again) == 1
    assert collisions(parse(again), "eval_", [measure("score")]) == list(found_again)


def test_vaultd_s_own_keys_and_keys_differing_only_in_case_are_collisions() -> None:
    note = parse(NOTE)
    found = collisions(note, "eval_", [measure("x"), measure("X", 30)])
    assert [(c.key, c.measure_id, c.line) for c in found] == [("eval_X", "X", 30)]
    found = collisions(note, "tokens_", [measure("in")])
    assert [c.why for c in found] == ["vaultd uses that property itself"]


def test_a_removed_measure_s_key_goes_and_nothing_else_does() -> None:
    first, _ = run(NOTE, {"keep": Success(1), "gone": Success(["a", "b"])})
    user_added = first.replace("tags:", "eval_mine: 5\ntags:")
    again, found = run(user_added, {"keep": Success(2)})
    assert found == ()
    assert again == (
        "---\ntitle: My note   # the user's\n# a comment between properties\nStatus: Done\n"
        "eval_mine: 5\ntags:\n  - medicine\neval_keep: 2\n"
        "vaultd_properties:\n  - eval_keep\n---\nBody.\n"
    )


def test_a_changed_prefix_leaves_the_old_keys() -> None:
    """Only recorded keys with the prefix count (a hand-written record must not reach the
    user's keys): after a change of prefix the old keys are the user's to remove."""
    first, _ = run(NOTE, {"a": Success(1)})
    again, _ = run(first, {"a": Success(2)}, prefix="score_")
    props = frontmatter(again)
    assert props["eval_a"] == 1 and props["score_a"] == 2
    assert props[RECORD_KEY] == ["score_a"]


def test_a_block_list_is_replaced_cleanly() -> None:
    text = (
        "---\n"
        "Status: Pending\n"
        "eval_names:   # vaultd's\n"
        "  - old one\n"
        "  - old two\n"
        "\n"
        "# the user's comment about next\n"
        "next:\n"
        "  - kept\n"
        "vaultd_properties:\n"
        "  - eval_names\n"
        "  - eval_count\n"
        "eval_count:\n"
        "- 1\n"
        "- 2\n"
        "after: kept too\n"
        "---\n"
    )
    written, _ = run(text, {"names": Success(["new"]), "count": Success(7)})
    assert written == (
        "---\n"
        "Status: Done\n"
        "eval_names: # vaultd's\n"
        "  - new\n"
        "\n"
        "# the user's comment about next\n"
        "next:\n"
        "  - kept\n"
        "vaultd_properties:\n"
        "  - eval_names\n"
        "  - eval_count\n"
        "eval_count: 7\n"
        "after: kept too\n"
        "---\n"
    )
    listed, _ = run(written, {"names": Success("one"), "count": Success(["a", "b"])})
    assert frontmatter(listed) == {
        "Status": "Done", "eval_names": "one", "next": ["kept"],
        RECORD_KEY: ["eval_names", "eval_count"], "eval_count": ["a", "b"], "after": "kept too",
    }
    assert "eval_names: one # vaultd's\n\n# the user's comment about next\n" in listed


def test_crlf_notes_keep_crlf() -> None:
    crlf = NOTE.replace("\n", "\r\n")
    written, _ = run(crlf, {"names": Success(["a", "b"]), "n": Success(2)})
    assert "\n" not in written.replace("\r\n", "")
    again, _ = run(written, {"names": Success(["c"]), "n": Success(3)})
    assert "\n" not in again.replace("\r\n", "")
    assert "eval_names:\r\n  - c\r\neval_n: 3\r\nvaultd_properties:\r\n" in again
    assert frontmatter(again.replace("\r\n", "\n"))["eval_names"] == ["c"]


def test_a_note_without_frontmatter_gets_none() -> None:
    note = parse("Just text.\n")
    changes = property_changes(note, "eval_", [measure("a")], {"a": Success(1)})
    assert changes.changes == {} and changes.collisions == ()


# -- end to end ------------------------------------------------------------------------


def two_measures(status: str = "Pending") -> str:
    return note_with_measures([
        "* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES",
        "* ---", "  * id: count", "  * type: programmatic", "  * input: names",
        "  * logic: return input.length;",
    ], status=status)


def test_results_as_properties_end_to_end(vault: Path, api: FakeMessagesAPI,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    api.rule("BRAND NAMES", '["Poteligeo", "yes"]')
    note = vault / "n.md"
    note.write_text(two_measures().replace("Status: Pending\n", "Status: Pending\n"
                                           "eval_count: mine\n"), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines()[0] == (
        "done       n.md: 2 measures; measure `count`'s result is not written to `eval_count`: "
        "a property of yours has that name")
    assert "n.md:3: measure `count`'s result is not written to `eval_count`" in ran.err
    props = frontmatter(note.read_text(encoding="utf-8"))
    assert props["eval_names"] == ["Poteligeo", "yes"] and props["eval_count"] == "mine"
    assert props[RECORD_KEY] == ["eval_names"]

    checked = run_cli("check", str(vault), capsys=capsys)
    assert checked.code == 0
    assert checked.out.splitlines() == [
        f"{note}:3: warning: measure `count`'s result is not written to `eval_count`: a "
        "property of yours has that name (rename the property or the measure, or set "
        "property_prefix)",
        "vaultd: 1 notes checked, 0 with problems, 1 with warnings",
    ]


def test_rerun_with_a_measure_removed_removes_its_property(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.rule("BRAND NAMES", '["Poteligeo"]')
    note = vault / "n.md"
    note.write_text(two_measures(), encoding="utf-8")
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    first = note.read_text(encoding="utf-8")
    assert frontmatter(first)[RECORD_KEY] == ["eval_names", "eval_count"]

    edited = first.replace("Status: Done", "Status: Pending").replace(
        ">   * input: names\n>   * logic: return input.length;\n", "").replace(
        "> * ---\n>   * id: count\n>   * type: programmatic\n", "")
    note.write_text(edited, encoding="utf-8")
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    props = frontmatter(note.read_text(encoding="utf-8"))
    assert "eval_count" not in props
    assert props["eval_names"] == ["Poteligeo"] and props[RECORD_KEY] == ["eval_names"]


def test_the_prefix_comes_from_the_vault_s_config(vault: Path, no_key: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text('property_prefix = "score_"\n')
    note = vault / "n.md"
    note.write_text(note_with_measures(
        ["* ---", "  * id: size", "  * type: programmatic", "  * logic: return input.length;"]),
        encoding="utf-8")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    props = frontmatter(note.read_text(encoding="utf-8"))
    assert props["score_size"] == 30 and props[RECORD_KEY] == ["score_size"]
