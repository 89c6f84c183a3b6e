"""Tversky and focal Tversky losses: float64 loop references (Salehi et al. 2017, Abraham & Khan
2019), identities with dice and Jaccard, MONAI / kornia / SMP parity, edge cases and validation."""

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


def _case(id_, fn, mod, kwargs, make, **kw):
    return LossCase(id_, fn, mod, kwargs, make, elementwise=False, **kw)


T, FT = F.tversky_loss, F.focal_tversky_loss
CASES = [
    _case("tversky", T, lf.TverskyLoss, {}, softmax_index),
    _case(
        "tversky_fn_heavy_cw",
        T,
        lf.TverskyLoss,
        {"alpha": 0.3, "beta": 0.7, "class_weight": [0.5, 1.0, 2.0]},
        softmax_index,
    ),
    _case(
        "tversky_ignore_beta",
        T,
        lf.TverskyLoss,
        {"ignore_index": IGNORE, "beta": 0.9},
        softmax_index_ignored,
        mean_is_count=False,
    ),
    _case(
        "tversky_sigmoid",
        T,
        lf.TverskyLoss,
        {"activation": "sigmoid", "smooth_nr": 0.0, "smooth_dr": 1e-5},
        sigmoid_dense,
    ),
    _case(
        "tversky_binary", T, lf.TverskyLoss, {"activation": "sigmoid", "smooth": 0.0}, binary_mask
    ),
    _case(
        "tversky_soft",
        T,
        lf.TverskyLoss,
        {"activation": "none", "soft_label": True},
        probs_soft,
        extreme=False,
    ),
    _case("focal_tversky", FT, lf.FocalTverskyLoss, {}, softmax_index),
    _case(
        "focal_tversky_g2_ignore",
        FT,
        lf.FocalTverskyLoss,
        {"gamma": 2.0, "ignore_index": IGNORE, "include_background": False},
        softmax_index_ignored,
        mean_is_count=False,
    ),
    _case(
        "focal_tversky_sigmoid",
        FT,
        lf.FocalTverskyLoss,
        {"activation": "sigmoid", "gamma": 0.5},
        sigmoid_dense,
    ),
    _case(
        "focal_tversky_soft",
        FT,
        lf.FocalTverskyLoss,
        {"activation": "none", "soft_label": True, "gamma": 1.5},
        probs_soft,
        extreme=False,
    ),
]
globals().update(contract_test_suite(CASES))


# --------------------------------------------------------------------------------------------------
# Against the float64 loop reference (written from the papers' formulas).
# --------------------------------------------------------------------------------------------------

SHAPES = [(3, 4), (2, 3, 4, 5), (2, 3, 2, 3, 3), (0, 3, 4)]
OPTIONS = [
    # alpha, beta, gamma, smooth_nr, smooth_dr, soft, class_weight, include_background
    (0.5, 0.5, 1.0, 1.0, 1.0, False, None, True),
    (0.3, 0.7, 0.75, 0.0, 1e-5, False, [0.2, 1.0, 3.0, 0.5], True),
    (0.7, 0.3, 2.0, 0.5, 0.5, True, None, False),
    (1.0, 0.0, 1.5, 0.0, 0.0, False, [1.5, 0.0, 2.0, 1.0], True),
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
    for alpha, beta, gamma, nr, dr, soft, cw, background in OPTIONS:
        cw = None if cw is None else cw[:c]
        classes, pairs = ref.entries(
            x,
            t,
            activation=activation,
            batch=batch,
            ignore_index=ig,
            include_background=background,
        )
        kw = dict(
            alpha=alpha,
            beta=beta,
            activation=activation,
            smooth_nr=nr,
            smooth_dr=dr,
            soft_label=soft,
            batch=batch,
            ignore_index=ig,
            class_weight=cw,
            include_background=background,
        )
        args = dict(alpha=alpha, beta=beta, nr=nr, dr=dr, soft=soft)
        common = dict(batch=batch, n=shape[0], class_weight=cw, ignore=ignore)
        want_t, valid = ref.per_entry(classes, pairs, partial(ref.tversky, **args), **common)
        want_f, _ = ref.per_entry(
            classes,
            pairs,
            partial(ref.focal_tversky, gamma=gamma, **args),
            **common,
        )
        for reduction in ("none", "mean", "sum"):
            got = F.tversky_loss(x, t, reduction=reduction, **kw)
            assert got.dtype == F64
            assert_close(got, reduce(want_t, valid, reduction), F64)
            got = F.focal_tversky_loss(x, t, gamma=gamma, reduction=reduction, **kw)
            assert_close(got, reduce(want_f, valid, reduction), F64)


def test_hand_values() -> None:
    # p = [0.8, 0.1, 0.6], g = [1, 0, 0]: TP = 0.8, FP = 0.7, FN = 0.2
    p = torch.tensor([[[0.8, 0.1, 0.6]]], dtype=F64)
    g = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=F64)
    got = F.tversky_loss(p, g, activation="none", alpha=0.3, beta=0.7, smooth=0.0)
    ti = 0.8 / (0.8 + 0.3 * 0.7 + 0.7 * 0.2)
    assert_close(got, torch.tensor(1 - ti, dtype=F64), F64)
    got = F.focal_tversky_loss(p, g, activation="none", alpha=0.3, beta=0.7, smooth=0.0)
    assert_close(got, torch.tensor((1 - ti) ** 0.75, dtype=F64), F64)
    # smoothing 1 in numerator and denominator
    got = F.tversky_loss(p, g, activation="none", alpha=0.3, beta=0.7)
    assert_close(got, torch.tensor(1 - 1.8 / (1.8 + 0.21 + 0.14), dtype=F64), F64)


