"""Crash-safe, in-place rewriting of notes.

Obsidian, Dataview and Bases show a note's creation time, and replacing a file by rename
(write a temp file, ``os.replace``) gives it a new inode and so a new creation time. vaultd
therefore rewrites notes *in place* (same inode, same mode), and makes that safe with a
journal under ``VAULT/.vaultd/journal/``:

1. take a write lease on the note (Linux ``F_SETLEASE``; see below), re-read it and compare
   it with what the caller expects (compare-and-write);
2. record the relative path, the old bytes and the new bytes, with a checksum, in a journal
   *slot* (``journal/slot-N.journal``: a file kept from write to write, so recording an
   entry is one write and one fsync, with no directory to sync), fsync;
3. rewrite the note in place: open without ``O_TRUNC``, write every new byte from offset 0,
   ``ftruncate`` to the new length, fsync; release the lease;
4. empty the slot (no fsync: an entry that survives a crash finds its note already holding
   the new bytes, or edited since, and recovery leaves it be).

The lease makes every other open of the note (an editor's save, a reader) wait until step 3
is done, so no save lands between the last look and the write, and nobody reads the note
half written. The kernel signals a lease break with ``F_SETSIG``'s signal, set to
``SIGURG`` (ignored unless handled; the default ``SIGIO`` would end the process). A lease
needs the note open nowhere else: while it is, the writer tries again for ``LEASE_WAIT``
seconds, then writes without one, as it does where there are no leases (another OS, NFS,
SMB, FUSE, a note of another user's): with the compare-and-write alone. A filesystem that
has not given this writer a lease yet, and did not in a whole ``LEASE_WAIT``, is not
waited on again until it gives one. After the write, a note whose path now names another
file (an editor saved by renaming a new file over it) is a :class:`WriteConflict` with
what the path holds now.

Nothing under ``VAULT/.vaultd`` is followed through a link: the journal folder is opened one
folder at a time with ``O_NOFOLLOW``, its files by name in it with ``O_NOFOLLOW |
O_NONBLOCK`` and checked with ``fstat``; a link, FIFO or device there is a
:class:`WriteError`. Recovery applies an entry only to a file vaultd writes (a note, by
:func:`vault.is_note_path`, or the report's ``vaultd.base``).

Writes to different notes proceed at the same time (each takes a free slot); writes to one
note are serialised. A writer holds its slots with ``flock`` while it lives, so several
processes can write to one vault, and recovery never touches a live writer's entry. An
entry torn by a crash while it was being recorded fails its checksum: the note was not
touched yet, and recovery discards it.

After a crash at any moment, :meth:`Writer.recover` (run at start) finds the entry and
completes the write when the note holds the old bytes or a torn mix of old and new, so a note
is always either the old content or the new content. If the note holds anything else, the
user edited it while vaultd was down, and it is left alone.

Test hook: when the environment variable ``VAULTD_CRASH_AT`` is set (read at start) to one
of ``after_journal``, ``mid_write`` (write only the first half of the new bytes),
``before_truncate`` or ``before_clear``, :meth:`Writer.write` calls ``os._exit(70)`` at that
point. It exists only so that tests can crash a real process mid-write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from vaultd.edges.vault import LinkError, is_note_path, locate, open_note
from vaultd.errors import WriteConflict, WriteError

__all__ = ["CRASH_EXIT_CODE", "CRASH_POINTS", "Outcome", "Recovery", "Writer", "write_whole"]

log = logging.getLogger("vaultd.writer")

Outcome = Literal["completed", "already_done", "left_alone", "missing", "bad_entry"]

#: Environment variable naming the point at which :meth:`Writer.write` dies (test hook).
CRASH_ENV = "VAULTD_CRASH_AT"
CRASH_POINTS = ("after_journal", "mid_write", "before_truncate", "before_clear")
CRASH_EXIT_CODE = 70

BLOCK = 4096
_ENTRY_VERSION = 1
_SLOT_PREFIX, _SLOT_SUFFIX = "slot-", ".journal"
_TEMP_SUFFIX = ".tmp"
_NOTE_LOCKS = 64  # writes to one note are serialised by one of these (by path hash)
_READ_CHUNK = 1 << 20
_BASE_NAME = "vaultd.base"  # the report's base file (publish.BASE_NAME), written like a note
#: How long a write waits for a lease while the note is open elsewhere, before it goes on
#: without one.
LEASE_WAIT = 0.25
_HAS_LEASES = hasattr(fcntl, "F_SETLEASE")  # Linux only
_F_SETLEASE: int = getattr(fcntl, "F_SETLEASE", 1024)
_F_SETSIG: int = getattr(fcntl, "F_SETSIG", 10)


@dataclass(frozen=True)
class Recovery:
    """What :meth:`Writer.recover` did with one journal entry.

    ``path`` is the note (``vault / relative path``), or the journal file itself for a
    ``bad_entry``.
    """

    path: Path
    outcome: Outcome
    detail: str


_RECOVERED = {
    "completed": "an interrupted write was finished",
    "already_done": "an interrupted write had been made already",
    "left_alone": "an interrupted write was not applied",
    "missing": "an interrupted write was dropped",
    "bad_entry": "an unusable journal entry was cleared",
}


def recovery_sentence(outcome: Outcome, detail: str) -> str:
    """What recovery did to one entry, as the log says it: one plain sentence."""
    return f"{_RECOVERED[outcome]}: {detail}"


@dataclass(frozen=True)
class _Entry:
    rel: str
    old: bytes
    new: bytes


class _BadEntry(Exception):
    """A journal entry that cannot be used; the message says why."""


class Writer:
    """Rewrites notes of one vault in place, crash-safely (see the module docstring)."""

    def __init__(
        self, vault: Path, on_written: Callable[[Path, os.stat_result], None] | None = None,
        *, leases: bool = True,
    ) -> None:
        """``on_written(path, stat)`` is told of each write vaultd made (the daemon uses it
        to tell its own writes from the user's). ``leases=False`` writes without a write
        lease, as where the OS has none (tests and bench/hammer.py use it)."""
        self.vault = Path(vault)
        self.on_written = on_written
        self.leases = leases and _HAS_LEASES
        self.unleased = 0  # writes made without a lease (none to be had, or leases off)
        self._lease_given: set[int] = set()  # filesystems (st_dev) that gave a lease
        self._lease_never: set[int] = set()  # ... none yet, in a whole LEASE_WAIT
        self.journal_dir = self.vault / ".vaultd" / "journal"
        self._vault_real = Path(os.path.realpath(self.vault))
        self._note_locks = [threading.Lock() for _ in range(_NOTE_LOCKS)]
        self._slots_lock = threading.Lock()  # the free slots, and recovery
        self._free_slots: list[int] = []
        self._slot_locks: dict[int, int] = {}  # slot -> the fd holding its flock
        self._held: dict[str, tuple[int, Path]] = {}  # note -> its unfinished write's slot

    # ------------------------------------------------------------------ write

    def write(self, path: Path, expected: bytes, new: bytes) -> None:
        """Replace the note's bytes ``expected`` by ``new``, in place.

        ``path`` is absolute or relative to the vault. Raises :class:`WriteConflict` (and
        writes nothing) if the note no longer holds ``expected`` (``current`` is ``None`` if it
        vanished); :class:`WriteError` if the note cannot be written (outside the vault,
        through a symlink leading out of the vault, not a regular file, an OS error, the
        journal cannot be written). Does nothing if ``expected == new`` and the note matches.
        The note is never created.
        """
        path = Path(path)
        lock = self._note_locks[hash(os.path.abspath(path)) % _NOTE_LOCKS]
        with lock:
            self._write(path, bytes(expected), bytes(new))

    def _write(self, path: Path, expected: bytes, new: bytes) -> None:
        vault_real, rel = self._locate(path)
        self._finish_pending(path, vault_real, rel)
        fd = _open_note(vault_real, rel, path)
        leased = False
        try:
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise WriteError(f"{path}: not a regular file")
                # From the look to the last byte written, under a write lease where the OS
                # gives one: any other open of the note (an editor's save, a reader) waits
                # until the write is done, so it neither lands unseen in between nor sees
                # half of the write.
                leased = self._lease(fd)
                current = _read_all(fd)
            except OSError as exc:
                raise _os_error(path, exc) from exc
            if current != expected:
                raise WriteConflict(current)
            if expected == new:
                return

            slot = self._take_slot(path)
            try:
                self._write_journaled(path, fd, vault_real, rel, slot, expected, new)
            finally:
                self._give_back(slot)
                if leased:
                    _unlease(fd)
                    leased = False
            _still_the_note(vault_real, rel, fd)
            if self.on_written is not None:
                self.on_written(path, os.fstat(fd))
        finally:
            if leased:
                _unlease(fd)
            os.close(fd)

    def _write_journaled(self, path: Path, fd: int, vault_real: Path, rel: str, slot: int,
                         expected: bytes, new: bytes) -> None:
        entry = self._journal(path, vault_real, rel, slot, expected, new)

        # The journal fsync takes a moment: look again, right before touching the note (under
        # a lease, nobody else could have opened it meanwhile).
        try:
            current = _read_all(fd)
        except OSError as exc:
            self._clear(entry)
            raise _os_error(path, exc) from exc
        if current != expected:
            self._clear(entry)
            raise WriteConflict(current)
        _crash_point("after_journal")

        try:
            _rewrite(fd, new, crash_hooks=True)
        except OSError as exc:
            if not self._restore_or_keep(path, fd, expected, entry):
                with self._slots_lock:  # the slot is not given back until it is finished
                    self._held[rel] = (slot, entry)
            raise _os_error(path, exc) from exc
        _crash_point("before_clear")
        self._clear(entry)

    def _lease(self, fd: int) -> bool:
        """Take a write lease on the note (Linux), waiting up to ``LEASE_WAIT`` seconds while
        the note is open elsewhere; False where no lease can be had (then the write goes on
        as before: see the module docstring)."""
        if not self.leases:
            self.unleased += 1
            return False
        try:
            device = os.fstat(fd).st_dev
        except OSError:
            device = -1
        # A filesystem that never gave a lease (one that always says EAGAIN) is not waited on.
        wait = 0.0 if device in self._lease_never else LEASE_WAIT
        deadline = time.monotonic() + wait
        pause = 0.0002
        while True:
            try:
                # A lease break is signalled to the holder, by default with SIGIO, whose
                # default action ends the process: SIGURG is ignored unless handled.
                fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
                fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)
                self._lease_given.add(device)
                self._lease_never.discard(device)
                return True
            except OSError as exc:
                if exc.errno != errno.EAGAIN or time.monotonic() >= deadline:
                    self.unleased += 1
                    if wait and device not in self._lease_given:
                        self._lease_never.add(device)
                    log.debug("no write lease (%s): writing without one", exc.strerror)
                    return False
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def _take_slot(self, path: Path) -> int:
        """A journal slot of this writer's: free, or newly claimed (see :meth:`_claim`)."""
        with self._slots_lock:
            if self._free_slots:
                return self._free_slots.pop()
            return self._claim(path)

    def _claim(self, path: Path) -> int:
        """The first slot no other writer holds: its file is locked (``flock``) for as long as
        this writer lives, so several processes writing to one vault (a daemon and a
        ``--once`` run, or the processes of one run) never share a slot, and recovery leaves
        a live writer's slots alone. A slot holding an entry nobody holds is left for
        recovery."""
        jdir = self._vault_real / ".vaultd" / "journal"
        try:
            jfd = _journal_fd(self._vault_real, create=True)
            assert jfd is not None
            try:
                number = 0
                while True:
                    if number in self._slot_locks:
                        number += 1
                        continue
                    name = f"{_SLOT_PREFIX}{number}{_SLOT_SUFFIX}"
                    fd = _open_entry(jfd, name, jdir, os.O_RDWR | os.O_CREAT)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)
                        number += 1
                        continue
                    except BaseException:
                        os.close(fd)
                        raise
                    try:
                        size = os.fstat(fd).st_size
                        if not size:
                            os.fchmod(fd, 0o600)
                            _fsync_dir(jfd)  # the slot's name must survive a crash
                    except BaseException:
                        os.close(fd)
                        raise
                    if size:  # an entry a crashed writer left: recovery's
                        os.close(fd)
                        number += 1
                        continue
                    self._slot_locks[number] = fd
                    return number
            finally:
                os.close(jfd)
        except OSError as exc:
            raise WriteError(f"{path}: cannot write the journal in {jdir}: "
                             f"{exc.strerror or exc}", transient=True) from exc

    def create(self, folder: Path, name: str, data: bytes) -> Path:
        """A new note ``folder/name`` holding ``data``, whole or not at all (a crash leaves
        at most a hidden temporary file, never a half note), and its path. Never replaces a
        file: when the name is taken, the next free ``<name> (2).md``, ``(3)`` ... is used.
        ``folder`` is made if missing; it must be inside the vault, reached through no
        symbolic link. :class:`WriteError` when it cannot be created."""
        folder = Path(folder)
        vault_real, rel = self._locate(folder / name)
        parts = rel.split("/")[:-1]
        here = vault_real
        try:
            for part in parts:
                here = here / part
                with contextlib.suppress(FileExistsError):
                    os.mkdir(here)
                if os.path.islink(here) or not os.path.isdir(here):
                    raise WriteError(f"{here}: is not a folder of the vault (a link, or a file)")
            stem = name[:-3] if name.endswith(".md") else name
            for number in range(1, 1000):
                target = here / (name if number == 1 else f"{stem} ({number}).md")
                try:
                    write_whole(target, data, mode=0o666, replace=False)
                except FileExistsError:
                    continue
                created = folder / target.name
                if self.on_written is not None:
                    with contextlib.suppress(OSError):
                        self.on_written(created, os.stat(target))
                return created
        except OSError as exc:
            raise _os_error(folder / name, exc) from exc
        raise WriteError(f"{folder / name}: every name up to ({number}) is taken")

    def close(self) -> None:
        """Give up this writer's journal slots (they are free: every write has finished)."""
        with self._slots_lock:
            locks, self._slot_locks = self._slot_locks, {}
            self._free_slots = []
        for fd in locks.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _give_back(self, slot: int) -> None:
        with self._slots_lock:
            if all(held != slot for held, _ in self._held.values()):
                self._free_slots.append(slot)

    def _locate(self, path: Path) -> tuple[Path, str]:
        """(vault's real path, note's path relative to it); see :func:`vault.locate`."""
        found = locate(self.vault, path, self._vault_real)
        if found is None:
            raise WriteError(f"{path}: not inside the vault {self._vault_real}")
        if found[1].split("/", 1)[0] == ".vaultd":
            raise WriteError(f"{path}: is inside vaultd's own directory")
        return found

    def _finish_pending(self, path: Path, vault_real: Path, rel: str) -> None:
        """Complete an earlier write of this note that failed and could not be undone.

        Its entry is held in its journal slot (for :meth:`recover`, too); a later write must
        not start from the torn note, nor let the slot be reused (and with it the only copy of
        the new bytes) before the write is finished.
        """
        with self._slots_lock:
            held = self._held.get(rel)
        if held is None:
            return
        slot, entry_path = held
        try:
            entry: _Entry | None = self._read_slot(entry_path)
        except _BadEntry as exc:
            log.warning("journal entry %s is unusable (%s); cleared", entry_path, exc)
            entry = None
        if entry is not None:
            outcome, detail, keep = self._recover_one(vault_real, entry)
            log.warning("journal: %s: %s", path, recovery_sentence(outcome, detail))
            if keep:
                raise WriteError(f"{path}: an earlier write is not finished: {detail}",
                                 transient=True)
        self._clear(entry_path)
        with self._slots_lock:
            del self._held[rel]
        self._give_back(slot)

    def _journal(self, path: Path, vault_real: Path, rel: str, slot: int, old: bytes,
                 new: bytes) -> Path:
        """Durably record the write in journal slot ``slot``; returns the slot's path."""
        jdir = vault_real / ".vaultd" / "journal"
        name = f"{_SLOT_PREFIX}{slot}{_SLOT_SUFFIX}"
        entry = jdir / name
        data = _encode_entry(rel, old, new)
        try:
            jfd = _journal_fd(vault_real, create=True)
            assert jfd is not None
            try:
                # Through the descriptor that holds the slot's lock while it is still the
                # slot's file (closing another descriptor of it would drop the lock on NFS).
                held = self._slot_locks.get(slot)
                fd = held if held is not None and _is_file(held, jfd, name) else -1
                created = False
                if fd < 0:
                    try:
                        fd = _open_entry(jfd, name, jdir, os.O_RDWR)
                    except FileNotFoundError:
                        fd = _open_entry(jfd, name, jdir, os.O_RDWR | os.O_CREAT | os.O_EXCL)
                        created = True
                try:
                    if created:
                        os.fchmod(fd, 0o600)
                    try:
                        _pwrite_all(fd, data)
                        os.ftruncate(fd, len(data))
                        _fsync(fd)
                    except OSError:
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, 0)
                        raise
                finally:
                    if fd != held:
                        os.close(fd)
                if created:  # the slot's name must survive a crash too
                    os.fsync(jfd)
            finally:
                os.close(jfd)
        except OSError as exc:
            raise WriteError(
                f"{path}: cannot write the journal in {jdir}: {exc.strerror or exc}",
                transient=True,
            ) from exc
        return entry

    def _read_slot(self, entry: Path) -> _Entry:
        """The entry in the slot at ``entry``, read through no link."""
        try:
            jfd = _journal_fd(self._vault_real)
            if jfd is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            try:
                fd = _open_entry(jfd, entry.name, entry.parent, os.O_RDONLY)
            finally:
                os.close(jfd)
            try:
                raw = _read_all(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _BadEntry(f"unreadable: {exc.strerror or exc}") from exc
        return _parse_entry(raw)

    def _restore_or_keep(self, path: Path, fd: int, old: bytes, entry: Path) -> bool:
        """The in-place write failed: put the old bytes back (True), or leave the entry for
        the next write of the note or recover() to complete (False)."""
        try:
            _rewrite(fd, old, crash_hooks=False)
        except OSError as exc:
            log.error(
                "%s: could not restore the old content (%s); the journal entry %s is kept "
                "so that the next write of the note, or recover(), completes the write",
                path,
                exc.strerror or exc,
                entry,
            )
            return False
        self._clear(entry)
        return True

    def _clear(self, entry: Path) -> None:
        """Empty a journal slot. Not synced, and failing is harmless: recover() finds the
        note up to date, or edited since, and leaves it be."""
        try:
            jfd = _journal_fd(self._vault_real)
            if jfd is None:
                return
            try:
                fd = _open_entry(jfd, entry.name, entry.parent, os.O_WRONLY)
            finally:
                os.close(jfd)
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not clear journal entry %s: %s", entry, exc.strerror or exc)

    # ---------------------------------------------------------------- recover

    def recover(self) -> list[Recovery]:
        """Finish or discard every write left in the journal by a crash; report each entry."""
        with self._slots_lock:
            return self._recover()

    def _recover(self) -> list[Recovery]:
        jdir = self.journal_dir
        vault_real = Path(os.path.realpath(self.vault))
        try:
            jfd = _journal_fd(vault_real)
        except NotADirectoryError:
            return []
        except OSError as exc:
            raise WriteError(f"{jdir}: {exc.strerror or exc}") from exc
        if jfd is None:
            return []
        try:
            return self._recover_in(jfd, jdir, vault_real)
        except OSError as exc:
            raise WriteError(f"{jdir}: {exc.strerror or exc}") from exc
        finally:
            os.close(jfd)

    def _recover_in(self, jfd: int, jdir: Path, vault_real: Path) -> list[Recovery]:
        results: list[Recovery] = []
        for name in sorted(os.listdir(jfd)):
            entry_path = jdir / name
            if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                # A crash while journaling: the note was never touched.
                _remove(jfd, name, entry_path)
                continue
            try:
                st = os.lstat(name, dir_fd=jfd)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _refused(entry_path, st.st_mode)
            if not (name.startswith(_SLOT_PREFIX) and name.endswith(_SLOT_SUFFIX)):
                # The journal holds slots alone: anything else is no entry of vaultd's.
                results.append(Recovery(entry_path, "bad_entry", "not a journal slot"))
                _remove(jfd, name, entry_path)
                continue
            if not st.st_size:
                continue  # a free slot
            with _unless_held(jfd, name, jdir) as fd:
                if fd is None:
                    continue  # a live writer's (another process's): its write is under way
                raw = _read_all(fd)
                if not raw:
                    continue  # another process recovered it meanwhile
                try:
                    entry = _parse_entry(raw)
                    if not _is_own_file(vault_real, entry.rel):
                        raise _BadEntry(f"it names {entry.rel!r}, which is not a note vaultd "
                                        "writes (a *.md note outside dot-folders); not touched")
                except _BadEntry as exc:
                    results.append(Recovery(entry_path, "bad_entry", str(exc)))
                    _discard(entry_path, fd)
                    continue
                outcome, detail, keep = self._recover_one(vault_real, entry)
                results.append(Recovery(self.vault / entry.rel, outcome, detail))
                if not keep:  # a kept slot holds its entry: no writer claims it
                    _discard(entry_path, fd)
        with contextlib.suppress(OSError):
            os.fsync(jfd)
        return results

    def _recover_one(self, vault_real: Path, entry: _Entry) -> tuple[Outcome, str, bool]:
        """(outcome, detail, keep the entry) for one valid entry."""
        try:
            fd = open_note(vault_real, entry.rel, os.O_RDWR | os.O_NONBLOCK)
        except FileNotFoundError:
            return "missing", "the note no longer exists", False
        except LinkError:
            return "left_alone", "the path now leads through a symbolic link; not followed", False
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                return "left_alone", "the path is no longer a regular file", False
            return "left_alone", f"cannot open: {exc.strerror}; entry kept for a retry", True
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "left_alone", "the path is no longer a regular file", False
            current = _read_all(fd)
            if current == entry.new:
                return "already_done", "the note already holds the new content", False
            if current == entry.old:
                how = "the note held the old content"
            elif _is_torn(current, entry.old, entry.new):
                how = "the note was torn between old and new content"
            else:
                return (
                    "left_alone",
                    "the note was edited after the write began; left as it is",
                    False,
                )
            _rewrite(fd, entry.new, crash_hooks=False)
            return "completed", f"{how}; wrote the new content", False
        except OSError as exc:
            return "left_alone", f"cannot rewrite: {exc.strerror}; entry kept for a retry", True
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- helpers


_CRASH_AT = os.environ.get(CRASH_ENV)  # read once: a test sets it for a whole process


def _crash_point(point: str) -> None:
    """Test hook: die here if ``VAULTD_CRASH_AT`` names this point."""
    if point == _CRASH_AT:
        os._exit(CRASH_EXIT_CODE)


def _rewrite(fd: int, data: bytes, *, crash_hooks: bool) -> None:
    """Write ``data`` over the file from offset 0, truncate to its length, fsync."""
    if crash_hooks and _CRASH_AT == "mid_write":
        _pwrite_all(fd, data[: len(data) // 2])
        os._exit(CRASH_EXIT_CODE)
    _pwrite_all(fd, data)
    if crash_hooks:
        _crash_point("before_truncate")
    os.ftruncate(fd, len(data))
    _fsync(fd)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while chunk := os.pread(fd, _READ_CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _pwrite_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        n = os.pwrite(fd, view[offset:], offset)
        if n <= 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        offset += n


def _fsync(fd: int) -> None:
    """fsync; on macOS, F_FULLFSYNC, since plain fsync there does not reach the disk."""
    full_fsync: int | None = getattr(fcntl, "F_FULLFSYNC", None)
    if sys.platform == "darwin" and full_fsync is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, full_fsync)
            return
    os.fsync(fd)


def write_whole(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True,
                sync: bool = True) -> None:
    """vaultd's one writer of a small file of its own, whole or not at all: ``data`` goes to
    a new temporary dot-file beside ``path`` (created exclusively: never through a link),
    fsynced unless ``sync`` is false, which then takes ``path``'s place (``os.replace``) or,
    with ``replace`` false, appears at ``path`` only if no file is there (a hard link;
    ``FileExistsError`` otherwise; on a file system without hard links the file is created
    exclusively). Notes are the :class:`Writer`'s business. ``OSError`` as it comes."""
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
    try:
        _write_new(temp, data, mode, sync)
        if replace:
            os.replace(temp, path)
            return
        try:
            os.link(temp, path)  # never replaces a file: FileExistsError if one is there
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create it exclusively
            _write_new(path, data, mode, sync)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _write_new(path: Path, data: bytes, mode: int, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            _fsync(fd)
    finally:
        os.close(fd)


def _journal_fd(vault_real: Path, create: bool = False) -> int | None:
    """``VAULT/.vaultd/journal`` opened as a folder, through no link (None when it is not
    there and ``create`` is false; with ``create`` missing folders are made 0700, durably).

    A symbolic link at ``.vaultd`` or ``journal`` is refused (:class:`WriteError`): vaultd
    never follows a link in its own folder, wherever it points."""
    fd = os.open(vault_real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        shown = vault_real
        for name in (".vaultd", "journal"):
            shown = shown / name
            made = False
            if create:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            try:
                step = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, fd):
                    raise _refused(shown, stat.S_IFLNK) from None
                raise
            try:
                if made:
                    os.fchmod(step, 0o700)  # mkdir's mode is filtered by the umask
                    os.fsync(fd)
            except BaseException:
                os.close(step)
                raise
            os.close(fd)
            fd = step
        found, fd = fd, -1
        return found
    finally:
        if fd >= 0:
            os.close(fd)


def _open_entry(jfd: int, name: str, jdir: Path, flags: int) -> int:
    """The journal file ``name`` opened with ``flags`` through no link, never blocking (a
    FIFO put there): anything but a regular file is refused (:class:`WriteError`)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                     dir_fd=jfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
            with contextlib.suppress(OSError):
                raise _refused(jdir / name, os.lstat(name, dir_fd=jfd).st_mode) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _refused(jdir / name, mode)
    return fd


def _refused(path: Path, mode: int) -> WriteError:
    """Why vaultd will not use ``path`` in its own folder (a link, a FIFO, a device...)."""
    if stat.S_ISLNK(mode):
        what = "is a symbolic link: vaultd never follows a link in its folder .vaultd"
    else:
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file")
        what = f"is {kind}, not a regular file: vaultd's journal holds only files it wrote"
    return WriteError(f"{path}: {what}; remove it (vaultd did not touch it)")


def _is_own_file(vault_real: Path, rel: str) -> bool:
    """Whether ``rel`` names a file vaultd writes: a note (:func:`vault.is_note_path`) or
    the report's base file (``vaultd.base``, outside dot-folders)."""
    path = vault_real / rel
    if PurePosixPath(rel).name == _BASE_NAME:
        return not any(part.startswith(".") for part in PurePosixPath(rel).parts)
    return is_note_path(vault_real, path)


def _still_the_note(vault_real: Path, rel: str, fd: int) -> None:
    """After a write through ``fd``: :class:`WriteConflict` if the note's path now names
    another file (an editor saved by writing a new file and renaming it over the note while
    vaultd wrote the old one), so that the caller splices into what the path holds now."""
    try:
        there = open_note(vault_real, rel, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise WriteConflict(None) from None
    except OSError:
        return  # whatever it is now, the next read says
    try:
        here, now = os.fstat(fd), os.fstat(there)
        if (here.st_dev, here.st_ino) == (now.st_dev, now.st_ino):
            return
        current = _read_all(there)
    except OSError:
        return
    finally:
        os.close(there)
    raise WriteConflict(current)


def _fsync_dir(dir_fd: int) -> None:
    os.fsync(dir_fd)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _unlease(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)


def _remove(jfd: int, name: str, path: Path) -> None:
    """Remove a journal temp file (or folder) by name; a link is removed, not followed."""
    try:
        os.unlink(name, dir_fd=jfd)
    except IsADirectoryError:
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=jfd)
    except OSError as exc:
        log.warning("could not remove journal entry %s: %s", path, exc.strerror or exc)


def _discard(path: Path, fd: int) -> None:
    """Empty a slot through its descriptor ``fd``."""
    try:
        os.ftruncate(fd, 0)
    except OSError as exc:
        log.warning("could not clear journal entry %s: %s", path, exc.strerror or exc)


# OS errors that say nothing about the note itself: the same write may succeed later.
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
    errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
    errno.ETXTBSY,
})
_NOT_FOLLOWED = "is a symbolic link, or inside a linked folder: vaultd does not write through links"


def _os_error(path: Path, exc: OSError) -> WriteError:
    return WriteError(f"{path}: {exc.strerror or exc}", transient=exc.errno in TRANSIENT_ERRNOS)


def _open_note(vault_real: Path, rel: str, path: Path) -> int:
    """The note opened for reading and writing, through no link (:func:`vault.open_note`);
    :class:`WriteConflict` (``None``) if it is not there."""
    try:
        return open_note(vault_real, rel, os.O_RDWR | os.O_NONBLOCK)
    except FileNotFoundError:
        raise WriteConflict(None) from None
    except LinkError:
        raise WriteError(f"{path}: {_NOT_FOLLOWED}") from None
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
            raise WriteError(f"{path}: not a regular file") from None
        raise _os_error(path, exc) from exc


def _checksum(rel: str, old: bytes, new: bytes) -> str:
    digest = hashlib.sha256()
    for part in (os.fsencode(rel), old, new):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _encode_entry(rel: str, old: bytes, new: bytes) -> bytes:
    doc = {
        "version": _ENTRY_VERSION,
        "path": rel,
        "old": base64.b64encode(old).decode("ascii"),
        "new": base64.b64encode(new).decode("ascii"),
        "sha256": _checksum(rel, old, new),
    }
    return json.dumps(doc, ensure_ascii=True).encode("ascii")


@contextlib.contextmanager
def _unless_held(jfd: int, name: str, jdir: Path) -> Iterator[int | None]:
    """The journal slot opened (:func:`_open_entry`), with its lock taken; None while a
    live writer holds that lock."""
    fd = _open_entry(jfd, name, jdir, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


def _is_file(fd: int, jfd: int, name: str) -> bool:
    """Whether ``fd`` is the file ``name`` in the journal now (not one deleted or replaced
    since)."""
    try:
        here, there = os.fstat(fd), os.lstat(name, dir_fd=jfd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _parse_entry(raw: bytes) -> _Entry:
    """Parse and validate a journal entry; :class:`_BadEntry` says what is wrong with it."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _BadEntry("not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("version") != _ENTRY_VERSION:
        raise _BadEntry("not a vaultd journal entry (version 1)")
    rel, old_b64, new_b64, check = (doc.get(k) for k in ("path", "old", "new", "sha256"))
    if not (
        isinstance(rel, str)
        and isinstance(old_b64, str)
        and isinstance(new_b64, str)
        and isinstance(check, str)
    ):
        raise _BadEntry("missing or mistyped fields")
    try:
        old = base64.b64decode(old_b64, validate=True)
        new = base64.b64decode(new_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadEntry("content is not valid base64") from exc
    try:
        if check != _checksum(rel, old, new):
            raise _BadEntry("checksum mismatch")
    except UnicodeError as exc:
        raise _BadEntry("path is not encodable") from exc
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or pure.parts[:1] == (".vaultd",):
        raise _BadEntry(f"unsafe note path {rel!r}")
    return _Entry(rel, old, new)


def _is_torn(current: bytes, old: bytes, new: bytes) -> bool:
    """Whether ``current`` is a mix of ``old`` and ``new`` that an interrupted write can leave.

    The length must be ``len(old)``, ``len(new)``, their maximum, or lie between ``len(old)``
    and a larger ``len(new)`` (a growing write cut short). Every 4096-byte block of
    ``current`` must equal the same byte range of ``old`` or of ``new`` (a write cut short at
    a page, a missing or early truncate, out-of-order page writeback), except that one block
    may be cut: new bytes up to some offset, old bytes after it (a write cut short mid-page).
    """
    size = len(current)
    lo, hi = len(old), len(new)
    if size not in (lo, hi, max(lo, hi)) and not lo < size < hi:
        return False
    cut_seen = False
    for start in range(0, size, BLOCK):
        block = current[start : start + BLOCK]
        end = start + len(block)
        old_part, new_part = old[start:end], new[start:end]
        if block in (old_part, new_part):
            continue
        if cut_seen or not _is_cut(block, old_part, new_part):
            return False
        cut_seen = True
    return True


def _is_cut(block: bytes, old_part: bytes, new_part: bytes) -> bool:
    """Whether ``block == new_part[:k] + old_part[k:]`` for some ``k``."""
    if len(old_part) != len(block):
        return False
    k = 0
    limit = len(new_part)
    while k < limit and block[k] == new_part[k]:
        k += 1
    return block[k:] == old_part[k:]
