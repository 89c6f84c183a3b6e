"""Dice loss: float64 loop references (V-Net formula), identities, empty ground truth, ignore_index,
batch dice, class weights, the module, validation and properties."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import dice as ref

import lossforge as lf
import lossforge.functional as F
from lossforge import value_checks

F64 = torch.float64
IGNORE = 255


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: one intra-op thread avoids oversubscribing a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------
# Contract suite (dice is not element-wise: "none" has shape (N, C)).
# --------------------------------------------------------------------------------------------------


def _softmax_index(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 3, 2, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 3, (n, 2, 3), generator=g)


def _softmax_index_ignored(n: int, dtype: torch.dtype, g: torch.Generator):
    x, t = _softmax_index(n, dtype, g)
    t = torch.where(torch.rand(t.shape, generator=g) < 0.3, torch.full_like(t, IGNORE), t)
    return x, t


def _sigmoid_dense(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 4, 5, generator=g, dtype=F64)).to(dtype)
    return x, (torch.rand(n, 4, 5, generator=g, dtype=F64) < 0.4).to(F64)


def _binary_mask(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 1, 3, 5, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 3, 5, generator=g) < 0.5


def _probs(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (0.05 + 0.9 * torch.rand(n, 3, 7, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 3, 7, generator=g, dtype=F64)


CASES = [
    LossCase("softmax", F.dice_loss, lf.DiceLoss, {}, _softmax_index, elementwise=False),
    LossCase(
        "softmax_squared_cw",
        F.dice_loss,
        lf.DiceLoss,
        {"squared": True, "class_weight": [0.5, 1.0, 2.0], "smooth": 0.5},
        _softmax_index,
        elementwise=False,
    ),
    LossCase(
        "softmax_ignore",
        F.dice_loss,
        lf.DiceLoss,
        {"ignore_index": IGNORE, "include_background": False},
        _softmax_index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "sigmoid",
        F.dice_loss,
        lf.DiceLoss,
        {"activation": "sigmoid"},
        _sigmoid_dense,
        elementwise=False,
    ),
    LossCase(
        "sigmoid_binary_smooth0",
        F.dice_loss,
        lf.DiceLoss,
        {"activation": "sigmoid", "smooth": 0.0},
        _binary_mask,
        elementwise=False,
    ),
    LossCase(
        "none_squared",
        F.dice_loss,
        lf.DiceLoss,
        {"activation": "none", "squared": True},
        _probs,
        elementwise=False,
        extreme=False,
    ),
]
globals().update(contract_test_suite(CASES))


# --------------------------------------------------------------------------------------------------
# Against the float64 loop reference.
# --------------------------------------------------------------------------------------------------

SHAPES = [(3, 4), (2, 3, 4, 5), (2, 3, 2, 3, 3), (1, 3, 7, 1), (0, 3, 4)]


def _inputs(shape, activation: str, kind: str, ignore: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, c = shape[0], shape[1]
    spatial = (n,) + tuple(shape[2:])
    if activation == "none":
        x = torch.rand(shape, generator=g, dtype=F64)
    else:
        x = 2 * torch.randn(shape, generator=g, dtype=F64)
    if kind == "index":
        high = c + 1 if activation == "sigmoid" else c  # sigmoid: index C = background
        t = torch.randint(0, high, spatial, generator=g)
        if ignore:
            t = torch.where(torch.rand(spatial, generator=g) < 0.3, torch.full_like(t, IGNORE), t)
    else:
        t = torch.rand(shape, generator=g, dtype=F64)
        if activation == "sigmoid":
            t = (t < 0.4).to(F64)
        if ignore:
            t = torch.where(torch.rand(shape, generator=g) < 0.3, torch.full_like(t, IGNORE), t)
    return x, t


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ignore", [False, True], ids=["all", "ignore"])
@pytest.mark.parametrize("batch", [False, True], ids=["per_sample", "batch"])
@pytest.mark.parametrize("kind", ["index", "dense"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "none"])
def test_matches_reference(shape, activation: str, kind: str, batch: bool, ignore: bool) -> None:
    x, t = _inputs(shape, activation, kind, ignore)
    c = shape[1]
    ig = IGNORE if ignore else None
    for squared, smooth, cw, background in (
        (False, 1.0, None, True),
        (True, 1.0, None, True),
        (False, 0.0, [0.2, 1.0, 3.0, 0.5][:c], True),
        (True, 0.3, [1.5, 0.0, 2.0, 1.0][:c], False),
    ):
        kw = dict(
            activation=activation,
            smooth=smooth,
            squared=squared,
            batch=batch,
            ignore_index=ig,
            class_weight=cw,
            include_background=background,
        )
        want, valid = ref.dice(x, t, **kw)
        for reduction in ("none", "mean", "sum"):
            got = F.dice_loss(x, t, reduction=reduction, **kw)
            assert got.dtype == F64
            assert_close(got, ref.reduce(want, valid, reduction), F64)
        if not batch and shape[0] > 0:
            w = torch.rand(want.shape[:1], dtype=F64, generator=torch.Generator().manual_seed(3))
            got = F.dice_loss(x, t, weight=w, **kw)
            assert_close(got, ref.reduce(want, valid, "mean", w), F64)


def test_vnet_hand_values() -> None:
    # p = [0.5, 1.0], g = [1, 0]: plain (2*0.5 + 1) / (1.5 + 1 + 1),
    # squared (1 + 1) / (1.25 + 1 + 1)
    p = torch.tensor([[[0.5, 1.0]]], dtype=F64)
    g = torch.tensor([[[1.0, 0.0]]], dtype=F64)
    plain = F.dice_loss(p, g, activation="none", reduction="none")
    squared = F.dice_loss(p, g, activation="none", squared=True, reduction="none")
    assert_close(plain, torch.tensor([[1 - 2 / 3.5]], dtype=F64), F64)
    assert_close(squared, torch.tensor([[1 - 2 / 3.25]], dtype=F64), F64)
    # smooth = 0: 1 - 2*0.5 / 2.5
    assert_close(
        F.dice_loss(p, g, activation="none", smooth=0.0), torch.tensor(0.6, dtype=F64), F64
    )


# --------------------------------------------------------------------------------------------------
# Identities.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("smooth", [0.0, 1.0, 1e-5])
def test_perfect_prediction_is_zero(squared: bool, smooth: float) -> None:
    g = (torch.rand(3, 4, 5, 6, generator=torch.Generator().manual_seed(0)) < 0.3).to(F64)
    g[:, 2] = 0  # a class absent from target and prediction
    loss = F.dice_loss(
        g.clone(), g, activation="none", squared=squared, smooth=smooth, reduction="none"
    )
    assert torch.all(loss.abs() < 1e-15), loss


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_empty_ground_truth(squared: bool, batch: bool) -> None:
    g = torch.zeros(2, 1, 4, 4, dtype=F64)
    # empty GT + empty prediction: 0
    empty = F.dice_loss(torch.zeros_like(g), g, activation="none", squared=squared, batch=batch)
    assert empty.item() == 0.0
    # smooth = 0: the 0/0 case is defined as loss 0, with zero gradients
    p0 = torch.zeros_like(g, requires_grad=True)
    z = F.dice_loss(p0, g, activation="none", smooth=0.0, squared=squared, batch=batch)
    (gr,) = torch.autograd.grad(z, p0)
    assert z.item() == 0.0
    assert torch.all(gr == 0)
    # empty GT + full prediction: finite, > 0 (16 pixels: 1 - 1/17 per sample), finite gradients
    for act, x in (("none", torch.ones_like(g)), ("sigmoid", torch.full_like(g, 30.0))):
        x = x.requires_grad_(True)
        loss = F.dice_loss(x, g, activation=act, squared=squared, batch=batch)
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss)
        assert 0.9 < loss.item() < 1.0
        assert torch.isfinite(grad).all()
    full = F.dice_loss(torch.ones_like(g), g, activation="none", squared=squared, batch=batch)
    assert_close(full, torch.tensor(1 - 1 / (33.0 if batch else 17.0), dtype=F64), F64)
    # logits: empty GT, sigmoid saturates at logit -30 is essentially perfect
    low = F.dice_loss(
        torch.full_like(g, -30.0), g, activation="sigmoid", squared=squared, batch=batch
    )
    assert 0 <= low.item() < 1e-10


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "none"])
@pytest.mark.parametrize("batch", [False, True])
def test_ignoring_pixels_equals_cropping_them(activation: str, batch: bool) -> None:
    x, t = _inputs((2, 3, 4, 6), activation, "index", False, seed=5)
    t_ign = t.clone()
    t_ign[..., 4:] = IGNORE
    x_ign = x.clone()
    x_ign[..., 4:] = 1e3 if activation != "none" else 1.0  # whatever is predicted there is ignored
    for kw in ({}, {"squared": True}, {"smooth": 0.0}, {"class_weight": [1.0, 2.0, 0.5]}):
        got = F.dice_loss(
            x_ign,
            t_ign,
            activation=activation,
            batch=batch,
            ignore_index=IGNORE,
            reduction="none",
            **kw,
        )
        want = F.dice_loss(
            x[..., :4], t[..., :4], activation=activation, batch=batch, reduction="none", **kw
        )
        assert_close(got, want, F64)


def test_ignored_pixels_are_not_false_positives() -> None:
    """mmsegmentation's DiceLoss counts pixels labelled ignore_index as false positives."""
    t = torch.tensor([[[0, 0, 1, IGNORE]]])
    a = torch.tensor([[[[5.0, 5.0, -5.0, -5.0]], [[-5.0, -5.0, 5.0, 5.0]]]], dtype=F64)
    b = a.clone()
    b[..., 3] = torch.tensor([5.0, -5.0], dtype=F64).view(2, 1)
    la = F.dice_loss(a, t, ignore_index=IGNORE, reduction="none")
    lb = F.dice_loss(b, t, ignore_index=IGNORE, reduction="none")
    assert_close(la, lb, F64)


