"""Float64 references for the classification losses, written from the formulas with explicit loops.

Nothing here calls lossforge or ``torch.nn.functional``; tensors are only used as containers. Each
function returns the *reduced* value with lossforge's conventions (``"mean"`` of nothing is 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _rows(logits: Tensor) -> tuple[list[list[float]], tuple[int, ...]]:
    """Positions x classes as nested lists, plus the shape of the positions (class dim removed)."""
    x = logits.detach().double()
    if x.ndim == 1:
        return [[float(v) for v in x]], ()
    moved = x.movedim(1, -1)
    pos_shape = tuple(moved.shape[:-1])
    flat = moved.reshape(-1, x.shape[1])
    return [[float(v) for v in row] for row in flat], pos_shape


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    s = sum(math.exp(v - m) for v in row)
    lse = m + math.log(s)
    return [v - lse for v in row]


def _reduce(values: list[float], denom: float, reduction: str, shape: tuple[int, ...]) -> Tensor:
    if reduction == "none":
        return torch.tensor(values, dtype=torch.float64).reshape(shape)
    total = math.fsum(values)
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / denom if denom != 0 else 0.0, dtype=torch.float64)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    class_weight: list[float] | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    log_prior: list[float] | None = None,
    already_log_probs: bool = False,
) -> Tensor:
    """Softmax cross-entropy (PyTorch semantics, 0 for an empty mean)."""
    rows, pos_shape = _rows(logits)
    c = logits.shape[1] if logits.ndim >= 2 else logits.shape[0]
    w = [1.0] * c if class_weight is None else [float(v) for v in class_weight]
    eps = label_smoothing
    out: list[float] = []
    if target.is_floating_point():
        probs, _ = _rows(target)
        for row, t in zip(rows, probs, strict=True):
            if log_prior is not None:
                row = [v + lp for v, lp in zip(row, log_prior, strict=True)]
            logp = row if already_log_probs else _log_softmax(row)
            loss = 0.0
            for k in range(c):
                tk = t[k] * (1.0 - eps) + eps / c
                loss -= w[k] * tk * logp[k]
            out.append(loss)
        return _reduce(out, float(len(out)), reduction, pos_shape)
    labels = [int(v) for v in target.reshape(-1)]
    denom = 0.0
    for row, y in zip(rows, labels, strict=True):
        if ignore_index is not None and y == ignore_index:
            out.append(0.0)
            continue
        if log_prior is not None:
            row = [v + lp for v, lp in zip(row, log_prior, strict=True)]
        logp = row if already_log_probs else _log_softmax(row)
        nll = -w[y] * logp[y]
        smooth = 0.0
        for k in range(c):
            smooth -= w[k] * logp[k]
        out.append((1.0 - eps) * nll + eps / c * smooth)
        denom += w[y]
    return _reduce(out, denom, reduction, pos_shape)


def nll_loss(log_probs: Tensor, target: Tensor, **kw: object) -> Tensor:
    return cross_entropy(log_probs, target, already_log_probs=True, **kw)  # type: ignore[arg-type]


def log_prior(counts: list[float], tau: float = 1.0, floor: float = 1e-12) -> list[float]:
    total = math.fsum(counts)
    return [tau * math.log(max(n / total, floor)) for n in counts]


def binary_cross_entropy(probs: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """-(y max(log p, -100) + (1 - y) max(log(1 - p), -100)), element by element."""
    p = [float(v) for v in probs.detach().double().reshape(-1)]
    y = [float(v) for v in target.double().reshape(-1)]
    out = []
    for pi, yi in zip(p, y, strict=True):
        lp = math.log(pi) if pi > 0 else -math.inf
        lq = math.log(1.0 - pi) if pi < 1 else -math.inf
        out.append(-(yi * max(lp, -100.0) + (1.0 - yi) * max(lq, -100.0)))
    return _reduce(out, float(len(out)), reduction, tuple(probs.shape))


def _log_sigmoid(x: float) -> float:
    # log(1 / (1 + exp(-x))), stable on both sides
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def binary_cross_entropy_with_logits(
    logits: Tensor,
    target: Tensor,
    *,
    pos_weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    valid: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """-(w+ y' log sigma(x) + (1 - y') log sigma(-x)), y' = y (1 - eps) + eps / 2.

    ``target`` is dense (the logits' shape); ``valid`` (same shape, bool) marks counted elements.
    ``pos_weight`` is expanded to the logits' shape by the caller's broadcasting rule.
    """
    shape = tuple(logits.shape)
    x = [float(v) for v in logits.detach().double().reshape(-1)]
    y = [float(v) for v in target.double().reshape(-1)]
    pw = (
        [1.0] * len(x)
        if pos_weight is None
        else [float(v) for v in pos_weight.double().expand(shape).reshape(-1)]
    )
    ok = [True] * len(x) if valid is None else [bool(v) for v in valid.expand(shape).reshape(-1)]
    eps = label_smoothing
    out = []
    for xi, yi, wi, vi in zip(x, y, pw, ok, strict=True):
        if not vi:
            out.append(0.0)
            continue
        ys = yi * (1.0 - eps) + eps / 2.0
        out.append(-(wi * ys * _log_sigmoid(xi) + (1.0 - ys) * _log_sigmoid(-xi)))
    return _reduce(out, float(sum(ok)), reduction, shape)
