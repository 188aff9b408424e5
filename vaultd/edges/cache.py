"""vaultd's response cache: identical model requests are answered once and then from disk.

:class:`ResponseCache` keeps replies in SQLite at ``VAULT/.vaultd/cache.sqlite3``, keyed by the
SHA-256 of the canonical JSON of the request's full Messages API parameters (model,
``max_tokens``, messages and their ``cache_control`` marks: everything that decides the reply,
and nothing else; the API key is never part of the parameters, so it is never stored).

The file is shared safely by several threads (one connection behind a lock, short autocommit
statements) and several processes (WAL journal, a busy timeout). The cache is an optimisation,
never a reason to fail: a file that is not a database is moved aside and replaced by a fresh one,
and any later database error makes a lookup a miss and a store a no-op.

:class:`CachedModel` puts the cache in front of the model
(:class:`~vaultd.edges.model.AnthropicModel`) and sends identical requests that are in flight
at the same moment only once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from vaultd.errors import ModelError, ModelUnavailable
from vaultd.evaluate.ask import ModelReply, ModelRequest

log = logging.getLogger("vaultd.cache")

BUSY_TIMEOUT_MS = 5000
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_REPLY_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelReply)) - {"from_cache"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
)
"""


def _while_locked(statement: Callable[[], object]) -> None:
    """Run ``statement``, again while another process holds the lock, up to the busy timeout.

    Two processes opening a new cache at once: switching it to WAL (or creating the table)
    can fail with "database is locked" at once, without SQLite's busy handler waiting."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def worth_storing(reply: ModelReply) -> bool:
    """The one rule for what the cache keeps and serves, whichever way the reply came (alone
    or in a batch): a reply that is complete and says something. A truncated one would be
    reused forever, and so would a refusal or a blank one."""
    return reply.stop_reason not in ("max_tokens", "refusal") and bool(reply.text.strip())


class _Unusable(Exception):
    """The file at the cache's path is not a cache vaultd can use: move it aside."""


class ResponseCache:
    """Successful model replies in SQLite, keyed by :meth:`key_for` of the request parameters.

    Never raises after construction: errors at :meth:`get` / :meth:`put` are logged (once) and
    become a miss / a no-op. Callers store only what :func:`worth_storing` keeps; a stored
    reply it would not keep (put there by an older vaultd) is a miss.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._warned = False
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except _Unusable as exc:
            log.warning("response cache %s is unreadable (%s); moved it aside to %s and "
                        "starting an empty cache", self.path, exc.__cause__ or exc,
                        self._move_aside().name)
            try:
                self._conn = self._open()
            except (_Unusable, sqlite3.Error, OSError) as again:
                log.warning("response cache %s cannot be used (%s); running without it",
                            self.path, again.__cause__ or again)
        except (sqlite3.Error, OSError) as exc:
            log.warning("response cache %s cannot be opened (%s); running without it",
                        self.path, exc)

    @staticmethod
    def key_for(params: dict[str, Any]) -> str:
        """The cache key of ``params``: SHA-256 (hex) of their canonical JSON."""
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @staticmethod
    def key_of(request: ModelRequest, params: dict[str, Any]) -> str:
        """The cache key of ``request`` (whose parameters are ``params``): one draw of a
        panel (its ``sample``) has its own, so identical requests of several draws are
        never merged."""
        if request.sample is None:
            return ResponseCache.key_for(params)
        return ResponseCache.key_for({**params, "vaultd_sample": request.sample})

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # create the file ourselves, private; SQLite gives its -wal and -shm files the same mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        with contextlib.suppress(OSError):
            if self.path.stat().st_mode & 0o077:
                self.path.chmod(0o600)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            _while_locked(lambda: conn.execute(_SCHEMA))
            try:  # a table of that name but another shape is no cache of ours
                conn.execute("SELECT key, model, reply, created, hits FROM responses LIMIT 0")
            except sqlite3.OperationalError as exc:
                raise _Unusable(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            if exc.sqlite_errorcode & 0xFF in _CORRUPT_CODES:
                raise _Unusable(str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 0
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        with contextlib.suppress(FileNotFoundError):  # another process got there first
            os.replace(self.path, target)
        # a journal left by the bad file must not be replayed into the fresh one
        for suffix in ("-wal", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}-shm")
        return target

    # -- use -----------------------------------------------------------------------------------

    def _failed(self, action: str, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("response cache %s: %s failed (%s); carrying on without it",
                        self.path, action, exc)
        else:
            log.debug("response cache %s: %s failed (%s)", self.path, action, exc)

    def get(self, key: str) -> ModelReply | None:
        """The stored reply for ``key`` (with ``from_cache=True``), counting the hit; else None."""
        with self._lock:
            if self._conn is None:
                return None
            try:
                row = self._conn.execute(
                    "SELECT reply FROM responses WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                self._failed("lookup", exc)
                return None
            if row is None:
                return None
            try:
                fields = json.loads(row[0])
                reply = ModelReply(**{k: v for k, v in fields.items() if k in _REPLY_FIELDS},
                                   from_cache=True)
            except (TypeError, ValueError, AttributeError) as exc:
                self._failed("reading a stored reply", exc)
                return None
            if not worth_storing(reply):
                return None
            try:
                self._conn.execute("UPDATE responses SET hits = hits + 1 WHERE key = ?", (key,))
            except sqlite3.Error as exc:  # the reply is good; only the count is lost
                self._failed("counting a hit", exc)
            return reply

    def put(self, key: str, params_model: str, reply: ModelReply) -> None:
        """Store ``reply`` under ``key`` (replacing any earlier one); ``params_model`` is the
        model the request asked for."""
        data = {k: v for k, v in dataclasses.asdict(reply).items() if k in _REPLY_FIELDS}
        text = json.dumps(data, ensure_ascii=False)
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute(
                    "INSERT INTO responses (key, model, reply, created, hits)"
                    " VALUES (?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE SET"
                    " model = excluded.model, reply = excluded.reply, created = excluded.created",
                    (key, params_model, text, time.time()))
            except sqlite3.Error as exc:
                self._failed("store", exc)

    def stats(self) -> dict[str, int]:
        """``entries``: replies stored; ``hits``: times they were served, over every run."""
        with self._lock:
            if self._conn is None:
                return {"entries": 0, "hits": 0}
            try:
                entries, hits = self._conn.execute(
                    "SELECT count(*), coalesce(sum(hits), 0) FROM responses").fetchone()
            except sqlite3.Error as exc:
                self._failed("counting entries", exc)
                return {"entries": 0, "hits": 0}
            return {"entries": int(entries), "hits": int(hits)}

    def close(self) -> None:
        """Close the database; later calls are misses and no-ops. Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


