"""Softmax-family kernel (cross-entropy, softmax focal) vs the reference functional / float64.

The kernel is reached through the public functions with ``backend="triton"``. Cross-entropy is
checked against ``lossforge.functional.cross_entropy`` itself: in float64 (the truth) and on the
same rounded low-precision inputs (the same-dtype PyTorch error the kernel may double). Softmax
focal is checked against an independent float64 formula and against ``softmax_focal_loss``.
``max_single_pass_classes`` lowers the kernel's one-pass limit (``SINGLE_PASS_MAX_C``) for a case so
that small inputs exercise the online (multi-chunk) variant.
"""

from __future__ import annotations

import pytest
import torch

import lossforge.functional as LF
from lossforge._reduction import weight_reduce
from lossforge.kernels import softmax as K  # noqa: E402
from tests.kernels._helpers import DEVICE, LOW, assert_within_2x, fused, record


def softmax_loss(logits, target, *, kind="ce", max_single_pass_classes=None, **kw):
    """The fused softmax kernel through ``cross_entropy`` / ``softmax_focal_loss``."""
    saved = K.SINGLE_PASS_MAX_C
    if max_single_pass_classes is not None:
        K.SINGLE_PASS_MAX_C = max_single_pass_classes
    try:
        name = {"ce": "cross_entropy", "focal": "softmax_focal_loss", "adjusted": ""}[kind]
        return fused(name or "logit_adjusted_loss", logits, target, **kw)
    finally:
        K.SINGLE_PASS_MAX_C = saved


def focal_reference(
    logits,
    target,
    *,
    gamma=2.0,
    alpha=None,
    ignore_index=-100,
    weight=None,
    reduction="mean",
    avg_factor=None,
    **_,
):
    x = logits
    cdim = 1 if x.ndim >= 2 else 0
    logp = torch.log_softmax(x, dim=cdim)
    valid = None if ignore_index is None else target != ignore_index
    safe = target if valid is None else torch.where(valid, target, torch.zeros_like(target))
    lpy = logp.gather(cdim, safe.unsqueeze(cdim)).squeeze(cdim)
    q = -torch.expm1(lpy)
    loss = -(q.clamp(min=torch.finfo(q.dtype).tiny) ** gamma) * lpy  # finite at q = 0 (saturation)
    if alpha is not None:
        loss = loss * alpha.to(x.dtype)[safe]
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return weight_reduce(
        loss,
        fn="ref",
        reduction=reduction,
        weight=None if weight is None else weight.to(x.dtype),
        avg_factor=avg_factor,
        valid=valid,
    )


def ce_reference(logits, target, **kw):
    kw.pop("kind", None)
    kw.pop("max_single_pass_classes", None)
    return LF.cross_entropy(logits, target, **kw)


def run_case(logits, target, dtype, grad_out=None, kind="ce", **kw):
    ref = ce_reference if kind == "ce" else focal_reference
    x_low = logits.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = softmax_loss(xk, target, kind=kind, **kw)
    kw.pop("max_single_pass_classes", None)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = ref(x64, target, **kw)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = ref(x32.float(), target, **kw)
    if grad_out is None:
        grad_out = torch.ones_like(ref64)
    out.backward(grad_out.to(out.dtype))
    ref64.backward(grad_out.double())
    ref32.backward(grad_out.float())
    assert out.dtype == torch.float32
    assert out.shape == ref64.shape
    assert xk.grad.dtype == dtype
    e1 = assert_within_2x(out, ref64, ref32, dtype, "loss")
    e2 = assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad")
    record(f"softmax-{kind}:loss", dtype, e1)
    record(f"softmax-{kind}:grad", dtype, e2)
    return out, xk.grad


