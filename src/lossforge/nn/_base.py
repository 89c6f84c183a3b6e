"""Base class of every lossforge loss module, and the declaration of modules from functionals.

A module is declared from its functional, in one statement (plus its docstring)::

    class SigmoidFocalLoss(Loss, functional=F.sigmoid_focal_loss):
        ...

Everything else follows from the functional's keyword-only signature and its hyperparameter
domains (``lossforge._params``):

* ``__init__`` takes every keyword of the functional except the per-call ``weight`` and
  ``avg_factor``, plus ``loss_weight`` (a scalar multiplier), with the same defaults; the values
  are validated at construction by the same domains the functional validates each call with.
* Tensor options (per-class weights, counts, a per-class ``alpha``, ``pos_weight``) are buffers:
  they follow ``.to()`` and ``state_dict`` and may be given as lists (what TOML and Hydra configs
  produce). An ``nn.Parameter`` option is kept as a parameter (a learned class weight); another
  tensor that requires grad is refused rather than detached. Numbers stay plain attributes.
* ``forward(input, target, weight=None, avg_factor=None, reduction_override=None, **inputs)``
  calls the functional once (``inputs``: per-batch tensors such as a training ``mask``) and
  scales by ``loss_weight``; it writes no state.
* ``extra_repr`` prints the hyperparameters; ``registry_name`` is the functional's stem
  (``sigmoid_focal_loss`` -> ``"sigmoid_focal"``).
* ``traits=Traits(...)`` declares what the command line and the tests need to know (its example
  inputs, plot family, compare task, default sweep): see ``lossforge._traits``.

Third-party losses may subclass ``Loss`` directly (no ``functional=``) and write ``forward``
themselves: they keep ``reduction``, ``loss_weight`` and the ``reduction_override`` helper.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lossforge._buffers import apply_keeping_float32
from lossforge._checks import (
    check_keywords,
    check_number,
    check_reduction,
    fail,
    is_ndarray,
    nested_floats,
)
from lossforge._params import AnyOf, Batch, ClassVector, Domain, Unchecked, signature_domains
from lossforge._traits import Traits

__all__ = ["Loss"]

#: Keywords of a functional that are per-call arguments of ``forward``, not configuration.
CALL_KEYWORDS = ("weight", "avg_factor")


def _class_vector(domain: Domain) -> ClassVector | None:
    if isinstance(domain, ClassVector):
        return domain
    if isinstance(domain, AnyOf):
        for m in domain.members:
            if isinstance(m, ClassVector):
                return m
    return None


def _as_buffer(owner: str, name: str, value: object, *, nested: bool = False) -> Tensor:
    """A tensor option as a float tensor buffer (lists, tuples and OmegaConf ListConfig too).
    Numbers from Python become a CPU tensor, whatever torch's default device: ``_set_option``
    checks their values there (no device read) and then moves the buffer to the default device."""
    if isinstance(value, Tensor):
        tensor = value.detach().clone()
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        try:
            floats = nested_floats(value) if nested else [float(v) for v in value]
            tensor = torch.tensor(floats, device="cpu")
        except (TypeError, ValueError):
            fail(owner, name, "a sequence of numbers or a tensor", repr(value), TypeError)
    else:
        kind = type(value).__name__
        fail(owner, name, "a tensor, a sequence of numbers or None", kind, TypeError)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        fail(owner, name, "a real tensor", f"dtype {tensor.dtype}", TypeError)
    return tensor if tensor.is_floating_point() else tensor.float()


#: A key absent from a dict of defaults (never a configuration value).
_MISSING = object()


class Loss(nn.Module):
    """Base class: ``reduction``, ``loss_weight`` and ``reduction_override`` handling, and the
    declaration of a module from its functional (``class X(Loss, functional=f)``)."""

    #: Key in ``lossforge.registry`` (the functional stem without ``_loss``).
    registry_name: ClassVar[str] = ""
    #: The loss's metadata for the command line and the tests (``lossforge._traits``).
    traits: ClassVar[Traits | None] = None
    #: The functional this module calls (declared modules only).
    functional: ClassVar[Callable[..., Tensor] | None] = None
    #: Configuration keywords in the functional's order (declared modules only).
    config: ClassVar[tuple[str, ...]] = ()
    #: Per-batch tensor keywords ``forward`` passes through (declared modules only).
    inputs: ClassVar[tuple[str, ...]] = ()
    _domains: ClassVar[dict[str, Domain]] = {}
    #: The functional's default objects of its keyword arguments (declared modules only): a
    #: configuration value that is one of them is not passed (the functional uses it anyway).
    _call_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(
        cls,
        functional: Callable[..., Tensor] | None = None,
        name: str | None = None,
        traits: Traits | None = None,
        **kw: Any,
    ) -> None:
        super().__init_subclass__(**kw)
        if traits is not None:
            cls.traits = traits
        if "__init__" in cls.__dict__:
            # a hand-written constructor (stateful modules, third-party losses) gets the same
            # messages for unknown and missing keywords as a declared one
            cls.__init__ = _checked_init(cls.__dict__["__init__"])  # type: ignore[method-assign]
        if functional is None:
            return
        params = inspect.signature(functional).parameters.values()
        keywords = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        domains = dict(signature_domains(functional))
        cls.functional = staticmethod(functional)
        cls._call_defaults = {
            p.name: p.default for p in keywords if p.default is not inspect.Parameter.empty
        }
        cls.registry_name = name or functional.__name__.removesuffix("_loss")
        cls._domains = domains
        cls.inputs = tuple(p.name for p in keywords if isinstance(domains[p.name], Batch))
        cls.config = tuple(
            p.name
            for p in keywords
            if p.name not in CALL_KEYWORDS and p.name not in cls.inputs and p.name != "reduction"
        )
        init_params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        for p in keywords:
            if p.name in CALL_KEYWORDS or p.name in cls.inputs:
                continue
            init_params.append(p)
            if p.name == "reduction":
                init_params.append(
                    inspect.Parameter(
                        "loss_weight", inspect.Parameter.KEYWORD_ONLY, default=1.0, annotation=float
                    )
                )
        signature = inspect.Signature(init_params, return_annotation=None)
        defaults = {
            p.name: p.default for p in init_params[1:] if p.default is not inspect.Parameter.empty
        }

        names = {p.name for p in init_params[1:]}

        def __init__(self: Loss, **kwargs: Any) -> None:  # noqa: N807
            params = init_params[1:]
            if not kwargs.keys() <= names:  # (the subclass's keywords only for the message)
                params = _with_subclass_keywords(self, params)
            _check_keywords(type(self).__name__, params, kwargs)
            values = {**defaults, **kwargs}
            Loss.__init__(
                self, reduction=values.pop("reduction"), loss_weight=values.pop("loss_weight")
            )
            for key in type(self).config:
                self._set_option(key, values[key])
            constraint = getattr(functional, "constraint", None)
            if constraint is not None:
                # on the values as the domains converted them (a 0-d NumPy array a float), as the
                # functional checks them after its domains
                constraint(type(self).__name__, {k: getattr(self, k) for k in type(self).config})

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__doc__ = f"Configure :func:`{functional.__module__}.{functional.__name__}`."
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, *, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        name = type(self).__name__
        self.reduction = check_reduction(name, reduction)
        if is_ndarray(loss_weight) and loss_weight.ndim == 0:  # type: ignore[attr-defined]
            loss_weight = loss_weight.item()  # type: ignore[attr-defined]  # (as gamma takes it)
        self.loss_weight = check_number(name, "loss_weight", loss_weight)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Loss:
        # .half() / .bfloat16(): class weights, counts and running state keep float32
        # (``lossforge._buffers``): fp16 counts above 65504 were inf, bf16 ones rounded
        apply_keeping_float32(self, lambda: super(Loss, self)._apply(fn, recurse))
        return self

    def _set_option(self, key: str, value: object) -> None:
        """Validate one configuration value by its domain; tensor options become buffers."""
        owner = type(self).__name__
        domain = self._domains[key]
        vector = _class_vector(domain)
        if vector is not None and is_ndarray(value):
            # NumPy (sklearn's compute_class_weight returns an array): a sequence of numbers
            value = value.item() if value.ndim == 0 else value.tolist()  # type: ignore[attr-defined]
        is_tensorish = isinstance(value, Tensor) or (
            isinstance(value, Sequence) and not isinstance(value, (str, bytes))
        )
        if (
            vector is not None
            and not is_tensorish
            and value is not None
            and not (isinstance(domain, AnyOf) and domain.accepts(value))
        ):
            fail(owner, key, "a tensor, a sequence of numbers or None", repr(value), TypeError)
        if vector is not None and isinstance(value, Tensor) and value.requires_grad:
            # A learned option stays learned: a parameter, never silently detached into a buffer.
            if not isinstance(value, nn.Parameter):
                fail(
                    owner,
                    key,
                    "an nn.Parameter (a learned option, registered as a parameter) or a tensor "
                    "that does not require grad (a buffer)",
                    "a tensor that requires grad",
                )
            vector.check_buffer(owner, key, value.detach())
            self.register_parameter(key, value)
            return
        if vector is not None and is_tensorish:
            buffer = _as_buffer(owner, key, value, nested=vector.ndim is None)
            vector.check_buffer(owner, key, buffer)
            if not isinstance(value, Tensor):
                # host numbers, checked on the CPU above: placed as torch places a new tensor
                # (``with torch.device(...)``, ``torch.set_default_device``)
                buffer = buffer.to(torch.get_default_device())
            self.register_buffer(key, buffer)
            return
        if vector is not None and value is None and not _has_scalar_member(domain):
            self.register_buffer(key, None)
            return
        if not isinstance(domain, Unchecked):
            value = domain.check(owner, key, value)
        setattr(self, key, value)

    def _config(self) -> dict[str, Any]:
        """The configuration keywords' current values (read on every call: an attribute set after
        construction applies), except those that are the functional's own default objects (it
        uses them when they are not passed: a shorter call). Looked up in the instance's dicts
        directly, as ``getattr`` would find them, without ``nn.Module.__getattr__``'s slow path
        for buffers and parameters."""
        d = self.__dict__
        buffers, parameters = d["_buffers"], d["_parameters"]
        defaults = type(self)._call_defaults
        missing = _MISSING
        out: dict[str, Any] = {}
        for key in type(self).config:
            if key in d:
                value = d[key]
            elif key in buffers:
                value = buffers[key]
            elif key in parameters:
                value = parameters[key]
            else:
                value = getattr(self, key)  # a property of a subclass
            if value is not defaults.get(key, missing):
                out[key] = value
        return out

    def _resolve_reduction(self, reduction_override: str | None) -> str:
        if reduction_override is None:
            return self.reduction
        return check_reduction(type(self).__name__, reduction_override, name="reduction_override")

    def _scale(self, loss: Tensor) -> Tensor:
        return loss if self.loss_weight == 1.0 else loss * self.loss_weight

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: str | None = None,
        **inputs: Tensor | None,
    ) -> Tensor:
        """The functional on ``(input, target)`` with this module's configuration."""
        fn = type(self).functional
        if fn is None:
            fail(
                type(self).__name__,
                "forward",
                "a method of the subclass (or a declaration: class X(Loss, functional=f))",
                "none",
                TypeError,
            )
        unknown = set(inputs) - set(type(self).inputs) if inputs else None
        if unknown:
            fail(
                type(self).__name__,
                "forward keywords",
                "weight, avg_factor, reduction_override"
                + "".join(f", {k}" for k in type(self).inputs),
                ", ".join(sorted(unknown)),
                TypeError,
            )
        kwargs = self._config()
        if inputs:
            kwargs.update(inputs)
        # (None is the functional's default of both: not passed, a shorter call)
        if weight is not None:
            kwargs["weight"] = weight
        if avg_factor is not None:
            kwargs["avg_factor"] = avg_factor
        kwargs["reduction"] = self._resolve_reduction(reduction_override)
        return self._scale(fn(input, target, **kwargs))

    def extra_repr(self) -> str:
        parts = []
        for key in type(self).config:
            value = getattr(self, key)
            if isinstance(value, Tensor):
                parts.append(f"{key}={_tensor_repr(value)}")
            else:
                parts.append(f"{key}={value!r}")
        parts.append(f"reduction={self.reduction!r}")
        if self.loss_weight != 1.0:
            parts.append(f"loss_weight={self.loss_weight!r}")
        return ", ".join(parts)


