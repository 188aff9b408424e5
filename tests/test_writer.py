"""Tests for vaultd.writer: in-place, crash-safe compare-and-write of notes (real files)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vaultd.edges.writer as writer_mod
from vaultd.edges.writer import CRASH_POINTS, Writer
from vaultd.errors import WriteConflict, WriteError

REPO = Path(__file__).resolve().parents[1]

OLD = "---\r\nStatus: Pending\r\n---\r\n# Notizen über Café ☕\r\n\r\nAnswer: «ça va»\r\n".encode()
NEW = "---\r\nStatus: Done\r\n---\r\n# Notizen über Café ☕\r\n\r\nAnswer: «ça va» ✓\r\n".encode()


def lines(tag: str, count: int, eol: str) -> bytes:
    """Multi-block, non-ASCII Markdown where every line differs between tags."""
    return "".join(
        f"- [{tag}] item {i:05d} — naïve ✓ {tag * 3}{eol}" for i in range(count)
    ).encode()


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    v = tmp_path / "vault"
    v.mkdir()
    return v


def make_note(vault: Path, content: bytes, name: str = "note.md", mode: int = 0o640) -> Path:
    note = vault / name
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_bytes(content)
    note.chmod(mode)
    return note


def journal_entries(vault: Path) -> list[Path]:
    """The journal's entries: its files but the empty (free) slots."""
    jdir = vault / ".vaultd" / "journal"
    if not jdir.exists():
        return []
    return sorted(p for p in jdir.iterdir() if p.suffix == ".json" or p.stat().st_size)


CRASH_SCRIPT = """
import sys
from pathlib import Path
from vaultd.edges.writer import Writer
vault, note, old, new = map(Path, sys.argv[1:5])
Writer(vault).write(note, old.read_bytes(), new.read_bytes())
"""


def crash_write(vault: Path, note: Path, old: bytes, new: bytes, point: str) -> None:
    """Run write() in a real subprocess that dies at ``point`` with exit code 70."""
    scratch = vault.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    (scratch / "old").write_bytes(old)
    (scratch / "new").write_bytes(new)
    env = {**os.environ, "VAULTD_CRASH_AT": point, "PYTHONPATH": str(REPO)}
    args = [str(vault), str(note), str(scratch / "old"), str(scratch / "new")]
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 70, proc.stderr.decode()


# --------------------------------------------------------------------- write


def test_write_replaces_content_in_place(vault: Path) -> None:
    note = make_note(vault, OLD, mode=0o640)
    before = os.stat(note)
    Writer(vault).write(note, OLD, NEW)
    after = os.stat(note)
    assert note.read_bytes() == NEW
    assert after.st_ino == before.st_ino
    assert after.st_dev == before.st_dev
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert after.st_mode == before.st_mode
    assert journal_entries(vault) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (OLD, b"short"),
        (b"short", OLD),
        (lines("a", 400, "\n"), lines("b", 90, "\r\n")),
        (lines("a", 90, "\r\n"), lines("b", 400, "\n")),
        (OLD, b""),
        (b"", NEW),
        (b"\xff\xfe not utf-8 \x00\r\n", b"\x80\x81\r\n\r\n"),
    ],
    ids=[
        "shorter",
        "longer",
        "shorter-multiblock",
        "longer-multiblock",
        "empty",
        "from-empty",
        "binary",
    ],
)
def test_write_lengths_and_bytes_exact(vault: Path, old: bytes, new: bytes) -> None:
    note = make_note(vault, old)
    ino = os.stat(note).st_ino
    Writer(vault).write(note, old, new)
    assert note.read_bytes() == new
    assert os.stat(note).st_size == len(new)
    assert os.stat(note).st_ino == ino


def test_crlf_and_non_ascii_preserved(vault: Path) -> None:
    note = make_note(vault, OLD)
    Writer(vault).write(note, OLD, NEW)
    data = note.read_bytes()
    assert data == NEW
    assert data.count(b"\r\n") == NEW.count(b"\r\n") == 6
    assert "über Café ☕".encode() in data


def test_relative_path_is_relative_to_vault(vault: Path) -> None:
    note = make_note(vault, OLD, name="sub/dir/n.md")
    Writer(vault).write(Path("sub/dir/n.md"), OLD, NEW)
    assert note.read_bytes() == NEW


def test_same_content_does_nothing(vault: Path) -> None:
    note = make_note(vault, OLD)
    os.utime(note, ns=(1_000_000_000, 1_000_000_000))
    Writer(vault).write(note, OLD, OLD)
    assert note.read_bytes() == OLD
    assert os.stat(note).st_mtime_ns == 1_000_000_000
    assert not (vault / ".vaultd").exists()


def test_consecutive_writes(vault: Path) -> None:
    note = make_note(vault, OLD)
    ino = os.stat(note).st_ino
    w = Writer(vault)
    w.write(note, OLD, NEW)
    w.write(note, NEW, b"third")
    w.write(note, b"third", OLD)
    assert note.read_bytes() == OLD
    assert os.stat(note).st_ino == ino
    assert journal_entries(vault) == []


# ----------------------------------------------------------------- refusals


def test_conflict_when_file_changed(vault: Path) -> None:
    note = make_note(vault, OLD)
    user = OLD + b"user typed this\r\n"
    note.write_bytes(user)
    with pytest.raises(WriteConflict) as info:
        Writer(vault).write(note, OLD, NEW)
    assert info.value.current == user
    assert isinstance(info.value, WriteError)
    assert note.read_bytes() == user
    assert journal_entries(vault) == []


def test_conflict_even_when_expected_equals_new(vault: Path) -> None:
    note = make_note(vault, b"changed")
    with pytest.raises(WriteConflict) as info:
        Writer(vault).write(note, OLD, OLD)
    assert info.value.current == b"changed"
    assert note.read_bytes() == b"changed"


def test_vanished_file_is_conflict_and_not_recreated(vault: Path) -> None:
    note = make_note(vault, OLD)
    note.unlink()
    with pytest.raises(WriteConflict) as info:
        Writer(vault).write(note, OLD, NEW)
    assert info.value.current is None
    assert not note.exists()
    assert journal_entries(vault) == []


def test_directory_at_path_is_write_error(vault: Path) -> None:
    (vault / "dir.md").mkdir()
    with pytest.raises(WriteError) as info:
        Writer(vault).write(vault / "dir.md", OLD, NEW)
    assert not isinstance(info.value, WriteConflict)
    assert (vault / "dir.md").is_dir()


def test_symlink_outside_vault_is_write_error(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_bytes(OLD)
    link = vault / "link.md"
    link.symlink_to(outside)
    with pytest.raises(WriteError) as info:
        Writer(vault).write(link, OLD, NEW)
    assert not isinstance(info.value, WriteConflict)
    assert outside.read_bytes() == OLD
    assert link.is_symlink()
    assert journal_entries(vault) == []


def test_symlinked_directory_outside_vault_is_write_error(vault: Path, tmp_path: Path) -> None:
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "n.md").write_bytes(OLD)
    (vault / "linked").symlink_to(outside_dir)
    with pytest.raises(WriteError):
        Writer(vault).write(vault / "linked" / "n.md", OLD, NEW)
    assert (outside_dir / "n.md").read_bytes() == OLD


