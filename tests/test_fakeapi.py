"""The fake Anthropic API, exercised through the real ``anthropic`` SDK over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, TextBlock

from .fakeapi import FakeMessagesAPI, Reply, Request, estimate_tokens

MODEL = "claude-haiku-5-5"


@pytest.fixture
def api() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
def client(api: FakeMessagesAPI) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test-key", base_url=api.url, max_retries=0) as c:
        yield c


def ask(client: anthropic.Anthropic, prompt: str, system: str | None = None) -> Message:
    if system is None:
        return client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": prompt}]
        )
    return client.messages.create(
        model=MODEL,
        max_tokens=64,
        system=system,
        messages=[{"role": "user", "content": prompt}],
    )


def text_of(message: Message) -> str:
    assert len(message.content) == 1
    block = message.content[0]
    assert isinstance(block, TextBlock)
    return block.text


def batch_item(custom_id: str, prompt: str) -> Any:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": prompt}],
        },
    }


def test_text_reply_with_usage(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    api.default = "The answer is forty-two."
    message = ask(client, "What is six times seven?", system="Be brief.")

    assert text_of(message) == "The answer is forty-two."
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.id.startswith("msg_")
    assert message._request_id is not None and message._request_id.startswith("req_")
    prompt_text = "Be brief.\nWhat is six times seven?"
    assert message.usage.input_tokens == len(prompt_text) // 4 == estimate_tokens(prompt_text)
    assert message.usage.output_tokens == len("The answer is forty-two.") // 4
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0

    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.text == prompt_text
    assert request.model == MODEL
    assert request.max_tokens == 64
    assert request.api_key == "test-key"  # SDK 2.12 sends it as "authorization: Bearer ..."
    assert "anthropic-version" in request.headers
    assert request.json["messages"][0]["content"] == "What is six times seven?"


def test_rules_first_match_wins_else_default(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.rule("capital of France", "Paris")
    api.rule("capital", "Some city")
    api.rule("stop early", Reply(text="trunc", stop_reason="max_tokens"))
    api.default = "no rule"

    assert text_of(ask(client, "What is the capital of France?")) == "Paris"
    assert text_of(ask(client, "What is the capital of Peru?")) == "Some city"
    assert text_of(ask(client, "Hello")) == "no rule"
    truncated = ask(client, "please stop early")
    assert (text_of(truncated), truncated.stop_reason) == ("trunc", "max_tokens")
    # rules see the system prompt and text blocks as well as plain string content
    assert text_of(ask(client, "Which city?", system="About the capital of France")) == "Paris"
    blocks = client.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "capital of France?"}]},
            {"role": "assistant", "content": "Let me think."},
            {"role": "user", "content": "Go on."},
        ],
    )
    assert text_of(blocks) == "Paris"
    assert api.requests[-1].text == "capital of France?\nLet me think.\nGo on."


def test_script_then_custom_responder(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    api.script(["first", Reply(text="second")])
    api.responder = lambda request: f"echo: {request.text}"

    assert [text_of(ask(client, p)) for p in ("a", "b", "c")] == ["first", "second", "echo: c"]


def test_429_then_success_is_retried(api: FakeMessagesAPI) -> None:
    api.script([Reply(status=429, headers={"retry-after": "0"}), "recovered"])
    with anthropic.Anthropic(api_key="test-key", base_url=api.url, max_retries=2) as client:
        message = ask(client, "hi")

    assert text_of(message) == "recovered"
    assert len(api.requests) == 2
    assert [r.headers.get("x-stainless-retry-count") for r in api.requests] == ["0", "1"]


def test_401_raises_authentication_error_without_retry(api: FakeMessagesAPI) -> None:
    api.default = Reply(status=401)
    with (
        anthropic.Anthropic(api_key="test-key", base_url=api.url, max_retries=2) as client,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        ask(client, "hi")

    assert info.value.status_code == 401
    assert info.value.type == "authentication_error"
    assert info.value.request_id is not None and info.value.request_id.startswith("req_")
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_error_statuses_map_to_sdk_errors(
    api: FakeMessagesAPI,
    client: anthropic.Anthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    api.default = Reply(status=status, text="scripted failure")
    with pytest.raises(error_class) as info:
        ask(client, "hi")

    assert info.value.status_code == status
    assert info.value.type == error_type
    assert info.value.api_message == "scripted failure"


def test_reply_headers_and_ratelimit_headers_are_sent(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.default = Reply(text="hey", headers={"x-custom": "1"})
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )

    assert raw.headers["x-custom"] == "1"
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert "anthropic-ratelimit-tokens-reset" in raw.headers
    assert text_of(raw.parse()) == "hey"


def test_dropped_connection_raises_connection_error(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.default = Reply(drop=True)
    with pytest.raises(anthropic.APIConnectionError):
        ask(client, "hi")

    assert len(api.requests) == 1


def test_a_reply_cut_mid_body_raises_connection_error(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.default = Reply(text="a long reply " * 100, cut=50)
    with pytest.raises(anthropic.APIConnectionError) as info:
        ask(client, "hi")
    assert "Connection reset by peer" in str(info.value.__cause__)  # an RST, not a clean close
    api.default = "whole again"
    assert text_of(client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])) == "whole again"


def test_streaming_is_rejected(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True
        )

    assert info.value.status_code == 400
    assert api.requests[0].json["stream"] is True


def test_responder_exception_becomes_500_and_is_recorded(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    def broken(request: Request) -> str:
        raise RuntimeError("responder bug")

    api.responder = broken
    with pytest.raises(anthropic.InternalServerError):
        ask(client, "hi")

    assert [str(e) for e in api.errors] == ["responder bug"]


def test_keep_alive_reuses_one_connection(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    for i in range(5):
        api.default = f"reply {i}"
        assert text_of(ask(client, f"q{i}")) == f"reply {i}"

    assert len(api.requests) == 5
    assert api.connections_opened == 1


def test_count_tokens(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    result = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "x" * 40}]
    )

    assert result.input_tokens == 10
    assert api.requests[0].path == "/v1/messages/count_tokens"


def test_max_in_flight_counts_concurrent_requests(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    # every handler waits at the barrier until all four are inside the server at once
    barrier = threading.Barrier(4, timeout=10)

    def responder(request: Request) -> Reply:
        barrier.wait()
        return Reply(text=f"done {request.text}", delay=0.3)

    api.responder = responder
    answers: dict[int, str] = {}
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            answers[n] = text_of(ask(client, str(n)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert failures == []
    assert answers == {n: f"done {n}" for n in range(4)}
    assert api.max_in_flight == 4
    assert api.in_flight == 0


def test_batch_round_trip(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    api.rule("fail me", Reply(status=529))
    api.rule("greet", "Hello!")

    created = client.messages.batches.create(
        requests=[batch_item("ok-1", "please greet"), batch_item("bad-1", "fail me")]
    )
    assert created.id.startswith("msgbatch_")
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 2
    assert created.results_url is None

    batch = client.messages.batches.retrieve(created.id)
    assert batch.processing_status == "ended"
    assert batch.ended_at is not None
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 1)
    assert batch.request_counts.processing == 0
    assert batch.results_url == f"{api.url}/v1/messages/batches/{created.id}/results"

    decoder = client.messages.batches.results(created.id)
    try:
        results = {item.custom_id: item.result for item in decoder}
    finally:
        decoder.close()

    ok = results["ok-1"]
    assert ok.type == "succeeded"
    assert text_of(ok.message) == "Hello!"
    bad = results["bad-1"]
    assert bad.type == "errored"
    assert bad.error.error.type == "overloaded_error"

    record = api.batches[created.id]
    assert [item.custom_id for item in record.items] == ["ok-1", "bad-1"]
    assert record.items[0].text == "please greet"
    assert [batch.id for batch in client.messages.batches.list()] == [created.id]


def test_batch_cancel_while_in_progress(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    api.batch_delay = 3600.0
    created = client.messages.batches.create(requests=[batch_item("a", "x")])
    assert client.messages.batches.retrieve(created.id).processing_status == "in_progress"
    with pytest.raises(anthropic.AnthropicError):
        client.messages.batches.results(created.id)

    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None

    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 1
    decoder = client.messages.batches.results(created.id)
    try:
        assert [(item.custom_id, item.result.type) for item in decoder] == [("a", "canceled")]
    finally:
        decoder.close()


def test_close_returns_while_a_request_is_stalled() -> None:
    api = FakeMessagesAPI()
    api.default = Reply(text="too late", delay=30.0)
    outcome: list[BaseException | str] = []

    def stalled() -> None:
        with anthropic.Anthropic(
            api_key="test-key", base_url=api.url, max_retries=0, timeout=60.0
        ) as client:
            try:
                outcome.append(text_of(ask(client, "hang")))
            except BaseException as exc:
                outcome.append(exc)

    thread = threading.Thread(target=stalled)
    thread.start()
    try:
        assert api.wait_for_requests(1, timeout=10)
    finally:
        api.close()
    thread.join(20)

    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], anthropic.APIConnectionError)
    assert api.in_flight == 0
    api.close()  # idempotent
