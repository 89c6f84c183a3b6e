"""The closed-form fast path of the torch backend (``functional/_closed_form.py``).

Element-wise losses whose forward computes the loss and its derivative together must agree with
their composite specification (autograd through the formula) on values, first derivatives,
second derivatives and forward-mode derivatives, and must actually be taken.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from _contract import assert_close
from torch.autograd import gradcheck, gradgradcheck

import lossforge.functional as F
from lossforge.functional import _terms as focal_mod

F64 = torch.float64
GAMMAS = [0.25, 0.5, 1.0, 2.0, 4.0]
ALPHAS = [None, 0.25, 0.9]


def _inputs(seed: int, *, soft: bool, dtype: torch.dtype = F64, scale: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(6, 7, generator=g, dtype=F64) * scale).to(dtype)
    # saturated corners in every row pattern
    x[0, :4] = torch.tensor([40.0, -40.0, 80.0, -80.0], dtype=F64).to(dtype)
    y = (torch.rand(6, 7, generator=g) < 0.4).to(F64)
    if soft:
        y[1] = torch.rand(7, generator=g, dtype=F64)  # a soft row next to exact 0/1 elements
    return x, y


def _composite(x, y, gamma, alpha, hard):
    return focal_mod.sigmoid_focal_composite(x, y, gamma=gamma, alpha=alpha, hard=hard)


def _grad_fn_name(t: torch.Tensor) -> str:
    fn = t.grad_fn
    seen = []
    stack = [fn]
    while stack:
        f = stack.pop()
        if f is None:
            continue
        seen.append(type(f).__name__)
        stack.extend(n for n, _ in f.next_functions)
    return ",".join(seen)


@pytest.mark.parametrize(("gamma", "alpha"), list(itertools.product(GAMMAS, ALPHAS)))
@pytest.mark.parametrize("kind", ["dense-hard", "dense-soft", "index"])
def test_sigmoid_focal_closed_form_equals_composite(gamma, alpha, kind) -> None:
    x0, y = _inputs(3, soft=kind == "dense-soft")
    target = y.argmax(dim=1) if kind == "index" else y  # index: class k positive, others negative
    dense = torch.nn.functional.one_hot(target, 7).to(F64) if kind == "index" else y
    x = x0.clone().requires_grad_(True)
    out = F.sigmoid_focal_loss(x, target, gamma=gamma, alpha=alpha, reduction="none")
    assert "ElementwiseLoss" in _grad_fn_name(out)  # the fast path was taken
    up = torch.rand(out.shape, dtype=F64, generator=torch.Generator().manual_seed(1)) + 0.5
    (g_fast,) = torch.autograd.grad(out, x, up)

    xr = x0.clone().requires_grad_(True)
    ref = _composite(xr, dense, gamma, alpha, hard=kind == "index")
    (g_ref,) = torch.autograd.grad(ref, xr, up)
    assert_close(out.detach(), ref.detach(), F64)
    assert_close(g_fast, g_ref, F64)
    assert torch.isfinite(g_fast).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_sigmoid_focal_closed_form_low_precision(dtype, gamma) -> None:
    """Gradients come back in the input dtype, within the same-dtype composite's error of the
    float64 truth (the tolerance rule of the kernels: <= 2x, plus one rounding step)."""
    x0, y = _inputs(5, soft=True, dtype=dtype, scale=3.0)
    x = x0.clone().requires_grad_(True)
    out = F.sigmoid_focal_loss(x, y, gamma=gamma, reduction="sum")
    (g_fast,) = torch.autograd.grad(out, x)
    assert g_fast.dtype == dtype and out.dtype == torch.float32
    assert torch.isfinite(g_fast).all()

    x64 = x0.double().requires_grad_(True)
    (g_true,) = torch.autograd.grad(_composite(x64, y, gamma, 0.25, False).sum(), x64)
    xc = x0.clone().requires_grad_(True)
    (g_comp,) = torch.autograd.grad(_composite(xc.float(), y.float(), gamma, 0.25, False).sum(), xc)
    err_fast = (g_fast.double() - g_true).abs().max()
    err_comp = (g_comp.double() - g_true).abs().max()
    step = torch.finfo(dtype).eps * g_true.abs().max()
    assert err_fast <= 2 * err_comp + step, (float(err_fast), float(err_comp))


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_sigmoid_focal_soft_form_keeps_relative_precision_at_confident_logits(gamma) -> None:
    """Soft targets (one 0.5 keeps the target off the hard form) with exact 0 / 1 elements at
    confident logits, |z| from 5 to 25 on both sides: each float32 loss and derivative, down to
    1e-33, within 1e-4 relative of the float64 formula (written here with torch's float64
    sigmoid and log-sigmoid). Forming 1 - p_t by subtraction (sigma(-z) as 1 - sigma(z)) loses
    all of them on the confident side."""
    z = torch.tensor([5.0, 10.0, 15.0, 20.0, 25.0])
    z = torch.cat([z, -z, z, -z, torch.zeros(1)])
    y = torch.cat(
        [torch.ones(5), torch.zeros(5), torch.zeros(5), torch.ones(5), torch.full((1,), 0.5)]
    )
    assert not focal_mod.binary_values(y)
    x = z.clone().requires_grad_(True)
    out = F.sigmoid_focal_loss(x, y, gamma=gamma, alpha=0.25, reduction="none")
    (g,) = torch.autograd.grad(out.sum(), x)

    x64, y64 = z.double().requires_grad_(True), y.double()
    ce = -(
        y64 * torch.nn.functional.logsigmoid(x64) + (1 - y64) * torch.nn.functional.logsigmoid(-x64)
    )
    m = y64 * torch.sigmoid(-x64) + (1 - y64) * torch.sigmoid(x64)
    ref = ce * m**gamma * (0.25 * y64 + 0.75 * (1 - y64))
    (g_ref,) = torch.autograd.grad(ref.sum(), x64)
    assert (ref[:5].abs() > 0).all() and ref.abs().min() > 1e-36  # nothing near float32's floor
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-4, atol=0.0)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_sigmoid_focal_closed_form_gradcheck_and_second_derivatives(hard, gamma) -> None:
    g = torch.Generator().manual_seed(9)
    x = (torch.randn(4, 5, generator=g, dtype=F64) * 2).requires_grad_(True)
    if hard:
        t = torch.randint(0, 6, (4,), generator=g)  # 5 = background

        def fn(v):
            return F.sigmoid_focal_loss(v, t, gamma=gamma, reduction="none")
    else:
        y = torch.rand(4, 5, generator=g, dtype=F64)

        def fn(v):
            return F.sigmoid_focal_loss(v, y, gamma=gamma, reduction="none")

    assert "ElementwiseLoss" in _grad_fn_name(fn(x))
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))
    # forward-mode AD (dual tensors take the composite) agrees with the fast path's backward
    tangent = torch.randn(4, 5, generator=g, dtype=F64)
    with fwAD.dual_level():
        out = fn(fwAD.make_dual(x, tangent))
        assert "ElementwiseLoss" not in _grad_fn_name(out)
        jvp = fwAD.unpack_dual(out).tangent
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    assert_close(jvp, grad * tangent, F64)


def test_target_requiring_grad_takes_the_composite() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
    y = torch.rand(3, 4, generator=g, dtype=F64, requires_grad=True)
    out = F.sigmoid_focal_loss(x, y, gamma=2.0, reduction="sum")
    assert "ElementwiseLoss" not in _grad_fn_name(out)
    gx, gy = torch.autograd.grad(out, (x, y))
    assert gradcheck(lambda a, b: F.sigmoid_focal_loss(a, b, gamma=2.0), (x, y))
    assert torch.isfinite(gy).all() and gy.abs().sum() > 0


def test_no_grad_and_inference_take_the_composite_and_agree() -> None:
    x, y = _inputs(4, soft=True)
    with torch.no_grad():
        a = F.sigmoid_focal_loss(x, y, reduction="none")
    b = F.sigmoid_focal_loss(x.clone().requires_grad_(True), y, reduction="none")
    assert a.grad_fn is None and "ElementwiseLoss" in _grad_fn_name(b)
    assert_close(a, b.detach(), F64)


def test_saved_memory_is_one_gradient_buffer() -> None:
    """Between forward and backward the fast path holds the gradient buffer (plus what the
    reduction saves), not the composite's 10+ intermediates."""
    x = torch.randn(64, 80, requires_grad=True)
    y = (torch.rand(64, 80) < 0.05).float()
    saved: list[int] = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes() if t.data_ptr() not in ptrs else 0)
        return t

    ptrs = {x.data_ptr(), y.data_ptr()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.sigmoid_focal_loss(x, y, reduction="mean")
    assert sum(saved) <= x.numel() * 4 + 64, saved
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _composite(x, y, 2.0, 0.25, False).mean()
    assert sum(saved) >= 4 * x.numel() * 4  # the composite keeps several element-sized tensors


# ------------------------------------------------------------------------------------------------
# Balanced BCE
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [None, 0.0, 0.3, 0.98, 1.0])
@pytest.mark.parametrize("kind", ["dense-hard", "dense-soft", "index-ignore"])
def test_balanced_bce_closed_form_equals_composite(beta, kind) -> None:
    from lossforge.functional import balanced as bal

    x0, y = _inputs(7, soft=kind == "dense-soft")
    kw = {}
    if kind == "index-ignore":
        target = y.argmax(dim=1)
        target[2] = -1
        kw["ignore_index"] = -1
        dense = torch.nn.functional.one_hot(target.clamp(min=0), 7).to(F64)
        valid = (target != -1)[:, None].expand(-1, 7)
    else:
        target, dense, valid = y, y, None
    x = x0.clone().requires_grad_(True)
    out = F.balanced_binary_cross_entropy(x, target, beta=beta, reduction="none", **kw)
    assert "ElementwiseLoss" in _grad_fn_name(out)
    up = torch.rand(out.shape, dtype=F64, generator=torch.Generator().manual_seed(1)) + 0.5
    (g_fast,) = torch.autograd.grad(out, x, up)

    b = bal._per_sample_beta(dense, valid) if beta is None else beta
    xr = x0.clone().requires_grad_(True)
    ref = bal._balanced_bce_composite(xr, dense, beta=b)
    if valid is not None:
        ref = torch.where(valid, ref, 0.0)
    (g_ref,) = torch.autograd.grad(ref, xr, up)
    assert_close(out.detach(), ref.detach(), F64)
    assert_close(g_fast, g_ref, F64)


