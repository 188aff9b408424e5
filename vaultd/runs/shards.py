"""A ``--once`` run over many notes, in several processes.

One Python process does a note's own work (reading and parsing it, the SDK's side of each
model request, rendering and writing) under one interpreter lock, so on a machine with
several cores a large ``--once`` run deals its notes out to that many processes
(``processes`` setting; by default one per core, up to 4, once at least
:data:`MIN_NOTES_PER_PROCESS` notes per process are pending).

What holds for one process holds for the run:

* the model limit: each process gets its share of ``concurrency``, never more in all;
* identical requests go out once: notes are dealt out by what they ask about (their answer
  block, or their query block when the answer is to be written), so notes that would send
  the same requests are in the same process, whose response cache sends them once; the
  cache file itself is shared (SQLite, safe with several processes);
* the output: the parent prints each note's line as its process reports it, then the totals.

A child is ``python -m vaultd.runs.shard_child VAULT`` (:mod:`vaultd.runs.shard_child`): it
reads the settings and its notes as one JSON line on stdin and writes one JSON line per
note on stdout.

A child never outlives its parent (a ``kill -9`` of the ``--once`` run must not leave
processes writing notes): the parent keeps the child's stdin open until the child has
ended, and the child exits at once when it reads the end of it, which works everywhere;
on Linux the kernel also kills it when the parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import vaultd
from vaultd.config import Settings
from vaultd.errors import VaultdError
from vaultd.evaluate.cost import Usage
from vaultd.note import text as note

MIN_NOTES_PER_PROCESS = 100
MAX_AUTO_PROCESSES = 4
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_USAGE_FIELDS = [f.name for f in dataclasses.fields(Usage)]


@dataclasses.dataclass(frozen=True)
class Reported:
    """One note's outcome as a process reported it."""

    path: Path
    status: str
    summary: str
    usage: Usage


