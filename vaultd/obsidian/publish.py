"""Publishing the report: the vault's results read, the report note and base file written.

The two effects behind ``vaultd report`` and the daemon's refresh, one place each:
:func:`gather` reads the finished notes (as ``vaultd status`` does: every note of the
vault, its head first), :func:`put` writes one of vaultd's own files. Everything between
is :mod:`vaultd.obsidian.report`, pure.

The report note and ``vaultd.base`` are vaultd's files, and vaultd never touches anyone
else's: each starts with a marker line, and a file at their path without that marker is
left as it is (the report: with an error; the base file, which Obsidian rewrites without
the marker once you change the view there: with a notice). A file is only written when
its content changed, in place through the journaled :class:`~vaultd.edges.writer.Writer`, and
created with a hard link from a finished temporary file, so it appears whole or not at
all, and never over a file that appeared meanwhile.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vaultd.config import Settings
from vaultd.edges.vault import vaultds_notes
from vaultd.edges.writer import Writer, write_whole
from vaultd.errors import WriteConflict, WriteError
from vaultd.note.panel import AnswerNote, read_answer, read_panel
from vaultd.note.properties import DEFAULT_PREFIX
from vaultd.note.results import NoteResults, is_evaluated, note_results
from vaultd.note.text import BOM, RUNNABLE, SHOWN
from vaultd.obsidian.report import (
    BASE_MARKER,
    REPORT_MARKER,
    Gathered,
    PanelColumns,
    base_text,
    report_text,
    summarise,
)

log = logging.getLogger("vaultd.report")

BASE_NAME = "vaultd.base"
Outcome = Literal["created", "updated", "unchanged", "not_ours", "absent"]
_ATTEMPTS = 5


@dataclass(frozen=True)
class Published:
    path: Path
    outcome: Outcome


@dataclass(frozen=True)
class Publication:
    """What one publish did: each file's outcome, and how much the report covers."""

    files: list[Published]
    notes: int = 0
    measures: int = 0
    answers: int = 0  # panels' answer notes


def report_paths(vault: Path, settings: Settings) -> tuple[Path, Path]:
    """The report note and the base file beside it."""
    report = vault / Path(settings.report_path.replace("\\", "/"))
    return report, report.parent / BASE_NAME


def gather(vault: Path, exclude: Path, max_bytes: int,
           prefix: str = DEFAULT_PREFIX) -> Gathered:
    """Every evaluated (Done or Error) note's results, typed by their ``prefix`` properties;
    ``exclude`` is the report itself. Panels' answer notes (:func:`~vaultd.note.panel.
    read_answer`) and panel notes are gathered apart from the single notes."""
    notes: list[NoteResults] = []
    answers: list[AnswerNote] = []
    panels: list[str] = []
    waiting = 0
    unreadable: list[str] = []
    for seen in vaultds_notes(vault, SHOWN, max_bytes):
        if seen.path == exclude:
            continue
        name = seen.path.relative_to(vault).as_posix()
        if seen.note is None:  # unreadable, or too large to read
            unreadable.append(name)
        elif seen.status in RUNNABLE:
            waiting += 1
        elif is_evaluated(seen.note):
            answer = read_answer(name, seen.note, prefix)
            if answer is not None:
                answers.append(answer)
            elif read_panel(seen.note)[0] is not None:
                panels.append(name)
            else:
                notes.append(note_results(name, seen.note, prefix))
    return Gathered(tuple(notes), waiting, tuple(unreadable), tuple(answers), tuple(panels))


def publish(vault: Path, settings: Settings, writer: Writer, *,
            only_existing: bool = False) -> Publication:
    """Write the report note and the base file; returns what happened to each.

    With ``only_existing`` (the daemon), nothing is created and nothing is read unless the
    report note exists. Without it (``vaultd report``), a report path that holds someone
    else's file is a :class:`WriteError`, before anything is written.
    """
    vault = Path(os.path.abspath(vault))
    report, base = report_paths(vault, settings)
    mine = is_mine(report, REPORT_MARKER)
    if mine is None and only_existing:
        return Publication([Published(report, "absent")])
    if mine is False:
        if only_existing:
            return Publication([Published(report, "not_ours")])
        raise WriteError(f"{report}: exists and was not written by vaultd (its first line is "
                         "not vaultd's marker); left as it is. Move it away, or set "
                         "report_path to another name")
    prefix = settings.property_prefix
    gathered = gather(vault, report, settings.max_note_bytes, prefix)
    base_link = base.relative_to(vault).as_posix()
    measures = summarise(gathered.notes)
    answers = tuple(answer.results for answer in gathered.answers)
    panel = None
    if answers or gathered.panels:
        panel = PanelColumns(summarise(answers), frozenset().union(
            *(note.properties for note in answers)))
    texts = [
        (report, REPORT_MARKER, report_text(gathered, base_link)),
        (base, BASE_MARKER, base_text(measures, prefix, frozenset().union(
            *(note.properties for note in gathered.notes)), panel)),
    ]
    files = [Published(path, put(writer, path, text, marker, create=not only_existing))
             for path, marker, text in texts]
    return Publication(files, len(gathered.notes), len(measures), len(gathered.answers))


def is_mine(path: Path, marker: str = REPORT_MARKER) -> bool | None:
    """Whether the file starts with vaultd's marker (None: there is no such file)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(marker.encode()) + 4)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WriteError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return _starts_with(head, marker)


def _starts_with(data: bytes, marker: str) -> bool:
    return data.removeprefix(BOM.encode()).startswith(marker.encode())


def put(writer: Writer, path: Path, text: str, marker: str, *, create: bool) -> Outcome:
    """Write vaultd's own file ``path`` if its content changed (see the module docstring)."""
    new = text.encode("utf-8")
    for _ in range(_ATTEMPTS):
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            if not create:
                return "absent"
            try:
                _create(path, new)
            except FileExistsError:
                continue  # it appeared meanwhile: look at it again
            return "created"
        except OSError as exc:
            raise WriteError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        if not _starts_with(current, marker):
            return "not_ours"
        if current == new:
            return "unchanged"
        try:
            writer.write(path, current, new)
        except WriteConflict:
            continue  # it changed meanwhile: look at it again
        return "updated"
    raise WriteError(f"{path}: kept changing while vaultd wrote it; try again")


def _create(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, whole or not at all; FileExistsError if it exists.
    Its temporary file is a dot-file, which no one takes for a note."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, data, mode=0o666, replace=False)
    except FileExistsError:
        raise
    except OSError as exc:
        raise WriteError(f"{path}: cannot create: {exc.strerror or exc}") from exc


def describe(publication: Publication) -> list[str]:
    """One line per file, for people."""
    words = {
        "created": "written", "updated": "written", "unchanged": "already up to date",
        "absent": "not there", "not_ours": "left alone: changed outside vaultd "
        "(delete it to get vaultd's again)",
    }
    answers = f", {publication.answers} answer notes" if publication.answers else ""
    covers = f" ({publication.notes} notes, {publication.measures} measures{answers})"
    return [f"{item.path}: {words[item.outcome]}" + (covers if i == 0 else "")
            for i, item in enumerate(publication.files)]
