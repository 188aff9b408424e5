"""One panel across providers (issue 15): Claude through the Messages API, GPT and a local
model through the Chat Completions API, each behind its own real loopback server and the
real SDKs; figures per column exact, a key-less local model, faults per provider ending in
that assistant's column only, judges that are named assistants, and fake keys found
nowhere vaultd writes or says."""

# ruff: noqa: RUF001  (the cells put an en dash between an interval's ends)

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultd.config import CONFIG_PATH

from .conftest import run_cli, run_process
from .daemonproc import DaemonProcess, wait_for
from .fakeapi import FakeMessagesAPI, Reply, Request
from .fakeopenai import FakeChatCompletionsAPI
from .notes import SEED, SEED_REPLIES
from .test_panels import JUDGED, QUERY, answer_notes, frontmatter, panel_note, write_panel
from .test_readme_panels import callout, normalised, readme_block
from .test_report_panels import _t_interval, _wilson_percent

GPT_KEY = "sk-test-SECRET-4242"
CLAUDE_KEY = "sk-ant-test-SECRET-7373"
WRONG_KEY = "sk-test-WRONG-9999"  # a key the GPT server refuses, and quotes back in its 401
OLLAMA_URL = "http://127.0.0.1:11434/v1"  # as the README's config has it

# What each assistant's five answers say, given in turn (by request count).
ANSWERS = {
    "claude": ["Poteligeo (mogamulizumab) first, then Adcetris.",
               "Adcetris first, then Poteligeo.", "Adcetris alone.", "Poteligeo alone.",
               "Istodax, then Poteligeo."],
    "gpt": ["Adcetris first, then Poteligeo.", "Adcetris alone.", "Istodax alone.",
            "Adcetris alone.", "Poteligeo alone."],
    "local-llama": ["Istodax alone.", "Istodax, then Poteligeo.", "Istodax alone.",
                    "Adcetris alone.", "Istodax alone."],
}


def judgment(text: str) -> str | None:
    """What a judge answers about an answer in ``text``: its brands, or how strongly it
    recommends Poteligeo; None when ``text`` is not a judgment."""
    for answer, (brands, strength) in JUDGED.items():
        if answer in text and "BRAND NAMES" in text:
            return json.dumps(brands)
        if answer in text and "how strongly" in text:
            return json.dumps({"response": strength, "comment": "as said"})
    return None


class Assistant:
    """One server's part: the question answered in turn from ``answers``, judgments by the
    answer; ``fault``, when set, is the reply to every question instead."""

    def __init__(self, server: FakeMessagesAPI, answers: list[str]) -> None:
        self.server = server
        self.answers = answers
        self.asked = 0
        self.fault: Reply | None = None
        self.lock = threading.Lock()
        server.responder = self.respond

    def respond(self, request: Request) -> Reply | str:
        judged = judgment(request.text)
        if judged is not None:
            return judged
        assert QUERY in request.text, request.text
        if self.fault is not None:
            return self.fault
        with self.lock:
            n, self.asked = self.asked, self.asked + 1
        return self.answers[n % len(self.answers)]

    def questions(self) -> list[Request]:
        return [r for r in self.server.message_requests() if QUERY in r.text]

    def judgments(self) -> list[Request]:
        return [r for r in self.server.message_requests() if QUERY not in r.text]


class Providers:
    """Claude (the Messages API), GPT and a local Llama (each a Chat Completions API)."""

    def __init__(self, claude: FakeMessagesAPI, gpt: FakeChatCompletionsAPI,
                 llama: FakeChatCompletionsAPI) -> None:
        self.claude = Assistant(claude, ANSWERS["claude"])
        self.gpt = Assistant(gpt, ANSWERS["gpt"])
        self.llama = Assistant(llama, ANSWERS["local-llama"])
        self.gpt_url = gpt.base_url
        self.llama_url = llama.base_url


@pytest.fixture
def providers(api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Providers]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CLAUDE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", GPT_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    api.accepted_keys = {CLAUDE_KEY}
    with FakeChatCompletionsAPI() as gpt, FakeChatCompletionsAPI() as llama:
        gpt.accepted_keys = {GPT_KEY}
        yield Providers(api, gpt, llama)


