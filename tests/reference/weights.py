"""Class weights from counts, written from the papers' formulas with Python floats only."""

from __future__ import annotations

import math


def inverse(counts: list[float]) -> list[float]:
    return [1.0 / n for n in counts]


def inverse_sqrt(counts: list[float]) -> list[float]:
    return [1.0 / math.sqrt(n) for n in counts]


def median_frequency(counts: list[float]) -> list[float]:
    """Eigen & Fergus (2015): median(freq) / freq_c; median = mean of the middle two when even."""
    total = sum(counts)
    freq = [n / total for n in counts]
    s = sorted(freq)
    m = len(s) // 2
    med = s[m] if len(s) % 2 == 1 else (s[m - 1] + s[m]) / 2
    return [med / f for f in freq]


def enet(counts: list[float], c: float = 1.02) -> list[float]:
    """Paszke et al. (2016): 1 / ln(c + p_class)."""
    total = sum(counts)
    return [1.0 / math.log(c + n / total) for n in counts]


def effective_number(counts: list[float], beta: float) -> list[float]:
    """Cui et al. (2019): (1 - beta) / (1 - beta^n), via E_n = sum_{j<n} beta^j for integer n."""
    out = []
    for n in counts:
        e_n = sum(beta**j for j in range(int(n)))  # expected number of distinct samples
        out.append(1.0 / e_n)
    return out