def _tensor_repr(value: Tensor) -> str:
    """A tensor option in a module's repr: its values up to 8 (a float32 one as the shortest
    decimal that rounds to it, ``0.1`` rather than ``0.10000000149011612``), else its shape."""
    if value.numel() > 8 or value.device.type == "meta":  # (meta: no values to print)
        return f"tensor(shape={tuple(value.shape)})"
    values = value.detach().cpu().tolist()
    if value.dtype in (torch.float16, torch.bfloat16, torch.float32):
        values = _shortest(values, value.dtype)
    return repr(values)


def _shortest(values: Any, dtype: torch.dtype) -> Any:
    """Each float as the shortest decimal that rounds to it in ``dtype`` (nested lists kept)."""
    if isinstance(values, list):
        return [_shortest(v, dtype) for v in values]
    if not isinstance(values, float) or not math.isfinite(values):
        return values
    for digits in range(1, 10):
        short = float(f"{values:.{digits}g}")
        if torch.tensor(short, dtype=dtype, device="cpu").item() == values:  # (any default device)
            return short
    return values


def _check_keywords(
    owner: str, params: Sequence[inspect.Parameter], kwargs: dict[str, Any]
) -> None:
    """Unknown and missing constructor keywords, in the library's message template (naming the
    class the user built, not Python's anonymous ``bind`` error)."""
    check_keywords(owner, params, kwargs)


