"""Hyperparameter domains, declared once in each loss function's signature.

A loss states what each keyword argument may be in its annotation, and nowhere else::

    def sigmoid_focal_loss(logits, target, *, alpha: Probability | None = 0.25,
                           gamma: NonNegative = 2.0, ...)

``@loss_function`` validates the keyword arguments of every call against those annotations
(``ValueError`` / ``TypeError`` with the library's message template), and ``lossforge.nn`` builds a
module's constructor from the same annotations, so the functional and the module can never accept
different values. Plain annotations are domains too: ``float`` is any finite real number, ``int``
an integer, ``bool`` a bool, ``Literal[...]`` a choice, ``X | None`` adds ``None``.

Tensor-valued options whose length depends on the input (``class_weight``, per-class ``alpha``,
``class_counts``) are declared with :data:`ClassValues`-style domains: the module registers them as
buffers and checks their values at construction, the pipeline checks their length against ``C`` at
call time. Per-batch tensors that are not configuration (a training ``mask``) are declared with
:data:`BatchTensor`: modules take them as ``forward`` keywords.
"""

from __future__ import annotations

import functools
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, ParamSpec, TypeVar, Union

import torch
from torch import Tensor

from lossforge._checks import (
    check_bool,
    check_choice,
    check_int,
    check_keywords,
    check_number,
    fail,
    is_ndarray,
)

__all__ = [
    "BatchTensor",
    "ClassProbabilities",
    "ClassValues",
    "Count",
    "Domain",
    "NonNegative",
    "Positive",
    "Probability",
    "UnitInterval",
    "Weights",
    "loss_function",
    "signature_domains",
]

P = ParamSpec("P")
R = TypeVar("R")


class Domain:
    """What one argument may be. ``check`` returns the (coerced) value or raises."""

    #: Human description for error messages of unions ("a float", "a per-class sequence").
    noun = "a value"

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is of the kind this domain checks (used to dispatch unions)."""
        return True

    def check(self, owner: str, name: str, value: object) -> Any:
        return value


@dataclass(frozen=True)
class Number(Domain):
    """A finite real number (bools rejected) in an interval; returned as ``float``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    noun = "a float"

    def accepts(self, value: object) -> bool:
        t = type(value)
        return (
            t is float
            or t is int
            or (isinstance(value, numbers.Real) and t is not bool)
            or (is_ndarray(value) and value.ndim == 0)  # type: ignore[attr-defined]
        )

    def check(self, owner: str, name: str, value: object) -> float:
        if is_ndarray(value) and value.ndim == 0:  # type: ignore[attr-defined]
            value = value.item()  # type: ignore[attr-defined]  # a NumPy scalar array
        return check_number(
            owner,
            name,
            value,
            low=self.low,
            high=self.high,
            low_open=self.low_open,
            high_open=self.high_open,
        )


@dataclass(frozen=True)
class Integer(Domain):
    """An integer (bools rejected), at least ``low``; returned as ``int``."""

    low: int | None = None
    noun = "an integer"

    def accepts(self, value: object) -> bool:
        t = type(value)
        return t is int or (isinstance(value, numbers.Integral) and t is not bool)

    def check(self, owner: str, name: str, value: object) -> int:
        return check_int(owner, name, value, low=self.low)


@dataclass(frozen=True)
class Flag(Domain):
    noun = "a bool"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)

    def check(self, owner: str, name: str, value: object) -> bool:
        return check_bool(owner, name, value)


@dataclass(frozen=True)
class Choice(Domain):
    choices: tuple[Any, ...] = ()
    noun = "a choice"

    def accepts(self, value: object) -> bool:
        return isinstance(value, str)

    def check(self, owner: str, name: str, value: object) -> Any:
        return check_choice(owner, name, value, self.choices)


