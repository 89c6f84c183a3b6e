"""Fused softmax losses over the class dimension: cross-entropy (class weights, ``ignore_index``,
label smoothing; class-index or probability targets) and softmax focal (class-index targets).

Design (PERFORMANCE.md sections 2.1, 2.6, 2.8, 5.7):

* The logits are read as ``(N, C, S)`` through their strides: ``(N, C)`` rows, contiguous NCHW
  (class stride ``H*W``) and channels_last (class stride 1) are all read in place, no permute copy.
  A program handles ``BLOCK_P`` positions x all classes.
* When the class dim fits on chip (``next_pow2(C) <= 16384``) one pass: load the tile once, softmax
  in
  registers, write the gradient (1 read + 1 write). Larger vocabularies use an online softmax
  (running
  max and sum over class chunks, then a second sweep writing the gradient: 2 reads + 1 write).
* The target logit and class weight are gathered per position; the ``-1`` of the target class is
  applied in fp32 before the gradient is rounded (no bf16 cancellation).
* The ``mean`` denominators (valid count, or the summed class weights of valid targets) come from a
  device pre-pass over the targets only (8 bytes per position, no sync), so the forward can write
  the
  final gradient and the backward is the predicate kernel of ``_common``.
* Focal: ``q = 1 - p_y`` is computed as (sum of the other exponentials) / (sum), not ``1 - p_y``,
  and
  ``log p_y = log1p(-q)`` by series when ``q`` is small, so the loss and the finite gradient keep
  their
  relative accuracy at saturation, also for ``0 < gamma < 1``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from lossforge._reduction import Denominator, WeightLayout
from lossforge.kernels._common import finish_sum
from lossforge.kernels._launch import KERNEL_DTYPES, denominator_args, interpreting

__all__: list[str] = []  # private: reached through lossforge._pipeline.softmax

CE, FOCAL = 0, 1
#: Largest padded class count kept in registers for the one-pass variant.
SINGLE_PASS_MAX_C = 16384
#: Class chunk of the online (multi-block) variant.
CHUNK_C = 4096


@triton.jit
def _softmax_fwd_kernel(
    x_ptr,  # logits, element (n, c, s) at n*sN + c*sC + s*sS
    t_ptr,  # [P] class indices (any int dtype), P = N*S positions in (n, s) order
    cw_ptr,  # [C] fp32 class weights (CE) or per-class alpha (focal) (HAS_CW)
    w_ptr,  # [P] fp32 element weight of the per-position loss (HAS_W)
    loss_ptr,  # [P] fp32 per-position loss (not REDUCE)
    g_ptr,  # gradient, element (n, c, s) at n*gN + c*gC + s*gS, logits dtype (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    scale_ptr,  # [1] fp32 mean scale (SCALE_FROM_PTR)
    b_ptr,  # [C] fp32 additive logit bias, e.g. tau * log(prior) (HAS_BIAS)
    P,
    C,
    S,
    sN,
    sC,
    sS,
    gN,
    gC,
    gS,
    ignore_index,
    scale,
    smooth,
    gamma,
    LOSS: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    HAS_CW: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GMODE: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    SCALE_FROM_PTR: tl.constexpr,
    SINGLE: tl.constexpr,
    FLAT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    if FLAT:
        # sN == S * sS and gN == S * gS (channels_last, or (N, C) rows): no 64-bit division.
        # With the class dim contiguous, every lane of a warp repeats the per-position integer
        # work of its rows, so n = p // S (a 64-bit division call) dominated the SASS.
        xrow = p * sS
        grow = p * gS
    else:
        n = p // S
        s = p - n * S
        xrow = n * sN + s * sS
        grow = n * gN + s * gS

    tgt = tl.load(t_ptr + p, mask=pm, other=0).to(tl.int64)
    valid = pm
    if HAS_IGNORE:
        valid = valid & (tgt != ignore_index)
    bad = valid & ((tgt < 0) | (tgt >= C))
    ok = valid & ~bad
    ts = tl.where(ok, tgt, 0)
    x_t = tl.load(x_ptr + xrow + ts * sC, mask=pm, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x_t = x_t + tl.load(b_ptr + ts, mask=pm, other=0.0)
    if HAS_CW:
        w_t = tl.load(cw_ptr + ts, mask=pm, other=0.0)
    else:
        w_t = tl.full([BLOCK_P], 1.0, tl.float32)

    cols = tl.arange(0, BLOCK_C)
    if HAS_SMOOTH:
        if HAS_CW:
            wacc = tl.zeros([BLOCK_C], tl.float32)
            for c0 in range(0, C, BLOCK_C):
                wacc += tl.load(cw_ptr + c0 + cols, mask=(c0 + cols) < C, other=0.0)
            wsum = tl.sum(wacc, axis=0)
        else:
            wsum = C * 1.0
    if SINGLE:
        cm = cols < C
        mask2 = pm[:, None] & cm[None, :]
        x = tl.load(x_ptr + xrow[:, None] + cols[None, :] * sC, mask=mask2, other=float("-inf")).to(
            tl.float32
        )
        if HAS_BIAS:
            x = x + tl.load(b_ptr + cols, mask=cm, other=0.0)[None, :]
        mx = tl.max(x, axis=1)
        mx = tl.where(pm, mx, 0.0)
        e = tl.exp(x - mx[:, None])
        d = tl.sum(e, axis=1)
        is_t = cols[None, :] == ts[:, None]
        s_other = tl.sum(tl.where(is_t, 0.0, e), axis=1)
        if HAS_SMOOTH:
            if HAS_CW:
                cwv = tl.load(cw_ptr + cols, mask=cm, other=0.0)
                wx = tl.sum(tl.where(mask2, x, 0.0) * cwv[None, :], axis=1)
            else:
                wx = tl.sum(tl.where(mask2, x, 0.0), axis=1)
    else:
        mx = tl.full([BLOCK_P], float("-inf"), tl.float32)
        d = tl.zeros([BLOCK_P], tl.float32)
        s_other = tl.zeros([BLOCK_P], tl.float32)
        wx = tl.zeros([BLOCK_P], tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cols
            cm = cc < C
            mask2 = pm[:, None] & cm[None, :]
            x = tl.load(
                x_ptr + xrow[:, None] + cc[None, :] * sC, mask=mask2, other=float("-inf")
            ).to(tl.float32)
            if HAS_BIAS:
                x = x + tl.load(b_ptr + cc, mask=cm, other=0.0)[None, :]
            new_m = tl.maximum(mx, tl.max(x, axis=1))
            new_m = tl.where(pm, new_m, 0.0)
            alpha = tl.exp(mx - new_m)
            e = tl.exp(x - new_m[:, None])
            is_t = cc[None, :] == ts[:, None]
            d = d * alpha + tl.sum(e, axis=1)
            s_other = s_other * alpha + tl.sum(tl.where(is_t, 0.0, e), axis=1)
            mx = new_m
            if HAS_SMOOTH:
                if HAS_CW:
                    cwv = tl.load(cw_ptr + cc, mask=cm, other=0.0)
                    wx += tl.sum(tl.where(mask2, x, 0.0) * cwv[None, :], axis=1)
                else:
                    wx += tl.sum(tl.where(mask2, x, 0.0), axis=1)
    d = tl.where(pm, d, 1.0)
    lse = mx + tl.log(d)
    inv_d = 1.0 / d

    if LOSS == 0:
        nll = w_t * (lse - x_t)
        coef_p = w_t  # gradient: coef_p * p_c - coef_t * [c == y] - coef_w * w_c
        coef_t = w_t
        if HAS_SMOOTH:
            loss = (1.0 - smooth) * nll + (smooth / C) * (lse * wsum - wx)
            coef_p = (1.0 - smooth) * w_t + (smooth / C) * wsum
            coef_t = (1.0 - smooth) * w_t
        else:
            loss = nll
    else:
        q = s_other * inv_d  # 1 - p_y without cancellation
        p_y = tl.exp(x_t - lse)
        small = q < 1e-3
        lpy = tl.where(small, -q * (1.0 + q * (0.5 + q / 3.0)), x_t - lse)  # log p_y = log1p(-q)
        ratio = tl.where(small, -(1.0 + q * (0.5 + q / 3.0)), lpy / tl.where(small, 1.0, q))
        if GMODE == 0:
            mod = tl.full([BLOCK_P], 1.0, tl.float32)
        elif GMODE == 1:
            mod = q
        elif GMODE == 2:
            mod = q * q
        else:
            mod = tl.where(q > 0, tl.exp2(gamma * tl.log2(tl.maximum(q, 1e-38))), 0.0)
        loss = -w_t * mod * lpy
        fac = w_t * mod * (1.0 - gamma * p_y * ratio)  # dL/dx_c = fac * (p_c - [c == y])
        coef_p = fac
        coef_t = fac

    if HAS_W:
        wt = tl.load(w_ptr + p, mask=pm, other=0.0)
        loss = loss * wt
        coef_p = coef_p * wt
        coef_t = coef_t * wt
        if LOSS == 0 and HAS_SMOOTH:
            wt_s = wt * (smooth / C)
    elif LOSS == 0 and HAS_SMOOTH:
        wt_s = tl.full([BLOCK_P], smooth / C, tl.float32)
    loss = tl.where(ok, loss, 0.0)
    loss = tl.where(bad, float("nan"), loss)

    if REDUCE:
        tl.store(part_ptr + pid, tl.sum(loss, axis=0))
    else:
        tl.store(loss_ptr + p, loss, mask=pm)

    if WRITE_GRAD:
        gs = (tl.load(scale_ptr) if SCALE_FROM_PTR else scale) if REDUCE else 1.0
        okf = tl.where(ok, gs, 0.0)
        coef_p = coef_p * okf * inv_d
        coef_t = coef_t * okf
        if LOSS == 0 and HAS_SMOOTH:
            wt_s = wt_s * okf
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cols
            cm = cc < C
            mask2 = pm[:, None] & cm[None, :]
            if SINGLE:
                pe = e
            else:
                xc = tl.load(
                    x_ptr + xrow[:, None] + cc[None, :] * sC, mask=mask2, other=float("-inf")
                )
                xc = xc.to(tl.float32)
                if HAS_BIAS:
                    xc = xc + tl.load(b_ptr + cc, mask=cm, other=0.0)[None, :]
                pe = tl.exp(xc - mx[:, None])
            g = coef_p[:, None] * pe - tl.where(cc[None, :] == ts[:, None], coef_t[:, None], 0.0)
            if LOSS == 0 and HAS_SMOOTH:
                if HAS_CW:
                    cwv = tl.load(cw_ptr + cc, mask=cm, other=0.0)
                    g = g - wt_s[:, None] * cwv[None, :]
                else:
                    g = g - wt_s[:, None]
            tl.store(
                g_ptr + grow[:, None] + cc[None, :] * gC, g.to(g_ptr.dtype.element_ty), mask=mask2
            )


@triton.jit
def _softmax_probs_kernel(
    x_ptr,  # logits, element (n, c, s) at n*sN + c*sC + s*sS
    t_ptr,  # probability target of the logits' shape, at n*tN + c*tC + s*tS (any float dtype)
    cw_ptr,  # [C] fp32 class weights (HAS_CW)
    w_ptr,  # [P] fp32 element weight of the per-position loss (HAS_W)
    loss_ptr,  # [P] fp32 per-position loss (not REDUCE)
    g_ptr,  # gradient, element (n, c, s) at n*gN + c*gC + s*gS (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    scale_ptr,  # [1] fp32 mean scale (SCALE_FROM_PTR)
    b_ptr,  # [C] fp32 additive logit bias (HAS_BIAS)
    P,
    C,
    S,
    sN,
    sC,
    sS,
    tN,
    tC,
    tS,
    gN,
    gC,
    gS,
    scale,
    smooth,
    HAS_CW: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    SCALE_FROM_PTR: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # loss = sum_c w_c t'_c (lse - x_c) = A lse - B;  d/dx_c = A p_c - w_c t'_c.
    # Online over class chunks (one chunk when C fits), then a second sweep for the gradient.
    pid = tl.program_id(0)
    p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    n = p // S
    s = p - n * S
    xrow = n * sN + s * sS
    trow = n * tN + s * tS
    grow = n * gN + s * gS
    cols = tl.arange(0, BLOCK_C)
    mx = tl.full([BLOCK_P], float("-inf"), tl.float32)
    d = tl.zeros([BLOCK_P], tl.float32)
    a = tl.zeros([BLOCK_P], tl.float32)
    b = tl.zeros([BLOCK_P], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + cols
        cm = cc < C
        mask2 = pm[:, None] & cm[None, :]
        x = tl.load(x_ptr + xrow[:, None] + cc[None, :] * sC, mask=mask2, other=float("-inf"))
        x = x.to(tl.float32)
        if HAS_BIAS:
            x = x + tl.load(b_ptr + cc, mask=cm, other=0.0)[None, :]
        tv = tl.load(t_ptr + trow[:, None] + cc[None, :] * tC, mask=mask2, other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            tv = tl.where(mask2, tv * (1.0 - smooth) + smooth / C, 0.0)
        if HAS_CW:
            tv = tv * tl.load(cw_ptr + cc, mask=cm, other=0.0)[None, :]
        a += tl.sum(tv, axis=1)
        b += tl.sum(tv * tl.where(mask2, x, 0.0), axis=1)
        new_m = tl.where(pm, tl.maximum(mx, tl.max(x, axis=1)), 0.0)
        d = d * tl.exp(mx - new_m) + tl.sum(tl.exp(x - new_m[:, None]), axis=1)
        mx = new_m
    d = tl.where(pm, d, 1.0)
    lse = mx + tl.log(d)
    loss = tl.where(pm, a * lse - b, 0.0)
    if HAS_W:
        wt = tl.load(w_ptr + p, mask=pm, other=0.0)
        loss = loss * wt
    if REDUCE:
        tl.store(part_ptr + pid, tl.sum(loss, axis=0))
    else:
        tl.store(loss_ptr + p, loss, mask=pm)
    if WRITE_GRAD:
        gs = 1.0
        if REDUCE:
            if SCALE_FROM_PTR:  # noqa: SIM108 (constexpr branch inside a Triton kernel)
                gs = tl.load(scale_ptr)
            else:
                gs = scale
        rowf = tl.where(pm, gs, 0.0)
        if HAS_W:
            rowf = rowf * wt
        coef = a * rowf / d
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cols
            cm = cc < C
            mask2 = pm[:, None] & cm[None, :]
            x = tl.load(x_ptr + xrow[:, None] + cc[None, :] * sC, mask=mask2, other=float("-inf"))
            tv = tl.load(t_ptr + trow[:, None] + cc[None, :] * tC, mask=mask2, other=0.0)
            tv = tv.to(tl.float32)
            if HAS_SMOOTH:
                tv = tl.where(mask2, tv * (1.0 - smooth) + smooth / C, 0.0)
            if HAS_CW:
                tv = tv * tl.load(cw_ptr + cc, mask=cm, other=0.0)[None, :]
            x = x.to(tl.float32)
            if HAS_BIAS:
                x = x + tl.load(b_ptr + cc, mask=cm, other=0.0)[None, :]
            g = coef[:, None] * tl.exp(x - mx[:, None]) - rowf[:, None] * tv
            tl.store(
                g_ptr + grow[:, None] + cc[None, :] * gC, g.to(g_ptr.dtype.element_ty), mask=mask2
            )


def _gamma_mode(gamma: float) -> int:
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)


#: Rows per program when the class dim is contiguous and small (see ``_blocks``).
CONTIGUOUS_ROWS = 64


def _blocks(c: int, max_single: int, class_contiguous: bool = False) -> tuple[bool, int, int, int]:
    """(single pass?, BLOCK_P, BLOCK_C, num_warps) for C classes.

    ``class_contiguous`` (class stride 1: ``(N, C)`` rows, channels_last): the compiler then lays
    the lanes of a warp along the classes, so every thread keeps ``BLOCK_P / num_warps`` rows of
    per-position state (offsets, target, max, sum, coefficients). At 128 rows x 4 warps that was 32
    rows a thread: 255 registers and 360-670 B of spills on sm_90 for SEG channels_last CE with
    class weights + smoothing and softmax focal (tests/kernels/aot.py). 64 rows x 8 warps keeps it
    at 8 rows a thread (110-150 registers, no spills).
    """
    bc = triton.next_power_of_2(max(c, 1))
    tile = 256 if interpreting() else 4096
    if bc <= max_single:
        bp = max(1, tile // bc)
        warps = 4 if bc * bp <= 4096 else (8 if bc <= 8192 else 16)
        if class_contiguous and bp > 16:
            bp, warps = min(bp, CONTIGUOUS_ROWS), 8
        return True, bp, bc, warps
    chunk = min(CHUNK_C, max_single)
    return False, 1, chunk, 8


@triton_op("lossforge::softmax_fwd", mutates_args=())
def softmax_fwd(
    logits: Tensor,
    target: Tensor,
    class_weight: Tensor | None,
    weight: Tensor | None,
    scale_t: Tensor | None,
    kind: int,
    ignore_index: int | None,
    reduce: bool,
    scale: float,
    label_smoothing: float,
    gamma: float,
    max_single: int,
    write_grad: bool,
    bias: Tensor | None,
    d: float,
    mode: int,
) -> tuple[Tensor, Tensor]:
    """Forward of the softmax losses on ``(N, C, S)``-strided logits: returns ``(loss, grad)``.

    ``loss``: fp32 scalar (reduced, already scaled) or the fp32 per-position map ``(N, S)``.
    ``grad``: d(loss)/d(logits) in the logits' dtype (scaled when reduced), or empty.
    """
    nb, c, s_len = logits.shape
    p_total = nb * s_len
    single, bp, bc, warps = _blocks(c, max_single, logits.stride(1) == 1)
    n_prog = triton.cdiv(p_total, bp)
    dev = logits.device
    grad = torch.empty_like(logits) if write_grad else logits.new_empty(0)
    gstride = grad.stride() if write_grad else (0, 0, 0)
    if reduce:
        parts = torch.zeros(max(n_prog, 1), dtype=torch.float32, device=dev)
        loss_map = parts
    else:
        parts = logits.new_empty(0, dtype=torch.float32)
        loss_map = torch.empty(nb, s_len, dtype=torch.float32, device=dev)
    if p_total > 0 and target.is_floating_point():
        # Probability targets, viewed (N, C, S) like the logits: reads logits and targets twice.
        tstr = target.stride()
        wrap_triton(_softmax_probs_kernel)[(n_prog,)](
            logits,
            target,
            class_weight if class_weight is not None else parts,
            weight if weight is not None else parts,
            loss_map,
            grad if write_grad else logits,
            parts,
            scale_t if scale_t is not None else parts,
            bias if bias is not None else parts,
            p_total,
            c,
            s_len,
            logits.stride(0),
            logits.stride(1),
            logits.stride(2),
            tstr[0],
            tstr[1],
            tstr[2],
            gstride[0],
            gstride[1],
            gstride[2],
            scale,
            label_smoothing,
            HAS_CW=class_weight is not None,
            HAS_W=weight is not None,
            HAS_SMOOTH=label_smoothing > 0,
            HAS_BIAS=bias is not None,
            REDUCE=reduce,
            WRITE_GRAD=write_grad,
            SCALE_FROM_PTR=scale_t is not None,
            BLOCK_P=bp,
            BLOCK_C=bc,
            num_warps=warps,
        )
    elif p_total > 0:
        ls = logits.stride()
        # Position p = n * S + s at p * sS (channels_last): see FLAT in the kernel.
        flat = s_len > 1 and ls[0] == s_len * ls[2]
        flat = flat and (not write_grad or gstride[0] == s_len * gstride[2])
        wrap_triton(_softmax_fwd_kernel)[(n_prog,)](
            logits,
            target,
            class_weight if class_weight is not None else parts,
            weight if weight is not None else parts,
            loss_map,
            grad if write_grad else logits,
            parts,
            scale_t if scale_t is not None else parts,
            bias if bias is not None else parts,
            p_total,
            c,
            s_len,
            logits.stride(0),
            logits.stride(1),
            logits.stride(2),
            gstride[0],
            gstride[1],
            gstride[2],
            ignore_index if ignore_index is not None else 0,
            scale,
            label_smoothing,
            gamma,
            LOSS=kind,
            HAS_IGNORE=ignore_index is not None,
            HAS_CW=class_weight is not None,
            HAS_W=weight is not None,
            HAS_SMOOTH=label_smoothing > 0,
            HAS_BIAS=bias is not None,
            GMODE=_gamma_mode(gamma),
            REDUCE=reduce,
            WRITE_GRAD=write_grad,
            SCALE_FROM_PTR=scale_t is not None,
            SINGLE=single,
            FLAT=flat,
            BLOCK_P=bp,
            BLOCK_C=bc,
            num_warps=warps,
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
    if ctx.reduce:
        torch.ops.lossforge.scale_grad_(grad, grad_loss.reshape(1))
        g = grad
    else:
        g = grad.mul_(grad_loss.unsqueeze(1))
    return (g,) + (None,) * 15


softmax_fwd.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------
# Host side.
# --------------------------------------------------------------------------------------------------


def _as_ncs(logits: Tensor) -> Tensor:
    """A strided ``(N, C, S)`` view of ``(N, C, *)`` logits (copying only when the spatial dims
    cannot be merged into one stride)."""
    if logits.ndim == 1:
        return (
            logits.view(1, -1, 1) if logits.is_contiguous() else logits.contiguous().view(1, -1, 1)
        )
    if logits.ndim == 2:
        return logits.unsqueeze(2)
    # flatten() is a view when the spatial strides merge (contiguous NCHW, channels_last) and a copy
    # otherwise; its backward is a reshape.
    return logits.flatten(2)


def _reason(
    logits: Tensor, target: Tensor, *, kind: str = "ce", label_smoothing: float = 0.0, **_: Any
) -> str | None:
    """Why the kernel cannot serve this case, or None when it can."""
    if logits.dtype not in KERNEL_DTYPES:
        return f"logits dtype {logits.dtype} (the kernel takes float32/float16/bfloat16)"
    if logits.ndim == 0 or target.dtype == torch.bool or target.is_complex():
        return f"logits of shape {tuple(logits.shape)} with a {target.dtype} target"
    cdim = 1 if logits.ndim >= 2 else 0
    if target.is_floating_point():
        if kind != "ce":
            return "probability (soft) targets in the softmax focal loss"
        if tuple(target.shape) != tuple(logits.shape) or target.dtype == torch.float64:
            return "probability targets that are not float32/16/bf16 of the logits' shape"
        return None
    if tuple(target.shape) != tuple(logits.shape[:cdim]) + tuple(logits.shape[cdim + 1 :]):
        return "a target shape that is not the logits' shape without the class dim"
    if kind == "focal" and label_smoothing > 0:
        return "label smoothing in the softmax focal loss"
    return None


def _position_weight(weight: WeightLayout, loss_shape: tuple[int, ...]) -> Tensor | None:
    w = weight.tensor
    if w is None:
        return None
    if w.ndim == 0:
        w = w.expand(loss_shape)
    elif tuple(w.shape) != loss_shape:
        if w.ndim < len(loss_shape) and tuple(w.shape) == loss_shape[: w.ndim]:
            w = w.reshape(tuple(w.shape) + (1,) * (len(loss_shape) - w.ndim))
        w = w.expand(loss_shape)
    return w.to(torch.float32).contiguous().reshape(-1)


def _loss(
    logits: Tensor,
    target: Tensor,
    *,
    kind: str,
    coef: Tensor | None,
    logit_bias: Tensor | None,
    ignore_index: int | None,
    weight: WeightLayout,
    reduce: bool,
    denom: Denominator | None,
    label_smoothing: float = 0.0,
    gamma: float = 2.0,
    max_single_pass_classes: int = SINGLE_PASS_MAX_C,
) -> Tensor:
    """Run a softmax loss through the fused kernel (validated and routed by
    ``lossforge._pipeline.softmax``).

    Args:
        kind: ``"ce"`` or ``"focal"``.
        coef: ``(C,)`` per-class multiplier of the per-position loss (class weights and / or a
            focal alpha); the ``"mean"`` denominator is ``denom``, decided by the pipeline.
        logit_bias: ``(C,)`` added to the logits before the softmax (``tau * log(prior)`` of the
            logit-adjusted / balanced-softmax losses).
        ignore_index: Ignored class index (index targets only).
        weight: The per-position weight's layout.
        reduce: ``False`` for ``reduction="none"``; ``denom``: the ``"mean"`` denominator or None.
        max_single_pass_classes: padded class count up to which the one-pass variant is used (tests
            lower it to exercise the online variant).

    Returns:
        fp32 scalar, or the per-position loss (the target's shape) for ``reduce=False``.
    """
    kid = FOCAL if kind == "focal" else CE
    x = _as_ncs(logits)
    probs = target.is_floating_point()
    if probs:
        # Probability targets: read through their own (N, C, S) strides; nothing is ignored.
        cdim = 1 if logits.ndim >= 2 else 0
        loss_shape = tuple(logits.shape[:cdim]) + tuple(logits.shape[cdim + 1 :])
        t = _as_ncs(target)
        ignore_index = None
    else:
        loss_shape = tuple(target.shape)
        t = target.reshape(-1)
        if not t.is_contiguous():
            t = t.contiguous()
    cw = coef
    if cw is not None:
        cw = cw.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
    w = _position_weight(weight, loss_shape)
    scale, scale_t, d, mode = denominator_args(denom)
    write_grad = logits.requires_grad and torch.is_grad_enabled()
    loss, _ = torch.ops.lossforge.softmax_fwd(
        x,
        t,
        cw,
        w,
        scale_t,
        kid,
        ignore_index,
        reduce,
        scale,
        float(label_smoothing),
        float(gamma),
        int(max_single_pass_classes),
        write_grad,
        None
        if logit_bias is None
        else logit_bias.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous(),
        d,
        mode,
    )
    if not reduce:
        loss = loss.reshape(loss_shape)
    return loss  # type: ignore[no-any-return]
