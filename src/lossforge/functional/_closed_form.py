r"""Element-wise losses whose forward also computes the derivative (the torch backend's fast path).

The composite PyTorch formula of a loss is its specification; autograd through it records every
intermediate (40-110 bytes per element for a focal or ASL loss) and runs one backward node per
operation. For an element-wise loss $\ell(x; y)$ the derivative $\partial\ell / \partial x$ has a
closed form that shares most of its terms with $\ell$. ``ElementwiseLoss`` computes both in one
no-grad forward, keeps only the derivative (one gradient-sized buffer, in the input's dtype; in
float32 for float16 input, see ``saved_grad_dtype``) and scales it by the incoming gradient in the
backward.

Second derivatives stay exact: under ``create_graph=True`` (the only case in which a custom
Function's backward runs with grad mode on) the backward re-runs the composite on the saved input
and differentiates it with ``create_graph=True``. A target that requires grad, forward-mode AD
(dual tensors) and functorch transforms take the composite directly.

A ``ClosedForm`` spec supplies the two formulas; ``closed_form_loss`` picks the route.

A reduced loss that PyTorch computes as one fused operation with its own backward (BCE with
logits) gains nothing from a saved derivative, but its kernel spends passes on temporaries the
formula does not need. ``ClosedTotal`` / ``TotalLoss`` compute the total in the fewest passes the
formula allows and the derivative in the backward, saving only the inputs (no derivative buffer
between the passes); ``closed_form_total`` picks the route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from lossforge._checks import compute_dtype, in_compute_dtype

__all__ = [
    "ClosedForm",
    "ClosedTotal",
    "ElementwiseLoss",
    "TotalLoss",
    "closed_form_loss",
    "closed_form_total",
    "has_tangent",
    "saved_grad_dtype",
    "scale_of",
    "upcast",
]

#: ``(x, y, need_grad) -> (loss, dloss/dx or None)``: ``x`` in its own dtype, the loss in the
#: compute dtype, the derivative in ``saved_grad_dtype(x.dtype)``.
LossAndGrad = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class ClosedForm:
    """The two forms of one element-wise loss.

    Attributes:
        loss_and_grad: The closed form (``LossAndGrad``), run without autograd.
        composite: ``(z, y) -> loss`` on the input in the compute dtype, with differentiable
            operations: the specification, used wherever autograd must see the formula.
    """

    loss_and_grad: LossAndGrad
    composite: Callable[[Tensor, Tensor], Tensor]


def saved_grad_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a closed form keeps its derivative in for an input of ``dtype`` until the
    backward: the input's, except float32 for float16. The incoming gradient (a ``GradScaler``'s
    factor, 65536, under fp16 AMP) arrives only in the backward; an fp16 derivative would have
    rounded before it (focal and ASL derivatives of easy negatives, 1e-4 and below, flushed to 0
    or a coarse subnormal), so the product is formed in float32 and rounded once to fp16, as the
    composite's autograd does. bfloat16 has float32's range: no flush, the buffer stays small."""
    return torch.float32 if dtype == torch.float16 else dtype


