"""The sandbox worker: runs programmatic measures' JavaScript in QuickJS, one per request.

Started by :mod:`vaultd.sandbox` as ``python -P -m vaultd._sandbox_child``; never imported
for its own sake by anything else except for the small message helpers at the top, which
the parent shares so that both sides word limits the same way. Importing this module does
not import quickjs; only :func:`main` does.

Protocol (one JSON object per line, UTF-8):

* On start the worker writes ``{"ready": true}`` (or ``{"fatal": "..."}`` and exits).
* Each request is ``{"logic": str, "input": any, "params": object, "time_limit": float,
  "memory_limit": int, "max_result_bytes": int}``.
* Each reply is either ``{"ok":true,"retire":false,"result":<the JSON value>}`` (the
  result's JSON text spliced in as it came from ``JSON.stringify``) or
  ``{"ok": false, "error": "<one line>", "retire": bool}``.
* ``retire`` means the worker exits right after the reply: QuickJS's heap is not to be
  trusted after running out of memory (freeing such a context can corrupt the process and
  crash a later request), so a worker never runs another request after one.
* End of input on stdin makes the worker exit cleanly.

Everything handed to QuickJS is ASCII produced here by ``json.dumps``: passing a Python
string with a lone surrogate to ``Context.set`` crashes the process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

MIB = 1024 * 1024
KIB = 1024
MAX_STACK_BYTES = 1 * MIB
MAX_RESULT_DEPTH = 512
MAX_MESSAGE_CHARS = 300
# A worker starts afresh after this many requests, whatever happened: cheap insurance
# against slow leaks in the engine.
MAX_REQUESTS_PER_WORKER = 1000
# Past its time limit plus this, a request's worker dies by SIGALRM whatever it is doing:
# the parent kills it sooner, but an orphaned worker must not spin forever either (the
# engine's time limit does not cover everything, e.g. Python asking QuickJS for the text
# of an error whose ``toString`` the user replaced).
BACKSTOP_SECONDS = 10.0


def format_seconds(seconds: float) -> str:
    """``1`` for 1.0, ``2.5`` for 2.5: no needless ``.0``."""
    return f"{seconds:g}"


def format_bytes(size: int) -> str:
    """``64 MiB``, ``512 KiB`` or ``1000 bytes``, whichever is exact."""
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} bytes"


def time_limit_message(seconds: float) -> str:
    return f"time limit exceeded ({format_seconds(seconds)} s)"


def memory_limit_message(size: int) -> str:
    return f"memory limit exceeded ({format_bytes(size)})"


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The first line of ``text``, printable, valid UTF-8, at most ``limit`` characters."""
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    line = "".join(ch if ch.isprintable() else " " for ch in line)
    line = line.encode("utf-8", "replace").decode("utf-8")
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


# The wrapper every request evaluates. The user's code is a function body with ``input``
# and ``params`` in scope. Every failure the engine lets JavaScript catch is caught here,
# inside the time limit, and turned into a plain string (calling ``toString`` on a thrown
# object from Python instead would run user code with no time limit). Only two things
# escape: the uncatchable "interrupted" of the time limit, and ``null``, which QuickJS
# throws when it runs out of memory while making the error object.
#
# The replacer bounds the result's depth: QuickJS's JSON.stringify does not check the C
# stack and crashes the process on a result nested some 30,000 deep.
_WRAPPER = """(function () {
  const logic = JSON.parse(__vaultd_logic);
  const inputText = __vaultd_input;
  const paramsText = __vaultd_params;
  delete globalThis.__vaultd_logic;
  delete globalThis.__vaultd_input;
  delete globalThis.__vaultd_params;
  const TOO_DEEP = {};
  try {
    const f = new Function("input", "params", logic);
    const r = f(JSON.parse(inputText), JSON.parse(paramsText));
    if (r === undefined) return "Rnull";
    const depth = new Map();
    const s = JSON.stringify(r, function (key, value) {
      if (value !== null && typeof value === "object") {
        const d = (depth.get(this) || 0) + 1;
        if (d > MAX_DEPTH) throw TOO_DEEP;
        depth.set(value, d);
      }
      return value;
    });
    return s === undefined ? "Rnull" : "R" + s;
  } catch (e) {
    if (e === null) throw e;
    if (e === TOO_DEEP) return "D";
    let m;
    try {
      m = e instanceof Error ? String(e) : "uncaught exception: " + String(e);
    } catch (e2) {
      if (e2 === null) throw e2;
      m = "uncaught exception";
    }
    return "E" + JSON.stringify(m.slice(0, 1000));
  }
})()
""".replace("MAX_DEPTH", str(MAX_RESULT_DEPTH))

_STACK_OVERFLOW = frozenset(
    {
        "InternalError: stack overflow",
        "SyntaxError: stack overflow",
        "RangeError: Maximum call stack size exceeded",
    }
)


