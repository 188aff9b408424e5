"""The vault: which files are notes.

A note is a ``*.md`` file inside the vault, outside ``.obsidian/``, ``.trash/``, ``.git/``,
``.vaultd/`` and every other dot-folder, reached from the vault without passing through a
symbolic link. A symlinked note or folder is never a note, wherever it points: it is not
read, not run and not written (a link to a note inside the vault changes nothing, since that
note is a note under its own path). So a walk never leaves the vault, and neither does a
read or a write: :func:`open_note` opens one path component at a time with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from vaultd.note import parse, split_lines

HEAD_BYTES = 4096  # enough to read a note's frontmatter


def is_note_path(vault: Path, path: Path) -> bool:
    """Whether ``path`` (inside ``vault``) names a note by its place and name."""
    try:
        parts = path.relative_to(vault).parts
    except ValueError:
        return False
    if not parts or not parts[-1].lower().endswith(".md"):
        return False
    return not any(part.startswith(".") for part in parts)


def wants_run(path: Path) -> bool:
    """Whether the note's Status is Pending or Processing, read from its head alone.

    A note that cannot be read (a permission) counts as wanting a run, so that the run says
    why it cannot be read instead of passing over it in silence."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False
    except OSError:
        return True
    if not head.lstrip(b"\xef\xbb\xbf").startswith(b"---"):
        return False
    text = head.decode("utf-8", errors="replace")
    note = parse(text if len(head) < HEAD_BYTES else "".join(split_lines(text)[:-1]))
    if note.frontmatter is None and len(head) == HEAD_BYTES:
        return True  # frontmatter longer than the head: let the engine read it all
    return (note.status or "").strip().lower() in ("pending", "processing")


def iter_notes(vault: Path) -> Iterator[Path]:
    """Every note in the vault, folder by folder in name order."""
    stack = [vault]
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
                    subfolders.append(Path(entry.path))
                elif entry.name.lower().endswith(".md") and entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subfolders))


class LinkError(OSError):
    """The path passes through a symbolic link, which vaultd does not follow."""


def locate(vault: Path, path: Path) -> tuple[Path, str] | None:
    """(the vault's real path, ``path`` relative to it), or None when ``path`` is not inside.

    ``path`` is absolute or relative to the vault, and is taken as written: ``..`` is
    resolved lexically and links are not resolved (:func:`open_note` refuses them)."""
    vault_real = Path(os.path.realpath(vault))
    full = Path(os.path.abspath(path if path.is_absolute() else vault / path))
    for base in (Path(os.path.abspath(vault)), vault_real):
        if full != base and full.is_relative_to(base):
            return vault_real, full.relative_to(base).as_posix()
    return None


def open_note(vault_real: Path, rel: str, flags: int) -> int:
    """``vault_real/rel`` opened with ``flags``, following no symbolic link on the way.

    Each folder is opened relative to the one before with ``O_NOFOLLOW``, so a link is
    refused even if it was swapped in after an earlier check. Raises :class:`LinkError` for a
    link, :class:`FileNotFoundError` when a part is missing (or a folder is now a file), or
    the ``OSError`` of the last ``open``.
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
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)) from None
            os.close(fd)
            fd = step
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP or (exc.errno == errno.ENXIO and _is_link(parts[-1], fd)):
                raise LinkError(errno.ELOOP, "a symbolic link") from None
            raise
    finally:
        os.close(fd)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False
