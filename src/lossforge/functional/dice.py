"""Soft dice loss (V-Net) for binary, multi-label and multi-class segmentation."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lossforge import _reduction
from lossforge._checks import (
    as_class_weight,
    as_index_target,
    check_bool,
    check_choice,
    check_floating,
    check_index_range,
    check_number,
    check_optional_int,
    check_reduction,
    check_tensor,
    check_unit_interval,
    compute_dtype,
    fail,
    value_checks_enabled,
)
from lossforge._dispatch import kernel_eligible, unsupported
from lossforge._reduction import Backend, Reduction, check_avg_factor, weight_reduce

__all__ = ["dice_loss"]

Activation = Literal["softmax", "sigmoid", "none"]
ACTIVATIONS = ("softmax", "sigmoid", "none")


def _index_shape(x: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + tuple(x.shape[2:])


def _sum(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    # ``sum(dim=())`` would reduce every dimension; (N, C) inputs have nothing to sum per entry.
    return t.sum(dim=dims) if dims else t


def _dice_target(
    fn: str, x: Tensor, target: object, activation: str, ignore: int | None
) -> tuple[Tensor, Tensor | None]:
    """Dense ``(N, C, *)`` float target (ignored and absent entries 0) and the valid-pixel mask.

    The mask is ``(N, 1, *)`` for class-index targets (a pixel is ignored in every class) and
    ``(N, C, *)`` for dense targets (element-wise). Out-of-range class indices met while value
    checks are off become NaN in the dense target, so the loss of the affected entries is NaN.
    """
    t = check_tensor(fn, "target", target)
    if t.device != x.device:
        fail(fn, "target", f"on the device of `logits` ({x.device})", t.device)
    if t.is_complex():
        fail(fn, "target", "a real tensor", f"dtype {t.dtype}", TypeError)
    c = x.shape[1]
    cdtype = compute_dtype(x)
    if c == 1 and activation != "softmax" and tuple(t.shape) == _index_shape(x):
        t = t.unsqueeze(1)  # a binary mask (N, *) for a single (N, 1, *) logit channel
    if t.shape == x.shape:
        valid = None
        if ignore is not None:
            valid = t != ignore
            t = torch.where(valid, t, torch.zeros((), dtype=t.dtype, device=t.device))
        dense = t.to(cdtype)
        check_unit_interval(fn, "target", dense)
        return dense, valid
    if tuple(t.shape) != _index_shape(x):
        binary = " or a (N, *) binary mask" if c == 1 and activation != "softmax" else ""
        fail(
            fn,
            "target",
            f"dense targets of the logits' shape {tuple(x.shape)}, class indices of shape "
            f"{_index_shape(x)}{binary}",
            f"shape {tuple(t.shape)}",
        )
    idx = as_index_target(fn, t)
    background = activation == "sigmoid"
    check_index_range(fn, idx, c, ignore_index=ignore, allow_background=background)
    idx = idx.unsqueeze(1)
    classes = torch.arange(c, device=x.device).view((1, c) + (1,) * (x.ndim - 2))
    hit = idx == classes
    valid = None
    if ignore is not None:
        valid = idx != ignore
        hit = hit & valid  # ignore_index may be a valid class id
    dense = hit.to(cdtype)
    if not value_checks_enabled(idx):
        out = (idx < 0) | (idx > (c if background else c - 1))
        if valid is not None:
            out = out & valid
        dense = torch.where(out, torch.full((), float("nan"), dtype=cdtype, device=x.device), dense)
    return dense, valid


def _fused(
    fn: str,
    backend: object,
    x: Tensor,
    target: object,
    *,
    smooth: float,
    squared: bool,
    batch: bool,
    ignore: int | None,
    reduction: str,
) -> Tensor | None:
    """The fused softmax kernel for the cases it serves; ``None`` to fall back to the reference."""
    from lossforge.kernels import dice as fused

    t = check_tensor(fn, "target", target)
    why = fused.unsupported_reason(x, t, reduction)
    if why is None and batch and _reduction._denominator_hook is not None:
        why = "batch=True inside global_normalization() (the batch sums are all-reduced)"
    if why is not None:
        unsupported(fn, backend, why)  # type: ignore[arg-type]  # raises for "triton"
        return None
    if t.device != x.device:
        fail(fn, "target", f"on the device of `logits` ({x.device})", t.device)
    idx = as_index_target(fn, t)
    c = x.shape[1]
    check_index_range(fn, idx, c, ignore_index=ignore)
    total = fused.dice_loss(
        x,
        idx,
        smooth=smooth,
        squared=squared,
        per_sample=not batch,
        ignore_index=ignore,
        reduction="sum",
    )
    if reduction == "sum":
        return total
    # "mean": the reference's denominator, the number of (sample, class) entries with a valid pixel.
    if ignore is None:
        count = torch.tensor(float(c * (1 if batch else x.shape[0])), device=x.device)
    else:
        keep = (idx != ignore).flatten(1).any(dim=1) if idx.ndim > 1 else idx != ignore
        count = (keep.any() if batch else keep.sum()).to(torch.float32) * c
    return weight_reduce(total, fn=fn, reduction="mean", denominator=count)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    smooth: float = 1.0,
    squared: bool = False,
    batch: bool = False,
    ignore_index: int | None = None,
    class_weight: Tensor | list[float] | None = None,
    include_background: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
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
      negative, the library's sigmoid convention), or for a single channel ``C = 1`` a binary mask
      of shape ``(N, *)``.
    * ``"none"``: ``logits`` already are probabilities in ``[0, 1]``; targets as for
      ``"softmax"`` (or a ``(N, *)`` binary mask when ``C = 1``).

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
            is not softmax.
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"``.
        smooth: $s \ge 0$, added to numerator and denominator.
        squared: Squared denominators $\sum p^2 + \sum g^2$ (V-Net) instead of $\sum p + \sum g$.
        batch: Sum over the batch too: one loss per class.
        ignore_index: Target value whose pixels (index targets) or elements (dense targets) are
            left out of every sum.
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
    fn = "dice_loss"
    x = check_floating(fn, "logits", logits)
    act = check_choice(fn, "activation", activation, ACTIVATIONS)
    s = check_number(fn, "smooth", smooth, low=0.0)
    squared = check_bool(fn, "squared", squared)
    batch = check_bool(fn, "batch", batch)
    include_background = check_bool(fn, "include_background", include_background)
    ignore = check_optional_int(fn, "ignore_index", ignore_index)
    reduction = check_reduction(fn, reduction)
    check_avg_factor(fn, avg_factor, reduction)
    if x.ndim < 2:
        fail(fn, "logits", "a tensor of shape (N, C, *)", f"shape {tuple(x.shape)}")
    c = x.shape[1]
    if act == "softmax" and c < 2:
        fail(
            fn,
            "logits",
            "at least 2 channels with activation='softmax' (use 'sigmoid' for one binary channel)",
            f"C={c}",
        )
    if not include_background and c < 2:
        fail(fn, "include_background", "True when there is a single channel", include_background)
    w = as_class_weight(fn, class_weight, c, x)

    if (
        kernel_eligible(fn, backend, x)
        and act == "softmax"
        and w is None
        and weight is None
        and avg_factor is None
        and include_background
    ):
        out = _fused(
            fn,
            backend,
            x,
            target,
            smooth=s,
            squared=squared,
            batch=batch,
            ignore=ignore,
            reduction=reduction,
        )
        if out is not None:
            return out
    elif backend == "triton":
        unsupported(
            fn,
            "triton",
            "softmax, class-index targets, no class_weight/weight/avg_factor, background kept",
        )

    g, valid = _dice_target(fn, x, target, act, ignore)
    z = x.to(compute_dtype(x))
    if act == "softmax":
        p = torch.softmax(z, dim=1)
    elif act == "sigmoid":
        p = torch.sigmoid(z)
    else:
        check_unit_interval(fn, "logits", z)
        p = z
    if valid is not None:
        p = torch.where(valid, p, torch.zeros((), dtype=p.dtype, device=p.device))
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
        if valid is not None and valid.shape[1] > 1:
            valid = valid[:, 1:]
        if w is not None:
            w = w[1:]

    dims = tuple(range(2, x.ndim))
    if batch:
        dims = (0,) + dims
    inter = _sum(p * g, dims)
    card = _sum(p * p + g * g, dims) if squared else _sum(p + g, dims)
    count = None
    if valid is not None:
        count = _sum(valid.to(p.dtype), dims).expand_as(inter)
    if batch and _reduction._denominator_hook is not None:
        from lossforge.distributed import maybe_global_sum

        parts = [inter, card] if count is None else [inter, card, count]
        summed = maybe_global_sum(torch.stack(parts))
        inter, card = summed[0], summed[1]
        if count is not None:
            count = summed[2]

    num = 2.0 * inter + s
    den = card + s
    empty = den == 0  # only with smooth=0: empty target and empty prediction, defined as dice 1
    dice = torch.where(
        empty, torch.ones_like(num), num / torch.where(empty, torch.ones_like(den), den)
    )
    loss = 1.0 - dice
    if w is not None:
        loss = loss * w
    entry_valid = None if count is None else count > 0
    return weight_reduce(
        loss, fn=fn, reduction=reduction, weight=weight, avg_factor=avg_factor, valid=entry_valid
    )
