r"""Multi-task loss weighting as plain ``nn.Module``s.

A weighting turns the ``T`` scalar task losses of one step into the total loss that the caller
back-propagates:

$$
\mathcal{L} = \sum_{i=1}^{T} w_i\,\mathcal{L}_i \;+\; R
$$

where $w_i$ are the task weights and $R$ an optional regulariser (only ``UncertaintyWeighting``
has one). Every weighting here

* takes the losses as a sequence of 0-d tensors (or one 1-d tensor of length ``T``) and returns the
  total from ``forward``; ``weights()`` returns the current ``(T,)`` weights;
* never calls ``.backward()``, never touches the model and never switches grad mode;
* keeps its state in ``nn.Parameter``s (learned: uncertainty log-variances, GradNorm weights) or
  buffers (DTP's KPI averages, DWA's loss history, GradNorm's initial losses), so it follows
  ``.to()``, ``state_dict`` and checkpoints. ``forward`` writes no state; state changes only in the
  explicit ``update(...)`` / ``renormalize_()`` methods (and GradNorm's first ``gradnorm_loss``
  call, which records the initial losses).

Classes: ``Weighting`` (base), ``FixedWeighting``, ``EqualWeighting``, ``UncertaintyWeighting``,
``DynamicTaskPrioritization``, ``DynamicWeightAverage``, ``GradNorm``. Functions: ``weighted_sum``
and ``uncertainty_weighted_sum``.

**Precision.** Every weighting computes in float32, or in float64 when its state or the losses are
float64, whatever the dtype of the module and of the losses: ``model.half()`` also casts a
weighting held by the model, and in fp16/bf16 a clip at ``1 - 1e-4`` rounds to 1 (DTP's weight
becomes 0 and the task is dropped) and a moving average stops moving. So the total and
``weights()`` come back in float32 for fp16/bf16 inputs (float64 for float64 ones), as lossforge's
losses do; gradients reach fp16/bf16 losses and parameters in their own dtype; and a weighting's
floating-point buffers (running state and configuration) stay in float32 when the module is cast
to fp16 or bf16 (``.to(torch.float64)`` still moves them to float64). Learned parameters follow the
module's dtype, as the optimizer expects.

**No objective without an optimum.** Values for which a weighting has no minimum, or drops a task,
are refused: negative task losses for ``UncertaintyWeighting`` (the total decreases without bound
as ``log_vars`` go to -inf) and for GradNorm's training rates; KPIs outside ``[0, 1]``; non-positive
DWA epoch losses and GradNorm initial losses; all-zero fixed weights; and DTP clips or ``gamma``
for which a task's weight is 0 in float32. Numbers given as Python values are always checked. Checks
that read tensor values follow ``lossforge.set_value_checks`` (on for CPU tensors by default, off on
accelerators unless enabled) because they synchronise with the device; with them off, a value
outside the domain becomes NaN in the total (or in the state it was folded into), so a bad step is
loud instead of silently training towards a divergence.

Validation follows the library's rules: the number of tasks, option values and hyperparameters are
always checked; the value checks above and non-finite losses follow the value-check mode.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lossforge._buffers import apply_keeping_float32
from lossforge._checks import (
    check_choice,
    check_int,
    check_number,
    fail,
    is_ndarray,
    value_checks_enabled,
)

__all__ = [
    "DynamicTaskPrioritization",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FixedWeighting",
    "GradNorm",
    "TaskType",
    "UncertaintyWeighting",
    "Weighting",
    "uncertainty_weighted_sum",
    "weighted_sum",
]

TaskType = Literal["regression", "classification"]
Regularizer = Literal["log", "log1p"]
_TASK_TYPES = ("regression", "classification")
_REGULARIZERS = ("log", "log1p")

LossesLike = Sequence[Tensor] | Tensor


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _stack_losses(fn: str, losses: object, num_tasks: int | None, name: str = "losses") -> Tensor:
    """``T`` scalar losses as one ``(T,)`` tensor (graph kept); checks count and finiteness."""
    if isinstance(losses, Tensor):
        if losses.ndim != 1:
            fail(
                fn,
                name,
                "a 1-d tensor of task losses or a sequence of 0-d tensors",
                f"shape {tuple(losses.shape)}",
            )
        stacked = losses
    elif isinstance(losses, Sequence) and not isinstance(losses, str):
        items = list(losses)
        if not items:
            fail(fn, name, "at least one task loss", "an empty sequence")
        for i, item in enumerate(items):
            if not isinstance(item, Tensor):
                fail(fn, f"{name}[{i}]", "to be a torch.Tensor", type(item).__name__, TypeError)
            if item.numel() != 1:
                fail(fn, f"{name}[{i}]", "a scalar (0-d) loss", f"shape {tuple(item.shape)}")
        devices = {t.device for t in items}
        if len(devices) > 1:
            fail(fn, name, "every task loss on one device", sorted(str(d) for d in devices))
        stacked = torch.stack([t.reshape(()) for t in items])
    else:
        fail(
            fn, name, "a sequence of 0-d tensors or a 1-d tensor", type(losses).__name__, TypeError
        )
    if not stacked.is_floating_point():
        fail(fn, name, "floating-point losses", f"dtype {stacked.dtype}", TypeError)
    if stacked.shape[0] == 0:
        fail(fn, name, "at least one task loss", "an empty tensor")
    if num_tasks is not None and stacked.shape[0] != num_tasks:
        fail(fn, name, f"{num_tasks} task losses (num_tasks={num_tasks})", stacked.shape[0])
    if value_checks_enabled(stacked):
        finite = torch.isfinite(stacked.detach())
        if not bool(finite.all()):
            bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
            fail(
                fn,
                name,
                "finite task losses",
                f"{stacked.detach().tolist()} (non-finite at task {bad})",
            )
    return stacked


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16 / bf16 / fp32 state and losses)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _require(fn: str, name: str, values: Tensor, ok: Tensor, expected: str) -> Tensor:
    """``values`` where ``ok`` holds. Elsewhere: a ``ValueError`` under value checks, NaN when they
    are off (one element-wise select on ``T`` values; no device sync)."""
    if value_checks_enabled(values):
        if not bool(ok.all()):
            bad = [i for i, good in enumerate(ok.tolist()) if not good]
            fail(fn, name, expected, f"{values.detach().tolist()} (not at task {bad})")
        return values
    return torch.where(ok, values, torch.full_like(values, math.nan))


_NO_NEGATIVE_LOSS = (
    "non-negative task losses (uncertainty weighting has no optimum for a negative loss: the "
    "total decreases without bound as its log-variance goes to -inf)"
)


def _check_state_device(fn: str, losses: Tensor, state: Tensor) -> None:
    if losses.device != state.device:
        fail(
            fn,
            "losses",
            f"on the weighting's device ({state.device}; move the weighting with `.to(device)`)",
            losses.device,
        )


def _per_task_numbers(
    fn: str,
    name: str,
    value: object,
    num_tasks: int,
    *,
    low: float | None = None,
    low_open: bool = False,
) -> list[float]:
    """A number, or a sequence of ``num_tasks`` numbers, each checked against ``low``."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) != num_tasks:
            fail(fn, name, f"one value per task ({num_tasks})", f"{len(values)} values")
        return [
            check_number(fn, f"{name}[{i}]", v, low=low, low_open=low_open)
            for i, v in enumerate(values)
        ]
    v = check_number(fn, name, value, low=low, low_open=low_open)
    return [v] * num_tasks


