"""The few statistics a panel needs: pure functions of plain numbers, standard library only.

- :func:`wilson`: the Wilson score interval of a proportion (a boolean measure's share);
- :func:`t_quantile` and :func:`mean_interval`: Student's t interval of a mean (a number
  measure's mean);
- :func:`fisher_exact`: the two-sided Fisher exact test of a 2x2 table (did a share change
  from the run before by more than chance?).

Each is checked against published values and against scipy in ``tests/test_stats.py``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "fisher_exact", "mean_interval", "t_quantile", "wilson"]


@dataclass(frozen=True)
class Interval:
    """A confidence interval, ``low <= high``."""

    low: float
    high: float


def _two_sided_z(confidence: float) -> float:
    """The normal quantile z with P(-z < Z < z) = ``confidence``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence!r}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval (no continuity correction) of ``successes`` out of ``n``.

    With p = successes / n and z the two-sided normal quantile of ``confidence``
    (``statistics.NormalDist().inv_cdf``, Wichura's AS 241, accurate to about 1e-16)::

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)

    clamped to [0, 1], with the low end exactly 0 for no successes and the high end
    exactly 1 for all (as scipy's ``binomtest(...).proportion_ci("wilson")``).
    3 of 5 gives 23.07% to 88.24%.
    """
    if n <= 0:
        raise ValueError(f"n must be at least 1, not {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n = {n}, not {successes}")
    z = _two_sided_z(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method
    (Numerical Recipes, 3rd ed., 6.4 ``betacf``); converges fast for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (tiny if abs(d) < tiny else d)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (tiny if abs(d) < tiny else d)
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (tiny if abs(d) < tiny else d)
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _incomplete_beta(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta function I_x(a, b), given x and y = 1 - x (passed
    separately so that neither loses digits to a subtraction)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def _t_upper_tail(t: float, df: int) -> float:
    """P(T > t) for t >= 0 and Student's t with ``df`` degrees of freedom:
    I_x(df/2, 1/2) / 2 with x = df / (df + t²)."""
    t2 = t * t
    return 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def _t_density(t: float, df: int) -> float:
    """The density of Student's t with ``df`` degrees of freedom at t."""
    log_norm = math.lgamma((df + 1) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2.0 * math.log1p(t * t / df))


def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t distribution with ``df`` >= 1 degrees of freedom.

    The upper tail P(T > t) = I_{df/(df+t²)}(df/2, 1/2) / 2 is computed with the
    regularized incomplete beta function (Lentz's continued fraction, as in Numerical
    Recipes) and solved for t by Newton's method on the density, kept inside a bracket
    that bisection narrows whenever a Newton step would leave it; the result is good to
    about 1e-12 relative. t_quantile(0.975, 4) = 2.776445.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be between 0 and 1, not {p!r}")
    if df < 1:
        raise ValueError(f"df must be at least 1, not {df}")
    if p == 0.5:
        return 0.0
    tail = min(p, 1.0 - p)  # solve P(T > t) = tail for t > 0, then give it p's sign
    low, high = 0.0, 1.0
    while _t_upper_tail(high, df) > tail:
        low, high = high, high * 2.0
    t = (low + high) / 2.0
    for _ in range(400):
        excess = _t_upper_tail(t, df) - tail  # > 0: t is too small
        if excess == 0.0:
            break
        if excess > 0.0:
            low = t
        else:
            high = t
        step = excess / _t_density(t, df)
        guess = t + step
        if not low < guess < high:
            guess = (low + high) / 2.0
        if abs(guess - t) <= 1e-15 * t or high - low <= 1e-15 * high:
            t = guess
            break
        t = guess
    return t if p > 0.5 else -t


def mean_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, Interval | None]:
    """The mean of ``values`` and its Student t interval, mean ± t(q, n - 1) · s / √n,
    q = (1 + confidence) / 2 and s the sample standard deviation (n - 1 in the denominator).

    The mean and s are computed exactly (``statistics.mean`` and ``statistics.stdev``
    work in fractions), so equal values give their value and an interval of zero width.
    For one value the interval is ``None``; no values, or a value that is not a finite
    number, is a ``ValueError``.
    """
    if not values:
        raise ValueError("the mean of no values is not defined")
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"values must be finite numbers: {list(values)!r}")
    _two_sided_z(confidence)  # the same check of confidence as wilson's
    mean = float(statistics.mean(values))
    n = len(values)
    if n == 1:
        return mean, None
    sd = statistics.stdev(values)
    if sd == 0.0:
        return mean, Interval(mean, mean)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, Interval(mean - half, mean + half)


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """The two-sided p value of Fisher's exact test of the 2x2 table [[a, b], [c, d]].

    With the margins fixed, the top-left cell x has the hypergeometric distribution
    P(x) ∝ C(a+b, x) · C(c+d, a+c-x). The p value is the sum of P(x) over every x with
    P(x) <= P(a) · (1 + 1e-7), the definition of R's ``fisher.test`` and scipy's
    ``stats.fisher_exact``. The weights are exact integers (each from the one before by
    an exact division), so the tolerance only decides near-ties and tables of a few
    thousand cost milliseconds. [[0, 5], [5, 0]] gives 0.007937.
    """
    if min(a, b, c, d) < 0:
        raise ValueError(f"cells of a table must not be negative: [[{a}, {b}], [{c}, {d}]]")
    row1, row2, col1 = a + b, c + d, a + c
    first, last = max(0, col1 - row2), min(row1, col1)
    weight = math.comb(row1, first) * math.comb(row2, col1 - first)
    observed = math.comb(row1, a) * math.comb(row2, col1 - a)
    total = extreme = 0
    for x in range(first, last + 1):
        total += weight
        if weight * 10_000_000 <= observed * 10_000_001:
            extreme += weight
        # C(row1, x+1)·C(row2, col1-x-1) from C(row1, x)·C(row2, col1-x), exactly
        weight = weight * (row1 - x) * (col1 - x) // ((x + 1) * (row2 - col1 + x + 1))
    return min(1.0, extreme / total)
