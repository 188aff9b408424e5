"""Panel notes that run again on their own: ``every: 7d`` (also ``12h``, ``1d``, ``30d``).

When a run is due is worked out from the notes alone, never from memory: ``every`` after
the start of the latest run the panel note or its answer notes name. So a restart, a
reboot or a week offline makes one catch-up run, not one per period missed; and a run that
failed for a reason outside the note (no key, a provider down) is tried at the next period,
not again and again. A due run is started by setting the note ``Pending``, as a person
would: it then runs like any other, and a daemon stopped meanwhile starts it on its next
start. A sync tool's conflict copy of a panel note is never run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vaultd.edges.vault import conflict_copy, read_note
from vaultd.edges.writer import Writer
from vaultd.errors import NoteReadError, WriteConflict, WriteError
from vaultd.note.panel import next_run, read_panel
from vaultd.note.splice import Changes, apply
from vaultd.note.text import Note, not_vaultds
from vaultd.runs.panel import answers_folder, read_answers, vault_name

log = logging.getLogger("vaultd.repeat")

FINISHED = ("done", "error")
HEAD_BYTES = 4096


def mentions_every(path: Path) -> bool:
    """Whether the note's head names ``every`` at all: the quick look before a whole read."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return False
    return head.startswith(b"---") and b"\nevery:" in head.lower()


def last_run(path: Path, note: Note, vault: Path, max_bytes: int, prefix: str) -> str | None:
    """The latest run the panel note at ``path`` or its answer notes name."""
    runs = [a.run for a in read_answers(answers_folder(path), vault, path.name[:-3], max_bytes,
                                        prefix)]
    own = note.properties.get("run")
    if isinstance(own, str):
        runs.append(own)
    return max(runs, default=None)


def schedule_of(path: Path, note: Note, vault: Path, max_bytes: int, prefix: str,
                now: datetime) -> datetime | None:
    """When the note runs next, in UTC; None when it is not a panel note with a valid
    ``every`` (or is a sync conflict copy)."""
    spec = read_panel(note)[0]
    if spec is None or spec.every is None or conflict_copy(path) is not None:
        return None
    if not_vaultds(note, None) is not None:
        return None
    return next_run(last_run(path, note, vault, max_bytes, prefix), spec.every, now)


class Repeats:
    """The vault's scheduled panel notes and when each runs next; safe across threads."""

    def __init__(self, vault: Path, writer: Writer, max_bytes: int, prefix: str,
                 now: Callable[[], datetime]) -> None:
        self.vault = vault
        self.writer = writer
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.now = now
        self._due: dict[Path, datetime] = {}
        self._lock = threading.Lock()

    def utcnow(self) -> datetime:
        return self.now().astimezone(UTC)

    def look(self, path: Path) -> None:
        """Note what ``path`` says of its schedule now (it changed, or a run ended)."""
        try:
            _, note = read_note(path, self.max_bytes, self.vault)
        except NoteReadError:
            due = None
        else:
            due = schedule_of(path, note, self.vault, self.max_bytes, self.prefix,
                              self.utcnow())
        with self._lock:
            if due is None:
                self._due.pop(path, None)
            else:
                self._due[path] = due

    def forget(self, path: Path) -> None:
        with self._lock:
            self._due.pop(path, None)

    def scheduled(self) -> dict[Path, datetime]:
        with self._lock:
            return dict(self._due)

    def start_due(self) -> list[Path]:
        """Set every due panel note ``Pending`` (a run starts); the notes so set."""
        now = self.utcnow()
        with self._lock:
            due = [path for path, at in self._due.items() if at <= now]
        started = []
        for path in due:
            self.forget(path)  # looked at again when its run ends
            if self._set_pending(path):
                started.append(path)
        return started

    def _set_pending(self, path: Path) -> bool:
        try:
            data, note = read_note(path, self.max_bytes, self.vault)
        except NoteReadError:
            return False
        if not_vaultds(note, FINISHED) is not None:  # running already, or no longer vaultd's
            return False
        new = apply(note, Changes(status="Pending")).encode("utf-8")
        try:
            self.writer.write(path, data, new)
        except (WriteConflict, WriteError) as exc:
            log.warning("%s: could not start its scheduled run: %s", path, exc)
            return False
        log.info("%s: a scheduled run is due; set Pending", vault_name(path, self.vault))
        return True
