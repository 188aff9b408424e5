"""vaultd.stats against published values and against scipy over grids of inputs."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from vaultd.stats import Interval, fisher_exact, mean_interval, t_quantile, wilson

REL = 1e-9


def close(value: float, expected: float) -> bool:
    return math.isclose(value, expected, rel_tol=REL, abs_tol=1e-15)


# --- published values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (3, 5, 0.2307, 0.8824),  # the contract: `3/5 · 60% (23-88%)` (an en dash there)
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_published(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson(successes, n)
    assert round(interval.low, 4) == low
    assert round(interval.high, 4) == high


def test_wilson_ends_are_exact() -> None:
    assert wilson(0, 7).low == 0.0
    assert wilson(7, 7).high == 1.0


@pytest.mark.parametrize(
    ("p", "df", "expected", "digits"),
    [(0.975, 4, 2.776445, 6), (0.975, 1, 12.7062, 4), (0.975, 30, 2.0423, 4)],
)
def test_t_quantile_published(p: float, df: int, expected: float, digits: int) -> None:
    assert round(t_quantile(p, df), digits) == expected


@pytest.mark.parametrize("p", [0.0001, 0.01, 0.2, 0.5, 0.6, 0.975, 0.999, 0.999999])
def test_t_quantile_closed_forms(p: float) -> None:
    # df = 1 is the Cauchy distribution, df = 2 has t = (2p - 1) / sqrt(2p(1 - p))
    assert math.isclose(t_quantile(p, 1), math.tan(math.pi * (p - 0.5)), rel_tol=REL, abs_tol=1e-15)
    two = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert math.isclose(t_quantile(p, 2), two, rel_tol=REL, abs_tol=1e-15)


def test_t_quantile_is_antisymmetric() -> None:
    for df in (1, 3, 17, 150):
        assert close(t_quantile(0.1, df), -t_quantile(0.9, df))
    assert t_quantile(0.5, 9) == 0.0


def test_fisher_exact_published() -> None:
    assert round(fisher_exact(0, 5, 5, 0), 6) == 0.007937  # 0/5 vs 5/5: 2 / C(10, 5)
    assert round(fisher_exact(3, 1, 1, 3), 4) == 0.4857  # the lady tasting tea, two-sided
    assert fisher_exact(5, 0, 0, 0) == 1.0  # an empty row or column: nothing to test
    assert fisher_exact(2, 3, 2, 3) == 1.0


def test_mean_interval_by_hand() -> None:
    mean, interval = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445105197799 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 3.0
    assert interval is not None
    assert close(interval.low, 3.0 - half)
    assert close(interval.high, 3.0 + half)


def test_mean_interval_edges() -> None:
    assert mean_interval([2.4]) == (2.4, None)
    assert mean_interval([0.1, 0.1, 0.1]) == (0.1, Interval(0.1, 0.1))
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, math.nan])


def test_bad_arguments_say_what() -> None:
    with pytest.raises(ValueError, match="n must be at least 1"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="between 0 and n = 5, not 6"):
        wilson(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        wilson(1, 5, confidence=1.0)
    with pytest.raises(ValueError, match="df must be at least 1"):
        t_quantile(0.9, 0)
    with pytest.raises(ValueError, match="p must be between 0 and 1"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="negative"):
        fisher_exact(1, -1, 2, 3)


# --- against scipy ----------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.95, 0.8, 0.99])
def test_wilson_matches_scipy(confidence: float) -> None:
    z = scipy_stats.norm.ppf(0.5 + confidence / 2)
    for n in range(1, 101):
        for successes in range(n + 1):
            got = wilson(successes, n, confidence)
            p = successes / n
            centre = (p + z * z / (2 * n)) / (1 + z * z / n)
            half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
            low = 0.0 if successes == 0 else centre - half
            high = 1.0 if successes == n else centre + half
            assert close(got.low, low), (successes, n, got, low)
            assert close(got.high, high), (successes, n, got, high)


def test_wilson_matches_scipy_binomtest() -> None:
    for n in (1, 2, 5, 10, 37, 100):
        for successes in range(n + 1):
            ci = scipy_stats.binomtest(successes, n).proportion_ci(method="wilson")
            got = wilson(successes, n)
            assert close(got.low, ci.low), (successes, n)
            assert close(got.high, ci.high), (successes, n)


P_GRID = [1e-6, 0.001, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.49, 0.5001]
P_GRID += [1 - p for p in P_GRID]


def assert_t_matches_scipy(p: float, df: int) -> None:
    got, want = t_quantile(p, df), float(scipy_stats.t.ppf(p, df))
    if close(got, want):
        return
    # scipy's ppf itself is off by up to 4e-4 relative for df = 4 near p = 0.5 (its df = 4
    # shortcut); there ours must be at least as good, by scipy's own cdf
    assert abs(scipy_stats.t.cdf(got, df) - p) <= abs(scipy_stats.t.cdf(want, df) - p), (p, df)


def test_t_quantile_matches_scipy() -> None:
    for df in [*range(1, 201), 1000, 100_000]:
        for p in P_GRID:
            assert_t_matches_scipy(p, df)


@pytest.mark.parametrize("p", [0.5000001, 0.50001, 0.5001, 0.51, 0.9])
def test_t_quantile_df4_near_the_middle(p: float) -> None:
    # df = 4 in closed form, in 50 digits: F(t) = 1/2 + 3/8 · t/√u · (1 - t²/12u), u = 1 + t²/4
    with localcontext() as context:
        context.prec = 50
        t = Decimal(t_quantile(p, 4))
        u = 1 + t * t / 4
        cdf = Decimal(1) / 2 + Decimal(3) / 8 * (t / u.sqrt()) * (1 - t * t / (12 * u))
        assert abs(cdf - Decimal(p)) < Decimal("1e-15")  # scipy's ppf: 1.6e-13 at 0.5001


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=1e-9, max_value=1 - 1e-9).filter(lambda p: p != 0.5),
    st.integers(min_value=1, max_value=100_000),
)
def test_t_quantile_matches_scipy_anywhere(p: float, df: int) -> None:
    assert_t_matches_scipy(p, df)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=2, max_size=100),
    st.sampled_from([0.95, 0.9, 0.99]),
)
def test_mean_interval_matches_scipy(values: list[float], confidence: float) -> None:
    mean, interval = mean_interval(values, confidence)
    assert close(mean, statistics.mean(values))
    assert interval is not None
    sem = statistics.stdev(values) / math.sqrt(len(values))
    if sem == 0.0:
        assert interval == Interval(mean, mean)
        return
    low, high = scipy_stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    # the ends are mean ± half: compare the half width, which is what was computed
    assert close(interval.high - mean, float(high) - mean)
    assert close(mean - interval.low, mean - float(low))


def test_fisher_exact_matches_scipy_on_a_grid() -> None:
    cells = range(0, 31, 3)
    for a in cells:
        for b in cells:
            for c in cells:
                for d in cells:
                    want = scipy_stats.fisher_exact([[a, b], [c, d]]).pvalue
                    assert close(fisher_exact(a, b, c, d), float(want)), (a, b, c, d)


@settings(max_examples=500, deadline=None)
@given(*[st.integers(min_value=0, max_value=30)] * 4)
def test_fisher_exact_matches_scipy_anywhere(a: int, b: int, c: int, d: int) -> None:
    want = scipy_stats.fisher_exact([[a, b], [c, d]]).pvalue
    assert close(fisher_exact(a, b, c, d), float(want))


@pytest.mark.parametrize(
    "table", [(1500, 1500, 1400, 1600), (3000, 1000, 2000, 2000), (2, 2998, 9, 2991)]
)
def test_fisher_exact_large_tables(table: tuple[int, int, int, int]) -> None:
    a, b, c, d = table
    want = scipy_stats.fisher_exact([[a, b], [c, d]]).pvalue
    assert math.isclose(fisher_exact(a, b, c, d), float(want), rel_tol=1e-7, abs_tol=1e-300)
