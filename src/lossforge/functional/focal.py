r"""Focal losses (Lin et al. 2017): sigmoid (binary / multi-label) and softmax (multi-class) forms.

Both multiply a cross-entropy term by the modulating factor $(1 - p_t)^\gamma$. The numerics:

* Log terms come from ``logsigmoid`` / ``log_softmax`` in float32 (float64 for float64 inputs),
  never ``log(sigmoid(x))``; $1 - p_t$ is formed without cancellation (``sigmoid(-x)`` rather than
  ``1 - sigmoid(x)``).
* $0 < \gamma < 1$: the factor's own derivative $\gamma (1 - p_t)^{\gamma - 1}$ is infinite where
  $p_t$ rounds to 1, and the naive ``pow`` backward multiplies that infinity by the zero derivative
  of $p_t$ (NaN; torchvision's ``sigmoid_focal_loss`` does this at logits of +-20). Here the focal
  term is differentiated as a whole: with $l = \log p_t$,
  $\varphi(l) = -(1 - e^l)^\gamma\, l$ has the bounded derivative
  $\varphi'(l) = (1 - e^l)^\gamma \bigl(\gamma\, l e^l / (1 - e^l) - 1\bigr)$ with
  $l e^l / (1 - e^l) \in [-1, 0]$ (``_FocalTerm``, used for class-index / hard targets and every
  softmax case). Soft sigmoid targets with $0 < \gamma < 1$ use
  $(1 - p_t)^\gamma = \exp(\gamma \log(1 - p_t))$ with $\log(1 - p_t)$ a ``logaddexp`` of
  log-sigmoids, whose gradient is bounded too.
* $\gamma = 0$ skips the factor: the loss is then computed exactly like the cross-entropy.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import check_number, compute_dtype, fail, host_vector, value_checks_on
from lossforge._params import (
    ClassProbabilities,
    ClassValues,
    Count,
    NonNegative,
    Probability,
    Weights,
    loss_function,
)
from lossforge._pipeline import Fused, SoftmaxInput
from lossforge._reduction import AvgFactor, Backend, Reduction
from lossforge._targets import class_view
from lossforge.functional._terms import focal_nll_total, focal_term, sigmoid_focal

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss"]


@loss_function
def sigmoid_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
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
    r"""Sigmoid focal loss for binary and multi-label classification (RetinaNet).

    With $p = \sigma(x)$ and a target $y \in [0, 1]$ per element,

    $$
    \ell = \alpha_t\,(1 - p_t)^{\gamma}\, \operatorname{BCE}(x, y), \qquad
    p_t = y\,p + (1 - y)(1 - p), \qquad \alpha_t = y\,\alpha + (1 - y)(1 - \alpha),
    $$

    where $\operatorname{BCE}(x, y) = -y \log p - (1 - y) \log(1 - p)$. For hard targets this is the
    paper's $-\alpha_t (1 - p_t)^\gamma \log p_t$; soft targets use the same $p_t$ and
    $\alpha_t$ as torchvision and mmdetection (``py_sigmoid_focal_loss``), so the values match
    ``torchvision.ops.sigmoid_focal_loss`` (with ``alpha=-1`` written ``None`` here) and mmdet.

    ``alpha`` may also be a per-class sequence (or 1-d tensor) $(\alpha_c)$ of length $C$, lined
    up with the class dimension (dim 1 of ``(N, C, *)`` logits, dim 0 of 1-d logits): class $c$'s
    positives get $\alpha_c$ and its negatives $1 - \alpha_c$ (mmsegmentation's and MONAI's
    per-class alpha). A positive-class weight $w_+$ (``pos_weight``) weights the positive term of
    the cross-entropy, as in ``binary_cross_entropy_with_logits``:

    $$
    \ell = \alpha_t\,(1 - p_t)^{\gamma}\,
        \bigl[-w_+\, y \log p - (1 - y) \log(1 - p)\bigr],
    $$

    which for hard targets is kornia's ``binary_focal_loss_with_logits(pos_weight=...)``.

    Special cases: ``gamma=0, alpha=None`` is ``binary_cross_entropy_with_logits`` (values and
    gradients, also with the same ``pos_weight``); ``alpha=0.5`` halves it; ``alpha=1`` keeps only
    the positive terms, ``alpha=0`` only the negative ones. Without ``pos_weight`` the loss is never
    larger than $\alpha_t \operatorname{BCE}$.

    Numerics: log terms from ``logsigmoid``, $1 - p_t$ from ``sigmoid(-x)`` / ``sigmoid(x)`` (no
    cancellation), float32 math for half inputs. Gradients stay finite for every $\gamma \ge 0$,
    including $0 < \gamma < 1$ at saturated logits, where the naive ``pow`` backward (and
    torchvision) gives NaN: see the module docstring.

    Targets are dense (the logits' shape; soft labels, bool and integers allowed; elements equal to
    ``ignore_index`` are ignored) or class indices of the logits' shape without the class dim
    (dim 1, or dim 0 for 1-d logits): value ``k`` in ``[0, C)`` makes class ``k`` positive, value
    ``C`` means all negative (background, the mmdetection convention), ``ignore_index`` drops the
    whole row. No one-hot is materialised for index targets on the fused path.

    Args:
        logits: Raw scores, ``(N, C, *)`` (any shape with dense targets).
        target: Dense targets in ``[0, 1]`` of the logits' shape, or class indices ``(N, *)``.
        alpha: Weight of the positive class in ``[0, 1]``, negatives get ``1 - alpha``: a float,
            or a per-class sequence / 1-d tensor of length ``C`` (the class dim); ``None`` turns
            the weighting off (torchvision's ``alpha=-1``).
        gamma: Focusing parameter $\gamma \ge 0$.
        pos_weight: Weight $w_+ \ge 0$ of the positive cross-entropy term (a number, list or
            tensor), broadcast against the logits exactly as in PyTorch's
            ``binary_cross_entropy_with_logits``: a ``(C,)`` vector lines up with the **last**
            dimension; for ``(N, C, H, W)`` logits pass it as ``(C, 1, 1)``. ``None`` = 1.
        ignore_index: Ignored target value (dense: per element; indices: per row); ``None`` = off.
        index_target: What a target without the class dimension holds. ``None`` (default):
            class indices, except with one logit channel, where an integer target is ambiguous
            and raises (a float or bool one is a mask); ``True``: class indices (``C`` =
            background; a single-class detector's labels); ``False``: a mask (with one channel
            the channel dimension may be left out).
        weight: Element-wise weight: the logits' shape, its leading dims (``(N,)`` = per sample,
            as in mmdetection) or a same-rank broadcastable shape.
        reduction: ``"none"`` | ``"mean"`` (over valid elements, i.e. rows x C for index targets) |
            ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (e.g. the number of positive anchors).
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``: the fused sigmoid kernel serves CUDA
            float32 / float16 / bfloat16 logits with a float (or no) ``alpha`` and no
            ``pos_weight``; other cases fall back under ``"auto"`` and raise under ``"triton"``.

    Returns:
        The logits' shape for ``"none"``, else a scalar; float32 (float64 for float64 logits).

    References:
        Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017,
        arXiv:1708.02002.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
        >>> sigmoid_focal_loss(logits, torch.tensor([0, 3]), reduction="sum")  # 3 = background
        tensor(0.9570)
        >>> sigmoid_focal_loss(logits, torch.tensor([0, 3]), gamma=0.0, alpha=None).item() == (
        ...     torch.nn.functional.binary_cross_entropy_with_logits(
        ...         logits, torch.tensor([[1.0, 0, 0], [0, 0, 0]])).item())
        True
        >>> sigmoid_focal_loss(logits, torch.tensor([0, 3]), alpha=[0.75, 0.25, 0.25],
        ...                    pos_weight=2.0, reduction="sum")
        tensor(0.9592)
    """
    fn = "sigmoid_focal_loss"
    from lossforge.functional import _focal_options as opt

    if pos_weight is None and not opt.is_per_class(alpha):
        return pipeline.sigmoid(
            fn,
            logits,
            target,
            loss=partial(sigmoid_focal, gamma=gamma, alpha=cast(float | None, alpha)),
            fused=Fused("sigmoid", "focal", {"alpha": alpha, "gamma": gamma}),
            ignore_index=ignore_index,
            index_target=index_target,
            weight=weight,
            reduction=reduction,
            avg_factor=avg_factor,
            backend=backend,
        )
    # A per-class alpha or a pos_weight: the fused kernel does not serve them (it would need a
    # [C] alpha vector and the pos_weight factor), so "triton" raises saying so.
    opt.decline_kernel(fn, backend, logits)
    return pipeline.sigmoid(
        fn,
        logits,
        target,
        loss=partial(opt.weighted_sigmoid_focal, gamma=gamma, base=sigmoid_focal),
        options=opt.focal_options(fn, alpha, pos_weight),
        ignore_index=ignore_index,
        index_target=index_target,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


# --------------------------------------------------------------------------------------------------
# Softmax focal loss.
# --------------------------------------------------------------------------------------------------


def _alpha_vector(
    fn: str, alpha: object, balance_index: int, num_classes: int, like: Tensor
) -> Tensor | None:
    """alpha as a (C,) vector: None, a float (alpha at ``balance_index``, 1 - alpha elsewhere), or a
    per-class sequence / 1-d tensor with values in [0, 1], used as given."""
    if alpha is None:
        return None
    dtype = compute_dtype(like)
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        a = check_number(fn, "alpha", alpha, low=0.0, high=1.0)
        vec = torch.full((num_classes,), 1.0 - a, dtype=dtype, device=like.device)
        vec[balance_index] = a
        return vec
    if isinstance(alpha, Tensor):
        if alpha.is_complex() or alpha.dtype == torch.bool:
            fail(fn, "alpha", "a real tensor", f"dtype {alpha.dtype}", TypeError)
        if alpha.device != like.device:
            fail(fn, "alpha", f"on the device of `logits` ({like.device})", alpha.device)
        vec = alpha
    else:
        vec = host_vector(
            fn,
            "alpha",
            alpha,
            like,
            items="None, a float or a sequence of numbers",
            kinds="None, a float, or a per-class sequence / 1-d tensor",
        )
    if vec.ndim != 1 or vec.shape[0] != num_classes:
        fail(
            fn,
            "alpha",
            f"a float or a per-class sequence of length C={num_classes}",
            f"shape {tuple(vec.shape)}",
        )
    vec = vec.to(device=like.device, dtype=dtype)
    if value_checks_on(vec):
        bad = ~((vec >= 0) & (vec <= 1))
        if bool(bad.any()):
            fail(fn, "alpha", "per-class values in [0, 1]", vec.tolist())
    return vec


def _softmax_focal(inp: SoftmaxInput, want_total: bool, *, gamma: float, eps: float) -> Tensor:
    """The per-position softmax focal loss (the docstring's formulas)."""
    st, cdim, c, coef = inp.target, inp.cdim, inp.c, inp.coef
    ndim = inp.z.ndim
    logp = torch.log_softmax(inp.z, dim=cdim)
    if st.probs is not None:
        t = st.probs if eps == 0 else st.probs * (1.0 - eps) + eps / c
        mass = t if coef is None else t * class_view(coef, ndim, cdim)
        # A class without target mass adds 0, also at log p = -inf (a masked class): the focal
        # term is taken at log p = 0 there (where it is 0 with a zero derivative), never inf * 0.
        safe = torch.where(mass == 0, torch.zeros((), dtype=logp.dtype, device=logp.device), logp)
        return (focal_term(safe, gamma) * mass).sum(dim=cdim)
    idx = cast(Tensor, st.index)  # softmax_target sets exactly one of index / probs
    loss = focal_term(logp.gather(cdim, idx.unsqueeze(cdim)).squeeze(cdim), gamma)
    if coef is not None:
        loss = loss * coef[idx]
    if eps > 0:
        # (1 - eps) * (target-class term) + eps / C * sum over all classes; no one-hot is built.
        every = focal_term(logp, gamma)
        if coef is not None:
            every = every * class_view(coef, ndim, cdim)
        loss = (1.0 - eps) * loss + (eps / c) * every.sum(dim=cdim)
    return loss


def _softmax_focal_plain(
    *args: Any,
    gamma: object = 2.0,
    ignore_index: object = -100,
    reduction: object = "mean",
    **other: Any,
) -> Tensor | None:
    """The plain-call entry (``@loss_function(plain=...)``): two tensors and at most ``gamma`` (a
    finite float >= 0), ``ignore_index`` (an int within int64) and ``reduction`` (``"mean"`` /
    ``"sum"``) take the NLL kernel's route (``pipeline.plain_nll`` with the focal term) before
    the argument checks; anything else returns None and takes the checked route."""
    if (
        len(args) != 2
        or other
        or not pipeline.plain_number(gamma, zero=True)
        or not pipeline.plain_index(ignore_index)
        or not pipeline.plain_reduction(reduction)
    ):
        return None
    term = partial(focal_nll_total, gamma=gamma)
    return pipeline.plain_nll(
        "softmax_focal_loss", "logits", args[0], args[1], None, ignore_index, reduction, term
    )


@loss_function(plain=_softmax_focal_plain)
def softmax_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: NonNegative = 2.0,
    alpha: Probability | ClassProbabilities | None = None,
    balance_index: Count = 0,
    class_weight: ClassValues | None = None,
    label_smoothing: Probability = 0.0,
    ignore_index: int | None = -100,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Softmax (multi-class) focal loss.

    With $p = \operatorname{softmax}(x)$ over the class dimension, per-class factors $\alpha_c$ (all
    1 when ``alpha=None``) and class weights $w_c$ (all 1 when unset), a class-index target $y$
    gives

    $$
    \ell = -\alpha_y\, w_y\, (1 - p_y)^{\gamma} \log p_y .
    $$

    With label smoothing $\varepsilon$, or a probability target $t$, the focal term is applied to
    every class of the target distribution $q$:

    $$
    \ell = -\sum_{c=1}^{C} q_c\, \alpha_c\, w_c\, (1 - p_c)^{\gamma} \log p_c, \qquad
    q = (1 - \varepsilon)\,\operatorname{onehot}(y) + \varepsilon / C
    \quad\text{or}\quad q = (1 - \varepsilon)\, t + \varepsilon / C .
    $$

    ``gamma=0, alpha=None`` is exactly ``cross_entropy`` with the same ``class_weight``,
    ``ignore_index`` and ``label_smoothing`` (values, gradients and the ``"mean"`` denominator);
    with $\varepsilon = 0$ the sum form reduces to the index form.

    ``alpha`` conventions: ``None`` is off; a float $a$ gives $\alpha_c = a$ for class
    ``balance_index`` and $1 - a$ for every other class (Hsuxu's ``balance_index``; kornia and MONAI
    hard-code ``1 - a`` for class 0 and ``a`` for the others, which is ``alpha=1 - a,
    balance_index=0`` here); a sequence or 1-d tensor of length $C$ with values in ``[0, 1]`` is
    used as given (not renormalised, unlike Hsuxu). ``alpha`` does not enter the ``"mean"``
    denominator.

    ``"mean"`` divides by ``avg_factor`` when given, else by the number of non-ignored positions,
    except that with ``class_weight`` and index targets it divides by $\sum_i w_{y_i}$ over the
    non-ignored positions, exactly as ``cross_entropy`` does. Empty or all-ignored batches give 0
    with zero gradients.

    Numerics: ``log_softmax`` in float32 (float64 for float64 logits), the target's log-probability
    is gathered along the class dim (no one-hot, no permute / flatten copy of ``(N, C, H, W)``
    input), $1 - p$ is ``-expm1(log p)``, and the focal term is differentiated in closed form, so
    gradients are finite for $0 < \gamma < 1$ at saturated logits.

    Args:
        logits: Unnormalised scores ``(N, C, d1, ..., dk)`` or unbatched ``(C,)``, ``C >= 2``.
        target: Class indices ``(N, d1, ..., dk)`` (any integer dtype, values in ``[0, C)`` or
            ``ignore_index``), or probabilities of the logits' shape.
        gamma: Focusing parameter $\gamma \ge 0$.
        alpha: ``None``, a float in ``[0, 1]`` (with ``balance_index``), or a per-class sequence /
            tensor of length ``C`` with values in ``[0, 1]``.
        balance_index: The class that receives a float ``alpha``; in ``[0, C)``.
        class_weight: Non-negative per-class weights of length ``C`` (``cross_entropy`` semantics).
        label_smoothing: $\varepsilon \in [0, 1]$.
        ignore_index: Ignored index-target value; ``None`` disables it. Must stay at its default
            with probability targets.
        weight: Element-wise weight of the per-position loss (the target's shape or its leading
            dims).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``: the fused softmax kernel serves CUDA
            float32 / float16 / bfloat16 logits with class-index targets and no label smoothing;
            other cases fall back under ``"auto"`` and raise under ``"triton"``.

    Returns:
        ``"none"``: the per-position loss with the index target's shape ``(N, d1, ..., dk)``;
        otherwise a scalar. float32 (float64 for float64 logits).

    References:
        Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017,
        arXiv:1708.02002.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
        >>> softmax_focal_loss(logits, torch.tensor([0, 2]), gamma=2.0)
        tensor(0.4313)
        >>> softmax_focal_loss(logits, torch.tensor([0, 2]), gamma=0.0).item() == (
        ...     torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).item())
        True
    """
    fn = "softmax_focal_loss"

    def alpha_vector(c: int, like: Tensor) -> Tensor | None:
        if not 0 <= balance_index < c:
            fail(fn, "balance_index", f"in [0, {c}) (a class of the logits)", balance_index)
        return _alpha_vector(fn, alpha, balance_index, c, like)

    return pipeline.softmax(
        fn,
        logits,
        target,
        loss=partial(_softmax_focal, gamma=gamma, eps=label_smoothing),
        fused=Fused("softmax", "focal", {"gamma": gamma, "label_smoothing": label_smoothing}),
        class_weight=class_weight,
        class_factor=alpha_vector,
        nll_term=(
            partial(focal_nll_total, gamma=gamma)
            if class_weight is None and label_smoothing == 0.0
            else None
        ),
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )
