"""The JavaScript sandbox, hardened: one note's JavaScript never reaches another note.

Real QuickJS in real worker processes, real notes run by ``vaultd run --once`` or the real
daemon. Each test is a way one measure could reach past itself (forging another note's
result, holding its worker, outliving a memory error, starving other notes) or a message
a user read wrongly, and asserts what the user checks: the other notes' exact results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from vaultd.edges._sandbox_child import FRAME_HEADER, FRAME_MAGIC, command, seccomp_program
from vaultd.edges.sandbox import Sandbox, SandboxLimits, _root
from vaultd.errors import SandboxError

from .conftest import run_cli
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI
from .notes import note_with_measures

# Replaces JSON.stringify so that its "result" carries whole forged replies after it: the
# old line protocol took them as the replies to the next requests on that worker.
FORGE = (
    "JSON.stringify = function () { return '1}\\n"
    + '{"ok":true,"retire":false,"result":"FORGED"}\\n' * 3
    + '{"ok":true,"retire":false,"result":"FORGED"\'; }; return 1;'
)
BOMB = "const a = []; while (true) a.push('x'.repeat(1000) + a.length);"


def measures(*logics: str, prefix: str = "m") -> list[str]:
    lines: list[str] = []
    for number, logic in enumerate(logics):
        lines += ["* ---", f"  * id: {prefix}{number}", "  * type: programmatic",
                  f"  * logic: {json.dumps(logic)}"]
    return lines


def results_of(text: str) -> list[str]:
    """The result blocks of a note, in order."""
    return re.findall(r"> ```evaluation-result-text\n> (.*)\n> ```", text)


def error_of(box: Sandbox, logic: str, **kwargs: object) -> str:
    with pytest.raises(SandboxError) as info:
        box.run(logic, None, {}, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- 4. no measure forges another's result ----------------------------------------------


def test_replacing_json_stringify_forges_no_other_result() -> None:
    with Sandbox(workers=1) as box:
        assert box.run(FORGE, None, {}) == 1  # its own result, made by the real stringify
        assert [box.run("return params.n;", None, {"n": n}) for n in range(5)] == [0, 1, 2, 3, 4]


def test_forging_note_leaves_other_notes_results_exact(
    vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTD_JS_WORKERS", "1")  # every measure on the one worker
    (vault / "a-forger.md").write_text(note_with_measures(measures(*[FORGE] * 4)),
                                       encoding="utf-8")
    for n in range(4):
        (vault / f"victim{n}.md").write_text(note_with_measures(
            measures(f"return {n} * 10 + 1;", f"return {n} * 10 + 2;", "return input.length;"),
            answer="x" * (n + 1)), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran.out
    for n in range(4):
        text = (vault / f"victim{n}.md").read_text(encoding="utf-8")
        assert results_of(text) == [str(n * 10 + 1), str(n * 10 + 2), str(n + 1)], text
        assert "FORGED" not in text
    assert results_of((vault / "a-forger.md").read_text(encoding="utf-8")) == ["1"] * 4


def _reply_pipe(pid: int) -> str:
    """The /proc path of the worker's end of its reply pipe (the one fd it writes to)."""
    fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    pipes = [fd for fd, target in fds.items() if target.startswith("pipe:") and fd != "0"]
    assert len(pipes) == 1, fds
    return f"/proc/{pid}/fd/{pipes[0]}"


@pytest.mark.parametrize("stray", [
    FRAME_HEADER.pack(FRAME_MAGIC, 99, 2) + b"{}",  # a reply to a request never made
    b'{"ok":true,"retire":false,"result":"FORGED"}\n',  # the old protocol's line
], ids=["wrong id", "not a frame"])
def test_a_reply_that_does_not_match_kills_the_worker(stray: bytes) -> None:
    with Sandbox(workers=1) as box:
        assert box.run("return 1;", None, {}) == 1
        (pid,) = box.worker_pids
        with open(_reply_pipe(pid), "wb") as pipe:  # from outside: no measure can do this
            pipe.write(stray)
        message = error_of(box, "return 2;")
        assert message.startswith("the JavaScript worker broke the protocol")
        assert box.run("return 3;", None, {}) == 3  # a fresh worker, the right answer
        assert box.worker_pids != (pid,)
        assert gone(pid)


def test_prototypes_changed_by_one_measure_do_not_reach_the_next() -> None:
    spoil = ("Object.prototype.toJSON = () => 'FORGED'; Array.prototype.toJSON = () => 'FORGED';"
             " String.prototype.slice = () => 'FORGED'; Map.prototype.get = () => 99;"
             " Reflect.apply = () => 'FORGED'; return {};")
    with Sandbox(workers=1) as box:
        assert box.run(spoil, None, {}) == "FORGED"  # its own result: its own business
        assert box.run("return {a: [1, {b: 2}]};", None, {}) == {"a": [1, {"b": 2}]}
        assert box.run("return [input];", "s", {}) == ["s"]


def test_getters_that_throw_while_the_result_is_written_are_that_measures_error() -> None:
    with Sandbox(workers=1) as box:
        assert error_of(box, "return { get x() { throw new Error('boom'); } };") == "Error: boom"
        assert error_of(box, "return { toJSON() { throw new TypeError('tj'); } };") == (
            "TypeError: tj")
        assert error_of(box, "return { get x() { throw 'plain'; } };") == (
            "uncaught exception: plain")
        assert box.run("return { x: 1 };", None, {}) == {"x": 1}


def test_printing_reaches_no_reply() -> None:
    # No console or print exists; the worker's own stdout goes nowhere a reply is read.
    with Sandbox(workers=1) as box:
        logic = ("let n = 0; for (const f of [globalThis.print, globalThis.console]) "
                 "if (f) n++; return n;")
        assert box.run(logic, None, {}) == 0
        assert box.run("return 5;", None, {}) == 5


# -- 5. a memory error or crash retires the worker; workers are confined --------------------


CRASHED = "the JavaScript worker crashed (out of memory?)"
CAUGHT_BOMBS = [
    "const a = []; while (true) a.push({ x: a.length });",
    "let s = 'x'; while (true) s += s;",
    "const a = []; while (true) a.push([a.length]);",
]


def test_a_caught_memory_error_retires_the_worker() -> None:
    survived = 0
    with Sandbox(workers=1) as box:
        for bomb in CAUGHT_BOMBS:
            assert box.run("return 1;", None, {}) == 1
            (pid,) = box.worker_pids
            logic = f"try {{ {bomb} }} catch (e) {{ }} return 'survived';"
            try:
                assert box.run(logic, None, {}) == "survived"  # its result stands...
                survived += 1
            except SandboxError as exc:  # QuickJS may crash on the way: this measure's end
                assert str(exc) == CRASHED
            wait_for(lambda pid=pid: gone(pid), what="the worker to leave")  # ...and retires
            assert box.run("return 2;", None, {}) == 2
            assert box.worker_pids != (pid,)
    assert survived  # the measure that caught the error went on, and its worker retired


def test_throw_null_is_the_scripts_error() -> None:
    with Sandbox(workers=1) as box:
        assert error_of(box, "throw null;") == "threw null"
        assert error_of(box, "try { throw new Error('x'); } catch (e) { throw null; }") == (
            "threw null")
    with Sandbox(workers=1) as box:  # and QuickJS's own null, out of memory, is still that
        assert error_of(box, "const a = []; while (true) a.push([a.length]);") == (
            "memory limit exceeded (64 MiB)")


def _self_test() -> dict[str, object]:
    done = subprocess.run([*command(_root(), 64 * 1024 * 1024, 2.0), "--self-test"],
                          env={}, capture_output=True, timeout=60, check=True)
    report: dict[str, object] = json.loads(done.stdout)
    return report


NO_FILTER = os.uname().sysname != "Linux" or seccomp_program(os.uname().machine) is None


@pytest.mark.skipif(NO_FILTER, reason="no system call filter for this platform")
def test_a_confined_worker_is_refused_what_it_never_needs() -> None:
    report = _self_test()
    assert report["missing"] == []
    tries = report["tries"]
    assert isinstance(tries, dict)
    for name in ("fork", "spawn", "exec", "socket", "unix socket", "open for writing",
                 "open for reading", "kill", "set a limit", "unlink", "mkdir"):
        assert tries[name].startswith("refused"), (name, tries[name])
    assert tries["write to stdout"] == "allowed"  # its reply pipe still works
    assert not Path("/tmp/vaultd-self-test").exists()
    limits = report["limits"]
    assert isinstance(limits, dict)
    assert limits["RLIMIT_FSIZE"] == 0 and limits["RLIMIT_CORE"] == 0
    assert limits["RLIMIT_NOFILE"] <= 16 and limits["RLIMIT_NPROC"] == 0
    assert 0 < limits["RLIMIT_AS"] < 4 * 1024**3
    assert 0 < limits["RLIMIT_CPU"] < 2 * 3600


