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


def boxes(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 4)`` predicted and target ``(x1, y1, x2, y2)`` boxes: most predictions near their
    target, some elsewhere (disjoint boxes)."""
    xy = 8 * torch.rand(n, 2, generator=g, dtype=F64)
    wh = 0.5 + 3.5 * torch.rand(n, 2, generator=g, dtype=F64)
    target = torch.cat([xy, xy + wh], dim=1)
    centre = xy + wh / 2 + 0.6 * torch.randn(n, 2, generator=g, dtype=F64)
    size = wh * torch.exp(0.3 * torch.randn(n, 2, generator=g, dtype=F64))
    far = torch.rand(n, 1, generator=g, dtype=F64) < 0.25
    centre = torch.where(far, 12 * torch.rand(n, 2, generator=g, dtype=F64), centre)
    pred = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    return pred.to(dtype), target


def quality_dense(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 4)`` logits, dense IoU-quality targets: each row's class (or none: background) holds
    a quality in ``(0, 1)``, every other element 0."""
    labels = torch.randint(0, 5, (n,), generator=g)
    quality = 0.05 + 0.9 * torch.rand(n, 1, generator=g, dtype=F64)
    onehot = (labels[:, None] == torch.arange(4)).to(F64)
    return _logits(g, dtype, n, 4), onehot * quality


def distribution(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 8)`` bin logits (``reg_max = 7``), continuous distances in ``[0, 7]``."""
    return _logits(g, dtype, n, 8), 7 * torch.rand(n, generator=g, dtype=F64)


EXAMPLES: dict[str, Maker] = {
    "sigmoid_dense": sigmoid_dense,
    "sigmoid_index": sigmoid_index,
    "probs_dense": probs_dense,
    "softmax_index": softmax_index,
    "log_probs_index": log_probs_index,
    "segmentation_index": segmentation_index,
    "regression": regression,
    "boxes": boxes,
    "quality_dense": quality_dense,
    "distribution": distribution,
}


def segmentation_binary(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, 1, 4, 4)`` logits, binary masks of the same shape (an ``(N, 4, 4)`` integer mask
    next to one channel could also be class indices: the losses refuse to guess)."""
    return _logits(g, dtype, n, 1, 4, 4), torch.randint(0, 2, (n, 1, 4, 4), generator=g)


EXAMPLES["segmentation_binary"] = segmentation_binary


#: What each example's first input is, as ``lossforge list`` states it (the loss's input
#: convention: logits through a sigmoid or a softmax, probabilities, log-probabilities, boxes).
INPUT_KINDS: dict[str, str] = {
    "sigmoid_dense": "logits (sigmoid)",
    "sigmoid_index": "logits (sigmoid)",
    "quality_dense": "logits (sigmoid)",
    "segmentation_binary": "logits (sigmoid)",
    "probs_dense": "probabilities",
    "softmax_index": "logits (softmax)",
    "segmentation_index": "logits (softmax)",
    "log_probs_index": "log-probabilities",
    "regression": "predictions",
    "boxes": "boxes (x1, y1, x2, y2)",
    "distribution": "bin logits (softmax)",
}
