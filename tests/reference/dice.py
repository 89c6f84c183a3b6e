"""Soft dice (V-Net, Milletari et al. 2016) written from the formula with loops and Python floats.

For every sample n and class c (or every class c over the whole batch):

    dice = (2 sum_i p_i g_i + s) / (sum_i p_i^k + sum_i g_i^k + s),  k = 2 if squared else 1,
    loss = 1 - dice, with 0/0 (s = 0, empty target and prediction) defined as loss 0,

where i runs over the pixels that are not ignored. Probabilities come from a per-pixel softmax,
per-element sigmoid or the input itself; targets are one-hot from class indices or taken as given.
"""

from __future__ import annotations

import math

import torch


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


def dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: str = "softmax",
    smooth: float = 1.0,
    squared: bool = False,
    batch: bool = False,
    ignore_index: int | None = None,
    class_weight: list[float] | None = None,
    include_background: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry losses ``(N, C')`` (``(C',)`` with ``batch``) and the entries' validity mask."""
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

    classes = list(range(1 if not include_background else 0, c_))
    keys = classes if batch else [(n, c) for n in range(n_) for c in classes]
    stats = {k: [0.0, 0.0, 0.0, 0] for k in keys}  # intersection, sum p^k, sum g^k, valid pixels
    k_pow = 2 if squared else 1
    for n in range(n_):
        for i in range(s_):
            col = [x[n][c][i] for c in range(c_)]
            if activation == "softmax":
                probs = _softmax(col)
            elif activation == "sigmoid":
                probs = [_sigmoid(v) for v in col]
            else:
                probs = col
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
                p = probs[c]
                st = stats[c if batch else (n, c)]
                st[0] += p * g
                st[1] += p**k_pow
                st[2] += g**k_pow
                st[3] += 1
    losses, valid = [], []
    for key in keys:
        inter, sp, sg, cnt = stats[key]
        den = sp + sg + smooth
        d = 1.0 if den == 0 else (2.0 * inter + smooth) / den
        c = key if batch else key[1]
        w = 1.0 if class_weight is None else class_weight[c]
        losses.append(w * (1.0 - d))
        valid.append(cnt > 0 or ignore_index is None)
    shape = (len(classes),) if batch else (n_, len(classes))
    return (
        torch.tensor(losses, dtype=torch.float64).reshape(shape),
        torch.tensor(valid, dtype=torch.bool).reshape(shape),
    )


def reduce(
    loss: torch.Tensor, valid: torch.Tensor, reduction: str, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted sum over the valid entries, divided by their number for ``"mean"`` (0 when none)."""
    total, count = 0.0, 0
    flat_l, flat_v = loss.reshape(-1).tolist(), valid.reshape(-1).tolist()
    flat_w = None
    if weight is not None:
        w = weight.double()
        if w.ndim < loss.ndim:
            w = w.reshape(tuple(w.shape) + (1,) * (loss.ndim - w.ndim))
        flat_w = w.expand(loss.shape).reshape(-1).tolist()
    for j, (lv, ok) in enumerate(zip(flat_l, flat_v, strict=True)):
        if ok:
            total += lv * (1.0 if flat_w is None else flat_w[j])
            count += 1
    if reduction == "none":
        out = loss.clone()
        if flat_w is not None:
            out = out * torch.tensor(flat_w, dtype=torch.float64).reshape(loss.shape)
        return torch.where(valid, out, torch.zeros_like(out))
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / count if count else 0.0, dtype=torch.float64)