@dataclass(frozen=True)
class ClassVector(Domain):
    """A per-class vector (1-d tensor or sequence of numbers), values in ``[low, high]``.

    Its length is only known with the input, so a call checks it in the loss's pipeline; a module
    registers it as a buffer and checks its values once, at construction.
    """

    low: float | None = 0.0
    high: float | None = None
    ndim: int | None = 1  # None: any shape (a pos_weight broadcast against the logits)
    noun = "a per-class sequence / 1-d tensor"

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, Tensor)
            or (is_ndarray(value) and value.ndim > 0)  # type: ignore[attr-defined]
            or (isinstance(value, Sequence) and not isinstance(value, (str, bytes)))
        )

    def check(self, owner: str, name: str, value: object) -> Any:
        return value  # length and values are checked where C is known

    def expected(self) -> str:
        if self.high is not None:
            return f"values in [{self.low:g}, {self.high:g}]"
        return "finite non-negative values"

    def check_buffer(self, owner: str, name: str, value: Tensor) -> None:
        """Construction-time check of the registered buffer: 1-d (unless ``ndim`` is None),
        finite, within the bounds. Values are not read for tensors already on an accelerator (no
        device sync at construction)."""
        if self.ndim is not None and value.ndim != self.ndim:
            fail(
                owner,
                name,
                f"a 1-d sequence of per-class values ({self.expected()})",
                f"shape {tuple(value.shape)}",
            )
        if value.numel() == 0:
            # (a config typo such as `alpha = []` fails when it is loaded, not at the first call)
            fail(owner, name, f"at least one value ({self.expected()})", "an empty sequence")
        if value.device.type != "cpu":
            return
        ok = torch.isfinite(value)
        if self.low is not None:
            ok = ok & (value >= self.low)
        if self.high is not None:
            ok = ok & (value <= self.high)
        if not bool(ok.all()):
            fail(owner, name, self.expected(), value.flatten()[:8].tolist())


@dataclass(frozen=True)
class Batch(Domain):
    """A per-batch tensor that is an input, not configuration (modules take it in ``forward``)."""

    noun = "a tensor"


@dataclass(frozen=True)
class Unchecked(Domain):
    """Arguments the pipeline validates with the input in hand (``weight``, ``avg_factor``)."""


@dataclass(frozen=True)
class AnyOf(Domain):
    """A union: ``None`` if allowed, else the first member that accepts the value's kind."""

    members: tuple[Domain, ...] = ()
    optional: bool = False

    def accepts(self, value: object) -> bool:
        return (value is None and self.optional) or any(m.accepts(value) for m in self.members)

    def check(self, owner: str, name: str, value: object) -> Any:
        if value is None and self.optional:
            return None
        for m in self.members:
            if m.accepts(value):
                return m.check(owner, name, value)
        if len(self.members) == 1:
            return self.members[0].check(owner, name, value)  # its own message
        nouns = [m.noun for m in self.members]
        if self.optional:
            nouns.insert(0, "None")
        fail(owner, name, " or ".join(nouns), repr(value), TypeError)


# --------------------------------------------------------------------------------------------------
# The named domains losses use in their signatures.
# --------------------------------------------------------------------------------------------------

#: A finite number >= 0 (gamma, smooth, beta of smooth L1, tau, ...).
NonNegative = Annotated[float, Number(low=0.0)]
#: A finite number > 0.
Positive = Annotated[float, Number(low=0.0, low_open=True)]
#: A number in [0, 1] (alpha, label_smoothing, a given beta).
Probability = Annotated[float, Number(low=0.0, high=1.0)]
#: A number in [0, 1) (ASL's clip and eps).
UnitInterval = Annotated[float, Number(low=0.0, high=1.0, high_open=True)]
#: A number in (0, 1) (the IoU loss's lower clamp of the IoU: at 1 or above every loss is <= 0).
OpenUnitInterval = Annotated[float, Number(low=0.0, high=1.0, low_open=True, high_open=True)]
#: An integer >= 0 (a count, a class index).
Count = Annotated[int, Integer(low=0)]
#: Non-negative per-class values: class weights, class counts, priors.
ClassValues = Annotated[Tensor | Sequence[float], ClassVector(low=0.0)]
#: Per-class values in [0, 1] (a per-class alpha).
ClassProbabilities = Annotated[Tensor | Sequence[float], ClassVector(low=0.0, high=1.0)]
#: Non-negative weights of any shape that broadcasts against the input (``pos_weight``).
Weights = Annotated[Tensor | Sequence[float], ClassVector(low=0.0, ndim=None)]
#: A per-batch tensor input (e.g. a training mask).
BatchTensor = Annotated[Tensor, Batch()]