def test_ignore_index_may_be_a_class_id() -> None:
    x, t = _inputs((2, 3, 4, 5), "softmax", "index", False, seed=2)
    got = F.dice_loss(x, t, ignore_index=0, reduction="none")
    want, valid = ref.dice(x, t, ignore_index=0)
    assert_close(got, ref.reduce(want, valid, "none"), F64)
    # class 0 then has no target pixel, but its probability elsewhere still counts: false positives
    assert torch.all(got[:, 0] > 0)
    crop = F.dice_loss(
        x, torch.where(t == 0, torch.full_like(t, IGNORE), t), ignore_index=IGNORE, reduction="none"
    )
    assert_close(got, crop, F64)


def test_fully_ignored_sample_is_left_out_of_the_mean() -> None:
    x, t = _inputs((3, 3, 4, 5), "softmax", "index", False, seed=4)
    t_ign = t.clone()
    t_ign[1] = IGNORE
    got = F.dice_loss(x, t_ign, ignore_index=IGNORE)
    want = F.dice_loss(x[[0, 2]], t[[0, 2]])
    assert_close(got, want, F64)
    everything = F.dice_loss(
        x.requires_grad_(True), torch.full_like(t, IGNORE), ignore_index=IGNORE
    )
    (grad,) = torch.autograd.grad(everything, x)
    assert everything.item() == 0.0
    assert torch.all(grad == 0)


