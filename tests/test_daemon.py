"""The daemon, as a real process on a real folder watched by the real watchdog."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultd.runs.systemd import render_template

from .conftest import ROOT, run_cli
from .daemonproc import DaemonProcess, marker_done, note_says, wait_for
from .fakeapi import FakeMessagesAPI, Reply, held
from .notes import SEED, SEED_REPLIES, note_with_measures, programmatic_note

DONE = "Status: Done"


def _seed_daemon(vault: Path, api: FakeMessagesAPI, *args: str) -> DaemonProcess:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    return DaemonProcess(vault, "--settle", "0.2", *args)


@pytest.fixture
def daemon(vault: Path, api: FakeMessagesAPI) -> Iterator[DaemonProcess]:
    with _seed_daemon(vault, api) as proc:
        proc.wait_ready()
        yield proc


@pytest.fixture
def one_worker(vault: Path, api: FakeMessagesAPI) -> Iterator[DaemonProcess]:
    """The daemon looking at one note at a time, so that a marker note proves how far it
    got (see :func:`marker_done`)."""
    with _seed_daemon(vault, api, "--workers", "1") as proc:
        proc.wait_ready()
        yield proc


def test_start_up_scan_runs_pending_and_interrupted_notes(
    vault: Path, api: FakeMessagesAPI
) -> None:
    (vault / "a.md").write_text(programmatic_note(), encoding="utf-8")
    (vault / "deep" / "er").mkdir(parents=True)
    (vault / "deep" / "er" / "b.md").write_text(programmatic_note(status="Processing"),
                                               encoding="utf-8")
    (vault / "draft.md").write_text(programmatic_note(status="Draft"), encoding="utf-8")
    draft = (vault / "draft.md").read_bytes()
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        wait_for(note_says(vault / "a.md", DONE, "> 23\n> ```"), what="a.md done")
        wait_for(note_says(vault / "deep" / "er" / "b.md", DONE), what="b.md done")
        assert proc.stop() == 0
    assert (vault / "draft.md").read_bytes() == draft


def test_obsidian_style_edit_to_pending(vault: Path, one_worker: DaemonProcess) -> None:
    note = vault / "n.md"
    note.write_text(programmatic_note(status="Draft"), encoding="utf-8")
    draft = note.read_bytes()
    marker_done(vault)  # the daemon has seen the file and left it: it is not pending
    assert note.read_bytes() == draft
    with note.open("r+", encoding="utf-8") as handle:  # in place, as Obsidian saves
        text = handle.read().replace("Status: Draft", "Status: Pending")
        handle.seek(0)
        handle.write(text)
        handle.truncate()
    wait_for(note_says(note, DONE, "> 23\n> ```"), what="the note done")


def test_file_written_in_two_halves(vault: Path, daemon: DaemonProcess) -> None:
    data = SEED.encode("utf-8")
    note = vault / "copied.md"
    with note.open("wb") as handle:  # cp of a large file: two writes with a pause
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(0.1)
        handle.write(data[len(data) // 2 :])
    wait_for(note_says(note, DONE, "> Poteligeo\n> ```"), what="the copied note done")
    text = note.read_text(encoding="utf-8")
    assert text.count("> [!evaluation]") == 4 and "[!error]" not in text


def test_moved_in_file_and_folder(vault: Path, daemon: DaemonProcess, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "moved.md").write_text(programmatic_note(), encoding="utf-8")
    os.rename(outside / "moved.md", vault / "moved.md")  # as a sync tool does
    folder = tmp_path / "folder"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "x.md").write_text(programmatic_note(), encoding="utf-8")
    os.rename(folder, vault / "folder")
    wait_for(note_says(vault / "moved.md", DONE), what="moved.md done")
    wait_for(note_says(vault / "folder" / "inner" / "x.md", DONE), what="folder note done")


def test_ignored_places_and_reads(vault: Path, one_worker: DaemonProcess,
                                  api: FakeMessagesAPI) -> None:
    (vault / ".trash").mkdir()
    hidden = vault / ".trash" / "n.md"
    hidden.write_text(programmatic_note(), encoding="utf-8")
    text_file = vault / "n.txt"
    text_file.write_text(programmatic_note(), encoding="utf-8")
    seed = vault / "seed.md"
    seed.write_text(SEED, encoding="utf-8")
    wait_for(note_says(seed, DONE), what="the seed done")
    requests = len(api.message_requests())
    done_bytes = seed.read_bytes()
    mtime = seed.stat().st_mtime_ns
    for _ in range(20):  # Obsidian, Dataview, a sync client: they read and read
        seed.read_bytes()
        time.sleep(0.05)  # spread over more than the settle time (pacing, not a wait)
    marker_done(vault)  # the daemon has dealt with the events of every read
    assert seed.read_bytes() == done_bytes and seed.stat().st_mtime_ns == mtime
    assert len(api.message_requests()) == requests == 2
    assert hidden.read_text(encoding="utf-8") == programmatic_note()
    assert text_file.read_text(encoding="utf-8") == programmatic_note()


def test_results_fill_in_live(vault: Path, api: FakeMessagesAPI) -> None:
    api.rule("FAST", '"quick"')
    api.rule("SLOW", Reply(text='"late"', delay=3.0))
    note = vault / "live.md"
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        note.write_text(note_with_measures([
            "* ---", "  * id: fast", "  * type: ai", "  * prompt: FAST",
            "* ---", "  * id: slow", "  * type: ai", "  * prompt: SLOW",
        ]), encoding="utf-8")
        wait_for(note_says(note, "Status: Processing", "> quick\n> ```"), what="first result")
        assert "late" not in note.read_text(encoding="utf-8")
        wait_for(note_says(note, DONE, "> late\n> ```"), what="second result")
        assert proc.stop() == 0


def test_user_edit_during_a_run_is_kept(vault: Path, api: FakeMessagesAPI) -> None:
    api.rule("SLOW", Reply(text='"late"', delay=2.0))
    note = vault / "n.md"
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        note.write_text(note_with_measures(["* ---", "  * id: slow", "  * type: ai",
                                            "  * prompt: SLOW"]), encoding="utf-8")
        assert api.wait_for_requests(1, timeout=60)
        text = note.read_text(encoding="utf-8")
        note.write_text(text + "\nA line I typed while it ran.\n", encoding="utf-8")
        wait_for(note_says(note, DONE, "> late\n> ```"), what="done")
        assert "\nA line I typed while it ran.\n" in note.read_text(encoding="utf-8")
        assert proc.stop() == 0
    assert len(api.message_requests()) == 1


def test_sigterm_leaves_unfinished_notes_pending_and_restart_finishes(
    vault: Path, api: FakeMessagesAPI
) -> None:
    api.rule("SLOW", Reply(text='"late"', delay=30.0))
    note = vault / "n.md"
    note.write_text(note_with_measures(["* ---", "  * id: slow", "  * type: ai",
                                        "  * prompt: SLOW"]), encoding="utf-8")
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        assert api.wait_for_requests(1, timeout=60)
        assert proc.stop(timeout=15) == 0  # well before the 30 s reply
    assert "Status: Pending" in note.read_text(encoding="utf-8")
    api.clear_rules()
    api.rule("SLOW", '"now"')
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        wait_for(note_says(note, DONE, "> now\n> ```"), what="done after restart")
        assert proc.stop() == 0


def test_kill_9_mid_run_and_restart_leaves_every_note_whole(
    vault: Path, api: FakeMessagesAPI
) -> None:
    api.rule("SLOW", Reply(text='"late"', delay=1.0))
    for number in range(6):
        (vault / f"n{number}.md").write_text(
            note_with_measures(["* ---", "  * id: slow", "  * type: ai", "  * prompt: SLOW",
                                "* ---", "  * id: js", "  * type: programmatic",
                                "  * logic: return 7"],
                               answer=f"Answer number {number}."), encoding="utf-8")
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        assert api.wait_for_requests(2, timeout=60)  # distinct answers: one request per note
        proc.stop(signal.SIGKILL)
    for number in range(6):
        text = (vault / f"n{number}.md").read_text(encoding="utf-8")
        assert text.startswith("---\nStatus: ") and "> [!measures]" in text
    api.clear_rules()
    api.rule("SLOW", '"late"')  # the same reply, whether the cache kept one or not
    with DaemonProcess(vault) as proc:
        proc.wait_ready()
        for number in range(6):
            wait_for(note_says(vault / f"n{number}.md", DONE, "> late\n> ```", "> 7\n> ```"),
                     what=f"n{number} done")
        assert proc.stop() == 0
    for number in range(6):
        text = (vault / f"n{number}.md").read_text(encoding="utf-8")
        assert text.count("> [!evaluation]") == 2


def test_note_deleted_while_it_runs_is_not_recreated(vault: Path, api: FakeMessagesAPI) -> None:
    api.rule("SLOW", '"late"')
    release = threading.Event()
    api.responder = held(api.match_rules, release)  # the reply waits until it is deleted
    note = vault / "n.md"
    note.write_text(note_with_measures(["* ---", "  * id: slow", "  * type: ai",
                                        "  * prompt: SLOW"]), encoding="utf-8")
    with DaemonProcess(vault, "--workers", "1") as proc:
        try:
            proc.wait_ready()
            assert api.wait_for_requests(1, timeout=60)
            note.unlink()
        finally:
            release.set()
        marker_done(vault)  # one note at a time: the deleted note's run has ended
        assert not note.exists()
        assert proc.proc.poll() is None
        assert proc.stop() == 0


def test_status_counts_notes_and_sees_the_daemon(
    vault: Path, daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    (vault / "a.md").write_text(programmatic_note(), encoding="utf-8")
    (vault / "b.md").write_text(programmatic_note(logic="return input.nope.nope;"),
                                encoding="utf-8")
    wait_for(note_says(vault / "a.md", DONE), what="a done")
    wait_for(note_says(vault / "b.md", "Status: Error"), what="b error")
    daemon.proc.send_signal(signal.SIGSTOP)  # hold it still while we count
    try:
        (vault / "d.md").write_text(programmatic_note(), encoding="utf-8")
        ran = run_cli("status", str(vault), capsys=capsys)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    lines = ran.out.splitlines()
    assert lines[0] == "1 pending, 0 processing, 1 done, 1 error"
    assert lines[1].startswith(f"daemon: running (pid {daemon.proc.pid})")
    assert lines[2] == "last errors:"
    assert lines[3].startswith("  b.md: 1 of 1 measures did not succeed; size: TypeError")


def test_unit_files_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package")
    units = tmp_path / "units"
    units.mkdir()
    exec_start = f"{sys.executable} -m vaultd"
    template = (ROOT / "systemd" / "vaultd@.service").read_text(encoding="utf-8")
    assert template == render_template().replace(exec_start, "%h/.local/bin/vaultd")
    (units / "vaultd@tmp-vault.service").write_text(render_template(), encoding="utf-8")
    single = (ROOT / "systemd" / "vaultd.service").read_text(encoding="utf-8")
    (units / "vaultd.service").write_text(single.replace("%h/.local/bin/vaultd", exec_start),
                                          encoding="utf-8")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for unit in ("vaultd@tmp-vault.service", "vaultd.service"):
        done = subprocess.run(
            ["systemd-analyze", "verify", "--user", str(units / unit)],
            capture_output=True, text=True, check=False,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        )
        assert done.returncode == 0, done.stderr
        assert "vaultd" not in done.stderr, done.stderr


def test_service_install_writes_the_unit(vault: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ran = run_cli("service", "install", str(vault), "--unit-dir", str(tmp_path / "u"),
                  "--no-start", capsys=capsys)
    assert ran.code == 0
    unit = tmp_path / "u" / "vaultd@.service"
    assert unit.read_text(encoding="utf-8") == render_template()
    escaped = subprocess.run(["systemd-escape", "--path", str(vault)], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert ran.out.splitlines() == [
        f"wrote {unit}",
        f"to start it: systemctl --user enable --now 'vaultd@{escaped}.service'",
    ]
