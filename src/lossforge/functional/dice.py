r"""Overlap (region) losses: soft dice (V-Net), Tversky, focal Tversky, soft Jaccard (IoU) and
generalised dice, for binary, multi-label and multi-class segmentation.

They share one target convention, activation, ignore mask, per-class weighting and reduction
(``lossforge._pipeline.region``) and one smoothing rule: ``smooth`` is the shorthand for
``smooth_nr = smooth_dr = smooth``; ``smooth_nr`` / ``smooth_dr`` set the numerator and
denominator terms separately (MONAI's names). Giving ``smooth`` together with either raises, and
so does ``smooth_nr > smooth_dr`` (the ratio could then exceed 1 and the loss go below 0: an empty
target and an empty prediction would be penalised below the perfect score). Each loss's
statistics are sums of element-wise terms over the pixels, so ignored pixels leave every sum.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import fail
from lossforge._params import ClassValues, NonNegative, Positive, loss_function
from lossforge._pipeline import Fused
from lossforge._reduction import AvgFactor, Backend, Reduction

__all__ = [
    "dice_loss",
    "focal_tversky_loss",
    "generalized_dice_loss",
    "jaccard_loss",
    "tversky_loss",
]

Activation = Literal["softmax", "sigmoid", "none"]
WeightType = Literal["square", "simple", "uniform"]
ACTIVATIONS = pipeline.ACTIVATIONS


# --------------------------------------------------------------------------------------------------
# Smoothing: one rule for the family.
# --------------------------------------------------------------------------------------------------


def _is_non_negative(value: object) -> bool:
    # NaN is not
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value) >= 0


#: The smallest positive smoothing term: float32's ``tiny`` (low-precision inputs are computed in
#: float32).
_SMOOTH_MIN = torch.finfo(torch.float32).tiny


def _smoothing(values: Mapping[str, Any], default: float) -> tuple[float, float]:
    """``(smooth_nr, smooth_dr)``: each is its own value when given, else ``smooth``, else the
    loss's default."""
    smooth = values.get("smooth")
    base = default if smooth is None else float(smooth)
    nr, dr = values.get("smooth_nr"), values.get("smooth_dr")
    return (base if nr is None else float(nr)), (base if dr is None else float(dr))


def _check_smoothing(default: float) -> Callable[[str, Mapping[str, Any]], None]:
    def check(owner: str, values: Mapping[str, Any]) -> None:
        smooth, nr, dr = values.get("smooth"), values.get("smooth_nr"), values.get("smooth_dr")
        if any(v is not None and not _is_non_negative(v) for v in (smooth, nr, dr)):
            return  # the domain check reports the bad value itself
        if smooth is not None and (nr is not None or dr is not None):
            given = ", ".join(k for k, v in (("smooth_nr", nr), ("smooth_dr", dr)) if v is not None)
            fail(
                owner,
                "smooth",
                "None when smooth_nr or smooth_dr is given (smooth is the shorthand for "
                "smooth_nr = smooth_dr = smooth)",
                f"smooth={smooth!r} with {given}",
            )
        s_nr, s_dr = _smoothing(values, default)
        for key, v in (("smooth_nr", s_nr), ("smooth_dr", s_dr)):
            if 0.0 < v < _SMOOTH_MIN:
                fail(
                    owner,
                    "smooth" if smooth is not None else key,
                    f"0 or >= {_SMOOTH_MIN:.3g} (float32's smallest normal number: a subnormal "
                    "smoothing term underflows in float32 and gives NaN gradients)",
                    v,
                )
        if s_nr > s_dr:
            fail(
                owner,
                "smooth_nr",
                f"<= smooth_dr ({s_dr:g}; a larger numerator term lets the ratio exceed 1 and "
                "the loss go below 0)",
                s_nr,
            )

    return check


def _ratio(num: Tensor, den: Tensor, empty: float = 1.0) -> Tensor:
    """``num / den`` with 0/0 (only possible without smoothing: nothing to compare) defined as
    ``empty`` (a perfect score: 1 for an overlap ratio, 0 for a loss), with a safe denominator so
    that no NaN gradient leaks from the unused branch."""
    zero = den == 0
    return torch.where(
        zero, torch.full_like(num, empty), num / torch.where(zero, torch.ones_like(den), den)
    )


# --------------------------------------------------------------------------------------------------
# Element-wise statistics (summed over the pixels by the pipeline) and the per-entry math.
# --------------------------------------------------------------------------------------------------


def _dice_combine(sums: list[Tensor], *, smooth_nr: float, smooth_dr: float) -> Tensor:
    inter, sum_p, sum_g = sums
    return 1.0 - _ratio(2.0 * inter + smooth_nr, sum_p + sum_g + smooth_dr)


def _pooled_dice(
    inter: Tensor,
    card: Tensor,
    class_weight: Tensor | None,
    smooth_nr: float,
    smooth_dr: float,
) -> Tensor:
    """``1 - (2 sum_c w_c I_c + s_nr) / (sum_c w_c U_c + s_dr)``, pooled over the last dim."""
    if class_weight is not None:
        inter, card = inter * class_weight, card * class_weight
    return 1.0 - _ratio(2.0 * inter.sum(-1) + smooth_nr, card.sum(-1) + smooth_dr)


def _dice_pooled_combine(
    sums: list[Tensor], class_weight: Tensor | None, *, smooth_nr: float, smooth_dr: float
) -> Tensor:
    inter, sum_p, sum_g = sums
    return _pooled_dice(inter, sum_p + sum_g, class_weight, smooth_nr, smooth_dr)


def _tversky_stats(p: Tensor, g: Tensor, *, soft_label: bool) -> list[Tensor]:
    """True positives, false positives and false negatives (each element-wise non-negative).

    Without ``soft_label``: ``p g``, ``p`` and ``g``, whose sums carry the gradient
    (``FP = P - TP``, ``FN = G - TP``: the backward is one product and one sum of full-size
    tensors), and ``p - p g`` and ``g - p g`` without gradient, whose sums are the values of FP
    and FN (``_tversky_sums``). The subtraction of sums alone would lose the relative precision
    of a small FP or FN; ``p - p g`` and ``g - p g`` are ``p (1 - g)`` and ``(1 - p) g`` exactly
    for 0/1 targets (within the rounding of ``p`` itself for soft ones)."""
    if soft_label:
        return [torch.minimum(p, g), (p - g).clamp(min=0.0), (g - p).clamp(min=0.0)]
    tp = p * g
    with torch.no_grad():
        fp, fn = p - tp, g - tp
    return [tp, p, g, fp, fn]


def _tversky_sums(sums: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """TP, FP and FN from ``_tversky_stats``' sums. With the five sums of hard targets, FP's
    value is the direct sum and its derivative that of ``P - TP`` (``d + (v - d)`` with the
    correction detached: ``v`` to within an ulp, as ``v - d`` is tiny); FN the same."""
    if len(sums) == 3:
        tp, fp, fn = sums
        return tp, fp, fn
    tp, total_p, total_g, fp_value, fn_value = sums
    fp, fn = total_p - tp, total_g - tp
    return tp, fp + (fp_value - fp).detach(), fn + (fn_value - fn).detach()


def _tversky_combine(
    sums: list[Tensor], *, alpha: float, beta: float, smooth_nr: float, smooth_dr: float
) -> Tensor:
    """``1 - TI`` as ``(alpha FP + beta FN + s_dr - s_nr) / (TP + alpha FP + beta FN + s_dr)``:
    the same value without the cancellation of ``1 - TI`` near a perfect score (there it keeps
    its relative precision, where ``1 - TI`` in float32 rounds to 0 from about 1e-7); 0/0 is 0."""
    tp, fp, fn = _tversky_sums(sums)
    miss = alpha * fp + beta * fn
    return _ratio(miss + (smooth_dr - smooth_nr), tp + miss + smooth_dr, empty=0.0)


def _focal_tversky_combine(sums: list[Tensor], *, gamma: float, **kw: float) -> Tensor:
    base = _tversky_combine(sums, **kw).clamp(min=0.0)  # (a NaN stays NaN)
    if gamma == 1.0:
        return base
    # The derivative gamma * base^(gamma - 1) is infinite at base = 0 for gamma < 1: take the
    # power of a safe base and define the (minimal) perfect score's gradient as 0.
    # A NaN base (a position without a softmax, checks off) stays NaN: never a silent 0.
    pos = base > 0
    safe = torch.where(pos, base, torch.ones_like(base))
    return torch.where(pos, safe.pow(gamma), torch.where(base.isnan(), base, 0.0))


def _jaccard_combine(sums: list[Tensor], *, smooth_nr: float, smooth_dr: float) -> Tensor:
    """From the overlap sums (``pipeline.OverlapStats``): the union is ``P + G - I``
    (``p + g - p g``, squared ``p^2 + g^2 - p g``, soft ``max(p, g) = p + g - min(p, g)``),
    never below ``(P + G) / 2`` since ``I <= min(P, G)``, so the subtraction cancels no
    digits."""
    inter, sum_p, sum_g = sums
    return 1.0 - _ratio(inter + smooth_nr, sum_p + sum_g - inter + smooth_dr)


def _gdl_weights(volume: Tensor, weight_type: str) -> Tensor:
    """Sudre et al.'s per-class weights from the target volumes, with MONAI's rule for classes
    absent from the sample (batch): their infinite weight becomes the largest finite weight of
    the sample (0 when no class is present)."""
    if weight_type == "uniform":
        return torch.ones_like(volume)
    w = 1.0 / (volume * volume if weight_type == "square" else volume)
    absent = torch.isinf(w)
    finite = torch.where(absent, torch.zeros_like(w), w)
    largest = finite.amax(dim=-1, keepdim=True)
    return torch.where(absent, largest.expand_as(finite), finite)


def _gdl_combine(
    sums: list[Tensor],
    class_weight: Tensor | None,
    *,
    weight_type: str,
    smooth_nr: float,
    smooth_dr: float,
) -> Tensor:
    inter, sum_p, volume = sums
    w = _gdl_weights(volume.detach(), weight_type)
    if class_weight is not None:
        w = w * class_weight
    return _pooled_dice(inter, sum_p + volume, w, smooth_nr, smooth_dr)


# --------------------------------------------------------------------------------------------------
# dice_loss
# --------------------------------------------------------------------------------------------------


@loss_function(check=_check_smoothing(1.0))
def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    smooth: NonNegative | None = None,
    smooth_nr: NonNegative | None = None,
    smooth_dr: NonNegative | None = None,
    squared: bool = False,
    soft_label: bool = False,
    batch: bool = False,
    pool_classes: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    class_weight: ClassValues | None = None,
    include_background: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Soft dice loss (V-Net) per sample and class, for binary, multi-label and multi-class masks.

    With $p$ the probabilities (``activation`` applied to ``logits``) and $g$ the dense target,
    for every sample $n$ and class $c$ (or for every class, summed over the batch, when
    ``batch=True``):

    $$
    \ell_{n,c} = 1 - \frac{2 \sum_i p_{n,c,i}\, g_{n,c,i} + s_{nr}}
    {\sum_i p_{n,c,i}^{k} + \sum_i g_{n,c,i}^{k} + s_{dr}},
    \qquad k = \begin{cases} 2 & \text{squared (V-Net)} \\ 1 & \text{plain} \end{cases}
    $$

    where $i$ runs over the spatial positions that are not ignored. The smoothing terms sit in the
    numerator **and** the denominator: with ``smooth`` ($s_{nr} = s_{dr} = s$, default 1) a class
    absent from both the target and the prediction has loss 0, and a class absent from the target
    but predicted has a finite loss close to 1 (with finite gradients). ``smooth_nr`` and
    ``smooth_dr`` (MONAI's names) set them separately; each defaults to ``smooth``, giving
    ``smooth`` with either raises, and $s_{nr} \le s_{dr}$ is required (it keeps the loss in
    $[0, 1]$). MONAI's defaults are ``smooth_nr=smooth_dr=1e-5``; its common
    ``smooth_nr=0, smooth_dr=1e-5`` pins empty target + empty prediction at loss 1 (no reward for
    predicting nothing where nothing is). With $s_{nr} = s_{dr} = 0$ the 0/0 case (empty target
    and empty prediction) is defined as loss 0.

    ``soft_label=True`` takes the intersection as $\sum_i \min(p_i, g_i)$ (Wang & Blaschko 2023,
    MONAI's ``soft_label``): the same as $\sum_i p_i g_i$ for hard 0/1 targets, but with soft
    targets (label smoothing, averaged annotations) the plain-denominator loss is then 0 exactly at
    $p = g$, where $\sum p g$ would keep pushing $p$ towards 0/1. With ``squared=True`` it has no
    effect: $1 - 2\sum pg / (\sum p^2 + \sum g^2)$ already is 0 exactly at $p = g$.

    ``pool_classes=True`` pools the classes into one ratio per sample (kornia's ``"micro"``
    average; one ratio for the whole batch with ``batch=True``), with ``class_weight`` $w_c$
    weighting each class's terms:

    $$
    \ell_n = 1 - \frac{2 \sum_c w_c \sum_i p_{n,c,i} g_{n,c,i} + s_{nr}}
    {\sum_c w_c \left(\sum_i p_{n,c,i}^{k} + \sum_i g_{n,c,i}^{k}\right) + s_{dr}}.
    $$

    ``activation`` only says how $p$ is obtained; the formula and the output shape do not depend
    on it:

    * ``"softmax"`` (multi-class): softmax over dim 1; targets are class indices ``(N, *)`` in
      ``[0, C)`` or dense ``(N, C, *)`` (one-hot or soft) maps.
    * ``"sigmoid"`` (binary / multi-label): independent sigmoid per channel; targets are dense
      ``(N, C, *)`` masks, class indices ``(N, *)`` in ``[0, C]`` (``C`` = background: every channel
      negative, the library's sigmoid convention).
    * ``"none"``: ``logits`` already are probabilities in ``[0, 1]``; targets as for
      ``"softmax"``.

    A single channel (``C = 1``, sigmoid or none) reads a float or bool ``(N, *)`` target as a
    binary mask; an integer ``(N, *)`` target is ambiguous there (a mask, or class indices with
    0 = the class) and raises unless ``index_target`` says which (``False``: a mask), exactly as
    in the sigmoid-family losses. A mask of the logits' shape ``(N, 1, *)`` is never ambiguous.

    ``ignore_index`` removes pixels from *both* sums: with class-index targets a pixel whose label
    equals it counts in no class (unlike mmsegmentation, where it still counts as a false positive);
    with dense targets an element equal to it is removed from its own class. Ignoring pixels is the
    same as cropping them out. A (sample, class) entry whose pixels are all ignored is not counted
    in ``"mean"`` (as if the sample were not in the batch).

    ``"mean"`` averages the entries $w_c\,\ell_{n,c}$ (``class_weight`` $w_c$, element ``weight``)
    over the valid entries, or divides their sum by ``avg_factor``: the class weights scale the
    per-class losses and do not enter the denominator (as in MONAI, SMP and mmsegmentation), so
    weights normalised to mean 1 (``lossforge.class_weights(..., normalize="mean_one")``) keep the
    loss scale and uniform weights of 1 equal no weights.

    With ``batch=True`` the sums run over the whole batch ("global" dice); inside
    ``lossforge.distributed.global_normalization()`` they are summed over the data-parallel ranks,
    so K ranks reproduce one process on the concatenated batch.

    Args:
        logits: ``(N, C, *)`` raw scores (or probabilities for ``activation="none"``); ``(N, C)``
            gives one element per entry. float16/bfloat16 are computed in float32.
        target: ``(N, *)`` class indices (integer dtype), ``(N, C, *)`` dense targets in ``[0, 1]``
            (float, bool or integer), or ``(N, *)`` binary masks when ``C = 1`` and the activation
            is not softmax (integer ones with ``index_target=False``).
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"``.
        smooth: $s \ge 0$, the shorthand for ``smooth_nr = smooth_dr = smooth``; ``None`` is 1.0
            (unless ``smooth_nr`` / ``smooth_dr`` are given).
        smooth_nr: $s_{nr} \ge 0$ added to the numerator (default: ``smooth``).
        smooth_dr: $s_{dr} \ge s_{nr}$ added to the denominator (default: ``smooth``).
        squared: Squared denominators $\sum p^2 + \sum g^2$ (V-Net) instead of $\sum p + \sum g$.
        soft_label: Intersection $\sum \min(p, g)$ instead of $\sum p g$ (for soft targets).
        batch: Sum over the batch too: one loss per class.
        pool_classes: One ratio per sample over all classes (``"micro"``) instead of one per
            class.
        ignore_index: Target value whose pixels (index targets) or elements (dense targets) are
            left out of every sum.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        class_weight: ``(C,)`` non-negative weights of the per-class losses (list or tensor);
            with ``pool_classes`` the weights of each class's terms in the pooled sums.
            Always of length C, also with ``include_background=False`` (its first entry is unused).
        include_background: ``False`` drops channel 0 from the loss (it still takes part in the
            softmax); needs ``C >= 2``.
        weight: Weight of the unreduced loss: ``(N,)`` per sample or ``(N, C)`` (``(C,)`` with
            ``batch=True``), without channel 0 when ``include_background=False``; ``(N, 1)``
            with ``pool_classes``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of valid entries.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``. The fused kernel serves softmax with
            class-index targets, no ``class_weight``, ``weight`` or ``avg_factor``,
            ``include_background=True``, ``smooth_nr == smooth_dr``, no ``pool_classes`` and
            ``"mean"``/``"sum"``.

    Returns:
        ``"none"``: the per-entry losses, ``(N, C)`` (``(C,)`` with ``batch=True``; ``C - 1``
        columns without the background; ``(N, 1)`` / ``(1,)`` with ``pool_classes``). Otherwise a
        scalar. float32 (float64 for float64 logits).

    Raises:
        ValueError: ``smooth`` given with ``smooth_nr`` / ``smooth_dr``, or
            ``smooth_nr > smooth_dr``; besides the shared input checks.

    References:
        Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
        Medical Image Segmentation", 3DV 2016, arXiv:1606.04797.
        Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly
        unbalanced segmentations", DLMIA 2017, arXiv:1707.03237.
        Wang & Blaschko, "Dice Semimetric Losses: Optimizing the Dice Score with Soft Labels",
        MICCAI 2023, arXiv:2303.16296.

    Example:
        >>> logits = torch.tensor([[[4.0, -4.0]], [[-4.0, 4.0]]]).unsqueeze(0)  # (1, 2, 1, 2)
        >>> target = torch.tensor([[[0, 1]]])  # (1, 1, 2)
        >>> dice_loss(logits, target, reduction="none").shape
        torch.Size([1, 2])
        >>> round(float(dice_loss(logits, target)), 4)
        0.0002
        >>> dice_loss(logits, target, pool_classes=True, reduction="none").shape
        torch.Size([1, 1])
    """
    s_nr, s_dr = _smoothing({"smooth": smooth, "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}, 1.0)
    reason = None
    if s_nr != s_dr:
        reason = "smooth_nr != smooth_dr"
    elif pool_classes:
        reason = "pool_classes=True"
    return pipeline.region(
        "dice_loss",
        logits,
        target,
        stats=pipeline.OverlapStats(squared, soft_label),
        combine=partial(
            _dice_pooled_combine if pool_classes else _dice_combine,
            smooth_nr=s_nr,
            smooth_dr=s_dr,
        ),
        fused=Fused("dice", "dice", {"smooth": s_dr, "squared": squared}),
        fused_reason=reason,
        pool_classes=pool_classes,
        activation=activation,
        ignore_index=ignore_index,
        index_target=index_target,
        class_weight=class_weight,
        include_background=include_background,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


# --------------------------------------------------------------------------------------------------
# tversky_loss / focal_tversky_loss
# --------------------------------------------------------------------------------------------------


def _check_tversky(default: float) -> Callable[[str, Mapping[str, Any]], None]:
    smoothing = _check_smoothing(default)

    def check(owner: str, values: Mapping[str, Any]) -> None:
        smoothing(owner, values)
        alpha, beta = values.get("alpha"), values.get("beta")
        if _is_non_negative(alpha) and _is_non_negative(beta) and alpha == 0 and beta == 0:
            fail(
                owner,
                "alpha",
                "alpha + beta > 0 (with both 0 every prediction scores 1)",
                "alpha=0, beta=0",
            )

    return check


@loss_function(check=_check_tversky(1.0))
def tversky_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: NonNegative = 0.5,
    beta: NonNegative = 0.5,
    activation: Activation = "softmax",
    smooth: NonNegative | None = None,
    smooth_nr: NonNegative | None = None,
    smooth_dr: NonNegative | None = None,
    soft_label: bool = False,
    batch: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    class_weight: ClassValues | None = None,
    include_background: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Tversky loss (Salehi et al. 2017): dice with separate weights on false positives and false
    negatives.

    Per sample $n$ and class $c$ (per class over the batch with ``batch=True``), with the
    probabilities $p$ and the dense target $g$ summed over the positions $i$ that are not ignored:

    $$
    \mathrm{TP} = \sum_i p_i g_i,\quad \mathrm{FP} = \sum_i p_i (1 - g_i),\quad
    \mathrm{FN} = \sum_i (1 - p_i) g_i,
    \qquad
    \ell_{n,c} = 1 - \frac{\mathrm{TP} + s_{nr}}
    {\mathrm{TP} + \alpha\,\mathrm{FP} + \beta\,\mathrm{FN} + s_{dr}}.
    $$

    ``alpha`` weighs the false positives and ``beta`` the false negatives (Salehi's convention,
    shared by MONAI, SMP and kornia); ``beta > alpha`` favours recall (the paper uses
    $\alpha = 0.3$, $\beta = 0.7$ for small lesions). Special cases:

    * $\alpha = \beta = \tfrac12$: the plain-denominator dice, $1 - (2\,\mathrm{TP} + 2 s_{nr}) /
      (\sum p + \sum g + 2 s_{dr})$, i.e. ``dice_loss(smooth_nr=2 s_nr, smooth_dr=2 s_dr)``
      (identical at ``smooth=0``);
    * $\alpha = \beta = 1$: the soft Jaccard loss, ``jaccard_loss`` with the same smoothing.

    The smoothing follows the family's rule (``smooth`` = both terms, default 1.0; ``smooth_nr``
    / ``smooth_dr`` separately, MONAI's ``TverskyLoss``; ``smooth_nr <= smooth_dr``); 0/0 (no
    smoothing, nothing predicted or present that the weights count) is loss 0. ``soft_label=True``
    uses $\mathrm{TP} = \sum \min(p, g)$, $\mathrm{FP} = \sum (p - g)^+$,
    $\mathrm{FN} = \sum (g - p)^+$ (MONAI's ``soft_label``; equal for hard targets, and the loss is
    0 exactly at $p = g$ for soft ones). Targets, ``activation``, ``ignore_index``, ``batch``,
    ``class_weight``, ``include_background`` and the reduction are those of
    :func:`lossforge.functional.dice_loss`.

    Args:
        logits: ``(N, C, *)`` raw scores (probabilities for ``activation="none"``).
        target: Class indices ``(N, *)``, dense ``(N, C, *)`` targets, or a ``(N, *)`` binary
            mask when ``C = 1`` (see ``dice_loss``).
        alpha: Weight $\alpha \ge 0$ of the false positives.
        beta: Weight $\beta \ge 0$ of the false negatives ($\alpha + \beta > 0$).
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"``.
        smooth: Shorthand for ``smooth_nr = smooth_dr``; ``None`` is 1.0.
        smooth_nr: Numerator term (default: ``smooth``).
        smooth_dr: Denominator term, ``>= smooth_nr`` (default: ``smooth``).
        soft_label: The soft-label statistics (min / positive parts) instead of products.
        batch: One loss per class over the whole batch.
        ignore_index: Target value left out of every sum.
        index_target: What a target without the class dimension holds with one logit channel:
            ``None`` (default) refuses to guess for an integer target, ``True`` reads class
            indices, ``False`` a mask (see :func:`dice_loss`).
        class_weight: ``(C,)`` non-negative weights of the per-class losses.
        include_background: ``False`` drops channel 0 from the loss.
        weight: Weight of the ``(N, C)`` (``(C,)``) per-entry losses, or ``(N,)`` per sample.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of valid entries.
        backend: ``"torch"`` | ``"auto"`` (no fused kernel: ``"triton"`` raises).

    Returns:
        ``"none"``: ``(N, C)`` per-entry losses (``(C,)`` with ``batch=True``). Otherwise a scalar.

    Raises:
        ValueError: ``alpha = beta = 0``, ``smooth`` with ``smooth_nr`` / ``smooth_dr``,
            ``smooth_nr > smooth_dr``; besides the shared input checks.

    References:
        Salehi, Erdogmus & Gholipour, "Tversky loss function for image segmentation using 3D fully
        convolutional deep networks", MLMI 2017, arXiv:1706.05721.

    Example:
        >>> logits = torch.tensor([[[3.0, -3.0, 2.0]], [[-3.0, 3.0, -2.0]]]).unsqueeze(0)
        >>> target = torch.tensor([[[0, 1, 1]]])
        >>> fn_heavy = tversky_loss(logits, target, alpha=0.3, beta=0.7, reduction="none")
        >>> fn_heavy.shape
        torch.Size([1, 2])
        >>> bool(torch.allclose(tversky_loss(logits, target, smooth=0.5),
        ...                     dice_loss(logits, target, smooth=1.0)))
        True
    """
    s_nr, s_dr = _smoothing({"smooth": smooth, "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}, 1.0)
    return pipeline.region(
        "tversky_loss",
        logits,
        target,
        stats=partial(_tversky_stats, soft_label=soft_label),
        combine=partial(_tversky_combine, alpha=alpha, beta=beta, smooth_nr=s_nr, smooth_dr=s_dr),
        activation=activation,
        ignore_index=ignore_index,
        index_target=index_target,
        class_weight=class_weight,
        include_background=include_background,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function(check=_check_tversky(1.0))
def focal_tversky_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: NonNegative = 0.3,
    beta: NonNegative = 0.7,
    gamma: Positive = 0.75,
    activation: Activation = "softmax",
    smooth: NonNegative | None = None,
    smooth_nr: NonNegative | None = None,
    smooth_dr: NonNegative | None = None,
    soft_label: bool = False,
    batch: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    class_weight: ClassValues | None = None,
    include_background: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Focal Tversky loss (Abraham & Khan 2019): the Tversky loss raised to a power.

    With $\mathrm{TI}_{n,c}$ the Tversky index of :func:`lossforge.functional.tversky_loss`
    (``alpha`` on the false positives, ``beta`` on the false negatives, the same smoothing):

    $$
    \ell_{n,c} = \left(1 - \mathrm{TI}_{n,c}\right)^{\gamma}.
    $$

    **The exponent is ``gamma`` itself.** The paper writes $(1 - \mathrm{TI})^{1/\gamma}$ with
    $\gamma \in [1, 3]$ and uses $\gamma = 4/3$; its authors' code and SMP's
    ``TverskyLoss(gamma=...)`` take the exponent directly (0.75 in the authors' code). Here
    ``gamma`` is that exponent: the paper's $\gamma_{\text{paper}} = 1 / $ ``gamma``, and the
    default 0.75 is the paper's $4/3$. ``gamma < 1`` raises the loss of entries that are already
    well segmented (small $1 - \mathrm{TI}$) and so focuses training on the harder, typically
    small, structures; ``gamma = 1`` is ``tversky_loss``. The gradient at a perfect score
    ($1 - \mathrm{TI} = 0$, where $\gamma\,x^{\gamma - 1}$ is infinite for ``gamma < 1``) is
    defined as 0. The defaults $\alpha = 0.3$, $\beta = 0.7$ are the paper's (its $\alpha = 0.7$
    weighs the false negatives; in Salehi's convention, used here, that is ``beta``). The paper
    sums over the classes; here ``"mean"`` averages the entries like the rest of the family.

    Args:
        logits: ``(N, C, *)`` raw scores (probabilities for ``activation="none"``).
        target: Class indices ``(N, *)``, dense ``(N, C, *)`` targets, or a ``(N, *)`` binary
            mask when ``C = 1`` (see ``dice_loss``).
        alpha: Weight of the false positives.
        beta: Weight of the false negatives ($\alpha + \beta > 0$).
        gamma: The exponent ($> 0$; the paper's $1/\gamma$).
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"``.
        smooth: Shorthand for ``smooth_nr = smooth_dr``; ``None`` is 1.0.
        smooth_nr: Numerator term of the index (default: ``smooth``).
        smooth_dr: Denominator term, ``>= smooth_nr`` (default: ``smooth``).
        soft_label: The soft-label statistics of ``tversky_loss``.
        batch: One loss per class over the whole batch.
        ignore_index: Target value left out of every sum.
        index_target: What a target without the class dimension holds with one logit channel:
            ``None`` (default) refuses to guess for an integer target, ``True`` reads class
            indices, ``False`` a mask (see :func:`dice_loss`).
        class_weight: ``(C,)`` non-negative weights of the per-class losses.
        include_background: ``False`` drops channel 0 from the loss.
        weight: Weight of the ``(N, C)`` (``(C,)``) per-entry losses, or ``(N,)`` per sample.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of valid entries.
        backend: ``"torch"`` | ``"auto"`` (no fused kernel: ``"triton"`` raises).

    Returns:
        ``"none"``: ``(N, C)`` per-entry losses (``(C,)`` with ``batch=True``). Otherwise a scalar.

    Raises:
        ValueError: ``alpha = beta = 0``, ``gamma <= 0``, ``smooth`` with ``smooth_nr`` /
            ``smooth_dr``, ``smooth_nr > smooth_dr``; besides the shared input checks.

    References:
        Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for
        Lesion Segmentation", ISBI 2019, arXiv:1810.07842.

    Example:
        >>> logits = torch.tensor([[[3.0, -3.0, 2.0]], [[-3.0, 3.0, -2.0]]]).unsqueeze(0)
        >>> target = torch.tensor([[[0, 1, 1]]])
        >>> t = tversky_loss(logits, target, alpha=0.3, beta=0.7, reduction="none")
        >>> f = focal_tversky_loss(logits, target, reduction="none")  # gamma = 0.75
        >>> bool(torch.allclose(f, t ** 0.75))
        True
    """
    s_nr, s_dr = _smoothing({"smooth": smooth, "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}, 1.0)
    return pipeline.region(
        "focal_tversky_loss",
        logits,
        target,
        stats=partial(_tversky_stats, soft_label=soft_label),
        combine=partial(
            _focal_tversky_combine,
            gamma=gamma,
            alpha=alpha,
            beta=beta,
            smooth_nr=s_nr,
            smooth_dr=s_dr,
        ),
        activation=activation,
        ignore_index=ignore_index,
        index_target=index_target,
        class_weight=class_weight,
        include_background=include_background,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


# --------------------------------------------------------------------------------------------------
# jaccard_loss
# --------------------------------------------------------------------------------------------------


@loss_function(check=_check_smoothing(1.0))
def jaccard_loss(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    smooth: NonNegative | None = None,
    smooth_nr: NonNegative | None = None,
    smooth_dr: NonNegative | None = None,
    squared: bool = False,
    soft_label: bool = False,
    batch: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    class_weight: ClassValues | None = None,
    include_background: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Soft Jaccard (IoU) loss per sample and class.

    With the probabilities $p$ and the dense target $g$ summed over the positions $i$ that are not
    ignored (per sample $n$ and class $c$, or per class over the batch with ``batch=True``):

    $$
    I = \sum_i p_i g_i,\qquad U = \sum_i \left(p_i + g_i - p_i g_i\right),\qquad
    \ell_{n,c} = 1 - \frac{I + s_{nr}}{U + s_{dr}}.
    $$

    $U$ is the soft union ($|P| + |G| - |P \cap G|$). ``squared=True`` uses
    $U = \sum (p^2 + g^2 - p g)$ (MONAI's ``squared_pred`` with ``jaccard=True``);
    ``soft_label=True`` uses $I = \sum \min(p, g)$ and $U = \sum \max(p, g)$ (the same for hard
    targets; 0 exactly at $p = g$ for soft ones; SMP 0.5+ always computes it this way). This is
    ``tversky_loss`` with $\alpha = \beta = 1$, and $J = D / (2 - D)$ links it to the dice score
    $D$ at ``smooth=0``.

    Parity: SMP's ``JaccardLoss`` is ``jaccard_loss(batch=True, soft_label=True, smooth=...)``
    on the classes present in the batch (SMP sets the loss of absent classes to 0 but keeps them
    in the class mean, so a false-positive-only class costs nothing there). MONAI's
    ``DiceLoss(jaccard=True)`` computes $(2I + s_{nr}) / (2U + s_{dr})$: its smoothing terms are
    twice ours (``jaccard_loss(smooth_nr=a, smooth_dr=b)`` equals it with ``2a``, ``2b``).

    Smoothing, targets, ``activation``, ``ignore_index``, ``batch``, ``class_weight``,
    ``include_background`` and the reduction are those of :func:`lossforge.functional.dice_loss`.

    Args:
        logits: ``(N, C, *)`` raw scores (probabilities for ``activation="none"``).
        target: Class indices ``(N, *)``, dense ``(N, C, *)`` targets, or a ``(N, *)`` binary
            mask when ``C = 1`` (see ``dice_loss``).
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"``.
        smooth: Shorthand for ``smooth_nr = smooth_dr``; ``None`` is 1.0.
        smooth_nr: Numerator term (default: ``smooth``).
        smooth_dr: Denominator term, ``>= smooth_nr`` (default: ``smooth``).
        squared: $U = \sum (p^2 + g^2 - pg)$.
        soft_label: $I = \sum \min(p, g)$, $U = \sum \max(p, g)$.
        batch: One loss per class over the whole batch.
        ignore_index: Target value left out of every sum.
        index_target: What a target without the class dimension holds with one logit channel:
            ``None`` (default) refuses to guess for an integer target, ``True`` reads class
            indices, ``False`` a mask (see :func:`dice_loss`).
        class_weight: ``(C,)`` non-negative weights of the per-class losses.
        include_background: ``False`` drops channel 0 from the loss.
        weight: Weight of the ``(N, C)`` (``(C,)``) per-entry losses, or ``(N,)`` per sample.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of valid entries.
        backend: ``"torch"`` | ``"auto"`` (no fused kernel: ``"triton"`` raises).

    Returns:
        ``"none"``: ``(N, C)`` per-entry losses (``(C,)`` with ``batch=True``). Otherwise a scalar.

    Raises:
        ValueError: ``smooth`` with ``smooth_nr`` / ``smooth_dr``, ``smooth_nr > smooth_dr``;
            besides the shared input checks.

    References:
        Rahman & Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for Image
        Segmentation", ISVC 2016.
        Wang & Blaschko, "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels",
        NeurIPS 2023, arXiv:2302.05666.

    Example:
        >>> p = torch.tensor([[[0.5, 1.0]]])  # probabilities (1, 1, 2)
        >>> g = torch.tensor([[[1.0, 0.0]]])
        >>> jaccard_loss(p, g, activation="none", smooth=0.0)  # I = 0.5, U = 1.5 + 1 - 0.5
        tensor(0.7500)
    """
    s_nr, s_dr = _smoothing({"smooth": smooth, "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}, 1.0)
    return pipeline.region(
        "jaccard_loss",
        logits,
        target,
        stats=pipeline.OverlapStats(squared, soft_label),
        combine=partial(_jaccard_combine, smooth_nr=s_nr, smooth_dr=s_dr),
        activation=activation,
        ignore_index=ignore_index,
        index_target=index_target,
        class_weight=class_weight,
        include_background=include_background,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


# --------------------------------------------------------------------------------------------------
# generalized_dice_loss
# --------------------------------------------------------------------------------------------------


@loss_function(check=_check_smoothing(1e-5))
def generalized_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    weight_type: WeightType = "square",
    activation: Activation = "softmax",
    smooth: NonNegative | None = None,
    smooth_nr: NonNegative | None = None,
    smooth_dr: NonNegative | None = None,
    soft_label: bool = False,
    batch: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    class_weight: ClassValues | None = None,
    include_background: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Generalised dice loss (Sudre et al. 2017): one dice over all classes, each class weighted
    by the inverse of its target volume.

    Per sample $n$ (one value for the batch with ``batch=True``), with the probabilities $p$ and
    the dense target $g$ summed over the positions $i$ that are not ignored:

    $$
    \ell_n = 1 - \frac{2 \sum_c w_c \sum_i p_{c,i}\, g_{c,i} + s_{nr}}
    {\sum_c w_c \sum_i \left(p_{c,i} + g_{c,i}\right) + s_{dr}},
    \qquad
    w_c = \begin{cases} 1 / G_c^2 & \text{weight\_type="square"} \\
    1 / G_c & \text{"simple"} \\ 1 & \text{"uniform"} \end{cases},
    \quad G_c = \sum_i g_{c,i}.
    $$

    **Classes absent from the target** ($G_c = 0$, weight $\infty$ in the paper's formula):
    exactly as MONAI's ``GeneralizedDiceLoss``, their weight is replaced by the largest weight of
    the classes present in the same sample (over the batch with ``batch=True``), so predicting an
    absent class costs as much as a miss on the rarest present class; with no class present at
    all every weight is 0 and the loss is $1 - s_{nr}/s_{dr}$ (0 with the default smoothing). The
    weights are computed from the target only (no gradient flows through them); ``class_weight``
    multiplies them. ``weight_type="uniform"`` is ``dice_loss(pool_classes=True)``.

    The smoothing defaults to ``1e-5`` (MONAI's), not the family's 1.0: the weighted sums are of
    the order of $\sum_c 1 / G_c$, which a smoothing term of 1 would swamp. With ``"square"``
    weights and large volumes even 1e-5 is not negligible (MONAI behaves the same): pass
    ``smooth=0`` for the paper's unsmoothed ratio. ``soft_label=True`` uses $\sum \min(p, g)$ for
    the intersection (MONAI's ``soft_label``).

    Targets, ``activation``, ``ignore_index`` (ignored positions leave every sum, including
    $G_c$), ``batch`` and ``include_background`` are those of
    :func:`lossforge.functional.dice_loss`; under
    ``lossforge.distributed.global_normalization()`` with ``batch=True`` the per-class sums (and so
    the weights) are global.

    Args:
        logits: ``(N, C, *)`` raw scores (probabilities for ``activation="none"``).
        target: Class indices ``(N, *)``, dense ``(N, C, *)`` targets, or a ``(N, *)`` binary
            mask when ``C = 1`` (see ``dice_loss``).
        weight_type: ``"square"`` (the paper) | ``"simple"`` | ``"uniform"``.
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"``.
        smooth: Shorthand for ``smooth_nr = smooth_dr``; ``None`` is 1e-5.
        smooth_nr: Numerator term (default: ``smooth``).
        smooth_dr: Denominator term, ``>= smooth_nr`` (default: ``smooth``).
        soft_label: Intersection $\sum \min(p, g)$.
        batch: One loss for the whole batch (sums and weights over the batch).
        ignore_index: Target value left out of every sum.
        index_target: What a target without the class dimension holds with one logit channel:
            ``None`` (default) refuses to guess for an integer target, ``True`` reads class
            indices, ``False`` a mask (see :func:`dice_loss`).
        class_weight: ``(C,)`` non-negative factors on the volume weights $w_c$.
        include_background: ``False`` drops channel 0 from the loss.
        weight: Weight of the ``(N, 1)`` per-sample losses (or ``(N,)``); ``(1,)`` with
            ``batch=True``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of valid samples.
        backend: ``"torch"`` | ``"auto"`` (no fused kernel: ``"triton"`` raises).

    Returns:
        ``"none"``: ``(N, 1)`` per-sample losses (``(1,)`` with ``batch=True``; MONAI returns
        ``(N, 1, 1, ...)``). Otherwise a scalar. A sample whose positions are all ignored is not
        counted in ``"mean"``.

    Raises:
        ValueError: ``smooth`` with ``smooth_nr`` / ``smooth_dr``, ``smooth_nr > smooth_dr``;
            besides the shared input checks.

    References:
        Sudre, Li, Vercauteren, Ourselin & Cardoso, "Generalised Dice overlap as a deep learning
        loss function for highly unbalanced segmentations", DLMIA 2017, arXiv:1707.03237.
        Crum, Camara & Hill, "Generalized overlap measures for evaluation and validation in
        medical image analysis", IEEE TMI 2006.

    Example:
        >>> logits = torch.tensor([[[3.0, -3.0, 2.0, 1.0]], [[-3.0, 3.0, -2.0, 2.0]]]).unsqueeze(0)
        >>> target = torch.tensor([[[0, 1, 0, 0]]])
        >>> generalized_dice_loss(logits, target, reduction="none").shape
        torch.Size([1, 1])
        >>> bool(torch.allclose(
        ...     generalized_dice_loss(logits, target, weight_type="uniform", smooth=1.0),
        ...     dice_loss(logits, target, pool_classes=True)))
        True
    """
    s_nr, s_dr = _smoothing(
        {"smooth": smooth, "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}, 1e-5
    )
    return pipeline.region(
        "generalized_dice_loss",
        logits,
        target,
        stats=pipeline.OverlapStats(False, soft_label),
        combine=partial(_gdl_combine, weight_type=weight_type, smooth_nr=s_nr, smooth_dr=s_dr),
        pool_classes=True,
        activation=activation,
        ignore_index=ignore_index,
        index_target=index_target,
        class_weight=class_weight,
        include_background=include_background,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )
