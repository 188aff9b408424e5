"""An assistant behind an OpenAI-compatible Chat Completions API (OpenAI, Ollama, vLLM,
LM Studio, OpenRouter, Gemini's compatible endpoint): every request goes through
:meth:`OpenAIModel.send`.

The official ``openai`` SDK does the talking and the retrying, and is imported only when
the first request is made. Its policy: 408, 409, 429, 5xx, timeouts and lost connections
are retried up to ``max_retries`` times, after the pause the API asks for
(``retry-after-ms`` / ``retry-after``, up to two minutes) or else an exponential backoff
with jitter; the API's ``x-should-retry`` wins; other 4xx fail at once. The SDK has no
middleware: vaultd's part runs in :meth:`httpx2.Client.send` of the client it is given,
which the SDK calls once per HTTP attempt, inside its retry loop:

* a :class:`~vaultd.edges.provider.RateGate` shared by this assistant's threads reads the
  ``x-ratelimit-*`` headers of every reply (``x-ratelimit-remaining-requests``, with its
  ``x-ratelimit-reset-requests`` duration such as ``6m0s``; the same for tokens) and holds
  new requests while a limit is (nearly) used up; a pause the API asks one thread for, in a
  ``retry-after``, is waited out by every thread;
* :class:`~vaultd.edges.provider.Outages`: a refused key (401), or an API that cannot be
  connected to (after every retry), fails later calls at once with
  :class:`~vaultd.errors.ModelUnavailable` for a back-off;
* a deadline for each whole HTTP attempt (``timeout``), kept by a watchdog;
* ``concurrency``: this assistant's own limit on requests in flight.

Errors are translated here, at that one boundary, into one line prefixed by the
assistant's name (``gpt: 401 invalid API key: ...``, ``local-llama: connection refused at
http://127.0.0.1:11434/v1``), with the key taken out of every message and reply.

The key is read only from the variable ``api_key_env`` names; an empty name means none is
needed (a local server), and the SDK, which insists on one, is given ``none``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from vaultd.edges.provider import (
    Outages,
    RateGate,
    _cannot_connect,
    _connection_cause,
    _Deadlines,
    _int,
    _secrets,
    answered,
    redact,
)
from vaultd.errors import ModelError, ModelUnavailable, one_line
from vaultd.evaluate.ask import ModelReply, ModelRequest

if TYPE_CHECKING:
    import httpx2
    import openai

_T = TypeVar("_T")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY_PLACEHOLDER = "none"  # sent where no key is needed: the SDK insists on one
CLOSED = "the model client was closed"

# finish_reason -> vaultd's (the Messages API's) stop reasons
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal",
                "tool_calls": "tool_use", "function_call": "tool_use"}

RATE_LIMIT_KINDS = ("requests", "tokens")

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float | None:
    """Seconds in an OpenAI reset duration (``6m0s``, ``1s``, ``20ms``, ``1h2m3.5s``), or a
    bare number of seconds; None when it is neither."""
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    if not text or _DURATION.sub("", text):
        return None
    return sum(float(n) * _UNIT[unit] for n, unit in _DURATION.findall(text))


def observe_rate_limits(gate: RateGate, headers: Mapping[str, str]) -> float:
    """Read a reply's ``x-ratelimit-*`` headers into ``gate``: when a ``remaining`` count is
    0, or below the gate's headroom of its ``limit``, new requests are held until its
    ``reset`` (a duration from now). Returns the pause started (0 if none)."""
    longest = 0.0
    for kind in RATE_LIMIT_KINDS:
        remaining = _int(headers.get(f"x-ratelimit-remaining-{kind}"))
        if remaining is None:
            continue
        limit = _int(headers.get(f"x-ratelimit-limit-{kind}"))
        low = remaining <= 0 or (limit is not None and remaining < gate.headroom * limit)
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if not low or reset is None:
            continue
        reason = f"{kind} rate limit: {remaining} of {limit if limit is not None else '?'} left"
        longest = max(longest, gate.hold(reset, reason))
    return longest


def is_openai(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's own API (not a compatible server)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".openai.com")


def _retries(n: int) -> str:
    return f"{n} retry" if n == 1 else f"{n} retries"


def _body_message(exc: openai.APIStatusError) -> str:
    """The error message the API sent (``{"error": {"message": ...}}``), else the SDK's."""
    body = exc.body  # the SDK hands over the inner ``error`` object
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return one_line(inner["message"], 300)
    if isinstance(body, str) and body.strip():
        return one_line(body, 300)
    return one_line(exc.response.reason_phrase or "", 300)


