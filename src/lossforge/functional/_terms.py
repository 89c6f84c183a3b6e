r"""Element-wise loss terms that several families share.

No loss file imports another family's private helpers (issue #10): a term that more than one
family needs lives here, and each family's file keeps its signature, docstring and options.

* The focal term $\varphi(l) = -(1 - e^l)^\gamma\, l$ of a log-probability (bounded derivative;
  ``focal.py``'s module docstring gives the numerics) and the element-wise sigmoid focal loss with
  its closed form: sigmoid and softmax focal (``focal.py``), poly-1 focal (``long_tail.py``).
* PyTorch's softmax cross-entropy per position: cross-entropy and NLL (``classification.py``),
  OHEM cross-entropy (``ohem.py``), LDAM, seesaw and poly-1 cross-entropy (``long_tail.py``).
* The ``pos_weight`` argument of the BCE family: BCE with logits and the sigmoid focal options.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossforge._checks import compute_dtype, fail, host_vector, is_ndarray, value_checks_on
from lossforge._pipeline import SoftmaxInput, Total
from lossforge._targets import DenseTarget, class_view
from lossforge.functional._closed_form import (
    ClosedForm,
    closed_form_loss,
    has_tangent,
    scale_of,
    upcast,
)

# --------------------------------------------------------------------------------------------------
# The focal term phi(l) = -(1 - e^l)^gamma * l of a log-probability l <= 0 (bounded derivative).
# --------------------------------------------------------------------------------------------------


def _one_minus_exp(log_p: Tensor) -> Tensor:
    # 1 - p = -expm1(log p): relative precision where p is close to 1. Clamped at 0 against a
    # log-probability that rounded to a tiny positive value.
    return (-torch.expm1(log_p)).clamp(min=0.0)


def _focal_term_grad(log_p: Tensor, gamma: float) -> Tensor:
    """phi'(l) = (1 - e^l)^gamma * (gamma * r(l) - 1), r(l) = l e^l / (1 - e^l) in [-1, 0]."""
    q = _one_minus_exp(log_p)
    positive = q > 0
    # Safe denominator first (no NaN from the unused branch); r -> -1 as l -> 0 (p_t -> 1) and
    # r -> 0 as l -> -inf (l e^l is 0 * -inf there: NaN only then, or for a NaN l, whose q^gamma
    # keeps the result NaN).
    r = torch.where(
        positive, log_p * torch.exp(log_p) / torch.where(positive, q, torch.ones_like(q)), -1.0
    )
    return q.pow(gamma) * (gamma * r.nan_to_num(nan=0.0) - 1.0)


