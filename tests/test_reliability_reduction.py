"""A bad ``"mean"`` denominator is loud, never a silent 0 (issue #14, section 1).

``avg_factor`` zero (with something to sum) or negative: a ``ValueError`` with value checks on,
NaN with them off (like an out-of-range class index), for every registered loss, function and
module, as a number or a tensor. Nothing valid at all (an empty batch, every element weighted 0,
every target ignored) stays exactly 0 with zero gradients, still attached to the graph.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _reliability import F64, INFOS, example, fn_of, name_of, params, takes
from torch import Tensor

import lossforge
import lossforge.functional as F
from lossforge.registry import LossInfo

BAD = {
    "zero": 0.0,
    "zero tensor": torch.tensor(0.0),
    "zero int tensor": torch.tensor(0),
    "negative tensor": torch.tensor(-2.0, dtype=F64),
    "nan tensor": torch.tensor(float("nan")),
}


def _call(info: LossInfo, module: bool, x: Tensor, y: Tensor, **kw: Any) -> Tensor:
    if module:
        mod = info.cls(**params(info))
        reduction = kw.pop("reduction", None)
        return mod(x, y, reduction_override=reduction, **kw)  # type: ignore[no-any-return]
    return fn_of(info)(x, y, **params(info), **kw)  # type: ignore[no-any-return]


def _exact_zero(loss: Tensor, x: Tensor) -> None:
    assert loss.ndim == 0 and loss.item() == 0.0 and not math.copysign(1.0, loss.item()) < 0
    assert loss.requires_grad, "nothing valid: still attached to the graph"
    (g,) = torch.autograd.grad(loss, x)
    assert torch.all(g == 0)


@pytest.mark.parametrize("module", [False, True], ids=["function", "module"])
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_bad_avg_factor_raises_with_checks_and_is_nan_without(info: LossInfo, module: bool) -> None:
    x, y = example(info, n=6)
    assert _call(info, module, x, y, reduction="sum").item() != 0
    for case, af in BAD.items():
        with lossforge.value_checks(True), pytest.raises(ValueError, match="avg_factor") as err:
            _call(info, module, x, y, avg_factor=af)
        assert "got" in str(err.value), case
        with lossforge.value_checks(False):
            loss = _call(info, module, x, y, avg_factor=af)
            assert torch.isnan(loss), (case, loss)
    # a negative or non-finite host number is read for free: always a ValueError
    for af in (-1.0, float("inf"), float("nan")):
        with lossforge.value_checks(False), pytest.raises(ValueError, match="avg_factor"):
            _call(info, module, x, y, avg_factor=af)


@pytest.mark.parametrize("checks", [True, False], ids=["checks", "no-checks"])
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_nothing_valid_with_a_zero_avg_factor_is_exactly_zero(info: LossInfo, checks: bool) -> None:
    with lossforge.value_checks(checks):
        empty, ye = example(info, n=0)
        for af in (0.0, torch.tensor(0.0), None):
            _exact_zero(fn_of(info)(empty, ye, avg_factor=af, **params(info)), empty)
            _exact_zero(info.cls(**params(info))(empty, ye, avg_factor=af), empty)
        x, y = example(info, n=6)
        none = fn_of(info)(x, y, reduction="none", **params(info))
        zero_w = torch.zeros(none.shape, dtype=F64)
        for af in (0.0, torch.tensor(0.0)):
            _exact_zero(fn_of(info)(x, y, weight=zero_w, avg_factor=af, **params(info)), x)
        if takes(info, "ignore_index"):
            ignored = torch.full_like(y, -1) if not y.is_floating_point() else y.fill_(-1.0)
            for af in (0.0, torch.tensor(0.0), None):
                loss = fn_of(info)(x, ignored, ignore_index=-1, avg_factor=af, **params(info))
                _exact_zero(loss, x)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("cross_entropy", {}),
        ("softmax_focal_loss", {}),
        ("balanced_softmax_loss", {"class_counts": [10.0, 5.0, 3.0, 2.0, 1.0]}),
        ("logit_adjusted_loss", {"class_counts": [10.0, 5.0, 3.0, 2.0, 1.0]}),
        ("ldam_loss", {"class_counts": [10.0, 5.0, 3.0, 2.0, 1.0]}),
        ("poly1_cross_entropy", {}),
        ("ohem_cross_entropy", {}),
    ],
)
def test_class_weighted_mean_divides_by_the_summed_class_weights(name: str, kw: Any) -> None:
    """The documented exception to "mean divides by the valid count" (README, docs/contract.md):
    the cross-entropy family with ``class_weight`` divides by the class weights of the valid
    targets, as PyTorch's cross-entropy does; ignored positions count in neither."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (8,), generator=gen)
    y[2] = -100
    w = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    fn = getattr(F, name)
    total = fn(x, y, class_weight=w, reduction="sum", **kw)
    mean = fn(x, y, class_weight=w, reduction="mean", **kw)
    torch.testing.assert_close(mean, total / w[y[y != -100]].sum())
