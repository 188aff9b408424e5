"""Hardening of the writer and its journal (issue 12): nothing outside the vault, no save lost.

Real files, real processes: vaultd is run as ``python -m vaultd`` where a user would run it,
and what is asserted is what a user would check afterwards (the folder outside the vault,
the bytes of a file vaultd must not touch, the exit code and message).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import vaultd.edges.writer as writer_mod
from vaultd import config
from vaultd.edges.vault import read_note
from vaultd.edges.writer import Writer, _encode_entry
from vaultd.errors import NoteReadError, WriteConflict, WriteError
from vaultd.obsidian.status import vault_status
from vaultd.runs.services import open_services

from .conftest import ROOT, run_process
from .notes import programmatic_note

NOTE = "---\nStatus: Done\n---\nmy own words\n"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the vault, full of files a user cares about."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "thesis.md").write_text("# my thesis\n" * 50)
    (folder / "slot-0.journal").write_text("not a journal, a file of mine\n")
    (folder / "backup.json").write_text('{"a": 1}\n')
    (folder / ".hidden.tmp").write_text("mine too\n")
    return folder


def run_once(vault: Path) -> tuple[int, str]:
    ran = run_process("run", "--once", str(vault), env={"ANTHROPIC_API_KEY": ""}, timeout=60)
    return ran.code, ran.err


# ------------------------------------------------- 1. links under .vaultd are refused


def test_a_symlinked_journal_leaves_the_folder_it_points_to_alone(
        vault: Path, outside: Path) -> None:
    (vault / "n.md").write_text(NOTE)
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "journal").symlink_to(outside)
    before = snapshot(outside)
    code, err = run_once(vault)
    assert code != 0
    assert f"{vault}/.vaultd/journal: is a symbolic link" in err
    assert "Traceback" not in err
    assert snapshot(outside) == before


def test_a_symlinked_vaultd_folder_is_refused(vault: Path, outside: Path) -> None:
    (outside / "journal").mkdir()
    (outside / "journal" / "slot-0.journal").write_text("mine\n")
    (vault / "n.md").write_text(NOTE)
    (vault / ".vaultd").symlink_to(outside)
    before = snapshot(outside)
    code, err = run_once(vault)
    assert code != 0
    assert f"{vault}/.vaultd: is a symbolic link" in err
    assert snapshot(outside) == before


def test_a_symlinked_slot_is_not_truncated(vault: Path, outside: Path) -> None:
    (vault / "n.md").write_text(NOTE)
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True)
    (journal / "slot-0.journal").symlink_to(outside / "thesis.md")
    before = snapshot(outside)
    code, err = run_once(vault)
    assert code != 0
    assert "slot-0.journal: is a symbolic link" in err
    assert snapshot(outside) == before


@pytest.mark.parametrize("name", ["cache.sqlite3", "daemon.json"])
def test_a_symlinked_state_file_is_refused(vault: Path, outside: Path, name: str) -> None:
    (vault / "n.md").write_text(programmatic_note())
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / name).symlink_to(outside / "backup.json")
    before = snapshot(outside)
    code, err = run_once(vault)
    assert code != 0
    assert f".vaultd/{name}: is a symbolic link" in err
    assert snapshot(outside) == before
    assert "Status: Pending" in (vault / "n.md").read_text()  # nothing ran


def test_the_writer_refuses_a_slot_made_a_link_while_it_runs(
        vault: Path, outside: Path) -> None:
    note = vault / "n.md"
    note.write_text(NOTE)
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True)
    (journal / "slot-0.journal").symlink_to(outside / "thesis.md")
    before = snapshot(outside)
    with pytest.raises(WriteError, match=r"slot-0\.journal: is a symbolic link"):
        Writer(vault).write(note, NOTE.encode(), b"changed\n")
    assert snapshot(outside) == before
    assert note.read_text() == NOTE


@pytest.mark.parametrize("target", [".obsidian/app.json", "script.sh", ".git/hooks/x.md",
                                    "Notes/.secret/n.md"])
def test_recovery_applies_no_entry_to_a_file_that_is_not_a_note(
        vault: Path, target: str) -> None:
    """A well-formed entry (right checksum, old bytes matching) for a file that is not a
    note: recovery leaves the file as it is and discards the entry."""
    victim = vault / target
    victim.parent.mkdir(parents=True, exist_ok=True)
    old = b'{"theme": "moonstone"}\n'
    victim.write_bytes(old)
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True)
    (journal / "slot-0.journal").write_bytes(_encode_entry(target, old, b"rm -rf ~\n"))
    code, err = run_once(vault)
    assert code == 0
    assert victim.read_bytes() == old
    assert "not a note vaultd writes" in err
    assert (journal / "slot-0.journal").read_bytes() == b""


def test_recovery_still_completes_a_note(vault: Path) -> None:
    note = vault / "Notes" / "n.md"
    note.parent.mkdir()
    old, new = NOTE.encode(), NOTE.replace("Done", "Error").encode()
    note.write_bytes(new[:10] + old[10:])  # torn by a crash
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True)
    (journal / "slot-0.journal").write_bytes(_encode_entry("Notes/n.md", old, new))
    [rec] = Writer(vault).recover()
    assert rec.outcome == "completed"
    assert note.read_bytes() == new


# ------------------------------------- 10. a FIFO or device at a slot never blocks a start


def make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_special_file_at_a_slot_is_refused_without_hanging(vault: Path, kind: str) -> None:
    (vault / "n.md").write_text(programmatic_note())
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True)
    make_special(journal / "slot-0.journal", kind)
    try:
        code, err = run_once(vault)  # its timeout is the deadline: a hang raises
    except subprocess.TimeoutExpired:
        pytest.fail("vaultd hung on a special file in its journal")
    assert code != 0
    what = "a FIFO" if kind == "fifo" else "a device"
    assert f"slot-0.journal: is {what}, not a regular file" in err
    assert "Status: Pending" in (vault / "n.md").read_text()


def test_a_fifo_made_at_a_slot_while_running_is_refused(vault: Path) -> None:
    note = vault / "n.md"
    note.write_text(NOTE)
    journal = vault / ".vaultd" / "journal"
    journal.mkdir(parents=True)
    os.mkfifo(journal / "slot-0.journal")
    script = ("import sys\nfrom pathlib import Path\nfrom vaultd.edges.writer import Writer\n"
              "from vaultd.errors import WriteError\n"
              "try:\n    Writer(Path(sys.argv[1])).write(Path(sys.argv[2]), sys.argv[3].encode(),"
              " b'x\\n')\nexcept WriteError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script, str(vault), str(note), NOTE],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "slot-0.journal: is a FIFO, not a regular file" in done.stdout
    assert note.read_text() == NOTE


# ---------------------------------------------- 2. a save during vaultd's write is kept


def lease_breaking(note: Path) -> bool:
    """Whether someone's open of ``note`` waits on a lease (``/proc/locks`` says so)."""
    ino = os.stat(note).st_ino
    return any("BREAKING" in line and f":{ino} " in line
               for line in Path("/proc/locks").read_text().splitlines())