def _with_subclass_keywords(
    module: Loss, params: list[inspect.Parameter]
) -> list[inspect.Parameter]:
    """``params`` and, for a subclass whose own ``__init__`` takes keywords and forwards the rest
    (``def __init__(self, *, scale=2.0, **kw)``), that ``__init__``'s named keywords too: an
    unknown keyword's message lists (and suggests) every keyword the user could have meant. They
    are listed as optional (the subclass's own ``__init__`` has taken them already)."""
    try:
        own = list(inspect.signature(type(module).__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return params
    names = {p.name for p in params}
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    extra = [
        p if p.default is not inspect.Parameter.empty else p.replace(default=None)
        for p in own
        if p.kind in kinds and p.name not in names
    ]
    return [*extra, *params] if extra else params


def _checked_init(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` with its keywords checked first by ``_check_keywords`` (the declared modules'
    messages: the class and the unknown keyword, with the closest names), unless it takes
    ``**kwargs`` or positional arguments are given (then Python's own binding applies)."""
    params = list(inspect.signature(init).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return init

    @functools.wraps(init)
    def checked(self: Loss, *args: Any, **kwargs: Any) -> None:
        if not args:
            _check_keywords(type(self).__name__, params, kwargs)
        init(self, *args, **kwargs)

    return checked


def _has_scalar_member(domain: Domain) -> bool:
    return isinstance(domain, AnyOf) and any(not isinstance(m, ClassVector) for m in domain.members)
