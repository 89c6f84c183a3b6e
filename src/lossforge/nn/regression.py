"""Module forms of the regression losses."""

from __future__ import annotations

from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_choice, check_number
from lossforge._dispatch import BACKENDS
from lossforge._reduction import Backend, Reduction
from lossforge.nn._base import Loss

__all__ = ["L1Loss", "MSELoss", "SmoothL1Loss"]


class L1Loss(Loss):
    """Module form of ``lossforge.functional.l1_loss``.

    Example:
        >>> L1Loss(loss_weight=2.0)(torch.tensor([1.0]), torch.tensor([0.0]))
        tensor(2.)
    """

    registry_name = "l1"
    _repr_fields = ("backend",)

    def __init__(
        self, *, reduction: Reduction = "mean", loss_weight: float = 1.0, backend: Backend = "torch"
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.backend = check_choice("L1Loss", "backend", backend, BACKENDS)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.l1_loss(
                pred,
                target,
                weight=weight,
                avg_factor=avg_factor,
                reduction=self._resolve_reduction(reduction_override),
                backend=self.backend,
            )
        )


class MSELoss(Loss):
    """Module form of ``lossforge.functional.mse_loss``."""

    registry_name = "mse"
    _repr_fields = ("backend",)

    def __init__(
        self, *, reduction: Reduction = "mean", loss_weight: float = 1.0, backend: Backend = "torch"
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.backend = check_choice("MSELoss", "backend", backend, BACKENDS)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.mse_loss(
                pred,
                target,
                weight=weight,
                avg_factor=avg_factor,
                reduction=self._resolve_reduction(reduction_override),
                backend=self.backend,
            )
        )


class SmoothL1Loss(Loss):
    """Module form of ``lossforge.functional.smooth_l1_loss``."""

    registry_name = "smooth_l1"
    _repr_fields = ("beta", "backend")

    def __init__(
        self,
        *,
        beta: float = 1.0,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.beta = check_number("SmoothL1Loss", "beta", beta, low=0.0)
        self.backend = check_choice("SmoothL1Loss", "backend", backend, BACKENDS)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.smooth_l1_loss(
                pred,
                target,
                beta=self.beta,
                weight=weight,
                avg_factor=avg_factor,
                reduction=self._resolve_reduction(reduction_override),
                backend=self.backend,
            )
        )