# --------------------------------------------------------------------------------------------------
# Identities.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("batch", [False, True])
def test_half_half_is_dice_with_doubled_smoothing(activation: str, batch: bool) -> None:
    x, t = inputs((2, 3, 4, 5), activation, "index", True, seed=3)
    for s in (0.0, 0.5, 1.0):
        kw = dict(activation=activation, batch=batch, ignore_index=IGNORE, reduction="none")
        got = F.tversky_loss(x, t, alpha=0.5, beta=0.5, smooth=s, **kw)
        assert_close(got, F.dice_loss(x, t, smooth=2 * s, **kw), F64)
    # with separate terms as well
    kw = dict(activation=activation, batch=batch, ignore_index=IGNORE)
    got = F.tversky_loss(x, t, smooth_nr=0.0, smooth_dr=0.25, **kw)
    assert_close(got, F.dice_loss(x, t, smooth_nr=0.0, smooth_dr=0.5, **kw), F64)


def test_one_one_is_jaccard_and_gamma_one_is_tversky() -> None:
    x, t = inputs((2, 3, 4, 5), "softmax", "index", True, seed=4)
    for kw in ({}, {"smooth": 0.0}, {"soft_label": True, "batch": True}):
        kw = {**kw, "ignore_index": IGNORE, "reduction": "none"}
        assert_close(
            F.tversky_loss(x, t, alpha=1.0, beta=1.0, **kw), F.jaccard_loss(x, t, **kw), F64
        )
        tv = F.tversky_loss(x, t, alpha=0.2, beta=0.8, **kw)
        assert_close(F.focal_tversky_loss(x, t, alpha=0.2, beta=0.8, gamma=1.0, **kw), tv, F64)
        assert_close(
            F.focal_tversky_loss(x, t, alpha=0.2, beta=0.8, gamma=0.5, **kw), tv.sqrt(), F64
        )


def test_soft_label_equals_products_for_hard_targets_and_is_zero_at_p_equals_g() -> None:
    x, t = inputs((2, 3, 6), "sigmoid", "dense", False, seed=5)
    kw = dict(activation="sigmoid", reduction="none", alpha=0.3, beta=0.7)
    assert_close(F.tversky_loss(x, t, soft_label=True, **kw), F.tversky_loss(x, t, **kw), F64)
    soft = torch.rand(2, 3, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    zero = F.tversky_loss(soft, soft, activation="none", soft_label=True, reduction="none")
    assert torch.all(zero.abs() < 1e-15)
    # the product form does not reach 0 at p = g for soft targets
    assert torch.all(F.tversky_loss(soft, soft, activation="none", reduction="none") > 1e-3)


def test_beta_penalises_false_negatives_more() -> None:
    g = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=F64)
    misses = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=F64)  # one false negative
    extra = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=F64)  # one false positive
    kw = dict(activation="none", alpha=0.3, beta=0.7, smooth=0.0)
    assert F.tversky_loss(misses, g, **kw) > F.tversky_loss(extra, g, **kw)
    kw["alpha"], kw["beta"] = 0.7, 0.3
    assert F.tversky_loss(misses, g, **kw) < F.tversky_loss(extra, g, **kw)


# --------------------------------------------------------------------------------------------------
# Edge cases.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [F.tversky_loss, F.focal_tversky_loss])
@pytest.mark.parametrize("batch", [False, True])
def test_empty_ground_truth(fn, batch: bool) -> None:
    g = torch.zeros(2, 1, 4, 4, dtype=F64)
    assert fn(torch.zeros_like(g), g, activation="none", batch=batch).item() == 0.0
    p0 = torch.zeros_like(g, requires_grad=True)
    z = fn(p0, g, activation="none", smooth=0.0, batch=batch)
    (gr,) = torch.autograd.grad(z, p0)
    assert z.item() == 0.0
    assert torch.all(gr == 0)
    x = torch.full_like(g, 30.0, requires_grad=True)  # everything predicted, nothing there
    loss = fn(x, g, activation="sigmoid", batch=batch)
    (grad,) = torch.autograd.grad(loss, x)
    assert 0.0 < loss.item() < 1.0
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("gamma", [0.25, 0.75, 1.0, 3.0])
def test_focal_tversky_perfect_prediction_has_zero_finite_gradient(gamma: float) -> None:
    g = (torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(2)) < 0.5).to(F64)
    p = g.clone().requires_grad_(True)
    loss = F.focal_tversky_loss(p, g, activation="none", gamma=gamma, reduction="sum")
    (grad,) = torch.autograd.grad(loss, p)
    assert loss.item() == 0.0
    assert torch.isfinite(grad).all()
    # near-perfect: finite, and a smaller gamma gives a larger loss
    x = (8.0 * (2 * g - 1)).requires_grad_(True)
    near = F.focal_tversky_loss(x, g, activation="sigmoid", gamma=gamma)
    (grad,) = torch.autograd.grad(near, x)
    assert torch.isfinite(grad).all()
    tv = F.tversky_loss(x, g, activation="sigmoid", alpha=0.3, beta=0.7, reduction="none")
    if gamma < 1:
        assert near.item() > tv.mean().item()


def test_all_ignored_and_one_class() -> None:
    x = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    t = torch.full((2, 4), IGNORE)
    for fn in (F.tversky_loss, F.focal_tversky_loss):
        loss = fn(x, t, ignore_index=IGNORE)
        (grad,) = torch.autograd.grad(loss, x)
        assert loss.item() == 0.0
        assert torch.all(grad == 0)
    # a single sigmoid channel with a (N, *) mask
    xb = torch.randn(3, 1, 4, 4, dtype=F64)
    m = torch.rand(3, 4, 4) < 0.5
    a = F.tversky_loss(xb, m, activation="sigmoid", reduction="none")
    b = F.tversky_loss(xb, m.unsqueeze(1).to(F64), activation="sigmoid", reduction="none")
    assert a.shape == (3, 1)
    assert_close(a, b, F64)


def test_gradcheck_options() -> None:
    x, t = inputs((2, 3, 2, 2), "softmax", "index", True, seed=11)
    x.requires_grad_(True)
    for fn, kw in (
        (F.tversky_loss, {"batch": True, "alpha": 0.2, "beta": 0.9, "ignore_index": IGNORE}),
        (F.tversky_loss, {"smooth": 0.0, "ignore_index": IGNORE, "class_weight": [1, 2, 0.5]}),
        (F.focal_tversky_loss, {"gamma": 0.6, "ignore_index": IGNORE}),
        (
            F.focal_tversky_loss,
            {"gamma": 2.5, "batch": True, "include_background": False, "ignore_index": IGNORE},
        ),
    ):
        assert torch.autograd.gradcheck(
            lambda inp, fn=fn, kw=kw: fn(inp, t, reduction="none", **kw), (x,)
        )
    p = (0.1 + 0.8 * torch.rand(2, 3, 4, dtype=F64)).requires_grad_(True)
    y = torch.rand(2, 3, 4, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda inp: F.focal_tversky_loss(inp, y, activation="none", soft_label=True), (p,)
    )