@pytest.mark.parametrize("squared", [False, True])
def test_index_targets_equal_one_hot_targets(squared: bool) -> None:
    x, t = _inputs((2, 4, 3, 5), "softmax", "index", False, seed=7)
    onehot = torch.nn.functional.one_hot(t, 4).movedim(-1, 1)
    for dense in (onehot, onehot.bool(), onehot.to(F64)):
        assert_close(
            F.dice_loss(x, dense, squared=squared, reduction="none"),
            F.dice_loss(x, t, squared=squared, reduction="none"),
            F64,
        )
    # sigmoid: index C (background) is an all-zero row of the dense target
    ts = t.clone()
    ts[:, 0, :2] = 4
    dense = torch.nn.functional.one_hot(ts, 5)[..., :4].movedim(-1, 1).to(F64)
    assert_close(
        F.dice_loss(x, dense, activation="sigmoid", squared=squared, reduction="none"),
        F.dice_loss(x, ts, activation="sigmoid", squared=squared, reduction="none"),
        F64,
    )


def test_binary_mask_shapes_agree() -> None:
    x = torch.randn(3, 1, 4, 4, dtype=F64)
    m = torch.rand(3, 4, 4) < 0.5
    a = F.dice_loss(x, m, activation="sigmoid", reduction="none")
    b = F.dice_loss(x, m.unsqueeze(1), activation="sigmoid", reduction="none")
    # 0/1 integers without the channel dim could be class indices (0 = the class): say which
    c = F.dice_loss(x, m.long(), activation="sigmoid", reduction="none", index_target=False)
    with pytest.raises(ValueError, match="index_target"):
        F.dice_loss(x, m.long(), activation="sigmoid")
    assert a.shape == (3, 1)
    assert_close(a, b, F64)
    assert_close(a, c, F64)
    # the same as the positive channel of a two-channel "none" dice on [1 - p, p]
    p = torch.sigmoid(x)
    two = F.dice_loss(torch.cat([1 - p, p], 1), m.long(), activation="none", reduction="none")
    assert_close(a[:, 0], two[:, 1], F64)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("squared", [False, True])
def test_batch_dice_is_per_sample_dice_of_the_concatenation(activation: str, squared: bool) -> None:
    x, t = _inputs((3, 3, 4, 5), activation, "index", True, seed=8)
    batch = F.dice_loss(
        x,
        t,
        activation=activation,
        squared=squared,
        batch=True,
        ignore_index=IGNORE,
        reduction="none",
    )
    cat_x = torch.cat(list(x), dim=1).unsqueeze(0)  # (1, C, N*H, W)
    cat_t = torch.cat(list(t), dim=0).unsqueeze(0)
    single = F.dice_loss(
        cat_x, cat_t, activation=activation, squared=squared, ignore_index=IGNORE, reduction="none"
    )
    assert batch.shape == (3,)
    assert_close(batch, single[0], F64)
    # and it differs from the mean of the per-sample dice
    per = F.dice_loss(x, t, activation=activation, squared=squared, ignore_index=IGNORE)
    assert abs(per.item() - batch.mean().item()) > 1e-6


def test_class_weight_convention() -> None:
    x, t = _inputs((2, 3, 4, 5), "softmax", "index", False, seed=9)
    none = F.dice_loss(x, t, reduction="none")
    assert_close(F.dice_loss(x, t, class_weight=[1.0, 1.0, 1.0]), F.dice_loss(x, t), F64)
    assert_close(F.dice_loss(x, t, class_weight=torch.full((3,), 2.0)), 2 * F.dice_loss(x, t), F64)
    w = [0.5, 2.0, 0.0]
    got = F.dice_loss(x, t, class_weight=w)
    assert_close(got, (none * torch.tensor(w, dtype=F64)).sum() / none.numel(), F64)
    # weights normalised to mean one by class_weights keep the scale
    cw = lf.class_weights([30, 10, 5])
    assert abs(float(cw.mean()) - 1.0) < 1e-6


def test_include_background_false_drops_channel_zero() -> None:
    x, t = _inputs((2, 3, 4, 5), "softmax", "index", False, seed=10)
    full = F.dice_loss(x, t, reduction="none")
    fg = F.dice_loss(x, t, include_background=False, reduction="none")
    assert_close(fg, full[:, 1:], F64)
    assert_close(F.dice_loss(x, t, include_background=False), full[:, 1:].mean(), F64)
    w = torch.tensor([9.0, 1.0, 2.0], dtype=F64)  # length C; entry 0 unused
    assert_close(
        F.dice_loss(x, t, include_background=False, class_weight=w),
        (full[:, 1:] * w[1:]).mean(),
        F64,
    )


def test_two_dimensional_input_is_one_element_per_entry() -> None:
    x = torch.randn(4, 3, dtype=F64)
    t = torch.randint(0, 3, (4,))
    p = torch.softmax(x, 1)
    g = torch.nn.functional.one_hot(t, 3).to(F64)
    want = 1 - (2 * p * g + 1) / (p + g + 1)
    assert_close(F.dice_loss(x, t, reduction="none"), want, F64)


@given(
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=6),
    st.one_of(st.just(0.0), st.floats(min_value=1.2e-38, max_value=2.0)),  # (>= f32 tiny)
    st.booleans(),
    st.booleans(),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_range_and_symmetry(
    n: int, c: int, s: int, smooth: float, squared: bool, batch: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, c, s, generator=g, dtype=F64)
    y = torch.rand(n, c, s, generator=g, dtype=F64)
    p[torch.rand(p.shape, generator=g) < 0.2] = 0.0
    y[torch.rand(y.shape, generator=g) < 0.3] = 0.0
    kw = dict(activation="none", smooth=smooth, squared=squared, batch=batch, reduction="none")
    a = F.dice_loss(p, y, **kw)
    b = F.dice_loss(y, p, **kw)
    assert torch.all(a >= -1e-12)
    assert torch.all(a <= 1 + 1e-12)
    assert_close(a, b, F64)


