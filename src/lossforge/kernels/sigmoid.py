"""One fused kernel for the element-wise sigmoid losses: BCE with logits (+ ``pos_weight``, label
smoothing), balanced BCE with a given ``beta``, sigmoid focal, and ASL, switched by a constexpr.

Design (PERFORMANCE.md sections 1, 2.2-2.5, 5):

* One launch per direction. The forward reads the logits and targets once, writes the gradient of
  the reduced loss (in the logits' dtype) and one fp32 partial sum per program; a one-program kernel
  adds the partials in a fixed order (deterministic, no atomics). The backward is the predicate
  kernel of ``_common`` (nothing to do when ``grad_output == 1``). Extra memory: the gradient
  buffer.
* Targets: dense (float soft labels, bool, integers; ``ignore_index`` marks elements) or class
  indices of the logits' shape without dim 1 (``k`` positive, ``C`` background, ``ignore_index``
  drops the row) read as indices: the one-hot never exists.
* Math in fp32 from one ``exp(-|x|)``: sigma(x), sigma(-x), log-sigmoid of both signs. The focal
  derivative is written as ``gamma * q**gamma * (dq/q)`` with ``|dq/q| <= 1``, so 0 < gamma < 1
  stays
  finite at saturation; gamma in {0, 1, 2} uses multiplies, other gamma ``exp2(gamma * log2 q)``.
* ``mean`` divides by the valid count, ``avg_factor`` (float or device tensor, no sync), and 0 valid
  elements give exactly 0 with zero gradients.
"""

from __future__ import annotations