# --------------------------------------------------------------------------------------------------
# Peers.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("soft", [False, True])
def test_monai_tversky_parity(batch: bool, background: bool, soft: bool) -> None:
    ml = monai_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", True, seed=20)
    for alpha, beta, nr, dr in ((0.5, 0.5, 1e-5, 1e-5), (0.3, 0.7, 0.0, 1e-5), (0.8, 0.2, 1, 1)):
        peer = ml.TverskyLoss(
            include_background=background,
            to_onehot_y=True,
            softmax=True,
            alpha=alpha,
            beta=beta,
            smooth_nr=nr,
            smooth_dr=dr,
            batch=batch,
            soft_label=soft,
            ignore_index=IGNORE,
            reduction="none",
        )(x, t.unsqueeze(1))
        got = F.tversky_loss(
            x,
            t,
            alpha=alpha,
            beta=beta,
            smooth_nr=nr,
            smooth_dr=dr,
            batch=batch,
            soft_label=soft,
            ignore_index=IGNORE,
            include_background=background,
            reduction="none",
        )
        assert_close(got, peer.reshape(got.shape), F64, rtol=1e-10, atol=1e-12)
    # sigmoid, dense multi-label targets, mean
    xs, ts = inputs((2, 3, 7), "sigmoid", "dense", False, seed=21)
    peer = ml.TverskyLoss(sigmoid=True, alpha=0.4, beta=0.6, batch=batch)(xs, ts)
    got = F.tversky_loss(
        xs, ts, activation="sigmoid", alpha=0.4, beta=0.6, smooth=1e-5, batch=batch
    )
    assert_close(got, peer, F64, rtol=1e-10, atol=1e-12)


def test_kornia_tversky_parity() -> None:
    kl = kornia_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", True, seed=22)
    t[0, :, :3] = 0  # a sample where some classes are absent
    t[0, :, 3:] = 1
    for alpha, beta in ((0.5, 0.5), (0.3, 0.7), (1.0, 1.0)):
        for ignore in (None, IGNORE):
            tt = t if ignore is not None else torch.where(t == IGNORE, 2, t)
            peer = kl.tversky_loss(x, tt, alpha, beta, eps=1e-8, ignore_index=ignore or -100)
            none = F.tversky_loss(
                x,
                tt,
                alpha=alpha,
                beta=beta,
                smooth_nr=0.0,
                smooth_dr=1e-8,
                ignore_index=ignore,
                reduction="none",
            )
            # kornia averages the classes present in each sample's target, then the samples
            onehot = torch.nn.functional.one_hot(torch.where(tt == IGNORE, 0, tt), 4)
            onehot = onehot * (tt != IGNORE).unsqueeze(-1)
            present = onehot.flatten(1, 2).sum(1) > 0
            per_sample = (none * present).sum(1) / present.sum(1)
            assert_close(per_sample.mean(), peer, F64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.75, 2.0])
def test_smp_tversky_parity(gamma: float) -> None:
    sl = smp_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", True, seed=23)
    t[:, 0] = 0
    t[t == 3] = 1  # class 3 absent from the batch
    for alpha, beta, smooth in ((0.5, 0.5, 0.0), (0.3, 0.7, 1.0)):
        peer = sl.TverskyLoss(
            "multiclass",
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            smooth=smooth,
            ignore_index=IGNORE,
        )(x, t)
        none = F.tversky_loss(
            x,
            t,
            alpha=alpha,
            beta=beta,
            smooth=smooth,
            batch=True,
            soft_label=True,
            ignore_index=IGNORE,
            reduction="none",
        )
        present = torch.stack([(t == c).any() for c in range(4)])
        # SMP zeroes absent classes, keeps them in the class mean and raises the mean to gamma
        assert_close((none * present).mean() ** gamma, peer, F64, rtol=1e-10, atol=1e-12)
    # one binary channel: SMP's (mean over one class) ** gamma is the focal Tversky loss
    xb = torch.randn(3, 1, 5, 6, dtype=F64)
    mb = (torch.rand(3, 5, 6) < 0.4).long()
    peer = sl.TverskyLoss("binary", alpha=0.3, beta=0.7, gamma=gamma)(xb, mb)
    got = F.focal_tversky_loss(
        xb,
        mb,
        activation="sigmoid",
        alpha=0.3,
        beta=0.7,
        gamma=gamma,
        smooth=0.0,
        batch=True,
        soft_label=True,
        index_target=False,  # SMP's "binary" mode takes (N, H, W) integer masks
    )
    assert_close(got, peer, F64, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Validation, module, registry.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [F.tversky_loss, F.focal_tversky_loss])