def _reply_message(response: httpx2.Response) -> str:
    """The error message in an error reply's body (read already), else its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return one_line(error["message"], 300)
    return one_line(response.text or response.reason_phrase, 300)


def _count(usage: object, name: str) -> int:
    value = getattr(usage, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read_completion(completion: object, model: str) -> ModelReply:
    """The reply in a parsed 200 response; :class:`ValueError` saying why it is not one.

    The SDK parses leniently (a body of the wrong shape still "parses", a body that is not
    JSON comes back as its text), so every field used is checked here. ``prompt_tokens``
    counts the prompt tokens read from OpenAI's prompt cache too: those are split off into
    ``cache_read_tokens``, as the Messages API reports them, so that they are priced once."""
    if isinstance(completion, str):
        raise ValueError("not JSON")
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is None:  # a refusal, or a reply with tool calls only
        content = getattr(message, "refusal", None) or ""
    if not isinstance(content, str):
        raise ValueError("a choice without text")
    finish = getattr(choices[0], "finish_reason", None)
    usage = getattr(completion, "usage", None)
    cached = _count(getattr(usage, "prompt_tokens_details", None), "cached_tokens")
    prompt = _count(usage, "prompt_tokens")
    named = getattr(completion, "model", None)
    return ModelReply(
        text=content,
        input_tokens=max(0, prompt - cached),
        output_tokens=_count(usage, "completion_tokens"),
        stop_reason=STOP_REASONS.get(finish, finish) if isinstance(finish, str) else None,
        cache_read_tokens=min(cached, prompt),
        model=named if isinstance(named, str) and named else model,
    )


class OpenAIModel:
    """One assistant behind an OpenAI-compatible Chat Completions API, through the official
    ``openai`` SDK: one client, one retry policy, shared by every thread.

    ``name`` is the assistant's (every message starts with it); ``model`` the model the API
    is asked for; ``base_url`` the API's (when None: ``OPENAI_BASE_URL`` where it is set, as
    the SDK reads it, else OpenAI's); ``api_key_env`` the name of the
    variable that holds the key (``""``: none needed); ``system`` a system prompt sent
    before every request; ``max_retries`` and ``timeout`` (seconds for each whole HTTP
    attempt) the SDK's; ``concurrency`` this assistant's limit on requests in flight (None:
    no limit of its own); ``max_pause``, ``headroom``, ``outage_backoff`` and ``outage_cap``
    as for :class:`~vaultd.edges.model.AnthropicModel`. ``token_limit`` is the parameter
    that carries ``max_tokens`` (see :meth:`params`). ``attempts`` counts the HTTP requests
    made, ``retries`` those that were retries.
    """

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        system: str | None = None,
        max_retries: int = 6,
        timeout: float = 120.0,
        concurrency: int | None = None,
        max_pause: float = 60.0,
        headroom: float = 0.05,
        outage_backoff: float = 60.0,
        outage_cap: float = 900.0,
        token_limit: str | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.system = system or None
        self.max_retries = max(0, max_retries)
        self.timeout = timeout
        self.concurrency = concurrency
        # OpenAI's own API takes ``max_completion_tokens`` (its reasoning models refuse
        # ``max_tokens``, deprecated there); the compatible servers all take ``max_tokens``
        # and not all of them know the newer name
        self.token_limit = token_limit or (
            "max_completion_tokens" if is_openai(self.base_url) else "max_tokens")
        self.attempts = 0
        self.retries = 0
        self.gate = RateGate(max_pause=max_pause, headroom=headroom)
        self.outages = Outages(outage_backoff, outage_cap, closed=lambda: self.gate.closed,
                               closed_message=self._named(CLOSED))
        self._key: str | None = os.environ.get(api_key_env) if api_key_env else None
        self._problem = self._key_problem()
        self._secrets = _secrets(self._key)  # never in a message, whatever a server echoes
        self._slots: threading.BoundedSemaphore | None = (
            threading.BoundedSemaphore(concurrency) if concurrency and concurrency > 0 else None)
        self._deadlines = _Deadlines()
        self._calls = threading.local()  # this thread's call: ``tries``, ``admitted``
        self._lock = threading.Lock()  # the client, the counters
        self._client_made: openai.OpenAI | None = None

    def _named(self, message: str) -> str:
        return f"{self.name}: {message}"

    def _key_problem(self) -> str | None:
        if not self.api_key_env:
            return None
        if not self._key:
            return self._named(f"no API key (set {self.api_key_env})")
        if not all(ch.isprintable() and not ch.isspace() for ch in self._key):
            return self._named(f"the key in {self.api_key_env} has a space, a line break or "
                               "another control character in it: remove it")
        return None

    # -- what is sent -----------------------------------------------------------------

    def params(self, request: ModelRequest) -> dict[str, Any]:
        """The exact Chat Completions parameters for ``request``: what decides the reply.

        The user message is the ``<context>…</context>`` block (when there is a context)
        and the prompt, as :func:`~vaultd.edges.model.request_params` sends them, in one
        string (every compatible server takes a string; not all take content parts). The
        assistant's model and system prompt are sent, not ``request.model``."""
        user = request.prompt
        if request.context is not None:
            user = f"<context>\n{request.context}\n</context>\n\n{request.prompt}"
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": user})
        return {"model": self.model, self.token_limit: request.max_tokens,
                "messages": messages}

    def complete(self, request: ModelRequest) -> ModelReply:
        return self.send(self.params(request))

    # -- the client ---------------------------------------------------------------------

    def warm_up(self) -> None:
        """Make the client (importing the SDK) in the background, while other work goes on."""
        if self._problem is None:
            threading.Thread(target=lambda: self.client, name="vaultd-openai-import",
                             daemon=True).start()

    @property
    def client(self) -> openai.OpenAI:
        """The SDK client, made (and the SDK imported) on first use."""
        with self._lock:
            if self._client_made is None:
                import openai

                http = _attempt_client_class()(
                    owner=self, event_hooks={"request": [self._on_request],
                                             "response": [self._on_response]})
                self._client_made = openai.OpenAI(
                    api_key=self._key if self.api_key_env else NO_KEY_PLACEHOLDER,
                    base_url=self.base_url, max_retries=self.max_retries,
                    timeout=self.timeout, http_client=http)
            return self._client_made

    def redacted(self, text: str) -> str:
        """``text`` without the API key in it (see :func:`~vaultd.edges.provider.redact`)."""
        return redact(text, self._secrets)

    def close(self) -> None:
        """Close the client; calls waiting on a pause or on the key fail at once."""
        self._deadlines.close()
        self.gate.close()
        self.outages.wake()
        client = self._client_made
        if client is not None:
            client.close()

    # -- a request ----------------------------------------------------------------------

    def send(self, params: dict[str, Any]) -> ModelReply:
        """One Chat Completions call with ``params``: the only place this assistant is asked.

        Raises :class:`~vaultd.errors.ModelError` (or :class:`~vaultd.errors.ModelUnavailable`)
        with one line, prefixed by the assistant's name, the key never in it."""
        if self._problem is not None:
            raise ModelUnavailable(self._problem)
        slot: AbstractContextManager[Any] = self._slots if self._slots else nullcontext()
        with slot:
            return self._send(params)

    def _send(self, params: dict[str, Any]) -> ModelReply:
        import openai

        try:
            completion: object = self.call(
                lambda client: client.chat.completions.create(**params))
        except openai.OpenAIError as exc:
            raise self.error_for(exc) from exc
        except ValueError as exc:  # the SDK's json.loads of a 200 reply's body
            raise ModelError(self._named("the reply was not valid JSON")) from exc
        try:
            reply = read_completion(completion, str(params.get("model", "")))
        except ValueError as exc:
            what = ("the reply was not valid JSON" if str(exc) == "not JSON"
                    else f"the reply was malformed: {exc}")
            raise ModelError(self._named(what)) from None
        # a server (or proxy) that echoes the request's headers must not put the key into
        # a note, its properties or the response cache
        return dataclasses.replace(reply, text=self.redacted(reply.text),
                                   model=self.redacted(reply.model))

    def call(self, use: Callable[[openai.OpenAI], _T]) -> _T:
        """``use(client)``: one call of the SDK (its attempts and retries are the SDK's)."""
        self._calls.tries = 0
        self._calls.admitted = self.outages.admit()  # in the order calls come
        try:
            return use(self.client)
        finally:
            if self._calls.admitted:  # it made no attempt: let the next caller in
                self.outages.settle(True, accepted=False, refused=None)
            self._calls.admitted = False

    def error_for(self, exc: openai.OpenAIError) -> ModelError:
        """What an error of the SDK's (after its retries) means, in one line; a
        :class:`~vaultd.errors.ModelUnavailable` for an outage (a refused key, an API that
        cannot be connected to), which then fails later calls at once."""
        import openai

        tries = getattr(self._calls, "tries", 0)
        after = f" (after {_retries(tries - 1)})" if tries > 1 else ""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = _body_message(exc)
            said = f": {message}" if message else ""
            if status == 401:  # the outage began in the attempt
                return ModelUnavailable(self.redacted(self._named(f"401 invalid API key{said}")))
            what = {403: "permission denied", 404: "not found", 429: "rate limited"}.get(
                status, "server error" if status >= 500 else "request refused")
            return ModelError(self.redacted(self._named(f"{status} {what}{after}{said}")))
        if isinstance(exc, openai.APITimeoutError):
            return ModelError(self._named(
                f"no answer within {self.timeout:g} s from {self.base_url}{after}"))
        if isinstance(exc, openai.APIConnectionError):
            cause = _connection_cause(exc)
            if _cannot_connect(exc):
                message = self.redacted(self._named(f"{cause} at {self.base_url}"))
                self.outages.begin(message)
                return ModelUnavailable(message)
            return ModelError(self.redacted(self._named(
                f"connection lost at {self.base_url}: {cause}{after}")))
        return ModelError(self.redacted(self._named(
            f"request failed: {one_line(str(exc), 300)}")))

    # -- once per HTTP attempt, inside the SDK's retry loop ---------------------------

    def _on_request(self, request: httpx2.Request) -> None:
        """httpx's hook before each request (and each redirect): trace its connection."""
        request.extensions["trace"] = self._deadlines.trace

    def _on_response(self, response: httpx2.Response) -> None:
        """httpx's hook when a reply's headers have arrived, before its body is read."""
        self._deadlines.saw(response.extensions.get("network_stream"))
        if 200 <= response.status_code < 300:  # the key is good: the others need not wait
            self.outages.accept()

    def _each_attempt(self, request: httpx2.Request,
                      send: Callable[[], httpx2.Response]) -> httpx2.Response:
        """Send one attempt once the key and the gate allow it, and learn from its reply."""
        import httpx2

        probe = True if getattr(self._calls, "admitted", False) else self.outages.admit()
        self._calls.admitted = False
        accepted = False
        refused: str | None = None
        try:
            self.gate.wait()
            if self.gate.closed:
                raise ModelError(self._named(CLOSED))
            retried = _int(request.headers.get("x-stainless-retry-count")) or 0
            self._calls.tries = retried + 1
            with self._lock:
                self.attempts += 1
                self.retries += 1 if retried else 0
            ticket = self._deadlines.start(self.timeout)  # the whole request, not each read
            try:
                response = send()
            except httpx2.TransportError as exc:
                if ticket.expired and not isinstance(exc, httpx2.TimeoutException):
                    # the watchdog cut the connection at the deadline: a timeout, to the SDK too
                    raise httpx2.ReadTimeout("the deadline passed", request=request) from exc
                raise
            finally:
                ticket.finish()
            status = response.status_code
            observe_rate_limits(self.gate, response.headers)
            if status == 401:
                response.read()
                refused = self.redacted(self._named(
                    f"401 invalid API key: {_reply_message(response)}"))
            else:
                accepted = answered(self.gate, status, response.headers)
            return response
        finally:
            self.outages.settle(probe, accepted=accepted, refused=refused)

    # -- the key, and outages ---------------------------------------------------------

    def unavailable(self, model: str | None = None) -> str | None:
        """Why no request can be made now (no key; an outage in force), or None."""
        return self._problem or self.outages.unavailable()

    def answering(self) -> bool:
        return self.outages.answering()


_ATTEMPT_CLIENT: type[Any] | None = None


def _attempt_client_class() -> type[Any]:
    """The SDK's httpx client, whose ``send`` (called by the SDK once per attempt) goes
    through :meth:`OpenAIModel._each_attempt`. Made when the first client is, so that
    importing this module imports neither the SDK nor httpx."""
    global _ATTEMPT_CLIENT
    if _ATTEMPT_CLIENT is None:
        import openai

        class AttemptClient(openai.DefaultHttpxClient):
            def __init__(self, *, owner: OpenAIModel, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self._vaultd_owner = owner

            def send(self, request: httpx2.Request, *args: Any,
                     **kwargs: Any) -> httpx2.Response:
                def attempt() -> httpx2.Response:
                    return super(AttemptClient, self).send(request, *args, **kwargs)
                return self._vaultd_owner._each_attempt(request, attempt)

        _ATTEMPT_CLIENT = AttemptClient
    return _ATTEMPT_CLIENT
