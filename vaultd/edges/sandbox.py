"""Run programmatic measures' JavaScript in QuickJS, isolated in worker processes.

A programmatic measure's ``logic`` is the body of a JavaScript function with ``input``
(any JSON value) and ``params`` (a JSON object) in scope; what it returns is the result
(``undefined`` is ``null``). It runs with no host access (no require, std, os, fetch or
console), under a time limit and a memory limit.

QuickJS does not run in this process: a memory-limit error can corrupt the engine's
heap and crash whatever process it runs in (reliably so in a thread other than the main
one), and a hang outside the engine's own time check can only be stopped from outside.
So each call borrows a worker process (:mod:`vaultd.edges._sandbox_child`, QuickJS in its own
main thread), sends it the request on a pipe and waits at most ``time_limit`` plus a grace
period for the answer. A worker that hangs is killed; one that crashes is reaped; either
way it is replaced on demand, and the call raises :class:`~vaultd.errors.SandboxError`.
One found dead before it is lent (killed while idle) is reaped and replaced, unused.
Requests and replies are numbered frames (see :mod:`vaultd.edges._sandbox_child`): a reply that
is not the one awaited, or comes with anything after it, kills the worker and fails that
call; it is never taken as a result.

:class:`Sandbox` is safe to call from many threads at once: up to ``workers`` requests run
in parallel and the rest wait for a worker to come free. :meth:`Sandbox.submit` queues a
request under a key (a note) instead: the queues are served in turn, one request each, so
a note with many slow measures delays another note by at most one request per worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

from vaultd.edges._sandbox_child import (
    FRAME_HEADER,
    FRAME_MAGIC,
    command,
    first_line,
    frame,
    time_limit_message,
)
from vaultd.errors import SandboxError

__all__ = ["JSONValue", "Sandbox", "SandboxLimits"]

log = logging.getLogger("vaultd.sandbox")
_warned: set[str] = set()  # what a worker could not confine, said once per process

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

# How long past its time limit a worker may take to answer before it is killed: the
# engine's own limit counts only the JavaScript, not starting the context or the pipes.
GRACE_SECONDS = 2.0
# How long a new worker may take to start (a Python interpreter importing quickjs).
SPAWN_TIMEOUT_SECONDS = 30.0
# Room in a reply beyond the result itself (the envelope, an error message).
_REPLY_OVERHEAD = 64 * 1024
_READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use: CPU seconds, engine bytes, and bytes of JSON result."""

    time_limit: float = 2.0  # seconds
    memory_limit: int = 64 * 1024 * 1024  # bytes
    max_result_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be positive, not {self.time_limit!r}")
        if self.memory_limit <= 0:
            raise ValueError(f"memory_limit must be positive, not {self.memory_limit!r}")
        if self.max_result_bytes <= 0:
            raise ValueError(f"max_result_bytes must be positive, not {self.max_result_bytes!r}")


class _Crashed(Exception):
    """The worker closed its end or died."""


class _TimedOut(Exception):
    """The worker did not answer before the deadline."""


class _BadReply(Exception):
    """The worker said something that is not the protocol."""


def _root() -> str:
    """The directory vaultd's package is in: first on a worker's path."""
    import vaultd

    return str(Path(vaultd.__file__).resolve().parent.parent)


# What a worker's end means, in words, by the signal that ended it.
_SIGNAL_WORDS: dict[int, str] = {
    signal.SIGKILL: "the JavaScript worker was killed",
    signal.SIGSEGV: "the JavaScript worker crashed (out of memory?)",
    signal.SIGBUS: "the JavaScript worker crashed (out of memory?)",
    signal.SIGABRT: "the JavaScript worker crashed (out of memory?)",
    signal.SIGALRM: "the JavaScript worker ran past its time limit and stopped itself",
    signal.SIGXCPU: "the JavaScript worker used up its CPU time",
    signal.SIGSYS: "the JavaScript worker made a forbidden system call and was stopped",
}


