"""``vaultd status``: what the vault's notes say, and what the running daemon says.

Counts come from the notes themselves (their ``Status``), so they are right whether or not
a daemon runs; the daemon's own figures come from ``.vaultd/daemon.json`` when its process
is alive.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultd.daemon import STATE_FILE
from vaultd.errors import NoteReadError
from vaultd.note import decode, parse
from vaultd.vault import iter_notes

SHOWN = ("pending", "processing", "done", "error")


@dataclass
class VaultStatus:
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # mtime, note, why
    unreadable: list[str] = field(default_factory=list)
    daemon: dict[str, Any] | None = None


def vault_status(vault: Path, max_bytes: int = 5_000_000) -> VaultStatus:
    status = VaultStatus()
    for path in iter_notes(vault):
        name = str(path.relative_to(vault))
        try:
            if path.stat().st_size > max_bytes:
                continue
            note = parse(decode(path.read_bytes(), name))
        except (OSError, NoteReadError):
            status.unreadable.append(name)
            continue
        value = (note.status or "").strip().lower()
        if value in SHOWN:
            status.counts[value] += 1
        if value == "error":
            why = note.properties.get("error")
            status.errors.append((path.stat().st_mtime, name, str(why or "")))
    status.errors.sort(reverse=True)
    status.daemon = _daemon_state(vault)
    return status


def _daemon_state(vault: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((vault / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not state.get("running"):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def format_status(status: VaultStatus, last: int = 5) -> list[str]:
    lines = [", ".join(f"{status.counts[s]} {s}" for s in SHOWN)]
    if status.daemon:
        d = status.daemon
        lines.append(f"daemon: running (pid {d.get('pid')}), {d.get('queued', 0)} queued, "
                     f"{d.get('in_progress', 0)} in progress, {d.get('processed', 0)} "
                     f"processed since start")
    else:
        lines.append("daemon: not running")
    if status.unreadable:
        lines.append(f"unreadable: {', '.join(status.unreadable[:last])}")
    if status.errors:
        lines.append("last errors:")
        lines.extend(f"  {name}: {why}" for _, name, why in status.errors[:last])
    return lines
