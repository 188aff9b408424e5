"""Every error vaultd raises, in one tree.

    VaultdError                 root: anything vaultd itself reports
    ├── ConfigError             a bad setting, flag or config file
    ├── NoteError               a note that cannot be read or understood
    │   ├── NoteReadError       not UTF-8, unreadable, vanished, too large
    │   └── FormatError         callouts or measures that break the note format
    │       └── GraphError      the measures do not form a runnable graph
    ├── MeasureError            one measure failed; the note goes on
    │   ├── ModelError          the model API refused, failed or was unreachable
    │   │   └── ModelUnavailable  no request can be made at all: not the note's failure
    │   └── SandboxError        a programmatic measure's JavaScript failed
    └── WriteError              a note could not be written back
        └── WriteConflict       the note changed on disk since it was read

Errors from the libraries underneath (anthropic, quickjs, watchdog, the OS) are
translated into these at the edge where they arise, with ``raise ... from exc``, so
the core only ever sees vaultd's own errors.

A :class:`Problem` is one located finding (``line`` is 1-based, ``None`` for the whole
note), with a short ``hint`` of the fix where one is obvious; note-level errors carry a
list of them so that every problem is reported at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a note, at a line (1-based) or with the note as a whole."""

    line: int | None
    message: str
    hint: str = ""  # how to fix it, where that is obvious: "did you mean `x`?"

    @property
    def text(self) -> str:
        """The message with its hint: ``message (hint)``."""
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def format(self, path: str) -> str:
        """``file:line: message (hint)``, the form editors and terminals understand."""
        return f"{path}:{self.line}: {self.text}" if self.line else f"{path}: {self.text}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``did you mean `x`?`` for the choice closest to ``word``, or "" when none is close."""
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        lowered = {choice.lower(): choice for choice in options}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"did you mean `{close[0]}`?" if close else ""


def one_line(text: str, limit: int = 500) -> str:
    """Text folded to one line (every run of white space, line breaks too, one space) and
    trimmed to ``limit`` characters: vaultd's one way to put a message or a label on a
    line. A lone surrogate (from JSON's ``\\ud800``), which no file can hold, becomes ``?``."""
    flat = " ".join(text.split()).encode("utf-8", "replace").decode("utf-8")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class VaultdError(Exception):
    """Root of every error vaultd reports."""


class ConfigError(VaultdError):
    """A bad setting, command-line flag or config file."""


class NoteError(VaultdError):
    """A note that cannot be read or understood."""


class NoteReadError(NoteError):
    """The note's bytes could not be read as a note (not UTF-8, unreadable, vanished, too large)."""


class FormatError(NoteError):
    """The note breaks the note format; ``problems`` lists every finding with its line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.message))
        super().__init__("; ".join(p.text for p in self.problems))


class GraphError(FormatError):
    """The measures do not form a runnable graph (cycle, unknown or duplicate id)."""


class MeasureError(VaultdError):
    """One measure failed. The message is a single line, shown as ``Error: <message>``."""


class ModelError(MeasureError):
    """The model API refused the request, failed, or could not be reached."""


class ModelUnavailable(ModelError):
    """No request can be made at all, whatever the note asks: there is no API key, the key
    was refused (401), or the API cannot be connected to. Not the note's failure: a note
    that meets it is left as it is, to run when the model can be asked again."""


class SandboxError(MeasureError):
    """A programmatic measure's JavaScript failed, ran too long or used too much memory."""


class WriteError(VaultdError):
    """A note could not be written back; the note on disk is left whole.

    ``transient``: the cause lies outside the note's text (a full disk, a permission, vaultd's
    journal folder), so the same write may well succeed later; the daemon tries again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WriteConflict(WriteError):
    """The note on disk is not the text vaultd last read; ``current`` is what is there now."""

    def __init__(self, current: bytes | None) -> None:
        self.current = current
        super().__init__("the note changed on disk" if current is not None else "the note vanished")
