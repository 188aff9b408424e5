"""Panel notes end to end: the real SDK against the loopback API, real answer notes on disk.

The loopback API answers the panel's question differently for each request of a model
(in turn, by count) and judges each answer by what it says, so the exact figures of a run
are known: per model, how many answers name Poteligeo, where, and how strongly.
"""

# ruff: noqa: RUF001  (the contract's cells put an en dash between an interval's ends)

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vaultd.note.text import parse

from .conftest import ROOT, run_cli
from .daemonproc import DEADLINE, wait_for
from .fakeapi import FakeMessagesAPI, Reply, Request
from .notes import SEED

QUERY = ("My Sezary Syndrome is resistant to first-line treatments. What are the best "
         "second-line treatment options?")
SONNET, OPUS = "claude-sonnet-5-5", "claude-opus-5"
# what each answer names, and how strongly it recommends Poteligeo
JUDGED = {
    "Poteligeo (mogamulizumab) first, then Adcetris.": (["Poteligeo", "Adcetris"], 9),
    "Adcetris first, then Poteligeo.": (["Adcetris", "Poteligeo"], 6),
    "Adcetris alone.": (["Adcetris"], 1),
    "Poteligeo alone.": (["Poteligeo"], 10),
    "Istodax, then Poteligeo.": (["Istodax", "Poteligeo"], 5),
    "Istodax alone.": (["Istodax"], 2),
}
ANSWERS = {
    SONNET: ["Poteligeo (mogamulizumab) first, then Adcetris.", "Adcetris first, then Poteligeo.",
             "Adcetris alone.", "Poteligeo alone.", "Istodax, then Poteligeo."],
    OPUS: ["Adcetris alone.", "Istodax alone.", "Poteligeo (mogamulizumab) first, then Adcetris.",
           "Adcetris alone.", "Adcetris first, then Poteligeo."],
}


def panel_note(*, samples: int = 5, assistants: str = f"[{OPUS}, {SONNET}]",
               status: str = "Pending") -> str:
    """The seed note as a panel: its question and measures, no answer, no results."""
    query = SEED[SEED.index("> [!query]"):SEED.index("> [!answer]")]
    measures = SEED[SEED.index("> [!measures]"):SEED.index("> [!evaluation]")]
    return (f"---\nStatus: {status}\nsamples: {samples}\nassistants: {assistants}\n---\n\n"
            f"***\n\n{query}{measures}")


class Panel:
    """The loopback API's part in a panel: answers in turn, judgments by the answer."""

    def __init__(self, api: FakeMessagesAPI) -> None:
        self.api = api
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # when set: answers after `free` wait on it
        self.free = 0
        api.responder = self.respond

    def respond(self, request: Request) -> Reply | str:
        text = request.text
        for answer, (brands, strength) in JUDGED.items():
            if answer in text and "BRAND NAMES" in text:
                return json.dumps(brands)
            if answer in text and "how strongly" in text:
                return json.dumps({"response": strength, "comment": "as said"})
        assert QUERY in text, text
        model = request.model or ""
        with self.lock:
            n = self.counts.get(model, 0)
            self.counts[model] = n + 1
            total = sum(self.counts.values())
        if self.gate is not None and total > self.free:
            self.gate.wait(DEADLINE)
            return Reply(status=529, text="held")
        return ANSWERS[model][n % len(ANSWERS[model])]

    def answer_requests(self) -> list[Request]:
        return [r for r in self.api.message_requests() if QUERY in r.text]

    def judge_requests(self) -> list[Request]:
        return [r for r in self.api.message_requests() if QUERY not in r.text]


def answer_notes(vault: Path) -> list[Path]:
    folder = vault / "Queries" / "Sezary"
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


def frontmatter(path: Path) -> dict[str, object]:
    return dict(parse(path.read_text(encoding="utf-8")).properties)


def write_panel(vault: Path, text: str) -> Path:
    (vault / "Queries").mkdir(exist_ok=True)
    note = vault / "Queries" / "Sezary.md"
    note.write_text(text, encoding="utf-8")
    return note