def _domain(annotation: Any) -> Domain:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        for m in meta:
            if isinstance(m, Domain):
                return m
        return _domain(base)
    if origin is Literal:
        return Choice(tuple(typing.get_args(annotation)))
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        optional = type(None) in args
        members = tuple(_domain(a) for a in args if a is not type(None))
        if any(isinstance(m, (Unchecked, Batch)) for m in members):
            batch = any(isinstance(m, Batch) for m in members)
            return Batch() if batch else Unchecked()
        if len(members) == 1 and not optional:
            return members[0]
        return AnyOf(members, optional)
    if annotation is bool:
        return Flag()
    if annotation is int:
        return Integer()
    if annotation is float:
        return Number()
    return Unchecked()


@functools.cache
def signature_domains(fn: Callable[..., Any]) -> Mapping[str, Domain]:
    """The domain of every keyword-only argument of ``fn``, from its annotations (cached)."""
    import inspect

    target = inspect.unwrap(fn)
    hints = typing.get_type_hints(target, include_extras=True)
    out: dict[str, Domain] = {}
    for p in inspect.signature(target).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            out[p.name] = _domain(hints.get(p.name, Any))
    return out


#: ``check(owner, values)``: a constraint between hyperparameters (e.g. "exactly one of
#: ``class_counts`` and ``priors``), run on every call and at module construction.
Constraint = Callable[[str, Mapping[str, Any]], None]

#: A loss function's plain-call entry: called with the call's own arguments before they are
#: checked; it returns the loss for a call that is exactly PyTorch's function (arguments of exact
#: types whose values need no check, inputs the pipeline's plain-call helpers accept: see
#: ``lossforge._pipeline.plain_nll`` and its neighbours), and None for anything else, which then
#: takes the checked route. It never raises for an argument (the checked route reports it), and
#: where it computes the loss it applies the value checks of the general path, with its
#: messages. A call's host time on the CPU is paid again in the cache misses of the kernels
#: around it, so what a plain call skips (argument checks, the functional's body, the
#: pipeline's entry) shows at small sizes.
PlainCall = Callable[..., Any]


@typing.overload
def loss_function(fn: Callable[P, R], /) -> Callable[P, R]: ...


