"""The vault's edges, with a real daemon and real watchdog: symbolic links (never followed,
never written through), odd file names, deep folders, and file events the OS drops (a real
inotify queue overflow)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .conftest import run_cli
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI
from .notes import programmatic_note

DONE = "Status: Done"
JS_DONE = "> 23\n> ```"


def test_symbolic_links_are_never_followed_nor_written_through(
    vault: Path, tmp_path: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    secret = outside / "secret.md"
    secret.write_text(programmatic_note(), encoding="utf-8")
    (outside / "folder" / "n.md").write_text(programmatic_note(), encoding="utf-8")
    outside_before = {p: (p.read_bytes(), p.stat().st_mtime_ns)
                      for p in outside.rglob("*") if p.is_file()}
    (vault / "inside").mkdir()
    real = vault / "inside" / "real.md"
    real.write_text(programmatic_note(), encoding="utf-8")
    (vault / "early-link.md").symlink_to(secret)  # there before the daemon starts
    (vault / "early-folder").symlink_to(outside / "folder")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        (vault / "late-link.md").symlink_to(secret)  # and made while it watches
        (vault / "late-folder").symlink_to(outside / "folder")
        (vault / "alias.md").symlink_to("inside/real.md")  # inside the vault
        (vault / "alias-folder").symlink_to("inside")
        wait_for(note_says(real, DONE, JS_DONE), what="the real note done")
        marker = vault / "marker.md"  # a note after the links: once done, they were seen
        marker.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(marker, DONE), what="the marker done")
        # and touching what the links point at, through the links, changes nothing
        os.utime(vault / "late-link.md", follow_symlinks=False)
        (vault / "late-folder" / "n.md").write_text(programmatic_note(), encoding="utf-8")
        marker.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(marker, DONE), what="the marker done again")
        assert proc.stop() == 0
        log = proc.log()
    ran = run_cli("run", str(vault), "--once", capsys=capsys)  # the one-shot run, too
    assert ran.code == 0 and ran.out.splitlines() == ["vaultd: 0 notes processed"]
    for path, (data, _) in outside_before.items():
        assert path.read_bytes() == data, path
    assert secret.stat().st_mtime_ns == outside_before[secret][1]
    for name in ("early-link.md", "late-link.md", "alias.md", "early-folder", "late-folder",
                 "alias-folder"):
        assert (vault / name).is_symlink(), name
    assert real.read_text(encoding="utf-8").count("[!evaluation]") == 1
    assert "secret" not in log and "folder" not in log, log
    assert all(r.text.count("Poteligeo") <= 1 for r in api.requests)


NAMES = ["--help.md", "-rf.md", "-.md", "my note (draft) ✓.md", "ノート.md", "Ünïcödé.md",
         "tab\there.md", "new\nline.md", "'quoted' \"double\" $HOME `cmd`.md", " leading.md",
         "trailing .md", "a;b|c&d.md", os.fsdecode(b"latin-1 caf\xe9.md")]  # not UTF-8


def test_odd_file_names(vault: Path, api: FakeMessagesAPI,
                        capsys: pytest.CaptureFixture[str]) -> None:
    (vault / "--folder").mkdir()
    paths = [vault / name for name in NAMES] + [vault / "--folder" / "--version.md"]
    paths[0].write_text(programmatic_note(), encoding="utf-8")  # one there at the start
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        for path in paths[1:]:
            path.write_text(programmatic_note(), encoding="utf-8")
        for path in paths:
            wait_for(note_says(path, DONE, JS_DONE), what=repr(path.name))
        assert proc.stop() == 0
    for path in paths:
        assert path.read_text(encoding="utf-8").count("[!evaluation]") == 1
    ran = run_cli("check", str(vault), capsys=capsys)
    assert ran.code == 0 and ran.out.splitlines() == [
        f"vaultd: {len(paths)} notes checked, 0 with problems"]


def test_deep_folder_trees(vault: Path, api: FakeMessagesAPI) -> None:
    early = vault.joinpath(*[f"level-{n:03d}" for n in range(100)])
    early.mkdir(parents=True)
    (early / "deep.md").write_text(programmatic_note(), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        wait_for(note_says(early / "deep.md", DONE, JS_DONE), what="the deep note done")
        late = vault.joinpath(*[f"later-{n:03d}" for n in range(100)])
        late.mkdir(parents=True)  # made while watched, then a note at the bottom
        (late / "deeper.md").write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(late / "deeper.md", DONE, JS_DONE), what="the new deep note done")
        assert proc.stop() == 0


def test_lost_file_events_are_noticed_and_the_vault_rescanned(
    vault: Path, api: FakeMessagesAPI
) -> None:
    """A real inotify overflow: the daemon is stopped (SIGSTOP) while more events than the
    kernel queues (``max_queued_events``) happen, then notes are made whose events are
    dropped. Only a rescan can find them."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    assert limit <= 1_000_000, "too large a queue to overflow in a test"
    noise = vault / "noise.txt"  # not a note: its events only fill the queue
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        proc.proc.send_signal(signal.SIGSTOP)
        # Every thread stopped: until then the daemon may still drain the queue.
        wait_for(lambda: _all_threads_stopped(proc.proc.pid), what="the daemon stopped")
        try:
            fd = os.open(noise, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
            for _ in range(limit // 2 + 100):  # IN_MODIFY, IN_CLOSE_WRITE: 2 events each
                fd = os.open(noise, os.O_WRONLY)
                os.write(fd, b"x")
                os.close(fd)
            notes = [vault / f"lost-{n:02d}.md" for n in range(30)]
            for note in notes:
                note.write_text(programmatic_note(), encoding="utf-8")
        finally:
            proc.proc.send_signal(signal.SIGCONT)
        for note in notes:
            wait_for(note_says(note, DONE, JS_DONE), what=f"{note.name} done")
        log = proc.log()
        assert "file events were lost (the inotify queue overflowed); rescanning the vault" in log
        assert "rescan: " in log
        assert "Inotify queue overflowed" in log  # watchdog's own word for it
        assert proc.stop() == 0


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state (``T`` in its stat)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        states.append(stat.rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)
