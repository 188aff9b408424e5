"""Load and soak, behind a flag: ``pytest --load tests/test_load.py`` (or ``VAULTD_LOAD=1``).

* 5,000 programmatic-only notes dropped into a watched vault at once all end ``Done``, and
  the daemon's memory stays bounded (its queue holds paths, not contents);
* a steady stream of edits for a minute leaves the daemon's memory flat.

Each test prints its figures (``-s`` shows them); ``bench/RESULTS-load.md`` keeps the last.
Memory is ``VmRSS`` of the daemon process from ``/proc/PID/status``, sampled in a thread;
the QuickJS worker processes are reported apart.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.vaults import programmatic_note

from .daemonproc import DaemonProcess, wait_for
from .fakeapi import FakeMessagesAPI

pytestmark = [pytest.mark.load, pytest.mark.timeout(1800)]

NOTES = 5000
RSS_BOUND_MB = 200.0  # the daemon alone, whatever the number of notes queued
SOAK_SECONDS = 60.0
SOAK_GROWTH_MB = 15.0  # last 15 s against the 15 s after warm-up


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


@dataclass
class Sampler:
    """VmRSS of a process (and of its children) every ``every`` seconds, in a thread."""

    pid: int
    every: float = 0.5
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, own, kids
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            own = rss_mb(self.pid)
            if own is not None:
                kids = sum(rss_mb(c) or 0.0 for c in children(self.pid))
                self.samples.append((time.monotonic() - start, own, kids))
            self._stop.wait(self.every)

    def peak(self) -> float:
        return max(own for _, own, _ in self.samples)

    def between(self, start: float, end: float) -> list[float]:
        return [own for t, own, _ in self.samples if start <= t < end]


def state(vault: Path) -> dict[str, object]:
    try:
        loaded: dict[str, object] = json.loads((vault / ".vaultd" / "daemon.json").read_text())
        return loaded
    except (OSError, ValueError):
        return {}


@pytest.fixture
def figures() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    print("\n" + "\n".join(lines))


def test_five_thousand_notes_dropped_at_once(vault: Path, api: FakeMessagesAPI,
                                             figures: list[str]) -> None:
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        with Sampler(proc.proc.pid) as sampler:
            idle = rss_mb(proc.proc.pid)
            started = time.monotonic()
            paths = []
            for number in range(NOTES):  # as a sync client drops them: as fast as it can
                folder = vault / f"drop-{number % 10}"
                folder.mkdir(exist_ok=True)
                path = folder / f"note-{number:05d}.md"
                path.write_text(programmatic_note(number), encoding="utf-8")
                paths.append(path)
            written = time.monotonic() - started
            queued: list[int] = []

            def all_done() -> bool:
                now = state(vault)
                queued.append(int(str(now.get("queued", 0))))
                return now.get("done") == NOTES

            wait_for(all_done, timeout=1800, what=f"{NOTES} notes done")
            elapsed = time.monotonic() - started
        assert proc.stop() == 0
    not_done = [p for p in paths if "\nStatus: Done\n" not in p.read_text(encoding="utf-8")]
    assert not_done == []
    assert state(vault).get("errors") == 0
    peak = sampler.peak()
    kids = max(k for _, _, k in sampler.samples)
    figures += [
        f"load: {NOTES} notes written in {written:.1f} s, all Done {elapsed:.1f} s after the "
        f"first ({NOTES / elapsed:.0f} notes/s)",
        f"load: daemon VmRSS idle {idle:.1f} MB, peak {peak:.1f} MB; QuickJS workers peak "
        f"{kids:.1f} MB together; most paths queued at once (daemon.json, every 5 s) "
        f"{max(queued)}",
    ]
    assert peak < RSS_BOUND_MB, figures


def test_soak_under_a_steady_stream_of_edits(vault: Path, api: FakeMessagesAPI,
                                             figures: list[str]) -> None:
    notes = [vault / f"soak-{n:02d}.md" for n in range(40)]
    for number, path in enumerate(notes):
        path.write_text(programmatic_note(number, status="Done"), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        edits = 0
        with Sampler(proc.proc.pid, every=1.0) as sampler:
            end = time.monotonic() + SOAK_SECONDS
            while time.monotonic() < end:  # one edit every 50 ms, round the notes
                path = notes[edits % len(notes)]
                text = path.read_text(encoding="utf-8")
                if "Status: Done" in text:  # set back to Pending in place, as a user does
                    with path.open("r+", encoding="utf-8") as handle:
                        handle.write(text.replace("Status: Done", "Status: Pending", 1))
                        handle.truncate()
                    edits += 1
                else:  # still running: a keystroke elsewhere in the vault
                    (vault / "scratch.md").write_text(f"typing {edits}\n", encoding="utf-8")
                time.sleep(0.05)
            wait_for(lambda: all("Status: Done" in p.read_text(encoding="utf-8")
                                 for p in notes), what="every soak note done")
        processed = state(vault).get("processed")
        assert proc.stop() == 0
    warm = statistics.median(sampler.between(5, 20))
    last = statistics.median(sampler.between(SOAK_SECONDS - 15, SOAK_SECONDS))
    figures += [
        f"soak: {SOAK_SECONDS:.0f} s, {edits} edits setting a note Pending, {processed} runs; "
        f"daemon VmRSS median {warm:.1f} MB at 5-20 s, {last:.1f} MB in the last 15 s "
        f"(peak {sampler.peak():.1f} MB)",
    ]
    assert edits > 100, figures
    assert last - warm < SOAK_GROWTH_MB, figures