def upcast(fn: Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor | None]]) -> LossAndGrad:
    """Wrap a closed form written for the compute dtype: the input is upcast (half -> float32) and
    the derivative is returned in ``saved_grad_dtype(x.dtype)``."""

    def wrapped(x: Tensor, y: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        loss, grad = fn(in_compute_dtype(x), y, need_grad)
        kept = saved_grad_dtype(x.dtype)
        if grad is not None and grad.dtype != kept:
            grad = grad.to(kept)
        return loss, grad

    return wrapped


def _scaled(grad: Tensor, grad_loss: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad_loss * grad`` in ``grad``'s dtype, always in a new tensor, returned in ``dtype``
    (the input's: one rounding, after the scaling).

    The saved derivative itself is never returned, not even for a broadcast 1
    (``reduction="sum"``): autograd may hand a returned tensor to a leaf as its ``.grad`` (through
    a view's backward, for one), and zeroing or updating that ``.grad`` in place would then change
    the saved derivative under a retained graph (``backward(retain_graph=True)``). Of the same
    dtype, one multiplication (a broadcast ``grad_loss`` is read with stride 0). Otherwise a
    broadcast ``grad_loss`` is read on the host for CPU tensors only (no device sync), so
    half-precision derivatives are scaled without a float32 temporary.
    """
    if grad_loss.dtype == grad.dtype:
        out = torch.mul(grad_loss, grad)
    elif (
        grad_loss.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and grad_loss.numel() > 0
        and all(st == 0 for st in grad_loss.stride())
    ):
        out = torch.mul(grad, grad_loss[(0,) * grad_loss.ndim].item())
    else:
        out = grad_loss * grad
        out = out if out.dtype == grad.dtype else out.to(grad.dtype)
    return out if out.dtype == dtype else out.to(dtype)


def has_tangent(*ts: Tensor) -> bool:
    """Whether a tensor is a dual tensor of forward-mode AD (never while ``torch.compile``
    traces): the closed forms' Functions define no ``jvp``, so such calls take the composite."""
    return not torch.compiler.is_compiling() and any(
        fwAD.unpack_dual(t).tangent is not None for t in ts
    )


def scale_of(grad_loss: Tensor, factor: float) -> float | Tensor:
    """``factor`` times a reduced loss's incoming gradient (a scalar): a Python number for a CPU
    scalar outside ``torch.compile`` (no device sync, no small operation), else a tensor."""
    if grad_loss.device.type == "cpu" and not torch.compiler.is_compiling():
        return float(grad_loss) * factor
    return grad_loss * factor if factor != 1.0 else grad_loss


class ElementwiseLoss(torch.autograd.Function):
    """``loss = spec(x; y)`` element-wise, with the derivative computed in the forward.

    The classic ``forward(ctx, ...)`` form on purpose: with a ``setup_context``,
    ``Function.apply`` binds the arguments through ``inspect.signature`` on every call (~50 us,
    a tenth of a small multi-label step). functorch transforms, which need ``setup_context``,
    take the composite instead (``closed_form_loss``).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, spec: ClosedForm) -> Tensor:
        loss, grad = spec.loss_and_grad(x, y, True)
        ctx.set_materialize_grads(False)
        ctx.spec = spec
        ctx.save_for_backward(x, y, grad)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None) -> tuple[Tensor | None, None, None]:
        if grad_loss is None:
            return None, None, None
        x, y, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            with torch.enable_grad():
                loss = ctx.spec.composite(x.to(compute_dtype(x)), y)
                (gx,) = torch.autograd.grad(loss, x, grad_loss, create_graph=True)
            return gx, None, None
        return _scaled(grad, grad_loss, x.dtype), None, None


def closed_form_loss(x: Tensor, y: Tensor, spec: ClosedForm) -> Tensor:
    """The element-wise loss of the logits ``x`` (own dtype) against the dense target ``y``, in the
    compute dtype, by the cheapest route with exact gradients: ``ElementwiseLoss`` when ``x``
    needs a gradient, the closed-form loss alone when nothing does, the composite when the target
    requires grad, under functorch transforms, for forward-mode AD (dual tensors) and while
    ``torch.export`` traces (it records a custom Function's forward, whose in-place operations
    run without grad, in place of its backward: the exported program's gradients would fail)."""
    if (
        y.requires_grad
        or torch._C._are_functorch_transforms_active()
        or has_tangent(x, y)
        or torch.compiler.is_exporting()
    ):
        return spec.composite(in_compute_dtype(x), y)
    if torch.is_grad_enabled() and x.requires_grad:
        return cast(Tensor, ElementwiseLoss.apply(x, y, spec))
    loss, _ = spec.loss_and_grad(x, y, False)
    return loss


@dataclass(frozen=True)
class ClosedTotal:
    """The forms of one element-wise loss reduced by ``"sum"`` or ``"mean"`` (``sum / numel``).

    Attributes:
        total: ``(z, y, mean) -> scalar``: the reduced loss, run without autograd.
        derivative: ``(z, y) -> dloss/dz`` of the element-wise loss, unscaled, a new tensor of
            ``z``'s dtype (the backward scales it in place).
        composite: ``(z, y) -> loss`` element-wise, with differentiable operations: the
            specification, used wherever autograd must see the formula.
    """

    total: Callable[[Tensor, Tensor, bool], Tensor]
    derivative: Callable[[Tensor, Tensor], Tensor]
    composite: Callable[[Tensor, Tensor], Tensor]


class TotalLoss(torch.autograd.Function):
    """``sum`` or ``mean`` of an element-wise loss, its derivative computed in the backward.

    Saves the inputs only (they are alive anyway); the backward computes the derivative into a new
    tensor and scales it in place by the incoming gradient (divided by the element count for
    ``"mean"``), which is then returned: it is never kept, so a retained graph's next backward
    computes it again. Under ``create_graph=True`` the backward differentiates the composite.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, y: Tensor, spec: ClosedTotal, mean: bool) -> Tensor:
        ctx.set_materialize_grads(False)
        ctx.spec = spec
        ctx.mean = mean
        ctx.save_for_backward(z, y)
        return spec.total(z, y, mean)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None) -> tuple[Tensor | None, None, None, None]:
        if grad_loss is None:
            return None, None, None, None
        z, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            with torch.enable_grad():
                loss = ctx.spec.composite(z, y)
                total = loss.mean() if ctx.mean else loss.sum()
                (gz,) = torch.autograd.grad(total, z, grad_loss, create_graph=True)
            return gz, None, None, None
        grad = ctx.spec.derivative(z, y)
        grad.mul_(scale_of(grad_loss, 1.0 / max(z.numel(), 1) if ctx.mean else 1.0))
        return grad, None, None, None


def closed_form_total(z: Tensor, y: Tensor, spec: ClosedTotal, mean: bool) -> Tensor | None:
    """The ``"sum"`` (``mean=False``) or ``"mean"`` of the element-wise loss of ``z`` (compute
    dtype) against the dense target ``y`` by ``TotalLoss`` when ``z`` needs a gradient, by the
    closed-form total alone when nothing does; ``None`` (the caller's own route) when the target
    requires grad, under ``torch.compile`` (which fuses the caller's operations itself) or
    functorch transforms, and for forward-mode AD (dual tensors)."""
    if (
        y.requires_grad
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or has_tangent(z, y)
    ):
        return None
    if torch.is_grad_enabled() and z.requires_grad:
        return cast(Tensor, TotalLoss.apply(z, y, spec, mean))
    return spec.total(z, y, mean)