def test_path_outside_vault_is_write_error(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_bytes(OLD)
    for path in (outside, vault / ".." / "outside.md"):
        with pytest.raises(WriteError):
            Writer(vault).write(path, OLD, NEW)
    assert outside.read_bytes() == OLD


def test_symlink_inside_vault_is_not_written_through(vault: Path) -> None:
    """Links are never written through, even to a note inside the vault: that note is
    written under its own path (see SECURITY.md)."""
    target = make_note(vault, OLD, name="real.md")
    (vault / "sub").mkdir()
    (vault / "alias.md").symlink_to("real.md")
    (vault / "linked").symlink_to("sub")
    make_note(vault, OLD, name="sub/n.md")
    for path in (vault / "alias.md", vault / "linked" / "n.md"):
        with pytest.raises(WriteError) as info:
            Writer(vault).write(path, OLD, NEW)
        assert not isinstance(info.value, WriteConflict)
        assert str(info.value) == (
            f"{path}: is a symbolic link, or inside a linked folder: "
            "vaultd does not write through links")
    assert target.read_bytes() == OLD and (vault / "sub" / "n.md").read_bytes() == OLD
    assert journal_entries(vault) == []
    Writer(vault).write(target, OLD, NEW)
    assert target.read_bytes() == NEW


def test_unwritable_journal_when_vaultd_is_a_file(vault: Path) -> None:
    note = make_note(vault, OLD)
    (vault / ".vaultd").write_bytes(b"not a directory")
    with pytest.raises(WriteError) as info:
        Writer(vault).write(note, OLD, NEW)
    assert not isinstance(info.value, WriteConflict)
    assert isinstance(info.value.__cause__, OSError)
    assert note.read_bytes() == OLD
    assert (vault / ".vaultd").read_bytes() == b"not a directory"


FILE_SIZE_LIMITED_WRITE = """
import resource, signal, sys
from pathlib import Path
from vaultd.errors import WriteError
from vaultd.edges.writer import Writer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
vault, note, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
old = note.read_bytes()
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    Writer(vault).write(note, old, old + b"more")
except WriteError as exc:
    print(type(exc.__cause__).__name__, exc)
    sys.exit(3)
"""


def test_journal_that_cannot_be_written_leaves_the_note_alone(vault: Path) -> None:
    """No room for the journal entry (a file size limit works even for root)."""
    note = make_note(vault, OLD)
    done = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED_WRITE, str(vault), str(note), str(len(OLD) + 8)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 3, done
    assert done.stdout.startswith("OSError") and "cannot write the journal" in done.stdout
    assert os.strerror(errno.EFBIG) in done.stdout
    assert note.read_bytes() == OLD
    assert journal_entries(vault) == []


def test_journal_permissions(vault: Path) -> None:
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    assert stat.S_IMODE(os.stat(vault / ".vaultd").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(vault / ".vaultd" / "journal").st_mode) == 0o700
    [entry] = journal_entries(vault)
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600
    doc = json.loads(entry.read_bytes())
    assert doc["path"] == "note.md"


def test_journal_dir_created_lazily_with_0700(vault: Path) -> None:
    note = make_note(vault, OLD)
    old_umask = os.umask(0o077)
    try:
        w = Writer(vault)
        assert not (vault / ".vaultd").exists()
        w.write(note, OLD, NEW)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(vault / ".vaultd").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(vault / ".vaultd" / "journal").st_mode) == 0o700
    assert journal_entries(vault) == []


# ------------------------------------------------------ OS errors mid-write

RealPwrite = Callable[[int, bytes, int], int]


def failing_pwrite(real: RealPwrite, fail_from_call: int, fail_until_call: int) -> RealPwrite:
    """A pwrite that writes 100 bytes on call 1, then fails with ENOSPC on calls in range."""
    calls = 0

    def fake(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        calls += 1
        if fail_from_call <= calls < fail_until_call:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if calls == 1:
            return real(fd, bytes(data[:100]), offset)
        return real(fd, data, offset)

    return fake


def note_write_pwrite(monkeypatch: pytest.MonkeyPatch, fake: RealPwrite) -> None:
    """Patch os.pwrite only for writes to the note (the journal's pwrite stays real)."""
    real = os.pwrite

    def dispatch(fd: int, data: bytes, offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("note.md"):
            return fake(fd, data, offset)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", dispatch)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_failed_write_restores_old_bytes(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = lines("a", 60, "\n"), lines("b", 300, "\n")
    note = make_note(vault, old)
    ino = os.stat(note).st_ino
    note_write_pwrite(monkeypatch, failing_pwrite(os.pwrite, 2, 3))
    with pytest.raises(WriteError) as info:
        Writer(vault).write(note, old, new)
    assert not isinstance(info.value, WriteConflict)
    assert os.strerror(errno.ENOSPC) in str(info.value)
    assert str(note) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert note.read_bytes() == old
    assert os.stat(note).st_ino == ino
    assert journal_entries(vault) == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_failed_write_and_failed_restore_keep_entry(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = lines("a", 60, "\n"), lines("b", 300, "\n")
    note = make_note(vault, old)
    note_write_pwrite(monkeypatch, failing_pwrite(os.pwrite, 2, 10_000))
    writer = Writer(vault)
    with pytest.raises(WriteError):
        writer.write(note, old, new)
    assert note.read_bytes() == new[:100] + old[100:]
    assert len(journal_entries(vault)) == 1
    monkeypatch.undo()
    assert Writer(vault).recover() == []  # the entry is a live writer's: left to it
    writer.close()  # as when its process ends
    [rec] = Writer(vault).recover()
    assert rec.outcome == "completed"
    assert note.read_bytes() == new
    assert journal_entries(vault) == []


# ------------------------------------------------------------------ crashes

SHAPES = {
    # name: (old, new); the mid_write cut (len(new) // 2) is never block-aligned
    "small": (OLD, NEW),
    "shrink": (lines("a", 200, "\r\n"), lines("b", 137, "\n")),
    "grow-within-old": (lines("a", 200, "\n"), lines("b", 260, "\r\n")),
    "grow-past-old": (lines("a", 90, "\r\n"), lines("b", 333, "\n")),
}


def state_after_crash(point: str, old: bytes, new: bytes) -> bytes:
    if point == "after_journal":
        return old
    if point == "mid_write":
        half = len(new) // 2
        return new[:half] + old[half:]
    if point == "before_truncate":
        return new + old[len(new) :]
    assert point == "before_clear"
    return new


def test_crash_points_are_the_documented_ones() -> None:
    assert set(CRASH_POINTS) == {"after_journal", "mid_write", "before_truncate", "before_clear"}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_then_recover(vault: Path, point: str, shape: str) -> None:
    old, new = SHAPES[shape]
    note = make_note(vault, old, mode=0o604)
    before = os.stat(note)

    crash_write(vault, note, old, new, point)

    on_disk = note.read_bytes()
    assert on_disk == state_after_crash(point, old, new)
    if point in ("mid_write", "before_truncate") and on_disk != new:
        assert on_disk != old  # genuinely torn
    assert len(journal_entries(vault)) == 1

    results = Writer(vault).recover()

    expected_outcome = "already_done" if on_disk == new else "completed"
    assert [(r.path, r.outcome) for r in results] == [(vault / "note.md", expected_outcome)]
    assert note.read_bytes() == new
    after = os.stat(note)
    assert after.st_ino == before.st_ino
    assert after.st_mode == before.st_mode
    assert journal_entries(vault) == []
    assert Writer(vault).recover() == []


def test_crash_during_recovery_is_recoverable(vault: Path) -> None:
    old, new = SHAPES["shrink"]
    note = make_note(vault, old)
    crash_write(vault, note, old, new, "mid_write")
    # A second torn state: a crashed recovery leaves yet another old/new mix.
    torn = bytearray(note.read_bytes())
    torn[: len(new) // 3] = new[: len(new) // 3]
    note.write_bytes(bytes(torn))
    [rec] = Writer(vault).recover()
    assert rec.outcome == "completed"
    assert note.read_bytes() == new


def test_out_of_order_writeback_is_completed(vault: Path) -> None:
    old, new = lines("a", 500, "\n"), lines("b", 400, "\n")
    assert len(new) > 3 * 4096
    note = make_note(vault, old)
    crash_write(vault, note, old, new, "after_journal")
    # Pages 0 and 2 reached the disk, pages 1 and 3 did not, no truncate: a block-wise mix.
    mixed = bytearray(old)
    mixed[0:4096] = new[0:4096]
    mixed[8192:12288] = new[8192:12288]
    assert len(mixed) == len(old)
    note.write_bytes(bytes(mixed))
    [rec] = Writer(vault).recover()
    assert rec.outcome == "completed"
    assert note.read_bytes() == new


def test_truncated_without_new_data_is_completed(vault: Path) -> None:
    old, new = lines("a", 400, "\n"), lines("b", 300, "\n")
    note = make_note(vault, old)
    crash_write(vault, note, old, new, "after_journal")
    note.write_bytes(old[: len(new)])  # size reached the disk, data did not
    [rec] = Writer(vault).recover()
    assert rec.outcome == "completed"
    assert note.read_bytes() == new


# ----------------------------------------------------------------- recovery


def test_user_edit_after_crash_is_left_alone(vault: Path) -> None:
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    user = OLD.replace(b"Pending", b"Pendiente")
    note.write_bytes(user)
    [rec] = Writer(vault).recover()
    assert rec.outcome == "left_alone"
    assert rec.path == vault / "note.md"
    assert rec.detail
    assert note.read_bytes() == user
    assert journal_entries(vault) == []


def test_user_edit_of_one_block_in_torn_file_is_left_alone(vault: Path) -> None:
    old, new = lines("a", 400, "\n"), lines("b", 400, "\n")
    note = make_note(vault, old)
    crash_write(vault, note, old, new, "mid_write")
    user = bytearray(note.read_bytes())
    user[100:105] = b"EDIT!"  # block 0 is now neither old, new nor a cut of them...
    user[9000:9005] = b"EDIT!"  # ...and neither is block 2
    note.write_bytes(bytes(user))
    [rec] = Writer(vault).recover()
    assert rec.outcome == "left_alone"
    assert note.read_bytes() == bytes(user)


def test_user_edit_changing_length_is_left_alone(vault: Path) -> None:
    old, new = lines("a", 100, "\n"), lines("b", 100, "\n")
    note = make_note(vault, old)
    crash_write(vault, note, old, new, "after_journal")
    user = old + b"one more line\n"
    note.write_bytes(user)
    [rec] = Writer(vault).recover()
    assert rec.outcome == "left_alone"
    assert note.read_bytes() == user


def test_missing_note_is_reported(vault: Path) -> None:
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    note.unlink()
    [rec] = Writer(vault).recover()
    assert (rec.path, rec.outcome) == (vault / "note.md", "missing")
    assert not note.exists()
    assert journal_entries(vault) == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b'{"version": 1, "path": "note.md", "old": "!!", "new": "", "sha256": ""}',
        b'{"version": 99}',
        b"",
    ],
    ids=["json", "bytes", "list", "base64", "version", "empty"],
)
def test_corrupt_entry_is_removed_and_reported(vault: Path, content: bytes) -> None:
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    [good] = journal_entries(vault)
    bad = good.parent / "slot-9.journal"
    bad.write_bytes(content)
    results = Writer(vault).recover()
    outcomes = {r.path: r.outcome for r in results}
    assert outcomes == {**({bad: "bad_entry"} if content else {}),  # empty: a free slot
                        vault / "note.md": "completed"}
    assert note.read_bytes() == NEW
    assert journal_entries(vault) == []


def test_tampered_entry_is_bad(vault: Path) -> None:
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    [entry] = journal_entries(vault)
    doc = json.loads(entry.read_bytes())
    doc["new"] = "AAAA"  # valid base64, wrong checksum
    entry.write_text(json.dumps(doc))
    [rec] = Writer(vault).recover()
    assert rec.outcome == "bad_entry"
    assert note.read_bytes() == OLD
    assert journal_entries(vault) == []


def test_entry_pointing_outside_vault_is_bad(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_bytes(OLD)
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    [entry] = journal_entries(vault)
    doc = json.loads(entry.read_bytes())
    # A well-formed entry whose path climbs out of the vault must never be followed.
    doc["path"] = "../outside.md"
    doc["sha256"] = writer_mod._checksum("../outside.md", OLD, NEW)
    entry.write_text(json.dumps(doc))
    [rec] = Writer(vault).recover()
    assert rec.outcome == "bad_entry"
    assert outside.read_bytes() == OLD
    assert journal_entries(vault) == []


def test_a_file_in_the_journal_that_is_no_slot_is_removed_and_reported(vault: Path) -> None:
    """The journal holds slots alone: an entry file of the format vaultd wrote before slots
    (never released) is not applied."""
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    [slot] = journal_entries(vault)
    old_style = slot.parent / (hashlib.sha256(b"note.md").hexdigest() + ".json")
    old_style.write_bytes(slot.read_bytes())
    slot.write_bytes(b"")
    [rec] = Writer(vault).recover()
    assert (rec.path, rec.outcome, rec.detail) == (old_style, "bad_entry", "not a journal slot")
    assert note.read_bytes() == OLD and not old_style.exists()


def test_leftover_temp_file_is_removed_silently(vault: Path) -> None:
    jdir = vault / ".vaultd" / "journal"
    jdir.mkdir(parents=True)
    (jdir / ".abc.1234.tmp").write_bytes(b"{partial")
    assert Writer(vault).recover() == []
    assert journal_entries(vault) == []


def test_recover_without_journal(vault: Path) -> None:
    assert Writer(vault).recover() == []
    assert not (vault / ".vaultd").exists()


def test_writes_to_many_notes_from_many_threads(vault: Path) -> None:
    """Writes to different notes run at once, each in a journal slot of its own."""
    import threading

    notes = [make_note(vault, OLD, name=f"n{i}.md") for i in range(40)]
    writer = Writer(vault)
    errors: list[BaseException] = []

    def write_all(mine: list[Path]) -> None:
        try:
            for note in mine:
                writer.write(note, OLD, NEW + note.name.encode())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write_all, args=(notes[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [n.read_bytes() for n in notes] == [NEW + n.name.encode() for n in notes]
    slots = sorted((vault / ".vaultd" / "journal").iterdir())
    assert 1 <= len(slots) <= 4  # one slot per writer at the same moment, reused
    assert journal_entries(vault) == []


def test_torn_slot_is_discarded_and_the_note_left_as_it_was(vault: Path) -> None:
    """A crash while the entry was being recorded: the checksum fails; the note is untouched."""
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "after_journal")
    [slot] = journal_entries(vault)
    assert slot.name == "slot-0.journal"
    slot.write_bytes(slot.read_bytes()[: slot.stat().st_size // 2])
    [rec] = Writer(vault).recover()
    assert (rec.path, rec.outcome) == (slot, "bad_entry")
    assert note.read_bytes() == OLD
    assert journal_entries(vault) == []


def test_a_kept_entry_is_not_overwritten_by_later_writes(vault: Path) -> None:
    """An entry recovery must keep (its note cannot be opened now) keeps its slot."""
    note = make_note(vault, OLD, name="sub/note.md")
    crash_write(vault, note, OLD, NEW, "after_journal")
    [slot] = journal_entries(vault)
    kept = slot.read_bytes()
    note.unlink()
    note.parent.rmdir()
    note.parent.write_bytes(b"a file where the folder was")  # opening the note: ENOTDIR
    writer = Writer(vault)
    [rec] = writer.recover()
    assert rec.outcome == "left_alone" and "entry kept for a retry" in rec.detail
    other = make_note(vault, OLD, name="other.md")
    writer.write(other, OLD, NEW)
    assert other.read_bytes() == NEW
    assert slot.read_bytes() == kept


def test_two_writers_on_one_vault_never_share_a_slot(vault: Path) -> None:
    """As a daemon and a --once run, or the processes of one run: each claims its own."""
    first, second = make_note(vault, OLD, name="a.md"), make_note(vault, OLD, name="b.md")
    one, two = Writer(vault), Writer(vault)
    one.write(first, OLD, NEW)
    two.write(second, OLD, NEW)
    slots = sorted(p.name for p in (vault / ".vaultd" / "journal").iterdir())
    assert slots == ["slot-0.journal", "slot-1.journal"]
    one.close()
    three = Writer(vault)
    three.write(first, NEW, OLD)  # the slot given up is taken again
    assert sorted(p.name for p in (vault / ".vaultd" / "journal").iterdir()) == slots
    two.close()
    three.close()


RECOVER_SCRIPT = """
import sys
from vaultd.edges.writer import Writer
print(*[r.outcome for r in Writer(sys.argv[1]).recover()])
"""


def test_an_entry_another_process_recovers_meanwhile_is_not_reported_bad(
        vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes (the shards of a --once run) recover at start, at the same time: the
    one that finds the slot emptied by the other has nothing to report."""
    note = make_note(vault, OLD)
    crash_write(vault, note, OLD, NEW, "mid_write")
    real = writer_mod._unless_held
    others: list[str] = []

    def another_process_recovers_now(*args: Any) -> Any:
        monkeypatch.setattr(writer_mod, "_unless_held", real)
        done = subprocess.run([sys.executable, "-c", RECOVER_SCRIPT, str(vault)],
                              env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60, check=True)
        others.append(done.stdout.strip())
        return real(*args)

    monkeypatch.setattr(writer_mod, "_unless_held", another_process_recovers_now)
    assert Writer(vault).recover() == []
    assert others == ["completed"]
    assert note.read_bytes() == NEW


def test_a_slot_that_cannot_be_claimed_leaks_no_descriptor(
        vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    note = make_note(vault, OLD)
    (vault / ".vaultd" / "journal").mkdir(parents=True)
    writer = Writer(vault)
    real = writer_mod._fsync_dir
    failures = [OSError(errno.EIO, os.strerror(errno.EIO))]

    def failing_once(dir_fd: int) -> None:
        if failures:
            raise failures.pop()
        real(dir_fd)

    monkeypatch.setattr(writer_mod, "_fsync_dir", failing_once)
    before = len(os.listdir("/dev/fd"))
    with pytest.raises(WriteError):
        writer.write(note, OLD, NEW)
    assert len(os.listdir("/dev/fd")) == before
    writer.write(note, OLD, NEW)  # the slot is claimed again, not left locked
    writer.close()
    assert note.read_bytes() == NEW
    assert [p.name for p in (vault / ".vaultd" / "journal").iterdir()] == ["slot-0.journal"]


def test_a_journal_deleted_under_a_writer_is_made_again(vault: Path) -> None:
    """The slot's own descriptor is used only while it is still the slot's file."""
    import shutil

    first, second = make_note(vault, OLD, name="a.md"), make_note(vault, OLD, name="b.md")
    writer = Writer(vault)
    writer.write(first, OLD, NEW)
    shutil.rmtree(vault / ".vaultd" / "journal")
    crash = make_note(vault, OLD, name="c.md")
    writer.write(second, OLD, NEW)
    assert second.read_bytes() == NEW
    assert (vault / ".vaultd" / "journal" / "slot-0.journal").exists()
    writer.close()
    crash_write(vault, crash, OLD, NEW, "after_journal")  # an entry on disk, as it must be
    [rec] = Writer(vault).recover()
    assert (rec.path, rec.outcome) == (crash, "completed")


def test_write_whole_replaces_or_creates_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    from vaultd.edges.writer import write_whole

    state = tmp_path / "daemon.json"
    write_whole(state, b"{}")
    write_whole(state, b'{"a": 1}', sync=False)
    assert state.read_bytes() == b'{"a": 1}' and state.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_whole(state, b"other", replace=False)
    assert state.read_bytes() == b'{"a": 1}'
    write_whole(tmp_path / "new.md", b"x", mode=0o644, replace=False)
    assert (tmp_path / "new.md").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json", "new.md"]