def test_two_models_five_samples_give_the_exact_figures(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    panel = Panel(api)
    note = write_panel(vault, panel_note())

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert "done       Queries/Sezary.md: 10 of 10 answers" in ran.out
    # every draw its own request, though the bodies are identical; identical answers are
    # judged once: six different answers, two ai measures each
    assert len(panel.answer_requests()) == 10
    assert sorted(r.model or "" for r in panel.answer_requests()) == [OPUS] * 5 + [SONNET] * 5
    assert len(panel.judge_requests()) == 12
    notes = answer_notes(vault)
    assert len(notes) == 10
    props = frontmatter(note)
    assert props["status"] == "Done"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(props["run"]))
    # the run's figure over all ten answers: Poteligeo named in 6, at 1, 2, 1, 2, 1, 2
    assert props["eval_poteligeo_mentioned"] == 0.6
    assert props["eval_poteligeo_position"] == 1.5
    assert props["eval_recommendation_strength"] == 5.0
    assert "eval_mentioned_treatments" not in props
    per_model: dict[str, list[bool]] = {}
    for path in notes:
        answer = frontmatter(path)
        assert answer["status"] == "Done"
        assert answer["panel"] == "[[Sezary]]"
        assert answer["assistant"] == answer["model"]
        assert answer["run"] == props["run"]
        per_model.setdefault(str(answer["assistant"]), []).append(
            bool(answer["eval_poteligeo_mentioned"]))
    assert sorted(per_model[SONNET]) == [False, True, True, True, True]
    assert sorted(per_model[OPUS]) == [False, False, False, True, True]
    text = note.read_text(encoding="utf-8")
    assert "> [!panel]" in text
    assert "4/5 · 80% (38–96%)" in text  # sonnet: Poteligeo named in four of five
    assert "2/5 · 40% (12–77%)" in text  # opus: two of five


