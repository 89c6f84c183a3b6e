"""Sigmoid and softmax focal losses: float64 loop references, torchvision / mmdetection parity,
identities with BCE / cross-entropy, the 0 < gamma < 1 saturation NaN, edge cases and validation."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import focal as ref

import lossforge as lf
import lossforge.functional as F
from lossforge import value_checks

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# Contract suite over the option sets.
# --------------------------------------------------------------------------------------------------


def _sig_dense(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    y = (torch.rand(n, 4, generator=g, dtype=F64) < 0.4).to(F64)
    return x, y


def _sig_soft(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 4, generator=g, dtype=F64)


def _sig_index(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 5, (n,), generator=g)  # 4 = background


def _sig_index_ignore(n: int, dtype: torch.dtype, g: torch.Generator):
    x, y = _sig_index(n, dtype, g)
    if n:
        y[0] = -1
    return x, y


def _soft_index(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 5, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 5, (n,), generator=g)


def _soft_index_ignore(n: int, dtype: torch.dtype, g: torch.Generator):
    x, y = _soft_index(n, dtype, g)
    if n:
        y[-1] = -100
    return x, y


def _soft_probs(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 5, generator=g, dtype=F64)).to(dtype)
    return x, torch.softmax(torch.randn(n, 5, generator=g, dtype=F64), dim=1)


def _soft_spatial(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 3, 2, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 3, (n, 2, 3), generator=g)


SIG = (F.sigmoid_focal_loss, lf.SigmoidFocalLoss)
SOFT = (F.softmax_focal_loss, lf.SoftmaxFocalLoss)

CASES = [
    LossCase("sig_dense_default", *SIG, {}, _sig_dense),
    LossCase("sig_dense_g0_noalpha", *SIG, {"gamma": 0.0, "alpha": None}, _sig_dense),
    LossCase("sig_dense_g05", *SIG, {"gamma": 0.5, "alpha": 0.25}, _sig_dense),
    LossCase("sig_soft_g05", *SIG, {"gamma": 0.5, "alpha": 0.7}, _sig_soft),
    LossCase("sig_soft_g2_noalpha", *SIG, {"gamma": 2.0, "alpha": None}, _sig_soft),
    LossCase("sig_index_g2", *SIG, {"gamma": 2.0}, _sig_index),
    LossCase("sig_index_g05", *SIG, {"gamma": 0.5, "alpha": None}, _sig_index),
    LossCase(
        "sig_index_ignore",
        *SIG,
        {"gamma": 1.5, "ignore_index": -1},
        _sig_index_ignore,
        mean_is_count=False,
    ),
    LossCase("soft_g2", *SOFT, {}, _soft_index, elementwise=False),
    LossCase("soft_g0", *SOFT, {"gamma": 0.0}, _soft_index, elementwise=False),
    LossCase(
        "soft_g05_alpha_float",
        *SOFT,
        {"gamma": 0.5, "alpha": 0.25, "balance_index": 2},
        _soft_index,
        elementwise=False,
    ),
    LossCase(
        "soft_per_class_alpha",
        *SOFT,
        {"alpha": [0.1, 0.2, 0.3, 0.4, 1.0]},
        _soft_index,
        elementwise=False,
    ),
    LossCase(
        "soft_smoothing",
        *SOFT,
        {"gamma": 0.5, "label_smoothing": 0.1},
        _soft_index,
        elementwise=False,
    ),
    LossCase(
        "soft_ignore",
        *SOFT,
        {"gamma": 2.0},
        _soft_index_ignore,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "soft_class_weight",
        *SOFT,
        {"class_weight": [1.0, 2.0, 0.5, 1.0, 3.0], "label_smoothing": 0.05},
        _soft_index,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase("soft_probs", *SOFT, {"gamma": 1.5, "alpha": 0.6}, _soft_probs, elementwise=False),
    LossCase("soft_spatial", *SOFT, {"gamma": 0.9}, _soft_spatial, elementwise=False),
]
globals().update(contract_test_suite(CASES))


def _reduce(values: torch.Tensor, reduction: str, count: float | None = None) -> torch.Tensor:
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    denom = values.numel() if count is None else count
    return total / denom if denom else total * 0


# --------------------------------------------------------------------------------------------------
# Sigmoid focal: reference, torchvision and mmdetection parity.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("kind", ["hard", "soft", "index", "bool"])
def test_sigmoid_matches_float64_reference(gamma: float, kind: str) -> None:
    g = torch.Generator().manual_seed(int(10 * gamma))
    x = 3 * torch.randn(6, 4, generator=g, dtype=F64)
    if kind == "index":
        target = torch.tensor([0, 1, 2, 3, 4, 2])
        dense = ref.dense_from_index(target, 4)
    elif kind == "soft":
        target = dense = torch.rand(6, 4, generator=g, dtype=F64)
    else:
        dense = (torch.rand(6, 4, generator=g, dtype=F64) < 0.5).to(F64)
        target = dense.bool() if kind == "bool" else dense
    for alpha in (None, 0.0, 0.25, 0.58, 1.0):
        expected = ref.sigmoid_focal_map(x, dense, alpha, gamma)
        for reduction in ("none", "sum", "mean"):
            got = F.sigmoid_focal_loss(x, target, alpha=alpha, gamma=gamma, reduction=reduction)
            assert_close(got, _reduce(expected, reduction), F64)


def _torchvision_sigmoid_focal_loss(
    inputs, targets, alpha: float = 0.25, gamma: float = 2.0, reduction="none"
):
    """Re-derivation of torchvision.ops.sigmoid_focal_loss (not installable here), op for op."""
    p = torch.sigmoid(inputs)
    ce_loss = TF.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


@pytest.mark.parametrize("gamma", [0.0, 1.5, 2.0])
@pytest.mark.parametrize("alpha", [-1.0, 0.25, 0.58])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_matches_torchvision_values_and_gradients(
    gamma: float, alpha: float, reduction: str
) -> None:
    g = torch.Generator().manual_seed(3)
    x = (4 * torch.randn(8, 5, generator=g, dtype=F64)).requires_grad_(True)
    for targets in (
        (torch.rand(8, 5, generator=g) < 0.3).to(F64),
        torch.rand(8, 5, generator=g, dtype=F64),
    ):
        theirs = _torchvision_sigmoid_focal_loss(x, targets, alpha, gamma, reduction)
        ours = F.sigmoid_focal_loss(
            x, targets, alpha=None if alpha < 0 else alpha, gamma=gamma, reduction=reduction
        )
        assert_close(ours, theirs, F64)
        (g1,) = torch.autograd.grad(ours.sum(), x)
        (g2,) = torch.autograd.grad(theirs.sum(), x)
        assert_close(g1, g2, F64)


def _mmdet_py_sigmoid_focal_loss(
    pred, target, weight=None, gamma=2.0, alpha=0.25, reduction="mean", avg_factor=None
):
    """Re-derivation of mmdet's FocalLoss(use_sigmoid=True).forward on the CPU path: one-hot of the
    index target with num_classes + 1 columns (last = background) cut to C, then
    py_sigmoid_focal_loss and weight_reduce_loss (mean with avg_factor: sum / (avg_factor + eps)).
    """
    num_classes = pred.size(1)
    target = TF.one_hot(target, num_classes=num_classes + 1)[:, :num_classes].type_as(pred)
    pred_sigmoid = pred.sigmoid()
    pt = (1 - pred_sigmoid) * target + pred_sigmoid * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = TF.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight
    if weight is not None:
        if weight.shape != loss.shape:
            weight = (
                weight.view(-1, 1)
                if weight.size(0) == loss.size(0)
                else weight.view(loss.size(0), -1)
            )
        loss = loss * weight
    if avg_factor is None:
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]
    if reduction == "mean":
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    return loss


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("avg_factor", [None, 7.0])
def test_sigmoid_matches_mmdet_index_targets(
    reduction: str, with_weight: bool, avg_factor: float | None
) -> None:
    if avg_factor is not None and reduction == "sum":
        pytest.skip("avg_factor with sum raises (tested in the contract suite)")
    g = torch.Generator().manual_seed(5)
    x = (3 * torch.randn(10, 6, generator=g, dtype=F64)).requires_grad_(True)
    labels = torch.randint(0, 7, (10,), generator=g)  # 6 = background
    labels[:3] = 6
    w = torch.rand(10, generator=g, dtype=F64) if with_weight else None  # per-anchor weight, (N,)
    theirs = _mmdet_py_sigmoid_focal_loss(x, labels, w, reduction=reduction, avg_factor=avg_factor)
    ours = F.sigmoid_focal_loss(x, labels, weight=w, reduction=reduction, avg_factor=avg_factor)
    assert_close(ours, theirs, F64, rtol=1e-6)  # mmdet adds float32 eps to avg_factor
    (g1,) = torch.autograd.grad(ours.sum(), x)
    (g2,) = torch.autograd.grad(theirs.sum(), x)
    assert_close(g1, g2, F64, rtol=1e-6)
    module = lf.SigmoidFocalLoss(loss_weight=2.0)
    assert_close(
        module(x, labels, w, avg_factor=avg_factor, reduction_override=reduction),
        2 * theirs,
        F64,
        rtol=1e-6,
    )


def test_sigmoid_worked_numbers() -> None:
    # x = 0: p = 1/2, BCE = ln 2, (1 - p_t)^2 = 1/4; alpha_t = 0.25 (positive) / 0.75 (negative).
    got = F.sigmoid_focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), reduction="none")
    assert_close(got, torch.tensor([[0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)]]))
    # x = 2, y = 1, gamma = 1, alpha off: sigma(-2) * softplus(-2)
    got = F.sigmoid_focal_loss(
        torch.tensor([2.0]), torch.tensor([1.0]), gamma=1.0, alpha=None, reduction="sum"
    )
    s = 1 / (1 + math.exp(2.0))
    assert_close(got, torch.tensor(s * math.log1p(math.exp(-2.0))))


# --------------------------------------------------------------------------------------------------
# Sigmoid identities (values and gradients).
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_sigmoid_gamma0_no_alpha_is_bce_with_logits(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = (5 * torch.randn(7, 3, generator=g, dtype=F64)).to(dtype).requires_grad_(True)
    for y in (
        (torch.rand(7, 3, generator=g) < 0.5).to(dtype),
        torch.rand(7, 3, generator=g).to(dtype),
    ):
        for reduction in ("none", "mean", "sum"):
            ours = F.sigmoid_focal_loss(x, y, gamma=0.0, alpha=None, reduction=reduction)
            theirs = TF.binary_cross_entropy_with_logits(x, y, reduction=reduction)
            assert_close(ours, theirs, dtype)
            (g1,) = torch.autograd.grad(ours.sum(), x)
            (g2,) = torch.autograd.grad(theirs.sum(), x)
            assert_close(g1, g2, dtype)
            # ... and exactly lossforge's own BCE (same expression)
            same = F.binary_cross_entropy_with_logits(x, y, reduction=reduction)
            assert torch.equal(ours, same)


@given(
    st.lists(st.floats(-30, 30, width=32), min_size=1, max_size=12),
    st.data(),
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.3]),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_property_ratio_to_bce_is_alpha_t_times_modulating_factor(
    values, data, gamma, alpha
) -> None:
    """torchvision's test_correct_ratio as a property.

    focal / BCE == alpha_t (1 - p_t)^gamma and focal <= BCE."""
    x = torch.tensor(values, dtype=F64)
    soft = data.draw(st.booleans())
    ys = data.draw(
        st.lists(
            st.floats(0, 1) if soft else st.sampled_from([0.0, 1.0]),
            min_size=len(values),
            max_size=len(values),
        )
    )
    y = torch.tensor(ys, dtype=F64)
    focal = F.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none")
    # BCE as log(1 + e^-+x) via logaddexp: torch's BCE-with-logits cancels (x + |x| + log1p) for
    # large negative logits and softplus returns x above its threshold: neither is 1e-9 accurate.
    zero = torch.zeros_like(x)
    bce = y * torch.logaddexp(zero, -x) + (1 - y) * torch.logaddexp(zero, x)
    p = torch.sigmoid(x)
    one_minus_pt = y * torch.sigmoid(-x) + (1 - y) * p
    alpha_t = torch.ones_like(y) if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    # gamma = 0 is PyTorch's BCE-with-logits itself (tested above), whose max-shift form adds and
    # cancels |x|: an absolute error of a few float64 ulps of max(1, |x|) there.
    scale = max(1.0, float(x.abs().max()))
    atol = 8 * torch.finfo(F64).eps * scale if gamma == 0.0 else 1e-300
    assert torch.all(focal >= 0)
    assert torch.all(focal <= bce * (1 + 1e-12) + atol)
    torch.testing.assert_close(focal, bce * alpha_t * one_minus_pt**gamma, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_index_targets_equal_one_hot_and_background_is_zero_row(gamma: float) -> None:
    g = torch.Generator().manual_seed(2)
    x = (3 * torch.randn(5, 4, generator=g, dtype=F64)).requires_grad_(True)
    idx = torch.tensor([0, 4, 3, 4, 1], dtype=torch.int32)  # 4 = background
    dense = ref.dense_from_index(idx, 4)
    assert torch.all(dense[1] == 0) and torch.all(dense[3] == 0)
    for reduction in ("none", "mean", "sum"):
        a = F.sigmoid_focal_loss(x, idx, gamma=gamma, reduction=reduction)
        b = F.sigmoid_focal_loss(x, dense, gamma=gamma, reduction=reduction)
        assert_close(a, b, F64)
        (ga,) = torch.autograd.grad(a.sum(), x)
        (gb,) = torch.autograd.grad(b.sum(), x)
        assert_close(ga, gb, F64)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_sigmoid_ignoring_a_row_equals_dropping_it(gamma: float) -> None:
    g = torch.Generator().manual_seed(4)
    x = (2 * torch.randn(6, 3, generator=g, dtype=F64)).requires_grad_(True)
    idx = torch.tensor([0, 3, -1, 2, -1, 1])
    keep = idx != -1
    got = F.sigmoid_focal_loss(x, idx, gamma=gamma, ignore_index=-1)
    dropped = F.sigmoid_focal_loss(x[keep], idx[keep], gamma=gamma)
    assert_close(got, dropped, F64)
    (grad,) = torch.autograd.grad(got, x)
    assert torch.all(grad[~keep] == 0)
    assert torch.all(
        F.sigmoid_focal_loss(x, idx, gamma=gamma, ignore_index=-1, reduction="none")[~keep] == 0
    )
    # dense targets: ignore_index marks single elements
    dense = ref.dense_from_index(idx.clamp(min=0), 3)
    dense[0, 1] = -1
    got = F.sigmoid_focal_loss(x, dense, gamma=gamma, ignore_index=-1, reduction="sum")
    mask = dense != -1
    expected = ref.sigmoid_focal_map(x, dense.clamp(min=0), 0.25, gamma)[mask].sum()
    assert_close(got, expected, F64)
    mean = F.sigmoid_focal_loss(x, dense, gamma=gamma, ignore_index=-1)
    assert_close(mean, expected / mask.sum(), F64)


# --------------------------------------------------------------------------------------------------
# The 0 < gamma < 1 saturation NaN (torchvision bug) and extreme logits.
# --------------------------------------------------------------------------------------------------


SATURATED = [20.0, 100.0, 1e4]


def test_naive_pow_backward_is_nan_at_saturation() -> None:
    """The failure mode the next tests guard against really occurs with the naive formula."""
    x = torch.tensor([20.0, -20.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0])
    loss = _torchvision_sigmoid_focal_loss(x, y, alpha=-1, gamma=0.5, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isnan(grad).all()
    logp = torch.log_softmax(torch.tensor([[30.0, 0.0, -1.0]], requires_grad=True), 1)
    naive = -((1 - logp[:, 0].exp()) ** 0.5) * logp[:, 0]
    (g2,) = torch.autograd.grad(naive.sum(), logp)
    assert torch.isnan(g2).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
def test_sigmoid_finite_gradients_at_saturation_for_gamma_below_one(dtype, gamma: float) -> None:
    # one row per magnitude (+-20, +-100, +-1e4): well and badly classified, both signs
    base = torch.tensor([[m, -m, m, -m] for m in SATURATED] + [[-1e4, 20.0, 0.5, -0.5]])
    x = base.to(dtype).requires_grad_(True)
    hard = torch.tensor([[1.0, 0.0, 0.0, 1.0]] * len(SATURATED) + [[1.0, 0.0, 1.0, 0.0]])
    soft = hard * 0.7 + torch.tensor([0.0, 0.0, 0.3, 0.0])  # soft labels next to exact 0 / 1
    targets = [hard, torch.tensor([0, 3, 1, 4]), hard.bool(), soft]
    for y in targets:
        for reduction in ("none", "mean"):
            loss = F.sigmoid_focal_loss(x, y, gamma=gamma, reduction=reduction)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            assert torch.isfinite(loss).all(), (y, loss)
            assert torch.isfinite(grad).all(), (y, grad)
            assert grad.dtype == dtype


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9, 2.0])
def test_sigmoid_saturated_gradients_are_correct_not_just_finite(gamma: float) -> None:
    """fp32 gradients at |x| = 20 against float64 autograd of the stable formula (pow on sigma(-x),
    where float64 does not underflow yet)."""
    x0 = torch.tensor([20.0, -20.0, 20.0, -20.0, 15.0, -17.0])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    x = x0.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(F.sigmoid_focal_loss(x, y, gamma=gamma, reduction="sum"), x)
    x64 = x0.double().requires_grad_(True)
    q = y.double() * torch.sigmoid(-x64) + (1 - y.double()) * torch.sigmoid(x64)
    bce = TF.binary_cross_entropy_with_logits(x64, y.double(), reduction="none")
    alpha_t = 0.25 * y.double() + 0.75 * (1 - y.double())
    (expected,) = torch.autograd.grad((alpha_t * bce * q**gamma).sum(), x64)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.9, 2.0])
def test_softmax_finite_gradients_at_saturation(dtype, gamma: float) -> None:
    rows, idx, probs = [], [], []
    for m in SATURATED:  # right, badly wrong, uncertain
        rows += [[m, 0.0, -m], [-m, m, 0.0], [0.0, 0.0, 0.0]]
        idx += [0, 0, 2]
        probs += [[1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]]
    x = torch.tensor(rows).to(dtype).requires_grad_(True)
    idx_t, probs_t = torch.tensor(idx), torch.tensor(probs)
    options = [
        {"target": idx_t},
        {"target": idx_t, "label_smoothing": 0.1, "alpha": 0.25},
        {"target": idx_t, "alpha": [0.2, 0.5, 1.0], "class_weight": [1.0, 2.0, 0.0]},
        {"target": probs_t},
    ]
    for opts in options:
        opts = dict(opts)
        y = opts.pop("target")
        for reduction in ("none", "mean"):
            loss = F.softmax_focal_loss(x, y, gamma=gamma, reduction=reduction, **opts)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            assert torch.isfinite(loss).all(), (opts, loss)
            assert torch.isfinite(grad).all(), (opts, grad)


def test_softmax_saturated_gradients_are_correct() -> None:
    """Near-saturated rows (p_y = 1 - 1e-8) in fp32 vs float64 autograd of the plain formula."""
    x0 = torch.tensor([[18.0, 0.0, -2.0], [0.0, 19.0, 1.0], [3.0, -1.0, 0.0]])
    idx = torch.tensor([0, 1, 1])
    for gamma in (0.25, 0.5, 2.0):
        x = x0.clone().requires_grad_(True)
        (got,) = torch.autograd.grad(F.softmax_focal_loss(x, idx, gamma=gamma, reduction="sum"), x)
        x64 = x0.double().requires_grad_(True)
        logp = torch.log_softmax(x64, 1).gather(1, idx[:, None]).squeeze(1)
        q = -torch.expm1(logp)
        (expected,) = torch.autograd.grad((-(q**gamma) * logp).sum(), x64)
        # atol: fp32 log_softmax rounds log p_y to 0 once p_y > 1 - 6e-8 (as cross-entropy does)
        torch.testing.assert_close(got.double(), expected, rtol=2e-3, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Softmax focal: reference, identities with cross-entropy, layouts.
# --------------------------------------------------------------------------------------------------


SOFTMAX_OPTIONS = [
    {"gamma": 2.0},
    {"gamma": 0.0},
    {"gamma": 0.5, "alpha": 0.25, "balance_index": 1},
    {"gamma": 1.5, "alpha": [0.1, 0.9, 0.5, 0.3]},
    {"gamma": 2.0, "label_smoothing": 0.2},
    {"gamma": 0.5, "label_smoothing": 0.1, "alpha": [0.1, 0.9, 0.5, 0.3]},
    {"gamma": 2.0, "class_weight": [1.0, 0.5, 2.0, 0.0]},
    {"gamma": 1.0, "class_weight": [1.0, 0.5, 2.0, 3.0], "label_smoothing": 0.1, "alpha": 0.7},
    {"gamma": 2.0, "ignore_index": 2},
]


def _alpha_list(opts: dict, c: int) -> list[float] | None:
    a = opts.get("alpha")
    if a is None or isinstance(a, list):
        return a
    out = [1.0 - a] * c
    out[opts.get("balance_index", 0)] = a
    return out


@pytest.mark.parametrize(
    "opts", SOFTMAX_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
def test_softmax_matches_float64_reference(opts: dict) -> None:
    for reduction in ("none", "mean", "sum"):
        _check_softmax_against_reference(opts, reduction)


def _check_softmax_against_reference(opts: dict, reduction: str) -> None:
    g = torch.Generator().manual_seed(7)
    x = 3 * torch.randn(9, 4, generator=g, dtype=F64)
    idx = torch.randint(0, 4, (9,), generator=g)
    idx[0] = 2
    expected, valid, row_w = ref.softmax_focal_rows(
        x,
        idx,
        gamma=opts["gamma"],
        alpha=_alpha_list(opts, 4),
        class_weight=opts.get("class_weight"),
        label_smoothing=opts.get("label_smoothing", 0.0),
        ignore_index=opts.get("ignore_index", -100),
    )
    got = F.softmax_focal_loss(x, idx, reduction=reduction, **opts)
    count = float(row_w.sum()) if "class_weight" in opts else float(valid.sum())
    assert_close(got, _reduce(expected, reduction, count), F64)
    # probability targets use the same sum formula (mean over positions)
    probs = torch.softmax(torch.randn(9, 4, generator=g, dtype=F64), 1)
    popts = {k: v for k, v in opts.items() if k != "ignore_index"}
    expected, _, _ = ref.softmax_focal_rows(
        x,
        probs,
        gamma=opts["gamma"],
        alpha=_alpha_list(opts, 4),
        class_weight=opts.get("class_weight"),
        label_smoothing=opts.get("label_smoothing", 0.0),
    )
    got = F.softmax_focal_loss(x, probs, reduction=reduction, **popts)
    assert_close(got, _reduce(expected, reduction), F64)


def test_softmax_worked_numbers() -> None:
    # two classes, logits (0, 0): p = 1/2, loss = (1/2)^gamma ln 2
    x = torch.zeros(1, 2)
    for gamma in (0.0, 0.5, 2.0):
        got = F.softmax_focal_loss(x, torch.tensor([1]), gamma=gamma)
        assert_close(got, torch.tensor(0.5**gamma * math.log(2)))
    # float alpha: 0.25 on class 1 (balance_index), 0.75 on class 0
    got = F.softmax_focal_loss(
        x.expand(2, 2),
        torch.tensor([0, 1]),
        gamma=2.0,
        alpha=0.25,
        balance_index=1,
        reduction="none",
    )
    assert_close(got, torch.tensor([0.75, 0.25]) * 0.25 * math.log(2))


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"ignore_index": 1},
        {"label_smoothing": 0.15},
        {"class_weight": [1.0, 2.0, 0.5]},
        {"class_weight": [1.0, 2.0, 0.5], "label_smoothing": 0.3, "ignore_index": 0},
    ],
    ids=["plain", "ignore", "smoothing", "class_weight", "all"],
)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_softmax_gamma0_no_alpha_is_cross_entropy(opts: dict, dtype: torch.dtype) -> None:
    for reduction in ("none", "mean", "sum"):
        _check_softmax_gamma0_is_ce(opts, reduction, dtype)


def _check_softmax_gamma0_is_ce(opts: dict, reduction: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(8)
    x = (3 * torch.randn(7, 3, 2, generator=g, dtype=F64)).to(dtype).requires_grad_(True)
    y = torch.randint(0, 3, (7, 2), generator=g)
    topts = dict(opts)
    if "class_weight" in topts:
        topts["weight"] = torch.tensor(topts.pop("class_weight"), dtype=dtype)
    ours = F.softmax_focal_loss(x, y, gamma=0.0, reduction=reduction, **opts)
    theirs = TF.cross_entropy(x, y, reduction=reduction, **topts)
    assert_close(ours, theirs, dtype)
    (g1,) = torch.autograd.grad(ours.sum(), x)
    (g2,) = torch.autograd.grad(theirs.sum(), x)
    assert_close(g1, g2, dtype)
    # probability targets
    probs = torch.softmax(torch.randn(7, 3, 2, generator=g, dtype=F64), 1).to(dtype)
    popts = {k: v for k, v in opts.items() if k != "ignore_index"}
    ptopts = {k: v for k, v in topts.items() if k != "ignore_index"}
    ours = F.softmax_focal_loss(x, probs, gamma=0.0, reduction=reduction, **popts)
    theirs = TF.cross_entropy(x, probs, reduction=reduction, **ptopts)
    assert_close(ours, theirs, dtype)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_softmax_float_alpha_with_balance_index_equals_per_class_list(gamma: float) -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(8, 4, generator=g, dtype=F64)
    y = torch.randint(0, 4, (8,), generator=g)
    for b in range(4):
        vec = [0.7] * 4
        vec[b] = 0.3
        a = F.softmax_focal_loss(x, y, gamma=gamma, alpha=0.3, balance_index=b, reduction="none")
        assert_close(a, F.softmax_focal_loss(x, y, gamma=gamma, alpha=vec, reduction="none"), F64)
        assert_close(
            a,
            F.softmax_focal_loss(x, y, gamma=gamma, alpha=torch.tensor(vec), reduction="none"),
            F64,
        )
    # a per-class alpha is used as given: scaling it scales the loss (no renormalisation)
    base = F.softmax_focal_loss(x, y, gamma=gamma, alpha=[0.2, 0.2, 0.2, 0.2])
    assert_close(base, 0.2 * F.softmax_focal_loss(x, y, gamma=gamma), F64)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_one_hot_probabilities_equal_index_targets(gamma: float) -> None:
    g = torch.Generator().manual_seed(10)
    x = (2 * torch.randn(6, 5, generator=g, dtype=F64)).requires_grad_(True)
    y = torch.randint(0, 5, (6,), generator=g)
    onehot = ref.dense_from_index(y, 5)
    for eps in (0.0, 0.1):
        a = F.softmax_focal_loss(
            x, y, gamma=gamma, alpha=[0.1, 0.3, 0.5, 0.7, 0.9], label_smoothing=eps
        )
        b = F.softmax_focal_loss(
            x, onehot, gamma=gamma, alpha=[0.1, 0.3, 0.5, 0.7, 0.9], label_smoothing=eps
        )
        assert_close(a, b, F64)
        (ga,) = torch.autograd.grad(a, x)
        (gb,) = torch.autograd.grad(b, x)
        assert_close(ga, gb, F64)
    # eps = 0 is the plain index loss
    assert_close(
        F.softmax_focal_loss(x, y, gamma=gamma, label_smoothing=0.0),
        F.softmax_focal_loss(x, y, gamma=gamma),
        F64,
    )


@pytest.mark.parametrize(
    "opts", [{"gamma": 2.0}, {"gamma": 0.5, "label_smoothing": 0.1, "alpha": 0.3}]
)
def test_softmax_spatial_equals_flattened_rows(opts: dict) -> None:
    g = torch.Generator().manual_seed(11)
    x = (2 * torch.randn(2, 4, 3, 5, generator=g, dtype=F64)).requires_grad_(True)
    y = torch.randint(0, 4, (2, 3, 5), generator=g)
    y[0, 1, 2] = -100
    none = F.softmax_focal_loss(x, y, reduction="none", **opts)
    assert none.shape == y.shape
    flat_x = x.permute(0, 2, 3, 1).reshape(-1, 4)
    flat = F.softmax_focal_loss(flat_x, y.reshape(-1), reduction="none", **opts)
    assert_close(none.reshape(-1), flat, F64)
    a = F.softmax_focal_loss(x, y, **opts)
    b = F.softmax_focal_loss(flat_x, y.reshape(-1), **opts)
    assert_close(a, b, F64)
    (ga,) = torch.autograd.grad(a, x)
    (gb,) = torch.autograd.grad(b, x)
    assert_close(ga, gb, F64)
    # channels_last input reads the same
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert_close(F.softmax_focal_loss(cl, y, **opts), a, F64)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_softmax_ignoring_a_row_equals_dropping_it(gamma: float) -> None:
    g = torch.Generator().manual_seed(12)
    x = (2 * torch.randn(6, 3, generator=g, dtype=F64)).requires_grad_(True)
    y = torch.tensor([0, -100, 2, 1, -100, 2])
    keep = y != -100
    for opts in ({}, {"label_smoothing": 0.2}, {"class_weight": [0.5, 1.0, 2.0]}):
        got = F.softmax_focal_loss(x, y, gamma=gamma, **opts)
        assert_close(got, F.softmax_focal_loss(x[keep], y[keep], gamma=gamma, **opts), F64)
        (grad,) = torch.autograd.grad(got, x)
        assert torch.all(grad[~keep] == 0)


def test_softmax_unbatched_row() -> None:
    x = torch.tensor([1.0, -1.0, 0.5], dtype=F64)
    got = F.softmax_focal_loss(x, torch.tensor(2), reduction="none")
    assert got.shape == ()
    assert_close(got, F.softmax_focal_loss(x[None], torch.tensor([2]), reduction="none")[0], F64)


@given(
    st.integers(1, 8), st.integers(2, 6), st.integers(0, 10_000), st.sampled_from([0.0, 0.5, 2.0])
)
def test_property_softmax_bounded_by_cross_entropy_and_permutation_invariant(
    n, c, seed, gamma
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 4 * torch.randn(n, c, generator=g, dtype=F64)
    y = torch.randint(0, c, (n,), generator=g)
    focal = F.softmax_focal_loss(x, y, gamma=gamma, reduction="none")
    ce = TF.cross_entropy(x, y, reduction="none")
    p_y = torch.softmax(x, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.all(focal >= 0) and torch.all(focal <= ce * (1 + 1e-12))
    torch.testing.assert_close(focal, ce * (1 - p_y) ** gamma, rtol=1e-9, atol=1e-12)
    perm = torch.randperm(n, generator=g)
    assert_close(F.softmax_focal_loss(x[perm], y[perm], gamma=gamma), focal.mean(), F64)


# --------------------------------------------------------------------------------------------------
# Gradients: gradcheck (float64) beyond the contract suite, second order, soft targets.
# --------------------------------------------------------------------------------------------------


def test_gradcheck_gamma_half_and_second_order() -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 4, generator=g, dtype=F64, requires_grad=True)
    y = torch.tensor([1, 4])
    soft = torch.rand(2, 4, generator=g, dtype=F64)
    for gamma, t in ((0.5, y), (0.5, soft)):

        def fn(inp, t=t, gamma=gamma):
            return F.sigmoid_focal_loss(inp, t, gamma=gamma, reduction="none")

        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))
    sfn = lambda inp: F.softmax_focal_loss(  # noqa: E731
        inp, y.clamp(max=3), gamma=0.5, label_smoothing=0.1, alpha=0.4, reduction="none"
    )
    assert torch.autograd.gradcheck(sfn, (x,))
    assert torch.autograd.gradgradcheck(sfn, (x,))
    # forward-mode AD through the closed-form focal term
    assert torch.autograd.gradcheck(
        lambda inp: F.softmax_focal_loss(inp, y.clamp(max=3), gamma=0.5, reduction="none"),
        (x,),
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
        check_batched_grad=False,
    )


def test_gradcheck_with_respect_to_soft_targets() -> None:
    g = torch.Generator().manual_seed(14)
    x = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
    y = (0.1 + 0.8 * torch.rand(3, 4, generator=g, dtype=F64)).requires_grad_(True)
    for gamma in (0.0, 0.5, 2.0):
        assert torch.autograd.gradcheck(
            lambda a, b, gamma=gamma: F.sigmoid_focal_loss(a, b, gamma=gamma, reduction="none"),
            (x, y),
        )
    p = torch.softmax(torch.randn(3, 4, generator=g, dtype=F64), 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: F.softmax_focal_loss(a, b, gamma=0.5), (x, p))


# --------------------------------------------------------------------------------------------------
# Edge cases.
# --------------------------------------------------------------------------------------------------


def _assert_zero_with_zero_grad(loss: torch.Tensor, x: torch.Tensor) -> None:
    assert loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.all(grad == 0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_all_ignored_gives_zero_with_zero_grads(gamma: float) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    _assert_zero_with_zero_grad(
        F.sigmoid_focal_loss(x, torch.full((4,), -1), gamma=gamma, ignore_index=-1), x
    )
    _assert_zero_with_zero_grad(
        F.sigmoid_focal_loss(x, torch.full((4, 3), 255.0), gamma=gamma, ignore_index=255), x
    )
    _assert_zero_with_zero_grad(F.softmax_focal_loss(x, torch.full((4,), -100), gamma=gamma), x)
    _assert_zero_with_zero_grad(
        F.softmax_focal_loss(x, torch.full((4,), -100), gamma=gamma, class_weight=[1.0, 2.0, 3.0]),
        x,
    )
    _assert_zero_with_zero_grad(
        F.softmax_focal_loss(
            x, torch.full((4,), -100), gamma=gamma, label_smoothing=0.1, avg_factor=0.0
        ),
        x,
    )
    # all valid targets weighted 0 by class_weight: 0, not NaN (cross_entropy's rule)
    _assert_zero_with_zero_grad(
        F.softmax_focal_loss(
            x, torch.zeros(4, dtype=torch.long), gamma=gamma, class_weight=[0.0, 1.0, 1.0]
        ),
        x,
    )


def test_empty_spatial_input() -> None:
    x = torch.randn(2, 3, 0, 4, requires_grad=True)
    y = torch.zeros(2, 0, 4, dtype=torch.long)
    assert F.softmax_focal_loss(x, y, reduction="none").shape == (2, 0, 4)
    _assert_zero_with_zero_grad(F.softmax_focal_loss(x, y), x)
    _assert_zero_with_zero_grad(F.sigmoid_focal_loss(x, y), x)


def test_out_of_range_indices_raise_or_poison() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(
        ValueError, match=r"sigmoid_focal_loss: expected `target` class indices in \[0, 4\]"
    ):
        F.sigmoid_focal_loss(x, torch.tensor([0, 5, 1]))
    with pytest.raises(
        ValueError, match=r"softmax_focal_loss: expected `target` class indices in \[0, 3\]"
    ):
        F.softmax_focal_loss(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="target"):
        F.sigmoid_focal_loss(x, torch.full((3, 4), 1.5))
    with value_checks(False):
        s = F.sigmoid_focal_loss(x, torch.tensor([0, 5, 1]), reduction="none")
        assert torch.isnan(s[1]).all() and torch.isfinite(s[[0, 2]]).all()
        m = F.softmax_focal_loss(x, torch.tensor([0, 4, 1]), reduction="none")
        assert torch.isnan(m[1]) and torch.isfinite(m[[0, 2]]).all()


def test_half_inputs_compute_in_float32_and_sum_stays_finite() -> None:
    x = torch.full((10, 8), -1e4, dtype=torch.float16, requires_grad=True)
    y = torch.ones(10, 8, dtype=torch.float16)  # every element maximally wrong: loss 1e4 each
    total = F.sigmoid_focal_loss(x, y, alpha=None, gamma=0.5, reduction="sum")
    assert total.dtype == torch.float32 and math.isclose(total.item(), 80 * 1e4, rel_tol=1e-3)
    total.backward()
    assert x.grad.dtype == torch.float16 and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = torch.randn(4, 3, 5).requires_grad_(True)
        out = F.softmax_focal_loss(z, torch.randint(0, 3, (4, 5)), gamma=0.5)
    assert out.dtype == torch.float32 and torch.isfinite(out)


# --------------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------------


def test_rejects_bad_options_with_clear_messages() -> None:
    x, yi = torch.randn(3, 4), torch.tensor([0, 1, 2])
    sig, soft = F.sigmoid_focal_loss, F.softmax_focal_loss
    with pytest.raises(
        ValueError, match=r"sigmoid_focal_loss: expected `gamma` in \[0, inf\], got -1.0"
    ):
        sig(x, yi, gamma=-1.0)
    with pytest.raises(
        ValueError, match=r"softmax_focal_loss: expected `gamma` in \[0, inf\], got -0.5"
    ):
        soft(x, yi, gamma=-0.5)
    with pytest.raises(
        ValueError, match=r"sigmoid_focal_loss: expected `alpha` in \[0, 1\], got 1.5"
    ):
        sig(x, yi, alpha=1.5)
    with pytest.raises(ValueError, match=r"expected `alpha` in \[0, 1\], got -0.1"):
        soft(x, yi, alpha=-0.1)
    with pytest.raises(ValueError, match="alpha` a finite number"):
        sig(x, yi, alpha=float("nan"))
    with pytest.raises(TypeError, match="alpha"):
        sig(x, yi, alpha="0.25")
    with pytest.raises(TypeError, match="alpha"):
        soft(x, yi, alpha="0.25")
    with pytest.raises(
        ValueError, match=r"`alpha` a float or a per-class sequence of length C=4, got shape \(3,\)"
    ):
        soft(x, yi, alpha=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"`alpha` per-class values in \[0, 1\]"):
        soft(x, yi, alpha=[0.1, 0.2, 0.3, 1.2])
    with pytest.raises(ValueError, match=r"`balance_index` in \[0, 4\)"):
        soft(x, yi, alpha=0.25, balance_index=4)
    with pytest.raises(ValueError, match="balance_index"):
        soft(x, yi, alpha=0.25, balance_index=-1)
    with pytest.raises(TypeError, match="balance_index"):
        soft(x, yi, balance_index=1.0)
    with pytest.raises(ValueError, match=r"`label_smoothing` in \[0, 1\], got 1.5"):
        soft(x, yi, label_smoothing=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        soft(x, yi, label_smoothing=-0.1)
    with pytest.raises(ValueError, match=r"`class_weight` a 1-d tensor of length C=4"):
        soft(x, yi, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weight"):
        soft(x, yi, class_weight=[1.0, -2.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="backend"):
        sig(x, yi, backend="cuda")
    with pytest.raises(ValueError, match="triton"):
        soft(x, yi, backend="triton")  # CPU tensors
    with pytest.raises(ValueError, match="triton"):
        sig(x, yi, backend="triton")


def test_rejects_bad_targets() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(
        ValueError, match=r"sigmoid_focal_loss: expected `target` the logits' shape \(3, 4\)"
    ):
        F.sigmoid_focal_loss(x, torch.zeros(4, 3))
    with pytest.raises(
        ValueError, match=r"softmax_focal_loss: expected `target` class indices of shape \(3,\)"
    ):
        F.softmax_focal_loss(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="probabilities of the logits' shape"):
        F.softmax_focal_loss(x, torch.zeros(3, 5))
    with pytest.raises(TypeError, match="integer tensor of class indices"):
        F.softmax_focal_loss(x, torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        F.softmax_focal_loss(torch.randn(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index"):
        F.softmax_focal_loss(x, torch.softmax(x, 1), ignore_index=0)
    with pytest.raises(ValueError, match="device"):
        F.softmax_focal_loss(x, torch.zeros(3, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"weight"):
        F.sigmoid_focal_loss(x, torch.tensor([0, 1, 2]), weight=torch.ones(4))


def test_module_validation_buffers_and_repr() -> None:
    with pytest.raises(ValueError, match=r"SigmoidFocalLoss: expected `gamma` in \[0, inf\]"):
        lf.SigmoidFocalLoss(gamma=-2.0)
    with pytest.raises(ValueError, match=r"SigmoidFocalLoss: expected `alpha` in \[0, 1\]"):
        lf.SigmoidFocalLoss(alpha=2.0)
    with pytest.raises(ValueError, match=r"SoftmaxFocalLoss: expected `alpha` values in \[0, 1\]"):
        lf.SoftmaxFocalLoss(alpha=[0.5, 1.5])
    with pytest.raises(ValueError, match="class_weight"):
        lf.SoftmaxFocalLoss(class_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="balance_index"):
        lf.SoftmaxFocalLoss(balance_index=-1)
    with pytest.raises(ValueError, match="label_smoothing"):
        lf.SoftmaxFocalLoss(label_smoothing=2.0)
    mod = lf.SoftmaxFocalLoss(
        alpha=[0.25, 0.5, 0.25], class_weight=torch.tensor([1.0, 2.0, 3.0]), gamma=0.5
    )
    assert set(dict(mod.named_buffers())) == {"alpha", "class_weight"}
    assert "alpha=[0.25, 0.5, 0.25]" in repr(mod) and "gamma=0.5" in repr(mod)
    x, y = torch.randn(5, 3, dtype=F64), torch.randint(0, 3, (5,))
    expected = F.softmax_focal_loss(
        x, y, gamma=0.5, alpha=[0.25, 0.5, 0.25], class_weight=[1.0, 2.0, 3.0]
    )
    assert_close(mod.to(F64)(x, y), expected, F64)
    assert mod.alpha.dtype == F64  # buffers follow .to()
    assert "alpha" not in dict(lf.SoftmaxFocalLoss(alpha=0.3).named_buffers())
    assert lf.SigmoidFocalLoss.registry_name == "sigmoid_focal"
    assert lf.SoftmaxFocalLoss.registry_name == "softmax_focal"
    from lossforge.registry import build_loss

    built = build_loss({"type": "softmax_focal", "gamma": 1.0, "alpha": [0.5, 0.5, 0.5]})
    assert isinstance(built, lf.SoftmaxFocalLoss)
    assert isinstance(build_loss({"type": "sigmoid_focal"}), lf.SigmoidFocalLoss)


# --------------------------------------------------------------------------------------------------
# Fused-kernel dispatch plumbing (no GPU needed: a stand-in kernel module records the calls).
# --------------------------------------------------------------------------------------------------


def _fake_kernels(monkeypatch):
    import lossforge._pipeline as pipeline_mod
    import lossforge.kernels
    from lossforge._reduction import divide

    calls: list[tuple[str, object, dict]] = []

    def _reduce(out, reduce, denom):
        if not reduce:
            return out
        total = out.sum()
        return total if denom is None else divide("fake", total, denom)

    def sig_loss(logits, target, *, kind, index_target, weight, ignore_index, reduce, denom, **kw):
        calls.append(("sigmoid", target, {"ignore_index": ignore_index, "denom": denom, **kw}))
        out = F.sigmoid_focal_loss(
            logits, target, ignore_index=ignore_index, weight=weight.tensor, reduction="none", **kw
        )
        return _reduce(out, reduce, denom)

    def soft_loss(
        logits, target, *, kind, coef, logit_bias, ignore_index, weight, reduce, denom, **kw
    ):
        calls.append(("softmax", target, {"alpha": coef, "denom": denom, **kw}))
        # the kernel's coef is a plain per-class multiplier: what class_weight multiplies in the
        # reference; the denominator comes from the pipeline
        out = F.softmax_focal_loss(
            logits,
            target,
            class_weight=coef,
            ignore_index=ignore_index,
            weight=weight.tensor,
            reduction="none",
            gamma=kw["gamma"],
        )
        return _reduce(out, reduce, denom)

    def sig_reason(logits, target, weight=None, **params):
        return "logits dtype torch.float64" if logits.dtype == F64 else None

    def soft_reason(logits, target, *, kind="ce", label_smoothing=0.0, **params):
        if target.is_floating_point():
            return "probability (soft) targets"
        return "label smoothing in the softmax focal loss" if label_smoothing > 0 else None

    sig = types.SimpleNamespace(_loss=sig_loss, _reason=sig_reason)
    soft = types.SimpleNamespace(_loss=soft_loss, _reason=soft_reason)
    monkeypatch.setitem(sys.modules, "lossforge.kernels.sigmoid", sig)
    monkeypatch.setitem(sys.modules, "lossforge.kernels.softmax", soft)
    monkeypatch.setattr(lossforge.kernels, "sigmoid", sig, raising=False)
    monkeypatch.setattr(lossforge.kernels, "softmax", soft, raising=False)
    monkeypatch.setattr(pipeline_mod, "kernel_eligible", lambda fn, backend, *t: backend != "torch")
    return calls


def test_sigmoid_routes_to_the_fused_kernel(monkeypatch) -> None:
    calls = _fake_kernels(monkeypatch)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 3, 2, -1, 1], dtype=torch.int32)
    got = F.sigmoid_focal_loss(x, y, gamma=0.5, alpha=0.3, ignore_index=-1, backend="auto")
    assert len(calls) == 1 and calls[0][1] is y  # the raw index target: no one-hot built
    assert (
        calls[0][2]["gamma"] == 0.5
        and calls[0][2]["alpha"] == 0.3
        and calls[0][2]["ignore_index"] == -1
    )
    assert_close(got, F.sigmoid_focal_loss(x, y, gamma=0.5, alpha=0.3, ignore_index=-1))
    with pytest.raises(ValueError, match="target"):  # validated before the kernel
        F.sigmoid_focal_loss(x, torch.tensor([0, 9, 2, 1, 1]), backend="auto")
    with pytest.raises(ValueError, match="gamma"):
        F.sigmoid_focal_loss(x, y, gamma=-1.0, backend="auto")
    with pytest.raises(ValueError, match="weight"):
        F.sigmoid_focal_loss(x, y.long(), weight=torch.ones(4), ignore_index=-1, backend="auto")
    n = len(calls)
    x64 = x.double()
    assert_close(
        F.sigmoid_focal_loss(x64, y, ignore_index=-1, backend="auto"),
        F.sigmoid_focal_loss(x64, y, ignore_index=-1),
        F64,
    )
    assert len(calls) == n  # fell back
    with pytest.raises(ValueError, match="float64"):
        F.sigmoid_focal_loss(x64, y, ignore_index=-1, backend="triton")


def test_softmax_routes_to_the_fused_kernel(monkeypatch) -> None:
    calls = _fake_kernels(monkeypatch)
    x = torch.randn(4, 3, 2, 2)
    y = torch.randint(0, 3, (4, 2, 2))
    y[0, 0, 0] = -100
    kw = {"gamma": 0.5, "alpha": 0.25, "balance_index": 2, "class_weight": [1.0, 2.0, 0.5]}
    got = F.softmax_focal_loss(x, y, backend="auto", **kw)
    assert len(calls) == 1 and calls[0][1] is y
    sent = calls[0][2]
    # alpha and class_weight are folded into one per-class vector; the class-weighted mean
    # denominator (decided by the pipeline) travels as a device tensor
    torch.testing.assert_close(sent["alpha"], torch.tensor([0.75, 1.5, 0.125]))
    assert isinstance(sent["denom"].value, torch.Tensor)
    assert_close(got, F.softmax_focal_loss(x, y, **kw))
    with pytest.raises(ValueError, match="balance_index"):
        F.softmax_focal_loss(x, y, alpha=0.2, balance_index=3, backend="auto")
    with pytest.raises(ValueError, match="target"):
        F.softmax_focal_loss(x, torch.full((4, 2, 2), 7), backend="auto")
    n = len(calls)
    # cases the kernel cannot serve: fall back under "auto", raise under "triton"
    F.softmax_focal_loss(x, y, label_smoothing=0.1, backend="auto")
    F.softmax_focal_loss(x, torch.softmax(x, 1), backend="auto")
    assert len(calls) == n
    with pytest.raises(ValueError, match="label smoothing"):
        F.softmax_focal_loss(x, y, label_smoothing=0.1, backend="triton")


def test_compiles_without_graph_breaks_on_the_closed_form_path() -> None:
    """The custom focal-term Function (index targets, gamma < 1, smoothing) traces under
    torch.compile(fullgraph=True); forward-mode AD (its ``jvp``) is eager-only."""
    x = 3 * torch.randn(5, 4, 3)
    y = torch.randint(0, 4, (5, 3))
    y[0, 0] = -100
    xs, ys = 30 * torch.randn(6, 4), torch.randint(0, 5, (6,))
    cases = [
        (lambda a: F.softmax_focal_loss(a, y, gamma=0.5, label_smoothing=0.1, alpha=0.3), x),
        (lambda a: F.sigmoid_focal_loss(a, ys, gamma=0.5), xs),
    ]
    for fn, inp in cases:
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend="eager")
        a, b = inp.clone().requires_grad_(True), inp.clone().requires_grad_(True)
        got, want = compiled(a), fn(b)
        got.backward()
        want.backward()
        assert_close(got, want)
        assert_close(a.grad, b.grad)


_INTERPRETED_DISPATCH = r"""
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch
from lossforge import _dispatch
from lossforge.functional import focal as FM
torch.manual_seed(0)

def check(a, b, xa, xb):
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-6)

x = 3 * torch.randn(4, 3, 2, 2)
y = torch.randint(0, 3, (4, 2, 2))
y[0, 0, 0] = -100
soft_cases = [
    {"gamma": 2.0},
    {"gamma": 0.5, "alpha": 0.25, "balance_index": 2, "class_weight": [1.0, 2.0, 0.5]},
    {"gamma": 0.0, "class_weight": [1.0, 2.0, 0.5]},
]
for kw in soft_cases:
    for reduction in ("none", "mean"):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        with _dispatch.cpu_kernels():
            a = FM.softmax_focal_loss(xa, y, reduction=reduction, backend="triton", **kw)
        check(a, FM.softmax_focal_loss(xb, y, reduction=reduction, **kw), xa, xb)
xs = 3 * torch.randn(6, 4)
for t in (torch.tensor([0, 4, 1, -1, 3, 2]), torch.rand(6, 4)):
    for gamma, alpha in ((2.0, 0.25), (0.5, None)):
        xa, xb = xs.clone().requires_grad_(True), xs.clone().requires_grad_(True)
        with _dispatch.cpu_kernels():
            a = FM.sigmoid_focal_loss(
                xa, t, alpha=alpha, gamma=gamma, ignore_index=-1, backend="triton")
        check(a, FM.sigmoid_focal_loss(xb, t, alpha=alpha, gamma=gamma, ignore_index=-1), xa, xb)
