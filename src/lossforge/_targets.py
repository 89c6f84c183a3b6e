"""Target formats shared by the sigmoid (element-wise) and softmax (class-dimension) losses.

Sigmoid losses (BCE with logits, sigmoid focal, ASL, balanced BCE, dice on sigmoid) accept:

* dense targets of the logits' shape (float soft labels in ``[0, 1]``, or bool / integer 0-1
  values), where ``ignore_index`` (if given) marks ignored *elements*;
* class-index targets of the logits' shape without the class dimension (dimension 1, or 0 for 1-d
  logits): value ``k`` in ``[0, C)`` makes class ``k`` the positive, value ``C`` means "all
  negative" (background, the mmdetection convention), ``ignore_index`` drops the whole row. The
  one-hot is never materialised with ``F.one_hot``: it is a broadcast comparison with ``arange(C)``.

With **one** logit channel (``C = 1``) an integer target without the class dimension is ambiguous:
a binary mask (1 = foreground, how a segmentation user means it) or class indices (0 = the class,
1 = background, how a single-class detector passes them). ``resolve_target`` never guesses: the
caller says which with ``index_target`` (``True``: class indices, ``False``: a mask), or passes a
mask of the logits' shape. Float and bool targets cannot be class indices, so with ``C = 1`` they
are masks. Dense targets take ``ignore_index`` values outside ``[0, 1]`` only (0 and 1 are target
values).

Softmax losses (cross-entropy, softmax focal, single-label ASL, balanced softmax) accept class-index
targets (``ignore_index`` drops the position) or probability targets of the logits' shape, whose
rows sum to 1 (a value check, tolerance ``1e-3 * C``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import torch
from torch import Tensor

from lossforge._checks import (
    as_dtype,
    as_index_target,
    check_distribution,
    check_index_range,
    check_tensor,
    check_unit_interval,
    compute_dtype,
    fail,
    value_checks_on,
)


def class_dim(logits: Tensor) -> int:
    """The class dimension: 1 for ``(N, C, *)``, 0 for a single unbatched ``(C,)`` row."""
    return 1 if logits.ndim >= 2 else 0


def class_view(v: Tensor, ndim: int, cdim: int) -> Tensor:
    """Reshape a length-C vector so that it broadcasts along the class dimension ``cdim``."""
    shape = [1] * ndim
    shape[cdim] = v.shape[0]
    return v.view(shape)


def _shape_without(shape: torch.Size, dim: int) -> tuple[int, ...]:
    return tuple(shape[:dim]) + tuple(shape[dim + 1 :])


def _class_range(logits: Tensor, cdim: int, ndim: int) -> Tensor:
    c = logits.shape[cdim]
    view = [1] * ndim
    view[cdim] = c
    return torch.arange(c, device=logits.device).view(view)


class DenseTarget(NamedTuple):
    """A sigmoid-loss target as dense floats of the logits' shape.

    Attributes:
        target: Float target in the compute dtype; ignored elements hold 0.
        valid: Bool mask broadcastable to the logits (``None`` = everything valid).
        bad: Bool mask of elements whose target was out of range while value checks were off
            (``None`` when nothing needs poisoning); the loss there becomes NaN.
        from_index: Whether the target was given as class indices.
        binary: Whether every value is 0 or 1 by its dtype (class indices, bool or integer
            targets), so losses may use their hard-target form.
    """

    target: Tensor
    valid: Tensor | None
    bad: Tensor | None
    from_index: bool
    binary: bool = False


def _check_device(fn: str, t: Tensor, x: Tensor, input_name: str) -> None:
    if t.device != x.device:
        fail(fn, "target", f"on the device of `{input_name}` ({x.device})", t.device)


def resolve_target(fn: str, logits: Tensor, target: object, *, index_target: bool | None) -> object:
    """What a sigmoid-family (or region) target means, made explicit before anything reads it.

    ``index_target=None`` (the default): a target of the logits' shape is dense; one without the
    class dimension holds class indices, except with one logit channel, where an integer target is
    ambiguous (a binary mask or class indices) and raises with both fixes, and a float or bool one
    is a mask. ``True``: the target must hold class indices (the mmdetection convention, ``C`` =
    background: how single-class detectors pass labels). ``False``: the target is a mask or dense
    target; with one channel it may omit the channel dimension.

    Returns the target to use: as given, or a one-channel mask with the channel dimension added.
    """
    if index_target is not None and not isinstance(index_target, bool):
        fail(fn, "index_target", "None, True or False", repr(index_target), TypeError)
    if not isinstance(target, Tensor) or logits.ndim == 0:
        return target  # the target checks report it
    if index_target is not True and target.shape == logits.shape:
        return target  # dense (the common case: decided without building the index shape)
    cdim = class_dim(logits)
    c = logits.shape[cdim]
    index_shape = _shape_without(logits.shape, cdim)
    shape = tuple(target.shape)
    if index_target is True:
        if shape != index_shape or target.is_floating_point() or target.dtype == torch.bool:
            fail(
                fn,
                "target",
                f"integer class indices of shape {index_shape} (index_target=True)",
                f"shape {shape} and dtype {target.dtype}",
            )
        return target
    if shape != index_shape:
        return target  # dense (the logits' shape) or a shape error, reported by the target checks
    if index_target is False:
        if c != 1:
            fail(
                fn,
                "target",
                f"a dense target of the logits' shape {tuple(logits.shape)} (index_target=False; "
                "only a one-channel mask may omit the channel dimension)",
                f"shape {shape}",
            )
        return target.unsqueeze(cdim)
    if c != 1:
        return target
    if target.is_floating_point() or target.dtype == torch.bool:
        return target.unsqueeze(cdim)  # not class indices: a mask
    if target.is_complex():
        return target  # rejected by the target checks
    fail(
        fn,
        "target",
        f"an explicit target for one logit channel: an integer target of shape {shape} next to "
        f"logits of shape {tuple(logits.shape)} is either a binary mask (1 = foreground) or class "
        "indices (0 = the class, 1 = background). For a mask pass "
        f"`target.unsqueeze({cdim}).float()` (the logits' shape) or index_target=False; for class "
        "indices (a single-class detector) pass index_target=True",
        f"an integer tensor of shape {shape} with index_target=None",
    )


def ignore_for(t: Tensor, ignore_index: int | None) -> int | None:
    """``ignore_index`` as a value of ``t``'s dtype, or None when no value of that dtype equals it.

    A comparison in the target's own dtype would wrap the number first (``-1`` is ``255`` in
    uint8, ``255`` is ``-1`` in int8), so a uint8 mask with ``ignore_index=-1`` would silently drop
    its 255s on one route and not on another. Floating targets compare in their own dtype on every
    route (exact for the usual -100, -1, 255; a half-precision target rounds a large
    ``ignore_index`` as it rounds its own values); int64 holds every accepted ``ignore_index``."""
    if ignore_index is None or t.is_floating_point() or t.dtype == torch.int64:
        return ignore_index
    if t.dtype == torch.bool:
        return ignore_index if ignore_index in (0, 1) else None
    info = torch.iinfo(t.dtype)
    return ignore_index if info.min <= ignore_index <= info.max else None


def check_dense_ignore(fn: str, ignore_index: int | None) -> None:
    """``ignore_index`` with a dense target must not be a target value (0 or 1): it would silently
    drop every negative or every positive element. Structural: no value is read."""
    if ignore_index is not None and ignore_index in (0, 1):
        fail(
            fn,
            "ignore_index",
            "a value outside [0, 1] with dense targets (0 and 1 are target values: every "
            f"{'negative' if ignore_index == 0 else 'positive'} element would be ignored); mark "
            "ignored elements with a value such as -1 or 255, or give them a `weight` of 0",
            ignore_index,
        )


def check_sigmoid_target(
    fn: str, logits: Tensor, target: object, *, ignore_index: int | None, check_range: bool = True
) -> tuple[Tensor, bool]:
    """Validate a sigmoid-loss target without building anything the size of the logits.

    Returns ``(target, is_index)``: the target as given (dense, or class indices of any integer
    dtype), and whether it holds class indices. Shapes, dtypes and devices are always checked;
    values (dense targets in ``[0, 1]``, indices in ``[0, C]``) follow the value-check mode.
    """
    t = check_tensor(fn, "target", target)
    _check_device(fn, t, logits, "logits")
    if t.shape == logits.shape:
        if t.is_complex():
            fail(fn, "target", "a real tensor", f"dtype {t.dtype}", TypeError)
        check_dense_ignore(fn, ignore_index)
        if check_range and t.dtype != torch.bool:
            check_unit_interval(fn, "target", t, ignore_value=ignore_for(t, ignore_index))
        return t, False
    cdim = class_dim(logits)
    if logits.ndim >= 1 and tuple(t.shape) == _shape_without(logits.shape, cdim):
        idx = as_index_target(fn, t)
        check_index_range(
            fn, idx, logits.shape[cdim], ignore_index=ignore_index, allow_background=True
        )
        return t, True
    _sigmoid_shape_error(fn, logits, t)


def _sigmoid_shape_error(fn: str, logits: Tensor, t: Tensor) -> NoReturn:
    fail(
        fn,
        "target",
        f"the logits' shape {tuple(logits.shape)} (dense) or "
        f"{_shape_without(logits.shape, class_dim(logits))} (class indices)",
        f"shape {tuple(t.shape)}",
    )


def sigmoid_target(
    fn: str, logits: Tensor, target: object, *, ignore_index: int | None, check_range: bool = True
) -> DenseTarget:
    """Normalise a sigmoid-loss target (dense or class indices) to a ``DenseTarget``."""
    if not isinstance(target, Tensor):
        fail(fn, "target", "a torch.Tensor", type(target).__name__, TypeError)
    t: Tensor = target
    _check_device(fn, t, logits, "logits")
    cdtype = compute_dtype(logits)
    if t.shape == logits.shape:
        if t.is_complex():
            fail(fn, "target", "a real tensor", f"dtype {t.dtype}", TypeError)
        check_dense_ignore(fn, ignore_index)
        ignore_index = ignore_for(t, ignore_index)
        valid = None
        if ignore_index is not None:
            valid = t != ignore_index
            t = torch.where(valid, t, torch.zeros((), dtype=t.dtype, device=t.device))
        dense = as_dtype(t, cdtype)
        checked = check_range and value_checks_on(dense)
        if checked:
            check_unit_interval(fn, "target", dense)
        # An integer target is 0 / 1 (the hard-target forms) only when its values were checked:
        # with value checks off a 2 would otherwise take a form that assumes 0 / 1 (a negative
        # focal loss) where a float 2.0, and the kernels, take the formula.
        binary = t.dtype == torch.bool or (checked and not t.is_floating_point())
        return DenseTarget(dense, valid, None, False, binary)

    cdim = class_dim(logits)
    if logits.ndim >= 1 and tuple(t.shape) == _shape_without(logits.shape, cdim):
        idx = as_index_target(fn, t)
        c = logits.shape[cdim]
        may_ignore = check_index_range(fn, idx, c, ignore_index=ignore_index, allow_background=True)
        if may_ignore is False:
            ignore_index = None  # the values were read: no element equals it, no mask needed
        valid = None
        if ignore_index is not None:
            valid = (idx != ignore_index).unsqueeze(cdim)
        bad = None
        if not value_checks_on(idx):
            out = (idx < 0) | (idx > c)
            if ignore_index is not None:
                out = out & (idx != ignore_index)
            bad = out.unsqueeze(cdim)
        onehot = idx.unsqueeze(cdim) == _class_range(logits, cdim, logits.ndim)
        return DenseTarget(as_dtype(onehot, cdtype), valid, bad, True, True)

    _sigmoid_shape_error(fn, logits, t)


@dataclass(frozen=True)
class SoftmaxTarget:
    """A softmax-loss target.

    Exactly one of ``index`` and ``probs`` is set.

    Attributes:
        index: int64 class indices of the logits' shape without the class dimension; ignored and
            out-of-range positions hold 0 (safe for ``gather``).
        probs: Probability target of the logits' shape, in the compute dtype.
        valid: Bool mask of the index shape (``None`` = everything valid).
        bad: Bool mask of out-of-range indices met while value checks were off, or ``None``.
        cdim: The class dimension of the logits.
        raw: The int64 class indices for PyTorch's own NLL kernels called with
            ``ignore_index=raw_ignore``: ``ignore_index`` positions keep their value, ``bad``
            positions hold ``raw_ignore``, every other value lies in ``[0, C)``.
        raw_ignore: ``ignore_index``, or -100 when it is unset (then only ``bad`` positions hold
            it).
    """

    index: Tensor | None
    probs: Tensor | None
    valid: Tensor | None
    bad: Tensor | None
    cdim: int
    raw: Tensor | None = None
    raw_ignore: int = -100


def _softmax_classes(fn: str, logits: Tensor, input_name: str) -> int:
    if logits.ndim == 0:
        fail(fn, input_name, "a tensor of shape (N, C, *) or (C,)", "a 0-d tensor")
    cdim = class_dim(logits)
    c = logits.shape[cdim]
    if c < 2:
        fail(
            fn,
            input_name,
            "at least 2 classes along dim 1 (a 1-class softmax loss is always 0)",
            f"C={c}",
        )
    return cdim


def _probability_ignore(fn: str, ignore_index: int | None, default_ignore: int | None) -> None:
    if ignore_index is not None and ignore_index != default_ignore:
        fail(
            fn,
            "ignore_index",
            "to be unset with probability targets (it applies to class indices)",
            ignore_index,
        )


def _softmax_shape_error(
    fn: str, logits: Tensor, t: Tensor, index_shape: tuple[int, ...]
) -> NoReturn:
    if t.is_floating_point() and tuple(t.shape) != tuple(logits.shape):
        fail(
            fn,
            "target",
            f"probabilities of the logits' shape {tuple(logits.shape)}",
            f"shape {tuple(t.shape)}",
        )
    fail(
        fn,
        "target",
        f"class indices of shape {index_shape} or probabilities of shape {tuple(logits.shape)}",
        f"shape {tuple(t.shape)} and dtype {t.dtype}",
    )


def check_softmax_target(
    fn: str,
    logits: Tensor,
    target: object,
    *,
    ignore_index: int | None,
    default_ignore: int | None = -100,
    input_name: str = "logits",
) -> tuple[Tensor, bool, int]:
    """Validate a softmax-loss target without building masks: ``(target, is_index, class_dim)``.

    Class indices are returned as given (any integer dtype); values follow the value-check mode.
    """
    t = check_tensor(fn, "target", target)
    _check_device(fn, t, logits, input_name)
    cdim = _softmax_classes(fn, logits, input_name)
    index_shape = _shape_without(logits.shape, cdim)
    if t.is_floating_point() and t.shape == logits.shape:
        _probability_ignore(fn, ignore_index, default_ignore)
        check_unit_interval(fn, "target", t)
        check_distribution(fn, "target", t, cdim)
        return t, False, cdim
    if tuple(t.shape) == index_shape:
        idx = as_index_target(fn, t)
        check_index_range(fn, idx, logits.shape[cdim], ignore_index=ignore_index)
        return t, True, cdim
    _softmax_shape_error(fn, logits, t, index_shape)


def softmax_target(
    fn: str,
    logits: Tensor,
    target: object,
    *,
    ignore_index: int | None,
    default_ignore: int | None = -100,
    input_name: str = "logits",
    in_range: bool = False,
) -> SoftmaxTarget:
    """Normalise a softmax-loss target (class indices or probabilities) to a ``SoftmaxTarget``.

    ``ignore_index`` applies to class-index targets only; passing a non-default value together with
    probability targets raises (PyTorch raises a RuntimeError there). ``in_range``: class
    indices the loss built itself, every one in ``[0, C)`` and none ignored (distribution focal's
    bins): neither read nor clamped.
    """
    t = check_tensor(fn, "target", target)
    _check_device(fn, t, logits, input_name)
    cdim = _softmax_classes(fn, logits, input_name)
    c = logits.shape[cdim]
    index_shape = _shape_without(logits.shape, cdim)

    if t.is_floating_point() and t.shape == logits.shape:
        _probability_ignore(fn, ignore_index, default_ignore)
        probs = as_dtype(t, compute_dtype(logits))
        check_unit_interval(fn, "target", probs)
        check_distribution(fn, "target", probs, cdim)
        return SoftmaxTarget(None, probs, None, None, cdim)

    if tuple(t.shape) == index_shape:
        idx = as_index_target(fn, t)
        if in_range and ignore_index is None:
            return SoftmaxTarget(idx, None, None, None, cdim, raw=idx, raw_ignore=-100)
        may_ignore = check_index_range(fn, idx, c, ignore_index=ignore_index)
        # may_ignore is False when the values were read and none equals ignore_index: no mask.
        mask_ignore = ignore_index if may_ignore is not False else None
        valid = None
        if mask_ignore is not None:
            valid = idx != mask_ignore
        # Clamping into [0, C) makes every index safe for ``gather``: the ignored and the bad
        # positions read some class, and are masked (``valid``) or poisoned (``bad``) later.
        bad = None
        safe = idx
        if not value_checks_on(idx):
            safe = idx.clamp(0, c - 1)
            bad = safe != idx
            if valid is not None:
                bad = bad & valid
        elif valid is not None:
            safe = idx.clamp(0, c - 1)
        raw_ignore = -100 if ignore_index is None else ignore_index
        raw = idx if bad is None else idx.masked_fill(bad, raw_ignore)
        return SoftmaxTarget(safe, None, valid, bad, cdim, raw=raw, raw_ignore=raw_ignore)

    _softmax_shape_error(fn, logits, t, index_shape)


def _index_shape(x: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + tuple(x.shape[2:])


def region_target(
    fn: str, x: Tensor, target: object, activation: str, ignore: int | None
) -> tuple[Tensor, Tensor | None]:
    """A region-loss target as a dense ``(N, C, *)`` float target (ignored and absent entries 0)
    and the valid-pixel mask.

    The mask is ``(N, 1, *)`` for class-index targets (a pixel is ignored in every class) and
    ``(N, C, *)`` for dense targets (element-wise). Out-of-range class indices met while value
    checks are off become NaN in the dense target, so the loss of the affected entries is NaN.
    """
    t = _region_tensor(fn, x, target)
    cdtype = compute_dtype(x)
    if t.shape == x.shape:
        check_dense_ignore(fn, ignore)
        valid = None
        if ignore is not None:
            valid = t != ignore
            t = torch.where(valid, t, torch.zeros((), dtype=t.dtype, device=t.device))
        dense = as_dtype(t, cdtype)
        check_unit_interval(fn, "target", dense)
        return dense, valid
    idx, valid, out = region_index(fn, x, t, activation, ignore)
    c = x.shape[1]
    classes = torch.arange(c, device=x.device).view((1, c) + (1,) * (x.ndim - 2))
    hit = idx == classes
    if valid is not None:
        hit = hit & valid  # ignore_index may be a valid class id
    dense = as_dtype(hit, cdtype)
    if out is not None:
        dense = torch.where(out, torch.full((), float("nan"), dtype=cdtype, device=x.device), dense)
    return dense, valid


def _region_tensor(fn: str, x: Tensor, target: object) -> Tensor:
    t = check_tensor(fn, "target", target)
    if t.device != x.device:
        fail(fn, "target", f"on the device of `logits` ({x.device})", t.device)
    if t.is_complex():
        fail(fn, "target", "a real tensor", f"dtype {t.dtype}", TypeError)
    return t


def region_index(
    fn: str, x: Tensor, target: object, activation: str, ignore: int | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A region-loss target of class indices (the logits' shape without the class dim), checked:
    ``(idx, valid, out)``, the int64 indices as ``(N, 1, *)``, the valid-pixel mask
    (``ignore_index`` given, else ``None``) and, while value checks are off, the mask of valid
    pixels whose index is out of range (``None`` with checks on: out-of-range indices raise)."""
    t = _region_tensor(fn, x, target)
    if tuple(t.shape) != _index_shape(x):
        fail(
            fn,
            "target",
            f"dense targets of the logits' shape {tuple(x.shape)} or class indices of shape "
            f"{_index_shape(x)}",
            f"shape {tuple(t.shape)}",
        )
    c = x.shape[1]
    idx = as_index_target(fn, t)
    background = activation == "sigmoid"
    check_index_range(fn, idx, c, ignore_index=ignore, allow_background=background)
    idx = idx.unsqueeze(1)
    valid = None
    if ignore is not None:
        valid = idx != ignore
    out = None
    if not value_checks_on(idx):
        out = (idx < 0) | (idx > (c if background else c - 1))
        if valid is not None:
            out = out & valid
    return idx, valid, out