class _FocalTerm(torch.autograd.Function):
    """phi(l) = -(1 - e^l)^gamma * l with the closed-form derivative (finite for every gamma >= 0).

    The backward is written with differentiable operations, so second derivatives work away from
    exact saturation. Its forward is plain tensor operations, so ``torch.func`` transforms
    (``vmap``, ``jacrev``, ``jacfwd``, per-sample gradients) use the generated vmap rule.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(log_p: Tensor, gamma: float) -> Tensor:
        return -_one_minus_exp(log_p).pow(gamma) * log_p

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float], output: Tensor) -> None:
        log_p, gamma = inputs
        ctx.gamma = gamma
        ctx.save_for_backward(log_p)
        ctx.save_for_forward(log_p)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (log_p,) = ctx.saved_tensors
        return grad * _focal_term_grad(log_p, ctx.gamma), None


class _FocalTermWithJvp(_FocalTerm):
    """``_FocalTerm`` plus forward-mode AD. Kept separate because dynamo does not trace a custom
    ``jvp`` (a graph break): compiled code uses ``_FocalTerm``, eager code this class."""

    @staticmethod
    def jvp(ctx: Any, log_p_t: Tensor, _gamma_t: None) -> Tensor:
        (log_p,) = ctx.saved_tensors
        return log_p_t * _focal_term_grad(log_p, ctx.gamma)


def _focal_term_composite(log_p: Tensor, _unused: Tensor, *, gamma: float) -> Tensor:
    if torch.compiler.is_exporting():
        # torch.export records a custom Function's forward in place of its backward: the
        # formula itself, with a derivative that stays finite at saturation.
        return _focal_term_traced(log_p, gamma)
    if torch.compiler.is_compiling():
        return _FocalTerm.apply(log_p, gamma)
    return _FocalTermWithJvp.apply(log_p, gamma)


def _focal_term_traced(log_p: Tensor, gamma: float) -> Tensor:
    """phi(l) with differentiable operations only, for tracers that differentiate the formula:
    at ``1 - e^l = 0`` (a saturated, correct prediction) ``q^gamma`` is taken of a stand-in 1 and
    replaced by 0, so its derivative there is 0 (the limit of phi') instead of ``inf * 0`` for
    ``0 < gamma < 1``."""
    q = _one_minus_exp(log_p)
    positive = q > 0
    qg = torch.where(positive, torch.where(positive, q, 1.0).pow(gamma), 0.0)
    return -qg * log_p


def _focal_term_closed(
    log_p: Tensor, _unused: Tensor, need_grad: bool, *, gamma: float
) -> tuple[Tensor, Tensor | None]:
    r"""phi(l) and phi'(l) sharing 1 - e^l and its power (see ``_focal_term_grad``).

    For $\gamma \ge 1$: $\varphi'(l) = q^{\gamma - 1} (\gamma\, p\, l - q)$ with $p = e^l$,
    $q = 1 - p$; both terms in the parentheses are $\le 0$ (no cancellation) and $q^{\gamma - 1}$
    is bounded: 10 element-wise operations for $\gamma = 2$, against 17 for the general form
    (on the per-position terms of a softmax focal loss each operation's fixed cost is most of the
    time). At $l = -\infty$ (a masked class) $p\, l$ is 0 and $\varphi' = -1$.
    """
    if gamma < 1.0:
        return _focal_term_closed_small(log_p, gamma, need_grad)
    neg_q = torch.expm1(log_p).clamp_(max=0.0)  # -(1 - p), relative precision near p = 1
    q = neg_q.neg()
    qg1 = None if gamma == 1.0 else q if gamma == 2.0 else q.pow(gamma - 1.0)
    loss = torch.mul(log_p, neg_q) if qg1 is None else torch.mul(qg1, log_p).mul_(neg_q)
    if not need_grad:
        return loss, None
    # p l is 0 * -inf = NaN only at l = -inf (0 there); a NaN l stays NaN through neg_q
    pl = torch.exp(log_p).mul_(log_p).nan_to_num_(nan=0.0)
    grad = torch.add(neg_q, pl, alpha=gamma)
    return loss, grad if qg1 is None else grad.mul_(qg1)


def _focal_term_closed_small(
    log_p: Tensor, gamma: float, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """``_focal_term_closed`` for 0 < gamma < 1, where q^(gamma - 1) is unbounded at q = 0:
    phi'(l) = q^gamma (gamma r - 1) with r = l e^l / q in [-1, 0]."""
    q = _one_minus_exp(log_p)
    qg = q.pow(gamma)
    loss = torch.mul(qg, log_p).neg_()
    if not need_grad:
        return loss, None
    positive = q > 0
    r = torch.exp(log_p).mul_(log_p).div_(torch.where(positive, q, 1.0))
    # r -> -1 as l -> 0; r -> 0 as l -> -inf (a class masked out of a softmax, where l e^l is
    # 0 * -inf; a NaN l keeps the result NaN through q^gamma)
    r = torch.where(positive, r, -1.0).nan_to_num_(nan=0.0)
    return loss, r.mul_(gamma).sub_(1.0).mul_(qg)


def focal_term(log_p: Tensor, gamma: float) -> Tensor:
    """-(1 - p)^gamma log p from log p; gamma = 0 is exactly the cross-entropy term -log p.

    The value and its derivative are computed together (``ElementwiseLoss``: no per-call
    ``setup_context`` binding, no backward recomputation); ``_FocalTerm`` is the composite used
    for second derivatives, forward-mode AD and functorch transforms.
    """
    if gamma == 0.0:
        return -log_p
    spec = ClosedForm(
        partial(_focal_term_closed, gamma=gamma), partial(_focal_term_composite, gamma=gamma)
    )
    return closed_form_loss(log_p, log_p.detach(), spec)


class _FocalNllTotal(torch.autograd.Function):
    """``sum(phi(-nll)) / divisor`` of NLL values (``-log p_t``, 0 at ignored positions) with the
    derivative computed in the forward (``_focal_term_closed``) and kept (one value per position):
    one autograd node where ``focal_term`` plus the reduction make five (negation, element-wise
    term, sum, division), each of which costs more than its arithmetic on these small vectors."""

    @staticmethod
    def forward(ctx: Any, nll: Tensor, gamma: float, divisor: float) -> Tensor:
        loss, grad = _focal_term_closed(nll.neg(), nll, True, gamma=gamma)
        ctx.set_materialize_grads(False)
        ctx.gamma = gamma
        ctx.divisor = divisor
        ctx.save_for_backward(nll, grad)
        total = loss.sum()
        return total if divisor == 1.0 else total / divisor

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor | None) -> tuple[Tensor | None, None, None]:
        if grad_total is None:
            return None, None, None
        nll, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the composite
            with torch.enable_grad():
                total = _focal_term_composite(nll.neg(), nll, gamma=ctx.gamma).sum() / ctx.divisor
                (g,) = torch.autograd.grad(total, nll, grad_total, create_graph=True)
            return g, None, None
        # d/d nll = -phi'(-nll) / divisor
        return torch.mul(grad, scale_of(grad_total, -1.0 / ctx.divisor)), None, None


