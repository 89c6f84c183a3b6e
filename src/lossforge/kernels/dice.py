"""Fused multi-class soft dice on softmax probabilities with class-index targets.

Dice needs global per-class sums before any gradient exists, so it is two passes (PERFORMANCE.md
section 2.6), both inside the forward:

1. ``_dice_stats_kernel``: each program reads a tile of positions x all classes (NCHW read in place
   through the class stride), computes the softmax in registers and writes its per-class partial
   sums
   ``I_c = sum p_c [y = c]``, ``P_c = sum p_c`` (or ``p_c**2`` for squared denominators) and
   ``G_c = sum [y = c]`` into a ``[N, blocks, 3, C]`` fp32 buffer (no atomics).
2. A fixed-order reduction of that small buffer (``torch.sum`` over the block dim: deterministic run
   to run) gives the dice per class and the two per-class gradient coefficients.
3. ``_dice_grad_kernel`` re-reads the logits, recomputes the softmax and writes
   ``dL/dx_k = p_k (g_k - sum_c p_c g_c)`` with ``g_c = A_c [y = c] + B_c dP/dp_c``.

Traffic: 2 reads + 1 write of the logits; memory: the gradient plus ``O(N * blocks * C)``.
Loss: ``1 - (2 I_c + smooth) / (P_c + G_c + smooth)`` averaged over classes (and samples when
``per_sample``); ignored positions contribute nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from lossforge.kernels._common import backward_scaled
from lossforge.kernels._launch import KERNEL_DTYPES, interpreting

__all__: list[str] = []  # private: reached through lossforge._pipeline.region

MAX_CLASSES = 4096


@triton.jit
def _softmax_tile(
    x_ptr,
    t_ptr,
    n,
    sb,
    S,
    C,
    sN,
    sC,
    sS,
    ignore_index,
    HAS_IGNORE: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    s = sb.to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    sm = s < S
    cols = tl.arange(0, BLOCK_C)
    cm = cols < C
    mask2 = sm[:, None] & cm[None, :]
    xrow = n.to(tl.int64) * sN + s * sS
    x = tl.load(x_ptr + xrow[:, None] + cols[None, :] * sC, mask=mask2, other=float("-inf")).to(
        tl.float32
    )
    mx = tl.where(sm, tl.max(x, axis=1), 0.0)
    e = tl.exp(x - mx[:, None])
    d = tl.where(sm, tl.sum(e, axis=1), 1.0)
    p = e / d[:, None]
    tgt = tl.load(t_ptr + n.to(tl.int64) * S + s, mask=sm, other=0).to(tl.int64)
    valid = sm
    if HAS_IGNORE:
        valid = valid & (tgt != ignore_index)
    oh = (cols[None, :] == tgt[:, None]) & valid[:, None] & cm[None, :]
    return s, sm, cols, cm, mask2, p, oh, valid


@triton.jit
def _dice_stats_kernel(
    x_ptr,  # logits (N, C, S) via strides sN, sC, sS
    t_ptr,  # [N * S] class indices
    st_ptr,  # [N, n_sb, 3, C] fp32 partial sums (I, P, G)
    S,
    C,
    sN,
    sC,
    sS,
    n_sb,
    ignore_index,
    HAS_IGNORE: tl.constexpr,
    SQUARED: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # spatial blocks on grid axis 0 (up to 2**31 - 1; axis 1 stops at 65535), samples on axis 1
    sb = tl.program_id(0)
    n = tl.program_id(1)
    s, sm, cols, cm, mask2, p, oh, valid = _softmax_tile(
        x_ptr, t_ptr, n, sb, S, C, sN, sC, sS, ignore_index, HAS_IGNORE, BLOCK_S, BLOCK_C
    )
    pv = tl.where(valid[:, None] & cm[None, :], p, 0.0)
    ohf = oh.to(tl.float32)
    inter = tl.sum(pv * ohf, axis=0)
    card = tl.sum(pv * pv, axis=0) if SQUARED else tl.sum(pv, axis=0)
    gt = tl.sum(ohf, axis=0)
    base = st_ptr + (n.to(tl.int64) * n_sb + sb) * 3 * C
    tl.store(base + cols, inter, mask=cm)
    tl.store(base + C + cols, card, mask=cm)
    tl.store(base + 2 * C + cols, gt, mask=cm)


@triton.jit
def _dice_grad_kernel(
    x_ptr,  # logits (N, C, S)
    t_ptr,  # [N * S] class indices
    a_ptr,  # [N or 1, C] fp32 coefficient of [y = c]
    b_ptr,  # [N or 1, C] fp32 coefficient of dP/dp_c
    g_ptr,  # gradient (N, C, S) via strides gN, gC, gS
    S,
    C,
    sN,
    sC,
    sS,
    gN,
    gC,
    gS,
    ab_stride,
    ignore_index,
    HAS_IGNORE: tl.constexpr,
    SQUARED: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # spatial blocks on grid axis 0 (up to 2**31 - 1; axis 1 stops at 65535), samples on axis 1
    sb = tl.program_id(0)
    n = tl.program_id(1)
    s, sm, cols, cm, mask2, p, oh, valid = _softmax_tile(
        x_ptr, t_ptr, n, sb, S, C, sN, sC, sS, ignore_index, HAS_IGNORE, BLOCK_S, BLOCK_C
    )
    a = tl.load(a_ptr + n.to(tl.int64) * ab_stride + cols, mask=cm, other=0.0)
    b = tl.load(b_ptr + n.to(tl.int64) * ab_stride + cols, mask=cm, other=0.0)
    dp = 2.0 * p if SQUARED else tl.full(p.shape, 1.0, tl.float32)
    g = tl.where(oh, a[None, :], 0.0) + b[None, :] * dp
    g = tl.where(valid[:, None] & cm[None, :], g, 0.0)
    pg = tl.sum(tl.where(mask2, p * g, 0.0), axis=1)
    dx = p * (g - pg[:, None])
    dx = tl.where(valid[:, None], dx, 0.0)
    grow = n.to(tl.int64) * gN + s * gS
    tl.store(g_ptr + grow[:, None] + cols[None, :] * gC, dx.to(g_ptr.dtype.element_ty), mask=mask2)


#: CUDA's limit on grid axes 1 and 2 (axis 0 goes to 2**31 - 1).
MAX_GRID_Y = 65535


def _blocks(c: int) -> tuple[int, int, int]:
    bc = triton.next_power_of_2(max(c, 1))
    tile = 256 if interpreting() else 4096
    bs = max(1, tile // bc)
    return bs, bc, (4 if bc * bs <= 4096 else 8)


@triton_op("lossforge::dice_fwd", mutates_args=())
def dice_fwd(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None,
    smooth: float,
    squared: bool,
    per_sample: bool,
    reduce_sum: bool,
    write_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Forward of the softmax dice loss on ``(N, C, S)``-strided logits: ``(loss, grad)``."""
    nb, c, s_len = logits.shape
    bs, bc, warps = _blocks(c)
    n_sb = triton.cdiv(s_len, bs)
    dev = logits.device
    stats = torch.zeros(nb, max(n_sb, 1), 3, c, dtype=torch.float32, device=dev)
    if nb * s_len > 0:
        wrap_triton(_dice_stats_kernel)[(n_sb, nb)](
            logits,
            target,
            stats,
            s_len,
            c,
            logits.stride(0),
            logits.stride(1),
            logits.stride(2),
            n_sb,
            ignore_index if ignore_index is not None else 0,
            HAS_IGNORE=ignore_index is not None,
            SQUARED=squared,
            BLOCK_S=bs,
            BLOCK_C=bc,
            num_warps=warps,
        )
    sums = stats.sum(dim=1)  # [N, 3, C], fixed order
    if not per_sample:
        sums = sums.sum(dim=0, keepdim=True)  # [1, 3, C]
    inter, card, gt = sums[:, 0], sums[:, 1], sums[:, 2]
    denom = card + gt + smooth
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    num = 2.0 * inter + smooth
    dice = torch.where(denom > 0, num / safe, torch.ones_like(num))
    terms = dice.numel()
    k = 1.0 if reduce_sum else 1.0 / max(terms, 1)
    loss = ((1.0 - dice).sum() * k).to(torch.float32)
    grad = torch.empty_like(logits) if write_grad else logits.new_empty(0)
    if write_grad and nb * s_len > 0:
        a = torch.where(denom > 0, -2.0 * k / safe, torch.zeros_like(safe)).contiguous()
        b = torch.where(denom > 0, num * k / (safe * safe), torch.zeros_like(safe)).contiguous()
        gs = grad.stride()
        wrap_triton(_dice_grad_kernel)[(n_sb, nb)](
            logits,
            target,
            a,
            b,
            grad,
            s_len,
            c,
            logits.stride(0),
            logits.stride(1),
            logits.stride(2),
            gs[0],
            gs[1],
            gs[2],
            c if per_sample else 0,
            ignore_index if ignore_index is not None else 0,
            HAS_IGNORE=ignore_index is not None,
            SQUARED=squared,
            BLOCK_S=bs,
            BLOCK_C=bc,
            num_warps=warps,
        )
    return loss, grad


