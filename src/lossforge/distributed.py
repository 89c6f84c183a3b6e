r"""Global normalisation of count-based losses under data-parallel training (DDP).

A loss whose ``"mean"`` divides by a count (valid elements, positives, summed class weights, an
``avg_factor``) gives a different answer on K data-parallel ranks than on one process: each rank
divides its own sum $S_r$ by its own count $n_r$. One process on the concatenated batch computes

$$
L = \frac{\sum_r S_r}{\sum_r n_r}.
$$

DDP *averages* the parameter gradients over the ranks, so each rank must return

$$
L_r = \frac{S_r}{\bar n}, \qquad \bar n = \frac{1}{K}\sum_r n_r ,
$$

the global count divided by the world size (torchtune PR #2172; DETR's ``num_boxes``). Then the
mean of the rank losses is $L$ and the averaged gradients are the gradients of $L$.

Two ways to get $\bar n$:

* ``global_avg_factor(count)``: the explicit helper for mmdetection-style heads, which pass
  ``avg_factor=num_pos`` themselves. It clamps the **global** sum (``max(sum_r n_r, 1)``), not the
  rank mean: ``max(reduce_mean(num_pos), 1)``, the common idiom, is wrong by up to a factor K when
  fewer than K positives exist in the whole batch.
* ``with global_normalization():``: every lossforge loss called inside the scope replaces its
  ``"mean"`` denominator (the valid count, the loss-specific denominator or ``avg_factor``) by its
  global value. Pass *local* counts there.

Dice-style losses whose ``batch=True`` statistics are sums over the whole batch use
``global_sum`` (or ``maybe_global_sum``): the value is the sum over the ranks, the gradient flows
to the local part.

Everything here is a no-op without an initialised process group (one process is the K = 1 case).
Counts are all-reduced with ``torch.distributed.all_reduce`` on a detached clone (never
``torch.distributed.nn.all_reduce``, whose backward scales gradients unexpectedly, pytorch#58005),
with no host synchronisation, and the caller's tensor is never modified. Every rank issues the same
collectives whatever its data, so a rank with an empty or fully ignored batch cannot deadlock the
others (a rank that raises on bad data stops issuing them: see docs/distributed.md).

Example:
    >>> import torch
    >>> from lossforge.distributed import global_avg_factor
    >>> global_avg_factor(torch.tensor(0))  # no process group: max(count, 1)
    tensor(1.)
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lossforge import _reduction
from lossforge._checks import fail

__all__ = [
    "all_reduce_sum",
    "global_avg_factor",
    "global_normalization",
    "global_normalization_enabled",
    "global_sum",
    "is_distributed",
    "maybe_global_sum",
    "scope_group",
    "world_size",
]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and a default process group is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def world_size(group: Any = None) -> int:
    """Number of ranks in ``group`` (default: the default process group; 1 without one)."""
    if not is_distributed():
        return 1
    return (
        torch.distributed.get_world_size()
        if group is None
        else torch.distributed.get_world_size(group)
    )


def _all_reduce(x: Tensor, group: Any) -> None:
    # (the default group as a plain call: the path torch.compile has always traced)
    if group is None:
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM)
    else:
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM, group=group)


def _reduce_device(like: Tensor | None) -> torch.device:
    if like is not None:
        return like.device
    if is_distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _as_count(
    fn: str, count: object, device: torch.device | None, dtype: torch.dtype | None
) -> Tensor:
    """A detached floating 0-d copy of ``count`` (never the caller's tensor itself)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        fail(fn, "dtype", "a floating torch.dtype", repr(dtype), TypeError)
    if isinstance(count, Tensor):
        if count.numel() != 1:
            fail(fn, "count", "a number or a one-element tensor", f"shape {tuple(count.shape)}")
        if count.is_complex() or count.dtype == torch.bool:
            fail(fn, "count", "a real tensor (not bool)", f"dtype {count.dtype}", TypeError)
        if dtype is None:
            # integer counts in float64: exact (below 2**53) through the sum and the division by
            # the world size; the losses divide in their own dtype
            dtype = count.dtype if count.is_floating_point() else torch.float64
        # .to() may return the same tensor; clone so the in-place all_reduce never touches it.
        return count.detach().reshape(()).to(device=device or count.device, dtype=dtype).clone()
    if isinstance(count, bool) or not isinstance(count, numbers.Real):
        fail(fn, "count", "a number or a one-element tensor", repr(count), TypeError)
    v = float(count)
    if not (0 <= v < math.inf):
        fail(fn, "count", "a finite number >= 0 (a count of elements or a sum of weights)", v)
    return torch.tensor(v, dtype=dtype or torch.float64, device=device or _reduce_device(None))


def all_reduce_sum(x: Tensor, *, group: Any = None) -> Tensor:
    """Sum of ``x`` over the ranks of ``group`` (default: the default process group), detached,
    in a new tensor (``x`` itself without a process group).

    Uses ``torch.distributed.all_reduce`` on a detached clone: no gradient flows through it and the
    argument is never modified. Every rank of the group must call it with a tensor of the same
    shape and dtype.
    """
    if not isinstance(x, Tensor):
        fail("all_reduce_sum", "x", "a torch.Tensor", type(x).__name__, TypeError)
    if not is_distributed():
        return x.detach()
    out = x.detach().clone()
    _all_reduce(out, group)
    return out


def global_avg_factor(
    count: Tensor | float,
    *,
    min_value: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    group: Any = None,
) -> Tensor:
    r"""The global ``avg_factor`` for a per-rank count (positives, boxes, valid pixels).

    $$
    \bar n = \frac{\max\bigl(\sum_{r=1}^{K} n_r,\ m\bigr)}{K}
    $$

    with $m$ = ``min_value``. Passing $\bar n$ as ``avg_factor`` on every rank makes the mean of the
    rank losses, and the DDP-averaged gradients, equal to one process on the concatenated batch with
    ``avg_factor = max(sum_r n_r, m)``. The clamp is applied to the global sum: clamping the rank
    mean (``max(reduce_mean(n), 1)``) is wrong when fewer than K positives exist in the batch.

    Without a process group this is ``max(count, min_value)`` as a tensor (no communication).
    Every rank must call it (also a rank with ``count = 0``).

    Args:
        count: This rank's count: a Python number, or a one-element tensor of any real dtype
            (``int64`` counts are fine). Never modified.
        min_value: Lower bound applied to the global sum, ``>= 0`` (``1.0``: mmdetection's
            ``max(num_pos, 1)`` done right; ``0.0`` keeps the raw sum).
        device: Device of the result for a Python-number ``count`` (default: the current CUDA
            device under NCCL, else the CPU); a tensor's own device otherwise.
        dtype: Floating dtype of the result (default: ``count``'s if floating, else float64:
            an integer or Python count stays exact through the sum and the division by the world
            size, 7 / 3 included; a loss given it divides in its own dtype).
        group: The process group whose ranks share the batch (default: the default group), e.g.
            the group a DDP model was built with; $K$ is its size. Only its ranks call this.

    Returns:
        A detached 0-d floating tensor, no host synchronisation.

    Raises:
        RuntimeError: called inside ``global_normalization()``, where the losses already all-reduce
            ``avg_factor`` (it would be reduced twice).

    Example:
        >>> global_avg_factor(3)
        tensor(3., dtype=torch.float64)
    """
    fn = "global_avg_factor"
    if _reduction._denominator_hook is not None:
        fail(
            fn,
            "avg_factor",
            "a local count inside global_normalization() (the losses all-reduce it there)",
            "a call to global_avg_factor, which would reduce it twice",
            RuntimeError,
        )
    _check_bound(fn, "min_value", min_value)
    dev = torch.device(device) if device is not None else None
    c = _as_count(fn, count, dev, dtype)
    k = world_size(group)
    if k > 1:
        _all_reduce(c, group)
    c = torch.clamp(c, min=float(min_value))
    return c / k if k > 1 else c


def _check_bound(fn: str, name: str, value: object) -> None:
    """A lower bound of a denominator: a real number (``TypeError`` otherwise; not a bool),
    finite and ``>= 0`` (``ValueError``: an infinite bound would make every loss 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(fn, name, "a real number", repr(value), TypeError)
    if not (0 <= float(value) < math.inf):
        fail(fn, name, "a finite number >= 0", repr(value))


def global_sum(x: Tensor, *, scale_grad: bool = True, group: Any = None) -> Tensor:
    r"""Sum of ``x`` over the ranks, differentiable through this rank's part.

    $$
    x_{\text{global}} = s\,x + \operatorname{stopgrad}\Bigl(\sum_r x_r - s\,x\Bigr)
    $$

    The value is the all-reduced sum; the gradient reaches the local ``x`` (the other ranks'
    contributions are constants). With ``scale_grad=True``, $s = K$ (the world size): DDP averages
    gradients over the ranks, so a loss computed from global sums on every rank needs its local
    gradient scaled by K for the averaged gradient to equal one process on the whole batch. Use
    ``scale_grad=False`` ($s = 1$) when gradients are summed, not averaged.

    Typical use: the per-class intersection and cardinality sums of a dice loss with
    ``batch=True``. Without a process group this returns ``x``.

    Args:
        x: This rank's partial sums; same shape and dtype on every rank.
        scale_grad: Scale the local gradient by the world size (see above).
        group: The process group to sum over (default: the default group); $K$ is its size.

    Returns:
        A tensor of ``x``'s shape.
    """
    if not isinstance(x, Tensor):
        fail("global_sum", "x", "a torch.Tensor", type(x).__name__, TypeError)
    if not is_distributed():
        return x
    total = all_reduce_sum(x, group=group)
    k = world_size(group)
    local = x * k if scale_grad and k > 1 else x
    return local + (total - local.detach())


def maybe_global_sum(x: Tensor) -> Tensor:
    """``global_sum(x)`` inside ``global_normalization()``, else ``x``.

    The hook for losses whose batch statistics are sums over the batch dimension (dice with
    ``batch=True``): call it on those sums before forming the ratio.
    """
    if _reduction._denominator_hook is None:
        return x
    return global_sum(x, scale_grad=_state_scale_grad, group=_state_group)


_state_min_avg_factor: float = 0.0
_state_scale_grad: bool = True
_state_group: Any = None


def scope_group() -> Any:
    """The process group of the active ``global_normalization()`` scope (``None``: the default
    group, also outside a scope): what a loss with statistics of its own (Seesaw's class counts,
    GHM's histogram) all-reduces them over inside the scope."""
    return _state_group


def _scope_scale_grad() -> bool:
    """The ``scale_grad`` of the active ``global_normalization()`` scope (True outside it)."""
    return _state_scale_grad


def _hook(local: Tensor, is_avg_factor: bool) -> Tensor:
    k = world_size(_state_group)
    glob = all_reduce_sum(local, group=_state_group) if k > 1 else local.detach()
    if is_avg_factor and _state_min_avg_factor > 0:
        glob = torch.clamp(glob, min=_state_min_avg_factor)
    if k > 1 and _state_scale_grad:
        glob = glob / k
    return glob


def global_normalization_enabled() -> bool:
    """Whether losses are currently normalised globally (inside ``global_normalization()``)."""
    return _reduction._denominator_hook is not None


@contextlib.contextmanager
def global_normalization(
    enabled: bool = True,
    *,
    min_avg_factor: float = 0.0,
    scale_grad: bool = True,
    group: Any = None,
) -> Iterator[None]:
    r"""Scope in which every lossforge ``"mean"`` uses the global denominator.

    Inside the scope, ``weight_reduce`` (the single place where every loss divides by a count)
    replaces this rank's denominator $n_r$ (``avg_factor``, the loss-specific denominator, or the
    number of valid elements) by $\bar n = \sum_r n_r / K$, and dice-style batch sums go through
    ``maybe_global_sum``. With DDP this makes the mean of the rank losses and the averaged gradients
    equal to one process on the concatenated batch. Without a process group it changes nothing
    (except the ``min_avg_factor`` clamp).

    Pass **local** counts as ``avg_factor`` inside the scope (not ``global_avg_factor``, which
    raises there). ``"none"`` and ``"sum"`` are unaffected. Each ``"mean"`` issues one all-reduce,
    so every rank must call the same losses in the same order (the usual DDP requirement).

    The switch is process-wide (one process per rank), not thread-local, so ``torch.compile``
    can read it without a graph break; do not enter it from several threads at once.

    Args:
        enabled: ``False`` makes the scope a no-op (handy for a config flag).
        min_avg_factor: Lower bound applied to the **global** sum of ``avg_factor`` values (e.g.
            ``1.0`` for a number of positives); the default ``0.0`` keeps the sum.
        scale_grad: Divide the global denominator by the world size (and scale ``global_sum``
            gradients by it) because DDP averages gradients. ``False`` when gradients are summed.
        group: The process group whose ranks share the batch (default: the default group): the
            group a DDP model was built with (``DistributedDataParallel(process_group=...)``) when
            several models train in one job. Every reduction of the scope runs over it and $K$ is
            its size; only its ranks may enter the scope with it.

    Example:
        >>> import torch
        >>> from lossforge.functional import l1_loss
        >>> with global_normalization():
        ...     l1_loss(torch.tensor([1.0, 3.0]), torch.zeros(2))  # no group: unchanged
        tensor(2.)
    """
    global _state_min_avg_factor, _state_scale_grad, _state_group
    if not isinstance(enabled, bool):
        fail("global_normalization", "enabled", "a bool", repr(enabled), TypeError)
    if not isinstance(scale_grad, bool):
        fail("global_normalization", "scale_grad", "a bool", repr(scale_grad), TypeError)
    _check_bound("global_normalization", "min_avg_factor", min_avg_factor)
    if not enabled:
        yield
        return
    saved = (_reduction._denominator_hook, _state_min_avg_factor, _state_scale_grad, _state_group)
    _state_min_avg_factor = float(min_avg_factor)
    _state_scale_grad = bool(scale_grad)
    _state_group = group
    _reduction._denominator_hook = _hook
    try:
        yield
    finally:
        (
            _reduction._denominator_hook,
            _state_min_avg_factor,
            _state_scale_grad,
            _state_group,
        ) = saved
