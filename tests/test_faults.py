"""Faults while writing and faults from the model API, on real files, a real daemon process,
real watchdog and the real SDK against the loopback API.

Each fault must leave the note whole (compared byte for byte), the daemon running, and a
clear ``file: message`` in its log or the note; the daemon then tries again or says it gave
up. The disk really fills (a small tmpfs), permissions really refuse (the daemon runs
without the capabilities that let root ignore them), the crash is a real process exit.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultd.edges.writer import CRASH_POINTS, Writer, _encode_entry
from vaultd.errors import WriteError

from .conftest import run_cli
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI, Reply
from .notes import note_with_measures, programmatic_note
from .privileges import (
    PAGE,
    fill,
    free_pages,
    ignores_permissions,
    obeying_permissions,
    small_disk,
)

DONE = "Status: Done"
JS_DONE = "> 23\n> ```"  # the programmatic note's result: the answer's length
FAST_RETRY = {"VAULTD_WRITE_RETRY": "0.3"}
SLOW_AI = ["* ---", "  * id: slow", "  * type: ai", "  * prompt: SLOW"]


def journal_entries(vault: Path) -> list[bytes]:
    """The new text of every write the journal holds (empty slots are free ones)."""
    found = []
    for entry in sorted((vault / ".vaultd" / "journal").iterdir()):
        if entry.stat().st_size:
            found.append(base64.b64decode(json.loads(entry.read_bytes())["new"]))
    return found


def rewrite_in_place(path: Path, text: str) -> None:
    """As an editor saves: same file, new bytes from offset 0, then truncate."""
    with path.open("r+b") as handle:
        handle.write(text.encode("utf-8"))
        handle.truncate()


def log_says(proc: DaemonProcess, *needles: str) -> bool:
    text = proc.log()
    return all(needle in text for needle in needles)


def still_works(proc: DaemonProcess, vault: Path) -> None:
    """The daemon is alive and still processes a new note."""
    assert proc.proc.poll() is None, proc.log()
    probe = vault / "probe.md"
    probe.write_text(programmatic_note(), encoding="utf-8")
    wait_for(note_says(probe, DONE, JS_DONE), what="a new note done after the fault")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", 2 * 1024 * 1024) as where:
        yield where


# -- faults while writing -------------------------------------------------------------------


def test_disk_full_leaves_the_note_whole_and_the_write_is_retried(
    disk: Path, api: FakeMessagesAPI
) -> None:
    vault = disk / "vault"
    vault.mkdir()
    note = vault / "n.md"
    draft = programmatic_note(status="Draft  ")  # as long as "Pending": no new block needed
    note.write_text(draft, encoding="utf-8")
    pending = draft.replace("Status: Draft  ", "Status: Pending", 1)
    with DaemonProcess(vault, "--settle", "0.1", env=FAST_RETRY) as proc:
        proc.wait_ready()
        fill(disk / "filler")
        rewrite_in_place(note, pending)
        wait_for(lambda: log_says(proc, "(try 3 of 8)"), what="two failed tries")
        assert note.read_bytes() == pending.encode("utf-8")
        assert log_says(
            proc,
            f"n.md: error: could not write the note: {note}: cannot write the journal in "
            f"{vault}/.vaultd/journal: No space left on device",
            "n.md: will try again in 0.3 s (try 2 of 8)",
        )
        assert proc.proc.poll() is None
        (disk / "filler").unlink()
        wait_for(note_says(note, DONE, JS_DONE), what="the note done once there is room")
        wait_for(lambda: journal_entries(vault) == [], what="the journal cleared")
        still_works(proc, vault)
        assert proc.stop() == 0


def test_disk_full_mid_run_keeps_the_note_processing_and_it_is_run_again(
    disk: Path, api: FakeMessagesAPI
) -> None:
    api.rule("SLOW", Reply(text='"late"', delay=1.5))
    vault = disk / "vault"
    vault.mkdir()
    note = vault / "n.md"
    original = note_with_measures(SLOW_AI)
    note.write_text(original, encoding="utf-8")
    processing = original.replace("Status: Pending", "Status: Processing", 1).encode("utf-8")
    with DaemonProcess(vault, "--settle", "0.1", env=FAST_RETRY) as proc:
        proc.wait_ready()
        assert api.wait_for_requests(1, timeout=60)  # running: Processing is on disk
        fill(disk / "filler")  # the disk fills while the model thinks
        wait_for(lambda: log_says(proc, "(try 2 of 8)"), what="the final write failing")
        assert note.read_bytes() == processing  # whole: the last version vaultd wrote
        assert log_says(proc, f"n.md: error: could not write the note: {note}: cannot write "
                              "the journal in ", ": No space left on device")
        (disk / "filler").unlink()
        wait_for(note_says(note, DONE, "> late\n> ```"), what="the note done once there is room")
        assert note.read_text(encoding="utf-8").count("[!evaluation]") == 1
        assert proc.stop() == 0


def test_disk_full_mid_write_puts_the_old_bytes_back(disk: Path) -> None:
    """The journal entry fits, the note's growth does not: the in-place write fails half way
    and the writer restores the old bytes (in the blocks the note already had)."""
    vault = disk / "vault"
    (vault / ".vaultd" / "journal").mkdir(parents=True)
    note = vault / "n.md"
    old = ("---\nStatus: Pending\n---\n" + "old line ✓\n" * 300).encode("utf-8")
    new = ("---\nStatus: Done\n---\n" + "new line ✓✓\n" * 900).encode("utf-8")
    note.write_bytes(old)
    journal_pages = -(-len(_encode_entry("n.md", old, new)) // PAGE)
    fill(disk / "filler", leave=journal_pages)
    assert free_pages(disk) == journal_pages
    with pytest.raises(WriteError) as info:
        Writer(vault).write(note, old, new)
    assert str(info.value) == f"{note}: No space left on device"
    assert info.value.transient
    assert note.read_bytes() == old
    assert journal_entries(vault) == []
    (disk / "filler").unlink()
    Writer(vault).write(note, old, new)
    assert note.read_bytes() == new


def test_permission_denied_on_the_note(vault: Path, api: FakeMessagesAPI) -> None:
    note = vault / "n.md"
    original = programmatic_note()
    note.write_text(original, encoding="utf-8")
    note.chmod(0o444)
    hidden = vault / "unreadable.md"
    hidden.write_text(original, encoding="utf-8")
    hidden.chmod(0o000)
    with DaemonProcess(vault, "--settle", "0.1", env=FAST_RETRY,
                       prefix=obeying_permissions()) as proc:
        proc.wait_ready()
        assert not ignores_permissions(proc.proc.pid)
        wait_for(lambda: log_says(proc, "(try 2 of 8)"), what="a failed write")
        assert log_says(proc, f"n.md: error: could not write the note: {note}: "
                              "Permission denied")
        assert note.read_bytes() == original.encode("utf-8")
        assert log_says(proc, "unreadable.md: cannot read: Permission denied")
        hidden.chmod(0o600)  # the user fixes this one too
        wait_for(note_says(hidden, DONE, JS_DONE), what="the unreadable note done")
        assert proc.proc.poll() is None
        note.chmod(0o644)  # the user fixes it: the change of mode is an event, too
        wait_for(note_says(note, DONE, JS_DONE), what="the note done once writable")
        still_works(proc, vault)
        assert proc.stop() == 0


def test_journal_folder_unwritable(vault: Path, api: FakeMessagesAPI) -> None:
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True, mode=0o700)
    journal.chmod(0o500)
    note = vault / "n.md"
    original = programmatic_note()
    note.write_text(original, encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", env=FAST_RETRY,
                       prefix=obeying_permissions()) as proc:
        proc.wait_ready()
        wait_for(lambda: log_says(proc, "(try 3 of 8)"), what="two failed writes")
        assert log_says(proc, f"n.md: error: could not write the note: {note}: cannot write "
                              f"the journal in {journal}: Permission denied")
        assert note.read_bytes() == original.encode("utf-8")
        assert proc.proc.poll() is None
        journal.chmod(0o700)  # nothing happens to the note: only the retry finds out
        wait_for(note_says(note, DONE, JS_DONE), what="the note done once the journal works")
        wait_for(lambda: journal_entries(vault) == [], what="the journal cleared")
        assert proc.stop() == 0


def test_a_write_that_keeps_failing_is_given_up_clearly(
    vault: Path, api: FakeMessagesAPI
) -> None:
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True, mode=0o500)
    note = vault / "n.md"
    note.write_text(programmatic_note(), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", env={"VAULTD_WRITE_RETRY": "0.05"},
                       prefix=obeying_permissions()) as proc:
        proc.wait_ready()
        wait_for(lambda: log_says(proc, "n.md: gave up after 8 tries to write it; it is "
                                        "tried again when it changes or when vaultd starts"),
                 what="the daemon giving up")
        assert note.read_text(encoding="utf-8") == programmatic_note()
        assert proc.proc.poll() is None
        journal.chmod(0o700)
        rewrite_in_place(note, programmatic_note())  # a change: it is tried again
        wait_for(note_says(note, DONE, JS_DONE), what="the note done after a change")
        assert proc.stop() == 0


@pytest.mark.parametrize("fault", ["deleted", "renamed", "folder"])
def test_note_taken_away_mid_run(vault: Path, api: FakeMessagesAPI, tmp_path: Path,
                                 fault: str) -> None:
    api.rule("SLOW", Reply(text='"late"', delay=1.5))
    note = vault / "n.md"
    original = note_with_measures(SLOW_AI)
    note.write_text(original, encoding="utf-8")
    processing = original.replace("Status: Pending", "Status: Processing", 1).encode("utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        assert api.wait_for_requests(1, timeout=60)  # it runs: Processing is on disk
        assert note.read_bytes() == processing
        if fault == "deleted":
            note.unlink()
            expected = "n.md: the note vanished while it ran"
        elif fault == "renamed":
            note.rename(vault / "renamed.md")
            expected = "n.md: the note vanished while it ran"
        else:
            saved = tmp_path / "saved.md"
            shutil.move(note, saved)
            note.mkdir()
            expected = f"n.md: error: could not write the note: {note}: not a regular file"
        wait_for(lambda: log_says(proc, expected), what=expected)
        if fault == "renamed":  # the note under its new name is run to the end
            renamed = vault / "renamed.md"
            wait_for(note_says(renamed, DONE, "> late\n> ```"), what="renamed note done")
            assert renamed.read_text(encoding="utf-8").count("[!evaluation]") == 1
        elif fault == "folder":
            assert note.is_dir() and list(note.iterdir()) == []
            assert saved.read_bytes() == processing
        if fault != "folder":
            assert not note.exists()  # never recreated
        still_works(proc, vault)
        assert not note.exists() or note.is_dir()
        assert proc.stop() == 0


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_daemon_crash_mid_write_then_restart_finishes_the_note(
    vault: Path, api: FakeMessagesAPI, point: str
) -> None:
    note = vault / "n.md"
    original = programmatic_note()
    note.write_text(original, encoding="utf-8")
    processing = original.replace("Status: Pending", "Status: Processing", 1).encode("utf-8")
    with DaemonProcess(vault, env={"VAULTD_CRASH_AT": point}) as proc:
        assert proc.proc.wait(60) == 70, proc.log()  # died writing "Processing"
    on_disk = note.read_bytes()
    if point == "after_journal":
        assert on_disk == original.encode("utf-8")
    elif point in ("before_truncate", "before_clear"):  # the new text is the longer one
        assert on_disk == processing
    else:  # a real torn note: part new, part old
        assert on_disk not in (original.encode("utf-8"), processing)
    assert len(journal_entries(vault)) == 1
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        wait_for(note_says(note, DONE, JS_DONE), what="the note done after the restart")
        assert log_says(proc, f"journal: {note}: ")
        assert proc.stop() == 0
    text = note.read_text(encoding="utf-8")
    assert text.count("[!evaluation]") == 1 and text.startswith("---\nStatus: Done\n")
    assert journal_entries(vault) == []


def test_a_failed_restore_is_completed_before_the_next_write(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double fault: the write fails half way and so does putting the old bytes back (the
    one fault here that needs a patched ``os.pwrite``: a real EIO needs a failing device).
    The torn note's journal entry is kept, and the next write completes it first instead of
    overwriting the entry with one made from the torn text."""
    old = ("---\nStatus: Pending\n---\n" + "old ✓\n" * 2000).encode("utf-8")
    new = ("---\nStatus: Processing\n---\n" + "new ✓✓\n" * 2000).encode("utf-8")
    note = vault / "note.md"
    note.write_bytes(old)
    real = os.pwrite
    calls = 0

    def failing(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        if os.readlink(f"/proc/self/fd/{fd}").endswith("note.md"):
            calls += 1
            if calls == 1:
                return real(fd, bytes(data[:PAGE]), offset)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, data, offset)

    writer = Writer(vault)
    other = vault / "other.md"
    other.write_bytes(old)
    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(WriteError) as info:
        writer.write(note, old, new)
    assert str(info.value) == f"{note}: Input/output error" and info.value.transient
    torn = note.read_bytes()
    assert torn == new[:PAGE] + old[PAGE:]
    monkeypatch.undo()
    writer.write(other, old, b"other")  # another note's write must not take the held slot
    assert journal_entries(vault) == [new]
    # the daemon's retry of the note: it still expects the old bytes
    with pytest.raises(WriteError) as conflict:
        writer.write(note, old, b"anything")
    assert getattr(conflict.value, "current", None) == new
    assert note.read_bytes() == new
    assert journal_entries(vault) == []
    writer.write(note, new, b"and on")
    assert note.read_bytes() == b"and on"


# -- faults from the model API --------------------------------------------------------------

MODEL_FAULTS = {
    # prompt: (how the API answers, the measure's result line in the note)
    "RESET": (Reply(text="a reply that never arrives whole " * 20, cut=40),
              "Error: cannot reach the model API at {url}: connection reset by peer — gave up "
              "after 2 attempts"),
    "NOTJSON": (Reply(body=b'{"id": "msg_01", "content": [{"type": "te'),
                "Error: the model API sent a malformed reply: the body is not JSON"),
    "SHAPE": (Reply(body={"type": "message", "content": "not a list"}),
              "Error: the model API sent a malformed reply: not a message (no content list)"),
    "HTML": (Reply(body=b"<html>502 Bad Gateway</html>", headers={"content-type": "text/html"}),
             "Error: the model API sent a malformed reply: not a message (no content list)"),
    "CUTOFF": (Reply(text='{"response": ["Potel', stop_reason="max_tokens"),
               "Error: the reply was cut off at max_tokens (1024); raise max_tokens"),
    "EMPTY": (Reply(text=""), "Error: the model returned an empty reply"),
    "NOBLOCKS": (Reply(body={"id": "msg_01", "type": "message", "role": "assistant",
                             "model": "m", "content": [], "stop_reason": "end_turn",
                             "usage": {"input_tokens": 1, "output_tokens": 0}}),
                 "Error: the model returned an empty reply"),
    "REFUSE": (Reply(text="", stop_reason="refusal"), "Error: the model declined to answer"),
}


