"""Generalised dice loss (Sudre et al. 2017): float64 loop reference with MONAI's rule for absent
classes, MONAI parity (absent classes included), identities, edge cases and validation."""

from __future__ import annotations

import pytest
import torch
from _contract import LossCase, assert_close, contract_test_suite
from _region import (
    F64,
    IGNORE,
    binary_mask,
    inputs,
    monai_losses,
    probs_soft,
    reduce,
    sigmoid_dense,
    softmax_index,
    softmax_index_ignored,
)
from reference import region as ref

import lossforge as lf
import lossforge.functional as F

GDL = F.generalized_dice_loss


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _case(id_, kwargs, make, **kw):
    return LossCase(id_, GDL, lf.GeneralizedDiceLoss, kwargs, make, elementwise=False, **kw)


CASES = [
    _case("gdl", {}, softmax_index),
    _case("gdl_simple_cw", {"weight_type": "simple", "class_weight": [0.5, 1, 2]}, softmax_index),
    _case(
        "gdl_ignore",
        {"ignore_index": IGNORE, "include_background": False, "smooth": 1e-3},
        softmax_index_ignored,
        mean_is_count=False,
    ),
    _case(
        "gdl_sigmoid_uniform", {"activation": "sigmoid", "weight_type": "uniform"}, sigmoid_dense
    ),
    _case("gdl_binary", {"activation": "sigmoid", "smooth": 0.0}, binary_mask),
    _case("gdl_soft", {"activation": "none", "soft_label": True}, probs_soft, extreme=False),
]
globals().update(contract_test_suite(CASES))


def _reference(
    x,
    t,
    *,
    activation,
    batch,
    ignore_index,
    include_background,
    weight_type,
    nr,
    dr,
    soft,
    class_weight,
):
    """Per-sample (or batch) losses (N, 1) / (1,) and their validity."""
    classes, pairs = ref.entries(
        x,
        t,
        activation=activation,
        batch=batch,
        ignore_index=ignore_index,
        include_background=include_background,
    )
    groups = [None] if batch else list(range(x.shape[0]))
    losses, valid = [], []
    for n in groups:
        per_class = [pairs[c] if batch else pairs[(n, c)] for c in classes]
        volumes = [sum(g for _, g in ps) for ps in per_class]
        w = ref.gdl_weights(volumes, weight_type)
        if class_weight is not None:
            w = [wi * class_weight[c] for wi, c in zip(w, classes, strict=True)]
        losses.append(ref.pooled_dice(per_class, w, nr, dr, soft=soft))
        valid.append(any(per_class) or ignore_index is None)
    shape = (1,) if batch else (len(groups), 1)
    return (
        torch.tensor(losses, dtype=F64).reshape(shape),
        torch.tensor(valid, dtype=torch.bool).reshape(shape),
    )