class _Worker:
    """One worker process and the parent's ends of its pipes. Not thread-safe by itself:
    one thread uses a worker at a time, except :meth:`signal_kill`, which any thread may call."""

    def __init__(self, limits: SandboxLimits) -> None:
        try:
            self._proc = subprocess.Popen(
                command(_root(), limits.memory_limit, limits.time_limit),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={},  # nothing of the parent's: no key, no paths, no settings
                bufsize=0,
                close_fds=True,
                pass_fds=(),
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start a sandbox worker: {exc}") from exc
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        os.set_blocking(self._stdin.fileno(), False)
        os.set_blocking(self._stdout.fileno(), False)
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._done = False
        self._last_id = 0
        self.pid = self._proc.pid

    # -- talking -----------------------------------------------------------------------

    def _wait_for(self, fd: int, event: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(fd, event)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            if poller.poll(max(1, int(remaining * 1000) + 1)):
                return

    def _write_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        fd = self._stdin.fileno()
        while view:
            self._wait_for(fd, select.POLLOUT, deadline)
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _Crashed from exc
            view = view[written:]

    def _fill(self, size: int, deadline: float) -> None:
        """Read until the buffer holds at least ``size`` bytes."""
        fd = self._stdout.fileno()
        while len(self._buffer) < size:
            self._wait_for(fd, select.POLLIN, deadline)
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Crashed
            self._buffer += chunk

    def read_frame(self, request_id: int, deadline: float, max_bytes: int) -> bytes:
        """The body of the reply to ``request_id``; :class:`_BadReply` for anything else."""
        self._fill(FRAME_HEADER.size, deadline)
        magic, got_id, size = FRAME_HEADER.unpack_from(self._buffer)
        if magic != FRAME_MAGIC:
            raise _BadReply("it sent something that is not a reply")
        if got_id != request_id:
            raise _BadReply(f"it answered request {got_id} when {request_id} was asked")
        if size > max_bytes:
            raise _BadReply("the reply is too long")
        self._fill(FRAME_HEADER.size + size, deadline)
        body = bytes(self._buffer[FRAME_HEADER.size: FRAME_HEADER.size + size])
        del self._buffer[: FRAME_HEADER.size + size]
        if self._buffer:
            raise _BadReply("it sent more than one reply")
        return body

    def request(self, payload: bytes, deadline: float, max_bytes: int) -> dict[str, Any]:
        self._last_id += 1
        self._write_all(frame(self._last_id, payload), deadline)
        body = self.read_frame(self._last_id, deadline, max_bytes)
        try:
            reply = json.loads(body)  # RecursionError for a result nested too deeply
        except ValueError as exc:
            raise _BadReply("the reply is not JSON") from exc
        if not isinstance(reply, dict):
            raise _BadReply("the reply is not an object")
        return reply

    # -- ending ------------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the process still runs (something may have killed it while idle)."""
        return self._proc.poll() is None

    def crash_message(self) -> str:
        """Why the worker ended, once it has been reaped by :meth:`kill` or :meth:`retire`."""
        code = self._proc.returncode
        if code is None or code == 0:
            return "the JavaScript worker stopped unexpectedly"
        if code < 0:
            words = _SIGNAL_WORDS.get(-code)
            if words:
                return words
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the JavaScript worker crashed ({name})"
        return f"the JavaScript worker stopped unexpectedly (exit code {code})"

    def _close_pipes(self) -> None:
        for pipe in (self._stdin, self._stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def signal_kill(self) -> None:
        """Kill the process only; for a thread other than the one using the worker, which
        then sees the pipe close and reaps it. Pipes are left alone: closing them under
        the user could let it read a reused file descriptor."""
        with self._lock:
            if not self._done and self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # gone already
                    self._proc.kill()

    def kill(self) -> None:
        """Kill the worker if it still runs, reap it and close the pipes. Idempotent."""
        self._end(0.0)

    def retire(self, timeout: float = 2.0) -> None:
        """Close its input so that it leaves on its own; kill it after ``timeout``."""
        self._end(timeout)

    def close_input(self) -> None:
        """Tell the worker to leave: it exits at the end of its input."""
        with contextlib.suppress(OSError):
            self._stdin.close()

    def _end(self, timeout: float) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self.close_input()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._close_pipes()


def _start_worker(limits: SandboxLimits) -> _Worker:
    """A new worker that has said it is ready, or :class:`SandboxError`."""
    worker = _Worker(limits)
    try:
        body = worker.read_frame(0, time.monotonic() + SPAWN_TIMEOUT_SECONDS, _REPLY_OVERHEAD)
        hello = json.loads(body)
    except _TimedOut:
        worker.kill()
        raise SandboxError("the sandbox worker did not start in time") from None
    except _Crashed:
        worker.retire()
        raise SandboxError(f"the sandbox worker did not start: {worker.crash_message()}") from None
    except (_BadReply, ValueError):
        worker.kill()
        raise SandboxError("the sandbox worker did not start: garbled greeting") from None
    except BaseException:
        worker.kill()
        raise
    if isinstance(hello, dict) and hello.get("ready") is True:
        for missing in hello.get("missing") or ():
            if isinstance(missing, str) and missing not in _warned:
                _warned.add(missing)
                log.warning("JavaScript workers run with %s", first_line(missing))
        return worker
    worker.kill()
    reason = hello.get("fatal") if isinstance(hello, dict) else None
    raise SandboxError(
        first_line(f"the sandbox worker did not start: {reason or 'garbled greeting'}")
    )


class _Pool:
    """The workers and their bookkeeping, apart from :class:`Sandbox` so that a finalizer
    can stop them without keeping the Sandbox alive."""

    def __init__(self, size: int, limits: SandboxLimits) -> None:
        self.size = size
        self.limits = limits  # what new workers are sized for
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []  # alive, waiting for a request
        self.live: set[_Worker] = set()  # alive: idle or lent out
        self.starting = 0  # being started by some thread
        self.closed = False

    def acquire(self) -> _Worker:
        with self.cond:
            while True:
                if self.closed:
                    raise SandboxError("the sandbox is closed")
                if self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker
                    self.live.discard(worker)  # killed while idle: reap it, start another
                    worker.kill()
                    continue
                if len(self.live) + self.starting < self.size:
                    self.starting += 1
                    break
                self.cond.wait()
        try:
            worker = _start_worker(self.limits)
        except BaseException:
            with self.cond:
                self.starting -= 1
                self.cond.notify_all()
            raise
        with self.cond:
            self.starting -= 1
            if not self.closed:
                self.live.add(worker)
                return worker
            self.cond.notify_all()
        worker.kill()
        raise SandboxError("the sandbox is closed")

    def release(self, worker: _Worker, outcome: str) -> None:
        """Take a worker back: ``reuse`` it, let it ``retire``, or ``kill`` it."""
        with self.cond:
            if outcome == "reuse" and not self.closed:
                self.idle.append(worker)
                self.cond.notify_all()
                return
            self.live.discard(worker)
            self.cond.notify_all()
        if outcome == "kill":
            worker.kill()
        else:
            worker.retire()

    def shutdown(self, wait: float = 10.0) -> None:
        """Stop every worker: idle ones are told to leave, busy ones are killed and then
        reaped by the threads using them, which this waits for (up to ``wait`` seconds)."""
        with self.cond:
            self.closed = True
            resting = list(self.idle)
            self.idle.clear()
            self.live.difference_update(resting)
            busy = list(self.live)
            self.cond.notify_all()
        for worker in busy:
            worker.signal_kill()
        for worker in resting:  # close every input first, so that they all leave at once
            worker.close_input()
        for worker in resting:
            worker.retire()
        deadline = time.monotonic() + wait
        with self.cond:
            while self.live and (remaining := deadline - time.monotonic()) > 0:
                self.cond.wait(remaining)


def _run(pool: _Pool, logic: str, input: JSONValue, params: Mapping[str, JSONValue],
         limits: SandboxLimits) -> JSONValue:
    """One request on a worker of ``pool``: :meth:`Sandbox.run`."""
    payload = _encode(logic, input, params, limits)
    worker = pool.acquire()
    outcome = "kill"
    try:
        deadline = time.monotonic() + limits.time_limit + GRACE_SECONDS
        try:
            reply = worker.request(payload, deadline, limits.max_result_bytes + _REPLY_OVERHEAD)
        except _TimedOut:
            raise SandboxError(time_limit_message(limits.time_limit)) from None
        except _Crashed:
            outcome = "retire"  # it is gone already: just reap it
            worker.retire()
            if pool.closed:
                raise SandboxError("the sandbox was closed while the measure ran") from None
            raise SandboxError(worker.crash_message()) from None
        except _BadReply as exc:  # killed below, never asked again
            raise SandboxError(first_line(
                f"the JavaScript worker broke the protocol ({exc}) and was replaced")) from None
        except RecursionError:
            raise SandboxError("result is nested too deeply") from None
        outcome = "reuse" if reply.get("retire") is False else "retire"
        return _result(reply)
    finally:
        pool.release(worker, outcome)


@dataclass
class _Job:
    future: Future[JSONValue]
    logic: str
    input: JSONValue
    params: Mapping[str, JSONValue]
    limits: SandboxLimits


class _Turns:
    """Requests waiting for a worker, one queue per key, the keys served in turn: a free
    worker takes the next request of the key with the fewest requests running and, among
    those, the one served longest ago (a key with none running is served first). So a key
    that comes with one request waits for at most the requests already running, however
    many another key has queued. As many threads serve the queues as there are workers,
    started when first needed."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.cond = threading.Condition()
        self.queues: dict[Hashable, deque[_Job]] = {}  # keys with requests waiting
        self.running: dict[Hashable, int] = {}  # requests being served, by key
        self.served: dict[Hashable, int] = {}  # when each key last had its turn
        self.turn = 0
        self.threads: list[threading.Thread] = []
        self.closed = False

    def put(self, key: Hashable, job: _Job) -> None:
        with self.cond:
            if self.closed:
                raise SandboxError("the sandbox is closed")
            self.queues.setdefault(key, deque()).append(job)
            if len(self.threads) < self.pool.size:
                thread = threading.Thread(target=self._serve, name="vaultd-javascript",
                                          daemon=True)
                thread.start()
                self.threads.append(thread)
            self.cond.notify()

    def _forget(self, key: Hashable) -> None:
        """Once a key has nothing waiting or running, its next request is served first."""
        if key not in self.queues and key not in self.running:
            self.served.pop(key, None)

    def _take(self) -> tuple[Hashable, _Job] | None:
        with self.cond:
            while not self.closed:
                while self.queues:
                    key = min(self.queues, key=lambda k: (self.running.get(k, 0),
                                                          self.served.get(k, -1)))
                    queue = self.queues[key]
                    job = queue.popleft()
                    if not queue:
                        del self.queues[key]
                    if job.future.set_running_or_notify_cancel():
                        self.running[key] = self.running.get(key, 0) + 1
                        self.turn += 1
                        self.served[key] = self.turn
                        return key, job
                    self._forget(key)
                self.cond.wait()
            return None

    def _serve(self) -> None:
        while (taken := self._take()) is not None:
            key, job = taken
            try:
                result = _run(self.pool, job.logic, job.input, job.params, job.limits)
            except Exception as exc:  # a measure's error, or a bug: the caller's to see
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                with self.cond:
                    self.running[key] -= 1
                    if not self.running[key]:
                        del self.running[key]
                    self._forget(key)

    def shutdown(self) -> None:
        with self.cond:
            self.closed = True
            waiting = [job for queue in self.queues.values() for job in queue]
            self.queues.clear()
            self.cond.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(SandboxError("the sandbox is closed"))


def _shutdown(turns: _Turns, pool: _Pool) -> None:
    turns.shutdown()
    pool.shutdown()


class Sandbox:
    """A pool of QuickJS worker processes. Use as a context manager, or call :meth:`close`."""

    def __init__(self, workers: int = 2, limits: SandboxLimits = SandboxLimits()) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}")
        self._limits = limits
        self._pool = _Pool(workers, limits)
        self._turns = _Turns(self._pool)
        # Stops the workers if the Sandbox is dropped without close(), and at exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._turns, self._pool)

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the workers alive now (idle or busy), for monitoring and tests."""
        with self._pool.cond:
            return tuple(sorted(w.pid for w in self._pool.live))

    def run(
        self,
        logic: str,
        input: JSONValue,
        params: Mapping[str, JSONValue],
        *,
        limits: SandboxLimits | None = None,
    ) -> JSONValue:
        """Run ``logic`` with ``input`` and ``params``; its result as a JSON value.

        Raises :class:`SandboxError` with a one-line message for anything that goes wrong:
        a JavaScript error, the time or memory limit, a result too large, a worker crash.
        """
        return _run(self._pool, logic, input, params, limits or self._limits)

    def submit(
        self,
        logic: str,
        input: JSONValue,
        params: Mapping[str, JSONValue],
        *,
        key: Hashable,
        limits: SandboxLimits | None = None,
    ) -> Future[JSONValue]:
        """:meth:`run` later, in ``key``'s turn: requests under one key (one note's
        measures) wait behind one another, not behind every other key's. The future holds
        the result or the :class:`SandboxError`; cancelling it before it starts drops it."""
        future: Future[JSONValue] = Future()
        self._turns.put(key, _Job(future, logic, input, params, limits or self._limits))
        return future

    def close(self) -> None:
        """Stop every worker and reap it. Idempotent; later calls to :meth:`run` fail."""
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _encode(
    logic: str, input: JSONValue, params: Mapping[str, JSONValue], limits: SandboxLimits
) -> bytes:
    """The request for a worker, or :class:`SandboxError` if it cannot be JSON."""
    if not isinstance(logic, str):
        raise SandboxError("the logic is not a string")
    if not isinstance(params, Mapping):
        raise SandboxError("params is not a JSON object")
    request = {
        "logic": logic,
        "input": input,
        "params": dict(params),
        "time_limit": float(limits.time_limit),
        "memory_limit": int(limits.memory_limit),
        "max_result_bytes": int(limits.max_result_bytes),
    }
    try:
        text = json.dumps(request, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SandboxError(first_line(f"the input or params are not JSON: {exc}")) from None
    return text.encode("ascii")


def _result(reply: dict[str, Any]) -> JSONValue:
    """The value of a worker's reply, or its error as :class:`SandboxError`."""
    if reply.get("ok") is True and "result" in reply:
        return cast(JSONValue, reply["result"])
    error = reply.get("error")
    if reply.get("ok") is False and isinstance(error, str):
        raise SandboxError(first_line(error) or "the measure failed")
    raise SandboxError("the sandbox worker misbehaved: unexpected reply")
