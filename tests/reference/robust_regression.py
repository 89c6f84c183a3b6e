"""Huber and balanced L1 losses element by element, from their definitions.

Huber (1964): 0.5 d^2 for |d| < delta, delta (|d| - 0.5 delta) otherwise. Balanced L1 (Pang et al.,
Libra R-CNN, CVPR 2019, eq. 8-10) for beta = 1, scaled to a threshold beta as smooth L1 is:
L_beta(d) = beta * L_1(d / beta).
"""

from __future__ import annotations

import math

import torch


def _map(fn, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = pred.detach().double().reshape(-1).tolist()
    t = target.detach().double().reshape(-1).tolist()
    out = [fn(a - b) for a, b in zip(p, t, strict=True)]
    return torch.tensor(out, dtype=torch.float64).reshape(pred.shape)


def huber(pred: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    def one(d: float) -> float:
        a = abs(d)
        return 0.5 * a * a if a < delta else delta * (a - 0.5 * delta)

    return _map(one, pred, target)


def _paper(d: float, alpha: float, gamma: float) -> float:
    """Libra R-CNN eq. 8 (threshold 1), b from eq. 10: alpha ln(b + 1) = gamma."""
    b = math.exp(gamma / alpha) - 1
    a = abs(d)
    if a < 1:
        return alpha / b * (b * a + 1) * math.log(b * a + 1) - alpha * a
    return gamma * a + gamma / b - alpha


def balanced_l1(
    pred: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float, beta: float
) -> torch.Tensor:
    return _map(lambda d: beta * _paper(d / beta, alpha, gamma), pred, target)


def balanced_l1_grad(
    pred: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float, beta: float = 1.0
) -> torch.Tensor:
    """The paper's gradient (eq. 9) at d / beta: alpha ln(b |d| / beta + 1) sign(d) inside,
    gamma sign(d) outside."""
    b = math.exp(gamma / alpha) - 1

    def one(d: float) -> float:
        a = abs(d) / beta
        s = math.copysign(1.0, d) if d != 0 else 0.0
        return s * (alpha * math.log(b * a + 1) if a < 1 else gamma)

    return _map(one, pred, target)
