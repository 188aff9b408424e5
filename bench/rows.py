"""A line of the bench's results table: every figure group adds its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    name: str
    value: float | int | None  # the measured number (None: not measured)
    unit: str
    shown: str  # the value as the table shows it
    target: str
    met: bool | None  # None: informational, or not measured
    details: dict[str, Any] = field(default_factory=dict)
