"""Learned per-class options get their gradient, everywhere (issue #14, section 1).

``class_weight``, ``pos_weight``, a per-class ``alpha``, ``class_counts``, ``priors``: every
registered loss with a per-class tensor option (found from the domains of its signature) is
differentiated with respect to that option by ``gradcheck`` (float64, ``"mean"`` and ``"none"``).
A module keeps an ``nn.Parameter`` option as a parameter (the optimiser sees it, the gradient
reaches it) and refuses a non-parameter tensor that requires grad instead of silently detaching it
into a buffer. An option that only starts a stateful module's state (``Traits.initial_state``:
Seesaw's class counts start its int64 running counts) is refused as a parameter too.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, example, fn_of, params
from torch import Tensor, nn

from lossforge._params import AnyOf, ClassVector, Domain, signature_domains
from lossforge.registry import LossInfo


def _vector(domain: Domain) -> ClassVector | None:
    if isinstance(domain, ClassVector):
        return domain
    if isinstance(domain, AnyOf):
        return next((m for m in domain.members if isinstance(m, ClassVector)), None)
    return None


CASES = [
    (info, key, vec)
    for info in INFOS
    for key, dom in signature_domains(fn_of(info)).items()
    if (vec := _vector(dom)) is not None
]


def _case_id(case: tuple[LossInfo, str, ClassVector]) -> str:
    return f"{case[0].name}-{case[1]}"


def _value(vec: ClassVector, c: int, seed: int = 0) -> Tensor:
    lo = (vec.low or 0.0) + 0.1
    hi = vec.high - 0.1 if vec.high is not None else 2.0
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(c, generator=g, dtype=F64)).requires_grad_(True)


def _setup(
    info: LossInfo, key: str, vec: ClassVector
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    x, y = example(info, n=5)
    x = x.detach()
    c = x.shape[1]
    kw = params(info)
    if key == "priors":
        kw["class_counts"] = None
    return x, y, _value(vec, c), kw


def test_every_per_class_option_is_swept() -> None:
    swept = {(info.name, key) for info, key, _ in CASES}
    for expected in [
        ("cross_entropy", "class_weight"),
        ("nll", "class_weight"),
        ("balanced_softmax", "class_weight"),
        ("balanced_softmax", "class_counts"),
        ("binary_cross_entropy_with_logits", "pos_weight"),
        ("softmax_focal", "alpha"),
        ("dice", "class_weight"),
    ]:
        assert expected in swept


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gradient_reaches_a_learned_per_class_option(
    case: tuple[LossInfo, str, ClassVector],
) -> None:
    info, key, vec = case
    x, y, w, kw = _setup(info, key, vec)
    fn = fn_of(info)
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda v, r=reduction: fn(x, y, **{**kw, key: v}, reduction=r), (w,), atol=1e-6
        )
        # the value does not depend on whether the option requires grad
        assert_close(
            fn(x, y, **{**kw, key: w}, reduction=reduction).detach(),
            fn(x, y, **{**kw, key: w.detach()}, reduction=reduction),
            F64,
        )
    if "label_smoothing" in inspect.signature(fn).parameters and "label_smoothing" not in kw:
        # a learned option takes the differentiable route, whose smoothing term is written apart
        # (a mutation dropping the weights from it passed every other test)
        smooth = {**kw, "label_smoothing": 0.2}
        for reduction in ("mean", "none"):
            assert_close(
                fn(x, y, **{**smooth, key: w}, reduction=reduction).detach(),
                fn(x, y, **{**smooth, key: w.detach()}, reduction=reduction),
                F64,
            )


def _is_initial_state(info: LossInfo, key: str) -> bool:
    """Whether the module takes ``key`` as the start of its state (``Traits.initial_state``)."""
    assert info.traits is not None
    return key in info.traits.initial_state


#: Options a module passes to its function; those starting a module's state: STATE_CASES.
OPTION_CASES = [case for case in CASES if not _is_initial_state(case[0], case[1])]
STATE_CASES = [case for case in CASES if _is_initial_state(case[0], case[1])]


@pytest.mark.parametrize("case", OPTION_CASES, ids=_case_id)
def test_module_learns_a_parameter_option(case: tuple[LossInfo, str, ClassVector]) -> None:
    info, key, vec = case
    x, y, w, kw = _setup(info, key, vec)
    p = nn.Parameter(w.detach().clone())
    mod = info.cls(**{**kw, key: p})
    assert any(q is p for q in mod.parameters()), "the option is a parameter of the module"
    mod(x, y).backward()
    (want,) = torch.autograd.grad(fn_of(info)(x, y, **{**kw, key: w}), w)
    assert p.grad is not None
    assert_close(p.grad, want, F64)
    assert key in mod.state_dict()
    # a tensor that requires grad but is not a parameter would be detached into a buffer: refused
    with pytest.raises(ValueError, match=rf"expected `{key}` an nn.Parameter"):
        info.cls(**{**kw, key: w})


def test_initial_state_options_are_declared() -> None:
    assert ("seesaw", "class_counts") in {(info.name, key) for info, key, _ in STATE_CASES}


@pytest.mark.parametrize("case", STATE_CASES, ids=_case_id)
def test_module_refuses_to_learn_its_initial_state(case: tuple[LossInfo, str, ClassVector]) -> None:
    """An option that starts a stateful module's state (Seesaw's class counts start the int64
    running counts) is not learnable through the module: a parameter or a tensor that requires
    grad is refused, never detached silently, even with integral values; a plain tensor works."""
    info, key, vec = case
    x, y, w, kw = _setup(info, key, vec)
    integral = w.detach().round() + 1.0
    for learned in (nn.Parameter(integral.clone()), integral.clone().requires_grad_(True)):
        with pytest.raises(ValueError, match=rf"expected `{key}` .*not require grad"):
            info.cls(**{**kw, key: learned})
    mod = info.cls(**{**kw, key: integral}).eval()
    assert not list(mod.parameters())
    assert_close(mod(x, y), fn_of(info)(x, y, **{**kw, key: integral}), F64)
