"""The sandbox worker: runs programmatic measures' JavaScript in QuickJS, one per request.

Started by :mod:`vaultd.edges.sandbox` (see :func:`command`); never imported for its own sake by
anything else except for the small helpers at the top (message wording, the frame format),
which the parent shares so that both sides speak and word limits the same way. Importing
this module does not import quickjs; only :func:`main` does.

Protocol: every message either way is one *frame*: a 16-byte header (the magic ``vjs1``,
a 64-bit request id and a 32-bit length, big-endian) and that many bytes of JSON.

* On start the worker sends frame 0, ``{"ready": true, "missing": [...]}`` (what it could
  not confine, in words: the parent logs it once) or ``{"fatal": "..."}`` and exits.
* Each request is ``{"logic": str, "input": any, "params": object, "time_limit": float,
  "memory_limit": int, "max_result_bytes": int}``, numbered by the parent from 1.
* Each reply carries its request's id and is ``{"ok":true,"retire":false,"result":<value>}``
  or ``{"ok": false, "error": "<one line>", "retire": bool}``, built here in Python: the
  result's JSON text is checked to be exactly one JSON value before it is put in, so
  nothing the measure does can add to a reply or make another one. The parent takes a
  reply only with the id it is waiting for and nothing after it; anything else is the
  worker's death.
* ``retire`` means the worker exits right after the reply: QuickJS's heap is not to be
  trusted after it ran out of memory (freeing such a context can corrupt the process and
  crash a later request), even when the measure caught the error and went on, so a worker
  never runs another request after one that came near its memory limit.
* End of input makes the worker exit cleanly.

Before it says it is ready the worker confines itself (:func:`confine`): resource limits
(address space, CPU time, no files written, few descriptors, no processes, no core dumps)
and, on Linux x86_64 and aarch64, a seccomp filter that refuses what it never needs: new
processes and programs, sockets, opening any file, changing files, signalling others,
raising its limits. ``--self-test`` confines a worker and then tries those things itself,
reporting what was refused, for the tests.

Everything handed to QuickJS is ASCII produced here by ``json.dumps``: passing a Python
string with a lone surrogate to ``Context.set`` crashes the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import struct
import sys
from typing import Any

from vaultd.errors import one_line

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
# A measure that made the worker's peak memory grow by more than this share of its memory
# limit came near the limit (QuickJS only fails an allocation there): its worker retires.
NEAR_MEMORY_LIMIT = 0.25
# CPU seconds a worker may use in all (RLIMIT_CPU) beyond what its requests' time limits
# need; it retires before a request could run into the limit.
CPU_BUDGET_SECONDS = 3600.0

FRAME_MAGIC = b"vjs1"
FRAME_HEADER = struct.Struct(">4sQI")
MAX_REQUEST_BYTES = 256 * MIB


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


def first_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The first line of ``text`` (a JavaScript error without its stack), printable, as
    :func:`vaultd.errors.one_line` puts it on one line of at most ``limit`` characters."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return one_line("".join(ch if ch.isprintable() else " " for ch in line), limit)


def frame(request_id: int, body: bytes) -> bytes:
    """One message of the protocol: the header, then ``body``."""
    return FRAME_HEADER.pack(FRAME_MAGIC, request_id, len(body)) + body


def command(root: str, memory_limit: int, time_limit: float) -> list[str]:
    """How the parent starts a worker: ``-E -P`` so that neither the environment nor the
    directory it runs from can stand in for quickjs or vaultd; vaultd's own ``root`` first
    on the path. The limits given size the worker's resource limits."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from vaultd.edges._sandbox_child import main; sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-E", "-P", "-c", code, root,
            "--memory-limit", str(memory_limit), "--time-limit", repr(float(time_limit))]


