# ruff: noqa: RUF001, RUF002  (the figures put a multiplication sign between numbers)

"""The bench at panel scale (figures P1 to P5), and promptfoo on the same work.

A panel vault is 40 panel notes (the seed's question, numbered, and its four measures: two
``ai``, two programmatic) × 5 samples × the vault's answer model: 200 answers, 400
judgments. Its own loopback Messages API (:class:`PanelModel`) answers each question with
an answer of its own (so no judgment can come from the cache), judges answers as figure 1's
fake does, and answers promptfoo's ``llm-rubric`` graders, so vaultd and promptfoo (see
:mod:`bench.promptfoo`) are timed against the same server in the same bench run.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, promptfoo
from bench.rows import Row
from bench.vaults import (
    BRANDS,
    SEED_QUESTION,
    answer_notes,
    judgment,
    note_status,
    panel_note,
    panel_questions,
    write_panel_vault,
    write_seed_vault,
)
from tests.fakeapi import FakeMessagesAPI, Reply, Request

QUESTIONS = 40
SAMPLES = 5
CONCURRENCY = 16
MODEL_DELAY = 0.2
JUDGMENTS_PER_ANSWER = 2
SETTLE = 0.5
WARM_SETTLE = 0.2  # the daemon's settle in the warm figures
LIVE_ASSISTANTS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]
LIVE_SAMPLES = 10
MEMORY_NOTES, MEMORY_SAMPLES = 100, 10

TARGET_PROMPTFOO_RATIO = 5.0  # P1: vaultd at least this many times faster
TARGET_P2_ACTIVE = 1.10  # P2: first request to last answer, against the floor
TARGET_P2_WALL = 1.20  # P2: the whole command, cold start included
TARGET_P3_EXTRA = 0.1  # P3: first answer note within settle + one delay + this
TARGET_P3_WRITES_PER_S = 5.0  # P3: panel note writes per second of the run, at most
TARGET_P4_MB = 150.0


class PanelModel:
    """The panel bench's model: answers, judgments and promptfoo's gradings, each counted."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.lock = threading.Lock()
        self.answers = 0
        self.judgments = 0
        self.gradings = 0

    def __call__(self, request: Request) -> Reply:
        text = request.text
        if promptfoo.is_grading(text):
            with self.lock:
                self.gradings += 1
            return Reply(text=promptfoo.grading_reply(), delay=self.delay)
        judged = judgment(text)
        if judged is not None:
            with self.lock:
                self.judgments += 1
            return Reply(text=judged, delay=self.delay)
        with self.lock:
            self.answers += 1
            number = self.answers
        return Reply(text=answer_text(number), delay=self.delay)

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.answers, self.judgments, self.gradings


def answer_text(number: int) -> str:
    """The ``number``th answer: two to four brands, Poteligeo in most, and a line of its own."""
    rng = random.Random(number)
    brands = rng.sample(BRANDS[1:], rng.randint(1, 3))
    if rng.random() < 0.7:
        brands.insert(rng.randint(0, len(brands)), "Poteligeo")
    options = "\n".join(f"{i}. **{brand}**: an option after first-line therapy."
                        for i, brand in enumerate(brands, 1))
    return (f"Second-line options for Sezary syndrome include:\n\n{options}\n\n"
            f"Discuss these with your oncologist. (answer {number})")


@dataclass
class PanelRun:
    run: procs.OnceRun
    panels_done: int
    answers_on_disk: int
    answers_asked: int
    judgments_asked: int
    first_request_s: float | None  # after the process started


class PanelBench:
    """Figures P1 to P5; rows and notes go to the lists given."""

    def __init__(self, tmp: Path, src: Path, rows: list[Row], notes: list[str],
                 log: Callable[[str], None], quick: bool) -> None:
        self.tmp = tmp / "panels"
        self.tmp.mkdir()
        self.src = src
        self.rows = rows
        self.notes = notes
        self.log = log
        self.quick = quick
        self.questions = panel_questions(10 if quick else QUESTIONS)
        self.model = PanelModel()
        self.warm_started = 0.0
        self.warm_requests: tuple[float, float] | None = None  # the last warm run's first
        # request and last reply, seconds after its first note was written
        self.api = FakeMessagesAPI()
        self.api.responder = self.model

    def close(self) -> None:
        self.api.close()

    def env(self) -> dict[str, str]:
        return procs.vaultd_env(self.src, self.api.url)

    def run_vault(self, name: str, flags: list[str], timeout: float) -> tuple[list[Path],
                                                                               PanelRun]:
        vault = self.tmp / name
        panels = write_panel_vault(vault, self.questions, SAMPLES)
        return panels, self.once(vault, panels, name, flags, timeout)

    def once(self, vault: Path, panels: list[Path], name: str, flags: list[str],
             timeout: float) -> PanelRun:
        answers0, judgments0, _ = self.model.counts()
        seen = len(self.api.message_requests())
        run = procs.run_once([sys.executable, "-m", "vaultd", "run",
                              str(vault), "--once", *flags], self.env(),
                             self.tmp / f"{name}.log", timeout=timeout)
        answers1, judgments1, _ = self.model.counts()
        requests = self.api.message_requests()[seen:]
        times = [r.received_at - run.started for r in requests]
        return PanelRun(
            run, sum(1 for p in panels if note_status(p) == "Done"),
            sum(len(answer_notes(p)) for p in panels), answers1 - answers0,
            judgments1 - judgments0, round(min(times), 3) if times else None)

    # -- P1 ------------------------------------------------------------------------------

    def throughput(self) -> None:
        n = len(self.questions) * SAMPLES
        self.model.delay = 0.0
        self.log(f"figure P1: vaultd run --once over {len(self.questions)} panel notes × "
                 f"{SAMPLES} samples")
        _, got = self.run_vault("p1", ["--concurrency", str(CONCURRENCY)], timeout=600)
        ok = (got.run.returncode == 0 and got.panels_done == len(self.questions)
              and got.answers_on_disk == n)
        cpu = got.run.cpu_user + got.run.cpu_system
        details: dict[str, Any] = {
            "answers": n, "answers_on_disk": got.answers_on_disk, "wall_s": round(got.run.wall, 3),
            "cpu_s": round(cpu, 3), "answer_requests": got.answers_asked,
            "judgment_requests": got.judgments_asked, "first_request_s": got.first_request_s,
        }
        self.rows.append(Row(
            "P1", f"panels, --once, {len(self.questions)} notes × {SAMPLES} samples "
            f"({n} answers, {JUDGMENTS_PER_ANSWER * n} judgments), delay 0",
            round(got.run.wall, 3) if ok else None, "s",
            f"{got.run.wall:.2f} s wall, {1000 * got.run.wall / n:.1f} ms and "
            f"{1000 * cpu / n:.1f} CPU-ms per answer" if ok else
            f"vaultd failed: exit {got.run.returncode}, {got.answers_on_disk}/{n} answers",
            "(the ratio below)", None if ok else False, details))
        pf = self.promptfoo("P1", delay=0.0)
        if pf is not None and ok:
            ratio = pf.wall / got.run.wall
            self.rows.append(Row(
                "P1r", "promptfoo's wall time on the same work, over vaultd's", round(ratio, 2),
                "×", f"{ratio:.2f}× (promptfoo {pf.wall:.2f} s, {pf.cpu:.2f} CPU-s)",
                f">= {TARGET_PROMPTFOO_RATIO:.0f}×", ratio >= TARGET_PROMPTFOO_RATIO,
                {"promptfoo_wall_s": round(pf.wall, 3), "promptfoo_cpu_s": round(pf.cpu, 3),
                 "promptfoo_results": pf.results, "promptfoo_errors": pf.errors}))
        self._warm_row("P1", "the same, warm: --once handing the notes to the vault's daemon "
                       "(its SDK loaded), from the notes written to --once's exit",
                       got.run.wall if ok else None, 0.0)
        warm = self.rows[-1].value
        if pf is not None and isinstance(warm, float) and warm > 0:
            self.rows.append(Row(
                "P1rw", "promptfoo's wall time over vaultd's, warm", round(pf.wall / warm, 2),
                "×", f"{pf.wall / warm:.2f}×", f">= {TARGET_PROMPTFOO_RATIO:.0f}×",
                pf.wall / warm >= TARGET_PROMPTFOO_RATIO, {}))

    def _warm_row(self, figure: str, what: str, cold: float | None, delay: float,
                  floor: float | None = None, target: str = "(cold beside warm)") -> None:
        wall, code, asked = self.warm(f"{figure.lower()}-warm", delay)
        n = len(self.questions) * SAMPLES
        shown = (f"{wall:.2f} s warm" + (f" ({wall / floor:.2f}× floor)" if floor else "")
                 + (f" against {cold:.2f} s cold" if cold else "") if wall is not None
                 else f"not finished (exit {code})")
        self.rows.append(Row(
            f"{figure}w", what, round(wall, 3) if wall is not None else None, "s", shown, target,
            None if wall is not None else False,
            {"warm_s": wall, "cold_s": cold, "answers_asked": asked, "answers": n,
             "daemon_settle_s": WARM_SETTLE}))
        if wall is not None and asked != n:
            self.notes.append(f"Figure {figure}w: {asked} answers asked for {n}.")

    def promptfoo(self, figure: str, delay: float) -> promptfoo.PromptfooRun | None:
        """promptfoo over the same questions, or None (a row says why)."""
        why = promptfoo.missing()
        if why is not None:
            self.rows.append(Row(f"{figure}r", "promptfoo on the same work", None, "",
                                 f"not measured: {why}", f"install: `{promptfoo.INSTALL}`",
                                 False, {"missing": why}))
            return None
        self.model.delay = delay
        before = self.model.counts()
        work = self.tmp / f"promptfoo-{figure}"
        work.mkdir()
        self.log(f"figure {figure}: promptfoo eval --repeat {SAMPLES} on the same questions")
        try:
            pf = promptfoo.run(work, self.api.url, self.questions, SAMPLES, CONCURRENCY,
                               timeout=900)
        finally:
            self.model.delay = 0.0
        after = self.model.counts()
        n = len(self.questions) * SAMPLES
        asked, graded = after[0] - before[0], after[2] - before[2]
        self.notes.append(
            f"Figure {figure}: promptfoo {promptfoo.PROMPTFOO_VERSION} took {pf.wall:.2f} s "
            f"wall, {pf.cpu:.2f} CPU-s; {pf.results} results ({pf.passed} passed, "
            f"{pf.errors} errors), {asked} answer and {graded} grading requests "
            f"(expected {n} and {JUDGMENTS_PER_ANSWER * n}), exit code {pf.returncode}.")
        if pf.results != n or pf.errors or asked != n:
            self.notes.append(f"Figure {figure}: promptfoo's output tail:\n```\n"
                              f"{pf.log_tail}\n```")
        return pf

    def warm(self, name: str, delay: float,
             write: Callable[[Path], list[Path]] | None = None) -> tuple[float | None, int, int]:
        """The work with the SDK off the critical path: a daemon on the vault, warmed by one
        note that asks the model, then the notes written (``write``; by default the panel
        vault) and ``vaultd run --once`` started at once, which hands them to the daemon and
        waits. Seconds from the first note written to ``--once``'s exit (None: not all
        done), its exit code, the answers asked."""
        vault = self.tmp / name
        (vault / "Warm-up").mkdir(parents=True)
        warmup = vault / "Warm-up" / "warm-up.md"
        self.model.delay = delay
        try:
            with procs.Daemon(vault, ["--settle", str(WARM_SETTLE), "--concurrency",
                                      str(CONCURRENCY)], self.env(),
                              self.tmp / f"{name}-daemon.log") as daemon:
                daemon.wait_message("READY=1", 60)
                warmup.write_text(panel_note(f"{SEED_QUESTION} (warm-up)", 1), encoding="utf-8")
                if not _wait(lambda: note_status(warmup) == "Done", 60):
                    raise RuntimeError(f"the warm-up note did not finish:\n{daemon.log_tail()}")
                answers0 = self.model.counts()[0]
                seen = len(self.api.message_requests())
                start = time.perf_counter()
                self.warm_started = time.monotonic()
                notes = (write or (lambda v: write_panel_vault(v, self.questions, SAMPLES)))(
                    vault)
                run = procs.run_once([sys.executable, "-m", "vaultd", "run", str(vault),
                                      "--once"], self.env(), self.tmp / f"{name}.log",
                                     timeout=600)
                wall = time.perf_counter() - start
                daemon.stop()
        finally:
            self.model.delay = 0.0
        times = [r.received_at - self.warm_started for r in self.api.message_requests()[seen:]]
        self.warm_requests = (round(min(times), 2), round(max(times) + delay, 2)) if times \
            else None
        done = run.returncode == 0 and all(note_status(p) == "Done" for p in notes)
        if write is None:
            n = len(self.questions) * SAMPLES
            done = done and sum(len(answer_notes(p)) for p in notes) == n
        return (wall if done else None), run.returncode or 0, self.model.counts()[0] - answers0

    def single_notes_warm(self) -> None:
        """Figure 2's work (200 seed-like notes at 200 ms, --concurrency 16) warm: beside the
        cold figure 2, what the SDK's import costs it."""
        n = 100 if self.quick else 200
        floor = math.ceil(2 * n / CONCURRENCY) * MODEL_DELAY
        self.log(f"figure 2w: {n} seed-like notes at {MODEL_DELAY} s, warm")
        wall, code, _ = self.warm("fig2-warm", MODEL_DELAY,
                                  lambda vault: write_seed_vault(vault / "Notes", n, seed=5))
        self.rows.append(Row(
            "2w", f"figure 2's {n} notes at {MODEL_DELAY * 1000:.0f} ms, warm (--once handing "
            "them to the vault's daemon): wall / floor",
            round(wall / floor, 3) if wall is not None else None, "× floor",
            f"{wall:.2f} s = {wall / floor:.2f}× floor {floor:.1f} s" if wall is not None
            else f"not finished (exit {code})", "(beside figure 2, cold)",
            None if wall is not None else False,
            {"floor_s": floor, "wall_s": wall, "first_request_and_last_reply_s":
             self.warm_requests}))
        if wall is not None and self.warm_requests:
            first, last = self.warm_requests
            self.notes.append(
                f"Figure 2w: the first request arrived {first:.2f} s after the first note was "
                f"written (the daemon's settle is {WARM_SETTLE} s), the last reply went at "
                f"{last:.2f} s: {(last - first) / floor:.2f}× floor from first request to "
                "last reply.")

    # -- P2 ------------------------------------------------------------------------------

    def latency_bound(self) -> None:
        n = len(self.questions) * SAMPLES
        requests = n * (1 + JUDGMENTS_PER_ANSWER)
        # every request once over the slots, plus the judgments of the last answers, which
        # cannot overlap them
        floor = requests * MODEL_DELAY / CONCURRENCY + MODEL_DELAY
        self.model.delay = MODEL_DELAY
        self.log(f"figure P2: {n} answers, model delay {MODEL_DELAY} s, "
                 f"--concurrency {CONCURRENCY}")
        try:
            _, got = self.run_vault("p2", ["--concurrency", str(CONCURRENCY)],
                                    timeout=60 + floor * 6)
        finally:
            self.model.delay = 0.0
        ok = got.run.returncode == 0 and got.answers_on_disk == n and got.panels_done == len(
            self.questions)
        last_reply = self._last_reply_s(got)
        active = (last_reply - got.first_request_s
                  if ok and last_reply is not None and got.first_request_s is not None else None)
        details = {"floor_s": round(floor, 3), "wall_s": round(got.run.wall, 3),
                   "first_request_s": got.first_request_s, "last_reply_s": last_reply,
                   "requests": requests}
        self.rows.append(Row(
            "P2a", f"panels at {MODEL_DELAY * 1000:.0f} ms, first request to last reply, "
            "over the floor", round(active / floor, 3) if active else None, "× floor",
            f"{active / floor:.2f}× ({active:.2f} s; floor {floor:.2f} s)" if active else
            f"vaultd failed: exit {got.run.returncode}, {got.answers_on_disk}/{n} answers",
            f"<= {TARGET_P2_ACTIVE:.2f}× floor",
            active is not None and active / floor <= TARGET_P2_ACTIVE, details))
        self.rows.append(Row(
            "P2b", "the same, whole command (cold start included), over the floor",
            round(got.run.wall / floor, 3) if ok else None, "× floor",
            f"{got.run.wall / floor:.2f}× ({got.run.wall:.2f} s)" if ok else "not measured",
            f"<= {TARGET_P2_WALL:.2f}× floor", ok and got.run.wall / floor <= TARGET_P2_WALL,
            details))
        if ok and got.first_request_s is not None:
            self.notes.append(
                f"Figure P2: the first request went out {got.first_request_s:.2f} s after the "
                f"process started (the interpreter, imports and reading the vault); the "
                f"floor is {requests} requests × {MODEL_DELAY} s / {CONCURRENCY} + "
                f"{MODEL_DELAY} s for the judgments of the last answers.")
        self._warm_row("P2", f"the same at {MODEL_DELAY * 1000:.0f} ms, warm (--once handing "
                       "the notes to the vault's daemon), over the floor",
                       got.run.wall if ok else None, MODEL_DELAY, floor,
                       f"<= {TARGET_P2_WALL:.2f}× floor")
        warm = self.rows[-1]
        if isinstance(warm.value, float):
            warm.met = warm.value / floor <= TARGET_P2_WALL
        pf = self.promptfoo("P2", delay=MODEL_DELAY)
        if pf is not None:
            self.rows.append(Row(
                "P2p", "promptfoo's wall time on the same, over the floor",
                round(pf.wall / floor, 3), "× floor",
                f"{pf.wall / floor:.2f}× ({pf.wall:.2f} s)", "(comparison)", None,
                {"promptfoo_wall_s": round(pf.wall, 3)}))

    def _last_reply_s(self, got: PanelRun) -> float | None:
        """When the last reply of the run was sent, after the process started: the last
        request's arrival plus the model delay."""
        requests = [r for r in self.api.message_requests() if r.received_at >= got.run.started]
        if not requests:
            return None
        return round(max(r.received_at for r in requests) - got.run.started + MODEL_DELAY, 3)

    # -- P3 ------------------------------------------------------------------------------

    def live(self) -> None:
        """Two panel notes, one after the other, in one daemon: the first pays for loading
        the SDK (cold), the second finds it loaded (warm)."""
        vault = self.tmp / "p3"
        (vault / "Panels").mkdir(parents=True)
        total = len(LIVE_ASSISTANTS) * LIVE_SAMPLES
        self.model.delay = MODEL_DELAY
        self.log(f"figure P3: a daemon, panel notes of {len(LIVE_ASSISTANTS)} assistants × "
                 f"{LIVE_SAMPLES} samples set Pending, cold then warm")
        timings: dict[str, tuple[float | None, float | None, int]] = {}
        try:
            with procs.Daemon(vault, ["--settle", str(SETTLE)], self.env(),
                              self.tmp / "p3.log") as daemon:
                daemon.wait_message("READY=1", 60)
                for kind in ("cold", "warm"):
                    note = vault / "Panels" / f"{kind}.md"
                    timings[kind] = self._live_note(note, kind, total)
                daemon.stop()
        finally:
            self.model.delay = 0.0
        target = SETTLE + MODEL_DELAY + TARGET_P3_EXTRA
        for figure, kind in (("P3a", "cold"), ("P3b", "warm")):
            first_s, span, writes = timings.get(kind, (None, None, 0))
            what = ("the daemon's first note that asks the model: the SDK is loaded then"
                    if kind == "cold" else "a later note: the SDK loaded already")
            self.rows.append(Row(
                figure, f"live panel ({total} answers, delay {MODEL_DELAY * 1000:.0f} ms), "
                f"{kind}: the first answer note ({what})", round(first_s, 3) if first_s else None,
                "s", f"{first_s * 1000:.0f} ms" if first_s else "no answer note",
                f"<= settle + delay + 100 ms = {target * 1000:.0f} ms" if kind == "warm"
                else "(diagnostic)",
                (first_s is not None and first_s <= target) if kind == "warm"
                else (None if first_s else False), {}))
        first_s, span, writes = timings.get("warm", (None, None, 0))
        rate = writes / span if span else None
        self.rows.append(Row(
            "P3c", "the same (warm): the last answer judged, and the panel note's writes",
            round(span, 3) if span else None, "s",
            f"{span:.2f} s; {writes} writes of the panel note ({rate:.1f}/s)" if span and rate
            else "not finished", f"<= {TARGET_P3_WRITES_PER_S:.0f} writes/s",
            rate is not None and rate <= TARGET_P3_WRITES_PER_S,
            {"writes": writes, "answers": total}))

    def _live_note(self, note: Path, kind: str, total: int
                   ) -> tuple[float | None, float | None, int]:
        """Write a pending panel note; when its first answer note appeared, when its last
        answer was judged (seconds after the write), and how often vaultd wrote the note."""
        writes = WriteCounter(note)
        writes.start()
        try:
            written = time.perf_counter()
            note.write_text(panel_note(f"{SEED_QUESTION} ({kind})", LIVE_SAMPLES,
                                       LIVE_ASSISTANTS), encoding="utf-8")
            first = _wait(lambda: answer_notes(note), 60)
            first_s = time.perf_counter() - written if first else None
            done = _wait(lambda: note_status(note) == "Done"
                         and len(answer_notes(note)) == total, 120)
            span = time.perf_counter() - written if done else None
            time.sleep(1.0)  # a write after Done is counted too
        finally:
            writes.stop()
        return first_s, span, writes.count - 1  # not the bench's own write

    # -- P4 ------------------------------------------------------------------------------

    def memory(self) -> None:
        notes, samples = (20, 5) if self.quick else (MEMORY_NOTES, MEMORY_SAMPLES)
        vault = self.tmp / "p4"
        panels = write_panel_vault(vault, panel_questions(notes), samples)
        total = notes * samples
        self.log(f"figure P4: daemon RSS while {notes} panel notes × {samples} samples run")
        peak = 0.0
        workers_peak = 0.0
        with procs.Daemon(vault, ["--settle", "0.2"], self.env(), self.tmp / "p4.log") as daemon:
            daemon.wait_message("READY=1", 120)
            end = time.perf_counter() + 900
            finished = False
            while time.perf_counter() < end:
                rss = procs.rss_mb(daemon.pid) or 0.0
                peak = max(peak, rss)
                workers = sum(procs.rss_mb(p) or 0.0 for p in procs.descendants(daemon.pid))
                workers_peak = max(workers_peak, workers)
                if all(note_status(p) == "Done" for p in panels):
                    finished = True
                    break
                time.sleep(0.5)
            time.sleep(2.0)
            after = procs.rss_mb(daemon.pid)
            on_disk = sum(len(answer_notes(p)) for p in panels)
            daemon.stop()
        ok = finished and on_disk == total
        self.rows.append(Row(
            "P4", f"daemon RSS, {notes} panel notes × {samples} samples ({total} answers)",
            round(peak, 1) if ok else None, "MB",
            f"{peak:.0f} MB at most while running, {after or 0:.0f} MB after" if ok else
            f"not finished: {on_disk}/{total} answers", f"< {TARGET_P4_MB:.0f} MB",
            ok and peak < TARGET_P4_MB,
            {"peak_mb": round(peak, 1), "after_mb": round(after or 0, 1),
             "workers_peak_mb": round(workers_peak, 1), "answers_on_disk": on_disk}))
        self.notes.append(f"Figure P4: the QuickJS worker processes held {workers_peak:.0f} MB "
                          "together at most (not counted in the daemon's RSS).")

    # -- P5 ------------------------------------------------------------------------------

    def resume(self) -> None:
        vault = self.tmp / "p5"
        panels = write_panel_vault(vault, self.questions, SAMPLES)
        # without the response cache: an answer received before the kill but not yet
        # written must be asked again, so the answers asked must be the answers missing
        (vault / ".vaultd").mkdir()
        (vault / ".vaultd" / "config.toml").write_text("cache = false\n", encoding="utf-8")
        n = len(panels) * SAMPLES
        self.model.delay = 0.05  # slow enough to be caught halfway
        self.log("figure P5: kill -9 halfway through P1's vault, then --once again")
        log = self.tmp / "p5-killed.log"
        try:
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "vaultd", "run", str(vault), "--once", "--concurrency",
                     str(CONCURRENCY)], env=self.env(), cwd=self.tmp, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
                _wait(lambda: sum(len(answer_notes(p)) for p in panels) >= n // 2, 300)
                procs.kill_tree(proc)
        finally:
            self.model.delay = 0.0
        had = sum(len(answer_notes(p)) for p in panels)
        missing = n - had
        got = self.once(vault, panels, "p5-restart", ["--concurrency", str(CONCURRENCY)], 600)
        ok = got.run.returncode == 0 and got.answers_on_disk == n
        self.rows.append(Row(
            "P5", f"resume after kill -9 at {had}/{n} answers: answers asked after the restart",
            got.answers_asked if ok else None, "requests",
            f"{got.answers_asked} asked for {missing} missing ({got.judgments_asked} "
            "judgments; response cache off)" if ok else
            f"vaultd failed: exit {got.run.returncode}, {got.answers_on_disk}/{n} answers",
            "= the answers missing",
            ok and got.answers_asked == missing,
            {"answers_before_restart": had, "missing": missing,
             "answers_asked": got.answers_asked, "judgments_asked": got.judgments_asked}))


class WriteCounter:
    """Counts the times a file is written (closed after writing, or renamed into place),
    by the real watchdog observer (inotify)."""

    def __init__(self, path: Path) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.path = str(path)
        self.count = 0
        counter = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                target = getattr(event, "dest_path", "") or event.src_path
                if event.event_type in ("closed", "moved") and str(target) == counter.path:
                    counter.count += 1

        self.observer = Observer()
        self.observer.schedule(Handler(), str(path.parent), recursive=False)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        if self.observer.is_alive():
            self.observer.stop()
            self.observer.join(10)


def _wait(check: Callable[[], object], timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if check():
            return True
        time.sleep(0.005)
    return False