@pytest.mark.parametrize("beta", [None, 0.7])
def test_balanced_bce_gradcheck_and_second_derivatives(beta) -> None:
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(3, 6, generator=g, dtype=F64) * 2).requires_grad_(True)
    y = torch.rand(3, 6, generator=g, dtype=F64)

    def fn(v):
        return F.balanced_binary_cross_entropy(v, y, beta=beta, reduction="none")

    assert "ElementwiseLoss" in _grad_fn_name(fn(x))
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


# ------------------------------------------------------------------------------------------------
# The focal term of the softmax focal loss (and of hard sigmoid targets' composite)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0, 4.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_softmax_focal_fast_focal_term_matches_formula(gamma, smoothing) -> None:
    g = torch.Generator().manual_seed(12)
    x0 = torch.randn(9, 5, generator=g, dtype=F64) * 3
    x0[0] = torch.tensor([30.0, -30.0, 0.0, 1.0, 2.0], dtype=F64)  # saturated rows
    t = torch.randint(0, 5, (9,), generator=g)
    t[0] = 0
    x = x0.clone().requires_grad_(True)
    out = F.softmax_focal_loss(x, t, gamma=gamma, label_smoothing=smoothing, reduction="none")
    assert "ElementwiseLoss" in _grad_fn_name(out)
    up = torch.rand(9, generator=g, dtype=F64) + 0.5
    (g_fast,) = torch.autograd.grad(out, x, up)

    xr = x0.clone().requires_grad_(True)
    logp = torch.log_softmax(xr, dim=1)
    q = (1 - logp.exp()).clamp(min=0)  # gamma >= 0.25 and float64: pow's backward is finite here
    terms = -(q**gamma) * logp
    ref = (1 - smoothing) * terms.gather(1, t[:, None])[:, 0] + smoothing / 5 * terms.sum(1)
    (g_ref,) = torch.autograd.grad(ref, xr, up)
    assert_close(out.detach(), ref.detach(), F64)
    finite = torch.isfinite(g_ref)
    assert_close(g_fast[finite], g_ref[finite], F64)
    assert torch.isfinite(g_fast).all()


