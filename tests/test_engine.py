"""End to end: real notes on disk, the real SDK against the loopback API, the real sandbox."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from .conftest import run_cli, run_process, without_timestamp
from .fakeapi import FakeMessagesAPI, Reply
from .notes import SEED, SEED_REPLIES, note_with_measures, programmatic_note

COMMENT = "Named as the preferred second-line option."
SEED_PROPERTIES = [
    "eval_mentioned_treatments:",
    "  - Poteligeo",
    "eval_poteligeo_mentioned: true",
    "eval_poteligeo_position: 1",
    "eval_recommendation_strength: 9",
    "vaultd_properties:",
    "  - eval_mentioned_treatments",
    "  - eval_poteligeo_mentioned",
    "  - eval_poteligeo_position",
    "  - eval_recommendation_strength",
]


def seed_done() -> str:
    """The seed note as vaultd leaves it (without the Evaluated line, tokens and cost)."""
    properties = "".join(line + "\n" for line in SEED_PROPERTIES)
    done = SEED.replace("Status: Pending\n", "Status: Done\n" + properties, 1)
    return done + f"\n> {COMMENT}"


def answer_rules(api: FakeMessagesAPI) -> None:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)


def test_seed_note_end_to_end(vault: Path, api: FakeMessagesAPI,
                              capsys: pytest.CaptureFixture[str]) -> None:
    note = vault / "seed.md"
    note.write_text(SEED, encoding="utf-8")
    answer_rules(api)

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines() == [
        "done       seed.md: 4 measures",
        "vaultd: 1 notes processed: 1 done",
        # tokens as the loopback API counts them; priced as a sonnet model ($3 / $15 per MTok)
        "vaultd: model: 2 requests (0 from cache), 3,447 tokens in, 21 out, ~$0.0107",
    ]
    after = note.read_text(encoding="utf-8")
    assert without_timestamp(after) == seed_done()
    frontmatter = after.split("\n---\n")[0].splitlines()
    assert frontmatter[:2] == ["---", "Status: Done"]
    assert frontmatter[3:] == ["tokens_in: 3447", "tokens_out: 21", "cost_usd: 0.010656",
                               *SEED_PROPERTIES]
    assert frontmatter[2].startswith("Evaluated: 20")
    assert len(api.message_requests()) == 2
    for request in api.message_requests():
        assert "My Sezary Syndrome" not in request.text  # the query is not the context
        assert "Mogamulizumab (Poteligeo)" in request.text  # the answer is


def test_rerun_replaces_pairs_and_done_notes_are_never_written(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "seed.md"
    note.write_text(SEED, encoding="utf-8")
    answer_rules(api)
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    first = note.read_bytes()
    mtime = note.stat().st_mtime_ns

    ran = run_cli("run", str(vault), "--once", capsys=capsys)  # Done: nothing to do
    assert ran.code == 0
    assert ran.out.strip() == "vaultd: 0 notes processed"
    assert note.read_bytes() == first and note.stat().st_mtime_ns == mtime

    note.write_bytes(first.replace(b"Status: Done", b"Status: Pending"))
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    after = note.read_text(encoding="utf-8")
    assert after.count("> [!evaluation]") == 4
    assert after.count("> [!evaluation-result]") == 4
    assert without_timestamp(after) == seed_done()


def test_bytes_vaultd_does_not_own_are_kept(vault: Path, api: FakeMessagesAPI,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    before = (
        "---\r\n"
        "title: Ünïcødé  \r\n"
        "# a comment the user keeps\r\n"
        "status: pending   # set me back to Pending to re-run\r\n"
        "tags:\r\n"
        "  - drugs\r\n"
        "---\r\n"
        "# Heading with trailing spaces   \r\n"
        "Prose before, with a [[link]] and ![[embed.png]].\r\n"
        "\r\n"
        "> [!answer]+ The answer\r\n"
        "> ```answer-text\r\n"
        "> Poteligeo — 日本語 — is named.  \r\n"
        "> ```\r\n"
        "\r\n"
        "Prose between.\t\r\n"
        "\r\n"
        "> [!measures]-\r\n"
        "> ```measures-md\r\n"
        "> * ---\r\n"
        ">   * id: names\r\n"
        ">   * type: ai\r\n"
        ">   * prompt: \"List BRAND NAMES as JSON.\"\r\n"
        "> * ---\r\n"
        ">   * id: count\r\n"
        ">   * type: programmatic\r\n"
        ">   * input: names\r\n"
        ">   * logic: \"return input.length;\"\r\n"
        "> ```\r\n"
        "\r\n"
        "Prose after, the end.  "
    )
    note = vault / "sub folder" / "ünï note.md"
    note.parent.mkdir()
    note.write_bytes(before.encode("utf-8"))
    api.rule("BRAND NAMES", '["Poteligeo", "Adcetris"]')

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    expected = (
        before.replace("status: pending   #", "status: Done   #")
        .replace("---\r\n# Heading", "---\r\n# Heading")
        + "\r\n\r\n***\r\n\r\n"
        "> [!evaluation]\r\n> ```evaluation-yaml\r\n> - measure: \"names\"\r\n>   type: ai\r\n"
        "> ```\r\n\r\n"
        "> [!evaluation-result]\r\n> ```evaluation-result-text\r\n> Poteligeo\r\n> Adcetris\r\n"
        "> ```\r\n\r\n***\r\n\r\n"
        "> [!evaluation]\r\n> ```evaluation-yaml\r\n> - measure: \"count\"\r\n"
        ">   type: programmatic\r\n> ```\r\n\r\n"
        "> [!evaluation-result]\r\n> ```evaluation-result-text\r\n> 2\r\n> ```"
    )
    expected = expected.replace("  - drugs\r\n---", (
        "  - drugs\r\nEvaluated: X\r\neval_names:\r\n  - Poteligeo\r\n  - Adcetris\r\n"
        "eval_count: 2\r\nvaultd_properties:\r\n  - eval_names\r\n  - eval_count\r\n---"))
    got = note.read_bytes().decode("utf-8")
    got = without_timestamp(got).replace("  - drugs\r\neval_", "  - drugs\r\nEvaluated: X\r\neval_")
    assert got == expected


def test_generated_answer_is_written_after_the_query(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "ask.md"
    note.write_text(
        "---\nStatus: Pending\n---\n\n***\n\n> [!query]\n> ```query-text\n"
        "> Which drugs treat Sézary syndrome?\n> ```\n\n***\n\n> [!measures]-\n"
        "> ```measures-yaml\n> - id: length\n>   type: programmatic\n"
        ">   logic: return input.split(' ').length;\n> ```\n",
        encoding="utf-8",
    )
    api.rule("Which drugs treat", "Mogamulizumab works.\n\nAsk your doctor.")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    text = without_timestamp(note.read_text(encoding="utf-8"))
    assert text == (
        "---\nStatus: Done\neval_length: 4\nvaultd_properties:\n  - eval_length\n---\n\n"
        "***\n\n> [!query]\n> ```query-text\n"
        "> Which drugs treat Sézary syndrome?\n> ```\n\n***\n\n"
        "> [!answer]\n> ```answer-text\n> Mogamulizumab works.\n> \n> Ask your doctor.\n> ```\n"
        "\n***\n\n> [!measures]-\n"
        "> ```measures-yaml\n> - id: length\n>   type: programmatic\n"
        ">   logic: return input.split(' ').length;\n> ```\n\n***\n\n"
        "> [!evaluation]\n> ```evaluation-yaml\n> - measure: \"length\"\n>   type: programmatic\n"
        "> ```\n\n> [!evaluation-result]\n> ```evaluation-result-text\n> 4\n> ```\n"
    )
    (request,) = api.message_requests()
    assert request.max_tokens == 4096 and "Which drugs treat" in request.text


def test_no_api_key(vault: Path, no_key: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a key, a note that asks the model waits untouched (its results of an earlier
    run stay); a programmatic one still runs."""
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    (vault / "js.md").write_text(programmatic_note(), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    assert ran.err.count("no API key (set ANTHROPIC_API_KEY)") == 1
    js = (vault / "js.md").read_text(encoding="utf-8")
    assert "Status: Done" in js and "> 23\n> ```" in js
    assert (vault / "seed.md").read_text(encoding="utf-8") == SEED
    assert "waiting    seed.md: no API key (set ANTHROPIC_API_KEY)" in ran.out
    assert "done       js.md: 1 measures" in ran.out
    assert ran.out.splitlines()[-1] == "vaultd: 2 notes processed: 1 done, 1 waiting"


def test_invalid_note_gets_error_callout_and_nothing_else_changes(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    text = note_with_measures([
        "* ---", "  * id: a", "  * type: programmatic", "  * input: b", "  * logic: return 1",
        "* ---", "  * id: b", "  * type: programmatic", "  * input: a", "  * logic: return 2",
        "* ---", "  * id: c", "  * type: ai",
    ])
    note = vault / "bad.md"
    note.write_text(text, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    after = without_timestamp(note.read_text(encoding="utf-8"))
    assert after == text.replace("Status: Pending\n", (
        'Status: Error\nError: "2 problem(s): line 12: the measures form a cycle: a → b → a '
        '(one of them must not take the next as its input)"\n'
    )) + (
        "\n***\n\n> [!error] vaultd could not run this note\n> ```error-text\n"
        "> line 12: the measures form a cycle: a → b → a (one of them must not take the next "
        "as its input)\n"
        "> line 22: measure `c`: an ai measure needs a `prompt` (add `* prompt: \"...\"`, the "
        "instruction to the model)\n> ```\n"
    )
    assert api.requests == []

    # fixed and set to Pending again: the error callout and property go away
    fixed = after.replace("  * input: a", "  * input: answer").replace(
        "  * type: ai", "  * type: programmatic\n>   * logic: return 3").replace(
        "Status: Error", "Status: Pending")
    note.write_text(fixed, encoding="utf-8")
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    final = note.read_text(encoding="utf-8")
    assert "[!error]" not in final and "\nError:" not in final and "Status: Done" in final
    assert final.count("> [!evaluation-result]") == 3


def test_unreadable_note_is_left_alone_and_the_rest_run(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # one of vaultd's notes (a person's non-UTF-8 note with no vaultd parts is left silently)
    latin1 = programmatic_note().replace("---\n\n", "---\nCaf\xe9\n\n", 1).encode("latin-1")
    (vault / "latin1.md").write_bytes(latin1)
    (vault / "good.md").write_text(programmatic_note(), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    assert (vault / "latin1.md").read_bytes() == latin1
    assert f"unreadable {'latin1.md'}: {vault / 'latin1.md'}:4: not UTF-8 text" in ran.out
    assert "Status: Done" in (vault / "good.md").read_text(encoding="utf-8")


def test_javascript_failures_are_measure_errors(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "js.md"
    note.write_text(note_with_measures([
        "* ---", "  * id: spin", "  * type: programmatic", "  * logic: 'while (true) {}'",
        "* ---", "  * id: after", "  * type: programmatic", "  * input: spin",
        "  * logic: return input",
        "* ---", "  * id: broken", "  * type: programmatic", "  * logic: 'return ('",
        "* ---", "  * id: fine", "  * type: programmatic", "  * input: [answer, answer]",
        "  * logic: return input.length",
    ]), encoding="utf-8")
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("js_time_limit = 0.5\n", encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    text = note.read_text(encoding="utf-8")
    results = [block.split("\n> ```")[0] for block in text.split("evaluation-result-text\n> ")[1:]]
    assert results == [
        "Error: time limit exceeded (0.5 s)",
        "Skipped: input `spin` failed",
        "Error: SyntaxError: unexpected token in expression: '}'",
        "2",
    ]
    assert "Status: Error" in text


def test_model_errors_are_measure_errors(vault: Path, api: FakeMessagesAPI,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    api.rule("ALPHA", Reply(status=400, body={"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: too large"}}))
    api.rule("BETA", Reply(text='{"response": [1, 2', stop_reason="max_tokens"))
    api.rule("GAMMA", Reply(text=""))
    (vault / "n.md").write_text(note_with_measures([
        "* ---", "  * id: alpha", "  * type: ai", "  * prompt: ALPHA",
        "* ---", "  * id: beta", "  * type: ai", "  * prompt: BETA", "  * max_tokens: 7",
        "* ---", "  * id: gamma", "  * type: ai", "  * prompt: GAMMA",
    ]), encoding="utf-8")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 1

    text = (vault / "n.md").read_text(encoding="utf-8")
    assert "> Error: model API error 400: max_tokens: too large\n" in text
    assert "> Error: the reply was cut off at max_tokens (7); raise max_tokens\n" in text
    assert "> Error: the model returned an empty reply\n" in text


def test_rate_limited_request_is_retried(vault: Path, api: FakeMessagesAPI,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    api.script([Reply(status=429, headers={"retry-after": "0"}), '["Poteligeo"]'])
    (vault / "n.md").write_text(note_with_measures(
        ["* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES"]), encoding="utf-8")

    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    assert "> Poteligeo\n> ```" in (vault / "n.md").read_text(encoding="utf-8")
    assert len(api.message_requests()) == 2


def test_user_edit_during_a_run_wins(vault: Path, api: FakeMessagesAPI,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    note = vault / "n.md"
    note.write_text(note_with_measures(
        ["* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES"]), encoding="utf-8")
    api.rule("BRAND NAMES", Reply(text='["Poteligeo"]', delay=1.0))

    def edit_while_the_model_thinks() -> None:
        assert api.wait_for_requests(1, timeout=60)
        text = note.read_text(encoding="utf-8")
        note.write_text(text.replace("> [!answer]", "My own words.\n\n> [!answer]"),
                        encoding="utf-8")

    editor = threading.Thread(target=edit_while_the_model_thinks)
    editor.start()
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    editor.join(60)

    assert ran.code == 0
    text = note.read_text(encoding="utf-8")
    assert "My own words.\n\n> [!answer]" in text
    assert "Status: Done" in text and "> Poteligeo\n> ```" in text
    assert len(api.message_requests()) == 1


def test_changed_measures_during_a_run_start_it_over(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "n.md"
    note.write_text(note_with_measures(
        ["* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES"]), encoding="utf-8")
    api.rule("BRAND NAMES", Reply(text='["Poteligeo"]', delay=1.0))
    api.rule("GENERIC NAMES", '["mogamulizumab"]')

    def edit_while_the_model_thinks() -> None:
        assert api.wait_for_requests(1, timeout=60)
        text = note.read_text(encoding="utf-8")
        note.write_text(text.replace("BRAND NAMES", "GENERIC NAMES"), encoding="utf-8")

    editor = threading.Thread(target=edit_while_the_model_thinks)
    editor.start()
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    editor.join(60)

    text = note.read_text(encoding="utf-8")
    assert "> mogamulizumab\n> ```" in text and "Poteligeo\n> ```" not in text
    assert [("GENERIC" in r.text) for r in api.message_requests()] == [False, True]


def test_check_reports_file_and_line(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = vault / "bad.md"
    bad.write_text(note_with_measures(["* ---", "  * id: a", "  * type: ai"]),
                   encoding="utf-8")
    (vault / "good.md").write_text(programmatic_note(), encoding="utf-8")
    (vault / "plain.md").write_text("# just a note\n", encoding="utf-8")
    before = bad.read_bytes()

    ran = run_cli("check", str(vault), capsys=capsys)

    assert ran.code == 1
    assert ran.out.splitlines() == [
        f'{bad}:12: measure `a`: an ai measure needs a `prompt` (add `* prompt: "..."`, the '
        "instruction to the model)",
        "vaultd: 2 notes checked, 1 with problems",
    ]
    assert bad.read_bytes() == before
    assert run_cli("check", str(vault / "good.md"), capsys=capsys).code == 0


def test_bad_usage_exits_2(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("run", str(vault / "missing"), "--once", capsys=capsys).code == 2
    with pytest.raises(SystemExit) as caught:
        run_cli("frobnicate", capsys=capsys)
    assert caught.value.code == 2
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("concurrency = 0\nbogus = 1\n")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 2
    assert f"{vault}/.vaultd/config.toml:1: concurrency: Input should be greater than or equal " \
           "to 1" in ran.err
    assert f"{vault}/.vaultd/config.toml:2: bogus: unknown setting" in ran.err


def test_crash_mid_write_then_restart_finishes_the_note(vault: Path, no_key: None) -> None:
    note = vault / "js.md"
    original = programmatic_note()
    note.write_text(original, encoding="utf-8")

    crashed = run_process("run", str(vault), "--once", env={"VAULTD_CRASH_AT": "mid_write"})
    assert crashed.code == 70, crashed
    torn = note.read_bytes()
    assert torn != original.encode()  # the crash really tore the note

    ran = run_process("run", str(vault), "--once")
    assert ran.code == 0, ran
    text = note.read_text(encoding="utf-8")
    assert "Status: Done" in text and "> 23\n> ```" in text
    assert text.count("[!evaluation]") == 1
    journal = vault / ".vaultd" / "journal"
    assert [p for p in journal.iterdir() if p.stat().st_size] == []  # only free slots left


def test_relative_vault_path(vault: Path, no_key: None, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (vault / "js.md").write_text(programmatic_note(), encoding="utf-8")
    monkeypatch.chdir(vault.parent)

    ran = run_cli("run", vault.name, "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines() == ["done       js.md: 1 measures",
                                    "vaultd: 1 notes processed: 1 done"]
    assert "Status: Done" in (vault / "js.md").read_text(encoding="utf-8")


def test_status_without_a_daemon(vault: Path, api: FakeMessagesAPI,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    (vault / "later.md").write_text(programmatic_note(), encoding="utf-8")
    answer_rules(api)
    assert run_cli("run", str(vault / "..") + "/vault", "--once", capsys=capsys).code == 0
    (vault / "later.md").write_text(programmatic_note(), encoding="utf-8")

    ran = run_cli("status", str(vault), capsys=capsys)

    assert ran.code == 0
    assert ran.out.splitlines() == [
        "1 pending, 0 processing, 1 done, 0 error",
        "daemon: not running",
        "model use: 3,447 tokens in, 21 out, ~$0.0107 over 1 notes (last runs)",
    ]
