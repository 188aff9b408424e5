"""Promises of the daemon that only a running one can show, each waited for on proof
(a held reply let through, a marker note done, datagrams counted), never on a sleep:
a Status the user changes mid-run is left alone, a JavaScript worker that dies is
replaced, and systemd's watchdog is pinged."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from .daemonproc import DaemonProcess, marker_done, note_says, wait_for
from .fakeapi import FakeMessagesAPI, held
from .notes import note_with_measures, programmatic_note

SLOW_NOTE = note_with_measures(["* ---", "  * id: slow", "  * type: ai", "  * prompt: SLOW"])


def test_a_status_changed_to_draft_mid_run_is_left_alone(
    vault: Path, api: FakeMessagesAPI
) -> None:
    api.rule("SLOW", '"late"')
    release = threading.Event()
    api.responder = held(api.match_rules, release)  # the reply waits for the user's edit
    note = vault / "n.md"
    note.write_text(SLOW_NOTE, encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", "--workers", "1") as proc:
        try:
            proc.wait_ready()
            assert api.wait_for_requests(1, timeout=60)  # mid-run: its request is out
            assert note_says(note, "Status: Processing")()  # written before the request
            with note.open("r+", encoding="utf-8") as handle:  # in place, as Obsidian saves
                text = handle.read().replace("Status: Processing", "Status: Draft")
                handle.seek(0)
                handle.write(text + "\nNot ready after all.\n")
                handle.truncate()
            mine = note.read_bytes()
        finally:
            release.set()
        marker_done(vault)  # one note at a time: the run that got the reply has ended
        assert note.read_bytes() == mine
        assert proc.stop() == 0
    assert note.read_bytes() == mine
    assert len(api.message_requests()) == 1  # answered once, not started over


def test_a_killed_javascript_worker_is_replaced(vault: Path, api: FakeMessagesAPI) -> None:
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        first = vault / "first.md"
        first.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(first, "Status: Done", "> 23\n> ```"), what="the first note done")
        workers = sandbox_workers(proc.proc.pid)
        assert workers, "no JavaScript worker is running"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in workers), what="the workers dead")
        second = vault / "second.md"
        second.write_text(programmatic_note(answer="A new note."), encoding="utf-8")
        wait_for(lambda: note_says(second, "Status: Done")()
                 or note_says(second, "Status: Error")(), what="the second note finished")
        text = second.read_text(encoding="utf-8")
        assert "Status: Done" in text and "> 11\n> ```" in text, text
        replaced = sandbox_workers(proc.proc.pid)
        assert replaced and not set(replaced) & set(workers)
        assert proc.stop() == 0


def test_the_systemd_watchdog_is_pinged_while_notes_run(
    vault: Path, api: FakeMessagesAPI
) -> None:
    api.rule("SLOW", '"late"')
    release = threading.Event()
    api.responder = held(api.match_rules, release)  # busy for as long as the test likes
    note = vault / "n.md"
    note.write_text(SLOW_NOTE, encoding="utf-8")
    # systemd sets WATCHDOG_USEC from WatchdogSec=; 1 s asks for a ping every half second
    with DaemonProcess(vault, env={"WATCHDOG_USEC": "1000000"}) as proc:
        try:
            proc.wait_ready()
            assert api.wait_for_requests(1, timeout=60)
            pinged = proc.messages.count("WATCHDOG=1")
            proc.wait_message("WATCHDOG=1", count=pinged + 3)  # and again, while it waits
        finally:
            release.set()
        wait_for(note_says(note, "Status: Done", "> late\n> ```"), what="the note done")
        assert proc.stop() == 0


def sandbox_workers(pid: int) -> list[int]:
    """The JavaScript worker processes among ``pid``'s children, alive (not zombies)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, parent = fields[0], int(fields[1])
        if parent == pid and state != "Z" and b"vaultd.edges._sandbox_child" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs still (a zombie does not: it is dead, only not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