def test_softmax_focal_second_derivatives() -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(4, 5, generator=g, dtype=F64, requires_grad=True)
    t = torch.randint(0, 5, (4,), generator=g)

    def fn(v):
        return F.softmax_focal_loss(v, t, gamma=2.0, label_smoothing=0.1, reduction="none")

    assert "ElementwiseLoss" in _grad_fn_name(fn(x))
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def _focal_ref(x, t, gamma, reduction, ignore):
    """-(1 - p_t)^gamma log p_t from the float64 log-softmax, over the valid positions."""
    logp = torch.log_softmax(x.detach().double(), 1)
    valid = t != ignore
    lp = logp.gather(1, torch.where(valid, t, 0).unsqueeze(1)).squeeze(1)
    term = -((1 - lp.exp()) ** gamma) * lp
    total = (term * valid).sum()
    return total / valid.sum() if reduction == "mean" else total


def _focal_grad_ref(x, t, gamma, reduction, ignore):
    """d/dx of ``_focal_ref`` by the chain rule, written out: phi'(l) (onehot - softmax)."""
    logp = torch.log_softmax(x.detach().double(), 1)
    valid = t != ignore
    idx = torch.where(valid, t, 0)
    lp = logp.gather(1, idx.unsqueeze(1)).squeeze(1)
    p = lp.exp()
    dphi = gamma * (1 - p) ** (gamma - 1) * p * lp - (1 - p) ** gamma
    onehot = torch.nn.functional.one_hot(idx, x.shape[1]).double()
    g = (dphi * valid).unsqueeze(1) * (onehot - logp.exp())
    return g / valid.sum() if reduction == "mean" else g


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_softmax_focal_nll_total_is_one_node_and_equals_references(gamma, reduction, dtype):
    """Softmax focal of class indices on the CPU: the reduced focal term of the NLL values is
    one autograd node (``_FocalNllTotal``) whose value and gradient equal the float64 formula and
    its chain-rule gradient, ignored positions included."""
    g = torch.Generator().manual_seed(21)
    x0 = (torch.randn(12, 6, generator=g, dtype=F64) * 3).to(dtype)
    t = torch.randint(0, 6, (12,), generator=g)
    t[::5] = -100
    x = x0.clone().requires_grad_(True)
    out = F.softmax_focal_loss(x, t, gamma=gamma, reduction=reduction)
    assert ("_FocalNllTotalBackward" in _grad_fn_name(out)) is (gamma != 0.0)
    (gx,) = torch.autograd.grad(out, x)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(
        out.detach().double(), _focal_ref(x0, t, gamma, reduction, -100), **tol
    )
    torch.testing.assert_close(gx.double(), _focal_grad_ref(x0, t, gamma, reduction, -100), **tol)


def test_softmax_focal_nll_total_second_derivatives_retained_graph_and_routes() -> None:
    g = torch.Generator().manual_seed(22)
    x = torch.randn(5, 4, generator=g, dtype=F64, requires_grad=True)
    t = torch.randint(0, 4, (5,), generator=g)
    t[1] = 255
    for reduction in ("mean", "sum"):

        def fn(v, r=reduction):
            return F.softmax_focal_loss(v, t, gamma=2.0, ignore_index=255, reduction=r)

        assert "_FocalNllTotalBackward" in _grad_fn_name(fn(x))
        assert gradcheck(fn, (x,))
        assert gradgradcheck(fn, (x,))
        out = fn(x)
        (g1,) = torch.autograd.grad(out, x, retain_graph=True)
        (g2,) = torch.autograd.grad(out, x, torch.tensor(-2.0, dtype=F64))
        torch.testing.assert_close(g2, -2 * g1)
        tangent = torch.randn_like(x)
        with fwAD.dual_level():
            jvp = fwAD.unpack_dual(fn(fwAD.make_dual(x.detach(), tangent))).tangent
        torch.testing.assert_close(jvp, (g1 * tangent).sum())
        torch.testing.assert_close(torch.func.grad(fn)(x.detach()), g1)
        with torch.no_grad():
            torch.testing.assert_close(fn(x), out.detach())