def focal_nll_total(nll: Tensor, divisor: float, gamma: float) -> Tensor:
    """``sum(-(1 - p)^gamma log p) / divisor`` from NLL values ``-log p`` (0 at an ignored
    position, which adds 0): the reduced focal term of the positions of a softmax focal loss
    (``_pipeline.softmax``'s ``nll_term``). One autograd node (``_FocalNllTotal``) when the NLL
    values need a gradient; ``focal_term`` under forward-mode AD and functorch transforms."""
    if gamma == 0.0:
        total = nll.sum()
        return total if divisor == 1.0 else total / divisor
    if (
        nll.requires_grad
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and not has_tangent(nll)
    ):
        return cast(Tensor, _FocalNllTotal.apply(nll, gamma, divisor))
    total = focal_term(nll.neg(), gamma).sum()
    return total if divisor == 1.0 else total / divisor


def _log_or_neg_inf(v: Tensor) -> Tensor:
    """log v with log 0 = -inf exactly and a zero (not NaN) gradient at v = 0."""
    positive = v > 0
    return torch.where(
        positive, torch.log(torch.where(positive, v, torch.ones_like(v))), float("-inf")
    )


def _sigmoid_focal_unweighted(z: Tensor, y: Tensor, gamma: float, hard: bool) -> Tensor:
    """ce(z, y) * (1 - p_t)^gamma, element-wise, without alpha (see the module docstring)."""
    if gamma == 0.0:
        # Exactly the element-wise term of ``binary_cross_entropy_with_logits`` (PyTorch's kernel).
        return TF.binary_cross_entropy_with_logits(z, y, reduction="none")
    if hard:
        # y in {0, 1}: log p_t = logsigmoid(+-z), one transcendental per element.
        return focal_term(TF.logsigmoid(torch.where(y > 0.5, z, -z)), gamma)
    log_p, log_q = TF.logsigmoid(z), TF.logsigmoid(-z)
    ce = -(y * log_p + (1.0 - y) * log_q)
    if gamma >= 1.0:
        # 1 - p_t = y sigma(-z) + (1 - y) sigma(z) (torchvision / mmdet soft form), no cancellation;
        # d/dq q^gamma = gamma q^(gamma - 1) is finite for gamma >= 1.
        one_minus_pt = y * torch.sigmoid(-z) + (1.0 - y) * torch.sigmoid(z)
        return ce * one_minus_pt.pow(gamma)
    # 0 < gamma < 1: (1 - p_t)^gamma = exp(gamma log(1 - p_t)) with a bounded d/dz log(1 - p_t).
    log_one_minus_pt = torch.logaddexp(_log_or_neg_inf(y) + log_q, _log_or_neg_inf(1.0 - y) + log_p)
    return ce * torch.exp(gamma * log_one_minus_pt)


def _alpha_t(y: Tensor, alpha: float) -> Tensor:
    """alpha y + (1 - alpha)(1 - y): the class-balance factor of the sigmoid focal loss.

    Written as two products, exact at y = 0 and y = 1 (the one-product form y (2 alpha - 1) +
    (1 - alpha) cancels to an absolute error of an ulp of 1, all of a tiny alpha)."""
    a_t = y * alpha
    return a_t.add_((1.0 - y).mul_(1.0 - alpha))  # in place: one temporary, not three


def sigmoid_focal_composite(
    z: Tensor, y: Tensor, *, gamma: float, alpha: float | None, hard: bool
) -> Tensor:
    """The sigmoid focal loss element-wise (the specification; autograd differentiates it)."""
    loss = _sigmoid_focal_unweighted(z, y, gamma, hard)
    return loss if alpha is None else loss * _alpha_t(y, alpha)


def sigmoid_focal_closed(
    z: Tensor, y: Tensor, need_grad: bool, *, gamma: float, alpha: float | None, hard: bool
) -> tuple[Tensor, Tensor | None]:
    r"""The loss and $\partial\ell/\partial z$ together (no autograd), finite for every gamma.

    With $p = \sigma(z)$, $q = \sigma(-z)$, $m = 1 - p_t = y q + (1 - y) p$ and
    $\operatorname{ce} = -y \log p - (1 - y) \log q$:
    $\partial\ell/\partial z = \alpha_t m^\gamma \bigl[((1 - y) p - y q)
    + \gamma \operatorname{ce}\,(pq/m)\,(1 - 2y)\bigr]$, where $pq/m$ is $p$ for $y = 1$ and
    $q$ for $y = 0$ (bounded; it is set to 1 where $m$ underflows to 0, then $m^\gamma = 0$
    for $\gamma > 0$). Hard targets use $s = \pm z$, $p_t = \sigma(s)$:
    $\partial\ell/\partial s = m^\gamma (\gamma\, p_t \log p_t - m)$.
    """
    # In-place arithmetic on fresh temporaries (this runs under no-grad) keeps the peak low.
    if hard:
        # y in {0, 1}: s = +-z (z at a positive, -z at a negative; the sign is 2y - 1, exact),
        # log p_t = log sigma(s) in one pass (softplus with beta = -1; above its threshold it
        # returns s, whose error e^s is below the ulp of s in float64 too). Every temporary after
        # the first two is formed in place: the fewest allocations (each a page-faulting pass on a
        # small CPU call, where this path is host-bound).
        sign = y.mul(2.0).sub_(1.0)
        s = z * sign
        log_pt = TF.softplus(s, beta=-1.0, threshold=40.0)
        # p_t from a sigmoid pass, not exp(log p_t): as accurate where p_t is tiny (exp would
        # magnify log p_t's rounding by |log p_t|), and about half the cost of exp on the CPU.
        p_t = torch.sigmoid(s) if need_grad else None
        m = s.neg_().sigmoid_()  # 1 - p_t without cancellation
        del s
        mg = m.pow(gamma)
        grad = None
        if p_t is not None:  # d loss / d s, then times ds/dz = sign
            grad = p_t.mul_(log_pt).mul_(gamma).sub_(m).mul_(mg).mul_(sign)
        del m, p_t
        loss = log_pt.mul_(mg).neg_()
        del log_pt, mg, sign
        return _times_alpha_t(loss, grad, y, alpha)
    # Soft targets: sigma(+-z) from two sigmoid passes (each with full relative precision, also
    # where it underflows), log1p(e^-|z|) from one softplus pass, and the cross-entropy as
    # non-negative terms, y relu(-z) + (1 - y) relu(z) + log1p(e^-|z|): no cancellation.
    # (An earlier form took sigma(+-z) from e = exp(-|z|) and picked p and q with two torch.where
    # on a z >= 0 mask: 2.5x slower on the CPU, where where and comparisons are the slowest
    # element-wise kernels; the float32 errors against float64 are the same.)
    ny = 1.0 - y
    p = torch.sigmoid(z)
    q = torch.sigmoid(z.neg())
    ce = torch.relu(z).mul_(ny)
    ce.addcmul_(torch.clamp(z, max=0.0).neg_(), y).add_(TF.softplus(z.abs().neg_()))
    m = q * y
    m.addcmul_(p, ny)
    mg = m.pow(gamma)
    loss = ce * mg
    if not need_grad:
        return _times_alpha_t(loss, None, y, alpha)
    # p q / m is at most 1; where m underflowed to 0 it is 0/0, set to 1 (any finite value: m^gamma
    # = 0 there for gamma > 0). A NaN logit still gives NaN through ce, p and m^gamma.
    ratio = torch.mul(p, q).div_(m).nan_to_num_(nan=1.0, posinf=math.inf, neginf=-math.inf)
    del m
    focus = ce.mul_(ratio).mul_(gamma).mul_(ny - y)  # gamma ce (pq/m)(1 - 2y)
    del ratio
    # p - y as (1 - y) p - y q: no cancellation where p rounds to 1.
    grad = p.mul_(ny).sub_(q.mul_(y)).add_(focus).mul_(mg)
    return _times_alpha_t(loss, grad, y, alpha)


def _times_alpha_t(
    loss: Tensor, grad: Tensor | None, y: Tensor, alpha: float | None
) -> tuple[Tensor, Tensor | None]:
    if alpha is not None:
        a_t = _alpha_t(y, alpha)
        loss.mul_(a_t)
        if grad is not None:
            grad.mul_(a_t)
    return loss, grad


def binary_values(y: Tensor) -> bool:
    """Whether a float target holds only the values 0 and 1, read on the CPU (a host read without
    a device sync): then the hard-target form of the focal loss is exact and about twice as fast
    as the soft one (one log-sigmoid and two sigmoid passes of ``(2y - 1) z`` against the soft
    form's exp, log1p and mixing), for three cheap passes here. Never while ``torch.compile``
    traces, under ``torch.func`` transforms, off the CPU, or for a target that requires grad (the
    soft formulas carry its gradient). ``y (y - 1)`` is exactly 0 only at 0 and 1 (NaN counts
    as not)."""
    if (
        not y.is_cpu
        or y.requires_grad
        or y.numel() == 0
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
    ):
        return False
    return not bool(torch.mul(y, y - 1.0).any())


def sigmoid_focal(
    x: Tensor, t: DenseTarget, want_total: bool, *, gamma: float, alpha: float | None
) -> Tensor:
    hard = t.binary or (gamma != 0.0 and binary_values(t.target))
    opts: dict[str, Any] = {"gamma": gamma, "alpha": alpha, "hard": hard}
    spec = ClosedForm(
        upcast(partial(sigmoid_focal_closed, **opts)), partial(sigmoid_focal_composite, **opts)
    )
    if gamma == 0.0:
        # exactly binary_cross_entropy_with_logits (PyTorch's fused kernel), times alpha
        return spec.composite(x.to(compute_dtype(x)), t.target)
    return closed_form_loss(x, t.target, spec)


# --------------------------------------------------------------------------------------------------
# PyTorch's softmax cross-entropy per position
# --------------------------------------------------------------------------------------------------


