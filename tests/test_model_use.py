"""How vaultd uses the model across notes and runs: the cache, shared requests, the limit,
prompt caching and cost, through the command line and the loopback Messages API."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli, without_timestamp
from .fakeapi import FakeMessagesAPI, Reply, estimate_tokens
from .notes import SEED, SEED_REPLIES, note_with_measures

STRENGTH = "how strongly is 'Poteligeo' recommended"


def answer_seed(api: FakeMessagesAPI) -> None:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)


def set_pending(note: Path) -> None:
    text = note.read_text(encoding="utf-8")
    assert "Status: Done" in text
    note.write_text(text.replace("Status: Done", "Status: Pending", 1), encoding="utf-8")


def seed_run_once(vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str],
                  seed: str = SEED, *flags: str) -> Path:
    """The seed note in the vault, run once to Done with the seed's replies."""
    answer_seed(api)
    note = vault / "seed.md"
    note.write_text(seed, encoding="utf-8")
    assert run_cli("run", str(vault), "--once", *flags, capsys=capsys).code == 0
    return note


def prompts(api: FakeMessagesAPI) -> list[str]:
    return [r.json["messages"][0]["content"][-1]["text"] for r in api.message_requests()]


def test_unchanged_rerun_makes_no_request(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = seed_run_once(vault, api, capsys)
    first = note.read_text(encoding="utf-8")
    assert len(api.message_requests()) == 2

    set_pending(note)
    again = run_cli("run", str(vault), "--once", capsys=capsys)

    assert again.code == 0, again
    assert len(api.message_requests()) == 2  # nothing new was asked
    assert without_timestamp(note.read_text(encoding="utf-8")) == without_timestamp(first)
    assert "0 requests (2 from cache)" in again.out.splitlines()[-1]
    assert "\ntokens_in: 0\ntokens_out: 0\ncost_usd: 0\n" in note.read_text(encoding="utf-8")


def test_changed_prompt_asks_only_that_measure(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    note = seed_run_once(vault, api, capsys)
    before = len(api.message_requests())
    api.clear_rules()
    api.rule("On a scale of 1 to 5", '{"response": 4, "comment": "Rescaled."}')
    answer_seed(api)

    text = note.read_text(encoding="utf-8").replace("Status: Done", "Status: Pending", 1)
    note.write_text(text.replace("On a scale of 1 (mentioned in passing) to 10",
                                 "On a scale of 1 to 5", 1), encoding="utf-8")
    again = run_cli("run", str(vault), "--once", capsys=capsys)

    assert again.code == 0, again
    new = prompts(api)[before:]
    assert len(new) == 1 and new[0].startswith("On a scale of 1 to 5")
    text = note.read_text(encoding="utf-8")
    assert "> 4\n> ```\n> Rescaled." in text and "> 9\n" not in text


@pytest.mark.parametrize("how", ["--no-cache", "Cache: false"])
def test_the_cache_can_be_bypassed(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    seed = SEED if how == "--no-cache" else SEED.replace("---\n", "---\nCache: false\n", 1)
    flags = ["--no-cache"] if how == "--no-cache" else []
    note = seed_run_once(vault, api, capsys, seed, *flags)
    set_pending(note)
    assert run_cli("run", str(vault), "--once", *flags, capsys=capsys).code == 0
    assert len(api.message_requests()) == 4  # asked again, both times


def test_notes_sharing_a_request_make_one(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same measures over the same answer in five notes: each request goes out once."""
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, Reply(text=reply, delay=0.3))  # all in flight at the same moment
    for number in range(5):
        (vault / f"copy{number}.md").write_text(SEED, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert len(api.message_requests()) == 2
    done = {(vault / f"copy{n}.md").read_text(encoding="utf-8") for n in range(5)}
    assert len({without_timestamp(text) for text in done}) == 1
    assert "2 requests (8 from cache)" in ran.out.splitlines()[-1]


def test_requests_in_flight_never_exceed_the_limit(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.default = Reply(text='"ok"', delay=0.2)
    lines = ["* ---", "  * id: a", "  * type: ai", "  * prompt: first question",
             "* ---", "  * id: b", "  * type: ai", "  * prompt: second question"]
    for number in range(12):
        (vault / f"n{number}.md").write_text(
            note_with_measures(lines, answer=f"Answer {number}."), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--concurrency", "3", "--workers", "12",
                  capsys=capsys)

    assert ran.code == 0, ran
    assert len(api.message_requests()) == 24
    assert api.max_in_flight == 3  # reached, never exceeded


def test_shared_context_is_a_cacheable_prefix(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed's two ai measures read the same answer: it goes first, marked cacheable."""
    answer_seed(api)
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    single = ["* ---", "  * id: only", "  * type: ai", "  * prompt: one question"]
    (vault / "single.md").write_text(note_with_measures(single), encoding="utf-8")
    api.rule("one question", '"fine"')
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0

    for request in api.message_requests():
        context, prompt = request.json["messages"][0]["content"]
        assert context["text"].startswith("<context>\n")
        if prompt["text"] == "one question":
            assert "cache_control" not in context
        else:
            assert context["cache_control"] == {"type": "ephemeral"}


def test_cost_properties_and_run_totals(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    answer_seed(api)
    note = vault / "seed.md"
    note.write_text(SEED, encoding="utf-8")
    config = vault / ".vaultd" / "config.toml"
    config.parent.mkdir()
    config.write_text('[prices.claude-sonnet-5-5]\ninput = 3.0\noutput = 15.0\n',
                      encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    requests = api.message_requests()
    tokens_in = sum(estimate_tokens(r.text) for r in requests)  # what the server billed
    tokens_out = sum(estimate_tokens(reply) for reply in SEED_REPLIES.values())
    text = note.read_text(encoding="utf-8")
    props = dict(line.split(": ", 1) for line in text.split("---\n")[1].splitlines()
                 if ": " in line)
    assert (int(props["tokens_in"]), int(props["tokens_out"])) == (tokens_in, tokens_out)
    expected = (tokens_in * 3.0 + tokens_out * 15.0) / 1_000_000
    assert float(props["cost_usd"]) == pytest.approx(expected, abs=1e-6)
    total = ran.out.splitlines()[-1]
    assert f"{tokens_in:,} tokens in, {tokens_out:,} out, ~${expected:.4f}" in total
