"""What every model provider shares, whatever its SDK: pacing, deadlines, keys kept secret.

* :class:`RateGate`: one gate for every thread of a provider, closed while a rate limit is
  (nearly) used up or for a pause the API asked for (``retry-after``, :func:`retry_after`);
* :class:`_Deadlines`: a total deadline per HTTP attempt, kept by one watchdog thread;
* :func:`redact`: a text with the API key taken out, for every message and reply;
* what a failed connection was (:func:`_connection_cause`, :func:`_cannot_connect`).

No SDK is imported here: :mod:`vaultd.edges.model` (Anthropic) and
:mod:`vaultd.edges.openai_model` (OpenAI-compatible APIs) both build on it.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import heapq
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from vaultd.errors import ModelError, ModelUnavailable, one_line


def _secrets(*values: object) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if isinstance(v, str) and v))


REDACTED = "[API key]"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret (and every long word of one) replaced by ``[API key]``."""
    for secret in secrets:
        for part in (secret, secret.strip(), *secret.split()):
            if len(part) >= 8:
                text = text.replace(part, REDACTED)
    return text


# -- rate-limit pacing ---------------------------------------------------------------------

RATE_LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


def parse_rfc3339(value: str) -> float | None:
    """Seconds since the epoch for an RFC 3339 timestamp (``...Z`` or with an offset)."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The pause the API asks for, in seconds (>= 0), or None when it asks for none.

    ``retry-after-ms`` (milliseconds) wins over ``retry-after`` (seconds, or an HTTP-date,
    compared with the wall clock ``now``)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def answered(gate: RateGate, status: int, headers: Mapping[str, str]) -> bool:
    """After a reply other than a 401: whether the key got through (a 4xx answers the
    request itself; a 5xx tells nothing of the key). A pause the API asked for is held in
    ``gate`` for every other thread (the SDK waits it out in this one)."""
    pause = retry_after(headers, gate.wall()) if status >= 400 else None
    if pause:
        gate.hold(pause, f"the API asked for a {pause:g} s pause after a {status}")
    return status < 500


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


class RateGate:
    """One gate for every thread: requests pass only while no pause is in force.

    :meth:`observe` reads a reply's ``anthropic-ratelimit-*`` headers: when a ``remaining``
    count is 0, or below ``headroom`` of its ``limit``, new requests are held until that
    limit's ``reset`` time. :meth:`hold` starts a pause of a given length (a ``retry-after``).
    Pauses only ever extend the gate's closing time and are capped at ``max_pause`` seconds.

    ``clock`` (monotonic seconds), ``wall`` (epoch seconds, to read the reset timestamps) and
    ``sleep`` can be replaced in tests; the default sleep is cut short by :meth:`close`.
    """

    def __init__(
        self,
        *,
        max_pause: float = 60.0,
        headroom: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.max_pause = max_pause
        self.headroom = headroom
        self.clock = clock
        self.wall = wall
        self._closed = threading.Event()
        self._sleep: Callable[[float], object] = sleep or self._closed.wait
        self._lock = threading.Lock()
        self._until = float("-inf")  # clock() time when the gate opens again
        self.reason = ""  # why the latest pause began
        self.pauses = 0  # pauses begun or extended
        self.waited = 0.0  # seconds callers spent held, all threads together

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Wake every waiting thread; :meth:`wait` returns at once from now on."""
        self._closed.set()

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        with self._lock:
            return max(0.0, self._until - self.clock())

    def hold(self, seconds: float, reason: str) -> float:
        """Hold every new request for ``seconds`` (capped) from now; returns the pause set."""
        seconds = min(max(0.0, seconds), self.max_pause)
        if seconds <= 0:
            return 0.0
        with self._lock:
            until = self.clock() + seconds
            if until > self._until:
                self._until = until
                self.reason = reason
                self.pauses += 1
        return seconds

    def observe(self, headers: Mapping[str, str]) -> float:
        """Read a reply's rate-limit headers; returns the pause they started (0 if none)."""
        longest = 0.0
        for kind in RATE_LIMIT_KINDS:
            prefix = f"anthropic-ratelimit-{kind}-"
            remaining = _int(headers.get(prefix + "remaining"))
            if remaining is None:
                continue
            limit = _int(headers.get(prefix + "limit"))
            low = remaining <= 0 or (limit is not None and remaining < self.headroom * limit)
            reset = parse_rfc3339(headers.get(prefix + "reset", ""))
            if not low or reset is None:
                continue
            reason = f"{kind} rate limit: {remaining} of {limit if limit is not None else '?'} left"
            longest = max(longest, self.hold(reset - self.wall(), reason))
        return longest

    def wait(self) -> float:
        """Block until the gate is open (or closed for good); returns the seconds waited."""
        start = self.clock()
        while not self.closed:
            left = self.remaining()
            if left <= 0:
                break
            self._sleep(min(left, self.max_pause))
        waited = max(0.0, self.clock() - start)
        if waited:
            with self._lock:
                self.waited += waited
        return waited


