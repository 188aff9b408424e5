"""``vaultd run VAULT --once``: every pending note once, a line each, then the totals.

Many notes are dealt out to several processes (:mod:`vaultd.runs.shards`, each child at
:mod:`vaultd.runs.shard_child`); otherwise, and in each child, :func:`run_here` runs them
in this process through one set of services (:mod:`vaultd.runs.services`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from vaultd import config
from vaultd.edges.model import credentials_problem
from vaultd.edges.vault import display_path, iter_notes, wants_run
from vaultd.evaluate.cost import Usage
from vaultd.runs import shards
from vaultd.runs.handoff import hand_off, running_daemon
from vaultd.runs.progress import ProgressBar, Tally
from vaultd.runs.services import open_services
from vaultd.runs.session import NoteResult

EXIT_OK, EXIT_FAILED = 0, 1


def _say_no_key(problem: str) -> None:
    print(f"vaultd: {problem}: notes that ask the model wait, left as they are; programmatic "
          "ones still run", file=sys.stderr)


def run_once(vault: Path, settings: config.Settings, out: TextIO, batch: bool = False) -> int:
    """Process every pending note once; one line per note, then the totals.

    With ``batch``, notes whose model requests were deferred to a batch go round again
    once the batch has ended, until every note has finished. Many notes are dealt out to
    several processes (:mod:`vaultd.runs.shards`).
    """
    todo = [path for path in iter_notes(vault) if wants_run(path)]
    usage = Usage()
    results: list[NoteResult] = []
    in_flight = [0]
    tally = Tally()
    bar = ProgressBar(sys.stderr, len(todo), usage, lambda: in_flight[0], tally=tally)

    def report(result: NoteResult) -> None:
        usage.merge(result.usage)
        bar.advance()
        if result.status == "not_pending":
            return
        results.append(result)
        line = f"{result.status.replace('_', ' '):<10} {display_path(result.path, vault)}"
        bar.print_above(f"{line}: {result.summary}" if result.summary else line, out)

    try:
        daemon = running_daemon(vault) if todo and not batch else None
        if daemon is not None:
            print(f"vaultd: the vault's daemon (pid {daemon}) is running: it runs these "
                  f"{len(todo)} notes; waiting for them", file=sys.stderr)
            todo = hand_off(vault, todo, report)
            if todo:
                print(f"vaultd: {len(todo)} notes handed back by the daemon (it stopped, or "
                      "did not take them up): run here", file=sys.stderr)
        if daemon is None or todo:  # else the daemon ran them all (and recovers its journal)
            processes = shards.processes_for(settings, len(todo), batch)
            if processes > 1:
                problem = credentials_problem()
                if problem:
                    _say_no_key(problem)

                def reported(note: shards.Reported, flying: int) -> None:
                    in_flight[0] = flying
                    report(NoteResult(note.path, note.status,  # type: ignore[arg-type]
                                      note.summary, usage=note.usage))

                for line in shards.run(vault, settings, shards.deal(todo, processes),
                                       reported):
                    print(f"vaultd: {line}", file=sys.stderr)
            else:
                run_here(vault, settings, todo, batch, report, in_flight, tally=tally)
    finally:
        bar.close()
    counts = {s: sum(1 for r in results if r.status == s) for s in
              ("done", "error", "unreadable", "gone", "left_alone", "waiting")}
    parts = [f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n]
    print(f"vaultd: {len(results)} notes processed" + (f": {', '.join(parts)}" if parts else ""),
          file=out)
    if usage.used:
        print(f"vaultd: model: {usage.summary()}", file=out)
    return EXIT_OK if counts["done"] == len(results) else EXIT_FAILED


def run_here(vault: Path, settings: config.Settings, todo: list[Path], batch: bool,
             report: Callable[[NoteResult], None], in_flight: list[int],
             quiet: bool = False, tally: Tally | None = None) -> None:
    """Run ``todo`` in this process, calling ``report`` for each note as it ends;
    ``in_flight[0]`` follows the model requests in flight, ``tally`` panels' answers and
    judgments. ``quiet``: no notice of a missing key (a parent process gave it)."""
    # A --once run is not watched note by note: a note that finishes within a second is
    # written once, from Pending straight to Done (slower ones still show Processing).
    with open_services(vault, settings, live_interval=1.0, batch=batch,
                       announce_at_start=False, warm_up=bool(todo)) as services:
        if services.credentials_problem and not quiet:
            _say_no_key(services.credentials_problem)
        if services.batches:
            asks = bool(todo) and not services.credentials_problem
            if not asks or services.batches.probe(settings.model) is None:
                services.batches.resume()
        if tally is not None:
            services.engine.tally = tally
        slots = services.engine.effects.model_slots
        with ThreadPoolExecutor(settings.note_workers, thread_name_prefix="vaultd-note") as pool:
            while todo:
                deferred: list[Path] = []
                for result in pool.map(services.engine.process, todo):
                    if result.status == "deferred":  # its usage counts when it ends
                        deferred.append(result.path)
                        continue
                    in_flight[0] = slots.in_use
                    report(result)
                if not deferred or not services.batches or not services.batches.run_round():
                    break
                todo = deferred
