"""Regression kernels (L1, smooth L1, MSE) through ``backend="triton"`` vs ``lossforge.functional``
(float64 truth, fp32 same-dtype)."""

from __future__ import annotations

import pytest
import torch

import lossforge.functional as LF
from tests.kernels._helpers import DEVICE, LOW, assert_within_2x, fused, record


def _triton(name):
    return lambda *a, **kw: fused(name, *a, **kw)


FNS = {
    "l1": (LF.l1_loss, _triton("l1_loss"), {}),
    "smooth_l1": (LF.smooth_l1_loss, _triton("smooth_l1_loss"), {"beta": 1 / 9}),
    "smooth_l1_b0": (LF.smooth_l1_loss, _triton("smooth_l1_loss"), {"beta": 0.0}),
    "mse": (LF.mse_loss, _triton("mse_loss"), {}),
}


def run_case(name, x, t, dtype, grad_out=None, **kw):
    ref, ker, fixed = FNS[name]
    kw = {**fixed, **kw}
    x_low, t_low = x.to(dtype), t.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = ker(xk, t_low, **kw)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = ref(x64, t_low.double(), **kw)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = ref(x32, t_low, **kw)
    go = torch.ones_like(ref64) if grad_out is None else grad_out
    out.backward(go.to(out.dtype))
    ref64.backward(go.double())
    ref32.backward(go.to(ref32.dtype))
    record("regression:loss", dtype, assert_within_2x(out, ref64, ref32, dtype, "loss"))
    record("regression:grad", dtype, assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad"))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", list(FNS))
def test_matches_functional(name, dtype):
    x = torch.randn(37, 4, device=DEVICE)
    t = x + torch.randn(37, 4, device=DEVICE) * 0.3
    t[0, 0] = x[0, 0]  # d = 0: subgradient 0
    run_case(name, x, t, dtype)


@pytest.mark.parametrize("opts", ["full_w", "row_w", "scalar_w", "avg_t", "sum", "none"])
def test_weights_reductions(opts):
    x = torch.randn(9, 4, device=DEVICE)
    t = torch.randn(9, 4, device=DEVICE)
    kw, go = {}, None
    if opts == "full_w":
        kw = {"weight": torch.rand(9, 4, device=DEVICE), "avg_factor": 5.0}
    elif opts == "row_w":
        kw = {"weight": torch.rand(9, device=DEVICE)}
    elif opts == "scalar_w":
        kw = {
            "weight": torch.tensor(0.3, device=DEVICE),
            "avg_factor": torch.tensor(6.0, device=DEVICE),
        }
    elif opts == "avg_t":
        kw = {"avg_factor": torch.tensor(3.0, device=DEVICE)}
        go = torch.tensor(2.0, device=DEVICE)
    elif opts == "sum":
        kw = {"reduction": "sum"}
    else:
        kw = {"reduction": "none"}
        go = torch.randn(9, 4, device=DEVICE)
    run_case("smooth_l1", x, t, torch.float32, grad_out=go, **kw)


def test_layouts_and_empty():
    x = torch.randn(2, 3, 4, 5, device=DEVICE).to(memory_format=torch.channels_last)
    t = torch.randn(2, 3, 4, 5, device=DEVICE)  # different layout: copied to match
    run_case("l1", x, t, torch.float16)
    x = torch.randn(0, 4, device=DEVICE, requires_grad=True)
    out = fused("l1_loss", x, torch.zeros(0, 4, device=DEVICE))
    out.backward()
    assert out.item() == 0.0
    assert x.grad.shape == (0, 4)


def test_target_requiring_grad_is_unsupported():
    x = torch.randn(3, 4, device=DEVICE)
    with pytest.raises(ValueError, match="requires grad"):
        fused("l1_loss", x, torch.randn(3, 4, device=DEVICE, requires_grad=True))
    assert fused("l1_loss", x, torch.randn(3, 4, device=DEVICE)).ndim == 0


@pytest.mark.parametrize("name", ["l1_loss", "smooth_l1_loss", "mse_loss"])
def test_nan_prediction_under_value_checks_is_refused_as_on_the_torch_backend(name):
    """The torch backend reads its reduced loss for the NaN check of ``pred`` (the check is
    deferred); the kernel's route must check ``pred`` itself (it returned NaN without a word);
    with value checks off both give NaN."""
    import lossforge

    x = torch.tensor([1.0, float("nan"), 2.0], device=DEVICE)
    y = torch.zeros(3, device=DEVICE)
    for backend in ("torch", "triton"):
        with (
            lossforge.value_checks(True),
            pytest.raises(ValueError, match=r"expected `pred` no NaN values, got 1 NaN of 3"),
        ):
            getattr(LF, name)(x, y, backend=backend)
        with lossforge.value_checks(False):
            assert torch.isnan(getattr(LF, name)(x, y, backend=backend))
