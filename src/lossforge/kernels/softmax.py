"""Fused softmax losses over the class dimension: cross-entropy (class weights, ``ignore_index``,
label smoothing; class-index or probability targets) and softmax focal (class-index targets).

Design (PERFORMANCE.md sections 2.1, 2.6, 2.8, 5.7):

* The logits are read as ``(N, C, S)`` through their strides: ``(N, C)`` rows, contiguous NCHW
  (class stride ``H*W``) and channels_last (class stride 1) are all read in place, no permute copy.
  A program handles ``BLOCK_P`` positions x all classes.
* When the class dim fits on chip (``next_pow2(C) <= 16384``) one pass: load the tile once,
  softmax in registers, write the gradient (1 read + 1 write). Larger vocabularies use an online
  softmax (running max and sum over class chunks, then a second sweep writing the gradient: 2
  reads + 1 write).
* The target logit and class weight are gathered per position; the ``-1`` of the target class is
  applied in fp32 before the gradient is rounded (no bf16 cancellation). An index outside
  ``[0, C)`` (not ignored) makes the loss NaN.
* The ``"mean"`` denominator (valid count, the summed class weights of valid targets,
  a given one, the global value) comes from the pipeline; a device value is read by the kernel
  (no sync), so the forward writes the final gradient and the backward is the predicate kernel of
  ``_common`` (float16: the gradient is computed in the backward, see ``_common``).
* Class offsets (``c * class stride``) are int32 unless ``(C - 1) * stride`` exceeds it in one
  sample (3-D volumes), then int64 (``WIDE``); positions are split with one 64-bit division per
  program.
* Focal: ``q = 1 - p_y`` is computed as (sum of the other exponentials) / (sum), not ``1 - p_y``,
  and ``log p_y = log1p(-q)`` by series when ``q`` is small, so the loss and the finite gradient
  keep their relative accuracy at saturation, also for ``0 < gamma < 1``.
"""

from __future__ import annotations

from typing import Any

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
)
from lossforge.kernels._launch import KERNEL_DTYPES, cdiv, interpreting, next_pow2

__all__: list[str] = []  # private: reached through lossforge._pipeline.softmax

CE, FOCAL = 0, 1
#: Largest padded class count kept in registers for the one-pass variant.
SINGLE_PASS_MAX_C = 16384
#: Class chunk of the online (multi-block) variant.
CHUNK_C = 4096


@triton.jit
def _positions(start, P, S, sN, sS, gN, gS, FLAT: tl.constexpr, BLOCK_P: tl.constexpr):
    """Positions ``p = n * S + s`` of the program's tile (from the int64 ``start``), their mask,
    and the row offsets of the logits and of the gradient (int64)."""
    p = start + tl.arange(0, BLOCK_P)
    pm = p < P
    if FLAT:
        # sN == S * sS and gN == S * gS (channels_last, or (N, C) rows): no division at all.
        # With the class dim contiguous, every lane of a warp repeats the per-position integer
        # work of its rows, so n = p // S (a 64-bit division call) dominated the SASS.
        xrow = p * sS
        grow = p * gS
    else:
        n = block_div(start, BLOCK_P, S)  # p // S: one 64-bit division per program
        s = p - n * S
        xrow = n * sN + s * sS
        grow = n * gN + s * gS
    return p, pm, xrow, grow


@triton.jit
def _class_offsets(cc, WIDE: tl.constexpr):
    # (C - 1) * class stride may exceed int32 in one sample (3-D volumes): 64-bit offsets then.
    if WIDE:  # noqa: SIM108 (constexpr branch inside a Triton kernel)
        out = cc.to(tl.int64)
    else:
        out = cc
    return out