SHAPES = [(3, 4), (2, 3, 4, 5), (3, 4, 2, 3, 3), (0, 3, 4)]
OPTIONS = [
    # weight_type, smooth_nr, smooth_dr, soft, class_weight, include_background
    ("square", 1e-5, 1e-5, False, None, True),
    ("simple", 0.0, 1e-3, True, [0.2, 1.0, 3.0, 0.5], True),
    ("uniform", 0.5, 0.5, False, None, False),
    ("square", 0.0, 0.0, False, [1.5, 0.0, 2.0, 1.0], False),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ignore", [False, True], ids=["all", "ignore"])
@pytest.mark.parametrize("batch", [False, True], ids=["per_sample", "batch"])
@pytest.mark.parametrize("kind", ["index", "dense"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "none"])
def test_matches_reference(shape, activation: str, kind: str, batch: bool, ignore: bool) -> None:
    x, t = inputs(shape, activation, kind, ignore, soft=kind == "dense" and activation == "none")
    if kind == "index" and shape[0] > 1 and len(shape) > 2:
        t[0] = torch.where(t[0] == 1, 0, t[0])  # class 1 absent from sample 0
    c = shape[1]
    ig = IGNORE if ignore else None
    for weight_type, nr, dr, soft, cw, background in OPTIONS:
        cw = None if cw is None else cw[:c]
        want, valid = _reference(
            x,
            t,
            activation=activation,
            batch=batch,
            ignore_index=ig,
            include_background=background,
            weight_type=weight_type,
            nr=nr,
            dr=dr,
            soft=soft,
            class_weight=cw,
        )
        kw = dict(
            weight_type=weight_type,
            activation=activation,
            smooth_nr=nr,
            smooth_dr=dr,
            soft_label=soft,
            batch=batch,
            ignore_index=ig,
            class_weight=cw,
            include_background=background,
        )
        for reduction in ("none", "mean", "sum"):
            got = GDL(x, t, reduction=reduction, **kw)
            assert got.dtype == F64
            assert_close(got, reduce(want, valid, reduction), F64, rtol=1e-7, atol=1e-9)


def test_hand_values() -> None:
    # two classes, p = probabilities as given; G = (3, 1): w = (1/9, 1)
    p = torch.tensor([[[0.9, 0.8, 0.6, 0.3], [0.1, 0.2, 0.4, 0.7]]], dtype=F64)
    g = torch.tensor([[[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]], dtype=F64)
    inter = (2.3 / 9) + 0.7
    card = (2.6 + 3.0) / 9 + (1.4 + 1.0)
    want = 1 - 2 * inter / card
    got = GDL(p, g, activation="none", smooth=0.0)
    assert_close(got, torch.tensor(want, dtype=F64), F64)


def test_uniform_is_pooled_dice() -> None:
    x, t = inputs((3, 4, 5, 6), "softmax", "index", True, seed=2)
    for kw in ({}, {"batch": True}, {"class_weight": [1.0, 0.5, 2.0, 0.0]}, {"soft_label": True}):
        kw = {**kw, "ignore_index": IGNORE, "smooth": 0.3, "reduction": "none"}
        assert_close(
            GDL(x, t, weight_type="uniform", **kw), F.dice_loss(x, t, pool_classes=True, **kw), F64
        )


def test_absent_classes_take_the_largest_present_weight() -> None:
    """MONAI's rule: predicting an absent class costs as much as the rarest present class."""
    t = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1]])  # class 2 absent; G = (6, 2, 0)
    p = torch.tensor(
        [[[0.8] * 6 + [0.1] * 2, [0.1] * 6 + [0.6] * 2, [0.1] * 6 + [0.3] * 2]], dtype=F64
    )
    got = GDL(p, t, activation="none", smooth=0.0)
    w = [1 / 36, 1 / 4, 1 / 4]  # the absent class gets max(1/36, 1/4)
    onehot = torch.nn.functional.one_hot(t, 3).movedim(-1, 1).to(F64)
    inter = (p * onehot).sum(-1)[0]
    card = (p + onehot).sum(-1)[0]
    want = 1 - 2 * sum(w[c] * inter[c] for c in range(3)) / sum(w[c] * card[c] for c in range(3))
    assert_close(got, torch.tensor(float(want), dtype=F64), F64)
    # and in batch mode the rule uses the batch volumes
    t2 = torch.cat([t, torch.tensor([[2, 2, 2, 2, 0, 0, 0, 0]])])
    p2 = torch.cat([p, p.flip(-1)])
    got = GDL(p2, t2, activation="none", smooth=0.0, batch=True, reduction="none")
    assert got.shape == (1,)


def test_no_class_present_gives_zero_with_zero_gradient() -> None:
    x = torch.randn(2, 3, 5, dtype=F64, requires_grad=True)
    t = torch.zeros(2, 3, 5, dtype=F64)
    t[1, 0, :2] = 1.0  # sample 1 has a class, sample 0 none
    none = GDL(x, t, activation="sigmoid", reduction="none")
    assert none[0].item() == 0.0  # every weight 0: 1 - s_nr / s_dr
    (grad,) = torch.autograd.grad(none[0].sum(), x)
    assert torch.all(grad == 0)
    assert none[1].item() > 0.0
    # with s_nr < s_dr an empty sample is 1 - s_nr / s_dr
    got = GDL(x, t, activation="sigmoid", smooth_nr=0.0, smooth_dr=1e-5, reduction="none")
    assert got[0].item() == 1.0


