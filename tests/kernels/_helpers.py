"""Shared helpers of the kernel tests: device choice, the fused path through the public functions,
and the flash-attention error criterion."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import lossforge.functional as LF

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOW = (torch.float32, torch.float16, torch.bfloat16)

# Absolute floors (relative to the largest reference magnitude) added to the 2x rule: they absorb
# one-ulp rounding flips where the PyTorch reference happens to round exactly.
FLOOR = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def fused(name: str, *args: Any, **kwargs: Any) -> Tensor:
    """``lossforge.functional.<name>(..., backend="triton")``: the fused kernel through the public
    function (on CPU tensors through Triton's interpreter, enabled by this directory's conftest)."""
    return getattr(LF, name)(*args, backend="triton", **kwargs)


def uses_kernel(out: Tensor) -> bool:
    """Whether the autograd graph of ``out`` contains a lossforge fused-kernel node."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        if "lossforge" in type(f).__name__.lower() or "Fused" in type(f).__name__:
            return True
        todo.extend(g for g, _ in f.next_functions)
    return False


def assert_within_2x(
    kernel: Tensor, ref64: Tensor, ref_same: Tensor, dtype: torch.dtype, what: str
) -> tuple[float, float]:
    """Kernel error vs float64 <= 2 x (same-dtype PyTorch error vs float64) + a tiny floor.

    Returns ``(kernel error, torch error)``, both divided by ``max(1, max |ref64|)``, for the
    suite's summary."""
    k = kernel.detach().double().cpu()
    r64 = ref64.detach().double().cpu()
    rs = ref_same.detach().double().cpu()
    assert k.shape == r64.shape, (what, k.shape, r64.shape)
    assert torch.isfinite(k).all() or not torch.isfinite(r64).all(), (
        f"{what}: non-finite kernel output"
    )
    if k.numel() == 0:
        return 0.0, 0.0
    err_k = (k - r64).abs().max().item()
    err_r = (rs - r64).abs().max().item()
    scale = max(1.0, r64.abs().max().item())
    bound = 2 * err_r + FLOOR[dtype] * scale
    assert err_k <= bound, (
        f"{what} ({dtype}): kernel err {err_k:.3g} > 2 x torch err {err_r:.3g} + floor"
    )
    return err_k / scale, err_r / scale


ERRORS: dict[tuple[str, str], tuple[float, float]] = {}


def record(family: str, dtype: torch.dtype, errs: tuple[float, float]) -> None:
    """Keep the largest (kernel, torch) relative errors per (family, dtype)."""
    key = (family, str(dtype).replace("torch.", ""))
    old = ERRORS.get(key, (0.0, 0.0))
    ERRORS[key] = (max(old[0], errs[0]), max(old[1], errs[1]))
