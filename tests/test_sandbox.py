"""The JavaScript sandbox: real QuickJS in real worker processes."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vaultd.edges.sandbox import JSONValue, Sandbox, SandboxLimits
from vaultd.errors import MeasureError, SandboxError

INCLUDES = "return input.includes(params.target);"
INDEX = "const index = input.indexOf(params.target); return index === -1 ? 'N/A' : index + 1;"
INFINITE = "while (true) {}"
BOMBS = [
    "const a = []; while (true) a.push('x'.repeat(1000) + a.length);",
    "const a = []; while (true) a.push({ x: a.length });",
    "let s = 'x'; while (true) s += s;",
    "return new Array(1e8).fill(0);",
]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(workers=2) as box:
        yield box


def error_of(box: Sandbox, logic: str, input: object = None, **kwargs: object) -> str:
    with pytest.raises(SandboxError) as info:
        box.run(logic, input, {}, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message
    return message


def gone(pid: int) -> bool:
    """True once the process no longer exists, not even as a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- results ---------------------------------------------------------------------------


def test_seed_includes(sandbox: Sandbox) -> None:
    assert sandbox.run(INCLUDES, ["Poteligeo"], {"target": "Poteligeo"}) is True
    assert sandbox.run(INCLUDES, ["Keytruda"], {"target": "Poteligeo"}) is False


def test_seed_index(sandbox: Sandbox) -> None:
    assert sandbox.run(INDEX, ["Poteligeo"], {"target": "Poteligeo"}) == 1
    assert sandbox.run(INDEX, ["a", "b", "Poteligeo"], {"target": "Poteligeo"}) == 3
    assert sandbox.run(INDEX, ["Keytruda"], {"target": "Poteligeo"}) == "N/A"


@pytest.mark.parametrize("logic", ["return;", "", "return undefined;", "return () => 1;"])
def test_nothing_is_null(sandbox: Sandbox, logic: str) -> None:
    assert sandbox.run(logic, [1], {}) is None


def test_values_round_trip(sandbox: Sandbox) -> None:
    value: JSONValue = {"a": [1, 2.5, -3, True, False, None], "s": 'é😀\u2028"\\', "n": {"m": {}}}
    assert sandbox.run("return input;", value, {}) == value
    assert sandbox.run("return params;", None, {"k": [1, "two"]}) == {"k": [1, "two"]}
    assert sandbox.run("return [input.a.length, typeof params];", value, {}) == [6, "object"]
    assert sandbox.run("return NaN;", None, {}) is None
    assert sandbox.run("return 0.1 + 0.2;", None, {}) == 0.1 + 0.2
    assert sandbox.run("return new Date(0);", None, {}) == "1970-01-01T00:00:00.000Z"
    assert sandbox.run("return [undefined, function () {}];", None, {}) == [None, None]


def test_lone_surrogates_do_not_crash(sandbox: Sandbox) -> None:
    # Handing such a string to QuickJS directly crashes the process that does it.
    assert sandbox.run("return input;", "\ud800", {}) == "\ud800"
    assert sandbox.run("return '\\uD800' + input;", "x", {}) == "\ud800x"
    assert sandbox.run("return input.length; // \ud800", "ab", {}) == 2


def test_no_host_access(sandbox: Sandbox) -> None:
    logic = "return typeof require + typeof std + typeof os + typeof fetch + typeof process"
    assert sandbox.run(logic, None, {}) == "undefined" * 5
    assert sandbox.run("return typeof console + typeof print;", None, {}) == "undefinedundefined"


def test_context_is_fresh_each_time(sandbox: Sandbox) -> None:
    sandbox.run("globalThis.leak = 41;", None, {})
    assert sandbox.run("return typeof leak;", None, {}) == "undefined"


# -- JavaScript errors -----------------------------------------------------------------


def test_syntax_error(sandbox: Sandbox) -> None:
    message = error_of(sandbox, "return 1 +;")
    assert message.startswith("SyntaxError:")


