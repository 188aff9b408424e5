"""The vault: which files are notes.

A note is a ``*.md`` file inside the vault, outside ``.obsidian/``, ``.trash/``, ``.git/``,
``.vaultd/`` and every other dot-folder, and outside the vault's templates folder (a
template is not a note, whatever its Status says), reached from the vault without passing
through a symbolic link. A symlinked note or folder is never a note, wherever it points: it
is not read, not run and not written (a link to a note inside the vault changes nothing,
since that note is a note under its own path). So a walk never leaves the vault, and neither
does a read or a write: :func:`open_note` opens one path component at a time with
``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vaultd.errors import NoteReadError
from vaultd.note.text import RUNNABLE, Note, decode, not_vaultds, parse, parse_head, split_lines

HEAD_BYTES = 4096  # enough to read a note's frontmatter
TEMPLATES_SETTINGS = Path(".obsidian") / "templates.json"  # the Templates core plugin's
DEFAULT_TEMPLATES = "Templates"
# An open with O_NONBLOCK fails (EAGAIN) while a write lease is held (see writer.py): it is
# tried again for this long, since a lease lasts one write.
LEASE_OPEN_WAIT = 5.0


# The names sync tools give the copy of a note changed on two devices at once.
_CONFLICT_COPIES = (
    ("Syncthing", re.compile(r"\.sync-conflict-\d{8}-\d{6}(-[A-Z0-9]{7})?(\.md)?$")),
    ("a sync tool", re.compile(r"\((?:[^()]*\s)?conflicted copy\b[^()]*\)", re.IGNORECASE)),
    ("a sync tool", re.compile(r"\bconflict(?:ed)? copy\b", re.IGNORECASE)),
)


def conflict_copy(path: Path) -> str | None:
    """The sync tool whose conflict copy the note at ``path`` is, by its name (Syncthing's
    ``.sync-conflict-…``; Obsidian Sync's, Dropbox's, Nextcloud's "conflicted copy"); None
    for any other note. (iCloud's copies, ``Note 2.md``, cannot be told by their name.)"""
    for tool, pattern in _CONFLICT_COPIES:
        if pattern.search(path.name):
            return tool
    return None


def templates_folder(vault: Path) -> Path:
    """The folder Obsidian's Templates plugin inserts from: its ``folder`` setting in
    ``.obsidian/templates.json``, or ``Templates`` when that is not set (or leaves the vault,
    or is the vault itself). Asked for every file event: the settings file is read again
    only when its size or modification time changed."""
    settings = vault / TEMPLATES_SETTINGS
    try:
        st = settings.stat()
        stamp: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    return _templates_folder(vault, stamp)


@functools.lru_cache(maxsize=64)
def _templates_folder(vault: Path, stamp: tuple[int, int] | None) -> Path:
    try:
        data = json.loads((vault / TEMPLATES_SETTINGS).read_text(encoding="utf-8")) \
            if stamp is not None else None
    except (OSError, ValueError):
        data = None
    folder = data.get("folder") if isinstance(data, dict) else None
    relative = PurePosixPath(folder.replace("\\", "/").strip().strip("/")) \
        if isinstance(folder, str) else PurePosixPath()
    if not relative.parts or ".." in relative.parts:
        relative = PurePosixPath(DEFAULT_TEMPLATES)
    return vault.joinpath(*relative.parts)


def display_path(path: Path, vault: Path) -> str:
    """``path`` as vaultd shows it to people: relative to the vault when it is inside it
    (whether either was given relative or absolute), else as it is."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(vault)))
    except ValueError:
        return str(path)


def find_vault(path: Path) -> Path | None:
    """The vault ``path`` is in: the nearest folder holding ``.obsidian/`` or ``.vaultd/``."""
    here = path.resolve()
    for folder in (here, *here.parents):
        if (folder / ".obsidian").is_dir() or (folder / ".vaultd").is_dir():
            return folder
    return None


def state_folder_problem(folder: Path) -> str | None:
    """What is wrong with ``folder/.vaultd`` when something that is not a folder is there
    (vaultd keeps its settings, journal and cache in it); None when it is a folder or
    there is nothing."""
    path = folder / ".vaultd"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # (``folder`` is a note: no folder)
        if not os.path.islink(path):
            return None
        what = "a symbolic link to nothing"
    except OSError as exc:
        return f"{path}: cannot be read: {exc.strerror}"
    else:
        if stat.S_ISDIR(st.st_mode):
            return None
        what = "a file"
    return (f"{path} is {what}, where vaultd needs a folder (for its config.toml, journal "
            "and cache): move it away or rename it")


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
    """Whether the note may be one of vaultd's to run (Pending, or Processing from a run that
    died), by a look at its head: a short note is judged whole, by
    :func:`vaultd.note.text.not_vaultds`, so a person's task note is not even queued."""
    peeked = peek(path, RUNNABLE)
    if peeked is None:
        return True
    status, note = peeked
    if status not in RUNNABLE:
        return False
    return note is None or not_vaultds(note, RUNNABLE) is None


def asks_model(path: Path, limit: int = 1 << 18) -> bool:
    """Whether a runnable note is likely to ask the model: it has an ``ai`` measure or no
    answer yet (a panel note, or a query to answer). A look at its first ``limit`` bytes
    that decides only when the SDK is loaded, never what runs."""
    try:
        with path.open("rb") as handle:
            head = handle.read(limit).lower()
    except OSError:
        return False
    return b"type: ai" in head or b"[!answer]" not in head


def peek(path: Path, whole_for: tuple[str, ...] = ()) -> tuple[str, Note | None] | None:
    """What the note's head says: its Status, lower-cased ("" for none, or if the file is
    gone), and the whole note parsed when the head is the whole (UTF-8) note and its
    Status is one of ``whole_for`` (only its frontmatter when it holds no ``[!measures]``
    callout at all: it is surely not vaultd's, and :func:`vaultd.note.text.not_vaultds` says
    so all the same). None when the head cannot tell: the frontmatter runs
    past it, or the file cannot be read (a permission); then read the whole note, and that
    read says why it cannot.

    The one quick look that the run, the daemon and ``vaultd status`` share."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return "", None
    except OSError:
        return None
    if not head.lstrip(b"\xef\xbb\xbf").startswith(b"---"):
        return "", None
    whole = len(head) < HEAD_BYTES
    lowered = head.lower()
    if whole and b"status" not in lowered:  # most notes: no need to parse
        return "", None
    text = head.decode("utf-8", errors="replace")
    note = parse_head(text if whole else "".join(split_lines(text)[:-1]))
    if note.frontmatter is None and not whole:
        return None
    status = (note.status or "").strip().lower()
    if not (whole and status in whole_for):
        return status, None
    if b"[!measures]" not in lowered:  # surely not vaultd's: its frontmatter is enough
        return status, note
    try:
        return status, parse(head.decode("utf-8"))
    except UnicodeDecodeError:
        return status, None  # the whole read says why it is not a note


@dataclass(frozen=True)
class Seen:
    """One of vaultd's notes as ``vaultd status`` and the report see it."""

    path: Path
    status: str  # lower-cased; for a note not read, what its head says ("" if it cannot tell)
    note: Note | None  # None: it could not be read, or is larger than the limit
    too_large: int = 0  # its size, when it was not read for that


def vaultds_notes(vault: Path, statuses: tuple[str, ...], max_bytes: int) -> Iterator[Seen]:
    """Every note of the vault's that is vaultd's (:func:`vaultd.note.text.not_vaultds`) with
    one of ``statuses``, and every one that might be but cannot be read; each read once,
    through the run's quick look (:func:`peek`)."""
    for path in iter_notes(vault):
        peeked = peek(path, statuses)
        if peeked is not None and peeked[0] not in statuses:
            continue
        note = peeked[1] if peeked else None
        if note is None:
            head = peeked[0] if peeked else ""
            try:
                size = path.stat().st_size
                if size > max_bytes:  # not read whole: its head says what it is
                    yield Seen(path, head, None, size)
                    continue
                note = parse(decode(path.read_bytes(), str(path)))
            except (OSError, NoteReadError):
                yield Seen(path, head, None)
                continue
        if not_vaultds(note, statuses) is None:
            yield Seen(path, (note.status or "").strip().lower(), note)


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


class LinkError(OSError):
    """The path passes through a symbolic link, which vaultd does not follow."""


def locate(vault: Path, path: Path, vault_real: Path | None = None
           ) -> tuple[Path, str] | None:
    """(the vault's real path, ``path`` relative to it), or None when ``path`` is not inside.

    ``path`` is absolute or relative to the vault, and is taken as written: ``..`` is
    resolved lexically and links are not resolved (:func:`open_note` refuses them).
    ``vault_real`` spares working out the vault's real path again."""
    vault_real = vault_real or Path(os.path.realpath(vault))
    full = Path(os.path.abspath(path if path.is_absolute() else vault / path))
    for base in (Path(os.path.abspath(vault)), vault_real):
        if full != base and full.is_relative_to(base):
            return vault_real, full.relative_to(base).as_posix()
    return None


def open_note(vault_real: Path, rel: str, flags: int) -> int:
    """``vault_real/rel`` opened with ``flags``, following no symbolic link on the way.

    Each folder is opened relative to the one before with ``O_NOFOLLOW``, so a link is
    refused even if it was swapped in after an earlier check. An open that a write lease
    holds up (another vaultd process writing the note) is tried again. Raises
    :class:`LinkError` for a link, :class:`FileNotFoundError` when a part is missing,
    :class:`NotADirectoryError` when a folder on the way is now something else, or the
    ``OSError`` of the last ``open``.
    """
    parts = rel.split("/")
    fd = os.open(vault_real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=fd)
            except NotADirectoryError:
                if _is_link(part, fd):
                    raise LinkError(errno.ELOOP, "a folder on the way is a symbolic link") from None
                raise
            os.close(fd)
            fd = step
        deadline = time.monotonic() + LEASE_OPEN_WAIT
        while True:
            try:
                return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except BlockingIOError:  # O_NONBLOCK and a write lease: another vaultd's write
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)
            except OSError as exc:
                if exc.errno == errno.ELOOP or (exc.errno == errno.ENXIO
                                                and _is_link(parts[-1], fd)):
                    raise LinkError(errno.ELOOP, "a symbolic link") from None
                raise
    finally:
        os.close(fd)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def read_note(path: Path, max_bytes: int, vault: Path | None = None) -> tuple[bytes, Note]:
    """The note's bytes and structure, or a :class:`NoteReadError` saying why not.

    With ``vault``, the note is read as a note of that vault: never through a symbolic link
    (:func:`open_note`). Never more than ``max_bytes`` are read, however the file grows
    meanwhile."""
    try:
        fd = _open_for_reading(path, vault)
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(st.st_mode):
                raise NoteReadError(f"{path}: not a regular file")
            if st.st_size > max_bytes:
                raise NoteReadError(
                    f"{path}: the note is too large ({st.st_size} bytes, limit {max_bytes})")
            data = handle.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise NoteReadError(f"{path}: the note is too large (more than {max_bytes} "
                                    f"bytes, limit {max_bytes})")
    except FileNotFoundError as exc:
        raise NoteReadError(f"{path}: the note vanished") from exc
    except IsADirectoryError as exc:
        raise NoteReadError(f"{path}: is a folder, not a note") from exc
    except LinkError as exc:
        raise NoteReadError(f"{path}: is a symbolic link, or inside a linked folder: vaultd "
                            "does not follow links") from exc
    except OSError as exc:
        raise NoteReadError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return data, parse(decode(data, str(path)))


def _open_for_reading(path: Path, vault: Path | None) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK  # a FIFO named *.md must not block the reader
    if vault is None:
        return os.open(path, flags | os.O_CLOEXEC)
    found = locate(vault, path)
    if found is None:
        raise NoteReadError(f"{path}: not inside the vault {vault}")
    return open_note(*found, flags)
