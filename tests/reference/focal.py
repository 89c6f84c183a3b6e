"""Focal-loss references written from Lin et al. (2017), element by element with Python floats.

``p_t`` and ``alpha_t`` follow the paper (and, for soft labels, torchvision / mmdetection):
p_t = y p + (1 - y)(1 - p), alpha_t = y alpha + (1 - y)(1 - alpha),
loss = alpha_t (1 - p_t)^gamma BCE.
The softmax form is -sum_c q_c alpha_c w_c (1 - p_c)^gamma log p_c over the (smoothed) target q.
"""

from __future__ import annotations

import math

import torch


def _log_sigmoid(x: float) -> float:
    # log(1 / (1 + e^-x)) without overflow on either side
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sigmoid_focal(x: float, y: float, alpha: float | None, gamma: float) -> float:
    """One element of the sigmoid focal loss."""
    p, one_minus_p = _sigmoid(x), _sigmoid(-x)
    bce = -(y * _log_sigmoid(x) + (1.0 - y) * _log_sigmoid(-x))
    one_minus_pt = y * one_minus_p + (1.0 - y) * p  # 1 - p_t, p_t = y p + (1 - y)(1 - p)
    loss = bce * one_minus_pt**gamma  # Python: 0.0 ** 0 == 1.0
    if alpha is not None:
        loss *= y * alpha + (1.0 - y) * (1.0 - alpha)
    return loss


def sigmoid_focal_map(
    logits: torch.Tensor, target: torch.Tensor, alpha: float | None, gamma: float
) -> torch.Tensor:
    """Unreduced loss for dense targets of the logits' shape."""
    xs = logits.detach().double().reshape(-1).tolist()
    ys = target.detach().double().reshape(-1).tolist()
    out = [sigmoid_focal(x, y, alpha, gamma) for x, y in zip(xs, ys, strict=True)]
    return torch.tensor(out, dtype=torch.float64).reshape(logits.shape)


def dense_from_index(index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) class indices (C = background) -> (N, C) 0/1 rows, with a Python loop."""
    rows = []
    for k in index.tolist():
        rows.append([1.0 if c == k else 0.0 for c in range(num_classes)])
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), num_classes)


def _log_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    s = sum(math.exp(v - m) for v in row)
    return [v - m - math.log(s) for v in row]


def softmax_focal_rows(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float,
    alpha: list[float] | None = None,
    class_weight: list[float] | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row softmax focal loss of (N, C) logits.

    ``target`` is (N,) class indices or (N, C) probabilities. Returns (loss per row, valid mask,
    class weight of each row's target (1 for probability targets)); ignored rows give 0.
    """
    x = logits.detach().double().tolist()
    n = len(x)
    c = len(x[0]) if n else 0
    a = alpha if alpha is not None else [1.0] * c
    w = class_weight if class_weight is not None else [1.0] * c
    eps = label_smoothing
    losses, valid, row_w = [], [], []
    probs = target.is_floating_point()
    t_list = target.detach().double().tolist() if probs else target.tolist()
    for i in range(n):
        if not probs and ignore_index is not None and t_list[i] == ignore_index:
            losses.append(0.0)
            valid.append(False)
            row_w.append(0.0)
            continue
        logp = _log_softmax_row(x[i])
        if probs:
            q = [(1.0 - eps) * t_list[i][k] + eps / c for k in range(c)]
        else:
            q = [(1.0 - eps) * (1.0 if k == t_list[i] else 0.0) + eps / c for k in range(c)]
        total = 0.0
        for k in range(c):
            p = math.exp(logp[k])
            total += -q[k] * a[k] * w[k] * (1.0 - p) ** gamma * logp[k]
        losses.append(total)
        valid.append(True)
        row_w.append(1.0 if probs else w[t_list[i]])
    return (
        torch.tensor(losses, dtype=torch.float64),
        torch.tensor(valid, dtype=torch.bool),
        torch.tensor(row_w, dtype=torch.float64),
    )
