"""Fused Triton kernels (optional ``lossforge[triton]`` extra).

Importing this package does not import triton: ``is_available()`` only looks for the module, and the
entry points below are imported on first attribute access. The functional losses call these entry
points through ``lossforge._dispatch`` when ``backend`` is ``"auto"`` (CUDA tensors) or
``"triton"``.

Every entry point takes the same arguments as its reference in ``lossforge.functional`` (minus
``backend``) and returns the same value within the dtype's tolerance. Under ``TRITON_INTERPRET=1``
the kernels also run on CPU tensors (used by the test suite; slow, semantics only).
"""

from __future__ import annotations

import importlib
from typing import Any

from lossforge._dispatch import triton_importable

__all__ = [
    "is_available",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "asymmetric_loss",
    "balanced_binary_cross_entropy",
    "sigmoid_loss",
    "softmax_loss",
    "cross_entropy",
    "softmax_focal_loss",
    "dice_loss",
    "regression_loss",
    "l1_loss",
    "smooth_l1_loss",
    "mse_loss",
]

_LAZY = {
    "sigmoid_loss": "sigmoid",
    "binary_cross_entropy_with_logits": "sigmoid",
    "sigmoid_focal_loss": "sigmoid",
    "asymmetric_loss": "sigmoid",
    "balanced_binary_cross_entropy": "sigmoid",
    "softmax_loss": "softmax",
    "cross_entropy": "softmax",
    "softmax_focal_loss": "softmax",
    "dice_loss": "dice",
    "regression_loss": "regression",
    "l1_loss": "regression",
    "smooth_l1_loss": "regression",
    "mse_loss": "regression",
}


def is_available() -> bool:
    """Whether triton can be imported (the kernels themselves still need CUDA tensors, or the
    ``TRITON_INTERPRET=1`` CPU interpreter)."""
    return triton_importable()


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'lossforge.kernels' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lossforge.kernels.{mod}"), name)
