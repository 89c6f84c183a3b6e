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

import lossforge
import lossforge.functional as F
from lossforge.registry import LossInfo


def _one(info: LossInfo, module: bool) -> Any:
    """A per-sample loss: the sample with a batch dimension of 1, summed."""
    kw = params(info)
    if module:
        mod = info.cls(**kw, reduction="sum")
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
