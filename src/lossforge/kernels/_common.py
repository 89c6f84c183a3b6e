"""What the kernel families share: the autograd node, the ``torch.compile`` op, the fixed-order
second reduction stage, the valid-element count and the backward's predicate scaling pass.

**Host path** (issue #12, items 5 and 6). Eager calls go through one plain
``torch.autograd.Function`` (``FusedLoss``) whose forward launches the family's kernels directly:
no dispatcher round trip, no schema argument matching, and a single output (the loss), so autograd
never materialises a zero gradient for a second, non-differentiable output. Under
``torch.compile`` the same launcher is reached through one opaque custom op per family
(``lossforge::<family>``, ten arguments, a shape-only fake), so dynamo never traces the Triton
launcher and the compiled graph calls the kernels as they are.

**Where the gradient is computed.** By default the forward writes the gradient of the reduced loss
(already divided by the ``"mean"`` denominator) and the backward multiplies it by ``grad_output``:
``scale_grad_`` reads ``grad_output`` on the device in each program of a small persistent grid and
does nothing when it equals 1.0 (PERFORMANCE.md section 1), so the common case costs one launch
and no traffic, without a host sync. Two cases compute the gradient in the backward instead
(``grad_in_backward``), with ``grad_output`` folded into the kernel:

* float16 logits: an fp16 gradient divided by a large denominator flushes to zero before a
  ``GradScaler`` factor (65536) arrives in the backward; recomputing with the factor in hand
  rounds once, like the reference (and reads the inputs once more instead of a read and write of
  the stored gradient, which the scaler's ``grad_output != 1`` makes necessary anyway);
* dice, whose gradient pass follows the statistics pass in any case.

**Autograd semantics** (item 2). The kernels give the first derivative w.r.t. the input only. The
pipeline declines targets, weights, per-class options and denominators that require grad, and
forward-mode AD. In the backward: a graph kept with ``retain_graph=True`` is scaled out of place,
so a second backward gives the same gradient again; with ``create_graph=True`` the returned
gradient is attached to a node that raises if anything differentiates through it (never a silent
constant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import custom_op, wrap_triton

from lossforge._reduction import Denominator
from lossforge.kernels._launch import (
    cdiv,
    elementwise_block,
    elementwise_warps,
    is_dense,
    next_pow2,
    persistent_programs,
)

#: Partial sums per forward launch the finishing kernel reads in one wide iteration.
MAX_PARTIALS = 8192


@triton.jit
def block_div(start, BLOCK: tl.constexpr, d):
    """``(start + tl.arange(0, BLOCK)) // d`` for an int64 ``start >= 0`` and an int ``d > 0``.

    One 64-bit division per call; the per-element quotient is a 32-bit division (``d`` below
    2**31 - BLOCK, which the launcher types as i32). ``offs // d`` on the int64 offsets compiled to
    a call of the 64-bit division routine per element (8 per thread at BLOCK 1024, 4 warps).
    """
    q0 = start // d
    r0 = (start - q0 * d).to(tl.int32)
    return q0 + (r0 + tl.arange(0, BLOCK)) // d


@triton.jit
def grad_factor(s_host, d_ptr, go_ptr, D_PTR: tl.constexpr, GO_SCALAR: tl.constexpr):
    """The factor of every element gradient: ``1 / d`` of the ``"mean"`` denominator (0 where
    ``d <= 0`` or NaN; ``s_host`` when ``d`` is a host number, 1 without a mean), times a scalar
    ``grad_output`` read on the device (the backward of the ``grad_in_backward`` mode)."""
    if D_PTR:
        d = tl.load(d_ptr).to(tl.float32)
        s = tl.where(d > 0, 1.0 / tl.where(d > 0, d, 1.0), 0.0)
    else:
        s = s_host
    if GO_SCALAR:
        s = s * tl.load(go_ptr).to(tl.float32)
    return s


@triton.jit
def _finish_kernel(
    part_ptr,  # [n_part] fp32 per-program partial sums (unscaled)
    d_ptr,  # [1] the "mean" denominator on the device, any dtype (D_PTR)
    out_ptr,  # [1] fp32 reduced loss
    n_part,
    d_host,
    MODE: tl.constexpr,  # 0: sum, 1: mean, 2: mean with a strict denominator (a given one)
    D_PTR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program, fixed order: bitwise reproducible for a given grid. BLOCK covers up to
    # MAX_PARTIALS partials in one iteration (the forward kernels size their grids to that).
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_part, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + offs, mask=offs < n_part, other=0.0)
    total = tl.sum(acc, axis=0)
    if MODE > 0:
        # lossforge._reduction.Denominator's rule: total / d for d > 0; 0 for d == 0 (nothing
        # valid), except a strict d == 0 with a non-zero total and any d < 0 or NaN: NaN.
        d = tl.load(d_ptr).to(tl.float32) if D_PTR else d_host
        q = total / tl.where(d > 0, d, 1.0)
        if MODE == 2:
            rest = tl.where((d == 0) & (total == 0), 0.0, float("nan"))
        else:
            rest = tl.where(d == 0, 0.0, float("nan"))
        total = tl.where(d > 0, q, rest)
    tl.store(out_ptr, total)


@triton.jit
def _count_kernel(
    t_ptr,  # [n] dense target, memory order (any dtype)
    part_ptr,  # [num_programs] int32 partial counts
    n,
    ignore_index,
    HAS_IGNORE: tl.constexpr,
    OUT_OF_UNIT: tl.constexpr,
    TILES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Counts over a target without a full-size temporary (only the target is read): the elements
    # != ignore_index (the "mean" denominator of a dense target with an ignore value), or, with
    # OUT_OF_UNIT, those of them outside [0, 1] or NaN (the value check of dense targets).
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(TILES):
        offs = (pid.to(tl.int64) * TILES + i) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        t = tl.load(t_ptr + offs, mask=m, other=0)
        keep = m
        if HAS_IGNORE:
            keep = keep & (t != ignore_index)
        if OUT_OF_UNIT:
            tf = t.to(tl.float32)
            keep = keep & ~((tf >= 0.0) & (tf <= 1.0))
        acc += tl.where(keep, 1, 0)
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _scale_grad_kernel(
    g_ptr,  # [n] gradient written by a forward kernel, scaled in place
    go_ptr,  # [1] grad_output of the scalar loss (any float dtype)
    n,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    go = tl.load(go_ptr).to(tl.float32)
    n_blocks = tl.cdiv(n, BLOCK)
    # the predicate: nothing to do when grad_output == 1
    n_blocks = tl.where(go == 1.0, 0, n_blocks)
    for b in range(pid, n_blocks, nprog):
        offs = tl.cast(b, tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(g_ptr + offs, (g * go).to(g_ptr.dtype.element_ty), mask=m)


# --------------------------------------------------------------------------------------------------
# Launch helpers
# --------------------------------------------------------------------------------------------------


def tiles_per_program(n_tiles: int) -> int:
    """Tiles each program of a forward kernel reduces (a power of two), so that the partial sums
    fit ``MAX_PARTIALS`` and the finishing kernel reads them in one iteration (the detection shape
    had 125k one-tile programs: 123 serial iterations of the finishing program)."""
    tiles = 1
    while n_tiles > tiles * MAX_PARTIALS and tiles < 64:
        tiles *= 2
    return tiles


def denominator_args(denom: Denominator | None) -> tuple[int, float, float, Tensor | None]:
    """The kernels' view of ``lossforge._reduction.Denominator``: ``(mode, s, d, d_tensor)``.

    ``mode``: 0 no mean (``"sum"`` / ``"none"``), 1 mean, 2 mean with a strict (given)
    denominator. A host ``d`` gives the element gradients' factor ``s = 1 / d`` (0 for ``d == 0``)
    and ``d_tensor = None``; a device ``d`` is passed as ``d_tensor`` and the kernels read it (no
    host sync, no extra launch). A 0-d CPU tensor with device inputs is read on the host (free).
    """
    if denom is None:
        return 0, 1.0, 1.0, None
    mode = 2 if denom.strict else 1
    d = denom.value
    if isinstance(d, Tensor):
        return mode, 1.0, 0.0, d.detach().reshape(1)
    return mode, (1.0 / d if d > 0 else 0.0), float(d), None


def finish_sum(partials: Tensor, d_t: Tensor | None, d: float, mode: int) -> Tensor:
    """Fixed-order sum of the partials divided by the denominator by ``_reduction``'s rule, as a
    0-d fp32 tensor (one launch). ``mode``, ``d`` and ``d_t`` come from ``denominator_args``."""
    out = torch.empty((), dtype=torch.float32, device=partials.device)
    n = partials.numel()
    block = min(max(next_pow2(max(n, 1)), 128), MAX_PARTIALS)
    wrap_triton(_finish_kernel)[(1,)](
        partials,
        d_t if d_t is not None else partials,
        out,
        n,
        d,
        MODE=mode,
        D_PTR=d_t is not None,
        BLOCK=block,
        num_warps=4 if block <= 2048 else (8 if block <= 4096 else 16),
    )
    return out


def count(target: Tensor, ignore_index: int | None, *, out_of_unit: bool = False) -> Tensor:
    """Number of elements of a dense target not equal to ``ignore_index`` (and, with
    ``out_of_unit``, outside ``[0, 1]`` or NaN): an int64 0-d tensor from one launch plus a small
    exact sum, no host sync, no full-size temporary. The target is read in memory order."""
    if not is_dense(target):  # the count does not depend on the order, only on density
        target = target.contiguous()
    if target.dtype == torch.bool:
        target = target.view(torch.uint8)
    n = target.numel()
    block = elementwise_block()
    n_tiles = cdiv(n, block)
    tiles = tiles_per_program(n_tiles)
    n_prog = max(cdiv(n_tiles, tiles), 1)
    parts = torch.zeros(n_prog, dtype=torch.int32, device=target.device)
    if n:
        wrap_triton(_count_kernel)[(n_prog,)](
            target,
            parts,
            n,
            0 if ignore_index is None else ignore_index,
            HAS_IGNORE=ignore_index is not None,
            OUT_OF_UNIT=out_of_unit,
            TILES=tiles,
            BLOCK=block,
            num_warps=4,
        )
    return parts.sum()


def scale_grad_(grad: Tensor, grad_output: Tensor) -> None:
    """``grad *= grad_output`` in place, skipped on the device when ``grad_output == 1``."""
    n = grad.numel()
    if n == 0:
        return
    block = elementwise_block()
    grid = (persistent_programs(grad.device, cdiv(n, block)),)
    wrap_triton(_scale_grad_kernel)[grid](
        grad, grad_output.reshape(1), n, BLOCK=block, num_warps=elementwise_warps()
    )


def go_layout(go: Tensor, like: Tensor) -> tuple[Tensor, bool]:
    """An element-wise ``grad_output`` as the kernels read it: ``(tensor, is_scalar)``.

    A ``grad_output`` expanded from one value (``loss.sum().backward()`` on ``reduction="none"``)
    is read as that value; otherwise it is laid out like ``like`` (a copy only if it is not)."""
    if go.numel() > 0 and all(s == 0 for s in go.stride()):
        return torch.as_strided(go, (1,), (1,), go.storage_offset()), True
    if go.shape == like.shape and go.stride() == like.stride():
        return go, False
    return torch.empty_like(like, dtype=go.dtype).copy_(go), False


# --------------------------------------------------------------------------------------------------
# The autograd node and the torch.compile op
# --------------------------------------------------------------------------------------------------

#: launch(x, t, w, a, b, d, go, ints, floats, write_grad) -> (loss, grad or state)
Launch = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Family:
    """How ``FusedLoss`` runs one kernel family.

    Attributes:
        name: ``lossforge::<name>`` is the family's custom op.
        launch: The eager launcher: ``launch(x, t, w, a, b, d, go, ints, floats, write_grad)`` ->
            ``(loss, grad)``; ``go`` is ``None`` in the forward. With ``write_grad=False`` the
            second output is empty, or the small state the backward needs (``state_from_forward``).
        op: The same launcher as an opaque custom op (used while ``torch.compile`` traces).
        go_dim: Where the per-position ``grad_output`` of ``reduction="none"`` broadcasts against
            the gradient (softmax: the class dimension 1), ``None`` when they have one shape.
        state_from_forward: The forward's second output replaces ``a`` in the backward's launch
            (dice: the per-entry gradient coefficients).
    """

    name: str
    launch: Launch
    op: Any
    go_dim: int | None = None
    state_from_forward: bool = False


def declare(
    name: str,
    launch: Launch,
    fake: Launch,
    *,
    go_dim: int | None = None,
    state_from_forward: bool = False,
) -> Family:
    """Register ``lossforge::<name>`` (opaque to ``torch.compile``, ``fake`` gives the shapes) and
    describe the family."""

    @custom_op(f"lossforge::{name}", mutates_args=())
    def op(
        x: Tensor,
        t: Tensor,
        w: Tensor | None,
        a: Tensor | None,
        b: Tensor | None,
        d: Tensor | None,
        go: Tensor | None,
        ints: list[int],
        floats: list[float],
        write_grad: bool,
    ) -> tuple[Tensor, Tensor]:
        return launch(x, t, w, a, b, d, go, ints, floats, write_grad)

    op.register_fake(fake)
    return Family(name, launch, op, go_dim, state_from_forward)


def _launch(fam: Family, *args: Any) -> tuple[Tensor, Tensor]:
    if torch.compiler.is_compiling():
        x, t, w, a, b, d, go, ints, floats, write_grad = args
        return fam.op(x, t, w, a, b, d, go, list(ints), list(floats), write_grad)
    return fam.launch(*args)


def _keep_graph() -> bool:
    """Whether the running backward keeps the graph (``retain_graph=True``); True when the torch
    build cannot tell (then the gradient is always scaled out of place)."""
    probe = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if probe is None else bool(probe())


_SECOND_ORDER = (
    b"lossforge: the fused kernels compute first derivatives only; differentiating through their "
    b"gradient (create_graph=True, double backward) needs backend='torch'"
)


def _first_order_only(g: Tensor) -> Tensor:
    """``g`` attached to a node that raises if anything differentiates through it."""
    leaf = g.detach()
    leaf.requires_grad_(True)
    return torch._C._functions.DelayedError(_SECOND_ORDER, 1)(leaf)


class FusedLoss(torch.autograd.Function):
    """The autograd node of every fused loss: one output (the loss), the gradient w.r.t. the
    input only."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        t: Tensor,
        w: Tensor | None,
        a: Tensor | None,
        b: Tensor | None,
        d: Tensor | None,
        fam: Family,
        ints: Sequence[int],
        floats: Sequence[float],
        reduced: bool,
        grad_in_backward: bool,
    ) -> Tensor:
        ctx.set_materialize_grads(False)
        loss, extra = _launch(fam, x, t, w, a, b, d, None, ints, floats, not grad_in_backward)
        ctx.fam, ctx.ints, ctx.floats = fam, ints, floats
        ctx.reduced, ctx.grad_in_backward = reduced, grad_in_backward
        if grad_in_backward:
            a_bwd = extra if fam.state_from_forward else a
            ctx.save_for_backward(x, t, w, a_bwd, b, d)
        else:
            ctx.save_for_backward(extra)
        return loss

    @staticmethod
    def backward(ctx: Any, go: Tensor | None) -> tuple[Tensor | None, ...]:
        none = (None,) * 10
        if go is None:
            return (None, *none)
        fam: Family = ctx.fam
        compiling = torch.compiler.is_compiling()
        if ctx.grad_in_backward:
            x, t, w, a, b, d = ctx.saved_tensors
            _, g = _launch(fam, x, t, w, a, b, d, go, ctx.ints, ctx.floats, True)
        else:
            (g,) = ctx.saved_tensors
            if not ctx.reduced and fam.go_dim is not None:
                go = go.unsqueeze(fam.go_dim)
            if compiling or _keep_graph():
                # out of place: the saved gradient stays valid for another backward
                g = (g * go).to(g.dtype)
            elif ctx.reduced:
                scale_grad_(g, go)
            else:
                g.mul_(go)
        if torch.is_grad_enabled() and not compiling:
            g = _first_order_only(g)
        return (g, *none)


def run(
    fam: Family,
    x: Tensor,
    t: Tensor,
    w: Tensor | None,
    a: Tensor | None,
    b: Tensor | None,
    d: Tensor | None,
    ints: Sequence[int],
    floats: Sequence[float],
    *,
    reduced: bool,
    grad_in_backward: bool,
) -> Tensor:
    """The fused loss of ``x``, with autograd when ``x`` needs a gradient."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _launch(fam, x, t, w, a, b, d, None, ints, floats, False)[0]
    return FusedLoss.apply(x, t, w, a, b, d, fam, ints, floats, reduced, grad_in_backward)
