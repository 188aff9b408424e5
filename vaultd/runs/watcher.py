"""The watcher: file events from watchdog, turned into note paths for the scheduler.

Created, modified, closed-after-writing and moved-in files are changes, and so is a change
of attributes (a ``chmod`` that makes a note writable again); a folder created or moved in
is searched for notes (its files may predate the watch on it). Reads are not changes:
watchdog's ``opened`` and ``closed_no_write`` events, which any program reading a note
causes (Obsidian, a sync client, vaultd itself), are filtered out before they are even
queued. Dot-folders, the templates folder and non-``.md`` files are ignored.

When the kernel's inotify queue overflows, events are lost. watchdog 7 handles the
``IN_Q_OVERFLOW`` itself (it logs a warning, drops its pending moves and re-adds its watches)
and tells event handlers nothing; so vaultd's own emitter adds a :class:`EventsLost` event
after watchdog's handling, and the handler calls ``lost()``, on which the daemon rescans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from vaultd.edges.vault import is_note_path, iter_notes
from vaultd.errors import VaultdError

log = logging.getLogger("vaultd.watcher")



class EventsLost(FileSystemEvent):
    """The OS dropped file events under ``src_path`` (the inotify queue overflowed)."""

    event_type = "lost"
    is_synthetic = True


# Only these reach the handler: opens and reads never do.
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileAttribEvent, FileClosedEvent, FileMovedEvent,
    FileDeletedEvent, DirCreatedEvent, DirMovedEvent, EventsLost,
]


def _observer() -> BaseObserver:
    """An inotify observer whose emitter reports overflows, where there is one (Linux)."""
    try:
        from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
    except ImportError:  # not Linux: the platform's own observer
        return Observer()

    class Emitter(InotifyEmitter):  # type: ignore[misc]
        def on_thread_start(self) -> None:
            super().on_thread_start()
            group: Any = getattr(self, "_inotify", None)
            handled = getattr(group, "on_queue_overflow", None)
            if group is None or handled is None:
                log.warning("this watchdog does not say when file events are lost")
                return

            def on_queue_overflow() -> None:
                handled()  # watchdog's own: re-add the watches first
                self.queue_event(EventsLost(self.watch.path))

            group.on_queue_overflow = on_queue_overflow

    observer = InotifyObserver()
    if not hasattr(observer, "_emitter_class"):
        log.warning("this watchdog does not say when file events are lost")
        return observer
    observer._emitter_class = Emitter
    return observer


class _Handler(FileSystemEventHandler):
    def __init__(self, vault: Path, changed: Callable[[Path], None],
                 gone: Callable[[Path], None], lost: Callable[[], None]) -> None:
        self.vault = vault
        self.changed = changed
        self.gone = gone
        self.lost = lost

    def _note(self, raw: bytes | str) -> Path | None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        return path if is_note_path(self.vault, path) else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # one bad event must not stop the watcher thread
            log.exception("could not handle %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, EventsLost):
            self.lost()
        elif isinstance(event, FileDeletedEvent):
            if path := self._note(event.src_path):
                self.gone(path)
        elif isinstance(event, FileMovedEvent):
            if old := self._note(event.src_path):
                self.gone(old)
            if new := self._note(event.dest_path):
                self.changed(new)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileAttribEvent
                        | FileClosedEvent):
            if path := self._note(event.src_path):
                self.changed(path)
        elif isinstance(event, DirCreatedEvent | DirMovedEvent):
            raw = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            folder = Path(raw.decode() if isinstance(raw, bytes) else raw)
            if folder == self.vault or is_note_path(self.vault, folder / "x.md"):
                for path in iter_notes(folder, self.vault):
                    self.changed(path)


class Watcher:
    """Watches ``vault`` recursively; calls ``changed(path)``, ``gone(path)`` and ``lost()``
    (events were dropped: look at everything again) from its thread."""

    def __init__(self, vault: Path, changed: Callable[[Path], None],
                 gone: Callable[[Path], None], lost: Callable[[], None] = lambda: None) -> None:
        self._observer = _observer()
        self._handler = _Handler(vault, changed, gone, lost)
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
