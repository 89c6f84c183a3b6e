"""Module form of the dice loss."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_bool, check_choice, check_number, check_optional_int, fail
from lossforge._dispatch import BACKENDS
from lossforge._reduction import Backend, Reduction
from lossforge.functional.dice import ACTIVATIONS, Activation
from lossforge.nn._base import Loss

__all__ = ["DiceLoss"]


class DiceLoss(Loss):
    """Module form of ``lossforge.functional.dice_loss`` (soft dice, V-Net).

    Holds the configuration; ``forward`` is one call to ``dice_loss`` scaled by ``loss_weight``.
    ``class_weight`` is a buffer (it follows ``.to()`` and ``state_dict``) and may be given as a
    list.

    Args:
        activation: ``"softmax"`` | ``"sigmoid"`` | ``"none"`` (see ``dice_loss``).
        smooth: Added to numerator and denominator, ``>= 0``.
        squared: V-Net squared denominators.
        batch: One dice per class over the whole batch.
        ignore_index: Target value left out of every sum.
        class_weight: ``(C,)`` weights of the per-class losses.
        include_background: Keep channel 0 in the loss.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        loss_weight: Scalar multiplier of the loss.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"``.

    Example:
        >>> import torch
        >>> loss = DiceLoss(class_weight=[0.5, 1.5])
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """

    registry_name = "dice"
    _repr_fields = (
        "activation",
        "smooth",
        "squared",
        "batch",
        "ignore_index",
        "class_weight",
        "include_background",
        "backend",
    )

    def __init__(
        self,
        *,
        activation: Activation = "softmax",
        smooth: float = 1.0,
        squared: bool = False,
        batch: bool = False,
        ignore_index: int | None = None,
        class_weight: Tensor | Sequence[float] | None = None,
        include_background: bool = True,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        backend: Backend = "torch",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = "DiceLoss"
        self.activation = check_choice(name, "activation", activation, ACTIVATIONS)
        self.smooth = check_number(name, "smooth", smooth, low=0.0)
        self.squared = check_bool(name, "squared", squared)
        self.batch = check_bool(name, "batch", batch)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.include_background = check_bool(name, "include_background", include_background)
        self.backend = check_choice(name, "backend", backend, BACKENDS)
        self._register_tensor_option("class_weight", class_weight)
        if self.class_weight is not None and self.class_weight.ndim != 1:
            fail(
                name,
                "class_weight",
                "a 1-d sequence of per-class weights",
                f"shape {tuple(self.class_weight.shape)}",
            )

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        return self._scale(
            F.dice_loss(
                logits,
                target,
                activation=self.activation,  # type: ignore[arg-type]
                smooth=self.smooth,
                squared=self.squared,
                batch=self.batch,
                ignore_index=self.ignore_index,
                class_weight=self.class_weight,
                include_background=self.include_background,
                weight=weight,
                reduction=self._resolve_reduction(reduction_override),
                avg_factor=avg_factor,
                backend=self.backend,  # type: ignore[arg-type]
            )
        )
