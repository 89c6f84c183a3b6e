"""Fused multi-class soft dice on softmax probabilities with class-index targets.

Dice needs global per-class sums before any gradient exists, so it is two passes (PERFORMANCE.md
section 2.6): the statistics in the forward, the gradient in the backward.

1. ``_dice_stats_kernel`` (forward): each program reads a tile of positions x all classes (NCHW
   read in place through the class stride), computes the softmax in registers and writes its
   per-class partial sums ``I_c = sum p_c [y = c]``, ``P_c = sum p_c`` (or ``p_c**2`` for squared
   denominators) and ``G_c = sum [y = c]`` into a ``[N, blocks, 3, C]`` fp32 buffer (no atomics).
   An index outside ``[0, C)`` (value checks off) makes its sample's entries NaN.
2. A fixed-order reduction of that small buffer (``torch.sum`` over the block dim: deterministic
   run to run) gives the dice per entry, the loss (weighted by the pipeline's entry weights:
   ``class_weight`` x ``weight``, 0 for a dropped background; divided by its ``"mean"``
   denominator) and the two per-entry gradient coefficients, kept for the backward.
3. ``_dice_grad_kernel`` (backward) re-reads the logits, recomputes the softmax and writes
   ``dL/dx_k = p_k (g_k - sum_c p_c g_c)`` with ``g_c = A_c [y = c] + B_c dP/dp_c``, with
   ``grad_output`` and ``1 / d`` folded into ``A`` and ``B`` (so no gradient is held between the
   passes and no scaling pass follows).

Traffic: 2 reads + 1 write of the logits; memory: the gradient plus ``O(N * blocks * C)``.
Loss per entry: ``1 - (2 I_c + smooth) / (P_c + G_c + smooth)`` (an empty entry with
``smooth=0`` has dice 1); ignored positions contribute nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from lossforge._reduction import Denominator
from lossforge.kernels._common import declare, denominator_args, grad_factor, run
from lossforge.kernels._launch import KERNEL_DTYPES, cdiv, interpreting, next_pow2

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
    WIDE: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    s = sb.to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    sm = s < S
    cols = tl.arange(0, BLOCK_C)
    cm = cols < C
    # (C - 1) * class stride beyond int32 in one sample (3-D volumes): 64-bit offsets
    if WIDE:  # noqa: SIM108 (constexpr branch inside a Triton kernel)
        co = cols.to(tl.int64)
    else:
        co = cols
    mask2 = sm[:, None] & cm[None, :]
    xrow = n.to(tl.int64) * sN + s * sS
    x = tl.load(x_ptr + xrow[:, None] + co[None, :] * sC, mask=mask2, other=float("-inf")).to(
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
    bad = valid & ((tgt < 0) | (tgt >= C))
    oh = (cols[None, :] == tgt[:, None]) & valid[:, None] & cm[None, :]
    return s, sm, cols, co, cm, mask2, p, oh, valid, bad


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
    WIDE: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # spatial blocks on grid axis 0 (up to 2**31 - 1; axis 1 stops at 65535), samples on axis 1
    sb = tl.program_id(0)
    n = tl.program_id(1)
    s, sm, cols, co, cm, mask2, p, oh, valid, bad = _softmax_tile(
        x_ptr, t_ptr, n, sb, S, C, sN, sC, sS, ignore_index, HAS_IGNORE, WIDE, BLOCK_S, BLOCK_C
    )
    pv = tl.where(valid[:, None] & cm[None, :], p, 0.0)
    ohf = oh.to(tl.float32)
    inter = tl.sum(pv * ohf, axis=0)
    card = tl.sum(pv * pv, axis=0) if SQUARED else tl.sum(pv, axis=0)
    # an index outside [0, C) (value checks off) makes every entry of its sample NaN, as the
    # reference's NaN target does: loud, never a silently dropped pixel
    n_bad = tl.sum(tl.where(bad, 1, 0), axis=0)
    gt = tl.sum(ohf, axis=0) + tl.where(n_bad > 0, float("nan"), 0.0)
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
    d_ptr,  # [1] "mean" denominator on the device (D_PTR)
    go_ptr,  # grad_output: [1] (GO_MODE 1) or [N or 1, C - FIRST] (GO_MODE 2)
    S,
    C,
    sN,
    sC,
    sS,
    gN,
    gC,
    gS,
    ab_stride,
    go_stride,
    ignore_index,
    s_host,
    HAS_IGNORE: tl.constexpr,
    SQUARED: tl.constexpr,
    WIDE: tl.constexpr,
    D_PTR: tl.constexpr,
    GO_MODE: tl.constexpr,  # 1: one grad_output, 2: one per entry (reduction="none")
    FIRST: tl.constexpr,  # 1 when the background channel is not part of the loss
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # spatial blocks on grid axis 0 (up to 2**31 - 1; axis 1 stops at 65535), samples on axis 1
    sb = tl.program_id(0)
    n = tl.program_id(1)
    s, sm, cols, co, cm, mask2, p, oh, valid, bad = _softmax_tile(
        x_ptr, t_ptr, n, sb, S, C, sN, sC, sS, ignore_index, HAS_IGNORE, WIDE, BLOCK_S, BLOCK_C
    )
    f = grad_factor(s_host, d_ptr, go_ptr, D_PTR, GO_MODE == 1)
    a = tl.load(a_ptr + n.to(tl.int64) * ab_stride + cols, mask=cm, other=0.0) * f
    b = tl.load(b_ptr + n.to(tl.int64) * ab_stride + cols, mask=cm, other=0.0) * f
    if GO_MODE == 2:
        gm = cm & (cols >= FIRST)
        gv = tl.load(go_ptr + n.to(tl.int64) * go_stride + cols - FIRST, mask=gm, other=0.0)
        a = a * gv.to(tl.float32)
        b = b * gv.to(tl.float32)
    dp = 2.0 * p if SQUARED else tl.full(p.shape, 1.0, tl.float32)
    g = tl.where(oh, a[None, :], 0.0) + b[None, :] * dp
    g = tl.where(valid[:, None] & cm[None, :], g, 0.0)
    pg = tl.sum(tl.where(mask2, p * g, 0.0), axis=1)
    dx = p * (g - pg[:, None])
    dx = tl.where(valid[:, None], dx, 0.0)
    grow = n.to(tl.int64) * gN + s * gS
    tl.store(g_ptr + grow[:, None] + co[None, :] * gC, dx.to(g_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _dice_entry_kernel(
    sums_ptr,  # [R, 3, C] fp32 (I, P, G) per entry
    e_ptr,  # [R, C] fp32 entry weight (HAS_E)
    terms_ptr,  # [R, C - FIRST] fp32 per-entry loss (not REDUCE)
    a_ptr,  # [R, C] fp32 gradient coefficient of [y = c] (written)
    b_ptr,  # [R, C] fp32 gradient coefficient of dP/dp_c (written)
    out_ptr,  # [1] fp32 reduced loss (REDUCE)
    d_ptr,  # [1] "mean" denominator on the device (D_PTR)
    R,
    C,
    d_host,
    smooth,
    FIRST: tl.constexpr,
    HAS_E: tl.constexpr,
    REDUCE: tl.constexpr,
    MODE: tl.constexpr,  # 0: sum, 1: mean, 2: mean with a strict denominator (a given one)
    D_PTR: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # One program, fixed order: the loss per entry, its weighted sum divided by the denominator
    # (lossforge._reduction.Denominator's rule, as in _common._finish_kernel) and the gradient
    # coefficients; an empty entry (smooth = 0) has dice 1.
    cols = tl.arange(0, BLOCK_C)[None, :]
    keep = (cols >= FIRST) & (cols < C)
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        rows = (r0 + tl.arange(0, BLOCK_R))[:, None].to(tl.int64)
        m = (rows < R) & (cols < C)
        base = sums_ptr + rows * 3 * C + cols
        inter = tl.load(base, mask=m, other=0.0)
        card = tl.load(base + C, mask=m, other=0.0)
        gt = tl.load(base + 2 * C, mask=m, other=0.0)
        den = card + gt + smooth
        empty = den == 0  # only with smooth = 0; a NaN (an out-of-range index) propagates
        safe = tl.where(empty, 1.0, den)
        num = 2.0 * inter + smooth
        term = 1.0 - tl.where(empty, 1.0, num / safe)
        a = tl.where(empty, 0.0, -2.0 / safe)
        b = tl.where(empty, 0.0, num / (safe * safe))
        if HAS_E:
            e = tl.load(e_ptr + rows * C + cols, mask=m, other=0.0)
            term = term * e
            a = a * e
            b = b * e
        a = tl.where(keep, a, 0.0)
        b = tl.where(keep, b, 0.0)
        tl.store(a_ptr + rows * C + cols, a, mask=m)
        tl.store(b_ptr + rows * C + cols, b, mask=m)
        if REDUCE:
            acc += tl.where(m & keep, term, 0.0)
        else:
            tl.store(terms_ptr + rows * (C - FIRST) + cols - FIRST, term, mask=m & keep)
    if REDUCE:
        total = tl.sum(tl.sum(acc, axis=1), axis=0)
        if MODE > 0:
            d = tl.load(d_ptr).to(tl.float32) if D_PTR else d_host
            q = total / tl.where(d > 0, d, 1.0)
            if MODE == 2:
                rest = tl.where((d == 0) & (total == 0), 0.0, float("nan"))
            else:
                rest = tl.where(d == 0, 0.0, float("nan"))
            total = tl.where(d > 0, q, rest)
        tl.store(out_ptr, total)


#: CUDA's limit on grid axes 1 and 2 (axis 0 goes to 2**31 - 1).
MAX_GRID_Y = 65535
#: Offsets are computed in int32 up to this bound (``(C - 1) * class stride``), else in int64.
INT32_OFFSETS = 2**31 - 1


def _blocks(c: int) -> tuple[int, int, int]:
    bc = next_pow2(max(c, 1))
    tile = 256 if interpreting() else 4096
    bs = max(1, tile // bc)
    return bs, bc, (4 if bc * bs <= 4096 else 8)


def _wide(c: int, *strides: int) -> bool:
    return max(c - 1, 0) * max(abs(s) for s in strides) > INT32_OFFSETS


# ints: (has_ignore, ignore_index, squared, per_sample, reduce, mean mode, background column)
_HAS_IGNORE, _IGNORE, _SQUARED, _PER_SAMPLE, _REDUCE, _MODE, _FIRST = range(7)
# floats: (s, d, smooth)
_S, _D, _SMOOTH = range(3)


def _fake(x, t, e, state, b, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202, ARG001
    nb, c, _ = x.shape
    if go is not None:
        return x.new_empty(0, dtype=torch.float32), torch.empty_like(x)
    rows, cols = (nb if ints[_PER_SAMPLE] else 1), c - ints[_FIRST]
    shape: tuple[int, ...] = ()
    if not ints[_REDUCE]:
        shape = (rows, cols) if ints[_PER_SAMPLE] else (cols,)
    return x.new_empty(shape, dtype=torch.float32), x.new_empty((2, rows, c), dtype=torch.float32)


def _launch(x, t, e, state, _b, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202, ARG001
    """Dice on ``(N, C, S)``-strided logits (``FusedLoss``'s protocol, gradient in the backward).

    Forward (``go`` is None): the statistics pass, then ``_dice_entry_kernel``: the loss (the
    ``e``-weighted sum of ``1 - dice`` over the entries, divided by the ``"mean"`` denominator; or
    the per-entry map for ``reduction="none"``) and the state the backward needs, the per-entry
    coefficients ``A``, ``B`` ``[2, N or 1, C]``. Backward: the gradient pass, ``grad_output`` and
    ``1 / d`` folded into the coefficients in the kernel.
    """
    nb, c, s_len = x.shape
    bs, bc, warps = _blocks(c)
    n_sb = cdiv(s_len, bs)
    has_ignore = bool(ints[_HAS_IGNORE])
    squared = bool(ints[_SQUARED])
    per_sample = bool(ints[_PER_SAMPLE])
    reduce, mode = bool(ints[_REDUCE]), ints[_MODE]
    first = ints[_FIRST]  # 1 without the background channel
    rows = nb if per_sample else 1
    ls = x.stride()
    if go is not None:
        grad = torch.empty_like(x)
        if nb * s_len > 0:
            go_mode, go_stride = 1, 0
            if not reduce:
                go = go.reshape(rows, c - first).contiguous()
                go_mode, go_stride = 2, (c - first if per_sample else 0)
            gs = grad.stride()
            wrap_triton(_dice_grad_kernel)[(n_sb, nb)](
                x,
                t,
                state[0],
                state[1],
                grad,
                d if d is not None else state,
                go,
                s_len,
                c,
                *ls,
                *gs,
                c if per_sample else 0,
                go_stride,
                ints[_IGNORE],
                floats[_S],
                HAS_IGNORE=has_ignore,
                SQUARED=squared,
                WIDE=_wide(c, ls[1], gs[1]),
                D_PTR=reduce and mode > 0 and d is not None,
                GO_MODE=go_mode,
                FIRST=first,
                BLOCK_S=bs,
                BLOCK_C=bc,
                num_warps=warps,
            )
        return x.new_empty(0, dtype=torch.float32), grad
    # every (sample, block) row is written when there is anything to read; else the sums are 0
    alloc = torch.empty if nb * s_len > 0 else torch.zeros
    stats = alloc(nb, max(n_sb, 1), 3, c, dtype=torch.float32, device=x.device)
    if nb * s_len > 0:
        wrap_triton(_dice_stats_kernel)[(n_sb, nb)](
            x,
            t,
            stats,
            s_len,
            c,
            *ls,
            n_sb,
            ints[_IGNORE],
            HAS_IGNORE=has_ignore,
            SQUARED=squared,
            WIDE=_wide(c, ls[1]),
            BLOCK_S=bs,
            BLOCK_C=bc,
            num_warps=warps,
        )
    # fixed-order reduction over the blocks (and the batch): [N or 1, 3, C]
    sums = stats.sum(dim=(0, 1)).unsqueeze(0) if not per_sample else stats.sum(dim=1)
    state = x.new_empty((2, rows, c), dtype=torch.float32)
    out = x.new_empty(() if reduce else (rows, c - first), dtype=torch.float32)
    block_c = next_pow2(max(c, 1))
    wrap_triton(_dice_entry_kernel)[(1,)](
        sums,
        e if e is not None else sums,
        out,
        state[0],
        state[1],
        out,
        d if d is not None else sums,
        rows,
        c,
        floats[_D],
        floats[_SMOOTH],
        FIRST=first,
        HAS_E=e is not None,
        REDUCE=reduce,
        MODE=mode if reduce else 0,
        D_PTR=reduce and mode > 0 and d is not None,
        BLOCK_R=max(1, 1024 // block_c),
        BLOCK_C=block_c,
        num_warps=4,
    )
    if not reduce and not per_sample:
        out = out.reshape(-1)
    return out, state


DICE = declare("dice", _launch, _fake, state_from_forward=True)


def _reason(logits: Tensor, target: Tensor) -> str | None:
    """Why the kernel cannot serve this case, or None when it can."""
    if logits.dtype not in KERNEL_DTYPES:
        return f"logits dtype {logits.dtype}"
    if logits.ndim < 2 or target.is_floating_point() or target.dtype == torch.bool:
        return "anything but (N, C, *) logits with class-index targets"
    if tuple(target.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        return "a target shape that is not the logits' shape without dim 1"
    if logits.shape[1] > MAX_CLASSES:
        return f"more than {MAX_CLASSES} classes"
    if logits.shape[0] > MAX_GRID_Y:
        return f"a batch of more than {MAX_GRID_Y} samples (one CUDA grid axis per sample)"
    return None


def _loss(
    logits: Tensor,
    target: Tensor,
    *,
    entry_weight: Tensor | None,
    include_background: bool,
    per_sample: bool,
    ignore_index: int | None,
    reduce: bool,
    denom: Denominator | None,
    smooth: float = 1.0,
    squared: bool = False,
) -> Tensor:
    """``1 - dice`` of the softmax of ``logits`` against class-index targets, per (sample, class)
    entry (``per_sample``) or per class: summed with ``entry_weight`` (``[N or 1, C]`` fp32:
    class weights times the element weight, 0 for the background when it is dropped) and divided
    by ``denom`` (decided by ``lossforge._pipeline.region``), or the per-entry map for
    ``reduce=False``."""
    x = logits.unsqueeze(2) if logits.ndim == 2 else logits.flatten(2)
    t = target.reshape(-1)
    if not t.is_contiguous():
        t = t.contiguous()
    mode, s_host, d, d_t = denominator_args(denom)
    ints = (
        int(ignore_index is not None),
        0 if ignore_index is None else int(ignore_index),
        int(bool(squared)),
        int(bool(per_sample)),
        int(reduce),
        mode,
        0 if include_background else 1,
    )
    return run(
        DICE,
        x,
        t,
        entry_weight,
        None,
        None,
        d_t,
        ints,
        (s_host, d, float(smooth)),
        reduced=reduce,
        grad_in_backward=True,
    )
