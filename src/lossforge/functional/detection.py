r"""Dense-detection losses: quality focal and distribution focal (GFL), varifocal (VarifocalNet),
gradient harmonizing (GHM-C, GHM-R).

**IoU-aware classification targets** (``quality_focal_loss``, ``varifocal_loss``) come in the
formats detection heads produce, on the sigmoid convention of the library:

* dense quality targets of the logits' shape, values in ``[0, 1]`` (the IoU of a positive at its
  class, 0 elsewhere);
* class indices of the logits' shape without the class dimension (``C`` = background, as in
  ``sigmoid_focal_loss``) together with ``score=``, the quality of each row's positive class
  (mmdetection's ``(labels, scores)`` pair, which is also accepted as the target itself);
* class indices alone: a quality of 1 for the positive class.

**GHM state.** ``ghmc_loss`` / ``ghmr_loss`` are pure and take the state explicitly: the
running per-bin counts before this batch (``bin_counts``, what the modules ``GHMCLoss`` /
``GHMRLoss`` keep in their ``acc_sum`` buffer) and the ``momentum`` of the running average. The
density of a bin is ``momentum * bin_counts + (1 - momentum) * counts`` where this batch fills it
(mmdetection's update); ``momentum=0`` is this batch's histogram. ``ghmc_histogram`` /
``ghmr_histogram`` give the batch histogram, and ``ghm_running_counts`` the updated running
counts. Histograms are built with ``scatter_add`` on the device: no ``.item()``, no host sync.
Inside ``lossforge.distributed.global_normalization()`` the per-bin counts are all-reduced
(summed over the ranks) before they are used, so every rank weighs its elements by the global
histogram, the running counts stay identical on every rank, and K ranks reproduce one process on
the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Annotated, Any, NamedTuple, cast

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge import _reduction
from lossforge._checks import (
    check_floating,
    check_int,
    check_number,
    check_same_device,
    check_same_shape,
    check_tensor,
    check_unit_interval,
    compute_dtype,
    fail,
    in_compute_dtype,
    value_checks_on,
)
from lossforge._params import BatchTensor, Integer, NonNegative, Number, Positive, loss_function
from lossforge._pipeline import SoftmaxInput, Unreduced
from lossforge._reduction import AvgFactor, Reduction, expand_weight
from lossforge._targets import DenseTarget, class_dim, resolve_target, sigmoid_target
from lossforge.functional._closed_form import ClosedForm, closed_form_loss, upcast

__all__ = [
    "distribution_focal_loss",
    "ghm_running_counts",
    "ghmc_histogram",
    "ghmc_loss",
    "ghmr_histogram",
    "ghmr_loss",
    "quality_focal_loss",
    "varifocal_loss",
]

#: A number of histogram bins, >= 1.
Bins = Annotated[int, Integer(low=1)]
#: The momentum of a running average, in [0, 1] (1: the running counts are used as they are).
Momentum = Annotated[float, Number(low=0.0, high=1.0)]


def _abs_pow(d: Tensor, e: float) -> Tensor:
    """|d|^e with 0^0 = 1 and a zero (not NaN) gradient at d = 0 for every e >= 0."""
    if e == 0.0:
        return torch.ones_like(d)
    if e == 2.0:
        return d * d
    a = d.abs()
    nonzero = a > 0
    return torch.where(nonzero, torch.where(nonzero, a, 1.0).pow(e), 0.0)


# --------------------------------------------------------------------------------------------------
# IoU-aware classification targets: dense qualities, or class indices with a score per row.
# --------------------------------------------------------------------------------------------------


def _split_target(fn: str, target: object, score: object) -> tuple[object, object]:
    """mmdetection's ``(labels, scores)`` target -> ``(labels, score)``."""
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            fail(
                fn,
                "target",
                "a tensor or a (labels, scores) pair",
                f"a {type(target).__name__} of length {len(target)}",
                TypeError,
            )
        if score is not None:
            fail(fn, "score", "None when the target is a (labels, scores) pair", "a tensor")
        return target[0], target[1]
    return target, score


