"""Every registered loss, from its declaration alone: the shared contract, module == functional for
every argument, and the declaration itself (traits, domains, defaults).

The family test files run the contract on many option sets; this file makes sure a loss that is
registered cannot miss it: its cases come from the registry (``lossforge.registry.list_losses``)
and the example inputs its ``Traits`` name.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from _contract import LossCase, assert_close, contract_test_suite

from lossforge._examples import EXAMPLES
from lossforge._params import AnyOf, Choice, ClassVector, Flag, Integer, Number, signature_domains
from lossforge._traits import PLOT_FAMILIES, TASKS
from lossforge.nn import Loss
from lossforge.registry import list_losses

F64 = torch.float64
INFOS = [info for info in list_losses() if issubclass(info.cls, Loss) and info.cls.functional]


def _case(info: Any) -> LossCase:
    t = info.traits
    return LossCase(
        info.name,
        info.cls.functional,
        info.cls,
        dict(t.params),
        EXAMPLES[t.example],
        elementwise=False,
        extreme=t.logits,
        mean_is_count=t.mean_is_count,
        stateful=t.stateful,
        extra={"gradcheck_kwargs": dict(t.gradcheck_params)},
    )


CASES = [_case(info) for info in INFOS]
globals().update(contract_test_suite(CASES))


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.name)
def test_declaration_is_complete(info: Any) -> None:
    t = info.traits
    assert t is not None, f"{info.name} declares no traits"
    assert t.example in EXAMPLES
    assert t.plot is None or t.plot in PLOT_FAMILIES
    assert t.task is None or t.task in TASKS
    assert info.cls.registry_name == info.name
    fn = info.cls.functional
    assert fn.__doc__ and "Args:" in fn.__doc__ and "Returns:" in fn.__doc__
    sig = inspect.signature(fn)
    positional = [p for p in sig.parameters.values() if p.kind is not p.KEYWORD_ONLY]
    assert len(positional) == 2, "a loss takes (input, target) positionally, the rest by keyword"
    for key in ("weight", "reduction", "avg_factor"):
        assert key in sig.parameters, f"{info.name} misses the shared `{key}`"
    for key in t.sweep:
        assert key in sig.parameters, f"{info.name}: sweep over unknown parameter {key}"


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.name)
def test_defaults_are_valid_and_modules_build_from_them(info: Any) -> None:
    domains = signature_domains(info.cls.functional)
    for p in inspect.signature(info.cls.functional).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
            domains[p.name].check(info.name, p.name, p.default)  # raises if a default is invalid
    mod = info.cls(**info.traits.params)
    assert repr(mod).startswith(info.cls.__name__)
    assert (
        info.traits.stateful
        or not list(mod.buffers())
        or all(name in info.cls.config for name, _ in mod.named_buffers())
    ), "a module with buffers that are not configuration declares Traits(stateful=True)"


def _alternatives(domain: Any, default: Any, c: int) -> list[Any]:
    """Valid values other than the default, for the module == functional sweep."""
    if isinstance(domain, AnyOf):
        out: list[Any] = [None] if domain.optional and default is not None else []
        for m in domain.members:
            out += _alternatives(m, default, c)
        return out
    if isinstance(domain, Flag):
        return [not default]
    if isinstance(domain, Choice):
        return [v for v in domain.choices if v != default and v != "triton"]
    if isinstance(domain, Integer):
        low = domain.low if domain.low is not None else -1
        return [v for v in (low, low + 1) if v != default]
    if isinstance(domain, Number):
        lo = domain.low if domain.low is not None else -1.0
        hi = domain.high if domain.high is not None else lo + 3.0
        value = lo + 0.37 * (hi - lo)
        return [value] if value != default else [lo + 0.61 * (hi - lo)]
    if isinstance(domain, ClassVector):
        hi = domain.high if domain.high is not None else 2.0
        g = torch.Generator().manual_seed(c)
        return [(domain.low + (hi - domain.low) * torch.rand(c, generator=g, dtype=F64)).tolist()]
    return []


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "value", call()
    except (ValueError, TypeError) as err:
        return type(err).__name__, str(err).split(": ", 1)[-1]


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.name)
def test_module_equals_functional_for_every_argument(info: Any) -> None:
    """Each configuration argument, one at a time at other valid values: the module gives the
    functional's value (or the same error: some values are only invalid for this input)."""
    fn, cls, base = info.cls.functional, info.cls, dict(info.traits.params)
    x, y = EXAMPLES[info.traits.example](6, F64, torch.Generator().manual_seed(3))
    c = x.shape[1] if x.ndim >= 2 else x.shape[0]
    domains = signature_domains(fn)
    defaults = {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }
    checked = 0
    for key in cls.config:
        for value in _alternatives(domains[key], defaults.get(key), c):
            kw = {**base, key: value}
            try:
                mod = cls(**kw)
            except (ValueError, TypeError) as err:
                with pytest.raises(type(err)):
                    fn(x, y, **kw)
                continue
            got = _outcome(lambda mod=mod: mod(x, y))
            want = _outcome(lambda kw=kw: fn(x, y, **kw))
            assert got[0] == want[0], (key, value, got, want)
            if got[0] == "value":
                assert_close(got[1], want[1], F64)
                checked += 1
            else:
                assert got[1] == want[1]
    assert checked or not cls.config, f"{info.name}: no argument value was compared"


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.name)
def test_module_rejects_what_the_functional_rejects(info: Any) -> None:
    """Construction-time validation uses the functional's own domains: an out-of-domain number is
    refused by both, with the same message."""
    fn, cls = info.cls.functional, info.cls
    x, y = EXAMPLES[info.traits.example](4, F64, torch.Generator().manual_seed(5))
    domains = signature_domains(fn)
    for key in cls.config:
        d = domains[key]
        members = d.members if isinstance(d, AnyOf) else (d,)
        for m in members:
            if isinstance(m, Number) and m.low is not None:
                bad = m.low - 1.0 if not math.isinf(m.low) else None
                if bad is None:
                    continue
                kw = {**info.traits.params, key: bad}
                with pytest.raises(ValueError, match=key) as from_module:
                    cls(**kw)
                with pytest.raises(ValueError, match=key) as from_functional:
                    fn(x, y, **kw)
                assert (
                    str(from_module.value).split(": ", 1)[1]
                    == str(from_functional.value).split(": ", 1)[1]
                )


