"""Float64 references for the asymmetric losses, written from Ridnik et al. (ICCV 2021) and the
authors' code with explicit loops and Python ``math``.

Nothing here calls lossforge or ``torch.nn.functional``; tensors are only containers. The
multi-label reference follows the reference repo literally (``pow`` of ``1 - p_t``,
``log(max(., eps))``), not the stable ``exp(gamma * log)`` construction of the library.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _log_sigmoid(x: float) -> float:
    # log(1 / (1 + e^-x)) without overflow
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def asl_element(
    x: float, y: float, gamma_pos: float, gamma_neg: float, clip: float, eps: float
) -> float:
    """One element of the multi-label ASL (the reference repo's formula)."""
    p = _sigmoid(x)
    one_minus_p = _sigmoid(-x)
    xs_neg = min(one_minus_p + clip, 1.0) if clip > 0 else one_minus_p  # 1 - p_m
    log_pos = _log_sigmoid(x)
    log_neg = math.log(xs_neg) if clip > 0 else _log_sigmoid(-x)
    if eps > 0:
        log_pos = max(log_pos, math.log(eps))
        log_neg = max(log_neg, math.log(eps))
    lp = y * log_pos + (1 - y) * log_neg
    if gamma_pos == 0 and gamma_neg == 0:
        return -lp
    base = 1.0 - (p * y + xs_neg * (1 - y)) if clip > 0 else y * one_minus_p + (1 - y) * p
    base = max(base, 0.0)
    gamma = gamma_pos * y + gamma_neg * (1 - y)
    return -lp * base**gamma


def asl_element_grad_detached(
    x: float, y: float, gamma_pos: float, gamma_neg: float, clip: float, eps: float
) -> float:
    """d(loss)/dx with the focusing weight treated as a constant (``detach_focal_weight=True``)."""
    p = _sigmoid(x)
    q = _sigmoid(-x)
    dlog_pos = q if (eps == 0 or _log_sigmoid(x) > math.log(eps)) else 0.0
    if clip > 0:
        xs_neg = min(q + clip, 1.0)
        dxs = -p * q if q + clip < 1.0 else 0.0
        dlog_neg = dxs / xs_neg if (eps == 0 or math.log(xs_neg) > math.log(eps)) else 0.0
        base = y * q + (1 - y) * max(p - clip, 0.0)
    else:
        dlog_neg = -p if (eps == 0 or _log_sigmoid(-x) > math.log(eps)) else 0.0
        base = y * q + (1 - y) * p
    w = base ** (gamma_pos * y + gamma_neg * (1 - y))
    return -(y * dlog_pos + (1 - y) * dlog_neg) * w


def _dense(logits: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Dense float64 target and a 0/1 validity map of the logits' shape (loops, no broadcasting)."""
    x = logits.detach().double()
    y = torch.zeros_like(x)
    valid = torch.ones_like(x)
    if target.shape == logits.shape:
        for i, v in enumerate(target.reshape(-1).tolist()):
            if ignore_index is not None and v == ignore_index:
                valid.view(-1)[i] = 0.0
            else:
                y.view(-1)[i] = float(v)
        return y, valid
    cdim = 1 if x.ndim >= 2 else 0
    c = x.shape[cdim]
    index_shape = tuple(target.shape)
    for pos in itertools.product(*(range(d) for d in index_shape)):
        k = int(target[pos])
        for cls in range(c):
            full = pos[:cdim] + (cls,) + pos[cdim:]
            if ignore_index is not None and k == ignore_index:
                valid[full] = 0.0
            elif k == cls:
                y[full] = 1.0
    return y, valid


def asymmetric(
    logits: Tensor,
    target: Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-label ASL, reduced with lossforge's conventions (mean over valid elements)."""
    y, valid = _dense(logits, target, ignore_index)
    x = logits.detach().double()
    out = torch.zeros_like(x)
    n = 0
    for i in range(x.numel()):
        if valid.view(-1)[i] == 0:
            continue
        n += 1
        out.view(-1)[i] = asl_element(
            float(x.view(-1)[i]), float(y.view(-1)[i]), gamma_pos, gamma_neg, clip, eps
        )
    if reduction == "none":
        return out
    total = sum(out.reshape(-1).tolist())
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / n if n else 0.0, dtype=torch.float64)


def softmax_asymmetric(
    logits: Tensor,
    target: Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    label_smoothing: float = 0.1,
    ignore_index: int | None = -100,
    reduction: str = "mean",
) -> Tensor:
    """Single-label ASL (the authors' ASLSingleLabel formula), per position, with loops."""
    x = logits.detach().double()
    if x.ndim == 1:
        rows, pos_shape = [x.tolist()], ()
    else:
        moved = x.movedim(1, -1)
        pos_shape = tuple(moved.shape[:-1])
        rows = moved.reshape(-1, x.shape[1]).tolist()
    targets = target.reshape(-1).tolist()
    c = len(rows[0]) if rows else x.shape[1 if x.ndim >= 2 else 0]
    out: list[float] = []
    n = 0
    for row, t in zip(rows, targets, strict=True):
        if ignore_index is not None and t == ignore_index:
            out.append(0.0)
            continue
        n += 1
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        logp = [v - lse for v in row]
        p = [math.exp(v) for v in logp]
        total = 0.0
        for k in range(c):
            if k == t:
                w = (1.0 - p[k]) ** gamma_pos if gamma_pos else 1.0
                if gamma_pos and p[k] > 0.5:  # 1 - p_t as the sum of the others (no cancellation)
                    w = sum(p[j] for j in range(c) if j != k) ** gamma_pos
                q = 1.0 - label_smoothing + label_smoothing / c
            else:
                w = p[k] ** gamma_neg
                q = label_smoothing / c
            total -= q * w * logp[k]
        out.append(total)
    if reduction == "none":
        return torch.tensor(out, dtype=torch.float64).reshape(pos_shape)
    s = sum(out)
    if reduction == "sum":
        return torch.tensor(s, dtype=torch.float64)
    return torch.tensor(s / n if n else 0.0, dtype=torch.float64)