def test_softmax_focal_nll_total_edge_cases() -> None:
    """Everything ignored: 0 and a zero gradient (not NaN); +-1e4 logits: finite and equal to the
    float64 formula; half-precision logits: the float32 loss of their values, a gradient of
    their dtype."""
    x = torch.randn(6, 5, requires_grad=True)
    out = F.softmax_focal_loss(x, torch.full((6,), -100))
    (g,) = torch.autograd.grad(out, x)
    assert float(out) == 0.0 and torch.count_nonzero(g) == 0
    gen = torch.Generator().manual_seed(23)
    big = (torch.randn(6, 5, generator=gen).sign() * 1e4).requires_grad_(True)
    t = torch.randint(0, 5, (6,), generator=gen)
    t[2] = -100
    for reduction in ("mean", "sum"):
        out = F.softmax_focal_loss(big, t, gamma=2.0, reduction=reduction)
        assert "_FocalNllTotalBackward" in _grad_fn_name(out)
        (g,) = torch.autograd.grad(out, big)
        assert torch.isfinite(out) and torch.isfinite(g).all()
        ref = _focal_ref(big, t, 2.0, reduction, -100)
        torch.testing.assert_close(out.detach().double(), ref, rtol=1e-6, atol=1e-3)
        torch.testing.assert_close(
            g.double(), _focal_grad_ref(big, t, 2.0, reduction, -100), rtol=1e-5, atol=1e-6
        )
    for dtype in (torch.float16, torch.bfloat16):
        xh = torch.randn(8, 5, generator=gen).to(dtype).requires_grad_(True)
        th = torch.randint(0, 5, (8,), generator=gen)
        out = F.softmax_focal_loss(xh, th, gamma=2.0)
        (g,) = torch.autograd.grad(out, xh)
        assert out.dtype == torch.float32 and g.dtype == dtype
        xf = xh.detach().float()
        torch.testing.assert_close(
            out.double(), _focal_ref(xf, th, 2.0, "mean", -100), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            g.double(), _focal_grad_ref(xf, th, 2.0, "mean", -100), rtol=2e-2, atol=1e-3
        )


# ------------------------------------------------------------------------------------------------
# BCE with logits, reduced (``ClosedTotal``: the total forward, the derivative in the backward)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _bce_total_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' small inputs take the reduced closed form too (it starts at 2^18 elements)."""
    from lossforge.functional import classification

    monkeypatch.setattr(classification, "BCE_TOTAL_MIN_NUMEL", 0)