def test_gradcheck_options() -> None:
    x, t = _inputs((2, 3, 2, 2), "softmax", "index", True, seed=11)
    x.requires_grad_(True)
    for kw in (
        {"batch": True, "squared": True, "ignore_index": IGNORE},
        {"smooth": 0.0, "ignore_index": IGNORE, "class_weight": [1.0, 2.0, 0.5]},
        {"include_background": False, "ignore_index": IGNORE, "squared": True},
    ):
        assert torch.autograd.gradcheck(
            lambda inp, kw=kw: F.dice_loss(inp, t, reduction="none", **kw), (x,)
        )
    xs = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    ys = (torch.rand(2, 3, 4) < 0.5).to(F64)
    assert torch.autograd.gradcheck(
        lambda inp: F.dice_loss(inp, ys, activation="sigmoid", batch=True), (xs,)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_low_precision_close_to_float64(dtype: torch.dtype) -> None:
    x, t = _inputs((3, 4, 6, 5), "softmax", "index", True, seed=12)
    xl = x.to(dtype).requires_grad_(True)
    x64 = xl.detach().double().requires_grad_(True)
    got = F.dice_loss(xl, t, batch=True, squared=True, ignore_index=IGNORE)
    want = F.dice_loss(x64, t, batch=True, squared=True, ignore_index=IGNORE)
    assert got.dtype == torch.float32
    assert_close(got, want, torch.float32, rtol=1e-5, atol=1e-6)
    got.backward()
    want.backward()
    assert xl.grad.dtype == dtype
    assert torch.isfinite(xl.grad).all()
    assert_close(xl.grad.float(), x64.grad, dtype, rtol=2e-2, atol=1e-3)
    big = (torch.sign(x) * 1e4).to(dtype).requires_grad_(True)
    loss = F.dice_loss(big, t, batch=True, ignore_index=IGNORE)
    (gb,) = torch.autograd.grad(loss, big)
    assert torch.isfinite(loss)
    assert torch.isfinite(gb).all()


def test_batch_empty_gives_zero_per_class() -> None:
    x = torch.randn(0, 3, 4, dtype=F64, requires_grad=True)
    t = torch.zeros(0, 4, dtype=torch.long)
    none = F.dice_loss(x, t, batch=True, reduction="none")
    assert none.shape == (3,)
    assert torch.all(none == 0)
    for reduction in ("mean", "sum"):
        loss = F.dice_loss(x, t, batch=True, reduction=reduction)
        (grad,) = torch.autograd.grad(loss, x)
        assert loss.item() == 0.0
        assert grad.shape == x.shape


def test_global_normalization_without_group_changes_nothing() -> None:
    from lossforge.distributed import global_normalization

    x, t = _inputs((2, 3, 4, 5), "softmax", "index", True, seed=13)
    for batch in (False, True):
        want = F.dice_loss(x, t, batch=batch, ignore_index=IGNORE)
        with global_normalization():
            got = F.dice_loss(x, t, batch=batch, ignore_index=IGNORE)
        assert_close(got, want, F64)


def test_value_checks_off_poisons_out_of_range_indices() -> None:
    x = torch.randn(2, 3, 4, dtype=F64)
    t = torch.tensor([[0, 1, 2, 1], [0, 7, 1, 1]])
    with value_checks(False):
        none = F.dice_loss(x, t, reduction="none")
        assert torch.isfinite(none[0]).all()
        assert torch.isnan(none[1]).all()
        assert torch.isnan(F.dice_loss(x, t))
        # index C is the sigmoid background, C + 1 is not
        ok = F.dice_loss(x, torch.tensor([[0, 3, 2, 1], [0, 3, 1, 1]]), activation="sigmoid")
        assert torch.isfinite(ok)
        assert torch.isnan(
            F.dice_loss(x, torch.tensor([[0, 4, 2, 1], [0, 3, 1, 1]]), activation="sigmoid")
        )


# --------------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------------


def test_validation_errors() -> None:
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    cases = [
        (
            ValueError,
            r"dice_loss: expected `activation` one of 'softmax', 'sigmoid', 'none'",
            {"activation": "relu"},
        ),
        (ValueError, r"dice_loss: expected `smooth` in \[0, inf\], got -1.0", {"smooth": -1.0}),
        (TypeError, r"dice_loss: expected `smooth` a real number", {"smooth": "1"}),
        (ValueError, r"dice_loss: expected `smooth` a finite number", {"smooth": float("inf")}),
        (TypeError, r"dice_loss: expected `squared` a bool", {"squared": 1}),
        (TypeError, r"dice_loss: expected `batch` a bool", {"batch": "yes"}),
        (
            TypeError,
            r"dice_loss: expected `include_background` a bool",
            {"include_background": None},
        ),
        (TypeError, r"dice_loss: expected `ignore_index` an integer", {"ignore_index": 2.5}),
        (
            ValueError,
            r"dice_loss: expected `class_weight` a 1-d tensor of length C=3",
            {"class_weight": [1.0, 2.0]},
        ),
        (
            ValueError,
            r"dice_loss: expected `class_weight` non-negative",
            {"class_weight": [1.0, -2.0, 1.0]},
        ),
        (ValueError, r"dice_loss: expected `reduction` one of", {"reduction": "avg"}),
        (
            ValueError,
            r"dice_loss: expected `avg_factor` None when reduction=\"sum\"",
            {"reduction": "sum", "avg_factor": 2.0},
        ),
        (ValueError, r"dice_loss: expected `backend` one of", {"backend": "cuda"}),
        (
            ValueError,
            r"dice_loss: expected `backend` 'triton' only with CUDA tensors",
            {"backend": "triton"},
        ),
        (
            ValueError,
            r"dice_loss: expected `weight` the loss shape \(2, 3\)",
            {"weight": torch.ones(4)},
        ),
    ]
    for exc, match, kw in cases:
        with pytest.raises(exc, match=match):
            F.dice_loss(x, t, **kw)
    with pytest.raises(
        ValueError,
        match=r"dice_loss: expected `logits` a tensor of shape \(N, C, \*\), got shape \(4,\)",
    ):
        F.dice_loss(torch.randn(4), torch.zeros(4))
    with pytest.raises(
        ValueError,
        match=r"dice_loss: expected `logits` at least 2 channels with activation='softmax'",
    ):
        F.dice_loss(torch.randn(2, 1, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"dice_loss: expected `include_background` True when there is a single"
    ):
        F.dice_loss(
            torch.randn(2, 1, 4), torch.zeros(2, 4), activation="sigmoid", include_background=False
        )
    with pytest.raises(
        ValueError,
        match=r"dice_loss: expected `target` dense targets of the logits' shape \(2, 3, 4\)",
    ):
        F.dice_loss(x, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits' shape \(2, 1, 4\) or class indices of shape"):
        F.dice_loss(torch.randn(2, 1, 4), torch.zeros(2, 5), activation="sigmoid")
    with pytest.raises(
        TypeError, match=r"dice_loss: expected `target` an integer tensor of class indices"
    ):
        F.dice_loss(x, t.float())
    with pytest.raises(
        TypeError, match=r"dice_loss: expected `target` to be a torch.Tensor, got list"
    ):
        F.dice_loss(x, t.tolist())
    with pytest.raises(
        TypeError, match=r"dice_loss: expected `logits` to be a floating-point tensor"
    ):
        F.dice_loss(t.unsqueeze(1).expand(2, 3, 4), t)
    with pytest.raises(
        ValueError,
        match=r"dice_loss: expected `target` class indices in \[0, 2\].*got values in \[0, 3\]",
    ):
        F.dice_loss(x, torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]]))
    with pytest.raises(
        ValueError, match=r"class indices in \[0, 3\] \(C = background\) or ignore_index=255"
    ):
        F.dice_loss(
            x, torch.tensor([[0, 1, 4, 255], [0, 0, 0, 0]]), activation="sigmoid", ignore_index=255
        )
    with pytest.raises(ValueError, match=r"dice_loss: expected `logits` values in \[0, 1\]"):
        F.dice_loss(x.abs() + 1.0, t, activation="none")
    with pytest.raises(ValueError, match=r"dice_loss: expected `target` values in \[0, 1\]"):
        F.dice_loss(x, torch.full((2, 3, 4), 2.0), activation="sigmoid")


