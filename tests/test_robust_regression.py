"""Huber and balanced L1 (Libra R-CNN): the contract, references, PyTorch and mmdetection parity,
the paper's gradient, identities, extreme differences, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import robust_regression as ref

import lossforge as lf
import lossforge.functional as F

F64 = torch.float64


def _make(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    return x, torch.randn(n, 4, generator=g, dtype=F64)


CASES = [
    LossCase("huber", F.huber_loss, lf.HuberLoss, {}, _make, extreme=False),
    LossCase("huber_0.3", F.huber_loss, lf.HuberLoss, {"delta": 0.3}, _make, extreme=False),
    LossCase("huber_2.5", F.huber_loss, lf.HuberLoss, {"delta": 2.5}, _make, extreme=False),
    LossCase("balanced_l1", F.balanced_l1_loss, lf.BalancedL1Loss, {}, _make, extreme=False),
    LossCase(
        "balanced_l1_beta",
        F.balanced_l1_loss,
        lf.BalancedL1Loss,
        {"alpha": 0.3, "gamma": 1.0, "beta": 0.5},
        _make,
        extreme=False,
    ),
]
globals().update(contract_test_suite(CASES))


def _data(shape: tuple[int, ...] = (50, 4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(shape, generator=g, dtype=F64), torch.randn(
        shape, generator=g, dtype=F64
    )


@pytest.mark.parametrize("delta", [0.1, 1.0, 2.0, 7.5])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (0, 4)])
def test_huber_matches_torch_and_reference(delta: float, shape: tuple[int, ...]) -> None:
    x, y = _data(shape)
    want = ref.huber(x, y, delta)
    for reduction in ("none", "sum", "mean"):
        ours = F.huber_loss(x, y, delta=delta, reduction=reduction)
        expected = {"none": want, "sum": want.sum(), "mean": want.sum() / max(want.numel(), 1)}
        assert_close(ours, expected[reduction], F64, rtol=1e-12, atol=1e-12)
        if x.numel() or reduction != "mean":  # torch's mean of nothing is NaN, ours 0
            xg = x.clone().requires_grad_(True)
            tg = x.clone().requires_grad_(True)
            a = F.huber_loss(xg, y, delta=delta, reduction=reduction)
            b = TF.huber_loss(tg, y, delta=delta, reduction=reduction)
            assert_close(a, b, F64, rtol=0, atol=0)
            (a.sum() if a.ndim else a).backward()
            (b.sum() if b.ndim else b).backward()
            assert_close(xg.grad, tg.grad, F64, rtol=0, atol=0)


def test_huber_identities() -> None:
    x, y = _data()
    for delta in (0.25, 1.0, 3.0):
        assert_close(
            F.huber_loss(x, y, delta=delta, reduction="none"),
            delta * F.smooth_l1_loss(x, y, beta=delta, reduction="none"),
            F64,
        )
    # large delta: 0.5 * MSE; small delta / delta -> L1 - delta / 2
    assert_close(F.huber_loss(x, y, delta=1e6), 0.5 * F.mse_loss(x, y), F64)
    small = 1e-9
    assert_close(
        F.huber_loss(x, y, delta=small, reduction="none") / small,
        F.l1_loss(x, y, reduction="none") - small / 2,
        F64,
        rtol=1e-8,
        atol=1e-8,
    )


@pytest.mark.parametrize(
    ("alpha", "gamma", "beta"), [(0.5, 1.5, 1.0), (0.3, 1.0, 0.5), (1.0, 3.0, 2.0), (2.0, 0.5, 1.0)]
)
def test_balanced_l1_matches_reference(alpha: float, gamma: float, beta: float) -> None:
    x, y = _data((40, 4), seed=1)
    x[0, 0] = y[0, 0]  # d = 0
    x[1, 1] = y[1, 1] + beta  # exactly at the switch
    got = F.balanced_l1_loss(x, y, alpha=alpha, gamma=gamma, beta=beta, reduction="none")
    assert_close(got, ref.balanced_l1(x, y, alpha, gamma, beta), F64, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, F64])
@pytest.mark.parametrize(("alpha", "gamma", "beta"), [(0.05, 2.0, 1.0), (0.0125, 1.0, 1e-4)])
def test_balanced_l1_steep_inlier_curve_stays_finite(alpha, gamma, beta, dtype) -> None:
    """gamma / alpha = 40 and 80 (the largest accepted: b = e^80 - 1), a small beta, d = 0
    included: finite values and gradients in float32 (half inputs are computed in it), equal
    to the paper's formula and gradient in float64."""
    x, y = _data((30, 4), seed=4)
    x, y = x * beta, y * beta
    x[0, 0] = y[0, 0]  # d = 0
    xg = x.to(dtype).requires_grad_(True)
    yd = y.to(dtype)
    got = F.balanced_l1_loss(xg, yd, alpha=alpha, gamma=gamma, beta=beta, reduction="none")
    got.sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(xg.grad).all()
    if dtype == F64:
        want = ref.balanced_l1(x, y, alpha, gamma, beta)
        assert_close(got, want, F64, rtol=1e-10, atol=1e-12)
        grad = ref.balanced_l1_grad(x, y, alpha, gamma, beta)
        assert_close(xg.grad, grad, F64, rtol=1e-10, atol=1e-12)


def test_balanced_l1_refuses_a_ratio_whose_b_overflows() -> None:
    """gamma / alpha above 80: b = e^(gamma / alpha) - 1 overflows float32 (the loss would be
    NaN, and Python's expm1 raises OverflowError past 709): a ValueError naming both, from the
    function and the constructor."""
    x, y = _data((4, 4), seed=0)
    for alpha, gamma in ((0.01, 1.0), (0.001, 1.0), (1.0, 1e30)):
        with pytest.raises(ValueError, match=r"expected `gamma` gamma / alpha <= 80.*alpha="):
            F.balanced_l1_loss(x, y, alpha=alpha, gamma=gamma)
        with pytest.raises(ValueError, match=r"BalancedL1Loss: expected `gamma` gamma / alpha"):
            lf.BalancedL1Loss(alpha=alpha, gamma=gamma)
    F.balanced_l1_loss(x, y, alpha=0.0125, gamma=1.0)  # exactly 80: accepted


def test_balanced_l1_gradient_is_the_papers() -> None:
    """Libra R-CNN eq. 9: dL/dx = alpha ln(b|x| + 1) inside, gamma outside (at |x| / beta)."""
    x, y = _data((60, 4), seed=2)
    for alpha, gamma, beta in ((0.5, 1.5, 1.0), (0.2, 1.0, 1.0), (1.0, 2.0, 0.4), (0.5, 1.5, 3.0)):
        xg = x.clone().requires_grad_(True)
        F.balanced_l1_loss(xg, y, alpha=alpha, gamma=gamma, beta=beta, reduction="sum").backward()
        want = ref.balanced_l1_grad(x, y, alpha, gamma, beta)
        assert_close(xg.grad, want, F64, rtol=1e-10, atol=1e-12)


@given(st.floats(0.05, 3.0), st.floats(0.05, 3.0), st.floats(0.05, 4.0))
def test_property_balanced_l1_is_continuous_at_beta(
    alpha: float, gamma: float, beta: float
) -> None:
    y = torch.zeros(2, dtype=F64)
    x = torch.tensor([beta * (1 - 1e-12), beta], dtype=F64)
    below, at = F.balanced_l1_loss(x, y, alpha=alpha, gamma=gamma, beta=beta, reduction="none")
    assert abs(float(below - at)) <= 1e-9 * max(1.0, abs(float(at)))
    # non-negative, zero at zero, even in d
    z = torch.linspace(-3 * beta, 3 * beta, 61, dtype=F64)
    v = F.balanced_l1_loss(
        z, torch.zeros_like(z), alpha=alpha, gamma=gamma, beta=beta, reduction="none"
    )
    assert torch.all(v >= -1e-15)  # rounding of the inner piece near 0
    assert_close(v, v.flip(0), F64)
    zero = F.balanced_l1_loss(y, y, alpha=alpha, gamma=gamma, beta=beta, reduction="none")
    assert torch.all(zero == 0)


