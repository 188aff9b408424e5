"""The model: every request to the Messages API goes through :meth:`AnthropicModel.send`.

The official ``anthropic`` SDK does the talking (it honours ``ANTHROPIC_API_KEY`` and
``ANTHROPIC_BASE_URL`` as it always does) and the retrying; its errors are translated here,
at the edge, into :class:`~vaultd.errors.ModelError` with one line a person can act on.
One client, with one policy, serves the single requests and the Message Batches alike.

The SDK retries by its own policy (``max_retries``, from ``model_retries``): 408, 409, 429,
5xx (529 included), timeouts and dropped or refused connections, after exactly the pause the
API asks for (``retry-after-ms`` / ``retry-after``) or else an exponential backoff with
jitter; the API's ``x-should-retry`` wins; other 4xx fail at once. vaultd adds, in the
client's middleware (run by the SDK once per HTTP attempt), only what the SDK cannot do
across threads:

* a :class:`RateGate` shared by all threads reads the ``anthropic-ratelimit-*`` headers of every
  reply and holds new requests while a limit is (nearly) used up, until it resets; a pause the
  API asks for in a ``retry-after`` is waited out by every thread, not only the one refused;
* a refused key (401), or an API that cannot be connected to (after every retry), is an
  outage: later calls fail at once with :class:`~vaultd.errors.ModelUnavailable` until a
  back-off has passed (``outage_backoff`` seconds, doubling up to ``outage_cap``), then one
  request finds out whether it is over; until the API has accepted the key once, only one
  request is in flight, so a bad key costs exactly one request per back-off;
* a deadline for each whole HTTP attempt (``model_timeout``), kept by a watchdog.

(The limit on model requests in flight is :class:`~vaultd.evaluate.runner.ModelSlots`.)
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from vaultd.edges.provider import (
    RATE_LIMIT_KINDS as RATE_LIMIT_KINDS,
)
from vaultd.edges.provider import (
    REDACTED as REDACTED,
)
from vaultd.edges.provider import (
    Outages,
    _cannot_connect,
    _connection_cause,
    _Deadlines,
    _redirected_to,
    _secrets,
    answered,
)
from vaultd.edges.provider import (
    RateGate as RateGate,
)
from vaultd.edges.provider import (
    parse_rfc3339 as parse_rfc3339,
)
from vaultd.edges.provider import (
    redact as redact,
)
from vaultd.edges.provider import (
    retry_after as retry_after,
)
from vaultd.errors import ModelError, ModelUnavailable, did_you_mean, one_line
from vaultd.evaluate.ask import ModelReply, ModelRequest

if TYPE_CHECKING:
    import anthropic

_T = TypeVar("_T")

NO_KEY = "no API key (set ANTHROPIC_API_KEY)"
CLOSED = "the model client was closed"


def request_params(request: ModelRequest) -> dict[str, Any]:
    """The exact Messages API parameters for ``request``: what decides the reply."""
    content: list[dict[str, Any]] = []
    if request.context is not None:
        text = f"<context>\n{request.context}\n</context>"
        block: dict[str, Any] = {"type": "text", "text": text}
        if request.cache_context:
            block["cache_control"] = {"type": "ephemeral"}
        content.append(block)
    content.append({"type": "text", "text": request.prompt})
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": "user", "content": content}],
    }
    if request.system:
        params["system"] = request.system
    return params


def known_models() -> frozenset[str]:
    """The model names the installed anthropic SDK lists (the ``Literal`` in
    ``anthropic.types.ModelParam``); empty when they cannot be read.

    Only that one small module is loaded, from its file: importing ``anthropic`` itself
    takes seconds, and only ``vaultd check`` asks."""
    import importlib.util
    import typing

    try:
        spec = importlib.util.find_spec("anthropic")  # found, not imported
        folders = spec.submodule_search_locations if spec else None
        if not folders:
            return frozenset()
        path = os.path.join(next(iter(folders)), "types", "model_param.py")
        loader = importlib.util.spec_from_file_location("vaultd._sdk_model_param", path)
        if loader is None or loader.loader is None:
            return frozenset()
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        alias = module.ModelParam
    except Exception:  # an SDK laid out otherwise: no names, so no warnings
        return frozenset()
    names: set[str] = set()
    stack = [alias]
    while stack:
        for arg in typing.get_args(stack.pop()):
            if isinstance(arg, str):
                names.add(arg)
            else:
                stack.append(arg)
    return frozenset(names)


def unknown_model(name: str, known: frozenset[str]) -> str | None:
    """A warning when ``known`` (from :func:`known_models`) does not list ``name``."""
    if not known or name in known:
        return None
    hint = did_you_mean(name, sorted(known))
    return f"`{name}` is not a model the installed anthropic SDK knows" + (
        f" ({hint})" if hint else "")


def credentials_problem() -> str | None:
    """None when the SDK finds a key, token or profile here; else what is missing or wrong."""
    for what in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        problem = _unsendable(what, os.environ.get(what))
        if problem:
            return problem
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return None  # the common case, known without importing the SDK (a second's import)
    import anthropic

    try:
        client = anthropic.Anthropic()
    except anthropic.AnthropicError as exc:
        return f"no usable API credentials: {' '.join(str(exc).split())}"
    try:
        for what, value in (("ANTHROPIC_API_KEY", client.api_key),
                            ("ANTHROPIC_AUTH_TOKEN", client.auth_token)):
            problem = _unsendable(what, value)
            if problem:
                return problem
        found = client.api_key or client.auth_token or client.credentials
        return None if found else NO_KEY
    finally:
        client.close()


def _unsendable(what: str, secret: object) -> str | None:
    """What is wrong with a key that httpx would refuse as a header value (quoting the key
    whole in its error message, which would then be written into notes and logs)."""
    if not isinstance(secret, str) or not secret:
        return None
    if all(ch.isprintable() and not ch.isspace() for ch in secret):
        return None
    return (f"the key in {what} has a space, a line break or another control character in "
            "it: remove it")



class NoKeyModel:
    """Stands in when there is no API key: every request fails with the same clear line."""

    def __init__(self, problem: str = NO_KEY) -> None:
        self.problem = problem

    def complete(self, request: ModelRequest) -> ModelReply:
        raise ModelUnavailable(self.problem)

    def unavailable(self, model: str | None = None) -> str | None:
        return self.problem

    def answering(self) -> bool:
        return False


# -- the model -----------------------------------------------------------------------------


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return one_line(error["message"], 300)
    return one_line(str(exc.message), 300)


def _error_type(exc: anthropic.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return str(error["type"])
    return None



MALFORMED = "the model API sent a malformed reply"


def _count(usage: object, name: str) -> int:
    value = getattr(usage, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _read_message(message: object, model: str) -> ModelReply:
    """The reply in a parsed 200 response; :class:`ValueError` saying why it is not a message.

    The SDK parses leniently (a body of the wrong shape still "parses"), so every field
    vaultd uses is checked here, at the edge, rather than trusted further in."""
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        raise ValueError("not a message (no content list)")
    texts: list[str] = []
    for block in content:
        if getattr(block, "type", None) != "text":
            continue
        text = getattr(block, "text", None)
        if not isinstance(text, str):
            raise ValueError("a text block without text")
        texts.append(text)
    usage = getattr(message, "usage", None)
    stop = getattr(message, "stop_reason", None)
    named = getattr(message, "model", None)
    return ModelReply(
        text="".join(texts),
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        stop_reason=stop if isinstance(stop, str) else None,
        cache_read_tokens=_count(usage, "cache_read_input_tokens"),
        cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
        model=named if isinstance(named, str) and named else model,
    )


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _reply_message(response: anthropic.APIResponse[Any]) -> str:
    """The error message in an error reply's body (the API's JSON), else its text."""
    try:
        body = response.http_response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return one_line(error["message"], 300)
    return one_line(response.http_response.text or response.http_response.reason_phrase, 300)


class AnthropicModel:
    """The Messages API and the Message Batches API through the official SDK: one client,
    one retry policy, shared by every thread and by ``--batch``.

    The SDK retries, by its own policy: 408, 409, 429, 5xx (529 included), timeouts and lost
    connections, up to ``max_retries`` times, after the pause the API asks for
    (``retry-after-ms`` / ``retry-after``) or else an exponential backoff with jitter; the
    API's ``x-should-retry`` wins; other 4xx fail at once. ``timeout`` is seconds per HTTP
    attempt, for the whole request (a watchdog cuts a reply that trickles in).

    What the SDK cannot do across threads, vaultd does in the client's middleware, once per
    HTTP attempt: ``gate`` paces every thread by the rate-limit headers of every reply
    (``headroom``: the fraction of a limit kept in reserve) and holds them all for a pause
    the API asked one of them for (capped at ``max_pause``); until the API has accepted the
    key once, one request goes alone; an outage (a refused key; no connection, after every
    retry) fails every call at once for ``outage_backoff`` seconds, doubled at each outage in
    a row up to ``outage_cap``. ``attempts`` counts the HTTP requests made, ``retries``
    those that were retries.
    """

    def __init__(
        self,
        *,
        max_retries: int = 6,
        timeout: float = 120.0,
        max_pause: float = 60.0,
        headroom: float = 0.05,
        base_url: str | None = None,
        api_key: str | None = None,
        outage_backoff: float = 60.0,
        outage_cap: float = 900.0,
    ) -> None:
        self.max_retries = max(0, max_retries)
        self.timeout = timeout
        self.attempts = 0
        self.retries = 0
        self.gate = RateGate(max_pause=max_pause, headroom=headroom)
        extra: dict[str, Any] = {}
        if base_url is not None:
            extra["base_url"] = base_url
        if api_key is not None:
            extra["api_key"] = api_key
        self._client_args: dict[str, Any] = {"max_retries": self.max_retries,
                                             "timeout": timeout, **extra}
        self._client_made: anthropic.Anthropic | None = None
        self._deadlines = _Deadlines()
        # never in a message, whatever an error or a misbehaving server quotes back
        self._secrets = _secrets(api_key, os.environ.get("ANTHROPIC_API_KEY"),
                                 os.environ.get("ANTHROPIC_AUTH_TOKEN"))
        # this thread's call: ``tries``, its HTTP attempts; ``admitted``, whether it is to
        # find out about the key (until its first attempt)
        self._calls = threading.local()
        self._lock = threading.Lock()  # the counters
        self.outage_backoff = outage_backoff
        self.outage_cap = max(outage_cap, outage_backoff)
        self.outages = Outages(outage_backoff, outage_cap, closed=lambda: self.gate.closed,
                               closed_message=CLOSED)

    @property
    def base_url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def warm_up(self) -> None:
        """Make the client (importing the SDK) in the background, while other work goes on."""
        threading.Thread(target=lambda: self.client, name="vaultd-sdk-import",
                         daemon=True).start()

    @property
    def client(self) -> anthropic.Anthropic:
        """The SDK client, made (and the SDK imported: about a second) on first use, so a
        run that the response cache answers whole never pays for it."""
        with self._lock:
            if self._client_made is None:
                import anthropic

                http = anthropic.DefaultHttpxClient(event_hooks={
                    "request": [self._on_request], "response": [self._on_response]})
                self._client_made = anthropic.Anthropic(
                    **self._client_args, http_client=http, middleware=[self._each_attempt])
                self._secrets = _secrets(*self._secrets, self._client_made.api_key,
                                         self._client_made.auth_token)
            return self._client_made

    def redacted(self, text: str) -> str:
        """``text`` without the API key in it (see :func:`redact`)."""
        return redact(text, self._secrets)

    def _on_request(self, request: Any) -> None:
        """httpx's hook before each request (and each redirect): trace its connection."""
        request.extensions["trace"] = self._deadlines.trace

    def _on_response(self, response: Any) -> None:
        """httpx's hook when a reply's headers have arrived, before its body is read."""
        self._deadlines.saw(response.extensions.get("network_stream"))
        if 200 <= response.status_code < 300:  # the key is good: the others need not wait
            self.outages.accept()             # for this reply's body

    def close(self) -> None:
        """Close the client; calls waiting on a pause or on the key fail at once."""
        self._deadlines.close()
        self.gate.close()
        self.outages.wake()
        client = self._client_made  # not under the lock: an import in progress is not waited for
        if client is not None:
            client.close()

    def params(self, request: ModelRequest) -> dict[str, Any]:
        """The Messages API parameters of ``request``."""
        return request_params(request)

    def complete(self, request: ModelRequest) -> ModelReply:
        return self.send(request_params(request))

    def call(self, use: Callable[[anthropic.Anthropic], _T]) -> _T:
        """``use(client)``: one call of the SDK (its attempts and retries are the SDK's).

        Raises what the SDK raises (turn it into a message with :meth:`error_for`), or a
        :class:`~vaultd.errors.ModelError` when the client was closed or an outage is in
        force."""
        self._calls.tries = 0
        # admitted in the order the calls come, before the SDK is imported: the first call
        # is the one that finds out whether the key is good (see :meth:`_each_attempt`)
        self._calls.admitted = self.outages.admit()
        try:
            return use(self.client)
        finally:
            if self._calls.admitted:  # it made no attempt: let the next caller in
                self.outages.settle(True, accepted=False, refused=None)
            self._calls.admitted = False

    def send(self, params: dict[str, Any]) -> ModelReply:
        """One Messages API call with ``params``: the only place vaultd asks for a reply."""
        import anthropic

        try:
            message: object = self.call(lambda client: client.messages.create(**params))
        except anthropic.AnthropicError as exc:
            raise self.error_for(exc) from exc
        except ValueError as exc:  # the SDK's json.loads of a 200 reply's body
            raise ModelError(f"{MALFORMED}: the body is not JSON") from exc
        try:
            return self.reply_of(message, str(params.get("model", "")))
        except ValueError as exc:
            raise ModelError(f"{MALFORMED}: {exc}") from None

    def reply_of(self, message: object, model: str) -> ModelReply:
        """The reply in a message the API sent (alone or in a batch); :class:`ValueError`
        saying why it is not a message.

        A server (or proxy) that echoes the request's headers must not put the key into a
        note, its properties or the response cache."""
        reply = _read_message(message, model)
        return dataclasses.replace(reply, text=self.redacted(reply.text),
                                   model=self.redacted(reply.model))

    def error_for(self, exc: anthropic.AnthropicError) -> ModelError:
        """What an error of the SDK's (after its retries) means, in one line a person can
        act on; a :class:`~vaultd.errors.ModelUnavailable` for an outage (a refused key,
        an API that cannot be connected to), which then fails later calls at once."""
        import anthropic

        tries = getattr(self._calls, "tries", 0)
        gave_up = f" — gave up after {_attempts(tries)}" if tries > 1 else ""
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status == 401:  # the outage began in the middleware
                return ModelUnavailable(
                    self.redacted(f"the API key was refused (401): {_message(exc)}"))
            if not self._retried(exc):
                return ModelError(self.redacted(f"model API error {status}: {_message(exc)}"))
            kind = _error_type(exc)
            named = f"{status} ({kind})" if kind else str(status)
            return ModelError(self.redacted(f"model API error {named}: {_message(exc)}{gave_up}"))
        if isinstance(exc, anthropic.APITimeoutError):
            return ModelError(f"the model API did not answer within {self.timeout:g} s{gave_up}")
        if isinstance(exc, anthropic.APIConnectionError):
            cause = _connection_cause(exc)
            where = self.base_url
            elsewhere = _redirected_to(exc, where)
            if elsewhere:  # the SDK follows redirects: name the address that failed
                cause = f"it redirected to {elsewhere}: {cause}"
            message = self.redacted(f"cannot reach the model API at {where}: {cause}{gave_up}")
            if _cannot_connect(exc):
                self.outages.begin(message)
                return ModelUnavailable(message)
            return ModelError(message)
        return ModelError(self.redacted(f"model request failed: {one_line(str(exc), 300)}"))

    def _retried(self, exc: anthropic.APIStatusError) -> bool:
        """Whether the SDK's policy retries a reply like this one (it was retried, unless
        ``max_retries`` is 0 or used up)."""
        should = getattr(self.client, "_should_retry", None)
        return bool(should(exc.response)) if callable(should) else False

    # -- the middleware: once per HTTP attempt, inside the SDK's retry loop ---------------

    def _each_attempt(
        self,
        request: anthropic.APIRequest,
        call_next: Callable[[anthropic.APIRequest], anthropic.APIResponse[Any]],
    ) -> anthropic.APIResponse[Any]:
        """Send one attempt once the key and the gate allow it, and learn from its reply."""
        import anthropic

        probe = True if getattr(self._calls, "admitted", False) else self.outages.admit()
        self._calls.admitted = False
        accepted = False
        refused: str | None = None
        try:
            self.gate.wait()
            if self.gate.closed:
                raise ModelError(CLOSED)
            self._calls.tries = request.retries_taken + 1
            with self._lock:
                self.attempts += 1
                self.retries += 1 if request.retries_taken else 0
            ticket = self._deadlines.start(self.timeout)  # the whole request, not each read
            try:
                response = call_next(request)
            except anthropic.APIConnectionError as exc:
                if ticket.expired and not isinstance(exc, anthropic.APITimeoutError):
                    # the watchdog cut the connection at the deadline: a timeout, to the SDK too
                    raise anthropic.APITimeoutError(request=exc.request) from exc
                raise
            finally:
                ticket.finish()
            status = response.status_code
            self.gate.observe(response.headers)
            if status == 401:
                refused = self.redacted(
                    f"the API key was refused (401): {_reply_message(response)}")
            else:
                accepted = answered(self.gate, status, response.headers)
            return response
        finally:
            self.outages.settle(probe, accepted=accepted, refused=refused)

    # -- the key, and outages ---------------------------------------------------------

    def unavailable(self, model: str | None = None) -> str | None:
        """Why no request can be made now (an outage in force), or None."""
        return self.outages.unavailable()

    def answering(self) -> bool:
        return self.outages.answering()
