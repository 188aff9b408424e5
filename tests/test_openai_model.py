"""OpenAIModel against the real loopback Chat Completions server, through the real SDK."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultd.edges.openai_model import OpenAIModel
from vaultd.errors import ModelError, ModelUnavailable
from vaultd.evaluate.ask import ModelRequest

from .fakeopenai import FakeChatCompletionsAPI, Reply

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-SECRET-4242"


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatCompletionsAPI]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeChatCompletionsAPI() as server:
        server.accepted_keys = {KEY}
        yield server


def ask(prompt: str = "Name a bank.", context: str | None = None) -> ModelRequest:
    return ModelRequest(model="gpt", max_tokens=300, prompt=prompt, context=context)


def gpt(api: FakeChatCompletionsAPI, **options: object) -> OpenAIModel:
    return OpenAIModel("gpt", "gpt-5", base_url=api.base_url,
                       **{"max_retries": 2, "timeout": 10.0, **options})  # type: ignore[arg-type]


def test_a_reply_with_its_usage_and_stop_reason(chat: FakeChatCompletionsAPI) -> None:
    chat.rule("Name a bank", Reply(text="Sezary Bank.", stop_reason="max_tokens"))
    model = gpt(chat)
    try:
        reply = model.complete(ask(context="Queries"))
    finally:
        model.close()
    assert reply.text == "Sezary Bank."
    assert reply.stop_reason == "max_tokens"
    assert reply.model == "gpt-5"
    sent = chat.completion_requests()
    assert len(sent) == 1
    body = sent[0].json
    assert body["model"] == "gpt-5"
    assert body["max_tokens"] == 300  # not OpenAI's own host: the compatible servers' name
    assert body["messages"] == [
        {"role": "user", "content": "<context>\nQueries\n</context>\n\nName a bank."}]
    assert reply.input_tokens == len(sent[0].text) // 4
    assert reply.output_tokens == len("Sezary Bank.") // 4
    assert sent[0].api_key == KEY


def test_a_system_prompt_is_sent_first(chat: FakeChatCompletionsAPI) -> None:
    model = gpt(chat, system="You are terse.")
    try:
        assert model.complete(ask()).stop_reason == "end_turn"
    finally:
        model.close()
    assert chat.completion_requests()[0].json["messages"][0] == {
        "role": "system", "content": "You are terse."}


def test_openai_itself_is_sent_max_completion_tokens() -> None:
    model = OpenAIModel("gpt", "gpt-5", api_key_env="")
    assert model.params(ask())["max_completion_tokens"] == 300
    assert "max_tokens" not in model.params(ask())


def test_a_429_with_retry_after_is_waited_then_answered(chat: FakeChatCompletionsAPI) -> None:
    chat.script([Reply(status=429, headers={"retry-after": "0.3"}), "ok"])
    model = gpt(chat)
    try:
        assert model.complete(ask()).text == "ok"
    finally:
        model.close()
    first, second = chat.completion_requests()
    assert second.received_at - first.received_at >= 0.3
    assert model.retries == 1


def test_a_429_storm_ends_as_a_clear_error(chat: FakeChatCompletionsAPI) -> None:
    chat.default = Reply(status=429, headers={"retry-after": "0"})
    model = gpt(chat)
    try:
        with pytest.raises(ModelError) as caught:
            model.complete(ask())
    finally:
        model.close()
    assert str(caught.value) == (
        "gpt: 429 rate limited (after 2 retries): Rate limit reached for requests.")
    assert len(chat.completion_requests()) == 3


def test_a_5xx_is_retried(chat: FakeChatCompletionsAPI) -> None:
    chat.script([Reply(status=500, headers={"retry-after": "0"}), "fine"])
    model = gpt(chat)
    try:
        assert model.complete(ask()).text == "fine"
    finally:
        model.close()
    assert len(chat.completion_requests()) == 2


def test_a_reset_connection_is_retried_then_named(chat: FakeChatCompletionsAPI) -> None:
    chat.default = Reply(text="never whole", cut=5)
    model = gpt(chat, max_retries=1)
    try:
        with pytest.raises(ModelError) as caught:
            model.complete(ask())
    finally:
        model.close()
    assert not isinstance(caught.value, ModelUnavailable)
    assert str(caught.value).startswith(f"gpt: connection lost at {chat.base_url}: ")
    assert str(caught.value).endswith("(after 1 retry)")
    assert len(chat.completion_requests()) == 2


def test_a_dead_port_names_the_base_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    model = OpenAIModel("local-llama", "llama3.3", base_url=base, api_key_env="",
                        max_retries=1)
    try:
        with pytest.raises(ModelUnavailable) as caught:
            model.complete(ask())
        assert str(caught.value) == f"local-llama: connection refused at {base}"
        assert model.unavailable() == f"local-llama: connection refused at {base}"
        with pytest.raises(ModelUnavailable):  # at once, during the back-off
            model.complete(ask())
    finally:
        model.close()


def test_a_refused_key_is_an_outage_and_never_quoted(
    chat: FakeChatCompletionsAPI, caplog: pytest.LogCaptureFixture
) -> None:
    chat.accepted_keys = {"sk-another"}
    caplog.set_level(logging.DEBUG)
    model = gpt(chat)
    try:
        with pytest.raises(ModelUnavailable) as caught:
            model.complete(ask())
        with pytest.raises(ModelUnavailable):
            model.complete(ask())
        message = str(caught.value)
        assert message == "gpt: 401 invalid API key: Incorrect API key provided: [API key]."
        assert model.unavailable() == message
    finally:
        model.close()
    assert len(chat.completion_requests()) == 1  # the second call never left
    assert KEY not in caplog.text and "SECRET" not in caplog.text
    assert "Bearer" not in caplog.text


def test_a_missing_key_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = OpenAIModel("gpt", "gpt-5", base_url="http://127.0.0.1:9/v1")
    assert model.unavailable() == "gpt: no API key (set OPENAI_API_KEY)"
    with pytest.raises(ModelUnavailable, match=r"^gpt: no API key \(set OPENAI_API_KEY\)$"):
        model.complete(ask())


def test_key_less_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeChatCompletionsAPI() as api:
        model = OpenAIModel("local-llama", "llama3.3", base_url=api.base_url, api_key_env="")
        try:
            assert model.unavailable() is None
            assert model.complete(ask()).text == "ok"
        finally:
            model.close()
        assert api.completion_requests()[0].api_key == "none"


def test_a_body_that_is_not_json(chat: FakeChatCompletionsAPI) -> None:
    chat.default = Reply(body=b"{not json")
    model = gpt(chat)
    try:
        with pytest.raises(ModelError, match=r"^gpt: the reply was not valid JSON$"):
            model.complete(ask())
    finally:
        model.close()


def test_the_sdk_is_imported_only_at_the_first_request() -> None:
    code = (
        "import sys\n"
        "from vaultd.edges.openai_model import OpenAIModel\n"
        "from vaultd.evaluate.ask import ModelRequest\n"
        "m = OpenAIModel('x', 'm', base_url='http://127.0.0.1:9/v1', api_key_env='',"
        " max_retries=0)\n"
        "print('openai' in sys.modules, 'httpx2' in sys.modules)\n"
        "try:\n"
        "    m.complete(ModelRequest(model='x', max_tokens=5, prompt='p'))\n"
        "except Exception as e:\n"
        "    print(e)\n"
        "print('openai' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)
    assert done.stdout.splitlines() == [
        "False False", "x: connection refused at http://127.0.0.1:9/v1", "True"]
