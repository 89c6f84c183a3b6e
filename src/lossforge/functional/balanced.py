"""Class-balanced binary cross-entropy: HED's per-sample balanced BCE and DB/mmocr-style OHEM BCE.

Both are computed on logits with ``logsigmoid`` in float32 (float64 for float64 inputs) and end in
``weight_reduce``. Neither needs a host synchronisation: the OHEM selection is a stable sort of the
negative losses plus a rank comparison against a count that stays on the device.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge import _reduction
from lossforge._checks import (
    check_same_shape,
    check_tensor,
    check_unit_interval,
    fail,
    in_compute_dtype,
)
from lossforge._params import (
    BatchTensor,
    Count,
    NonNegative,
    Positive,
    Probability,
    loss_function,
)
from lossforge._pipeline import Fused, Total, Unreduced
from lossforge._reduction import AvgFactor, Backend, Reduction
from lossforge._targets import DenseTarget
from lossforge.functional._closed_form import (
    ClosedForm,
    ClosedTotal,
    closed_form_loss,
    closed_form_total,
    upcast,
)

__all__ = ["balanced_binary_cross_entropy", "ohem_binary_cross_entropy"]


def _per_sample_beta(y: Tensor, valid: Tensor | None) -> Tensor:
    """beta = (sum of 1 - y) / (number of valid elements) per sample, broadcastable to ``y``.

    Samples are along dim 0 for inputs with >= 2 dims; a 1-d input is one sample. A sample with no
    valid element gets 0.5 (it contributes nothing anyway), so there is never a 0/0.
    """
    dims = tuple(range(1, y.ndim)) if y.ndim >= 2 else tuple(range(y.ndim))
    if valid is None:  # every element counts: no mask-sized temporaries
        per_sample = math.prod(y.shape[1:]) if y.ndim >= 2 else y.numel()
        n_neg = y.sum(dim=dims, keepdim=True).neg_().add_(per_sample)
        n_valid = torch.full_like(n_neg, per_sample)
    else:
        v = valid.expand(y.shape).to(y.dtype)
        n_valid = v.sum(dim=dims, keepdim=True)
        n_neg = ((1.0 - y) * v).sum(dim=dims, keepdim=True)
    has = n_valid > 0
    return torch.where(
        has,
        n_neg / torch.where(has, n_valid, torch.ones_like(n_valid)),
        torch.full_like(n_valid, 0.5),
    )


def _balanced_bce_composite(z: Tensor, y: Tensor, *, beta: Tensor | float) -> Tensor:
    """-(beta y log p + (1 - beta)(1 - y) log(1 - p)) element-wise (the specification)."""
    return -(beta * y * TF.logsigmoid(z) + (1.0 - beta) * (1.0 - y) * TF.logsigmoid(-z))


def _balanced_bce_closed(
    z: Tensor, y: Tensor, need_grad: bool, *, beta: Tensor | float
) -> tuple[Tensor, Tensor | None]:
    """The loss and d loss / dz = (1 - beta)(1 - y) p - beta y q together (no autograd)."""
    w_pos = y * beta
    w_neg = (1.0 - y).mul_(1.0 - beta)
    loss = TF.logsigmoid(z).mul_(w_pos)
    loss.addcmul_(TF.logsigmoid(-z), w_neg).neg_()
    if not need_grad:
        return loss, None
    grad = torch.sigmoid(z).mul_(w_neg)
    grad.sub_(torch.sigmoid(-z).mul_(w_pos))
    return loss, grad


def _balanced_total(z: Tensor, y: Tensor, mean: bool, *, beta: Tensor | float) -> Tensor:
    """The sum (``mean``: over every element, divided by their number) of
    ``beta y softplus(-z) + (1 - beta)(1 - y) softplus(z)``, without autograd: two softplus
    passes on ``z`` itself (``beta=-1`` gives ``log sigma(z) = -softplus(-z)``; above the
    threshold softplus returns its input, whose error e^-40 is below the ulp in float64 too), two
    in-place products and two sums. Both terms are non-negative, so a confident, correct logit
    keeps its tiny loss (no ``z - softplus`` cancellation)."""
    pos = TF.softplus(z, beta=-1.0, threshold=40.0).mul_(y)  # y log sigma(z), <= 0
    neg = TF.softplus(z, threshold=40.0)  # -log(1 - sigma(z))
    neg.addcmul_(y, neg, value=-1.0)  # (1 - y) softplus(z), in place (element by element)
    if isinstance(beta, Tensor):  # per-sample beta, (N, 1, ...)
        total = neg.mul_(1.0 - beta).sum() - pos.mul_(beta).sum()
    else:
        total = neg.sum() * (1.0 - beta) - pos.sum() * beta
    return total / max(z.numel(), 1) if mean else total


def _balanced_derivative(z: Tensor, y: Tensor, *, beta: Tensor | float) -> Tensor:
    """d loss / dz = (1 - beta)(1 - y) sigma(z) - beta y sigma(-z), into a new tensor (each
    sigmoid of its own sign: no 1 - sigma cancellation)."""
    grad = torch.sigmoid(z)
    grad.addcmul_(y, grad, value=-1.0)  # (1 - y) sigma(z)
    pos = torch.neg(z).sigmoid_().mul_(y)  # y sigma(-z)
    if isinstance(beta, Tensor):
        grad.mul_(1.0 - beta).addcmul_(pos, beta, value=-1.0)
    else:
        grad.mul_(1.0 - beta).add_(pos, alpha=-beta)
    return grad


def _balanced_bce(
    x: Tensor, t: DenseTarget, want_total: bool | str, *, beta: float | None
) -> Tensor | Total:
    y = t.target
    beta_t: Tensor | float = _per_sample_beta(y, t.valid) if beta is None else beta
    if want_total:
        # Nothing element-wise to apply: the reduced closed form. The forward keeps no
        # gradient-sized buffer (two temporaries, PyTorch's BCE with a weight makes six and keeps
        # the weight); the backward computes the derivative (``TotalLoss``).
        mean = want_total == "mean"
        total = closed_form_total(
            in_compute_dtype(x),
            y,
            ClosedTotal(
                partial(_balanced_total, beta=beta_t),
                partial(_balanced_derivative, beta=beta_t),
                partial(_balanced_bce_composite, beta=beta_t),
            ),
            mean,
        )
        if total is not None:
            return Total(total, mean)
    spec = ClosedForm(
        upcast(partial(_balanced_bce_closed, beta=beta_t)),
        partial(_balanced_bce_composite, beta=beta_t),
    )
    return closed_form_loss(x, y, spec)


@loss_function
def balanced_binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    beta: Probability | None = None,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Class-balanced binary cross-entropy on logits (HED).

    With $p = \sigma(x)$,

    $$
    \ell = -\,\beta\, y \log p \;-\; (1 - \beta)(1 - y) \log(1 - p),
    \qquad \beta = \frac{|Y_-|}{|Y_+| + |Y_-|}
    $$

    where, when ``beta=None``, $\beta$ is computed **per sample** (over every non-batch dimension
    of that sample, over its valid elements) as the fraction of negatives:
    $|Y_-| = \sum (1 - y)$ and $|Y_+| + |Y_-|$ = the number of valid elements. For binary targets
    these are counts; soft targets count fractionally (sum of $1 - y$). A 1-d input is one sample.
    $\beta$ depends on the targets only (no gradient). An all-positive sample gets $\beta = 0$ and
    an all-negative one $\beta = 1$, so such a sample contributes 0 (HED's definition); a sample
    with no valid element contributes 0 as well; there is never a 0/0. So one element per sample
    (``(N, 1)`` logits) would always give 0: that raises ``ValueError`` (pass the batch as one
    sample, ``view(1, -1)``, or a float ``beta``). A float ``beta`` is used as given for every
    element. ``beta=0.5`` is half the plain BCE.

    ``"mean"`` divides by the number of valid elements (or ``avg_factor``).

    Args:
        logits: Raw scores ``(N, *)`` (``(N, C, *)`` with index targets).
        target: Dense targets of the logits' shape in ``[0, 1]``, or class indices of the logits'
            shape without dim 1 (``C`` = background, ``ignore_index`` drops the row).
        beta: ``None`` (per-sample fraction of negatives) or a float in ``[0, 1]``: the weight of
            the positive term; negatives get ``1 - beta``.
        ignore_index: Ignored target value (excluded from $\beta$ and from the loss).
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight (the logits' shape, its leading dims, or a same-rank
            broadcastable shape).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``: the fused sigmoid kernel serves a float
            ``beta`` on CUDA float32/float16/bfloat16 logits; ``beta=None`` is not fused (falls back
            under ``"auto"``, raises under ``"triton"``).

    Returns:
        The logits' shape for ``"none"``, else a scalar.

    References:
        Xie & Tu, "Holistically-Nested Edge Detection", ICCV 2015, arXiv:1504.06375.

    Example:
        >>> x = torch.tensor([[2.0, -1.0, 0.0, -3.0]])
        >>> y = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
        >>> balanced_binary_cross_entropy(x, y, reduction="sum")  # beta = 3/4
        tensor(0.3589)
    """
    if beta is None and isinstance(logits, Tensor) and logits.ndim >= 2 and logits.shape[0] > 0:
        per_sample = logits.numel() // logits.shape[0]
        if per_sample == 1:
            fail(
                "balanced_binary_cross_entropy",
                "logits",
                "at least 2 elements per sample with beta=None (the balance is each sample's own, "
                "so a one-element sample always gives 0); pass the batch as one sample "
                "(logits.view(1, -1), target.view(1, -1)) or a float beta",
                f"shape {tuple(logits.shape)}",
            )
    return pipeline.sigmoid(
        "balanced_binary_cross_entropy",
        logits,
        target,
        loss=partial(_balanced_bce, beta=beta),
        fused=Fused("sigmoid", "balanced_bce", {"beta": beta}),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


def _ohem(
    x: Tensor,
    t: DenseTarget,
    want_total: bool,
    *,
    fn: str,
    mask: Tensor | None,
    ratio: float,
    k0: int,
    eps: float,
    per_image: bool,
) -> Unreduced:
    """The OHEM-selected element losses and the default denominator ``n_pos + k + eps`` (with
    ``per_image``, each sample's counts and selection, the denominator their sum plus eps)."""
    if _reduction._denominator_hook is not None:
        # The selection is per rank (each rank's k hardest negatives, its own eps): no global
        # denominator makes K ranks equal one process, so the scope is refused, not ignored.
        fail(
            fn,
            "global_normalization()",
            "not to be active (OHEM mines hard negatives per rank, so K ranks cannot reproduce "
            "one process; call it outside the scope: per-rank mining, as DB and mmocr do)",
            "a call inside it",
            RuntimeError,
        )
    z = in_compute_dtype(x)
    y = t.target
    if mask is None:
        m = torch.ones_like(y)
    else:
        mk = check_tensor(fn, "mask", mask)
        if mk.device != x.device:
            fail(fn, "mask", f"on the device of `logits` ({x.device})", mk.device)
        check_same_shape(fn, "mask", mk, "logits", x)
        if mk.is_complex():
            fail(fn, "mask", "a real or bool tensor", f"dtype {mk.dtype}", TypeError)
        m = mk.to(z.dtype)
        check_unit_interval(fn, "mask", m)
    if t.valid is not None:  # ignored elements (ignore_index) are neither positive nor negative
        m = m * t.valid.to(z.dtype)
    bce = -(y * TF.logsigmoid(z) + (1.0 - y) * TF.logsigmoid(-z))
    pos = y * m
    neg = (1.0 - y) * m
    # One row per sample with ``per_image``, else one row: the counts, k and the ranking per row.
    rows = max(x.shape[0], 1) if per_image else 1  # (an empty batch: one empty row)
    width = y.numel() // rows
    # Counts in float64 so they stay exact integers beyond 2**24 elements.
    n_pos = pos.reshape(rows, width).sum(dim=1, dtype=torch.float64)
    n_neg = neg.reshape(rows, width).sum(dim=1, dtype=torch.float64)
    wanted = torch.where(n_pos > 0, torch.floor(n_pos * ratio), torch.full_like(n_pos, float(k0)))
    k = torch.minimum(torch.floor(n_neg), wanted)
    # Rank the negatives by their mask-weighted loss, hardest first; a stable sort makes ties go to
    # the lower flat index. Non-negatives sort last (key -1 < any loss).
    is_neg = (neg > 0).reshape(rows, width)
    key = torch.where(
        is_neg,
        (neg * bce).detach().reshape(rows, width),
        torch.full_like(is_neg, -1.0, dtype=z.dtype),
    )
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.scatter(torch.empty_like(order), 1, order, positions)  # (vmap: not scatter_)
    selected = (is_neg & (rank < k.unsqueeze(1))).reshape(y.shape)
    loss = pos * bce + torch.where(
        selected, neg * bce, torch.zeros((), dtype=z.dtype, device=z.device)
    )
    return Unreduced(loss, ((n_pos + k).sum() + eps).to(z.dtype))


@loss_function
def ohem_binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    mask: BatchTensor | None = None,
    negative_ratio: Positive = 3.0,
    fallback_negative_num: Count = 0,
    eps: NonNegative = 1e-6,
    per_image: bool = False,
    ignore_index: int | None = None,
    index_target: bool | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Balanced BCE with online hard negative mining (DB / mmocr OHEM balanced BCE).

    With the element-wise BCE $b_i = -[y_i \log p_i + (1 - y_i)\log(1 - p_i)]$, mask $M$,
    positives $P_i = y_i M_i$ and negatives $Q_i = (1 - y_i) M_i$, counts
    $n_+ = \sum_i P_i$ and $n_- = \sum_i Q_i$ over the **whole batch** (as DB does; with
    ``per_image``, over each sample, the first dimension, as PSENet's OHEM does), the number of
    kept negatives is

    $$
    k = \min\bigl(\lfloor n_- \rfloor,\ \lfloor r\, n_+ \rfloor\bigr) \ (n_+ > 0), \qquad
    k = \min\bigl(\lfloor n_- \rfloor,\ k_0\bigr) \ (n_+ = 0),
    $$

    with $r$ = ``negative_ratio`` and $k_0$ = ``fallback_negative_num`` (mmocr's option; default 0,
    DB's behaviour: no positives, no negatives, loss 0). With $S_k$ the $k$ negatives of largest
    $Q_i b_i$ (ties broken by the lower flat index: a stable sort),

    $$
    L = \frac{\sum_i P_i b_i + \sum_{i \in S_k} Q_i b_i}{n_+ + k + \epsilon}.
    $$

    With ``per_image`` every sample $j$ has its own $n_{+,j}$, $n_{-,j}$, $k_j$ and $S_{k_j}$ (a
    sample without positives keeps $\min(n_{-,j}, k_0)$ negatives however many the others
    have), and the denominator is $\sum_j (n_{+,j} + k_j) + \epsilon$: the same pooled
    normalisation over the kept elements.

    ``"mean"`` is $L$ (``avg_factor``, if given, replaces $n_+ + k + \epsilon$); ``"sum"`` is the
    numerator; ``"none"`` is the per-element $P_i b_i + [i \in S_k]\, Q_i b_i$ (unselected negatives
    and masked elements are 0), so ``none.sum() == sum``. ``weight`` multiplies the element losses
    after the selection (selection uses the unweighted loss) and does not change the denominator.
    For binary targets and masks this is exactly mmocr/DB; soft values count fractionally. The
    selection and the counts stay on the device (no host sync); the selection has no gradient.
    Asking for more negatives than exist keeps them all.

    Not inside ``lossforge.distributed.global_normalization()`` (``RuntimeError``): the hard
    negatives are mined per rank, so no denominator makes K ranks equal one process on the whole
    batch (that needs the global k-th largest loss: an all-gather of up to k losses per rank and a
    host sync on k). Call it outside the scope: per-rank mining, as DB and mmocr do under DDP.

    Args:
        logits: Raw scores, any shape (e.g. ``(N, H, W)`` probability maps' logits); at least
            2-d with ``per_image``.
        target: The logits' shape, values in ``[0, 1]`` (binary in DB/mmocr), or class indices
            ``(N,)`` for ``(N, C)`` logits (value ``C``: all negative), as every sigmoid loss
            takes them.
        mask: Optional training mask of the logits' shape, values in ``[0, 1]`` (bool allowed);
            ``None`` = everything.
        negative_ratio: $r > 0$ (DB: 3).
        fallback_negative_num: $k_0 \ge 0$, negatives kept when there are no positives.
        eps: $\epsilon \ge 0$ in the denominator (DB/mmocr: 1e-6).
        per_image: Mine each sample (the first dimension) on its own instead of the whole batch.
        ignore_index: Dense targets: the target value of elements that are neither positive nor
            negative (like a 0 in ``mask``); class indices: the index of a row to drop.
        index_target: Whether a target without the class dimension holds class indices (needed
            with one logit channel, as for every sigmoid loss).
        weight: Element-wise weight (the logits' shape, its leading dims, or a same-rank
            broadcastable shape).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Replaces the denominator $n_+ + k + \epsilon$ of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel: ``"auto"`` runs the
            reference, ``"triton"`` raises).

    Returns:
        The logits' shape for ``"none"``, else a scalar.

    References:
        Liao et al., "Real-time Scene Text Detection with Differentiable Binarization", AAAI 2020,
        arXiv:1911.08947; Shrivastava et al., "Training Region-based Object Detectors with Online
        Hard Example Mining", CVPR 2016, arXiv:1604.03540.

    Example:
        >>> x = torch.tensor([2.0, -1.0, 1.0, -3.0, 0.5])
        >>> y = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
        >>> ohem_binary_cross_entropy(x, y, negative_ratio=2.0)  # keeps negatives 1.0, 0.5
        tensor(0.8048)
    """
    fn = "ohem_binary_cross_entropy"
    if per_image and isinstance(logits, Tensor) and logits.ndim < 2:
        fail(
            fn,
            "per_image",
            "logits with a sample dimension (at least 2-d, the first dimension the samples)",
            f"per_image=True with {logits.ndim}-d logits",
        )
    return pipeline.sigmoid(
        fn,
        logits,
        target,
        loss=partial(
            _ohem,
            fn=fn,
            mask=mask,
            ratio=negative_ratio,
            k0=fallback_negative_num,
            eps=eps,
            per_image=per_image,
        ),
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
        index_target=index_target,
    )
