"""Example inputs for every input convention, named by the losses' declarations.

A loss declares which of these fits it (``lossforge.registry.Traits.example``); the test suite runs
the shared contract on every registered loss with it, ``torch.compile`` checks use it, and the
command line can show a call. Each maker is ``make(n, dtype, generator) -> (input, target)`` with
``n`` rows (``n`` may be 0), the input a fresh tensor in ``dtype`` and a target that does not
require grad.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["EXAMPLES", "Maker"]

Maker = Callable[[int, torch.dtype, torch.Generator], tuple[Tensor, Tensor]]
F64 = torch.float64


def _logits(g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return (2 * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)


def sigmoid_dense(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 4)`` logits, binary multi-label targets of the same shape."""
    x = _logits(g, dtype, n, 4)
    return x, (torch.rand(n, 4, generator=g, dtype=F64) < 0.4).to(F64)


def sigmoid_index(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 4)`` logits, class indices in ``[0, 4]`` (4 = background)."""
    return _logits(g, dtype, n, 4), torch.randint(0, 5, (n,), generator=g)


def probs_dense(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 4)`` probabilities in ``(0, 1)``, binary targets."""
    x, y = sigmoid_dense(n, F64, g)
    return torch.sigmoid(x).to(dtype), y


def softmax_index(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 5)`` logits, class indices in ``[0, 5)``."""
    return _logits(g, dtype, n, 5), torch.randint(0, 5, (n,), generator=g)


def log_probs_index(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 5)`` log-probabilities, class indices."""
    x, y = softmax_index(n, F64, g)
    return torch.log_softmax(x, dim=1).to(dtype), y


def segmentation_index(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 3, 4, 4)`` logits, ``(N, 4, 4)`` class indices."""
    return _logits(g, dtype, n, 3, 4, 4), torch.randint(0, 3, (n, 4, 4), generator=g)


def regression(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 4)`` predictions and targets."""
    return _logits(g, dtype, n, 4), 2 * torch.randn(n, 4, generator=g, dtype=F64)


EXAMPLES: dict[str, Maker] = {
    "sigmoid_dense": sigmoid_dense,
    "sigmoid_index": sigmoid_index,
    "probs_dense": probs_dense,
    "softmax_index": softmax_index,
    "log_probs_index": log_probs_index,
    "segmentation_index": segmentation_index,
    "regression": regression,
}


def segmentation_binary(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 1, 4, 4)`` logits, ``(N, 4, 4)`` binary masks."""
    return _logits(g, dtype, n, 1, 4, 4), torch.randint(0, 2, (n, 4, 4), generator=g)


EXAMPLES["segmentation_binary"] = segmentation_binary
