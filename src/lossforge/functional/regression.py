"""Regression losses: L1, smooth L1 and MSE, with the shared weighting contract."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as TF
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._params import NonNegative, loss_function
from lossforge._pipeline import Fused, Total
from lossforge._reduction import AvgFactor, Backend, Reduction

__all__ = ["l1_loss", "mse_loss", "smooth_l1_loss"]


# PyTorch's fused element-wise kernels (one pass forward, one backward) on the float32/float64
# copies; with nothing element-wise to apply they sum directly. The tests check them against loop
# references.
def _l1(p: Tensor, t: Tensor, want_total: bool) -> Tensor | Total:
    if want_total:
        return Total(TF.l1_loss(p, t, reduction="sum"))
    return TF.l1_loss(p, t, reduction="none")


def _mse(p: Tensor, t: Tensor, want_total: bool) -> Tensor | Total:
    if want_total:
        return Total(TF.mse_loss(p, t, reduction="sum"))
    return TF.mse_loss(p, t, reduction="none")


def _smooth_l1(p: Tensor, t: Tensor, want_total: bool, *, beta: float) -> Tensor | Total:
    if want_total:
        return Total(TF.smooth_l1_loss(p, t, reduction="sum", beta=beta))
    return TF.smooth_l1_loss(p, t, reduction="none", beta=beta)


@loss_function
def l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
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
    return pipeline.regression(
        "l1_loss",
        pred,
        target,
        loss=_l1,
        fused=Fused("regression", "l1"),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function
def mse_loss(
    pred: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
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
    return pipeline.regression(
        "mse_loss",
        pred,
        target,
        loss=_mse,
        fused=Fused("regression", "mse"),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function
def smooth_l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    beta: NonNegative = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
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
    return pipeline.regression(
        "smooth_l1_loss",
        pred,
        target,
        loss=partial(_smooth_l1, beta=beta),
        fused=Fused("regression", "smooth_l1", {"beta": beta}),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )
