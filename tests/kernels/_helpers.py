"""Shared helpers of the kernel tests: device choice and the flash-attention error criterion."""

from __future__ import annotations

import torch
from torch import Tensor

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOW = (torch.float32, torch.float16, torch.bfloat16)

# Absolute floors (relative to the largest reference magnitude) added to the 2x rule: they absorb
# one-ulp rounding flips where the PyTorch reference happens to round exactly.
FLOOR = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


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
