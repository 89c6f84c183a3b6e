"""Float64 references for the long-tail losses, written from the papers' formulas with loops and
Python floats (nothing here calls lossforge or ``torch.nn.functional``).

* LDAM (Cao et al. 2019, eq. 13): margins Delta_j = C / n_j^(1/4) with C set so that the largest
  is max_margin; L = -log(e^{s(z_y - Delta_y)} / (e^{s(z_y - Delta_y)} + sum_{j != y} e^{s z_j})).
* DRW (Cao et al. 2019, section 3.2 / the effective number of Cui et al. 2019).
* Seesaw (Wang et al. 2021, eqs. 2-5):
  sigma_hat_i = e^{z_i} / (sum_{j != i} S_ij e^{z_j} + e^{z_i}), S_ij = M_ij C_ij,
  M_ij = (N_j / N_i)^p if N_i > N_j else 1, C_ij = (sigma_j / sigma_i)^q if sigma_j > sigma_i
  else 1 (counts floored at 1 and sigma_i at eps, as mmdetection does).
* Poly-1 (Leng et al. 2022, eq. 3 and Listings 1-2): CE + eps (1 - P_t); FL + eps (1 - P_t)^(g+1).

Each reference returns the per-position losses with lossforge's reduction conventions applied by
``reduce``: ``"mean"`` of nothing is 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rows(logits: Tensor) -> tuple[list[list[float]], tuple[int, ...]]:
    """Positions x classes (class dim 1, or 0 for a single row), and the positions' shape."""
    x = logits.detach().double()
    if x.ndim == 1:
        return [[float(v) for v in x]], ()
    moved = x.movedim(1, -1)
    return [[float(v) for v in r] for r in moved.reshape(-1, x.shape[1])], tuple(moved.shape[:-1])


def softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def reduce(values: list[float], denom: float, reduction: str, shape: tuple[int, ...]) -> Tensor:
    if reduction == "none":
        return torch.tensor(values, dtype=torch.float64).reshape(shape)
    total = math.fsum(values)
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / denom if denom != 0 else 0.0, dtype=torch.float64)


def _labels(target: Tensor) -> list[int]:
    return [int(v) for v in target.reshape(-1)]


# --------------------------------------------------------------------------------------------------


def ldam_margins(counts: list[float], max_margin: float) -> list[float]:
    raw = [1.0 / c**0.25 if c > 0 else math.inf for c in counts]
    top = max(r for r in raw if math.isfinite(r))
    return [max_margin * r / top if math.isfinite(r) else max_margin for r in raw]


def ldam(
    logits: Tensor,
    target: Tensor,
    counts: list[float],
    *,
    max_margin: float = 0.5,
    scale: float = 30.0,
    class_weight: list[float] | None = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
) -> Tensor:
    xs, shape = rows(logits)
    c = len(counts)
    w = class_weight or [1.0] * c
    delta = ldam_margins(counts, max_margin)
    out, denom = [], 0.0
    for row, y in zip(xs, _labels(target), strict=True):
        if ignore_index is not None and y == ignore_index:
            out.append(0.0)
            continue
        num = scale * (row[y] - delta[y])
        logits_s = [num if j == y else scale * row[j] for j in range(c)]
        out.append(-w[y] * (num - log_softmax_denominator(logits_s)))
        denom += w[y]
    return reduce(out, denom, reduction, shape)


def log_softmax_denominator(row: list[float]) -> float:
    m = max(row)
    return m + math.log(sum(math.exp(v - m) for v in row))


def drw(counts: list[float], epoch: int, start_epoch: int, beta: float) -> list[float]:
    c = len(counts)
    if epoch < start_epoch:
        return [1.0] * c
    raw = [(1.0 - beta) / (1.0 - beta**n) for n in counts]
    total = sum(raw)
    return [c * r / total for r in raw]


# --------------------------------------------------------------------------------------------------


