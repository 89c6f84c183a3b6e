"""Soft Jaccard (IoU) loss: float64 loop reference, identities with dice and Tversky, SMP / MONAI /
kornia parity, edge cases and validation."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from _contract import LossCase, assert_close, contract_test_suite
from _region import (
    F64,
    IGNORE,
    binary_mask,
    inputs,
    kornia_losses,
    monai_losses,
    probs_soft,
    reduce,
    sigmoid_dense,
    smp_losses,
    softmax_index,
    softmax_index_ignored,
)
from reference import region as ref

import lossforge as lf
import lossforge.functional as F


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


J = F.jaccard_loss
CASES = [
    LossCase("jaccard", J, lf.JaccardLoss, {}, softmax_index, elementwise=False),
    LossCase(
        "jaccard_squared_cw",
        J,
        lf.JaccardLoss,
        {"squared": True, "class_weight": [0.5, 1.0, 2.0], "smooth": 0.5},
        softmax_index,
        elementwise=False,
    ),
    LossCase(
        "jaccard_ignore",
        J,
        lf.JaccardLoss,
        {"ignore_index": IGNORE, "include_background": False},
        softmax_index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "jaccard_sigmoid",
        J,
        lf.JaccardLoss,
        {"activation": "sigmoid", "smooth_nr": 0.0, "smooth_dr": 1e-3},
        sigmoid_dense,
        elementwise=False,
    ),
    LossCase(
        "jaccard_binary",
        J,
        lf.JaccardLoss,
        {"activation": "sigmoid", "smooth": 0.0},
        binary_mask,
        elementwise=False,
    ),
    LossCase(
        "jaccard_soft",
        J,
        lf.JaccardLoss,
        {"activation": "none", "soft_label": True},
        probs_soft,
        elementwise=False,
        extreme=False,
    ),
]
globals().update(contract_test_suite(CASES))


SHAPES = [(3, 4), (2, 3, 4, 5), (2, 3, 2, 3, 3), (0, 3, 4)]
OPTIONS = [
    # smooth_nr, smooth_dr, squared, soft, class_weight, include_background
    (1.0, 1.0, False, False, None, True),
    (0.0, 1e-5, True, False, [0.2, 1.0, 3.0, 0.5], True),
    (0.5, 0.5, False, True, None, False),
    (0.0, 0.0, False, False, [1.5, 0.0, 2.0, 1.0], True),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ignore", [False, True], ids=["all", "ignore"])
@pytest.mark.parametrize("batch", [False, True], ids=["per_sample", "batch"])
@pytest.mark.parametrize("kind", ["index", "dense"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "none"])
def test_matches_reference(shape, activation: str, kind: str, batch: bool, ignore: bool) -> None:
    x, t = inputs(shape, activation, kind, ignore, soft=kind == "dense" and activation == "none")
    c = shape[1]
    ig = IGNORE if ignore else None
    for nr, dr, squared, soft, cw, background in OPTIONS:
        cw = None if cw is None else cw[:c]
        classes, pairs = ref.entries(
            x,
            t,
            activation=activation,
            batch=batch,
            ignore_index=ig,
            include_background=background,
        )
        want, valid = ref.per_entry(
            classes,
            pairs,
            partial(ref.jaccard, nr=nr, dr=dr, squared=squared, soft=soft),
            batch=batch,
            n=shape[0],
            class_weight=cw,
            ignore=ignore,
        )
        kw = dict(
            activation=activation,
            smooth_nr=nr,
            smooth_dr=dr,
            squared=squared,
            soft_label=soft,
            batch=batch,
            ignore_index=ig,
            class_weight=cw,
            include_background=background,
        )
        for reduction in ("none", "mean", "sum"):
            got = F.jaccard_loss(x, t, reduction=reduction, **kw)
            assert got.dtype == F64
            assert_close(got, reduce(want, valid, reduction), F64)


def test_hand_values() -> None:
    p = torch.tensor([[[0.5, 1.0]]], dtype=F64)
    g = torch.tensor([[[1.0, 0.0]]], dtype=F64)
    # I = 0.5, U = 0.5 + 1 + 1 - 0.5 = 2
    assert_close(J(p, g, activation="none", smooth=0.0), torch.tensor(0.75, dtype=F64), F64)
    # smooth 1: 1 - 1.5 / 3
    assert_close(J(p, g, activation="none"), torch.tensor(0.5, dtype=F64), F64)
    # squared: U = 0.25 + 1 + 1 - 0.5 = 1.75
    got = J(p, g, activation="none", smooth=0.0, squared=True)
    assert_close(got, torch.tensor(1 - 0.5 / 1.75, dtype=F64), F64)


def test_identities_with_dice_and_tversky() -> None:
    x, t = inputs((2, 3, 4, 5), "softmax", "index", True, seed=3)
    kw = dict(ignore_index=IGNORE, reduction="none")
    jac = J(x, t, smooth=0.0, **kw)
    dice = F.dice_loss(x, t, smooth=0.0, **kw)
    d = 1 - dice
    assert_close(1 - jac, d / (2 - d), F64)  # J = D / (2 - D)
    assert torch.all(jac >= dice - 1e-12)
    for extra in ({}, {"soft_label": True}, {"smooth_nr": 0.0, "smooth_dr": 0.1, "batch": True}):
        assert_close(
            J(x, t, **extra, **kw), F.tversky_loss(x, t, alpha=1.0, beta=1.0, **extra, **kw), F64
        )


def test_soft_label() -> None:
    x, t = inputs((2, 3, 6), "sigmoid", "dense", False, seed=5)
    kw = dict(activation="sigmoid", reduction="none")
    assert_close(J(x, t, soft_label=True, **kw), J(x, t, **kw), F64)
    soft = torch.rand(2, 3, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.all(J(soft, soft, activation="none", soft_label=True, reduction="none") < 1e-15)
    assert torch.all(J(soft, soft, activation="none", reduction="none") > 1e-3)


@pytest.mark.parametrize("batch", [False, True])
def test_empty_ground_truth_and_all_ignored(batch: bool) -> None:
    g = torch.zeros(2, 1, 4, 4, dtype=F64)
    assert J(torch.zeros_like(g), g, activation="none", batch=batch).item() == 0.0
    p0 = torch.zeros_like(g, requires_grad=True)
    z = J(p0, g, activation="none", smooth=0.0, batch=batch)
    (gr,) = torch.autograd.grad(z, p0)
    assert z.item() == 0.0
    assert torch.all(gr == 0)
    full = J(torch.ones_like(g), g, activation="none", batch=batch)
    assert_close(full, torch.tensor(1 - 1 / (33.0 if batch else 17.0), dtype=F64), F64)
    x = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    loss = J(x, torch.full((2, 4), IGNORE), ignore_index=IGNORE, batch=batch)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert torch.all(grad == 0)


def test_gradcheck_options() -> None:
    x, t = inputs((2, 3, 2, 2), "softmax", "index", True, seed=11)
    x.requires_grad_(True)
    for kw in (
        {"batch": True, "squared": True},
        {"smooth": 0.0, "class_weight": [1.0, 2.0, 0.5]},
        {"include_background": False, "smooth_nr": 0.0, "smooth_dr": 0.5},
    ):
        assert torch.autograd.gradcheck(
            lambda inp, kw=kw: J(inp, t, ignore_index=IGNORE, reduction="none", **kw), (x,)
        )
    p = (0.1 + 0.8 * torch.rand(2, 3, 4, dtype=F64)).requires_grad_(True)
    y = torch.rand(2, 3, 4, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda inp: J(inp, y, activation="none", soft_label=True, batch=True), (p,)
    )


# --------------------------------------------------------------------------------------------------
# Peers.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_smp_jaccard_parity(smooth: float) -> None:
    sl = smp_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", True, seed=23)
    t[t == 3] = 1  # class 3 absent from the batch
    none = J(
        x,
        t,
        smooth=smooth,
        batch=True,
        soft_label=True,
        ignore_index=IGNORE,
        reduction="none",
    )
    present = torch.stack([(t == c).any() for c in range(4)])
    peer = sl.JaccardLoss("multiclass", smooth=smooth, ignore_index=IGNORE)(x, t)
    # SMP zeroes the classes absent from the batch and keeps them in the class mean
    assert_close((none * present).mean(), peer, F64, rtol=1e-10, atol=1e-12)
    # multilabel (sigmoid per channel, dense masks)
    xs, ts = inputs((3, 3, 5, 6), "sigmoid", "dense", False, seed=24)
    peer = sl.JaccardLoss("multilabel", smooth=smooth)(xs, ts)
    none = J(
        xs, ts, activation="sigmoid", smooth=smooth, batch=True, soft_label=True, reduction="none"
    )
    present = ts.sum((0, 2, 3)) > 0
    assert_close((none * present).mean(), peer, F64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_monai_jaccard_parity(batch: bool, squared: bool) -> None:
    ml = monai_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", True, seed=25)
    for nr, dr in ((1e-5, 1e-5), (0.0, 1e-5), (1.0, 2.0)):
        peer = ml.DiceLoss(
            to_onehot_y=True,
            softmax=True,
            jaccard=True,
            squared_pred=squared,
            smooth_nr=nr,
            smooth_dr=dr,
            batch=batch,
            ignore_index=IGNORE,
            reduction="none",
        )(x, t.unsqueeze(1))
        # MONAI's Jaccard is (2I + s_nr) / (2U + s_dr): its smoothing terms are twice ours
        got = J(
            x,
            t,
            smooth_nr=nr / 2,
            smooth_dr=dr / 2,
            squared=squared,
            batch=batch,
            ignore_index=IGNORE,
            reduction="none",
        )
        # MONAI's one-hot target is float32, and its squared path takes the target's norm through
        # a square root and a square in that dtype: ~1e-7 relative off the float64 sums.
        tol = dict(rtol=2e-7, atol=1e-9) if squared else dict(rtol=1e-10, atol=1e-12)
        assert_close(got, peer.reshape(got.shape), F64, **tol)


def test_kornia_parity_through_tversky_one_one() -> None:
    """kornia has no Jaccard loss; its Tversky loss with alpha = beta = 1 is one."""
    kl = kornia_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", False, seed=26)
    peer = kl.tversky_loss(x, t, 1.0, 1.0, eps=1e-8)
    none = J(x, t, smooth_nr=0.0, smooth_dr=1e-8, reduction="none")
    present = torch.nn.functional.one_hot(t, 4).flatten(1, 2).sum(1) > 0
    assert_close(((none * present).sum(1) / present.sum(1)).mean(), peer, F64, rtol=1e-10)


def test_validation_and_module() -> None:
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    for exc, match, kw in (
        (ValueError, r"jaccard_loss: expected `smooth` in \[0, inf\]", {"smooth": -1.0}),
        (
            ValueError,
            r"jaccard_loss: expected `smooth` None when smooth_nr",
            {
                "smooth": 0.5,
                "smooth_nr": 0.0,
            },
        ),
        (ValueError, r"jaccard_loss: expected `smooth_nr` <= smooth_dr", {"smooth_nr": 2.0}),
        (TypeError, r"jaccard_loss: expected `squared` a bool", {"squared": "yes"}),
        (
            ValueError,
            r"jaccard_loss: expected `weight` the loss shape \(2, 3\)",
            {"weight": torch.ones(5)},
        ),
    ):
        with pytest.raises(exc, match=match):
            J(x, t, **kw)
    from lossforge.registry import build_loss

    mod = build_loss({"type": "jaccard", "batch": True, "soft_label": True})
    assert isinstance(mod, lf.JaccardLoss)
    assert "soft_label=True" in repr(mod)
    assert_close(mod(x, t), J(x, t, batch=True, soft_label=True), torch.float32)
