"""Element-by-element regression references."""

from __future__ import annotations

import torch


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    out = torch.empty(pred.shape, dtype=torch.float64)
    flat_p, flat_t, flat_o = pred.double().reshape(-1), target.double().reshape(-1), out.view(-1)
    for i in range(flat_p.numel()):
        d = abs(float(flat_p[i]) - float(flat_t[i]))
        flat_o[i] = 0.5 * d * d / beta if d < beta else d - 0.5 * beta
    return out


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.tensor(
        [
            abs(float(a) - float(b))
            for a, b in zip(pred.reshape(-1), target.reshape(-1), strict=True)
        ],
        dtype=torch.float64,
    ).reshape(pred.shape)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.tensor(
        [
            (float(a) - float(b)) ** 2
            for a, b in zip(pred.reshape(-1), target.reshape(-1), strict=True)
        ],
        dtype=torch.float64,
    ).reshape(pred.shape)