def seesaw(
    logits: Tensor,
    target: Tensor,
    counts: list[float],
    *,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
    ignore_index: int | None = -100,
    reduction: str = "mean",
) -> Tensor:
    xs, shape = rows(logits)
    n = [max(v, 1.0) for v in counts]
    out, denom = [], 0.0
    for z, i in zip(xs, _labels(target), strict=True):
        if ignore_index is not None and i == ignore_index:
            out.append(0.0)
            continue
        sigma = softmax(z)
        below = 0.0
        for j in range(len(z)):
            if j == i:
                continue
            m_ij = (n[j] / n[i]) ** p if n[i] > n[j] else 1.0
            ratio = sigma[j] / max(sigma[i], eps)
            c_ij = ratio**q if ratio > 1.0 else 1.0
            below += m_ij * c_ij * math.exp(z[j] - z[i])
        out.append(math.log1p(below))  # -log(e^{z_i} / (e^{z_i} + sum S e^{z_j}))
        denom += 1.0
    return reduce(out, denom, reduction, shape)


# --------------------------------------------------------------------------------------------------


def poly1_ce(
    logits: Tensor,
    target: Tensor,
    *,
    epsilon: float,
    class_weight: list[float] | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = -100,
    reduction: str = "mean",
) -> Tensor:
    """sum_c q_c w_c [-log p_c + epsilon (1 - p_c)], q the (smoothed) target distribution."""
    xs, shape = rows(logits)
    c = len(xs[0]) if xs else (logits.shape[1] if logits.ndim > 1 else logits.shape[0])
    w = class_weight or [1.0] * c
    ls = label_smoothing
    probs = target.is_floating_point()
    dists = rows(target)[0] if probs else None
    labels = None if probs else _labels(target)
    out, denom = [], 0.0
    for k, z in enumerate(xs):
        if labels is not None and ignore_index is not None and labels[k] == ignore_index:
            out.append(0.0)
            continue
        base = dists[k] if dists is not None else one_hot(labels[k], c)  # type: ignore[index]
        qd = [(1.0 - ls) * b + ls / c for b in base]
        p = softmax(z)
        logp = log_softmax(z)
        out.append(sum(qd[j] * w[j] * (-logp[j] + epsilon * (1.0 - p[j])) for j in range(c)))
        denom += 1.0 if labels is None else w[labels[k]]
    return reduce(out, denom, reduction, shape)


def one_hot(y: int, c: int) -> list[float]:
    return [1.0 if j == y else 0.0 for j in range(c)]


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def sigmoid_focal_element(
    x: float,
    y: float,
    *,
    alpha: float | None,
    gamma: float,
    pos_weight: float = 1.0,
    epsilon: float = 0.0,
) -> float:
    """alpha_t (1 - p_t)^gamma [-(w+ y log p + (1 - y) log(1 - p))] + eps (1 - p_t)^(gamma + 1)."""
    # 1 - p_t = y (1 - p) + (1 - y) p, with 1 - p = sigma(-x)
    one_minus_pt = y * _sigmoid(-x) + (1.0 - y) * _sigmoid(x)
    bce = -(pos_weight * y * _log_sigmoid(x) + (1.0 - y) * _log_sigmoid(-x))
    loss = one_minus_pt**gamma * bce
    if alpha is not None:
        loss *= y * alpha + (1.0 - y) * (1.0 - alpha)
    return loss + epsilon * one_minus_pt ** (gamma + 1.0)


def sigmoid_focal_map(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: float | list[float] | None,
    gamma: float,
    pos_weight: Tensor | None = None,
    epsilon: float = 0.0,
) -> Tensor:
    """Unreduced loss for dense targets of the logits' shape; a list alpha is per class (dim 1),
    pos_weight is broadcast to the logits' shape by the caller's convention (given full-size)."""
    x = logits.detach().double()
    t = target.detach().double()
    pw = torch.ones_like(x) if pos_weight is None else pos_weight.double().expand_as(x).contiguous()
    out = torch.empty_like(x)
    flat_x, flat_t, flat_pw, flat_o = x.reshape(-1), t.reshape(-1), pw.reshape(-1), out.view(-1)
    c = x.shape[1] if x.ndim >= 2 else x.shape[0]
    inner = 1
    for d in x.shape[2:]:
        inner *= d
    for k in range(x.numel()):
        cls = (k // inner) % c if x.ndim >= 2 else k
        a = alpha[cls] if isinstance(alpha, list) else alpha
        flat_o[k] = sigmoid_focal_element(
            float(flat_x[k]),
            float(flat_t[k]),
            alpha=a,
            gamma=gamma,
            pos_weight=float(flat_pw[k]),
            epsilon=epsilon,
        )
    return out
