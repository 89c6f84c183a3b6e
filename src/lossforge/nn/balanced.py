"""Module forms of the balanced binary cross-entropies (HED balanced BCE, OHEM BCE)."""

from __future__ import annotations

from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_choice, check_int, check_number, check_optional_int
from lossforge._dispatch import BACKENDS
from lossforge._reduction import Backend, Reduction
from lossforge.nn._base import Loss

__all__ = ["BalancedBinaryCrossEntropyLoss", "OHEMBinaryCrossEntropyLoss"]


class BalancedBinaryCrossEntropyLoss(Loss):
    """Module form of ``lossforge.functional.balanced_binary_cross_entropy`` (HED).

    Example:
        >>> loss = BalancedBinaryCrossEntropyLoss(reduction="sum")
        >>> loss(torch.tensor([[2.0, -1.0, 0.0, -3.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        tensor(0.3589)
    """

    registry_name = "balanced_binary_cross_entropy"
    _repr_fields = ("beta", "ignore_index", "backend")

    def __init__(
        self,
        *,
        beta: float | None = None,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self.beta = None if beta is None else check_number(name, "beta", beta, low=0.0, high=1.0)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.backend = check_choice(name, "backend", backend, BACKENDS)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.balanced_binary_cross_entropy(
                logits,
                target,
                beta=self.beta,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )


class OHEMBinaryCrossEntropyLoss(Loss):
    """Module form of ``lossforge.functional.ohem_binary_cross_entropy`` (DB / mmocr balanced BCE).

    The training ``mask`` is a per-batch input, so it is a ``forward`` argument.

    Example:
        >>> loss = OHEMBinaryCrossEntropyLoss(negative_ratio=2.0)
        >>> x = torch.tensor([2.0, -1.0, 1.0, -3.0, 0.5])
        >>> loss(x, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]), mask=torch.ones(5))
        tensor(0.8048)
    """

    registry_name = "ohem_binary_cross_entropy"
    _repr_fields = ("negative_ratio", "fallback_negative_num", "eps", "backend")

    def __init__(
        self,
        *,
        negative_ratio: float = 3.0,
        fallback_negative_num: int = 0,
        eps: float = 1e-6,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self.negative_ratio = check_number(
            name, "negative_ratio", negative_ratio, low=0.0, low_open=True
        )
        self.fallback_negative_num = check_int(
            name, "fallback_negative_num", fallback_negative_num, low=0
        )
        self.eps = check_number(name, "eps", eps, low=0.0)
        self.backend = check_choice(name, "backend", backend, BACKENDS)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        return self._scale(
            F.ohem_binary_cross_entropy(
                logits,
                target,
                mask=mask,
                negative_ratio=self.negative_ratio,
                fallback_negative_num=self.fallback_negative_num,
                eps=self.eps,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )
