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
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lossforge._checks import check_reduction, fail, is_finite, value_checks_on

__all__ = [
    "AvgFactor",
    "Backend",
    "Denominator",
    "Reduction",
    "WeightLayout",
    "check_avg_factor",
    "class_weight_denominator",
    "divide",
    "expand_weight",
    "finish_reduction",
    "global_denominator",
    "kernel_mean",
    "mean_denominator",
    "reduce_loss",
    "weight_layout",
    "weight_reduce",
]

Reduction = Literal["none", "mean", "sum"]
Backend = Literal["auto", "torch", "triton"]
#: ``avg_factor``: a number or a one-element tensor (validated by ``check_avg_factor``).
AvgFactor = float | Tensor | None


def expand_weight(
    fn: str, weight: object, shape: torch.Size, like: Tensor, name: str = "weight"
) -> Tensor:
    """Check an element-wise weight against the unreduced loss shape and make it broadcastable."""
    if not isinstance(weight, Tensor):
        fail(fn, name, "a torch.Tensor", type(weight).__name__, TypeError)
    w: Tensor = weight
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


@dataclass(frozen=True)
class WeightLayout:
    """How an element-wise ``weight`` lines up with the unreduced loss (for the fused kernels).

    Attributes:
        tensor: The weight (``None`` for ``mode == NONE``), in its own dtype.
        mode: ``NONE`` (0), ``FULL`` (1: the loss's shape, possibly an expanded view), ``LEADING``
            (2: the loss's leading dimensions; element ``i`` of the flattened loss uses weight
            ``i // inner``), ``SCALAR`` (3: one value).
        inner: Loss elements per weight element in ``LEADING`` mode, else 1.
    """

    tensor: Tensor | None
    mode: int
    inner: int = 1

    NONE = 0
    FULL = 1
    LEADING = 2
    SCALAR = 3


def weight_layout(
    fn: str, weight: object, shape: torch.Size | tuple[int, ...], like: Tensor
) -> WeightLayout:
    """Validate ``weight`` with ``expand_weight``'s rules and describe its layout (no copy)."""
    if weight is None:
        return WeightLayout(None, WeightLayout.NONE)
    expand_weight(fn, weight, torch.Size(shape), like)  # the checks; the result is not needed
    w: Tensor = weight  # type: ignore[assignment]
    target = tuple(shape)
    if w.ndim == 0:
        return WeightLayout(w, WeightLayout.SCALAR)
    if tuple(w.shape) == target:
        return WeightLayout(w, WeightLayout.FULL)
    if w.ndim < len(target):
        inner = math.prod(target[w.ndim :])
        return WeightLayout(w, WeightLayout.LEADING, max(inner, 1))
    return WeightLayout(w.expand(target), WeightLayout.FULL)


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
        if value_checks_on(avg_factor):
            v = avg_factor.item()  # (float() warns for a tensor that requires grad)
            if not is_finite(v) or v < 0:
                fail(fn, "avg_factor", "a finite number >= 0", v)
        return avg_factor
    if isinstance(avg_factor, bool) or not isinstance(avg_factor, numbers.Real):
        fail(fn, "avg_factor", "a number or a one-element tensor", repr(avg_factor), TypeError)
    v = float(avg_factor)
    if not is_finite(v) or v < 0:
        fail(fn, "avg_factor", "a finite number >= 0", v)
    return v


# Set (and restored) only by ``lossforge.distributed.global_normalization``: maps a rank's local
# "mean" denominator to the global one. A plain module global rather than a ContextVar so that
# ``torch.compile`` reads it without a graph break (it is process-wide, one process per rank).
_denominator_hook: Callable[[Tensor, bool], Tensor] | None = None


def global_denominator(
    denom: Tensor | float,
    *,
    is_avg_factor: bool = False,
    like: Tensor | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor | float:
    """The ``"mean"`` denominator to divide by: ``denom`` itself, or its global value.

    Returns ``denom`` unchanged outside ``lossforge.distributed.global_normalization()``. Inside it,
    returns ``all_reduce(denom) / world_size`` as a tensor (on ``like``'s device and dtype, or the
    given ``device`` / ``dtype``, when ``denom`` is a number). ``mean_denominator`` calls it for
    every backend.
    """
    hook = _denominator_hook
    if hook is None:
        return denom
    if not isinstance(denom, Tensor):
        if like is not None:
            device, dtype = like.device, like.dtype
        # a fill on the device, not a host tensor copied over (a pageable copy per call)
        denom = torch.full((), float(denom), dtype=dtype, device=device)
    return hook(denom, is_avg_factor)


def kernel_mean(reduction: str, avg_factor: object, numel: int) -> bool:
    """Whether ``"mean"`` is the plain ``total / numel`` with ``numel > 0`` known on the host and no
    global denominator: exactly what PyTorch's own ``"mean"`` kernels compute, so a loss may ask
    its kernel for the mean (one division and its backward fewer than summing first). Not for an
    ``avg_factor``, inside ``global_normalization()``, or over nothing (the kernels give NaN there,
    the contract 0)."""
    return reduction == "mean" and avg_factor is None and numel > 0 and _denominator_hook is None


@dataclass(frozen=True)
class Denominator:
    """The divisor of ``"mean"``, decided here for every backend.

    Attributes:
        value: ``d >= 0``: a host number (no device work), or a 0-d tensor on the loss's device
            (an ``avg_factor`` tensor, a count computed on the device, or the global value inside
            ``global_normalization()``; never read on the host unless value checks are on).
        strict: ``d`` came from ``avg_factor``: ``d == 0`` with a non-zero sum is an error
            (``ValueError`` under value checks, NaN without), not a silent 0.
        count: ``d`` is a count of valid elements (an integer, summed over the ranks inside
            ``global_normalization()``), so ``d == 0`` means a sum over nothing (exactly 0) and
            ``total / max(d, 1)`` applies the rule below in two operations.

    The rule every backend applies (``divide`` here; the fused kernels' final stage does the same
    arithmetic on the device):

    * ``d > 0``: the loss is ``total / d`` and every element's gradient is scaled by ``1 / d``;
    * ``d == 0``: the loss is exactly 0 with zero gradients (nothing valid: an empty batch,
      everything ignored, every valid target weighted 0), except with ``strict`` and a non-zero
      total, which is NaN;
    * ``d < 0`` or NaN (an ``avg_factor`` tensor read with value checks off): NaN.
    """

    value: Tensor | float
    strict: bool = False
    count: bool = False

    def grad_scale(self) -> tuple[float, Tensor | None]:
        """The element gradients' factor ``1 / d`` (0 where ``d <= 0``) as ``(host, device)``:
        the device tensor when ``d`` is one (no host sync), else the host float."""
        d = self.value
        if isinstance(d, Tensor):
            d32 = d.detach().to(torch.float32).reshape(1)
            pos = d32 > 0
            return 1.0, torch.where(pos, 1.0 / torch.where(pos, d32, 1.0), 0.0)
        return (1.0 / d if d > 0 else 0.0), None


def mean_denominator(
    *,
    avg_factor: float | Tensor | None,
    numel: int,
    valid: Tensor | None = None,
    denominator: Tensor | None = None,
    device: torch.device,
    dtype: torch.dtype,
) -> Denominator:
    """The one ``"mean"`` rule: ``avg_factor`` when given, else the loss's own ``denominator``
    (PyTorch's class-weight sum), else the number of valid elements (``numel`` without a ``valid``
    mask). Inside ``global_normalization()`` the value is replaced by its global one (one
    collective per call, whatever this rank holds, so no rank can skip it and deadlock).

    Args:
        avg_factor: Already validated by ``check_avg_factor``.
        numel: Number of unreduced loss elements.
        valid: Bool mask of the valid elements; it may broadcast over the loss (a per-row mask of
            an index target stands for its ``C`` elements).
        denominator: A loss-specific default (a tensor on the loss's device).
        device, dtype: The loss's device and compute dtype (for the global value).
    """
    count = False
    if avg_factor is not None:
        local: Tensor | float = avg_factor
        strict = True
    elif denominator is not None:
        local, strict = denominator, False
    elif valid is None:
        # (a symbolic size under torch.export / dynamic shapes stays symbolic: float() of it
        # would specialise the batch size to a constant)
        local = float(numel) if type(numel) is int else torch.sym_float(numel)
        strict = False
    else:
        local, strict, count = _valid_count(valid, numel), False, True
    if _denominator_hook is not None:
        if isinstance(local, Tensor):
            local = local.reshape(()).to(device=device, dtype=dtype)
        local = global_denominator(local, is_avg_factor=strict, device=device, dtype=dtype)
        # The global count over K (the rank mean) may lie in (0, 1) when the whole batch has
        # fewer valid elements than ranks: the count's max(d, 1) shortcut would clamp it there,
        # so the general rule (0 only for d == 0) applies.
        count = False
    elif isinstance(local, Tensor) and local.ndim:
        local = local.reshape(())
    return Denominator(local, strict, count)


def divide(fn: str, total: Tensor, denom: Denominator) -> Tensor:
    """``total / d`` by ``Denominator``'s rule (safe denominators first, so an unused branch
    never leaks a NaN gradient, pytorch#52248)."""
    d = denom.value
    if not isinstance(d, Tensor):
        if d > 0:
            return total / d
        # d == 0 (a host avg_factor is never negative: check_avg_factor rejects it)
        if not denom.strict:
            return total  # nothing valid: the sum over no element is exactly 0
        _check_zero_avg_factor(fn, total, 0.0)
        return torch.where(total == 0, total * 0.0, float("nan"))
    if denom.count:
        # A count: d == 0 only when nothing was summed (total exactly 0, or NaN from a poisoned
        # index), so max(d, 1) is the rule above without the masks (2 ops instead of 6, and a
        # backward of one division). An integer count divides a float total as a float.
        return total / d.clamp_min(1)
    d = d.to(total.dtype)
    pos = d > 0
    quotient = total / torch.where(pos, d, torch.ones_like(d))
    if not denom.strict:
        # 0 for d == 0 (nothing valid); NaN for d < 0 or NaN (a NaN or negative weight or target
        # upstream, read with value checks off): loud, never a silent 0.
        zero = d == 0
    else:
        if value_checks_on(d, total):
            _check_zero_avg_factor(fn, total, d.item())  # (float() warns if d needs grad)
        # 0 only for d == 0 with nothing to sum; NaN for a zero divisor of a non-zero sum, or
        # d < 0.
        zero = (d == 0) & (total == 0)
    rest = torch.where(zero, 0.0, float("nan")).to(total.dtype)
    return torch.where(pos, quotient, rest)


def _check_zero_avg_factor(fn: str, total: Tensor, d: float) -> None:
    if not value_checks_on(total):
        return
    if not (d >= 0 and is_finite(d)):
        fail(fn, "avg_factor", "a finite number >= 0", d)
    if d == 0 and total.item() != 0:
        where = " (summed over the ranks)" if _denominator_hook is not None else ""
        fail(fn, "avg_factor", f"> 0{where} when the weighted loss sum is non-zero", 0.0)


def class_weight_denominator(w_target: Tensor, valid: Tensor | None) -> Tensor:
    """PyTorch's ``"mean"`` denominator for class-weighted softmax losses.

    The summed class weights ``w[y]`` of the valid (not ignored) targets. Passed to
    ``weight_reduce(..., denominator=...)``; a zero sum (everything ignored, or every valid target
    weighted 0) then gives exactly 0, also when label smoothing leaves a non-zero numerator (PyTorch
    returns NaN there), and under global normalisation the test uses the global sum.
    """
    if valid is not None:
        zero = torch.zeros((), dtype=w_target.dtype, device=w_target.device)
        w_target = torch.where(valid, w_target, zero)
    return w_target.sum()


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
    """Validate ``reduction`` and ``avg_factor``, then ``reduce_loss`` (for code outside the loss
    pipelines, which validate once and call ``reduce_loss`` directly)."""
    reduction = check_reduction(fn, reduction)
    avg = check_avg_factor(fn, avg_factor, reduction)
    return reduce_loss(
        loss,
        fn=fn,
        reduction=reduction,
        weight=weight,
        avg_factor=avg,
        valid=valid,
        denominator=denominator,
    )


def reduce_loss(
    loss: Tensor,
    *,
    fn: str,
    reduction: str,
    weight: Tensor | None = None,
    avg_factor: float | Tensor | None = None,
    valid: Tensor | None = None,
    denominator: Tensor | None = None,
) -> Tensor:
    """Apply ``weight``, the ``valid`` mask and the (already validated) reduction.

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
    if reduction == "sum":
        return total
    if reduction != "mean":
        fail(fn, "reduction", '"mean" or "sum" (an unreduced loss has no total)', reduction)
    denom = mean_denominator(
        avg_factor=avg_factor,
        numel=numel,
        valid=valid,
        denominator=denominator,
        device=total.device,
        dtype=total.dtype,
    )
    return divide(fn, total, denom)


def _valid_count(valid: Tensor, numel: int) -> Tensor:
    # an int64 count: the division promotes it (a float sum would convert the mask first)
    count_t = valid.sum()
    if valid.numel() != numel:
        # valid broadcasts over some dimensions of the loss (e.g. a per-row mask).
        count_t = count_t * (numel // max(valid.numel(), 1))
    return count_t
