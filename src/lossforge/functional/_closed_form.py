r"""Element-wise losses whose forward also computes the derivative (the torch backend's fast path).

The composite PyTorch formula of a loss is its specification; autograd through it records every
intermediate (40-110 bytes per element for a focal or ASL loss) and runs one backward node per
operation. For an element-wise loss $\ell(x; y)$ the derivative $\partial\ell / \partial x$ has a
closed form that shares most of its terms with $\ell$. ``ElementwiseLoss`` computes both in one
no-grad forward, keeps only the derivative (in the input's dtype: one gradient-sized buffer, the
same memory contract as the Triton kernels) and multiplies it by the incoming gradient in the
backward.

Second derivatives stay exact: under ``create_graph=True`` (the only case in which a custom
Function's backward runs with grad mode on) the backward re-runs the composite on the saved input
and differentiates it with ``create_graph=True``. Forward-mode AD uses the saved derivative.

A ``ClosedForm`` spec supplies the two formulas. Callers use ``ElementwiseLoss`` only when the
input needs a gradient and the target does not (a target that requires grad takes the composite).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lossforge._checks import compute_dtype

__all__ = ["ClosedForm", "closed_form_loss"]


@dataclass(frozen=True)
class ClosedForm:
    """The two forms of one element-wise loss (both take the input in the compute dtype).

    Attributes:
        loss_and_grad: ``(z, y) -> (loss, dloss/dz)``, run under no-grad.
        composite: ``(z, y) -> loss`` with differentiable operations: the specification, used for
            second derivatives.
    """

    loss_and_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    composite: Callable[[Tensor, Tensor], Tensor]


class ElementwiseLoss(torch.autograd.Function):
    """``loss = spec(x; y)`` element-wise, with the derivative computed in the forward."""

    @staticmethod
    def forward(x: Tensor, y: Tensor, spec: ClosedForm) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        loss, grad = spec.loss_and_grad(x.to(compute_dtype(x)), y)
        return loss, grad.to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, ClosedForm], output: Any) -> None:
        x, y, spec = inputs
        _, grad = output
        ctx.mark_non_differentiable(grad)
        ctx.spec = spec
        ctx.save_for_backward(x, y, grad)
        ctx.save_for_forward(grad)

    @staticmethod
    def backward(
        ctx: Any, grad_loss: Tensor, _grad_grad: Tensor
    ) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        x, y, grad = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the composite so that the result is differentiable.
            with torch.enable_grad():
                loss = ctx.spec.composite(x.to(compute_dtype(x)), y)
                (gx,) = torch.autograd.grad(loss, x, grad_loss, create_graph=True)
            return gx, None, None
        return (grad_loss * grad).to(x.dtype), None, None


class ElementwiseLossWithJvp(ElementwiseLoss):
    """``ElementwiseLoss`` plus forward-mode AD. Kept apart because dynamo does not trace a custom
    ``jvp`` (a graph break): compiled code uses ``ElementwiseLoss``, eager code this class."""

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor, _y_t: Any, _spec_t: Any) -> tuple[Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return x_t.to(grad.dtype) * grad, None


def closed_form_loss(x: Tensor, y: Tensor, spec: ClosedForm) -> Tensor:
    """The element-wise loss in the compute dtype, by the cheapest route that keeps exact gradients.

    ``x`` is the logits in their own dtype, ``y`` the dense target (compute dtype). The closed form
    runs when ``x`` needs a gradient and ``y`` does not; otherwise the composite (which records a
    graph only where one is needed).
    """
    if not (torch.is_grad_enabled() and x.requires_grad) or y.requires_grad:
        return spec.composite(x.to(compute_dtype(x)), y)
    fn = ElementwiseLoss if torch.compiler.is_compiling() else ElementwiseLossWithJvp
    loss, _ = fn.apply(x, y, spec)
    return loss
