"""``vaultd run VAULT --once`` beside the vault's running daemon: the daemon runs the notes
(nothing is asked twice), ``--once`` prints each as it ends and exits as it would have; a
daemon that stops meanwhile hands the notes back; notes the daemon leaves waiting (no key)
end ``--once`` as waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import ROOT
from .daemonproc import DEADLINE, DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI, held
from .notes import SEED, SEED_REPLIES

NOTES = ["a.md", "b.md", "c.md"]


class Once:
    """``vaultd run VAULT --once`` as a real process; its stderr read as it comes."""

    def __init__(self, vault: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaultd", "run", str(vault), "--once"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def finish(self) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(DEADLINE * 2)
        self._reader.join(DEADLINE)
        self.proc.stdout.close()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code, out, "".join(self.err)


def state_fresh(vault: Path) -> bool:
    return (vault / ".vaultd" / "daemon.json").exists()


@pytest.fixture
def seeds(api: FakeMessagesAPI) -> threading.Event:
    """The seed's replies, each held until the returned gate is set."""
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    gate = threading.Event()
    api.responder = held(api.match_rules, gate, timeout=DEADLINE)
    return gate


def test_once_beside_a_daemon_lets_the_daemon_run_the_notes(
        vault: Path, api: FakeMessagesAPI, seeds: threading.Event) -> None:
    with DaemonProcess(vault, "--settle", "0.1") as daemon:
        daemon.wait_ready()
        wait_for(lambda: state_fresh(vault), what="the daemon's state file")
        for name in NOTES:  # each its own answer: the cache cannot answer one from another
            (vault / name).write_text(SEED.replace("> I'm sorry", f"> ({name}) I'm sorry", 1),
                                      encoding="utf-8")
        for name in NOTES:  # the daemon has them: their requests are held
            wait_for(note_says(vault / name, "Status: Processing"), what=f"{name} taken up")
        once = Once(vault)
        wait_for(lambda: once.said("is running: it runs these 3 notes"),
                 what="--once handing its notes to the daemon")
        seeds.set()
        code, out, err = once.finish()
        daemon.stop()

    assert code == 0, (out, err)
    assert "the vault's daemon (pid " in err and "it runs these 3 notes" in err, err
    lines = sorted(out.splitlines()[:-1])
    assert lines == [f"done       {name}: run by the vault's daemon" for name in NOTES], out
    assert out.splitlines()[-1] == "vaultd: 3 notes processed: 3 done", out
    for name in NOTES:
        assert "Status: Done" in (vault / name).read_text(encoding="utf-8")
    assert len(api.message_requests()) == 2 * len(NOTES)  # asked once, by the daemon alone


def test_a_daemon_stopping_meanwhile_hands_the_notes_back(
        vault: Path, api: FakeMessagesAPI, seeds: threading.Event) -> None:
    (vault / "a.md").write_text(SEED, encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as daemon:
        daemon.wait_ready()
        wait_for(note_says(vault / "a.md", "Status: Processing"), what="a.md taken up")
        wait_for(lambda: state_fresh(vault), what="the daemon's state file")
        once = Once(vault)
        wait_for(lambda: once.said("is running: it runs these 1 notes"),
                 what="--once handing its note to the daemon")
        daemon.stop()  # its run of a.md is left for the next start: here, for --once
    wait_for(lambda: once.said("handed back by the daemon"), what="the note handed back")
    seeds.set()
    code, out, err = once.finish()

    assert code == 0, (out, err)
    assert "Status: Done" in (vault / "a.md").read_text(encoding="utf-8")
    assert out.splitlines()[:2] == ["done       a.md: 4 measures",  # this process ran it
                                    "vaultd: 1 notes processed: 1 done"], out


def test_notes_the_daemon_leaves_waiting_end_once_as_waiting(
        vault: Path, no_key: None) -> None:
    (vault / "a.md").write_text(SEED, encoding="utf-8")
    before = (vault / "a.md").read_bytes()
    with DaemonProcess(vault, "--settle", "0.1") as daemon:
        daemon.wait_ready()
        wait_for(lambda: '"a.md"' in _state(vault), what="a.md waiting in the daemon's state")
        once = Once(vault)
        code, out, err = once.finish()
        daemon.stop()

    assert code == 1, (out, err)
    assert out.splitlines() == [
        "waiting    a.md: no API key (set ANTHROPIC_API_KEY)",
        "vaultd: 1 notes processed: 1 waiting",
    ], (out, err)
    assert (vault / "a.md").read_bytes() == before


def _state(vault: Path) -> str:
    try:
        return (vault / ".vaultd" / "daemon.json").read_text(encoding="utf-8")
    except OSError:
        return ""


def test_a_burst_of_notes_ending_together_is_each_seen_ending(
        vault: Path, api: FakeMessagesAPI, seeds: threading.Event) -> None:
    """Forty notes held in the daemon, then let go at once while --once watches them: each
    is reported as it ends, none missed (a note is read again once its stat changes)."""
    names = [f"n{k:02d}.md" for k in range(40)]
    with DaemonProcess(vault, "--settle", "0.1", "--concurrency", "16") as daemon:
        daemon.wait_ready()
        wait_for(lambda: state_fresh(vault), what="the daemon's state file")
        for name in names:
            (vault / name).write_text(SEED.replace("> I'm sorry", f"> ({name}) I'm sorry", 1),
                                      encoding="utf-8")
        wait_for(note_says(vault / names[0], "Status: Processing"), what="the notes taken up")
        once = Once(vault)
        wait_for(lambda: once.said("is running: it runs these"), what="--once handing off")
        seeds.set()
        code, out, err = once.finish()
        daemon.stop()

    assert code == 0, (out, err)
    assert out.splitlines()[-1] == "vaultd: 40 notes processed: 40 done", (out, err)
    assert sorted(out.splitlines()[:-1]) == [f"done       {name}: run by the vault's daemon"
                                             for name in names], out
