"""Regression losses: L1, smooth L1, MSE, Huber and balanced L1, with the shared weighting
contract."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from functools import partial
from typing import Any, TypeGuard

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import fail
from lossforge._params import NonNegative, Positive, loss_function
from lossforge._pipeline import Fused, Total
from lossforge._reduction import AvgFactor, Backend, Reduction

__all__ = ["balanced_l1_loss", "huber_loss", "l1_loss", "mse_loss", "smooth_l1_loss"]


# PyTorch's fused element-wise kernels (one pass forward, one backward) on the float32/float64
# copies; with nothing element-wise to apply they reduce directly (``total``: "sum", or "mean" when
# it is the plain mean). Called through their bindings: the pipeline has checked the shapes equal,
# so ``F.*_loss``'s broadcast and size warning (a third of a small call's host time) are not
# needed. The tests check them against loop references and against ``torch.nn.functional``.
_ENUM = {None: 0, "mean": 1, "sum": 2}  # torch.nn._reduction.get_enum
# (torch/_C/_nn.pyi types `reduction` as a str; the bindings take the enum's int)
_nn: Any = torch._C._nn


def _l1(p: Tensor, t: Tensor, total: str | None) -> Tensor | Total:
    return _reduced(_nn.l1_loss(p, t, _ENUM[total]), total)


def _mse(p: Tensor, t: Tensor, total: str | None) -> Tensor | Total:
    return _reduced(_nn.mse_loss(p, t, _ENUM[total]), total)


def _smooth_l1(p: Tensor, t: Tensor, total: str | None, *, beta: float) -> Tensor | Total:
    if beta == 0.0:  # as torch.nn.functional.smooth_l1_loss: exactly L1
        return _l1(p, t, total)
    return _reduced(_nn.smooth_l1_loss(p, t, _ENUM[total], beta), total)


def _reduced(loss: Tensor, total: str | None) -> Tensor | Total:
    return loss if total is None else Total(loss)


# Plain-call entries (``@loss_function(plain=...)``): a call with two tensors and at most the
# loss's own hyperparameter and ``reduction``, each of an exact type whose value needs no check,
# runs PyTorch's reducing kernel (``pipeline.plain_regression``) before the argument checks and
# the pipeline; anything else returns None and takes the checked route.


def _plain_entry(fn: str, loss: Any, param: str | None = None) -> Any:
    """The plain-call entry of the regression loss ``fn`` computed by ``loss`` (its keyword
    ``param``, default 1.0, a finite float > 0 in a plain call)."""

    def entry(*args: Any, reduction: object = "mean", **other: Any) -> Tensor | None:
        value = other.pop(param, 1.0) if param is not None else None
        if len(args) != 2 or other or not pipeline.plain_reduction(reduction):
            return None
        if param is None:
            return pipeline.plain_regression(fn, args[0], args[1], loss, reduction)
        if not pipeline.plain_number(value):
            return None
        bound = partial(loss, **{param: value})
        return pipeline.plain_regression(fn, args[0], args[1], bound, reduction)

    return entry


@loss_function(plain=_plain_entry("l1_loss", _l1))
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
        nan_in_total=True,
        fused=Fused("regression", "l1"),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function(plain=_plain_entry("mse_loss", _mse))
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
        nan_in_total=True,
        fused=Fused("regression", "mse"),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


@loss_function(plain=_plain_entry("smooth_l1_loss", _smooth_l1, "beta"))
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
        nan_in_total=True,
        fused=Fused("regression", "smooth_l1", {"beta": beta}),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
    )


def _huber(p: Tensor, t: Tensor, total: str | None, *, delta: float) -> Tensor | Total:
    return _reduced(_nn.huber_loss(p, t, _ENUM[total], delta), total)


@loss_function(plain=_plain_entry("huber_loss", _huber, "delta"))
def huber_loss(
    pred: Tensor,
    target: Tensor,
    *,
    delta: Positive = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Huber loss, quadratic below ``delta`` and linear (slope ``delta``) above.

    $$
    \ell_i = \begin{cases} 0.5\,d_i^2 & |d_i| < \delta \\
    \delta\,(|d_i| - 0.5\,\delta) & \text{otherwise} \end{cases},\qquad d_i = x_i - y_i
    $$

    Element by element ``torch.nn.functional.huber_loss`` (PyTorch's kernel), plus the shared
    weighting. ``huber_loss(delta=d)`` equals ``d * smooth_l1_loss(beta=d)``; with
    ``delta=1`` both are the same loss. Unlike smooth L1, the linear part keeps slope
    ``delta``, so for large ``delta`` the loss approaches ``0.5 * MSE``.

    Args:
        pred: Predictions, any shape ``(*)``.
        target: Same shape as ``pred``.
        delta: Transition point, ``> 0`` (PyTorch rejects ``delta <= 0`` too).
        weight: Element-wise weight, ``pred``'s shape or its leading dimensions.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.

    Returns:
        ``pred``'s shape for ``"none"``, else a scalar.

    References:
        Huber, "Robust Estimation of a Location Parameter", Annals of Mathematical Statistics,
        1964.

    Example:
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), delta=2.0)
        tensor(2.0625)
    """
    return pipeline.regression(
        "huber_loss",
        pred,
        target,
        loss=partial(_huber, delta=delta),
        nan_in_total=True,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


#: The largest ``gamma / alpha`` of the balanced L1 loss: ``b = e^(gamma / alpha) - 1`` must be
#: finite in float32, the dtype half inputs are computed in (e^88.7 overflows it).
BALANCED_L1_MAX_RATIO = 80.0


def _real(value: object) -> TypeGuard[float]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_balanced_l1(owner: str, values: Mapping[str, Any]) -> None:
    """``gamma / alpha <= BALANCED_L1_MAX_RATIO`` (both already checked positive): beyond it
    ``b`` overflows and the loss would be NaN (mmdetection's too), or Python's ``expm1`` raises
    ``OverflowError`` past 709."""
    alpha, gamma = values.get("alpha"), values.get("gamma")
    if _real(alpha) and _real(gamma) and alpha > 0:
        ratio = float(gamma) / float(alpha)
        if not ratio <= BALANCED_L1_MAX_RATIO:
            fail(
                owner,
                "gamma",
                f"gamma / alpha <= {BALANCED_L1_MAX_RATIO:g} (b = e^(gamma / alpha) - 1 must "
                "stay finite in float32)",
                f"gamma={gamma!r}, alpha={alpha!r} (ratio {ratio:g})",
            )


def _balanced_l1(
    p: Tensor, t: Tensor, _total: str | None, *, alpha: float, gamma: float, beta: float
) -> Tensor:
    d = (p - t).abs()
    b = math.expm1(gamma / alpha)  # e^(gamma / alpha) - 1: both pieces meet with slope gamma
    # the inner piece with |d| clamped at beta, so the unused branch stays small (no overflow;
    # b itself is finite in float32: ``_check_balanced_l1``)
    di = torch.clamp(d, max=beta)
    inner = (alpha / b) * (b * di + beta) * torch.log1p(b * di / beta) - alpha * di
    outer = gamma * d + beta * (gamma / b - alpha)
    return torch.where(d < beta, inner, outer)


@loss_function(check=_check_balanced_l1)
def balanced_l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    alpha: Positive = 0.5,
    gamma: Positive = 1.5,
    beta: Positive = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Balanced L1 loss (Libra R-CNN): promotes the gradients of accurate (inlier) samples.

    With $d = |x - y|$ and $b = e^{\gamma/\alpha} - 1$,

    $$
    \ell = \begin{cases}
    \dfrac{\alpha}{b}(b d + \beta)\ln\bigl(\tfrac{b d}{\beta} + 1\bigr) - \alpha d & d < \beta \\
    \gamma d + \beta\Bigl(\dfrac{\gamma}{b} - \alpha\Bigr) & \text{otherwise}
    \end{cases}
    $$

    With $\beta = 1$ this is the paper's loss (eq. 8): its gradient
    $\alpha \ln(b d + 1)$ rises steeply near 0 and reaches the outlier slope $\gamma$ at
    $d = 1$, where the choice of $b$ ($\alpha \ln(b + 1) = \gamma$) makes the two pieces meet
    with the same value and slope. ``beta`` moves the switch the way smooth L1's does:
    $\ell_\beta(d) = \beta\,\ell_1(d / \beta)$, so the gradient is
    $\alpha \ln(b d / \beta + 1)$ below $\beta$ and $\gamma$ above, continuous, 0 at $d = 0$.

    Parity: equals mmdetection's ``BalancedL1Loss`` for ``beta=1`` (the value its Libra R-CNN
    configs use), values, gradients, ``weight`` and ``avg_factor``. For ``beta != 1`` mmdetection
    writes $(b d + 1)$ and $\gamma / b - \alpha\beta$ instead: that curve has slope
    $\alpha(1/\beta - 1) \ne 0$ at $d = 0$, negative for $\beta > 1$ (its minimum is not at
    $d = 0$), so it is not reproduced.

    Args:
        pred: Predictions, any shape ``(*)``.
        target: Same shape as ``pred``.
        alpha: Inlier gradient scale $\alpha > 0$.
        gamma: Outlier gradient (the slope for $d \ge \beta$), $\gamma > 0$, with
            $\gamma / \alpha \le 80$ ($b$ finite in float32).
        beta: Transition point $\beta > 0$.
        weight: Element-wise weight, ``pred``'s shape or its leading dimensions.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Denominator of ``"mean"``.

    Returns:
        ``pred``'s shape for ``"none"``, else a scalar.

    References:
        Pang, Chen, Shi, Feng, Ouyang, Lin, "Libra R-CNN: Towards Balanced Learning for Object
        Detection", CVPR 2019, arXiv:1904.02701.

    Example:
        >>> balanced_l1_loss(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(1.2893)
    """
    return pipeline.regression(
        "balanced_l1_loss",
        pred,
        target,
        loss=partial(_balanced_l1, alpha=alpha, gamma=gamma, beta=beta),
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )
