"""Input validation shared by every loss.

Two kinds of checks live here:

* **Structural checks** (types, dtypes, shapes, devices, option values) look only at metadata. They
  cost nothing on the device and always run.
* **Value checks** (class indices in range, probabilities in ``[0, 1]``, ...) must read tensor
  values, which is a device-to-host synchronisation on CUDA and a graph break under
  ``torch.compile``. They run according to ``set_value_checks``:

  - ``None`` (the default, "auto"): run when the tensors live on the CPU (where reading them is
    free) and the code is not being traced by ``torch.compile``; skipped on accelerators.
  - ``True``: always run (debugging; syncs on CUDA).
  - ``False``: never run.

  The mode belongs to the current thread and asyncio task (a ``contextvars.ContextVar``):
  ``value_checks(mode)`` and ``set_value_checks(mode)`` never change it for other threads. The
  environment variable ``LOSSFORGE_CHECKS`` gives the default of every context that has not set
  one (``1``/``true``/``on``/``yes``, ``0``/``false``/``off``/``no``, ``auto`` or empty); any other
  value raises a ``ValueError`` at the first value-check decision that reads it. When value
  checks are skipped, invalid class indices never reach an indexing kernel (no device-side assert):
  they are clamped for the lookup and the affected loss elements are set to NaN, so a bad batch is
  loud, not silently wrong.

Every error uses one template: ``"<function>: expected `<argument>` <what>, got <what came>"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import torch
from torch import Tensor

__all__ = [
    "OptionalDependencyError",
    "set_value_checks",
    "value_checks",
    "value_checks_enabled",
]

REDUCTIONS = ("none", "mean", "sum")


class OptionalDependencyError(ImportError):
    """Raised at use time when an optional extra (``lossforge[triton]``, ``[cli]``, ...) is
    missing."""


# --------------------------------------------------------------------------------------------------
# Value-check mode: per thread and asyncio task, LOSSFORGE_CHECKS as the default.
# --------------------------------------------------------------------------------------------------

_ENV = "LOSSFORGE_CHECKS"
_ENV_VALUES: dict[str, bool | None] = {
    **dict.fromkeys(("1", "true", "on", "yes"), True),
    **dict.fromkeys(("0", "false", "off", "no"), False),
    **dict.fromkeys(("", "auto"), None),
}
_UNSET: Any = object()  # no set_value_checks in this context: the environment's default applies
_env_default: list[bool | None | ValueError] = []  # parsed once, at the first use


class _Frame:
    """One active ``value_checks`` block; its identity is its token."""

    __slots__ = ("mode",)

    def __init__(self, mode: bool | None) -> None:
        self.mode = mode


# (set_value_checks' mode or _UNSET, the active value_checks blocks, innermost last). Immutable:
# a context only ever replaces it, so a copied context (new asyncio task) cannot change the
# original's.
_State = tuple[Any, tuple[_Frame, ...]]
_STATE: contextvars.ContextVar[_State] = contextvars.ContextVar(
    "lossforge_value_checks", default=(_UNSET, ())
)


def _parse_env(raw: str) -> bool | None:
    """The mode ``LOSSFORGE_CHECKS=raw`` asks for; ``ValueError`` for anything else."""
    key = raw.strip().lower()
    if key not in _ENV_VALUES:
        raise ValueError(
            f"{_ENV}: expected 1, true, on or yes (always check), 0, false, off or no (never), "
            f"auto or empty (CPU tensors only), got {raw!r}"
        )
    return _ENV_VALUES[key]


def _env_mode() -> bool | None:
    if not _env_default:
        try:
            _env_default.append(_parse_env(os.environ.get(_ENV, "")))
        except ValueError as err:
            _env_default.append(err)
    value = _env_default[0]
    if isinstance(value, ValueError):
        raise ValueError(str(value))
    return value


def _mode() -> bool | None:
    base, frames = _STATE.get()
    if frames:
        return frames[-1].mode
    return _env_mode() if base is _UNSET else base


def _check_mode(fn: str, mode: object) -> bool | None:
    if mode is not None and not isinstance(mode, bool):
        raise TypeError(f"{fn}: expected `mode` True, False or None, got {mode!r}")
    return mode


def set_value_checks(mode: bool | None) -> None:
    """Set when value checks (the ones that read tensor values) run, in the current context.

    The mode is per thread and per asyncio task: calling this in one thread does not change it in
    another (each thread starts from ``LOSSFORGE_CHECKS``), and an asyncio task starts from the
    mode of the code that created it. Inside a ``with value_checks(...)`` block the block's mode
    wins until the block ends; this sets the mode that applies outside any block.

    Args:
        mode: ``True`` always, ``False`` never, ``None`` automatic (CPU tensors outside
            ``torch.compile`` only). Structural checks (shapes, dtypes, options) always run.
    """
    mode = _check_mode("set_value_checks", mode)
    _, frames = _STATE.get()
    _STATE.set((mode, frames))


def value_checks(mode: bool | None) -> contextlib.AbstractContextManager[None]:
    """Run the block with value checks in ``mode`` (``True``, ``False`` or ``None``), in this
    thread or asyncio task only.

    Blocks nest, and they may also end out of order (two generators, each inside its own block,
    resumed alternately): each block removes only its own setting, and the innermost block still
    active decides. When the last block ends, the mode is what it was before the first. A block
    must end in the thread or task where it began; ending it elsewhere warns and leaves the
    beginning context's setting in place until that context ends. Also usable as a decorator.
    """
    return _value_checks_block(_check_mode("value_checks", mode))


@contextlib.contextmanager
def _value_checks_block(mode: bool | None) -> Iterator[None]:
    frame = _Frame(mode)  # the block's token: its exit removes exactly this entry
    base, frames = _STATE.get()
    _STATE.set((base, (*frames, frame)))
    try:
        yield
    finally:
        base, frames = _STATE.get()
        if frame in frames:
            _STATE.set((base, tuple(f for f in frames if f is not frame)))
        else:
            warnings.warn(
                "lossforge.value_checks: the block ended in another thread or asyncio task than "
                "the one it began in; its mode stays set there",
                RuntimeWarning,
                stacklevel=3,
            )


def value_checks_enabled(*tensors: Tensor | None) -> bool:
    """Whether value checks should run for these tensors under the current mode.

    Always ``False`` while ``torch.compile`` traces (checked first, so tracing never reads the
    context variable and never breaks the graph).
    """
    if torch.compiler.is_compiling():
        return False
    return _enabled_for(tensors)


def _enabled_for(tensors: tuple[Tensor | None, ...]) -> bool:
    # ``_mode`` inlined: this runs on every call of every loss, and on the CPU its cost is paid
    # again in the cache misses of the kernels around it.
    base, frames = _STATE.get()
    mode = frames[-1].mode if frames else (_env_mode() if base is _UNSET else base)
    if mode is False:
        return False
    if mode is True:
        return True
    for t in tensors:  # noqa: SIM110 (a plain loop over ``is_cpu``: this runs several times per call)
        if t is not None and not t.is_cpu:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Structural checks: always on, no device sync.
# --------------------------------------------------------------------------------------------------


def fail(
    fn: str, name: str, expected: str, got: object, exc: type[Exception] = ValueError
) -> NoReturn:
    """Raise ``exc`` with the library's single message template."""
    raise exc(f"{fn}: expected `{name}` {expected}, got {got}")


