"""Base class of every lossforge loss module.

Modules hold configuration only; ``forward`` is one call to the functional form. Every module takes
``reduction`` and ``loss_weight`` (a scalar multiplier), and its ``forward`` takes the
mmdetection-style ``weight``, ``avg_factor`` and ``reduction_override`` keywords. Tensor options
(``class_weight``, ``pos_weight``) are registered as buffers, so they follow ``.to()`` and
``state_dict``; they may be given as lists (what Hydra and TOML configs produce).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lossforge._checks import check_number, check_reduction, fail


def check_buffer_values(
    owner: str, name: str, value: Tensor | None, *, high: float | None = None
) -> None:
    """Construction-time value check of a tensor option: finite, >= 0 (and <= ``high``).

    Free at construction, where buffers are still on the CPU; skipped for tensors already on an
    accelerator (no device sync).
    """
    if value is None or value.device.type != "cpu" or value.numel() == 0:
        return
    ok = torch.isfinite(value) & (value >= 0)
    if high is not None:
        ok = ok & (value <= high)
    if not bool(ok.all()):
        expected = f"values in [0, {high:g}]" if high is not None else "finite non-negative values"
        fail(owner, name, expected, value.flatten()[:8].tolist())


class Loss(nn.Module):
    """Base class: ``reduction``, ``loss_weight`` and ``reduction_override`` handling.

    Subclasses list the names of their hyperparameters in ``_repr_fields`` for ``repr``.
    """

    #: Key in ``lossforge.registry`` (the functional stem without ``_loss``); set by every subclass.
    registry_name: str = ""
    _repr_fields: tuple[str, ...] = ()

    def __init__(self, *, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        name = type(self).__name__
        self.reduction = check_reduction(name, reduction)
        self.loss_weight = check_number(name, "loss_weight", loss_weight)

    def _resolve_reduction(self, reduction_override: str | None) -> str:
        if reduction_override is None:
            return self.reduction
        return check_reduction(type(self).__name__, reduction_override, name="reduction_override")

    def _scale(self, loss: Tensor) -> Tensor:
        return loss if self.loss_weight == 1.0 else loss * self.loss_weight

    def _register_tensor_option(self, name: str, value: Tensor | Sequence[float] | None) -> None:
        """Register a tensor hyperparameter (class weights, pos_weight) as a buffer."""
        if value is None:
            self.register_buffer(name, None)
            return
        if isinstance(value, Tensor):
            tensor = value.detach().clone()
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            # any sequence: lists, tuples, Hydra/OmegaConf ListConfig
            try:
                tensor = torch.tensor([float(v) for v in value])
            except (TypeError, ValueError):
                fail(
                    type(self).__name__,
                    name,
                    "a sequence of numbers or a tensor",
                    repr(value),
                    TypeError,
                )
        else:
            fail(
                type(self).__name__,
                name,
                "a tensor, a sequence of numbers or None",
                type(value).__name__,
                TypeError,
            )
        if not tensor.is_floating_point():
            tensor = tensor.float()
        self.register_buffer(name, tensor)

    def extra_repr(self) -> str:
        parts = []
        for field in self._repr_fields:
            value = getattr(self, field)
            if isinstance(value, Tensor):
                value = (
                    value.tolist() if value.numel() <= 8 else f"tensor(shape={tuple(value.shape)})"
                )
            parts.append(f"{field}={value!r}")
        parts.append(f"reduction={self.reduction!r}")
        if self.loss_weight != 1.0:
            parts.append(f"loss_weight={self.loss_weight!r}")
        return ", ".join(parts)
