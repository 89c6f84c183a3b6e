"""Asymmetric losses: float64 references, identities with BCE / CE, low-precision finiteness,
the gradient-stop switch, index targets, edge cases and properties."""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import NamedTuple
from unittest import mock

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import asymmetric as ref

import lossforge as lf
import lossforge.functional as F
from lossforge._checks import compute_dtype
from lossforge.functional import asymmetric as asl_mod


def _make_dense(
    n: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 5, generator=g, dtype=torch.float64) * 2).to(dtype)
    y = (torch.rand(n, 5, generator=g) < 0.3).to(dtype)
    return x, y


def _make_soft(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 2, 3, generator=g, dtype=torch.float64) * 2).to(dtype)
    y = torch.rand(n, 2, 3, generator=g, dtype=torch.float64).to(dtype)
    return x, y


def _make_index(
    n: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 4, generator=g, dtype=torch.float64) * 2).to(dtype)
    t = torch.randint(0, 5, (n,), generator=g)  # 4 = background
    if n > 1:
        t[1] = -1  # ignored row
    return x, t


def _make_single(
    n: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 5, generator=g, dtype=torch.float64) * 2).to(dtype)
    return x, torch.randint(0, 5, (n,), generator=g)


def _make_single_spatial(
    n: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 4, 3, generator=g, dtype=torch.float64) * 2).to(dtype)
    t = torch.randint(0, 4, (n, 3), generator=g)
    if n > 0:
        t[0, 1] = -100
    return x, t


ASL, SASL = F.asymmetric_loss, F.softmax_asymmetric_loss
CASES = [
    LossCase("asl_default", ASL, lf.AsymmetricLoss, {}, _make_dense),
    LossCase(
        "asl_pos_gamma_no_clip",
        ASL,
        lf.AsymmetricLoss,
        {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.0, "eps": 0.0},
        _make_dense,
    ),
    LossCase(
        "asl_fractional_gamma",
        ASL,
        lf.AsymmetricLoss,
        {"gamma_pos": 0.5, "gamma_neg": 0.7, "clip": 0.1},
        _make_dense,
    ),
    LossCase("asl_soft", ASL, lf.AsymmetricLoss, {"gamma_pos": 1.0, "clip": 0.05}, _make_soft),
    LossCase(
        "asl_index_ignore",
        ASL,
        lf.AsymmetricLoss,
        {"ignore_index": -1},
        _make_index,
        mean_is_count=False,
    ),
    LossCase(
        "softmax_asl_default", SASL, lf.SoftmaxAsymmetricLoss, {}, _make_single, elementwise=False
    ),
    LossCase(
        "softmax_asl_spatial",
        SASL,
        lf.SoftmaxAsymmetricLoss,
        {"gamma_pos": 0.5, "gamma_neg": 2.0, "label_smoothing": 0.2},
        _make_single_spatial,
        elementwise=False,
        mean_is_count=False,
    ),
]
globals().update(contract_test_suite(CASES))


# --------------------------------------------------------------------------------------------------
# Multi-label ASL
# --------------------------------------------------------------------------------------------------

OPTION_SETS = [
    {},
    {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8},
    {"gamma_pos": 0.0, "gamma_neg": 2.0, "clip": 0.0, "eps": 0.0},
    {"gamma_pos": 0.5, "gamma_neg": 0.25, "clip": 0.2, "eps": 1e-3},
    {"gamma_pos": 2.0, "gamma_neg": 0.0, "clip": 0.3, "eps": 0.0},
]


@pytest.mark.parametrize(
    "opts", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_asl_matches_reference(opts: dict, reduction: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 2, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(4, 6, 2, generator=g) < 0.4).double()
    assert_close(
        F.asymmetric_loss(x, y, reduction=reduction, **opts),
        ref.asymmetric(x, y, reduction=reduction, **opts),
        torch.float64,
    )
    soft = torch.rand(4, 6, 2, generator=g, dtype=torch.float64)
    assert_close(
        F.asymmetric_loss(x, soft, reduction=reduction, **opts),
        ref.asymmetric(x, soft, reduction=reduction, **opts),
        torch.float64,
    )


def test_asl_worked_number() -> None:
    # x = 3 positive: -log sigma(3) = 0.048587; x = -1 negative: p = 0.268941, p_m = 0.218941,
    # -(p_m^4) log(1 - p_m) = 0.000567; x = 0.5 negative: p_m = 0.572456,
    # -(p_m^4) log(0.427544) = 0.091047.
    got = F.asymmetric_loss(
        torch.tensor([[3.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]), reduction="none"
    )
    expected = []
    for xv, yv in ((3.0, 1.0), (-1.0, 0.0), (0.5, 0.0)):
        p = 1 / (1 + math.exp(-xv))
        pm = max(p - 0.05, 0.0)
        expected.append(-math.log(p) if yv else -(pm**4) * math.log(1 - pm))
    assert_close(got, torch.tensor([expected]), torch.float32)
    assert abs(got.sum().item() - 0.1404) < 1e-4


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4, 5), (7,)])
def test_asl_zero_gammas_no_clip_is_bce_values_and_grads(shape: tuple[int, ...]) -> None:
    x = (torch.randn(shape, dtype=torch.float64) * 4).requires_grad_()
    y = (torch.rand(shape) < 0.5).double()
    a = F.asymmetric_loss(x, y, gamma_pos=0.0, gamma_neg=0.0, clip=0.0, eps=0.0)
    (ga,) = torch.autograd.grad(a, x)
    b = TF.binary_cross_entropy_with_logits(x, y)
    (gb,) = torch.autograd.grad(b, x)
    assert_close(a, b, torch.float64)
    assert_close(ga, gb, torch.float64)
    # with the default eps the clamp is inactive for |x| < -log(1e-8) ~ 18.4
    assert_close(F.asymmetric_loss(x, y, gamma_pos=0.0, gamma_neg=0.0, clip=0.0), b, torch.float64)