def _score_option(
    fn: str, target: object, score: object, ignore_index: int | None
) -> Callable[[Tensor], Mapping[str, Any]]:
    """The pipeline option ``score``: validated against the logits and the index target."""

    def options(x: Tensor) -> Mapping[str, Any]:
        if score is None:
            return {"score": None}
        s = check_tensor(fn, "score", score)
        t = check_tensor(fn, "target", target)
        if t.shape == x.shape:
            fail(
                fn,
                "score",
                "None with dense targets of the logits' shape (they hold the quality)",
                "a tensor",
            )
        cdim = class_dim(x) if x.ndim else 0
        index_shape = tuple(x.shape[:cdim]) + tuple(x.shape[cdim + 1 :])
        if tuple(t.shape) != index_shape:
            return {"score": None}  # the pipeline reports the target's shape
        if tuple(s.shape) != index_shape:
            fail(
                fn,
                "score",
                f"one quality per class-index target, shape {index_shape}",
                f"shape {tuple(s.shape)}",
            )
        if not s.is_floating_point():
            fail(fn, "score", "a floating-point tensor", f"dtype {s.dtype}", TypeError)
        check_same_device(fn, logits=x, score=s)
        check_unit_interval(fn, "score", s)
        s = s.to(compute_dtype(x))
        if ignore_index is not None and t.device == s.device:
            s = torch.where(t != ignore_index, s, 0.0)  # ignored rows: no stray NaN gradients
        return {"score": s}

    return options


def _quality(x: Tensor, t: DenseTarget, score: Tensor | None) -> Tensor:
    """The dense quality target: the one-hot of the index target times its score."""
    if score is None:
        return t.target
    return t.target * score.unsqueeze(class_dim(x))


def _qfl_composite(z: Tensor, y: Tensor, *, beta: float) -> Tensor:
    """The quality focal loss with differentiable operations (the specification)."""
    bce = TF.binary_cross_entropy_with_logits(z, y, reduction="none")
    return bce * _abs_pow(torch.sigmoid(z) - y, beta)


def _qfl_closed(
    z: Tensor, y: Tensor, need_grad: bool, *, beta: float
) -> tuple[Tensor, Tensor | None]:
    r"""The composite's loss and its derivative together, without autograd.

    With $p = \sigma(z)$, $d = p - y$ and $b = \operatorname{BCE}(z, y)$, $\ell = |d|^\beta b$
    and $\partial\ell/\partial z = |d|^\beta d + \beta |d|^{\beta - 1} \operatorname{sign}(d)\,
    p\,\sigma(-z)\, b$, the second term 0 at $d = 0$ (the composite's convention). The loss's
    operations are the composite's (PyTorch's BCE kernel, ``sigmoid(z) - y``); the derivative
    takes $\sigma(-z)$ from its own sigmoid pass (the composite's autograd forms $1 - p$) and
    is formed in place: 6 element-sized allocations for loss and derivative where the
    composite's autograd makes 12."""
    bce = TF.binary_cross_entropy_with_logits(z, y, reduction="none")
    p = torch.sigmoid(z)
    d = p - y
    focus = d * d if beta == 2.0 else _abs_pow(d, beta)
    loss = bce * focus
    if not need_grad:
        return loss, None
    if beta == 0.0:
        return loss, p.sub_(y)  # plain BCE: p - y
    if beta == 2.0:
        slope = d * 2.0
    else:
        # beta |d|^(beta - 1) sign(d), 0 at d = 0 (where the power is inf for beta < 1)
        slope = torch.where(d != 0, d.abs().pow_(beta - 1.0).mul_(d.sign()).mul_(beta), 0.0)
    slope.mul_(torch.sigmoid_(z.neg())).mul_(p).mul_(bce)
    return loss, focus.mul_(d).add_(slope)


def _qfl(
    x: Tensor, t: DenseTarget, _want_total: bool, *, beta: float, score: Tensor | None
) -> Tensor:
    spec = ClosedForm(upcast(partial(_qfl_closed, beta=beta)), partial(_qfl_composite, beta=beta))
    return closed_form_loss(x, _quality(x, t, score), spec)


