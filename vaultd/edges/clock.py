"""The daemon's wall clock: the time of day, which a test or a dry rehearsal can set.

``VAULTD_NOW`` (an ISO 8601 time with its zone, ``2026-12-09T14:35:07Z``) makes the clock
start at that time and run on from there, so a schedule can be checked without waiting
for it: a week offline is one variable away. Unset, it is the system's clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from vaultd.errors import ConfigError

VARIABLE = "VAULTD_NOW"


def wall_clock(environ: Mapping[str, str] | None = None) -> Callable[[], datetime]:
    """A function giving the local time now (naive, as ``datetime.now()`` does), from
    ``VAULTD_NOW`` on when it is set; :class:`ConfigError` when it is not a time."""
    value = (os.environ if environ is None else environ).get(VARIABLE, "").strip()
    if not value:
        return datetime.now
    try:
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{VARIABLE}: {value!r} is not a time (e.g. "
                          "2026-12-09T14:35:07Z)") from exc
    if start.tzinfo is None:
        raise ConfigError(f"{VARIABLE}: {value!r} has no time zone (end it with Z or +01:00)")
    base = time.monotonic()

    def now() -> datetime:
        moment = start + timedelta(seconds=time.monotonic() - base)
        return moment.astimezone().replace(tzinfo=None)

    return now
