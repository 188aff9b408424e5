"""The cost of a run before it is spent: the estimate, ``--dry-run`` and ``max_cost_usd``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from vaultd.config import Price, Settings, load
from vaultd.errors import ConfigError
from vaultd.evaluate.estimate import Estimate, estimate_note, over_budget
from vaultd.note.panel import read_panel
from vaultd.note.text import parse
from vaultd.runs.engine import check_note

from .conftest import run_cli, run_process, without_timestamp
from .fakeapi import FakeMessagesAPI
from .notes import SEED

# The seed note's two ai prompts, as written in it.
SEED_PROMPT_1 = ("Based ONLY on the provided context, list all specific prescription medication "
                 "BRAND NAMES or therapies mentioned, in the order they appear. Exclude generic "
                 "names. Your response MUST be a valid JSON array of strings.")
SEED_PROMPT_2 = ("On a scale of 1 (mentioned in passing) to 10 (explicitly recommended as a "
                 "primary choice), how strongly is 'Poteligeo' recommended as an option? Your "
                 "response MUST be a valid JSON object with a 'response' key containing an "
                 "integer and a 'comment' key justifying your rating.")

QUERY = "Which treatments are recommended for relapsed mycosis fungoides?"
PANEL_PROMPT_1 = "List every brand name in the context, in order, as a JSON array."
PANEL_PROMPT_2 = "Is this count above 2? Answer true or false."
PANEL = f"""---
Status: Pending
samples: 5
assistants: [claude-sonnet-5-5, claude-opus-5]
model: claude-haiku-4-5
---

> [!query]
> ```query-text
> {QUERY}
> ```

