"""Module forms of the asymmetric losses (multi-label sigmoid ASL and single-label softmax ASL)."""

from __future__ import annotations

from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_bool, check_choice, check_number, check_optional_int
from lossforge._dispatch import BACKENDS
from lossforge._reduction import Backend, Reduction
from lossforge.functional.asymmetric import check_asl_args
from lossforge.nn._base import Loss

__all__ = ["AsymmetricLoss", "SoftmaxAsymmetricLoss"]


class AsymmetricLoss(Loss):
    """Module form of ``lossforge.functional.asymmetric_loss`` (multi-label ASL on logits).

    Defaults are the paper's multi-label setting ($\\gamma_+ = 0$, $\\gamma_- = 4$, $m = 0.05$);
    ``reduction="mean"`` averages over elements, while the reference repo and timm return the sum
    (use ``reduction="sum"`` for their number).

    Example:
        >>> loss = AsymmetricLoss(reduction="sum")
        >>> loss(torch.tensor([[3.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]))
        tensor(0.1404)
    """

    registry_name = "asymmetric"
    _repr_fields = (
        "gamma_pos",
        "gamma_neg",
        "clip",
        "eps",
        "detach_focal_weight",
        "ignore_index",
        "backend",
    )

    def __init__(
        self,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        detach_focal_weight: bool = False,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = check_asl_args(
            name, gamma_pos, gamma_neg, clip, eps
        )
        self.detach_focal_weight = check_bool(name, "detach_focal_weight", detach_focal_weight)
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
            F.asymmetric_loss(
                logits,
                target,
                gamma_pos=self.gamma_pos,
                gamma_neg=self.gamma_neg,
                clip=self.clip,
                eps=self.eps,
                detach_focal_weight=self.detach_focal_weight,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )


class SoftmaxAsymmetricLoss(Loss):
    """Module form of ``lossforge.functional.softmax_asymmetric_loss`` (single-label ASL).

    ``label_smoothing`` is what the reference's ``ASLSingleLabel`` calls ``eps``.

    Example:
        >>> loss = SoftmaxAsymmetricLoss(gamma_neg=0.0, label_smoothing=0.0)
        >>> loss(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0]))
        tensor(0.2413)
    """

    registry_name = "softmax_asymmetric"
    _repr_fields = (
        "gamma_pos",
        "gamma_neg",
        "label_smoothing",
        "detach_focal_weight",
        "ignore_index",
        "backend",
    )

    def __init__(
        self,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        label_smoothing: float = 0.1,
        detach_focal_weight: bool = False,
        ignore_index: int | None = -100,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self.gamma_pos, self.gamma_neg, _, _ = check_asl_args(name, gamma_pos, gamma_neg)
        self.label_smoothing = check_number(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.detach_focal_weight = check_bool(name, "detach_focal_weight", detach_focal_weight)
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
            F.softmax_asymmetric_loss(
                logits,
                target,
                gamma_pos=self.gamma_pos,
                gamma_neg=self.gamma_neg,
                label_smoothing=self.label_smoothing,
                detach_focal_weight=self.detach_focal_weight,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )
