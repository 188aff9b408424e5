"""``vaultd status``: what the vault's notes say, and what the running daemon says.

Counts come from vaultd's notes themselves (their ``Status``), so they are right whether or
not a daemon runs: only notes that hold vaultd's parts count (:func:`vaultd.note.text.not_vaultds`),
never a task note with ``status: done``. Only a note whose head shows such a Status is read
whole, as the run does; the daemon's own figures come from ``.vaultd/daemon.json`` when its process
is alive.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vaultd.edges.vault import conflict_copy, display_path, vaultds_notes
from vaultd.note.panel import EVERY, next_run, read_panel
from vaultd.note.text import SHOWN

# The running daemon writes its figures here (vaultd.runs.daemon); status reads them.
STATE_FILE = Path(".vaultd") / "daemon.json"


@dataclass
class VaultStatus:
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # mtime, note, why
    unreadable: list[str] = field(default_factory=list)
    daemon: dict[str, Any] | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    costed: int = 0  # notes with token properties
    # per assistant, from its answer notes: answers, those in error, their cost
    assistants: dict[str, list[float]] = field(default_factory=dict)
    scheduled: list[tuple[str, str, datetime]] = field(default_factory=list)  # note, every, next


def vault_status(vault: Path, max_bytes: int = 5_000_000,
                 now: datetime | None = None) -> VaultStatus:
    status = VaultStatus()
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    for seen in vaultds_notes(vault, SHOWN, max_bytes):
        path, note = seen.path, seen.note
        name = display_path(path, vault)
        if note is None:
            if not seen.too_large:
                status.unreadable.append(name)
                continue
            if seen.status in SHOWN:  # counted by the Status its head says, not read whole
                status.counts[seen.status] += 1
            if seen.status == "error":
                status.errors.append((path.stat().st_mtime, name,
                                      f"too large ({seen.too_large} bytes)"))
            continue
        props = note.properties
        if isinstance(props.get("tokens_in"), int):
            status.costed += 1
            status.tokens_in += _number(props.get("tokens_in"))
            status.tokens_out += _number(props.get("tokens_out"))
            status.cost += float(_number(props.get("cost_usd"), float))
        status.counts[seen.status] += 1
        spec = read_panel(note)[0]
        if spec is not None and spec.every is not None and conflict_copy(path) is None:
            last = props.get("run")
            every = next(k for k, v in EVERY.items() if v == spec.every)
            status.scheduled.append((name, every, next_run(
                last if isinstance(last, str) else None, spec.every, moment)))
        assistant = props.get("assistant")
        if isinstance(assistant, str) and props.get("panel") and seen.status in ("done", "error"):
            figures = status.assistants.setdefault(assistant, [0, 0, 0.0])
            figures[0] += 1
            figures[1] += seen.status == "error"
            figures[2] += float(_number(props.get("cost_usd"), float))
        if seen.status == "error":
            why = note.properties.get("error")
            status.errors.append((path.stat().st_mtime, name, str(why or "")))
    status.errors.sort(reverse=True)
    status.daemon = daemon_state(vault)
    return status


def _number(value: object, kind: type = int) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return kind(0)
    return kind(value)


def daemon_state(vault: Path) -> dict[str, Any] | None:
    """What the vault's running daemon last said of itself (``.vaultd/daemon.json``), or
    None when no daemon is running: the file is missing, says it stopped, or names a
    process that is gone."""
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
    if status.costed:
        lines.append(f"model use: {status.tokens_in:,} tokens in, {status.tokens_out:,} out, "
                     f"~${status.cost:.4f} over {status.costed} notes (last runs)")
    for name, every, at in sorted(status.scheduled, key=lambda s: s[2]):
        lines.append(f"scheduled: {name} every {every}, next run {at:%Y-%m-%d %H:%M} UTC")
    for name, (answers, errors, cost) in sorted(status.assistants.items()):
        lines.append(f"assistant {name}: {int(answers)} answers, {int(errors)} in error, "
                     f"~${cost:.4f}")
    for name, figures in sorted(((status.daemon or {}).get("assistants") or {}).items()):
        if isinstance(figures, dict):
            lines.append(f"assistant {name} (daemon, since start): "
                         f"{figures.get('requests', 0)} requests answered, "
                         f"{figures.get('errors', 0)} failed, "
                         f"~${float(figures.get('cost', 0.0)):.4f}")
    if status.unreadable:
        lines.append(f"unreadable: {', '.join(status.unreadable[:last])}")
    if status.errors:
        lines.append("last errors:")
        lines.extend(f"  {name}: {why}" for _, name, why in status.errors[:last])
    return lines
