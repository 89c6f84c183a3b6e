"""One fused kernel for the element-wise sigmoid losses: BCE with logits (+ ``pos_weight``, label
smoothing), balanced BCE with a given ``beta``, sigmoid focal, and ASL, switched by a constexpr.

Design (PERFORMANCE.md sections 1, 2.2-2.5, 5):

* One launch per direction. The forward reads the logits and targets once, writes the gradient of
  the reduced loss (in the logits' dtype) and one fp32 partial sum per program (each program
  reduces ``TILES`` tiles, so there are at most ``MAX_PARTIALS`` partials); a one-program kernel
  adds the partials in a fixed order in one wide iteration (deterministic, no atomics). The
  backward is the predicate kernel of ``_common`` (nothing to do when ``grad_output == 1``).
  Extra memory: the gradient buffer. float16 logits compute the gradient in the backward instead,
  with ``grad_output`` folded in (``_common``: a GradScaler's factor arrives before rounding).
* Targets: dense (float soft labels, bool, integers; ``ignore_index`` marks elements) or class
  indices of the logits' shape without dim 1 (``k`` positive, ``C`` background, ``ignore_index``
  drops the row; an index outside ``[0, C]`` makes the loss NaN) read as indices: the one-hot never
  exists. ``(N, C)`` logits with ``C <= BLOCK`` use a ``[rows, C]`` tile (row and class without
  division); other layouts split the flat offset with one 64-bit division per tile and 32-bit
  arithmetic per element (``_split32``).
* Math in fp32 from one ``exp(-|x|)``: sigma(x), sigma(-x), log-sigmoid of both signs. The focal
  derivative is written as ``gamma * q**gamma * (dq/q)`` with ``|dq/q| <= 1``, so 0 < gamma < 1
  stays finite at saturation; gamma in {0, 1, 2} uses multiplies, other gamma
  ``exp2(gamma * log2 q)``.
* The ``"mean"`` denominator comes from the pipeline (``lossforge._reduction``): a host number is a
  kernel constant, a device value (a given tensor, a valid count, the global value) is read by the
  kernel (no sync); a zero denominator gives exactly 0 with zero gradients.
"""

from __future__ import annotations

import math
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
    tiles_per_program,
)
from lossforge.kernels._launch import (
    KERNEL_DTYPES,
    cdiv,
    elementwise_block,
    elementwise_warps,
    fast_math,
    next_pow2,
    same_layout,
)

__all__: list[str] = []  # private: reached through lossforge._pipeline.sigmoid

BCE, FOCAL, ASL = 0, 1, 2
_KINDS = {"bce": BCE, "balanced_bce": BCE, "focal": FOCAL, "asl": ASL}

if fast_math():  # pragma: no cover - GPU only
    from triton.language.extra import libdevice as _ld

    @triton.jit
    def _rcp(x):
        return _ld.fast_dividef(1.0, x)

    @triton.jit
    def _log(x):
        return _ld.fast_logf(x)

else:

    @triton.jit
    def _rcp(x):
        return 1.0 / x

    @triton.jit
    def _log(x):
        return tl.log(x)


@triton.jit
def _gamma_pow(q, gamma, MODE: tl.constexpr):
    # q ** gamma for q in [0, 1]; MODE 0: gamma = 0 (1, also at q = 0), 1: q, 2: q * q, 3: general.
    if MODE == 0:
        w = tl.full(q.shape, 1.0, tl.float32)
    elif MODE == 1:
        w = q
    elif MODE == 2:
        w = q * q
    else:
        w = tl.where(q > 0, tl.exp2(gamma * tl.log2(tl.maximum(q, 1e-38))), 0.0)
    return w


@triton.jit
def _split32(start, BLOCK: tl.constexpr, S, C):
    """(class, target position) of the elements ``start + arange(BLOCK)`` of ``(N, C, S)`` logits
    in memory order: ``c = (e // S) % C``, ``pos = (e // S) // C * S + e % S``.

    64-bit arithmetic once per tile, 32-bit per element (``S`` and ``C`` below ``2**31 - 2 *
    BLOCK``, checked on the host): ``e // S`` on the int64 offsets compiled to a call of the 64-bit
    division routine per element (LVIS: 1203 classes, beyond the row-tile layout)."""
    q0 = start // S
    r0 = (start - q0 * S).to(tl.int32)
    c0 = (q0 % C).to(tl.int32)
    v = r0 + tl.arange(0, BLOCK)
    dq = v // S
    r = v - dq * S
    cq = c0 + dq
    nq = cq // C
    cls = cq - nq * C
    pos = (q0 // C + nq) * S + r
    return cls, pos


@triton.jit
def _sigmoid_fwd_kernel(
    x_ptr,  # [n] logits, fp32/fp16/bf16, memory order
    t_ptr,  # [n] dense target (memory order), or [n // C] class indices (INDEX_TARGET)
    w_ptr,  # element weight: [n] (WEIGHT_MODE 1), [n // w_inner] (2), [1] (3)
    pw_ptr,  # positive weight: [C] per class (PW_MODE 1), [1] (PW_MODE 2)
    loss_ptr,  # [n] fp32 unreduced loss (not REDUCE)
    g_ptr,  # [n] gradient in the logits' dtype (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    d_ptr,  # [1] "mean" denominator on the device (D_PTR)
    go_ptr,  # grad_output: [1] (GO_MODE 1) or [n] in the logits' layout (GO_MODE 2)
    n,
    C,
    S,  # product of the dims after the class dim (index targets / per-class pos_weight)
    w_inner,
    ignore_index,
    s_host,
    p_pos,
    p_neg,
    gamma_pos,
    gamma_neg,
    clip,
    log_eps,
    smooth,
    LOSS: tl.constexpr,
    INDEX_TARGET: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    WEIGHT_MODE: tl.constexpr,
    PW_MODE: tl.constexpr,  # 0 none, 1 per class, 2 one tensor value
    HAS_SMOOTH: tl.constexpr,
    HAS_CLIP: tl.constexpr,
    GMODE_POS: tl.constexpr,
    GMODE_NEG: tl.constexpr,
    DETACH: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_LOSS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    D_PTR: tl.constexpr,
    GO_MODE: tl.constexpr,  # 0 none (forward), 1 scalar, 2 element-wise (backward)
    ROWS: tl.constexpr,
    W_ROWS: tl.constexpr,  # ROWS with a per-row weight (w_inner == C)
    SPLIT32: tl.constexpr,
    TILES: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    if ROWS:
        acc = tl.zeros([BLOCK // BLOCK_C, BLOCK_C], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
    if WRITE_GRAD:
        f = grad_factor(s_host, d_ptr, go_ptr, D_PTR, GO_MODE == 1)
    for it in range(TILES):
        tile = pid.to(tl.int64) * TILES + it
        if ROWS:
            # (rows, C) logits with S == 1: a [BLOCK // BLOCK_C, BLOCK_C] tile gives row and class
            # without integer division.
            rows = tile * (BLOCK // BLOCK_C) + tl.arange(0, BLOCK // BLOCK_C)[:, None]
            cls = tl.arange(0, BLOCK_C)[None, :]
            offs = rows * C + cls
            rm = rows * C < n  # [R, 1]: per-row values (the class index) load once per row
            m = (cls < C) & rm
        else:
            start = tile * BLOCK
            offs = start + tl.arange(0, BLOCK)
            m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)

        # ---- targets ---------------------------------------------------------------------------
        valid = m
        bad = offs < 0  # all False, the tile's shape
        if (INDEX_TARGET or PW_MODE == 1) and not ROWS:
            if SPLIT32:
                cls, pos = _split32(start, BLOCK, S, C)
            else:
                cs = offs // S
                cls = cs % C
                pos = cs // C * S + (offs - cs * S)
        if INDEX_TARGET:
            if ROWS:
                # [R, 1], not broadcast to the tile: a [R, BLOCK_C] gather of the same index got
                # its own layout and cost 4 shared-memory layout conversions (PTX review).
                idx = tl.load(t_ptr + rows, mask=rm, other=0).to(tl.int64)
            else:
                idx = tl.load(t_ptr + pos, mask=m, other=0).to(tl.int64)
            if HAS_IGNORE:
                valid = valid & (idx != ignore_index)
            bad = valid & ((idx < 0) | (idx > C))
            y = tl.where(idx == cls, 1.0, 0.0)
        else:
            traw = tl.load(t_ptr + offs, mask=m, other=0)
            if HAS_IGNORE:
                valid = valid & (traw != ignore_index)
            y = tl.where(valid, traw.to(tl.float32), 0.0)
        if HAS_SMOOTH:
            y = y * (1.0 - smooth) + 0.5 * smooth

        # ---- shared transcendental work: one exp, one log ----------------------------------------
        ax = tl.abs(x)
        e = tl.exp(-ax)  # in (0, 1]
        r = _rcp(1.0 + e)
        p = tl.where(x >= 0, r, e * r)  # sigma(x)
        q1 = tl.where(x >= 0, e * r, r)  # sigma(-x) = 1 - p without cancellation
        sp = tl.where(e < 1e-4, e - 0.5 * e * e, _log(1.0 + e))  # log1p(exp(-|x|))
        log_p = tl.minimum(x, 0.0) - sp  # log sigma(x)
        log_q = tl.minimum(-x, 0.0) - sp  # log sigma(-x)

        if LOSS == 0:  # BCE / balanced BCE: -(a_pos y log p + a_neg (1 - y) log(1 - p))
            a_pos = p_pos
            if PW_MODE == 1:
                a_pos = a_pos * tl.load(pw_ptr + cls, mask=m, other=1.0).to(tl.float32)
            elif PW_MODE == 2:
                a_pos = a_pos * tl.load(pw_ptr).to(tl.float32)
            loss = -(a_pos * y * log_p + p_neg * (1.0 - y) * log_q)
            grad = p_neg * (1.0 - y) * p - a_pos * y * q1
        elif LOSS == 1:  # sigmoid focal (torchvision): alpha_t * ce * (1 - p_t) ** gamma
            # a zero factor adds 0, not 0 * -inf (a logit at -inf with y = 0, +inf with y = 1)
            ce = -(tl.where(y != 0.0, y * log_p, 0.0) + tl.where(y != 1.0, (1.0 - y) * log_q, 0.0))
            q = y * q1 + (1.0 - y) * p  # 1 - p_t
            sgn = 2.0 * y - 1.0
            if GMODE_POS == 0:
                grad = p - y
                loss = ce
            elif GMODE_POS == 2:
                grad = (p - y) * q * q - 2.0 * ce * q * sgn * p * q1
                loss = ce * q * q
            elif GMODE_POS == 1:
                grad = (p - y) * q - ce * sgn * p * q1
                loss = ce * q
            else:
                mod = _gamma_pow(q, gamma_pos, GMODE_POS)
                ratio = tl.where(q > 0, p * q1 / tl.maximum(q, 1e-38), 0.0)  # |dq/q| <= 1
                grad = (p - y) * mod - gamma_pos * ce * mod * sgn * ratio
                loss = ce * mod
            alpha_t = p_pos * y + p_neg * (1.0 - y)
            loss = alpha_t * loss
            grad = alpha_t * grad
        else:  # ASL (Ridnik et al.): clip shifts the negative probability, eps clamps the logs
            if HAS_CLIP:
                xs_neg = tl.minimum(q1 + clip, 1.0)
                unclipped = (q1 + clip) < 1.0
                log_neg_raw = _log(tl.maximum(xs_neg, 1e-38))
                pm = tl.maximum(p - clip, 0.0)  # 1 - xs_neg
                dpm = tl.where(unclipped, p * q1, 0.0)  # d(1 - xs_neg)/dx
            else:
                xs_neg = q1
                log_neg_raw = log_q
                pm = p
                dpm = p * q1
            log_pos = tl.maximum(log_p, log_eps)
            log_neg = tl.maximum(log_neg_raw, log_eps)
            dlog_pos = tl.where(log_p > log_eps, q1, 0.0)
            dlog_neg = tl.where(log_neg_raw > log_eps, -dpm / tl.maximum(xs_neg, 1e-38), 0.0)
            lp = y * log_pos + (1.0 - y) * log_neg
            dlp = y * dlog_pos + (1.0 - y) * dlog_neg
            if GMODE_POS == 0 and GMODE_NEG == 0:
                loss = -lp
                grad = -dlp
            else:
                base = y * q1 + (1.0 - y) * pm  # 1 - p_t
                dbase = (1.0 - y) * dpm - y * p * q1
                g = gamma_pos * y + gamma_neg * (1.0 - y)
                w = tl.where(
                    base > 0,
                    tl.exp2(g * tl.log2(tl.maximum(base, 1e-38))),
                    tl.where(g == 0, 1.0, 0.0),
                )
                loss = -lp * w
                if DETACH:
                    grad = -dlp * w
                else:
                    dw = g * w * tl.where(base > 0, dbase / tl.maximum(base, 1e-38), 0.0)
                    grad = -(dlp * w + lp * dw)

        # ---- weights, masks, outputs -------------------------------------------------------------
        if WEIGHT_MODE == 1:
            wt = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
            loss = loss * wt
            grad = grad * wt
        elif WEIGHT_MODE == 2:
            if ROWS and W_ROWS:
                # a per-row (per-anchor) weight: [R, 1], loaded once per row like the class index
                # (no division, no layout conversion of a broadcast gather)
                wt = tl.load(w_ptr + rows, mask=rm, other=0.0).to(tl.float32)
            else:
                if ROWS:  # noqa: SIM108 (constexpr branch inside a Triton kernel)
                    wrow = offs  # w_inner == 1
                else:
                    wrow = block_div(start, BLOCK, w_inner)  # offs // w_inner
                wt = tl.load(w_ptr + wrow, mask=m, other=0.0).to(tl.float32)
            loss = loss * wt
            grad = grad * wt
        elif WEIGHT_MODE == 3:
            wt = tl.load(w_ptr).to(tl.float32)
            loss = loss * wt
            grad = grad * wt
        loss = tl.where(valid, loss, 0.0)
        loss = tl.where(bad, float("nan"), loss)
        if WRITE_LOSS:
            if REDUCE:
                acc += loss
            else:
                tl.store(loss_ptr + offs, loss, mask=m)
        if WRITE_GRAD:
            grad = tl.where(valid & ~bad, grad, 0.0) * f
            if GO_MODE == 2:
                grad = grad * tl.load(go_ptr + offs, mask=m, other=0.0).to(tl.float32)
            tl.store(g_ptr + offs, grad.to(g_ptr.dtype.element_ty), mask=m)
    if REDUCE and WRITE_LOSS:
        if ROWS:
            tl.store(part_ptr + pid, tl.sum(tl.sum(acc, axis=1), axis=0))
        else:
            tl.store(part_ptr + pid, tl.sum(acc, axis=0))


def _gamma_mode(gamma: float) -> int:
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)


# ints: the launch configuration (``_loss`` builds it; the custom op carries it as int[]).
(
    _KIND,
    _INDEX,
    _C,
    _INNER,
    _WMODE,
    _WINNER,
    _HAS_IGNORE,
    _IGNORE,
    _REDUCE,
    _PW,
    _DETACH,
    _MODE,
) = range(12)
# floats
_S, _D, _PPOS, _PNEG, _GPOS, _GNEG, _CLIP, _LOGEPS, _SMOOTH = range(9)


def _rows_mode(ints: list[int] | tuple[int, ...], block: int) -> tuple[bool, int]:
    c, inner = ints[_C], ints[_INNER]
    block_c = next_pow2(max(c, 1))
    per_class = bool(ints[_INDEX]) or ints[_PW] == 1
    w_ok = ints[_WMODE] != WeightLayout.LEADING or ints[_WINNER] in (1, c)
    return per_class and inner == 1 and block_c <= block and w_ok, block_c


def _fake(x, t, w, a, b, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202, ARG001
    loss = (
        x.new_empty((), dtype=torch.float32)
        if ints[_REDUCE]
        else torch.empty_like(x, dtype=torch.float32)
    )
    return loss, torch.empty_like(x) if write_grad else x.new_empty(0)


def _launch(x, t, w, pw, _b, d, go, ints, floats, write_grad):  # noqa: ANN001, ANN202
    """The kernel launches of one sigmoid loss: ``(loss, grad)`` (``FusedLoss``'s protocol).

    ``loss`` is the fp32 reduced scalar (divided by the ``"mean"`` denominator) when reducing, else
    the fp32 unreduced map in the logits' layout; ``grad`` is d(loss)/d(logits) in the logits'
    dtype and layout, or empty without ``write_grad``. In the backward (``go`` given) the loss is
    not written and ``grad_output`` is folded into the gradient.
    """
    n = x.numel()
    c = ints[_C]
    block = elementwise_block()
    rows_mode, block_c = _rows_mode(ints, block)
    unit = max(block // block_c * c, 1) if rows_mode else block  # elements per tile
    n_tiles = cdiv(n, unit)
    tiles = tiles_per_program(n_tiles)
    n_prog = max(cdiv(n_tiles, tiles), 1)
    reduce, backward = bool(ints[_REDUCE]), go is not None
    dev = x.device
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
    inner = ints[_INNER]
    if n > 0:
        wrap_triton(_sigmoid_fwd_kernel)[(n_prog,)](
            x,
            t,
            w if w is not None else x,
            pw if pw is not None else x,
            loss_map,
            grad if write_grad else x,
            parts,
            d if d is not None else parts,
            go if go is not None else x,
            n,
            c,
            inner,
            ints[_WINNER],
            ints[_IGNORE],
            floats[_S],
            floats[_PPOS],
            floats[_PNEG],
            floats[_GPOS],
            floats[_GNEG],
            floats[_CLIP],
            floats[_LOGEPS],
            floats[_SMOOTH],
            LOSS=ints[_KIND],
            INDEX_TARGET=bool(ints[_INDEX]),
            HAS_IGNORE=bool(ints[_HAS_IGNORE]),
            WEIGHT_MODE=ints[_WMODE],
            PW_MODE=ints[_PW],
            HAS_SMOOTH=floats[_SMOOTH] > 0,
            HAS_CLIP=floats[_CLIP] > 0,
            GMODE_POS=_gamma_mode(floats[_GPOS]),
            GMODE_NEG=_gamma_mode(floats[_GNEG]),
            DETACH=bool(ints[_DETACH]),
            REDUCE=reduce,
            WRITE_LOSS=not backward,
            WRITE_GRAD=write_grad,
            D_PTR=mode > 0 and d is not None,
            GO_MODE=go_mode,
            ROWS=rows_mode,
            W_ROWS=rows_mode and ints[_WINNER] == c and c > 1,
            SPLIT32=max(inner, c) < 2**31 - 2 * block,
            TILES=tiles,
            BLOCK=block,
            BLOCK_C=block_c if rows_mode else 1,
            num_warps=elementwise_warps(),
        )
    if backward:
        return x.new_empty(0, dtype=torch.float32), grad
    if not reduce:
        return loss_map, grad
    if n == 0:
        parts = torch.zeros(1, dtype=torch.float32, device=dev)
    return finish_sum(parts, d, floats[_D], mode), grad


SIGMOID = declare("sigmoid", _launch, _fake)


# --------------------------------------------------------------------------------------------------
# Host side: map the reference's arguments onto the kernel.
# --------------------------------------------------------------------------------------------------


def _layout(logits: Tensor) -> tuple[int, int]:
    """(C, inner): the class count and the product of the dims after the class dim."""
    if logits.ndim == 0:
        return 1, 1
    cdim = 1 if logits.ndim >= 2 else 0
    return logits.shape[cdim], math.prod(logits.shape[cdim + 1 :])


def _reason(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, **params: Any
) -> str | None:
    """Why the kernel cannot serve this case, or None when it can."""
    if "beta" in params and params["beta"] is None:
        return "beta=None (the per-sample beta is not fused)"
    pos_weight = params.get("pos_weight")
    if isinstance(pos_weight, Tensor) and pos_weight.numel() > 1:
        # The kernel indexes a pos_weight vector by class: PyTorch's last-dim broadcast only for a
        # (C,)-like vector on logits with at most 2 dims.
        c = logits.shape[1 if logits.ndim >= 2 else 0] if logits.ndim else 1
        if logits.ndim > 2 or pos_weight.numel() != c or pos_weight.shape[-1] != c:
            return f"pos_weight of shape {tuple(pos_weight.shape)}"
    if logits.dtype not in KERNEL_DTYPES:
        return f"logits dtype {logits.dtype} (the kernel takes float32/float16/bfloat16)"
    if target.is_complex() or (target.is_floating_point() and target.dtype == torch.float64):
        return f"target dtype {target.dtype}"
    if weight is not None and (weight.is_complex() or weight.dtype == torch.float64):
        return f"weight dtype {weight.dtype}"
    return None


def _loss(
    logits: Tensor,
    target: Tensor,
    *,
    kind: str,
    index_target: bool,
    weight: WeightLayout,
    ignore_index: int | None,
    reduce: bool,
    denom: Denominator | None,
    pos_weight: Tensor | float | None = None,
    label_smoothing: float = 0.0,
    alpha: float | None = None,
    gamma: float = 0.0,
    gamma_pos: float = 0.0,
    gamma_neg: float = 0.0,
    clip: float = 0.0,
    eps: float = 0.0,
    beta: float = 0.5,
    detach_focal_weight: bool = False,
) -> Tensor:
    """Run one sigmoid loss through the fused kernel (validated and routed by
    ``lossforge._pipeline.sigmoid``).

    Args:
        kind: ``"bce"`` | ``"balanced_bce"`` | ``"focal"`` | ``"asl"``.
        index_target: ``target`` holds class indices (the logits' shape without the class dim).
        weight: The element weight's layout (``lossforge._reduction.weight_layout``).
        reduce: ``False`` for ``reduction="none"``.
        denom: The ``"mean"`` denominator, ``None`` for ``"sum"`` / ``"none"``.
        pos_weight: A host number (a kernel constant), a one-element tensor or a ``(C,)`` tensor.
        beta: ``balanced_bce`` only: positives weigh ``beta``, negatives ``1 - beta``.
        Everything else as in the reference functionals.

    Returns:
        The fp32 loss: a scalar, or the logits' shape for ``reduce=False``.
    """
    kid = _KINDS[kind]
    c, inner = _layout(logits)
    x = logits
    t = target
    if t.dtype == torch.bool:
        t = t.view(torch.uint8)
    w = weight.tensor
    weight_mode, w_inner = weight.mode, 1
    if index_target:
        x = x.contiguous()
        t = t.contiguous()
        if w is not None and weight_mode == WeightLayout.FULL:
            w = w.contiguous()
    elif w is not None and weight_mode == WeightLayout.FULL:
        x, t, w = same_layout(x, t, w)
    else:
        x, t = same_layout(x, t)
    if w is not None and weight_mode == WeightLayout.LEADING:
        w = w.contiguous()
        w_inner = weight.inner
        if not x.is_contiguous():
            x, t = x.contiguous(), t.contiguous()
    pw, pw_mode = None, 0
    p_pos, p_neg = 1.0, 1.0
    if kid == BCE:
        if kind == "balanced_bce":
            p_pos, p_neg = float(beta), 1.0 - float(beta)
        elif isinstance(pos_weight, Tensor):
            if pos_weight.numel() == 1:
                pw, pw_mode = pos_weight.reshape(1), 2
            else:
                pw, pw_mode = pos_weight.reshape(-1).contiguous(), 1
        elif pos_weight is not None:
            p_pos = float(pos_weight)
        if pw_mode == 1 and not index_target and not x.is_contiguous():
            x, t = x.contiguous(), t.contiguous()
            if w is not None and weight_mode == WeightLayout.FULL:
                w = w.contiguous()
    elif kid == FOCAL and alpha is not None:
        p_pos, p_neg = float(alpha), 1.0 - float(alpha)

    mode, s, d, d_t = denominator_args(denom)
    ints = (
        kid,
        int(index_target),
        c,
        inner,
        weight_mode,
        w_inner,
        int(ignore_index is not None),
        0 if ignore_index is None else int(ignore_index),
        int(reduce),
        pw_mode,
        int(bool(detach_focal_weight)),
        mode,
    )
    floats = (
        s,
        d,
        p_pos,
        p_neg,
        float(gamma if kid == FOCAL else gamma_pos),
        float(gamma_neg),
        float(clip),
        math.log(eps) if eps > 0 else -1e30,
        float(label_smoothing),
    )
    return run(
        SIGMOID,
        x,
        t,
        w,
        pw,
        None,
        d_t,
        ints,
        floats,
        reduced=reduce,
        grad_in_backward=logits.dtype == torch.float16,
    )
