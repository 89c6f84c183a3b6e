"""Kernels and ops shared by the families: the fixed-order second reduction stage and the
backward's device-side predicate scaling pass.

Backward design (PERFORMANCE.md section 1): every forward kernel already wrote the gradient of the
reduced loss. The backward must still multiply it by ``grad_output``. Reading ``grad_output`` on the
host (``torch.equal``, ``.item()``) is a sync; an unconditional ``g.mul_(grad_output)`` costs a full
read+write. ``_scale_grad_kernel`` reads ``grad_output`` from device memory in each program of a
small
persistent grid and sets its loop count to 0 when it equals 1.0, so the common case costs one launch
and no traffic, and the other case one read+write pass. No sync either way, so it can be captured
in a
CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from lossforge.kernels._launch import elementwise_block, elementwise_warps, persistent_programs


@triton.jit
def block_div(start, BLOCK: tl.constexpr, d):
    """``(start + tl.arange(0, BLOCK)) // d`` for an int64 ``start >= 0`` and an int ``d > 0``.

    One 64-bit division per program; the per-element quotient is a 32-bit division (``d`` below
    2**31 - BLOCK, which the launcher types as i32). ``offs // d`` on the int64 offsets compiled to
    a call of the 64-bit division routine per element (8 per thread at BLOCK 1024, 4 warps).
    """
    q0 = start // d
    r0 = (start - q0 * d).to(tl.int32)
    return q0 + (r0 + tl.arange(0, BLOCK)) // d


@triton.jit
def _finish_kernel(
    part_ptr,  # [n_part] fp32 per-program partial sums (unscaled)
    scale_ptr,  # [2] fp32 (gradient scale, denominator) on the device (HAS_SCALE_PTR)
    out_ptr,  # [1] fp32 reduced loss
    n_part,
    d_host,
    MODE: tl.constexpr,  # 0: sum, 1: mean, 2: mean with a strict (avg_factor) denominator
    HAS_SCALE_PTR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program, fixed order: bitwise reproducible for a given grid.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_part, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + offs, mask=offs < n_part, other=0.0)
    total = tl.sum(acc, axis=0)
    if MODE > 0:
        # lossforge._reduction.Denominator's rule: total / d for d > 0; 0 for d == 0 (nothing
        # valid), except a strict d == 0 with a non-zero total and any d < 0: NaN.
        d = tl.load(scale_ptr + 1) if HAS_SCALE_PTR else d_host
        q = total / tl.where(d > 0, d, 1.0)
        if MODE == 2:
            rest = tl.where((d == 0) & (total == 0), 0.0, float("nan"))
        else:
            rest = tl.where(d == 0, 0.0, float("nan"))
        total = tl.where(d > 0, q, rest)
    tl.store(out_ptr, total)


@triton.jit
def _scale_grad_kernel(
    g_ptr,  # [n] gradient written by a forward kernel, scaled in place
    go_ptr,  # [1] grad_output of the scalar loss (any float dtype)
    n,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    go = tl.load(go_ptr).to(tl.float32)
    n_blocks = tl.cdiv(n, BLOCK)
    n_blocks = tl.where(
        go == 1.0, 0, n_blocks
    )  # the predicate: nothing to do when grad_output == 1
    for b in range(pid, n_blocks, nprog):
        offs = tl.cast(b, tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(g_ptr + offs, (g * go).to(g_ptr.dtype.element_ty), mask=m)


def finish_sum(partials: Tensor, scale_t: Tensor | None, d: float, mode: int) -> Tensor:
    """Fixed-order sum of the partials divided by the denominator by ``_reduction``'s rule, as a
    0-d fp32 tensor (one launch). ``mode``, ``d`` and ``scale_t`` come from ``denominator_args``."""
    out = torch.empty((), dtype=torch.float32, device=partials.device)
    n = partials.numel()
    wrap_triton(_finish_kernel)[(1,)](
        partials,
        scale_t if scale_t is not None else partials,
        out,
        n,
        d,
        MODE=mode,
        HAS_SCALE_PTR=scale_t is not None,
        BLOCK=1024,
        num_warps=4,
    )
    return out


@triton_op("lossforge::scale_grad_", mutates_args={"grad"})
def scale_grad_(grad: Tensor, grad_output: Tensor) -> None:
    """``grad *= grad_output`` in place, skipped on the device when ``grad_output == 1``."""
    n = grad.numel()
    if n == 0:
        return
    block = elementwise_block()
    grid = (persistent_programs(grad.device, triton.cdiv(n, block)),)
    wrap_triton(_scale_grad_kernel)[grid](
        grad, grad_output, n, BLOCK=block, num_warps=elementwise_warps()
    )


def backward_scaled(grad: Tensor, grad_output: Tensor, reduced: bool) -> Tensor:
    """The gradient of the loss w.r.t. the logits from the one the forward wrote.

    The saved buffer is scaled in place: by the scalar ``grad_output`` through the predicate kernel
    (reduced losses), or by the element-wise ``grad_output`` (``reduction="none"``; fp32 math, no
    new buffer). The in-place update bumps the saved tensor's version, so a second ``backward``
    through the same graph (``retain_graph=True``) raises autograd's "modified by an inplace
    operation" error instead of silently returning a twice-scaled gradient.
    """
    if reduced:
        torch.ops.lossforge.scale_grad_(grad, grad_output.reshape(1))
        return grad
    return grad.mul_(grad_output)