def processes_for(settings: Settings, notes: int, batch: bool) -> int:
    """How many processes a ``--once`` run over ``notes`` pending notes uses."""
    if batch:  # batches are rounds over every note at once: one process
        return 1
    wanted = settings.processes or min(os.cpu_count() or 1, MAX_AUTO_PROCESSES)
    if not settings.processes:
        wanted = min(wanted, notes // MIN_NOTES_PER_PROCESS)
    return max(1, min(wanted, settings.concurrency, notes))


def topic(path: Path) -> bytes:
    """What the note asks the model about (:func:`vaultd.note.text.topic`): it only decides which
    process runs the note, so a note that cannot be read has none."""
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    return note.topic(data.decode("utf-8", "replace")).encode("utf-8")


def deal(paths: Sequence[Path], processes: int, topic_of: Callable[[Path], bytes] = topic
         ) -> list[list[Path]]:
    """``paths`` in ``processes`` groups: the same topic always in the same group, and the
    groups as even as that allows (the largest topics first, each to the smallest group),
    so that no process is left with more model requests to wait on than the others."""
    by_topic: dict[bytes, list[Path]] = {}
    for path in paths:
        by_topic.setdefault(topic_of(path), []).append(path)
    groups: list[list[Path]] = [[] for _ in range(processes)]
    for members in sorted(by_topic.values(), key=len, reverse=True):
        min(groups, key=len).extend(members)
    return groups


def shares(total: int, processes: int) -> list[int]:
    """``total`` divided into ``processes`` whole shares that add up to it."""
    return [total // processes + (1 if i < total % processes else 0) for i in range(processes)]


# -- the parent --------------------------------------------------------------------------


def run(vault: Path, settings: Settings, groups: list[list[Path]],
        on_result: Callable[[Reported, int], None]) -> list[str]:
    """Run each group in a child process; ``on_result(note, in_flight)`` for every note as it
    is reported (from several threads, one at a time). Returns the problems: a child that
    failed, with the end of what it wrote on stderr."""
    groups = [group for group in groups if group]  # no share is left to a process not run
    limits = shares(settings.concurrency, len(groups))
    children: list[tuple[subprocess.Popen[bytes], list[Path]]] = []
    level = logging.getLevelName(logging.getLogger("vaultd").getEffectiveLevel())
    log_level = ["--log-level", level] if level in ("DEBUG", "INFO", "WARNING", "ERROR") else []
    for group, limit in zip(groups, limits, strict=True):
        child_settings = settings.model_copy(update={"concurrency": limit, "processes": 1})
        document = {"settings": child_settings.model_dump(mode="json"),
                    "paths": [str(p) for p in group], "parent": os.getpid()}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vaultd.runs.shard_child", *log_level, str(vault)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _package_root(os.environ.get("PYTHONPATH"))},
        )
        assert proc.stdin is not None
        try:  # stdin stays open while the child runs: its end tells the child we are gone
            proc.stdin.write(json.dumps(document).encode("utf-8") + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:  # it ended at once: its notes are reported missing below
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        children.append((proc, group))

    lock = threading.Lock()
    in_flight = [0] * len(children)
    problems: list[str] = []

    def follow(index: int, proc: subprocess.Popen[bytes], group: list[Path]) -> None:
        stdout, stderr_pipe = proc.stdout, proc.stderr
        assert stdout is not None and stderr_pipe is not None
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(stderr_pipe.read()), daemon=True)
        drain.start()
        seen: set[str] = set()
        for raw in stdout:
            try:
                item = json.loads(raw)
                note = Reported(Path(item["path"]), item["status"], item["summary"],
                                Usage(**{k: item["usage"][k] for k in _USAGE_FIELDS}))
            except (ValueError, KeyError, TypeError):
                continue
            seen.add(str(note.path))
            with lock:
                in_flight[index] = int(item.get("in_flight", 0))
                on_result(note, sum(in_flight))
        stdout.close()
        code = proc.wait()
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        drain.join()
        stderr_pipe.close()
        stderr = b"".join(errors).decode("utf-8", "replace").strip()
        if stderr:
            sys.stderr.write(stderr + "\n")
        if len(seen) < len(group):  # a process that ended early, whatever its exit code
            with lock:
                problems.append(f"a vaultd process for {len(group) - len(seen)} notes ended "
                                f"with exit code {code}")
                for path in group:
                    if str(path) not in seen:
                        on_result(Reported(path, "error", "its vaultd process ended early; "
                                           "set it to Pending again", Usage()), sum(in_flight))

    threads = [threading.Thread(target=follow, args=(i, proc, group), daemon=True)
               for i, (proc, group) in enumerate(children)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C: the children get it too; make sure none outlives us
        for proc, _ in children:
            proc.terminate()
        raise
    return problems


def _package_root(current: str | None) -> str:
    """PYTHONPATH for a child: this vaultd's own folder first, so it runs the same code."""
    root = str(Path(vaultd.__file__).resolve().parent.parent)
    return os.pathsep.join([root, current]) if current else root


# -- the child ---------------------------------------------------------------------------


def read_assignment(stream: IO[bytes]) -> tuple[Settings, list[Path]]:
    """The settings and notes a parent gave this process; from then on this process ends
    when its parent does (see the module's docstring)."""
    try:
        document = json.loads(stream.readline())
        settings = Settings.model_validate(document["settings"])
        paths = [Path(p) for p in document["paths"]]
        parent = int(document.get("parent", os.getppid()))
    except (ValueError, KeyError, TypeError) as exc:
        raise VaultdError(f"shard child: cannot read the notes to run from stdin: {exc}") from exc
    die_with_parent(parent, stream)
    return settings, paths


def die_with_parent(parent: int, stream: IO[bytes]) -> None:
    """End this process as soon as ``parent`` has ended: at once if it already has, when
    ``stream`` (the parent's end of a pipe) reaches its end, and on Linux by the kernel."""
    _kill_me_with_my_parent()
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while stream.read(65536):
                pass
        os._exit(1)  # the parent is gone: whatever is left to do is left Pending

    threading.Thread(target=watch, name="vaultd-parent", daemon=True).start()


def _kill_me_with_my_parent() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` where there is one (Linux); else nothing.

    The kernel sends it when the thread that started this process ends: :func:`run` starts
    the children from the thread that waits for them, which ends only with the run."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def report_line(path: Path, status: str, summary: str, usage: Usage, in_flight: int) -> str:
    """One note's outcome, for the parent."""
    fields: dict[str, Any] = {name: getattr(usage, name) for name in _USAGE_FIELDS}
    return json.dumps({"path": str(path), "status": status, "summary": summary,
                       "usage": fields, "in_flight": in_flight})
