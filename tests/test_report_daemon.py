"""The daemon's refresh of the report, as a real process on a real folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vaultd.daemon import REPORT_DELAY

from .conftest import run_cli
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI
from .notes import programmatic_note

REPORT = "vaultd report.md"
WROTE = "report: wrote vaultd report.md"


def test_the_daemon_refreshes_an_existing_report_once_per_burst(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("report", str(vault), capsys=capsys).code == 0
    report, base = vault / REPORT, vault / "vaultd.base"
    assert "[[a]]" not in report.read_text(encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        for name in ("a", "b", "c"):  # a burst
            (vault / f"{name}.md").write_text(programmatic_note(), encoding="utf-8")
        for name in ("a", "b", "c"):
            wait_for(note_says(vault / f"{name}.md", "Status: Done"), what=f"{name} done")
        finished = time.monotonic()
        wait_for(note_says(report, "| [[a]] | Done |", "| [[b]] | Done |", "| [[c]] | Done |"),
                 what="the report refreshed")
        assert time.monotonic() - finished >= REPORT_DELAY - 2  # debounced, not at once
        # the base is written just after the report: wait for it the same way
        wait_for(note_says(base, "note.eval_size"), what="the base refreshed")
        # Its own write must not set off another refresh: the report stays as it is.
        settled = [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in
                   (report, base)]
        time.sleep(REPORT_DELAY + 2)
        assert [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in
                (report, base)] == settled
        assert proc.stop() == 0
        log = proc.log()
    assert log.count(WROTE) == 1, log
    assert "vaultd report.md: done" not in log and "vaultd report.md: not" not in log
    assert "| 3 | 3 | 0 | 1 |" in report.read_text(encoding="utf-8")


def test_the_daemon_never_creates_a_report(vault: Path, api: FakeMessagesAPI) -> None:
    note = vault / "a.md"
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        note.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(note, "Status: Done"), what="a done")
        time.sleep(REPORT_DELAY + 1.5)
        assert proc.stop() == 0
    assert not (vault / REPORT).exists() and not (vault / "vaultd.base").exists()


def test_a_users_note_at_the_report_path_is_processed_and_never_overwritten(
    vault: Path, api: FakeMessagesAPI
) -> None:
    theirs = vault / REPORT
    theirs.write_text(programmatic_note(), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        wait_for(note_says(theirs, "Status: Done", "> 23\n> ```"), what="their note done")
        done = theirs.read_bytes()
        time.sleep(REPORT_DELAY + 1.5)
        assert proc.stop() == 0
        log = proc.log()
    assert theirs.read_bytes() == done
    assert WROTE not in log and not (vault / "vaultd.base").exists()
