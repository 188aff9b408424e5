"""vaultd's benchmark: throughput, model concurrency, live latency, start-up, idle cost, requests.

    python -m bench.run [--quick] [--out bench/out] [--only 1,3] [--src DIR] [--profile]

Generates its vaults in a temporary folder, answers model requests from the loopback fake
Messages API (``tests.fakeapi``), runs vaultd as real processes (``python -m vaultd``) and
writes ``results.json`` and ``results.md`` to ``--out``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.rows import Row
from bench.vaults import (
    judgment,
    note_status,
    programmatic_note,
    set_pending,
    write_large_vault,
    write_seed_vault,
)
from tests.fakeapi import FakeMessagesAPI, Reply, Request

ROOT = Path(__file__).resolve().parent.parent

AI_PER_SEED_NOTE = 2  # the seed's graph: 2 ai measures at level 0, 2 programmatic at level 1


@dataclass(frozen=True)
class Sizes:
    throughput_notes: int  # figures 1 and 6
    concurrency_notes: int  # figure 2
    latency_samples: int  # figure 3
    startup_notes: int  # figures 4 and 5
    idle_seconds: float  # figure 5


FULL = Sizes(1000, 200, 50, 20_000, 60.0)
QUICK = Sizes(100, 50, 10, 2_000, 10.0)

TARGET_NOTES_PER_S = 150.0
TARGET_FLOOR_RATIO = 1.15
CONCURRENCY = 16
MODEL_DELAY = 0.2
SETTLE = 0.5
TARGET_LATENCY_EXTRA = 0.1  # p50 <= settle + this
TARGET_STARTUP_S = 3.0
STARTUP_RUNS = 3  # figure 4 reports the median
TARGET_IDLE_CPU_PER_60S = 0.2
TARGET_IDLE_RSS_MB = 100.0
POLL = 0.005  # figure 3: how often the note is read while waiting for Done
LATENCY_DEADLINE = 10.0


# -- the fake model ----------------------------------------------------------------------


class FakeModel:
    """Answers the seed's two ai prompts like a model would, after ``delay`` seconds."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.unexpected = 0

    def __call__(self, request: Request) -> Reply:
        judged = judgment(request.text)
        if judged is not None:
            return Reply(text=judged, delay=self.delay)
        self.unexpected += 1
        return Reply(text="ok", delay=self.delay)


# -- the bench ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, api: FakeMessagesAPI,
                 model: FakeModel) -> None:
        self.sizes = QUICK if args.quick else FULL
        self.quick: bool = args.quick
        self.src: Path = args.src
        self.out: Path = args.out
        self.tmp = tmp
        self.api = api
        self.model = model
        self.rows: list[Row] = []
        self.overhead_s: float | None = None
        self.notes: list[str] = []  # observations printed under the table

    def env(self, **extra: str) -> dict[str, str]:
        return procs.vaultd_env(self.src, self.api.url, **extra)

    def vaultd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vaultd", *args]

    def requests(self) -> int:
        return len(self.api.message_requests())

    def request_times(self, run: procs.OnceRun) -> dict[str, Any]:
        """When the run's model requests arrived, in seconds after its process started."""
        times = [r.received_at - run.started for r in self.api.message_requests()
                 if r.received_at >= run.started]
        if not times:
            return {}
        return {"first_request_s": round(min(times), 3), "last_request_s": round(max(times), 3)}

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # -- panels: P1 to P5 ----------------------------------------------------------------

    def panels(self) -> None:
        """Figures P1 to P5 (bench/panels.py), each measured on its own: one failing keeps
        the others."""
        from bench.panels import PanelBench

        bench = PanelBench(self.tmp, self.src, self.rows, self.notes, self.log, self.quick)
        try:
            for figure, step in (("2w", bench.single_notes_warm),
                                 ("P1", bench.throughput), ("P2", bench.latency_bound),
                                 ("P3", bench.live), ("P4", bench.memory),
                                 ("P5", bench.resume)):
                try:
                    step()
                except Exception as exc:
                    self.log(f"figure {figure} failed: {exc}")
                    traceback.print_exc()
                    self.rows.append(Row(figure, f"figure {figure}: could not be measured",
                                         None, "", f"failed: {str(exc).splitlines()[0][:120]}",
                                         "", False, {"error": str(exc)}))
        finally:
            bench.close()

    # -- figures 1 and 6 -----------------------------------------------------------------

    def overhead(self) -> None:
        vault = self.tmp / "empty"
        vault.mkdir()
        self.log("figure 0: vaultd run --once over an empty vault")
        run = procs.run_once(self.vaultd("run", str(vault), "--once"), self.env(),
                             self.tmp / "fig0.log", timeout=60)
        ok = run.returncode == 0
        self.overhead_s = run.wall if ok else None
        self.rows.append(Row(
            "0", "--once over an empty vault (start-up and exit alone)",
            round(run.wall, 3) if ok else None, "s",
            f"{run.wall:.2f} s ({run.cpu_user + run.cpu_system:.2f} CPU-s)" if ok
            else f"vaultd failed: {_failure(run)}", "(diagnostic)", None if ok else False,
            _run_details(run)))

    def throughput(self) -> None:
        self.overhead()
        n = self.sizes.throughput_notes
        vault = self.tmp / "throughput"
        self.log(f"figure 1: generating {n} seed-like notes")
        paths = write_seed_vault(vault, n)
        self.model.delay = 0.0
        before = self.requests()
        self_cpu = resource.getrusage(resource.RUSAGE_SELF)
        self.log(f"figure 1: vaultd run --once over {n} notes")
        run = procs.run_once(self.vaultd("run", str(vault), "--once"), self.env(),
                             self.tmp / "fig1.log", timeout=max(120.0, n * 0.3))
        api_cpu = _cpu_delta(self_cpu)
        first = self.requests() - before
        done = sum(1 for p in paths if note_status(p) == "Done")
        rate = n / run.wall
        details = _run_details(run) | self.request_times(run) | {
            "notes": n, "notes_done": done, "fake_api_cpu_s": round(api_cpu, 2),
        }
        ok = run.returncode == 0 and done == n
        shown = (f"{rate:.0f} notes/s ({run.wall:.2f} s wall)" if ok else
                 f"vaultd failed: {_failure(run)}, {done}/{n} notes Done")
        self.rows.append(Row(
            "1", f"throughput, --once, {n} seed-like notes, model delay 0",
            round(rate, 1) if ok else None, "notes/s", shown,
            f">= {TARGET_NOTES_PER_S:.0f} notes/s", ok and rate >= TARGET_NOTES_PER_S, details))
        if not ok:
            self.notes.append(f"Figure 1: exit code {run.returncode}, {done}/{n} notes Done; "
                              f"output tail:\n```\n{run.tail()}\n```")
        steady = ""
        if self.overhead_s is not None and run.wall > self.overhead_s:
            details["notes_per_s_without_overhead"] = round(n / (run.wall - self.overhead_s), 1)
            steady = (f"; without the empty-vault overhead (figure 0) that is "
                      f"{n / (run.wall - self.overhead_s):.0f} notes/s")
        first_at = details.get("first_request_s")
        self.notes.append(
            f"Figure 1: vaultd used {run.cpu_user + run.cpu_system:.2f} CPU-s "
            f"({run.cpu_user:.2f} user, {run.cpu_system:.2f} sys, QuickJS workers included) "
            f"in {run.wall:.2f} s wall; the fake API (this process) used {api_cpu:.2f} CPU-s"
            + (f"; the first model request came {first_at:.2f} s after start" if first_at
               else "") + steady + ".")

        expected = AI_PER_SEED_NOTE * n
        self.rows.append(Row(
            "6a", f"model requests, first run over {n} notes", first if ok else None,
            "requests", str(first) if ok else f"{first} (vaultd failed)",
            f"= {expected} (one per ai measure)", first == expected,
            {"expected": expected, "unexpected_prompts": self.model.unexpected}))

        self.log("figure 6: every note back to Pending, --once again")
        for path in paths:
            set_pending(path)
        before = self.requests()
        again = procs.run_once(self.vaultd("run", str(vault), "--once"), self.env(),
                               self.tmp / "fig6.log", timeout=max(120.0, n * 0.3))
        second = self.requests() - before
        done = sum(1 for p in paths if note_status(p) == "Done")
        ok = again.returncode == 0 and done == n
        self.rows.append(Row(
            "6b", f"model requests, same {n} notes set back to Pending", second if ok else None,
            "requests", str(second) if ok else f"{second} (vaultd failed: {_failure(again)})",
            "0 (answered from the response cache)", ok and second == 0,
            _run_details(again) | {"notes_done": done,
                                   "notes_per_s": round(n / again.wall, 1)}))
        self.notes.append(f"Figure 6: the re-run took {again.wall:.2f} s "
                          f"({n / again.wall:.0f} notes/s), exit code {again.returncode}, "
                          f"{done}/{n} notes Done.")
        if not ok:
            self.notes.append(f"Figure 6: output tail:\n```\n{again.tail()}\n```")

    # -- figure 2 ------------------------------------------------------------------------

    def concurrency(self) -> None:
        n = self.sizes.concurrency_notes
        self._concurrency_run("2", n, ["--concurrency", str(CONCURRENCY)], judged=True)
        # the same over figure 1's note count: how much of figure 2 is the fixed start-up cost
        self._concurrency_run("2x", self.sizes.throughput_notes,
                              ["--concurrency", str(CONCURRENCY)], judged=False)

    def _concurrency_run(self, figure: str, n: int, flags: list[str], judged: bool) -> None:
        vault = self.tmp / f"concurrency-{figure}"
        write_seed_vault(vault, n, seed=2 if judged else 3)
        self.model.delay = MODEL_DELAY
        self.api.max_in_flight = 0
        before = self.requests()
        expected_floor = math.ceil(AI_PER_SEED_NOTE * n / CONCURRENCY) * MODEL_DELAY
        self.log(f"figure {figure}: {n} notes, model delay {MODEL_DELAY} s, {' '.join(flags)}")
        try:
            run = procs.run_once(self.vaultd("run", str(vault), "--once", *flags), self.env(),
                                 self.tmp / f"fig{figure}.log",
                                 timeout=60.0 + expected_floor * 6)
        finally:
            self.model.delay = 0.0
        sent = self.requests() - before
        floor = math.ceil((sent or AI_PER_SEED_NOTE * n) / CONCURRENCY) * MODEL_DELAY
        ratio = run.wall / floor
        peak = self.api.max_in_flight
        timing = self.request_times(run)
        details = _run_details(run) | timing | {
            "notes": n, "requests": sent, "floor_s": round(floor, 2), "ratio": round(ratio, 3),
            "max_in_flight": peak, "flags": flags,
        }
        ok = run.returncode == 0
        label = " ".join(flags)
        self.rows.append(Row(
            figure, f"{n} notes, model delay {MODEL_DELAY * 1000:.0f} ms, {label}: wall / floor",
            round(ratio, 3) if ok else None, "x floor",
            f"{run.wall:.2f} s = {ratio:.2f} x floor {floor:.1f} s" if ok
            else f"vaultd failed: {_failure(run)}",
            f"<= {TARGET_FLOOR_RATIO} x floor" if judged else "(diagnostic)",
            ok and ratio <= TARGET_FLOOR_RATIO if judged else None, details))
        self.rows.append(Row(
            f"{figure}b", f"requests in flight at most ({label})", peak if ok else None,
            "requests", str(peak) if ok else f"{peak} (vaultd failed)",
            f"<= {CONCURRENCY}", ok and peak <= CONCURRENCY, {}))
        if timing:
            span = timing["last_request_s"] + MODEL_DELAY - timing["first_request_s"]
            self.notes.append(
                f"Figure {figure}: the first model request arrived {timing['first_request_s']:.2f}"
                f" s after the process started, the last at {timing['last_request_s']:.2f} s "
                f"(+{MODEL_DELAY} s to answer); the process exited at {run.wall:.2f} s. From "
                f"the first request to the last answer: {span:.2f} s = {span / floor:.2f} x "
                "floor.")
        if not ok:
            self.notes.append(f"Figure {figure}: exit code {run.returncode}; output tail:\n"
                              f"```\n{run.tail()}\n```")

    # -- figure 3 ------------------------------------------------------------------------

    def latency(self) -> None:
        samples = self.sizes.latency_samples
        vault = self.tmp / "latency"
        (vault / "live").mkdir(parents=True)
        flips = [vault / f"flip-{i:03d}.md" for i in range(samples // 2 + 1)]
        for i, path in enumerate(flips):
            path.write_text(programmatic_note(10_000 + i), encoding="utf-8")
        self.log(f"figure 3: daemon with --settle {SETTLE}, {samples} samples")
        with procs.Daemon(vault, ["--settle", str(SETTLE)], self.env(),
                          self.tmp / "fig3.log") as daemon:
            daemon.wait_message("READY=1", 60)
            # the flip notes are pending at start: let the daemon finish them first
            _wait_all_done(flips, 60, daemon)
            time.sleep(SETTLE + 0.5)
            times: list[float] = []
            kinds: dict[str, list[float]] = {"new": [], "flip": []}
            failures: list[str] = []
            for i in range(samples):
                if i % 2 == 0:
                    kind, path = "new", vault / "live" / f"new-{i:03d}.md"
                    path.write_text(programmatic_note(20_000 + i), encoding="utf-8")
                else:
                    kind, path = "flip", flips[i // 2]
                    set_pending(path)
                written = time.perf_counter()
                status = _wait_status(path, written + LATENCY_DEADLINE)
                took = time.perf_counter() - written
                if status != "Done":
                    failures.append(f"{path.name}: {status} after {took:.2f} s")
                    if len(failures) >= 3:
                        break
                else:
                    times.append(took)
                    kinds[kind].append(took)
                time.sleep(0.05)
            code, stop_s, leftover = daemon.stop()
        if not times:
            raise RuntimeError(f"no sample reached Done: {failures}; log:\n"
                               f"{(self.tmp / 'fig3.log').read_text()[-2000:]}")
        p50 = statistics.median(times)
        p95 = _percentile(times, 95)
        target = SETTLE + TARGET_LATENCY_EXTRA
        details = {
            "samples": len(times), "failures": failures, "p95_s": round(p95, 4),
            "max_s": round(max(times), 4), "min_s": round(min(times), 4),
            "p50_new_s": _median_or_none(kinds["new"]),
            "p50_flip_s": _median_or_none(kinds["flip"]),
            "stop_exit_code": code, "stop_s": round(stop_s, 2),
            "workers_left_after_stop": leftover,
        }
        self.rows.append(Row(
            "3", f"live latency, write -> Status: Done, --settle {SETTLE}, {len(times)} samples",
            round(p50, 4), "s p50", f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
            f"p50 <= {target * 1000:.0f} ms", not failures and p50 <= target, details))
        self.notes.append(
            f"Figure 3: p50 of new notes {_ms(kinds['new'])}, of notes flipped in place "
            f"{_ms(kinds['flip'])}; min {min(times) * 1000:.0f} ms, max "
            f"{max(times) * 1000:.0f} ms; SIGTERM stop took {stop_s:.2f} s (exit {code}).")
        if failures:
            self.notes.append(f"Figure 3: samples that did not end Done: {failures}")

    # -- figures 4 and 5 -----------------------------------------------------------------

    def startup_and_idle(self) -> None:
        n = self.sizes.startup_notes
        vault = self.tmp / "startup"
        self.log(f"figure 4: generating a {n}-note vault")
        pending = write_large_vault(vault, n)
        # a single start-up on a shared machine is noisy: take the median of a few, each
        # with the same notes pending; the last daemon stays up for figure 5
        readies: list[float] = []
        for attempt in range(STARTUP_RUNS):
            for path in pending:
                if note_status(path) == "Done":
                    set_pending(path)
            self.log(f"figure 4: daemon start-up over {n} notes ({len(pending)} pending), "
                     f"{attempt + 1} of {STARTUP_RUNS}")
            with procs.Daemon(vault, [], self.env(),
                              self.tmp / f"fig4-{attempt}.log") as daemon:
                readies.append(daemon.wait_message("READY=1", 60) - daemon.started)
                if attempt < STARTUP_RUNS - 1:
                    daemon.stop()
                    continue
                ready = statistics.median(readies)
                self.rows.append(Row(
                    "4", f"start-up to READY=1, {n} notes ({len(pending)} pending), "
                    f"median of {STARTUP_RUNS}", round(ready, 3), "s",
                    f"{ready:.2f} s", f"< {TARGET_STARTUP_S:.0f} s", ready < TARGET_STARTUP_S,
                    {"notes": n, "pending": len(pending),
                     "runs_s": [round(r, 3) for r in readies]}))
                drained = _wait_all_done(pending, 180, daemon) - daemon.started - readies[-1]
                self.notes.append(
                    f"Figure 4: start-ups took {', '.join(f'{r:.2f}' for r in readies)} s; in "
                    f"the last, the {len(pending)} pending notes were all Done {drained:.2f} s "
                    "after READY=1.")
                time.sleep(2.0)  # let the daemon's own last writes settle
                self.idle(daemon)
                code, stop_s, leftover = daemon.stop()
        self.notes.append(f"Figure 5: SIGTERM stop took {stop_s:.2f} s (exit {code}); "
                          f"{leftover} worker processes outlived the daemon by 1 s.")

    def idle(self, daemon: procs.Daemon) -> None:
        seconds = self.sizes.idle_seconds
        self.log(f"figure 5: sampling the idle daemon for {seconds:.0f} s")
        pid = daemon.pid
        workers = procs.descendants(pid)
        cpu0 = procs.cpu_seconds(pid)
        wcpu0 = sum(procs.cpu_seconds(w) or 0.0 for w in workers)
        rss: list[float] = []
        wrss: list[float] = []
        end = time.perf_counter() + seconds
        while True:
            rss.append(procs.rss_mb(pid) or 0.0)
            wrss.append(sum(procs.rss_mb(w) or 0.0 for w in workers))
            left = end - time.perf_counter()
            if left <= 0:
                break
            time.sleep(min(1.0, left))
        cpu1 = procs.cpu_seconds(pid)
        wcpu1 = sum(procs.cpu_seconds(w) or 0.0 for w in workers)
        if cpu0 is None or cpu1 is None:
            raise RuntimeError(f"the daemon exited while idle; log:\n{daemon.log_tail()}")
        cpu = cpu1 - cpu0
        cpu_target = TARGET_IDLE_CPU_PER_60S * seconds / 60
        scaled = "" if seconds == 60 else f" (= {TARGET_IDLE_CPU_PER_60S} per 60 s, scaled)"
        per60 = cpu * 60 / seconds
        self.rows.append(Row(
            "5a", f"idle CPU over {seconds:.0f} s (daemon process)", round(cpu, 3), "CPU-s",
            f"{cpu:.3f} CPU-s" + ("" if seconds == 60 else f" (~{per60:.2f} per 60 s)"),
            f"< {cpu_target:.3f} CPU-s{scaled}", cpu < cpu_target,
            {"seconds": seconds, "cpu_per_60s": round(per60, 3),
             "worker_processes": len(workers), "workers_cpu_s": round(wcpu1 - wcpu0, 3),
             "clock_ticks_per_s": procs.CLOCK_TICKS}))
        peak = max(rss)
        self.rows.append(Row(
            "5b", f"idle RSS over {seconds:.0f} s (daemon process, max)", round(peak, 1), "MiB",
            f"{peak:.1f} MB", f"< {TARGET_IDLE_RSS_MB:.0f} MB", peak < TARGET_IDLE_RSS_MB,
            {"samples": len(rss), "min_mb": round(min(rss), 1),
             "workers_rss_mb_max": round(max(wrss), 1),
             "total_with_workers_mb_max": round(max(a + b for a, b in zip(rss, wrss,
                                                                          strict=True)), 1)}))
        self.notes.append(
            f"Figure 5: the {len(workers)} QuickJS worker processes used "
            f"{wcpu1 - wcpu0:.3f} CPU-s and {max(wrss):.1f} MB RSS between them while idle "
            f"(not counted in the targets, which are the daemon process's).")
        if self.quick:
            self.notes.append(f"Figure 5 (--quick): idle sampled over {seconds:.0f} s, not "
                              "60 s; the CPU target is scaled to that window.")

    # -- profile ---------------------------------------------------------------------------

    def profile_throughput(self) -> None:
        n = self.sizes.throughput_notes
        vault = self.tmp / "profile"
        write_seed_vault(vault, n, seed=4)
        prof = self.out / "fig1.prof"
        report = self.out / "fig1-profile.txt"
        self.log(f"profile: figure 1's run under cProfile (every thread) -> {prof}")
        cmd = [sys.executable, "-m", "bench.profile_vaultd", str(prof), str(report), "--",
               "run", str(vault), "--once"]
        env = self.env(PYTHONPATH=f"{self.src}{os.pathsep}{ROOT}")
        run = procs.run_once(cmd, env, self.tmp / "profile.log", timeout=max(300.0, n))
        self.notes.append(f"Profile: figure 1 under cProfile took {run.wall:.2f} s "
                          f"(exit {run.returncode}); top functions in {report}.")


# -- helpers -----------------------------------------------------------------------------


def _cpu_delta(before: resource.struct_rusage) -> float:
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _failure(run: procs.OnceRun) -> str:
    if run.timed_out:
        return f"killed after {run.wall:.0f} s"
    last = run.output.rstrip().splitlines()[-1:] or [""]
    return f"exit {run.returncode}: {last[0][:100]}"


def _run_details(run: procs.OnceRun) -> dict[str, Any]:
    return {"wall_s": round(run.wall, 3), "exit_code": run.returncode,
            "timed_out": run.timed_out, "cpu_user_s": round(run.cpu_user, 2),
            "cpu_system_s": round(run.cpu_system, 2),
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def _wait_status(path: Path, deadline: float) -> str | None:
    """Poll ``path`` every 5 ms until its Status is Done or Error, or the deadline."""
    status = None
    while time.perf_counter() < deadline:
        status = note_status(path)
        if status in ("Done", "Error"):
            return status
        time.sleep(POLL)
    return f"still {status}"


def _wait_all_done(paths: list[Path], timeout: float, daemon: procs.Daemon) -> float:
    """When (``perf_counter``) every note in ``paths`` was Done."""
    end = time.perf_counter() + timeout
    left = list(paths)
    while left:
        left = [p for p in left if note_status(p) != "Done"]
        if not left:
            break
        if time.perf_counter() > end or daemon.proc.poll() is not None:
            states = {str(p.name): note_status(p) for p in left[:5]}
            raise RuntimeError(f"{len(left)} notes not Done after {timeout:.0f} s {states}; "
                               f"log:\n{daemon.log_tail()}")
        time.sleep(0.05)
    return time.perf_counter()


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _median_or_none(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms" if values else "n/a"


def _git(src: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine(src: Path) -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    commit = _git(src, "rev-parse", "HEAD")
    dirty = _git(src, "status", "--porcelain", "--", "vaultd")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": mem_mb,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "vaultd_src": str(src),
        "vaultd_commit": commit,
        "vaultd_uncommitted_files": len(dirty.splitlines()) if dirty is not None else None,
    }


# -- the report --------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = ["| figure | value | target | met? |", "| --- | --- | --- | --- |"]
    for row in rows:
        met = "n/a" if row.met is None else "yes" if row.met else "**no**"
        lines.append(f"| {row.figure}. {row.name} | {row.shown} | {row.target} | {met} |")
    return "\n".join(lines)


def markdown(result: dict[str, Any], rows: list[Row], notes: list[str]) -> str:
    m = result["machine"]
    uncommitted = m["vaultd_uncommitted_files"]
    commit = (m["vaultd_commit"] or "unknown") + (
        f" + {uncommitted} uncommitted file(s) in vaultd/" if uncommitted else "")
    head = [
        f"# vaultd bench ({result['mode']}), {result['started']}",
        "",
        f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_mb']} MB, "
        f"Linux {m['kernel']}, load average at start {m['load_average_at_start']}, "
        f"at end {m['load_average_at_end']}",
        f"- {m['python']}; vaultd from {m['vaultd_src']} at {commit}",
        f"- bench took {result['duration_s']:.0f} s",
        "",
    ]
    body = [table(rows), ""]
    if notes:
        body += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(head + body)


@contextmanager
def fake_api(model: FakeModel) -> Iterator[FakeMessagesAPI]:
    api = FakeMessagesAPI()
    api.responder = model
    try:
        yield api
    finally:
        api.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke test (about a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out",
                        help="where results.json and results.md go (default bench/out)")
    parser.add_argument("--only", default="1,2,3,4,P",
                        help="which figure groups to run: 1 (figures 1 and 6), 2, 3, "
                        "4 (figures 4 and 5), P (the panel figures P1 to P5); default all")
    parser.add_argument("--src", type=Path, default=ROOT,
                        help="the vaultd checkout to run (put on PYTHONPATH; default: this one)")
    parser.add_argument("--profile", action="store_true",
                        help="also run figure 1's workload under cProfile in every thread and "
                        "write fig1.prof and fig1-profile.txt to --out")
    parser.add_argument("--keep", action="store_true", help="keep the generated vaults")
    args = parser.parse_args(argv)
    args.src = args.src.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    groups = {part.strip() for part in args.only.split(",") if part.strip()}

    started = datetime.now(UTC).replace(microsecond=0)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="vaultd-bench-"))
    model = FakeModel()
    steps: list[tuple[str, str, Callable[[Bench], None]]] = [
        ("1", "figures 1 and 6", Bench.throughput),
        ("2", "figure 2", Bench.concurrency),
        ("3", "figure 3", Bench.latency),
        ("4", "figures 4 and 5", Bench.startup_and_idle),
        ("P", "figures P1 to P5", Bench.panels),
    ]
    failed = False
    bench: Bench | None = None
    try:
        with fake_api(model) as api:
            bench = Bench(args, tmp, api, model)
            for key, label, step in steps:
                if key not in groups:
                    continue
                try:
                    step(bench)
                except Exception as exc:  # one figure failing must not lose the others
                    failed = True
                    bench.log(f"{label} failed: {exc}")
                    traceback.print_exc()
                    bench.rows.append(Row(key, f"{label}: could not be measured", None, "",
                                          f"failed: {str(exc).splitlines()[0][:120]}", "",
                                          False, {"error": str(exc)}))
            if args.profile:
                try:
                    bench.profile_throughput()
                except Exception as exc:
                    bench.notes.append(f"Profile failed: {exc}")
    finally:
        if args.keep:
            print(f"vaults kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = bench.rows if bench else []
    notes = bench.notes if bench else []
    failed = failed or any(row.value is None and row.met is not None for row in rows)
    info = machine(args.src)
    info["load_average_at_start"] = load_at_start
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(),
        "duration_s": round(time.perf_counter() - t0, 1),
        "sizes": asdict(QUICK if args.quick else FULL),
        "machine": info,
        "figures": [asdict(row) for row in rows],
        "notes": notes,
        "all_measured": not failed,
        "all_met": bool(rows) and all(row.met is not False for row in rows),
    }
    text = markdown(result, rows, notes)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n",
                                           encoding="utf-8")
    (args.out / "results.md").write_text(text, encoding="utf-8")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