# --------------------------------------------------------------------------------------------------
# Module.
# --------------------------------------------------------------------------------------------------


def test_module_buffers_registry_and_repr() -> None:
    mod = lf.DiceLoss(class_weight=[0.5, 1.0, 2.0], squared=True, ignore_index=IGNORE, batch=True)
    assert "class_weight" in dict(mod.named_buffers())
    assert "class_weight" in mod.state_dict()
    text = repr(mod)
    for field in (
        "activation='softmax'",
        "squared=True",
        "batch=True",
        "ignore_index=255",
        "class_weight=[0.5, 1.0, 2.0]",
    ):
        assert field in text, text
    x, t = _inputs((2, 3, 4, 5), "softmax", "index", True, seed=14)
    d = copy.deepcopy(mod).double()
    assert d.class_weight.dtype == F64
    want = F.dice_loss(
        x, t, class_weight=[0.5, 1.0, 2.0], squared=True, ignore_index=IGNORE, batch=True
    )
    for m in (mod, d, pickle.loads(pickle.dumps(mod))):
        assert_close(m(x, t), want, F64)
    from lossforge import registry

    built = registry.build_loss(
        {"type": "dice", "activation": "sigmoid", "class_weight": [1.0, 2.0]}
    )
    assert isinstance(built, lf.DiceLoss)
    assert built.activation == "sigmoid"
    assert registry.get_loss("dice") is lf.DiceLoss


def test_module_validation() -> None:
    with pytest.raises(ValueError, match=r"DiceLoss: expected `activation` one of"):
        lf.DiceLoss(activation="softplus")
    with pytest.raises(ValueError, match=r"DiceLoss: expected `smooth` in \[0, inf\]"):
        lf.DiceLoss(smooth=-0.1)
    with pytest.raises(
        TypeError,
        match=r"DiceLoss: expected `class_weight` a tensor, a sequence of numbers or None",
    ):
        lf.DiceLoss(class_weight="balanced")
    with pytest.raises(ValueError, match=r"DiceLoss: expected `class_weight` a 1-d sequence"):
        lf.DiceLoss(class_weight=torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"DiceLoss: expected `backend` one of"):
        lf.DiceLoss(backend="cuda")


# --------------------------------------------------------------------------------------------------
# Fused kernel (CUDA only): the dispatch gives the reference's values.
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("ignore", [None, IGNORE])
def test_fused_dispatch_matches_reference(batch: bool, ignore: int | None) -> None:
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 17, 9, generator=g).cuda()
    t = torch.randint(0, 5, (3, 17, 9), generator=g).cuda()
    if ignore is not None:
        t[1] = ignore  # a fully ignored sample: left out of the mean in both paths
        t[0, :4] = ignore
    for reduction in ("mean", "sum"):
        for squared in (False, True):
            kw = dict(batch=batch, ignore_index=ignore, squared=squared, reduction=reduction)
            xa = x.clone().requires_grad_(True)
            xb = x.clone().requires_grad_(True)
            a = F.dice_loss(xa, t, backend="triton", **kw)
            b = F.dice_loss(xb, t, backend="torch", **kw)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            a.backward()
            b.backward()
            torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="a case the triton kernel supports"):
        F.dice_loss(x, t, backend="triton", class_weight=[1.0] * 5)


_INTERPRETED_DISPATCH = r"""
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch
from lossforge import _dispatch
from lossforge.functional import dice as D
torch.manual_seed(0)
x = torch.randn(3, 4, 5, 3)
t = torch.randint(0, 4, (3, 5, 3))
t[1] = 255  # a fully ignored sample: left out of "mean" by both paths
t[0, :2] = 255
for batch, squared, smooth, reduction in ((False, True, 1.0, "mean"), (True, False, 0.0, "mean"),
                                          (False, False, 0.5, "sum")):
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    kw = dict(smooth=smooth, squared=squared, batch=batch, reduction=reduction)
    with _dispatch.cpu_kernels():
        a = D.dice_loss(xa, t, ignore_index=255, backend="triton", **kw)
    b = D.dice_loss(xb, t, ignore_index=255, **kw)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-7)
print("ok")
"""