class Sender(Protocol):
    """What :class:`CachedModel` wraps: a provider's API, one call with the given parameters
    (``params`` makes them from a request: what decides the reply)."""

    def params(self, request: ModelRequest) -> dict[str, Any]: ...

    def send(self, params: dict[str, Any]) -> ModelReply: ...

    def unavailable(self, model: str | None = None) -> str | None: ...

    def answering(self) -> bool: ...


class _Flight:
    """One request on its way: the callers that asked for the same thing wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: ModelReply | None = None
        self.error: BaseException | None = None


class CachedModel:
    """A :class:`~vaultd.edges.model.Model` that answers from ``cache`` when it can.

    On a miss the request goes to ``inner`` once, however many threads ask for it at the same
    moment: the others wait and share its reply (marked ``from_cache``: nothing more was billed
    for them) or its error. ``requests_sent`` and ``cache_hits`` count for the run's summary.
    """

    def __init__(self, inner: Sender, cache: ResponseCache, endpoint: str | None = None) -> None:
        """``endpoint`` names where ``inner`` sends (a provider and its URL), when it is not
        the vault's Anthropic API: the same parameters sent elsewhere are another reply."""
        self.inner = inner
        self.cache = cache
        self.endpoint = endpoint
        self.requests_sent = 0
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def _count(self, *, sent: int = 0, hits: int = 0) -> None:
        with self._lock:
            self.requests_sent += sent
            self.cache_hits += hits

    def unavailable(self, model: str | None = None) -> str | None:
        return self.inner.unavailable()

    def answering(self) -> bool:
        return self.inner.answering()

    def _send(self, params: dict[str, Any]) -> ModelReply:
        self._count(sent=1)
        return self.inner.send(params)

    def complete(self, request: ModelRequest) -> ModelReply:
        params = self.inner.params(request)
        if not request.use_cache:
            return self._send(params)
        key = ResponseCache.key_of(request, params if self.endpoint is None
                                   else {**params, "vaultd_endpoint": self.endpoint})
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            return self._follow(flight)
        try:
            reply = self.cache.get(key)
            if reply is not None:
                self._count(hits=1)
            else:
                reply = self._send(params)
                if worth_storing(reply):
                    self.cache.put(key, request.model, reply)
            flight.reply = reply
            return reply
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def _follow(self, flight: _Flight) -> ModelReply:
        flight.done.wait()
        if flight.error is not None:  # a fresh exception: one object raised in many threads
            kind = ModelUnavailable if isinstance(flight.error, ModelUnavailable) else ModelError
            raise kind(str(flight.error) or type(flight.error).__name__) from flight.error
        assert flight.reply is not None
        self._count(hits=1)
        return dataclasses.replace(flight.reply, from_cache=True)

    def close(self) -> None:
        """Close the cache (the inner model is its owner's to close)."""
        self.cache.close()
