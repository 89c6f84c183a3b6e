"""Classification losses: softmax cross-entropy, NLL, binary cross-entropy, and the long-tail
(prior-adjusted) softmax losses.

The softmax losses share one core (``_softmax_loss``): ``log_softmax`` over the class dimension in
the compute dtype, a ``gather`` for class-index targets (no one-hot is ever built), PyTorch's label
smoothing and class-weight formulas, and ``weight_reduce`` for weighting and reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import (
    check_unit_interval,
    compute_dtype,
    fail,
    host_vector,
    in_compute_dtype,
    value_checks_on,
)
from lossforge._params import (
    ClassValues,
    NonNegative,
    Probability,
    Weights,
    loss_function,
)
from lossforge._pipeline import Fused, Total
from lossforge._reduction import AvgFactor, Backend, Reduction
from lossforge._targets import DenseTarget
from lossforge.functional._closed_form import ClosedTotal, closed_form_total
from lossforge.functional._terms import as_pos_weight, softmax_ce

__all__ = [
    "balanced_softmax_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "logit_adjusted_loss",
    "nll_loss",
]

# Plain-call entries (``@loss_function(plain=...)``): a call with two tensors and at most
# ``ignore_index`` and ``reduction`` (BCE with logits: ``reduction``), each of an exact type whose
# value needs no check, runs PyTorch's kernels through the pipeline's plain-call helpers before the
# argument checks, the functional's body and the pipeline's entry; anything else returns None and
# takes the checked route (which meets the same helpers first).


def _nll_entry(fn: str, nll: str) -> Any:
    """The plain-call entry of cross-entropy (``nll="logits"``) or NLL (``"log_probs"``, also the
    input's name)."""

    def entry(
        *args: Any, ignore_index: object = -100, reduction: object = "mean", **other: Any
    ) -> Tensor | None:
        if (
            len(args) != 2
            or other
            or not pipeline.plain_index(ignore_index)
            or not pipeline.plain_reduction(reduction)
        ):
            return None
        return pipeline.plain_nll(fn, nll, args[0], args[1], nll, ignore_index, reduction)

    return entry


def _bce_with_logits_plain(*args: Any, reduction: object = "mean", **other: Any) -> Tensor | None:
    if len(args) != 2 or other or not pipeline.plain_reduction(reduction):
        return None
    return pipeline.plain_sigmoid(
        "binary_cross_entropy_with_logits", args[0], args[1], _BCE_PLAIN, reduction
    )


#: Prior given to a class with a zero count before taking its log (log(1e-12) ~ -27.6), so the
#: adjusted logits stay finite.
ZERO_PRIOR = 1e-12


@loss_function(plain=_nll_entry("cross_entropy", "logits"))
def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    label_smoothing: Probability = 0.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Softmax cross-entropy with ``torch.nn.functional.cross_entropy`` semantics.

    With $p = \operatorname{softmax}(x)$ over the class dimension, class weights $w$ (all 1 when
    unset), $C$ classes and smoothing $\varepsilon$, a class-index target $y$ gives

    $$
    \ell = (1 - \varepsilon)\, w_y\, (-\log p_y)
        + \frac{\varepsilon}{C} \sum_{c=1}^{C} w_c\, (-\log p_c)
    $$

    and a probability target $t$ gives

    $$
    \ell = -\sum_{c=1}^{C} w_c\, t'_c \log p_c, \qquad t' = (1 - \varepsilon)\, t + \varepsilon / C.
    $$

    ``"mean"`` divides the weighted sum by ``avg_factor`` when given; otherwise, for index targets,
    by $\sum_i w_{y_i}$ over the non-ignored positions (the number of non-ignored positions without
    ``class_weight``), and for probability targets by the number of positions (as PyTorch does,
    ``class_weight`` does not enter that denominator). Ignored positions give 0 in ``"none"``.
    The ``ignore_index`` class, if it is a valid class, still sits in the softmax denominator.

    Deviations from PyTorch: an empty batch, every target ignored, or all-zero weights of the valid
    targets give exactly 0 with zero gradients (PyTorch: NaN); integer targets of any integer dtype
    (int32, uint8, ...) are accepted; ``C = 1`` raises.

    Args:
        logits: Unnormalised scores, ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``. Half inputs are
            computed in float32.
        target: Class indices of shape ``(N, d1, ..., dk)`` (or ``()``), any integer dtype, values
            in ``[0, C)`` or ``ignore_index``; or probabilities of the logits' shape (float),
            summing to 1 over the classes (a value check, tolerance ``1e-3 * C``).
        class_weight: Per-class weights, length ``C``, non-negative (tensor or list).
        ignore_index: Index target value that is ignored; ``None`` disables it. Must be left at its
            default with probability targets.
        label_smoothing: $\varepsilon \in [0, 1]$.
        weight: Element-wise weight of the unreduced loss (the target's shape or its leading dims).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (mmdetection convention); replaces the one above.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``: the fused softmax kernel serves CUDA
            float32 / float16 / bfloat16 logits with class-index or probability targets; other
            cases run the reference under ``"auto"`` and raise under ``"triton"``.

    Returns:
        ``"none"``: the loss per position, shape ``(N, d1, ..., dk)`` (``()`` for unbatched input);
        otherwise a scalar. float32 for half/float32 inputs, float64 for float64 inputs.

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision" (label
        smoothing), CVPR 2016, arXiv:1512.00567.

    Example:
        >>> logits = torch.tensor([[0.2, 0.3, 0.4], [-0.02, -0.13, 0.2], [0.5, -0.3, 0.73]])
        >>> cross_entropy(logits, torch.tensor([0, 2, 1]))
        tensor(1.3077)
    """
    return pipeline.softmax(
        "cross_entropy",
        logits,
        target,
        loss=partial(softmax_ce, eps=label_smoothing, log_softmax=True),
        fused=Fused("softmax", "ce", {"label_smoothing": label_smoothing}),
        # PyTorch's cross-entropy on the CPU; with smoothing only without class weights (where
        # the "mean" of an all-zero weight sum differs: 0 here, NaN there)
        nll="logits" if label_smoothing == 0.0 or class_weight is None else None,
        nll_smoothing=label_smoothing if class_weight is None else 0.0,
        class_weight=class_weight,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function(plain=_nll_entry("nll_loss", "log_probs"))
def nll_loss(
    log_probs: Tensor,
    target: Tensor,
    *,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Negative log-likelihood of class-index targets, ``torch.nn.functional.nll_loss`` semantics.

    $$
    \ell = -w_y\, z_y
    $$

    where $z$ are the given log-probabilities (usually ``log_softmax`` output; they are not
    normalised here) and $w$ the class weights (1 when unset). ``"mean"`` divides by
    $\sum_i w_{y_i}$ over the non-ignored positions, like PyTorch; empty or all-ignored batches give
    0 (PyTorch: NaN). ``nll_loss(log_softmax(x), y) == cross_entropy(x, y)``.

    Args:
        log_probs: Log-probabilities, ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``.
        target: Class indices, ``(N, d1, ..., dk)``, any integer dtype.
        class_weight: Per-class weights, length ``C``, non-negative.
        ignore_index: Ignored target value; ``None`` disables it.
        weight: Element-wise weight of the unreduced loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.

    Returns:
        The target's shape for ``"none"``, else a scalar.

    Example:
        >>> nll_loss(torch.tensor([[-0.5, -1.0], [-2.0, -0.1]]), torch.tensor([0, 1]))
        tensor(0.3000)
    """
    return pipeline.softmax(
        "nll_loss",
        log_probs,
        target,
        loss=partial(softmax_ce, eps=0.0, log_softmax=False),
        nll="log_probs",
        class_weight=class_weight,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        allow_probs=False,
        input_name="log_probs",
    )


def _safe_log(v: Tensor) -> Tensor:
    """``max(log v, -100)`` as in PyTorch's BCE, with a zero (not NaN) gradient where ``v == 0``."""
    positive = ~(v <= 0)  # NaN stays on the log path, so it propagates instead of becoming -100
    logv = torch.log(torch.where(positive, v, torch.ones_like(v)))
    logv = torch.where(positive, logv, torch.full_like(v, -100.0))
    return torch.clamp(logv, min=-100.0)


def _bce_probs(q: Tensor, t: DenseTarget, want_total: bool) -> Tensor:
    """-(y max(log p, -100) + (1 - y) max(log(1 - p), -100)), PyTorch's clamp."""
    p = q.to(compute_dtype(q))
    y = t.target
    if not value_checks_on(q):
        # A probability outside [0, 1] (a ValueError under value checks) makes its element NaN,
        # loud as an out-of-range class index is: not a negative loss (p > 1 at y = 1), -inf
        # (p = inf) or the clamp's plausible 100.
        p = torch.where((p >= 0) & (p <= 1), p, float("nan"))
    # log(1 - p) through log1p keeps precision near p = 0; its argument is 1 - p >= 0.
    one_minus = 1.0 - p
    positive = ~(one_minus <= 0)  # NaN propagates (see _safe_log)
    log1m = torch.log1p(-torch.where(positive, p, torch.zeros_like(p)))
    log1m = torch.clamp(torch.where(positive, log1m, torch.full_like(p, -100.0)), min=-100.0)
    return -(y * _safe_log(p) + (1.0 - y) * log1m)


@loss_function
def binary_cross_entropy(
    probs: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    ignore_index: int | None = None,
    index_target: bool | None = None,
) -> Tensor:
    r"""Binary cross-entropy on probabilities (``torch.nn.functional.binary_cross_entropy``).

    $$
    \ell = -\bigl[\, y \max(\log p, -100) + (1 - y) \max(\log(1 - p), -100) \,\bigr]
    $$

    The logs are clamped at $-100$ exactly as PyTorch does, so $p \in \{0, 1\}$ gives a finite loss
    (and a zero gradient where the clamp is active). Prefer ``binary_cross_entropy_with_logits``:
    it is stable and autocast-safe.

    Args:
        probs: Probabilities in ``[0, 1]``, any shape ``(*)``; values outside raise ``ValueError``
            (a value check).
        target: Dense targets in ``[0, 1]`` of ``probs``' shape (soft labels, bool and integers
            allowed), or class indices of ``probs``' shape without dim 1 (value ``C`` = all
            negative), as in ``binary_cross_entropy_with_logits``.
        weight: Element-wise weight, ``probs``' shape, its leading dims or same-rank broadcastable.
        reduction: ``"none"`` | ``"mean"`` (over valid elements) | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        ignore_index: Dense target value (or index-target row value) that is ignored.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).

    Returns:
        ``probs``' shape for ``"none"``, else a scalar.

    Example:
        >>> p = torch.tensor([[0.5, 0.1], [0.3, 0.2]])
        >>> binary_cross_entropy(p, torch.tensor([[0.0, 0.0], [1.0, 0.0]]), reduction="none")
        tensor([[0.6931, 0.1054],
                [1.2040, 0.2231]])
    """
    fn = "binary_cross_entropy"

    def checked(p: Tensor, t: DenseTarget, want_total: bool) -> Tensor:
        check_unit_interval(fn, "probs", p)
        return _bce_probs(p, t, want_total)

    return pipeline.sigmoid(
        fn,
        probs,
        target,
        loss=checked,
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        input_name="probs",
    )


def _bce_total(z: Tensor, y: Tensor, mean: bool) -> Tensor:
    # (1 - y) z - log sigma(z), PyTorch's formula and order: (1 - y) z is exactly 0 at y = 1, so
    # a confident, correct logit keeps its tiny loss. Three passes where PyTorch's kernel makes
    # five: softplus with beta = -1 is log sigma(z) in one pass (log_sigmoid also writes a buffer
    # for its backward); above the threshold it returns z, whose error e^z is below the ulp of z
    # in float64 too (e^-40 < 40 * 2^-52).
    out = torch.addcmul(z, y, z, value=-1.0)
    out.sub_(TF.softplus(z, beta=-1.0, threshold=40.0))
    return out.mean() if mean else out.sum()


def _bce_derivative(z: Tensor, y: Tensor) -> Tensor:
    return torch.sigmoid(z).sub_(y)


def _bce_composite(z: Tensor, y: Tensor) -> Tensor:
    return TF.binary_cross_entropy_with_logits(z, y, reduction="none")


#: BCE with logits reduced without weights: the total in three passes and the derivative
#: ``sigmoid(z) - y`` in the backward (two passes and the scaling: PyTorch's kernel makes five and
#: four).
_BCE_TOTAL = ClosedTotal(_bce_total, _bce_derivative, _bce_composite)

#: From this many elements on, ``_BCE_TOTAL`` replaces PyTorch's kernel: its custom Function costs
#: ~15-20 us more per forward + backward on the CPU, and what it saves is allocation and memory
#: traffic (three element-sized temporaries where PyTorch's kernel makes six), not arithmetic
#: (the softplus / log-sigmoid pass dominates both). Measured on the 2-core development VM (fwd+bwd,
#: value checks off, interleaved, 2026-12-03): with glibc's default allocator in a fresh process
#: 0.99x at 2^17 elements, 1.07-1.20x from 2^18 to 2^21; with the large temporaries reused
#: (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised) 0.96x at 2^17, 0.93x at 2^18,
#: 1.01-1.02x from 2^19 to 2^21. On a GPU it reads and writes 17 element-sized arrays against 20.
BCE_TOTAL_MIN_NUMEL = 1 << 18


def _bce_logits(
    x: Tensor,
    t: DenseTarget,
    want_total: bool | str,
    *,
    eps: float,
    pos_weight: Tensor | None = None,
) -> Tensor | Total:
    z = in_compute_dtype(x)
    y = t.target
    if eps > 0:
        y = y * (1.0 - eps) + 0.5 * eps
    if pos_weight is not None and pos_weight.requires_grad:
        # A learned pos_weight: PyTorch's kernel takes no gradient for it; the same formula with
        # differentiable operations.
        return -(pos_weight * y * TF.logsigmoid(z) + (1.0 - y) * TF.logsigmoid(-z))
    # PyTorch's fused, stable kernel (log1p(exp(-|x|)) form) for the element-wise term:
    # y * pw * -log sigma(x) + (1 - y) * -log(1 - sigma(x)); the tests check it against loop
    # references written from that formula. Called as the ATen operation (reduction 0 / 1 / 2 =
    # none / mean / sum): torch.nn.functional's wrapper only re-checks the shapes that the
    # pipeline has checked and maps the reduction's name (a microsecond of a plain call's ~35).
    if want_total:
        # Nothing element-wise to apply: the reduced closed form (``_BCE_TOTAL``), else PyTorch's
        # kernel sums (one pass fewer), or takes the plain mean itself (one division fewer).
        mean = want_total == "mean"
        if pos_weight is None and z.numel() >= BCE_TOTAL_MIN_NUMEL:
            total = closed_form_total(z, y, _BCE_TOTAL, mean)
            if total is not None:
                return Total(total, mean)
        return Total(
            torch.binary_cross_entropy_with_logits(z, y, None, pos_weight, 1 if mean else 2), mean
        )
    return torch.binary_cross_entropy_with_logits(z, y, None, pos_weight, 0)


#: The plain call's loss: no smoothing, no ``pos_weight``.
_BCE_PLAIN = partial(_bce_logits, eps=0.0)


@loss_function(plain=_bce_with_logits_plain)
def binary_cross_entropy_with_logits(
    logits: Tensor,
    target: Tensor,
    *,
    pos_weight: NonNegative | Weights | None = None,
    label_smoothing: Probability = 0.0,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Sigmoid binary cross-entropy on logits (binary and multi-label classification).

    With positive-class weight $w_+$ (1 when unset) and smoothing $\varepsilon$,

    $$
    \ell = -\bigl[\, w_+\, y' \log \sigma(x) + (1 - y') \log \sigma(-x) \,\bigr],
    \qquad y' = y\,(1 - \varepsilon) + \varepsilon / 2,
    $$

    computed as ``-logsigmoid(x)`` / ``-logsigmoid(-x)`` in float32 (never ``log(sigmoid(x))``),
    so it is finite with finite gradients at logits of $\pm 10^4$ in every dtype. With
    $\varepsilon = 0$ this is ``torch.nn.functional.binary_cross_entropy_with_logits``. Label
    smoothing moves both binary targets towards 1/2 (0 -> eps/2, 1 -> 1 - eps/2): SMP's
    ``smooth_factor`` with ``eps = 2 * smooth_factor``; timm's ``BinaryCrossEntropy`` instead uses
    eps/C for the negatives.

    Targets are dense (the logits' shape, soft labels allowed; elements equal to ``ignore_index``
    are ignored) or class indices of the logits' shape without the class dim (dim 1; dim 0 for 1-d
    logits): value ``k`` in ``[0, C)`` makes class ``k`` positive, value ``C`` means all negative
    (background), ``ignore_index`` drops the whole row. ``"mean"`` divides by the number of valid
    elements (rows x C for index targets).

    Args:
        logits: Raw scores, ``(N, C, *)`` (or any shape with dense targets).
        target: Dense targets in ``[0, 1]`` or class indices (see above).
        pos_weight: Weight of the positive term (a number, list or tensor), broadcast against the
            logits exactly as in PyTorch:
            a ``(C,)`` vector lines up with the **last** dimension (the class dim of ``(N, C)``
            logits); for ``(N, C, H, W)`` logits pass it as ``(C, 1, 1)``. Non-negative.
        label_smoothing: $\varepsilon \in [0, 1]$.
        ignore_index: Ignored target value; ``None`` disables it.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight, the logits' shape, its leading dims (``(N,)`` = per sample) or
            same-rank broadcastable.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``: the fused sigmoid kernel
            (``lossforge.kernels``) serves CUDA float32/float16/bfloat16 inputs, with ``pos_weight``
            a number or a ``(C,)`` vector on logits of at most 2 dims; other cases fall back under
            ``"auto"`` and raise under ``"triton"``.

    Returns:
        The logits' shape for ``"none"``, else a scalar.

    Example:
        >>> binary_cross_entropy_with_logits(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
        tensor(1.4100)
    """
    fn = "binary_cross_entropy_with_logits"

    def options(x: Tensor) -> dict[str, Any]:
        return {"pos_weight": None if pos_weight is None else as_pos_weight(fn, pos_weight, x)}

    return pipeline.sigmoid(
        fn,
        logits,
        target,
        loss=partial(_bce_logits, eps=label_smoothing),
        fused=Fused("sigmoid", "bce", {"label_smoothing": label_smoothing}),
        options=None if pos_weight is None else options,
        ignore_index=ignore_index,
        index_target=index_target,
        nan_in_total=True,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


def _log_prior(fn: str, values: object, name: str, like: Tensor) -> Tensor:
    """log(v / sum v) for class counts or priors, zero entries floored at ``ZERO_PRIOR``."""
    if isinstance(values, Tensor):
        v = values
        if v.device != like.device:
            fail(fn, name, f"on the device of `logits` ({like.device})", v.device)
    else:
        v = host_vector(
            fn,
            name,
            values,
            like,
            items="a sequence of numbers",
            kinds="a 1-d tensor or a sequence of numbers",
        )
    if v.is_complex() or v.dtype == torch.bool:
        fail(fn, name, "a real tensor", f"dtype {v.dtype}", TypeError)
    if like.ndim == 0:
        fail(fn, "logits", "a tensor of shape (N, C, *) or (C,)", "a 0-d tensor")
    c = like.shape[1 if like.ndim >= 2 else 0]
    if v.ndim != 1 or v.shape[0] != c:
        fail(fn, name, f"a 1-d tensor of length C={c}", f"shape {tuple(v.shape)}")
    v = v.to(compute_dtype(like))
    if value_checks_on(v):
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            fail(fn, name, "finite non-negative values", v.tolist())
        if not bool(v.sum() > 0):
            fail(fn, name, "at least one positive value", v.tolist())
    prior = (v / v.sum()).to(like.device)
    return torch.log(torch.clamp(prior, min=ZERO_PRIOR))


def _one_prior(owner: str, values: Mapping[str, Any]) -> None:
    if (values["class_counts"] is None) == (values["priors"] is None):
        fail(
            owner,
            "class_counts",
            "exactly one of `class_counts` and `priors`",
            "both" if values["priors"] is not None else "neither",
        )


@loss_function(check=_one_prior)
def logit_adjusted_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassValues | None = None,
    priors: ClassValues | None = None,
    tau: NonNegative = 1.0,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    label_smoothing: Probability = 0.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Logit-adjusted softmax cross-entropy for long-tailed labels (Menon et al. 2021).

    $$
    \ell = \operatorname{CE}\bigl(x + \tau \log \pi,\; y\bigr),
    \qquad \pi_c = n_c / \textstyle\sum_k n_k
    $$

    where $n$ are the class counts (or given priors, normalised the same way). Everything else
    (class weights, ``ignore_index``, label smoothing, the ``"mean"`` denominator) is exactly
    ``cross_entropy`` on the adjusted logits. ``tau=0`` is plain cross-entropy, ``tau=1`` is the
    Balanced Softmax loss. Use the raw logits (without the adjustment) at test time. Because
    cross-entropy is invariant to adding one constant to every logit, scaling the counts changes
    nothing. A class with count 0 gets the prior $10^{-12}$ ($\log \pi \approx -27.6$) instead of
    $\log 0 = -\infty$, so the loss and its gradient stay finite.

    Args:
        logits: ``(N, C, d1, ..., dk)`` or ``(C,)``.
        target: Class indices ``(N, d1, ..., dk)`` or probabilities of the logits' shape.
        class_counts: Training-set count per class, length ``C``, non-negative, not all zero.
        priors: Alternatively, class priors (exactly one of ``class_counts`` / ``priors``).
        tau: Adjustment strength $\tau \ge 0$.
        class_weight: Per-class weights passed to ``cross_entropy``.
        ignore_index: Ignored index target value; ``None`` disables it.
        label_smoothing: $\varepsilon \in [0, 1]$.
        weight: Element-wise weight of the unreduced loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``.

    Returns:
        As ``cross_entropy``.

    References:
        Menon et al., "Long-tail learning via logit adjustment", ICLR 2021, arXiv:2007.07314.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> logit_adjusted_loss(x, torch.tensor([0, 1]), class_counts=[90, 10], tau=1.0)
        tensor(0.7506)
    """
    fn = "logit_adjusted_loss"
    name, values = ("class_counts", class_counts) if priors is None else ("priors", priors)

    def bias(c: int, like: Tensor) -> Tensor:
        return tau * _log_prior(fn, values, name, like)

    return _prior_ce(
        fn,
        logits,
        target,
        bias,
        class_weight,
        ignore_index,
        label_smoothing,
        weight,
        reduction,
        avg_factor,
        backend,
    )


def _prior_ce(
    fn: str,
    logits: Tensor,
    target: Tensor,
    bias: Callable[[int, Tensor], Tensor],
    class_weight: object,
    ignore_index: int | None,
    label_smoothing: float,
    weight: Tensor | None,
    reduction: str,
    avg_factor: object,
    backend: object,
) -> Tensor:
    """Cross-entropy on logits shifted by a per-class bias (the prior-adjusted losses)."""
    return pipeline.softmax(
        fn,
        logits,
        target,
        loss=partial(softmax_ce, eps=label_smoothing, log_softmax=True),
        fused=Fused("softmax", "ce", {"label_smoothing": label_smoothing}),
        logit_bias=bias,
        # without smoothing, PyTorch's cross-entropy of the shifted logits (CPU: ``_cpu_nll``)
        nll="logits" if label_smoothing == 0.0 else None,
        class_weight=class_weight,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function
def balanced_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassValues,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    label_smoothing: Probability = 0.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Balanced Softmax cross-entropy for long-tailed labels (Ren et al. 2020).

    The softmax is reweighted by the class counts $n_c$, which is cross-entropy on prior-shifted
    logits:

    $$
    \ell = -\log \frac{n_y\, e^{x_y}}{\sum_c n_c\, e^{x_c}}
         = \operatorname{CE}\bigl(x + \log \pi,\; y\bigr),
    \qquad \pi_c = n_c / \textstyle\sum_k n_k .
    $$

    This is ``logit_adjusted_loss`` with ``tau=1``; uniform counts give plain ``cross_entropy``.
    Zero counts get the prior $10^{-12}$ (finite loss and gradients). Options are passed to
    ``cross_entropy`` unchanged.

    Args:
        logits: ``(N, C, d1, ..., dk)`` or ``(C,)``.
        target: Class indices ``(N, d1, ..., dk)`` or probabilities of the logits' shape.
        class_counts: Training-set count per class, length ``C``, non-negative, not all zero.
        class_weight: Per-class weights passed to ``cross_entropy``.
        ignore_index: Ignored index target value; ``None`` disables it.
        label_smoothing: $\varepsilon \in [0, 1]$.
        weight: Element-wise weight of the unreduced loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``.

    Returns:
        As ``cross_entropy``.

    References:
        Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020,
        arXiv:2007.10740.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> balanced_softmax_loss(x, torch.tensor([0, 1]), class_counts=[90, 10])
        tensor(0.7506)
    """
    fn = "balanced_softmax_loss"

    def bias(c: int, like: Tensor) -> Tensor:
        return _log_prior(fn, class_counts, "class_counts", like)

    return _prior_ce(
        fn,
        logits,
        target,
        bias,
        class_weight,
        ignore_index,
        label_smoothing,
        weight,
        reduction,
        avg_factor,
        backend,
    )
