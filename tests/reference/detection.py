"""Dense-detection losses element by element in Python floats, from the papers.

QFL and DFL: Li et al., "Generalized Focal Loss", NeurIPS 2020, eq. 5 and 6. VFL: Zhang et al.,
"VarifocalNet", CVPR 2021, eq. 2. GHM-C / GHM-R: Li, Liu, Wang, "Gradient Harmonized
Single-stage Detector", AAAI 2019, eq. 3-9 with the unit-region approximation (sec. 3.3), the
density of a region being its element count times the number of non-empty regions (as the
authors' code; the paper's M is the number of regions, a constant factor).
"""

from __future__ import annotations

import math

import torch


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _bce(x: float, y: float) -> float:
    # -y log s(x) - (1 - y) log(1 - s(x)), with log s(x) = -log(1 + e^-x) written stably
    log_p = -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
    log_q = -math.log1p(math.exp(x)) if x <= 0 else -x - math.log1p(math.exp(-x))
    return -(y * log_p + (1 - y) * log_q)


def _flat(t: torch.Tensor) -> list[float]:
    return t.detach().double().reshape(-1).tolist()


def quality_focal(logits: torch.Tensor, quality: torch.Tensor, beta: float) -> torch.Tensor:
    """GFL eq. 5: -|y - s|^beta ((1 - y) log(1 - s) + y log s), dense quality targets."""
    out = [
        abs(y - _sigmoid(x)) ** beta * _bce(x, y)
        for x, y in zip(_flat(logits), _flat(quality), strict=True)
    ]
    return torch.tensor(out, dtype=torch.float64).reshape(logits.shape)


def varifocal(
    logits: torch.Tensor, q: torch.Tensor, alpha: float, gamma: float, iou_weighted: bool
) -> torch.Tensor:
    """VFL eq. 2: -q (q log p + (1 - q) log(1 - p)) for q > 0, -alpha p^gamma log(1 - p) else."""
    out = []
    for x, y in zip(_flat(logits), _flat(q), strict=True):
        if y > 0:
            out.append((y if iou_weighted else 1.0) * _bce(x, y))
        else:
            out.append(alpha * _sigmoid(x) ** gamma * _bce(x, 0.0))
    return torch.tensor(out, dtype=torch.float64).reshape(logits.shape)


def distribution_focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GFL eq. 6 for (N, n + 1) logits: -((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1})."""
    rows = logits.detach().double().tolist()
    out = []
    for row, y in zip(rows, _flat(target), strict=True):
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        n = len(row) - 1
        i = min(int(math.floor(y)), n - 1)
        out.append(-((i + 1 - y) * (row[i] - log_z) + (y - i) * (row[i + 1] - log_z)))
    return torch.tensor(out, dtype=torch.float64).reshape(target.shape)


def ghm_weights(g: list[float], counted: list[bool], bins: int, density=None) -> list[float]:
    """beta_i = N / (n * R(g_i)): N counted elements, n non-empty regions, R the region count
    (or the given running density)."""
    region = [min(int(v * bins), bins - 1) for v in g]  # [k / bins, (k + 1) / bins)
    counts = [0] * bins
    for r, c in zip(region, counted, strict=True):
        counts[r] += int(c)
    total = sum(counts)
    nonempty = sum(1 for c in counts if c > 0)
    out = []
    for r, c in zip(region, counted, strict=True):
        d = counts[r] if density is None or density[r] == 0 else density[r]
        out.append(total / (nonempty * d) if c else 0.0)
    return out


def ghmc(logits: torch.Tensor, target: torch.Tensor, bins: int, counted=None, density=None):
    """GHM-C eq. 9 before the 1/N mean: beta_i * CE_i; returns (element losses, N)."""
    xs, ys = _flat(logits), _flat(target)
    cs = [True] * len(xs) if counted is None else [bool(c) for c in _flat(counted)]
    g = [abs(_sigmoid(x) - y) for x, y in zip(xs, ys, strict=True)]
    w = ghm_weights(g, cs, bins, density)
    loss = [wi * _bce(x, y) for wi, x, y in zip(w, xs, ys, strict=True)]
    return torch.tensor(loss, dtype=torch.float64).reshape(logits.shape), sum(cs)


def ghmr(pred: torch.Tensor, target: torch.Tensor, mu: float, bins: int, counted=None):
    """GHM-R with the ASL1 loss sqrt(d^2 + mu^2) - mu and g = |d| / sqrt(d^2 + mu^2)."""
    ds = [a - b for a, b in zip(_flat(pred), _flat(target), strict=True)]
    cs = [True] * len(ds) if counted is None else [bool(c) for c in _flat(counted)]
    g = [abs(d) / math.sqrt(d * d + mu * mu) for d in ds]
    w = ghm_weights(g, cs, bins)
    loss = [wi * (math.sqrt(d * d + mu * mu) - mu) for wi, d in zip(w, ds, strict=True)]
    return torch.tensor(loss, dtype=torch.float64).reshape(pred.shape), sum(cs)
