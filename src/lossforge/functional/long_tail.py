r"""Losses for long-tailed classification: LDAM (Cao et al. 2019), Seesaw (Wang et al. 2021) and
Poly-1 (Leng et al. 2022).

LDAM and Seesaw are cross-entropy on adjusted logits (a margin subtracted from the target logit; a
log-factor added to the other logits), so they run the softmax pipeline's cross-entropy on the
adjusted logits in the compute dtype: class weights, ``ignore_index`` and the ``"mean"``
denominator are exactly ``cross_entropy``'s. Poly-1 adds $\epsilon$ times the first polynomial
term, $(1 - p_t)$, to cross-entropy (softmax) or $(1 - p_t)^{\gamma + 1}$ to the sigmoid focal
loss.

The deferred re-weighting schedule of LDAM-DRW is ``lossforge.drw_class_weights``; Seesaw's
cumulative class counts are the state of ``lossforge.nn.SeesawLoss``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from functools import partial
from typing import Annotated, cast

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import (
    compute_dtype,
    fail,
    host_vector,
    in_compute_dtype,
    value_checks_enabled,
)
from lossforge._params import (
    ClassProbabilities,
    ClassValues,
    NonNegative,
    Number,
    Positive,
    Probability,
    Weights,
    loss_function,
)
from lossforge._pipeline import SoftmaxInput, Total
from lossforge._reduction import AvgFactor, Backend, Reduction
from lossforge._targets import DenseTarget, class_view
from lossforge.functional import _focal_options as opt
from lossforge.functional._terms import sigmoid_focal, softmax_ce

__all__ = ["ldam_loss", "poly1_cross_entropy", "poly1_focal_loss", "seesaw_loss"]

#: Poly-1's $\epsilon \ge -1$ (Leng et al.: below -1 the loss is no longer non-negative).
PolyEpsilon = Annotated[float, Number(low=-1.0)]


def class_counts_vector(
    fn: str,
    counts: object,
    c: int,
    like: Tensor,
    *,
    need_positive: bool,
    name: str = "class_counts",
) -> Tensor:
    """Per-class counts as a ``(C,)`` tensor in the compute dtype on ``like``'s device.

    Values (finite, non-negative, at least one positive with ``need_positive``) are read under the
    value-check mode only (free for lists and CPU tensors; no sync for CUDA tensors by default).
    """
    if isinstance(counts, Tensor):
        n = counts
        if n.device != like.device:
            fail(fn, name, f"on the device of `logits` ({like.device})", n.device)
    else:
        n = host_vector(
            fn,
            name,
            counts,
            like,
            items="a sequence of numbers",
            kinds="a 1-d tensor or a sequence of numbers",
        )
    if n.is_complex() or n.dtype == torch.bool:
        fail(fn, name, "a real tensor", f"dtype {n.dtype}", TypeError)
    if n.ndim != 1 or n.shape[0] != c:
        fail(fn, name, f"a 1-d tensor of length C={c}", f"shape {tuple(n.shape)}")
    n = n.to(device=like.device, dtype=compute_dtype(like))
    if value_checks_enabled(n):
        if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
            fail(fn, name, "finite non-negative counts", n.tolist())
        if need_positive and not bool((n > 0).any()):
            fail(fn, name, "at least one positive count", n.tolist())
    return n


def _index(inp: SoftmaxInput) -> Tensor:
    # allow_probs=False: the softmax target holds class indices (ignored positions hold 0).
    return cast(Tensor, inp.target.index)


# --------------------------------------------------------------------------------------------------
# LDAM
# --------------------------------------------------------------------------------------------------


def ldam_margins(counts: Tensor, max_margin: float) -> Tensor:
    r"""$m_c = \mu\, n_c^{-1/4} / \max_{k: n_k > 0} n_k^{-1/4}$; zero-count classes get $\mu$.

    On the device, no host sync. All-zero counts (only possible with value checks off) give
    every class $\mu$.
    """
    present = counts > 0
    inv = torch.where(present, torch.where(present, counts, 1.0).pow(-0.25), 0.0)
    top = inv.max()
    scaled = inv * (max_margin / torch.where(top > 0, top, 1.0))
    return torch.where(present, scaled, torch.full_like(scaled, max_margin))


def _ldam(
    inp: SoftmaxInput,
    want_total: bool,
    *,
    fn: str,
    counts: object,
    max_margin: float,
    scale: float,
) -> Tensor | Total:
    idx, cdim = _index(inp), inp.cdim
    n = class_counts_vector(fn, counts, inp.c, inp.z, need_positive=True)
    m_y = ldam_margins(n, max_margin)[idx]
    # z - m_y on the target logit only (a scatter, no one-hot), then the scale s.
    z = inp.z.scatter_add(cdim, idx.unsqueeze(cdim), -m_y.unsqueeze(cdim))
    return softmax_ce(replace(inp, z=scale * z), want_total, eps=0.0, log_softmax=True)


@loss_function
def ldam_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassValues,
    max_margin: NonNegative = 0.5,
    scale: Positive = 30.0,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Label-distribution-aware margin (LDAM) loss for long-tailed classification.

    Class $c$ with $n_c$ training samples gets the margin $m_c \propto n_c^{-1/4}$, scaled so that
    the largest margin is $\mu$ = ``max_margin``; the margin is subtracted from the target logit
    and the result, scaled by $s$, goes through cross-entropy:

    $$
    \ell = \operatorname{CE}\bigl(s\,(x - m_y\, e_y),\; y\bigr)
         = -w_y \log \frac{e^{s (x_y - m_y)}}{e^{s (x_y - m_y)} + \sum_{c \ne y} e^{s x_c}},
    \qquad m_c = \mu\, \frac{n_c^{-1/4}}{\max_k n_k^{-1/4}},
    $$

    with class weights $w$ (all 1 when unset). This is kaidic/LDAM-DRW's ``LDAMLoss(cls_num_list,
    max_m, weight, s)`` exactly, its class ``weight`` included: ``"mean"`` divides by
    $\sum_i w_{y_i}$ over the non-ignored positions (PyTorch's weighted cross-entropy, which the
    reference calls). ``max_margin=0`` is ``cross_entropy(scale * x, y)``. The reference trains
    it on cosine logits (a normalised last layer, ``use_norm=True``), hence the large $s$. For the
    deferred re-weighting schedule (LDAM-DRW) pass ``class_weight=drw_class_weights(counts,
    epoch)`` (``lossforge.drw_class_weights``; on the module, assign the buffer each epoch).

    A class with a zero count (absent from the training set, so never a target there) gets the
    largest margin $\mu$; the others are scaled by the classes that occur. Margins are computed on
    the logits' device without a host sync.

    Args:
        logits: Unnormalised scores ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``.
        target: Class indices ``(N, d1, ..., dk)`` (any integer dtype).
        class_counts: Training-set count per class, length ``C``, non-negative, not all zero.
        max_margin: $\mu \ge 0$, the largest margin (the reference's ``max_m``).
        scale: $s > 0$, the logit scale (the reference's ``s``).
        class_weight: Per-class weights, length ``C``, non-negative (the reference's ``weight``).
        ignore_index: Ignored target value; ``None`` disables it.
        weight: Element-wise weight of the per-position loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel: ``"auto"`` runs the
            reference, ``"triton"`` raises).

    Returns:
        The target's shape for ``"none"``, else a scalar; float32 (float64 for float64 logits).

    References:
        Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware
        Margin Loss", NeurIPS 2019, arXiv:1906.07413.

    Example:
        >>> x = torch.tensor([[0.3, 0.1], [0.0, 0.2]])
        >>> ldam_loss(x, torch.tensor([0, 1]), class_counts=[100, 1], scale=1.0)
        tensor(0.7634)
        >>> ldam_loss(x, torch.tensor([0, 1]), class_counts=[100, 1], max_margin=0.0, scale=1.0)
        tensor(0.5981)
    """
    fn = "ldam_loss"
    return pipeline.softmax(
        fn,
        logits,
        target,
        loss=partial(_ldam, fn=fn, counts=class_counts, max_margin=max_margin, scale=scale),
        class_weight=class_weight,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
        allow_probs=False,
    )


