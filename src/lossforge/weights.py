r"""Class weights from class counts (inverse frequency, median frequency, ENet, effective number),
and the counts from labels (``class_counts``).

The weights feed ``class_weight`` of ``cross_entropy``, ``softmax_focal_loss``, ``dice_loss`` and
the modules. This is set-up code, run once per dataset: it reads the counts' values (a host sync for
CUDA tensors) and computes in float64.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor

from lossforge._checks import check_choice, check_int, check_number, fail, is_ndarray

__all__ = ["class_counts", "class_weights", "drw_class_weights", "median_frequency_weights"]

Method = Literal["inverse", "inverse_sqrt", "median", "enet", "effective_number"]
Normalize = Literal["mean_one", "sum_one", "max_one"]
ZeroCount = Literal["as_one", "max", "zero"]

METHODS = ("inverse", "inverse_sqrt", "median", "enet", "effective_number")
NORMALIZE = ("mean_one", "sum_one", "max_one")
ZERO_COUNT = ("as_one", "max", "zero")

_FN = "class_weights"


def _as_counts(counts: object, fn: str = _FN) -> tuple[Tensor, torch.dtype, torch.device]:
    """Counts as a float64 CPU tensor, plus the output dtype and device."""
    if isinstance(counts, Tensor):
        t = counts
        if t.is_complex() or t.dtype == torch.bool:
            fail(fn, "counts", "real (integer or floating) counts", f"dtype {t.dtype}", TypeError)
        out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        device = t.device
        values = t.detach().to(device="cpu", dtype=torch.float64)
    else:
        out_dtype, device = torch.float32, torch.device("cpu")
        if hasattr(counts, "__array__") and hasattr(counts, "dtype") and hasattr(counts, "shape"):
            kind = getattr(counts.dtype, "kind", "")
            if kind not in ("i", "u", "f"):
                fail(
                    fn,
                    "counts",
                    "real (integer or floating) counts",
                    f"dtype {counts.dtype}",
                    TypeError,
                )
            if kind == "f" and getattr(counts.dtype, "itemsize", 0) == 8:
                out_dtype = torch.float64
            values = torch.as_tensor(counts).to(torch.float64)
        elif isinstance(counts, Sequence) and not isinstance(counts, (str, bytes)):
            items: list[Any] = list(counts)
            for v in items:
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    fail(fn, "counts", "a sequence of numbers", repr(counts), TypeError)
            values = torch.tensor([float(v) for v in items], dtype=torch.float64)
        else:
            fail(
                fn,
                "counts",
                "a 1-d tensor, array or sequence of numbers",
                type(counts).__name__,
                TypeError,
            )
    if values.ndim != 1:
        fail(fn, "counts", "a 1-d sequence (one count per class)", f"shape {tuple(values.shape)}")
    if values.numel() == 0:
        fail(fn, "counts", "at least one class", "an empty sequence")
    if not bool(torch.isfinite(values).all()):
        fail(fn, "counts", "finite values", values.tolist())
    if bool((values < 0).any()):
        fail(fn, "counts", "non-negative values", values.tolist())
    if not bool((values > 0).any()):
        fail(fn, "counts", "at least one positive count", values.tolist())
    return values, out_dtype, device


def class_counts(
    labels: Tensor | Iterable[Tensor],
    num_classes: int | None = None,
    *,
    ignore_index: int | None = None,
    class_dim: int = 1,
) -> Tensor:
    r"""Examples per class, counted from labels: the ``counts`` of :func:`class_weights` and the
    ``class_counts`` of the long-tail losses.

    ``labels`` is a tensor or an iterable of tensors (the label batches of a data loader:
    ``class_counts(y for _, y in loader, num_classes=C)``), each of one of two kinds:

    * integer class indices of any shape (``(N,)`` labels, ``(N, H, W)`` segmentation maps):
      each value ``0 .. C-1`` counts once, ``ignore_index`` is skipped, and any other value is
      an error (a label tensor is never mistaken for counts);
    * floating or bool targets with the classes on ``class_dim`` (``(N, C)`` multi-hot, ``(N, C,
      H, W)`` masks, soft labels): the sum over every other dimension (positives per label).

    Args:
        labels: A tensor or an iterable of tensors of one kind.
        num_classes: ``C``. Needed for class indices unless the largest label seen is the last
            class (a class absent from every batch would otherwise be missing at the end);
            checked against the class dimension of dense targets.
        ignore_index: Class indices only: the label value to skip.
        class_dim: Dense targets only: the class dimension (1: lossforge's ``(N, C, ...)``).

    Returns:
        ``(C,)`` counts on the CPU: int64 for class indices and bool targets, float64 for
        floating (possibly soft) targets.

    Raises:
        ValueError: an index outside ``[0, C)`` other than ``ignore_index``, no labels, or
            batches of different kinds or class numbers.
        TypeError: a batch that is not a tensor.

    Example:
        >>> class_counts(torch.tensor([0, 2, 2, 255]), num_classes=3, ignore_index=255)
        tensor([1, 0, 2])
        >>> class_counts(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        tensor([2., 1.], dtype=torch.float64)
    """
    fn = "class_counts"
    if num_classes is not None:
        num_classes = check_int(fn, "num_classes", num_classes, low=1)
    if ignore_index is not None:
        ignore_index = check_int(fn, "ignore_index", ignore_index)
    class_dim = check_int(fn, "class_dim", class_dim)
    if is_ndarray(labels) or (
        isinstance(labels, Sequence)
        and labels
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in labels)
    ):
        labels = torch.as_tensor(labels)  # a NumPy array, or a list of class indices
    batches: Iterable[object] = [labels] if isinstance(labels, Tensor) else labels
    if not isinstance(batches, Iterable) or isinstance(batches, (str, bytes)):
        fail(fn, "labels", "a tensor or an iterable of tensors", type(labels).__name__, TypeError)
    total: Tensor | None = None
    kind = ""
    for i, batch in enumerate(batches):
        where = "labels" if isinstance(labels, Tensor) else f"labels[{i}]"
        if is_ndarray(batch):
            batch = torch.as_tensor(batch)
        if not isinstance(batch, Tensor):
            fail(fn, where, "a tensor of labels", type(batch).__name__, TypeError)
        if batch.is_complex():
            fail(fn, where, "class indices or real targets", f"dtype {batch.dtype}", TypeError)
        dense = batch.is_floating_point() or batch.dtype == torch.bool
        this = "dense" if dense else "index"
        if kind and this != kind:
            fail(fn, where, f"{kind} labels as the batches before it", f"{this} labels")
        kind = this
        counts = _dense_counts(fn, where, batch, class_dim) if dense else None
        if counts is None:
            counts = _index_counts(fn, where, batch, num_classes, ignore_index)
        if total is not None and counts.numel() != total.numel():
            if dense:
                fail(fn, where, f"{total.numel()} classes as before", counts.numel())
            grown = torch.zeros(max(counts.numel(), total.numel()), dtype=total.dtype)
            grown[: total.numel()] += total
            grown[: counts.numel()] += counts
            total = grown
        else:
            total = counts if total is None else total + counts
    if total is None:
        fail(fn, "labels", "at least one batch of labels", "an empty iterable")
    if total.numel() == 0 and num_classes is None:
        fail(fn, "num_classes", "the number of classes (no label was counted)", None)
    if num_classes is not None and total.numel() != num_classes:
        if kind == "dense":
            fail(fn, "num_classes", f"the labels' {total.numel()} classes", num_classes)
        grown = torch.zeros(num_classes, dtype=total.dtype)
        grown[: total.numel()] = total
        total = grown
    return total


def _index_counts(
    fn: str, where: str, batch: Tensor, num_classes: int | None, ignore_index: int | None
) -> Tensor:
    idx = batch.detach().reshape(-1).to("cpu", torch.int64)
    if ignore_index is not None:
        idx = idx[idx != ignore_index]
    _check_indices(fn, where, idx, num_classes, ignore_index)
    return torch.bincount(idx, minlength=num_classes or 0)


def _check_indices(
    fn: str, where: str, idx: Tensor, num_classes: int | None, ignore_index: int | None
) -> None:
    """Class indices (ignored ones removed) within ``[0, num_classes)``, or non-negative."""
    if idx.numel():
        low, high = (int(v) for v in torch.aminmax(idx))
        limit = num_classes if num_classes is not None else high + 1
        if low < 0 or high >= limit:
            bad = low if low < 0 else high
            expected = (
                f"class indices in [0, {num_classes})"
                if num_classes is not None
                else "non-negative class indices"
            )
            if ignore_index is None and bad < 0:
                expected += " (pass ignore_index for an ignore label)"
            fail(fn, where, expected, bad)


def median_frequency_weights(
    labels: Tensor | Iterable[Tensor],
    num_classes: int,
    *,
    ignore_index: int | None = None,
    normalize: Normalize | None = None,
    zero_count: ZeroCount = "max",
    spatial_dims: int = 2,
) -> Tensor:
    r"""Median frequency balancing as Eigen & Fergus define it (and SegNet uses): class weights
    from label maps, with each class's frequency taken over the images in which it appears.

    With $n_c$ the pixels of class $c$ and $T_c$ the (non-ignored) pixels of the images that
    contain class $c$,

    $$
    f_c = n_c / T_c, \qquad w_c = \operatorname{median}_{k: n_k > 0}(f_k) / f_c .
    $$

    :func:`class_weights` with ``method="median"`` divides by all pixels instead ($f_c = n_c /
    N$), which makes a class that appears in few images look rarer than it is where it appears;
    this is the published definition. Classes that never appear get the ``zero_count`` rule of
    :func:`class_weights` (default ``"max"``: the largest weight among the others; ``"as_one"``
    would treat a frequency like a count).

    Args:
        labels: Class-index maps: one image (``spatial_dims`` dimensions, ``(H, W)``), a batch
            with the images along the first dimension (``(N, H, W)``), or an iterable of either
            (a data loader's label batches, a dataset's label maps).
        num_classes: ``C``.
        ignore_index: The label value to skip (neither a class pixel nor an image pixel).
        normalize: As in :func:`class_weights`; ``None`` (default) is the published weights, the
            median class at 1.
        zero_count: As in :func:`class_weights`: ``"max"`` (default) or ``"zero"``.
        spatial_dims: The dimensions of one image: 2 (default) for ``(H, W)`` maps, 3 for
            ``(D, H, W)`` volumes, 1 for sequences. The frequencies are per image, so a map
            must say where its images are: a tensor of ``spatial_dims`` dimensions is one image,
            one of ``spatial_dims + 1`` a batch of them, any other is refused (a single
            ``(H, W)`` map was read as ``H`` one-row images).

    Returns:
        ``(C,)`` float32 weights on the CPU.

    Raises:
        ValueError: an index outside ``[0, C)`` other than ``ignore_index``, labels of neither
            ``spatial_dims`` nor ``spatial_dims + 1`` dimensions, no class pixel at all.
        TypeError: a batch that is not a tensor of integers.

    References:
        Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common
        Multi-Scale Convolutional Architecture", ICCV 2015, arXiv:1411.4734 (section 4.4);
        Badrinarayanan et al., "SegNet", TPAMI 2017, arXiv:1511.00561.

    Example:
        >>> maps = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [2, 2]]])  # two 2 x 2 images
        >>> median_frequency_weights(maps, 3)  # f = 5/8, 1/4, 2/4: median 1/2
        tensor([0.8000, 2.0000, 1.0000])
    """
    fn = "median_frequency_weights"
    c = check_int(fn, "num_classes", num_classes, low=1)
    if ignore_index is not None:
        ignore_index = check_int(fn, "ignore_index", ignore_index)
    dims = check_int(fn, "spatial_dims", spatial_dims, low=1)
    # (a frequency is no count: "as_one" would give a never-seen class the smallest weight)
    check_choice(fn, "zero_count", zero_count, ("max", "zero"))
    if normalize is not None:
        check_choice(fn, "normalize", normalize, NORMALIZE)
    if is_ndarray(labels):
        labels = torch.as_tensor(labels)
    batches: Iterable[object] = [labels] if isinstance(labels, Tensor) else labels
    if not isinstance(batches, Iterable) or isinstance(batches, (str, bytes)):
        fail(fn, "labels", "a tensor or an iterable of tensors", type(labels).__name__, TypeError)
    pixels = torch.zeros(c, dtype=torch.float64)
    support = torch.zeros(c, dtype=torch.float64)
    for i, batch in enumerate(batches):
        where = "labels" if isinstance(labels, Tensor) else f"labels[{i}]"
        if is_ndarray(batch):
            batch = torch.as_tensor(batch)
        if (
            not isinstance(batch, Tensor)
            or batch.is_floating_point()
            or batch.is_complex()
            or batch.dtype == torch.bool
        ):
            kind = batch.dtype if isinstance(batch, Tensor) else type(batch).__name__
            fail(fn, where, "a tensor of class indices", kind, TypeError)
        if batch.ndim == dims:
            batch = batch.unsqueeze(0)  # one image
        elif batch.ndim != dims + 1:
            fail(
                fn,
                where,
                f"one label map of spatial_dims={dims} dimensions or a batch of them "
                f"({dims + 1} dimensions, the images along dim 0; spatial_dims=3 for volumes, "
                "1 for sequences)",
                f"shape {tuple(batch.shape)}",
            )
        if batch.numel() == 0:
            continue  # (an empty batch: no image, no pixel)
        idx = batch.detach().to("cpu", torch.int64).reshape(batch.shape[0], -1)
        valid = (
            torch.ones_like(idx, dtype=torch.bool) if ignore_index is None else idx != ignore_index
        )
        _check_indices(fn, where, idx[valid], c, ignore_index)
        image = torch.arange(idx.shape[0]).unsqueeze(1).expand_as(idx)
        per_image = (
            torch.bincount((image * c + idx)[valid], minlength=idx.shape[0] * c)
            .reshape(idx.shape[0], c)
            .to(torch.float64)
        )
        pixels += per_image.sum(0)
        support += ((per_image > 0) * per_image.sum(1, keepdim=True)).sum(0)
    if not bool((pixels > 0).any()):
        fail(fn, "labels", "at least one class pixel", "none (empty or all ignored)")
    freq = torch.where(support > 0, pixels / support.clamp_min(1), 0.0)
    # median(f) / f_c does not depend on the scale of f: class_weights' "median" of these
    # frequencies is the published weight
    return class_weights(
        freq.to(torch.float32), method="median", normalize=normalize, zero_count=zero_count
    )


def _dense_counts(fn: str, where: str, batch: Tensor, class_dim: int) -> Tensor:
    if batch.ndim < 2:
        fail(
            fn,
            where,
            "class indices (an integer tensor) or dense targets (N, C, ...) with a class dimension",
            f"a {batch.dtype} tensor of shape {tuple(batch.shape)}",
        )
    if not -batch.ndim <= class_dim < batch.ndim:
        fail(fn, "class_dim", f"a dimension of the {batch.ndim}-d targets", class_dim)
    t = batch.detach().to("cpu")
    t = t.to(torch.int64) if t.dtype == torch.bool else t.to(torch.float64)
    dims = [d for d in range(t.ndim) if d != class_dim % t.ndim]
    counts = t.sum(dim=dims)
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        fail(fn, where, "finite non-negative targets", counts.tolist())
    return counts


def _median(x: Tensor) -> float:
    """The statistical median (mean of the two middle values for an even number)."""
    v = sorted(x.tolist())
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def class_weights(
    counts: Tensor | Sequence[float] | Any,
    *,
    method: Method = "inverse",
    normalize: Normalize | None = "mean_one",
    zero_count: ZeroCount = "as_one",
    beta: float = 0.999,
    c: float = 1.02,
) -> Tensor:
    r"""Per-class loss weights from per-class counts (samples, pixels or boxes per class).

    With $n_c$ the count of class $c$, $N = \sum_c n_c$ and $f_c = n_c / N$ the frequency:

    $$
    w_c = \begin{cases}
    1 / n_c & \texttt{"inverse"} \\
    1 / \sqrt{n_c} & \texttt{"inverse\_sqrt"} \\
    \operatorname{median}_{k: n_k > 0}(f_k) / f_c & \texttt{"median"} \\
    1 / \ln(c + f_c) & \texttt{"enet"} \\
    (1 - \beta) / (1 - \beta^{n_c}) & \texttt{"effective\_number"}
    \end{cases}
    $$

    ``"median"`` is median frequency balancing (Eigen & Fergus 2015; SegNet): the median runs over
    the classes that occur and is the mean of the two middle values for an even number of them, so
    with ``normalize=None`` the median class gets weight 1. Its frequencies are over all the
    counts; :func:`median_frequency_weights` takes each class's frequency over the images that
    contain it, as the paper defines it. ``"enet"`` bounds the weights by
    $1/\ln c$ (about 50.5 for $c = 1.02$); it needs $c > 1$ so that $\ln(c + f_c) > 0$ for every
    frequency. ``"effective_number"`` is the class-balanced weight of Cui et al. (the inverse of
    $E_n = (1 - \beta^n)/(1 - \beta)$, the expected number of distinct samples): $\beta = 0$ gives
    uniform weights and $\beta \to 1$ tends to ``"inverse"``.

    A class with $n_c = 0$ would get an infinite weight under every method but ``"enet"``.
    ``zero_count`` decides instead, for every method (``"enet"`` included, for consistency):

    * ``"as_one"`` (default): the weight the class would get with a count of 1 (keeping $N$ and
      the median of the other classes): the largest finite weight of the formula for integer
      counts (not for counts below 1, such as frequencies, where a count of 1 is a large one; use
      ``"max"`` there), except for ``"enet"``, whose own value at 0, $1/\ln c$, is slightly
      larger. A class that never appears in the counts still has its false positives penalised
      (this matters for dice).
    * ``"max"``: the largest weight among the classes that occur.
    * ``"zero"``: weight 0 (the class is left out of the loss).

    ``normalize`` is applied last, over all classes: ``"mean_one"`` (default) scales the weights to
    mean 1, i.e. to sum to the number of classes $C$ (Cui et al.'s normalisation; it keeps the scale
    of a ``"mean"``-reduced loss); ``"sum_one"`` to sum 1; ``"max_one"`` to maximum 1; ``None``
    returns the formula's values.

    Args:
        counts: ``(C,)`` non-negative counts, as a list/tuple of numbers, a numpy array or a tensor
            (integer or floating). At least one count must be positive.
        method: ``"inverse"`` | ``"inverse_sqrt"`` | ``"median"`` | ``"enet"`` |
            ``"effective_number"``.
        normalize: ``"mean_one"`` | ``"sum_one"`` | ``"max_one"`` | ``None``.
        zero_count: ``"as_one"`` | ``"max"`` | ``"zero"``: the weight of zero-count classes.
        beta: $\beta \in [0, 1)$ of ``"effective_number"``.
        c: $c > 1$ of ``"enet"``.

    Returns:
        ``(C,)`` finite, non-negative weights: float64 for float64 input (tensor or array), float32
        otherwise, on the input tensor's device (CPU for lists and arrays).

    Raises:
        TypeError: ``counts`` is not numeric (bool, complex, strings), or ``beta``/``c`` is not a
            number.
        ValueError: ``counts`` is not 1-d, is empty, has negative, non-finite or only zero values;
            unknown ``method``/``normalize``/``zero_count``; ``beta`` outside $[0, 1)$; ``c <= 1``.

    References:
        Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic
        Segmentation", 2016, arXiv:1606.02147.
        Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common
        Multi-Scale Convolutional Architecture", ICCV 2015, arXiv:1411.4734.
        Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019,
        arXiv:1901.05555.

    Example:
        >>> class_weights([10, 100, 1000], normalize="max_one")
        tensor([1.0000, 0.1000, 0.0100])
        >>> class_weights([10, 100, 1000], method="effective_number", beta=0.9, normalize=None)
        tensor([0.1535, 0.1000, 0.1000])
    """
    method = cast(Method, check_choice(_FN, "method", method, METHODS))
    if normalize is not None:
        normalize = cast(Normalize, check_choice(_FN, "normalize", normalize, NORMALIZE))
    zero_count = cast(ZeroCount, check_choice(_FN, "zero_count", zero_count, ZERO_COUNT))
    beta = check_number(_FN, "beta", beta, low=0.0, high=1.0, high_open=True)
    c = check_number(_FN, "c", c, low=1.0, low_open=True)
    n, out_dtype, device = _as_counts(counts)

    total = float(n.sum())
    if not math.isfinite(total):
        fail(_FN, "counts", "counts whose sum is finite in float64", f"a sum of {total}")
    present = n > 0
    med = _median(n[present] / total) if method == "median" else 0.0

    def formula(count: float) -> float:
        if method == "inverse":
            return 1.0 / count
        if method == "inverse_sqrt":
            return 1.0 / math.sqrt(count)
        if method == "median":
            return med / (count / total)
        if method == "enet":
            return 1.0 / math.log(c + count / total)
        # effective number. 1 - beta**n as -expm1(n log1p(-(1 - beta))): no cancellation for beta
        # near 1 (1 - beta is exact for a float beta in [0.5, 1)); for large n it tends to 1.
        if beta <= 0:
            return 1.0
        return (1.0 - beta) / -math.expm1(count * math.log1p(-(1.0 - beta)))

    values = [formula(v) if v > 0 else math.nan for v in n.tolist()]
    if not bool(present.all()):
        if zero_count == "as_one":
            fill = formula(1.0)
        elif zero_count == "max":
            fill = max(v for v in values if not math.isnan(v))
        else:
            fill = 0.0
        values = [fill if math.isnan(v) else v for v in values]
    w = torch.tensor(values, dtype=torch.float64)
    if normalize == "mean_one":
        w = w * (w.numel() / w.sum())
    elif normalize == "sum_one":
        w = w / w.sum()
    elif normalize == "max_one":
        w = w / w.max()
    return w.to(device=device, dtype=out_dtype)


def drw_class_weights(
    counts: Tensor | Sequence[float] | Any,
    epoch: int,
    *,
    start_epoch: int = 160,
    beta: float = 0.9999,
    zero_count: ZeroCount = "as_one",
) -> Tensor:
    r"""Class weights of the deferred re-weighting schedule (DRW, Cao et al. 2019) for an epoch.

    Before ``start_epoch`` every class weighs 1; from ``start_epoch`` on the weights are the
    effective-number weights of Cui et al., normalised to sum to the number of classes $C$:

    $$
    w_c = \begin{cases}
    1 & e < e_0 \\
    C\, \dfrac{(1 - \beta) / (1 - \beta^{n_c})}{\sum_k (1 - \beta) / (1 - \beta^{n_k})}
      & e \ge e_0
    \end{cases}
    $$

    This is kaidic/LDAM-DRW's ``--train_rule DRW`` (``betas = [0, 0.9999]``, switch at epoch 160
    of 200, ``per_cls_weights / sum * C``): ``class_weights(counts, method="effective_number",
    beta=beta, normalize="mean_one")`` after the switch. Pass the result as ``class_weight`` of
    ``ldam_loss`` (LDAM-DRW) or ``cross_entropy`` (CE-DRW), e.g. at the start of each epoch::

        loss_fn.class_weight = drw_class_weights(counts, epoch).to(device)

    A class with a zero count would get an infinite weight; ``zero_count`` decides instead (see
    ``class_weights``; the reference gives NaN there). Set-up code: it reads the counts' values
    (a host sync for CUDA tensors).

    Args:
        counts: ``(C,)`` training-set counts (list, array or tensor), non-negative, not all zero.
        epoch: The current epoch, ``>= 0`` (0-based, as in the reference).
        start_epoch: First epoch of the re-weighting, ``>= 0`` (the reference: 160).
        beta: $\beta \in [0, 1)$ of the effective number (the reference: 0.9999).
        zero_count: ``"as_one"`` | ``"max"`` | ``"zero"``: the weight of zero-count classes.

    Returns:
        ``(C,)`` weights, dtype and device as ``class_weights``.

    References:
        Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
        NeurIPS 2019, arXiv:1906.07413; Cui et al., "Class-Balanced Loss Based on Effective
        Number of Samples", CVPR 2019, arXiv:1901.05555.

    Example:
        >>> drw_class_weights([100, 10, 1], epoch=10, start_epoch=160)
        tensor([1., 1., 1.])
        >>> drw_class_weights([100, 10, 1], epoch=160, start_epoch=160, beta=0.9)
        tensor([0.2393, 0.3674, 2.3932])
    """
    fn = "drw_class_weights"
    epoch = check_int(fn, "epoch", epoch, low=0)
    start_epoch = check_int(fn, "start_epoch", start_epoch, low=0)
    beta = check_number(fn, "beta", beta, low=0.0, high=1.0, high_open=True)
    zero_count = check_choice(fn, "zero_count", zero_count, ZERO_COUNT)  # type: ignore[assignment]
    n, out_dtype, device = _as_counts(counts, fn)  # the same checks either side of the switch
    if epoch < start_epoch:
        return torch.ones(n.shape, dtype=out_dtype, device=device)
    return class_weights(
        counts,
        method="effective_number",
        beta=beta,
        normalize="mean_one",
        zero_count=zero_count,
    )
