"""Asymmetric loss (ASL): the multi-label sigmoid form and the single-label softmax form.

Both forms build their focusing weights as ``exp(gamma * log(base))`` where ``log(base)`` comes
from ``logsigmoid`` / ``log_softmax`` / ``logsumexp`` in float32 (float64 for float64 inputs). That
keeps the loss and its gradient finite in every dtype, also for ``0 < gamma < 1`` at saturated
logits, where ``pow``'s backward ``gamma * base**(gamma - 1)`` is ``inf * 0 = NaN``. The gradient
stop through the focusing weight is a ``.detach()`` on the weight: global grad mode is never
touched.

The multi-label composite ``_asl_unreduced`` is the specification. The torch backend evaluates it
in closed form (``_asl_closed_form``): when the logits need a gradient, one no-grad pass computes
the element-wise loss and its derivative together (``functional/_closed_form.ElementwiseLoss``, an
autograd Function that keeps only the derivative, in the logits' dtype, and scales it in the
backward); without a
gradient, the same pass computes the loss alone. Second derivatives (``create_graph=True``)
differentiate the composite, and a target that requires grad runs the composite throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, cast

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import compute_dtype, fail
from lossforge._params import NonNegative, Number, Probability, loss_function
from lossforge._pipeline import Fused, SoftmaxInput
from lossforge._reduction import AvgFactor, Backend, Reduction
from lossforge._targets import DenseTarget
from lossforge.functional._closed_form import ClosedForm, closed_form_loss, saved_grad_dtype

__all__ = ["asymmetric_loss", "softmax_asymmetric_loss"]

#: Smallest positive ``eps``: float32's ``tiny`` (low-precision inputs are computed in float32).
EPS_MIN = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class _ClampEps(Number):
    """``eps`` of ASL: 0 (no clamp) or a number in ``[float32 tiny, 1)``."""

    def check(self, owner: str, name: str, value: object) -> float:
        e = super().check(owner, name, value)
        if 0.0 < e < EPS_MIN:
            fail(
                owner,
                name,
                f"0 (no clamp) or >= {EPS_MIN:.3g} (float32 tiny; smaller values underflow)",
                e,
            )
        return e


#: ASL's probability clamp inside the logs.
ClampEps = Annotated[float, _ClampEps(low=0.0, high=1.0, high_open=True)]
#: ASL's probability margin of the negatives.
Clip = Annotated[float, Number(low=0.0, high=1.0, high_open=True)]


def _asl_unreduced(
    z: Tensor,
    y: Tensor,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    eps: float,
    detach: bool,
) -> Tensor:
    """Element-wise multi-label ASL in ``z``'s dtype (float32 or float64)."""
    log_p = TF.logsigmoid(z)  # log p
    log_q = TF.logsigmoid(-z)  # log(1 - p), exact: 1 - sigmoid(x) = sigmoid(-x)
    q: Tensor | None
    pm: Tensor | None
    pm_zero: Tensor | None
    if clip > 0:
        p = torch.sigmoid(z)
        q = torch.sigmoid(-z)
        # log(1 - p_m) = log(min(1 - p + clip, 1)); >= log(clip), so never log(0).
        log_neg = torch.log(torch.clamp(q + clip, max=1.0))
        pm = torch.clamp(p - clip, min=0.0)  # p_m, the shifted probability
        pm_zero = pm <= 0
        # log p_m where p_m > 0; the masked branch reads log(1), so no -inf and no NaN gradient.
        log_pm = torch.log(torch.where(pm_zero, torch.ones_like(pm), pm))
    else:
        q = pm = pm_zero = None
        log_neg = log_q
        log_pm = log_p
    if eps > 0:
        # eps clamps the probabilities inside the logs (as in the reference): log max(p, eps).
        log_eps = math.log(eps)
        log_pos_term = torch.clamp(log_p, min=log_eps)
        log_neg = torch.clamp(log_neg, min=log_eps)
    else:
        log_pos_term = log_p
    lp = y * log_pos_term + (1.0 - y) * log_neg
    if gamma_pos == 0.0 and gamma_neg == 0.0:
        return -lp

    # Focusing weight (1 - p_t)^gamma_t with 1 - p_t = y (1 - p) + (1 - y) p_m and
    # gamma_t = gamma_pos y + gamma_neg (1 - y) (the reference's form; exact for hard targets).
    g = gamma_pos * y + gamma_neg * (1.0 - y)
    hard_pos = y >= 1.0
    hard_neg = y <= 0.0
    soft = ~(hard_pos | hard_neg)
    log_base = torch.where(hard_pos, log_q, log_pm)
    # Soft targets (y strictly inside (0, 1)): the base is >= min(y, 1 - y) * min(1 - p, p_m) mixed,
    # bounded away from 0, so a direct log is safe; hard elements read log(1) there.
    p_ = torch.sigmoid(z) if pm is None else pm
    q_ = torch.sigmoid(-z) if q is None else q
    base_soft = torch.where(soft, y * q_ + (1.0 - y) * p_, torch.ones_like(z))
    log_base = torch.where(soft, torch.log(base_soft), log_base)
    w = torch.exp(g * log_base)
    if pm_zero is not None:
        # p_m = 0 (p <= clip) on a hard negative: weight 0**gamma_neg (1 when gamma_neg = 0).
        w = torch.where(hard_neg & pm_zero, (g == 0).to(w.dtype), w)
    if detach:
        w = w.detach()
    return -lp * w


# --------------------------------------------------------------------------------------------------
# Closed form of the multi-label ASL: the loss and d loss / dz in one no-grad pass
# --------------------------------------------------------------------------------------------------

# relu's backward: ``grad`` where ``self > threshold``, else 0, in one vectorised pass.
_masked = torch.ops.aten.threshold_backward
_masked_into = torch.ops.aten.threshold_backward.grad_input  # its out= form

#: CPU inputs above this many elements are processed in chunks of ``_CHUNK`` elements, so that the
#: temporaries stay in cache and are recycled by the allocator instead of being freshly mapped
#: (page-faulted) full-size buffers; only the loss and the gradient are full size.
_CHUNK = 1 << 16


def _asl_closed_form(
    z: Tensor,
    y: Tensor,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    eps: float,
    detach: bool,
    need_grad: bool,
    loss_out: Tensor | None = None,
    grad_out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""The element-wise loss of ``_asl_unreduced`` and, if ``need_grad``, its derivative in ``z``.

    No autograd. With $p = \sigma(z)$, $q = \sigma(-z)$, $L_+ = -\log\max(p, \epsilon)$,
    $L_- = -\log\max(1 - p_m, \epsilon)$ where $1 - p_m = \min(q + m, 1)$,
    $n = y L_+ + (1 - y) L_-$, the base $b = y q + (1 - y) p_m$ and
    $\gamma_t = \gamma_+ y + \gamma_- (1 - y)$:
    $\ell = n\, w$ with $w = b^{\gamma_t}$, and

    $$
    \frac{\partial \ell}{\partial z} = w \Bigl(n' + n\, \gamma_t \frac{b'}{b}\Bigr),\quad
    n' = -y q\,[p > \epsilon] + (1 - y) \frac{p_m'}{1 - p_m}[1 - p_m > \epsilon],\quad
    b' = -y p q + (1 - y) p_m',
    $$

    with $p_m' = p q\,[p_m > 0]$ ($pq$ without the margin); ``detach`` drops the $b'/b$ term.
    Every blend over $y$ is a ``lerp``, exact at $y \in \{0, 1\}$ (no cancellation where one
    branch is tiny). $b$ is clamped at the dtype's ``tiny`` and
    $w = \exp(\max(\gamma_t \log b, 1 + \log \mathrm{tiny}))$: finite, 1 for $\gamma_t = 0$,
    $e \cdot \mathrm{tiny}$ instead of a subnormal or 0 (loss and gradient there are
    $O(\mathrm{tiny})$; where $p_m = 0$ the gradient is exactly 0, as $n' = b' = 0$), and $b'/b$
    finite. With ``eps > 0``, $L_+ = \log(1 + q/p)$ and, without margin, $L_- = \log(1 + p/q)$ (a
    ratio overflows only where the clamp holds); with ``eps = 0`` they are ``-logsigmoid``.

    Masks come from ``threshold_backward`` (one pass, where a comparison plus ``torch.where``
    costs 3-7x more on CPU), and temporaries are reused through ``out=`` / in-place operations:
    7 buffers of ``z``'s size besides the loss (8 when ``eps > clip``), on every device.
    ``loss_out`` / ``grad_out`` receive the results when given (the gradient cast to
    ``grad_out``'s dtype); otherwise both come in ``z``'s dtype.
    """
    gp, gn = gamma_pos, gamma_neg
    focal = gp != 0.0 or gn != 0.0
    nlog_eps = -math.log(eps) if eps > 0 else math.inf
    tiny = torch.finfo(z.dtype).tiny
    # Comments of the form "a -> b" name a buffer's new role.
    p = torch.sigmoid(z)
    q = torch.neg(z).sigmoid_()  # sigma(-z): 1 - p without cancellation
    if clip > 0:
        pm = torch.sub(p, clip).clamp_(min=0.0)
        xs: Tensor | None = torch.add(q, clip).clamp_(max=1.0)  # 1 - p_m, >= clip
    else:
        pm, xs = p, None
    base = torch.lerp(pm, q, y).clamp_(min=tiny) if focal else None  # 1 - p_t
    # -log p (nl_pos) and its derivative -q [p > eps] (nd_pos).
    if eps > 0:
        nl_pos = torch.div(q, p).log1p_().clamp_(max=nlog_eps)  # q / p = inf only when clamped
        nd_pos = _masked(q, p, eps).neg_() if need_grad else None
    else:
        nl_pos = TF.logsigmoid(z).neg_()
        nd_pos = torch.neg(q) if need_grad else None
    # -log(1 - p_m) (nl_neg) and its derivative (nd_neg): without margin -log q and p [q > eps].
    if xs is None:
        if eps > 0:
            nl_neg = torch.div(p, q).log1p_().clamp_(max=nlog_eps)
            nd_neg = _masked(p, q, eps) if need_grad else None
        else:
            nl_neg = TF.logsigmoid(-z).neg_()
            nd_neg = p.clone() if need_grad else None
    s = p.mul_(q) if need_grad else None  # p -> pq = dp/dz
    if xs is not None:
        nl_neg = torch.log(xs, out=q).neg_()  # q -> -log(1 - p_m)
        if eps > clip:  # log(1 - p_m) >= log(clip): this clamp can only act if eps > clip
            nl_neg.clamp_(max=nlog_eps)
    nl = nl_neg.lerp_(nl_pos, y)  # n = -(y log p + (1 - y) log(1 - p_m)); nl_pos is free
    nd: Tensor | None = None
    dpm: Tensor | None = None
    if s is not None:  # need_grad: nd_pos and nd_neg (or xs) were computed above
        if xs is not None:
            dpm = _masked_into(s, pm, 0.0, grad_input=pm)  # pm -> p_m' (0 where p_m = 0)
            if eps > clip:  # rare: the mask needs xs, so a new buffer
                nd_neg = _masked(torch.div(dpm, xs), xs, eps)
            else:
                nd_neg = torch.div(dpm, xs, out=xs)  # xs -> p_m' / (1 - p_m)
        else:
            dpm = s
        nd = cast(Tensor, nd_neg).lerp_(cast(Tensor, nd_pos), y)  # n' = d n / dz; nd_pos is free
    g: Tensor | float = gp
    w: Tensor | None = None
    if focal:
        if gp != gn:  # gamma_t, in a free buffer (nd_pos, or p when no gradient is computed)
            g = torch.mul(y, gp - gn, out=nd_pos if nd_pos is not None else p).add_(gn)
        # exp's argument is kept >= log(tiny) + 1 (w >= e * tiny): below it (e.g. gamma log(tiny)
        # where p_m = 0) the result is subnormal or 0 and the CPU exp takes a path ~50-180x slower
        # per element (float32 at log(tiny) itself, float64 up to ~0.5 above it).
        w = torch.log(cast(Tensor, base), out=nl_pos).mul_(g)
        w = w.clamp_(min=math.log(tiny) + 1.0).exp_()
        loss = torch.mul(nl, w, out=loss_out) if loss_out is not None else torch.mul(nl, w)
    elif loss_out is not None:
        loss = loss_out.copy_(nl)
    else:
        loss = nl
    if nd is None:
        return loss, None

    s, dpm = cast(Tensor, s), cast(Tensor, dpm)  # set whenever nd is
    if focal and not detach:
        # d log b / dz = lerp(p_m', -pq, y) / b; without margin p_m' is s itself.
        neg_s = torch.neg(s, out=q) if dpm is s else s.neg_()  # q is free without margin
        dlb = torch.lerp(dpm, neg_s, y, out=s).div_(cast(Tensor, base))  # s -> d log b / dz
        if isinstance(g, Tensor):
            nd.addcmul_(nl, dlb.mul_(g))
        else:
            nd.addcmul_(nl, dlb, value=g)
    if w is None:
        return loss, (grad_out.copy_(nd) if grad_out is not None else nd)
    if grad_out is not None:
        return loss, torch.mul(nd, w, out=grad_out)
    return loss, nd.mul_(w)


def _asl_loss_and_grad(
    x: Tensor, y: Tensor, need_grad: bool, *, opts: dict[str, Any]
) -> tuple[Tensor, Tensor | None]:
    """``_asl_closed_form`` on the logits ``x`` (any float dtype): the loss in the compute dtype,
    the gradient in ``x``'s dtype. Large contiguous CPU inputs go through in chunks."""
    cdt = compute_dtype(x)
    n = x.numel()
    if (
        x.device.type != "cpu"
        or n <= 4 * _CHUNK
        or not (x.is_contiguous() and y.is_contiguous() and y.shape == x.shape)
        or torch.compiler.is_compiling()
    ):
        loss, grad = _asl_closed_form(x.to(cdt), y, need_grad=need_grad, **opts)
        kept = saved_grad_dtype(x.dtype)
        if grad is not None and grad.dtype != kept:
            grad = grad.to(kept)
        return loss, grad
    loss = torch.empty(x.shape, dtype=cdt)
    grad = torch.empty(x.shape, dtype=saved_grad_dtype(x.dtype)) if need_grad else None
    xf, yf, lf = x.view(-1), y.view(-1), loss.view(-1)
    gf = grad.view(-1) if grad is not None else None
    for i in range(0, n, _CHUNK):
        j = min(i + _CHUNK, n)
        _asl_closed_form(
            xf[i:j].to(cdt),
            yf[i:j],
            need_grad=need_grad,
            loss_out=lf[i:j],
            grad_out=gf[i:j] if gf is not None else None,
            **opts,
        )
    return loss, grad


def _asl_elementwise(x: Tensor, y: Tensor, opts: dict[str, Any]) -> Tensor:
    """The element-wise multi-label ASL of the logits ``x`` (own dtype) by the cheapest route with
    exact gradients (``closed_form_loss``: the closed form, or the composite where autograd must
    see the formula)."""
    spec = ClosedForm(partial(_asl_loss_and_grad, opts=opts), partial(_asl_composite, opts=opts))
    return closed_form_loss(x, y, spec)


def _asl_composite(z: Tensor, y: Tensor, *, opts: dict[str, Any]) -> Tensor:
    return _asl_unreduced(z, y, **opts)


def _asl(x: Tensor, t: DenseTarget, want_total: bool, *, opts: dict[str, Any]) -> Tensor:
    return _asl_elementwise(x, t.target, opts)


@loss_function
def asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma_pos: NonNegative = 0.0,
    gamma_neg: NonNegative = 4.0,
    clip: Clip = 0.05,
    eps: ClampEps = 1e-8,
    detach_focal_weight: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Multi-label asymmetric loss (ASL) on logits.

    With $p = \sigma(x)$, the shifted probability $p_m = \max(p - m, 0)$ (margin $m$ = ``clip``)
    and a binary target $y$,

    $$
    \ell = -\,y\,(1 - p)^{\gamma_+} \log p \;-\; (1 - y)\, p_m^{\gamma_-} \log(1 - p_m).
    $$

    Soft targets follow the reference implementation (Alibaba-MIIL/ASL, timm): one weight
    $(1 - p_t)^{\gamma_t}$ with $1 - p_t = y (1 - p) + (1 - y) p_m$ and
    $\gamma_t = \gamma_+ y + \gamma_- (1 - y)$ multiplies $y \log p + (1 - y)\log(1 - p_m)$;
    for $y \in \{0, 1\}$ this is the formula above.

    ``eps`` clamps the probabilities inside the two logs ($\log\max(p, \epsilon)$ and
    $\log\max(1 - p_m, \epsilon)$), as in the reference; where it clamps, the gradient is 0.
    The logs themselves are computed as ``logsigmoid`` in float32 (never ``log(sigmoid(x))``),
    and $\log(1 - p_m) = \log\min(\sigma(-x) + m, 1)$ is at least $\log m$, so ``eps=0`` (no
    clamp) is safe too. Half inputs are computed in float32: the loss and its gradients are
    finite at logits of $\pm 10^4$ in float16/bfloat16 (the reference's ``clamp(min=1e-8)`` is 0 in
    float16, giving ``log(0)``). The focusing weight is built as
    $\exp(\gamma \log(\text{base}))$ from stable logs, so $0 < \gamma < 1$ has finite gradients at
    saturated logits.

    With ``gamma_pos = gamma_neg = 0`` and ``clip = 0`` (and ``eps = 0`` or logits with
    $|x| < -\log\epsilon$) this is ``binary_cross_entropy_with_logits``; with ``clip = 0`` and
    ``gamma_pos = gamma_neg`` it is the sigmoid focal loss without $\alpha$.

    Reduction convention: the reference repo and timm return the **sum** ($-\sum$ over every
    element); here ``"mean"`` (the default) divides by the number of valid elements
    ($N \cdot C$ without ignored ones). ``reduction="sum"`` gives their number.

    Args:
        logits: Raw scores ``(N, C, *)`` (any shape with dense targets).
        target: Dense targets of the logits' shape in ``[0, 1]`` (soft labels allowed, elements
            equal to ``ignore_index`` ignored), or class indices of the logits' shape without dim 1:
            ``k`` in ``[0, C)`` is the positive class, ``C`` means all negative (background),
            ``ignore_index`` drops the row.
        gamma_pos: $\gamma_+ \ge 0$, focusing of the positive term (paper: 0).
        gamma_neg: $\gamma_- \ge 0$, focusing of the negative term (paper: 4).
        clip: Probability margin $m \in [0, 1)$ of the negatives (paper: 0.05); 0 disables it.
        eps: Clamp of the probabilities inside the logs, 0 or in ``[1.18e-38, 1)`` (below float32's
            ``tiny`` it would underflow); 0 disables the clamp.
        detach_focal_weight: Stop the gradient through the focusing weight (the reference's
            ``disable_torch_grad_focal_loss``), by ``.detach()`` on the weight; grad mode is
            untouched.
        ignore_index: Ignored target value; ``None`` disables it.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight: the logits' shape, its leading dims (``(N,)`` = per sample) or
            a same-rank broadcastable shape.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (mmdetection convention).
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``: the fused sigmoid kernel serves CUDA
            float32/float16/bfloat16 logits; other cases fall back under ``"auto"`` and raise under
            ``"triton"``.

    Returns:
        The logits' shape for ``"none"``, else a scalar; float32 (float64 for float64 input).

    References:
        Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021,
        arXiv:2009.14119.

    Example:
        >>> x = torch.tensor([[3.0, -1.0, 0.5]])
        >>> y = torch.tensor([[1.0, 0.0, 0.0]])
        >>> asymmetric_loss(x, y, reduction="sum")
        tensor(0.1404)
    """
    opts = {
        "gamma_pos": gamma_pos,
        "gamma_neg": gamma_neg,
        "clip": clip,
        "eps": eps,
        "detach": detach_focal_weight,
    }
    return pipeline.sigmoid(
        "asymmetric_loss",
        logits,
        target,
        loss=partial(_asl, opts=opts),
        fused=Fused(
            "sigmoid",
            "asl",
            {
                "gamma_pos": gamma_pos,
                "gamma_neg": gamma_neg,
                "clip": clip,
                "eps": eps,
                "detach_focal_weight": detach_focal_weight,
            },
        ),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


def _softmax_asl(
    inp: SoftmaxInput,
    want_total: bool,
    *,
    gamma_pos: float,
    gamma_neg: float,
    eps: float,
    detach: bool,
) -> Tensor:
    """The per-position single-label ASL (see ``softmax_asymmetric_loss``)."""
    idx = cast(Tensor, inp.target.index)  # probability targets are rejected by the pipeline
    cdim, c, z = inp.cdim, inp.c, inp.z
    logp = torch.log_softmax(z, dim=cdim)
    view = [1] * z.ndim
    view[cdim] = c
    onehot = idx.unsqueeze(cdim) == torch.arange(c, device=z.device).view(view)
    if gamma_pos > 0 or gamma_neg > 0:
        w = torch.exp(gamma_neg * logp) if gamma_neg > 0 else torch.ones_like(logp)  # p_c**g_neg
        if gamma_pos > 0:
            # log(1 - p_t) = logsumexp over the other classes of log p_c, each at least the
            # dtype's lowest finite value: other classes masked with -inf (or p_t = 1) give
            # w_t = 0 with a zero gradient, not logsumexp's NaN gradient of an all -inf row.
            low = torch.finfo(logp.dtype).min
            others = logp.clamp(min=low).masked_fill(onehot, low)
            log_rest = torch.logsumexp(others, dim=cdim, keepdim=True)
            w = torch.where(onehot, torch.exp(gamma_pos * log_rest), w)
        else:
            w = torch.where(onehot, torch.ones_like(w), w)
        if detach:
            w = w.detach()
        mass = (onehot.to(z.dtype) * (1.0 - eps) + eps / c) * w
    else:
        mass = onehot.to(z.dtype) * (1.0 - eps) + eps / c
    # A term of zero mass adds 0, also at log p = -inf (a class masked out of the softmax, where
    # the focusing weight p^gamma is 0 and p^gamma log p -> 0): never 0 * -inf, and the safe
    # branch keeps the gradient 0 there.
    safe = torch.where(mass == 0, torch.zeros((), dtype=logp.dtype, device=logp.device), logp)
    return -(mass * safe).sum(dim=cdim)


@loss_function
def softmax_asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma_pos: NonNegative = 0.0,
    gamma_neg: NonNegative = 4.0,
    label_smoothing: Probability = 0.1,
    detach_focal_weight: bool = False,
    ignore_index: int | None = -100,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Single-label asymmetric loss (softmax ASL, the reference's ``ASLSingleLabel``).

    With $p = \operatorname{softmax}(x)$ over the class dimension, target class $t$, $C$ classes and
    label smoothing $\varepsilon$, the focusing weights are $w_t = (1 - p_t)^{\gamma_+}$ on the
    target class and $w_c = p_c^{\gamma_-}$ on the others, applied to the smoothed target
    distribution $q = (1 - \varepsilon)\,\mathbb{1}[c = t] + \varepsilon / C$:

    $$
    \ell = -\sum_{c=1}^{C} q_c\, w_c \log p_c .
    $$

    $\log p$ is ``log_softmax`` in float32 and $\log(1 - p_t)$ is the ``logsumexp`` of the other
    classes' log-probabilities (no cancellation when $p_t \to 1$); the weights are
    $\exp(\gamma \log \cdot)$, so $0 < \gamma < 1$ stays finite at saturated logits. With
    $\gamma_+ = \gamma_- = 0$ this is ``cross_entropy(label_smoothing=eps)``; the reference's
    ``eps`` argument is this ``label_smoothing`` (here ``eps`` always means a numerical clamp).
    Per-class weighting: pass ``weight=class_weight[target]``.

    Args:
        logits: Unnormalised scores ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``, $C \ge 2$.
        target: Class indices ``(N, d1, ..., dk)`` (any integer dtype) in ``[0, C)`` or
            ``ignore_index``. Probability targets are not accepted (the weights need a target
            class).
        gamma_pos: $\gamma_+ \ge 0$ (reference default 0).
        gamma_neg: $\gamma_- \ge 0$ (reference default 4).
        label_smoothing: $\varepsilon \in [0, 1]$ (reference default 0.1).
        detach_focal_weight: Stop the gradient through the weights (``.detach()``; grad mode
            untouched).
        ignore_index: Ignored target value (``None`` disables it); ignored positions give 0.
        weight: Element-wise weight of the per-position loss (the target's shape or its leading
            dims).
        reduction: ``"none"`` | ``"mean"`` (over non-ignored positions) | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel: ``"auto"`` runs the
            reference, ``"triton"`` raises).

    Returns:
        ``"none"``: the target's shape; otherwise a scalar.

    References:
        Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021,
        arXiv:2009.14119 (single-label variant in the authors' code).

    Example:
        >>> x = torch.tensor([[2.0, 0.5, -1.0]])
        >>> softmax_asymmetric_loss(x, torch.tensor([0]), gamma_neg=0.0, label_smoothing=0.0)
        tensor(0.2413)
    """
    return pipeline.softmax(
        "softmax_asymmetric_loss",
        logits,
        target,
        loss=partial(
            _softmax_asl,
            gamma_pos=gamma_pos,
            gamma_neg=gamma_neg,
            eps=label_smoothing,
            detach=detach_focal_weight,
        ),
        allow_probs=False,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )
