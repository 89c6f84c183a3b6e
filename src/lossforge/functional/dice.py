"""Soft dice loss (V-Net) for binary, multi-label and multi-class segmentation."""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._params import ClassValues, NonNegative, loss_function
from lossforge._pipeline import Fused
from lossforge._reduction import AvgFactor, Backend, Reduction

__all__ = ["dice_loss"]

Activation = Literal["softmax", "sigmoid", "none"]
ACTIVATIONS = pipeline.ACTIVATIONS


def _dice_stats(p: Tensor, g: Tensor, *, squared: bool) -> list[Tensor]:
    """The element-wise terms whose sums make the dice ratio: intersection and cardinality."""
    return [p * g, p * p + g * g if squared else p + g]


def _dice_combine(sums: list[Tensor], *, smooth: float) -> Tensor:
    """1 - (2 I + s) / (U + s) per entry; with ``smooth=0`` an empty entry (U = 0) is dice 1."""
    inter, card = sums
    num = 2.0 * inter + smooth
    den = card + smooth
    empty = den == 0  # only with smooth=0: empty target and empty prediction, defined as dice 1
    dice = torch.where(
        empty, torch.ones_like(num), num / torch.where(empty, torch.ones_like(den), den)
    )
    return 1.0 - dice


@loss_function
def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    smooth: NonNegative = 1.0,
    squared: bool = False,
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
    r"""Soft dice loss (V-Net) per sample and class, for binary, multi-label and multi-class masks.

    With $p$ the probabilities (``activation`` applied to ``logits``) and $g$ the dense target,
    for every sample $n$ and class $c$ (or for every class, summed over the batch, when
    ``batch=True``):

    $$
    \ell_{n,c} = 1 - \frac{2 \sum_i p_{n,c,i}\, g_{n,c,i} + s}
    {\sum_i p_{n,c,i}^{k} + \sum_i g_{n,c,i}^{k} + s},
    \qquad k = \begin{cases} 2 & \text{squared (V-Net)} \\ 1 & \text{plain} \end{cases}
    $$

    where $i$ runs over the spatial positions that are not ignored and $s$ is ``smooth``. The
    smoothing term sits in the numerator **and** the denominator, so a class absent from both the
    target and the prediction has loss 0, and a class absent from the target but predicted has a
    finite loss close to 1 (with finite gradients). With ``smooth=0`` the 0/0 case (empty target
    and empty prediction) is defined as loss 0. The loss lies in $[0, 1]$ for $p, g \in [0, 1]$.

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
        smooth: $s \ge 0$, added to numerator and denominator.
        squared: Squared denominators $\sum p^2 + \sum g^2$ (V-Net) instead of $\sum p + \sum g$.
        batch: Sum over the batch too: one loss per class.
        ignore_index: Target value whose pixels (index targets) or elements (dense targets) are
            left out of every sum.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        class_weight: ``(C,)`` non-negative weights of the per-class losses (list or tensor).
            Always of length C, also with ``include_background=False`` (its first entry is unused).
        include_background: ``False`` drops channel 0 from the loss (it still takes part in the
            softmax); needs ``C >= 2``.
        weight: Weight of the unreduced loss: ``(N,)`` per sample or ``(N, C)`` (``(C,)`` with
            ``batch=True``), without channel 0 when ``include_background=False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of valid entries.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``. The fused kernel serves softmax with
            class-index targets, no ``class_weight``, ``weight`` or ``avg_factor``,
            ``include_background=True`` and ``"mean"``/``"sum"``.

    Returns:
        ``"none"``: the per-entry losses, ``(N, C)`` (``(C,)`` with ``batch=True``; ``C - 1``
        columns without the background). Otherwise a scalar. float32 (float64 for float64 logits).

    References:
        Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
        Medical Image Segmentation", 3DV 2016, arXiv:1606.04797.
        Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly
        unbalanced segmentations", DLMIA 2017, arXiv:1707.03237.

    Example:
        >>> logits = torch.tensor([[[4.0, -4.0]], [[-4.0, 4.0]]]).unsqueeze(0)  # (1, 2, 1, 2)
        >>> target = torch.tensor([[[0, 1]]])  # (1, 1, 2)
        >>> dice_loss(logits, target, reduction="none").shape
        torch.Size([1, 2])
        >>> round(float(dice_loss(logits, target)), 4)
        0.0002
    """
    return pipeline.region(
        "dice_loss",
        logits,
        target,
        stats=partial(_dice_stats, squared=squared),
        combine=partial(_dice_combine, smooth=smooth),
        fused=Fused("dice", "dice", {"smooth": smooth, "squared": squared}),
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
