"""The watcher: file events from watchdog, turned into note paths for the scheduler.

Created, modified, closed-after-writing and moved-in files are changes; a folder created
or moved in is searched for notes (its files may predate the watch on it). Reads are not
changes: watchdog's ``opened`` and ``closed_no_write`` events, which any program reading
a note causes (Obsidian, a sync client, vaultd itself), are filtered out before they are
even queued. Dot-folders, the templates folder and non-``.md`` files are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from vaultd.errors import VaultdError
from vaultd.vault import is_note_path, iter_notes

log = logging.getLogger("vaultd.watcher")

# Only these reach the handler: opens and reads never do.
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, vault: Path, changed: Callable[[Path], None],
                 gone: Callable[[Path], None]) -> None:
        self.vault = vault
        self.changed = changed
        self.gone = gone

    def _note(self, raw: bytes | str) -> Path | None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        return path if is_note_path(self.vault, path) else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # one bad event must not stop the watcher thread
            log.exception("could not handle %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileDeletedEvent):
            if path := self._note(event.src_path):
                self.gone(path)
        elif isinstance(event, FileMovedEvent):
            if old := self._note(event.src_path):
                self.gone(old)
            if new := self._note(event.dest_path):
                self.changed(new)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
            if path := self._note(event.src_path):
                self.changed(path)
        elif isinstance(event, DirCreatedEvent | DirMovedEvent):
            raw = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            folder = Path(raw.decode() if isinstance(raw, bytes) else raw)
            if folder == self.vault or is_note_path(self.vault, folder / "x.md"):
                for path in iter_notes(folder, self.vault):
                    self.changed(path)


class Watcher:
    """Watches ``vault`` recursively; calls ``changed(path)`` / ``gone(path)`` from its thread."""

    def __init__(self, vault: Path, changed: Callable[[Path], None],
                 gone: Callable[[Path], None]) -> None:
        self._observer = Observer()
        self._handler = _Handler(vault, changed, gone)
        self._vault = vault

    def start(self) -> None:
        try:
            self._observer.schedule(self._handler, str(self._vault), recursive=True,
                                    event_filter=EVENTS)
            self._observer.start()
        except OSError as exc:
            raise VaultdError(f"{self._vault}: cannot watch the vault: {exc}") from exc

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)