@loss_function
def quality_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    beta: NonNegative = 2.0,
    score: BatchTensor | None = None,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Quality focal loss (GFL): a joint classification-quality score, trained towards the IoU.

    With $\sigma = \sigma(x)$ and a quality target $y \in [0, 1]$ per element (the IoU of the
    predicted box at its class, 0 for negatives),

    $$
    \ell = -\lvert y - \sigma\rvert^{\beta}\,\bigl[y \log \sigma + (1 - y)\log(1 - \sigma)\bigr].
    $$

    Negatives ($y = 0$) get $\sigma^\beta \operatorname{BCE}(x, 0)$; the gradient flows through
    the modulating factor too (as in the paper and mmdetection). Special cases: ``beta=0`` is
    ``binary_cross_entropy_with_logits`` with soft targets; with hard targets ($y \in \{0, 1\}$)
    it is ``sigmoid_focal_loss(alpha=None, gamma=beta)``.

    Targets (see the module docstring): dense qualities of the logits' shape; or class indices
    ``(N, *)`` (``C`` = background) with ``score`` ``(N, *)``, or mmdetection's
    ``(labels, scores)`` pair as the target. Values equal mmdetection's ``QualityFocalLoss``
    element by element; mmdetection then sums over the classes, so with ``avg_factor`` (what GFL
    heads pass) the results are equal, while here ``"none"`` keeps the logits' shape and
    ``"mean"`` without ``avg_factor`` divides by the number of elements (rows x C), as every
    sigmoid loss of the library does.

    Args:
        logits: Raw joint scores ``(N, C, *)``.
        target: Dense qualities of the logits' shape, class indices ``(N, *)``, or a
            ``(labels, scores)`` pair.
        beta: Focusing parameter $\beta \ge 0$.
        score: The quality in ``[0, 1]`` of each index target's positive class, shape
            ``(N, *)``; ``None`` = 1 (hard targets). Not allowed with dense targets.
        ignore_index: Ignored target value (indices: the row; dense: the element).
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight: the logits' shape or its leading dims (``(N,)`` = per row).
        reduction: ``"none"`` | ``"mean"`` (over valid elements) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (GFL: the number of positives).

    Returns:
        The logits' shape for ``"none"``, else a scalar.

    References:
        Li, Wang, Wu, Chen, Hu, Li, Tang, Yang, "Generalized Focal Loss: Learning Qualified and
        Distributed Bounding Boxes for Dense Object Detection", NeurIPS 2020, arXiv:2006.04388.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0]])
        >>> quality_focal_loss(logits, torch.tensor([1]), score=torch.tensor([0.5]))
        tensor(0.0866)
    """
    fn = "quality_focal_loss"
    index_or_dense, row_score = _split_target(fn, target, score)
    return pipeline.sigmoid(
        fn,
        logits,
        index_or_dense,
        loss=partial(_qfl, beta=beta),
        options=_score_option(fn, index_or_dense, row_score, ignore_index),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


def _vfl(
    x: Tensor,
    t: DenseTarget,
    _want_total: bool,
    *,
    alpha: float,
    gamma: float,
    iou_weighted: bool,
    score: Tensor | None,
) -> Tensor:
    z = in_compute_dtype(x)
    y = _quality(x, t, score)
    bce = TF.binary_cross_entropy_with_logits(z, y, reduction="none")
    negative = alpha * _abs_pow(torch.sigmoid(z) - y, gamma)
    positive = y if iou_weighted else torch.ones_like(y)
    return bce * torch.where(y > 0, positive, negative)


@loss_function
def varifocal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: NonNegative = 0.75,
    gamma: NonNegative = 2.0,
    iou_weighted: bool = True,
    score: BatchTensor | None = None,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Varifocal loss (VarifocalNet): asymmetric focal weighting of an IoU-aware score.

    With $p = \sigma(x)$ and an IoU-aware target $q \in [0, 1]$ (the IoU for a positive, 0 for a
    negative),

    $$
    \ell = \operatorname{BCE}(x, q)\cdot\begin{cases} q & q > 0 \\
    \alpha\, p^{\gamma} & q = 0 \end{cases}
    $$

    Only negatives are down-weighted; positives are weighted by their IoU (``iou_weighted=False``:
    by 1). The factor is differentiated (as in mmdetection and the paper's code). Values equal
    mmdetection's ``varifocal_loss`` element by element (its ``"none"``, ``"mean"`` over
    elements, weight and ``avg_factor`` match too). Here $\alpha$ weighs the negatives, unlike
    the focal loss's $\alpha$; ``alpha=1, gamma=0, iou_weighted=False`` with hard targets is
    ``binary_cross_entropy_with_logits``.

    Targets as for :func:`quality_focal_loss`: dense IoU-aware targets of the logits' shape (the
    format of VarifocalNet's head), class indices (``C`` = background) with ``score``, or a
    ``(labels, scores)`` pair.

    Args:
        logits: Raw IoU-aware classification scores ``(N, C, *)``.
        target: Dense targets in ``[0, 1]`` of the logits' shape, class indices ``(N, *)``, or a
            ``(labels, scores)`` pair.
        alpha: Weight of the negatives, $\alpha \ge 0$.
        gamma: Focusing parameter of the negatives, $\gamma \ge 0$.
        iou_weighted: Weight positives by their target IoU (else by 1).
        score: The IoU of each index target's positive class, ``(N, *)``; ``None`` = 1.
        ignore_index: Ignored target value (indices: the row; dense: the element).
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight: the logits' shape or its leading dims.
        reduction: ``"none"`` | ``"mean"`` (over valid elements) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (VFNet: the number of positives).

    Returns:
        The logits' shape for ``"none"``, else a scalar.

    References:
        Zhang, Wang, Dayoub, Sunderhauf, "VarifocalNet: An IoU-aware Dense Object Detector",
        CVPR 2021, arXiv:2008.13367.

    Example:
        >>> varifocal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.8, 0.0]]))
        tensor(0.3422)
    """
    fn = "varifocal_loss"
    index_or_dense, row_score = _split_target(fn, target, score)
    return pipeline.sigmoid(
        fn,
        logits,
        index_or_dense,
        loss=partial(_vfl, alpha=alpha, gamma=gamma, iou_weighted=iou_weighted),
        options=_score_option(fn, index_or_dense, row_score, ignore_index),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


# --------------------------------------------------------------------------------------------------
# Distribution focal loss: a continuous target over n + 1 bins as a two-hot distribution.
# --------------------------------------------------------------------------------------------------


class _TwoHot(NamedTuple):
    """A distance ``y`` as its two neighbouring bins: the left bin ``i = min(floor(y), n - 1)``
    (int64, the target's shape), the right bin's weight ``y - i`` (the left's is ``1 - w``) in
    the logits' compute dtype, and the positions whose distance was out of range (value checks
    off; ``None`` otherwise)."""

    left: Tensor
    right_w: Tensor
    bad: Tensor | None


def _two_hot(fn: str, logits: object, target: object) -> _TwoHot:
    """The distances, checked: in ``[0, n]`` (value checks on: out-of-range distances raise;
    off: their rows become NaN)."""
    x = check_tensor(fn, "logits", logits)
    if not x.is_floating_point():
        fail(fn, "logits", "to be a floating-point tensor", f"dtype {x.dtype}", TypeError)
    t = check_tensor(fn, "target", target)
    if t.is_complex() or t.dtype == torch.bool:
        fail(fn, "target", "real distances", f"dtype {t.dtype}", TypeError)
    if x.ndim == 0:
        fail(fn, "logits", "a tensor of shape (N, n + 1, *) or (n + 1,)", "a 0-d tensor")
    cdim = class_dim(x)
    c = x.shape[cdim]
    if c < 2:
        fail(fn, "logits", "at least 2 bins (n + 1 with n >= 1) along dim 1", f"{c} bins")
    index_shape = tuple(x.shape[:cdim]) + tuple(x.shape[cdim + 1 :])
    if tuple(t.shape) != index_shape:
        fail(fn, "target", f"one distance per position, shape {index_shape}", tuple(t.shape))
    check_same_device(fn, logits=x, target=t)
    n = c - 1
    y = t.to(compute_dtype(x))
    bad = None
    if y.numel() and value_checks_on(y):
        lo, hi = (float(v) for v in torch.aminmax(y.detach()))
        if not (lo >= 0.0 and hi <= n):  # NaN fails both
            fail(fn, "target", f"distances in [0, {n}] (n + 1 = {c} bins)", f"[{lo}, {hi}]")
    else:
        bad = ~((y >= 0) & (y <= n))
        y = torch.where(bad, 0.0, y)
    left = torch.floor(y).clamp(max=n - 1)
    return _TwoHot(left.long(), y - left, bad)


def _dfl(inputs: SoftmaxInput, _want_total: bool, *, two_hot: _TwoHot) -> Tensor:
    """``-[(1 - w) log S_i + w log S_{i+1}]`` from the log-softmax at the two bins (a gather of
    2 of the n + 1 bins: the two-hot distribution is never built, and the gradient of the gather
    is one scatter into the logits' shape)."""
    cdim = inputs.cdim
    left = cast(Tensor, inputs.target.index)  # the left bins, passed as class indices
    log_p = torch.log_softmax(inputs.z, dim=cdim)
    pair = log_p.gather(cdim, torch.stack((left, left + 1), dim=cdim))
    w = two_hot.right_w
    weights = torch.stack((1.0 - w, w), dim=cdim)
    # A bin of weight 0 (w = 0 at an integer distance, 1 - w = 0 at the end point n) adds 0
    # whatever its log-probability (-inf for a masked bin).
    loss = -torch.where(weights != 0, weights * pair, 0.0).sum(dim=cdim)
    if two_hot.bad is not None:
        loss = torch.where(two_hot.bad, float("nan"), loss)
    return loss


@loss_function
def distribution_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Distribution focal loss (GFL): a box side as a distribution over ``n + 1`` integer bins.

    For a continuous target distance $y \in [0, n]$ with neighbouring bins
    $y_i = \min(\lfloor y \rfloor, n - 1)$ and $y_{i+1} = y_i + 1$, and
    $S = \operatorname{softmax}(x)$ over the bins,

    $$
    \ell = -\bigl[(y_{i+1} - y)\log S_i + (y - y_i)\log S_{i+1}\bigr],
    $$

    the cross-entropy against the two-hot distribution that puts the mass of $y$ on its two
    neighbours (its expectation $\sum_k k\,S_k$ is $y$ at the optimum). An integer target $k$ is
    plain cross-entropy on bin $k$; the end point $y = n$ is allowed (the bins $n - 1, n$ with
    weights $0, 1$), where mmdetection would index bin $n + 1$.

    Equals mmdetection's ``DistributionFocalLoss`` (``pred`` ``(N, n + 1)``, ``label`` ``(N,)``,
    per-position weight, ``avg_factor``). Box heads with ``(N, 4, n + 1)`` predictions reshape to
    ``(N * 4, n + 1)`` as GFL does (or put the bins at dim 1: ``(N, n + 1, 4)``).

    Args:
        logits: Bin logits ``(N, n + 1, *)`` (the bins along dim 1, like class logits), or one
            ``(n + 1,)`` row.
        target: Distances in ``[0, n]``, shape ``(N, *)``; integer tensors are accepted.
        weight: Per-position weight: the target's shape or its leading dims.
        reduction: ``"none"`` | ``"mean"`` (over positions, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (GFL: 4 x the number of positives).

    Returns:
        The target's shape for ``"none"``, else a scalar.

    References:
        Li, Wang, Wu, Chen, Hu, Li, Tang, Yang, "Generalized Focal Loss: Learning Qualified and
        Distributed Bounding Boxes for Dense Object Detection", NeurIPS 2020, arXiv:2006.04388.

    Example:
        >>> distribution_focal_loss(torch.zeros(1, 5), torch.tensor([1.5]))
        tensor(1.6094)
    """
    fn = "distribution_focal_loss"
    two_hot = _two_hot(fn, logits, target)
    return pipeline.softmax(
        fn,
        logits,
        two_hot.left,
        loss=partial(_dfl, two_hot=two_hot),
        index_in_range=True,  # the left bins, in [0, n - 1]
        ignore_index=None,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


# --------------------------------------------------------------------------------------------------
# Gradient harmonizing mechanism: weights from the histogram of the gradient norms.
# --------------------------------------------------------------------------------------------------


def _bin_index(g: Tensor, bins: int) -> Tensor:
    """Bin ``i`` of ``g`` such that ``i / bins <= g < (i + 1) / bins`` (the last bin also holds
    ``g >= 1``): mmdetection's edges."""
    edges = torch.arange(1, bins, device=g.device, dtype=g.dtype) / bins
    # (bucketize copies a non-contiguous input itself, with a UserWarning: the copy made here)
    return torch.bucketize(g.contiguous(), edges, right=True)


def _counted(valid: Tensor | None, weight: Tensor | None) -> Tensor | None:
    """The elements that enter the histogram: valid (not ignored) with a positive weight."""
    mask = valid
    if weight is not None:
        mask = weight > 0 if mask is None else mask & (weight > 0)
    return mask


def _histogram(g: Tensor, counted: Tensor | None, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(bin index per element, local count, per-bin counts)``; the counts are summed over the
    ranks inside ``global_normalization()`` (one all-reduce of ``bins`` numbers)."""
    idx = _bin_index(g, bins)
    ones = torch.ones_like(g) if counted is None else counted.expand(g.shape).to(g.dtype)
    # out of place: under vmap the index and the ones are batched, a fresh zeros buffer is not
    counts = torch.zeros(bins, dtype=g.dtype, device=g.device).scatter_add(
        0, idx.reshape(-1), ones.reshape(-1)
    )
    local = ones.sum()
    if _reduction._denominator_hook is not None:
        from lossforge.distributed import all_reduce_sum, scope_group

        counts = all_reduce_sum(counts, group=scope_group())
    return idx, local, counts


def _check_bin_counts(fn: str, bin_counts: object, bins: int, like: Tensor) -> Tensor | None:
    if bin_counts is None:
        return None
    b = check_tensor(fn, "bin_counts", bin_counts)
    if b.is_complex() or b.dtype == torch.bool:
        fail(fn, "bin_counts", "a real tensor", f"dtype {b.dtype}", TypeError)
    if tuple(b.shape) != (bins,):
        fail(fn, "bin_counts", f"a 1-d tensor of length bins={bins}", f"shape {tuple(b.shape)}")
    check_same_device(fn, input=like, bin_counts=b)
    b = b.to(compute_dtype(like))
    if value_checks_on(b) and not bool((torch.isfinite(b) & (b >= 0)).all()):
        fail(fn, "bin_counts", "finite non-negative counts", b.tolist())
    return b


def _running(counts: Tensor, bin_counts: Tensor | None, momentum: float) -> Tensor:
    """``momentum * bin_counts + (1 - momentum) * counts`` on the bins ``counts`` fills, the old
    value elsewhere (mmdetection's update; ``None``: no history, zeros)."""
    if bin_counts is None:
        return counts if momentum == 0.0 else (1.0 - momentum) * counts
    prev = bin_counts.to(counts.dtype)
    return torch.where(counts > 0, momentum * prev + (1.0 - momentum) * counts, prev)


def _ghm_coefficient(
    g: Tensor, counted: Tensor | None, bins: int, bin_counts: Tensor | None, momentum: float
) -> tuple[Tensor, Tensor]:
    r"""The GHM weight $\beta_i = N / (n\,\mathrm{GD}(g_i))$ per element (0 outside the
    histogram) and the local number of counted elements (the ``"mean"`` denominator).

    $N$: counted elements, $n$: non-empty bins of this batch (both global inside
    ``global_normalization()``), $\mathrm{GD}$: the density of the element's bin, i.e. the
    running count after this batch's update (this batch's count where that is 0: only possible
    with ``momentum=1``).
    """
    idx, local, counts = _histogram(g, counted, bins)
    density = _running(counts, bin_counts, momentum)
    density = torch.where(density > 0, density, counts)
    nonempty = (counts > 0).sum().to(g.dtype)
    per_element = nonempty * density.gather(0, idx.reshape(-1)).reshape(idx.shape)
    ok = per_element > 0
    if counted is not None:
        ok = ok & counted
    coef = torch.where(ok, counts.sum() / torch.where(ok, per_element, 1.0), 0.0)
    return coef, local


def _ghmc(
    x: Tensor,
    t: DenseTarget,
    _want_total: bool,
    *,
    bins: int,
    momentum: float,
    bin_counts: Tensor | None,
    hist_weight: Tensor | None,
) -> Unreduced:
    z = in_compute_dtype(x)
    with torch.no_grad():
        g = (torch.sigmoid(z) - t.target).abs()
        counted = _counted(t.valid, hist_weight)
        coef, local = _ghm_coefficient(g, counted, bins, bin_counts, momentum)
    bce = TF.binary_cross_entropy_with_logits(z, t.target, reduction="none")
    return Unreduced(bce * coef, local)


def _ghmc_options(
    fn: str, bins: int, bin_counts: object, weight: object
) -> Callable[[Tensor], Mapping[str, Any]]:
    def options(x: Tensor) -> Mapping[str, Any]:
        w = None if weight is None else expand_weight(fn, weight, x.shape, x)
        return {"bin_counts": _check_bin_counts(fn, bin_counts, bins, x), "hist_weight": w}

    return options


@loss_function
def ghmc_loss(
    logits: Tensor,
    target: Tensor,
    *,
    bins: Bins = 10,
    momentum: Momentum = 0.0,
    bin_counts: BatchTensor | None = None,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Gradient harmonizing classification loss (GHM-C): BCE re-weighted by gradient density.

    The gradient norm of the BCE of element $i$ is $g_i = \lvert\sigma(x_i) - y_i\rvert$. With
    the norms binned into ``bins`` equal parts of $[0, 1]$, $N$ counted elements, $n$ non-empty
    bins and $\mathrm{GD}(g)$ the number of elements in $g$'s bin (with ``momentum``, its running
    count),

    $$
    \ell_i = \beta_i \operatorname{BCE}(x_i, y_i), \qquad \beta_i = \frac{N}{n\,\mathrm{GD}(g_i)},
    $$

    and ``"mean"`` divides the sum by $N$: each non-empty bin contributes the same total weight,
    so the mass of easy negatives (small $g$) and of outliers (large $g$) is harmonized. The
    weights are constants of the gradient (computed without autograd), as in the paper.

    The running form takes its state explicitly (this function writes nothing): ``bin_counts``
    holds the running counts before this batch (``None``: zeros, mmdetection's initial state) and
    the density of a bin this batch fills is
    ``momentum * bin_counts + (1 - momentum) * count`` (:func:`ghm_running_counts` returns the
    updated counts; ``GHMCLoss`` keeps them in its buffer). ``momentum=0`` (default) is this
    batch's histogram, mmdetection's ``GHMC(momentum=0)``; ``momentum=1`` uses ``bin_counts`` as
    they are (a bin they never counted uses this batch's count). Inside
    ``global_normalization()`` the histogram is summed over the ranks.

    Elements count in the histogram when they are valid (not ``ignore_index``) and their ``weight``
    is positive: mmdetection's ``label_weight > 0``. ``weight`` also multiplies the loss, as
    everywhere in the library (mmdetection uses ``label_weight`` only as that mask; for the 0/1
    label weights detection heads pass the two agree).

    Args:
        logits: Raw scores ``(N, C, *)``.
        target: Binary (or soft) targets of the logits' shape, or class indices ``(N, *)``
            (``C`` = background).
        bins: Number of gradient-norm bins, ``>= 1``.
        momentum: Weight of ``bin_counts`` in the density, in ``[0, 1]``.
        bin_counts: Running per-bin counts ``(bins,)`` before this batch, or ``None``.
        ignore_index: Ignored target value (indices: the row; dense: the element).
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight: the logits' shape or its leading dims.
        reduction: ``"none"`` | ``"mean"`` (divided by $N$, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of $N$.

    Returns:
        The logits' shape for ``"none"`` (the weighted element losses), else a scalar.

    References:
        Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019, arXiv:1811.05181.

    Example:
        >>> ghmc_loss(torch.tensor([[2.0, -1.0], [0.5, 0.0]]), torch.tensor([0, 2]), bins=2)
        tensor(0.5269)
    """
    fn = "ghmc_loss"
    return pipeline.sigmoid(
        fn,
        logits,
        target,
        loss=partial(_ghmc, bins=bins, momentum=momentum),
        options=_ghmc_options(fn, bins, bin_counts, weight),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


def ghmc_histogram(
    logits: Tensor,
    target: Tensor,
    *,
    bins: int = 10,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    r"""The per-bin counts of $g = \lvert\sigma(x) - y\rvert$ that :func:`ghmc_loss` weighs by.

    The statistic a running average is updated from (``GHMCLoss`` does
    ``acc = m * acc + (1 - m) * counts`` on the non-empty bins). Same arguments and rules as
    :func:`ghmc_loss`: ignored and zero-weight elements are not counted; inside
    ``global_normalization()`` the counts are summed over the ranks (every rank must call it).

    Args:
        logits: Raw scores ``(N, C, *)``.
        target: Binary targets of the logits' shape, or class indices ``(N, *)``.
        bins: Number of bins, ``>= 1``.
        ignore_index: Ignored target value.
        index_target: As in :func:`ghmc_loss` (what a target without the class dimension holds).
        weight: Element weight; elements with weight 0 are not counted.

    Returns:
        A ``(bins,)`` float tensor (float32, float64 for float64 logits), detached, on the
        logits' device; computed without a host sync.

    Example:
        >>> ghmc_histogram(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]]), bins=2)
        tensor([2., 0.])
    """
    fn = "ghmc_histogram"
    bins = check_int(fn, "bins", bins, low=1)
    x = check_floating(fn, "logits", logits)
    resolved = resolve_target(fn, x, target, index_target=index_target)
    t = sigmoid_target(fn, x, resolved, ignore_index=ignore_index)
    w = None if weight is None else expand_weight(fn, weight, x.shape, x)
    with torch.no_grad():
        g = (torch.sigmoid(x.detach().to(compute_dtype(x))) - t.target).abs()
        return _histogram(g, _counted(t.valid, w), bins)[2]


def _ghmr_terms(d: Tensor, mu: float) -> tuple[Tensor, Tensor]:
    """ASL1 loss sqrt(d^2 + mu^2) - mu (written without cancellation) and its gradient norm.

    At an infinite difference the loss is its limit |d| = +inf (gradient sign(d), the limit of
    d / sqrt(d^2 + mu^2)) and the gradient norm its limit 1, not inf / inf."""
    inf = d.isinf()
    finite = torch.where(inf, 0.0, d)
    root = torch.sqrt(finite * finite + mu * mu)
    loss = torch.where(inf, d.abs(), finite * finite / (root + mu))
    g = torch.where(inf, 1.0, finite.abs().detach() / root.detach())
    return loss, g


def _ghmr(
    p: Tensor,
    t: Tensor,
    _total: str | None,
    *,
    fn: str,
    mu: float,
    bins: int,
    momentum: float,
    bin_counts: object,
    weight: object,
) -> Unreduced:
    loss, g = _ghmr_terms(p - t, mu)
    w = None if weight is None else expand_weight(fn, weight, p.shape, p)
    counts = _check_bin_counts(fn, bin_counts, bins, p)
    with torch.no_grad():
        coef, local = _ghm_coefficient(g, _counted(None, w), bins, counts, momentum)
    return Unreduced(loss * coef, local)


@loss_function
def ghmr_loss(
    pred: Tensor,
    target: Tensor,
    *,
    mu: Positive = 0.02,
    bins: Bins = 10,
    momentum: Momentum = 0.0,
    bin_counts: BatchTensor | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Gradient harmonizing regression loss (GHM-R) on the authentic smooth L1 (ASL1) loss.

    With $d = x - y$, the ASL1 loss $\sqrt{d^2 + \mu^2} - \mu$ has the gradient norm
    $g = \lvert d\rvert / \sqrt{d^2 + \mu^2} \in [0, 1)$. Binned like :func:`ghmc_loss`,

    $$
    \ell_i = \frac{N}{n\,\mathrm{GD}(g_i)}\,\Bigl(\sqrt{d_i^2 + \mu^2} - \mu\Bigr),
    $$

    and ``"mean"`` divides by the number $N$ of counted elements (those with a positive
    ``weight``; mmdetection's ``label_weight > 0``, whose sum it divides by: equal for 0/1
    weights). ``momentum`` and ``bin_counts`` (the running form), the histogram rules and the
    distributed behaviour are those of :func:`ghmc_loss`; :func:`ghmr_histogram` gives the batch
    histogram.

    Args:
        pred: Predictions (box deltas), any shape ``(*)``.
        target: Same shape as ``pred``.
        mu: The ASL1 smoothing $\mu > 0$.
        bins: Number of gradient-norm bins, ``>= 1``.
        momentum: Weight of ``bin_counts`` in the density, in ``[0, 1]``.
        bin_counts: Running per-bin counts ``(bins,)`` before this batch, or ``None``.
        weight: Element-wise weight, ``pred``'s shape or its leading dimensions.
        reduction: ``"none"`` | ``"mean"`` (divided by $N$, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of $N$.

    Returns:
        ``pred``'s shape for ``"none"``, else a scalar.

    References:
        Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019, arXiv:1811.05181.

    Example:
        >>> ghmr_loss(torch.tensor([0.0, 1.0]), torch.tensor([0.01, 0.0]), bins=2)
        tensor(0.4913)
    """
    fn = "ghmr_loss"
    return pipeline.regression(
        fn,
        pred,
        target,
        loss=partial(
            _ghmr,
            fn=fn,
            mu=mu,
            bins=bins,
            momentum=momentum,
            bin_counts=bin_counts,
            weight=weight,
        ),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


def ghmr_histogram(
    pred: Tensor,
    target: Tensor,
    *,
    mu: float = 0.02,
    bins: int = 10,
    weight: Tensor | None = None,
) -> Tensor:
    r"""The per-bin counts of $g = \lvert d\rvert / \sqrt{d^2 + \mu^2}$ that :func:`ghmr_loss`
    weighs by (see :func:`ghmc_histogram`).

    Args:
        pred: Predictions, any shape.
        target: Same shape as ``pred``.
        mu: The ASL1 smoothing $\mu > 0$.
        bins: Number of bins, ``>= 1``.
        weight: Element weight; elements with weight 0 are not counted.

    Returns:
        A ``(bins,)`` float tensor, detached, on the predictions' device.

    Example:
        >>> ghmr_histogram(torch.tensor([0.0, 1.0]), torch.tensor([0.01, 0.0]), bins=2)
        tensor([1., 1.])
    """
    fn = "ghmr_histogram"
    bins = check_int(fn, "bins", bins, low=1)
    mu = check_number(fn, "mu", mu, low=0.0, low_open=True)
    p = check_floating(fn, "pred", pred)
    t = check_tensor(fn, "target", target)
    check_same_device(fn, pred=p, target=t)
    check_same_shape(fn, "target", t, "pred", p)
    cdt = compute_dtype(p)
    w = None if weight is None else expand_weight(fn, weight, p.shape, p)
    with torch.no_grad():
        _, g = _ghmr_terms(p.detach().to(cdt) - t.to(cdt), mu)
        return _histogram(g, _counted(None, w), bins)[2]


def ghm_running_counts(bin_counts: Tensor | None, histogram: Tensor, *, momentum: float) -> Tensor:
    r"""The running per-bin counts after one batch: ``momentum * bin_counts + (1 - momentum) *
    histogram`` on the bins ``histogram`` fills, ``bin_counts`` elsewhere (mmdetection's GHM
    update; ``None`` stands for zeros). What :func:`ghmc_loss` / :func:`ghmr_loss` divide by with
    the same ``momentum`` and ``bin_counts``; ``GHMCLoss`` / ``GHMRLoss`` store it.

    Args:
        bin_counts: The running counts before the batch ``(bins,)``, or ``None``.
        histogram: The batch's counts (:func:`ghmc_histogram`, :func:`ghmr_histogram`).
        momentum: In ``[0, 1]``.

    Returns:
        A new ``(bins,)`` tensor in ``histogram``'s dtype; computed on the device.

    Example:
        >>> ghm_running_counts(torch.tensor([4.0, 2.0]), torch.tensor([8.0, 0.0]), momentum=0.75)
        tensor([5., 2.])
    """
    fn = "ghm_running_counts"
    m = check_number(fn, "momentum", momentum, low=0.0, high=1.0)
    h = check_tensor(fn, "histogram", histogram)
    if h.ndim != 1 or not h.is_floating_point():
        fail(fn, "histogram", "a 1-d floating tensor of bin counts", f"{h.dtype} {tuple(h.shape)}")
    b = _check_bin_counts(fn, bin_counts, h.shape[0], h)
    return _running(h.detach(), b, m)