# --------------------------------------------------------------------------------------------------
# Seesaw
# --------------------------------------------------------------------------------------------------


def _seesaw(
    inp: SoftmaxInput,
    want_total: bool,
    *,
    fn: str,
    counts: object,
    p: float,
    q: float,
    eps: float,
) -> Tensor | Total:
    idx, cdim, z = _index(inp), inp.cdim, inp.z
    y = idx.unsqueeze(cdim)
    log_s = torch.zeros((), dtype=z.dtype, device=z.device)
    if p > 0:
        # Mitigation: log M_yj = p * min(0, log N_j - log N_y), counts clamped at 1.
        log_n = torch.log(class_counts_vector(fn, counts, inp.c, z, need_positive=False).clamp(1.0))
        log_s = p * (class_view(log_n, z.ndim, cdim) - log_n[y]).clamp(max=0.0)
    if q > 0:
        # Compensation: log C_yj = q * max(0, log sigma_j - log max(sigma_y, eps)), no gradient.
        logp = torch.log_softmax(z.detach(), dim=cdim)
        ref = logp.gather(cdim, y).clamp(min=math.log(eps))
        log_s = log_s + q * (logp - ref).clamp(min=0.0)
    # Both factors are 1 (log 0) at the target class, so only the other logits move.
    return softmax_ce(replace(inp, z=z + log_s), want_total, eps=0.0, log_softmax=True)