def test_an_answer_note_is_the_seed_shape(vault: Path, api: FakeMessagesAPI,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    panel = Panel(api)
    write_panel(vault, panel_note(samples=1, assistants=SONNET))

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert len(panel.answer_requests()) == 1
    (path,) = answer_notes(vault)
    run = str(frontmatter(path)["run"])
    day, clock = run[:10], run[11:19].replace(":", "")
    assert path.name == f"{day} {clock} {SONNET} 1.md"
    text = path.read_text(encoding="utf-8")
    head, body = text.split("\n---\n", 1)
    lines = head.splitlines()
    assert lines[:8] == ["---", "Status: Done", 'panel: "[[Sezary]]"', f"assistant: {SONNET}",
                         "provider: anthropic", f"model: {SONNET}", "sample: 1", f'run: "{run}"']
    assert lines[8].startswith("Evaluated: ")
    assert lines[9:] == [
        "tokens_in: " + lines[9].split(": ")[1], "tokens_out: " + lines[10].split(": ")[1],
        "cost_usd: " + lines[11].split(": ")[1],
        "eval_mentioned_treatments:", "  - Poteligeo", "  - Adcetris",
        "eval_poteligeo_mentioned: true", "eval_poteligeo_position: 1",
        "eval_recommendation_strength: 9", "vaultd_properties:",
        "  - eval_mentioned_treatments", "  - eval_poteligeo_mentioned",
        "  - eval_poteligeo_position", "  - eval_recommendation_strength"]
    measures = SEED[SEED.index("> [!measures]"):SEED.index("\n\n***\n\n> [!evaluation]")]
    assert body.startswith(
        "\n***\n\n> [!query]\n> ```query-text\n> " + QUERY + "\n> ```\n\n***\n\n"
        "> [!answer]\n> ```answer-text\n> Poteligeo (mogamulizumab) first, then Adcetris.\n"
        "> ```\n\n***\n\n" + measures)
    assert body.count("> [!evaluation-result]") == 4


def test_a_note_without_samples_or_assistants_is_as_before(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import without_timestamp
    from .test_engine import answer_rules, seed_done
    answer_rules(api)
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 0, ran
    assert without_timestamp((vault / "seed.md").read_text(encoding="utf-8")) == seed_done()
    assert [p.name for p in vault.iterdir()] == ["seed.md", ".vaultd"] or \
        sorted(p.name for p in vault.iterdir()) == [".vaultd", "seed.md"]


def test_a_new_run_asks_afresh_and_keeps_the_earlier_one(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    panel = Panel(api)
    note = write_panel(vault, panel_note(samples=2, assistants=SONNET))
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    first = {p: p.read_bytes() for p in answer_notes(vault)}
    assert len(first) == 2
    # run ids are whole seconds: the next run must start in a later one
    run = str(frontmatter(note)["run"])
    wait_for(lambda: _utc_now() > run, what="the next second")
    text = note.read_text(encoding="utf-8").replace("Status: Done", "Status: Pending", 1)
    note.write_text(text, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert len(panel.answer_requests()) == 4  # asked afresh: not from the cache
    notes = answer_notes(vault)
    assert len(notes) == 4
    assert {p: p.read_bytes() for p in first} == first  # the earlier run's notes untouched
    assert frontmatter(note)["run"] != run
    summary = note.read_text(encoding="utf-8")
    assert run in summary  # the earlier run is a row of the Runs table


def _utc_now() -> str:
    from datetime import datetime
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_kill_9_mid_run_then_only_the_missing_answers_are_asked(
        vault: Path, api: FakeMessagesAPI) -> None:
    panel = Panel(api)
    panel.gate, panel.free = threading.Event(), 4
    note = write_panel(vault, panel_note())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "vaultd", "run", str(vault), "--once"],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        # proof the run got that far: four answer notes on disk, the other six held
        wait_for(lambda: len(answer_notes(vault)) == 4, what="four answer notes")
        wait_for(lambda: len(panel.answer_requests()) == 10, what="all ten asked")
        child.send_signal(signal.SIGKILL)
        child.wait(DEADLINE)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        panel.gate.set()
    kept = {p: p.read_bytes() for p in answer_notes(vault)}
    assert frontmatter(note)["status"] == "Processing"
    panel.gate = None
    before = len(panel.answer_requests())

    ran = subprocess.run([sys.executable, "-m", "vaultd", "run", str(vault), "--once"],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=DEADLINE, check=False)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(panel.answer_requests()) - before == 6  # only the missing ones
    assert len(answer_notes(vault)) == 10
    assert {p: p.read_bytes() for p in kept} == kept
    props = frontmatter(note)
    assert props["status"] == "Done"
    runs = {frontmatter(p)["run"] for p in answer_notes(vault)}
    assert runs == {props["run"]}  # one run, resumed


def test_a_hundred_samples_fill_in_live_in_the_daemon(vault: Path, api: FakeMessagesAPI) -> None:
    from watchdog.events import FileClosedEvent, FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    from .daemonproc import DaemonProcess

    panel = Panel(api)
    api.default = Reply(text="unused", delay=0.0)
    slow = panel.respond

    def respond(request: Request) -> Reply | str:  # each answer takes a model's while
        got = slow(request)
        if QUERY in request.text and isinstance(got, str):
            return Reply(text=got, delay=0.2)
        return got

    api.responder = respond
    (vault / "Queries").mkdir()
    note = vault / "Queries" / "Sezary.md"
    writes: list[float] = []

    class Count(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if isinstance(event, FileClosedEvent) and Path(str(event.src_path)) == note:
                writes.append(time.monotonic())

    observer = Observer()
    observer.schedule(Count(), str(vault / "Queries"))
    observer.start()
    seen: set[str] = set()
    try:
        with DaemonProcess(vault, "--settle", "0.2") as daemon:
            daemon.wait_ready()
            note.write_text(panel_note(samples=100, assistants=SONNET), encoding="utf-8")
            started = time.monotonic()
            writes.clear()

            def done() -> bool:
                text = note.read_text(encoding="utf-8")
                seen.update(re.findall(r"(\d+) of 100 answers", text))
                return "Status: Done" in text

            wait_for(done, what="the panel done")
            took = time.monotonic() - started
            daemon.stop()
    finally:
        observer.stop()
        observer.join()
    assert len(answer_notes(vault)) == 100
    assert len(panel.answer_requests()) == 100
    # it filled in live: the note showed counts between none and all while it ran
    assert any(0 < int(n) < 100 for n in seen), seen
    # ... and was written a few times a second at most (live_interval 0.25 s), not once
    # an answer
    assert 3 <= len(writes) <= 4 * took + 4, (len(writes), took)


def test_a_panel_through_batches(vault: Path, api: FakeMessagesAPI,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)
    note = write_panel(vault, panel_note())

    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)

    assert ran.code == 0, ran
    assert api.message_requests() == []  # nothing outside the batches
    # one batch of the ten draws (each its own item), then one of the twelve judgments
    assert [len(b.items) for b in api.batches.values()] == [10, 12]
    assert len(answer_notes(vault)) == 10
    props = frontmatter(note)
    assert props["status"] == "Done"
    assert (props["eval_poteligeo_mentioned"], props["eval_poteligeo_position"],
            props["eval_recommendation_strength"]) == (0.6, 1.5, 5.0)
    assert "4/5 · 80% (38–96%)" in note.read_text(encoding="utf-8")


def test_without_a_key_a_panel_waits_untouched(vault: Path, no_key: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    note = write_panel(vault, panel_note())
    before = note.read_bytes()

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1, ran
    assert "waiting    Queries/Sezary.md: no API key" in ran.out
    assert note.read_bytes() == before
    assert answer_notes(vault) == []


def test_one_model_failing_leaves_the_others_figures(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    panel = Panel(api)
    judged = panel.respond

    def respond(request: Request) -> Reply | str:
        if request.model == OPUS and QUERY in request.text:
            return Reply(status=404, text=f"model: {OPUS}")
        return judged(request)

    api.responder = respond
    note = write_panel(vault, panel_note())

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1, ran
    assert len(answer_notes(vault)) == 5  # sonnet's, judged
    props = frontmatter(note)
    assert props["status"] == "Error"
    assert str(props["error"]).startswith(f"5 of 10 answers could not be had; {OPUS} ")
    assert "404" in str(props["error"]) or "not_found" in str(props["error"]), props["error"]
    text = note.read_text(encoding="utf-8")
    assert "4/5 · 80% (38–96%)" in text  # sonnet's figures, all there
    assert props["eval_poteligeo_mentioned"] == 0.8


def test_a_taken_name_gets_the_next_free_one(vault: Path) -> None:
    from vaultd.edges.writer import Writer

    folder = vault / "Queries" / "Sezary"
    folder.mkdir(parents=True)
    taken = folder / "2026-12-02 143507 gpt 3.md"
    taken.write_text("a note of the user's", encoding="utf-8")
    writer = Writer(vault, leases=False)

    made = writer.create(folder, taken.name, b"vaultd's")
    again = writer.create(folder, taken.name, b"vaultd's too")

    assert made.name == "2026-12-02 143507 gpt 3 (2).md"
    assert again.name == "2026-12-02 143507 gpt 3 (3).md"
    assert taken.read_text(encoding="utf-8") == "a note of the user's"
    assert made.read_bytes() == b"vaultd's"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [taken.name, made.name, again.name])  # no temporary file left behind


def test_a_bad_panel_setting_is_an_error_on_its_line(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    note = write_panel(vault, panel_note().replace("samples: 5", "samples: lots"))

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1, ran
    assert api.message_requests() == []
    props = frontmatter(note)
    assert props["status"] == "Error"
    assert str(props["error"]).startswith("1 problem(s): line 3: property `samples`: `lots`")
    assert answer_notes(vault) == []


def test_sigterm_mid_run_then_the_daemon_resumes_it(vault: Path, api: FakeMessagesAPI) -> None:
    from .daemonproc import DaemonProcess

    panel = Panel(api)
    panel.gate, panel.free = threading.Event(), 3
    note = write_panel(vault, panel_note(samples=6, assistants=SONNET))
    try:
        with DaemonProcess(vault, "--settle", "0.2") as daemon:
            daemon.wait_ready()
            wait_for(lambda: len(answer_notes(vault)) == 3, what="three answer notes")
            wait_for(lambda: len(panel.answer_requests()) == 6, what="all six asked")
            assert daemon.stop() == 0  # at once: it does not wait for the held answers
    finally:
        panel.gate.set()
    assert frontmatter(note)["status"] == "Processing"
    kept = {p: p.read_bytes() for p in answer_notes(vault)}
    panel.gate = None
    before = len(panel.answer_requests())

    with DaemonProcess(vault, "--settle", "0.2") as daemon:
        daemon.wait_ready()
        wait_for(lambda: frontmatter(note)["status"] == "Done", what="the run resumed and done")
        daemon.stop()

    assert len(panel.answer_requests()) - before == 3
    assert len(answer_notes(vault)) == 6
    assert {p: p.read_bytes() for p in kept} == kept


def weekly_panel_run_once(vault: Path, api: FakeMessagesAPI) -> tuple[Panel, Path]:
    """A panel note with `every: 7d`, run by the daemon at 2026-12-01T09:00:00Z."""
    from .daemonproc import DaemonProcess

    panel = Panel(api)
    note = write_panel(vault, panel_note(samples=2, assistants=SONNET).replace(
        "samples: 2\n", "samples: 2\nevery: 7d\n"))
    with DaemonProcess(vault, "--settle", "0.2",
                       env={"VAULTD_NOW": "2026-12-01T09:00:00Z"}) as daemon:
        daemon.wait_ready()
        wait_for(lambda: frontmatter(note)["status"] == "Done", what="the first run")
        daemon.stop()
    return panel, note


def test_every_7d_after_a_week_offline_makes_one_run(vault: Path, api: FakeMessagesAPI) -> None:
    from .daemonproc import DaemonProcess, marker_done

    panel, note = weekly_panel_run_once(vault, api)
    assert frontmatter(note)["run"] == "2026-12-01T09:00:00Z"
    first = {p: p.read_bytes() for p in answer_notes(vault)}
    assert len(first) == 2

    # a week and a day later: one catch-up run, not one per period missed
    with DaemonProcess(vault, "--settle", "0.2",
                       env={"VAULTD_NOW": "2026-12-09T10:00:00Z"}) as daemon:
        daemon.wait_ready()
        wait_for(lambda: str(frontmatter(note)["run"]).startswith("2026-12-09T10:00")
                 and frontmatter(note)["status"] == "Done", what="the catch-up run")
        marker_done(vault)
        daemon.stop()
    assert len(panel.answer_requests()) == 4
    assert {p: p.read_bytes() for p in first} == first  # the earlier run's notes untouched

    # an hour after that: not due
    with DaemonProcess(vault, "--settle", "0.2",
                       env={"VAULTD_NOW": "2026-12-09T11:00:00Z"}) as daemon:
        daemon.wait_ready()
        marker_done(vault, "marker2.md")  # proof the daemon looked at the vault
        daemon.stop()
    assert len(panel.answer_requests()) == 4


# What sonnet's five answers say in each weekly run of a month: Poteligeo twice, then not.
MONTH = ["Poteligeo alone.", "Poteligeo alone.", "Adcetris alone.", "Adcetris alone."]
WEEK_IN_SECONDS = 15.0  # VAULTD_CLOCK_RATE makes a week of the daemon's clock pass in this


def test_a_month_of_every_7d_with_the_daemon_left_running(
        vault: Path, api: FakeMessagesAPI) -> None:
    """The issue's "done when": `every: 7d`, the daemon left running for a month (its clock
    at 40320 times real time), then four runs side by side in the note, the real change
    flagged and the others not."""
    from .daemonproc import DaemonProcess

    panel = Panel(api)
    judge = panel.respond
    asked = {"n": 0}

    def respond(request: Request) -> Reply | str:
        if QUERY not in request.text:
            return judge(request)
        with panel.lock:
            n, asked["n"] = asked["n"], asked["n"] + 1
        return MONTH[min(n // 5, len(MONTH) - 1)]

    api.responder = respond
    note = write_panel(vault, panel_note(assistants=SONNET).replace(
        "samples: 5\n", "samples: 5\nevery: 7d\n"))
    rate = str(7 * 24 * 3600 / WEEK_IN_SECONDS)

    def four_runs_done() -> str | None:
        runs = {frontmatter(p)["run"] for p in answer_notes(vault)}
        text = note.read_text(encoding="utf-8")
        done = frontmatter(note)["status"] == "Done" and len(runs) == 4
        return text if done and str(frontmatter(note)["run"]) == max(map(str, runs)) else None

    with DaemonProcess(vault, "--settle", "0.2", env={
            "VAULTD_NOW": "2026-12-01T09:00:00Z", "VAULTD_CLOCK_RATE": rate}) as daemon:
        daemon.wait_ready()
        text = wait_for(four_runs_done, timeout=4 * WEEK_IN_SECONDS + DEADLINE,
                        what="four weekly runs")
        daemon.stop()

    runs = sorted({str(frontmatter(p)["run"]) for p in answer_notes(vault)})[:4]
    starts = [datetime.strptime(r, "%Y-%m-%dT%H:%M:%SZ") for r in runs]
    assert all(timedelta(days=7) <= b - a < timedelta(days=9)
               for a, b in itertools.pairwise(starts)), runs
    assert starts[0] >= datetime(2026, 12, 1, 9) and starts[3] < datetime(2027, 1, 1), runs
    # the Runs table, newest first: the drop from 5/5 to 0/5 is real (p = 2/252), the rest
    # is no change at all
    rows = [line for line in text.splitlines() if line.startswith("> | 2026-12-")]
    assert rows == [
        f"> | {runs[3]} | 5 | 0% |",
        f"> | {runs[2]} | 5 | 0% ↓ p=0.0079 |",
        f"> | {runs[1]} | 5 | 100% |",
        f"> | {runs[0]} | 5 | 100% |",
    ], text
    assert f"> | {SONNET} | {runs[2]} | no change |" in text, text  # run 4 against run 3
    assert len(answer_notes(vault)) >= 20


def test_a_scheduled_run_without_its_model_is_tried_again_a_period_later(
        vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails for a reason outside the note (here: no key) says why in `Error`
    and counts as tried: an hour later, key or not, nothing is asked; a period later, with
    the key back, the next run goes ahead and keeps the earlier run's answer notes."""
    from .daemonproc import DaemonProcess, marker_done

    panel, note = weekly_panel_run_once(vault, api)
    first = {p: p.read_bytes() for p in answer_notes(vault)}
    assert len(first) == 2

    monkeypatch.delenv("ANTHROPIC_API_KEY")  # a week later the key is gone
    with DaemonProcess(vault, "--settle", "0.2",
                       env={"VAULTD_NOW": "2026-12-08T09:30:00Z"}) as daemon:
        daemon.wait_ready()
        wait_for(lambda: frontmatter(note)["status"] == "Error", what="the failed run")
        marker_done(vault)
        daemon.stop()
    props = frontmatter(note)
    assert str(props["run"]).startswith("2026-12-08T09:3"), props  # the clock runs on
    assert "no API key" in str(props["error"]), props
    assert len(panel.answer_requests()) == 2
    assert {p: p.read_bytes() for p in answer_notes(vault)} == first  # nothing lost
    failed = note.read_bytes()

    # the key is back an hour later: the failed run counts as tried, nothing is due
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    with DaemonProcess(vault, "--settle", "0.2",
                       env={"VAULTD_NOW": "2026-12-08T10:30:00Z"}) as daemon:
        daemon.wait_ready()
        marker_done(vault, "marker2.md")  # proof the daemon looked at the vault
        daemon.stop()
    assert len(panel.answer_requests()) == 2
    assert note.read_bytes() == failed

    # a period after the failed run: the next run goes ahead
    with DaemonProcess(vault, "--settle", "0.2",
                       env={"VAULTD_NOW": "2026-12-15T09:31:00Z"}) as daemon:
        daemon.wait_ready()
        wait_for(lambda: str(frontmatter(note)["run"]).startswith("2026-12-15T09:31")
                 and frontmatter(note)["status"] == "Done", what="the next period's run")
        daemon.stop()
    assert len(panel.answer_requests()) == 4
    assert "error" not in frontmatter(note)
    assert {p: p.read_bytes() for p in first} == first


def test_a_sync_conflict_copy_of_a_panel_note_is_never_run(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    """Syncthing's and Obsidian Sync's copies of a Pending panel note: left as they are,
    nothing asked, and the output says why."""
    Panel(api)
    (vault / "Queries").mkdir()
    names = ["Sezary.sync-conflict-20261202-143507-ABCDEFG.md",
             "Sezary (conflicted copy 2026-12-02 143507).md"]
    copies = {vault / "Queries" / n: panel_note() for n in names}
    for path, text in copies.items():
        path.write_text(text, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert api.message_requests() == []
    for path, text in copies.items():
        assert path.read_text(encoding="utf-8") == text
    assert "a conflict copy made by Syncthing" in ran.out, ran
    assert "a conflict copy made by a sync tool" in ran.out, ran
    assert not (vault / "Queries" / "Sezary").exists()


def test_status_lists_the_scheduled_notes_and_when_each_runs_next(
        vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Next run = the last run's start + `every`; never run: now; a conflict copy: not listed."""
    monkeypatch.setenv("VAULTD_NOW", "2026-12-05T12:00:00Z")
    ran_once = panel_note(status="Done").replace(
        "samples: 5\n", 'samples: 5\nevery: 7d\nrun: "2026-12-01T09:00:00Z"\n')
    write_panel(vault, ran_once)
    (vault / "Queries" / "Weekly.md").write_text(
        panel_note(status="Done").replace("samples: 5\n", "samples: 5\nevery: 12h\n"),
        encoding="utf-8")
    (vault / "Queries" / "Sezary.sync-conflict-20261202-143507-ABCDEFG.md").write_text(
        ran_once, encoding="utf-8")
    (vault / "Queries" / "Once.md").write_text(panel_note(status="Done"), encoding="utf-8")

    ran = run_cli("status", str(vault), capsys=capsys)

    assert ran.code == 0, ran
    scheduled = [line for line in ran.out.splitlines() if line.startswith("scheduled:")]
    assert scheduled == [
        "scheduled: Queries/Weekly.md every 12h, next run 2026-12-05 12:00 UTC",
        "scheduled: Queries/Sezary.md every 7d, next run 2026-12-08 09:00 UTC",
    ], ran.out


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("VAULTD_NOW", "next tuesday", "VAULTD_NOW: 'next tuesday' is not a time (e.g. "
     "2026-12-09T14:35:07Z)"),
    ("VAULTD_NOW", "2026-12-09T14:35:07", "VAULTD_NOW: '2026-12-09T14:35:07' has no time zone "
     "(end it with Z or +01:00)"),
    ("VAULTD_CLOCK_RATE", "0", "VAULTD_CLOCK_RATE: '0' is not a rate (a number above 0, such "
     "as 50400: a week in 12 seconds)"),
    ("VAULTD_CLOCK_RATE", "fast", "VAULTD_CLOCK_RATE: 'fast' is not a rate"),
])
def test_a_bad_clock_setting_is_a_clear_error_and_nothing_runs(
        vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        variable: str, value: str, message: str) -> None:
    note = write_panel(vault, panel_note())
    before = note.read_bytes()
    monkeypatch.setenv(variable, value)

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 2, ran
    assert message in ran.err, ran
    assert note.read_bytes() == before and not answer_notes(vault)