def softmax_ce(
    inp: SoftmaxInput, want_total: bool, *, eps: float, log_softmax: bool
) -> Tensor | Total:
    """Cross-entropy / NLL per position, PyTorch's formulas (see ``cross_entropy``)."""
    st, z, cdim, c, w = inp.target, inp.z, inp.cdim, inp.c, inp.class_weight
    w_c = None if w is None else class_view(w, z.ndim, cdim)
    if st.probs is not None:
        logp = torch.log_softmax(z, dim=cdim) if log_softmax else z
        # Probability targets: -sum_c w_c t_c log p_c; "mean" divides by the number of positions
        # (PyTorch: the class weights do not enter the denominator here).
        t = st.probs
        if eps > 0:
            t = t * (1.0 - eps) + eps / c
        tw = t if w_c is None else t * w_c
        # A class without target mass (t_c w_c = 0) adds 0, also where log p_c = -inf (a class
        # masked out of the softmax): never 0 * -inf, and the safe branch keeps gradients finite.
        safe = torch.where(tw == 0, torch.zeros((), dtype=logp.dtype, device=logp.device), logp)
        return -(safe * tw).sum(dim=cdim)

    idx = cast(Tensor, st.index)  # softmax_target sets exactly one of index / probs
    if w is not None and w.requires_grad:
        # A learned class weight: PyTorch's NLL kernels take no gradient for ``weight``, so the
        # same formula (below) with differentiable operations.
        logp = torch.log_softmax(z, dim=cdim) if log_softmax else z
        loss = -logp.gather(cdim, idx.unsqueeze(cdim)).squeeze(cdim) * w[idx]
        if eps > 0:
            loss = (1.0 - eps) * loss - (eps / c) * (logp * cast(Tensor, w_c)).sum(dim=cdim)
        return loss
    zz = z
    flat = z.is_cuda and z.ndim > 2 and torch.are_deterministic_algorithms_enabled()
    if flat:
        # CUDA's nll_loss2d has no deterministic kernel; the (M, C) path has one.
        zz = z.movedim(1, -1).reshape(-1, c)
    elif not log_softmax and z.ndim > 2 and not z.is_contiguous():
        # PyTorch's nll_loss2d backward fails on channels_last / transposed log-probabilities
        # ("grad_input must be contiguous"): one copy of such inputs. (cross_entropy's own
        # log-softmax output is fine.)
        zz = z.contiguous()
    if want_total and (log_softmax or eps == 0):
        # Nothing element-wise to apply: PyTorch's fused kernel sums directly (its backward then
        # takes a scalar gradient). It skips the ``st.raw_ignore`` positions: the ignored ones and
        # the out-of-range ones met with value checks off (the pipeline makes the total NaN then).
        raw = cast(Tensor, st.raw)
        ii = raw.reshape(-1) if flat else raw
        if log_softmax:
            total = TF.cross_entropy(
                zz, ii, weight=w, ignore_index=st.raw_ignore, label_smoothing=eps, reduction="sum"
            )
        else:
            total = TF.nll_loss(zz, ii, weight=w, ignore_index=st.raw_ignore, reduction="sum")
        return Total(total)
    # The element-wise term, in PyTorch's convention:
    #   (1 - eps) * w[y] * (-log p_y) + eps / C * sum_c w_c * (-log p_c)
    # computed by PyTorch's fused log-softmax + NLL kernels on the float32/float64 copy (ignored and
    # out-of-range positions hold the safe index 0 and are masked / poisoned by the pipeline). The
    # tests check it against float64 loop references written from the formula above.
    ii = idx.reshape(-1) if flat else idx
    if log_softmax:
        loss = TF.cross_entropy(zz, ii, weight=w, label_smoothing=eps, reduction="none")
    else:
        loss = TF.nll_loss(zz, ii, weight=w, reduction="none")
    loss = loss.reshape(idx.shape)
    if not log_softmax and eps > 0:
        smooth = -(z.sum(dim=cdim) if w_c is None else (z * w_c).sum(dim=cdim))
        loss = (1.0 - eps) * loss + (eps / c) * smooth
    return loss


def as_pos_weight(fn: str, pos_weight: object, like: Tensor) -> Tensor:
    if isinstance(pos_weight, Tensor):
        pw = pos_weight
        if pw.device != like.device:
            fail(fn, "pos_weight", f"on the device of `logits` ({like.device})", pw.device)
    elif (isinstance(pos_weight, numbers.Real) and not isinstance(pos_weight, bool)) or (
        is_ndarray(pos_weight) and pos_weight.ndim == 0  # type: ignore[attr-defined]
    ):
        # (in the compute dtype: a float64 input's number is not rounded to float32)
        pw = torch.tensor(float(pos_weight), dtype=compute_dtype(like))  # type: ignore[arg-type]
    else:
        pw = host_vector(
            fn,
            "pos_weight",
            pos_weight,
            like,
            items="a (nested) sequence of numbers",
            kinds="a number, a tensor or a sequence of numbers",
            nested=True,
        )
    if pw.is_complex() or pw.dtype == torch.bool:
        fail(fn, "pos_weight", "a real tensor", f"dtype {pw.dtype}", TypeError)
    ok = pw.ndim <= like.ndim
    if ok:
        try:
            ok = tuple(torch.broadcast_shapes(pw.shape, like.shape)) == tuple(like.shape)
        except RuntimeError:
            ok = False
    if not ok:
        fail(
            fn,
            "pos_weight",
            f"a shape that broadcasts to the logits' shape {tuple(like.shape)} "
            "(a (C,) vector lines up with the last dimension, as in PyTorch)",
            f"shape {tuple(pw.shape)}",
        )
    # Numbers and lists are checked on the host (free), then moved to the logits' device.
    pw = pw.to(compute_dtype(like))
    checked = value_checks_on(pw) and pw.numel() > 0
    if checked and (not bool(torch.isfinite(pw).all()) or bool((pw < 0).any())):
        fail(fn, "pos_weight", "finite non-negative values", pw.flatten()[:8].tolist())
    return pw.to(like.device)