def weighted_sum(losses: LossesLike, weights: Tensor) -> Tensor:
    r"""Weighted sum of task losses.

    $$
    \mathcal{L} = \sum_i w_i\,\mathcal{L}_i
    $$

    Args:
        losses: ``T`` scalar losses (sequence of 0-d tensors, or a ``(T,)`` tensor).
        weights: ``(T,)`` weights on the losses' device.

    Returns:
        The 0-d total, computed and returned in float32 (float64 when losses or weights are).
    """
    fn = "weighted_sum"
    if not isinstance(weights, Tensor):
        fail(fn, "weights", "to be a torch.Tensor", type(weights).__name__, TypeError)
    if weights.ndim != 1:
        fail(fn, "weights", "a 1-d tensor", f"shape {tuple(weights.shape)}")
    stacked = _stack_losses(fn, losses, weights.shape[0])
    _check_state_device(fn, stacked, weights)
    dtype = _compute_dtype(stacked.dtype, weights.dtype)
    return (weights.to(dtype) * stacked.to(dtype)).sum()


def uncertainty_weighted_sum(
    losses: LossesLike,
    log_vars: Tensor,
    *,
    task_types: TaskType | Sequence[TaskType] = "regression",
    regularizer: Regularizer = "log",
) -> Tensor:
    r"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), functional form.

    With $s_i = \log\sigma_i^2$ and $c_i = \tfrac12$ for regression tasks, $c_i = 1$ for
    classification tasks:

    $$
    \mathcal{L} = \sum_i c_i\,e^{-s_i}\,\mathcal{L}_i + r(s_i),\qquad
    r(s) = \tfrac12 s = \log\sigma \;(\texttt{"log"}),\qquad
    r(s) = \log(1 + e^{s}) = \log(1+\sigma^2) \;(\texttt{"log1p"})
    $$

    See ``UncertaintyWeighting`` for the derivation, the optima and why the total can be negative.

    Args:
        losses: ``T`` scalar, non-negative losses (a negative one raises under value checks and
            makes the total NaN without them: the objective has no minimum in $s_i$ then).
        log_vars: ``(T,)`` log-variances $s_i$ (usually an ``nn.Parameter``).
        task_types: ``"regression"`` or ``"classification"``, one for all tasks or one per task.
        regularizer: ``"log"`` (Kendall et al.) or ``"log1p"`` (Liebel & Koerner 2018, positive).

    Returns:
        The 0-d total, in float32 (float64 when losses or ``log_vars`` are float64).
    """
    fn = "uncertainty_weighted_sum"
    if not isinstance(log_vars, Tensor):
        fail(fn, "log_vars", "to be a torch.Tensor", type(log_vars).__name__, TypeError)
    if log_vars.ndim != 1:
        fail(fn, "log_vars", "a 1-d tensor", f"shape {tuple(log_vars.shape)}")
    num_tasks = log_vars.shape[0]
    factors = _task_factors(fn, task_types, num_tasks)
    regularizer = check_choice(fn, "regularizer", regularizer, _REGULARIZERS)  # type: ignore[assignment]
    stacked = _stack_losses(fn, losses, num_tasks)
    _check_state_device(fn, stacked, log_vars)
    stacked = _require(fn, "losses", stacked, stacked >= 0, _NO_NEGATIVE_LOSS)
    return _uncertainty_total(stacked, log_vars, factors, regularizer)


def _task_factors(fn: str, task_types: object, num_tasks: int) -> list[float]:
    if isinstance(task_types, str):
        kinds = [check_choice(fn, "task_types", task_types, _TASK_TYPES)] * num_tasks
    elif isinstance(task_types, Sequence):
        kinds = list(task_types)
        if len(kinds) != num_tasks:
            fail(fn, "task_types", f"one entry per task ({num_tasks})", f"{len(kinds)} entries")
        kinds = [check_choice(fn, f"task_types[{i}]", k, _TASK_TYPES) for i, k in enumerate(kinds)]
    else:
        fail(
            fn,
            "task_types",
            "a string or a sequence of strings",
            type(task_types).__name__,
            TypeError,
        )
    return [0.5 if k == "regression" else 1.0 for k in kinds]


def _uncertainty_total(
    losses: Tensor, log_vars: Tensor, factors: Sequence[float], regularizer: str
) -> Tensor:
    dtype = _compute_dtype(losses.dtype, log_vars.dtype)
    s = log_vars.to(dtype)
    c = torch.tensor(factors, dtype=dtype, device=log_vars.device)
    reg = 0.5 * s if regularizer == "log" else nn.functional.softplus(s)
    return (c * torch.exp(-s) * losses.to(dtype) + reg).sum()


# --------------------------------------------------------------------------------------------------
# Base class and static weightings
# --------------------------------------------------------------------------------------------------


class Weighting(nn.Module, ABC):
    r"""Base class: ``T`` task losses in, the total out; ``weights()`` gives the ``(T,)`` weights.

    $$
    \mathcal{L} = \sum_{i=1}^{T} w_i\,\mathcal{L}_i + R
    $$

    Subclasses implement ``weights()`` and, when they add a term that is not a weight times a loss,
    ``regularizer()``; ``_check_losses`` refuses losses for which the weighting has no optimum.
    ``forward`` checks the losses (count, scalar shape, device, finiteness and domain under the
    value-check mode) and returns the total in float32 (float64 when the losses or the state are
    float64); it never calls ``.backward()`` and writes no state. Floating-point buffers stay in
    float32 when the module is cast to fp16/bf16 (see the module docstring).

    Args:
        num_tasks: Number of tasks ``T`` (>= 1).
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_int(type(self).__name__, "num_tasks", num_tasks, low=1)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Weighting:
        # .half() / .bfloat16() / .to(torch.float16) go through here: running state and
        # configuration buffers keep float32 (a bf16 moving average cannot move by less than 1/256
        # of its value; 1 - 1e-4 rounds to 1). Parameters follow the module's dtype.
        apply_keeping_float32(self, lambda: super(Weighting, self)._apply(fn, recurse))
        # Configuration buffers are not in the state_dict: after ``to_empty`` (a module built on
        # the meta device, then materialised and loaded) they would hold garbage, so every cast
        # or move rebuilds them from their values (a host copy, once per ``.to()``).
        for name, values in self.__dict__.get("_constants", {}).items():
            old = self._buffers[name]
            if old is not None and old.device.type != "meta":
                self._buffers[name] = torch.tensor(values, dtype=old.dtype, device=old.device)
        return self

    def _constant(self, name: str, values: list[float], dtype: torch.dtype) -> None:
        """Register a configuration buffer (follows ``.to()``, not in the ``state_dict``)."""
        self.__dict__.setdefault("_constants", {})[name] = list(values)
        self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

    def _check_losses(self, fn: str, losses: Tensor) -> Tensor:
        """The losses, refused where this weighting has no optimum (none here)."""
        return losses

    @abstractmethod
    def weights(self) -> Tensor:
        """The current ``(T,)`` task weights (what multiplies each loss in ``forward``)."""

    def regularizer(self) -> Tensor | None:
        """Additive term of the total that is not a weight times a loss (``None`` here)."""
        return None

    def _weights_and_regularizer(self) -> tuple[Tensor, Tensor | None]:
        """``(weights(), regularizer())`` for one ``forward``, from one evaluation of the state
        where a subclass needs that (``UncertaintyWeighting``: one clamp of $s$, whose backward
        sees the total gradient)."""
        return self.weights(), self.regularizer()

    def forward(self, losses: LossesLike) -> Tensor:
        """Total loss $\\sum_i w_i \\mathcal{L}_i (+ R)$ of ``T`` scalar task losses (float32, or
        float64 when the losses or the state are float64)."""
        fn = type(self).__name__
        stacked = _stack_losses(fn, losses, self.num_tasks)
        w, reg = self._weights_and_regularizer()
        _check_state_device(fn, stacked, w)
        stacked = self._check_losses(fn, stacked)
        dtype = _compute_dtype(stacked.dtype, w.dtype)
        total = (w.to(dtype) * stacked.to(dtype)).sum()
        return total if reg is None else total + reg.to(dtype)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


class FixedWeighting(Weighting):
    r"""Constant, user-given task weights: $\mathcal{L} = \sum_i w_i \mathcal{L}_i$.

    Args:
        weights: One finite, non-negative number per task (list, tuple or 1-d tensor that does not
            require grad), at least one of them positive (all zero: the total is constant,
            nothing trains). Stored as a buffer (float32, or the tensor's float64), so it follows
            ``.to()`` and ``state_dict``.

    Example:
        >>> import torch
        >>> from lossforge.multitask import FixedWeighting
        >>> FixedWeighting([1.0, 0.5])([torch.tensor(2.0), torch.tensor(4.0)])
        tensor(4.)
    """

    task_weights: Tensor

    def __init__(self, weights: Sequence[float] | Tensor) -> None:
        fn = type(self).__name__
        if isinstance(weights, Tensor):
            if weights.ndim != 1:
                fail(fn, "weights", "a 1-d tensor", f"shape {tuple(weights.shape)}")
            if weights.requires_grad:
                # fixed weights are a buffer: a learned tensor would be silently detached
                fail(
                    fn,
                    "weights",
                    "a tensor that does not require grad (fixed weights; learned ones: "
                    "UncertaintyWeighting or GradNorm)",
                    "a tensor that requires grad",
                )
            values = weights.detach().cpu().tolist()
        elif isinstance(weights, Sequence) and not isinstance(weights, str):
            values = list(weights)
        else:
            fail(
                fn,
                "weights",
                "a sequence of numbers or a 1-d tensor",
                type(weights).__name__,
                TypeError,
            )
        if not values:
            fail(fn, "weights", "at least one weight", "an empty sequence")
        checked = [check_number(fn, f"weights[{i}]", v, low=0.0) for i, v in enumerate(values)]
        if not any(checked):
            fail(fn, "weights", "at least one positive weight (all zero: nothing trains)", checked)
        super().__init__(len(checked))
        dtype = (
            weights.dtype if isinstance(weights, Tensor) and weights.is_floating_point() else None
        )
        dtype = _compute_dtype(dtype or torch.get_default_dtype())
        # (checked on the CPU: also under `with torch.device("meta")`, deferred initialisation)
        if not bool(torch.isfinite(torch.tensor(checked, dtype=dtype, device="cpu")).all()):
            fail(fn, "weights", f"values finite in {dtype} (the buffer's dtype)", checked)
        self.register_buffer("task_weights", torch.tensor(checked, dtype=dtype))

    def weights(self) -> Tensor:
        return self.task_weights

    def extra_repr(self) -> str:
        return f"weights={self.task_weights.tolist()}"


class EqualWeighting(FixedWeighting):
    r"""Every task weight is 1: $\mathcal{L} = \sum_i \mathcal{L}_i$ (the usual baseline).

    Args:
        num_tasks: Number of tasks ``T``.
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__([1.0] * check_int(type(self).__name__, "num_tasks", num_tasks, low=1))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


# --------------------------------------------------------------------------------------------------
# Uncertainty weighting
# --------------------------------------------------------------------------------------------------


class _InwardClamp(torch.autograd.Function):
    """``s.clamp(low, high)`` whose gradient also passes outside the bounds when a descent step
    (``-grad``) would move ``s`` back inside. A plain clamp's gradient is 0 there, so a parameter
    that an optimizer step (or momentum) carried past a bound would never come back, its weight
    frozen whatever the losses do afterwards."""

    @staticmethod
    def forward(s: Tensor, low: float, high: float) -> Tensor:
        return s.clamp(low, high)

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[Tensor, float, float], output: Tensor) -> None:
        s, low, high = inputs
        ctx.save_for_backward(s)  # type: ignore[attr-defined]
        ctx.low, ctx.high = low, high  # type: ignore[attr-defined]

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None, None]:
        (s,) = ctx.saved_tensors  # type: ignore[attr-defined]
        low, high = ctx.low, ctx.high  # type: ignore[attr-defined]
        inside = (s >= low) & (s <= high)
        inward = ((s > high) & (grad > 0)) | ((s < low) & (grad < 0))
        return torch.where(inside | inward, grad, torch.zeros_like(grad)), None, None


class UncertaintyWeighting(Weighting):
    r"""Homoscedastic-uncertainty task weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Each task $i$ has a learned $s_i = \log\sigma_i^2$ (an ``nn.Parameter`` named ``log_vars``;
    learning the log keeps $\sigma^2 > 0$ without clamps). With $c_i = \tfrac12$ for a regression
    task (Gaussian likelihood, $\mathcal{L}_i$ = mean squared error) and $c_i = 1$ for a
    classification task (scaled softmax, $\mathcal{L}_i$ = cross-entropy):

    $$
    \mathcal{L} = \sum_i c_i\,e^{-s_i}\,\mathcal{L}_i + r(s_i),\qquad
    r(s) = \tfrac12 s = \log\sigma\quad(\texttt{regularizer="log"})
    $$

    i.e. $\frac{1}{2\sigma^2}\mathcal{L} + \log\sigma$ (regression) and
    $\frac{1}{\sigma^2}\mathcal{L} + \log\sigma$ (classification). For a fixed loss $L$ the
    optimum is $\sigma^2 = L$ (regression) and $\sigma^2 = 2L$ (classification), so a task's weight
    falls as its loss (its noise) grows.

    **The total can be negative, and that is expected**: the $\log\sigma$ term is negative whenever
    $\sigma < 1$, i.e. whenever a task's loss falls below 1 (regression) or 1/2 (classification).
    Only its gradient matters. If a non-negative total is wanted (logging, early stopping on the
    total), use ``regularizer="log1p"``, the positive form of Liebel & Koerner (2018):

    $$
    r(s) = \log(1 + \sigma^2) = \log(1 + e^{s}) > 0
    $$

    whose optimum for regression is $\sigma^2 = \tfrac14\left(L + \sqrt{L^2 + 8L}\right)$ (it also
    keeps $\sigma^2$ from collapsing when $L \to 0$). ``log_var_bounds`` optionally clamps $s$.

    **Task losses must be non-negative.** For $L < 0$ the total $c\,e^{-s}L + r(s)$ has no minimum
    in $s$ (with either regulariser it falls without bound as $s \to -\infty$), so training would
    diverge: a negative loss raises a ``ValueError`` under value checks, and makes the total NaN
    when they are off (the default on accelerators). A loss of exactly 0 is accepted (a batch with
    nothing valid gives 0): it only pulls $s$ down by the regulariser's gradient for that step; a
    loss that stays at 0 sends $\sigma^2 \to 0$ (use ``log_var_bounds`` or ``"log1p"`` then).

    Put this module's parameters in the optimizer (``list(model.parameters()) +
    list(weighting.parameters())``), usually without weight decay.

    Args:
        num_tasks: Number of tasks ``T``.
        task_types: ``"regression"`` or ``"classification"``, for all tasks or one per task.
        init_log_var: Starting $s_i$ (0 means $\sigma^2 = 1$), a number or one per task.
        regularizer: ``"log"`` (Kendall et al., $\log\sigma$) or ``"log1p"`` ($\log(1+\sigma^2)$).
        log_var_bounds: Optional ``(low, high)`` clamp of $s$ in the forward pass (``init_log_var``
            must lie within). Outside the bounds the gradient still passes when a descent step
            would bring $s$ back, so a parameter an optimizer step carried past a bound returns
            once the losses ask for it (a plain clamp's zero gradient would freeze it). A
            program made by ``torch.export`` keeps the forward operations only, so there the
            bounds are a plain clamp.

    Example:
        >>> import torch
        >>> from lossforge.multitask import UncertaintyWeighting
        >>> uw = UncertaintyWeighting(2, task_types=["regression", "classification"])
        >>> total = uw([torch.tensor(2.0), torch.tensor(0.7)])  # 0.5*2 + 0 + 1*0.7 + 0
        >>> round(float(total.detach()), 4)
        1.7
    """

    log_vars: nn.Parameter
    task_factors: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        task_types: TaskType | Sequence[TaskType] = "regression",
        init_log_var: float | Sequence[float] = 0.0,
        regularizer: Regularizer = "log",
        log_var_bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(num_tasks)
        fn = type(self).__name__
        factors = _task_factors(fn, task_types, self.num_tasks)
        self.task_types: tuple[str, ...] = tuple(
            "regression" if f == 0.5 else "classification" for f in factors
        )
        self.regularizer_kind: str = check_choice(fn, "regularizer", regularizer, _REGULARIZERS)
        if log_var_bounds is not None:
            if not isinstance(log_var_bounds, Sequence) or len(log_var_bounds) != 2:
                fail(
                    fn,
                    "log_var_bounds",
                    "None or a (low, high) pair",
                    repr(log_var_bounds),
                    TypeError,
                )
            low = check_number(fn, "log_var_bounds[0]", log_var_bounds[0])
            high = check_number(fn, "log_var_bounds[1]", log_var_bounds[1])
            if not low < high:
                fail(fn, "log_var_bounds", "low < high", repr(tuple(log_var_bounds)))
            log_var_bounds = (low, high)
        self.log_var_bounds = log_var_bounds
        init = _per_task_numbers(fn, "init_log_var", init_log_var, self.num_tasks)
        if log_var_bounds is not None and not all(
            log_var_bounds[0] <= v <= log_var_bounds[1] for v in init
        ):
            fail(fn, "init_log_var", f"values within log_var_bounds {log_var_bounds}", init)
        dtype = torch.get_default_dtype()
        self.log_vars = nn.Parameter(torch.tensor(init, dtype=dtype))
        # c_i (1/2 regression, 1 classification): configuration, so not in the state_dict
        self._constant("task_factors", factors, _compute_dtype(dtype))

    def _s(self) -> Tensor:
        if self.log_var_bounds is None:
            return self.log_vars
        low, high = self.log_var_bounds
        return _InwardClamp.apply(self.log_vars, low, high)

    def _s32(self) -> Tensor:
        """$s$ in the compute dtype (float32, or float64), with gradient to ``log_vars``."""
        s = self._s()
        return s.to(_compute_dtype(s.dtype, self.task_factors.dtype))

    def variances(self) -> Tensor:
        r"""The learned $\sigma_i^2 = e^{s_i}$, detached (float32, or float64)."""
        return torch.exp(self._s32().detach())

    def weights(self) -> Tensor:
        r"""$c_i e^{-s_i}$ (with gradient to ``log_vars``; float32, or float64)."""
        return self._weights_of(self._s32())

    def regularizer(self) -> Tensor:
        return self._regularizer_of(self._s32())

    def _weights_of(self, s: Tensor) -> Tensor:
        return self.task_factors.to(s.dtype) * torch.exp(-s)

    def _regularizer_of(self, s: Tensor) -> Tensor:
        reg = 0.5 * s if self.regularizer_kind == "log" else nn.functional.softplus(s)
        return reg.sum()

    def _weights_and_regularizer(self) -> tuple[Tensor, Tensor | None]:
        # one clamp of s for both terms: its backward decides on the total gradient
        s = self._s32()
        return self._weights_of(s), self._regularizer_of(s)

    def _check_losses(self, fn: str, losses: Tensor) -> Tensor:
        return _require(fn, "losses", losses, losses >= 0, _NO_NEGATIVE_LOSS)

    def extra_repr(self) -> str:
        parts = [f"num_tasks={self.num_tasks}", f"task_types={list(self.task_types)}"]
        parts.append(f"regularizer={self.regularizer_kind!r}")
        if self.log_var_bounds is not None:
            parts.append(f"log_var_bounds={self.log_var_bounds}")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# Dynamic Task Prioritization
# --------------------------------------------------------------------------------------------------


class DynamicTaskPrioritization(Weighting):
    r"""Dynamic Task Prioritization (Guo, Haque, Huang, Yeung & Fei-Fei, ECCV 2018), task level.

    Each task reports a KPI $\kappa_i \in [0, 1]$ (accuracy, mAP, IoU, clipped $R^2$: higher is
    better). ``update(kpis)`` keeps its moving average with momentum $\alpha$ (the weight of the new
    value, as in ``BatchNorm``):

    $$
    \bar\kappa_i \leftarrow \alpha\,\kappa_i + (1 - \alpha)\,\bar\kappa_i
    \qquad(\text{the first update sets } \bar\kappa_i = \kappa_i)
    $$

    and the task weight is a focal term of the averaged KPI,

    $$
    w_i = -(1 - \bar\kappa_i)^{\gamma_i}\,\log \bar\kappa_i,\qquad
    \bar\kappa_i \text{ clipped to } [\epsilon_{lo}, \epsilon_{hi}] \text{ first}
    $$

    so the task that is doing worst gets the largest weight, and $\gamma_i$ sets how sharply. The
    clip keeps $\kappa = 0$ (weight $\infty$) and $\kappa = 1$ (weight 0, the task would be dropped)
    finite and non-zero. The weights carry no gradient; before the first ``update`` they are all 1.

    The paper pairs this task-level focusing with *example-level* focusing inside each task: use a
    focal loss per task, e.g. ``lossforge.functional.softmax_focal_loss(logits, y, gamma=g0)`` or
    ``sigmoid_focal_loss`` for the classification tasks, and pass those losses to ``forward``.

    State: the buffers ``kpi_average`` ``(T,)`` and ``num_updates`` (0-d), so it checkpoints
    (``gamma`` is a non-persistent buffer: configuration, not state).

    Args:
        num_tasks: Number of tasks ``T``.
        gamma: Task-level focusing parameter $\gamma_i \ge 0$, one for all tasks or one per task.
        momentum: $\alpha \in (0, 1]$, the weight of the newest KPI in the moving average.
        kpi_clip: ``(low, high)`` with ``0 < low < high < 1`` in float32 (the precision the
            weights are computed in, whatever the module's dtype); the averaged KPI is clipped to
            it before the log (public DTP code uses ``(0.1, 0.99)``; the default is milder).
            ``gamma`` and ``high`` must leave the weight at ``high`` positive in float32
            ($(1-\kappa)^{\gamma}$ underflows for large ``gamma``): otherwise a task that does
            well would be dropped, and the constructor raises.

    Example:
        >>> import torch
        >>> from lossforge.multitask import DynamicTaskPrioritization
        >>> dtp = DynamicTaskPrioritization(2, gamma=1.0, momentum=0.5)
        >>> dtp.update([0.9, 0.5])
        >>> [round(w, 4) for w in dtp.weights().tolist()]  # -(1-k) log k
        [0.0105, 0.3466]
    """

    kpi_average: Tensor
    num_updates: Tensor
    gamma: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        gamma: float | Sequence[float] = 1.0,
        momentum: float = 0.1,
        kpi_clip: tuple[float, float] = (1e-4, 1.0 - 1e-4),
    ) -> None:
        super().__init__(num_tasks)
        fn = type(self).__name__
        gammas = _per_task_numbers(fn, "gamma", gamma, self.num_tasks, low=0.0)
        self.momentum = check_number(fn, "momentum", momentum, low=0.0, high=1.0, low_open=True)
        if not isinstance(kpi_clip, Sequence) or len(kpi_clip) != 2:
            fail(fn, "kpi_clip", "a (low, high) pair", repr(kpi_clip), TypeError)
        low = check_number(
            fn, "kpi_clip[0]", kpi_clip[0], low=0.0, high=1.0, low_open=True, high_open=True
        )
        high = check_number(
            fn, "kpi_clip[1]", kpi_clip[1], low=0.0, high=1.0, low_open=True, high_open=True
        )
        if not low < high:
            fail(fn, "kpi_clip", "low < high", repr(tuple(kpi_clip)))
        for i, edge in enumerate((low, high)):
            if not 0.0 < float(torch.tensor(edge, dtype=torch.float32, device="cpu")) < 1.0:
                fail(
                    fn,
                    f"kpi_clip[{i}]",
                    "a value that stays inside (0, 1) in float32, the precision of the weights "
                    "(at 0 or 1 a task's weight is infinite or 0)",
                    repr(edge),
                )
        top = torch.tensor(high, dtype=torch.float32, device="cpu")  # (meta init too)
        exponents = torch.tensor(gammas, dtype=torch.float32, device="cpu")
        at_top = -torch.pow(1.0 - top, exponents) * torch.log(top)
        if not bool((at_top > 0).all()):
            fail(
                fn,
                "gamma",
                f"values for which a task at the clip's top (KPI {high}) keeps a positive weight "
                f"in float32 ((1 - KPI)^gamma underflows to 0 and the task would be dropped; "
                f"lower gamma or kpi_clip[1])",
                gammas,
            )
        self.kpi_clip = (low, high)
        dtype = _compute_dtype(torch.get_default_dtype())
        # configuration: follows .to() but stays out of the state_dict
        self._constant("gamma", gammas, dtype)
        self.register_buffer("kpi_average", torch.ones(self.num_tasks, dtype=dtype))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, kpis: Sequence[float] | Tensor) -> None:
        """Fold one observation of each task's KPI (values in ``[0, 1]``) into the moving average.

        Call it as often as you measure the KPIs (every step on the batch, or once per epoch on a
        validation set). KPIs may be Python numbers (always checked) or a ``(T,)`` tensor (checked
        under the value-check mode; with checks off a KPI outside ``[0, 1]`` becomes NaN in the
        average, so the weights and the total turn NaN instead of silently clipping it). The
        average is kept in float32 (float64 for a float64 module). Inside ``torch.compile`` pass
        the tensor: Python numbers are constants of the compiled graph, so every new value would
        compile anew.
        """
        fn = f"{type(self).__name__}.update"
        if is_ndarray(kpis):
            kpis = torch.as_tensor(kpis)  # a NumPy array: as the (T,) tensor it holds
        if isinstance(kpis, Tensor):
            if kpis.ndim != 1 or kpis.shape[0] != self.num_tasks:
                fail(
                    fn,
                    "kpis",
                    f"a (T,) tensor with T={self.num_tasks}",
                    f"shape {tuple(kpis.shape)}",
                )
            if not kpis.is_floating_point():
                kpis = kpis.to(self.kpi_average.dtype)
            if kpis.device != self.kpi_average.device:
                fail(
                    fn,
                    "kpis",
                    f"on the weighting's device ({self.kpi_average.device})",
                    kpis.device,
                )
            k = kpis.detach().to(self.kpi_average.dtype)
            k = _require(fn, "kpis", k, (k >= 0) & (k <= 1), "values in [0, 1]")  # NaN fails
        elif isinstance(kpis, Sequence) and not isinstance(kpis, str):
            values = list(kpis)
            if len(values) != self.num_tasks:
                fail(fn, "kpis", f"{self.num_tasks} KPIs (num_tasks={self.num_tasks})", len(values))
            checked: list[float] = []
            for i, v in enumerate(values):
                if isinstance(v, Tensor):
                    if v.numel() != 1:
                        fail(fn, f"kpis[{i}]", "a number or a one-element tensor", v.shape)
                    v = float(v.detach())
                if (
                    isinstance(v, bool)
                    or not isinstance(v, numbers.Real)
                    or not 0.0 <= float(v) <= 1.0
                ):
                    fail(fn, "kpis", "values in [0, 1]", repr(values))
                checked.append(float(v))
            k = torch.tensor(checked, dtype=self.kpi_average.dtype, device=self.kpi_average.device)
        else:
            fail(
                fn, "kpis", "a sequence of numbers or a 1-d tensor", type(kpis).__name__, TypeError
            )
        first = self.num_updates == 0
        blended = self.momentum * k + (1.0 - self.momentum) * self.kpi_average
        self.kpi_average.copy_(torch.where(first, k, blended))
        self.num_updates.add_(1)

    def weights(self) -> Tensor:
        r"""$-(1-\bar\kappa_i)^{\gamma_i}\log\bar\kappa_i$, detached (all 1 before any update);
        computed in float32 (float64 for a float64 module)."""
        dtype = _compute_dtype(self.kpi_average.dtype, self.gamma.dtype)
        k = self.kpi_average.detach().to(dtype).clamp(self.kpi_clip[0], self.kpi_clip[1])
        w = -torch.pow(1.0 - k, self.gamma.to(dtype)) * torch.log(k)
        return torch.where(self.num_updates > 0, w, torch.ones_like(w))

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, gamma={self.gamma.tolist()}, momentum={self.momentum}, "
            f"kpi_clip={self.kpi_clip}"
        )


# --------------------------------------------------------------------------------------------------
# Dynamic Weight Average
# --------------------------------------------------------------------------------------------------


class DynamicWeightAverage(Weighting):
    r"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, "MTAN").

    From the average losses of the last two epochs, $r_i = \mathcal{L}_i(t-1) / \mathcal{L}_i(t-2)$
    (how slowly task $i$ is improving), and

    $$
    w_i(t) = \frac{K \exp(r_i / T)}{\sum_j \exp(r_j / T)}
    $$

    with $K$ = number of tasks (so the weights sum to $K$) and temperature $T$ (larger = more
    uniform). Until two epochs have been recorded every weight is 1.

    Call ``update(epoch_losses)`` once at the end of each epoch with that epoch's mean loss per
    task; the weights for the next epoch follow. State: the buffers ``loss_history`` ``(2, K)`` (row
    0 the epoch before last, row 1 the last) and ``num_epochs``.

    Args:
        num_tasks: Number of tasks $K$.
        temperature: $T > 0$ (the paper uses 2).

    Example:
        >>> import torch
        >>> from lossforge.multitask import DynamicWeightAverage
        >>> dwa = DynamicWeightAverage(2, temperature=2.0)
        >>> dwa.update([1.0, 1.0]); dwa.update([0.5, 1.0])  # r = (0.5, 1.0)
        >>> [round(w, 4) for w in dwa.weights().tolist()]
        [0.8756, 1.1244]
    """

    loss_history: Tensor
    num_epochs: Tensor

    def __init__(self, num_tasks: int, *, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        self.temperature = check_number(
            type(self).__name__, "temperature", temperature, low=0.0, low_open=True
        )
        dtype = _compute_dtype(torch.get_default_dtype())
        self.register_buffer("loss_history", torch.ones(2, self.num_tasks, dtype=dtype))
        self.register_buffer("num_epochs", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, epoch_losses: LossesLike | Sequence[float]) -> None:
        """Record one epoch's mean loss per task (positive, finite; numbers or tensors).

        Tensors are checked under the value-check mode; with checks off a non-positive loss is
        recorded as NaN (the ratios divide by it), so the next weights are NaN, not garbage.
        Inside ``torch.compile`` pass tensors: Python numbers are constants of the compiled graph,
        so every new value would compile anew.
        """
        fn = f"{type(self).__name__}.update"
        if isinstance(epoch_losses, Sequence) and not isinstance(epoch_losses, str):
            items = list(epoch_losses)
            if len(items) != self.num_tasks:
                fail(
                    fn,
                    "epoch_losses",
                    f"{self.num_tasks} task losses (num_tasks={self.num_tasks})",
                    len(items),
                )
            if all(not isinstance(v, Tensor) for v in items):
                values = [
                    check_number(fn, f"epoch_losses[{i}]", v, low=0.0, low_open=True)
                    for i, v in enumerate(items)
                ]
                epoch_losses = torch.tensor(
                    values, dtype=self.loss_history.dtype, device=self.loss_history.device
                )
        stacked = _stack_losses(fn, epoch_losses, self.num_tasks, name="epoch_losses").detach()
        _check_state_device(fn, stacked, self.loss_history)
        stacked = stacked.to(self.loss_history.dtype)
        stacked = _require(
            fn, "epoch_losses", stacked, stacked > 0, "positive task losses (DWA divides by them)"
        )
        self.loss_history[0].copy_(self.loss_history[1])
        self.loss_history[1].copy_(stacked.to(self.loss_history.dtype))
        self.num_epochs.add_(1)

    def weights(self) -> Tensor:
        """``K`` times the softmax of the loss ratios over ``T`` (detached; 1 for 2 epochs);
        float32 (float64 for a float64 module)."""
        history = self.loss_history.to(_compute_dtype(self.loss_history.dtype))
        ratio = history[1] / history[0]
        w = self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        return torch.where(self.num_epochs >= 2, w, torch.ones_like(w))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, temperature={self.temperature}"


# --------------------------------------------------------------------------------------------------
# GradNorm
# --------------------------------------------------------------------------------------------------


class GradNorm(Weighting):
    r"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

    Learnable task weights $w_i$ (``nn.Parameter`` ``task_weight``, starting at 1) are tuned so that
    each task's gradient norm on the shared parameters $W$ tracks its relative training rate:

    $$
    G_i = \lVert \nabla_W\, w_i \mathcal{L}_i \rVert_2,\quad
    \bar G = \tfrac1T \sum_i G_i,\quad
    \tilde{\mathcal{L}}_i = \frac{\mathcal{L}_i}{\mathcal{L}_i(0)},\quad
    r_i = \frac{\tilde{\mathcal{L}}_i}{\tfrac1T\sum_j \tilde{\mathcal{L}}_j}
    $$

    $$
    \mathcal{L}_{\text{grad}} =
    \sum_i \left| G_i - \operatorname{sg}\!\left[\bar G\, r_i^{\alpha}\right] \right|
    $$

    where sg is stop-gradient and $\alpha$ (``asymmetry``) the restoring force (the paper uses 0.12
    to 3; 1.5 on NYUv2). One training step:

    ```python
    losses = [loss_a, loss_b]
    gn_loss = gradnorm.gradnorm_loss(losses, shared_params)  # autograd.grad, retains the graph
    total = gradnorm(losses)                                 # sum_i w_i L_i, weights detached
    optimizer.zero_grad()
    total.backward()       # network gradients (weights act as constants)
    gn_loss.backward()     # gradient only on gradnorm.task_weight
    optimizer.step()       # optimizer holds model and gradnorm parameters
    gradnorm.renormalize_()  # sum_i w_i = T again
    ```

    ``forward`` uses the weights detached, so the network loss never pushes on them, and
    ``gradnorm_loss`` differentiates only into ``task_weight``: since $w_i > 0$ is a scalar,
    $G_i = w_i\,\lVert\nabla_W \mathcal{L}_i\rVert$, and the norms are taken with
    ``torch.autograd.grad`` (no ``.grad`` is written, no second-order graph is built).
    ``shared_params`` is usually the last shared layer, as in the paper.

    The first ``gradnorm_loss`` call records the losses as $\mathcal{L}_i(0)$ in the buffer
    ``initial_losses`` (or set them with ``set_initial_losses``, e.g. to $\log C$ for a $C$-way
    classification task, as the paper suggests).

    Args:
        num_tasks: Number of tasks ``T``.
        asymmetry: The paper's $\alpha \ge 0$.
        min_weight: Floor that ``renormalize_`` applies before rescaling, keeping weights positive.
    """

    task_weight: nn.Parameter
    initial_losses: Tensor
    has_initial_losses: Tensor

    def __init__(self, num_tasks: int, *, asymmetry: float = 1.5, min_weight: float = 1e-6) -> None:
        super().__init__(num_tasks)
        fn = type(self).__name__
        self.asymmetry = check_number(fn, "asymmetry", asymmetry, low=0.0)
        self.min_weight = check_number(fn, "min_weight", min_weight, low=0.0, low_open=True)
        dtype = torch.get_default_dtype()
        self.task_weight = nn.Parameter(torch.ones(self.num_tasks, dtype=dtype))
        self.register_buffer(
            "initial_losses", torch.ones(self.num_tasks, dtype=_compute_dtype(dtype))
        )
        self.register_buffer("has_initial_losses", torch.zeros((), dtype=torch.bool))

    def weights(self) -> Tensor:
        """The current weights, detached (they are learned only through ``gradnorm_loss``);
        float32 (float64 for a float64 module)."""
        w = self.task_weight.detach()
        return w.to(_compute_dtype(w.dtype))

    @torch.no_grad()
    def set_initial_losses(self, losses: LossesLike | Sequence[float]) -> None:
        r"""Set $\mathcal{L}_i(0)$ explicitly (positive, finite; a tensor with a non-positive value
        raises under value checks and is stored as NaN without them)."""
        fn = f"{type(self).__name__}.set_initial_losses"
        if isinstance(losses, Sequence) and all(not isinstance(v, Tensor) for v in losses):
            vals = [
                check_number(fn, f"losses[{i}]", v, low=0.0, low_open=True)
                for i, v in enumerate(losses)
            ]
            losses = torch.tensor(
                vals, dtype=self.initial_losses.dtype, device=self.initial_losses.device
            )
        stacked = _stack_losses(fn, losses, self.num_tasks).detach()
        _check_state_device(fn, stacked, self.initial_losses)
        stacked = stacked.to(self.initial_losses.dtype)
        stacked = _require(fn, "losses", stacked, stacked > 0, "positive initial losses")
        self.initial_losses.copy_(stacked)
        self.has_initial_losses.fill_(True)

    def gradnorm_loss(self, losses: LossesLike, shared_params: Iterable[Tensor]) -> Tensor:
        r"""The GradNorm objective $\mathcal{L}_{\text{grad}}$ (differentiable in ``task_weight``).

        Args:
            losses: The ``T`` task losses of this step, still attached to the graph (the graph is
                retained, so ``forward(losses).backward()`` works afterwards). Non-negative, not
                all zero: the relative training rates $L_i / L_i(0)$ are divided by their mean
                and raised to the power $\alpha$ (checked under value checks; NaN without). The
                first call also takes them as $\mathcal{L}_i(0)$ unless
                :meth:`set_initial_losses` was called, and then every loss must be positive: a
                task whose first loss is 0 raises under value checks and, without them, stores
                NaN, which makes every later objective NaN until :meth:`set_initial_losses`
                sets it (e.g. $\log C$ for a classification task).
            shared_params: The shared parameters $W$ (e.g. ``model.trunk[-1].parameters()``).

        Returns:
            A 0-d tensor (float32, or float64); call ``.backward()`` on it (it never calls backward
            itself).
        """
        fn = f"{type(self).__name__}.gradnorm_loss"
        stacked = _stack_losses(fn, losses, self.num_tasks)
        _check_state_device(fn, stacked, self.task_weight)
        rates = _require(
            fn,
            "losses",
            stacked.detach(),
            stacked.detach() >= 0,
            "non-negative task losses (GradNorm's training rates L_i / L_i(0) must be >= 0)",
        )
        if value_checks_enabled(rates) and not bool((rates > 0).any()):
            fail(
                fn,
                "losses",
                "at least one positive task loss (the rates are divided by their mean)",
                rates.tolist(),
            )
        params = [p for p in shared_params]
        if not params:
            fail(fn, "shared_params", "at least one tensor", "none")
        for i, p in enumerate(params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                fail(fn, f"shared_params[{i}]", "a tensor that requires grad", type(p).__name__)
        if not bool(self.has_initial_losses):
            self.set_initial_losses(stacked.detach())
        # Each task's own loss, not its row of the stacked tensor: stacking links every task to
        # every parameter the others reach (with zero gradients), which would hide a task that
        # has no gradient path to ``shared_params``. (A 1-d tensor given by the caller is already
        # stacked: its rows are all there is.)
        sources = (
            [t.reshape(()) for t in losses] if isinstance(losses, Sequence) else stacked.unbind()
        )
        norms = []
        for i in range(self.num_tasks):
            grads = torch.autograd.grad(sources[i], params, retain_graph=True, allow_unused=True)
            squares = [  # in float32 at least: fp16 squares overflow from |g| > 255
                g.detach().to(_compute_dtype(g.dtype)).pow(2).sum() for g in grads if g is not None
            ]
            if not squares:
                fail(
                    fn,
                    "shared_params",
                    f"parameters that task {i}'s loss depends on",
                    "no gradient path",
                )
            norms.append(torch.stack(squares).sum().sqrt())
        dtype = _compute_dtype(self.task_weight.dtype, self.initial_losses.dtype, stacked.dtype)
        grad_norms = torch.stack(norms).to(dtype)  # ||grad_W L_i||, constants
        g = self.task_weight.to(dtype) * grad_norms  # G_i = w_i ||grad_W L_i||
        ratio = rates.to(dtype) / self.initial_losses.to(dtype)
        rate = ratio / ratio.mean()
        target = (g.mean() * rate.pow(self.asymmetry)).detach()
        return (g - target).abs().sum()

    @torch.no_grad()
    def renormalize_(self) -> None:
        r"""Clamp the weights to ``min_weight`` and rescale them so that $\sum_i w_i = T$ (the
        sum is taken in float32 for a fp16/bf16 module)."""
        w = self.task_weight
        clamped = w.to(_compute_dtype(w.dtype)).clamp(min=self.min_weight)
        w.copy_(clamped * (self.num_tasks / clamped.sum()))

    def extra_repr(self) -> str:
        extra = f", min_weight={self.min_weight}" if self.min_weight != 1e-6 else ""
        return f"num_tasks={self.num_tasks}, asymmetry={self.asymmetry}{extra}"
