"""Float64 references for the balanced binary cross-entropies (explicit loops, Python ``math``).

``balanced_bce`` follows HED (Xie & Tu 2015): beta = |Y-| / |Y| per sample. ``ohem_bce`` follows
DB's ``BalanceCrossEntropyLoss`` / mmocr's ``MaskedBalancedBCEWithLogitsLoss``: count positives
and negatives over the whole batch, keep the ``min(#neg, int(#pos * ratio))`` hardest negatives (a
Python sort), divide by ``#pos + k + eps``. Nothing here calls lossforge or ``torch.nn.functional``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bce_element(x: float, y: float) -> float:
    """-(y log sigma(x) + (1 - y) log(1 - sigma(x))), overflow-free."""
    log_p = -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
    log_q = -math.log1p(math.exp(x)) if x <= 0 else -x - math.log1p(math.exp(-x))
    return -(y * log_p + (1 - y) * log_q)


def balanced_bce(
    logits: Tensor, target: Tensor, *, beta: float | None = None, reduction: str = "mean"
) -> Tensor:
    """HED balanced BCE for dense targets; samples along dim 0 (a 1-d input is one sample)."""
    x = logits.detach().double()
    y = target.detach().double()
    samples = (
        [(x.reshape(-1), y.reshape(-1))]
        if x.ndim < 2
        else [(x[i].reshape(-1), y[i].reshape(-1)) for i in range(x.shape[0])]
    )
    out: list[list[float]] = []
    for xs, ys in samples:
        xl, yl = xs.tolist(), ys.tolist()
        if beta is None:
            n = len(yl)
            b = sum(1.0 - v for v in yl) / n if n else 0.5
        else:
            b = beta
        row = []
        for xi, yi in zip(xl, yl, strict=True):
            log_p = -bce_element(xi, 1.0)
            log_q = -bce_element(xi, 0.0)
            row.append(-(b * yi * log_p + (1 - b) * (1 - yi) * log_q))
        out.append(row)
    flat = [v for row in out for v in row]
    if reduction == "none":
        return torch.tensor(flat, dtype=torch.float64).reshape(x.shape)
    total = sum(flat)
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / len(flat) if flat else 0.0, dtype=torch.float64)


def ohem_bce(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    negative_ratio: float = 3.0,
    fallback_negative_num: int = 0,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    """DB/mmocr OHEM balanced BCE. For binary targets and 0/1 masks: every positive, and the
    k = min(#negatives, floor(#positives * ratio)) negatives of largest loss (the fallback count
    without positives), normalised by their number. A soft mask (or target) counts fractionally:
    an element is q_i = y_i m_i positive and Q_i = (1 - y_i) m_i negative, the counts are sums of
    those, k = min(floor(sum Q), floor(sum q * ratio)), the negatives (Q_i > 0) are ranked by
    Q_i * loss_i (ties: the lower index first) and the kept terms are q_i loss_i and Q_i loss_i."""
    xs = logits.detach().double().reshape(-1).tolist()
    ys = target.detach().double().reshape(-1).tolist()
    ms = [1.0] * len(xs) if mask is None else mask.detach().double().reshape(-1).tolist()
    losses = [bce_element(a, b) for a, b in zip(xs, ys, strict=True)]
    q = [y * m for y, m in zip(ys, ms, strict=True)]
    big_q = [(1.0 - y) * m for y, m in zip(ys, ms, strict=True)]
    n_pos, n_neg = sum(q), sum(big_q)
    wanted = math.floor(n_pos * negative_ratio) if n_pos > 0 else fallback_negative_num
    k = min(math.floor(n_neg), wanted)
    negatives = [i for i in range(len(xs)) if big_q[i] > 0]
    hardest = sorted(negatives, key=lambda i: (-big_q[i] * losses[i], i))[:k]
    out = [q[i] * losses[i] for i in range(len(xs))]
    for i in hardest:
        out[i] += big_q[i] * losses[i]
    if reduction == "none":
        return torch.tensor(out, dtype=torch.float64).reshape(logits.shape)
    total = sum(out)
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / (n_pos + k + eps), dtype=torch.float64)


def ohem_bce_per_image(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    negative_ratio: float = 3.0,
    fallback_negative_num: int = 0,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    """Per-image mining (PSENet's OHEM applied to DB's balanced BCE): each sample's hard negatives
    chosen from its own counts, the kept losses pooled over the batch with the pooled count."""
    outs, kept = [], 0.0
    for j in range(logits.shape[0]):
        mj = None if mask is None else mask[j]
        outs.append(
            ohem_bce(
                logits[j],
                target[j],
                mj,
                negative_ratio=negative_ratio,
                fallback_negative_num=fallback_negative_num,
                reduction="none",
            )
        )
        ms = [1.0] * logits[j].numel() if mj is None else mj.double().reshape(-1).tolist()
        ys = target[j].double().reshape(-1).tolist()
        n_pos = sum(y * m for y, m in zip(ys, ms, strict=True))
        n_neg = sum((1.0 - y) * m for y, m in zip(ys, ms, strict=True))
        wanted = math.floor(n_pos * negative_ratio) if n_pos > 0 else fallback_negative_num
        kept += n_pos + min(math.floor(n_neg), wanted)
    out = torch.stack(outs)
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.sum() / (kept + eps)
