"""A real HTTP server that speaks the Anthropic Messages API wire format.

Tests and benchmarks point the real ``anthropic`` SDK at it (``base_url=api.url`` or
``ANTHROPIC_BASE_URL``); nothing in the SDK is mocked.  Replies are scripted per request::

    with FakeMessagesAPI() as api:
        api.rule("capital of France", "Paris")
        api.script([Reply(status=429, headers={"retry-after": "0"}), "ok"])
        client = anthropic.Anthropic(api_key="test-key", base_url=api.url)

Endpoints: ``POST /v1/messages`` (non-streaming), ``POST /v1/messages/count_tokens`` and the
Message Batches API (``/v1/messages/batches``: create, list, retrieve, results, cancel, delete).

Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "BatchRecord",
    "FakeMessagesAPI",
    "Reply",
    "Request",
    "Responder",
    "estimate_tokens",
    "held",
    "request_text",
]

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DEFAULT_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "The requested resource could not be found.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "timeout_error": "Request timed out.",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
}

_REASONS: dict[int, str] = {529: "Site Overloaded"}


@dataclass
class Reply:
    """How the fake API answers one request.

    ``status`` < 400 produces a Message (``text`` is its single text block); ``status`` >= 400
    produces the API's error JSON, with ``text`` (if given) as the error message. ``body`` replaces
    the generated JSON entirely (a dict is JSON-encoded, bytes are sent verbatim). ``headers`` are
    added to (and override) the generated ones. ``delay`` seconds pass before answering (cut short
    by ``close()``); ``drop`` closes the connection without sending any response; ``cut`` sends
    the status line, the headers (with the full ``content-length``) and only the first ``cut``
    bytes of the body, then resets the connection (TCP RST), as a crashing proxy does.
    ``trickle`` sends the headers (with the full ``content-length``), then the body one byte
    every ``trickle`` seconds (until it is all sent, the client hangs up, or ``close()``).
    """

    status: int = 200
    text: str | None = None
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    stop_reason: str = "end_turn"
    cut: int | None = None
    trickle: float | None = None


@dataclass
class Request:
    """One request as the fake API saw it."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    text: str
    model: str | None
    max_tokens: int | None
    custom_id: str | None = None
    """Set on the per-item requests of a message batch (these are not in ``api.requests``)."""
    received_at: float = field(default_factory=time.monotonic)

    @property
    def api_key(self) -> str | None:
        """The credential sent: ``x-api-key``, else the ``Authorization: Bearer`` token."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


Responder = Callable[[Request], Reply | str]


@dataclass
class Cycle:
    """Replies given in turn to identical requests: the n-th request for a model gets
    ``replies[n % len(replies)]`` (counted per model), so a panel's samples of one question
    get known, different answers, whatever order they arrive in."""

    replies: tuple[Reply | str, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def take(self, model: str | None) -> Reply | str:
        n = self.counts.get(model or "", 0)
        self.counts[model or ""] = n + 1
        return self.replies[n % len(self.replies)]


def held(responder: Responder, gate: threading.Event, timeout: float = 60.0) -> Responder:
    """``responder``, each of whose replies waits until ``gate`` is set (``timeout`` seconds at
    most): for a test that acts while a request is in flight, then lets it through."""
    def hold(request: Request) -> Reply | str:
        gate.wait(timeout)
        return responder(request)
    return hold


@dataclass
class BatchRecord:
    """A message batch created on the fake API."""

    id: str
    created_at: float
    ends_at: float
    items: list[Request]
    results: list[dict[str, Any]]
    cancel_initiated_at: float | None = None
    canceled: bool = False


def estimate_tokens(text: str) -> int:
    """The fake API's token estimate: roughly four characters a token, at least one."""
    return max(1, len(text) // 4)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _block_text(block: Any) -> list[str]:
    if isinstance(block, str):
        return [block]
    if not isinstance(block, dict):
        return []
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return [block["text"]]
    if block.get("type") == "tool_result":
        return _content_text(block.get("content"))
    return []


def _content_text(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part for block in content for part in _block_text(block)]
    return []


def request_text(body: Any) -> str:
    """Concatenated text of ``system`` and every message's content (strings and text blocks)."""
    if not isinstance(body, dict):
        return ""
    parts = _content_text(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                parts.extend(_content_text(message.get("content")))
    return "\n".join(parts)


def _make_request(
    method: str, path: str, headers: dict[str, str], body: Any, custom_id: str | None = None
) -> Request:
    model = body.get("model") if isinstance(body, dict) else None
    max_tokens = body.get("max_tokens") if isinstance(body, dict) else None
    return Request(
        method=method,
        path=path,
        headers=headers,
        json=body,
        text=request_text(body),
        model=model if isinstance(model, str) else None,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        custom_id=custom_id,
    )


def _as_reply(value: Reply | str) -> Reply:
    return Reply(text=value) if isinstance(value, str) else value


def _error_body(status: int, message: str | None, request_id: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": kind, "message": message or _DEFAULT_ERROR_MESSAGES[kind]},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _message_body(request: Request, reply: Reply) -> dict[str, Any]:
    text = reply.text or ""
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": request.model or "claude-fake",
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": estimate_tokens(request.text),
            "output_tokens": max(1, len(text) // 4),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    api: FakeMessagesAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Quiet: clients hanging up mid-response are expected (drops, timeouts, close()).
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._unregister(self.connection)

    def do_GET(self) -> None:
        self.server.api._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.api._dispatch(self, "POST")

    def do_DELETE(self) -> None:
        self.server.api._dispatch(self, "DELETE")

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_head(self, status: int, length: int, headers: dict[str, str]) -> None:
        """The status line and headers for a JSON body of ``length`` bytes."""
        self.send_response(status, _REASONS.get(status))
        merged = {"content-type": "application/json"}
        merged.update({k.lower(): v for k, v in headers.items()})
        merged["content-length"] = str(length)
        for name, value in merged.items():
            self.send_header(name, value)
        self.end_headers()

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self._send_head(status, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def send_trickle(self, status: int, body: bytes, headers: dict[str, str], every: float,
                     closing: threading.Event) -> None:
        """Headers for the whole ``body``, then a byte of it every ``every`` seconds."""
        self._send_head(status, len(body), headers)
        self.wfile.flush()
        for index in range(len(body)):
            if closing.wait(every):
                break
            self.wfile.write(body[index:index + 1])
            self.wfile.flush()
        self.close_connection = True

    def send_cut(self, status: int, body: bytes, headers: dict[str, str], cut: int) -> None:
        """Headers for the whole ``body``, ``cut`` bytes of it, then a reset (RST)."""
        self._send_head(status, len(body), headers)
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # linger 0: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()


class FakeMessagesAPI:
    """A threaded HTTP/1.1 server on 127.0.0.1 that answers like the Anthropic API.

    Starts serving on construction; use as a context manager or call ``close()``.
    """

    def __init__(self, *, batch_delay: float = 0.0) -> None:
        self.default: Reply | str = "ok"
        # when set, a message request with any other credential is refused (401), as the
        # real API refuses a revoked key
        self.accepted_keys: set[str] | None = None
        self.responder: Responder = self.match_rules
        self.batch_delay: float = batch_delay
        self.requests: list[Request] = []
        self.batches: dict[str, BatchRecord] = {}
        self.errors: list[BaseException] = []
        self.in_flight: int = 0
        self.max_in_flight: int = 0
        self.connections_opened: int = 0
        self._rules: list[tuple[str, Reply | str | Cycle]] = []
        self._script: deque[Reply | str] = deque()
        self._batch_script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._closed = False
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fakeapi-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeMessagesAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving: wakes stalled replies (their connections are dropped), closes every
        open connection and the listening socket. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        self._server.shutdown()
        self._thread.join(timeout)
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        deadline = time.monotonic() + timeout
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections[conn] = threading.current_thread()
            self.connections_opened += 1
            closing = self._closed
        if closing:  # accepted during close(): make the handler exit at once
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.pop(conn, None)

    # -- scripting -------------------------------------------------------------------------

    def rule(self, contains: str, reply: Reply | str | Cycle) -> None:
        """Answer requests whose text contains ``contains`` with ``reply`` (first match wins;
        a :class:`Cycle` gives its replies in turn)."""
        with self._lock:
            self._rules.append((contains, reply))

    def clear_rules(self) -> None:
        """Forget every rule (and scripted reply): the next requests get ``default``."""
        with self._lock:
            self._rules.clear()
            self._script.clear()

    def script(self, replies: Iterable[Reply | str]) -> None:
        """Answer the next message requests with ``replies`` in order, before the responder."""
        with self._lock:
            self._script.extend(replies)

    def script_batches(self, replies: Iterable[Reply]) -> None:
        """Answer the next requests to the Message Batches endpoints (create, retrieve,
        results, ...) with ``replies`` in order, instead of the batch itself: an error
        status (with its ``headers``), a ``delay`` before answering, or a ``drop``. A reply
        with a status below 400 (and no drop) lets the request through, after its delay."""
        with self._lock:
            self._batch_script.extend(replies)

    def batch_requests(self) -> list[Request]:
        """The recorded HTTP requests to the Message Batches endpoints."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages/batches")]

    def match_rules(self, request: Request) -> Reply | str:
        """The default responder: the first matching rule, else ``self.default``."""
        with self._lock:
            rules = list(self._rules)
        for contains, reply in rules:
            if contains in request.text:
                if isinstance(reply, Cycle):
                    with self._lock:
                        return reply.take(request.model)
                return reply
        return self.default

    def resolve(self, request: Request) -> Reply:
        """The reply for one message request: the next scripted item, else the responder's."""
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        return _as_reply(scripted if scripted is not None else self.responder(request))

    # -- records ---------------------------------------------------------------------------

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` HTTP requests have arrived; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.requests) >= count, timeout)

    def message_requests(self) -> list[Request]:
        """The recorded ``POST /v1/messages`` requests."""
        with self._lock:
            return [r for r in self.requests if r.path == self.messages_path]

    # -- HTTP ------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler, method: str) -> None:
        try:
            raw = handler.read_body()
        except (OSError, ValueError):
            handler.drop()
            return
        split = urlsplit(handler.path)
        path = split.path.rstrip("/") or "/"
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        request = _make_request(method, path, headers, body)
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        base_headers = {"request-id": request_id}
        if handler.close_connection:
            base_headers["connection"] = "close"

        def send_bytes(status: int, data: bytes, extra: dict[str, str]) -> None:
            handler.send(status, data, {**base_headers, **extra})

        def send_json(status: int, payload: Any) -> None:
            send_bytes(status, json.dumps(payload).encode(), {})

        def send_error(status: int, message: str) -> None:
            send_json(status, self._error_json(status, message, request_id, request))

        try:
            if bad_json:
                send_error(400, "Request body is not valid JSON.")
            elif method == "POST" and path == self.messages_path:
                self._handle_message(handler, request, request_id, base_headers)
            elif self.accepted_keys is not None and request.api_key not in self.accepted_keys:
                send_error(401, "invalid x-api-key")  # every endpoint checks the key
            elif method == "POST" and path == "/v1/messages/count_tokens":
                if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                    send_error(400, "messages: Field required")
                else:
                    send_json(200, {"input_tokens": estimate_tokens(request.text)})
            elif path == "/v1/messages/batches" or path.startswith("/v1/messages/batches/"):
                with self._lock:
                    fault = self._batch_script.popleft() if self._batch_script else None
                if fault is not None:
                    if fault.delay > 0 and self._closing.wait(fault.delay):
                        fault = Reply(drop=True)
                    if fault.drop:
                        handler.drop()
                        return
                    if fault.status >= 400:
                        send_bytes(fault.status, json.dumps(
                            _error_body(fault.status, fault.text, request_id)).encode(),
                            fault.headers)
                        return
                self._handle_batches(
                    method, path, parse_qs(split.query), body, send_bytes, send_json, send_error
                )
            else:
                send_error(404, f"Not found: {method} {path}")
        except OSError:  # the client hung up
            handler.close_connection = True
        except Exception as exc:  # a responder bug: report it to the client and keep it
            with self._lock:
                self.errors.append(exc)
            with contextlib.suppress(OSError):
                send_error(500, f"fakeapi responder raised {exc!r}")

    def _handle_message(
        self, handler: _Handler, request: Request, request_id: str, base_headers: dict[str, str]
    ) -> None:
        # in_flight drops back before the answer goes out, so a client holding its response
        # never sees its own request still counted
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = request.json
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                reply = Reply(status=400, text="messages: Field required")
            elif not request.model:
                reply = Reply(status=400, text="model: Field required")
            elif body.get("stream"):
                reply = Reply(status=400, text="fakeapi does not support streaming")
            elif self.accepted_keys is not None and request.api_key not in self.accepted_keys:
                reply = Reply(status=401)
            else:
                reply = self.resolve(request)
            stopped = reply.delay > 0 and self._closing.wait(reply.delay)
            drop = stopped or reply.drop or self._closing.is_set()
            payload = b"" if drop else self._reply_bytes(request, reply, request_id)
            headers = {**base_headers, **self._ratelimit_headers(), **reply.headers}
        finally:
            with self._lock:
                self.in_flight -= 1
        if drop:
            handler.drop()
        elif reply.trickle is not None:
            handler.send_trickle(reply.status, payload, headers, reply.trickle, self._closing)
        elif reply.cut is not None:
            handler.send_cut(reply.status, payload, headers, reply.cut)
        else:
            handler.send(reply.status, payload, headers)

    def _reply_bytes(self, request: Request, reply: Reply, request_id: str) -> bytes:
        if isinstance(reply.body, bytes):
            return reply.body
        if reply.body is not None:
            return json.dumps(reply.body).encode()
        if reply.status >= 400:
            return json.dumps(self._error_json(reply.status, reply.text, request_id,
                                               request)).encode()
        return json.dumps(self._success_json(request, reply)).encode()

    # -- the wire format (a subclass speaking another API replaces these) -------------------

    messages_path = "/v1/messages"
    """The path of the one endpoint that answers a request with a reply."""

    def _error_json(self, status: int, message: str | None, request_id: str,
                    request: Request) -> dict[str, Any]:
        """The API's error body for ``status`` (``message``, else the API's usual one)."""
        return _error_body(status, message, request_id)

    def _success_json(self, request: Request, reply: Reply) -> dict[str, Any]:
        """The API's body for a reply of ``reply.text``."""
        return _message_body(request, reply)

    def _ratelimit_headers(self) -> dict[str, str]:
        reset = _rfc3339(time.time() + 60)
        headers: dict[str, str] = {}
        for kind, limit in (
            ("requests", 4000),
            ("tokens", 400000),
            ("input-tokens", 400000),
            ("output-tokens", 80000),
        ):
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(limit - 1)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
        return headers

    # -- batches ---------------------------------------------------------------------------

    def _handle_batches(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        send_bytes: Callable[[int, bytes, dict[str, str]], None],
        send_json: Callable[[int, Any], None],
        send_error: Callable[[int, str], None],
    ) -> None:
        parts = path.split("/")[4:]  # after "", "v1", "messages", "batches"
        if not parts:
            if method == "POST":
                self._create_batch(body, send_json, send_error)
            elif method == "GET":
                self._list_batches(query, send_json)
            else:
                send_error(405, f"Method {method} not allowed")
            return
        with self._lock:
            batch = self.batches.get(parts[0])
        if batch is None:
            send_error(404, f"Message batch {parts[0]} not found")
            return
        action = parts[1] if len(parts) > 1 else ""
        if len(parts) > 2:
            send_error(404, f"Not found: {path}")
        elif method == "GET" and action == "":
            send_json(200, self._batch_json(batch))
        elif method == "DELETE" and action == "":
            if not self._batch_ended(batch):
                send_error(400, "Message batch is still in progress; cancel it first.")
                return
            with self._lock:
                self.batches.pop(batch.id, None)
            send_json(200, {"id": batch.id, "type": "message_batch_deleted"})
        elif method == "POST" and action == "cancel":
            with self._lock:
                if time.time() < batch.ends_at and not batch.canceled:
                    batch.canceled = True
                    batch.cancel_initiated_at = time.time()
                    batch.ends_at = batch.cancel_initiated_at
                    canceling = True
                else:
                    canceling = False
            payload = self._batch_json(batch)
            if canceling:
                payload["processing_status"] = "canceling"
                payload["ended_at"] = None
                payload["results_url"] = None
                payload["request_counts"] = self._request_counts(batch, ended=False)
            send_json(200, payload)
        elif method == "GET" and action == "results":
            if not self._batch_ended(batch):
                send_error(400, f"Message batch {batch.id} is still processing.")
                return
            lines = self._batch_results(batch)
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            send_bytes(200, data, {"content-type": "application/binary"})
        else:
            send_error(404, f"Not found: {method} {path}")

    def _create_batch(
        self,
        body: Any,
        send_json: Callable[[int, Any], None],
        send_error: Callable[[int, str], None],
    ) -> None:
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            send_error(400, "requests: must be a non-empty list")
            return
        requests: list[Request] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
                send_error(400, "requests: each item needs a custom_id and params")
                return
            params = item.get("params")
            if not isinstance(params, dict):
                send_error(400, f"requests.{item['custom_id']}.params: Field required")
                return
            requests.append(
                _make_request("POST", "/v1/messages", {}, params, custom_id=item["custom_id"])
            )
        if len({r.custom_id for r in requests}) != len(requests):
            send_error(400, "requests: custom_id values must be unique")
            return
        results = [self._batch_item_result(r) for r in requests]
        now = time.time()
        batch = BatchRecord(
            id=f"msgbatch_{uuid.uuid4().hex[:24]}",
            created_at=now,
            ends_at=now + self.batch_delay,
            items=requests,
            results=results,
        )
        with self._lock:
            self.batches[batch.id] = batch
        payload = self._batch_json(batch)
        payload.update(
            processing_status="in_progress",
            ended_at=None,
            results_url=None,
            request_counts=self._request_counts(batch, ended=False),
        )
        send_json(200, payload)

    def _batch_item_result(self, request: Request) -> dict[str, Any]:
        try:
            reply = self.resolve(request)
        except Exception as exc:
            with self._lock:
                self.errors.append(exc)
            reply = Reply(status=500, text=f"fakeapi responder raised {exc!r}")
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        if reply.drop:
            reply = Reply(status=500)
        if reply.status >= 400:
            error: Any = reply.body if isinstance(reply.body, dict) else None
            return {
                "type": "errored",
                "error": error or _error_body(reply.status, reply.text, request_id),
            }
        if isinstance(reply.body, dict):
            message = reply.body
        elif isinstance(reply.body, bytes):
            message = json.loads(reply.body)
        else:
            message = _message_body(request, reply)
        return {"type": "succeeded", "message": message}

    def _batch_ended(self, batch: BatchRecord) -> bool:
        return time.time() >= batch.ends_at

    def _request_counts(self, batch: BatchRecord, *, ended: bool) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if not ended:
            counts["processing"] = len(batch.items)
            return counts
        for result in self._batch_results(batch):
            counts[result["result"]["type"]] += 1
        return counts

    def _batch_results(self, batch: BatchRecord) -> list[dict[str, Any]]:
        return [
            {
                "custom_id": item.custom_id,
                "result": {"type": "canceled"} if batch.canceled else result,
            }
            for item, result in zip(batch.items, batch.results, strict=True)
        ]

    def _batch_json(self, batch: BatchRecord) -> dict[str, Any]:
        ended = self._batch_ended(batch)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": self._request_counts(batch, ended=ended),
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + 24 * 3600),
            "ended_at": _rfc3339(batch.ends_at) if ended else None,
            "cancel_initiated_at": (
                _rfc3339(batch.cancel_initiated_at) if batch.cancel_initiated_at else None
            ),
            "archived_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _list_batches(
        self, query: dict[str, list[str]], send_json: Callable[[int, Any], None]
    ) -> None:
        with self._lock:
            batches = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
        ids = [b.id for b in batches]
        after = query.get("after_id", [None])[0]
        before = query.get("before_id", [None])[0]
        limit = int(query.get("limit", ["20"])[0])
        if after in ids:
            batches = batches[ids.index(after) + 1 :]
        elif before in ids:
            batches = batches[: ids.index(before)][-limit:]
        page = batches[:limit]
        send_json(
            200,
            {
                "data": [self._batch_json(b) for b in page],
                "has_more": len(batches) > len(page),
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            },
        )