SAVE = ("import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n"
        "os.write(fd, sys.argv[2].encode())\nos.close(fd)\n")


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="Linux leases")
def test_an_editors_save_during_vaultds_write_is_kept(
        vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An editor (a real second process) saves the note while vaultd writes it: its open
    waits on vaultd's lease until the write is done, so its save lands after it, whole; and
    vaultd's next write sees the save and splices into it instead of writing over it."""
    note = vault / "n.md"
    old, new, saved = NOTE, NOTE.replace("Done", "Error"), NOTE + "my edit, saved\n"
    note.write_text(old)
    real = writer_mod._rewrite
    editors: list[subprocess.Popen[bytes]] = []

    def an_editor_saves_now(fd: int, data: bytes, *, crash_hooks: bool) -> None:
        if crash_hooks and not editors:
            editors.append(subprocess.Popen([sys.executable, "-c", SAVE, str(note), saved]))
            deadline = time.monotonic() + 60
            while not lease_breaking(note):  # proof: the editor's open waits on the lease
                assert editors[0].poll() is None, "the editor's save did not wait"
                assert time.monotonic() < deadline, "the editor never opened the note"
                time.sleep(0.01)
        real(fd, data, crash_hooks=crash_hooks)

    monkeypatch.setattr(writer_mod, "_rewrite", an_editor_saves_now)
    writer = Writer(vault)
    writer.write(note, old.encode(), new.encode())
    assert editors[0].wait(timeout=60) == 0
    assert note.read_text() == saved  # the save, whole, not vaultd's write over it
    with pytest.raises(WriteConflict) as info:  # vaultd's next write: re-read and splice
        writer.write(note, new.encode(), b"vaultd again\n")
    assert info.value.current == saved.encode()
    assert note.read_text() == saved
    assert writer.unleased == 0


def test_without_a_lease_the_write_is_as_before(vault: Path) -> None:
    """The fallback, as where the OS has no leases (``leases=False``, the switch that stands
    for another OS or filesystem): the write is the same compare-and-write as before."""
    note = vault / "n.md"
    note.write_text(NOTE)
    ino = os.stat(note).st_ino
    writer = Writer(vault, leases=False)
    writer.write(note, NOTE.encode(), b"new\n")
    assert note.read_bytes() == b"new\n"
    assert os.stat(note).st_ino == ino
    with pytest.raises(WriteConflict):
        writer.write(note, NOTE.encode(), b"newer\n")
    assert writer.unleased == 2


HOLD = ("import sys, time\nf = open(sys.argv[1], 'rb')\nprint('open', flush=True)\n"
        "sys.stdin.read()\n")


def test_a_note_held_open_elsewhere_is_written_without_a_lease(vault: Path) -> None:
    """A real no-lease case: another process keeps the note open (a lease needs it open
    nowhere else): after LEASE_WAIT the write goes on without one, correctly."""
    note = vault / "n.md"
    note.write_text(NOTE)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(note)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        writer = Writer(vault)
        writer.write(note, NOTE.encode(), b"new\n")
        assert note.read_bytes() == b"new\n"
        assert writer.unleased == 1
    finally:
        holder.communicate(timeout=60)


def test_a_note_renamed_over_during_the_write_is_a_conflict(
        vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An editor that saves by renaming a new file over the note, while vaultd writes the
    old one: vaultd is told (a conflict with the saved text), not left believing it wrote."""
    note = vault / "n.md"
    note.write_text(NOTE)
    real = writer_mod._rewrite

    def renamed_meanwhile(fd: int, data: bytes, *, crash_hooks: bool) -> None:
        real(fd, data, crash_hooks=crash_hooks)
        if crash_hooks:
            tmp = vault / ".n.md.tmp"
            tmp.write_text("saved by rename\n")
            os.replace(tmp, note)

    monkeypatch.setattr(writer_mod, "_rewrite", renamed_meanwhile)
    with pytest.raises(WriteConflict) as info:
        Writer(vault).write(note, NOTE.encode(), b"new\n")
    assert info.value.current == b"saved by rename\n"
    assert note.read_text() == "saved by rename\n"


# ------------------------------- 3. a hand-written record, a Status vaultd cannot rewrite


def test_a_hand_written_record_never_removes_the_users_keys(vault: Path) -> None:
    note = vault / "n.md"
    text = programmatic_note().replace(
        "Status: Pending\n",
        "Status: Pending\ntags: [reading]\ntitle: My note\nvaultd_properties:\n"
        "  - tags\n  - title\n  - eval_gone\neval_gone: 3\n")
    note.write_text(text)
    code, err = run_once(vault)
    assert code == 0, err
    after = note.read_text()
    assert "Status: Done" in after
    assert "tags: [reading]\n" in after
    assert "title: My note\n" in after
    assert "eval_gone" not in after.split("\n---\n", 1)[0][4:].replace(
        "vaultd_properties", "")  # a key with the prefix, recorded: vaultd's, removed
    assert "eval_size: " in after


@pytest.mark.parametrize(("value", "what"), [("&s Pending", "an anchor (`&s`)"),
                                            ("!!str Pending", "a tag (`!!str`)"),
                                            ("*s", "an alias (`*s`)")])
def test_a_status_with_an_anchor_tag_or_alias_is_left_alone(
        vault: Path, value: str, what: str) -> None:
    note = vault / "n.md"
    text = programmatic_note().replace("Status: Pending\n",
                                       f"base: &s Pending\nStatus: {value}\nagain: *s\n"
                                       if value == "*s" else
                                       f"Status: {value}\nagain: *s\n" if value[0] == "&"
                                       else f"Status: {value}\n")
    note.write_text(text)
    code, err = run_once(vault)
    line = text.splitlines().index(f"Status: {value}") + 1
    message = f"{note}:{line}: Status carries {what}: vaultd cannot rewrite it"
    if value == "*s":  # a lone alias is no Status vaultd can read: the note is not run
        assert code == 0
    else:
        assert code != 0
        assert message in err
    assert note.read_text() == text  # not a byte written
    checked = run_process("check", str(note))
    assert checked.code != 0
    assert message in checked.out


# --------------------------- 14. never past max_note_bytes; no note left Processing


BIG = """---
Status: Pending
---

> [!answer]
> ```answer-text
> {answer}
> ```

> [!measures]
> ```measures-md
> * ---
>   * id: small
>   * type: programmatic
>   * logic: "return 'ok';"
> * ---
>   * id: big1
>   * type: programmatic
>   * logic: "return 'x'.repeat(30000);"
> * ---
>   * id: big2
>   * type: programmatic
>   * logic: "return 'y'.repeat(30000);"
> ```
"""


def test_results_that_would_pass_max_note_bytes_are_their_measures_errors(
        vault: Path) -> None:
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("max_note_bytes = 100000\n")
    note = vault / "n.md"
    note.write_text(BIG.format(answer="words " * 6000))  # 36 kB
    code, err = run_once(vault)
    after = note.read_text()
    assert len(after.encode()) <= 100_000
    assert "Status: Error" in after
    assert "Error: \"1 of 3 measures did not succeed; big" in after
    assert "result too large: would make the note " in after
    assert "bytes, above max_note_bytes 100000" in after
    assert "eval_small: ok" in after
    assert code != 0
    assert "Traceback" not in err


def test_a_note_left_processing_and_now_too_large_is_marked(vault: Path) -> None:
    """After a crash, a note vaultd (before this fix) grew past the limit stays Processing;
    the next start marks it Error with the reason, so nothing stays Processing."""
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("max_note_bytes = 100000\n")
    note = vault / "n.md"
    text = BIG.format(answer="words " * 30000).replace("Status: Pending", "Status: Processing")
    note.write_text(text)  # 180 kB, above the limit
    code, err = run_once(vault)
    after = note.read_text()
    assert code != 0
    assert after.startswith("---\nStatus: Error\nError: \"the note is too large to run (")
    assert "above max_note_bytes 100000); shorten it and set Status: Pending" in after
    assert after.split("\n---\n", 1)[1] == text.split("\n---\n", 1)[1]  # the body as it was
    assert "too large to run" in err
    counted = vault_status(vault, max_bytes=100_000)  # what `vaultd status` counts
    assert counted.counts["error"] == 1 and counted.counts["processing"] == 0


def test_a_persons_large_processing_note_is_never_marked(vault: Path) -> None:
    """A task note of someone's that says ``Status: Processing`` and is past the limit holds
    none of vaultd's parts: it is not vaultd's, so it is left byte for byte."""
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("max_note_bytes = 100000\n")
    note = vault / "task.md"
    note.write_text("---\nStatus: Processing\n---\n" + "- [ ] a task\n" * 15000)  # 195 kB
    before = note.read_bytes()
    run_once(vault)
    assert note.read_bytes() == before


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="Linux leases")
def test_a_save_during_the_processing_write_is_in_the_final_note(
        vault: Path, monkeypatch: pytest.MonkeyPatch, no_key: None) -> None:
    """The whole engine: while vaultd writes ``Processing``, the user's editor (a real
    process) saves the note with a line added. The save waits on the lease, lands whole
    after the write, and vaultd's final write splices into it: the line is kept."""
    note = vault / "n.md"
    text = programmatic_note()
    note.write_text(text)
    saved = text.replace("---\n\n", "---\n\nmy line, typed while it ran\n\n", 1)
    real = writer_mod._rewrite
    editors: list[subprocess.Popen[bytes]] = []

    def an_editor_saves_now(fd: int, data: bytes, *, crash_hooks: bool) -> None:
        if crash_hooks and not editors and b"Status: Processing" in data:
            editors.append(subprocess.Popen([sys.executable, "-c", SAVE, str(note), saved]))
            deadline = time.monotonic() + 60
            while not lease_breaking(note):
                assert editors[0].poll() is None, "the editor's save did not wait"
                assert time.monotonic() < deadline, "the editor never opened the note"
                time.sleep(0.01)
        real(fd, data, crash_hooks=crash_hooks)

    monkeypatch.setattr(writer_mod, "_rewrite", an_editor_saves_now)
    with open_services(vault, config.load(vault)) as services:
        result = services.engine.process(note)
    assert editors and editors[0].wait(timeout=60) == 0
    after = note.read_text()
    assert result.status == "done", result.summary
    assert "my line, typed while it ran\n" in after
    assert "Status: Done" in after
    assert "eval_size: " in after


LEASE_HOLDER = """
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("leased", flush=True)
sys.stdin.readline()
os.pwrite(fd, sys.argv[2].encode(), 0)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"""


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="Linux leases")
def test_vaultds_read_waits_out_another_vaultds_lease(vault: Path) -> None:
    """Another vaultd process holds the note's lease while it writes: a read (which opens
    with O_NONBLOCK, so a FIFO cannot block it) waits for the write, not fails."""
    note = vault / "n.md"
    note.write_text(NOTE)
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(note), "+++\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    results: list[bytes | Exception] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"leased\n"
        reading = threading.Thread(target=lambda: results.append(_read(note, vault)))
        reading.start()
        deadline = time.monotonic() + 60
        while not lease_breaking(note):  # proof: the read has tried to open the note
            assert reading.is_alive(), results
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        holder.communicate(b"go\n", timeout=60)
    reading.join(timeout=60)
    assert results == [b"+++\n" + NOTE.encode()[4:]]  # read after the write


def _read(note: Path, vault: Path) -> bytes | Exception:
    try:
        return read_note(note, 1_000_000, vault)[0]
    except NoteReadError as exc:
        return exc


def test_init_writes_nothing_through_a_symlinked_vaultd_folder(
        vault: Path, outside: Path) -> None:
    (vault / ".vaultd").symlink_to(outside)
    before = snapshot(outside)
    ran = run_process("init", str(vault), timeout=60)
    assert ran.code != 0
    assert f"{vault}/.vaultd: is a symbolic link" in ran.err
    assert snapshot(outside) == before
