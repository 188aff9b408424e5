"""Backfills through the Message Batches API of the loopback server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli, without_timestamp
from .daemonproc import wait_for
from .fakeapi import FakeMessagesAPI, Reply, Request
from .notes import SEED, SEED_REPLIES, note_with_measures, programmatic_note
from .test_engine import seed_done

CHAIN = ["* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES",
         "* ---", "  * id: first", "  * type: ai", "  * input: names",
         "  * prompt: FIRST ONE",
         "* ---", "  * id: count", "  * type: programmatic", "  * input: names",
         "  * logic: return input.length"]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULTD_BATCH_POLL", "0.05")


def test_backfill_goes_through_batches_one_round_per_level(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    api.rule("FIRST ONE", '"Poteligeo"')
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    (vault / "chain.md").write_text(note_with_measures(CHAIN), encoding="utf-8")
    (vault / "js.md").write_text(programmatic_note(), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)

    assert ran.code == 0, ran
    assert api.message_requests() == []  # nothing outside a batch
    rounds = sorted(api.batches.values(), key=lambda b: b.created_at)
    assert [len(b.items) for b in rounds] == [3, 1]  # level 0: 2 seed + 1 chain; level 1
    assert without_timestamp((vault / "seed.md").read_text(encoding="utf-8")) == seed_done()
    chain = (vault / "chain.md").read_text(encoding="utf-8")
    assert "Status: Done" in chain and "> Poteligeo\n> ```\n\n***" in chain
    assert chain.rstrip().endswith("> 1\n> ```")
    assert "done       js.md: 1 measures" in ran.out
    assert "(0 from cache)" in ran.out.splitlines()[-1]
    assert not (vault / ".vaultd" / "batches.json").exists() or json.loads(
        (vault / ".vaultd" / "batches.json").read_text())["batches"] == []


def test_batch_replies_are_billed_at_half_price(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    assert run_cli("run", str(vault), "--once", "--batch", capsys=capsys).code == 0
    text = (vault / "seed.md").read_text(encoding="utf-8")
    assert "\ncost_usd: 0.005328\n" in text  # half of the 0.010656 the same calls cost alone
    assert "\ntokens_in: 3447\n" in text


def test_generated_answer_comes_in_its_own_round(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.rule("Which drugs", "Poteligeo, then Adcetris.")
    api.rule("BRAND NAMES", '["Poteligeo", "Adcetris"]')
    (vault / "ask.md").write_text(
        "---\nStatus: Pending\n---\n> [!query]\n> ```query-text\n> Which drugs?\n> ```\n\n"
        "> [!measures]\n> ```measures-md\n> * ---\n>   * id: names\n>   * type: ai\n"
        ">   * prompt: BRAND NAMES\n> ```\n", encoding="utf-8")

    assert run_cli("run", str(vault), "--once", "--batch", capsys=capsys).code == 0

    assert [len(b.items) for b in api.batches.values()] == [1, 1]
    text = (vault / "ask.md").read_text(encoding="utf-8")
    assert "> Poteligeo, then Adcetris.\n" in text and "> Poteligeo\n> Adcetris\n> ```" in text


def test_an_errored_batch_item_is_that_measure_error(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.rule("BRAND NAMES", Reply(status=400, text="prompt is too long"))
    (vault / "n.md").write_text(note_with_measures(CHAIN), encoding="utf-8")

    assert run_cli("run", str(vault), "--once", "--batch", capsys=capsys).code == 1

    text = (vault / "n.md").read_text(encoding="utf-8")
    assert "> Error: the batch could not answer: prompt is too long\n" in text
    assert text.count("> Skipped: input `names` failed") == 2


def test_stopped_run_resumes_its_batch_instead_of_paying_twice(
    vault: Path, api: FakeMessagesAPI
) -> None:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    api.batch_delay = 3600  # the first run's batch does not end while it waits
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vaultd", "run", str(vault), "--once", "--batch"]
    first = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = vault / ".vaultd" / "batches.json"
    try:
        wait_for(lambda: state.exists() and json.loads(state.read_text())["batches"],
                 what="the batch to be recorded")
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert len(api.batches) == 1
    (batch,) = api.batches.values()
    batch.ends_at = time.time()  # the API finishes it while vaultd is down

    second = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120, check=False)

    assert second.returncode == 0, second.stderr
    assert len(api.batches) == 1  # collected, not submitted again
    assert api.message_requests() == []
    assert without_timestamp((vault / "seed.md").read_text(encoding="utf-8")) == seed_done()
    assert json.loads(state.read_text())["batches"] == []


# -- one client, one policy for batches and single requests (issue 13) ------------------------

ONE_AI = note_with_measures(["* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES"])


def batch_creations(api: FakeMessagesAPI) -> list[Request]:
    return [r for r in api.batch_requests() if r.method == "POST" and r.path.endswith("batches")]


def test_a_batch_submission_that_429s_waits_the_pause_and_is_retried(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "1")
    api.rule("BRAND NAMES", '["Poteligeo"]')
    api.script_batches([Reply(status=429, headers={"retry-after": "0.3"})])
    note = vault / "n.md"
    note.write_text(ONE_AI, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)

    assert ran.code == 0, ran
    assert "> Poteligeo\n> ```" in note.read_text(encoding="utf-8")
    refused, accepted = batch_creations(api)
    assert accepted.received_at >= refused.received_at + 0.3  # the pause the API asked for
    assert [r.headers.get("x-stainless-retry-count") for r in (refused, accepted)] == ["0", "1"]
    assert api.message_requests() == []


def test_model_retries_bounds_the_batch_calls_too(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "0")
    api.script_batches([Reply(status=429, headers={"retry-after": "0"}), Reply(status=200)])
    note = vault / "n.md"
    note.write_text(ONE_AI, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)

    assert ran.code == 1
    assert len(batch_creations(api)) == 1  # not retried: model_retries is 0
    assert ("> Error: could not submit the batch: model API error 429 (rate_limit_error): "
            "Number of request tokens has exceeded your per-minute rate limit.\n"
            ) in note.read_text(encoding="utf-8")


def test_model_timeout_is_the_batch_calls_deadline_too(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "0")
    monkeypatch.setenv("VAULTD_MODEL_TIMEOUT", "0.5")
    api.script_batches([Reply(delay=20)])  # the submission is answered too late
    note = vault / "n.md"
    note.write_text(ONE_AI, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)

    assert ran.code == 1
    assert ("> Error: could not submit the batch: the model API did not answer within 0.5 s\n"
            in note.read_text(encoding="utf-8"))
    assert api.batches == {}


@pytest.mark.parametrize("again", ["--batch", "alone"])
def test_a_refusal_through_a_batch_is_asked_again_on_the_next_run(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str], again: str,
) -> None:
    api.rule("BRAND NAMES", Reply(text="I would rather not list them.", stop_reason="refusal"))
    note = vault / "n.md"
    note.write_text(ONE_AI, encoding="utf-8")
    assert run_cli("run", str(vault), "--once", "--batch", capsys=capsys).code == 1
    assert "> Error: the model declined to answer\n" in note.read_text(encoding="utf-8")
    assert len(api.batches) == 1

    note.write_text(ONE_AI, encoding="utf-8")  # the user sets it to Pending again
    ran = run_cli("run", str(vault), "--once", *(["--batch"] if again == "--batch" else []),
                  capsys=capsys)

    assert ran.code == 1
    assert "> Error: the model declined to answer\n" in note.read_text(encoding="utf-8")
    if again == "--batch":  # asked again in a second batch, not served from the cache
        assert len(api.batches) == 2
        assert api.message_requests() == []
    else:
        assert len(api.message_requests()) == 1
    assert "(0 from cache)" in ran.out.splitlines()[-1]