def readme_config(providers: Providers, monkeypatch: pytest.MonkeyPatch) -> str:
    """The README's config, with the one change a loopback test needs: the local model's
    server is the test's, not Ollama's port (GPT's default URL is moved by the SDK's own
    ``OPENAI_BASE_URL``)."""
    text = readme_block("providers-config")
    assert text.count(OLLAMA_URL) == 1
    monkeypatch.setenv("OPENAI_BASE_URL", providers.gpt_url)
    return text.replace(OLLAMA_URL, providers.llama_url)


def write_config(vault: Path, text: str) -> None:
    path = vault / CONFIG_PATH
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")


def three_assistants(providers: Providers, retries: int = 6, gpt_url: str | None = None,
                     claude_url: str | None = None, gpt_key_env: str = "OPENAI_API_KEY") -> str:
    claude_base = f'base_url = "{claude_url}"\n' if claude_url else ""
    return (f"model_retries = {retries}\n\n"
            f'[assistants.claude]\nprovider = "anthropic"\nmodel = "claude-sonnet-5-5"\n'
            f"{claude_base}\n"
            f'[assistants.gpt]\nprovider = "openai"\nmodel = "gpt-5"\n'
            f'base_url = "{gpt_url or providers.gpt_url}"\napi_key_env = "{gpt_key_env}"\n'
            "prices = { input = 1.25, output = 10.0 }\n\n"
            f'[assistants.local-llama]\nprovider = "openai"\nmodel = "llama3.3"\n'
            f'base_url = "{providers.llama_url}"\napi_key_env = ""\n')


PANEL = panel_note(assistants="[claude, gpt, local-llama]")
HEAD = "| Measure | claude | gpt | local-llama |"


def table(text: str, title: str) -> list[str]:
    """The rows of the summary's table under ``**title**`` (header included)."""
    lines = text.splitlines()
    start = lines.index(f"> **{title}**") + 2
    end = next(i for i in range(start, len(lines)) if lines[i] in (">", "> "))
    return [line.removeprefix("> ") for line in lines[start:end]]


# -- one panel, three providers -----------------------------------------------------------