@typing.overload
def loss_function(
    *, check: Constraint | None = None, plain: PlainCall | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def loss_function(
    fn: Callable[P, R] | None = None,
    /,
    *,
    check: Constraint | None = None,
    plain: PlainCall | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Validate a loss function's keyword arguments against the domains of its annotations.

    The arguments a call passes are checked (defaults are valid by construction and tested so) and
    handed to the function coerced (``2`` becomes ``2.0`` for a float domain). Anything not
    declared with a checkable domain (``weight``, ``avg_factor``, tensors) is passed through for
    the loss's pipeline to validate against the input. ``check`` declares a constraint between
    hyperparameters; modules run it at construction (``lossforge.nn``).

    ``plain`` is the loss's plain-call entry (``PlainCall``), tried before anything else.
    """
    if check is not None and plain is not None:
        raise TypeError("loss_function: a plain-call entry cannot skip a `check` constraint")
    if fn is None:
        return lambda f: _wrap(f, check, plain)
    return _wrap(fn, check, plain)


def _binds(signature: Any, args: tuple, kwargs: dict) -> bool:
    """Whether ``args`` / ``kwargs`` bind to ``signature`` (Python's own binding rules)."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _binding_error(name: str, signature: Any, args: tuple, kwargs: dict) -> None:
    """A ``TypeError`` came out of a loss call: when the call itself cannot bind to the
    signature (an unknown or missing keyword, an option passed positionally, an input given
    twice), raise that in the library's template, naming the function; else return (an error
    from inside the loss, re-raised as it is)."""
    if _binds(signature, args, kwargs):
        return
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(positional):
        option = next(
            (p for p in params if p.kind is p.KEYWORD_ONLY and p.default not in (p.empty, None)),
            None,
        )
        example = "" if option is None else f" (e.g. {option.name}={option.default!r})"
        fail(
            name,
            "arguments",
            f"{len(positional)} positional arguments ({', '.join(p.name for p in positional)}) "
            f"and the options as keywords{example}",
            f"{len(args)} positional arguments",
            TypeError,
        )
    bound = {p.name for p in positional[: len(args)]}
    for key in kwargs:
        if key in bound:
            fail(name, key, "one value", "one positionally and one as a keyword", TypeError)
    check_keywords(name, [p for p in params if p.name not in bound], kwargs)


#: Argument types whose checked values ``loss_function`` remembers (immutable, hashable, compared
#: by value), and how many it remembers per function at most.
_SCALARS = frozenset({int, float, str, bool, type(None)})
_MEMO_SIZE = 256


def _wrap(fn: Callable[P, R], check: Constraint | None, plain: PlainCall | None) -> Callable[P, R]:
    import inspect

    name = fn.__name__
    # Resolved once, here: the call path is then dict lookups (cheap, and torch.compile traces it
    # without graph breaks).
    all_domains = dict(signature_domains(fn))
    defaults = {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }
    # What a call checks: not the pipeline-validated arguments, and not a value that is the
    # default object itself (valid by construction: a module passes its defaults on every call).
    domains = {k: d for k, d in all_domains.items() if not isinstance(d, Unchecked)}
    missing = object()
    # Scalars that passed their domain's check, with the value it returned: a check is a pure
    # function of an immutable scalar, and a training loop passes the same few values on every
    # call (a module its configuration). Keyed by type as well (1, 1.0 and True are equal keys).
    passed: dict[tuple[str, type, object], object] = {}

    signature = inspect.signature(fn)
    keywords = set(signature.parameters)

    # ``backend="torch"`` spelled out is the default: a plain call still (code that pins its
    # backend, the benchmark protocol), handed to the entry without it.
    pinned = "backend" in keywords and defaults.get("backend") == "torch"

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if plain is not None:
            backend = kwargs.get("backend", missing)
            if backend is missing:
                out: R | None = plain(*args, **kwargs)
            elif pinned and type(backend) is str and backend == "torch":
                out = plain(*args, **{k: v for k, v in kwargs.items() if k != "backend"})
            else:
                out = None
            if out is not None:
                return out
        for key, value in kwargs.items():
            domain = domains.get(key)
            if domain is None or value is defaults.get(key, missing):
                continue
            kind = type(value)
            # (not while torch.compile traces: a lookup keyed by a symbolic number would
            # specialise the graph to its value)
            if kind in _SCALARS and not torch.compiler.is_compiling():
                memo = (key, kind, value)
                checked = passed.get(memo, missing)
                if checked is missing:
                    checked = domain.check(name, key, value)
                    if len(passed) < _MEMO_SIZE:
                        passed[memo] = checked
                kwargs[key] = checked
            else:
                kwargs[key] = domain.check(name, key, value)
        if check is not None:
            if not kwargs.keys() <= keywords:  # a misspelled keyword, before the constraint
                _binding_error(name, signature, args, kwargs)
            check(name, {**defaults, **kwargs})
        try:
            return fn(*args, **kwargs)
        except TypeError:
            _binding_error(name, signature, args, kwargs)  # raises if the call cannot bind
            raise

    wrapper.constraint = check  # type: ignore[attr-defined]
    wrapper.plain = plain  # type: ignore[attr-defined]
    return wrapper