def test_validation_errors(fn) -> None:
    name = fn.__name__
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    for exc, match, kw in (
        (ValueError, rf"{name}: expected `alpha` in \[0, inf\], got -0.1", {"alpha": -0.1}),
        (ValueError, rf"{name}: expected `beta` in \[0, inf\]", {"beta": -1.0}),
        (ValueError, rf"{name}: expected `alpha` alpha \+ beta > 0", {"alpha": 0, "beta": 0.0}),
        (
            ValueError,
            rf"{name}: expected `smooth` None when smooth_nr or smooth_dr is given",
            {"smooth": 1.0, "smooth_dr": 2.0},
        ),
        (ValueError, rf"{name}: expected `smooth_nr` <= smooth_dr \(1e-05", {"smooth_dr": 1e-5}),
        (
            ValueError,
            rf"{name}: expected `smooth_nr` <= smooth_dr \(0",
            {"smooth_nr": 0.1, "smooth_dr": 0.0},
        ),
        (ValueError, rf"{name}: expected `activation` one of", {"activation": "relu"}),
        (TypeError, rf"{name}: expected `soft_label` a bool", {"soft_label": 1}),
        (
            ValueError,
            rf"{name}: expected `class_weight` a 1-d tensor of length C=3",
            {"class_weight": [1.0]},
        ),
        (ValueError, rf"{name}: expected `backend` 'triton' only with CUDA", {"backend": "triton"}),
    ):
        with pytest.raises(exc, match=match):
            fn(x, t, **kw)
    if fn is F.focal_tversky_loss:
        with pytest.raises(ValueError, match=r"expected `gamma` in \(0, inf\]"):
            fn(x, t, gamma=0.0)


def test_modules_registry_and_build() -> None:
    from lossforge.registry import build_loss, get_loss

    assert get_loss("tversky") is lf.TverskyLoss
    assert get_loss("focal_tversky") is lf.FocalTverskyLoss
    mod = build_loss({"type": "focal_tversky", "gamma": 1.5, "class_weight": [1, 2, 3]})
    assert "class_weight" in dict(mod.named_buffers())
    assert "gamma=1.5" in repr(mod)
    x, t = inputs((2, 3, 4, 5), "softmax", "index", False, seed=30)
    assert_close(mod(x, t), F.focal_tversky_loss(x, t, gamma=1.5, class_weight=[1, 2, 3]), F64)
    with pytest.raises(ValueError, match=r"TverskyLoss: expected `smooth_nr` <= smooth_dr"):
        lf.TverskyLoss(smooth_nr=1.0, smooth_dr=0.5)
    with pytest.raises(ValueError, match=r"FocalTverskyLoss: expected `alpha` alpha \+ beta > 0"):
        lf.FocalTverskyLoss(alpha=0.0, beta=0.0)


@pytest.mark.parametrize("gamma", [1.0, 0.75])
@pytest.mark.parametrize("sharp", [3.0, 4.0])
def test_float32_keeps_relative_precision_near_a_perfect_score(gamma: float, sharp: float) -> None:
    """Confident, correct predictions (losses of 5e-2 down to 2.5e-3 per entry): float32 within
    2e-6 relative of float64 (measured: at most 7.3e-7). Written as ``1 - TI``, the loss lost
    its digits to the subtraction (4e-6 to 4e-5 relative here, 8e-4 at 5e-5); as
    ``(alpha FP + beta FN) / (TP + alpha FP + beta FN)`` it keeps them, and the false positives'
    sum is taken directly, not as ``P - TP``."""
    g = torch.Generator().manual_seed(50)
    t = torch.randint(0, 4, (2, 64, 64), generator=g)
    one_hot = torch.nn.functional.one_hot(t, 4).movedim(-1, 1).double()
    x = (2 * one_hot - 1) * sharp + torch.randn(2, 4, 64, 64, generator=g, dtype=torch.float64)
    kw = {"alpha": 0.3, "beta": 0.7, "gamma": gamma, "smooth": 1e-5, "reduction": "none"}
    want = F.focal_tversky_loss(x, t, **kw)
    got = F.focal_tversky_loss(x.float(), t, **kw).double()
    assert float(((got - want).abs() / want).max()) < 2e-6