def test_claude_gpt_and_a_local_model_side_by_side_with_the_exact_figures(
        vault: Path, providers: Providers, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(vault, readme_config(providers, monkeypatch))
    note = write_panel(vault, PANEL)

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    text = note.read_text(encoding="utf-8")
    # Poteligeo named: claude 4 of 5 (at 1, 2, 1, 2), gpt 2 of 5 (at 2, 1), llama 1 of 5 (2);
    # how strongly: claude 9 6 1 10 5, gpt 6 1 2 1 10, llama 2 5 2 1 2. The Wilson intervals,
    # and claude's t intervals, are checked against scipy in test_report_panels.
    assert _t_interval([6, 1, 2, 1, 10]) == (-0.89, 8.89)
    assert _t_interval([2, 5, 2, 1, 2]) == (0.52, 4.28)
    assert _wilson_percent(1, 5) == (4, 62) and _wilson_percent(4, 5) == (38, 96)
    assert table(text, "Measures") == [
        HEAD,
        "| --- | --- | --- | --- |",
        "| AI Task: Extract all mentioned treatment names | Poteligeo 4/5 | Adcetris 3/5 "
        "| Istodax 4/5 |",
        "| Is Poteligeo mentioned as a second-line option? | 4/5 · 80% (38–96%) "
        "| 2/5 · 40% (12–77%) | 1/5 · 20% (4–62%) |",
        "| What position is Poteligeo mentioned in the list of options? "
        "| 1.5 (0.58–2.42) · n=4 · N/A 1/5 | 1.5 (-4.85–7.85) · n=2 · N/A 3/5 "
        "| 2 · n=1 · N/A 4/5 |",
        "| How strongly is Poteligeo recommended? | 6.2 (1.78–10.62) · n=5 "
        "| 4 (-0.89–8.89) · n=5 | 2.4 (0.52–4.28) · n=5 |",
    ], text
    assert table(text, "Mentions")[2:] == [
        "| Adcetris | 3/5 · 60% (23–88%) · pos 1.33 | 3/5 · 60% (23–88%) · pos 1 "
        "| 1/5 · 20% (4–62%) · pos 1 |",
        "| Poteligeo | 4/5 · 80% (38–96%) · pos 1.5 | 2/5 · 40% (12–77%) · pos 1.5 "
        "| 1/5 · 20% (4–62%) · pos 2 |",
        "| Istodax | 1/5 · 20% (4–62%) · pos 1 | 1/5 · 20% (4–62%) · pos 1 "
        "| 4/5 · 80% (38–96%) · pos 1 |",
    ], text
    # each assistant was asked its five questions through its own provider's server, and
    # every judgment went to the vault's judge, Claude
    assert [len(a.questions()) for a in (providers.claude, providers.gpt, providers.llama)] \
        == [5, 5, 5]
    assert providers.gpt.judgments() == providers.llama.judgments() == []
    assert {r.model for r in providers.gpt.questions()} == {"gpt-5"}
    assert {r.model for r in providers.llama.questions()} == {"llama3.3"}
    # the key-less local model was sent none of the keys there are
    assert not {r.api_key for r in providers.llama.questions()} & {GPT_KEY, CLAUDE_KEY}
    assert {r.api_key for r in providers.gpt.questions()} == {GPT_KEY}
    # answer notes say who answered, through which provider, with which model
    seen = {(p["assistant"], p["provider"], p["model"])
            for p in map(frontmatter, answer_notes(vault))}
    assert seen == {("claude", "anthropic", "claude-sonnet-5-5"), ("gpt", "openai", "gpt-5"),
                    ("local-llama", "openai", "llama3.3")}
    # tokens and cost, per answer and added up in the panel note
    notes = [frontmatter(p) for p in answer_notes(vault)]
    panel = frontmatter(note)
    assert panel["tokens_in"] == sum(int(str(n["tokens_in"])) for n in notes)
    assert panel["tokens_out"] == sum(int(str(n["tokens_out"])) for n in notes)
    assert float(str(panel["cost_usd"])) == pytest.approx(
        sum(float(str(n["cost_usd"])) for n in notes), abs=1e-5)
    # and the README shows this very summary
    summary = normalised(callout(text, "panel"), str(panel["run"]))
    assert readme_block("providers-panel") == summary


# -- one provider failing -----------------------------------------------------------------


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAULTS = {
    "a 429 storm": (Reply(status=429, headers={"retry-after": "0"}),
                    {"gpt": "gpt: 429 rate limited (after 2 retries): Rate limit reached",
                     "claude": "model API error 429 (rate_limit_error)"}),
    "a 5xx": (Reply(status=500),
              {"gpt": "gpt: 500 server error (after 2 retries)",
               "claude": "model API error 500"}),
    "a reset": (Reply(drop=True),
                {"gpt": "gpt: connection lost at ",
                 "claude": "could not generate the answer:"}),
    "a dead port": (None, {"gpt": "gpt: connection refused at http://127.0.0.1:",
                           "claude": "cannot reach the model API at http://127.0.0.1:"}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("failing", ["gpt", "claude"])
def test_one_provider_failing_leaves_the_others_judged(
        vault: Path, providers: Providers, capsys: pytest.CaptureFixture[str],
        failing: str, fault: str) -> None:
    reply, messages = FAULTS[fault]
    port = dead_port()
    write_config(vault, three_assistants(
        providers, retries=2,
        gpt_url=f"http://127.0.0.1:{port}/v1" if failing == "gpt" and reply is None else None,
        claude_url=f"http://127.0.0.1:{port}" if failing == "claude" and reply is None
        else None))
    if reply is not None:
        (providers.gpt if failing == "gpt" else providers.claude).fault = reply
    note = write_panel(vault, panel_note(samples=2, assistants="[claude, gpt, local-llama]"))

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1, ran
    props = frontmatter(note)
    error = str(props["error"])
    assert error.startswith("2 of 6 answers could not be had; "), error
    assert f"{failing} " in error and messages[failing] in error, error
    # the other two assistants' answers are there and judged; the failing one has none
    by = {}
    for path in answer_notes(vault):
        answer = frontmatter(path)
        assert answer["status"] == "Done", path.read_text(encoding="utf-8")
        by.setdefault(str(answer["assistant"]), []).append(answer)
    others = {"gpt", "claude", "local-llama"} - {failing}
    assert {name: len(found) for name, found in by.items()} == dict.fromkeys(others, 2)
    text = note.read_text(encoding="utf-8")
    mentioned = next(r for r in table(text, "Measures") if "second-line option" in r)
    cells = dict(zip(["claude", "gpt", "local-llama"], mentioned.split(" | ")[1:], strict=True))
    assert cells[failing] == "—", mentioned
    assert all(cells[name].startswith(("0/2", "1/2", "2/2")) for name in others), mentioned
    assert ran.out.startswith(f"error      Queries/Sezary.md: {error}\n"), ran.out


# -- judges ------------------------------------------------------------------------------


def test_a_judge_may_be_a_named_assistant(
        vault: Path, providers: Providers, capsys: pytest.CaptureFixture[str]) -> None:
    """The vault's `model` names the local model: it judges; a measure's `model: gpt`
    sends that measure to GPT instead; Claude is asked nothing."""
    write_config(vault, 'model = "local-llama"\n\n' + three_assistants(providers))
    for server in (providers.llama.server, providers.gpt.server):
        server.responder = server.match_rules
        for contains, reply in SEED_REPLIES.items():
            server.rule(contains, reply)
    note = vault / "seed.md"
    marker = ">   * id: recommendation_strength\n"
    assert SEED.count(marker) == 1
    note.write_text(SEED.replace(marker, marker + ">   * model: gpt\n"), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, (ran, note.read_text(encoding="utf-8"))
    props = frontmatter(note)
    assert props["eval_mentioned_treatments"] == ["Poteligeo"]
    assert props["eval_recommendation_strength"] == 9
    assert [("BRAND NAMES" in r.text) for r in providers.llama.server.message_requests()] \
        == [True]
    assert [("how strongly" in r.text) for r in providers.gpt.server.message_requests()] \
        == [True]
    assert {r.model for r in providers.gpt.server.message_requests()} == {"gpt-5"}
    assert providers.claude.server.message_requests() == []


# -- keys -------------------------------------------------------------------------------


def assert_no_keys(data: bytes, where: object) -> None:
    for key in (GPT_KEY, CLAUDE_KEY, WRONG_KEY):
        for form in (key, key[8:]):
            assert form.encode() not in data, f"a key ({key[:8]}…) is in {where}"


def test_the_keys_of_both_providers_are_nowhere_vaultd_writes_or_says(
        vault: Path, providers: Providers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both keys used for real, a third refused by a server that quotes it back in its 401,
    the daemon and both SDKs logging at DEBUG: then every byte under the vault, the log and
    `vaultd status` is searched for each key."""
    monkeypatch.setenv("WRONG_OPENAI_KEY", WRONG_KEY)
    monkeypatch.setenv("ANTHROPIC_LOG", "debug")
    monkeypatch.setenv("OPENAI_LOG", "debug")
    write_config(vault, three_assistants(providers) + (
        f'\n[assistants.refused]\nprovider = "openai"\nmodel = "gpt-5"\n'
        f'base_url = "{providers.gpt_url}"\napi_key_env = "WRONG_OPENAI_KEY"\n'))
    note = write_panel(vault, panel_note(samples=2, assistants="[claude, gpt, refused]"))

    with DaemonProcess(vault, "--settle", "0.2", log_level="DEBUG") as daemon:
        daemon.wait_ready()
        wait_for(lambda: frontmatter(note)["status"] == "Error", what="the panel run")
        state = vault / ".vaultd" / "daemon.json"
        wait_for(lambda: state.exists() and '"refused"' in state.read_text(encoding="utf-8"),
                 what="the daemon's figures per assistant")
        status = run_process("status", str(vault))
        assert daemon.stop() == 0
        log = daemon.log()

    assert {r.api_key for r in providers.gpt.server.message_requests()} == {GPT_KEY, WRONG_KEY}
    assert {r.api_key for r in providers.claude.server.message_requests()} == {CLAUDE_KEY}
    error = str(frontmatter(note)["error"])
    assert "refused: 401" in error and "[API key]" in error, error
    assert status.code == 0, status
    # per assistant: what its answer notes say, and what the daemon sent since its start
    lines = status.out.splitlines()
    # (a judgment's cost falls to whichever answer asked first; the cache serves the other)
    assert any(line.startswith("assistant gpt: 2 answers, 0 in error, ~$0.")
               for line in lines), status.out
    assert "assistant refused (daemon, since start): 0 requests answered, 2 failed, ~$0.0000" \
        in lines, status.out
    assert any(line.startswith("assistant gpt (daemon, since start): 2 requests answered, "
                               "0 failed, ~$0.") for line in lines), status.out
    assert_no_keys(log.encode(), "the daemon's log")
    assert_no_keys((status.out + status.err).encode(), "vaultd status")
    files = {p: p.read_bytes() for p in vault.rglob("*") if p.is_file()}
    assert vault / ".vaultd" / "cache.sqlite3" in files
    for path, data in files.items():
        assert_no_keys(data, path)
