"""What one measure came to: a value, an error, or a reason it was skipped. Pure values.

The runner (:mod:`vaultd.evaluate.runner`) makes them, the renderer and the properties
(:mod:`vaultd.note.render`, :mod:`vaultd.note.properties`) write them into the note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Success:
    value: Any
    comment: str | None = None


@dataclass(frozen=True)
class Failure:
    message: str


@dataclass(frozen=True)
class Skipped:
    reason: str


Outcome = Success | Failure | Skipped
