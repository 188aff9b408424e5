"""The daemon's wall clock: the time of day, which a test or a dry rehearsal can set.

``VAULTD_NOW`` (an ISO 8601 time with its zone, ``2026-12-09T14:35:07Z``) makes the clock
start at that time and run on from there, so a schedule can be checked without waiting
for it: a week offline is one variable away. ``VAULTD_CLOCK_RATE`` (a number, 1 unless
set) makes it run that many times faster than real time, from ``VAULTD_NOW`` or from now:
at ``50400`` a week passes in 12 seconds, so a month of ``every: 7d`` can be rehearsed, the
daemon left running, in a minute. Only this clock runs faster: settling, timeouts and
retries keep real time. Unset, it is the system's clock.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from vaultd.errors import ConfigError

VARIABLE = "VAULTD_NOW"
RATE = "VAULTD_CLOCK_RATE"


def wall_clock(environ: Mapping[str, str] | None = None) -> Callable[[], datetime]:
    """A function giving the local time now (naive, as ``datetime.now()`` does), from
    ``VAULTD_NOW`` on, at ``VAULTD_CLOCK_RATE`` times real time, when they are set;
    :class:`ConfigError` when one is not what it should be."""
    env = os.environ if environ is None else environ
    value = env.get(VARIABLE, "").strip()
    rate = _rate(env.get(RATE, "").strip())
    if not value and rate == 1.0:
        return datetime.now
    if value:
        try:
            start = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"{VARIABLE}: {value!r} is not a time (e.g. "
                              "2026-12-09T14:35:07Z)") from exc
        if start.tzinfo is None:
            raise ConfigError(f"{VARIABLE}: {value!r} has no time zone (end it with Z or "
                              "+01:00)")
    else:
        start = datetime.now().astimezone()
    base = time.monotonic()

    def now() -> datetime:
        moment = start + timedelta(seconds=(time.monotonic() - base) * rate)
        return moment.astimezone().replace(tzinfo=None)

    return now


def _rate(text: str) -> float:
    if not text:
        return 1.0
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or not 0 < rate <= 1e9:
        raise ConfigError(f"{RATE}: {text!r} is not a rate (a number above 0, such as 50400: "
                          "a week in 12 seconds)")
    return rate
