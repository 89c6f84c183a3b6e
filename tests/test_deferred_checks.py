"""The NaN check of L1, smooth L1, MSE and Huber reads the reduced loss, not the input.

PyTorch's element-wise kernels make the reduced loss NaN exactly when an element of the prediction
is NaN, so under value checks these losses read that one value after computing it instead of
summing the prediction first (``nan_in_total`` in the regression pipeline). The contract is
unchanged: a NaN prediction raises the same ValueError, an infinite one gives an infinite loss,
and a loss that overflows without any NaN is returned as it is.
"""

from __future__ import annotations

import pytest
import torch
from _ops import OpLog

import lossforge as lf
import lossforge.functional as F

LOSSES = [F.l1_loss, F.mse_loss, F.smooth_l1_loss, F.huber_loss]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_a_nan_prediction_still_raises(fn, reduction) -> None:
    p = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 4)
    bad = p.detach().clone()
    bad[2, 1] = float("nan")
    with (
        lf.value_checks(True),
        pytest.raises(ValueError, match=r"`pred` no NaN values, got 1 NaN of 20"),
    ):
        fn(bad.requires_grad_(True), t, reduction=reduction)
    with lf.value_checks(False):
        assert torch.isnan(fn(bad, t, reduction=reduction)).any()


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_infinite_and_overflowing_losses_are_returned(fn) -> None:
    t = torch.zeros(3)
    with lf.value_checks(True):
        assert fn(torch.tensor([0.0, float("inf"), 1.0]), t) == float("inf")
        # finite inputs whose loss overflows float32: no NaN, so no error
        if fn is F.mse_loss:
            assert fn(torch.tensor([3e20, 3e20, 0.0]), t) == float("inf")


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_no_summing_pass_over_the_prediction(fn) -> None:
    p, t = torch.randn(6, 4), torch.randn(6, 4)
    with lf.value_checks(True), OpLog() as mode:
        fn(p, t)
    assert "sum" not in mode.ops and mode.ops.count("_local_scalar_dense") == 1, mode.ops
    # an element-wise weight, or "none", keeps the check on the input
    with lf.value_checks(True), OpLog() as mode:
        fn(p, t, weight=torch.rand(6, 4))
    assert "sum" in mode.ops


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("target", ["dense", "soft", "index"])
def test_bce_with_logits_still_refuses_nan_and_infinite_logits(bad, target) -> None:
    # the logits' check runs when the reduced loss is not finite, which every NaN or infinite
    # logit makes it, whatever its target in [0, 1] (or pos_weight, label smoothing)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g)
    y = {
        "dense": (torch.rand(6, 3, generator=g) < 0.5).float(),
        "soft": torch.rand(6, 3, generator=g),
        "index": torch.randint(0, 4, (6,), generator=g),
    }[target]
    for i in range(3):
        xb = x.clone()
        xb[i, i] = bad
        for kw in ({}, {"pos_weight": 3.0}, {"label_smoothing": 0.1}, {"reduction": "sum"}):
            with lf.value_checks(True), pytest.raises(ValueError, match="`logits`"):
                F.binary_cross_entropy_with_logits(xb, y, **kw)


def test_bce_with_logits_reads_no_pass_over_the_logits() -> None:
    x, y = torch.randn(6, 4), (torch.rand(6, 4) < 0.5).float()
    with lf.value_checks(True), OpLog() as mode:
        F.binary_cross_entropy_with_logits(x, y)
    # the target's [0, 1] check (aminmax) stays; the logits' summing pass is gone
    assert "sum" not in mode.ops and mode.ops.count("aminmax") == 1, mode.ops


@pytest.mark.parametrize("where", ["target class", "other class"])
@pytest.mark.parametrize("bad", ["nan", "+inf", "row of -inf"])
@pytest.mark.parametrize("ignored", [False, True])
def test_cross_entropy_still_refuses_bad_logits(bad, where, ignored) -> None:
    # On the CPU without class weights, cross-entropy reads its logits' check off the loss when
    # every position counted; a bad value anywhere in a counted row makes that loss NaN, and an
    # ignored row is checked by the logits' own pass.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    if ignored:
        y[2] = -100
    col = int(y[2]) if (where == "target class" and not ignored) else 1
    if bad == "nan":
        x[2, col] = float("nan")
    elif bad == "+inf":
        x[2, col] = float("inf")
    else:
        x[2] = float("-inf")
    for reduction in ("mean", "sum"):
        with lf.value_checks(True), pytest.raises(ValueError, match="`logits`"):
            F.cross_entropy(x, y, reduction=reduction)


def test_cross_entropy_masked_classes_stay_allowed() -> None:
    # -inf in some classes is a masked class: finite loss, or +inf at a masked target class
    x = torch.randn(3, 4)
    x[0, 3] = float("-inf")
    with lf.value_checks(True):
        assert torch.isfinite(F.cross_entropy(x, torch.tensor([0, 1, 2])))
        assert F.cross_entropy(x, torch.tensor([3, 1, 2])) == float("inf")


def test_cross_entropy_reads_no_pass_over_the_logits_when_every_position_counts() -> None:
    x, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    with lf.value_checks(True), OpLog() as mode:
        F.cross_entropy(x, y)
    assert "sum" not in mode.ops and "aminmax" not in mode.ops, mode.ops
    y[0] = -100  # an ignored row: the logits' own pass runs
    with lf.value_checks(True), OpLog() as mode:
        F.cross_entropy(x, y)
    assert "sum" in mode.ops, mode.ops