def test_asl_equal_gammas_no_clip_is_focal_without_alpha() -> None:
    x = torch.randn(5, 7, dtype=torch.float64) * 3
    y = (torch.rand(5, 7) < 0.4).double()
    p = torch.sigmoid(x)
    pt = y * p + (1 - y) * (1 - p)
    focal = TF.binary_cross_entropy_with_logits(x, y, reduction="none") * (1 - pt) ** 2
    assert_close(
        F.asymmetric_loss(x, y, gamma_pos=2.0, gamma_neg=2.0, clip=0.0, eps=0.0, reduction="none"),
        focal,
        torch.float64,
    )


def test_asl_index_targets_equal_dense_one_hot_and_ignore_drops_rows() -> None:
    x = torch.randn(6, 4, 3, dtype=torch.float64) * 2
    t = torch.tensor([[0, 4, 2], [3, 3, 1], [-1, 0, 4], [2, 2, 2], [4, 4, 4], [1, -1, 0]])
    dense = torch.zeros(6, 4, 3, dtype=torch.float64)
    for n in range(6):
        for s in range(3):
            if 0 <= t[n, s] < 4:
                dense[n, t[n, s], s] = 1.0
    keep = (t != -1).unsqueeze(1).expand_as(x)
    none_idx = F.asymmetric_loss(x, t, ignore_index=-1, reduction="none")
    none_dense = F.asymmetric_loss(x, dense, reduction="none")
    assert_close(
        none_idx, torch.where(keep, none_dense, torch.zeros_like(none_dense)), torch.float64
    )
    assert_close(F.asymmetric_loss(x, t, ignore_index=-1), none_dense[keep].mean(), torch.float64)
    assert_close(
        F.asymmetric_loss(x, t, ignore_index=-1),
        ref.asymmetric(x, t, ignore_index=-1),
        torch.float64,
    )
    # ignoring a row == dropping it (2-d case)
    x2, t2 = torch.randn(5, 4, dtype=torch.float64), torch.tensor([1, -1, 4, 0, -1])
    kept = t2 != -1
    assert_close(
        F.asymmetric_loss(x2, t2, ignore_index=-1),
        F.asymmetric_loss(x2[kept], t2[kept]),
        torch.float64,
    )
    assert_close(
        F.asymmetric_loss(x2, t2, ignore_index=-1, reduction="sum"),
        F.asymmetric_loss(x2[kept], t2[kept], reduction="sum"),
        torch.float64,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [20.0, 1e4])
@pytest.mark.parametrize("gammas", [(0.0, 4.0), (0.5, 0.5), (0.3, 0.7), (1.0, 4.0), (0.0, 0.0)])
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_asl_finite_at_saturated_logits(
    dtype: torch.dtype, scale: float, gammas: tuple, clip: float
) -> None:
    signs = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]])
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.3, 0.7, 0.5, 1.0]])
    for eps in (1e-8, 0.0):
        x = (signs * scale).to(dtype).requires_grad_()
        loss = F.asymmetric_loss(
            x, y, gamma_pos=gammas[0], gamma_neg=gammas[1], clip=clip, eps=eps, reduction="sum"
        )
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss), (eps, loss)
        assert torch.isfinite(grad).all(), (eps, grad)
    # the reference formula on the same rounded inputs (eps=0: no clamp, -log sigma(-scale) = scale)
    r = ref.asymmetric(
        x.detach().double(),
        y.double(),
        gamma_pos=gammas[0],
        gamma_neg=gammas[1],
        clip=clip,
        eps=0.0,
        reduction="sum",
    )
    assert_close(loss, r, torch.float32, rtol=1e-4)