def _setup_context(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    return (backward_scaled(grad, grad_loss, True),) + (None,) * 7


dice_fwd.register_autograd(_backward, setup_context=_setup_context)


def _reason(logits: Tensor, target: Tensor, reduction: str = "mean") -> str | None:
    """Why the kernel cannot serve this case, or None when it can."""
    if logits.dtype not in KERNEL_DTYPES:
        return f"logits dtype {logits.dtype}"
    if logits.ndim < 2 or target.is_floating_point() or target.dtype == torch.bool:
        return "anything but (N, C, *) logits with class-index targets"
    if tuple(target.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        return "a target shape that is not the logits' shape without dim 1"
    if logits.shape[1] > MAX_CLASSES:
        return f"more than {MAX_CLASSES} classes"
    if reduction not in ("mean", "sum"):
        return f"reduction={reduction!r}"
    if logits.shape[0] > MAX_GRID_Y:
        return f"a batch of more than {MAX_GRID_Y} samples (one CUDA grid axis per sample)"
    return None


def _loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    squared: bool = False,
    per_sample: bool = False,
    ignore_index: int | None = None,
) -> Tensor:
    """The summed ``1 - dice`` of the softmax of ``logits`` against class-index targets, over
    classes (and samples when ``per_sample``), fused; the pipeline applies the ``"mean"``
    denominator."""
    x = logits.unsqueeze(2) if logits.ndim == 2 else logits.flatten(2)
    t = target.reshape(-1)
    if not t.is_contiguous():
        t = t.contiguous()
    write_grad = logits.requires_grad and torch.is_grad_enabled()
    loss, _ = torch.ops.lossforge.dice_fwd(
        x,
        t,
        ignore_index,
        float(smooth),
        bool(squared),
        bool(per_sample),
        True,
        write_grad,
    )
    return loss  # type: ignore[no-any-return]