print("ok")
"""


def test_fused_dispatch_under_the_triton_interpreter() -> None:
    """The real kernels behind the pipeline (alpha / class_weight folding, the class-weighted mean
    denominator decided by the pipeline, raw index targets) equal the reference, on CPU."""
    pytest.importorskip("triton")
    import os
    import subprocess

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


# ------------------------------------------------------------------------------------------------
# Float targets holding only 0 and 1 take the hard-target form on the CPU (binary_values)
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def hard_flags(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``hard`` flag of every call of the sigmoid focal closed form / composite."""
    import lossforge.functional._terms as terms

    flags: list[bool] = []
    for name in ("sigmoid_focal_closed", "sigmoid_focal_composite"):
        original = getattr(terms, name)

        def spy(*a, _original=original, **k):  # noqa: ANN002, ANN003, ANN202
            flags.append(k["hard"])
            return _original(*a, **k)

        monkeypatch.setattr(terms, name, spy)
    return flags


def test_binary_float_targets_take_the_hard_form(hard_flags) -> None:
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(16, 6, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = (torch.rand(16, 6, generator=g) < 0.3).double()
    out = F.sigmoid_focal_loss(x, y, gamma=2.0, alpha=0.25)
    (gx,) = torch.autograd.grad(out, x)
    assert hard_flags == [True]
    # the same values as the soft form and the float64 formula
    r = x.detach().clone().requires_grad_(True)
    expected = ref.sigmoid_focal_map(r.detach(), y, alpha=0.25, gamma=2.0).mean()
    assert_close(out, expected, torch.float64)
    soft = y * (1 - 1e-12)  # not binary: the soft form, whose value is continuous in y
    hard_flags.clear()
    out_soft = F.sigmoid_focal_loss(r, soft, gamma=2.0, alpha=0.25)
    (gs,) = torch.autograd.grad(out_soft, r)
    assert hard_flags == [False]
    assert_close(out, out_soft, torch.float64)
    torch.testing.assert_close(gx, gs, rtol=1e-9, atol=1e-12)


def test_binary_values_not_read_where_they_must_not_be(hard_flags) -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = (torch.rand(8, 3, generator=g) < 0.5).double()
    # a target that requires grad keeps the soft formulas (they carry its gradient)
    yg = y.clone().requires_grad_(True)
    F.sigmoid_focal_loss(x, yg).backward()
    assert hard_flags == [False] and yg.grad is not None and yg.grad.abs().sum() > 0
    # values other than 0 and 1, and NaN (value checks off), stay soft
    for bad in (0.5, float("nan")):
        hard_flags.clear()
        yb = y.clone()
        yb[0, 0] = bad
        with value_checks(False):
            F.sigmoid_focal_loss(x, yb)
        assert hard_flags == [False]
    # torch.func transforms read no values
    hard_flags.clear()
    torch.func.grad(lambda a: F.sigmoid_focal_loss(a, y))(x)
    assert hard_flags and not any(hard_flags)
    # bool targets were hard by their dtype already; gamma = 0 is plain BCE either way
    hard_flags.clear()
    F.sigmoid_focal_loss(x, y.bool())
    assert hard_flags == [True]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_dense_target_outside_zero_one_is_its_float_value(dtype) -> None:
    """An integer dense target takes the hard-target form only when its values were checked:
    with value checks off a 2 gives what the float 2.0 gives (the formula, as the kernels
    compute it), not the hard form's negative loss; with them on it is the [0, 1] error."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
    t = torch.tensor([[2, 0], [1, 0]], dtype=dtype)
    for fn in (F.sigmoid_focal_loss, F.binary_cross_entropy_with_logits):
        with lf.value_checks(False):
            got = fn(x, t, reduction="none")
            want = fn(x, t.double(), reduction="none")
        assert_close(got, want, torch.float64)
        with lf.value_checks(True), pytest.raises(ValueError, match=r"`target` values in \[0, 1\]"):
            fn(x, t)
    ok = t.clamp(max=1)  # valid integer targets still take the hard form, equal to the float one
    assert_close(
        F.sigmoid_focal_loss(x, ok, reduction="none"),
        F.sigmoid_focal_loss(x, ok.double(), reduction="none"),
        torch.float64,
    )
