"""A note's own settings (model, answer_model, max_tokens, answer_max_tokens, cache), end to
end: the request the loopback API receives uses them, and a bad one is a located problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultd.errors import FormatError
from vaultd.evaluate.prepare import check_note
from vaultd.note.overrides import Overrides, read_overrides
from vaultd.note.text import parse

from .conftest import run_cli
from .fakeapi import FakeMessagesAPI


def ai_note(properties: str, measure_extra: str = "") -> str:
    return (
        f"---\nStatus: Pending\n{properties}---\n\n"
        "> [!answer]\n> ```answer-text\n> Poteligeo is named.\n> ```\n\n"
        "> [!measures]\n> ```measures-md\n> * ---\n>   * id: names\n>   * type: ai\n"
        f">   * prompt: BRAND NAMES{measure_extra}\n> ```\n"
    )


def test_a_note_s_model_and_max_tokens_reach_the_api(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.rule("BRAND NAMES", '["Poteligeo"]')
    (vault / "n.md").write_text(ai_note("model: claude-haiku-4-5\nMax_Tokens: 77\n"),
                                encoding="utf-8")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    (request,) = api.message_requests()
    assert (request.model, request.max_tokens) == ("claude-haiku-4-5", 77)


def test_a_measure_s_own_max_tokens_wins_over_the_note_s(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.rule("BRAND NAMES", '["Poteligeo"]')
    (vault / "n.md").write_text(ai_note("max_tokens: 77\n", "\n>   * max_tokens: 55"),
                                encoding="utf-8")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    (request,) = api.message_requests()
    assert (request.model, request.max_tokens) == ("claude-sonnet-5-5", 55)


def test_a_note_s_answer_model_and_answer_max_tokens_write_its_answer(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.rule("Which drugs", "Mogamulizumab.")
    (vault / "ask.md").write_text(
        "---\nStatus: Pending\nanswer_model: claude-opus-4-1\nanswer_max_tokens: 300\n---\n\n"
        "> [!query]\n> ```query-text\n> Which drugs?\n> ```\n\n"
        "> [!measures]\n> ```measures-md\n> * ---\n>   * id: n\n>   * type: programmatic\n"
        ">   * logic: return input.length\n> ```\n", encoding="utf-8")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    (request,) = api.message_requests()
    assert (request.model, request.max_tokens) == ("claude-opus-4-1", 300)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_tokens: lots", "property `max_tokens`: `lots` is not a whole number above 0 "
                             "(e.g. max_tokens: 1024)"),
        ('max_tokens: "1024"', "property `max_tokens`: `1024` is not a whole number above 0 "
                               "(write the number without quotes)"),
        ("answer_max_tokens: 0", "property `answer_max_tokens`: `0` is not a whole number "
                                 "above 0 (e.g. answer_max_tokens: 1024)"),
        ("max_tokens: 1.5", "property `max_tokens`: `1.5` is not a whole number above 0 "
                            "(e.g. max_tokens: 1024)"),
        ("model: 7", "property `model`: `7` is not a model name "
                     "(e.g. model: claude-sonnet-5-5)"),
        ("model: [a, b]", 'property `model`: `["a", "b"]` is not a model name '
                          "(e.g. model: claude-sonnet-5-5)"),
        ("cache: sometimes", "property `cache`: `sometimes` is not true or false "
                             "(e.g. cache: false)"),
        ("max_tokens: [1", 'property `max_tokens`: not a valid YAML value (put text in double '
                           'quotes: "...")'),
    ],
)
def test_a_bad_override_is_a_problem_on_its_line(line: str, message: str) -> None:
    note = parse(ai_note(f"title: t\n{line}\n"))
    with pytest.raises(FormatError) as caught:
        check_note(note)
    assert [(p.line, p.text) for p in caught.value.problems] == [(4, message)]


@pytest.mark.parametrize("line", ["max_tokens:", "model: ''", "max_tokens: null", "title: x"])
def test_an_empty_override_leaves_the_vault_s_setting(line: str) -> None:
    overrides, problems = read_overrides(parse(ai_note(f"{line}\n")))
    assert (overrides, problems) == (Overrides(), [])


def test_a_bad_override_is_reported_by_check_and_is_a_note_error_not_a_crash(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "n.md"
    text = ai_note("max_tokens: lots   # how many?\n")
    note.write_text(text, encoding="utf-8")

    ran = run_cli("check", str(note), capsys=capsys)
    assert ran.code == 1
    assert ran.out.splitlines() == [
        f"{note}:3: property `max_tokens`: `lots` is not a whole number above 0 "
        "(e.g. max_tokens: 1024)",
        "vaultd: 1 notes checked, 1 with problems",
    ]

    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 1
    assert ran.out.splitlines()[0] == (
        "error      n.md: 1 problem(s): line 3: property `max_tokens`: `lots` is not a whole "
        "number above 0 (e.g. max_tokens: 1024)")
    after = note.read_text(encoding="utf-8")
    assert after.startswith("---\nStatus: Error\nmax_tokens: lots   # how many?\n")
    assert after.endswith(
        "> [!error] vaultd could not run this note\n> ```error-text\n"
        "> line 3: property `max_tokens`: `lots` is not a whole number above 0 "
        "(e.g. max_tokens: 1024)\n> ```\n")
    assert api.requests == []
