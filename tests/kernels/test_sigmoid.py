"""Sigmoid-family kernel (BCE with logits, balanced BCE, focal, ASL) vs float64 references.

The kernel is reached through the public functions with ``backend="triton"`` (``_helpers.fused``).
The references are written here from the papers (float64, autograd) and reduced with the library's
own ``weight_reduce`` contract; the same cases also run against the functionals' torch backend
(``test_family_matches_functional``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossforge._reduction import weight_reduce
from tests.kernels._helpers import DEVICE, LOW, assert_within_2x, fused, record

#: kernel kind -> the public function that reaches it.
FUNCTIONS = {
    "bce": "binary_cross_entropy_with_logits",
    "balanced_bce": "balanced_binary_cross_entropy",
    "focal": "sigmoid_focal_loss",
    "asl": "asymmetric_loss",
}


def sigmoid_loss(logits, target, *, kind, **kw):
    """The fused sigmoid kernel of ``kind`` through its public function."""
    if kind == "focal":
        kw.setdefault("alpha", None)  # the references' default (the functional's is 0.25)
    return fused(FUNCTIONS[kind], logits, target, **kw)


def _dense(logits, target, ignore_index):
    """(dense float target, valid mask) from a dense or class-index target."""
    if target.shape == logits.shape:
        valid = None if ignore_index is None else target != ignore_index
        t = target.to(logits.dtype)
        if valid is not None:
            t = torch.where(valid, t, torch.zeros_like(t))
        return t, valid
    cdim = 1 if logits.ndim >= 2 else 0
    c = logits.shape[cdim]
    view = [1] * logits.ndim
    view[cdim] = c
    onehot = (target.unsqueeze(cdim) == torch.arange(c, device=logits.device).view(view)).to(
        logits.dtype
    )
    valid = (
        None if ignore_index is None else (target != ignore_index).unsqueeze(cdim).expand_as(logits)
    )
    return onehot, valid


def reference(
    logits,
    target,
    *,
    kind,
    dtype,
    weight=None,
    reduction="mean",
    avg_factor=None,
    ignore_index=None,
    pos_weight=None,
    label_smoothing=0.0,
    alpha=None,
    gamma=0.0,
    gamma_pos=0.0,
    gamma_neg=0.0,
    clip=0.0,
    eps=0.0,
    beta=0.5,
    detach_focal_weight=False,
):
    """Unreduced formula in ``dtype`` (float64 = the truth, float32 = what PyTorch computes)."""
    x = logits.to(dtype)
    y, valid = _dense(x, target, ignore_index)
    if label_smoothing:
        y = y * (1 - label_smoothing) + 0.5 * label_smoothing
    if kind in ("bce", "balanced_bce"):
        a_pos, a_neg = 1.0, 1.0
        if kind == "balanced_bce":
            a_pos, a_neg = beta, 1 - beta
        elif pos_weight is not None:
            a_pos = pos_weight.to(dtype) if isinstance(pos_weight, torch.Tensor) else pos_weight
        loss = -(a_pos * y * F.logsigmoid(x) + a_neg * (1 - y) * F.logsigmoid(-x))
    elif kind == "focal":
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        q = y * torch.sigmoid(-x) + (1 - y) * p
        loss = ce * q**gamma
        if alpha is not None:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    else:  # ASL, as Alibaba-MIIL/ASL AsymmetricLoss
        xs_pos = torch.sigmoid(x)
        xs_neg = torch.sigmoid(-x)
        if clip > 0:
            xs_neg = (xs_neg + clip).clamp(max=1)
        lp = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
        if gamma_pos > 0 or gamma_neg > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_focal_weight):
                base = 1 - (xs_pos * y + xs_neg * (1 - y))
                w = torch.pow(base, gamma_pos * y + gamma_neg * (1 - y))
            lp = lp * w
        loss = -lp
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    af = avg_factor
    return weight_reduce(
        loss,
        fn="ref",
        reduction=reduction,
        weight=None if weight is None else weight.to(dtype),
        avg_factor=af,
        valid=valid,
    )


def run_case(logits, target, dtype, grad_out=None, family="sigmoid", **kw):
    """Kernel vs float64 truth vs float32 PyTorch on the same rounded inputs; values and grads."""
    x_low = logits.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = sigmoid_loss(xk, target, **kw)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = reference(x64, target, dtype=torch.float64, **kw)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = reference(x32.float(), target, dtype=torch.float32, **kw)
    if grad_out is None:
        grad_out = torch.ones_like(ref64)
    out.backward(grad_out.to(out.dtype))
    ref64.backward(grad_out.double())
    ref32.backward(grad_out.float())
    assert out.dtype == torch.float32
    assert xk.grad.dtype == dtype
    e1 = assert_within_2x(out, ref64, ref32, dtype, "loss")
    e2 = assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad")
    record(family + ":loss", dtype, e1)
    record(family + ":grad", dtype, e2)
    return out, xk.grad


KINDS = {
    "bce": {},
    "bce_pw_ls": {"pos_weight": 2.5, "label_smoothing": 0.1},
    "balanced_bce": {"beta": 0.8},
    "focal": {"alpha": 0.25, "gamma": 2.0},
    "focal_g15": {"alpha": None, "gamma": 1.5},
    "asl": {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8},
}


def _kw(name):
    kw = dict(KINDS[name])
    kw["kind"] = {"bce_pw_ls": "bce", "focal_g15": "focal"}.get(name, name)
    return kw


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", list(KINDS))
def test_dense_targets(name, dtype):
    x = torch.randn(7, 13, device=DEVICE) * 3
    y = (torch.rand(7, 13, device=DEVICE) < 0.3).float()
    run_case(x, y, dtype, **_kw(name))


@pytest.mark.parametrize("name", ["bce", "focal", "asl"])
def test_soft_targets_sum(name):
    x = torch.randn(5, 37, device=DEVICE) * 2
    y = torch.rand(5, 37, device=DEVICE)
    run_case(x, y, torch.float32, reduction="sum", **_kw(name))


@pytest.mark.parametrize("shape", [(3, 5), (7, 13), (37, 13), (5, 150), (2, 3, 5, 7)])
@pytest.mark.parametrize("name", ["focal", "asl", "bce_pw_ls"])
def test_index_targets_background_and_ignore(shape, name):
    x = torch.randn(*shape, device=DEVICE) * 3
    c = shape[1]
    idx_shape = (shape[0],) + shape[2:]
    t = torch.randint(0, c + 1, idx_shape, device=DEVICE)  # c = background
    t.view(-1)[::4] = -1  # ignored rows
    run_case(x, t, torch.float32, ignore_index=-1, **_kw(name))


def test_index_targets_fp16_none_grad_output():
    x = torch.randn(7, 13, device=DEVICE) * 3
    t = torch.randint(0, 14, (7,), device=DEVICE)
    go = torch.randn(7, 13, device=DEVICE)
    run_case(x, t, torch.float16, grad_out=go, reduction="none", **_kw("focal"))


@pytest.mark.parametrize("mode", ["full", "per_row", "scalar", "broadcast"])
def test_weights_and_avg_factor(mode):
    x = torch.randn(6, 11, device=DEVICE) * 2
    y = (torch.rand(6, 11, device=DEVICE) < 0.2).float()
    w = {
        "full": torch.rand(6, 11, device=DEVICE),
        "per_row": torch.rand(6, device=DEVICE),
        "scalar": torch.tensor(0.7, device=DEVICE),
        "broadcast": torch.rand(1, 11, device=DEVICE),
    }[mode]
    run_case(x, y, torch.float32, weight=w, avg_factor=17.0, **_kw("focal"))
    run_case(
        x, y, torch.float32, weight=w, avg_factor=torch.tensor(9.0, device=DEVICE), **_kw("asl")
    )


def test_grad_output_not_one_and_dense_ignore():
    x = torch.randn(9, 7, device=DEVICE) * 2
    y = (torch.rand(9, 7, device=DEVICE) < 0.3).float()
    y[::3] = -1.0
    run_case(
        x,
        y,
        torch.float32,
        grad_out=torch.tensor(3.5, device=DEVICE),
        ignore_index=-1,
        **_kw("bce"),
    )


def test_per_class_pos_weight():
    x = torch.randn(7, 13, device=DEVICE) * 2
    y = (torch.rand(7, 13, device=DEVICE) < 0.3).float()
    pw = torch.rand(13, device=DEVICE) * 3
    run_case(x, y, torch.float32, kind="bce", pos_weight=pw)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", ["bce", "focal", "asl"])
def test_extreme_logits_finite(name, dtype):
    x = torch.tensor([[-1e4, 1e4, -30.0, 30.0, 0.0, 17.0, -17.0]], device=DEVICE).repeat(2, 1)
    y = torch.tensor(
        [[1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]], device=DEVICE
    )
    xk = x.to(dtype).requires_grad_()
    out = sigmoid_loss(xk, y, reduction="sum", **_kw(name))
    out.backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(xk.grad).all()
    if name == "bce":
        big = float(xk[0, 1].detach().abs())  # 1e4 rounded to the dtype
        assert math.isclose(out.item(), 2 * big + 2 * 30 + 2 * math.log(2) + 2 * 17, rel_tol=1e-4)


def test_focal_small_gamma_saturation_finite():
    x = torch.tensor([[-1e4, 1e4, -20.0, 20.0, 40.0, -40.0]], device=DEVICE)
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0]], device=DEVICE)
    xk = x.clone().requires_grad_()
    sigmoid_loss(xk, y, kind="focal", gamma=0.5, alpha=0.25).backward()
    assert torch.isfinite(xk.grad).all()
    assert xk.grad.abs().max() < 1e-6


def test_gamma_zero_equals_bce_exactly_in_spirit():
    x = torch.randn(4, 9, device=DEVICE) * 4
    y = (torch.rand(4, 9, device=DEVICE) < 0.5).float()
    a = sigmoid_loss(x, y, kind="focal", gamma=0.0, alpha=None)
    b = sigmoid_loss(x, y, kind="bce")
    assert torch.equal(a, b)


def test_asl_no_clip_and_detached_weight():
    x = torch.randn(5, 9, device=DEVICE) * 3
    y = (torch.rand(5, 9, device=DEVICE) < 0.3).float()
    run_case(x, y, torch.float32, kind="asl", gamma_pos=0.0, gamma_neg=2.0, clip=0.0, eps=1e-8)
    run_case(
        x,
        y,
        torch.float32,
        kind="asl",
        gamma_pos=1.0,
        gamma_neg=4.0,
        clip=0.05,
        eps=1e-8,
        detach_focal_weight=True,
    )


def test_layouts_channels_last_and_strided():
    x = torch.randn(2, 3, 5, 7, device=DEVICE).to(memory_format=torch.channels_last) * 2
    y = (torch.rand(2, 3, 5, 7, device=DEVICE) < 0.3).float().to(memory_format=torch.channels_last)
    _, g = run_case(x, y, torch.float32, **_kw("focal"))
    base = torch.randn(6, 26, device=DEVICE)
    xs = base[:, ::2]
    ys = (torch.rand(6, 26, device=DEVICE) < 0.3).float()[:, ::2]
    run_case(xs, ys, torch.float16, **_kw("asl"))


def test_empty_and_all_ignored_give_exact_zero():
    x = torch.randn(0, 5, device=DEVICE, requires_grad=True)
    out = sigmoid_loss(x, torch.zeros(0, 5, device=DEVICE), kind="focal", gamma=2.0)
    out.backward()
    assert out.item() == 0.0
    assert x.grad.shape == (0, 5)
    x = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    t = torch.full((4,), -1, device=DEVICE)
    out = sigmoid_loss(x, t, kind="focal", gamma=2.0, ignore_index=-1)
    out.backward()
    assert out.item() == 0.0
    assert not torch.isnan(out)
    assert torch.count_nonzero(x.grad) == 0


def test_deterministic_bitwise():
    x = torch.randn(33, 40, device=DEVICE)
    y = (torch.rand(33, 40, device=DEVICE) < 0.1).float()
    outs = {sigmoid_loss(x, y, kind="focal", gamma=2.0).item() for _ in range(3)}
    assert len(outs) == 1


def test_no_grad_skips_gradient():
    x = torch.randn(4, 5, device=DEVICE)
    y = torch.rand(4, 5, device=DEVICE)
    with torch.no_grad():
        a = sigmoid_loss(x, y, kind="bce")
    assert a.shape == ()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_detection_shape(dtype):
    n, c = 200_000, 80
    x = torch.randn(n, c, device="cuda") * 3 - 4
    t = torch.randint(0, c + 1, (n,), device="cuda")
    t[::50] = -2
    run_case(x, t, dtype, ignore_index=-2, **_kw("focal"))
    y = (torch.rand(n, c, device="cuda") < 0.02).float()
    run_case(x, y, dtype, **_kw("asl"))


# ---- against the landed reference functionals ----------------------------------------------------

import lossforge.functional as LF  # noqa: E402


def _triton(fn):
    return lambda *a, **kw: fn(*a, backend="triton", **kw)


def _vs_functional(fn_ref, fn_kernel, x, t, dtype, grad_out=None, label="functional-bce", **kw):
    x_low = x.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = fn_kernel(xk, t, **kw)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = fn_ref(x64, t, **kw)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = fn_ref(x32, t, **kw)  # the functional on the low-precision input (computes in fp32)
    go = torch.ones_like(ref64) if grad_out is None else grad_out
    out.backward(go.to(out.dtype))
    ref64.backward(go.double())
    ref32.backward(go.to(ref32.dtype))
    record(f"{label}:loss", dtype, assert_within_2x(out, ref64, ref32, dtype, "loss"))
    record(f"{label}:grad", dtype, assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad"))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("case", ["dense", "index", "pw_ls", "ignore_w", "none"])
def test_bce_matches_functional(case, dtype):
    x = torch.randn(6, 11, device=DEVICE) * 3
    y = (torch.rand(6, 11, device=DEVICE) < 0.3).float()
    kw, go = {}, None
    if case == "index":
        y = torch.randint(0, 12, (6,), device=DEVICE)
        y[1] = -1
        kw = {"ignore_index": -1}
    elif case == "pw_ls":
        kw = {"pos_weight": torch.rand(11, device=DEVICE) * 3, "label_smoothing": 0.1}
    elif case == "ignore_w":
        y[0] = 255
        kw = {"ignore_index": 255, "weight": torch.rand(6, device=DEVICE), "avg_factor": 7.0}
    elif case == "none":
        kw = {"reduction": "none"}
        go = torch.randn(6, 11, device=DEVICE)
    _vs_functional(
        LF.binary_cross_entropy_with_logits,
        _triton(LF.binary_cross_entropy_with_logits),
        x,
        y,
        dtype,
        go,
        **kw,
    )


FUNCTIONAL_CASES = {
    "focal": ("sigmoid_focal_loss", "sigmoid_focal_loss", {"alpha": 0.25, "gamma": 2.0}),
    "focal_g05_soft": ("sigmoid_focal_loss", "sigmoid_focal_loss", {"alpha": None, "gamma": 0.5}),
    "asl": (
        "asymmetric_loss",
        "asymmetric_loss",
        {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8},
    ),
    "asl_detach_noclip": (
        "asymmetric_loss",
        "asymmetric_loss",
        {"gamma_pos": 0.0, "gamma_neg": 2.0, "clip": 0.0, "detach_focal_weight": True},
    ),
    "balanced": ("balanced_binary_cross_entropy", "balanced_binary_cross_entropy", {"beta": 0.9}),
}


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", list(FUNCTIONAL_CASES))
@pytest.mark.parametrize("target_kind", ["dense", "index"])
def test_family_matches_functional(name, target_kind, dtype):
    ref_name, ker_name, kw = FUNCTIONAL_CASES[name]
    ref = getattr(LF, ref_name)
    ker = _triton(getattr(LF, ker_name))
    x = torch.randn(9, 7, device=DEVICE) * 4
    if target_kind == "index":
        t = torch.randint(0, 8, (9,), device=DEVICE)
        t[2] = -1
        kw = {**kw, "ignore_index": -1, "weight": torch.rand(9, device=DEVICE)}
    elif name.endswith("soft"):
        t = torch.rand(9, 7, device=DEVICE)
    else:
        t = (torch.rand(9, 7, device=DEVICE) < 0.3).float()
    _vs_functional(ref, ker, x, t, dtype, label=f"functional-{ref_name}", **kw)