def test_type_error(sandbox: Sandbox) -> None:
    assert error_of(sandbox, "return input.x;") == "TypeError: cannot read property 'x' of null"


def test_thrown_values(sandbox: Sandbox) -> None:
    assert error_of(sandbox, "throw new Error('bad\\nworse');") == "Error: bad"
    assert error_of(sandbox, "throw 'plain';") == "uncaught exception: plain"
    assert error_of(sandbox, "throw Symbol('s');") == "uncaught exception: Symbol(s)"
    assert error_of(sandbox, "throw new RangeError('x'.repeat(5000));").endswith("…")
    assert len(error_of(sandbox, "throw new RangeError('x'.repeat(5000));")) <= 300


def test_error_is_a_measure_error(sandbox: Sandbox) -> None:
    with pytest.raises(MeasureError):
        sandbox.run("return }", None, {})


# -- limits ------------------------------------------------------------------------------


def test_time_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    assert error_of(sandbox, INFINITE, limits=SandboxLimits(time_limit=1)) == (
        "time limit exceeded (1 s)"
    )
    assert time.monotonic() - started < 30
    assert sandbox.run(INCLUDES, ["x"], {"target": "x"}) is True


def test_time_limit_in_a_thrown_objects_to_string(sandbox: Sandbox) -> None:
    logic = "throw { toString() { while (true) {} } };"
    limits = SandboxLimits(time_limit=0.5)
    assert error_of(sandbox, logic, limits=limits) == "time limit exceeded (0.5 s)"


def test_time_limit_outside_the_engine(sandbox: Sandbox) -> None:
    # QuickJS's own limit stops the loop, but turning the error into text calls the
    # user's toString with no limit: the parent's deadline ends that worker.
    logic = "Error.prototype.toString = function () { while (true) {} }; while (true) {}"
    started = time.monotonic()
    limits = SandboxLimits(time_limit=0.5)
    assert error_of(sandbox, logic, limits=limits) == "time limit exceeded (0.5 s)"
    assert time.monotonic() - started < 30
    assert sandbox.run("return 3;", None, {}) == 3


def test_time_limit_default_is_two_seconds(sandbox: Sandbox) -> None:
    assert error_of(sandbox, INFINITE) == "time limit exceeded (2 s)"


@pytest.mark.parametrize("bomb", BOMBS)
def test_memory_limit(sandbox: Sandbox, bomb: str) -> None:
    assert error_of(sandbox, bomb) == "memory limit exceeded (64 MiB)"
    assert sandbox.run(INDEX, ["Poteligeo"], {"target": "Poteligeo"}) == 1


def test_memory_limit_message_follows_the_limit(sandbox: Sandbox) -> None:
    limits = SandboxLimits(memory_limit=16 * 1024 * 1024)
    assert error_of(sandbox, BOMBS[0], limits=limits) == "memory limit exceeded (16 MiB)"


def test_stack_overflow(sandbox: Sandbox) -> None:
    assert error_of(sandbox, "function f() { return f() + 1; } return f();") == "stack overflow"
    assert sandbox.run("return 2;", None, {}) == 2


def test_result_too_large(sandbox: Sandbox) -> None:
    message = error_of(sandbox, "return 'x'.repeat(2000000);")
    assert message == "result too large (2000002 bytes, limit 1000000)"
    small = SandboxLimits(max_result_bytes=10)
    assert error_of(sandbox, "return 'é'.repeat(5);", limits=small).startswith(
        "result too large (12 bytes"
    )
    assert sandbox.run("return 'é'.repeat(4);", None, {}, limits=small) == "éééé"


def test_result_nested_too_deeply(sandbox: Sandbox) -> None:
    # QuickJS's JSON.stringify would crash the worker on this.
    logic = "let a = []; for (let i = 0; i < 100000; i++) a = [a]; return a;"
    assert error_of(sandbox, logic).startswith("result is nested too deeply")
    assert sandbox.run("let a = []; for (let i = 0; i < 50; i++) a = [a]; return 1;", None, {}) == 1


