"""The vault: which files are notes.

A note is a ``*.md`` file inside the vault, outside ``.obsidian/``, ``.trash/``, ``.git/``,
``.vaultd/`` and every other dot-folder, and outside the vault's templates folder (a
template is not a note, whatever its Status says). Symlinked folders are not followed, so
a walk never leaves the vault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from vaultd.note import parse, split_lines

HEAD_BYTES = 4096  # enough to read a note's frontmatter
TEMPLATES_SETTINGS = Path(".obsidian") / "templates.json"  # the Templates core plugin's
DEFAULT_TEMPLATES = "Templates"


def templates_folder(vault: Path) -> Path:
    """The folder Obsidian's Templates plugin inserts from: its ``folder`` setting in
    ``.obsidian/templates.json``, or ``Templates`` when that is not set (or leaves the vault,
    or is the vault itself)."""
    try:
        data = json.loads((vault / TEMPLATES_SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    folder = data.get("folder") if isinstance(data, dict) else None
    relative = PurePosixPath(folder.replace("\\", "/").strip().strip("/")) \
        if isinstance(folder, str) else PurePosixPath()
    if not relative.parts or ".." in relative.parts:
        relative = PurePosixPath(DEFAULT_TEMPLATES)
    return vault.joinpath(*relative.parts)


def find_vault(path: Path) -> Path | None:
    """The vault ``path`` is in: the nearest folder holding ``.obsidian/`` or ``.vaultd/``."""
    here = path.resolve()
    for folder in (here, *here.parents):
        if (folder / ".obsidian").is_dir() or (folder / ".vaultd").is_dir():
            return folder
    return None


def is_note_path(vault: Path, path: Path) -> bool:
    """Whether ``path`` (inside ``vault``) names a note by its place and name."""
    try:
        parts = path.relative_to(vault).parts
    except ValueError:
        return False
    if not parts or not parts[-1].lower().endswith(".md"):
        return False
    if any(part.startswith(".") for part in parts):
        return False
    return templates_folder(vault) not in path.parents


def wants_run(path: Path) -> bool:
    """Whether the note's Status is Pending or Processing, read from its head alone."""
    status = head_status(path)
    return status is None or status in ("pending", "processing")


def head_status(path: Path) -> str | None:
    """The note's Status, lower-cased, read from its head alone ("" for none, or if the file
    cannot be read); None when the frontmatter runs past the head (read the whole note)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return ""
    if not head.lstrip(b"\xef\xbb\xbf").startswith(b"---"):
        return ""
    text = head.decode("utf-8", errors="replace")
    note = parse(text if len(head) < HEAD_BYTES else "".join(split_lines(text)[:-1]))
    if note.frontmatter is None and len(head) == HEAD_BYTES:
        return None
    return (note.status or "").strip().lower()


def iter_notes(folder: Path, vault: Path | None = None) -> Iterator[Path]:
    """Every note in ``folder`` (the vault, or a folder in ``vault``), folder by folder in
    name order."""
    templates = templates_folder(folder if vault is None else vault).resolve()
    stack = [folder]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                items = sorted(entries, key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in items:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if Path(entry.path).resolve() != templates:  # "." and ".." alike
                        subfolders.append(Path(entry.path))
                elif entry.name.lower().endswith(".md") and entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subfolders))
