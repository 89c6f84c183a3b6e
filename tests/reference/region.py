"""Overlap losses written from the papers with Python loops and floats: Tversky (Salehi et al.
2017), focal Tversky (Abraham & Khan 2019), soft Jaccard, generalised dice (Sudre et al. 2017, with
MONAI's rule for absent classes), dice with separate smoothing, soft-label statistics (Wang &
Blaschko 2023), class-pooled dice, and the Lovasz extensions (Berman et al. 2018) evaluated from
the set function's definition (not from the cumulative-sum formula of the paper's Algorithm 1).

Every loss is computed from the lists of (probability or logit, target) pairs of each entry's
valid pixels, gathered by ``entries``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Pairs = list[tuple[float, float]]


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def entries(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: str = "softmax",
    batch: bool = False,
    ignore_index: int | None = None,
    include_background: bool = True,
    raw: bool = False,
) -> tuple[list[int], dict[object, Pairs]]:
    """The classes kept and, per entry key ((n, c), or c with ``batch``), the (p, g) pairs of the
    valid pixels (``raw``: the logit instead of p)."""
    n_, c_ = logits.shape[0], logits.shape[1]
    s_ = 1
    for d in logits.shape[2:]:
        s_ *= d
    x = logits.detach().double().reshape(n_, c_, s_).tolist()
    spatial = (n_,) + tuple(logits.shape[2:])
    dense = tuple(target.shape) == tuple(logits.shape)
    if not dense and c_ == 1 and activation != "softmax" and tuple(target.shape) == spatial:
        target = target.reshape(logits.shape)
        dense = True
    t = target.double().reshape(n_, c_, s_).tolist() if dense else target.reshape(n_, s_).tolist()
    classes = list(range(0 if include_background else 1, c_))
    keys = classes if batch else [(n, c) for n in range(n_) for c in classes]
    out: dict[object, Pairs] = {k: [] for k in keys}
    for n in range(n_):
        for i in range(s_):
            col = [x[n][c][i] for c in range(c_)]
            if raw or activation == "none":
                probs = col
            elif activation == "softmax":
                probs = _softmax(col)
            else:
                probs = [_sigmoid(v) for v in col]
            for c in classes:
                if dense:
                    g = t[n][c][i]
                    if ignore_index is not None and g == ignore_index:
                        continue
                else:
                    label = t[n][i]
                    if ignore_index is not None and label == ignore_index:
                        continue
                    g = 1.0 if label == c else 0.0
                out[c if batch else (n, c)].append((probs[c], g))
    return classes, out


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def dice(pairs: Pairs, nr: float, dr: float, squared: bool = False, soft: bool = False) -> float:
    if squared:
        inter = sum(p * g for p, g in pairs)
        card = sum(p * p + g * g for p, g in pairs)
    else:
        inter = sum((min(p, g) if soft else p * g) for p, g in pairs)
        card = sum(p + g for p, g in pairs)
    return 1.0 - _ratio(2.0 * inter + nr, card + dr)


def tversky_index(
    pairs: Pairs, alpha: float, beta: float, nr: float, dr: float, soft: bool = False
) -> float:
    """Salehi: |P G| / (|P G| + alpha |P \\ G| + beta |G \\ P|), with soft set operations."""
    if soft:
        tp = sum(min(p, g) for p, g in pairs)
        fp = sum(max(p - g, 0.0) for p, g in pairs)
        fn = sum(max(g - p, 0.0) for p, g in pairs)
    else:
        tp = sum(p * g for p, g in pairs)
        fp = sum(p * (1.0 - g) for p, g in pairs)
        fn = sum((1.0 - p) * g for p, g in pairs)
    return _ratio(tp + nr, tp + alpha * fp + beta * fn + dr)


def tversky(pairs: Pairs, alpha: float, beta: float, nr: float, dr: float, soft=False) -> float:
    return 1.0 - tversky_index(pairs, alpha, beta, nr, dr, soft)


def focal_tversky(
    pairs: Pairs, alpha: float, beta: float, gamma: float, nr: float, dr: float, soft=False
) -> float:
    """Abraham & Khan with the exponent given directly (the paper's 1 / gamma)."""
    base = max(1.0 - tversky_index(pairs, alpha, beta, nr, dr, soft), 0.0)
    return base**gamma


def jaccard(pairs: Pairs, nr: float, dr: float, squared: bool = False, soft: bool = False) -> float:
    """|P n G| / |P u G| with the soft intersection p g (or min) and union p + g - p g (or max)."""
    if squared:
        inter = sum(p * g for p, g in pairs)
        union = sum(p * p + g * g - p * g for p, g in pairs)
    elif soft:
        inter = sum(min(p, g) for p, g in pairs)
        union = sum(max(p, g) for p, g in pairs)
    else:
        inter = sum(p * g for p, g in pairs)
        union = sum(p + g - p * g for p, g in pairs)
    return 1.0 - _ratio(inter + nr, union + dr)


def pooled_dice(
    per_class: list[Pairs],
    weights: list[float],
    nr: float,
    dr: float,
    squared: bool = False,
    soft: bool = False,
) -> float:
    num, den = 0.0, 0.0
    for pairs, w in zip(per_class, weights, strict=True):
        for p, g in pairs:
            inter = p * g if squared or not soft else min(p, g)
            num += w * inter
            den += w * (p * p + g * g if squared else p + g)
    return 1.0 - _ratio(2.0 * num + nr, den + dr)


def gdl_weights(volumes: list[float], weight_type: str) -> list[float]:
    """Sudre's 1 / G^2 (or 1 / G, or 1); infinite weights (G = 0) become the largest finite one
    of the group (MONAI), 0 when there is none."""
    if weight_type == "uniform":
        return [1.0] * len(volumes)
    raw = [
        math.inf if v == 0 else (1.0 / (v * v) if weight_type == "square" else 1.0 / v)
        for v in volumes
    ]
    finite = [w for w in raw if not math.isinf(w)]
    largest = max(finite) if finite else 0.0
    return [largest if math.isinf(w) else w for w in raw]


def lovasz_jaccard_set(errors: list[float], labels: list[float]) -> float:
    """The Lovasz extension of the Jaccard set loss Delta(M) = |M| / |G u M| at the error vector,
    from its definition: sum_i m_pi(i) * (Delta({pi_1..pi_i}) - Delta({pi_1..pi_(i-1)}))."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    gt = sum(1 for y in labels if y == 1.0)

    def delta(prefix: list[int]) -> float:
        if not prefix:
            return 0.0
        outside = sum(1 for i in prefix if labels[i] != 1.0)  # |M \ G|
        return len(prefix) / (gt + outside)

    total, prev = 0.0, 0.0
    for k in range(1, len(order) + 1):
        cur = delta(order[:k])
        total += errors[order[k - 1]] * (cur - prev)
        prev = cur
    return total


def lovasz_softmax_entry(pairs: Pairs) -> float:
    return lovasz_jaccard_set([abs(g - p) for p, g in pairs], [g for _, g in pairs])


def lovasz_hinge_entry(pairs: Pairs) -> float:
    """Pairs of (logit, label): hinge errors max(1 - z (2y - 1), 0)."""
    errors = [max(1.0 - z * (2.0 * y - 1.0), 0.0) for z, y in pairs]
    return lovasz_jaccard_set(errors, [y for _, y in pairs])


def per_entry(
    classes: list[int],
    pairs: dict[object, Pairs],
    fn: Callable[[Pairs], float],
    *,
    batch: bool,
    n: int,
    class_weight: list[float] | None = None,
    present_only: bool = False,
    ignore: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses, valid) of shape (N, C') or (C',): an entry is valid when it has a valid pixel (or
    when nothing can be ignored), and with ``present_only`` when its target is non-empty."""
    losses, valid = [], []
    keys = classes if batch else [(i, c) for i in range(n) for c in classes]
    for key in keys:
        ps = pairs[key]
        c = key if batch else key[1]
        w = 1.0 if class_weight is None else class_weight[c]
        losses.append(w * fn(ps))
        ok = bool(ps) or not ignore
        if present_only:
            ok = ok and any(g == 1.0 for _, g in ps)
        valid.append(ok)
    shape = (len(classes),) if batch else (n, len(classes))
    return (
        torch.tensor(losses, dtype=torch.float64).reshape(shape),
        torch.tensor(valid, dtype=torch.bool).reshape(shape),
    )