def test_bce_total_starts_at_its_size_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossforge.functional import classification

    monkeypatch.setattr(classification, "BCE_TOTAL_MIN_NUMEL", 12)
    for n, taken in ((11, False), (12, True)):
        x = torch.randn(n, requires_grad=True)
        out = F.binary_cross_entropy_with_logits(x, torch.rand(n))
        assert ("TotalLossBackward" in _grad_fn_name(out)) is taken
    assert classification.BCE_TOTAL_MIN_NUMEL == 12


def _bce_inputs(seed: int, dtype: torch.dtype = F64, n: int = 9, c: int = 7):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=F64) * 5).to(dtype)
    # saturated corners (both signs, both targets) and the softplus threshold's neighbourhood
    if c >= 6:
        x[0, :6] = torch.tensor([45.0, -45.0, 41.0, -39.0, 1e4, -1e4], dtype=F64).to(dtype)
    y = (torch.rand(n, c, generator=g) < 0.4).to(dtype)
    y[1] = torch.rand(c, generator=g, dtype=F64).to(dtype)  # a soft row
    return x, y


def _bce_ref(x, y, reduction, eps=0.0):
    from reference import classification as ref_cls

    return ref_cls.binary_cross_entropy_with_logits(x, y, label_smoothing=eps, reduction=reduction)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_bce_total_equals_references_and_is_taken(dtype, reduction, eps) -> None:
    x0, y = _bce_inputs(5, dtype)
    x = x0.clone().requires_grad_(True)
    out = F.binary_cross_entropy_with_logits(x, y, label_smoothing=eps, reduction=reduction)
    assert "TotalLossBackward" in _grad_fn_name(out)
    (gx,) = torch.autograd.grad(out, x)
    # PyTorch's function (autograd through its kernel) and the float64 loop reference
    a = x0.clone().requires_grad_(True)
    ys = y * (1 - eps) + eps / 2
    expected = torch.nn.functional.binary_cross_entropy_with_logits(a, ys, reduction=reduction)
    (ga,) = torch.autograd.grad(expected, a)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    torch.testing.assert_close(out.detach(), expected.detach(), **tol)
    torch.testing.assert_close(gx, ga, **tol)
    ref = _bce_ref(x0, y, reduction, eps)
    torch.testing.assert_close(
        out.detach().double(), ref, rtol=1e-5 if dtype != F64 else 1e-12, atol=0
    )
    ref_grad = torch.sigmoid(x0.double()) - ys.double()
    ref_grad = ref_grad / x0.numel() if reduction == "mean" else ref_grad
    # (float32: sigmoid(z) - y cancels near 1 in PyTorch's kernel as here: an ulp of 1 / numel)
    atol = 1e-7 if dtype != F64 else 1e-15
    torch.testing.assert_close(
        gx.double(), ref_grad, rtol=1e-5 if dtype != F64 else 1e-12, atol=atol
    )


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_bce_total_keeps_tiny_losses_of_confident_correct_logits(dtype) -> None:
    """(1 - y) z is exactly 0 at y = 1: confident, correct positives keep their tiny loss
    log1p(e^-z) (softplus(z) - y z would cancel it to 0), as in PyTorch's kernel; float64 keeps
    the e^z tail of negatives past float32's softplus threshold (20)."""
    x = torch.tensor([[25.0, -25.0, 30.0, -36.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=dtype)
    out = F.binary_cross_entropy_with_logits(x, y, reduction="sum")
    assert "TotalLossBackward" in _grad_fn_name(out)
    pytorch = torch.nn.functional.binary_cross_entropy_with_logits(x.detach(), y, reduction="sum")
    torch.testing.assert_close(out.detach(), pytorch, rtol=1e-6 if dtype != F64 else 1e-9, atol=0)
    positives = math.log1p(math.exp(-25.0)) + math.log1p(math.exp(-30.0))
    negatives = math.log1p(math.exp(-25.0)) + math.log1p(math.exp(-36.0))
    # float32 cannot hold -25 - log sigma(-25) (the negatives' loss is below z's ulp); float64
    # holds it to the ulp of 25 (the formula subtracts two numbers near -25)
    expected = positives + (negatives if dtype == F64 else 0.0)
    assert float(out.detach()) == pytest.approx(expected, rel=1e-4)


def test_bce_total_extreme_and_non_finite_inputs() -> None:
    x = torch.tensor([1e4, -1e4, 0.0, 3.0], requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.5, 1.0])
    out = F.binary_cross_entropy_with_logits(x, y, reduction="sum")
    (g,) = torch.autograd.grad(out, x)
    assert torch.isfinite(out) and torch.isfinite(g).all()
    torch.testing.assert_close(out.double(), _bce_ref(x, y, "sum"), rtol=1e-6, atol=0)
    torch.testing.assert_close(g, torch.sigmoid(x.detach()) - y)
    for bad in (float("nan"), float("inf"), float("-inf")):
        for target in (0.0, 0.3, 1.0):
            xb = torch.tensor([0.5, bad], requires_grad=True)
            yb = torch.tensor([1.0, target])
            with lf_checks(False):
                assert not torch.isfinite(F.binary_cross_entropy_with_logits(xb, yb))


def lf_checks(on: bool):
    import lossforge

    return lossforge.value_checks(on)


def test_bce_total_gradcheck_second_derivatives_and_retained_graph() -> None:
    x0, y = _bce_inputs(6, n=3, c=4)
    x0[0] = torch.tensor([4.0, -3.0, 0.5, -0.2], dtype=F64)  # gradcheck away from saturation
    x = x0.clone().requires_grad_(True)
    for reduction in ("mean", "sum"):
        fn = lambda a, r=reduction: F.binary_cross_entropy_with_logits(a, y, reduction=r)  # noqa: E731
        assert gradcheck(fn, (x,))
        assert gradgradcheck(fn, (x,))
        out = fn(x)
        (g1,) = torch.autograd.grad(out, x, retain_graph=True)
        (g2,) = torch.autograd.grad(out, x, torch.tensor(3.0, dtype=F64))
        torch.testing.assert_close(g2, 3 * g1)
        # create_graph: the gradient is differentiable and equals the composite's
        (gc,) = torch.autograd.grad(fn(x), x, create_graph=True)
        assert gc.requires_grad
        (h,) = torch.autograd.grad(gc.sum(), x)
        s = torch.sigmoid(x0)
        expected = s * (1 - s) / (x0.numel() if reduction == "mean" else 1)
        torch.testing.assert_close(h, expected)


def test_bce_total_other_routes() -> None:
    """A target that requires grad, forward-mode AD and torch.func transforms take PyTorch's
    kernel; without a gradient the closed-form total alone runs; all agree."""
    x0, y0 = _bce_inputs(7)
    y = y0.clone().requires_grad_(True)
    x = x0.clone().requires_grad_(True)
    out = F.binary_cross_entropy_with_logits(x, y)
    assert "TotalLossBackward" not in _grad_fn_name(out)
    gx, gy = torch.autograd.grad(out, (x, y))
    torch.testing.assert_close(gy, -x0 / x0.numel())
    with torch.no_grad():
        plain = F.binary_cross_entropy_with_logits(x0, y0)
    torch.testing.assert_close(plain, out.detach())
    tangent = torch.randn_like(x0)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x0, tangent)
        jvp = fwAD.unpack_dual(F.binary_cross_entropy_with_logits(dual, y0)).tangent
    torch.testing.assert_close(jvp, (gx * tangent).sum())
    gfunc = torch.func.grad(lambda a: F.binary_cross_entropy_with_logits(a, y0))(x0)
    torch.testing.assert_close(gfunc, gx)