# mmdetection's balanced_l1_loss (mmdet/models/losses/balanced_l1_loss.py) + weight_reduce_loss,
# rewritten from reading the source.
def mm_balanced_l1(p, t, beta=1.0, alpha=0.5, gamma=1.5):
    diff = torch.abs(p - t)
    b = np.e ** (gamma / alpha) - 1
    return torch.where(
        diff < beta,
        alpha / b * (b * diff + 1) * torch.log(b * diff / beta + 1) - alpha * diff,
        gamma * diff + gamma / b - alpha * beta,
    )


def mm_reduce(loss, weight=None, reduction="mean", avg_factor=None):
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]
    return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)


MM_DIFF: dict[str, float] = {}


@pytest.mark.parametrize("kw", [{}, {"alpha": 0.3, "gamma": 1.0}, {"alpha": 1.0, "gamma": 2.0}])
def test_balanced_l1_matches_mmdetection(kw: dict[str, Any]) -> None:
    x, y = _data((64, 4), seed=3)
    w = torch.rand(64, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    module = lf.BalancedL1Loss(**kw)
    worst = 0.0
    for weight, avg, reduction in [(None, None, "mean"), (w, None, "none"), (w, 12.0, "mean")]:
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        ours = module(a, y, weight, avg_factor=avg, reduction_override=reduction)
        theirs = mm_reduce(mm_balanced_l1(b, y, **kw), weight, reduction, avg)
        assert_close(ours, theirs, F64, rtol=1e-6, atol=1e-9)
        (ours.sum()).backward()
        (theirs.sum()).backward()
        assert_close(a.grad, b.grad, F64, rtol=1e-6, atol=1e-12)
        worst = max(worst, float((ours - theirs).detach().abs().max()))
    MM_DIFF[str(kw)] = worst


def test_mmdetection_beta_form_is_not_minimised_at_zero() -> None:
    """Why beta != 1 is not mmdetection's formula: its slope at d = 0 is alpha (1 / beta - 1),
    so for beta > 1 the loss dips below 0 next to a perfect prediction; ours is beta * L_1(d /
    beta), >= 0 with the minimum at d = 0."""
    d = torch.linspace(0.0, 0.5, 51, dtype=F64)
    theirs = mm_balanced_l1(d, torch.zeros_like(d), beta=2.0)
    ours = F.balanced_l1_loss(d, torch.zeros_like(d), beta=2.0, reduction="none")
    assert theirs.min() < -0.004
    assert torch.all(ours >= 0) and torch.all(ours[1:] > 0)
    # both agree at beta = 1
    assert_close(
        F.balanced_l1_loss(3 * d, torch.zeros_like(d), reduction="none"),
        mm_balanced_l1(3 * d, torch.zeros_like(d)),
        F64,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, F64])
def test_extreme_differences_are_finite(dtype: torch.dtype) -> None:
    big = torch.tensor([-6e4, -1e3, 0.0, 1e-6, 1e3, 6e4], dtype=dtype).requires_grad_(True)
    for fn, kw in ((F.balanced_l1_loss, {}), (F.huber_loss, {"delta": 0.5})):
        out = fn(big, torch.zeros(6, dtype=dtype), reduction="none", **kw)
        assert torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.sum(), big)
        assert torch.isfinite(grad).all()
    # the outlier slope is gamma exactly (no overflow in the unused log branch)
    x = torch.tensor([1e30], dtype=torch.float32, requires_grad=True)
    F.balanced_l1_loss(x, torch.zeros(1)).backward()
    assert x.grad.item() == 1.5


def test_errors() -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=r"huber_loss: expected `delta` in \(0, inf\], got 0.0"):
        F.huber_loss(x, x, delta=0.0)
    for key in ("alpha", "gamma", "beta"):
        with pytest.raises(ValueError, match=rf"balanced_l1_loss: expected `{key}` in \(0, inf\]"):
            F.balanced_l1_loss(x, x, **{key: 0.0})
        with pytest.raises(ValueError, match=key):
            lf.BalancedL1Loss(**{key: -1.0})
    with pytest.raises(ValueError, match="target"):
        F.huber_loss(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(TypeError, match="backend"):
        F.huber_loss(x, x, backend="torch")  # no kernel, no backend argument
    assert math.isfinite(F.huber_loss(x, x).item())
