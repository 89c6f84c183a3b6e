"""Inputs and peer imports shared by the region-loss test files (Tversky, Jaccard, generalised dice,
Lovasz)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

F64 = torch.float64
IGNORE = 255


# --------------------------------------------------------------------------------------------------
# Example inputs for the contract suite: make(n, dtype, generator) -> (input, target).
# --------------------------------------------------------------------------------------------------


def softmax_index(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 3, 2, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 3, (n, 2, 3), generator=g)


def softmax_index_ignored(n: int, dtype: torch.dtype, g: torch.Generator):
    x, t = softmax_index(n, dtype, g)
    t = torch.where(torch.rand(t.shape, generator=g) < 0.3, torch.full_like(t, IGNORE), t)
    return x, t


def sigmoid_dense(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 4, 5, generator=g, dtype=F64)).to(dtype)
    return x, (torch.rand(n, 4, 5, generator=g, dtype=F64) < 0.4).to(F64)


def binary_mask(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 1, 3, 5, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 3, 5, generator=g) < 0.5


def probs_soft(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (0.05 + 0.9 * torch.rand(n, 3, 7, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 3, 7, generator=g, dtype=F64)


def inputs(shape, activation: str, kind: str, ignore: bool, seed: int = 0, soft: bool = False):
    """Logits (probabilities for ``"none"``) and index / dense targets, some pixels ignored."""
    g = torch.Generator().manual_seed(seed)
    n, c = shape[0], shape[1]
    spatial = (n,) + tuple(shape[2:])
    if activation == "none":
        x = torch.rand(shape, generator=g, dtype=F64)
    else:
        x = 2 * torch.randn(shape, generator=g, dtype=F64)
    if kind == "index":
        high = c + 1 if activation == "sigmoid" else c  # sigmoid: index C = background
        t = torch.randint(0, high, spatial, generator=g)
        if ignore:
            t = torch.where(torch.rand(spatial, generator=g) < 0.3, torch.full_like(t, IGNORE), t)
    else:
        t = torch.rand(shape, generator=g, dtype=F64)
        if not soft:
            t = (t < 0.4).to(F64)
        if ignore:
            t = torch.where(torch.rand(shape, generator=g) < 0.3, torch.full_like(t, IGNORE), t)
    return x, t


def reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """The shared reduction on reference entries: invalid entries 0 and out of the mean."""
    masked = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return masked
    if reduction == "sum":
        return masked.sum()
    count = int(valid.sum())
    return masked.sum() / count if count else masked.sum() * 0.0


# --------------------------------------------------------------------------------------------------
# Peers (parity tests skip when a peer is not installed; none is a project dependency).
# --------------------------------------------------------------------------------------------------


def monai_losses() -> Any:
    return pytest.importorskip("monai.losses")


def kornia_losses() -> Any:
    return pytest.importorskip("kornia.losses")


def smp_losses() -> Any:
    """``segmentation_models_pytorch.losses`` without running the package's ``__init__`` (the
    peers benchmark's loader, ``benchmarks.peers.smp_losses``); skips when SMP is missing."""
    from benchmarks.peers import smp_losses as load

    losses = load()
    if losses is None:
        pytest.skip("segmentation_models_pytorch is not installed")
    return losses