def test_bce_total_low_precision_inputs_and_empty() -> None:
    x0, y = _bce_inputs(8, torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        x = x0.to(dtype).requires_grad_(True)
        out = F.binary_cross_entropy_with_logits(x, y.to(dtype))
        assert out.dtype == torch.float32 and "TotalLossBackward" in _grad_fn_name(out)
        (g,) = torch.autograd.grad(out, x)
        assert g.dtype == dtype
        xf = x.detach().float().requires_grad_(True)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(xf, y.to(dtype).float())
        (ge,) = torch.autograd.grad(expected, xf)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(g.float(), ge, rtol=1e-2, atol=1e-5)
    e = torch.zeros(0, 3, requires_grad=True)
    out = F.binary_cross_entropy_with_logits(e, torch.zeros(0, 3), reduction="sum")
    assert float(out) == 0.0
    (g,) = torch.autograd.grad(out, e)
    assert g.shape == (0, 3)


def test_bce_total_saves_only_the_inputs() -> None:
    x = torch.randn(64, 80, requires_grad=True)
    y = (torch.rand(64, 80) < 0.05).float()
    saved: list[int] = []
    ptrs = {x.data_ptr(), y.data_ptr()}

    def pack(t):
        saved.append(t.untyped_storage().nbytes() if t.data_ptr() not in ptrs else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.binary_cross_entropy_with_logits(x, y)
    assert sum(saved) == 0, saved


#: The losses whose forward keeps a derivative (``ElementwiseLoss``), with options that reach the
#: easy-negative tail (found by an audit: fp16 derivatives rounded before the loss scale came).
_KEPT_DERIVATIVE = [
    ("sigmoid_focal_loss", {}, (-9.0, -3.0)),
    ("poly1_focal_loss", {}, (-9.0, -3.0)),
    ("asymmetric_loss", {"clip": 0.0}, (-5.0, -2.0)),  # (gamma_neg 4: p^5)
    ("asymmetric_loss", {}, (-2.94, -2.6)),  # (the clip zeroes p < 0.05: x < -2.944)
    ("balanced_binary_cross_entropy", {"beta": 0.5}, (-20.0, -12.0)),  # (no focusing)
]


@pytest.mark.parametrize(("name", "kw", "span"), _KEPT_DERIVATIVE, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", [(8, 6), (64, 1200)], ids=["small", "chunked"])
def test_fp16_gradients_under_a_loss_scale_round_once(name, kw, span, shape) -> None:
    """fp16 logits of easy negatives (in ``span``, where the derivatives are below fp16's normal
    range, 6e-5, before the scale), the
    loss multiplied by GradScaler's 65536 and divided by an ``avg_factor``: the gradient equals
    the float64 gradient of the same (rounded) inputs, rounded once to fp16 (to one fp16 step:
    the float32 arithmetic). Before, the derivative was kept in fp16 and scaled in the backward:
    0 or a subnormal 30-100 % off for most of these elements."""
    gen = torch.Generator().manual_seed(3)
    low, high = span
    x16 = (torch.rand(shape, generator=gen) * (low - high) + high).half()
    y16 = (torch.rand(shape, generator=gen) < 0.01).half()
    fn = getattr(F, name)
    x = x16.clone().requires_grad_(True)
    (fn(x, y16, reduction="sum", **kw) * 65536.0 / 7.0).backward()
    x64 = x16.double().requires_grad_(True)
    (fn(x64, y16.double(), reduction="sum", **kw) * 65536.0 / 7.0).backward()
    want = x64.grad.half()
    assert x.grad is not None and x.grad.dtype == torch.float16
    # the test reaches the derivatives that were subnormal in fp16 before the scale (9362)
    small = (want != 0) & (want.abs() < 0.5)
    assert small.sum() > want.numel() // 8
    step = torch.maximum(want.abs().double() * 2**-10, torch.tensor(2.0**-24, dtype=F64))
    bad = (x.grad.double() - want.double()).abs() > step
    assert not bad.any(), (int(bad.sum()), x.grad[bad][:4], want[bad][:4])
