"""Paired statistics of ``lossforge compare``: differences to a baseline over seeds.

For a given seed, every loss sees the same data split, initial weights and mini-batches, so each
loss is compared with the task's baseline (cross-entropy or BCE) seed by seed. With
$d_s = m_s(\\text{loss}) - m_s(\\text{baseline})$ over $n$ seeds, the 95 % interval is the
Student-t interval

$$ \\bar d \\pm t_{0.975,\\,n-1} \\, \\frac{s_d}{\\sqrt n} $$

($s_d$ the sample standard deviation of the $d_s$). It is exact when the differences are normal;
a percentile bootstrap over 5 seeds would resample only 126 distinct sets and is known to be too
narrow at such sizes, so it is not used. A loss is **better** or **worse** when its interval
excludes 0, else **within noise**. The intervals are per comparison (no multiplicity correction).

Only the standard library is needed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Interval",
    "budget_changes",
    "paired_interval",
    "t_critical",
    "verdict",
]

# Two-sided 95 % critical values of Student's t, t_{0.975, df}, for df = 1 ... 30 (checked against
# scipy.stats.t.ppf in the tests).
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959963984540054

BETTER, WORSE, WITHIN_NOISE, ONE_SEED = "better", "worse", "within noise", "one seed"


def t_critical(df: int) -> float:
    """$t_{0.975, df}$: a table up to 30 degrees of freedom, then the Cornish-Fisher expansion
    (Abramowitz & Stegun 26.7.5, error below 1e-5 there)."""
    if df < 1:
        raise ValueError(f"t_critical: expected df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass(frozen=True)
class Interval:
    """A mean paired difference with its 95 % interval (``low``/``high`` are ``None`` for one
    seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int


def paired_interval(values: Sequence[float], baseline: Sequence[float]) -> Interval:
    """The mean of ``values[s] - baseline[s]`` and its 95 % Student-t interval.

    Raises:
        ValueError: different lengths or no values.
    """
    if len(values) != len(baseline) or not values:
        raise ValueError(
            f"paired_interval: expected two equally long, non-empty lists, got {len(values)} and "
            f"{len(baseline)} values"
        )
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_critical(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def verdict(interval: Interval) -> str:
    """``"better"`` / ``"worse"`` when the interval excludes 0, else ``"within noise"``."""
    if interval.low is None or interval.high is None:
        return ONE_SEED
    if interval.low > 0:
        return BETTER
    if interval.high < 0:
        return WORSE
    return WITHIN_NOISE


def budget_changes(
    labels: Sequence[str],
    at_budget: Sequence[Sequence[float]],
    at_double: Sequence[Sequence[float]],
    baseline: int = 0,
) -> tuple[list[str], list[str]]:
    """What doubling the budget changes in a leaderboard.

    A pair of losses (the baseline included) **changes places** when their paired difference is
    significant (95 % interval excludes 0) at one budget and has the opposite sign (by the mean)
    at the other. A loss's **verdict** against the baseline can also change without any change
    of places: a difference whose interval touches 0 at one budget and not at the other.

    Args:
        labels: One label per loss.
        at_budget: Per loss, the metric per seed at the budget.
        at_double: The same at twice the budget.
        baseline: Index of the baseline loss.

    Returns:
        ``(reorders, verdicts)``: one sentence per pair that changes places, and one per verdict
        that changes otherwise (both empty when nothing changes).
    """
    reorders: list[str] = []
    swapped: set[int] = set()
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            one = paired_interval(at_budget[i], at_budget[j])
            two = paired_interval(at_double[i], at_double[j])
            significant = verdict(one) in (BETTER, WORSE) or verdict(two) in (BETTER, WORSE)
            if significant and one.mean * two.mean < 0:
                first, second = (i, j) if one.mean > 0 else (j, i)
                reorders.append(f"{labels[first]} ahead of {labels[second]} -> behind")
                if baseline in (i, j):
                    swapped.add(j if i == baseline else i)
    verdicts: list[str] = []
    for i, label in enumerate(labels):
        if i == baseline or i in swapped:
            continue
        before = verdict(paired_interval(at_budget[i], at_budget[baseline]))
        after = verdict(paired_interval(at_double[i], at_double[baseline]))
        if before != after:
            verdicts.append(f"{label}: {before} -> {after}")
    return reorders, verdicts
