r"""Lovasz losses (Berman, Rannen Triki & Blaschko 2018): the convex Lovasz extension of the
Jaccard loss, evaluated at per-pixel errors.

For one entry (a sample and class, or a class over the batch) with binary ground truth $g$ and
per-pixel errors $m \ge 0$, let $\pi$ order the errors decreasingly. The Jaccard set loss of a set
$M$ of mispredicted pixels is $\Delta_J(M) = |M| / |\{g = 1\} \cup M|$, and its Lovasz extension is

$$
\overline{\Delta_J}(m) = \sum_{k=1}^{P} m_{\pi_k}\,
\bigl(\Delta_J(\{\pi_1, \dots, \pi_k\}) - \Delta_J(\{\pi_1, \dots, \pi_{k-1}\})\bigr),
$$

a piecewise-linear function of $m$ that equals $\Delta_J$ on binary error vectors (the paper's
Algorithm 1 computes the differences with cumulative sums). It is not a function of sums over the
pixels, so these losses use the region pipeline's ``region_entries`` (the errors of each entry are
sorted) rather than summed statistics. Ignored pixels reach the math with zero error and zero
target: they sort after every positive error and contribute neither value nor gradient, exactly as
if they were dropped (Berman's ``ignore``).
"""

from __future__ import annotations

import functools
from functools import partial
from typing import Literal

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import fail, value_checks_on
from lossforge._params import ClassValues, loss_function
from lossforge._pipeline import RegionInput
from lossforge._reduction import AvgFactor, Backend, Reduction

__all__ = ["lovasz_hinge_loss", "lovasz_softmax_loss"]

Activation = Literal["softmax", "sigmoid", "none"]
Classes = Literal["present", "all"]


def _check_binary(fn: str, g: Tensor) -> None:
    """The Lovasz extension is of a set function: dense targets must be 0/1 (checked where value
    checks run)."""
    if g.numel() == 0 or not value_checks_on(g):
        return
    binary = (g == 0) | (g == 1)
    if not bool(binary.all()):
        bad = g[~binary]
        fail(
            fn,
            "target",
            "binary values (0 or 1): the Lovasz extension is of the Jaccard loss of sets",
            f"{bad.numel()} other values, e.g. {float(bad[0])}",
        )


@functools.cache
def _radix_sort() -> bool:
    """Whether PyTorch sorts a long 1-d integer tensor by radix sort on the CPU (its FBGEMM
    radix sort with OpenMP; asked at the first Lovasz call, not at import)."""
    engines = torch.backends.quantized.supported_engines
    return "fbgemm" in engines and torch.backends.openmp.is_available()


def _sorted_decreasing(errors: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """The errors and the targets of each row (last dimension) in the order of decreasing error.

    A float sort of many rows compares floats row by row. For float32 errors on the CPU (none
    negative: ``|g - p|`` or a clamped hinge) the order is instead one stable sort of 1-d int64
    keys, row number above the error's bits read as an integer and reversed (for non-negative
    floats the order of the bit patterns is the order of the values, +inf and NaN above every
    finite value): PyTorch radix-sorts such a tensor, 3-4x faster at 19 x 131072 than the float
    sort. The errors are then gathered through the permutation (the gradient flows through that
    gather). Both orders are stable: tied errors keep their positions' order, so the two give the
    same gradient (at a tie the Lovasz extension's subgradient depends on the order; its value
    does not)."""
    shape = errors.shape
    size = shape[-1] if errors.ndim else 1
    rows = errors.numel() // size if size else 0
    if (
        errors.dtype != torch.float32
        or not errors.is_cpu
        or not 2**15 <= errors.numel() < 2**31
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or not _radix_sort()
    ):
        m_sorted, order = torch.sort(errors, dim=-1, descending=True, stable=True)
        return m_sorted, torch.gather(g.detach(), -1, order)
    # The sign bit is cleared: -0.0 is 0, and a NaN sorts first with either sign.
    bits = errors.detach().reshape(rows, size).view(torch.int32) & 0x7FFF_FFFF
    key = (0x7FFF_FFFF - bits).to(torch.int64)
    key += torch.arange(rows, dtype=torch.int64, device=key.device).unsqueeze(1) << 31
    perm = torch.sort(key.view(-1), stable=True)[1]
    m_sorted = errors.reshape(-1).gather(0, perm).view(shape)
    return m_sorted, g.detach().reshape(-1).gather(0, perm).view(shape)


def _lovasz_extension(errors: Tensor, g: Tensor) -> Tensor:
    """The Lovasz extension of the Jaccard loss along the last dimension (Algorithm 1)."""
    m_sorted, g_sorted = _sorted_decreasing(errors, g)
    total = g_sorted.sum(dim=-1, keepdim=True)
    # After the first k pixels: |G \ M| = total - cumsum(g), |G u M| = total + cumsum(1 - g) > 0.
    inter = total - g_sorted.cumsum(dim=-1)
    union = total + (1.0 - g_sorted).cumsum(dim=-1)
    jaccard = 1.0 - inter / union
    step = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
    # A step of 0 contributes 0 whatever the error (the limit; an infinite hinge error there would
    # otherwise give inf * 0 = NaN). The steps are finite, so the gradient stays finite.
    return torch.where(step != 0, m_sorted * step, 0.0).sum(dim=-1)


def _softmax_entries(inputs: RegionInput, *, classes: str, fn: str) -> tuple[Tensor, Tensor | None]:
    p, g = inputs.flat(inputs.p), inputs.flat(inputs.g)
    _check_binary(fn, g)
    loss = _lovasz_extension((g - p).abs(), g)
    # "present": a class with a positive pixel. Written as "not <= 0" so that an entry whose
    # target was poisoned to NaN (an out-of-range class index with value checks off) counts, and
    # its NaN loss reaches the result instead of being dropped as absent.
    present = ~(g.sum(dim=-1) <= 0) if classes == "present" else None
    return loss, present


def _hinge_entries(inputs: RegionInput, *, fn: str) -> tuple[Tensor, Tensor | None]:
    z, g = inputs.flat(inputs.z), inputs.flat(inputs.g)
    _check_binary(fn, g)
    errors = (1.0 - z * (2.0 * g - 1.0)).clamp(min=0.0)
    if inputs.valid is not None:
        errors = torch.where(inputs.flat(inputs.valid), errors, torch.zeros_like(errors))
    return _lovasz_extension(errors, g), None


@loss_function
def lovasz_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    classes: Classes = "present",
    activation: Activation = "softmax",
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
    r"""Lovasz-Softmax loss (Berman et al. 2018): the Lovasz extension of the Jaccard loss of each
    class at the probability errors $m_i = |g_i - p_i|$.

    For every sample $n$ and class $c$ (every class over the whole batch with ``batch=True``),
    with $p$ the probabilities (``activation`` applied) and $g$ the binary target over the pixels
    that are not ignored:

    $$
    \ell_{n,c} = \overline{\Delta_{J}}\bigl(m_{n,c}\bigr),\qquad m_{n,c,i} = |g_{n,c,i} - p_{n,c,i}|
    $$

    (the extension is defined in ``lossforge.functional.lovasz``). It is convex in $m$, equals
    the Jaccard loss $1 - \mathrm{IoU}$ of the prediction when $p$ is binary, and is a tight
    surrogate of the per-class IoU that the mean-IoU metric averages.

    ``classes="present"`` (Berman's default) counts only the entries whose class occurs in the
    (non-ignored) target: in ``"mean"``, and with ``"none"`` the other entries are 0.
    ``classes="all"`` counts every entry with a valid pixel; for a class absent from the target
    the loss is then the largest predicted probability of that class (pushing false positives
    down).

    **Per image or batch.** ``batch=False`` (default, the family's default; Berman's
    ``per_image=True``) gives one loss per (image, class); ``batch=True`` sorts the errors of the
    whole batch per class (Berman's and SMP's default ``per_image=False``). ``"mean"`` averages
    the counted entries: with ``batch=False`` and ``classes="present"`` that is the mean over the
    (image, present class) pairs, while Berman averages per image first and then over the images
    (the two agree when every image has the same number of present classes; an image whose pixels
    are all ignored is left out here and counted as 0 there). Inside
    ``lossforge.distributed.global_normalization()`` per-image entries reproduce one process on
    the concatenated batch; with ``batch=True`` the sort runs over each rank's own batch, so the
    ranks average the entries of all shards instead (only the ``"mean"`` denominator is global).

    Targets, ``activation``, ``ignore_index`` (ignored pixels are dropped, as Berman's
    ``ignore``), ``class_weight`` and ``include_background`` are those of
    :func:`lossforge.functional.dice_loss`; dense targets must be binary (checked where value
    checks run).

    Args:
        logits: ``(N, C, *)`` raw scores (probabilities for ``activation="none"``).
        target: ``(N, *)`` class indices, ``(N, C, *)`` binary masks, or a ``(N, *)`` mask when
            ``C = 1`` (sigmoid / none; float or bool, integer ones with ``index_target=False``).
        classes: ``"present"`` | ``"all"``: which entries count (see above).
        activation: ``"softmax"`` (default) | ``"sigmoid"`` (per-channel, multi-label) |
            ``"none"``.
        batch: One loss per class over the whole batch instead of per (image, class).
        ignore_index: Target value whose pixels (elements, for dense targets) are dropped.
        index_target: What a target without the class dimension holds with one logit channel:
            ``None`` (default) refuses to guess for an integer target, ``True`` reads class
            indices (0 = the class, 1 = background), ``False`` a mask (see :func:`dice_loss`).
        class_weight: ``(C,)`` non-negative weights of the per-class losses.
        include_background: ``False`` drops channel 0 from the loss (it stays in the softmax).
        weight: Weight of the ``(N, C)`` (``(C,)``) entries, or ``(N,)`` per image.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of counted entries.
        backend: ``"torch"`` | ``"auto"`` (no fused kernel: ``"triton"`` raises).

    Returns:
        ``"none"``: ``(N, C)`` per-entry losses (``(C,)`` with ``batch=True``; entries not counted
        are 0). Otherwise a scalar. float32 (float64 for float64 logits).

    References:
        Berman, Rannen Triki & Blaschko, "The Lovasz-Softmax loss: A tractable surrogate for the
        optimization of the intersection-over-union measure in neural networks", CVPR 2018,
        arXiv:1705.08790.

    Example:
        >>> logits = torch.tensor([[[[3.0, -2.0, 1.0]], [[-3.0, 2.0, 2.0]]]])  # (1, 2, 1, 3)
        >>> target = torch.tensor([[[0, 1, 1]]])
        >>> lovasz_softmax_loss(logits, target, reduction="none").shape
        torch.Size([1, 2])
        >>> hard = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float()
        >>> float(lovasz_softmax_loss(hard, target, activation="none"))  # a perfect prediction
        0.0
    """
    fn = "lovasz_softmax_loss"
    return pipeline.region_entries(
        fn,
        logits,
        target,
        loss=partial(_softmax_entries, classes=classes, fn=fn),
        activation=activation,
        ignore_index=ignore_index,
        class_weight=class_weight,
        include_background=include_background,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
        index_target=index_target,
    )


@loss_function
def lovasz_hinge_loss(
    logits: Tensor,
    target: Tensor,
    *,
    batch: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    class_weight: ClassValues | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Lovasz hinge loss (Berman et al. 2018): the Lovasz extension of the binary Jaccard loss at
    the hinge errors of the logits.

    For every image $n$ and channel $c$ (every channel over the batch with ``batch=True``), with
    logits $z$ and binary target $g$ over the pixels that are not ignored:

    $$
    \ell_{n,c} = \overline{\Delta_{J}}\bigl(m_{n,c}\bigr),\qquad
    m_{n,c,i} = \max\bigl(0,\; 1 - z_{n,c,i}\,(2 g_{n,c,i} - 1)\bigr).
    $$

    The channels are independent binary problems (binary segmentation with one ``(N, 1, *)``
    logit channel, or multi-label with ``C`` channels). Logits of the right sign and magnitude at
    least 1 give 0; logits of $\pm 1$ that are positive on a predicted mask give
    $2\,(1 - \mathrm{IoU})$ of that mask (kornia's convention note says the same). An image with
    an empty target still counts: its loss is the largest hinge error (pushing its largest logit
    below $-1$), as in Berman's reference.

    ``batch=False`` (default, Berman's ``per_image=True``) gives one loss per (image, channel);
    ``batch=True`` sorts the errors of the whole batch per channel (of each rank's own batch under
    ``global_normalization()``). ``"mean"`` averages the entries with at least one valid pixel.
    ``ignore_index`` drops pixels (index targets: in every channel) or elements (dense targets).

    Args:
        logits: ``(N, C, *)`` raw scores; ``C = 1`` for binary segmentation.
        target: ``(N, C, *)`` binary masks, ``(N, *)`` class indices in ``[0, C]`` (``C`` =
            background, every channel negative), or a ``(N, *)`` mask when ``C = 1`` (float or
            bool; an integer one with ``index_target=False``: Berman's, SMP's and kornia's
            ``(N, H, W)`` labels).
        batch: One loss per channel over the whole batch instead of per (image, channel).
        ignore_index: Target value whose pixels (elements, for dense targets) are dropped.
        index_target: What a target without the class dimension holds with one logit channel:
            ``None`` (default) refuses to guess for an integer target, ``True`` reads class
            indices (0 = the class, 1 = background), ``False`` a mask (see :func:`dice_loss`).
        class_weight: ``(C,)`` non-negative weights of the per-channel losses.
        weight: Weight of the ``(N, C)`` (``(C,)``) entries, or ``(N,)`` per image.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` instead of the number of counted entries.
        backend: ``"torch"`` | ``"auto"`` (no fused kernel: ``"triton"`` raises).

    Returns:
        ``"none"``: ``(N, C)`` per-entry losses (``(C,)`` with ``batch=True``). Otherwise a scalar.
        float32 (float64 for float64 logits).

    References:
        Berman, Rannen Triki & Blaschko, "The Lovasz-Softmax loss: A tractable surrogate for the
        optimization of the intersection-over-union measure in neural networks", CVPR 2018,
        arXiv:1705.08790.

    Example:
        >>> logits = torch.tensor([[[[2.0, -3.0, 1.5, -1.0]]]])  # (1, 1, 1, 4)
        >>> mask = torch.tensor([[[[1, 0, 1, 0]]]])  # (1, 1, 1, 4): the logits' shape
        >>> float(lovasz_hinge_loss(logits, mask))  # right sign, margins >= 1
        0.0
        >>> float(lovasz_hinge_loss(-logits, mask)) > 0
        True
        >>> float(lovasz_hinge_loss(logits, mask[:, 0], index_target=False))  # (N, *) labels
        0.0
    """
    fn = "lovasz_hinge_loss"
    return pipeline.region_entries(
        fn,
        logits,
        target,
        loss=partial(_hinge_entries, fn=fn),
        activation="sigmoid",
        ignore_index=ignore_index,
        class_weight=class_weight,
        include_background=True,
        batch=batch,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
        index_target=index_target,
    )