# The wrapper every request evaluates. The user's code is a function body with ``input``
# and ``params`` in scope. Everything the wrapper uses after the user's code has run is
# taken before it runs (a measure may replace ``JSON.stringify``, ``Map``, ``String``...;
# a fresh context per request keeps that to its own measure). Every failure the engine
# lets JavaScript catch is caught here, inside the time limit, and turned into a plain
# string (calling ``toString`` on a thrown object from Python instead would run user code
# with no time limit), with the error's stack so that Python can say on which line of the
# logic it happened. Only two things escape: the uncatchable "interrupted" of the time
# limit, and an error raised while the memory is exhausted.
#
# The replacer bounds the result's depth: QuickJS's JSON.stringify does not check the C
# stack and crashes the process on a result nested some 30,000 deep.
_WRAPPER = """(function () {
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const FunctionC = Function;
  const MapC = Map;
  const mapGet = Map.prototype.get;
  const mapSet = Map.prototype.set;
  const apply = Reflect.apply;
  const StringC = String;
  const ErrorC = Error;
  const slice = String.prototype.slice;
  const logic = parse(__vaultd_logic);
  const inputText = __vaultd_input;
  const paramsText = __vaultd_params;
  delete globalThis.__vaultd_logic;
  delete globalThis.__vaultd_input;
  delete globalThis.__vaultd_params;
  const TOO_DEEP = {};
  try {
    const f = new FunctionC("input", "params", logic);
    const r = f(parse(inputText), parse(paramsText));
    if (r === undefined) return "Rnull";
    const depth = new MapC();
    const s = stringify(r, function (key, value) {
      if (value !== null && typeof value === "object") {
        const d = (apply(mapGet, depth, [this]) || 0) + 1;
        if (d > MAX_DEPTH) throw TOO_DEEP;
        apply(mapSet, depth, [value, d]);
      }
      return value;
    });
    return s === undefined ? "Rnull" : "R" + s;
  } catch (e) {
    if (e === null) return "N";
    if (e === TOO_DEEP) return "D";
    let m;
    let stack = "";
    try {
      if (e instanceof ErrorC) {
        m = StringC(e);
        const st = e.stack;
        if (typeof st === "string") stack = apply(slice, st, [0, 2000]);
      } else {
        m = "uncaught exception: " + StringC(e);
      }
    } catch (e2) {
      if (e2 === null) return "N";
      m = "uncaught exception";
    }
    if (typeof m !== "string") m = "uncaught exception";
    return "E" + stringify([apply(slice, m, [0, 1000]), stack]);
  }
})()
""".replace("MAX_DEPTH", str(MAX_RESULT_DEPTH))

# ``new Function(a, b, body)`` compiles "(function anonymous(a,b\n) {\n" + body + "\n})":
# the body's first line is the source's third.
_LOGIC_FIRST_LINE = 3
_STACK_LINE = re.compile(r"<input>:(\d+)")

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


def logic_line(stack: str, logic: str) -> int | None:
    """The line of ``logic`` (1-based) the innermost frame of ``stack`` that has one is on;
    None for logic of one line (QuickJS gives no column)."""
    if "\n" not in logic:
        return None
    frames = stack.strip().splitlines()
    if frames and frames[-1].strip().startswith("at <eval>"):
        del frames[-2:]  # the wrapper's own two frames: the eval, and the function it runs
    for frame_line in frames:
        match = _STACK_LINE.search(frame_line)
        if match:
            line = int(match.group(1)) - _LOGIC_FIRST_LINE + 1
            return line if 1 <= line <= logic.count("\n") + 1 else None
    return None


def _error_line(text: str, request: dict[str, Any], stack: str = "") -> _Failure:
    """Map the first line of a JavaScript error to vaultd's wording."""
    line = first_line(text)
    if line == "InternalError: interrupted":
        return _Failure(time_limit_message(float(request["time_limit"])), retire=True)
    if line == "" or (line.startswith("InternalError:") and "out of memory" in line):
        return _Failure(memory_limit_message(int(request["memory_limit"])), retire=True)
    if line in _STACK_OVERFLOW:
        return _Failure("stack overflow")
    where = logic_line(stack, request["logic"])
    if where is not None:
        line = first_line(f"{line[: MAX_MESSAGE_CHARS - 20]} (logic line {where})")
    return _Failure(line)


def _null_thrown(request: dict[str, Any], near_limit: bool) -> _Failure:
    """``null`` is what QuickJS throws when it cannot even allocate the error object; a
    measure may also throw it itself, far from its memory limit. Either way the worker
    retires: which of the two it was is only a guess."""
    if near_limit:
        return _Failure(memory_limit_message(int(request["memory_limit"])), retire=True)
    return _Failure("threw null", retire=True)


class _Meter:
    """Whether a request came near its memory limit: the worker's peak memory, which only
    grows, against its peak when it started. Once true it stays true; the worker retires.

    On Linux the peak is ``VmHWM`` from ``/proc/self/status``, opened before the worker is
    confined (``ru_maxrss`` would do, but it starts at the parent's size, kept over exec).
    """

    def __init__(self) -> None:
        self._status: int | None = None
        with contextlib.suppress(OSError):
            self._status = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        self.base = self.peak()

    def peak(self) -> int:
        """The process's peak resident memory so far, in bytes."""
        if self._status is not None:
            with contextlib.suppress(OSError, ValueError):
                text = os.pread(self._status, 8192, 0)
                start = text.index(b"VmHWM:") + len(b"VmHWM:")
                return int(text[start: text.index(b"kB", start)]) * KIB
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * KIB

    def near(self, memory_limit: int) -> bool:
        return self.peak() - self.base > memory_limit * NEAR_MEMORY_LIMIT


def _evaluate(quickjs: Any, request: dict[str, Any], keep: list[Any], meter: _Meter) -> bytes:
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
        text = str(exc)
        if first_line(text) == "null":
            raise _null_thrown(request, meter.near(memory_limit)) from None
        failure = _error_line(text, request)
        if isinstance(exc, quickjs.StackOverflow) and not failure.retire:
            failure = _Failure("stack overflow")
        raise failure from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if not isinstance(out, str) or not out:
        raise _Failure("sandbox internal error: unexpected value from the wrapper", retire=True)
    tag, body = out[0], out[1:]
    if tag == "N":
        raise _null_thrown(request, meter.near(memory_limit))
    if tag == "E":
        message, stack = json.loads(body)
        raise _error_line(message, request, stack)
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
    try:  # exactly one JSON value, whatever the measure did to the functions that made it
        json.loads(data)
    except RecursionError:
        raise _Failure("result is nested too deeply") from None
    except ValueError:
        raise _Failure("sandbox internal error: the result is not JSON", retire=True) from None
    return data


# -- confinement -----------------------------------------------------------------------

# What the seccomp filter refuses, by architecture: (audit arch, syscall numbers). Every
# ``open`` is refused too: a worker opens nothing once it has started.
_AUDIT_ARCH_X86_64 = 0xC000003E
_AUDIT_ARCH_AARCH64 = 0xC00000B7
_X32_SYSCALL_BIT = 0x40000000
_DENIED = {
    "x86_64": (_AUDIT_ARCH_X86_64, {
        "open": 2, "openat": 257, "openat2": 437, "creat": 85, "open_by_handle_at": 304,
        "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
        "socket": 41, "socketpair": 53, "connect": 42, "bind": 49, "listen": 50,
        "accept": 43, "accept4": 288,
        "truncate": 76, "ftruncate": 77, "rename": 82, "mkdir": 83, "rmdir": 84,
        "link": 86, "unlink": 87, "symlink": 88, "chmod": 90, "fchmod": 91, "chown": 92,
        "fchown": 93, "lchown": 94, "mknod": 133, "mkdirat": 258, "mknodat": 259,
        "fchownat": 260, "unlinkat": 263, "renameat": 264, "linkat": 265, "symlinkat": 266,
        "fchmodat": 268, "renameat2": 316,
        "kill": 62, "tkill": 200, "tgkill": 234, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
        "setrlimit": 160, "prlimit64": 302, "prctl": 157,
        "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114, "setresuid": 117,
        "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "capset": 126,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
        "setns": 308, "reboot": 169, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427,
    }),
    "aarch64": (_AUDIT_ARCH_AARCH64, {
        "openat": 56, "openat2": 437, "open_by_handle_at": 265,
        "execve": 221, "execveat": 281, "clone": 220, "clone3": 435,
        "socket": 198, "socketpair": 199, "bind": 200, "listen": 201, "accept": 202,
        "connect": 203, "accept4": 242,
        "truncate": 45, "ftruncate": 46, "mknodat": 33, "mkdirat": 34, "unlinkat": 35,
        "symlinkat": 36, "linkat": 37, "renameat": 38, "renameat2": 276, "fchmod": 52,
        "fchmodat": 53, "fchownat": 54, "fchown": 55,
        "kill": 129, "tkill": 130, "tgkill": 131, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_getfd": 438,
        "setrlimit": 164, "prlimit64": 261, "prctl": 167,
        "setregid": 143, "setgid": 144, "setreuid": 145, "setuid": 146, "setresuid": 147,
        "setresgid": 149, "setfsuid": 151, "setfsgid": 152, "capset": 91,
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
        "setns": 268, "reboot": 142, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427,
    }),
}
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]] | None:
    """The filter for ``machine`` (``uname -m``) as (code, jt, jf, k) instructions, or None
    where vaultd has no syscall table. A system call of another architecture (or the x32
    ABI) kills the process; a refused one fails with EPERM; anything else is allowed.
    ``prlimit64`` may read a limit (glibc's getrlimit uses it), never set one."""
    if machine not in _DENIED:
        return None
    arch, numbers = _DENIED[machine]
    denied = sorted(set(numbers.values()))
    # Instructions whose jumps name labels; resolved to offsets below.
    code: list[tuple[int, int | str, int | str, int] | str] = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 0, "kill", arch),
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        code.append((_BPF_JGE_K, "kill", 0, _X32_SYSCALL_BIT))
    code.append((_BPF_JEQ_K, "prlimit", 0, numbers["prlimit64"]))
    code += [(_BPF_JEQ_K, "deny", 0, number) for number in denied
             if number != numbers["prlimit64"]]
    code += [
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        "prlimit",  # args[2], the new limit, must be NULL: both halves zero
        (_BPF_LD_W_ABS, 0, 0, 16 + 8 * 2),
        (_BPF_JEQ_K, 0, "deny", 0),
        (_BPF_LD_W_ABS, 0, 0, 16 + 8 * 2 + 4),
        (_BPF_JEQ_K, 0, "deny", 0),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        "deny", (_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | 1),  # EPERM
        "kill", (_BPF_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    for item in code:
        if isinstance(item, str):
            labels[item] = sum(1 for i in code[: code.index(item)] if not isinstance(i, str))
    program: list[tuple[int, int, int, int]] = []
    for item in code:
        if isinstance(item, str):
            continue
        op, jt, jf, k = item
        here = len(program) + 1
        program.append((op, labels[jt] - here if isinstance(jt, str) else jt,
                        labels[jf] - here if isinstance(jf, str) else jf, k))
    assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in program)
    return program


def _install_seccomp(program: list[tuple[int, int, int, int]]) -> None:
    import ctypes

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    filters = (SockFilter * len(program))(*(SockFilter(*ins) for ins in program))
    prog = SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _address_space() -> int | None:
    """The process's virtual memory size now, in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _set_limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def confine(memory_limit: int, time_limit: float) -> list[str]:
    """Limit this process to what a worker needs; what could not be set, in words.

    Called once everything the worker uses is imported: from here on it opens no file.
    """
    missing: list[str] = []
    space = _address_space()
    if space is not None:  # room for the engine's heap several times over, and Python's
        _set_limit(resource.RLIMIT_AS, space + 4 * memory_limit + 512 * MIB)
    used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    cpu = int(used + CPU_BUDGET_SECONDS + 4 * (time_limit + BACKSTOP_SECONDS)) + 1
    _set_limit(resource.RLIMIT_CPU, cpu)
    _set_limit(resource.RLIMIT_FSIZE, 0)
    _set_limit(resource.RLIMIT_CORE, 0)
    _set_limit(resource.RLIMIT_NOFILE, 16)
    if hasattr(resource, "RLIMIT_NPROC"):  # root is exempt: the filter below holds there
        _set_limit(resource.RLIMIT_NPROC, 0)
    program = seccomp_program(os.uname().machine) if sys.platform == "linux" else None
    if program is None:
        missing.append(f"no system call filter on {sys.platform} {os.uname().machine}")
    else:
        try:
            _install_seccomp(program)
        except OSError as exc:
            missing.append(f"no system call filter: {exc}")
    return missing


def cpu_left(time_limit: float) -> bool:
    """Whether another request of ``time_limit`` fits in what RLIMIT_CPU leaves."""
    soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
    if soft == resource.RLIM_INFINITY:
        return True
    used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    return used + 2 * (time_limit + BACKSTOP_SECONDS) < soft


def _self_test(memory_limit: int, time_limit: float) -> dict[str, Any]:
    """Confine this process, then try what a worker must not do; each outcome in words."""
    import socket

    missing = confine(memory_limit, time_limit)
    tries: dict[str, Any] = {}

    def attempt(name: str, action: Any) -> None:
        try:
            action()
        except OSError as exc:
            tries[name] = f"refused: {exc.strerror or exc}"
        except Exception as exc:  # anything else refuses too, but say what
            tries[name] = f"refused: {type(exc).__name__}: {exc}"
        else:
            tries[name] = "allowed"

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)

    def spawn() -> None:
        os.posix_spawn("/bin/true", ["true"], {})

    attempt("fork", fork)
    attempt("spawn", spawn)
    attempt("exec", lambda: os.execv("/bin/true", ["true"]))
    attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    attempt("unix socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    attempt("open for writing", lambda: os.open("/tmp/vaultd-self-test",
                                                os.O_WRONLY | os.O_CREAT, 0o600))
    attempt("open for reading", lambda: os.open("/etc/hostname", os.O_RDONLY))
    attempt("kill", lambda: os.kill(os.getppid(), 0))
    # setting a limit to what it is already is allowed by the kernel, root or not
    attempt("set a limit", lambda: resource.setrlimit(
        resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)))
    attempt("unlink", lambda: os.unlink("/tmp/vaultd-self-test-none"))
    attempt("mkdir", lambda: os.mkdir("/tmp/vaultd-self-test-dir"))
    attempt("write to stdout", lambda: os.write(1, b""))
    return {
        "missing": missing,
        "tries": tries,
        "limits": {name: resource.getrlimit(getattr(resource, name))[0]
                   for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE",
                                "RLIMIT_CORE", "RLIMIT_NPROC")
                   if hasattr(resource, name)},
        "environment": dict(os.environ),
    }


# -- the loop --------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None at the end of input before the first byte."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise EOFError("the request was cut off")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _options(argv: list[str]) -> tuple[int, float]:
    values = dict(zip(argv[::2], argv[1::2], strict=False))
    memory = int(values.get("--memory-limit", 64 * MIB))
    seconds = float(values.get("--time-limit", 2.0))
    return memory, seconds


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Keep the real stdout for replies only: anything else that writes to fd 1 or
    # sys.stdout (a stray print, a C library) goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C in a terminal is for the daemon, which stops its workers itself; SIGALRM
    # (the backstop) keeps its default action, which ends the process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    memory_limit, time_limit = _options([a for a in argv if a != "--self-test"])
    if "--self-test" in argv:
        report = json.dumps(_self_test(memory_limit, time_limit))
        _write_all(out_fd, report.encode() + b"\n")
        return 0
    try:
        import quickjs
    except Exception as exc:
        message = json.dumps({"fatal": f"cannot import quickjs: {exc}"}).encode()
        _write_all(out_fd, frame(0, message))
        return 1
    meter = _Meter()
    try:
        missing = confine(memory_limit, time_limit)
    except (OSError, ValueError) as exc:
        _write_all(out_fd, frame(0, json.dumps({"fatal": f"cannot confine: {exc}"}).encode()))
        return 1
    meter.base = meter.peak()
    _write_all(out_fd, frame(0, json.dumps({"ready": True, "missing": missing}).encode()))

    keep: list[Any] = []
    served = 0
    while True:
        try:
            header = _read_exact(0, FRAME_HEADER.size)
            if header is None:
                return 0
            magic, request_id, size = FRAME_HEADER.unpack(header)
            if magic != FRAME_MAGIC or size > MAX_REQUEST_BYTES:
                return 2  # not the parent speaking: leave
            body = _read_exact(0, size) or b""
        except (OSError, EOFError):
            return 2
        served += 1
        retire = served >= MAX_REQUESTS_PER_WORKER
        result: bytes | None = None
        error = ""
        request: Any = None
        try:
            request = json.loads(body)
            result = _evaluate(quickjs, request, keep, meter)
        except _Failure as failure:
            error = failure.message
            retire = retire or failure.retire
        except Exception as exc:  # a bad request or an engine failure: report, then leave
            error = first_line(f"sandbox internal error: {type(exc).__name__}: {exc}")
            retire = True
        if not retire and isinstance(request, dict):
            # Near its memory limit (even if the measure caught the error and went on), or
            # near the end of its CPU time: the next request gets a fresh worker.
            retire = (meter.near(int(request["memory_limit"]))
                      or not cpu_left(float(request["time_limit"])))
        if result is None:
            data = json.dumps({"ok": False, "error": error, "retire": retire}).encode("utf-8")
        else:
            head = b'{"ok":true,"retire":' + (b"true" if retire else b"false") + b',"result":'
            data = head + result + b"}"
        _write_all(out_fd, frame(request_id, data))
        if retire:
            # Leave without freeing anything: after running out of memory (or time) the
            # context's heap may be damaged, and freeing it can corrupt the process.
            os._exit(0)
        keep.clear()


if __name__ == "__main__":
    sys.exit(main())
