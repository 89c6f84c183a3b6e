"""Registry of every loss module, and building losses from configuration.

The registry is a plain dictionary filled from ``lossforge.nn`` on first use: every
``~lossforge.nn.Loss`` subclass exported there with a ``registry_name`` is registered under that
name (the functional stem without ``_loss``: ``"sigmoid_focal"`` for
``~lossforge.nn.SigmoidFocalLoss``). There is no plugin scanning; third-party losses can be added
with ``register_loss``.

Example:
    >>> from lossforge.registry import build_loss
    >>> build_loss({"type": "smooth_l1", "beta": 0.5})
    SmoothL1Loss(beta=0.5, backend='torch', reduction='mean')
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossforge._checks import fail, fail_missing
from lossforge._toml import tomllib
from lossforge._traits import Traits

__all__ = [
    "LossInfo",
    "build_loss",
    "build_loss_from_toml",
    "get_loss",
    "list_losses",
    "register_loss",
]

_REGISTRY: dict[str, type] = {}
_FILLED = False
#: Modules that combine losses given as nested specs (``{"type": "loss_sum", "losses": {...}}``).
#: ``build_loss`` builds them; they are not losses of their own (no ``reduction``), so they are
#: not in the table of losses. Name -> (module, class), imported on use.
_COMPOSITES: dict[str, tuple[str, str]] = {"loss_sum": ("lossforge.nn.combine", "LossSum")}


@dataclass(frozen=True)
class LossInfo:
    """What ``lossforge list`` shows for one loss.

    Attributes:
        name: Registry name.
        cls: Module class.
        params: Constructor keyword -> default (``inspect.Parameter.empty`` when required).
        summary: First line of the class docstring.
        traits: The loss's declared metadata (example inputs, plot family, compare task, default
            sweep; ``lossforge._traits.Traits``), or ``None`` for a third-party loss that declares
            none.
    """

    name: str
    cls: type
    params: dict[str, Any]
    summary: str
    traits: Traits | None = None


def _fill() -> None:
    global _FILLED
    if _FILLED:
        return
    from lossforge import nn as lnn

    for export in lnn.__all__:
        cls = getattr(lnn, export)
        name = getattr(cls, "registry_name", None)
        if isinstance(cls, type) and issubclass(cls, lnn.Loss) and name:
            _REGISTRY.setdefault(name, cls)
    _FILLED = True


def register_loss(name: str, cls: type | None = None) -> Any:
    """Register a loss module class under ``name``; usable as a decorator.

    Raises:
        ValueError: ``name`` is already taken by another class.
    """

    def deco(c: type) -> type:
        _fill()
        if not isinstance(name, str) or not name:
            fail("register_loss", "name", "a non-empty string", repr(name))
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not c:
            fail(
                "register_loss",
                "name",
                "a name not registered yet",
                f"{name!r} (taken by {existing.__name__})",
            )
        _REGISTRY[name] = c
        return c

    return deco(cls) if cls is not None else deco


def _names() -> list[str]:
    _fill()
    return sorted(_REGISTRY)


def get_loss(
    name: str, *, caller: str = "get_loss", argument: str = "name", composites: bool = False
) -> type:
    """The module class registered under ``name`` (a registry name or the class name).

    ``composites``: the caller builds the combinators too (``"loss_sum"``): an unknown name's
    message lists and suggests them with the losses.

    Raises:
        ValueError: unknown name; the message lists the valid ones and the closest matches.
    """
    _fill()
    if not isinstance(name, str):
        fail(caller, argument, "a loss name (a string)", repr(name), TypeError)
    key = name.removeprefix("lossforge.")
    if key in _REGISTRY:
        return _REGISTRY[key]
    for cls in _REGISTRY.values():
        if cls.__name__ == key:
            return cls
    names = sorted([*_names(), *_COMPOSITES]) if composites else _names()
    close = _suggestions(key, names)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    fail(caller, argument, "a registered loss name: " + ", ".join(names), repr(name) + hint)


#: Name prefixes that say which input convention a loss takes (``sigmoid_focal`` /
#: ``softmax_focal`` are the focal loss on sigmoid / softmax probabilities).
_CONVENTIONS = ("sigmoid_", "softmax_", "binary_")


def _suggestions(key: str, names: list[str], limit: int = 3) -> list[str]:
    """The registered names a user most likely meant by the unknown ``key``.

    1. The losses whose whole name is written in ``key`` (each word of ``key`` read as the one
       registered word it misspells, if any): ``"sigmoid_focal_los"`` -> ``sigmoid_focal``;
       failing that, whose name up to its convention prefix is: ``"focal"``, ``"focall"`` or
       ``"focal_typo"`` -> ``sigmoid_focal``, ``softmax_focal``, not the many losses that
       merely contain the word (``quality_focal``, ``focal_tversky``, ...).
       A name within a small edit of ``key`` as a whole is offered too
       (``binary_cross_entropy_logits`` -> ``binary_cross_entropy_with_logits`` first).
    2. Otherwise the closest names by spelling (``difflib``'s ratio), among those sharing a word
       of at least 3 letters with ``key`` and difflib's close matches: at most ``limit``.

    Either way the closest spelling comes first.
    """
    norm = key.lower().replace("-", "_").removesuffix("_loss")
    vocabulary = {w for n in names for w in n.split("_")}
    words = set()
    for word in set(norm.split("_")) - {""}:
        fixed = difflib.get_close_matches(word, vocabulary, n=2, cutoff=0.8)
        words.add(fixed[0] if word not in vocabulary and len(fixed) == 1 else word)

    def stem(name: str) -> str:
        for prefix in _CONVENTIONS:
            if name.startswith(prefix):
                return name.removeprefix(prefix)
        return name

    def closest_first(found: set[str]) -> list[str]:
        return sorted(found, key=lambda n: (-difflib.SequenceMatcher(None, norm, n).ratio(), n))

    # a near-exact spelling of a whole name (``binary_cross_entropy_logits``) is always offered
    near = set(difflib.get_close_matches(norm, names, n=1, cutoff=0.85))
    for whole in (lambda n: n, stem):  # a name written in full beats one without its prefix
        named = {n for n in names if set(whole(n).split("_")) <= words}
        if named:
            return closest_first(named | near)[:limit]
    pool = {n for n in names if {w for w in words if len(w) >= 3} & set(n.split("_"))}
    pool.update(difflib.get_close_matches(norm, names, n=limit, cutoff=0.5))
    return closest_first(pool)[:limit]


def _params(cls: type) -> dict[str, Any]:
    """The constructor's keyword parameters and defaults. A constructor that forwards
    ``**kwargs`` (a third-party subclass: ``def __init__(self, *, scale=2.0, **kw):
    super().__init__(**kw)``) also takes its base classes' parameters, as mmengine's registry
    assumes: they are added, the subclass's own first."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass) and klass is not cls:
            continue
        sig = inspect.signature(klass)  # the constructor's parameters, without self
        forwards = False
        for p in sig.parameters.values():
            if p.kind == inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.kind != inspect.Parameter.VAR_POSITIONAL:
                out.setdefault(p.name, p.default)
        if not forwards:
            break
    return out


def list_losses() -> list[LossInfo]:
    """Every registered loss with its constructor parameters and defaults, sorted by name."""
    out = []
    for name in _names():
        cls = _REGISTRY[name]
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        traits = getattr(cls, "traits", None)
        out.append(LossInfo(name, cls, _params(cls), doc[0] if doc else "", traits))
    return out


def build_loss(spec: Mapping[str, Any] | str) -> Any:
    """Build a loss module from ``{"type": name, **params}`` (or just a name).

    Unknown names and unknown parameters raise ``ValueError`` listing the valid ones; parameter
    values are validated by the module's constructor. ``"loss_sum"`` builds a
    ``lossforge.nn.LossSum`` whose ``losses`` are themselves specs (nested).

    Example:
        >>> build_loss({"type": "l1", "loss_weight": 2.0})
        L1Loss(backend='torch', reduction='mean', loss_weight=2.0)
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        fail(
            "build_loss",
            "spec",
            "a mapping with a 'type' key, or a loss name",
            type(spec).__name__,
            TypeError,
        )
    params = dict(spec)
    if "type" not in params:
        fail(
            "build_loss",
            "spec",
            "a 'type' key naming the loss (see `lossforge list`)",
            sorted(params),
        )
    name = params.pop("type")
    cls = _composite(name) or get_loss(name, caller="build_loss", argument="type", composites=True)
    allowed = _params(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(allowed), n=2, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        fail(
            "build_loss",
            "parameters",
            f"parameters of {cls.__name__}: " + ", ".join(sorted(allowed)),
            "unknown " + ", ".join(repr(u) for u in unknown) + hint,
        )
    for key, default in allowed.items():
        # (the loss modules say this themselves; a composite such as LossSum too, here)
        if default is inspect.Parameter.empty and key not in params:
            fail_missing(cls.__name__, key)
    return cls(**params)


def _composite(name: object) -> type | None:
    """The combinator class registered under ``name`` (or its class name), if any."""
    if not isinstance(name, str):
        return None
    key = name.removeprefix("lossforge.")
    for composite, (module, cls_name) in _COMPOSITES.items():
        if key in (composite, cls_name):
            found: type = getattr(importlib.import_module(module), cls_name)
            return found
    return None


def build_loss_from_toml(source: str | Path, table: str | None = None) -> Any:
    """Build a loss from a TOML file (or TOML text) holding ``type = "..."`` and its parameters.

    Args:
        source: A path to a ``.toml`` file, or TOML text.
        table: Optional dotted table name inside the document (``"loss"`` for a ``[loss]`` table).
    """
    path = None if isinstance(source, str) and _is_toml_text(source) else Path(source)
    if path is not None:
        try:
            text = path.read_text()
        except OSError as err:
            fail(
                "build_loss_from_toml",
                "source",
                "a readable TOML file",
                f"{source} ({err.strerror})",
            )
    else:
        text = str(source)
    try:
        doc: Any = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        fail("build_loss_from_toml", "source", "valid TOML", str(err))
    for part in table.split(".") if table else []:
        if not isinstance(doc, dict) or part not in doc:
            fail("build_loss_from_toml", "table", "a table present in the document", repr(table))
        doc = doc[part]
    if table and not isinstance(doc, dict):
        fail(
            "build_loss_from_toml",
            "table",
            "the name of a table (a [section] holding `type` and the loss's parameters)",
            f"{table!r}, a {type(doc).__name__} value",
        )
    return build_loss(toml_nones(doc))


def toml_nones(spec: Any) -> Any:
    """A spec from TOML, which has no null, with ``"none"`` read as ``None`` where a parameter
    takes ``None`` and not the string (``alpha = "none"`` turns focal's alpha off; a
    ``reduction = "none"`` or an activation choice named ``"none"`` stay strings); nested
    ``loss_sum`` specs too. Anything else is returned as it is (``build_loss`` judges it)."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        return spec
    cls = _composite(spec["type"])
    if cls is not None:
        losses = spec.get("losses")
        if not isinstance(losses, Mapping):
            return spec
        return {**spec, "losses": {k: toml_nones(v) for k, v in losses.items()}}
    try:
        cls = get_loss(spec["type"])
    except ValueError:
        return spec
    domains: Mapping[str, Any] = getattr(cls, "_domains", {})
    optional = _optional_keywords(cls)
    return {
        k: None
        if v == "none" and (_none_is_meant(domains[k]) if k in domains else k in optional)
        else v
        for k, v in spec.items()
    }


def _optional_keywords(cls: type) -> frozenset[str]:
    """The constructor keywords annotated as taking ``None`` (``int | None``, ``Optional[...]``):
    the hand-written modules (Seesaw, GHM), which declare no domains, and the keywords of a
    declared module's own ``__init__``. A keyword whose annotation also names the string
    ``"none"`` (a choice) keeps the string."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    except (TypeError, ValueError):
        return frozenset()
    out = set()
    for p in params:
        if p.annotation is inspect.Parameter.empty:
            continue
        text = p.annotation if isinstance(p.annotation, str) else repr(p.annotation)
        if re.search(r"\bNone(Type)?\b|Optional\[", text) and not re.search(
            r"['\"]none['\"]", text
        ):
            out.add(p.name)
    return frozenset(out)


def _none_is_meant(domain: object) -> bool:
    from lossforge._params import AnyOf, Choice

    if not isinstance(domain, AnyOf) or not domain.optional:
        return False
    return not any(isinstance(m, Choice) and "none" in m.choices for m in domain.members)


def _is_toml_text(source: str) -> bool:
    """Whether ``build_loss_from_toml``'s string ``source`` is TOML text rather than a path:
    several lines, or a ``key = value`` line that is not an existing file and does not end in
    ``.toml`` (a path may hold ``=``: Hydra's ``runs/lr=0.1/train.toml``)."""
    if "\n" in source:
        return True
    if "=" not in source or source.rstrip().endswith(".toml"):
        return False
    try:
        return not Path(source).is_file()
    except OSError:  # (a name too long for the file system: text)
        return True