def test_module_call_passes_what_differs_from_the_functional_defaults() -> None:
    """A module's forward hands the functional its configuration values that are not the
    functional's own default objects, ``weight`` / ``avg_factor`` when given, per-batch inputs,
    and the reduction; a value set after construction applies, and setting an option back to
    its default object drops it from the call."""
    import lossforge.nn as LN

    calls: list[dict[str, Any]] = []
    inner = LN.SigmoidFocalLoss.functional
    assert inner is not None

    def spy(x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs)
        return inner(x, t, **kwargs)

    class Spy(LN.SigmoidFocalLoss):
        functional = staticmethod(spy)

    x = torch.randn(4, 3, dtype=F64)
    t = (torch.rand(4, 3) < 0.3).to(F64)
    m = Spy(gamma=1.5)
    out = m(x, t)
    assert calls[-1] == {"gamma": 1.5, "reduction": "mean"}
    assert_close(out, inner(x, t, gamma=1.5), F64)
    w = torch.rand(4, 3, dtype=F64)
    m(x, t, weight=w, avg_factor=2.0, reduction_override="mean")
    assert calls[-1].keys() == {"gamma", "weight", "avg_factor", "reduction"}
    assert calls[-1]["weight"] is w and calls[-1]["avg_factor"] == 2.0
    m(x, t, reduction_override="sum")
    assert calls[-1] == {"gamma": 1.5, "reduction": "sum"}
    m.alpha = 0.5
    m(x, t)
    assert calls[-1] == {"gamma": 1.5, "alpha": 0.5, "reduction": "mean"}
    default_alpha = inspect.signature(inner).parameters["alpha"].default
    m.alpha = default_alpha
    m(x, t)
    assert calls[-1] == {"gamma": 1.5, "reduction": "mean"}