def test_fused_dispatch_under_the_triton_interpreter() -> None:
    """The kernel path (count of valid entries, sum -> mean) equals the reference, on CPU."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _INTERPRETED_DISPATCH],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


# --------------------------------------------------------------------------------------------------
# Separate smoothing (smooth_nr / smooth_dr), soft labels and class pooling.
# --------------------------------------------------------------------------------------------------


def _pairs_reference(x, t, *, batch, ignore, nr, dr, squared=False, soft=False, **kw):
    from reference import region as rref

    classes, pairs = rref.entries(x, t, batch=batch, ignore_index=ignore, **kw)
    return rref.per_entry(
        classes,
        pairs,
        lambda ps: rref.dice(ps, nr, dr, squared=squared, soft=soft),
        batch=batch,
        n=x.shape[0],
        ignore=ignore is not None,
    )


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_separate_smoothing_matches_reference(batch: bool, squared: bool, kind: str) -> None:
    x, t = _inputs((3, 3, 4, 5), "sigmoid", kind, True, seed=21)
    for nr, dr in ((0.0, 1e-5), (0.5, 2.0), (0.0, 0.0), (1.0, 1.0)):
        want, valid = _pairs_reference(
            x, t, batch=batch, ignore=IGNORE, nr=nr, dr=dr, squared=squared, activation="sigmoid"
        )
        got = F.dice_loss(
            x,
            t,
            activation="sigmoid",
            smooth_nr=nr,
            smooth_dr=dr,
            squared=squared,
            batch=batch,
            ignore_index=IGNORE,
            reduction="none",
        )
        assert_close(got, ref.reduce(want, valid, "none"), F64)


def test_smoothing_shorthand_and_defaults() -> None:
    x, t = _inputs((2, 3, 4, 5), "softmax", "index", False, seed=22)
    base = F.dice_loss(x, t, reduction="none")
    assert_close(F.dice_loss(x, t, smooth=1.0, reduction="none"), base, F64)
    assert_close(F.dice_loss(x, t, smooth_nr=1.0, smooth_dr=1.0, reduction="none"), base, F64)
    assert_close(
        F.dice_loss(x, t, smooth=0.3, reduction="none"),
        F.dice_loss(x, t, smooth_nr=0.3, smooth_dr=0.3, reduction="none"),
        F64,
    )
    # one term given: the other is `smooth`'s default (1.0)
    assert_close(
        F.dice_loss(x, t, smooth_dr=2.0, reduction="none"),
        F.dice_loss(x, t, smooth_nr=1.0, smooth_dr=2.0, reduction="none"),
        F64,
    )


def test_smoothing_conflicts_raise() -> None:
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    with pytest.raises(
        ValueError,
        match=r"dice_loss: expected `smooth` None when smooth_nr or smooth_dr is given .*"
        r"got smooth=0.5 with smooth_nr",
    ):
        F.dice_loss(x, t, smooth=0.5, smooth_nr=0.0)
    with pytest.raises(ValueError, match=r"expected `smooth_nr` <= smooth_dr \(1e-05; .*got 1.0"):
        F.dice_loss(x, t, smooth_dr=1e-5)  # smooth_nr defaults to 1.0
    with pytest.raises(ValueError, match=r"expected `smooth_nr` in \[0, inf\], got -1.0"):
        F.dice_loss(x, t, smooth_nr=-1.0)
    with pytest.raises(ValueError, match=r"DiceLoss: expected `smooth_nr` <= smooth_dr"):
        lf.DiceLoss(smooth_nr=0.2, smooth_dr=0.1)
    with pytest.raises(ValueError, match=r"DiceLoss: expected `smooth` None when"):
        lf.DiceLoss(smooth=1.0, smooth_dr=1.0)


def test_monai_common_smoothing_pins_empty_classes_at_one() -> None:
    """MONAI's common smooth_nr=0, smooth_dr=1e-5 (documented): an empty class predicted empty
    scores loss 1, with the default smoothing it scores 0."""
    g = torch.zeros(1, 1, 4, dtype=F64)
    assert F.dice_loss(g, g, activation="none", smooth_nr=0.0, smooth_dr=1e-5).item() == 1.0
    assert F.dice_loss(g, g, activation="none").item() == 0.0


@pytest.mark.parametrize("batch", [False, True])
def test_soft_label_mode(batch: bool) -> None:
    x, t = _inputs((2, 3, 4, 5), "sigmoid", "dense", False, seed=23)
    kw = dict(activation="sigmoid", batch=batch, reduction="none")
    # hard targets: min(p, g) = p g
    assert_close(F.dice_loss(x, t, soft_label=True, **kw), F.dice_loss(x, t, **kw), F64)
    soft = torch.rand(2, 3, 4, 5, dtype=F64, generator=torch.Generator().manual_seed(4))
    kw["activation"] = "none"
    assert torch.all(F.dice_loss(soft, soft, soft_label=True, smooth=0.0, **kw).abs() < 1e-15)
    assert torch.all(F.dice_loss(soft, soft, smooth=0.0, **kw) > 1e-3)  # products: not 0
    # squared denominators already vanish at p = g; soft_label changes nothing there
    sq = F.dice_loss(soft, soft.flip(-1), squared=True, **kw)
    assert_close(F.dice_loss(soft, soft.flip(-1), squared=True, soft_label=True, **kw), sq, F64)
    want, valid = _pairs_reference(
        soft, soft.flip(-1), batch=batch, ignore=None, nr=1.0, dr=1.0, soft=True, activation="none"
    )
    got = F.dice_loss(soft, soft.flip(-1), soft_label=True, **kw)
    assert_close(got, ref.reduce(want, valid, "none"), F64)
    # the soft-label gradient is finite and points towards the target
    p = soft.clone().requires_grad_(True)
    y = torch.rand(2, 3, 4, 5, dtype=F64, generator=torch.Generator().manual_seed(5))
    assert torch.autograd.gradcheck(
        lambda inp: F.dice_loss(inp, y, activation="none", soft_label=True, batch=batch), (p,)
    )


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_pool_classes_matches_reference(batch: bool, squared: bool) -> None:
    from reference import region as rref

    x, t = _inputs((3, 4, 4, 5), "softmax", "index", True, seed=24)
    cw = [0.5, 1.0, 2.0, 0.0]
    for kw_cw, weights in ((None, [1.0] * 4), (cw, cw)):
        classes, pairs = rref.entries(x, t, batch=batch, ignore_index=IGNORE)
        groups = [None] if batch else range(3)
        want = [
            rref.pooled_dice(
                [pairs[c] if batch else pairs[(n, c)] for c in classes],
                weights,
                0.5,
                0.5,
                squared=squared,
            )
            for n in groups
        ]
        got = F.dice_loss(
            x,
            t,
            smooth=0.5,
            squared=squared,
            batch=batch,
            pool_classes=True,
            ignore_index=IGNORE,
            class_weight=kw_cw,
            reduction="none",
        )
        assert got.shape == ((1,) if batch else (3, 1))
        assert_close(got.reshape(-1), torch.tensor(want, dtype=F64), F64)


def test_pool_classes_entries_and_ignored_samples() -> None:
    x, t = _inputs((3, 3, 4, 5), "softmax", "index", False, seed=25)
    t[1] = IGNORE
    got = F.dice_loss(x, t, pool_classes=True, ignore_index=IGNORE)
    keep = F.dice_loss(x[[0, 2]], t[[0, 2]], pool_classes=True)
    assert_close(got, keep, F64)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    none = F.dice_loss(x, t, pool_classes=True, ignore_index=IGNORE, reduction="none")
    got = F.dice_loss(x, t, pool_classes=True, ignore_index=IGNORE, weight=w, reduction="sum")
    assert_close(got, (none[:, 0] * w).sum(), F64)
    with pytest.raises(ValueError, match=r"dice_loss: expected `weight` the loss shape \(3, 1\)"):
        F.dice_loss(x, t, pool_classes=True, ignore_index=IGNORE, weight=torch.ones(3, 3))


def test_kornia_micro_and_macro_parity() -> None:
    from _region import kornia_losses

    kl = kornia_losses()
    x, t = _inputs((3, 4, 5, 6), "softmax", "index", True, seed=26)
    t[0][t[0] == 3] = 1  # class 3 absent from sample 0
    for w in (None, torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=F64)):
        peer = kl.dice_loss(x, t, average="micro", eps=1e-8, weight=w, ignore_index=IGNORE)
        got = F.dice_loss(
            x,
            t,
            pool_classes=True,
            smooth_nr=0.0,
            smooth_dr=1e-8,
            class_weight=w,
            ignore_index=IGNORE,
        )
        assert_close(got, peer, F64, rtol=1e-10, atol=1e-12)
    # kornia's macro averages the classes present in each sample
    peer = kl.dice_loss(x, t, average="macro", eps=1e-8, ignore_index=IGNORE)
    none = F.dice_loss(x, t, smooth_nr=0.0, smooth_dr=1e-8, ignore_index=IGNORE, reduction="none")
    onehot = torch.nn.functional.one_hot(torch.where(t == IGNORE, 0, t), 4) * (
        t != IGNORE
    ).unsqueeze(-1)
    present = onehot.flatten(1, 2).sum(1) > 0
    assert_close(((none * present).sum(1) / present.sum(1)).mean(), peer, F64, rtol=1e-10)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_monai_dice_parity(batch: bool, squared: bool, soft: bool) -> None:
    from _region import monai_losses

    ml = monai_losses()
    x, t = _inputs((3, 4, 5, 6), "softmax", "index", True, seed=27)
    for nr, dr, cw in ((1e-5, 1e-5, None), (0.0, 1e-5, [0.5, 1.0, 2.0, 1.5]), (1.0, 2.0, None)):
        peer = ml.DiceLoss(
            to_onehot_y=True,
            softmax=True,
            squared_pred=squared,
            smooth_nr=nr,
            smooth_dr=dr,
            batch=batch,
            soft_label=soft,
            weight=cw,
            ignore_index=IGNORE,
            reduction="none",
        )(x, t.unsqueeze(1))
        got = F.dice_loss(
            x,
            t,
            smooth_nr=nr,
            smooth_dr=dr,
            squared=squared,
            batch=batch,
            soft_label=soft,
            class_weight=cw,
            ignore_index=IGNORE,
            reduction="none",
        )
        # MONAI's one-hot target is float32; its squared path takes the target norm through a
        # square root and a square in float32 (~1e-7 relative).
        tol = dict(rtol=2e-7, atol=1e-9) if squared else dict(rtol=1e-10, atol=1e-12)
        assert_close(got, peer.reshape(got.shape), F64, **tol)
    # soft (probability) targets with soft_label, sigmoid
    xs = torch.randn(2, 3, 7, dtype=F64, generator=torch.Generator().manual_seed(9))
    ys = torch.rand(2, 3, 7, dtype=F64, generator=torch.Generator().manual_seed(10))
    peer = ml.DiceLoss(sigmoid=True, soft_label=soft, batch=batch, smooth_nr=0.0)(xs, ys)
    got = F.dice_loss(
        xs, ys, activation="sigmoid", soft_label=soft, batch=batch, smooth_nr=0.0, smooth_dr=1e-5
    )
    assert_close(got, peer, F64, rtol=1e-10, atol=1e-12)


def test_kernel_declines_what_it_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """``backend="triton"`` names the option the fused kernel does not serve."""
    from lossforge import _pipeline

    monkeypatch.setattr(_pipeline, "kernel_eligible", lambda *a, **k: True)
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    for kw, why in (
        ({"smooth_nr": 0.0, "smooth_dr": 1e-5}, r"smooth_nr != smooth_dr"),
        ({"pool_classes": True}, r"pool_classes=True"),
    ):
        with pytest.raises(ValueError, match=rf"a case the triton kernel supports \({why}\)"):
            F.dice_loss(x, t, backend="triton", **kw)
        # "auto" falls back to the reference
        assert_close(F.dice_loss(x, t, backend="auto", **kw), F.dice_loss(x, t, **kw))


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("dice", {"smooth_nr": 0.0, "smooth_dr": 1e-5, "pool_classes": True, "soft_label": True}),
        ("tversky", {"alpha": 0.3, "beta": 0.7}),
        ("focal_tversky", {"ignore_index": IGNORE}),
        ("jaccard", {"soft_label": True, "batch": True}),
        ("generalized_dice", {"weight_type": "simple"}),
    ],
)
def test_family_compiles_without_graph_breaks(name: str, kw: dict) -> None:
    from lossforge.registry import build_loss

    loss = build_loss({"type": name, **kw})
    x, t = _inputs((2, 3, 4, 4), "softmax", "index", "ignore_index" in kw, seed=31)
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    a, b = compiled(xa, t), loss(xb, t)
    assert_close(a, b, F64)
    (ga,) = torch.autograd.grad(a, xa)
    (gb,) = torch.autograd.grad(b, xb)
    assert_close(ga, gb, F64)


# --------------------------------------------------------------------------------------------------
# Class-index targets on the CPU: the overlap sums without the one-hot target.
# --------------------------------------------------------------------------------------------------


def _as_one_hot(t: torch.Tensor, c: int, ignore: int | None) -> torch.Tensor:
    """The dense target of class indices ``t``: one-hot, every channel ``ignore`` at an ignored
    pixel (with a dense target, ignore_index is element-wise)."""
    hit = torch.nn.functional.one_hot(torch.where(t == IGNORE, 0, t), c).movedim(-1, 1).to(F64)
    if ignore is None:
        return hit
    return torch.where((t == ignore).unsqueeze(1), float(ignore), hit)


_OVERLAP = {
    "dice": lambda x, t, **kw: F.dice_loss(x, t, **kw),
    "dice_squared": lambda x, t, **kw: F.dice_loss(x, t, squared=True, **kw),
    "dice_pooled": lambda x, t, **kw: F.dice_loss(x, t, pool_classes=True, **kw),
    "jaccard": lambda x, t, **kw: F.jaccard_loss(x, t, **kw),
    "jaccard_squared": lambda x, t, **kw: F.jaccard_loss(x, t, squared=True, **kw),
    "generalized_dice": lambda x, t, **kw: F.generalized_dice_loss(x, t, **kw),
}


@pytest.mark.parametrize("loss", sorted(_OVERLAP))
@pytest.mark.parametrize("ignore", [None, IGNORE])
@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_index_targets_match_their_one_hot_target(
    loss: str, ignore: int | None, background: bool, batch: bool
) -> None:
    """Class indices take the gather / scatter-add sums on the CPU, a dense target the
    element-wise terms: the same losses and gradients (a class absent from a sample, a sample
    with every pixel ignored, class weights)."""
    g = torch.Generator().manual_seed(31)
    x = 3 * torch.randn(4, 4, 5, 6, generator=g, dtype=F64)
    t = torch.randint(0, 4, (4, 5, 6), generator=g)
    t[0][t[0] == 2] = 1  # class 2 absent from sample 0
    if ignore is not None:
        t[1, :2] = ignore
        t[3] = ignore  # nothing valid in sample 3
    kw = {
        "ignore_index": ignore,
        "include_background": background,
        "batch": batch,
        "reduction": "none",
    }
    if loss != "generalized_dice":
        kw["class_weight"] = [0.5, 1.0, 2.0, 1.5]
    fn = _OVERLAP[loss]
    xi = x.clone().requires_grad_(True)
    xd = x.clone().requires_grad_(True)
    got = fn(xi, t, **kw)
    want = fn(xd, _as_one_hot(t, 4, ignore), **kw)
    assert_close(got, want, F64, rtol=1e-12, atol=1e-14)
    up = torch.rand(got.shape, generator=g, dtype=F64)
    (gi,) = torch.autograd.grad((got * up).sum(), xi)
    (gd,) = torch.autograd.grad((want * up).sum(), xd)
    assert_close(gi, gd, F64, rtol=1e-10, atol=1e-14)
    # the mean skips the entries with no valid pixel alike
    mean = {**kw, "reduction": "mean"}
    assert_close(fn(x, t, **mean), fn(x, _as_one_hot(t, 4, ignore), **mean), F64)


@pytest.mark.parametrize("loss", sorted(_OVERLAP))
@pytest.mark.parametrize("ignore", [None, IGNORE])
def test_index_out_of_range_with_checks_off_is_nan_in_its_sample(
    loss: str, ignore: int | None
) -> None:
    """Value checks off: an index out of range (never read by the gather or the scatter-add)
    makes every entry of its sample NaN, as the dense target's NaN does; the other samples keep
    their values, and with ``batch=True`` every entry is NaN."""
    g = torch.Generator().manual_seed(32)
    x = torch.randn(3, 4, 2, 3, generator=g, dtype=F64)
    t = torch.randint(0, 4, (3, 2, 3), generator=g)
    if ignore is not None:
        t[0, 0, 0] = ignore
    fn = _OVERLAP[loss]
    clean = fn(x, t, ignore_index=ignore, reduction="none")
    for bad in (4, -1, 254):
        tb = t.clone()
        tb[1, 1, 2] = bad
        with value_checks(False):
            got = fn(x, tb, ignore_index=ignore, reduction="none")
            batched = fn(x, tb, ignore_index=ignore, batch=True, reduction="none")
        assert torch.isnan(got[1]).all(), (bad, got)
        assert_close(got[[0, 2]], clean[[0, 2]], F64, rtol=1e-12, atol=1e-14)
        assert torch.isnan(batched).all()
        with pytest.raises(ValueError, match="expected `target` class indices in"):
            fn(x, tb, ignore_index=ignore)