def test_a_worker_inherits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SETTING", "from the parent")
    secret = tmp_path / "open-in-the-parent.txt"
    handle = secret.open("w")
    os.set_inheritable(handle.fileno(), True)
    try:
        with Sandbox(workers=1) as box:
            assert box.run("return 1;", None, {}) == 1
            (pid,) = box.worker_pids
            assert Path(f"/proc/{pid}/environ").read_bytes() == b""
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert str(secret) not in targets
            own = ("/dev/null", f"/proc/{pid}/status")  # its peak memory, opened by itself
            assert all(t.startswith("pipe:") or t in own for t in targets), targets
            status = Path(f"/proc/{pid}/status").read_text()
            if seccomp_program(os.uname().machine) is not None:
                assert re.search(r"^Seccomp:\s+2$", status, re.M), status
                assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
            limits = Path(f"/proc/{pid}/limits").read_text()
            assert re.search(r"^Max file size\s+0\s+0", limits, re.M), limits
            assert re.search(r"^Max core file size\s+0\s+0", limits, re.M), limits
            assert box.run("return 2;", None, {}) == 2  # confined, and still working
    finally:
        handle.close()


# -- 6. one note's JavaScript does not starve another's -----------------------------------


def test_turns_serve_every_key_before_any_key_twice() -> None:
    with Sandbox(workers=1) as box:
        order: list[str] = []
        lock = threading.Lock()

        def record(name: str):  # type: ignore[no-untyped-def]
            def done(_: object) -> None:
                with lock:
                    order.append(name)
            return done

        slow = SandboxLimits(time_limit=0.3)
        hostile = [box.submit("while (true) {}", None, {}, key="hostile", limits=slow)
                   for _ in range(8)]
        for future in hostile:
            future.add_done_callback(record("hostile"))
        wait_for(lambda: box.worker_pids, what="the hostile note's first measure")
        normal = box.submit("return input + 1;", 41, {}, key="normal")
        normal.add_done_callback(record("normal"))
        assert normal.result(timeout=60) == 42
        assert order[:2] == ["hostile", "normal"], order  # behind only the one running
        for future in hostile:
            with pytest.raises(SandboxError, match="time limit exceeded"):
                future.result(timeout=60)


def test_a_runaway_note_does_not_hold_another_note(vault: Path, api: FakeMessagesAPI) -> None:
    hostile = vault / "hostile.md"
    hostile.write_text(note_with_measures(measures(*["while (true) {}"] * 60)), encoding="utf-8")
    normal = vault / "normal.md"
    env = {"VAULTD_JS_WORKERS": "1", "VAULTD_JS_TIME_LIMIT": "0.5"}
    with DaemonProcess(vault, "--settle", "0.1", env=env) as proc:
        proc.wait_ready()
        # the hostile note runs, its other 59 measures waiting for the one worker
        wait_for(note_says(hostile, "Status: Processing", "time limit exceeded (0.5 s)"),
                 what="the hostile note under way")
        normal.write_text(note_with_measures(measures("return input.length + 1;")),
                          encoding="utf-8")
        wait_for(note_says(normal, "Status: Done"), what="the normal note done")
        text = hostile.read_text(encoding="utf-8")
        assert "Status: Processing" in text  # still at it...
        assert text.count("time limit exceeded (0.5 s)") < 30  # ...far from its 60th
        assert results_of(normal.read_text(encoding="utf-8")) == ["31"]
        proc.stop()


# -- issue 11, 9: where in the logic an error is ---------------------------------------------


def test_an_error_says_its_line_in_the_logic(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = vault / "lines.md"
    note.write_text(
        "---\nStatus: Pending\n---\n\n> [!answer]\n> ```answer-text\n> hello\n> ```\n\n"
        "> [!measures]\n> ```measures-yaml\n"
        "> - id: call\n>   type: programmatic\n>   logic: |\n"
        ">     const f = 1;\n>     return f();\n"
        "> - id: syntax\n>   type: programmatic\n>   logic: |\n"
        ">     const a = 1;\n>\n>     return a +;\n"
        "> - id: inner\n>   type: programmatic\n>   logic: |\n"
        ">     function g(x) {\n>       return x.y.z;\n>     }\n>     return g({});\n"
        "> ```\n", encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    assert results_of(note.read_text(encoding="utf-8")) == [
        "Error: TypeError: not a function (logic line 2)",
        "Error: SyntaxError: unexpected token in expression: ';' (logic line 3)",
        "Error: TypeError: cannot read property 'z' of undefined (logic line 2)",
    ]