> [!measures]
> ```measures-md
> * ---
>   * id: brands
>   * type: ai
>   * max_tokens: 300
>   * prompt: "{PANEL_PROMPT_1}"
> * ---
>   * id: count
>   * type: programmatic
>   * input: brands
>   * logic: "return input.length;"
> * ---
>   * id: many
>   * type: ai
>   * input: count
>   * prompt: "{PANEL_PROMPT_2}"
> ```
"""


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def seed_answer() -> str:
    """The seed's answer, cut out of the note by hand (not by vaultd's parser)."""
    body = SEED.split("> ```answer-text\n", 1)[1].split("\n> ```\n", 1)[0]
    return "\n".join(line[2:] if line.startswith("> ") else line[1:]
                     for line in body.split("\n"))


def estimate_of(text: str, settings: Settings | None = None, batch: bool = False) -> Estimate:
    note = parse(text)
    checked = check_note(note)
    panel, problems = read_panel(note)
    assert problems == []
    return estimate_note(checked.plan, checked.query, checked.answer, checked.overrides,
                         settings or Settings(), panel, batch)


def test_the_seed_note_by_hand() -> None:
    answer = seed_answer()
    assert len(answer) == 6628  # 1,657 tokens at 4 characters a token
    est = estimate_of(SEED)
    # two ai measures on the answer; the programmatic ones send nothing
    assert (est.requests, est.answers, est.judgments) == (2, 0, 2)
    tokens_in = (tokens(SEED_PROMPT_1) + tokens(answer)) + (tokens(SEED_PROMPT_2) + tokens(answer))
    assert tokens_in == (54 + 1657) + (69 + 1657) == 3437
    assert est.input_tokens == tokens_in
    assert est.output_tokens == 2 * 1024  # each reply at max_tokens: an upper bound
    # claude-sonnet-5-5 at the sonnet family's $3 / $15 per million tokens
    assert est.cost_usd == pytest.approx((3437 * 3.0 + 2048 * 15.0) / 1e6)  # $0.041031
    assert [(m.model, m.requests) for m in est.by_model] == [("claude-sonnet-5-5", 2)]
    assert est.counts() == "2 requests (0 answers, 2 judgments)"
    assert est.cost_text() == "~$0.04"
    # through the Message Batches API: half
    assert estimate_of(SEED, batch=True).cost_usd == pytest.approx(est.cost_usd / 2)


def test_a_note_without_an_answer_adds_the_answer_request() -> None:
    text = SEED.split("> [!answer]")[0] + "> [!measures]" + SEED.split("> [!measures]")[1]
    est = estimate_of(text, Settings(answer_model="claude-opus-5", answer_max_tokens=2000))
    assert (est.answers, est.judgments) == (1, 2)
    query = ("My Sezary Syndrome is resistant to first-line treatments. What are the best "
             "second-line treatment options?")
    # the answer: the query in, answer_max_tokens out; the judges read an answer that long
    assert [(m.model, m.requests, m.input_tokens, m.output_tokens) for m in est.by_model] == [
        ("claude-opus-5", 1, tokens(query), 2000),
        ("claude-sonnet-5-5", 2, tokens(SEED_PROMPT_1) + 2000 + tokens(SEED_PROMPT_2) + 2000,
         2048),
    ]


def test_a_panel_note_by_hand() -> None:
    settings = Settings(prices={"claude-opus-5": Price(input=5.0, output=25.0)})
    est = estimate_of(PANEL, settings)
    # 2 assistants x 5 samples answers; each answer judged by the 2 ai measures (by the
    # note's `model`, claude-haiku-4-5)
    assert (est.requests, est.answers, est.judgments) == (30, 10, 20)
    q = tokens(QUERY)
    brands_in = tokens(PANEL_PROMPT_1) + 4096  # the answer, at answer_max_tokens
    many_in = tokens(PANEL_PROMPT_2) + 300  # `count` reads `brands`: its max_tokens
    assert [(m.model, m.requests, m.input_tokens, m.output_tokens) for m in est.by_model] == [
        ("claude-sonnet-5-5", 5, 5 * q, 5 * 4096),
        ("claude-haiku-4-5", 20, 10 * (brands_in + many_in), 10 * (300 + 1024)),
        ("claude-opus-5", 5, 5 * q, 5 * 4096),
    ]
    sonnet = 5 * (q * 3.0 + 4096 * 15.0) / 1e6  # the family's price
    opus = 5 * (q * 5.0 + 4096 * 25.0) / 1e6  # the vault's price table wins
    haiku = 10 * ((brands_in + many_in) * 1.0 + (300 + 1024) * 5.0) / 1e6
    assert est.cost_usd == pytest.approx(sonnet + opus + haiku)
    assert (q, brands_in, many_in) == (16, 4112, 311)
    assert est.cost_usd == pytest.approx(0.30744 + 0.5124 + 0.11043)  # $0.93027
    assert est.cost_text() == "~$0.93"

    message = over_budget(est, 0.5)
    assert message == (
        "estimated cost $0.93 is above max_cost_usd 0.50 (30 requests: 10 answers, "
        "20 judgments; 44,390 tokens in, 54,200 out, estimated: tokens as characters/4, "
        "every reply at its max_tokens, nothing from the cache); raise max_cost_usd or "
        "lower samples")
    assert over_budget(est, 1.0) is None and over_budget(est, None) is None


def test_a_panel_without_assistants_asks_the_answer_model() -> None:
    text = PANEL.replace("assistants: [claude-sonnet-5-5, claude-opus-5]\n", "")
    est = estimate_of(text, Settings(answer_model="claude-opus-5"))
    assert (est.answers, est.judgments) == (5, 10)
    assert est.by_model[0].model == "claude-opus-5" and est.by_model[0].requests == 5


def test_an_unpriced_model_is_named_not_counted() -> None:
    est = estimate_of(SEED.replace("Status: Pending", "Status: Pending\nmodel: local-llm"))
    assert est.cost_usd == 0 and est.unpriced == ("local-llm",)
    assert est.cost_text() == "~$0.00 (not counted: no price for local-llm)"


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and folder under ``root``: its bytes (None for a folder) and mtime."""
    found: dict[str, tuple[bytes | None, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            data = None if path.is_dir() else path.read_bytes()
            found[str(path.relative_to(root))] = (data, path.stat().st_mtime_ns)
    return found


def test_dry_run_sends_nothing_and_writes_nothing(vault: Path, api: FakeMessagesAPI) -> None:
    (vault / "Queries").mkdir()
    (vault / "Queries" / "seed.md").write_text(SEED, encoding="utf-8")
    (vault / "Queries" / "panel.md").write_text(PANEL, encoding="utf-8")
    (vault / "bad.md").write_text(
        SEED.replace("Status: Pending", "Status: Pending\nmax_cost_usd: lots"), encoding="utf-8")
    (vault / "bad panel.md").write_text(PANEL.replace("samples: 5", "samples: 0"),
                                        encoding="utf-8")
    (vault / "done.md").write_text(SEED.replace("Status: Pending", "Status: Done"),
                                   encoding="utf-8")
    before = snapshot(vault.parent)

    ran = run_process("run", str(vault), "--once", "--dry-run")

    assert api.requests == []
    assert snapshot(vault.parent) == before  # no byte, no mtime changed; no .vaultd made
    assert not (vault / ".vaultd").exists()
    assert ran.err == ""
    lines = ran.out.splitlines()
    assert lines[0].startswith("bad panel.md:3: ") and "samples" in lines[0]
    assert lines[1:] == [
        "bad.md:3: property `max_cost_usd`: `lots` is not a number of US dollars above 0 "
        "(e.g. max_cost_usd: 2.50)",
        "Queries/panel.md: 30 requests (10 answers, 20 judgments), ~$1.96",
        "Queries/seed.md: 2 requests (0 answers, 2 judgments), ~$0.04",
        "vaultd: dry run: 2 notes, 32 requests (10 answers, 22 judgments), 47,827 tokens in, "
        "56,248 out, ~$2.00 (estimated: tokens as characters/4, every reply at its "
        "max_tokens, nothing from the cache); nothing sent, nothing written",
        "vaultd:   claude-sonnet-5-5: 7 requests, 3,517 tokens in, 22,528 out, ~$0.35",
        "vaultd:   claude-haiku-4-5: 20 requests, 44,230 tokens in, 13,240 out, ~$0.11",
        "vaultd:   claude-opus-5: 5 requests, 80 tokens in, 20,480 out, ~$1.54",
        "vaultd: 2 notes with problems would end in Error",
    ]
    assert ran.code == 1  # a note with a problem, as `vaultd check` says


def test_dry_run_says_which_notes_max_cost_usd_would_stop(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    (vault / ".vaultd").mkdir()
    config = vault / ".vaultd" / "config.toml"
    config.write_text("max_cost_usd = 0.5\n", encoding="utf-8")
    (vault / "panel.md").write_text(PANEL, encoding="utf-8")
    before = snapshot(vault)

    ran = run_cli("run", str(vault), "--once", "--dry-run", "--batch", capsys=capsys)

    assert (ran.code, api.requests, snapshot(vault) == before) == (0, [], True)
    lines = ran.out.splitlines()
    assert lines[0] == ("panel.md: 30 requests (10 answers, 20 judgments), ~$0.98; above "
                        "max_cost_usd 0.50: it would not start")
    assert "at batch prices" in lines[1]
    assert lines[-1] == "vaultd: 1 note above max_cost_usd would not start"
    assert run_cli("run", str(vault), "--dry-run", capsys=capsys).code == 2  # needs --once


def test_max_cost_usd_too_low_stops_the_run_before_it_sends(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    note = vault / "seed.md"
    text = SEED.replace("Status: Pending", "Status: Pending\nmax_cost_usd: 0.01")
    note.write_text(text, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    assert api.requests == []
    why = ("estimated cost $0.04 is above max_cost_usd 0.01 (2 requests: 0 answers, "
           "2 judgments; 3,437 tokens in, 2,048 out, estimated: tokens as characters/4, every "
           "reply at its max_tokens, nothing from the cache); raise max_cost_usd or lower "
           "max_tokens")
    assert f"error      seed.md: {why}" in ran.out
    assert without_timestamp(note.read_text(encoding="utf-8")) == text.replace(
        "max_cost_usd: 0.01\n", f'max_cost_usd: 0.01\nError: "{why}"\n'
    ).replace("Status: Pending", "Status: Error") + (
        f"\n\n***\n\n> [!error] vaultd could not run this note\n> ```error-text\n> {why}\n> ```")


def test_the_vault_s_max_cost_usd_stops_a_panel(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("max_cost_usd = 0.5\n", encoding="utf-8")
    note = vault / "panel.md"
    note.write_text(PANEL, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert (ran.code, api.requests) == (1, [])
    after = note.read_text(encoding="utf-8")
    assert "Status: Error\n" in after
    assert 'Error: "estimated cost $1.96 is above max_cost_usd 0.50 (30 requests: 10 answers, ' \
        '20 judgments; ' in after
    assert 'raise max_cost_usd or lower samples"\n' in after
    assert not (vault / "panel").exists()  # no answer note either


def test_max_cost_usd_must_be_a_number_above_0(
        vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value, hint in (("0", "e.g. max_cost_usd: 2.50"), ("-1", "e.g. max_cost_usd: 2.50"),
                        ('"2.5"', "write the number without quotes or $"),
                        ("$3", "write the number without quotes or $"),
                        ("true", "e.g. max_cost_usd: 2.50")):
        note = vault / "n.md"
        note.write_text(SEED.replace("Status: Pending", f"Status: Pending\nmax_cost_usd: {value}"),
                        encoding="utf-8")
        ran = run_cli("check", str(note), capsys=capsys)
        shown = value.strip('"')
        assert ran.code == 1
        assert ran.out.splitlines()[0] == (
            f"{note}:3: property `max_cost_usd`: `{shown}` is not a number of US dollars "
            f"above 0 ({hint})"), value
    note.write_text(SEED.replace("Status: Pending", "Status: Pending\nmax_cost_usd: 2"),
                    encoding="utf-8")
    assert check_note(parse(note.read_text(encoding="utf-8"))).overrides.max_cost_usd == 2.0


def test_the_max_cost_usd_setting(vault: Path) -> None:
    assert load(None, environ={}).max_cost_usd is None
    assert load(None, environ={"VAULTD_MAX_COST_USD": "2.5"}).max_cost_usd == 2.5
    assert load(None, environ={"VAULTD_MAX_COST_USD": "inf"}).max_cost_usd is None  # no limit
    with pytest.raises(ConfigError, match="max_cost_usd: Input should be greater than 0"):
        load(None, environ={"VAULTD_MAX_COST_USD": "0"})


def test_a_measure_of_the_query_in_a_note_without_one_sends_nothing() -> None:
    text = SEED.replace("  * type: ai\n>   * prompt: \"On a scale", "  * type: ai\n>   * input: "
                        "query\n>   * prompt: \"On a scale")
    assert estimate_of(text).judgments == 2  # the seed has a query: both are asked
    no_query = text.split("> [!query]")[0] + "> [!answer]" + text.split("> [!answer]")[1]
    est = estimate_of(no_query)
    assert (est.judgments, est.input_tokens) == (1, tokens(SEED_PROMPT_1) + 1657)