# -- deadlines -----------------------------------------------------------------------------


class _Ticket:
    """One request's deadline, and the connections it was seen using."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._done = False
        self._expired = False

    @property
    def expired(self) -> bool:
        """Whether the watchdog cut the request off at its deadline."""
        with self._lock:
            return self._expired

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._streams = []

    def saw(self, stream: Any) -> None:
        with self._lock:
            if self._done:
                return
            self._streams.append(stream)
            cut = self._expired
        if cut:  # the deadline passed while it was connecting
            _cut(stream)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._expired = True
            streams, self._streams = self._streams, []
        for stream in streams:
            _cut(stream)


def _cut(stream: Any) -> None:
    """Shut a connection down from another thread: the read waiting on it returns at once.

    ``socket.shutdown`` of the plain socket, even under TLS (``SSLSocket.shutdown`` would
    change the TLS state under the reading thread)."""
    sock = stream.get_extra_info("socket") if hasattr(stream, "get_extra_info") else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Deadlines:
    """A total deadline for each HTTP request, kept by one watchdog thread for all of them.

    The SDK's ``timeout`` bounds each read, so a reply that trickles in a byte at a time
    never ends. Each attempt takes a :class:`_Ticket` (:meth:`start`) in its own thread; the
    httpx hooks of :meth:`hooks` tell the ticket of that thread which connection the request
    uses (when it connects, and when the reply's headers arrive), and at the deadline the
    watchdog shuts that connection down, so the request fails there and then. (A connection
    reused from the pool is known from the reply's headers on: until they have arrived, a
    server that sends its headers a byte at a time on such a connection is bounded per read.)
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Ticket]] = []
        self._order = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, seconds: float) -> _Ticket:
        ticket = _Ticket(time.monotonic() + seconds)
        self._local.ticket = ticket
        with self._cond:
            self._order += 1
            heapq.heappush(self._heap, (ticket.deadline, self._order, ticket))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._watch, name="vaultd-deadlines",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return ticket

    def saw(self, stream: Any) -> None:
        """The request of this thread uses ``stream`` (called by the httpx hooks)."""
        ticket = getattr(self._local, "ticket", None)
        if isinstance(ticket, _Ticket) and stream is not None:
            ticket.saw(stream)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, ticket = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                ticket.expire()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace: the connection a request has just opened."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self.saw(info.get("return_value"))



def _connection_cause(exc: BaseException) -> str:
    """What went wrong under an APIConnectionError: ``connection refused``, ..."""
    seen: set[int] = set()
    deepest: BaseException = exc
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        deepest = current
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        current = current.__cause__ or current.__context__
    if isinstance(deepest, OSError) and deepest.strerror:
        text = deepest.strerror
    else:
        text = str(deepest) or type(deepest).__name__
    text = one_line(text, 200).rstrip(".")
    return text[:1].lower() + text[1:]


