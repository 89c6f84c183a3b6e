"""``torch.func`` transforms work on every loss (issue #14, section 3).

Per-sample gradients (``vmap(grad(...))``), ``vmap``, ``jacrev`` and ``jacfwd`` of every registered
loss (function and module) agree with a loop over samples / ``torch.autograd.functional.jacobian``.
Value checks are skipped under the transforms (as under ``torch.compile``), whatever the mode, and
custom autograd functions carry a vmap rule (the focal term) or step aside for their composite
(the closed forms). Skipped checks poison invalid values to NaN exactly as with checks off.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, example, fn_of, name_of, params
from torch import Tensor
from torch.autograd.functional import jacobian
from torch.func import grad, jacfwd, jacrev, vmap
from torch.nn import Module

import lossforge
import lossforge.functional as F
from lossforge.registry import LossInfo


def _one(info: LossInfo, module: bool) -> Any:
    """A per-sample loss: the sample with a batch dimension of 1, summed.

    A stateful module (running statistics updated in training mode) is evaluated in eval mode:
    its state is then read, not written, so the loop over samples is a function of the sample
    (in training mode every call of the loop would update the state first). Training mode under
    vmap is ``test_stateful_training_mode_under_vmap_is_refused``."""
    kw = params(info)
    if module:
        mod = info.cls(**kw, reduction="sum")
        assert info.traits is not None
        if info.traits.stateful:
            mod.eval()
        return lambda a, b: mod(a[None], b[None])
    fn = fn_of(info)
    return lambda a, b: fn(a[None], b[None], reduction="sum", **kw)


@pytest.mark.parametrize("checks", [None, True], ids=["auto", "forced"])
@pytest.mark.parametrize("module", [False, True], ids=["function", "module"])
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_vmap_and_per_sample_gradients(info: LossInfo, module: bool, checks: bool | None) -> None:
    x, y = example(info, n=4)
    x = x.detach()
    one = _one(info, module)
    with lossforge.value_checks(checks):
        values = vmap(one)(x, y)
        grads = vmap(grad(one))(x, y)
    for i in range(x.shape[0]):
        xi = x[i].clone().requires_grad_(True)
        want = one(xi, y[i])
        (g,) = torch.autograd.grad(want, xi)
        assert_close(values[i], want.detach(), F64)
        assert_close(grads[i], g, F64)


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_jacrev_and_jacfwd(info: LossInfo) -> None:
    x, y = example(info, n=3)
    x = x.detach()
    kw = params(info)

    def f(a: Tensor) -> Tensor:
        return fn_of(info)(a, y, reduction="none", **kw)  # type: ignore[no-any-return]

    want = jacobian(f, x)
    assert_close(jacrev(f)(x), want, F64)
    assert_close(jacfwd(f)(x), want, F64)
    mean = jacrev(lambda a: fn_of(info)(a, y, **kw))(x)
    assert_close(mean, jacobian(lambda a: fn_of(info)(a, y, **kw), x), F64)


def test_out_of_range_index_under_vmap_is_nan_not_a_crash() -> None:
    """Checks are skipped under vmap: a bad index is poisoned (NaN), as with checks off."""
    x = torch.randn(3, 4, dtype=F64)
    y = torch.tensor([0, 9, 2])
    per = vmap(lambda a, b: F.cross_entropy(a[None], b[None]))(x, y)
    assert torch.isnan(per[1]) and torch.isfinite(per[[0, 2]]).all()
    with pytest.raises(ValueError, match="class indices"):
        F.cross_entropy(x, y)  # outside the transform the check runs


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_term_vmap_rule_with_label_smoothing(gamma: float) -> None:
    """The softmax focal term (a custom autograd function) under vmap, every class involved."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g, dtype=F64)
    y = torch.randint(0, 4, (5,), generator=g)

    def one(a: Tensor, b: Tensor) -> Tensor:
        return F.softmax_focal_loss(a[None], b[None], gamma=gamma, label_smoothing=0.1)

    grads = vmap(grad(one))(x, y)
    for i in range(5):
        xi = x[i].clone().requires_grad_(True)
        (want,) = torch.autograd.grad(one(xi, y[i]), xi)
        assert_close(grads[i], want, F64)


#: Constructor keywords under which each stateful module updates its state in training mode (the
#: registry's example parameters may keep none, e.g. GHM with momentum 0).
STATE_UPDATING: dict[str, dict[str, Any]] = {
    "seesaw": {},
    "ghmc": {"momentum": 0.75},
    "ghmr": {"momentum": 0.75},
}
STATEFUL = [info for info in INFOS if info.traits is not None and info.traits.stateful]


def _state(mod: Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in mod.state_dict().items()}


def _updating(info: LossInfo) -> Module:
    assert info.name in STATE_UPDATING, f"{info.name}: say how its state is updated here"
    return info.cls(**{**params(info), **STATE_UPDATING[info.name]}, reduction="sum")  # type: ignore[no-any-return]


def test_stateful_modules_are_known() -> None:
    assert {info.name for info in STATEFUL} == set(STATE_UPDATING)


#: The transforms a training-mode forward is refused under: ``(x, y) -> result``.
TRANSFORMS: dict[str, Any] = {
    "vmap": lambda f: vmap(lambda a, b: f(a[None], b[None])),
    "per_sample_grad": lambda f: vmap(grad(lambda a, b: f(a[None], b[None]))),
    "grad": lambda f: lambda x, y: grad(lambda a: f(a, y))(x),
    "jacrev": lambda f: lambda x, y: jacrev(lambda a: f(a, y))(x),
    "jacfwd": lambda f: lambda x, y: jacfwd(lambda a: f(a, y))(x),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS), ids=str)
@pytest.mark.parametrize("info", STATEFUL, ids=name_of)
def test_stateful_training_mode_under_transforms_is_refused(info: LossInfo, transform: str) -> None:
    """Training mode writes the running state from each call. torch.func cannot write a tensor
    the function did not take as an input, and under vmap every sample would write its own value
    into the one buffer (the loop vmap stands for would update it once per sample). A
    RuntimeError says so, before anything is written; in eval mode the transform reads the state
    and gives the values of a plain call."""
    x, y = example(info, n=4)
    x = x.detach()
    mod = _updating(info)
    before = _state(mod)
    mod(x, y)  # outside a transform the update runs
    assert any(not torch.equal(before[k], v) for k, v in mod.state_dict().items())
    before = _state(mod)
    with pytest.raises(RuntimeError, match=r"eval mode under torch.func transforms.*\.eval\(\)"):
        TRANSFORMS[transform](mod)(x, y)
    for k, v in mod.state_dict().items():
        assert torch.equal(before[k], v), k
    mod.eval()
    got = TRANSFORMS[transform](mod)(x, y)
    if transform == "vmap":
        want = torch.stack([mod(x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])])
    elif transform == "per_sample_grad":
        rows = [x[i].clone().requires_grad_(True) for i in range(x.shape[0])]
        want = torch.stack(
            [torch.autograd.grad(mod(r[None], y[i : i + 1]), r)[0] for i, r in enumerate(rows)]
        )
    else:
        want = jacobian(lambda a: mod(a, y), x)
    assert_close(got, want, F64)
    for k, v in mod.state_dict().items():
        assert torch.equal(before[k], v), k
