"""Module forms of the classification losses (configuration only; one functional call each)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_choice, check_number, check_optional_int, fail
from lossforge._dispatch import BACKENDS
from lossforge._reduction import Backend, Reduction
from lossforge.nn._base import Loss, check_buffer_values

__all__ = [
    "BalancedSoftmaxLoss",
    "BinaryCrossEntropyLoss",
    "BinaryCrossEntropyWithLogitsLoss",
    "CrossEntropyLoss",
    "LogitAdjustedLoss",
    "NLLLoss",
]

TensorOption = Tensor | Sequence[float] | None


class CrossEntropyLoss(Loss):
    """Module form of ``lossforge.functional.cross_entropy``.

    ``class_weight`` is a buffer (it follows ``.to()`` and ``state_dict``); lists are accepted.

    Example:
        >>> loss = CrossEntropyLoss(label_smoothing=0.1, class_weight=[1.0, 2.0, 1.0])
        >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 1]))
        tensor(1.0864)
    """

    registry_name = "cross_entropy"
    _repr_fields = ("class_weight", "ignore_index", "label_smoothing", "backend")

    def __init__(
        self,
        *,
        class_weight: TensorOption = None,
        ignore_index: int | None = -100,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self._register_tensor_option("class_weight", class_weight)
        check_buffer_values(name, "class_weight", self.class_weight)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.label_smoothing = check_number(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.backend = check_choice(name, "backend", backend, BACKENDS)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.cross_entropy(
                input,
                target,
                class_weight=self.class_weight,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )


class NLLLoss(Loss):
    """Module form of ``lossforge.functional.nll_loss`` (input: log-probabilities)."""

    registry_name = "nll"
    _repr_fields = ("class_weight", "ignore_index")

    def __init__(
        self,
        *,
        class_weight: TensorOption = None,
        ignore_index: int | None = -100,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        self._register_tensor_option("class_weight", class_weight)
        check_buffer_values(name, "class_weight", self.class_weight)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.nll_loss(
                input,
                target,
                class_weight=self.class_weight,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
            )
        )


class BinaryCrossEntropyLoss(Loss):
    """Module form of ``lossforge.functional.binary_cross_entropy`` (input: probabilities)."""

    registry_name = "binary_cross_entropy"
    _repr_fields = ("ignore_index",)

    def __init__(
        self,
        *,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.ignore_index = check_optional_int(type(self).__name__, "ignore_index", ignore_index)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.binary_cross_entropy(
                input,
                target,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                ignore_index=self.ignore_index,
            )
        )


class BinaryCrossEntropyWithLogitsLoss(Loss):
    """Module form of ``lossforge.functional.binary_cross_entropy_with_logits``.

    ``pos_weight`` is a buffer; a list becomes a ``(C,)`` vector (it lines up with the last dim).

    Example:
        >>> loss = BinaryCrossEntropyWithLogitsLoss(pos_weight=[2.0, 1.0])
        >>> loss(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
        tensor(0.8087)
    """

    registry_name = "binary_cross_entropy_with_logits"
    _repr_fields = ("pos_weight", "label_smoothing", "ignore_index", "backend")

    def __init__(
        self,
        *,
        pos_weight: TensorOption | float = None,
        label_smoothing: float = 0.0,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        if isinstance(pos_weight, (int, float)) and not isinstance(pos_weight, bool):
            pos_weight = torch.tensor(float(pos_weight))
        self._register_tensor_option("pos_weight", pos_weight)
        check_buffer_values(name, "pos_weight", self.pos_weight)
        self.label_smoothing = check_number(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.backend = check_choice(name, "backend", backend, BACKENDS)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.binary_cross_entropy_with_logits(
                input,
                target,
                pos_weight=self.pos_weight,
                label_smoothing=self.label_smoothing,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )


class BalancedSoftmaxLoss(Loss):
    """Module form of ``lossforge.functional.balanced_softmax_loss``.

    ``class_counts`` (and ``class_weight``) are buffers; lists are accepted.

    Example:
        >>> loss = BalancedSoftmaxLoss(class_counts=[90, 10])
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7506)
    """

    registry_name = "balanced_softmax"
    _repr_fields = ("class_counts", "class_weight", "ignore_index", "label_smoothing", "backend")

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        class_weight: TensorOption = None,
        ignore_index: int | None = -100,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        if class_counts is None:
            fail(name, "class_counts", "a tensor or a sequence of counts", None, TypeError)
        self._register_tensor_option("class_counts", class_counts)
        check_buffer_values(name, "class_counts", self.class_counts)
        self._register_tensor_option("class_weight", class_weight)
        check_buffer_values(name, "class_weight", self.class_weight)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.label_smoothing = check_number(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.backend = check_choice(name, "backend", backend, BACKENDS)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.balanced_softmax_loss(
                input,
                target,
                class_counts=self.class_counts,
                class_weight=self.class_weight,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )


class LogitAdjustedLoss(Loss):
    """Module form of ``lossforge.functional.logit_adjusted_loss``.

    Exactly one of ``class_counts`` / ``priors`` (a buffer; the other is ``None``).

    Example:
        >>> loss = LogitAdjustedLoss(class_counts=[90, 10], tau=0.0)
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.3133)
    """

    registry_name = "logit_adjusted"
    _repr_fields = (
        "class_counts",
        "priors",
        "tau",
        "class_weight",
        "ignore_index",
        "label_smoothing",
        "backend",
    )

    def __init__(
        self,
        *,
        class_counts: TensorOption = None,
        priors: TensorOption = None,
        tau: float = 1.0,
        class_weight: TensorOption = None,
        ignore_index: int | None = -100,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        if (class_counts is None) == (priors is None):
            fail(
                name,
                "class_counts",
                "exactly one of `class_counts` and `priors`",
                "both" if priors is not None else "neither",
            )
        self._register_tensor_option("class_counts", class_counts)
        self._register_tensor_option("priors", priors)
        check_buffer_values(name, "class_counts", self.class_counts)
        check_buffer_values(name, "priors", self.priors)
        self.tau = check_number(name, "tau", tau, low=0.0)
        self._register_tensor_option("class_weight", class_weight)
        check_buffer_values(name, "class_weight", self.class_weight)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.label_smoothing = check_number(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.backend = check_choice(name, "backend", backend, BACKENDS)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.logit_adjusted_loss(
                input,
                target,
                class_counts=self.class_counts,
                priors=self.priors,
                tau=self.tau,
                class_weight=self.class_weight,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,
            )
        )
