"""Fused regression losses: L1, smooth L1 (``beta``) and MSE, element-wise with the shared
weighting contract.

One forward launch reads ``pred`` and ``target`` once, writes d(loss)/d(pred) in ``pred``'s dtype
and
one fp32 partial sum per program (then a fixed-order finishing sum); the backward is the predicate
kernel of ``_common``. Gradients w.r.t. ``target`` are not produced: a ``target`` that requires grad
falls back to the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from lossforge._reduction import Denominator, WeightLayout
from lossforge.kernels._common import backward_scaled, block_div, finish_sum
from lossforge.kernels._launch import (
    KERNEL_DTYPES,
    denominator_args,
    elementwise_block,
    elementwise_warps,
    same_layout,
)

__all__: list[str] = []  # private: reached through lossforge._pipeline.regression

L1, SMOOTH_L1, MSE = 0, 1, 2


@triton.jit
def _regression_fwd_kernel(
    x_ptr,  # [n] predictions, memory order
    t_ptr,  # [n] targets, same layout
    w_ptr,  # weight: [n] (WEIGHT_MODE 1), [n // w_inner] (2), [1] (3)
    loss_ptr,  # [n] fp32 unreduced loss (not REDUCE)
    g_ptr,  # [n] gradient in the predictions' dtype (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    scale_ptr,  # [1] fp32 mean scale (SCALE_FROM_PTR)
    n,
    w_inner,
    scale,
    beta,
    LOSS: tl.constexpr,
    WEIGHT_MODE: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    SCALE_FROM_PTR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=m, other=0.0).to(tl.float32)
    d = x - t
    ad = tl.abs(d)
    sgn = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))  # torch.sign: subgradient 0 at 0
    if LOSS == 0:
        loss = ad
        grad = sgn
    elif LOSS == 1:
        small = ad < beta
        sm = tl.minimum(ad, beta)
        loss = tl.where(small, 0.5 * sm * sm / beta, ad - 0.5 * beta)
        grad = tl.where(small, d / beta, sgn)
    else:
        loss = d * d
        grad = 2.0 * d
    if WEIGHT_MODE == 1:
        wt = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
        loss = loss * wt
        grad = grad * wt
    elif WEIGHT_MODE == 2:
        wrow = block_div(pid.to(tl.int64) * BLOCK, BLOCK, w_inner)  # offs // w_inner
        wt = tl.load(w_ptr + wrow, mask=m, other=0.0).to(tl.float32)
        loss = loss * wt
        grad = grad * wt
    elif WEIGHT_MODE == 3:
        wt = tl.load(w_ptr).to(tl.float32)
        loss = loss * wt
        grad = grad * wt
    loss = tl.where(m, loss, 0.0)
    if REDUCE:
        tl.store(part_ptr + pid, tl.sum(loss, axis=0))
        if WRITE_GRAD:
            grad = grad * tl.load(scale_ptr) if SCALE_FROM_PTR else grad * scale
            tl.store(g_ptr + offs, grad.to(g_ptr.dtype.element_ty), mask=m)
    else:
        tl.store(loss_ptr + offs, loss, mask=m)
        if WRITE_GRAD:
            tl.store(g_ptr + offs, grad.to(g_ptr.dtype.element_ty), mask=m)


@triton_op("lossforge::regression_fwd", mutates_args=())
def regression_fwd(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None,
    scale_t: Tensor | None,
    kind: int,
    weight_mode: int,
    w_inner: int,
    reduce: bool,
    scale: float,
    beta: float,
    write_grad: bool,
    d: float,
    mode: int,
) -> tuple[Tensor, Tensor]:
    """Forward of the regression losses: ``(loss, grad)`` as in ``lossforge::sigmoid_fwd``."""
    n = pred.numel()
    block = elementwise_block()
    n_prog = triton.cdiv(n, block)
    grad = torch.empty_like(pred) if write_grad else pred.new_empty(0)
    if reduce:
        parts = torch.zeros(max(n_prog, 1), dtype=torch.float32, device=pred.device)
        loss_map = parts
    else:
        parts = pred.new_empty(0, dtype=torch.float32)
        loss_map = torch.empty_like(pred, dtype=torch.float32)
    if n > 0:
        wrap_triton(_regression_fwd_kernel)[(n_prog,)](
            pred,
            target,
            weight if weight is not None else pred,
            loss_map,
            grad if write_grad else pred,
            parts,
            scale_t if scale_t is not None else parts,
            n,
            w_inner,
            scale,
            beta,
            LOSS=kind,
            WEIGHT_MODE=weight_mode,
            REDUCE=reduce,
            WRITE_GRAD=write_grad,
            SCALE_FROM_PTR=scale_t is not None,
            BLOCK=block,
            num_warps=elementwise_warps(),
        )
    if reduce:
        return finish_sum(parts, scale_t, d, mode), grad
    return loss_map, grad


def _setup_context(ctx, inputs, output) -> None:
    ctx.reduce = inputs[7]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    return (backward_scaled(grad, grad_loss, ctx.reduce),) + (None,) * 12


regression_fwd.register_autograd(_backward, setup_context=_setup_context)


def _reason(pred: Tensor, target: Tensor) -> str | None:
    """Why the kernel cannot serve this case, or None when it can."""
    if pred.dtype not in KERNEL_DTYPES:
        return f"pred dtype {pred.dtype} (the kernel takes float32/float16/bfloat16)"
    if tuple(target.shape) != tuple(pred.shape):
        return "a target shape different from pred"
    if target.is_complex() or target.dtype == torch.float64:
        return f"target dtype {target.dtype}"
    return None


def _loss(
    pred: Tensor,
    target: Tensor,
    *,
    kind: str,
    weight: WeightLayout,
    reduce: bool,
    denom: Denominator | None,
    beta: float = 1.0,
) -> Tensor:
    """Run ``kind`` in ``{"l1", "smooth_l1", "mse"}`` through the fused kernel (validated and
    routed by ``lossforge._pipeline.regression``)."""
    kid = {"l1": L1, "smooth_l1": SMOOTH_L1, "mse": MSE}[kind]
    if kid == SMOOTH_L1 and beta == 0:
        kid = L1
    t = target if target.dtype != torch.bool else target.to(torch.uint8)
    w, weight_mode, w_inner = weight.tensor, weight.mode, 1
    x = pred
    if w is not None and weight_mode == WeightLayout.FULL:
        x, t, w = same_layout(x, t, w)
    else:
        x, t = same_layout(x, t)
    if w is not None and weight_mode == WeightLayout.LEADING:
        x, t, w = x.contiguous(), t.contiguous(), w.contiguous()
        w_inner = weight.inner
    scale, scale_t, d, mode = denominator_args(denom)
    write_grad = pred.requires_grad and torch.is_grad_enabled()
    loss, _ = torch.ops.lossforge.regression_fwd(
        x, t, w, scale_t, kid, weight_mode, w_inner, reduce, scale, float(beta), write_grad, d, mode
    )
    return loss  # type: ignore[no-any-return]
