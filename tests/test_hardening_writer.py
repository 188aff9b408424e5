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
from pathlib import Path

import pytest

from vaultd.errors import WriteError
from vaultd.writer import Writer, _encode_entry

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
    script = ("import sys\nfrom pathlib import Path\nfrom vaultd.writer import Writer\n"
              "from vaultd.errors import WriteError\n"
              "try:\n    Writer(Path(sys.argv[1])).write(Path(sys.argv[2]), sys.argv[3].encode(),"
              " b'x\\n')\nexcept WriteError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script, str(vault), str(note), NOTE],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "slot-0.journal: is a FIFO, not a regular file" in done.stdout
    assert note.read_text() == NOTE
