"""AnthropicModel: retries, rate-limit pacing and the key, with the real SDK over real HTTP.

Nothing in the SDK is mocked: every test talks to the loopback Messages API. Only the
:class:`RateGate` unit tests at the end use a fake clock.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from vaultd.edges.model import AnthropicModel, RateGate, parse_rfc3339, request_params, retry_after
from vaultd.errors import ModelError
from vaultd.evaluate.ask import ModelReply, ModelRequest

from .fakeapi import FakeMessagesAPI, Reply

REQUEST = ModelRequest(model="claude-test", max_tokens=50, prompt="say something")
PARAMS = request_params(REQUEST)
DEADLINE = 30.0  # generous: only there so that a hang fails instead of stalling the suite
# the API asks for a short pause: the SDK's own backoff (0.5 s, doubling up to 8 s) would make
# a storm of retries take half a minute
SOON = {"retry-after-ms": "10"}

MakeModel = Callable[..., AnthropicModel]


@pytest.fixture
def make_model(api: FakeMessagesAPI) -> Iterator[MakeModel]:
    """AnthropicModel against the loopback API (through the environment); every model made
    is closed afterwards."""
    made: list[AnthropicModel] = []

    def make(**kwargs: Any) -> AnthropicModel:
        model = AnthropicModel(**kwargs)
        made.append(model)
        return model

    yield make
    for model in made:
        model.close()


def sent(api: FakeMessagesAPI) -> int:
    return len(api.message_requests())


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def in_threads(n: int, call: Callable[[], ModelReply]) -> list[ModelReply | BaseException]:
    """``call`` in ``n`` threads released together; each result or exception."""
    barrier = threading.Barrier(n)
    results: list[ModelReply | BaseException] = [RuntimeError("did not finish")] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not any(thread.is_alive() for thread in threads)
    return results


# -- retried failures ----------------------------------------------------------------------


def test_429_with_retry_after_zero_is_retried(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(status=429, headers={"retry-after": "0"}), "fine"])
    model = make_model()
    assert model.complete(REQUEST).text == "fine"
    assert sent(api) == 2
    assert (model.attempts, model.retries) == (2, 1)


def test_a_storm_of_529s_is_ridden_out(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(status=529, headers=SOON)] * 4 + ["through"])
    model = make_model(max_retries=4)
    assert model.send(PARAMS).text == "through"
    assert sent(api) == 5
    assert (model.attempts, model.retries) == (5, 4)
    counts = [r.headers.get("x-stainless-retry-count") for r in api.message_requests()]
    assert counts == ["0", "1", "2", "3", "4"]  # the SDK's retries: the API is told


def test_a_storm_of_529s_longer_than_the_retries_gives_up(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.script([Reply(status=529)] * 4 + ["through"])
    model = make_model(max_retries=2)
    with pytest.raises(ModelError) as caught:
        model.send(PARAMS)
    assert str(caught.value) == (
        "model API error 529 (overloaded_error): Overloaded — gave up after 3 attempts")
    assert sent(api) == 3
    assert (model.attempts, model.retries) == (3, 2)


def test_the_default_allows_six_retries(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(status=529, headers=SOON)] * 6 + ["through"])
    assert make_model().send(PARAMS).text == "through"
    assert sent(api) == 7


def test_500_then_success(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(status=500), "recovered"])
    assert make_model().send(PARAMS).text == "recovered"
    assert sent(api) == 2


@pytest.mark.parametrize("status", [408, 409, 502, 503, 504])
def test_other_transient_statuses_are_retried(
    api: FakeMessagesAPI, make_model: MakeModel, status: int
) -> None:
    api.script([Reply(status=status), "recovered"])
    assert make_model().send(PARAMS).text == "recovered"
    assert sent(api) == 2


def test_a_non_json_gateway_error_stays_one_line(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.default = Reply(status=502, body=b"<html>\n<h1>502 Bad Gateway</h1>\n</html>\n")
    with pytest.raises(ModelError) as caught:
        make_model(max_retries=1).send(PARAMS)
    assert str(caught.value) == (
        "model API error 502: <html> <h1>502 Bad Gateway</h1> </html> — gave up after 2 attempts")


def test_the_apis_x_should_retry_false_is_obeyed(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.script([Reply(status=529, headers={"x-should-retry": "false"}), "never asked"])
    with pytest.raises(ModelError, match=r"^model API error 529: Overloaded$"):
        make_model().send(PARAMS)
    assert sent(api) == 1


def test_a_stalled_server_times_out_and_is_retried(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.default = Reply(text="too late", delay=5)
    model = make_model(timeout=0.5, max_retries=2)
    started = time.monotonic()
    with pytest.raises(ModelError) as caught:
        model.send(PARAMS)
    assert time.monotonic() - started < DEADLINE
    assert str(caught.value) == (
        "the model API did not answer within 0.5 s — gave up after 3 attempts")
    assert sent(api) == 3


def test_a_stall_then_an_answer(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(text="too late", delay=5), "in time"])
    assert make_model(timeout=0.5).send(PARAMS).text == "in time"
    assert sent(api) == 2


def test_a_dropped_connection_is_retried(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(drop=True), "after the drop"])
    assert make_model().send(PARAMS).text == "after the drop"
    assert sent(api) == 2


def test_a_refused_connection_gives_up_with_the_address(make_model: MakeModel) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    model = make_model(base_url=url, max_retries=2)
    with pytest.raises(ModelError) as caught:
        model.send(PARAMS)
    assert str(caught.value) == (
        f"cannot reach the model API at {url}: connection refused — gave up after 3 attempts")
    assert (model.attempts, model.retries) == (3, 2)


def test_no_retries_no_suffix(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.default = Reply(status=529)
    with pytest.raises(ModelError, match=r"^model API error 529 \(overloaded_error\): Overloaded$"):
        make_model(max_retries=0).send(PARAMS)
    assert sent(api) == 1


# -- failures that are not retried ---------------------------------------------------------


def test_400_is_not_retried(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.default = Reply(status=400, text="max_tokens: too large")
    with pytest.raises(ModelError) as caught:
        make_model().send(PARAMS)
    assert str(caught.value) == "model API error 400: max_tokens: too large"
    assert sent(api) == 1


@pytest.mark.parametrize("status", [403, 404, 413, 422])
def test_other_client_errors_are_not_retried(
    api: FakeMessagesAPI, make_model: MakeModel, status: int
) -> None:
    api.default = Reply(status=status, text=f"no ({status})")
    with pytest.raises(ModelError) as caught:
        make_model().send(PARAMS)
    assert str(caught.value) == f"model API error {status}: no ({status})"
    assert sent(api) == 1


def test_401_is_not_retried_and_is_remembered(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.default = Reply(status=401)
    model = make_model()
    refused = "the API key was refused (401): invalid x-api-key"
    with pytest.raises(ModelError, match=r"^the API key was refused \(401\): invalid x-api-key$"):
        model.send(PARAMS)
    assert sent(api) == 1
    api.default = "would have worked"
    with pytest.raises(ModelError) as caught:
        model.complete(REQUEST)
    assert str(caught.value) == refused
    assert sent(api) == 1


def test_concurrent_calls_during_a_401_send_one_request(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.default = Reply(status=401, delay=0.3)
    model = make_model()
    results = in_threads(8, lambda: model.send(PARAMS))
    assert all(isinstance(r, ModelError) and "(401)" in str(r) for r in results), results
    assert sent(api) == 1
    assert model.attempts == 1


def test_until_the_key_is_accepted_one_request_goes_alone(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.default = Reply(text="slow", delay=0.3)
    model = make_model()
    results = in_threads(4, lambda: model.send(PARAMS))
    assert [r.text for r in results if isinstance(r, ModelReply)] == ["slow"] * 4
    first, *rest = api.message_requests()
    # the others were held until the first was answered, then went side by side
    assert all(r.received_at >= first.received_at + 0.3 for r in rest)
    assert api.max_in_flight > 1


def test_a_5xx_does_not_settle_the_key(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    api.script([Reply(status=503), Reply(status=401)])
    model = make_model()
    with pytest.raises(ModelError, match=r"\(401\)"):
        model.send(PARAMS)
    assert sent(api) == 2


# -- rate limits ---------------------------------------------------------------------------


def test_an_exhausted_request_limit_holds_the_next_request_until_the_reset(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    reset_mono, reset_wall = time.monotonic() + 0.3, time.time() + 0.3
    api.script([
        Reply(text="first", headers={
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": rfc3339(reset_wall),
        }),
        "second",
    ])
    model = make_model()
    assert model.send(PARAMS).text == "first"
    assert model.send(PARAMS).text == "second"
    second = api.message_requests()[1]
    assert second.received_at >= reset_mono - 0.01  # the server's clock: an ordering check
    assert model.gate.pauses == 1
    assert model.retries == 0


def test_nearly_exhausted_tokens_hold_too(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    reset_mono, reset_wall = time.monotonic() + 0.3, time.time() + 0.3
    api.script([
        Reply(text="first", headers={
            "anthropic-ratelimit-input-tokens-limit": "400000",
            "anthropic-ratelimit-input-tokens-remaining": "1000",  # 0.25 %
            "anthropic-ratelimit-input-tokens-reset": rfc3339(reset_wall),
        }),
        "second",
    ])
    model = make_model()
    assert [model.send(PARAMS).text for _ in range(2)] == ["first", "second"]
    assert api.message_requests()[1].received_at >= reset_mono - 0.01


def test_plenty_left_holds_nothing(api: FakeMessagesAPI, make_model: MakeModel) -> None:
    model = make_model()
    for _ in range(3):
        model.send(PARAMS)
    assert model.gate.pauses == 0  # the fake API's default headers leave 3999 of 4000


def test_a_retry_after_pause_holds_every_later_call(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    api.script([Reply(status=429, headers={"retry-after": "0.4"}), "other call"])
    model = make_model(max_retries=0)
    with pytest.raises(ModelError, match=r"^model API error 429 \(rate_limit_error\)"):
        model.send(PARAMS)
    refused = api.message_requests()[0]
    assert model.send(PARAMS).text == "other call"  # another caller, same model
    assert api.message_requests()[1].received_at >= refused.received_at + 0.4


def test_a_retry_after_pause_holds_every_thread(
    api: FakeMessagesAPI, make_model: MakeModel
) -> None:
    model = make_model(max_retries=0)
    model.send(PARAMS)  # the key is known: the threads below run side by side
    api.script([Reply(status=429, headers={"retry-after-ms": "400"})])
    with pytest.raises(ModelError, match=r"^model API error 429"):
        model.send(PARAMS)
    refused = api.message_requests()[-1]
    results = in_threads(4, lambda: model.send(PARAMS))
    assert [r.text for r in results if isinstance(r, ModelReply)] == ["ok"] * 4
    later = api.message_requests()[2:]
    assert len(later) == 4
    assert all(r.received_at >= refused.received_at + 0.4 for r in later)


def test_close_wakes_calls_held_by_the_gate(make_model: MakeModel, api: FakeMessagesAPI) -> None:
    model = make_model()
    model.gate.hold(50, "a long pause")
    results: list[BaseException] = []

    def call() -> None:
        try:
            model.send(PARAMS)
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)
    model.close()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert [str(e) for e in results] == ["the model client was closed"]
    assert sent(api) == 0


# -- header parsing ------------------------------------------------------------------------


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 7, UTC), usegmt=True)
    assert retry_after({}, now) is None
    assert retry_after({"retry-after": "3"}, now) == 3.0
    assert retry_after({"retry-after": "1.5"}, now) == 1.5
    assert retry_after({"retry-after": date}, now) == 7.0
    assert retry_after({"retry-after": "-4"}, now) == 0.0
    assert retry_after({"retry-after": "soon"}, now) is None
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert retry_after({"retry-after-ms": "x", "retry-after": "9"}, now) == 9.0


def test_parse_rfc3339() -> None:
    assert parse_rfc3339("2024-01-01T00:00:00Z") == 1704067200.0
    assert parse_rfc3339("2024-01-01T01:00:00.5+01:00") == 1704067200.5
    assert parse_rfc3339("2024-01-01T00:00:00") is None  # no zone: ambiguous
    assert parse_rfc3339("tomorrow") is None


# -- RateGate, with a fake clock -----------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.mono = 100.0
        self.epoch = 1_700_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.epoch

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds
        self.epoch += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def gate_for(fake: FakeTime, **kwargs: Any) -> RateGate:
    return RateGate(clock=fake.clock, wall=fake.wall, sleep=fake.sleep, **kwargs)


def limits(
    fake: FakeTime, kind: str, remaining: int, limit: int | None, in_s: float
) -> dict[str, str]:
    headers = {
        f"anthropic-ratelimit-{kind}-remaining": str(remaining),
        f"anthropic-ratelimit-{kind}-reset": rfc3339(fake.epoch + in_s),
    }
    if limit is not None:
        headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
    return headers


def test_an_open_gate_does_not_sleep(fake: FakeTime) -> None:
    gate = gate_for(fake)
    assert gate.wait() == 0.0
    assert fake.slept == []


def test_remaining_zero_holds_until_the_reset(fake: FakeTime) -> None:
    gate = gate_for(fake)
    assert gate.observe(limits(fake, "requests", 0, 50, 12)) == pytest.approx(12)
    assert gate.reason == "requests rate limit: 0 of 50 left"
    assert gate.wait() == pytest.approx(12)
    assert gate.wait() == 0.0


def test_below_the_headroom_holds(fake: FakeTime) -> None:
    gate = gate_for(fake, headroom=0.05)
    assert gate.observe(limits(fake, "output-tokens", 3999, 80000, 5)) == pytest.approx(5)
    assert gate.observe(limits(fake, "output-tokens", 4000, 80000, 9)) == 0.0  # exactly 5 %
    assert gate.remaining() == pytest.approx(5)


def test_plenty_remaining_or_no_limit_known_holds_nothing(fake: FakeTime) -> None:
    gate = gate_for(fake)
    assert gate.observe(limits(fake, "tokens", 399999, 400000, 60)) == 0.0
    assert gate.observe(limits(fake, "tokens", 3, None, 60)) == 0.0  # no limit: only 0 counts
    assert gate.observe({"anthropic-ratelimit-requests-remaining": "0"}) == 0.0  # no reset
    assert gate.observe(limits(fake, "requests", 0, 50, -3)) == 0.0  # reset already past
    assert gate.wait() == 0.0


def test_pauses_are_capped(fake: FakeTime) -> None:
    gate = gate_for(fake, max_pause=60)
    assert gate.observe(limits(fake, "requests", 0, 50, 3600)) == 60
    assert gate.hold(1000, "retry-after") == 60
    assert gate.wait() == pytest.approx(60)


def test_pauses_only_extend(fake: FakeTime) -> None:
    gate = gate_for(fake)
    gate.hold(10, "long")
    gate.hold(2, "short")
    assert gate.reason == "long"
    assert gate.remaining() == pytest.approx(10)
    fake.sleep(4)
    gate.hold(8, "longer")
    assert gate.reason == "longer"
    assert gate.wait() == pytest.approx(8)
    assert gate.waited == pytest.approx(8)


def test_the_longest_of_several_limits_wins(fake: FakeTime) -> None:
    gate = gate_for(fake)
    headers = {**limits(fake, "requests", 0, 50, 3), **limits(fake, "input-tokens", 0, 1000, 20)}
    assert gate.observe(headers) == pytest.approx(20)
    assert gate.wait() == pytest.approx(20)


def test_a_closed_gate_lets_waiters_go(fake: FakeTime) -> None:
    gate = gate_for(fake)
    gate.hold(30, "pause")
    gate.close()
    assert gate.wait() == 0.0
    assert fake.slept == []
