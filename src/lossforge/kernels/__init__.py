"""Fused Triton kernels (optional ``lossforge[triton]`` extra).

Importing this package does not import triton: ``is_available()`` only looks for the module. The
kernels are reached through the loss functions' ``backend="auto"`` (CUDA tensors) or
``backend="triton"``: ``lossforge._pipeline`` validates the call, decides the weight layout and the
``"mean"`` denominator, and hands the kernel a case it declared it can serve. The host entry points
(``_loss`` / ``_reason`` of each family module) are private: a kernel computes sums and gradients,
never policy. Under ``TRITON_INTERPRET=1`` the kernels also run on CPU tensors (used by the test
suite through ``lossforge._dispatch.cpu_kernels()``; slow, semantics only).
"""

from __future__ import annotations

from lossforge._dispatch import triton_importable

__all__ = ["is_available"]


def is_available() -> bool:
    """Whether triton can be imported (the kernels themselves still need CUDA tensors, or the
    ``TRITON_INTERPRET=1`` CPU interpreter)."""
    return triton_importable()