def test_input_that_is_not_json(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError):
        sandbox.run("return 1;", math.nan, {})
    with pytest.raises(SandboxError):
        sandbox.run("return 1;", object(), {})  # type: ignore[arg-type]


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(time_limit=0)
    with pytest.raises(ValueError):
        Sandbox(workers=0)


# -- processes -------------------------------------------------------------------------


def test_many_memory_bombs_from_many_threads() -> None:
    with Sandbox(workers=4) as box:

        def bombs(n: int) -> list[str]:
            messages = []
            for i in range(10):
                try:
                    box.run(BOMBS[(n + i) % len(BOMBS)], None, {})
                except SandboxError as exc:
                    messages.append(str(exc))
            return messages

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(bombs, range(8)))
        assert [len(r) for r in results] == [10] * 8
        assert {m for r in results for m in r} == {"memory limit exceeded (64 MiB)"}
        assert box.run(INCLUDES, ["Poteligeo"], {"target": "Poteligeo"}) is True


def test_many_threads_get_their_own_answers() -> None:
    with Sandbox(workers=3) as box:

        def calls(n: int) -> list[object]:
            return [box.run("return input * params.k;", n * 100 + i, {"k": 2}) for i in range(30)]

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(calls, range(12)))
        assert results == [[(n * 100 + i) * 2 for i in range(30)] for n in range(12)]
        assert len(box.worker_pids) <= 3


@pytest.mark.parametrize(("signum", "says"), [
    (signal.SIGKILL, "the JavaScript worker was killed"),
    (signal.SIGSEGV, "the JavaScript worker crashed (out of memory?)"),  # said in words
])
def test_worker_killed_from_outside(signum: int, says: str) -> None:
    with Sandbox(workers=1) as box:
        assert box.run("return 1;", None, {}) == 1
        (pid,) = box.worker_pids
        errors: list[str] = []

        def hang() -> None:
            try:
                box.run(INFINITE, None, {}, limits=SandboxLimits(time_limit=60))
            except SandboxError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=hang)
        thread.start()
        time.sleep(0.5)
        os.kill(pid, signum)
        thread.join(30)
        assert not thread.is_alive()
        assert errors == [says]
        assert box.run(INDEX, ["Poteligeo"], {"target": "Poteligeo"}) == 1
        assert box.worker_pids != (pid,)
        assert gone(pid)


def test_worker_replaced_after_time_limit() -> None:
    with Sandbox(workers=1) as box:
        box.run("return 1;", None, {})
        (first,) = box.worker_pids
        error_of(box, INFINITE, limits=SandboxLimits(time_limit=0.2))
        assert box.run("return 2;", None, {}) == 2
        (second,) = box.worker_pids
        assert first != second
        assert gone(first)


def test_close_leaves_no_children() -> None:
    box = Sandbox(workers=3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda i: box.run("return input;", i, {}), range(30)))
    pids = box.worker_pids
    assert pids
    box.close()
    assert box.worker_pids == ()
    assert all(gone(pid) for pid in pids)
    box.close()  # idempotent
    with pytest.raises(SandboxError):
        box.run("return 1;", None, {})


def test_close_while_running() -> None:
    box = Sandbox(workers=1)
    box.run("return 1;", None, {})
    (pid,) = box.worker_pids
    errors: list[str] = []

    def hang() -> None:
        try:
            box.run(INFINITE, None, {}, limits=SandboxLimits(time_limit=60))
        except SandboxError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.3)
    box.close()
    thread.join(30)
    assert not thread.is_alive()
    assert errors and "closed" in errors[0]
    assert gone(pid)


def test_worker_ignores_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing in the directory vaultd runs from can stand in for quickjs or vaultd.
    (tmp_path / "quickjs.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "vaultd").mkdir()
    (tmp_path / "vaultd" / "__init__.py").write_text("raise SystemExit(4)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nowhere"))
    with Sandbox(workers=1) as box:
        assert box.run(INCLUDES, ["Poteligeo"], {"target": "Poteligeo"}) is True
