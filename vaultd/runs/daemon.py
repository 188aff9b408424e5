"""The daemon: watch the vault, queue pending notes, process them with a pool of workers.

Start-up: recover the journal, start watching (before the scan, so nothing slips between),
queue every note that is ``Pending`` or was left ``Processing`` by a run that died, then
tell systemd ``READY=1``. Signal handlers only set a flag; the main thread does the rest.
Shutdown stops taking work, lets in-flight writes finish and leaves unfinished notes
``Pending`` for the next start. A worker thread that dies is replaced.

When the OS drops file events (the inotify queue overflowed), the vault is scanned again.
When the vault's folder is deleted, or another folder takes its place (renamed in, or
deleted and made again), the watch sees nothing any more: the main loop compares the
folder's identity (device and inode) with the one it started on every second, and on a
change logs it and exits 1, so that systemd (``Restart=on-failure``) starts it again on the
folder now there, with that folder's journal, config and sandboxing; run by hand, start it
again.
A note that could not be written for a reason outside it (a full disk, a permission, the
journal folder) is tried again after ``write_retry`` seconds, doubling up to 5 minutes, 8
times at most; then vaultd says it gave up, and the note waits for its next change or start.

A note that asks the model while no request can be made (no API key, a refused key, the
API unreachable) is left as it is, ``Pending``, and waits: the daemon says why once, and
runs the waiting notes again when the model's back-off has passed, or at once on SIGHUP,
which also reads the service's environment file again (a key fixed there is used without
a restart).

The report note (``report_path``) is refreshed, with ``vaultd.base`` beside it,
``REPORT_DELAY`` seconds after notes finish (one refresh for a burst of them), and once
at start, but only when the report exists already: the daemon never creates it, so a
vault gets one only when asked (``vaultd report``). The report is not a note to process:
its file events are ignored (while it carries vaultd's marker), and only finished notes
ask for a refresh, never a write of the report itself, so the refresh cannot feed on its
own writes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from vaultd.config import Settings
from vaultd.edges.assistants import Assistants
from vaultd.edges.vault import asks_model, display_path, iter_notes, wants_run
from vaultd.edges.writer import write_whole
from vaultd.errors import VaultdError
from vaultd.obsidian.publish import is_mine, publish, report_paths
from vaultd.obsidian.status import STATE_FILE
from vaultd.runs.refresh import Debounced
from vaultd.runs.repeat import Repeats, mentions_every
from vaultd.runs.scheduler import NoteQueue
from vaultd.runs.services import Services, open_services
from vaultd.runs.session import NoteResult
from vaultd.runs.systemd import ENV_FILE, notify, read_env_file, watchdog_interval
from vaultd.runs.watcher import Watcher

log = logging.getLogger("vaultd.daemon")

MAX_WRITE_TRIES = 8
WAITING_LISTED = 1000  # waiting notes named in the state file, at most
MAX_RETRY_DELAY = 300.0
REPORT_DELAY = 5.0  # seconds after the last note finished
REPORT_MAX_WAIT = 30.0  # seconds after the first, while notes keep finishing
WAITING = ("notes that ask the model wait, left as they are, until it can be asked (tried "
           "again after a pause, or at once on SIGHUP); programmatic ones still run")


@dataclass
class _Stats:
    processed: int = 0
    done: int = 0
    errors: int = 0
    last_errors: list[tuple[str, str]] | None = None


class Daemon:
    def __init__(self, vault: Path, settings: Settings) -> None:
        self.vault = vault.resolve()
        self.settings = settings
        self.stop_event = threading.Event()
        self.queue = NoteQueue(settings.settle, max_wait=max(5.0, settings.settle * 10))
        self.stats = _Stats(last_errors=[])
        self._own: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) vaultd wrote
        self._own_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._tries: dict[Path, int] = {}  # notes whose write failed: attempts so far
        self._rescan = threading.Event()  # file events were lost: look at every note again
        self._state_warned = False
        self.services: Services | None = None  # while running
        self._warmed = False  # the SDK's import was started
        self._state_due = threading.Event()  # write the state file now, not in 5 s
        self.repeats: Repeats | None = None  # panel notes with `every:`, while running
        self.report_path = report_paths(self.vault, settings)[0]
        self._identity = _identity(self.vault)
        self._exit_code = 0
        self.refresher: Debounced | None = None
        self._report_warned = False
        self._waiting: set[Path] = set()  # notes left Pending while the model cannot be asked
        self._waiting_why: str | None = None  # said once, not once per note
        self._waiting_lock = threading.Lock()
        self._reload = threading.Event()  # SIGHUP: read the environment file again

    # -- events -----------------------------------------------------------------------

    def written(self, path: Path, st: os.stat_result) -> None:
        with self._own_lock:
            self._own[Path(path)] = (st.st_size, st.st_mtime_ns)

    def changed(self, path: Path) -> None:
        """A file event: queue the path, unless the file is just as vaultd last wrote it (or
        is not a regular file: a symbolic link is never a note)."""
        if path == self.report_path and self._is_report(path):
            return
        try:
            st = path.lstat()
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        with self._own_lock:
            if self._own.get(path) == (st.st_size, st.st_mtime_ns):
                return
            self._own.pop(path, None)
        self.queue.touch(path)
        self._warm_up_for(path)

    def _warm_up_for(self, path: Path, runnable: bool = False) -> None:
        """The first queued note that will ask the model starts the SDK's import (~2 s) in
        the background, so that it overlaps the settle time rather than follow it. Not
        before: an idle daemon without the SDK holds ~70 MB less. ``runnable``: the caller
        has found the note runnable already."""
        services = self.services
        if self._warmed or services is None or not services.clients:
            return
        if not ((runnable or wants_run(path)) and asks_model(path)):
            return
        self._warmed = True
        log.debug("%s will ask the model: the SDK is loaded meanwhile",
                  display_path(path, self.vault))
        for client in services.clients:
            client.warm_up()

    def gone(self, path: Path) -> None:
        with self._own_lock:
            self._own.pop(path, None)
        with self._waiting_lock:
            self._waiting.discard(path)
        self._tries.pop(path, None)
        self.queue.forget(path)

    def lost(self) -> None:
        """File events were dropped by the OS: every note is looked at again (main thread)."""
        log.warning("file events were lost (the inotify queue overflowed); rescanning the vault")
        self._rescan.set()  # the main loop rescans within a second

    # -- lifecycle --------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stop_event.set()

    def request_reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._reload.set()

    def run(self) -> int:
        with open_services(self.vault, self.settings, on_written=self.written) as services:
            self.services = services
            self.repeats = Repeats(self.vault, services.writer, self.settings.max_note_bytes,
                                   self.settings.property_prefix, services.engine.now)
            if services.credentials_problem:
                self._waiting_why = services.credentials_problem
                log.warning("%s: %s", services.credentials_problem, WAITING)
            watcher = Watcher(self.vault, self.changed, self.gone, self.lost)
            watcher.start()
            try:
                queued = self.scan()
                log.info("watching %s; %d notes queued", self.vault, queued)
                self._start_workers(services)
                self.refresher = Debounced(lambda: self._refresh_report(services),
                                           REPORT_DELAY, REPORT_MAX_WAIT, name="vaultd-report")
                self.refresher.start()
                self.refresher.poke()  # bring an existing report up to date
                notify("READY=1")
                notify(f"STATUS=watching; {queued} notes queued")
                self._main_loop(services)
            finally:
                notify("STOPPING=1")
                watcher.stop()
                self.queue.close()
                if self.refresher is not None:
                    self.refresher.close()
                deadline = time.monotonic() + 10
                for worker in self._workers:
                    worker.join(max(0.1, deadline - time.monotonic()))
                if not self._exit_code:  # not into a folder vaultd did not start on
                    self._write_state(running=False)
        log.info("stopped")
        return self._exit_code

    def scan(self) -> int:
        """Queue every note that is Pending, or Processing from a run that died."""
        count = 0
        for path in iter_notes(self.vault):
            if self.stop_event.is_set():
                break
            if wants_run(path) and not (path == self.report_path and self._is_report(path)):
                self.queue.touch(path, now=True)
                self._warm_up_for(path, runnable=True)
                count += 1
            elif self.repeats is not None and mentions_every(path):
                self.repeats.look(path)
        return count

    def _main_loop(self, services: Services) -> None:
        ping = watchdog_interval()
        next_ping = time.monotonic()
        next_state = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if ping is not None and now >= next_ping:
                notify("WATCHDOG=1")
                next_ping = now + ping
            if now >= next_state or self._state_due.is_set():
                self._state_due.clear()
                self._write_state(running=True)
                next_state = now + 5
            for index, worker in enumerate(self._workers):
                if not worker.is_alive():  # a dead worker is replaced
                    log.error("worker %s died; starting a new one", worker.name)
                    self._workers[index] = self._spawn(services, worker.name)
            if self._rescan.is_set():
                self._rescan.clear()
                log.info("rescan: %d notes queued", self.scan())
            if _identity(self.vault) != self._identity:
                self._vault_replaced()
                break
            if self._reload.is_set():
                self._reload.clear()
                self._reload_environment(services)
            if self.repeats is not None:
                for path in self.repeats.start_due():
                    self.queue.touch(path, now=True)
            if self._waiting and services.engine.effects.model.unavailable() is None:
                self._run_waiting("the model may be asked again")
            self.stop_event.wait(min(1.0, ping or 1.0))

    def _vault_replaced(self) -> None:
        """The vault's folder is gone or another one is at its path: stop, exit 1."""
        now = _identity(self.vault)
        what = ("was deleted or moved away" if now is None else
                "was replaced by another folder (deleted and made again, or another moved in)")
        log.error("%s: the vault folder %s; vaultd stops (exit code 1) so that it can be "
                  "started again on the folder there now", self.vault, what)
        self._exit_code = 1
        self.stop_event.set()

    def _reload_environment(self, services: Services) -> None:
        """SIGHUP: the service's environment file again, a new model, the waiting notes."""
        path = ENV_FILE.expanduser()
        try:
            variables = read_env_file(path)
        except FileNotFoundError:
            log.info("SIGHUP: no %s; the environment stays as it was", path)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("SIGHUP: cannot read %s: %s", path, getattr(exc, "strerror", None) or exc)
        else:
            os.environ.update(variables)
            log.info("SIGHUP: read %s (%d variables)", path, len(variables))
        problem = services.reload_model()
        self._waiting_why = problem
        if problem:
            log.warning("%s: %s", problem, WAITING)
        self._run_waiting("SIGHUP")

    def _run_waiting(self, why: str) -> None:
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, set()
        if waiting:
            log.info("%s: %d waiting notes queued", why, len(waiting))
        for path in waiting:
            self.queue.touch(path, now=True)

    def _start_workers(self, services: Services) -> None:
        for number in range(self.settings.note_workers):
            self._workers.append(self._spawn(services, f"vaultd-worker-{number}"))

    def _spawn(self, services: Services, name: str) -> threading.Thread:
        thread = threading.Thread(target=self._work, args=(services,), name=name, daemon=True)
        thread.start()
        return thread

    def _work(self, services: Services) -> None:
        while not self.stop_event.is_set():
            path = self.queue.take()
            if path is None:
                return
            again: float | None = None
            try:
                result = services.engine.process(path, should_stop=self.stop_event.is_set)
                self._record(result)
                again = self._retry(result)
                if self.repeats is not None:  # it may be scheduled, or no longer
                    self.repeats.look(path)
            except Exception:
                log.exception("%s: unexpected failure", path)
            finally:
                self.queue.done(path, again_in=again)

    def _retry(self, result: NoteResult) -> float | None:
        """Seconds until the note is tried again, when its write failed for a reason outside
        it; None otherwise (and the count starts over)."""
        if not result.transient:
            self._tries.pop(result.path, None)
            return None
        tries = self._tries.get(result.path, 0) + 1
        name = display_path(result.path, self.vault)
        if tries >= MAX_WRITE_TRIES:
            self._tries.pop(result.path, None)
            log.error("%s: gave up after %d tries to write it; it is tried again when it "
                      "changes or when vaultd starts", name, tries)
            return None
        self._tries[result.path] = tries
        delay = min(MAX_RETRY_DELAY, self.settings.write_retry * 2.0 ** (tries - 1))
        log.warning("%s: will try again in %g s (try %d of %d)", name, delay, tries + 1,
                    MAX_WRITE_TRIES)
        return delay

    def _record(self, result: NoteResult) -> None:
        with self._waiting_lock:
            if result.status == "waiting":
                self._waiting.add(result.path)
                new = result.summary != self._waiting_why  # once, not once per note and retry
                self._waiting_why = result.summary
            else:
                self._waiting.discard(result.path)
        if result.status == "waiting":
            self._state_due.set()  # a `--once` waiting on this note reads it from the state
            if new:
                log.warning("%s: %s", result.summary, WAITING)
            log.debug("%s: waiting", display_path(result.path, self.vault))
            return
        if result.status == "not_pending":
            return
        if result.status in ("done", "error") and self.refresher is not None:
            self.refresher.poke()
        name = display_path(result.path, self.vault)
        level = logging.INFO if result.status == "done" else logging.WARNING
        log.log(level, "%s", said(result, name))
        self.stats.processed += 1
        if result.status == "done":
            self.stats.done += 1
        elif result.status in ("error", "unreadable"):
            self.stats.errors += 1
            assert self.stats.last_errors is not None
            self.stats.last_errors = [(name, result.summary), *self.stats.last_errors][:10]

    @staticmethod
    def _is_report(path: Path) -> bool:
        """vaultd's report, not a note to process (a user's note at its path still is)."""
        try:
            return bool(is_mine(path))
        except VaultdError:
            return False

    def _refresh_report(self, services: Services) -> None:
        """Rewrite the report and base file if they exist and changed (see the docstring)."""
        try:
            publication = publish(self.vault, self.settings, services.writer,
                                  only_existing=True)
        except VaultdError as exc:
            log.warning("report: %s", exc)
            return
        for item in publication.files:
            name = display_path(item.path, self.vault)
            if item.outcome in ("created", "updated"):
                log.info("report: wrote %s (%d notes)", name, publication.notes)
            elif item.outcome == "not_ours" and not self._report_warned:
                self._report_warned = True
                log.warning("report: %s was not written by vaultd; left as it is", name)
        if not any(item.outcome in ("created", "updated") for item in publication.files):
            log.debug("report: refreshed, nothing to write (%s)", ", ".join(
                f"{display_path(item.path, self.vault)}: {item.outcome}"
                for item in publication.files))

    def _assistants(self) -> dict[str, dict[str, float]]:
        """Per configured assistant: requests sent, failed, and their cost, since start."""
        model = self.services.engine.effects.model if self.services else None
        if not isinstance(model, Assistants):
            return {}
        return {name: {"requests": t.requests, "errors": t.errors, "cost": round(t.usage.cost, 6)}
                for name, t in sorted(model.tallies.items())}

    def _write_state(self, running: bool) -> None:
        """What ``vaultd status`` shows of the running daemon (and what a ``--once`` beside
        it reads of the notes it leaves waiting)."""
        with self._waiting_lock:
            waiting = sorted(display_path(p, self.vault) for p in self._waiting)
            why = self._waiting_why if waiting else None
        state = {
            "pid": os.getpid(),
            "running": running,
            "updated": time.time(),
            "queued": len(self.queue),
            "in_progress": self.queue.running,
            "processed": self.stats.processed,
            "done": self.stats.done,
            "errors": self.stats.errors,
            "last_errors": self.stats.last_errors,
            "assistants": self._assistants(),
            "waiting_why": why,
            "waiting": waiting[:WAITING_LISTED],
        }
        path = self.vault / STATE_FILE
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            # Rewritten every few seconds, read by `vaultd status`: whole, not durable.
            write_whole(path, json.dumps(state).encode("utf-8"), sync=False)
        except OSError as exc:
            if not self._state_warned:  # once, not every 5 s while the disk is full
                log.warning("cannot write %s: %s", path, exc)
            self._state_warned = True
            return
        if self._state_warned:
            log.info("wrote %s again", path)
        self._state_warned = False


def said(result: NoteResult, name: str) -> str:
    """How the note ``name`` ended, as the log says it: one plain sentence, said once
    (``n.md: done: 3 measures``; a note left alone, gone or unreadable is its summary,
    which says so)."""
    summary, status = result.summary, result.status
    if status == "unreadable" and summary.startswith(str(result.path)):
        return name + summary[len(str(result.path)):]  # the reason names the file: n.md:3: ...
    if status in ("done", "error") or not summary:
        word = status.replace("_", " ")
        return f"{name}: {word}: {summary}" if summary else f"{name}: {word}"
    return f"{name}: {summary}"


def _identity(folder: Path) -> tuple[int, int] | None:
    """The folder's (device, inode), or None when there is no folder at its path."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def run_daemon(vault: Path, settings: Settings) -> int:
    """``vaultd run VAULT``: until SIGTERM or Ctrl-C, then exit 0; exit 1 when the vault
    folder is deleted or replaced (see the module's docstring)."""
    daemon = Daemon(vault, settings)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, daemon.request_reload)
    return daemon.run()