def _target(shape, c, ignore=-100, frac=4):
    idx_shape = (shape[0],) + tuple(shape[2:]) if len(shape) >= 2 else ()
    t = torch.randint(0, c, idx_shape, device=DEVICE)
    if t.ndim:
        t.view(-1)[::frac] = ignore
    return t


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("shape", [(3, 5), (7, 13), (2, 3, 5, 7)])
@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_index_targets_ignore(kind, shape, dtype):
    x = torch.randn(*shape, device=DEVICE) * 3
    run_case(x, _target(shape, shape[1]), dtype, kind=kind)


@pytest.mark.parametrize(
    "opts",
    [
        {"label_smoothing": 0.1},
        {"class_weight": "w"},
        {"class_weight": "w", "label_smoothing": 0.2},
        {"weight": "per_pos", "avg_factor": 11.0},
        {"reduction": "sum"},
        {"reduction": "none"},
    ],
)
def test_ce_options(opts):
    shape = (6, 9)
    x = torch.randn(*shape, device=DEVICE) * 2
    kw = dict(opts)
    if kw.get("class_weight") == "w":
        kw["class_weight"] = torch.rand(9, device=DEVICE) + 0.1
    if kw.get("weight") == "per_pos":
        kw["weight"] = torch.rand(6, device=DEVICE)
    go = torch.randn(6, device=DEVICE) if kw.get("reduction") == "none" else None
    run_case(x, _target(shape, 9), torch.float32, grad_out=go, **kw)


def test_nchw_channels_last_and_strided_views():
    x = (torch.randn(2, 5, 3, 7, device=DEVICE) * 2).to(memory_format=torch.channels_last)
    t = _target((2, 5, 3, 7), 5, ignore=255)
    _, g = run_case(
        x,
        t,
        torch.float16,
        kind="ce",
        ignore_index=255,
        label_smoothing=0.1,
        class_weight=torch.rand(5, device=DEVICE) + 0.5,
    )
    assert g.is_contiguous(memory_format=torch.channels_last)  # read and written in place
    base = torch.randn(7, 26, device=DEVICE)
    run_case(base[:, ::2], _target((7, 13), 13), torch.float32, kind="focal", gamma=1.5)


@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_online_multi_block_variant(kind):
    # Force the online-softmax path with a small chunk: C = 300 in chunks of 64 (masked tail).
    x = torch.randn(5, 300, device=DEVICE) * 4
    kw = (
        {"label_smoothing": 0.1, "class_weight": torch.rand(300, device=DEVICE)}
        if kind == "ce"
        else {}
    )
    run_case(x, _target((5, 300), 300), torch.bfloat16, kind=kind, max_single_pass_classes=64, **kw)
    run_case(
        x,
        _target((5, 300), 300),
        torch.float32,
        kind=kind,
        max_single_pass_classes=64,
        grad_out=torch.tensor(0.5, device=DEVICE),
        **kw,
    )


def test_focal_alpha_gamma_variants():
    x = torch.randn(6, 7, device=DEVICE) * 3
    alpha = torch.rand(7, device=DEVICE)
    for gamma in (0.0, 0.5, 1.0, 2.0, 2.5):
        run_case(
            x,
            _target((6, 7), 7),
            torch.float32,
            kind="focal",
            gamma=gamma,
            alpha=alpha,
            weight=torch.rand(6, device=DEVICE),
            avg_factor=torch.tensor(4.0, device=DEVICE),
        )


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_extreme_logits_finite(kind, dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [30.0, 0.0, -30.0]], device=DEVICE)
    t = torch.tensor([0, 0, 2], device=DEVICE)
    xk = x.to(dtype).requires_grad_()
    kw = {"gamma": 0.5} if kind == "focal" else {"label_smoothing": 0.1}
    out = softmax_loss(xk, t, kind=kind, **kw)
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(xk.grad).all()
    run_case(x, t, dtype, kind=kind, **kw)


def test_zero_denominators_and_empty():
    x = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    t = torch.full((4,), -100, device=DEVICE)
    out = softmax_loss(x, t, label_smoothing=0.1)
    out.backward()
    assert out.item() == 0.0
    assert torch.count_nonzero(x.grad) == 0
    x = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    cw = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0], device=DEVICE)
    out = softmax_loss(
        x, torch.zeros(4, dtype=torch.long, device=DEVICE), class_weight=cw, label_smoothing=0.1
    )
    ref = LF.cross_entropy(
        x, torch.zeros(4, dtype=torch.long, device=DEVICE), class_weight=cw, label_smoothing=0.1
    )
    out.backward()
    assert out.item() == ref.item() == 0.0
    assert torch.count_nonzero(x.grad) == 0
    x = torch.randn(0, 5, device=DEVICE, requires_grad=True)
    out = softmax_loss(x, torch.zeros(0, dtype=torch.long, device=DEVICE))
    out.backward()
    assert out.item() == 0.0
    assert x.grad.shape == (0, 5)


def test_unbatched_and_int32_targets():
    x = torch.randn(9, device=DEVICE)
    run_case(x, torch.tensor(3, device=DEVICE), torch.float32)
    x = torch.randn(4, 6, device=DEVICE)
    t = torch.randint(0, 6, (4,), device=DEVICE, dtype=torch.int32)
    out = softmax_loss(x, t)
    assert torch.allclose(out, LF.cross_entropy(x, t), atol=1e-6)


def test_deterministic_bitwise():
    x = torch.randn(64, 19, device=DEVICE)
    t = torch.randint(0, 19, (64,), device=DEVICE)
    assert len({softmax_loss(x, t).item() for _ in range(3)}) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_segmentation_shape(dtype):
    x = torch.randn(2, 19, 256, 512, device="cuda") * 3
    t = torch.randint(0, 19, (2, 256, 512), device="cuda")
    t[:, ::20] = 255
    run_case(x, t, dtype, kind="ce", ignore_index=255)
    run_case(x, t, dtype, kind="focal", ignore_index=255)


@pytest.mark.gpu
def test_gpu_llm_shape_bf16():
    x = torch.randn(512, 128256, device="cuda") * 2
    t = torch.randint(0, 128256, (512,), device="cuda")
    t[::10] = -100
    run_case(x, t, torch.bfloat16, kind="ce", label_smoothing=0.1)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_matches_functional(gamma, dtype):
    x = torch.randn(2, 5, 3, 4, device=DEVICE) * 3
    t = _target((2, 5, 3, 4), 5)
    alpha = torch.rand(5, device=DEVICE)
    x_low = x.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = softmax_loss(xk, t, kind="focal", gamma=gamma, alpha=alpha)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = LF.softmax_focal_loss(x64, t, gamma=gamma, alpha=alpha.double())
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = LF.softmax_focal_loss(x32, t, gamma=gamma, alpha=alpha)
    out.backward()
    ref64.backward()
    ref32.backward()
    record("softmax-focal:loss", dtype, assert_within_2x(out, ref64, ref32, dtype, "loss"))
    record(
        "softmax-focal:grad", dtype, assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad")
    )


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "case", ["plain", "ls_cw", "nchw_channels_last", "online_chunks", "none_weight"]
)
def test_ce_probability_targets(case, dtype):
    shape = (6, 9)
    kw, go = {}, None
    if case == "nchw_channels_last":
        shape = (2, 5, 3, 4)
    if case == "online_chunks":
        shape = (4, 150)
        kw["max_single_pass_classes"] = 32
    x = torch.randn(*shape, device=DEVICE) * 3
    t = torch.softmax(torch.randn(*shape, device=DEVICE) * 2, dim=1)
    if case == "nchw_channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if case == "ls_cw":
        kw.update(label_smoothing=0.2, class_weight=torch.rand(9, device=DEVICE) + 0.2)
    if case == "none_weight":
        kw.update(reduction="none", weight=torch.rand(6, device=DEVICE))
        go = torch.randn(6, device=DEVICE)
    run_case(x, t.to(dtype), dtype, grad_out=go, kind="ce", **kw)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("case", ["index", "index_online", "probs"])