def test_model_faults_are_measure_errors(vault: Path, api: FakeMessagesAPI,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "1")
    lines: list[str] = []
    for prompt, (reply, _) in MODEL_FAULTS.items():
        api.rule(prompt, reply)
        lines += ["* ---", f"  * id: {prompt.lower()}", "  * type: ai", f"  * prompt: {prompt}"]
    lines += ["* ---", "  * id: fine", "  * type: programmatic", "  * logic: return 1"]
    note = vault / "n.md"
    original = note_with_measures(lines)
    note.write_text(original, encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    assert ran.out.splitlines()[0].startswith("error      n.md: 8 of 9 measures did not succeed")
    text = note.read_text(encoding="utf-8")
    results = [block.split("\n> ```")[0] for block in text.split("evaluation-result-text\n> ")[1:]]
    assert results == [line.format(url=api.url) for _, line in MODEL_FAULTS.values()] + ["1"]
    assert text.startswith(original.replace("Status: Pending", "Status: Error", 1).split(
        "\n---\n")[0].split("\n")[0])
    assert text.split("\n---\n", 1)[1].startswith(original.split("\n---\n", 1)[1])
    assert len(api.message_requests()) == len(MODEL_FAULTS) + 1  # RESET was tried twice


def test_connection_refused_leaves_the_note_waiting(vault: Path, api: FakeMessagesAPI,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Not the note's failure: it stays as it was, and the run says why (issue 11, item 7)."""
    url = api.url
    api.close()  # nothing listens on the port any more
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "1")
    note = vault / "n.md"
    original = note_with_measures(["* ---", "  * id: a", "  * type: ai", "  * prompt: A"])
    note.write_text(original, encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 1
    assert note.read_text(encoding="utf-8") == original
    assert (f"waiting    n.md: cannot reach the model API at {url}: connection refused — gave "
            "up after 2 attempts\n") in ran.out


@pytest.mark.parametrize(("reply", "why"), [
    (Reply(text="The answer, cut off in the mid", stop_reason="max_tokens"),
     "the reply was cut off at answer_max_tokens (4096); raise answer_max_tokens"),
    (Reply(body=b"{not json"), "the model API sent a malformed reply: the body is not JSON"),
    (Reply(text="  \n"), "the model returned an empty reply"),
], ids=["max_tokens", "malformed", "empty"])
def test_a_generated_answer_that_fails_is_not_written(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str], reply: Reply, why: str
) -> None:
    api.default = reply
    note = vault / "q.md"
    original = ("---\nStatus: Pending\n---\n\n> [!query]\n> ```query-text\n> Which drugs?\n"
                "> ```\n\n> [!measures]\n> ```measures-md\n> * ---\n>   * id: n\n"
                ">   * type: programmatic\n>   * logic: return input.length\n> ```\n")
    note.write_text(original, encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 1
    assert ran.out.splitlines()[0] == f"error      q.md: could not generate the answer: {why}"
    text = note.read_text(encoding="utf-8")
    assert "[!answer]" not in text and "cut off in the mid" not in text
    assert "> Skipped: input `answer` failed\n" in text


def test_a_malformed_reply_leaves_the_daemon_running(vault: Path, api: FakeMessagesAPI) -> None:
    api.default = Reply(body=b"\x00\xff garbage")
    note = vault / "n.md"
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        note.write_text(note_with_measures(["* ---", "  * id: a", "  * type: ai",
                                            "  * prompt: A"]), encoding="utf-8")
        wait_for(note_says(note, "Status: Error", "> Error: the model API sent a malformed "
                                                  "reply: the body is not JSON\n"),
                 what="the measure error")
        assert "unexpected failure" not in proc.log() and "Traceback" not in proc.log()
        still_works(proc, vault)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(60) == 0