def test_all_ignored_and_empty() -> None:
    x = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    loss = GDL(x, torch.full((2, 4), IGNORE), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert torch.all(grad == 0)
    empty = torch.randn(0, 3, 4, dtype=F64, requires_grad=True)
    none = GDL(empty, torch.zeros(0, 4, dtype=torch.long), batch=True, reduction="none")
    assert none.shape == (1,)
    loss = GDL(empty, torch.zeros(0, 4, dtype=torch.long), batch=True)
    (grad,) = torch.autograd.grad(loss, empty)
    assert loss.item() == 0.0
    assert grad.shape == empty.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_large_volumes(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    x = (2 * torch.randn(2, 3, 64, 64, generator=g)).to(dtype).requires_grad_(True)
    t = torch.randint(0, 3, (2, 64, 64), generator=g)
    t[0][t[0] == 2] = 0
    got = GDL(x, t, smooth=0.0)
    want = GDL(x.detach().double(), t, smooth=0.0)
    assert got.dtype == torch.float32
    assert_close(got, want, torch.float32, rtol=1e-5, atol=1e-6)
    got.backward()
    assert torch.isfinite(x.grad).all()


def test_gradcheck_options() -> None:
    x, t = inputs((3, 3, 2, 2), "softmax", "index", True, seed=11)
    t[0] = torch.where(t[0] == 1, 0, t[0])
    x.requires_grad_(True)
    for kw in (
        {"batch": True},
        {"weight_type": "simple", "class_weight": [1.0, 2.0, 0.5], "smooth": 0.0},
        {"include_background": False, "smooth_nr": 0.0, "smooth_dr": 1e-3},
    ):
        assert torch.autograd.gradcheck(
            lambda inp, kw=kw: GDL(inp, t, ignore_index=IGNORE, reduction="none", **kw), (x,)
        )


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("background", [True, False])
def test_monai_parity(w_type: str, batch: bool, background: bool) -> None:
    ml = monai_losses()
    g = torch.Generator().manual_seed(7)
    x = 2 * torch.randn(4, 4, 5, 6, generator=g, dtype=F64)
    t = torch.randint(0, 4, (4, 5, 6), generator=g)
    t[0][t[0] == 3] = 1  # class 3 absent from sample 0
    t[1] = 0  # sample 1 has only the background
    t[2][t[2] >= 2] = 1  # classes 2 and 3 absent from sample 2
    for nr, dr, soft in ((1e-5, 1e-5, False), (0.0, 1e-5, True), (1e-3, 1e-2, False)):
        peer = ml.GeneralizedDiceLoss(
            include_background=background,
            to_onehot_y=True,
            softmax=True,
            w_type=w_type,
            smooth_nr=nr,
            smooth_dr=dr,
            batch=batch,
            soft_label=soft,
            reduction="none",
        )(x, t.unsqueeze(1))
        got = GDL(
            x,
            t,
            weight_type=w_type,
            smooth_nr=nr,
            smooth_dr=dr,
            batch=batch,
            soft_label=soft,
            include_background=background,
            reduction="none",
        )
        assert_close(got, peer.reshape(got.shape), F64, rtol=1e-7, atol=1e-12)
    # sigmoid multi-label with a sample where no class is present, mean reduction
    xs, ts = inputs((3, 3, 7), "sigmoid", "dense", False, seed=8)
    ts[0] = 0.0
    peer = ml.GeneralizedDiceLoss(sigmoid=True, w_type=w_type, batch=batch)(xs, ts)
    assert_close(GDL(xs, ts, activation="sigmoid", weight_type=w_type, batch=batch), peer, F64)


def test_validation_and_module() -> None:
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    for exc, match, kw in (
        (ValueError, r"generalized_dice_loss: expected `weight_type` one of", {"weight_type": "x"}),
        (
            ValueError,
            r"generalized_dice_loss: expected `smooth_nr` <= smooth_dr \(1e-05",
            {"smooth_nr": 1e-3},
        ),
        (
            ValueError,
            r"generalized_dice_loss: expected `weight` the loss shape \(2, 1\)",
            {"weight": torch.ones(2, 3)},
        ),
        (
            ValueError,
            r"generalized_dice_loss: expected `backend` 'triton' only",
            {"backend": "triton"},
        ),
    ):
        with pytest.raises(exc, match=match):
            GDL(x, t, **kw)
    from lossforge.registry import build_loss

    mod = build_loss({"type": "generalized_dice", "weight_type": "simple", "batch": True})
    assert isinstance(mod, lf.GeneralizedDiceLoss)
    assert "weight_type='simple'" in repr(mod)
    assert_close(mod(x, t), GDL(x, t, weight_type="simple", batch=True), torch.float32)


@pytest.mark.parametrize(
    "name",
    ["dice_loss", "generalized_dice_loss", "jaccard_loss", "tversky_loss", "focal_tversky_loss"],
)
def test_subnormal_smoothing_is_refused(name: str) -> None:
    """A subnormal smoothing term underflowed in float32 and gave NaN gradients (found by a
    precision audit: generalized dice, smooth=1e-40, all-negative sigmoid inputs); 0 and float32's
    smallest normal number are accepted and give finite gradients."""
    fn = getattr(F, name)
    x = torch.full((2, 1, 8, 8), -20.0, requires_grad=True)
    g = torch.zeros(2, 1, 8, 8)
    for kw, key in (
        ({"smooth": 1e-40}, "smooth"),
        ({"smooth_nr": 0.0, "smooth_dr": 1e-39}, "smooth_dr"),
    ):
        with pytest.raises(ValueError, match=f"expected `{key}` 0 or >= 1.18e-38"):
            fn(x, g, activation="sigmoid", **kw)
    for smooth in (0.0, torch.finfo(torch.float32).tiny, 1e-30):
        x.grad = None
        fn(x, g, activation="sigmoid", smooth=smooth).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), smooth