def _redirected_to(exc: BaseException, base_url: str) -> str | None:
    """The URL a failed connection was for, when a redirect took it away from ``base_url``.

    The SDK's error names the request it made; httpx's error under it, the request that
    failed (the last of the redirects it followed)."""
    seen: set[int] = set()
    current: BaseException | None = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            url = str(current.request.url)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # httpx raises RuntimeError for "no request"
            current = current.__cause__ or current.__context__
            continue
        origin = base_url.rstrip("/")
        return None if url == origin or url.startswith(origin + "/") else url
    return None


_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                          errno.EADDRNOTAVAIL})


def _cannot_connect(exc: BaseException) -> bool:
    """Whether a connection error is a failure to connect at all (refused, no route, no such
    host), which no request gets past, rather than one connection dropped midway."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return True
        if isinstance(current, OSError) and current.errno in _UNREACHABLE:
            return True
        # httpx's ConnectError (the SDK's own httpx, whatever its package is called)
        if any(cls.__name__ == "ConnectError" for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


# -- outages -------------------------------------------------------------------------------


class Outages:
    """Whether a provider's API can be asked now, shared by every thread of that provider.

    A refused key (401), or an API that cannot be connected to (after every retry), is an
    outage: later calls fail at once with :class:`~vaultd.errors.ModelUnavailable` until a
    back-off has passed (``backoff`` seconds, doubled at each outage in a row up to ``cap``),
    then one request finds out whether it is over. Until the API has accepted the key once,
    only one request is in flight, so a bad key costs exactly one request per back-off.

    ``closed`` says whether the provider was closed (its callers then fail with
    ``closed_message``)."""

    def __init__(self, backoff: float, cap: float, *, closed: Callable[[], bool],
                 closed_message: str) -> None:
        self.backoff = backoff
        self.cap = max(cap, backoff)
        self._closed = closed
        self._closed_message = closed_message
        self._cond = threading.Condition()
        self._outage: str | None = None  # why no request can get through, while it lasts
        self._until = 0.0  # monotonic time when one request may try again
        self._pause = backoff  # the next outage's length
        self._accepted = False  # the API has accepted the key (since the last outage)
        self._probing = False  # a request is finding out whether it does

    def unavailable(self) -> str | None:
        """Why no request can be made now (an outage in force), or None."""
        with self._cond:
            if self._outage and time.monotonic() < self._until:
                return self._outage
            return None

    def answering(self) -> bool:
        with self._cond:
            return self._accepted

    def accept(self) -> None:
        """The API accepted the key: the callers waiting on it may all go."""
        with self._cond:
            if not self._accepted:
                self._accepted = True
                self._pause = self.backoff
                self._cond.notify_all()

    def begin(self, message: str) -> None:
        """No request gets through: fail every call at once until the back-off has passed."""
        with self._cond:
            if self._outage is None:  # one outage, however many calls met it at once
                self._outage = message
                self._until = time.monotonic() + self._pause
                self._pause = min(self.cap, self._pause * 2)
            self._accepted = False
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every caller waiting to be admitted (the provider is closing)."""
        with self._cond:
            self._cond.notify_all()

    def admit(self) -> bool:
        """Wait until this call may send; True when it is the one finding out about the key.

        Raises :class:`~vaultd.errors.ModelUnavailable` while an outage is in force and
        :class:`~vaultd.errors.ModelError` once the provider is closed."""
        with self._cond:
            while True:
                if self._outage:  # a bad key fails once, not once per measure
                    if time.monotonic() < self._until:
                        raise ModelUnavailable(self._outage)
                    self._outage = None  # the back-off is over: one request finds out
                    self._accepted = False
                if self._closed():
                    raise ModelError(self._closed_message)
                if self._accepted:
                    return False
                if not self._probing:
                    self._probing = True
                    return True
                self._cond.wait()

    def settle(self, probe: bool, *, accepted: bool, refused: str | None) -> None:
        """Record what an attempt taught about the key, and let the next caller in."""
        if not (probe or accepted or refused):
            return
        if refused:
            self.begin(refused)
        with self._cond:
            if accepted:
                self._accepted = True
                self._pause = self.backoff
            if probe:
                self._probing = False
            self._cond.notify_all()
