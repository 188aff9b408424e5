"""The daemon's refresh of the report, as a real process on a real folder.

Nothing here waits a while and then looks: each check waits for the daemon's own word
(at debug level) that a refresh ran, or that the refresher was asked for one, and a
refresh that comes after the one at start can only have been asked by a note finishing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI
from .notes import programmatic_note

REPORT = "vaultd report.md"
WROTE = "report: wrote vaultd report.md"
NOTHING = "report: refreshed, nothing to write"
POKED = "vaultd-report: poked"


def wait_log(proc: DaemonProcess, needle: str, after: int = 0, what: str = "") -> int:
    """Wait until the daemon's log holds ``needle`` past offset ``after``; the offset of its
    end."""
    def check() -> int:
        at = proc.log().find(needle, after)
        return at + len(needle) if at >= 0 else 0
    try:
        return wait_for(check, what=what or needle)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; log:\n{proc.log()}") from None


def test_the_daemon_refreshes_an_existing_report_once_per_burst(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("report", str(vault), capsys=capsys).code == 0
    report, base = vault / REPORT, vault / "vaultd.base"
    assert "[[a]]" not in report.read_text(encoding="utf-8")
    # one worker: notes are looked at in the order their events came
    with DaemonProcess(vault, "--settle", "0.1", "--workers", "1", log_level="DEBUG") as proc:
        proc.wait_ready()
        start = wait_log(proc, f"{NOTHING} (vaultd report.md: unchanged, vaultd.base: "
                         "unchanged)", what="the refresh at start, with nothing new")
        for name in ("a", "b", "c"):  # a burst
            (vault / f"{name}.md").write_text(programmatic_note(), encoding="utf-8")
        for name in ("a", "b", "c"):
            wait_for(note_says(vault / f"{name}.md", "Status: Done"), what=f"{name} done")
        wrote = wait_log(proc, WROTE, start, what="the report refreshed")
        # both files are written before the daemon says so
        assert note_says(report, "| [[a]] | Done |", "| [[b]] | Done |", "| [[c]] | Done |")()
        assert note_says(base, "note.eval_size")()
        text = report.read_text(encoding="utf-8")
        # Its own writes must not ask for another refresh. A note made after them is looked
        # at after their file events: once it is done, any such ask would be in the log,
        # beside one for each note that finished (a, b, c and the marker).
        (vault / "marker.md").write_text(programmatic_note(), encoding="utf-8")
        marked = wait_log(proc, "marker.md: done", wrote, what="the marker done")
        log = proc.log()
        assert log[start:marked].count(POKED) == 4, log
        assert proc.stop() == 0
    assert log[:marked].count(WROTE) == 1, log  # one refresh for the burst
    assert "vaultd report.md: done" not in log and "vaultd report.md: not" not in log
    assert "| 3 | 3 | 0 | 1 |" in text


def test_the_daemon_never_creates_a_report(vault: Path, api: FakeMessagesAPI) -> None:
    note = vault / "a.md"
    with DaemonProcess(vault, "--settle", "0.1", log_level="DEBUG") as proc:
        proc.wait_ready()
        start = wait_log(proc, f"{NOTHING} (vaultd report.md: absent)",
                         what="the refresh at start")
        note.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(note, "Status: Done"), what="a done")
        wait_log(proc, f"{NOTHING} (vaultd report.md: absent)", start,
                 what="the refresh after a.md finished")
        assert proc.stop() == 0
    assert not (vault / REPORT).exists() and not (vault / "vaultd.base").exists()


def test_a_users_note_at_the_report_path_is_processed_and_never_overwritten(
    vault: Path, api: FakeMessagesAPI
) -> None:
    theirs = vault / REPORT
    theirs.write_text(programmatic_note(status="Draft"), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", log_level="DEBUG") as proc:
        proc.wait_ready()
        start = wait_log(proc, f"{NOTHING} (vaultd report.md: not_ours)",
                         what="the refresh at start")
        theirs.write_text(programmatic_note(), encoding="utf-8")  # now Pending
        wait_for(note_says(theirs, "Status: Done", "> 23\n> ```"), what="their note done")
        done = theirs.read_bytes()
        wait_log(proc, f"{NOTHING} (vaultd report.md: not_ours)", start,
                 what="the refresh after their note finished")
        assert proc.stop() == 0
        log = proc.log()
    assert theirs.read_bytes() == done
    assert WROTE not in log and not (vault / "vaultd.base").exists()