def test_fractional_gamma_grad_matches_float64_reference_near_saturation() -> None:
    # 0 < gamma < 1: pow's backward would be inf * 0 = NaN at |x| >= 17 in float32.
    x = torch.tensor([[18.0, -18.0, 25.0, -25.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    loss = F.asymmetric_loss(x, y, gamma_pos=0.5, gamma_neg=0.5, clip=0.0, eps=0.0, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    x64 = x.detach().double().requires_grad_()
    p = torch.sigmoid(x64)
    l64 = -(y * (1 - p) ** 0.5 * TF.logsigmoid(x64) + (1 - y) * p**0.5 * TF.logsigmoid(-x64)).sum()
    (g64,) = torch.autograd.grad(l64, x64)
    assert torch.isfinite(g).all()
    assert_close(g, g64, torch.float32, rtol=1e-4, atol=1e-12)


def _asl_detached_reference(x: torch.Tensor, y: torch.Tensor, **kw: float) -> torch.Tensor:
    out = torch.empty_like(x, dtype=torch.float64)
    for i in range(x.numel()):
        out.view(-1)[i] = ref.asl_element_grad_detached(
            float(x.reshape(-1)[i]), float(y.reshape(-1)[i]), **kw
        )
    return out


@pytest.mark.parametrize(
    "kw",
    [
        {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8},
        {"gamma_pos": 0.5, "gamma_neg": 2.0, "clip": 0.0, "eps": 0.0},
        {"gamma_pos": 2.0, "gamma_neg": 3.0, "clip": 0.2, "eps": 0.0},
    ],
)
def test_detach_focal_weight_gradient_is_the_detached_reference(kw: dict) -> None:
    x = (torch.randn(6, 5, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.rand(6, 5) < 0.4).double()
    det = F.asymmetric_loss(x, y, detach_focal_weight=True, reduction="sum", **kw)
    full = F.asymmetric_loss(x, y, reduction="sum", **kw)
    assert_close(det, full, torch.float64)  # the value is the same
    (g_det,) = torch.autograd.grad(det, x)
    (g_full,) = torch.autograd.grad(full, x)
    assert_close(g_det, _asl_detached_reference(x.detach(), y, **kw), torch.float64)
    # and the difference is exactly the weight's contribution: -log-term * dw/dx
    xw = x.detach().clone().requires_grad_()
    p = torch.sigmoid(xw)
    clip = kw["clip"]
    pm = (p - clip).clamp(min=0) if clip > 0 else p
    w = (y * (1 - p) + (1 - y) * pm) ** (kw["gamma_pos"] * y + kw["gamma_neg"] * (1 - y))
    lp = ref.asymmetric(
        x.detach(), y, gamma_pos=0.0, gamma_neg=0.0, clip=clip, eps=kw["eps"], reduction="none"
    )
    (dw,) = torch.autograd.grad((lp * w).sum(), xw)
    assert_close(g_full - g_det, dw, torch.float64)
    assert not torch.allclose(g_full, g_det)


def test_detach_never_touches_global_grad_mode() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = (torch.rand(3, 4) < 0.5).float()
    for fn, target in (
        (F.asymmetric_loss, y),
        (F.softmax_asymmetric_loss, torch.tensor([0, 3, 1])),
    ):
        with torch.no_grad():
            out = fn(x, target, detach_focal_weight=True)
            assert not torch.is_grad_enabled(), "grad mode was switched on inside no_grad()"
            assert not out.requires_grad
        assert torch.is_grad_enabled()
        out = fn(x, target, detach_focal_weight=True)
        assert out.requires_grad and torch.is_grad_enabled()
        (g,) = torch.autograd.grad(out, x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    with torch.inference_mode():
        assert not F.asymmetric_loss(x, y, detach_focal_weight=True).requires_grad


def test_all_ignored_and_empty_give_zero_with_zero_grad() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    for loss in (
        F.asymmetric_loss(x, torch.full((3,), -1), ignore_index=-1),
        F.asymmetric_loss(x, torch.full((3, 4), 255.0), ignore_index=255),
        F.softmax_asymmetric_loss(x, torch.full((3,), -100)),
        F.asymmetric_loss(x, torch.zeros(3, 4), weight=torch.zeros(3)),
    ):
        assert loss.item() == 0.0 and loss.requires_grad
        (g,) = torch.autograd.grad(loss, x)
        assert torch.all(g == 0)
    empty = torch.zeros(0, 4, requires_grad=True)
    assert F.asymmetric_loss(empty, torch.zeros(0, dtype=torch.long)).item() == 0.0
    assert F.softmax_asymmetric_loss(
        empty, torch.zeros(0, dtype=torch.long), reduction="none"
    ).shape == (0,)


def test_asl_validation_errors() -> None:
    x, y = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"asymmetric_loss: expected `gamma_neg` in \[0, inf\], got -1.0"
    ):
        F.asymmetric_loss(x, y, gamma_neg=-1.0)
    with pytest.raises(ValueError, match="gamma_pos"):
        F.asymmetric_loss(x, y, gamma_pos=-0.5)
    with pytest.raises(ValueError, match=r"expected `clip` in \[0, 1\)"):
        F.asymmetric_loss(x, y, clip=1.0)
    with pytest.raises(ValueError, match="clip"):
        F.asymmetric_loss(x, y, clip=-0.1)
    with pytest.raises(ValueError, match=r"expected `eps` in \[0, 1\)"):
        F.asymmetric_loss(x, y, eps=1.0)
    with pytest.raises(ValueError, match="eps"):
        F.asymmetric_loss(x, y, eps=-1e-8)
    with pytest.raises(ValueError, match="underflow"):
        F.asymmetric_loss(x, y, eps=1e-40)
    with pytest.raises(TypeError, match="detach_focal_weight"):
        F.asymmetric_loss(x, y, detach_focal_weight=1)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        F.asymmetric_loss(x, torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="class indices"):
        F.asymmetric_loss(x, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="target"):
        F.asymmetric_loss(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="triton"):
        F.asymmetric_loss(x, y, backend="triton")
    with pytest.raises(ValueError, match="gamma_neg"):
        lf.AsymmetricLoss(gamma_neg=-2.0)
    with pytest.raises(ValueError, match="eps"):
        lf.AsymmetricLoss(eps=2.0)


def test_asl_value_checks_off_poison_instead_of_crashing() -> None:
    with lf.value_checks(False):
        out = F.asymmetric_loss(torch.zeros(2, 3), torch.tensor([0, 9]), reduction="none")
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()


# --------------------------------------------------------------------------------------------------
# Single-label (softmax) ASL
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"gamma_pos": 1.0, "gamma_neg": 4.0, "label_smoothing": 0.0},
        {"gamma_pos": 0.5, "gamma_neg": 0.5, "label_smoothing": 0.3},
        {"gamma_pos": 2.0, "gamma_neg": 0.0, "label_smoothing": 1.0},
    ],
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_softmax_asl_matches_reference(opts: dict, reduction: str) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, 5, (4, 3), generator=g)
    t[2, 0] = -100
    assert_close(
        F.softmax_asymmetric_loss(x, t, reduction=reduction, **opts),
        ref.softmax_asymmetric(x, t, reduction=reduction, **opts),
        torch.float64,
    )
    x2, t2 = x[:, :, 0], t[:, 1]
    assert_close(
        F.softmax_asymmetric_loss(x2, t2, reduction=reduction, **opts),
        ref.softmax_asymmetric(x2, t2, reduction=reduction, **opts),
        torch.float64,
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_softmax_asl_zero_gammas_is_cross_entropy(smoothing: float) -> None:
    x = (torch.randn(6, 5, 2, dtype=torch.float64) * 3).requires_grad_()
    t = torch.randint(0, 5, (6, 2))
    t[0, 0] = -100
    for reduction in ("none", "mean", "sum"):
        a = F.softmax_asymmetric_loss(
            x, t, gamma_pos=0.0, gamma_neg=0.0, label_smoothing=smoothing, reduction=reduction
        )
        b = TF.cross_entropy(x, t, label_smoothing=smoothing, reduction=reduction)
        assert_close(a, b, torch.float64)
        (ga,) = torch.autograd.grad(a.sum(), x)
        (gb,) = torch.autograd.grad(b.sum(), x)
        assert_close(ga, gb, torch.float64)


def test_softmax_asl_ignore_equals_drop_and_weights_are_asymmetric() -> None:
    x = torch.randn(7, 4, dtype=torch.float64)
    t = torch.tensor([0, -100, 3, 2, -100, 1, 1])
    keep = t != -100
    assert_close(
        F.softmax_asymmetric_loss(x, t), F.softmax_asymmetric_loss(x[keep], t[keep]), torch.float64
    )
    # gamma_neg only down-weights the smoothing mass on the non-target classes: with no smoothing it
    # has no effect, and gamma_pos scales the target term by (1 - p_t)^gamma_pos exactly.
    a = F.softmax_asymmetric_loss(
        x[keep], t[keep], gamma_pos=0.0, gamma_neg=3.0, label_smoothing=0.0, reduction="none"
    )
    ce = TF.cross_entropy(x[keep], t[keep], reduction="none")
    assert_close(a, ce, torch.float64)
    b = F.softmax_asymmetric_loss(
        x[keep], t[keep], gamma_pos=2.0, gamma_neg=3.0, label_smoothing=0.0, reduction="none"
    )
    pt = torch.exp(-ce)
    assert_close(b, (1 - pt) ** 2 * ce, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gammas", [(0.5, 0.3), (1.0, 4.0), (0.0, 0.0)])
def test_softmax_asl_finite_at_extreme_logits(dtype: torch.dtype, gammas: tuple) -> None:
    for scale in (20.0, 1e4):
        x = (
            (torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, -1.0]]) * scale)
            .to(dtype)
            .requires_grad_()
        )
        t = torch.tensor([0, 0, 2])  # confident right, confident wrong, tie
        loss = F.softmax_asymmetric_loss(
            x, t, gamma_pos=gammas[0], gamma_neg=gammas[1], reduction="sum"
        )
        (g,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(g).all(), (scale, loss, g)


def test_softmax_asl_validation_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(
        TypeError, match="softmax_asymmetric_loss: expected `target` an integer tensor"
    ):
        F.softmax_asymmetric_loss(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"expected `label_smoothing` in \[0, 1\]"):
        F.softmax_asymmetric_loss(x, torch.tensor([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="gamma_pos"):
        F.softmax_asymmetric_loss(x, torch.tensor([0, 1]), gamma_pos=-1.0)
    with pytest.raises(ValueError, match="class indices"):
        F.softmax_asymmetric_loss(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        F.softmax_asymmetric_loss(torch.zeros(2, 1), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="triton"):
        F.softmax_asymmetric_loss(x, torch.tensor([0, 1]), backend="triton")
    assert_close(
        F.softmax_asymmetric_loss(x, torch.tensor([0, 1]), backend="auto"),
        F.softmax_asymmetric_loss(x, torch.tensor([0, 1])),
        torch.float32,
    )


# --------------------------------------------------------------------------------------------------
# Modules and properties
# --------------------------------------------------------------------------------------------------


def test_modules_registered_and_repr() -> None:
    from lossforge.registry import build_loss

    m = build_loss({"type": "asymmetric", "gamma_pos": 1.0, "clip": 0.1})
    assert isinstance(m, lf.AsymmetricLoss) and m.clip == 0.1
    assert "gamma_neg=4.0" in repr(m) and "detach_focal_weight=False" in repr(m)
    s = build_loss({"type": "softmax_asymmetric", "label_smoothing": 0.2})
    assert isinstance(s, lf.SoftmaxAsymmetricLoss) and "label_smoothing=0.2" in repr(s)


@given(
    st.lists(st.floats(-30, 30, width=32), min_size=1, max_size=24),
    st.lists(st.booleans(), min_size=24, max_size=24),
    st.floats(0.0, 5.0),
    st.floats(0.0, 5.0),
)
def test_property_asl_nonnegative_and_below_bce_without_clip(
    xs: list, ys: list, gp: float, gn: float
) -> None:
    x = torch.tensor(xs, dtype=torch.float64)
    y = torch.tensor(ys[: len(xs)], dtype=torch.float64)
    asl = F.asymmetric_loss(x, y, gamma_pos=gp, gamma_neg=gn, clip=0.0, eps=0.0, reduction="none")
    # accurate BCE (torch's BCE-with-logits loses relative precision for large |x|)
    bce = -(y * TF.logsigmoid(x) + (1 - y) * TF.logsigmoid(-x))
    assert torch.all(asl >= 0)
    assert torch.all(asl <= bce * (1 + 1e-9) + 1e-300)
    clipped = F.asymmetric_loss(x, y, gamma_pos=gp, gamma_neg=gn, clip=0.1, reduction="none")
    assert torch.all(clipped >= 0) and torch.isfinite(clipped).all()


@given(
    st.integers(1, 6),
    st.integers(2, 6),
    st.integers(0, 10_000),
    st.floats(0.0, 3.0),
    st.floats(0.0, 1.0),
)
def test_property_softmax_asl_nonnegative_and_below_smoothed_ce(
    n: int, c: int, seed: int, gn: float, ls: float
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 5
    t = torch.randint(0, c, (n,), generator=g)
    got = F.softmax_asymmetric_loss(
        x, t, gamma_pos=1.0, gamma_neg=gn, label_smoothing=ls, reduction="none"
    )
    ce = TF.cross_entropy(x, t, label_smoothing=ls, reduction="none")
    assert torch.all(got >= 0)
    assert torch.all(got <= ce + 1e-12)


# --------------------------------------------------------------------------------------------------
# Multi-label ASL: the closed-form fast path of the torch backend against the composite
# --------------------------------------------------------------------------------------------------
#
# The torch backend evaluates the element-wise ASL in closed form (loss and gradient in one no-grad
# pass, ``ElementwiseLoss``); the composite ``_asl_unreduced`` is its specification.
# ``_composite()`` swaps the element-wise term of the same public call for the composite, so target
# parsing, weights and reductions are shared and only the element-wise term differs.


def _composite_elementwise(x: torch.Tensor, y: torch.Tensor, opts: dict) -> torch.Tensor:
    return asl_mod._asl_unreduced(x.to(compute_dtype(x)), y, **opts)


def _composite() -> contextlib.AbstractContextManager:
    return mock.patch.object(asl_mod, "_asl_elementwise", _composite_elementwise)


def _closed_form_nodes(t: torch.Tensor) -> list:
    """The ``ElementwiseLoss`` backward nodes in ``t``'s autograd graph."""
    found, seen, stack = [], set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "ElementwiseLossBackward":
            found.append(node)
        stack.extend(f for f, _ in node.next_functions)
    return found


class _Run(NamedTuple):
    loss: torch.Tensor  # with its graph
    grad: torch.Tensor  # d(sum(loss * grad_out)) / d logits


def _run(
    x: torch.Tensor,
    target: torch.Tensor,
    grad_out: torch.Tensor | None = None,
    *,
    composite: bool = False,
    **kw: object,
) -> _Run:
    """``F.asymmetric_loss`` on a fresh leaf copy of ``x`` and its gradient for ``grad_out``."""
    leaf = x.detach().clone().requires_grad_()
    with _composite() if composite else contextlib.nullcontext():
        loss = F.asymmetric_loss(leaf, target, **kw)
    go = torch.ones_like(loss) if grad_out is None else grad_out
    (g,) = torch.autograd.grad(loss, leaf, go, retain_graph=True)
    if not composite:
        assert _closed_form_nodes(loss), "the closed-form path was not taken"
    return _Run(loss, g)


def _fast_logits(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """N(0, 3^2) float64 logits whose first elements are saturated: eps clamps and the clip act."""
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    sat = torch.tensor([-40.0, -20.0, -8.0, -3.5, 0.0, 3.5, 8.0, 20.0, 40.0], dtype=torch.float64)
    x.view(-1)[: sat.numel()] = sat
    x.view(-1)[sat.numel() : 2 * sat.numel()] = sat.flip(0)
    return x


FAST_GAMMAS = [0.0, 0.5, 1.0, 4.0]
# clip 0 / > 0, eps 0 / tiny / clamping widely, and eps > clip (the -log(1 - p_m) clamp acts).
FAST_CLIP_EPS = [(0.0, 0.0), (0.0, 1e-8), (0.0, 0.2), (0.05, 0.0), (0.05, 1e-8), (0.05, 0.2)]
FAST_TOL = {"rtol": 1e-9, "atol": 1e-12}


@pytest.mark.parametrize("detach", [False, True], ids=["weight_grad", "detached"])
@pytest.mark.parametrize("clip_eps", FAST_CLIP_EPS, ids=lambda ce: f"clip={ce[0]},eps={ce[1]}")
def test_closed_form_matches_composite_float64(clip_eps: tuple, detach: bool) -> None:
    clip, eps = clip_eps
    g = torch.Generator().manual_seed(11)
    x = _fast_logits((6, 7, 3), g)
    hard = (torch.rand(6, 7, 3, generator=g) < 0.4).double()
    soft = torch.rand(6, 7, 3, generator=g, dtype=torch.float64)
    soft[0] = hard[0]  # exact 0 / 1 inside a soft target too
    grad_out = torch.randn(6, 7, 3, generator=g, dtype=torch.float64)  # != 1, element-wise
    for gp, gn in itertools.product(FAST_GAMMAS, FAST_GAMMAS):
        kw = {"gamma_pos": gp, "gamma_neg": gn, "clip": clip, "eps": eps}
        kw |= {"detach_focal_weight": detach, "reduction": "none"}
        for y in (hard, soft):
            fast = _run(x, y, grad_out, **kw)
            ref_ = _run(x, y, grad_out, composite=True, **kw)
            assert_close(fast.loss, ref_.loss, torch.float64, **FAST_TOL)
            assert_close(fast.grad, ref_.grad, torch.float64, **FAST_TOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_closed_form_index_targets_ignore_and_weights(reduction: str) -> None:
    g = torch.Generator().manual_seed(12)
    x = _fast_logits((6, 4, 3), g)
    t = torch.randint(0, 5, (6, 3), generator=g)  # 4 = background
    t[1, 0] = t[4, 2] = -1
    weights = [
        None,
        torch.rand(6, generator=g, dtype=torch.float64) + 0.5,  # per sample
        (torch.rand(6, 4, 3, generator=g, dtype=torch.float64) + 0.5).requires_grad_(),
    ]
    kw = {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-3, "ignore_index": -1}
    for w in weights:
        for avg in (None, 7.0) if reduction == "mean" else (None,):
            call = {"weight": w, "reduction": reduction, "avg_factor": avg, **kw}
            fast = _run(x, t, **call)
            ref_ = _run(x, t, composite=True, **call)
            assert_close(fast.loss, ref_.loss, torch.float64, **FAST_TOL)
            assert_close(fast.grad, ref_.grad, torch.float64, **FAST_TOL)
            assert torch.all(fast.grad[1, :, 0] == 0) and torch.all(fast.grad[4, :, 2] == 0)
            if w is not None and w.requires_grad:  # d loss / d weight through the closed form
                (gw_fast,) = torch.autograd.grad(fast.loss.sum(), w)
                (gw_ref,) = torch.autograd.grad(ref_.loss.sum(), w)
                assert_close(gw_fast, gw_ref, torch.float64, **FAST_TOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_closed_form_grad_output_scaling(dtype: torch.dtype) -> None:
    # mean (a broadcast 1/N), 3 * sum (a broadcast 3), sum (a broadcast 1: the saved gradient
    # itself) and an element-wise upstream gradient all give grad_output * d loss / dx.
    g = torch.Generator().manual_seed(13)
    x = (torch.randn(5, 6, generator=g, dtype=torch.float64) * 3).to(dtype)
    y = (torch.rand(5, 6, generator=g) < 0.4).to(dtype)
    up = torch.rand(5, 6, generator=g) + 0.5
    kw = {"gamma_pos": 0.5, "gamma_neg": 4.0, "clip": 0.05}
    base = _run(x, y, reduction="sum", **kw).grad
    for fn, scale in (
        (lambda a: F.asymmetric_loss(a, y, reduction="mean", **kw), torch.full_like(up, 1 / 30)),
        (lambda a: 3.0 * F.asymmetric_loss(a, y, reduction="sum", **kw), torch.full_like(up, 3.0)),
        (lambda a: (up * F.asymmetric_loss(a, y, reduction="none", **kw)).sum(), up),
    ):
        leaf = x.detach().clone().requires_grad_()
        (got,) = torch.autograd.grad(fn(leaf), leaf)
        assert got.dtype == dtype
        assert_close(got, (base.double() * scale).to(dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_closed_form_finite_at_1e4_logits(dtype: torch.dtype) -> None:
    signs = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.3, 0.7, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]])
    x = (signs * 1e4).to(dtype)
    for gp, gn, clip, eps in itertools.product(FAST_GAMMAS, FAST_GAMMAS, (0.0, 0.05), (0.0, 1e-8)):
        kw = {"gamma_pos": gp, "gamma_neg": gn, "clip": clip, "eps": eps, "reduction": "none"}
        fast = _run(x, y, **kw)
        assert torch.isfinite(fast.loss).all() and torch.isfinite(fast.grad).all(), kw
        if dtype == torch.float64:
            ref_ = _run(x, y, composite=True, **kw)
            assert_close(fast.loss, ref_.loss, torch.float64, **FAST_TOL)
            assert_close(fast.grad, ref_.grad, torch.float64, **FAST_TOL)


@pytest.mark.parametrize("chunk", [None, 16], ids=["whole", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_closed_form_low_precision_gradient_dtype_and_values(
    dtype: torch.dtype, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunk is not None:  # 7 * 40 = 280 elements > 4 * 16: the CPU chunked path, partial tail
        monkeypatch.setattr(asl_mod, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(14)
    x = (torch.randn(7, 40, generator=g, dtype=torch.float64) * 2 - 2).to(dtype)
    y = (torch.rand(7, 40, generator=g) < 0.2).float()
    kw = {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "sum"}
    fast = _run(x, y, **kw)
    (node,) = _closed_form_nodes(fast.loss)
    # the one saved buffer: in the input's dtype, float32 for fp16 (the loss scale comes later)
    kept = torch.float32 if dtype == torch.float16 else dtype
    assert node.saved_tensors[2].dtype == kept
    assert fast.loss.dtype == torch.float32 and fast.grad.dtype == dtype
    ref_ = _run(x.double(), y.double(), composite=True, **kw)  # same rounded inputs, float64
    assert_close(fast.loss, ref_.loss, torch.float32)
    assert_close(fast.grad, ref_.grad, dtype)


GRADCHECK_OPTS = [
    {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8},
    {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-3},
    {"gamma_pos": 0.5, "gamma_neg": 0.5, "clip": 0.0, "eps": 0.0},
    {"gamma_pos": 4.0, "gamma_neg": 1.0, "clip": 0.3, "eps": 0.0},
    {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0, "eps": 1e-8},
]


# forward-mode AD loads torch's jvp decompositions through torch.jit.script
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("kw", GRADCHECK_OPTS, ids=lambda kw: ",".join(map(str, kw.values())))
def test_closed_form_gradcheck_and_gradgradcheck(kw: dict, soft: bool) -> None:
    # Logits away from the kinks (p = clip, the eps clamps) so finite differences are valid.
    # (detach_focal_weight is no derivative, so not here: it is compared with the composite.)
    x = torch.tensor(
        [[-4.5, -1.5, -0.4, 0.7, 2.2], [3.6, -2.2, 1.4, -0.9, 0.1]], dtype=torch.float64
    ).requires_grad_()
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    if soft:
        y = y * 0.6 + 0.2

    def fn(a: torch.Tensor) -> torch.Tensor:
        return F.asymmetric_loss(a, y, reduction="none", **kw)

    assert _closed_form_nodes(fn(x))
    assert torch.autograd.gradcheck(fn, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_target_requiring_grad_takes_the_composite() -> None:
    g = torch.Generator().manual_seed(15)
    x = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(4, 5, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    kw = {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.05, "reduction": "sum"}
    loss = F.asymmetric_loss(x, y, **kw)
    assert not _closed_form_nodes(loss)
    gx, gy = torch.autograd.grad(loss, (x, y))
    assert_close(gx, _run(x, y.detach(), **kw).grad, torch.float64, **FAST_TOL)
    # d loss / d y of the reference's single-weight soft form, by hand:
    # l = -(y a + (1 - y) b) w, w = exp(g_t log base), base = y q + (1 - y) p_m.
    xd, yd = x.detach(), y.detach()
    p, q = torch.sigmoid(xd), torch.sigmoid(-xd)
    a, b = TF.logsigmoid(xd).clamp(min=math.log(1e-8)), torch.log((q + 0.05).clamp(max=1.0))
    pm = (p - 0.05).clamp(min=0.0)
    base, gt = yd * q + (1 - yd) * pm, 1.0 * yd + 2.0 * (1 - yd)
    w = base**gt
    dw = w * ((1.0 - 2.0) * torch.log(base) + gt * (q - pm) / base)
    assert_close(gy, -((a - b) * w + (yd * a + (1 - yd) * b) * dw), torch.float64, **FAST_TOL)
    assert torch.autograd.gradcheck(lambda u, v: F.asymmetric_loss(u, v, **kw), (x, y))


def test_closed_form_routes() -> None:
    g = torch.Generator().manual_seed(16)
    x = torch.randn(6, 5, generator=g) * 3
    y = (torch.rand(6, 5, generator=g) < 0.3).float()
    t = torch.randint(0, 6, (6,), generator=g)
    xr = x.clone().requires_grad_()
    for target in (y, t, y.bool(), y.half()):
        for red in ("none", "mean", "sum"):
            assert _closed_form_nodes(F.asymmetric_loss(xr, target, reduction=red))
            assert _closed_form_nodes(lf.AsymmetricLoss(reduction=red)(xr, target))
    assert _closed_form_nodes(F.asymmetric_loss(xr, y, weight=torch.rand(6, requires_grad=True)))
    assert _closed_form_nodes(F.asymmetric_loss(xr.half(), y))
    # No gradient needed: the loss alone, no graph.
    with torch.no_grad():
        assert F.asymmetric_loss(xr, y).grad_fn is None
    with torch.inference_mode():
        assert F.asymmetric_loss(xr, y).grad_fn is None
    assert F.asymmetric_loss(x, y).grad_fn is None


@pytest.mark.parametrize("chunk", [None, 16], ids=["whole", "chunked"])
@pytest.mark.parametrize("clip_eps", FAST_CLIP_EPS, ids=lambda ce: f"clip={ce[0]},eps={ce[1]}")
def test_closed_form_loss_without_gradient_matches_composite(
    clip_eps: tuple, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunk is not None:
        monkeypatch.setattr(asl_mod, "_CHUNK", chunk)
    clip, eps = clip_eps
    g = torch.Generator().manual_seed(17)
    x = _fast_logits((7, 40), g)
    hard = (torch.rand(7, 40, generator=g) < 0.4).double()
    soft = torch.rand(7, 40, generator=g, dtype=torch.float64)
    for gp, gn in itertools.product(FAST_GAMMAS, FAST_GAMMAS):
        kw = {"gamma_pos": gp, "gamma_neg": gn, "clip": clip, "eps": eps, "reduction": "none"}
        for y in (hard, soft):
            with torch.no_grad():
                got = F.asymmetric_loss(x, y, **kw)
            assert_close(got, _composite_elementwise(x, y, {**kw_opts(kw)}), torch.float64)


def kw_opts(kw: dict) -> dict:
    """The element-wise options of ``F.asymmetric_loss`` keywords (for ``_asl_unreduced``)."""
    return {
        "gamma_pos": kw["gamma_pos"],
        "gamma_neg": kw["gamma_neg"],
        "clip": kw["clip"],
        "eps": kw["eps"],
        "detach": kw.get("detach_focal_weight", False),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("gammas", [(0.0, 0.0), (1.0, 4.0)], ids=["no_focus", "focus"])
@pytest.mark.parametrize("detach", [False, True], ids=["weight_grad", "detached"])
def test_chunked_cpu_path_equals_whole_tensor(
    dtype: torch.dtype, gammas: tuple, detach: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(18)
    x = (torch.randn(7, 40, generator=g, dtype=torch.float64) * 3).to(dtype)
    y = torch.rand(7, 40, generator=g).to(dtype)
    y[:3] = (y[:3] < 0.3).to(dtype)
    kw = {"gamma_pos": gammas[0], "gamma_neg": gammas[1], "detach_focal_weight": detach}
    kw["reduction"] = "none"
    whole = _run(x, y, **kw)
    with torch.no_grad():
        whole_ng = F.asymmetric_loss(x, y, **kw)
    monkeypatch.setattr(asl_mod, "_CHUNK", 16)  # 280 elements: 17 full chunks and a tail of 8
    chunked = _run(x, y, **kw)
    with torch.no_grad():
        chunked_ng = F.asymmetric_loss(x, y, **kw)
    # Same operations on slices: equal up to the last bits of vectorised vs. tail evaluation.
    assert_close(chunked.loss, whole.loss, dtype)
    assert_close(chunked.grad, whole.grad, dtype)
    assert_close(chunked_ng, whole_ng, dtype)


def test_closed_form_backward_semantics() -> None:
    g = torch.Generator().manual_seed(19)
    x = (torch.randn(5, 4, generator=g, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.rand(5, 4, generator=g) < 0.4).double()
    kw = {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "sum"}
    g_ref = _run(x, y, composite=True, **kw).grad
    # retain_graph: a second (and third) backward through the same graph accumulates correctly
    loss = F.asymmetric_loss(x, y, **kw)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close(x.grad, 3 * g_ref, torch.float64, **FAST_TOL)
    # the same logits used twice in one graph
    x.grad = None
    (F.asymmetric_loss(x, y, **kw) + F.asymmetric_loss(x, y, **kw)).backward()
    assert_close(x.grad, 2 * g_ref, torch.float64, **FAST_TOL)
    # create_graph=True: the gradient is differentiable (Hessian-vector product of the composite)
    v = torch.randn(5, 4, generator=g, dtype=torch.float64)
    hvp = []
    for composite in (False, True):
        leaf = x.detach().clone().requires_grad_()
        with _composite() if composite else contextlib.nullcontext():
            loss = F.asymmetric_loss(leaf, y, **kw)
        (gx,) = torch.autograd.grad(loss, leaf, create_graph=True)
        hvp.append(torch.autograd.grad((gx * v).sum(), leaf)[0])
    assert_close(hvp[0], hvp[1], torch.float64, **FAST_TOL)
    assert hvp[0].abs().sum() > 0


# forward-mode AD loads torch's jvp decompositions through torch.jit.script
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_functorch_and_forward_mode_take_the_composite() -> None:
    g = torch.Generator().manual_seed(20)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(4, 5, generator=g) < 0.4).double()
    kw = {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "sum"}
    grad = _run(x, y, **kw).grad

    def loss_of(a: torch.Tensor) -> torch.Tensor:
        return F.asymmetric_loss(a, y, **kw)

    assert_close(torch.func.grad(loss_of)(x), grad, torch.float64, **FAST_TOL)
    tangent = torch.randn(4, 5, generator=g, dtype=torch.float64)
    _, jvp = torch.func.jvp(loss_of, (x,), (tangent,))
    assert_close(jvp, (grad * tangent).sum(), torch.float64, **FAST_TOL)
    with fwAD.dual_level():
        out = loss_of(fwAD.make_dual(x, tangent))
        assert_close(fwAD.unpack_dual(out).tangent, (grad * tangent).sum(), torch.float64)