import math
from typing import Any

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
    fast_math,
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
def _sigmoid_fwd_kernel(
    x_ptr,  # [n] logits, fp32/fp16/bf16, memory order
    t_ptr,  # [n] dense target (memory order), or [n // C] class indices (INDEX_TARGET)
    w_ptr,  # element weight: [n] (WEIGHT_MODE 1), [n // w_inner] (2), [1] (3)
    pw_ptr,  # [C] per-class positive weight (HAS_PW)
    loss_ptr,  # [n] fp32 unreduced loss (not REDUCE)
    g_ptr,  # [n] gradient in the logits' dtype (WRITE_GRAD)
    part_ptr,  # [num_programs] fp32 partial sums (REDUCE)
    scale_ptr,  # [1] fp32 mean scale on the device (SCALE_FROM_PTR)
    n,
    C,
    S,  # product of the dims after the class dim (index targets / per-class pos_weight)
    w_inner,
    ignore_index,
    scale,
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
    HAS_PW: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    HAS_CLIP: tl.constexpr,
    GMODE_POS: tl.constexpr,
    GMODE_NEG: tl.constexpr,
    DETACH: tl.constexpr,
    REDUCE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    SCALE_FROM_PTR: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    if ROWS:
        # (rows, C) logits with S == 1: a [BLOCK // BLOCK_C, BLOCK_C] tile gives row and class
        # without integer division.
        rows = pid.to(tl.int64) * (BLOCK // BLOCK_C) + tl.arange(0, BLOCK // BLOCK_C)[:, None]
        cls = tl.arange(0, BLOCK_C)[None, :]
        offs = rows * C + cls
        rm = rows * C < n  # [R, 1]: per-row values (the class index) load once per row
        m = (cls < C) & rm
    else:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)

    # ---- targets -------------------------------------------------------------------------------
    valid = m
    bad = offs < 0  # all False, the tile's shape
    if (INDEX_TARGET or HAS_PW) and not ROWS:
        cs = offs // S
        cls = cs % C
    if INDEX_TARGET:
        if ROWS:
            # [R, 1], not broadcast to the tile: a [R, BLOCK_C] gather of the same index got its
            # own layout and cost 4 shared-memory layout conversions (PTX review).
            idx = tl.load(t_ptr + rows, mask=rm, other=0).to(tl.int64)
        else:
            pos = cs // C * S + (offs - cs * S)
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

    # ---- shared transcendental work: one exp, one log --------------------------------------------
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
        if HAS_PW:
            a_pos = a_pos * tl.load(pw_ptr + cls, mask=m, other=1.0).to(tl.float32)
        loss = -(a_pos * y * log_p + p_neg * (1.0 - y) * log_q)
        grad = p_neg * (1.0 - y) * p - a_pos * y * q1
    elif LOSS == 1:  # sigmoid focal (torchvision): alpha_t * ce * (1 - p_t) ** gamma
        ce = -(y * log_p + (1.0 - y) * log_q)
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
                base > 0, tl.exp2(g * tl.log2(tl.maximum(base, 1e-38))), tl.where(g == 0, 1.0, 0.0)
            )
            loss = -lp * w
            if DETACH:
                grad = -dlp * w
            else:
                dw = g * w * tl.where(base > 0, dbase / tl.maximum(base, 1e-38), 0.0)
                grad = -(dlp * w + lp * dw)

    # ---- weights, masks, outputs -----------------------------------------------------------------
    if WEIGHT_MODE == 1:
        wt = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
        loss = loss * wt
        grad = grad * wt
    elif WEIGHT_MODE == 2:
        if ROWS:  # noqa: SIM108 (constexpr branch inside a Triton kernel)
            wrow = offs // w_inner
        else:
            wrow = block_div(pid.to(tl.int64) * BLOCK, BLOCK, w_inner)  # offs // w_inner
        wt = tl.load(w_ptr + wrow, mask=m, other=0.0).to(tl.float32)
        loss = loss * wt
        grad = grad * wt
    elif WEIGHT_MODE == 3:
        wt = tl.load(w_ptr).to(tl.float32)
        loss = loss * wt
        grad = grad * wt
    loss = tl.where(valid, loss, 0.0)
    loss = tl.where(bad, float("nan"), loss)
    grad = tl.where(valid & ~bad, grad, 0.0)
    if REDUCE:
        if ROWS:
            tl.store(part_ptr + pid, tl.sum(tl.sum(loss, axis=1), axis=0))
        else:
            tl.store(part_ptr + pid, tl.sum(loss, axis=0))
        if WRITE_GRAD:
            grad = grad * tl.load(scale_ptr) if SCALE_FROM_PTR else grad * scale
            tl.store(g_ptr + offs, grad.to(g_ptr.dtype.element_ty), mask=m)
    else:
        tl.store(loss_ptr + offs, loss, mask=m)
        if WRITE_GRAD:
            tl.store(g_ptr + offs, grad.to(g_ptr.dtype.element_ty), mask=m)


def _gamma_mode(gamma: float) -> int:
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)


