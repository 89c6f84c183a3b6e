"""Regression losses: L1, smooth L1 and MSE, with the shared weighting contract."""

from __future__ import annotations

import torch.nn.functional as TF
from torch import Tensor

from lossforge._checks import (
    as_float_target,
    check_floating,
    check_number,
    check_reduction,
    check_same_device,
    check_same_shape,
    check_tensor,
    compute_dtype,
    fail,
)
from lossforge._dispatch import kernel_eligible, unsupported
from lossforge._reduction import (
    Backend,
    Reduction,
    check_avg_factor,
    expand_weight,
    finish_reduction,
    weight_reduce,
)

__all__ = ["l1_loss", "mse_loss", "smooth_l1_loss"]


def _prepare(fn: str, pred: object, target: object, backend: object) -> tuple[Tensor, Tensor]:
    p = check_floating(fn, "pred", pred)
    t = as_float_target(fn, target, p)
    check_same_device(fn, pred=p, target=target)  # type: ignore[arg-type]
    check_same_shape(fn, "target", t, "pred", p)
    kernel_eligible(fn, backend, p)  # validates `backend`
    return p.to(compute_dtype(p)), t


def _fused(
    fn: str,
    kind: str,
    pred: object,
    target: object,
    backend: object,
    weight: Tensor | None,
    reduction: str,
    avg_factor: float | Tensor | None,
    beta: float = 1.0,
) -> Tensor | None:
    """The fused regression kernel when it can serve the case; None means "use the reference"."""
    if not (isinstance(pred, Tensor) and kernel_eligible(fn, backend, pred)):
        return None
    p = check_floating(fn, "pred", pred)
    t = check_tensor(fn, "target", target)
    if t.is_complex():
        fail(fn, "target", "a real tensor", f"dtype {t.dtype}", TypeError)
    check_same_device(fn, pred=p, target=t)
    check_same_shape(fn, "target", t, "pred", p)
    from lossforge.kernels import regression as fused

    why = fused.unsupported_reason(p, t)
    if why is not None:
        unsupported(fn, backend, why)  # type: ignore[arg-type]  # raises for "triton"
        return None
    check_avg_factor(fn, avg_factor, check_reduction(fn, reduction))
    if weight is not None:
        expand_weight(fn, weight, p.shape, p)  # validation only
    return fused.regression_loss(
        p, t, kind=kind, beta=beta, weight=weight, reduction=reduction, avg_factor=avg_factor
    )


def _finish(
    fn: str, total: Tensor, reduction: str, avg_factor: float | Tensor | None, numel: int
) -> Tensor:
    """``"sum"`` / ``"mean"`` from PyTorch's summing kernel (no element-wise weight to apply): one
    pass fewer than reducing the unreduced loss, same denominators as ``weight_reduce``."""
    return finish_reduction(total, fn=fn, reduction=reduction, avg_factor=avg_factor, numel=numel)


def l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Mean absolute error.

    $$
    \ell_i = |x_i - y_i|
    $$

    The subgradient at $x_i = y_i$ is 0, as in ``torch.nn.functional.l1_loss``. Equals
    ``smooth_l1_loss`` with ``beta=0``.

    Args:
        pred: Predictions, any shape ``(*)``.
        target: Same shape as ``pred`` (no broadcasting).
        weight: Element-wise weight, ``pred``'s shape or its leading dimensions.
        reduction: ``"none"`` | ``"mean"`` (over elements, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (mmdetection convention).
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``.

    Returns:
        ``pred``'s shape for ``"none"``, else a scalar; float32 (float64 for float64 input).

    Example:
        >>> l1_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
        tensor(1.5000)
    """
    fused = _fused("l1_loss", "l1", pred, target, backend, weight, reduction, avg_factor)
    if fused is not None:
        return fused
    p, t = _prepare("l1_loss", pred, target, backend)
    if weight is None and reduction != "none":
        total = TF.l1_loss(p, t, reduction="sum")
        return _finish("l1_loss", total, reduction, avg_factor, p.numel())
    return weight_reduce(
        TF.l1_loss(p, t, reduction="none"),
        fn="l1_loss",
        reduction=reduction,
        weight=weight,
        avg_factor=avg_factor,
    )


def mse_loss(
    pred: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Mean squared error.

    $$
    \ell_i = (x_i - y_i)^2
    $$

    Args:
        pred: Predictions, any shape ``(*)``.
        target: Same shape as ``pred`` (no broadcasting).
        weight: Element-wise weight, ``pred``'s shape or its leading dimensions.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``.

    Returns:
        ``pred``'s shape for ``"none"``, else a scalar.

    Example:
        >>> mse_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
        tensor(2.5000)
    """
    fused = _fused("mse_loss", "mse", pred, target, backend, weight, reduction, avg_factor)
    if fused is not None:
        return fused
    p, t = _prepare("mse_loss", pred, target, backend)
    if weight is None and reduction != "none":
        total = TF.mse_loss(p, t, reduction="sum")
        return _finish("mse_loss", total, reduction, avg_factor, p.numel())
    return weight_reduce(
        TF.mse_loss(p, t, reduction="none"),
        fn="mse_loss",
        reduction=reduction,
        weight=weight,
        avg_factor=avg_factor,
    )


def smooth_l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    beta: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Smooth L1 loss (Fast R-CNN), quadratic below ``beta`` and linear above.

    $$
    \ell_i = \begin{cases} 0.5\,d_i^2 / \beta & |d_i| < \beta \\
    |d_i| - 0.5\,\beta & \text{otherwise} \end{cases},\qquad d_i = x_i - y_i
    $$

    ``beta=0`` is exactly ``l1_loss``. As ``beta`` grows the loss approaches ``MSE / (2 beta)``;
    Huber loss with ``delta`` equals ``delta * smooth_l1(beta=delta)``.

    Args:
        pred: Predictions, any shape ``(*)``.
        target: Same shape as ``pred``.
        beta: Transition point, ``>= 0``.
        weight: Element-wise weight, ``pred``'s shape or its leading dimensions.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``.

    Returns:
        ``pred``'s shape for ``"none"``, else a scalar.

    References:
        Girshick, "Fast R-CNN", ICCV 2015, arXiv:1504.08083.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), beta=1.0)
        tensor(1.3125)
    """
    beta = check_number("smooth_l1_loss", "beta", beta, low=0.0)
    fused = _fused(
        "smooth_l1_loss", "smooth_l1", pred, target, backend, weight, reduction, avg_factor, beta
    )
    if fused is not None:
        return fused
    p, t = _prepare("smooth_l1_loss", pred, target, backend)
    # PyTorch's fused element-wise kernels (one pass forward, one backward) on the float32/float64
    # copies; beta=0 is exactly L1 there too. The tests check them against loop references.
    if weight is None and reduction != "none":
        total = TF.smooth_l1_loss(p, t, reduction="sum", beta=beta)
        return _finish("smooth_l1_loss", total, reduction, avg_factor, p.numel())
    loss = TF.smooth_l1_loss(p, t, reduction="none", beta=beta)
    return weight_reduce(
        loss, fn="smooth_l1_loss", reduction=reduction, weight=weight, avg_factor=avg_factor
    )
