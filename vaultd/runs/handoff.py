"""``vaultd run VAULT --once`` while the vault's daemon runs: the daemon does the work.

A daemon that is running sees every note set ``Pending`` and runs it; a ``--once`` beside it
would run the same notes again (and ask the model twice). So ``--once`` hands its notes to
the daemon and waits for each to end, printing its line as the daemon finishes it: the
daemon has its SDK loaded, its cache open and its QuickJS workers started, so the notes
start at once instead of after a cold start (see bench/RESULTS.md).

Nothing here is sent to the daemon: it watches the vault, and the notes are Pending. What
``--once`` reads is the notes themselves, and the daemon's state file for the notes it
leaves waiting (no key, a refused key). A note still Pending ``PICKUP`` seconds after the
daemon last had anything queued or in progress (it is not getting to it), or every note
when the daemon stops meanwhile, is handed back to be run here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vaultd.edges.vault import display_path, peek
from vaultd.obsidian.status import daemon_state
from vaultd.runs.session import NoteResult

POLL = 0.05  # seconds between looks at the notes (a stat each)
REREAD = 1.0  # seconds after which a note is read again even when its stat is unchanged
PICKUP = 60.0  # a note the daemon has not taken up by then is run here
FRESH = 15.0  # the daemon writes its state every 5 s: older than this, it is stuck or gone


def running_daemon(vault: Path) -> int | None:
    """The pid of the vault's running daemon, when its state file says it runs and is fresh."""
    state = daemon_state(vault)
    if state is None or time.time() - float(state.get("updated") or 0) > FRESH:
        return None
    pid = state.get("pid")
    return pid if isinstance(pid, int) else None


def hand_off(vault: Path, todo: list[Path], report: Callable[[NoteResult], None],
             clock: Callable[[], float] = time.monotonic) -> list[Path]:
    """Wait for the running daemon to end each note of ``todo``, reporting each as it ends;
    the notes handed back to be run here (the daemon stopped, or did not take them up)."""
    left = {path: clock() for path in todo}  # path -> when it was last seen to change
    # A note is read again once it changed, and at least every REREAD seconds (a stamp
    # cannot tell two writes apart within one tick of the file system's clock); its stamp
    # is taken before it is read, so a change after the stamp is seen at the next look.
    stamps = {path: _stamp(path) for path in todo}
    last = {path: _status(path) for path in todo}
    read_at = dict.fromkeys(todo, clock())
    while left:
        state = daemon_state(vault)
        if state is None:  # the daemon stopped: what it did not finish is run here
            return sorted(left)
        waiting = set(state.get("waiting") or ())
        why = state.get("waiting_why") or "the model cannot be asked"
        busy = bool(state.get("queued") or state.get("in_progress"))  # it will get there
        now = clock()
        for path in sorted(left):
            stamp = _stamp(path)
            status = last[path]
            if stamp != stamps[path] or now - read_at[path] >= REREAD:
                stamps[path], read_at[path] = stamp, now
                status = _status(path)
            if status != last[path] or busy:
                last[path] = status
                left[path] = now
            if status in ("done", "error"):
                del left[path]
                report(NoteResult(path, "done" if status == "done" else "error",
                                  "run by the vault's daemon"))
            elif status is None:
                del left[path]
                report(NoteResult(path, "gone", "deleted or moved while it waited"))
            elif status == "pending" and display_path(path, vault) in waiting:
                del left[path]
                report(NoteResult(path, "waiting", str(why)))
            elif status == "pending" and now - left[path] > PICKUP:
                del left[path]
                return sorted([path, *left])
        if left:
            time.sleep(POLL)
    return []


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever a note is written: its inode, size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _status(path: Path) -> str | None:
    """The note's Status, lower-cased; None when it is gone."""
    if not path.exists():
        return None
    peeked = peek(path)
    return peeked[0] if peeked is not None else ""
