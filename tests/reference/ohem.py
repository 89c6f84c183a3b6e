"""Float64 reference for the OHEM cross-entropy, written from its definition with Python floats:
keep position i when p_i < thresh or when it is among the min_kept positions of smallest p_i
(ties by the lower flat index), then divide the kept weighted cross-entropy by the kept weights."""

from __future__ import annotations

import math

from torch import Tensor

from reference.long_tail import log_softmax, reduce, rows


def ohem_ce(
    logits: Tensor,
    target: Tensor,
    *,
    thresh: float,
    min_kept: int,
    class_weight: list[float] | None = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
) -> Tensor:
    xs, shape = rows(logits)
    labels = [int(v) for v in target.reshape(-1)]
    c = len(xs[0]) if xs else 0
    w = class_weight or [1.0] * c
    valid = [k for k, y in enumerate(labels) if ignore_index is None or y != ignore_index]
    p = {k: math.exp(log_softmax(xs[k])[labels[k]]) for k in valid}
    hardest_first = sorted(valid, key=lambda k: (p[k], k))
    rank = {k: r for r, k in enumerate(hardest_first)}
    out, denom = [0.0] * len(labels), 0.0
    for k in valid:
        if p[k] < thresh or rank[k] < min_kept:
            y = labels[k]
            out[k] = -w[y] * log_softmax(xs[k])[y]
            denom += w[y]
    return reduce(out, denom, reduction, shape)


def kept_mask(logits: Tensor, target: Tensor, **kw: object) -> Tensor:
    """Which positions the reference keeps (by its per-position loss being counted)."""
    # A kept position with an exactly-zero loss is impossible for finite logits (p < 1).
    return ohem_ce(logits, target, reduction="none", **kw) != 0  # type: ignore[arg-type]
