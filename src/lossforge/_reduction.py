"""The one place where unreduced losses are weighted and reduced.

Every functional loss computes its unreduced loss ``l`` (in float32, or float64 for float64 inputs)
and ends with ``weight_reduce``. The rules, shared by every loss and backend:

* ``weight`` multiplies ``l`` element-wise. It must have ``l``'s shape, be a scalar, share ``l``'s
  leading dimensions (a ``(N,)`` weight on a ``(N, C)`` loss is per sample), or broadcast to ``l``
  with the same number of dimensions (``(N, 1)`` on ``(N, C)``). Anything else raises: no silent
  broadcasting along the wrong axis.
* Elements outside ``valid`` (ignored targets) are exactly zero in every reduction.
* ``"sum"`` adds the weighted losses. ``"mean"`` divides that sum by ``avg_factor`` when given,
  else by a loss-specific ``denominator`` when the loss defines one (PyTorch's class-weighted
  cross-entropy), else by the number of valid elements.
* A zero denominator (empty batch, everything ignored, ``avg_factor=0`` with nothing to sum) gives
  exactly ``0`` with zero gradients, still attached to the graph; never NaN. Denominators are made
  safe *before* dividing (``where(d > 0, d, 1)``), so no NaN gradient leaks from an unused branch.
* ``avg_factor`` with ``"sum"`` raises ``ValueError``; a float or 0-d tensor works without a host
  sync.
* Inside ``lossforge.distributed.global_normalization()`` the ``"mean"`` denominator
  (``avg_factor``, ``denominator`` or the valid count) is first replaced by its global value,
  summed over the ranks and divided by the world size (``global_denominator`` below), so that K
  data-parallel ranks reproduce one process on the concatenated batch. Outside that scope nothing
  changes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from lossforge._checks import check_reduction, fail, value_checks_enabled

__all__ = [
    "Backend",
    "Reduction",
    "check_avg_factor",
    "class_weight_denominator",
    "expand_weight",
    "finish_reduction",
    "global_denominator",
    "weight_reduce",
]

Reduction = Literal["none", "mean", "sum"]
Backend = Literal["auto", "torch", "triton"]


def expand_weight(
    fn: str, weight: object, shape: torch.Size, like: Tensor, name: str = "weight"
) -> Tensor:
    """Check an element-wise weight against the unreduced loss shape and make it broadcastable."""
    if not isinstance(weight, Tensor):
        fail(fn, name, "a torch.Tensor", type(weight).__name__, TypeError)
    w: Tensor = weight  # type: ignore[assignment]
    if w.is_complex():
        fail(fn, name, "a real tensor", f"dtype {w.dtype}", TypeError)
    if w.device != like.device:
        fail(fn, name, f"on the device of the input ({like.device})", w.device)
    target = tuple(shape)
    ws = tuple(w.shape)
    leading = w.ndim < len(target) and ws == target[: w.ndim]
    same_rank = w.ndim == len(target) and all(a in (1, b) for a, b in zip(ws, target, strict=True))
    if leading:
        w = w.reshape(ws + (1,) * (len(target) - w.ndim))
    elif not (w.ndim == 0 or same_rank):
        fail(
            fn,
            name,
            f"the loss shape {target}, its leading dimensions, or a same-rank broadcastable shape",
            f"shape {ws}",
        )
    return w.to(like.dtype)


def check_avg_factor(fn: str, avg_factor: object, reduction: str) -> float | Tensor | None:
    """Validate ``avg_factor`` without reading device values (those checks follow the value
    mode)."""
    if avg_factor is None:
        return None
    if reduction == "sum":
        fail(
            fn,
            "avg_factor",
            'None when reduction="sum" (avg_factor can not be used with sum)',
            avg_factor,
        )
    if isinstance(avg_factor, Tensor):
        if avg_factor.numel() != 1:
            fail(
                fn,
                "avg_factor",
                "a number or a one-element tensor",
                f"shape {tuple(avg_factor.shape)}",
            )
        if avg_factor.is_complex() or avg_factor.dtype == torch.bool:
            fail(fn, "avg_factor", "a real tensor", f"dtype {avg_factor.dtype}", TypeError)
        if value_checks_enabled(avg_factor):
            v = float(avg_factor)
            if not math.isfinite(v) or v < 0:
                fail(fn, "avg_factor", "a finite number >= 0", v)
        return avg_factor
    if isinstance(avg_factor, bool) or not isinstance(avg_factor, numbers.Real):
        fail(fn, "avg_factor", "a number or a one-element tensor", repr(avg_factor), TypeError)
    v = float(avg_factor)  # type: ignore[arg-type]
    if not math.isfinite(v) or v < 0:
        fail(fn, "avg_factor", "a finite number >= 0", v)
    return v


# Set (and restored) only by ``lossforge.distributed.global_normalization``: maps a rank's local
# "mean" denominator to the global one. A plain module global rather than a ContextVar so that
# ``torch.compile`` reads it without a graph break (it is process-wide, one process per rank).
_denominator_hook: Callable[[Tensor, bool], Tensor] | None = None


def global_denominator(
    denom: Tensor | float, *, is_avg_factor: bool = False, like: Tensor | None = None
) -> Tensor | float:
    """The ``"mean"`` denominator to divide by: ``denom`` itself, or its global value.

    Returns ``denom`` unchanged outside ``lossforge.distributed.global_normalization()``. Inside it,
    returns ``all_reduce(denom) / world_size`` as a tensor (on ``like``'s device and dtype when
    ``denom`` is a number). Fused kernels that compute their own ``"mean"`` call this on their
    denominator so they follow the same rule as ``weight_reduce``.
    """
    hook = _denominator_hook
    if hook is None:
        return denom
    if not isinstance(denom, Tensor):
        ref = like if like is not None else torch.empty(())
        denom = torch.tensor(float(denom), dtype=ref.dtype, device=ref.device)
    return hook(denom, is_avg_factor)


def class_weight_denominator(w_target: Tensor, valid: Tensor | None) -> Tensor:
    """PyTorch's ``"mean"`` denominator for class-weighted softmax losses.

    The summed class weights ``w[y]`` of the valid (not ignored) targets. Passed to
    ``weight_reduce(..., denominator=...)``; a zero sum (everything ignored, or every valid target
    weighted 0) then gives exactly 0, also when label smoothing leaves a non-zero numerator (PyTorch
    returns NaN or inf there), and under global normalisation the test uses the global sum.
    """
    if valid is not None:
        zero = torch.zeros((), dtype=w_target.dtype, device=w_target.device)
        w_target = torch.where(valid, w_target, zero)
    return w_target.sum()


def _safe_div(total: Tensor, denom: Tensor) -> Tensor:
    """``total / denom``, and exactly 0 (zero gradients, still attached) where ``denom`` is 0.

    The denominator is made safe before dividing, so the unselected branch cannot leak a NaN
    gradient (pytorch#52248). A zero denominator with a non-zero numerator only happens with
    class-weighted means (all valid targets weighted 0, label smoothing leaving a numerator) or a
    zero ``avg_factor``; both are defined as 0.
    """
    denom = denom.to(total.dtype)
    positive = denom > 0
    quotient = total / torch.where(positive, denom, torch.ones_like(denom))
    return torch.where(positive, quotient, torch.zeros_like(quotient))


def weight_reduce(
    loss: Tensor,
    *,
    fn: str,
    reduction: str,
    weight: Tensor | None = None,
    avg_factor: float | Tensor | None = None,
    valid: Tensor | None = None,
    denominator: Tensor | None = None,
) -> Tensor:
    """Apply ``weight``, the ``valid`` mask and the reduction to an unreduced loss.

    Args:
        loss: Unreduced loss in the compute dtype. Must be finite where ``valid`` is False (callers
            sanitise ignored positions before computing it).
        fn: Public name of the calling loss, for error messages.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        weight: Element-wise weight (see the module docstring for the accepted shapes).
        avg_factor: Denominator of ``"mean"``; a number or a one-element tensor.
        valid: Boolean mask broadcastable to ``loss`` (``False`` = ignored element).
        denominator: Loss-specific default denominator of ``"mean"`` (used when ``avg_factor`` is
            None), e.g. the summed class weights of PyTorch's weighted cross-entropy.

    Returns:
        ``loss``'s shape for ``"none"``, else a 0-d tensor.
    """
    reduction = check_reduction(fn, reduction)
    check_avg_factor(fn, avg_factor, reduction)
    if weight is not None:
        loss = loss * expand_weight(fn, weight, loss.shape, loss)
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    return finish_reduction(
        loss.sum(),
        fn=fn,
        reduction=reduction,
        avg_factor=avg_factor,
        numel=loss.numel(),
        valid=valid,
        denominator=denominator,
    )


def finish_reduction(
    total: Tensor,
    *,
    fn: str,
    reduction: str,
    avg_factor: float | Tensor | None = None,
    numel: int,
    valid: Tensor | None = None,
    denominator: Tensor | None = None,
) -> Tensor:
    """``"sum"`` / ``"mean"`` from an already weighted and masked sum (``weight_reduce``'s rules).

    For losses whose fused PyTorch kernel returns the sum directly (cross-entropy): ``total`` is the
    sum over the valid elements, ``numel`` the number of unreduced loss elements, ``valid`` the mask
    that defines the default ``"mean"`` count (it may broadcast over the loss: a per-row mask).
    """
    reduction = check_reduction(fn, reduction)
    avg = check_avg_factor(fn, avg_factor, reduction)
    if reduction == "none":
        fail(fn, "reduction", '"mean" or "sum" (an unreduced loss has no total)', reduction)
    if reduction == "sum":
        return total
    if _denominator_hook is not None:
        return _global_mean(fn, total, numel, avg, valid, denominator)
    if avg is not None:
        if isinstance(avg, Tensor):
            avg_t = avg.to(device=total.device, dtype=total.dtype).reshape(())
            if value_checks_enabled(avg_t) and float(avg_t) == 0 and float(total.detach()) != 0:
                fail(fn, "avg_factor", "> 0 when the weighted loss sum is non-zero", 0.0)
            return _safe_div(total, avg_t)
        if avg == 0:
            if value_checks_enabled(total) and float(total.detach()) != 0:
                fail(fn, "avg_factor", "> 0 when the weighted loss sum is non-zero", 0.0)
            return total * 0.0
        return total / avg
    if denominator is not None:
        return _safe_div(total, denominator)
    if valid is None:
        return total / numel if numel > 0 else total
    # The total only sums valid elements, so it is 0 when there are none: 0 / 1 = 0 exactly.
    return total / _valid_count(valid, numel).clamp(min=1).to(total.dtype)


def _valid_count(valid: Tensor, numel: int) -> Tensor:
    count_t = valid.sum()
    if valid.numel() != numel:
        # valid broadcasts over some dimensions of the loss (e.g. a per-row mask).
        count_t = count_t * (numel // max(valid.numel(), 1))
    return count_t


def _global_mean(
    fn: str,
    total: Tensor,
    numel: int,
    avg: float | Tensor | None,
    valid: Tensor | None,
    denominator: Tensor | None,
) -> Tensor:
    """``"mean"`` under global normalisation: the same denominator rules, with the global value.

    Exactly one collective per call, whatever this rank's data (empty, all ignored): no rank can
    skip it and deadlock the others.
    """
    if avg is not None:
        local = avg if isinstance(avg, Tensor) else torch.tensor(float(avg))
        local = local.reshape(()).to(device=total.device, dtype=total.dtype)
        is_avg = True
    elif denominator is not None:
        local, is_avg = denominator, False
    elif valid is None:
        local, is_avg = (
            torch.tensor(float(numel), dtype=total.dtype, device=total.device),
            False,
        )
    else:
        local, is_avg = _valid_count(valid, numel).to(total.dtype), False
    hook = _denominator_hook
    if hook is None:  # pragma: no cover - only reached through a race with the scope's exit
        return _safe_div(total, local)
    glob = hook(local, is_avg)
    if is_avg and value_checks_enabled(glob) and float(glob) == 0 and float(total.detach()) != 0:
        fail(
            fn,
            "avg_factor",
            "> 0 (summed over the ranks) when the weighted loss sum is non-zero",
            0.0,
        )
    return _safe_div(total, glob)
