"""Module forms of the focal losses (configuration only; one functional call each)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_choice, check_int, check_number, check_optional_int, fail
from lossforge._dispatch import BACKENDS
from lossforge._reduction import Backend, Reduction
from lossforge.nn._base import Loss, check_buffer_values

__all__ = ["SigmoidFocalLoss", "SoftmaxFocalLoss"]

TensorOption = Tensor | Sequence[float] | None


class SigmoidFocalLoss(Loss):
    """Module form of ``lossforge.functional.sigmoid_focal_loss``.

    Drop-in for mmdetection's ``FocalLoss(use_sigmoid=True)``: ``forward(logits, target, weight,
    avg_factor, reduction_override)`` with index targets (``C`` = background) or dense targets.

    Example:
        >>> loss = SigmoidFocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0)
        >>> loss(torch.zeros(2, 3), torch.tensor([1, 3]), avg_factor=1.0)
        tensor(0.6931)
    """

    registry_name = "sigmoid_focal"
    _repr_fields = ("alpha", "gamma", "ignore_index", "backend")

    def __init__(
        self,
        *,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self.alpha = (
            None if alpha is None else check_number(name, "alpha", alpha, low=0.0, high=1.0)
        )
        self.gamma = check_number(name, "gamma", gamma, low=0.0)
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
            F.sigmoid_focal_loss(
                logits,
                target,
                alpha=self.alpha,
                gamma=self.gamma,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )


class SoftmaxFocalLoss(Loss):
    """Module form of ``lossforge.functional.softmax_focal_loss``.

    A per-class ``alpha`` (sequence or tensor) and ``class_weight`` are buffers (they follow
    ``.to()`` and ``state_dict``); lists are accepted. A float ``alpha`` stays a plain attribute.

    Example:
        >>> loss = SoftmaxFocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.25], label_smoothing=0.1)
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 1]))
        tensor(0.1811)
    """

    registry_name = "softmax_focal"
    _repr_fields = (
        "gamma",
        "alpha",
        "balance_index",
        "class_weight",
        "label_smoothing",
        "ignore_index",
        "backend",
    )

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | TensorOption = None,
        balance_index: int = 0,
        class_weight: TensorOption = None,
        label_smoothing: float = 0.0,
        ignore_index: int | None = -100,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self.gamma = check_number(name, "gamma", gamma, low=0.0)
        if alpha is None or (isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)):
            self.alpha = (
                None if alpha is None else check_number(name, "alpha", alpha, low=0.0, high=1.0)
            )
        else:
            self._register_tensor_option("alpha", alpha)  # type: ignore[arg-type]
            if self.alpha.ndim != 1:
                fail(
                    name,
                    "alpha",
                    "a float or a 1-d per-class sequence",
                    f"shape {tuple(self.alpha.shape)}",
                )
            check_buffer_values(name, "alpha", self.alpha, high=1.0)
        self.balance_index = check_int(name, "balance_index", balance_index, low=0)
        self._register_tensor_option("class_weight", class_weight)
        check_buffer_values(name, "class_weight", self.class_weight, high=None)
        self.label_smoothing = check_number(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
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
            F.softmax_focal_loss(
                logits,
                target,
                gamma=self.gamma,
                alpha=self.alpha,
                balance_index=self.balance_index,
                class_weight=self.class_weight,
                label_smoothing=self.label_smoothing,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )
