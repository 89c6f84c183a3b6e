"""One pipeline per target convention: what every loss shares, written once.

A public loss function is its signature (with the hyperparameter domains, ``lossforge._params``),
its docstring, its own hyperparameter logic and its math. It hands the rest to the pipeline of its
target convention, which applies, in this order and for every loss alike:

1. the shared argument checks (input dtype and NaN, ``avg_factor`` with the reduction);
2. backend routing: a fused kernel when one is declared (``Fused``), the backend asks for it and
   the kernel serves the case; ``"auto"`` falls back to the reference, ``"triton"`` raises;
3. the target convention: validation, class indices or dense / probability targets, ignore
   masks, out-of-range indices (NaN with value checks off);
4. the loss's math, on the prepared inputs;
5. weights and the reduction (``lossforge._reduction``: the one ``"mean"`` rule, the distributed
   denominator and the zero rules), for the reference and the kernels alike.

The conventions:

* ``sigmoid``: element-wise losses on logits (or probabilities) with dense targets of the input's
  shape or class indices without the class dimension (``C`` = background).
* ``softmax``: losses over the class dimension with class-index or probability targets, per-class
  weights that enter the ``"mean"`` denominator (PyTorch's rule) and per-class factors that do not.
* ``region``: set-level overlaps per (sample, class) or per class over the batch (dice family).
* ``regression``: predictions and targets of one shape.

A fused kernel computes sums and gradients only: the pipeline hands it the weight layout and the
``"mean"`` denominator from ``lossforge._reduction``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from lossforge import _reduction
from lossforge._checks import (
    _enabled_for,
    as_class_weight,
    as_index_target,
    check_floating,
    check_index_range,
    check_same_device,
    check_same_shape,
    check_tensor,
    check_unit_interval,
    compute_dtype,
    fail,
    in_compute_dtype,
    poison_out_of_range,
    value_checks_enabled,
    value_checks_on,
)
from lossforge._dispatch import kernel_eligible, unsupported
from lossforge._reduction import (
    Denominator,
    check_avg_factor,
    class_weight_denominator,
    finish_reduction,
    kernel_mean,
    mean_denominator,
    reduce_loss,
    weight_layout,
)
from lossforge._targets import (
    DenseTarget,
    SoftmaxTarget,
    check_sigmoid_target,
    check_softmax_target,
    class_view,
    ignore_for,
    region_index,
    region_target,
    resolve_target,
    sigmoid_target,
    softmax_target,
)

__all__ = [
    "Fused",
    "OverlapStats",
    "RegionInput",
    "SoftmaxInput",
    "Total",
    "Unreduced",
    "region",
    "region_entries",
    "regression",
    "sigmoid",
    "softmax",
]


class Fused(NamedTuple):
    """A fused kernel that can serve a loss (a named tuple: built on every call, so cheaply).

    Attributes:
        family: Module of ``lossforge.kernels`` (``"sigmoid"``, ``"softmax"``, ``"regression"``).
        kind: The loss inside the family.
        params: The loss's constants for the kernel.
    """

    family: str
    kind: str
    params: Mapping[str, Any] = MappingProxyType({})


class Total(NamedTuple):
    """Returned by a loss's math instead of the unreduced loss when PyTorch's own kernel already
    summed the valid elements (one pass fewer; the denominator rules still apply).

    ``mean``: ``value`` is already the kernel's mean over every element, which a sigmoid-family
    loss may return when asked with ``want_total == "mean"`` (``_reduction.kernel_mean``)."""

    value: Tensor
    mean: bool = False


class Unreduced(NamedTuple):
    """Returned by a loss's math whose ``"mean"`` has a loss-specific default denominator (used
    when no ``avg_factor`` is given), e.g. OHEM's ``n_pos + k + eps``. In the softmax pipeline it
    replaces the default (the summed class weights of the valid targets, or their count)."""

    loss: Tensor
    denominator: Tensor


@dataclass(frozen=True)
class SoftmaxInput:
    """What the softmax pipeline hands a loss's math.

    Attributes:
        z: The logits in the compute dtype (float32, or float64 for float64 input), plus the
            loss's ``logit_bias`` along the class dimension.
        target: Class indices or probabilities (``lossforge._targets.SoftmaxTarget``).
        class_weight: ``(C,)`` weights that also enter the ``"mean"`` denominator, or ``None``.
        class_factor: ``(C,)`` factors that do not (a focal ``alpha``), or ``None``.
        cdim: The class dimension; ``c``: the number of classes.
    """

    z: Tensor
    target: SoftmaxTarget
    class_weight: Tensor | None
    class_factor: Tensor | None
    cdim: int
    c: int

    @property
    def coef(self) -> Tensor | None:
        """The per-class multiplier of the loss: ``class_factor * class_weight``."""
        a, w = self.class_factor, self.class_weight
        if a is None:
            return w
        return a if w is None else a * w


def _grad_reason(x: Tensor, *others: object) -> str | None:
    """Why a kernel cannot give the gradients autograd expects: it differentiates the input ``x``
    only, in reverse mode. ``others``: the target, weight, per-class options and ``avg_factor``."""
    for t in others:
        if isinstance(t, Tensor) and t.requires_grad:
            return "a target, weight, per-class option or avg_factor that requires grad"
    if fwAD._current_level >= 0:  # inside fwAD.dual_level(): dual tensors are possible
        for t in (x, *others):
            if isinstance(t, Tensor) and fwAD.unpack_dual(t).tangent is not None:
                return "forward-mode AD (dual tensors)"
    return None


def _plain(x: Tensor, target: Tensor) -> bool:
    """An element-wise plain call: the target of ``x``'s device, dtype (float32 / float64: the
    compute dtypes) and shape. A plain call is one that is exactly PyTorch's function, on inputs
    given as exactly ``torch.Tensor`` (a subclass has dispatch rules of its own): a pipeline hands
    it to PyTorch's kernel before its structural checks, which would check nothing more for it,
    keeps the value checks' rules, and runs the general path only for what the kernel cannot
    settle."""
    return (
        x.dtype in _COMPUTE_DTYPES
        and target.dtype == x.dtype
        and target.shape == x.shape
        and target.device == x.device
    )


# --------------------------------------------------------------------------------------------------
# Plain calls: what a loss function's entry (``@loss_function(plain=...)``) and its pipeline's
# first block run for a call that is exactly PyTorch's function. Each returns the loss, or None
# for anything else (the general path decides, with its checks, messages and rules).
# --------------------------------------------------------------------------------------------------


def plain_reduction(reduction: object) -> TypeGuard[str]:
    """A plain call's ``reduction``: exactly the str ``"mean"`` or ``"sum"``."""
    return type(reduction) is str and (reduction == "mean" or reduction == "sum")


def plain_index(value: object) -> TypeGuard[int]:
    """A plain call's ``ignore_index``: an ``int`` (not a bool) within int64, which the argument
    checks accept unchanged."""
    return type(value) is int and -(2**63) <= value < 2**63


def plain_number(value: object, *, zero: bool = False) -> TypeGuard[float]:
    """A plain call's float hyperparameter: a ``float`` (not an int, which the argument checks
    would convert), finite, ``> 0`` (``>= 0`` with ``zero``)."""
    return type(value) is float and (value >= 0.0 if zero else value > 0.0) and value < math.inf


def plain_sigmoid(
    fn: str,
    logits: object,
    target: object,
    loss: Callable[..., Tensor | Total | Unreduced],
    reduction: str,
    input_name: str = "logits",
) -> Tensor | None:
    """A plain element-wise sigmoid-family call (a dense float target of the logits' dtype,
    shape and device; ``"mean"`` or ``"sum"``): ``loss``'s reduced ``Total`` (PyTorch's kernel or
    the closed form reduces). Of the general path's checks only two apply to it, done the same
    way: the target's ``[0, 1]`` range and the deferred finite check of the reduced value (the
    logits' own check, with its message, only when that value is not finite)."""
    if (
        type(logits) is not Tensor
        or type(target) is not Tensor
        or not _plain(logits, target)
        or not (reduction == "sum" or kernel_mean(reduction, None, logits.numel()))
    ):
        return None
    checks = value_checks_on(logits)
    if checks:
        check_unit_interval(fn, "target", target)
    dense = DenseTarget(target, None, None, False)
    out = loss(logits, dense, "mean" if reduction == "mean" else True)
    if not isinstance(out, Total):
        return None
    if checks and not math.isfinite(out.value.item()):
        rule = "finite" if input_name == "logits" else "allow"
        check_floating(fn, input_name, logits, infinite=rule)
    return out.value


def plain_regression(
    fn: str,
    pred: object,
    target: object,
    loss: Callable[[Tensor, Tensor, str | None], Tensor | Total | Unreduced],
    reduction: str,
    input_name: str = "pred",
) -> Tensor | None:
    """A plain element-wise regression call (a target of the prediction's dtype, shape and
    device; ``"mean"`` or ``"sum"``; an infinite prediction allowed): PyTorch's element-wise
    kernel reduces (``Total``). Of the general path's checks only the deferred NaN check
    applies, done the same way (the reduced value is NaN exactly when a prediction is)."""
    if (
        type(pred) is not Tensor
        or type(target) is not Tensor
        or not _plain(pred, target)
        or not (reduction == "sum" or kernel_mean(reduction, None, pred.numel()))
    ):
        return None
    out = loss(pred, target, reduction)
    if not isinstance(out, Total):
        return None
    if value_checks_on(pred) and math.isnan(out.value.item()):
        check_floating(fn, input_name, pred, infinite="allow")
    return out.value


def plain_nll(
    fn: str,
    input_name: str,
    logits: object,
    target: object,
    nll: str | None,
    ignore_index: int,
    reduction: str,
    term: Callable[[Tensor, float], Tensor] | None = None,
) -> Tensor | None:
    """A plain call of class indices with an ``ignore_index`` and ``"mean"`` or ``"sum"``:
    cross-entropy (``nll="logits"``), NLL (``"log_probs"``) or a term of the NLL (``term``, the
    pipeline's ``nll_term``: softmax focal); ``_plain_nll``'s loss (CPU only)."""
    return _plain_nll(fn, input_name, logits, target, nll, term, ignore_index, reduction, None)[0]


def _ndim(x: object) -> int:
    return x.ndim if isinstance(x, Tensor) else 0


def _check_strict_zero(fn: str, loss: Tensor, denom: Denominator | None) -> Tensor:
    """The reference's value check of a zero ``avg_factor`` (``_reduction.divide``) on a fused
    result: with value checks on, ``d == 0`` with a non-zero sum raises ``ValueError`` (the kernel
    returned NaN for it); with them off the NaN stands."""
    if denom is not None and denom.strict and value_checks_enabled(loss):
        _reduction._check_zero_avg_factor(fn, loss.detach(), float(denom.value))
    return loss


def _kernel_module(family: str) -> Any:
    """The kernel family's module (imported on first use: never at ``import lossforge``). Plain
    import statements, which ``torch.compile`` traces (``importlib.import_module`` it does not)."""
    if family == "sigmoid":
        from lossforge.kernels import sigmoid

        return sigmoid
    if family == "softmax":
        from lossforge.kernels import softmax

        return softmax
    if family == "regression":
        from lossforge.kernels import regression

        return regression
    if family == "dice":
        from lossforge.kernels import dice

        return dice
    if family == "_common":
        from lossforge.kernels import _common

        return _common
    raise ValueError(f"no kernel family {family!r}")


# Host-valued options (lists, numbers) as device constants: ``_host_constant``.
_CONSTANTS: OrderedDict[Hashable, Any] = OrderedDict()
_CONSTANTS_MAX = 64


def _frozen(v: object) -> Hashable:
    """A hashable stand-in for a host value an option is built from (TypeError for anything
    else: tensors, callables)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_frozen(a) for a in v))
    raise TypeError(type(v).__name__)


def _host_constant(option: Callable[..., Any], args: tuple[Any, ...], like: Tensor) -> Any:
    """``option(*args, like)``, once per distinct host input, on the fused path.

    The options that convert host values (a list ``class_weight`` / ``alpha`` / ``class_counts``,
    a number ``pos_weight``) build a CPU tensor and copy it to the device on every call: a pageable
    host-to-device copy, which synchronises the stream. ``option`` is a function of its arguments,
    the values its closure holds and ``like``'s device and dtype, so its result is kept (a device
    constant, never modified) and reused while those are the same. Options built from tensors are
    called every time (nothing to copy). Not cached while ``torch.compile`` traces (the graph holds
    the constant).
    """
    if torch.compiler.is_compiling():
        return option(*args, like)
    try:
        cells = tuple(_frozen(c.cell_contents) for c in (option.__closure__ or ()))
        checks = value_checks_enabled(like)
        key = (option.__code__, cells, _frozen(args), like.device, like.dtype, checks)
    except (TypeError, ValueError, AttributeError):
        return option(*args, like)
    hit = _CONSTANTS.get(key)
    if hit is None:
        hit = option(*args, like)
        _CONSTANTS[key] = hit
        if len(_CONSTANTS) > _CONSTANTS_MAX:
            _CONSTANTS.popitem(last=False)
    else:
        _CONSTANTS.move_to_end(key)
    return hit


def _device_option(option: Callable[..., Any], args: tuple[Any, ...], like: Tensor) -> Any:
    """``option(*args, like)`` on the torch path: kept as a device constant (``_host_constant``)
    for inputs off the CPU, where converting a host list or number is a host-to-device copy per
    call; computed every call on the CPU (a copy-free conversion, and no cache to keep)."""
    if like.device.type == "cpu":
        return option(*args, like)
    return _host_constant(option, args, like)


def _no_kernel(fn: str, backend: object, x: Tensor) -> None:
    """A loss without a fused kernel: ``"triton"`` raises, ``"auto"`` runs the reference."""
    if kernel_eligible(fn, backend, x):
        unsupported(fn, backend, f"no fused kernel for {fn}")  # type: ignore[arg-type]


def _mean(
    reduction: str,
    avg: float | Tensor | None,
    numel: int,
    valid: Tensor | None,
    x: Tensor,
    denominator: Tensor | None = None,
) -> Denominator | None:
    if reduction != "mean":
        return None
    return mean_denominator(
        avg_factor=avg,
        numel=numel,
        valid=valid,
        denominator=denominator,
        device=x.device,
        dtype=compute_dtype(x),
    )


# --------------------------------------------------------------------------------------------------
# sigmoid: element-wise losses, dense or class-index targets.
# --------------------------------------------------------------------------------------------------


def sigmoid(
    fn: str,
    logits: object,
    target: object,
    *,
    loss: Callable[..., Tensor | Total | Unreduced],
    ignore_index: int | None,
    weight: Tensor | None,
    reduction: str,
    avg_factor: object,
    backend: object = "torch",
    fused: Fused | None = None,
    options: Callable[[Tensor], Mapping[str, Any]] | None = None,
    input_name: str = "logits",
    index_target: bool | None = None,
    nan_in_total: bool = False,
) -> Tensor:
    """Run an element-wise sigmoid-family loss.

    Args:
        loss: ``loss(x, target, want_total, **options)``: the unreduced loss (the input's shape,
            compute dtype) of the input ``x`` (own dtype) against the dense target; it may return
            ``Total`` when ``want_total`` (no element weight, mask or poisoned element), and
            ``Total(mean, mean=True)`` when ``want_total == "mean"`` (``"mean"`` is plain
            ``sum / numel``: PyTorch's kernels may compute it, one division fewer).
        fused: The kernel that can serve this loss, if any.
        options: ``options(x)``: loss options that need the validated input (a ``pos_weight``
            on its device); passed to ``loss`` and to the kernel as keywords.
        index_target: Whether a target without the class dimension holds class indices
            (``lossforge._targets.resolve_target``: required with one channel).
        nan_in_total: The loss's ``Total`` is non-finite whenever a logit is NaN or infinite
            (PyTorch's BCE-with-logits kernel: an infinite logit's term is ``inf`` or ``0 * inf``
            for every target in ``[0, 1]``): under value checks the logits' check then runs
            only when that one value is not finite, instead of a summing pass before the loss
            (no weight, no ``ignore_index``; same messages).

    Infinite logits are refused under value checks (``_checks.INFINITE_RULES``: ``"finite"``);
    an input named other than ``logits`` (probabilities) is checked by the loss itself.
    """
    if (
        nan_in_total
        and options is None
        and index_target is not True
        and backend == "torch"
        and ignore_index is None
        and weight is None
        and avg_factor is None
    ):
        plain = plain_sigmoid(fn, logits, target, loss, reduction, input_name)
        if plain is not None:
            return plain
    rule = "finite" if input_name == "logits" else "allow"
    deferred = nan_in_total and reduction != "none" and weight is None and ignore_index is None
    x = check_floating(fn, input_name, logits, infinite=rule, values=not deferred)
    target = resolve_target(fn, x, target, index_target=index_target)
    avg = check_avg_factor(fn, avg_factor, reduction)
    if fused is None:
        _no_kernel(fn, backend, x)
    elif kernel_eligible(fn, backend, x):
        fused_out = _sigmoid_fused(
            fn, backend, fused, options, x, target, ignore_index, weight, reduction, avg
        )
        if fused_out is not None:
            if deferred:  # the kernel's total is not read here: check the logits themselves
                check_floating(fn, input_name, x, infinite=rule)
            return fused_out
    opts = {} if options is None else dict(_device_option(options, (), x))
    dt = sigmoid_target(fn, x, target, ignore_index=ignore_index)
    want_total: bool | str = (
        reduction != "none" and weight is None and dt.valid is None and dt.bad is None
    )
    if want_total and kernel_mean(reduction, avg, x.numel()):
        want_total = "mean"
    out = loss(x, dt, want_total, **opts)
    if (
        deferred
        and value_checks_on(x)
        and (not isinstance(out, Total) or not math.isfinite(out.value.item()))
    ):
        check_floating(fn, input_name, x, infinite=rule)
    if isinstance(out, Total):
        if out.mean:
            return out.value
        return finish_reduction(
            out.value, fn=fn, reduction=reduction, avg_factor=avg, numel=x.numel()
        )
    denominator = None
    if isinstance(out, Unreduced):
        out, denominator = out
    out = poison_out_of_range(out, dt.bad)
    return reduce_loss(
        out,
        fn=fn,
        reduction=reduction,
        weight=weight,
        avg_factor=avg,
        valid=dt.valid,
        denominator=denominator,
    )


def _sigmoid_fused(
    fn: str,
    backend: object,
    fused: Fused,
    options: Callable[[Tensor], Mapping[str, Any]] | None,
    x: Tensor,
    target: object,
    ignore: int | None,
    weight: Tensor | None,
    reduction: str,
    avg: float | Tensor | None,
) -> Tensor | None:
    # Metadata only: a dense target's values are checked below without a full-size temporary.
    t, index = check_sigmoid_target(fn, x, target, ignore_index=ignore, check_range=False)
    ignore = ignore_for(t, ignore)  # (the kernels compare in int32: no wrap-around either)
    params = dict(fused.params)
    if options is not None:
        params.update(_host_constant(options, (), x))
    kernels = _kernel_module(fused.family)
    why = _grad_reason(x, t, weight, avg, *params.values()) or kernels._reason(
        x, t, weight, **params
    )
    if why is not None:
        unsupported(fn, backend, why)  # type: ignore[arg-type]  # raises for "triton"
        return None
    common = _kernel_module("_common")
    dense_checked = not index and t.dtype != torch.bool and value_checks_enabled(t)
    if dense_checked and int(common.count(t, ignore, out_of_unit=True)):
        # one counting pass over the target found values outside [0, 1]; the reference's check
        # reports them
        check_unit_interval(fn, "target", t, ignore_value=ignore)
    wl = weight_layout(fn, weight, x.shape, x)
    valid = denominator = None
    if reduction == "mean" and avg is None and ignore is not None:
        if index:
            valid = t != ignore  # (N, *): a per-row mask stands for its C elements
        else:
            denominator = common.count(t, ignore)  # no full-size mask
    denom = _mean(reduction, avg, x.numel(), valid, x, denominator)
    out = kernels._loss(
        x,
        t,
        kind=fused.kind,
        index_target=index,
        weight=wl,
        ignore_index=ignore,
        reduce=reduction != "none",
        denom=denom,
        **params,
    )
    return _check_strict_zero(fn, out, denom)


# --------------------------------------------------------------------------------------------------
# softmax: losses over the class dimension.
# --------------------------------------------------------------------------------------------------

ClassOption = Callable[[int, Tensor], "Tensor | None"]


def softmax(
    fn: str,
    logits: object,
    target: object,
    *,
    loss: Callable[[SoftmaxInput, bool], Tensor | Total | Unreduced],
    ignore_index: int | None,
    weight: Tensor | None,
    reduction: str,
    avg_factor: object,
    backend: object = "torch",
    class_weight: object = None,
    class_factor: ClassOption | None = None,
    logit_bias: ClassOption | None = None,
    fused: Fused | None = None,
    allow_probs: bool = True,
    input_name: str = "logits",
    nll: str | None = None,
    nll_term: Callable[[Tensor, float], Tensor] | None = None,
    index_in_range: bool = False,
    nll_smoothing: float = 0.0,
) -> Tensor:
    """Run a softmax-family loss.

    Args:
        loss: ``loss(inputs, want_total)``: the per-position loss (the index target's shape,
            compute dtype), or ``Total`` of the valid positions when ``want_total`` (no element
            weight) and index targets, or ``Unreduced(loss, denominator)`` when its ``"mean"``
            has a denominator of its own (hard-example mining: the selected positions).
        class_weight: Per-class weights (length ``C``, non-negative): with index targets and no
            ``avg_factor``, ``"mean"`` divides by the summed weights of the valid targets.
        class_factor: ``(C, like) -> (C,)`` per-class factors that do not enter the denominator.
        logit_bias: ``(C, like) -> (C,)`` added to the logits along the class dimension before the
            loss (prior / margin adjustments); the kernels add it on the fly.
        fused: The kernel that can serve this loss, if any.
        allow_probs: Whether probability targets are accepted.
        nll: ``"logits"`` or ``"log_probs"`` when the loss of class indices is exactly PyTorch's
            NLL of ``log_softmax(input)`` or of the input (cross-entropy without smoothing, NLL):
            on the CPU PyTorch's kernel then reads and range-checks the indices itself
            (``_cpu_nll``).
        nll_term: ``term(nll, divisor)``, the sum of ``phi(-nll)`` over the NLL values
            ``nll = -log p_t`` divided by ``divisor``, when the loss of class indices is exactly
            ``phi(log_softmax(logits) at the target)``, reduced over the valid positions, for
            ``class_factor`` giving ``None`` and no class weights, with ``phi(0) == 0`` (an
            ignored position, whose NLL value is 0, adds 0): on the CPU PyTorch's NLL kernel then
            gathers, range-checks and masks the ignored positions (``_cpu_nll``).
        nll_smoothing: With ``nll="logits"`` and no class weights: the loss is PyTorch's
            cross-entropy with this label smoothing (``_cpu_nll`` adds the smoothing term; the
            plain-call steps, which have none, are skipped).
        index_in_range: The class indices are the loss's own, every one in ``[0, C)`` (no
            ``ignore_index``): not range-checked or poisoned (``softmax_target``'s ``in_range``).

    ``-inf`` logits (masked classes) are accepted; ``+inf`` and a position with every class at
    ``-inf`` are refused under value checks (``_checks.INFINITE_RULES``: ``"masked"``).
    """
    tried = False  # whether ``_cpu_nll`` said no to these inputs already (not asked again)
    if (
        (nll is not None or nll_term is not None)
        and nll_smoothing == 0.0
        and backend == "torch"
        and weight is None
        and avg_factor is None
        and class_weight is None
        and logit_bias is None
        and reduction != "none"
    ):
        plain, tried = _plain_nll(
            fn, input_name, logits, target, nll, nll_term, ignore_index, reduction, class_factor
        )
        if plain is not None:
            return plain
    cdim = 1 if _ndim(logits) >= 2 else 0
    # Cross-entropy on the CPU without class weights may read its logits' check off the loss
    # (``_cpu_nll``, below); every other case checks the logits first.
    # (A finite logit bias, the prior-adjusted losses', keeps where the logits are NaN or
    # infinite, so the check read off the shifted logits' loss is the logits' own.)
    deferred = (
        (nll == "logits" or nll_term is not None)
        and class_weight is None
        and (logit_bias is None or nll_term is None)
        and (class_factor is None or nll_term is not None)
        and isinstance(logits, Tensor)
        and logits.is_cpu
    )
    x = check_floating(
        fn, input_name, logits, infinite="masked", class_dim=cdim, values=not deferred
    )
    avg = check_avg_factor(fn, avg_factor, reduction)
    if (
        not allow_probs
        and isinstance(target, Tensor)
        and (target.is_floating_point() or target.dtype == torch.bool)
    ):
        fail(fn, "target", "an integer tensor of class indices", f"dtype {target.dtype}", TypeError)
    if fused is None:
        _no_kernel(fn, backend, x)
    elif kernel_eligible(fn, backend, x):
        if deferred:
            check_floating(fn, input_name, x, infinite="masked", class_dim=cdim)
            deferred = False
        fused_out = _softmax_fused(
            fn,
            backend,
            fused,
            x,
            target,
            ignore_index,
            weight,
            reduction,
            avg,
            class_weight,
            class_factor,
            logit_bias,
        )
        if fused_out is not None:
            return fused_out
    quick = None
    # Under value checks a deferred logits check needs the count of the counted positions.
    count = deferred and value_checks_on(x)
    if not tried and nll_term is not None and class_weight is None and logit_bias is None:
        quick = _cpu_nll(
            fn,
            x,
            target,
            "logits",
            ignore_index,
            None,
            weight,
            reduction,
            avg,
            nll_term,
            class_factor,
        )
    elif not tried and nll is not None and class_factor is None:
        shifted = _shifted_for_nll(x, logit_bias, cdim, reduction, weight, avg)
        if shifted is not None:
            quick = _cpu_nll(
                fn,
                shifted,
                target,
                nll,
                ignore_index,
                class_weight,
                weight,
                reduction,
                avg,
                count=count,
                smoothing=nll_smoothing,
            )
    if quick is not None:
        return _nll_checked(fn, input_name, x, target, quick, count)
    if deferred:
        check_floating(fn, input_name, x, infinite="masked", class_dim=cdim)
    st = softmax_target(
        fn, x, target, ignore_index=ignore_index, input_name=input_name, in_range=index_in_range
    )
    c = x.shape[st.cdim]
    w = _device_option(as_class_weight, (fn, class_weight, c), x)
    a = None if class_factor is None else _device_option(class_factor, (c,), x)
    z = in_compute_dtype(x)
    if logit_bias is not None:
        bias = _device_option(logit_bias, (c,), x)
        if bias is not None:
            z = z + class_view(bias.to(z.dtype), x.ndim, st.cdim)
    inputs = SoftmaxInput(z, st, w, a, st.cdim, c)
    index = st.index is not None
    denominator = None
    if w is not None and index and reduction == "mean" and avg is None:
        denominator = class_weight_denominator(w[st.index], st.valid)
    out = loss(inputs, reduction != "none" and weight is None and index)
    if isinstance(out, Unreduced):
        out, denominator = out
    if isinstance(out, Total):
        total = out.value
        if st.bad is not None:
            # NaN added, not filled in: the valid positions keep their gradients, as the
            # unreduced path (poisoned per element) and the kernels give them
            total = total + torch.where(st.bad.any(), float("nan"), 0.0).to(total.dtype)
        return finish_reduction(
            total,
            fn=fn,
            reduction=reduction,
            avg_factor=avg,
            numel=st.index.numel(),  # type: ignore[union-attr]
            valid=st.valid,
            denominator=denominator,
        )
    out = poison_out_of_range(out, st.bad)
    return reduce_loss(
        out,
        fn=fn,
        reduction=reduction,
        weight=weight,
        avg_factor=avg,
        valid=st.valid,
        denominator=denominator,
    )


def _shifted_for_nll(
    x: Tensor,
    logit_bias: ClassOption | None,
    cdim: int,
    reduction: str,
    weight: Tensor | None,
    avg: float | Tensor | None,
) -> Tensor | None:
    """The input of ``_cpu_nll``: the logits, plus the loss's ``logit_bias`` (the prior-adjusted
    cross-entropies; the logits were checked before, as with every bias), or ``None`` where
    ``_cpu_nll`` would decline (off the CPU, unreduced, a ``weight`` or an ``avg_factor``)
    before the bias costs a pass."""
    if logit_bias is None:
        return x
    if not x.is_cpu or x.ndim == 0 or reduction == "none" or weight is not None or avg is not None:
        return None
    bias = _device_option(logit_bias, (x.shape[cdim],), x)
    z = in_compute_dtype(x)
    return z if bias is None else z + class_view(bias.to(z.dtype), x.ndim, cdim)


def _plain_nll(
    fn: str,
    input_name: str,
    logits: object,
    target: object,
    nll: str | None,
    nll_term: Callable[[Tensor, float], Tensor] | None,
    ignore_index: int | None,
    reduction: str,
    class_factor: ClassOption | None,
) -> tuple[Tensor | None, bool]:
    """A plain call of the softmax pipeline (no class weights, ``weight``, ``avg_factor`` or logit
    bias, the ``"torch"`` backend; the caller checked those): PyTorch's kernel first
    (``_lean_nll`` for the commonest case, else ``_cpu_nll``), the general path only for what it
    cannot settle. For such a call the general path's steps before its own ``_cpu_nll`` check
    nothing the tests here do not.

    Returns ``(loss, tried)``: the loss or None, and whether ``_cpu_nll`` was asked (and said no:
    the general path, whose own call would get the same answer, need not ask again)."""
    if nll_term is None and class_factor is None and ignore_index is not None:
        lean = _lean_nll(fn, input_name, logits, target, nll or "logits", ignore_index, reduction)
        if lean is not None:
            return (None, True) if isinstance(lean, _Declined) else (lean, True)
    if type(logits) is not Tensor or type(target) is not Tensor:
        return None, False
    if not logits.is_cpu or logits.dtype not in _COMPUTE_DTYPES:
        return None, False  # (``_cpu_nll`` is CPU only)
    if target.is_floating_point() or target.dtype == torch.bool:
        return None, False  # probabilities, or a mask: not class indices
    count = value_checks_on(logits)
    if count and nll == "log_probs":
        # A finite NLL of log-probabilities says nothing of the classes it did not read: under
        # value checks the general path checks them first.
        return None, False
    quick = _cpu_nll(
        fn,
        logits,
        target,
        nll or "logits",
        ignore_index,
        None,
        None,
        reduction,
        None,
        nll_term,
        class_factor,
        count=count,
    )
    if quick is None:
        return None, True
    return _nll_checked(fn, input_name, logits, target, quick, count), True


def _nll_checked(
    fn: str,
    input_name: str,
    x: Tensor,
    target: object,
    quick: tuple[Tensor, float | None, Tensor | None],
    count: bool,
) -> Tensor:
    """``_cpu_nll``'s loss, after the deferred check of the logits when ``count`` (value checks
    on, the logits not checked before)."""
    value, counted, logp = quick
    # Every position counted (nothing ignored, no class weights) and a finite loss: every
    # row's log-softmax at its target is finite, which a NaN, a +inf or a row of -inf
    # anywhere in that row would have made NaN (a term of log p_t keeps NaN and -inf
    # non-finite). Otherwise the log-softmax's class-0 slice (``_log_softmax_clean``), and
    # then the logits' own check, decide.
    complete = isinstance(target, Tensor) and counted == target.numel()
    if count and not (complete and math.isfinite(value.item())):
        cdim = 1 if x.ndim >= 2 else 0
        if logp is None or not _log_softmax_clean(logp, cdim):
            check_floating(fn, input_name, x, infinite="masked", class_dim=cdim)
    return value


class _Declined:
    """``_lean_nll``'s answer for a case it is built for but PyTorch's kernel cannot settle."""


#: The case is the lean path's, the kernel cannot settle it: the general path decides
#: (``_cpu_nll`` would say no too).
_DECLINED = _Declined()


def _lean_nll(
    fn: str,
    input_name: str,
    x: object,
    target: object,
    nll: str,
    ignore_index: int,
    reduction: str,
) -> Tensor | _Declined | None:
    """``_cpu_nll`` for the commonest plain call (float32 / float64 logits and int64 class
    indices on the CPU, an ``ignore_index``, no term or class options), asked first, with only
    the tests that case needs: every Python call and attribute read here is paid on every loss
    call, and on the CPU again in the cache misses of the kernels after it (with
    ``_plain_nll``'s own tests no longer run before it, about 1-2 us less CPU time per forward
    with value checks off, alternating processes on the 2-core dev VM). With value checks off
    one call of PyTorch's composite
    (``_composite_nll``); with them on (logits only: log-probabilities take the general path,
    which checks them first) the log-softmax and the NLL kernel with its denominator, then
    ``_nll_checked``'s deferred check of the logits. Returns the loss; ``None``: not this case
    (``_cpu_nll`` decides); ``_DECLINED``: an index out of range, nothing counted or a NaN mean
    (the general path decides)."""
    if (
        type(x) is not Tensor
        or type(target) is not Tensor
        or target.dtype != torch.int64
        or not target.is_cpu
        or not x.is_cpu
        or x.dtype not in _COMPUTE_DTYPES
        or torch._C._are_functorch_transforms_active()
        or torch.compiler.is_compiling()
    ):
        return None
    shape = x.shape
    ndim = len(shape)
    if ndim == 1:
        if target.ndim != 0 or shape[0] < 2:
            return None
    elif ndim == 0 or shape[1] < 2 or target.shape != shape[:1] + shape[2:] or x.numel() == 0:
        return None
    mean = reduction == "mean"
    if mean and _reduction._denominator_hook is not None:
        return None  # global normalisation: the general path
    count = _enabled_for((x,))  # (value_checks_on: transforms and tracing are ruled out above)
    if not count:
        out = _composite_nll(x, target, None, nll, mean, ignore_index)
        return _DECLINED if out is None else out
    if nll == "log_probs":
        return None  # the general path checks log-probabilities before their NLL
    z = torch.log_softmax(x, dim=1 if ndim >= 2 else 0)
    try:
        out, total_weight = _nll_forward(z, target, None, 1 if mean else 2, ignore_index)
    except IndexError:
        return _DECLINED
    d = float(total_weight)  # CPU scalar: no device sync
    if d <= 0:
        return _DECLINED
    return _nll_checked(fn, input_name, x, target, (out, d, z), True)


def _composite_nll(
    z: Tensor,
    idx: Tensor,
    w: Tensor | None,
    nll: str,
    mean: bool,
    ignore_index: int,
    smoothing: float = 0.0,
) -> Tensor | None:
    """PyTorch's composite, reduced (``cross_entropy_loss`` of logits / ``nll_loss_nd`` of
    log-probabilities, as ``F.cross_entropy`` / ``F.nll_loss`` call it: one call from Python).
    ``None`` for an index out of range (``IndexError``: the general path reports or poisons it)
    and for a NaN ``"mean"`` (nothing counted, PyTorch's 0 / 0, or a NaN input: the general
    path decides), read on the host (CPU scalar: no device sync)."""
    reduction = 1 if mean else 2
    try:
        if nll == "logits":
            out = _nn.cross_entropy_loss(z, idx, w, reduction, ignore_index, smoothing)
        else:
            out = _nn.nll_loss_nd(z, idx, w, reduction, ignore_index)
    except IndexError:
        return None
    if mean and math.isnan(out.item()):
        return None
    return out


def _log_softmax_clean(logp: Tensor, cdim: int) -> bool:
    """Whether the logits behind the log-softmax ``logp`` are certainly clean for the
    ``"masked"`` rule: no NaN, no +inf, no position with every class at -inf.

    Each of those makes its position's log-softmax NaN at every class (the max or the sum of
    exponentials is NaN or infinite), so the class-0 slice sums to a finite value only without
    them: a read of one class, 1 / C of the logits, where the logits' check sums them all (the
    ignored positions of cross-entropy, which its loss never reads). A non-finite sum (also a
    -inf logit of class 0, or an overflow) proves nothing: the logits' check decides, with its
    messages."""
    return math.isfinite(float(logp.detach().select(cdim, 0).sum()))


def _cpu_nll(
    fn: str,
    x: Tensor,
    target: object,
    nll: str,
    ignore_index: int | None,
    class_weight: object,
    weight: Tensor | None,
    reduction: str,
    avg: float | Tensor | None,
    term: Callable[[Tensor, float], Tensor] | None = None,
    class_factor: ClassOption | None = None,
    *,
    count: bool = True,
    smoothing: float = 0.0,
) -> tuple[Tensor, float | None, Tensor | None] | None:
    """Cross-entropy / NLL of class indices, reduced, on the CPU: PyTorch's own operations only;
    ``(loss, denominator, log_probs)``, the denominator being the summed class weights of the
    counted positions (their number without class weights), ``log_probs`` the log-softmax of
    logits (``nll="logits"``; ``None`` otherwise and in one call) for the deferred check.

    With ``term`` (the pipeline's ``nll_term``): the reduced term ``term(nll, divisor)`` instead,
    ``nll`` being the NLL kernel's unreduced output (0 at an ignored position, where the term
    adds 0 and the kernel's backward gives no gradient), ``divisor`` the number of valid
    positions for ``"mean"`` (one comparison and one host read) and 1 for ``"sum"``. Not when
    ``class_factor`` gives per-class factors.

    ``smoothing``: cross-entropy of logits with PyTorch's label smoothing (no class weights, no
    ``term``): ``(1 - eps) NLL + eps / C`` times the summed ``-log p`` over the classes of the
    counted positions, reduced as the NLL (PyTorch's formula; one more read of the log-softmax).

    Without ``count`` (no deferred logits check needs the number of counted positions), no
    ``term`` and an ``ignore_index``, the loss is one call of PyTorch's composite
    (``cross_entropy_loss`` / ``nll_loss_nd``, as ``F.cross_entropy`` / ``F.nll_loss`` call it:
    the same kernels, one call from Python) and the denominator is ``None``: ``"sum"`` needs no
    denominator, and a ``"mean"`` whose denominator is 0 is PyTorch's NaN, read back (one host
    read) and handed to the general path with any other NaN.

    On the CPU PyTorch's NLL kernel reads every index, raises ``IndexError`` for one out of range
    (no device-side assert) and returns the reduced loss with its denominator (the summed class
    weights of the valid targets). So the pipeline's index pass, masks and division are not needed
    here: the loss is ``F.cross_entropy``'s operations plus one host read of the denominator.
    Returns ``None`` (the general path decides, with its messages and rules) when the case is
    another one, and for what this path cannot settle alone: an index out of range (a
    ``ValueError`` under value checks, NaN without), nothing valid (0, not PyTorch's NaN),
    ``ignore_index=None`` with an index equal to the stand-in ignore value, an ``avg_factor``,
    global normalisation. Not under ``torch.compile`` or ``torch.func`` transforms (no exception
    to catch there, and no host read).
    """
    if (
        not x.is_cpu
        or reduction == "none"
        or weight is not None
        or not isinstance(target, Tensor)
        or target.is_floating_point()
        or target.is_complex()
        or target.dtype == torch.bool
        or x.ndim == 0
        or x.numel() == 0
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
    ):
        return None
    cdim = 1 if x.ndim >= 2 else 0
    c = x.shape[cdim]
    if c < 2 or not target.is_cpu or target.shape != x.shape[:cdim] + x.shape[cdim + 1 :]:
        return None
    w = as_class_weight(fn, class_weight, c, x)
    if w is not None and (w.requires_grad or ignore_index is None):
        return None
    mean = reduction == "mean"
    if mean and not kernel_mean(reduction, avg, 1):
        return None
    if class_factor is not None and class_factor(c, x) is not None:
        return None
    if smoothing and (nll != "logits" or w is not None or term is not None):
        return None
    one_call = not count and term is None and ignore_index is not None
    z = x if x.dtype in _COMPUTE_DTYPES else x.float()
    if nll == "logits":
        if not one_call:
            z = torch.log_softmax(z, dim=cdim)
    elif z.ndim > 2 and not z.is_contiguous():
        z = z.contiguous()  # nll_loss2d's backward needs contiguous log-probabilities
    idx = target if target.dtype == torch.int64 else target.long()
    kernel_reduction = 0 if term is not None else 1 if mean else 2  # none / mean / sum
    if one_call:
        out = _composite_nll(z, idx, w, nll, mean, ignore_index, smoothing)  # type: ignore[arg-type]
        return None if out is None else (out, None, None)
    ignore = _NO_INDEX if ignore_index is None else ignore_index
    try:
        out, total_weight = _nll_forward(z, idx, w, kernel_reduction, ignore)
    except IndexError:
        return None  # an index out of range: the general path reports or poisons it
    # CPU scalars: no device sync
    d = float(total_weight) if term is None else float((idx != ignore).sum())
    if d <= 0 or (ignore_index is None and d != idx.numel()):
        return None
    if term is not None:
        out = term(out, d if mean else 1.0)
    if smoothing:
        rows = z.sum(dim=cdim)  # sum over the classes of log p (z is the log-softmax here)
        if ignore_index is not None:
            rows = torch.where(idx != ignore_index, rows, 0.0)
        smooth = rows.sum().neg_()
        out = out * (1.0 - smoothing) + (smooth / d if mean else smooth) * (smoothing / c)
    return out, d, z if nll == "logits" else None


_COMPUTE_DTYPES = (torch.float32, torch.float64)  # compute_dtype's fixed points

# (torch/_C/_nn.pyi types `reduction` as a str; the bindings take the enum's int)
_nn: Any = torch._C._nn

#: The ignore value handed to PyTorch's kernel for ``ignore_index=None`` (an index it never
#: meets in practice; ``_cpu_nll`` checks that it ignored nothing).
_NO_INDEX = -(2**63)


def _nll_forward(
    logp: Tensor, idx: Tensor, w: Tensor | None, reduction: int, ignore: int
) -> tuple[Tensor, Tensor]:
    """PyTorch's NLL kernel with its denominator, ``(loss, total_weight)``, for any ``(N, C, *)``
    (shaped as ``torch.nn.functional.nll_loss`` shapes it)."""
    if logp.ndim <= 2:
        return torch.ops.aten.nll_loss_forward.default(logp, idx, w, reduction, ignore)
    if logp.ndim != 4:
        n, c = logp.shape[:2]
        logp = logp.contiguous().view(n, c, 1, -1)
        idx = idx.contiguous().view(n, 1, -1)
    return torch.ops.aten.nll_loss2d_forward.default(logp, idx, w, reduction, ignore)


def _softmax_fused(
    fn: str,
    backend: object,
    fused: Fused,
    x: Tensor,
    target: object,
    ignore: int | None,
    weight: Tensor | None,
    reduction: str,
    avg: float | Tensor | None,
    class_weight: object,
    class_factor: ClassOption | None,
    logit_bias: ClassOption | None,
) -> Tensor | None:
    kernels = _kernel_module(fused.family)
    t, index, cdim = check_softmax_target(fn, x, target, ignore_index=ignore)
    ignore = ignore_for(t, ignore) if index else ignore
    why = _grad_reason(x, t, weight, class_weight, avg) or kernels._reason(
        x, t, kind=fused.kind, **fused.params
    )
    if why is not None:
        unsupported(fn, backend, why)  # type: ignore[arg-type]  # raises for "triton"
        return None
    c = x.shape[cdim]
    loss_shape = tuple(t.shape) if index else tuple(x.shape[:cdim]) + tuple(x.shape[cdim + 1 :])
    wl = weight_layout(fn, weight, loss_shape, x)
    # host values (lists, numbers) become device constants once, not a copy per call
    w = _host_constant(as_class_weight, (fn, class_weight, c), x)
    a = None if class_factor is None else _host_constant(class_factor, (c,), x)
    bias = None if logit_bias is None else _host_constant(logit_bias, (c,), x)
    why = _grad_reason(x, a, bias)
    if why is not None:
        unsupported(fn, backend, why)  # type: ignore[arg-type]
        return None
    coef = w if a is None else (a if w is None else a * w)
    valid = None
    denominator = None
    if index and reduction == "mean" and avg is None:
        valid = None if ignore is None else t != ignore
        if w is not None:  # (ignored positions are masked by `valid`: any class id will do)
            denominator = class_weight_denominator(w[t.clamp(0, c - 1).long()], valid)
    numel = t.numel() if index else x.numel() // max(c, 1)
    denom = _mean(reduction, avg, numel, valid, x, denominator)
    out = kernels._loss(
        x,
        t,
        kind=fused.kind,
        coef=coef,
        logit_bias=bias,
        ignore_index=ignore if index else None,
        weight=wl,
        reduce=reduction != "none",
        denom=denom,
        **fused.params,
    )
    return _check_strict_zero(fn, out, denom)


# --------------------------------------------------------------------------------------------------
# regression: predictions and targets of one shape.
# --------------------------------------------------------------------------------------------------


def regression(
    fn: str,
    pred: object,
    target: object,
    *,
    loss: Callable[[Tensor, Tensor, str | None], Tensor | Total | Unreduced],
    weight: Tensor | None,
    reduction: str,
    avg_factor: object,
    backend: object = "torch",
    fused: Fused | None = None,
    input_name: str = "pred",
    vector: int | None = None,
    infinite: str = "allow",
    finite_why: str | None = None,
    nan_in_total: bool = False,
) -> Tensor:
    """Run a regression loss.

    Args:
        loss: ``loss(p, t, total)`` on the prediction and the target in the compute dtype:
            the unreduced loss (any shape the weight is checked against), ``Unreduced`` (the loss
            and its own ``"mean"`` denominator), or, when ``total`` is ``"sum"`` or ``"mean"`` (no
            element weight), ``Total`` of that reduction over every element (``"mean"`` only when
            it is the plain ``sum / numel``, ``kernel_mean``: PyTorch's kernels divide inside).
        vector: For a loss of whole vectors along the last dimension (boxes: 4): ``pred`` must be
            ``(..., vector)``, the loss is ``(...,)``, and a ``weight`` of ``pred``'s full shape
            is averaged over the last dimension first (mmdetection's ``(N, 4)`` box weights).
        infinite: What the value checks accept of infinite predictions (``INFINITE_RULES``):
            ``"allow"`` (an infinite prediction has an infinite loss) or ``"finite"`` (boxes);
            ``finite_why`` explains the ``"finite"`` rule in its message.
        nan_in_total: The loss's ``Total`` is NaN exactly when an element of the prediction is
            (PyTorch's element-wise kernels, pure functions of the prediction): under value
            checks the NaN check then reads that one value after the loss instead of summing the
            prediction before it (with ``infinite="allow"``, no weight; the message is the same).
    """
    if (
        nan_in_total
        and backend == "torch"
        and weight is None
        and avg_factor is None
        and vector is None
        and infinite == "allow"
    ):
        plain = plain_regression(fn, pred, target, loss, reduction, input_name)
        if plain is not None:
            return plain
    deferred = nan_in_total and reduction != "none" and weight is None and infinite == "allow"
    p = check_floating(
        fn, input_name, pred, infinite=infinite, finite_why=finite_why, values=not deferred
    )
    t = check_tensor(fn, "target", target)
    if t.is_complex():
        fail(fn, "target", "a real tensor", f"dtype {t.dtype}", TypeError)
    if t.device != p.device:
        check_same_device(fn, **{input_name: p, "target": t})  # raises with its message
    check_same_shape(fn, "target", t, input_name, p)
    if vector is not None:
        if p.ndim == 0 or p.shape[-1] != vector:
            fail(fn, input_name, f"a tensor of shape (..., {vector})", f"shape {tuple(p.shape)}")
        if isinstance(weight, Tensor) and weight.shape == p.shape and not weight.is_complex():
            weight = weight.to(compute_dtype(p)).mean(dim=-1)
    avg = check_avg_factor(fn, avg_factor, reduction)
    if fused is None:
        _no_kernel(fn, backend, p)
    elif kernel_eligible(fn, backend, p):
        kernels = _kernel_module(fused.family)
        why = _grad_reason(p, t, weight, avg) or kernels._reason(p, t)
        if why is None:
            wl = weight_layout(fn, weight, p.shape, p)
            denom = _mean(reduction, avg, p.numel(), None, p)
            out = kernels._loss(
                p,
                t,
                kind=fused.kind,
                weight=wl,
                reduce=reduction != "none",
                denom=denom,
                **fused.params,
            )
            if deferred:  # the kernel's total is not read here: check the prediction itself
                check_floating(fn, input_name, p, infinite=infinite, finite_why=finite_why)
            return _check_strict_zero(fn, out, denom)
        unsupported(fn, backend, why)  # type: ignore[arg-type]  # raises for "triton"
    cdt = compute_dtype(p)
    pc = p if p.dtype == cdt else p.to(cdt)
    tc = t if t.dtype == cdt else t.to(cdt)
    numel = p.numel() if vector is None else p.numel() // vector
    total = None
    if reduction != "none" and weight is None:
        total = "mean" if vector is None and kernel_mean(reduction, avg, numel) else "sum"
    out = loss(pc, tc, total)
    if (
        deferred
        and value_checks_on(p)
        and (not isinstance(out, Total) or math.isnan(out.value.item()))
    ):
        check_floating(fn, input_name, p, infinite=infinite, finite_why=finite_why)
    if isinstance(out, Total):
        if total == "mean":
            return out.value
        return finish_reduction(out.value, fn=fn, reduction=reduction, avg_factor=avg, numel=numel)
    denominator = None
    if isinstance(out, Unreduced):
        out, denominator = out
    return reduce_loss(
        out,
        fn=fn,
        reduction=reduction,
        weight=weight,
        avg_factor=avg,
        denominator=denominator,
    )


# --------------------------------------------------------------------------------------------------
# region: set-level overlaps per (sample, class), or per class over the batch.
# --------------------------------------------------------------------------------------------------

ACTIVATIONS = ("softmax", "sigmoid", "none")


def _sum(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    # ``sum(dim=())`` would reduce every dimension; (N, C) inputs have nothing to sum per entry.
    return t.sum(dim=dims) if dims else t


@dataclass(frozen=True)
class OverlapStats:
    """The statistics of the overlap losses (dice, Jaccard, generalized dice) as ``region``'s
    ``stats``: the three sums ``[sum p g, sum p^k, sum g^k]`` per entry (``k = 2`` when
    ``squared``), the intersection being ``sum min(p, g)`` with ``soft_label`` (the same for
    0/1 targets).

    Called as ``stats(p, g)`` it gives the element-wise terms of a dense target. Being these
    three sums, the pipeline may also compute them from class indices without the dense one-hot
    target (``_indexed_overlap_sums``): the intersection gathers ``p`` at each pixel's class and
    scatter-adds it per class, ``sum g^k`` counts the pixels of each class."""

    squared: bool = False
    soft_label: bool = False

    def __call__(self, p: Tensor, g: Tensor) -> list[Tensor]:
        if self.squared:
            return [p * g, p * p, g * g]
        # min(p, g) equals p * g for hard (0/1) targets; for soft targets it makes the overlap of
        # p with itself complete (Wang & Blaschko 2023), so the loss is 0 exactly at p = g.
        return [torch.minimum(p, g) if self.soft_label else p * g, p, g]


@dataclass(frozen=True)
class RegionInput:
    """What the region pipeline prepared for a loss's math (``region_entries``).

    Every tensor has channel 0 dropped without ``include_background``; ``C'`` below is the number
    of channels left.

    Attributes:
        z: The logits in the compute dtype (float32, or float64 for float64 input), ``(N, C', *)``.
        p: The probabilities (``activation`` applied to the logits, in ``[0, 1]``), 0 at ignored
            positions, ``(N, C', *)``.
        g: The dense target in ``[0, 1]``, 0 at ignored positions and absent classes,
            ``(N, C', *)``.
        valid: The valid-position mask, ``(N, 1, *)`` for class-index targets, ``(N, C', *)`` for
            dense ones; ``None`` when nothing can be ignored.
        batch: Whether the entries are per class over the whole batch (``(C',)``) rather than per
            (sample, class) (``(N, C')``).
    """

    z: Tensor
    p: Tensor
    g: Tensor
    valid: Tensor | None
    batch: bool

    def flat(self, t: Tensor) -> Tensor:
        """``t`` (``(N, C', *)`` or a mask broadcasting to it) as one row of positions per entry:
        ``(N, C', S)``, or ``(C', N * S)`` with ``batch=True``."""
        t = t.expand_as(self.p)
        n, c, s = t.shape[0], t.shape[1], math.prod(t.shape[2:])
        if self.batch:
            return t.transpose(0, 1).reshape(c, n * s)
        return t.reshape(n, c, s)


def _region_prepare(
    fn: str,
    x: Tensor,
    target: object,
    activation: str,
    ignore_index: int | None,
    w: Tensor | None,
    include_background: bool,
    batch: bool,
) -> tuple[RegionInput, Tensor | None]:
    """The target convention, the activation and the ignore mask of every region loss."""
    g, valid = region_target(fn, x, target, activation, ignore_index)
    z = in_compute_dtype(x)
    if activation == "softmax":
        p = torch.softmax(z, dim=1)
    elif activation == "sigmoid":
        p = torch.sigmoid(z)
    else:
        check_unit_interval(fn, "logits", z)
        p = z
    if valid is not None:
        p = torch.where(valid, p, torch.zeros((), dtype=p.dtype, device=p.device))
    if not include_background:
        z, p, g = z[:, 1:], p[:, 1:], g[:, 1:]
        if valid is not None and valid.shape[1] > 1:
            valid = valid[:, 1:]
        if w is not None:
            w = w[1:]
    return RegionInput(z, p, g, valid, batch), w


def _region_checks(
    fn: str,
    logits: object,
    activation: str,
    include_background: bool,
    class_weight: object,
    reduction: str,
    avg_factor: object,
) -> tuple[Tensor, float | Tensor | None]:
    # Infinite logits follow the activation: the softmax's rule ("masked": a -inf class is a
    # masked class), any for the sigmoid (its limits are 0 and 1).
    x = check_floating(
        fn,
        "logits",
        logits,
        infinite="masked" if activation == "softmax" else "allow",
        class_dim=1,
    )
    avg = check_avg_factor(fn, avg_factor, reduction)
    if x.ndim < 2:
        fail(fn, "logits", "a tensor of shape (N, C, *)", f"shape {tuple(x.shape)}")
    c = x.shape[1]
    if activation == "softmax" and c < 2:
        fail(
            fn,
            "logits",
            "at least 2 channels with activation='softmax' (use 'sigmoid' for one binary channel)",
            f"C={c}",
        )
    if not include_background and c < 2:
        fail(fn, "include_background", "True when there is a single channel", include_background)
    return x, avg


def region(
    fn: str,
    logits: object,
    target: object,
    *,
    stats: Callable[[Tensor, Tensor], list[Tensor]],
    combine: Callable[..., Tensor],
    activation: str,
    ignore_index: int | None,
    class_weight: object,
    include_background: bool,
    batch: bool,
    weight: Tensor | None,
    reduction: str,
    avg_factor: object,
    backend: object = "torch",
    fused: Fused | None = None,
    pool_classes: bool = False,
    fused_reason: str | None = None,
    index_target: bool | None = None,
) -> Tensor:
    """Run a region (overlap) loss.

    The probabilities ``p`` (``activation`` applied, ignored positions 0, channel 0 dropped without
    ``include_background``) and the dense target ``g``, both ``(N, C, *)``, go through
    ``stats(p, g)``: element-wise terms, each summed here over the spatial dimensions (and the
    batch with ``batch=True``; inside ``global_normalization()`` also over the ranks, in one
    collective). ``combine(sums)`` turns the sums into the loss per entry, ``(N, C)`` (``(C,)``
    with ``batch=True``). ``class_weight`` scales the entries; an entry with no valid pixel is not
    counted in ``"mean"``.

    With ``pool_classes=True`` the loss pools the classes itself: ``combine(sums, class_weight)``
    receives the per-class sums and the per-class weights (``None`` when not given; the pipeline
    does not apply them) and returns one loss per sample, ``(N,)`` (``()`` with ``batch=True``),
    which becomes the ``(N, 1)`` (``(1,)``) entries; an entry with no valid pixel in any class is
    not counted in ``"mean"``.

    ``fused_reason``: why the declared kernel cannot serve this call's options (``"triton"``
    raises with it, ``"auto"`` runs the reference). ``index_target``: as in ``sigmoid`` (whether
    integer targets of a one-channel input are class indices or a mask; ``None``: refuse to guess).
    """
    x, avg = _region_checks(
        fn, logits, activation, include_background, class_weight, reduction, avg_factor
    )
    if batch and avg is not None and reduction == "mean" and _reduction._denominator_hook:
        # (before the routing: both backends refuse it alike)
        fail(
            fn,
            "avg_factor",
            "None with batch=True inside global_normalization() (the batch statistics are "
            "summed over the ranks already: a per-rank avg_factor has no global meaning)",
            avg,
        )
    target = resolve_target(fn, x, target, index_target=index_target)
    if fused is not None and kernel_eligible(fn, backend, x):
        out = None
        if fused_reason is not None:
            unsupported(fn, backend, fused_reason)  # type: ignore[arg-type]  # raises for "triton"
        else:
            out = _region_fused(
                fn,
                backend,
                fused,
                x,
                target,
                ignore_index,
                class_weight,
                include_background,
                batch,
                weight,
                reduction,
                avg,
                activation,
            )
        if out is not None:
            return out
    elif fused is None:
        _no_kernel(fn, backend, x)
    # class weights after the routing: the fused path keeps list options as device constants
    w = _device_option(as_class_weight, (fn, class_weight, x.shape[1]), x)
    dims = tuple(range(2, x.ndim))
    if batch:
        dims = (0,) + dims
    valid: Tensor | None
    if (
        isinstance(stats, OverlapStats)
        and activation == "softmax"
        and x.is_cpu
        and isinstance(target, Tensor)
        and target.shape != x.shape
    ):
        sums, valid = _indexed_overlap_sums(fn, x, target, ignore_index, stats.squared)
        if not include_background:
            sums = [s[:, 1:] for s in sums]
            if w is not None:
                w = w[1:]
        if batch:
            sums = [s.sum(dim=0) for s in sums]
    else:
        inp, w = _region_prepare(
            fn, x, target, activation, ignore_index, w, include_background, batch
        )
        valid = inp.valid
        sums = [_sum(term, dims) for term in stats(inp.p, inp.g)]
    count = None
    if valid is not None:
        count = _sum(valid.to(sums[0].dtype), dims).expand_as(sums[0])
    if batch and _reduction._denominator_hook is not None:
        from lossforge.distributed import _scope_scale_grad, global_sum, scope_group

        parts = sums if count is None else [*sums, count]
        # A "mean" over the entries divides by their count summed over the ranks (K times the
        # entries): each rank's loss is the global loss / K without DDP's averaging, so the
        # local gradient is scaled by K in both scale_grad modes (the gradients K times too
        # small with scale_grad=False otherwise); "sum" follows the scope's scale_grad.
        summed = global_sum(
            torch.stack(parts),
            scale_grad=True if reduction == "mean" else _scope_scale_grad(),
            group=scope_group(),
        )
        sums = list(summed[: len(sums)])
        if count is not None:
            count = summed[len(sums)]
    if pool_classes:
        loss = combine(sums, w).unsqueeze(-1)
        if count is not None:
            count = count.sum(dim=-1, keepdim=True)
    else:
        loss = combine(sums)
        if w is not None:
            loss = loss * w
    entry_valid = None if count is None else count > 0
    return reduce_loss(
        loss, fn=fn, reduction=reduction, weight=weight, avg_factor=avg, valid=entry_valid
    )


def _indexed_overlap_sums(
    fn: str, x: Tensor, target: Tensor, ignore: int | None, squared: bool
) -> tuple[list[Tensor], Tensor | None]:
    """``OverlapStats``' sums ``[sum p g, sum p^k, sum g]`` of a softmax over class indices,
    ``(N, C)`` each, every class kept, and the valid-pixel mask ``(N, 1, *)``: the sums of the
    dense one-hot target without building it (CPU only: ``scatter_add`` adds in a fixed order
    there, while on CUDA its atomic adds would make the sums vary from run to run).

    ``p`` is gathered at each pixel's class (1 / C of it) and scatter-added per class; the
    pixels of each class are counted the same way. With the one-hot target that is 3 full-size
    tensors fewer forward (the bool and float one-hot, ``p g``) and one fewer backward
    (``scatter_add``'s gradient is a gather, the gather's a scatter into one zero tensor).
    Ignored pixels have ``p = 0`` and count 0; an out-of-range index (value checks off) makes
    its sample's intersection and class counts NaN in every class, as the dense target's NaN
    does."""
    idx, valid, out = region_index(fn, x, target, "softmax", ignore)
    p = torch.softmax(in_compute_dtype(x), dim=1)
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    if valid is not None:
        p = torch.where(valid, p, zero)
    n, c, size = p.shape[0], p.shape[1], math.prod(p.shape[2:])
    # Ignored and out-of-range pixels read some class (their p is 0, or the sample is NaN) and
    # count 0.
    keep = valid if out is None else (~out if valid is None else valid & ~out)
    rows = (idx if keep is None else idx.clamp(0, c - 1)).reshape(n, size)
    flat = p.reshape(n, c, size)
    at_class = flat.gather(1, rows.unsqueeze(1)).squeeze(1)
    counted = torch.ones_like(at_class) if keep is None else keep.reshape(n, size).to(p.dtype)
    sums = p.new_zeros(n, c)
    inter = sums.scatter_add(1, rows, at_class)
    volume = sums.scatter_add(1, rows, counted)
    total = (flat * flat if squared else flat).sum(dim=-1)
    if out is not None:
        poisoned = out.reshape(n, size).any(dim=1, keepdim=True)
        nan = torch.full((), float("nan"), dtype=p.dtype, device=p.device)
        inter, volume = torch.where(poisoned, nan, inter), torch.where(poisoned, nan, volume)
    return [inter, total, volume], valid


def region_entries(
    fn: str,
    logits: object,
    target: object,
    *,
    loss: Callable[[RegionInput], tuple[Tensor, Tensor | None]],
    activation: str,
    ignore_index: int | None,
    class_weight: object,
    include_background: bool,
    batch: bool,
    weight: Tensor | None,
    reduction: str,
    avg_factor: object,
    backend: object = "torch",
    index_target: bool | None = None,
) -> Tensor:
    """Run a region loss that is not a function of sums (the Lovasz extensions sort the errors).

    The same checks, target convention, activation, ignore mask and channel-0 handling as
    ``region``, then ``loss(inputs)`` (``RegionInput``) returns the loss per entry, ``(N, C')``
    (``(C',)`` with ``batch=True``), and which entries count in ``"mean"`` (a bool mask of that
    shape, or ``None`` for all). Ignored positions reach the math with ``p = g = 0``; the math must
    make them contribute nothing. The pipeline then also leaves out of ``"mean"`` the entries with
    no valid position, scales the entries by ``class_weight`` and applies the shared reduction.
    There is no fused kernel; the entries are computed from each rank's own batch (inside
    ``global_normalization()`` only the ``"mean"`` denominator is global). ``index_target``: as
    in ``region`` (one logit channel: an integer target without the channel dimension is never
    guessed to be a mask or class indices).
    """
    x, avg = _region_checks(
        fn, logits, activation, include_background, class_weight, reduction, avg_factor
    )
    target = resolve_target(fn, x, target, index_target=index_target)
    _no_kernel(fn, backend, x)
    w = _device_option(as_class_weight, (fn, class_weight, x.shape[1]), x)
    inp, w = _region_prepare(fn, x, target, activation, ignore_index, w, include_background, batch)
    out, entry_valid = loss(inp)
    if inp.valid is not None:
        has_valid = inp.flat(inp.valid).any(dim=-1)
        entry_valid = has_valid if entry_valid is None else entry_valid & has_valid
    if w is not None:
        out = out * w
    return reduce_loss(
        out, fn=fn, reduction=reduction, weight=weight, avg_factor=avg, valid=entry_valid
    )


def _region_fused(
    fn: str,
    backend: object,
    fused: Fused,
    x: Tensor,
    target: object,
    ignore: int | None,
    class_weight: object,
    include_background: bool,
    batch: bool,
    weight: Tensor | None,
    reduction: str,
    avg: float | Tensor | None,
    activation: str,
) -> Tensor | None:
    kernels = _kernel_module(fused.family)
    t = check_tensor(fn, "target", target)
    if t.ndim == x.ndim - 1:
        as_index_target(fn, t)  # the torch route's TypeError for a float / bool one, not a decline
    c = x.shape[1]
    w = _host_constant(as_class_weight, (fn, class_weight, c), x)
    why = _grad_reason(x, t, weight, avg, w)
    if why is None and activation != "softmax":
        why = f"activation={activation!r} (the dice kernel serves softmax)"
    why = why or kernels._reason(x, t)
    if why is None and batch and _reduction._denominator_hook is not None:
        why = "batch=True inside global_normalization() (the batch sums are all-reduced)"
    if why is not None:
        unsupported(fn, backend, why)  # type: ignore[arg-type]  # raises for "triton"
        return None
    if t.device != x.device:
        fail(fn, "target", f"on the device of `logits` ({x.device})", t.device)
    # kernels._reason accepted an integer target: used as it is (no int64 copy of a uint8 mask)
    check_index_range(fn, t, c, ignore_index=ignore)
    first = 0 if include_background else 1
    rows, cols = (1 if batch else x.shape[0]), c - first
    loss_shape = (cols,) if batch else (rows, cols)
    # Entry weights: class_weight x weight on the (rows, C) entries, 0 for a dropped background.
    entry = None
    if w is not None or weight is not None:
        e = torch.ones(loss_shape, dtype=torch.float32, device=x.device)
        if w is not None:
            e = e * w[first:].to(torch.float32)
        if weight is not None:
            weight_layout(fn, weight, loss_shape, x)  # the reference's shape rules
            e = e * _reduction.expand_weight(fn, weight, torch.Size(loss_shape), e)
        e = e.reshape(rows, cols)
        if first:
            e = torch.cat([e.new_zeros(rows, first), e], dim=1)
        entry = e.contiguous()
    denom = None
    if reduction == "mean":
        count = None
        if avg is None and ignore is not None:
            # the reference's denominator: the entries with a valid pixel
            keep = (t != ignore).flatten(1).any(dim=1) if t.ndim > 1 else t != ignore
            count = (keep.any() if batch else keep.sum()).to(torch.float32) * cols
        denom = _mean("mean", avg, rows * cols, None, x, count)
    out = kernels._loss(
        x,
        t,  # any integer dtype: the kernels read it as it is (no int64 copy)
        entry_weight=entry,
        include_background=include_background,
        per_sample=not batch,
        ignore_index=ignore,
        reduce=reduction != "none",
        denom=denom,
        **fused.params,
    )
    return _check_strict_zero(fn, out, denom)