def check_keywords(owner: str, params: Sequence[Any], kwargs: Any) -> None:
    """Unknown and missing keywords of a call of ``owner`` (``params``: its
    ``inspect.Parameter`` s), in the library's template instead of Python's anonymous binding
    error: the unknown keyword with the closest names, or the first required one missing."""
    import difflib
    import inspect

    names = [p.name for p in params]
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=2, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        fail(
            owner,
            "keywords",
            f"keywords of {owner}: " + ", ".join(names),
            "unknown " + ", ".join(repr(k) for k in unknown) + hint,
            TypeError,
        )
    for p in params:
        if p.default is inspect.Parameter.empty and p.name not in kwargs:
            fail_missing(owner, p.name)


def fail_missing(owner: str, name: str) -> NoReturn:
    """A required constructor parameter that was not given (a loss module, or a composite that
    ``build_loss`` builds): ``TypeError`` in the template."""
    fail(owner, name, "a value (it has no default)", "none", TypeError)


def check_tensor(fn: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        fail(fn, name, "to be a torch.Tensor", type(x).__name__, TypeError)
    return x


#: What ``check_floating`` accepts of infinite values (a value check, like NaN):
#:
#: * ``"allow"``: anything (predictions of a regression, probabilities checked elsewhere, logits
#:   of an activation with a limit at +-inf such as the sigmoid of dice);
#: * ``"finite"``: no infinity (the logits of the sigmoid-family losses, whose formulas multiply a
#:   target weight by an infinite log term there);
#: * ``"masked"``: ``-inf`` (a class masked out of a softmax, a log-probability of 0) but not a
#:   whole row of it along ``class_dim`` (no class left: 0/0) and no ``+inf`` (no softmax).
INFINITE_RULES = ("allow", "finite", "masked")


def check_floating(
    fn: str,
    name: str,
    x: object,
    *,
    infinite: str = "allow",
    class_dim: int | None = None,
    finite_why: str | None = None,
    values: bool = True,
) -> Tensor:
    """A floating-point tensor (the predictions of every loss), without NaN, and with infinite
    values only as the rule ``infinite`` (``INFINITE_RULES``) allows.

    The value checks follow the value-check mode; with checks off a NaN propagates to the loss (it
    is never masked into a finite value) and infinite values are computed with as they are
    (``docs/contract.md``, "Infinite values"). ``finite_why`` replaces the explanation of the
    ``"finite"`` rule in its message (the default speaks of logits). ``values=False`` runs the
    structural checks only (a caller that reads the values another way first).
    """
    t = check_tensor(fn, name, x)
    if not t.is_floating_point():
        fail(fn, name, "to be a floating-point tensor", f"dtype {t.dtype}", TypeError)
    if values and t.numel() and value_checks_on(t):
        # One summing pass (5x cheaper than aminmax on the CPU): a NaN or an infinity anywhere
        # makes the sum non-finite. Overflow can too, so it is only a filter; exact counts decide.
        # Half inputs are summed in float32 (no false alarm from fp16 overflow).
        t0 = t.detach()
        if not math.isfinite(float(t0.sum(dtype=compute_dtype(t0)))):
            n_nan = int(torch.isnan(t0).sum())
            if n_nan:
                fail(fn, name, "no NaN values", f"{n_nan} NaN of {t.numel()}")
            if infinite != "allow":
                _check_infinite(fn, name, t0, infinite, class_dim, finite_why)
    return t


_LOGITS_FINITE_WHY = (
    "the loss has no value at an infinite logit on one side and would be NaN on the other; leave "
    "elements out with `weight` 0 or `ignore_index`"
)


def _check_infinite(
    fn: str, name: str, t0: Tensor, rule: str, class_dim: int | None, why: str | None = None
) -> None:
    n = t0.numel()
    if rule == "finite":
        n_inf = int(torch.isinf(t0).sum())
        if n_inf:
            fail(
                fn, name, f"finite values ({why or _LOGITS_FINITE_WHY})", f"{n_inf} infinite of {n}"
            )
        return
    n_pos = int((t0 == float("inf")).sum())
    if n_pos:
        fail(fn, name, "no +inf values (a softmax over +inf is undefined)", f"{n_pos} +inf of {n}")
    if class_dim is not None:
        rows = (t0 == float("-inf")).all(dim=class_dim)
        n_rows = int(rows.sum())
        if n_rows:
            fail(
                fn,
                name,
                f"at least one class above -inf in every position (dim {class_dim}); a position "
                "with every class masked has no softmax (give it a finite logit and ignore it "
                "with `ignore_index` or `weight` 0)",
                f"{n_rows} of {rows.numel()} positions with every class at -inf",
            )


def check_same_device(fn: str, **tensors: Tensor | None) -> None:
    items = [(k, v) for k, v in tensors.items() if isinstance(v, Tensor)]
    if not items:
        return
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            fail(fn, name, f"on the same device as `{first_name}` ({first.device})", t.device)


def check_same_shape(fn: str, name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.shape != ref.shape:
        fail(fn, name, f"to have the shape of `{ref_name}` {tuple(ref.shape)}", tuple(x.shape))


def is_ndarray(value: object) -> bool:
    """Whether ``value`` is a NumPy array (without importing NumPy: none is needed otherwise)."""
    return type(value).__name__ == "ndarray" and type(value).__module__ == "numpy"


def host_vector(
    fn: str,
    name: str,
    values: object,
    like: Tensor,
    *,
    items: str,
    kinds: str,
    nested: bool = False,
) -> Tensor:
    """A list, tuple or NumPy array of numbers as a CPU tensor in ``like``'s compute dtype (a
    float64 input gets float64 values, not float32-rounded ones). ``TypeError``: ``items`` for
    a sequence of anything else, ``kinds`` for a value that is no sequence (the caller has
    handled tensors and numbers before). ``nested``: nested sequences of equal lengths too (an
    option of any shape, such as a ``(C, 1, 1)`` ``pos_weight`` written in TOML)."""
    if is_ndarray(values):
        if values.dtype.kind not in "iuf":  # type: ignore[attr-defined]
            fail(fn, name, "a real array", f"dtype {values.dtype}", TypeError)  # type: ignore[attr-defined]
        values = values.tolist()  # type: ignore[attr-defined]
    if not isinstance(values, (list, tuple)):
        fail(fn, name, kinds, type(values).__name__, TypeError)
    try:
        floats = nested_floats(values) if nested else [float(v) for v in values]
        return torch.tensor(floats, dtype=compute_dtype(like))
    except (TypeError, ValueError):
        fail(fn, name, items, repr(values), TypeError)


def nested_floats(values: object) -> Any:
    """``values``, a number or (nested) lists / tuples of numbers, with every number a float;
    ``TypeError`` for anything else (a bool, a string, a dict). ``torch.tensor`` then refuses
    ragged nesting with a ``ValueError``."""
    if isinstance(values, (list, tuple)):
        return [nested_floats(v) for v in values]
    if isinstance(values, bool) or not isinstance(values, numbers.Real):
        raise TypeError(f"not a number: {values!r}")
    return float(values)


def check_reduction(fn: str, reduction: object, name: str = "reduction") -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        fail(fn, name, "one of 'none', 'mean', 'sum'", repr(reduction))
    return str(reduction)  # (a str subclass such as NumPy's str_ becomes the plain string)


def check_number(
    fn: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (bools rejected) inside the given interval.

    Only comparisons read the value (no ``math.isfinite``): under ``torch.compile`` a float
    argument may be symbolic (``dynamic=True``, or dynamo's automatic dynamic floats), and
    comparisons keep it so, guarded, instead of breaking the graph or specialising on the value.
    """
    if type(value) is not float and (  # (exact floats skip the ABC checks: every call runs this)
        isinstance(value, bool) or not isinstance(value, numbers.Real)
    ):
        fail(fn, name, "a real number", repr(value), TypeError)
    v = float(value)
    if not is_finite(v):
        fail(fn, name, "a finite number", v)
    lo_ok = low is None or (v > low if low_open else v >= low)
    hi_ok = high is None or (v < high if high_open else v <= high)
    if not (lo_ok and hi_ok):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        fail(fn, name, f"in {left}{lo}, {hi}{right}", v)
    return v


def is_finite(v: float) -> bool:
    """``math.isfinite`` by comparisons, so a symbolic float stays symbolic under compile."""
    return -math.inf < v < math.inf  # False for NaN too


def check_int(fn: str, name: str, value: object, *, low: int | None = None) -> int:
    if type(value) is not int and (  # (exact ints skip the ABC checks)
        isinstance(value, bool) or not isinstance(value, numbers.Integral)
    ):
        fail(fn, name, "an integer", repr(value), TypeError)
    v = int(value)
    if not -(2**63) <= v < 2**63:
        # every integer option meets an int64 tensor or kernel argument (ignore_index, bins, ...)
        fail(fn, name, "an integer in the int64 range [-2**63, 2**63 - 1]", v)
    if low is not None and v < low:
        fail(fn, name, f">= {low}", v)
    return v


def check_optional_int(fn: str, name: str, value: object) -> int | None:
    return None if value is None else check_int(fn, name, value)


def check_bool(fn: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        fail(fn, name, "a bool", repr(value), TypeError)
    return value


def check_choice(fn: str, name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        fail(fn, name, "one of " + ", ".join(repr(c) for c in choices), repr(value))
    return str(value)


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def as_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x.to(dtype)``, without the call when ``x`` already has it (``Tensor.to`` parses its
    arguments even then: a few microseconds on every loss call)."""
    return x if x.dtype == dtype else x.to(dtype)


def in_compute_dtype(x: Tensor) -> Tensor:
    """``x`` in its compute dtype (``compute_dtype``), without a call when it already is."""
    return as_dtype(x, compute_dtype(x))


def as_index_target(fn: str, target: object, name: str = "target") -> Tensor:
    """Class-index targets: any integer dtype, returned as int64. Float/bool raise ``TypeError``."""
    t = check_tensor(fn, name, target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        fail(fn, name, "an integer tensor of class indices", f"dtype {t.dtype}", TypeError)
    return t.long() if t.dtype != torch.int64 else t


def as_float_target(fn: str, target: object, like: Tensor, name: str = "target") -> Tensor:
    """Dense targets for element-wise losses: bool/int cast to the compute dtype."""
    t = check_tensor(fn, name, target)
    if t.is_complex():
        fail(fn, name, "a real tensor", f"dtype {t.dtype}", TypeError)
    return t.to(compute_dtype(like))


def as_class_weight(
    fn: str, class_weight: object, num_classes: int, like: Tensor, name: str = "class_weight"
) -> Tensor | None:
    """A per-class weight vector of length C (list, tuple or tensor), non-negative.

    Returned in the compute dtype on ``like``'s device. The non-negativity check reads values and
    therefore follows the value-check mode (it is free for lists and CPU tensors).
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, Tensor):
        w = class_weight
    else:
        w = host_vector(
            fn,
            name,
            class_weight,
            like,
            items="a sequence of numbers",
            kinds="a 1-d tensor or a sequence of numbers",
        )
    if w.is_complex() or w.dtype == torch.bool:
        fail(fn, name, "a real tensor", f"dtype {w.dtype}", TypeError)
    if w.ndim != 1 or w.shape[0] != num_classes:
        fail(fn, name, f"a 1-d tensor of length C={num_classes}", f"shape {tuple(w.shape)}")
    if isinstance(class_weight, Tensor) and w.device != like.device:
        fail(fn, name, f"on the device of the input ({like.device})", w.device)
    w = w.to(device=like.device, dtype=compute_dtype(like))
    if value_checks_on(w):
        if not bool(torch.isfinite(w).all()):
            fail(fn, name, "finite values", w.tolist())
        if bool((w < 0).any()):
            fail(fn, name, "non-negative values", w.tolist())
    return w


# --------------------------------------------------------------------------------------------------
# Value checks: follow the value-check mode.
# --------------------------------------------------------------------------------------------------


def value_checks_on(*tensors: Tensor | None) -> bool:
    """Whether value checks read these tensors now: ``value_checks_enabled``, and never under a
    ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ``jacfwd``), where tensors are
    wrapped and reading a value is data-dependent control flow (as under ``torch.compile``).
    With checks skipped, invalid values are poisoned to NaN exactly as with checks off."""
    if torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling():
        return False
    return _enabled_for(tensors)


def refuse_state_update_under_transforms(owner: str, state: str) -> None:
    """A stateful module's training-mode update of the buffer ``state`` cannot run under a
    ``torch.func`` transform: ``grad`` / ``jacrev`` / ``jacfwd`` refuse to write a tensor the
    function did not take as an input, and under ``vmap`` every vmapped call would write its own
    value into one shared buffer (the loop it stands for would update it once per sample, in
    order). Raise saying so, before anything is written."""
    if torch._C._are_functorch_transforms_active():
        fail(
            owner,
            "the module",
            "eval mode under torch.func transforms (vmap, grad, jacrev, jacfwd): training mode "
            f"updates the buffer `{state}` from each call, which a transformed call cannot do "
            "for one shared buffer; call .eval() inside the transform and update "
            f"`{state}` from the whole batch outside it",
            "training mode",
            RuntimeError,
        )


def check_index_range(
    fn: str,
    target: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None,
    allow_background: bool = False,
    name: str = "target",
) -> bool | None:
    """Class indices in ``[0, C)`` (``[0, C]`` with a background class), or equal to
    ``ignore_index``.

    Returns whether ``ignore_index`` can occur in ``target`` as learnt from the values read:
    ``False`` when it provably does not (every value lies in a range that excludes it, so callers
    can skip building an ignore mask), ``True`` when it may, ``None`` when no value was read
    (value checks off, or an empty target).
    """
    if target.numel() == 0 or not value_checks_on(target):
        return None
    high = num_classes if allow_background else num_classes - 1
    # The common cases in one or two passes, without compacting the valid entries.
    lo_all, hi_all = (int(v) for v in torch.aminmax(target))
    if lo_all >= 0 and hi_all <= high:
        return ignore_index is not None and lo_all <= ignore_index <= hi_all
    if ignore_index is None:
        valid = target
    else:
        lo_all, hi_all = (
            int(v) for v in torch.aminmax(torch.where(target == ignore_index, 0, target))
        )
        if lo_all >= 0 and hi_all <= high:
            return True
        valid = target[target != ignore_index]
    if valid.numel() == 0:
        return True
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi > high:
        extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        bg = " (C = background)" if allow_background else ""
        fail(fn, name, f"class indices in [0, {high}]{bg}{extra}", f"values in [{lo}, {hi}]")
    return True


#: The bits of 1.0 in each floating dtype and the signed integer type of its width. For an IEEE
#: float whose sign bit is clear, the order of the bit patterns read as integers is the order of
#: the values, +inf and NaN (exponent all ones) above every finite value; a set sign bit reads as
#: a negative integer.
_ONE_BITS = {
    torch.float32: (torch.int32, 0x3F80_0000),
    torch.float64: (torch.int64, 0x3FF0_0000_0000_0000),
    torch.float16: (torch.int16, 0x3C00),
    torch.bfloat16: (torch.int16, 0x3F80),
}


def _unit_bits_clean(v: Tensor) -> bool:
    """Whether every value of ``v`` is certainly in ``[+0, 1]``: its bit patterns, read as signed
    integers of the same width (a view, no copy), lie in ``[0, bits(1.0)]``. Integer ``aminmax``
    is about 1.7x faster than the floating one on the CPU, which also tracks NaN. ``False``
    proves nothing (``-0.0`` reads as a negative integer, and dtypes without an entry are not
    tried): the floating check then decides."""
    bits = _ONE_BITS.get(v.dtype)
    if bits is None or v.numel() == 0:
        return False
    lo, hi = torch.aminmax(v.view(bits[0]))
    return int(lo) >= 0 and int(hi) <= bits[1]


def check_unit_interval(
    fn: str, name: str, x: Tensor, *, ignore_value: float | None = None
) -> None:
    """Values in ``[0, 1]`` (probabilities or soft targets); NaN is reported too."""
    if x.numel() == 0 or not value_checks_on(x):
        return
    x = x.detach()
    v = x if ignore_value is None else x[x != ignore_value]
    if v.numel() == 0:
        return
    if _unit_bits_clean(v):
        return
    lo, hi = torch.aminmax(v)  # one pass; NaN propagates and fails both comparisons
    if not (float(lo) >= 0.0 and float(hi) <= 1.0):
        bad = (v < 0) | (v > 1) | torch.isnan(v)
        fail(
            fn,
            name,
            "values in [0, 1]",
            f"{int(bad.sum())} values outside, e.g. {float(v[bad][0])}",
        )


def check_distribution(fn: str, name: str, t: Tensor, class_dim: int) -> None:
    """Probability targets: every position sums to 1 over ``class_dim``, within ``1e-3 * C``
    (RELIABILITY.md; values in ``[0, 1]`` are checked separately)."""
    if t.numel() == 0 or not value_checks_on(t):
        return
    c = t.shape[class_dim]
    tol = 1e-3 * c
    off = (t.detach().sum(dim=class_dim, dtype=compute_dtype(t)) - 1.0).abs()
    if not bool(off.max() <= tol):
        bad = ~(off <= tol)
        first = float(off[bad].flatten()[0]) + 1.0
        fail(
            fn,
            name,
            f"probabilities summing to 1 over the classes (dim {class_dim}, tolerance {tol:g})",
            f"{int(bad.sum())} of {off.numel()} positions off, e.g. one summing to {first:.6g}",
        )


def poison_out_of_range(loss: Tensor, bad: Tensor | None) -> Tensor:
    """Set loss elements to NaN where the input was invalid (used when value checks are off)."""
    if bad is None:
        return loss
    return loss.masked_fill(bad, float("nan"))