@loss_function
def seesaw_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassValues,
    p: NonNegative = 0.8,
    q: NonNegative = 2.0,
    eps: Positive = 1e-2,
    ignore_index: int | None = -100,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Seesaw loss for long-tailed classification, with the class counts given explicitly.

    With $N_c$ the (cumulative) count of class $c$ and $\sigma = \operatorname{softmax}(x)$, the
    logit of every class $j \ne y$ is raised by $\log S_{yj}$ before the cross-entropy:

    $$
    \ell = -\log \frac{e^{x_y}}{e^{x_y} + \sum_{j \ne y} S_{yj}\, e^{x_j}}, \qquad
    S_{yj} = M_{yj}\, C_{yj},
    $$

    $$
    M_{yj} = \begin{cases} (N_j / N_y)^p & N_j < N_y \\ 1 & \text{otherwise} \end{cases}
    \qquad
    C_{yj} = \begin{cases} (\sigma_j / \sigma_y)^q & \sigma_j > \sigma_y \\ 1 & \text{otherwise}
    \end{cases}
    $$

    The mitigation factor $M$ lowers the penalty a frequent class $y$ puts on rarer classes $j$;
    the compensation factor $C$ restores it for classes $j$ the model wrongly scores above the
    target. As in mmdetection / mmpretrain (``seesaw_ce_loss``): counts are clamped at 1,
    $\sigma_y$ is clamped at ``eps`` in $C$, the scores in $C$ carry no gradient, and ``p=0`` /
    ``q=0`` switch a factor off. ``p = q = 0`` is ``cross_entropy``. The factors are computed as
    logs ($p \min(0, \log N_j - \log N_y)$ and $q \max(0, \log\sigma_j - \log\max(\sigma_y,
    \epsilon))$ from ``log_softmax``), so they stay finite at any logit.

    This is the pure form: ``lossforge.nn.SeesawLoss`` keeps $N$ in a buffer and adds each training
    batch's labels to it before calling this function (the mmdetection order). Here
    ``"mean"`` divides by the number of non-ignored positions (or ``avg_factor``). mmdetection's
    detection head variant (``num_classes + 2`` outputs with an objectness pair, Seesaw applied to
    the foreground rows only) is a head design, not a loss: split the scores, apply this to the
    foreground rows and ``cross_entropy`` to the objectness logits.

    Args:
        logits: Unnormalised scores ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``.
        target: Class indices ``(N, d1, ..., dk)`` (any integer dtype).
        class_counts: Per-class counts $N_c \ge 0$, length ``C`` (cumulative, this batch included).
        p: Mitigation exponent $p \ge 0$.
        q: Compensation exponent $q \ge 0$.
        eps: Lower clamp $\epsilon > 0$ of $\sigma_y$ in the compensation factor.
        ignore_index: Ignored target value; ``None`` disables it.
        weight: Element-wise weight of the per-position loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel).

    Returns:
        The target's shape for ``"none"``, else a scalar; float32 (float64 for float64 logits).

    References:
        Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021,
        arXiv:2008.10032.

    Example:
        >>> x = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.5]])
        >>> seesaw_loss(x, torch.tensor([0, 2]), class_counts=[100, 10, 1])
        tensor(3.7804)
        >>> seesaw_loss(x, torch.tensor([0, 2]), class_counts=[1, 1, 1], p=0.0, q=0.0)
        tensor(1.5157)
    """
    fn = "seesaw_loss"
    return pipeline.softmax(
        fn,
        logits,
        target,
        loss=partial(_seesaw, fn=fn, counts=class_counts, p=p, q=q, eps=eps),
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
        allow_probs=False,
    )


# --------------------------------------------------------------------------------------------------
# Poly-1
# --------------------------------------------------------------------------------------------------


def _poly1_ce(inp: SoftmaxInput, want_total: bool, *, epsilon: float, eps: float) -> Tensor:
    if epsilon == 0.0:
        return cast(Tensor, softmax_ce(inp, False, eps=eps, log_softmax=True))
    st, z, cdim, c, w = inp.target, inp.z, inp.cdim, inp.c, inp.class_weight
    # One log-softmax for both terms: the cross-entropy is the NLL of it.
    logp = torch.log_softmax(z, dim=cdim)
    ce = cast(
        Tensor, softmax_ce(dataclasses.replace(inp, z=logp), False, eps=eps, log_softmax=False)
    )
    w_c = None if w is None else class_view(w, z.ndim, cdim)
    if st.probs is not None:
        # sum_c q_c w_c (1 - p_c) with q the (smoothed) target distribution.
        q = st.probs if eps == 0 else st.probs * (1.0 - eps) + eps / c
        terms = q * -torch.expm1(logp)
        poly = (terms if w_c is None else terms * w_c).sum(dim=cdim)
        return ce + epsilon * poly
    idx = _index(inp)
    poly = -torch.expm1(logp.gather(cdim, idx.unsqueeze(cdim)).squeeze(cdim))  # 1 - p_y
    if w is not None:
        poly = poly * w[idx]
    if eps > 0:
        every = -torch.expm1(logp)
        if w_c is not None:
            every = every * w_c
        poly = (1.0 - eps) * poly + (eps / c) * every.sum(dim=cdim)
    return ce + epsilon * poly


@loss_function
def poly1_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    epsilon: PolyEpsilon = 1.0,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    label_smoothing: Probability = 0.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Poly-1 cross-entropy: cross-entropy plus $\epsilon$ times its first polynomial term.

    Cross-entropy is $-\log p_t = \sum_{j \ge 1} (1 - p_t)^j / j$; Poly-1 raises the weight of the
    first term by $\epsilon$:

    $$
    \ell = -\log p_t + \epsilon\, (1 - p_t) .
    $$

    With a target distribution $q$ (probability targets, or label smoothing: $q = (1 -
    \varepsilon)\operatorname{onehot}(y) + \varepsilon / C$) and class weights $w$, each class of
    $q$ gets the term, as cross-entropy's log does (the paper's listing uses
    $p_t = \sum_c q_c p_c$ without weights, the same value):

    $$
    \ell = \sum_{c=1}^{C} q_c\, w_c \bigl[-\log p_c + \epsilon\, (1 - p_c)\bigr] .
    $$

    Everything else is ``cross_entropy``'s: ``epsilon=0`` is ``cross_entropy`` with the same
    ``class_weight``, ``ignore_index`` and ``label_smoothing`` (values and the ``"mean"``
    denominator, $\sum_i w_{y_i}$ for index targets). abhuse/polyloss-pytorch weights only the
    cross-entropy term and averages over every position; without class weights the two agree.
    $\epsilon \ge -1$ keeps the loss non-negative ($-\log p \ge 1 - p$); the paper tunes
    $\epsilon \in [-1, \infty)$ (ImageNet: $\epsilon = 2$). $1 - p$ is ``-expm1`` of the
    ``log_softmax`` the cross-entropy uses.

    Args:
        logits: Unnormalised scores ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``.
        target: Class indices ``(N, d1, ..., dk)`` or probabilities of the logits' shape.
        epsilon: $\epsilon \ge -1$.
        class_weight: Per-class weights, length ``C``, non-negative.
        ignore_index: Ignored index-target value; ``None`` disables it.
        label_smoothing: $\varepsilon \in [0, 1]$.
        weight: Element-wise weight of the per-position loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel).

    Returns:
        As ``cross_entropy``.

    References:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
        Functions", ICLR 2022, arXiv:2204.12511.

    Example:
        >>> x = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
        >>> poly1_cross_entropy(x, torch.tensor([0, 2]), epsilon=1.0)
        tensor(1.2757)
    """
    return pipeline.softmax(
        "poly1_cross_entropy",
        logits,
        target,
        loss=partial(_poly1_ce, epsilon=epsilon, eps=label_smoothing),
        class_weight=class_weight,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


def _poly1_focal(
    x: Tensor,
    t: DenseTarget,
    want_total: bool,
    *,
    epsilon: float,
    gamma: float,
    alpha: float | Tensor | None,
    pos_weight: Tensor | None,
) -> Tensor:
    focal = opt.weighted_sigmoid_focal(
        x, t, False, gamma=gamma, alpha=alpha, pos_weight=pos_weight, base=sigmoid_focal
    )
    if epsilon == 0.0:
        return focal
    z, y = in_compute_dtype(x), t.target
    one_minus_pt = y * torch.sigmoid(-z) + (1.0 - y) * torch.sigmoid(z)
    return focal + epsilon * one_minus_pt.pow(gamma + 1.0)


@loss_function
def poly1_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    epsilon: PolyEpsilon = 1.0,
    alpha: Probability | ClassProbabilities | None = 0.25,
    gamma: NonNegative = 2.0,
    pos_weight: NonNegative | Weights | None = None,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Poly-1 focal loss (sigmoid): the focal loss plus $\epsilon\,(1 - p_t)^{\gamma + 1}$.

    The sigmoid focal loss (``sigmoid_focal_loss``, the same ``alpha``, ``gamma``,
    ``pos_weight``, targets and options) plus the first polynomial term of its expansion, per
    element:

    $$
    \ell = \alpha_t\, (1 - p_t)^{\gamma}\, \operatorname{BCE}(x, y)
        + \epsilon\, (1 - p_t)^{\gamma + 1},
    \qquad p_t = y\,p + (1 - y)(1 - p),\ p = \sigma(x).
    $$

    This is the paper's detection (RetinaNet) form, its Listing 2, and abhuse/polyloss-pytorch's
    ``Poly1FocalLoss``: $\alpha_t$ weights only the focal term. ``epsilon=0`` is exactly
    ``sigmoid_focal_loss``. Multi-class softmax users have ``poly1_cross_entropy`` (the paper's
    classification form). $\epsilon \ge -1$ (the paper's range; with $\alpha < 1$ a negative
    $\epsilon$ can make an element negative).

    Args:
        logits: Raw scores, ``(N, C, *)`` (any shape with dense targets).
        target: Dense targets in ``[0, 1]`` of the logits' shape, or class indices ``(N, *)``
            (value ``C`` = background), as in ``sigmoid_focal_loss``.
        epsilon: $\epsilon \ge -1$.
        alpha: Float, per-class sequence (the class dim) or ``None``, as in
            ``sigmoid_focal_loss``.
        gamma: Focusing parameter $\gamma \ge 0$.
        pos_weight: Positive-term weight of the cross-entropy, as in ``sigmoid_focal_loss``.
        ignore_index: Ignored target value; ``None`` = off.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight (the logits' shape, its leading dims or same-rank
            broadcastable).
        reduction: ``"none"`` | ``"mean"`` (over valid elements) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (e.g. the number of positive anchors).
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel).

    Returns:
        The logits' shape for ``"none"``, else a scalar; float32 (float64 for float64 logits).

    References:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
        Functions", ICLR 2022, arXiv:2204.12511.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
        >>> poly1_focal_loss(logits, torch.tensor([0, 3]), epsilon=1.0, reduction="sum")
        tensor(1.7351)
    """
    fn = "poly1_focal_loss"
    return pipeline.sigmoid(
        fn,
        logits,
        target,
        loss=partial(_poly1_focal, epsilon=epsilon, gamma=gamma),
        options=opt.focal_options(fn, alpha, pos_weight),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )
