"""``vaultd run VAULT --once --dry-run``: what a run would send and cost, sending nothing.

Every note a ``--once`` run would take (vaultd's notes that are ``Pending``, or
``Processing`` from a run that died) is read and checked as the run would check it, and
its requests estimated (:mod:`vaultd.evaluate.estimate`). Nothing is written: no note,
no ``.vaultd/`` (no journal, no cache); the model client is not even loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from vaultd.config import Settings
from vaultd.edges.vault import display_path, read_note, vaultds_notes
from vaultd.errors import FormatError, NoteReadError, Problem
from vaultd.evaluate.estimate import HOW, Estimate, dollars, estimate_note, over_budget
from vaultd.evaluate.prepare import check_note
from vaultd.note.panel import read_panel
from vaultd.note.text import RUNNABLE

EXIT_OK, EXIT_FAILED = 0, 1


def dry_run(vault: Path, settings: Settings, out: TextIO, batch: bool = False) -> int:
    """One line per note a run would take, ``path: N requests (A answers, J judgments),
    ~$X.XX``, then the totals; a note that could not run is listed with its problems,
    as ``vaultd check`` lists them. 1 when any note has a problem, else 0."""
    total = Estimate()
    counted = troubled = above = 0
    for seen in vaultds_notes(vault, RUNNABLE, settings.max_note_bytes):
        shown = display_path(seen.path, vault)
        note = seen.note
        if note is None:
            troubled += 1
            try:  # read as the run reads it, for its reason
                _, note = read_note(seen.path, settings.max_note_bytes, vault)
            except NoteReadError as exc:
                print(str(exc).replace(str(seen.path), shown, 1), file=out)
                continue
            troubled -= 1
        problems: list[Problem] = []
        try:
            checked = check_note(note)
        except FormatError as exc:
            problems = list(exc.problems)
        panel, panel_problems = read_panel(note)
        problems.extend(p for p in panel_problems if p not in problems)  # once each
        if problems:
            troubled += 1
            for problem in sorted(problems, key=lambda p: (p.line or 0, p.message)):
                print(problem.format(shown), file=out)
            continue
        estimate = estimate_note(checked.plan, checked.query, checked.answer,
                                 checked.overrides, settings, panel, batch=batch)
        counted += 1
        total += estimate
        line = f"{shown}: {estimate.counts()}, {estimate.cost_text()}"
        limit = checked.overrides.max_cost_usd or settings.max_cost_usd
        if over_budget(estimate, limit):
            above += 1
            line += f"; above max_cost_usd {dollars(limit or 0)[1:]}: it would not start"
        print(line, file=out)
    print(f"vaultd: dry run: {counted} {'note' if counted == 1 else 'notes'}, "
          f"{total.counts()}, {total.tokens()}, {total.cost_text()}"
          f"{' at batch prices' if batch else ''} ({HOW}); nothing sent, nothing written",
          file=out)
    for figures in total.by_model:
        cost = "no price" if figures.cost_usd is None else f"~{dollars(figures.cost_usd)}"
        print(f"vaultd:   {figures.model}: {figures.requests} "
              f"{'request' if figures.requests == 1 else 'requests'}, "
              f"{figures.input_tokens:,} tokens in, {figures.output_tokens:,} out, {cost}",
              file=out)
    if above:
        print(f"vaultd: {above} {'note' if above == 1 else 'notes'} above max_cost_usd "
              "would not start", file=out)
    if troubled:
        print(f"vaultd: {troubled} {'note' if troubled == 1 else 'notes'} with problems "
              "would end in Error", file=out)
    return EXIT_FAILED if troubled else EXIT_OK