@triton.jit
def _position_weight(
    w_ptr, start, p, pm, w_inner, BLOCK_P: tl.constexpr, WEIGHT_MODE: tl.constexpr
):
    # The per-position weight: [P] (1), leading dims [P // w_inner] (2), one value (3).
    if WEIGHT_MODE == 1:
        wt = tl.load(w_ptr + p, mask=pm, other=0.0).to(tl.float32)
    elif WEIGHT_MODE == 2:
        wrow = block_div(start, BLOCK_P, w_inner)  # p // w_inner
        wt = tl.load(w_ptr + wrow, mask=pm, other=0.0).to(tl.float32)
    else:
        wt = tl.full([BLOCK_P], 1.0, tl.float32) * tl.load(w_ptr).to(tl.float32)
    return wt


@triton.jit
def _softmax_fwd_kernel(
    x_ptr,  # logits, element (n, c, s) at n*sN + c*sC + s*sS
    t_ptr,  # [P] class indices (any int dtype), P = N*S positions in (n, s) order
    cw_ptr,  # [C] fp32 class weights (CE) or per-class alpha (focal) (HAS_CW)
    w_ptr,  # per-position weight, see _position_weight (WEIGHT_MODE > 0)
    loss_ptr,  # [P] fp32 per-position loss (not REDUCE)
    g_ptr,  # gradient, element (n, c, s) at n*gN + c*gC + s*gS, logits dtype (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    d_ptr,  # [1] "mean" denominator on the device (D_PTR)
    go_ptr,  # grad_output: [1] (GO_MODE 1) or [P] (GO_MODE 2)
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
    w_inner,
    ignore_index,
    s_host,
    smooth,
    gamma,
    LOSS: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    HAS_CW: tl.constexpr,
    WEIGHT_MODE: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GMODE: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_LOSS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    D_PTR: tl.constexpr,
    GO_MODE: tl.constexpr,
    SINGLE: tl.constexpr,
    FLAT: tl.constexpr,
    WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK_P
    p, pm, xrow, grow = _positions(start, P, S, sN, sS, gN, gS, FLAT, BLOCK_P)

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
        co = _class_offsets(cols, WIDE)
        x = tl.load(x_ptr + xrow[:, None] + co[None, :] * sC, mask=mask2, other=float("-inf")).to(
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
                wx = tl.sum(tl.where(mask2, x - x_t[:, None], 0.0) * cwv[None, :], axis=1)
            else:
                wx = tl.sum(tl.where(mask2, x - x_t[:, None], 0.0), axis=1)
    else:
        mx = tl.full([BLOCK_P], float("-inf"), tl.float32)
        d = tl.zeros([BLOCK_P], tl.float32)
        s_other = tl.zeros([BLOCK_P], tl.float32)
        wx = tl.zeros([BLOCK_P], tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cols
            cm = cc < C
            mask2 = pm[:, None] & cm[None, :]
            co = _class_offsets(cc, WIDE)
            x = tl.load(
                x_ptr + xrow[:, None] + co[None, :] * sC, mask=mask2, other=float("-inf")
            ).to(tl.float32)
            if HAS_BIAS:
                x = x + tl.load(b_ptr + cc, mask=cm, other=0.0)[None, :]
            new_m = tl.maximum(mx, tl.max(x, axis=1))
            new_m = tl.where(pm, new_m, 0.0)
            # a leading chunk of masked (-inf) classes leaves the running max at -inf: rescale
            # nothing then (the sums are 0) and never form -inf - (-inf)
            alpha = tl.where(mx == float("-inf"), 0.0, tl.exp(mx - new_m))
            e = tl.exp(x - tl.where(new_m == float("-inf"), 0.0, new_m)[:, None])
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
        if HAS_SMOOTH:
            # relative to the target logit as in the one-block variant (there exactly; here after
            # the absolute sum, which keeps the long-row loop's registers free of spills)
            wx = wx - x_t * wsum
    d = tl.where(pm, d, 1.0)
    lse = mx + tl.log(d)
    inv_d = 1.0 / d

    if LOSS == 0:
        # -log p_y = lse - x_y as log d + (m - x_y), with no large offset shared by the logits
        # absorbed into lse, and (one block) as -log1p(-q) (q = 1 - p_y, no cancellation) for a
        # small loss
        nll0 = tl.log(d) + (mx - x_t)
        if SINGLE:  # (the long-row loop keeps no sum of the other classes for cross-entropy)
            q = s_other * inv_d
            nll0 = tl.where(q < 1e-3, q * (1.0 + q * (0.5 + q / 3.0)), nll0)
        nll = w_t * nll0
        coef_p = w_t  # gradient: coef_p * p_c - coef_t * [c == y] - coef_w * w_c
        coef_t = w_t
        if HAS_SMOOTH:
            # sum_c w_c (lse - x_c) = wsum (lse - x_y) - sum_c w_c (x_c - x_y)
            loss = (1.0 - smooth) * nll + (smooth / C) * (nll0 * wsum - wx)
            coef_p = (1.0 - smooth) * w_t + (smooth / C) * wsum
            coef_t = (1.0 - smooth) * w_t
        else:
            loss = nll
    else:
        q = s_other * inv_d  # 1 - p_y without cancellation
        p_y = tl.exp(x_t - lse)
        small = q < 1e-3
        lpy = tl.where(small, -q * (1.0 + q * (0.5 + q / 3.0)), (x_t - mx) - tl.log(d))  # log1p(-q)
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
        # p_y * ratio = p_y log p_y / (1 - p_y) -> 0 as p_y -> 0 (a masked target class: the
        # loss is inf, its gradient the limit, as on the torch route, not 0 * -inf)
        p_ratio = tl.where(p_y == 0.0, 0.0, p_y * ratio)
        fac = w_t * mod * (1.0 - gamma * p_ratio)  # dL/dx_c = fac * (p_c - [c == y])
        coef_p = fac
        coef_t = fac

    if WEIGHT_MODE > 0:
        wt = _position_weight(w_ptr, start, p, pm, w_inner, BLOCK_P, WEIGHT_MODE)
        loss = loss * wt
        coef_p = coef_p * wt
        coef_t = coef_t * wt
        if LOSS == 0 and HAS_SMOOTH:
            wt_s = wt * (smooth / C)
    elif LOSS == 0 and HAS_SMOOTH:
        wt_s = tl.full([BLOCK_P], smooth / C, tl.float32)
    loss = tl.where(ok, loss, 0.0)
    loss = tl.where(bad, float("nan"), loss)

    if WRITE_LOSS:
        if REDUCE:
            tl.store(part_ptr + pid, tl.sum(loss, axis=0))
        else:
            tl.store(loss_ptr + p, loss, mask=pm)

    if WRITE_GRAD:
        gs = grad_factor(s_host, d_ptr, go_ptr, D_PTR, GO_MODE == 1)
        okf = tl.where(ok, gs, 0.0)
        if GO_MODE == 2:
            okf = okf * tl.load(go_ptr + p, mask=pm, other=0.0).to(tl.float32)
        coef_p = tl.where(ok, coef_p * okf * inv_d, 0.0)
        coef_t = tl.where(ok, coef_t * okf, 0.0)
        if LOSS == 0 and HAS_SMOOTH:
            wt_s = wt_s * okf
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cols
            cm = cc < C
            mask2 = pm[:, None] & cm[None, :]
            co = _class_offsets(cc, WIDE)
            if SINGLE:
                pe = e
            else:
                xc = tl.load(
                    x_ptr + xrow[:, None] + co[None, :] * sC, mask=mask2, other=float("-inf")
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
                g_ptr + grow[:, None] + co[None, :] * gC, g.to(g_ptr.dtype.element_ty), mask=mask2
            )


@triton.jit
def _softmax_probs_kernel(
    x_ptr,  # logits, element (n, c, s) at n*sN + c*sC + s*sS
    t_ptr,  # probability target of the logits' shape, at n*tN + c*tC + s*tS (any float dtype)
    cw_ptr,  # [C] fp32 class weights (HAS_CW)
    w_ptr,  # per-position weight, see _position_weight (WEIGHT_MODE > 0)
    loss_ptr,  # [P] fp32 per-position loss (not REDUCE)
    g_ptr,  # gradient, element (n, c, s) at n*gN + c*gC + s*gS (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    d_ptr,  # [1] "mean" denominator on the device (D_PTR)
    go_ptr,  # grad_output: [1] (GO_MODE 1) or [P] (GO_MODE 2)
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
    w_inner,
    s_host,
    smooth,
    HAS_CW: tl.constexpr,
    WEIGHT_MODE: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_LOSS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    D_PTR: tl.constexpr,
    GO_MODE: tl.constexpr,
    WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # loss = sum_c w_c t'_c (lse - x_c) = A lse - B;  d/dx_c = A p_c - w_c t'_c.
    # Online over class chunks (one chunk when C fits), then a second sweep for the gradient.
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK_P
    p = start + tl.arange(0, BLOCK_P)
    pm = p < P
    n = block_div(start, BLOCK_P, S)  # p // S: one 64-bit division per program
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
        co = _class_offsets(cc, WIDE)
        x = tl.load(x_ptr + xrow[:, None] + co[None, :] * sC, mask=mask2, other=float("-inf"))
        x = x.to(tl.float32)
        if HAS_BIAS:
            x = x + tl.load(b_ptr + cc, mask=cm, other=0.0)[None, :]
        tv = tl.load(t_ptr + trow[:, None] + co[None, :] * tC, mask=mask2, other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            tv = tl.where(mask2, tv * (1.0 - smooth) + smooth / C, 0.0)
        if HAS_CW:
            tv = tv * tl.load(cw_ptr + cc, mask=cm, other=0.0)[None, :]
        new_m = tl.where(pm, tl.maximum(mx, tl.max(x, axis=1)), 0.0)
        # B is kept relative to the running max (sum_c t'_c (x_c - m)), so a large offset shared
        # by every logit cancels exactly instead of in A lse - B; a zero target weight adds 0
        # (not 0 * -inf) for a masked class. While every class so far is masked (-inf) the
        # reference is 0 instead (the sums are 0, or B is -inf for target mass on a masked class).
        ref_old = tl.where(mx == float("-inf"), 0.0, mx)
        ref = tl.where(new_m == float("-inf"), 0.0, new_m)
        b += tl.where(a == 0.0, 0.0, (ref_old - ref) * a)
        b += tl.sum(tl.where(mask2 & (tv != 0.0), tv * (x - ref[:, None]), 0.0), axis=1)
        a += tl.sum(tv, axis=1)
        alpha = tl.where(mx == float("-inf"), 0.0, tl.exp(mx - new_m))
        d = d * alpha + tl.sum(tl.exp(x - ref[:, None]), axis=1)
        mx = new_m
    d = tl.where(pm, d, 1.0)
    loss = tl.where(pm, a * tl.log(d) - b, 0.0)
    if WEIGHT_MODE > 0:
        wt = _position_weight(w_ptr, start, p, pm, w_inner, BLOCK_P, WEIGHT_MODE)
        loss = loss * wt
    if WRITE_LOSS:
        if REDUCE:
            tl.store(part_ptr + pid, tl.sum(loss, axis=0))
        else:
            tl.store(loss_ptr + p, loss, mask=pm)
    if WRITE_GRAD:
        gs = grad_factor(s_host, d_ptr, go_ptr, D_PTR, GO_MODE == 1)
        rowf = tl.where(pm, gs, 0.0)
        if GO_MODE == 2:
            rowf = rowf * tl.load(go_ptr + p, mask=pm, other=0.0).to(tl.float32)
        if WEIGHT_MODE > 0:
            rowf = rowf * wt
        coef = a * rowf / d
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cols
            cm = cc < C
            mask2 = pm[:, None] & cm[None, :]
            co = _class_offsets(cc, WIDE)
            x = tl.load(x_ptr + xrow[:, None] + co[None, :] * sC, mask=mask2, other=float("-inf"))
            tv = tl.load(t_ptr + trow[:, None] + co[None, :] * tC, mask=mask2, other=0.0)
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
                g_ptr + grow[:, None] + co[None, :] * gC, g.to(g_ptr.dtype.element_ty), mask=mask2
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
    class weights + smoothing and softmax focal (tools/aot.py). 64 rows x 8 warps keeps it
    at 8 rows a thread (110-150 registers, no spills).
    """
    bc = next_pow2(max(c, 1))
    tile = 256 if interpreting() else 4096
    if bc <= max_single:
        bp = max(1, tile // bc)
        warps = 4 if bc * bp <= 4096 else (8 if bc <= 8192 else 16)
        if class_contiguous and bp > 16:
            bp, warps = min(bp, CONTIGUOUS_ROWS), 8
        return True, bp, bc, warps
    chunk = min(CHUNK_C, max_single)
    return False, 1, chunk, 8


#: Offsets are computed in int32 up to this bound (``(C - 1) * class stride``), else in int64.
INT32_OFFSETS = 2**31 - 1

# ints: the launch configuration; floats: (s, d, label_smoothing, gamma)
(
    _KIND,
    _HAS_IGNORE,
    _IGNORE,
    _REDUCE,
    _MODE,
    _WMODE,
    _WINNER,
    _MAX_SINGLE,
    _HAS_BIAS,
) = range(9)
_S, _D, _SMOOTH, _GAMMA = range(4)


def _fake(x, t, w, cw, bias, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202, ARG001
    nb, _, s_len = x.shape
    if ints[_REDUCE]:
        loss = x.new_empty((), dtype=torch.float32)
    else:
        loss = x.new_empty((nb, s_len), dtype=torch.float32)
    return loss, torch.empty_like(x) if write_grad else x.new_empty(0)


def _needs_wide(c: int, *strides: int) -> bool:
    """Whether ``(C - 1) * stride`` (a class offset inside one sample) can exceed int32."""
    return max(c - 1, 0) * max((abs(s) for s in strides), default=0) > INT32_OFFSETS


def _launch(x, t, w, cw, bias, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202
    """The launch of one softmax loss on ``(N, C, S)``-strided logits: ``(loss, grad)``.

    ``loss``: fp32 scalar (reduced, divided by the denominator) or the fp32 per-position map
    ``(N, S)``; ``grad``: d(loss)/d(logits) in the logits' dtype, or empty. In the backward (``go``
    given) the loss is not written and ``grad_output`` is folded into the gradient.
    """
    nb, c, s_len = x.shape
    p_total = nb * s_len
    single, bp, bc, warps = _blocks(c, ints[_MAX_SINGLE], x.stride(1) == 1)
    n_prog = max(cdiv(p_total, bp), 1)
    reduce, backward = bool(ints[_REDUCE]), go is not None
    grad = torch.empty_like(x) if write_grad else x.new_empty(0)
    gstride = grad.stride() if write_grad else (0, 0, 0)
    parts = x.new_empty(n_prog if reduce and not backward else 0, dtype=torch.float32)
    loss_map = parts
    if not reduce and not backward:
        loss_map = x.new_empty((nb, s_len), dtype=torch.float32)
    go_mode = 0
    if backward:
        go_mode = 1
        if not reduce:
            go, scalar = go_layout(go, x.new_empty((nb, s_len), dtype=go.dtype))
            go_mode = 1 if scalar else 2
    mode = ints[_MODE]
    wmode = ints[_WMODE]
    common = {
        "HAS_CW": cw is not None,
        "WEIGHT_MODE": wmode,
        "HAS_SMOOTH": floats[_SMOOTH] > 0,
        "HAS_BIAS": bias is not None,
        "REDUCE": reduce,
        "WRITE_LOSS": not backward,
        "WRITE_GRAD": write_grad,
        "D_PTR": mode > 0 and d is not None,
        "GO_MODE": go_mode,
        "BLOCK_P": bp,
        "BLOCK_C": bc,
        "num_warps": warps,
    }
    ptrs = (
        cw if cw is not None else parts,
        w if w is not None else parts,
        loss_map,
        grad if write_grad else x,
        parts,
        d if d is not None else parts,
        go if go is not None else parts,
        bias if bias is not None else parts,
    )
    ls = x.stride()
    if p_total > 0 and t.is_floating_point():
        # Probability targets, viewed (N, C, S) like the logits: reads logits and targets twice.
        ts = t.stride()
        wrap_triton(_softmax_probs_kernel)[(n_prog,)](
            x,
            t,
            *ptrs,
            p_total,
            c,
            s_len,
            *ls,
            *ts,
            *gstride,
            ints[_WINNER],
            floats[_S],
            floats[_SMOOTH],
            WIDE=_needs_wide(c, ls[1], ts[1], gstride[1]),
            **common,
        )
    elif p_total > 0:
        # Position p = n * S + s at p * sS (channels_last): see FLAT in the kernel.
        flat = s_len > 1 and ls[0] == s_len * ls[2]
        flat = flat and (not write_grad or gstride[0] == s_len * gstride[2])
        wrap_triton(_softmax_fwd_kernel)[(n_prog,)](
            x,
            t,
            *ptrs,
            p_total,
            c,
            s_len,
            *ls,
            *gstride,
            ints[_WINNER],
            ints[_IGNORE],
            floats[_S],
            floats[_SMOOTH],
            floats[_GAMMA],
            LOSS=ints[_KIND],
            HAS_IGNORE=bool(ints[_HAS_IGNORE]),
            GMODE=_gamma_mode(floats[_GAMMA]),
            SINGLE=single,
            FLAT=flat,
            WIDE=_needs_wide(c, ls[1], gstride[1]),
            **common,
        )
    if backward:
        return x.new_empty(0, dtype=torch.float32), grad
    if not reduce:
        return loss_map, grad
    if p_total == 0:
        parts = torch.zeros(1, dtype=torch.float32, device=x.device)
    return finish_sum(parts, d, floats[_D], mode), grad


SOFTMAX = declare("softmax", _launch, _fake, go_dim=1)


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


def _weight_args(
    weight: WeightLayout, loss_shape: tuple[int, ...]
) -> tuple[Tensor | None, int, int]:
    """(tensor, mode, inner) of the per-position weight: the loss's shape (1), its leading dims
    (2: read at ``p // inner``), one value (3); a same-rank broadcast is expanded (per position)."""
    w = weight.tensor
    if w is None:
        return None, 0, 1
    if weight.mode == WeightLayout.SCALAR:
        return w.reshape(1), 3, 1
    if weight.mode == WeightLayout.LEADING:
        return w.contiguous().reshape(-1), 2, weight.inner
    return w.expand(loss_shape).contiguous().reshape(-1), 1, 1


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

    The one-pass variant serves padded class counts up to the module's ``SINGLE_PASS_MAX_C``
    (read per call: tests lower it to exercise the online variant on small inputs).

    Returns:
        fp32 scalar, or the per-position loss (the target's shape) for ``reduce=False``.
    """
    kid = FOCAL if kind == "focal" else CE
    x = _as_ncs(logits)
    if target.is_floating_point():
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
    cw = None
    if coef is not None:
        cw = coef.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
    bias = None
    if logit_bias is not None:
        bias = logit_bias.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
    w, wmode, w_inner = _weight_args(weight, loss_shape)
    mode, s_host, d, d_t = denominator_args(denom)
    ints = (
        kid,
        int(ignore_index is not None),
        0 if ignore_index is None else int(ignore_index),
        int(reduce),
        mode,
        wmode,
        w_inner,
        int(SINGLE_PASS_MAX_C),
        int(bias is not None),
    )
    floats = (s_host, d, float(label_smoothing), float(gamma))
    loss = run(
        SOFTMAX,
        x,
        t,
        w,
        cw,
        bias,
        d_t,
        ints,
        floats,
        reduced=reduce,
        grad_in_backward=logits.dtype == torch.float16,
    )
    if not reduce:
        loss = loss.reshape(loss_shape)
    return loss
