"""Fused regression losses: L1, smooth L1 (``beta``) and MSE, element-wise with the shared
weighting contract.

One forward launch reads ``pred`` and ``target`` once, writes d(loss)/d(pred) in ``pred``'s dtype
and one fp32 partial sum per program (then a fixed-order finishing sum); the backward is the
predicate kernel of ``_common`` (float16: the gradient is computed in the backward, see
``_common``). Gradients w.r.t. ``target`` are not produced: a ``target`` that requires grad falls
back to the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from lossforge._reduction import Denominator, WeightLayout
from lossforge.kernels._common import (
    block_div,
    declare,
    denominator_args,
    finish_sum,
    go_layout,
    grad_factor,
    run,
    tiles_per_program,
)
from lossforge.kernels._launch import (
    KERNEL_DTYPES,
    cdiv,
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
    d_ptr,  # [1] "mean" denominator on the device (D_PTR)
    go_ptr,  # grad_output: [1] (GO_MODE 1) or [n] in the predictions' layout (GO_MODE 2)
    n,
    w_inner,
    s_host,
    beta,
    LOSS: tl.constexpr,
    WEIGHT_MODE: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_LOSS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    D_PTR: tl.constexpr,
    GO_MODE: tl.constexpr,
    TILES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    if WRITE_GRAD:
        f = grad_factor(s_host, d_ptr, go_ptr, D_PTR, GO_MODE == 1)
    for it in range(TILES):
        start = (pid.to(tl.int64) * TILES + it) * BLOCK
        offs = start + tl.arange(0, BLOCK)
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
            # (PyTorch's L1 gradient of a NaN difference is 0, its smooth L1 gradient NaN)
            grad = tl.where(small | (d != d), d / beta, sgn)
        else:
            loss = d * d
            grad = 2.0 * d
        if WEIGHT_MODE == 1:
            wt = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
            loss = loss * wt
            grad = grad * wt
        elif WEIGHT_MODE == 2:
            wrow = block_div(start, BLOCK, w_inner)  # offs // w_inner
            wt = tl.load(w_ptr + wrow, mask=m, other=0.0).to(tl.float32)
            loss = loss * wt
            grad = grad * wt
        elif WEIGHT_MODE == 3:
            wt = tl.load(w_ptr).to(tl.float32)
            loss = loss * wt
            grad = grad * wt
        loss = tl.where(m, loss, 0.0)
        if WRITE_LOSS:
            if REDUCE:
                acc += loss
            else:
                tl.store(loss_ptr + offs, loss, mask=m)
        if WRITE_GRAD:
            grad = grad * f
            if GO_MODE == 2:
                grad = grad * tl.load(go_ptr + offs, mask=m, other=0.0).to(tl.float32)
            tl.store(g_ptr + offs, grad.to(g_ptr.dtype.element_ty), mask=m)
    if REDUCE and WRITE_LOSS:
        tl.store(part_ptr + pid, tl.sum(acc, axis=0))


# ints: (kind, weight mode, w_inner, reduce, mean mode); floats: (s, d, beta)
_KIND, _WMODE, _WINNER, _REDUCE, _MODE = range(5)
_S, _D, _BETA = range(3)


def _fake(x, t, w, a, b, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202, ARG001
    if ints[_REDUCE]:
        loss = x.new_empty((), dtype=torch.float32)
    else:
        loss = torch.empty_like(x, dtype=torch.float32)
    return loss, torch.empty_like(x) if write_grad else x.new_empty(0)


def _launch(x, t, w, _a, _b, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202
    """The kernel launches of one regression loss: ``(loss, grad)`` as in the sigmoid family."""
    n = x.numel()
    block = elementwise_block()
    n_tiles = cdiv(n, block)
    tiles = tiles_per_program(n_tiles)
    n_prog = max(cdiv(n_tiles, tiles), 1)
    reduce, backward = bool(ints[_REDUCE]), go is not None
    grad = torch.empty_like(x) if write_grad else x.new_empty(0)
    parts = x.new_empty(n_prog if reduce and not backward else 0, dtype=torch.float32)
    loss_map = parts
    if not reduce and not backward:
        loss_map = torch.empty_like(x, dtype=torch.float32)
    go_mode = 0
    if backward:
        go_mode = 1
        if not reduce:
            go, scalar = go_layout(go, x)
            go_mode = 1 if scalar else 2
    mode = ints[_MODE]
    if n > 0:
        wrap_triton(_regression_fwd_kernel)[(n_prog,)](
            x,
            t,
            w if w is not None else x,
            loss_map,
            grad if write_grad else x,
            parts,
            d if d is not None else parts,
            go if go is not None else x,
            n,
            ints[_WINNER],
            floats[_S],
            floats[_BETA],
            LOSS=ints[_KIND],
            WEIGHT_MODE=ints[_WMODE],
            REDUCE=reduce,
            WRITE_LOSS=not backward,
            WRITE_GRAD=write_grad,
            D_PTR=mode > 0 and d is not None,
            GO_MODE=go_mode,
            TILES=tiles,
            BLOCK=block,
            num_warps=elementwise_warps(),
        )
    if backward:
        return x.new_empty(0, dtype=torch.float32), grad
    if not reduce:
        return loss_map, grad
    if n == 0:
        parts = torch.zeros(1, dtype=torch.float32, device=x.device)
    return finish_sum(parts, d, floats[_D], mode), grad


REGRESSION = declare("regression", _launch, _fake)


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
    t = target if target.dtype != torch.bool else target.view(torch.uint8)
    w, weight_mode, w_inner = weight.tensor, weight.mode, 1
    x = pred
    if w is not None and weight_mode == WeightLayout.FULL:
        x, t, w = same_layout(x, t, w)
    else:
        x, t = same_layout(x, t)
    if w is not None and weight_mode == WeightLayout.LEADING:
        x, t, w = x.contiguous(), t.contiguous(), w.contiguous()
        w_inner = weight.inner
    mode, s_host, d, d_t = denominator_args(denom)
    ints = (kid, weight_mode, w_inner, int(reduce), mode)
    return run(
        REGRESSION,
        x,
        t,
        w,
        None,
        None,
        d_t,
        ints,
        (s_host, d, float(beta)),
        reduced=reduce,
        grad_in_backward=pred.dtype == torch.float16,
    )