def test_logit_bias_matches_shifted_logits(case, dtype):
    # The kernel's logit bias b gives CE(x + b): the long-tail losses (logit adjustment, balanced
    # softmax) add tau * log(prior) this way.
    c = 150 if case == "index_online" else 7
    x = torch.randn(2, c, 3, device=DEVICE) * 2
    counts = torch.rand(c, device=DEVICE) + 1e-3
    tau = 0.7
    b = tau * torch.log(counts / counts.sum())
    if case == "probs":
        t = torch.softmax(torch.randn(2, c, 3, device=DEVICE), dim=1)
    else:
        t = torch.randint(0, c, (2, 3), device=DEVICE)
    kw = {"max_single_pass_classes": 32} if case == "index_online" else {}
    x_low = x.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = softmax_loss(
        xk, t, kind="adjusted", class_counts=counts, tau=tau, label_smoothing=0.1, **kw
    )
    x64 = x_low.detach().double().requires_grad_()
    ref64 = LF.cross_entropy(x64 + b.double().view(1, c, 1), t, label_smoothing=0.1)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = LF.cross_entropy(x32.float() + b.view(1, c, 1), t, label_smoothing=0.1)
    for v in (out, ref64, ref32):
        v.backward()
    record("softmax-ce-bias:loss", dtype, assert_within_2x(out, ref64, ref32, dtype, "loss"))
    record(
        "softmax-ce-bias:grad", dtype, assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad")
    )


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_confident_logits_target_gradient(kind, dtype):
    # Liger's check: with p_y close to 1 the target-class gradient p_y - 1 is tiny; forming it after
    # rounding p_y to the dtype cancels. The kernel folds the -1 in fp32 before rounding.
    x = torch.randn(16, 11, device=DEVICE)
    t = torch.randint(0, 11, (16,), device=DEVICE)
    x[torch.arange(16), t] = 12.0
    kw = {"gamma": 0.5} if kind == "focal" else {"label_smoothing": 0.0}
    run_case(x, t, dtype, kind=kind, **kw)
    ref = (
        (lambda z: LF.cross_entropy(z, t))
        if kind == "ce"
        else (lambda z: focal_reference(z, t, gamma=0.5))
    )
    xk = x.to(dtype).detach().requires_grad_()
    softmax_loss(xk, t, kind=kind, **kw).backward()
    x64 = x.to(dtype).detach().double().requires_grad_()
    ref(x64).backward()
    xs = x.to(dtype).detach().requires_grad_()
    ref(xs.float()).backward()  # same-dtype PyTorch: fp32 math, gradient rounded to the dtype
    rows = torch.arange(16)
    g_t = xk.grad[rows, t].double()
    r_t = x64.grad[rows, t]
    s_t = xs.grad[rows, t].double()
    err_torch = (s_t - r_t).abs().max().item()
    assert (g_t - r_t).abs().max().item() <= max(4 * err_torch, torch.finfo(dtype).tiny)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bad", [4, -1])
def test_out_of_range_index_with_checks_off_same_gradients_as_torch(reduction, bad):
    """Value checks off, an index out of range: both backends give a NaN loss and the same
    gradients (the valid rows keep theirs), with class weights and label smoothing too."""
    import lossforge
    import lossforge.functional as LF

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g).to(DEVICE)
    t = torch.tensor([0, 1, bad, 2, 3, 1], device=DEVICE)
    for kw in ({}, {"class_weight": [1.0, 2.0, 0.5, 1.5]}, {"label_smoothing": 0.1}):
        grads = []
        for backend in ("torch", "triton"):
            xx = x.clone().requires_grad_(True)
            with lossforge.value_checks(False):
                out = LF.cross_entropy(xx, t, backend=backend, reduction=reduction, **kw)
            out.backward()
            assert torch.isnan(out)
            grads.append(xx.grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