@triton_op("lossforge::sigmoid_fwd", mutates_args=())
def sigmoid_fwd(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    scale_t: Tensor | None,
    kind: int,
    index_target: bool,
    num_classes: int,
    inner: int,
    weight_mode: int,
    w_inner: int,
    ignore_index: int | None,
    reduce: bool,
    scale: float,
    p_pos: float,
    p_neg: float,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    eps: float,
    label_smoothing: float,
    detach: bool,
    write_grad: bool,
    d: float,
    mode: int,
) -> tuple[Tensor, Tensor]:
    """Forward of every sigmoid loss: returns ``(loss, grad)``.

    ``loss`` is the fp32 reduced scalar when ``reduce`` (already divided by the mean scale), else
    the
    fp32 unreduced map in the logits' layout. ``grad`` is d(loss)/d(logits) in the logits' dtype and
    layout (scaled like the loss when ``reduce``), or an empty tensor when ``write_grad`` is False.
    """
    n = logits.numel()
    block = elementwise_block()
    block_c = triton.next_power_of_2(max(num_classes, 1))
    rows_mode = (index_target or pos_weight is not None) and inner == 1 and block_c <= block
    if rows_mode:
        n_prog = triton.cdiv(n // max(num_classes, 1), block // block_c)
    else:
        n_prog = triton.cdiv(n, block)
    dev = logits.device
    grad = torch.empty_like(logits) if write_grad else logits.new_empty(0)
    if reduce:
        parts = torch.empty(max(n_prog, 1), dtype=torch.float32, device=dev)
        loss_map = parts  # unused
    else:
        parts = logits.new_empty(0, dtype=torch.float32)
        loss_map = torch.empty_like(logits, dtype=torch.float32)
    if n > 0:
        wrap_triton(_sigmoid_fwd_kernel)[(n_prog,)](
            logits,
            target,
            weight if weight is not None else logits,
            pos_weight if pos_weight is not None else logits,
            loss_map,
            grad if write_grad else logits,
            parts,
            scale_t if scale_t is not None else parts,
            n,
            num_classes,
            inner,
            w_inner,
            ignore_index if ignore_index is not None else 0,
            scale,
            p_pos,
            p_neg,
            gamma_pos,
            gamma_neg,
            clip,
            math.log(eps) if eps > 0 else -1e30,
            label_smoothing,
            LOSS=kind,
            INDEX_TARGET=index_target,
            HAS_IGNORE=ignore_index is not None,
            WEIGHT_MODE=weight_mode,
            HAS_PW=pos_weight is not None,
            HAS_SMOOTH=label_smoothing > 0,
            HAS_CLIP=clip > 0,
            GMODE_POS=_gamma_mode(gamma_pos),
            GMODE_NEG=_gamma_mode(gamma_neg),
            DETACH=detach,
            REDUCE=reduce,
            WRITE_GRAD=write_grad,
            SCALE_FROM_PTR=scale_t is not None,
            ROWS=rows_mode,
            BLOCK=block,
            BLOCK_C=block_c if rows_mode else 1,
            num_warps=elementwise_warps(),
        )
    elif reduce:
        parts.zero_()
    if reduce:
        return finish_sum(parts, scale_t, d, mode), grad
    return loss_map, grad


def _setup_context(ctx, inputs, output) -> None:
    ctx.reduce = inputs[12]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    return (backward_scaled(grad, grad_loss, ctx.reduce),) + (None,) * 24


sigmoid_fwd.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------
# Host side: map the reference's arguments onto the op.
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
    pw = None
    p_pos, p_neg = 1.0, 1.0
    if kid == BCE:
        if kind == "balanced_bce":
            p_pos, p_neg = float(beta), 1.0 - float(beta)
        elif isinstance(pos_weight, Tensor):
            if pos_weight.numel() == 1:
                pw = pos_weight.reshape(1).expand(c).contiguous()
            else:
                pw = pos_weight.reshape(-1).contiguous()
        elif pos_weight is not None:
            p_pos = float(pos_weight)
        if pw is not None and not index_target and not x.is_contiguous():
            x, t = x.contiguous(), t.contiguous()
            if w is not None and weight_mode == WeightLayout.FULL:
                w = w.contiguous()
    elif kid == FOCAL and alpha is not None:
        p_pos, p_neg = float(alpha), 1.0 - float(alpha)

    scale, scale_t, d, mode = denominator_args(denom)
    write_grad = logits.requires_grad and torch.is_grad_enabled()
    loss, _ = torch.ops.lossforge.sigmoid_fwd(
        x,
        t,
        w,
        pw,
        scale_t,
        kid,
        index_target,
        c,
        inner,
        weight_mode,
        w_inner,
        ignore_index,
        reduce,
        scale,
        p_pos,
        p_neg,
        float(gamma if kid == FOCAL else gamma_pos),
        float(gamma_neg),
        float(clip),
        float(eps),
        float(label_smoothing),
        bool(detach_focal_weight),
        write_grad,
        d,
        mode,
    )
    return loss  # type: ignore[no-any-return]