class _Failure(Exception):
    """A request failed; ``retire`` says whether this worker may run another."""

    def __init__(self, message: str, *, retire: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retire = retire


def _error_line(text: str, time_limit: float, memory_limit: int) -> _Failure:
    """Map the first line of a JavaScript error to vaultd's wording."""
    line = one_line(text)
    if line == "InternalError: interrupted":
        return _Failure(time_limit_message(time_limit), retire=True)
    if line in ("null", "") or (line.startswith("InternalError:") and "out of memory" in line):
        # ``null`` is what QuickJS throws when it cannot even allocate the error object.
        return _Failure(memory_limit_message(memory_limit), retire=True)
    if line in _STACK_OVERFLOW:
        return _Failure("stack overflow")
    return _Failure(line)


def _evaluate(quickjs: Any, request: dict[str, Any], keep: list[Any]) -> bytes:
    """Run one request; the reply's ``result`` JSON text as UTF-8, or raise :class:`_Failure`."""
    logic = request["logic"]
    time_limit = float(request["time_limit"])
    memory_limit = int(request["memory_limit"])
    max_result_bytes = int(request["max_result_bytes"])
    if not isinstance(logic, str):
        raise _Failure("the logic is not a string")
    if not isinstance(request["params"], dict):
        raise _Failure("params is not a JSON object")

    ctx = quickjs.Context()
    # ``keep`` holds the context until the caller knows whether the worker retires: a
    # retiring worker exits without freeing it.
    keep.append(ctx)
    ctx.set_memory_limit(memory_limit)
    ctx.set_time_limit(time_limit)
    ctx.set_max_stack_size(MAX_STACK_BYTES)
    ctx.set("__vaultd_logic", json.dumps(logic, ensure_ascii=True))
    ctx.set("__vaultd_input", json.dumps(request["input"], ensure_ascii=True))
    ctx.set("__vaultd_params", json.dumps(request["params"], ensure_ascii=True))
    signal.setitimer(signal.ITIMER_REAL, time_limit + BACKSTOP_SECONDS)
    try:
        out = ctx.eval(_WRAPPER)
    except quickjs.JSException as exc:
        failure = _error_line(str(exc), time_limit, memory_limit)
        if isinstance(exc, quickjs.StackOverflow) and not failure.retire:
            failure = _Failure("stack overflow")
        raise failure from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if not isinstance(out, str) or not out:
        raise _Failure("sandbox internal error: unexpected value from the wrapper", retire=True)
    tag, body = out[0], out[1:]
    if tag == "E":
        raise _error_line(json.loads(body), time_limit, memory_limit)
    if tag == "D":
        raise _Failure(f"result is nested too deeply (more than {MAX_RESULT_DEPTH} levels)")
    if tag != "R":
        raise _Failure("sandbox internal error: unexpected value from the wrapper", retire=True)
    if len(body) > max_result_bytes:  # never fewer UTF-8 bytes than characters
        size = len(body.encode("utf-8", "surrogatepass"))
        raise _Failure(f"result too large ({size} bytes, limit {max_result_bytes})")
    try:
        data = body.encode("utf-8")
    except UnicodeEncodeError:
        raise _Failure("the result is not valid Unicode") from None
    if len(data) > max_result_bytes:
        raise _Failure(f"result too large ({len(data)} bytes, limit {max_result_bytes})")
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def main() -> int:
    # Keep the real stdout for replies only: anything else that writes to fd 1 or
    # sys.stdout (a stray print, a C library) goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C in a terminal is for the daemon, which stops its workers itself; SIGALRM
    # (the backstop) keeps its default action, which ends the process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        import quickjs
    except Exception as exc:
        _write_all(out_fd, (json.dumps({"fatal": f"cannot import quickjs: {exc}"}) + "\n").encode())
        return 1
    _write_all(out_fd, b'{"ready": true}\n')

    keep: list[Any] = []
    stdin = sys.stdin.buffer
    served = 0
    while True:
        line = stdin.readline()
        if not line:
            return 0
        served += 1
        retire = served >= MAX_REQUESTS_PER_WORKER
        try:
            request = json.loads(line)
            result = _evaluate(quickjs, request, keep)
        except _Failure as failure:
            retire = retire or failure.retire
            reply = json.dumps({"ok": False, "error": failure.message, "retire": retire})
            _write_all(out_fd, reply.encode("utf-8") + b"\n")
        except Exception as exc:  # a bad request or an engine failure: report, then leave
            message = one_line(f"sandbox internal error: {type(exc).__name__}: {exc}")
            reply = json.dumps({"ok": False, "error": message, "retire": True})
            _write_all(out_fd, reply.encode("utf-8") + b"\n")
            retire = True
        else:
            head = b'{"ok":true,"retire":' + (b"true" if retire else b"false") + b',"result":'
            _write_all(out_fd, head + result + b"}\n")
        if retire:
            # Leave without freeing anything: after running out of memory (or time) the
            # context's heap may be damaged, and freeing it can corrupt the process.
            os._exit(0)
        keep.clear()


if __name__ == "__main__":
    sys.exit(main())
