"""Fused softmax dice (``dice_loss(..., backend="triton")``) vs an independent float64 reference
and vs ``dice_loss``'s torch backend."""

from __future__ import annotations

import pytest
import torch

import lossforge.functional as LF
from lossforge.kernels import dice as K  # noqa: E402
from tests.kernels._helpers import DEVICE, LOW, assert_within_2x, fused, record


def dice_loss(x, t, *, per_sample=False, **kw):
    """The fused dice kernel through ``dice_loss`` (``per_sample`` is ``batch=False``)."""
    return fused("dice_loss", x, t, batch=not per_sample, **kw)


def reference(
    x, t, *, smooth=1.0, squared=False, per_sample=False, ignore_index=None, reduction="mean"
):
    c = x.shape[1]
    p = torch.softmax(x, dim=1).reshape(x.shape[0], c, -1)  # N, C, S
    tt = t.reshape(t.shape[0], -1)
    valid = torch.ones_like(tt, dtype=torch.bool) if ignore_index is None else tt != ignore_index
    oh = (tt.unsqueeze(1) == torch.arange(c, device=x.device).view(1, c, 1)) & valid.unsqueeze(1)
    pv = p * valid.unsqueeze(1)
    dims = (2,) if per_sample else (0, 2)
    inter = (pv * oh).sum(dims)
    card = (pv * pv if squared else pv).sum(dims)
    gt = oh.to(p.dtype).sum(dims)
    dice = (2 * inter + smooth) / (card + gt + smooth)
    return (1 - dice).mean() if reduction == "mean" else (1 - dice).sum()


def run_case(x, t, dtype, grad_out=None, **kw):
    x_low = x.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = dice_loss(xk, t, **kw)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = reference(x64, t, **kw)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = reference(x32.float(), t, **kw)
    go = torch.ones_like(ref64) if grad_out is None else grad_out
    out.backward(go.to(out.dtype))
    ref64.backward(go.double())
    ref32.backward(go.float())
    assert xk.grad.dtype == dtype
    record("dice:loss", dtype, assert_within_2x(out, ref64, ref32, dtype, "loss"))
    record("dice:grad", dtype, assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad"))
    return xk.grad


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5, 7), (2, 19, 4, 9)])
def test_matches_reference(shape, dtype):
    x = torch.randn(*shape, device=DEVICE) * 2
    t = torch.randint(0, shape[1], (shape[0],) + shape[2:], device=DEVICE)
    run_case(x, t, dtype)


@pytest.mark.parametrize(
    "opts",
    [
        {"squared": True, "smooth": 0.5},
        {"per_sample": True},
        {"ignore_index": 255},
        {"reduction": "sum", "smooth": 0.0},
    ],
)
def test_options(opts):
    x = torch.randn(2, 4, 5, 6, device=DEVICE) * 2
    t = torch.randint(0, 4, (2, 5, 6), device=DEVICE)
    t[:, ::2, 1] = 255
    if "ignore_index" not in opts:
        t = t.clamp(max=3)
    run_case(x, t, torch.float32, grad_out=torch.tensor(1.7, device=DEVICE), **opts)


def test_channels_last_in_place():
    x = (torch.randn(2, 3, 4, 5, device=DEVICE) * 2).to(memory_format=torch.channels_last)
    t = torch.randint(0, 3, (2, 4, 5), device=DEVICE)
    g = run_case(x, t, torch.float16)
    assert g.is_contiguous(memory_format=torch.channels_last)


def test_empty_gt_and_all_ignored_finite():
    x = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    t = torch.full((2, 4), 255, device=DEVICE)
    out = dice_loss(x, t, ignore_index=255, smooth=1.0)
    out.backward()
    assert out.item() == 0.0
    assert torch.count_nonzero(x.grad) == 0
    x = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    out = dice_loss(x, t, ignore_index=255, smooth=0.0)  # 0/0 per class: dice := 1, loss 0
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(x.grad).all()


def test_deterministic_bitwise():
    x = torch.randn(2, 5, 8, 8, device=DEVICE)
    t = torch.randint(0, 5, (2, 8, 8), device=DEVICE)
    assert len({dice_loss(x, t).item() for _ in range(3)}) == 1


@pytest.mark.gpu
def test_gpu_segmentation_shape():
    x = torch.randn(2, 19, 256, 512, device="cuda")
    t = torch.randint(0, 19, (2, 256, 512), device="cuda")
    run_case(x, t, torch.bfloat16)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "opts",
    [
        {"batch": True},
        {"batch": False, "squared": True, "smooth": 0.5},
        {"batch": False, "ignore_index": 255, "smooth": 0.0},
    ],
)
def test_matches_functional_sum(opts, dtype):
    import lossforge.functional as LF

    x = torch.randn(2, 4, 3, 5, device=DEVICE) * 2
    t = torch.randint(0, 4, (2, 3, 5), device=DEVICE)
    if "ignore_index" in opts:
        t[0] = 255  # a whole sample ignored
        t[1, 0] = 255
    kw = {k: v for k, v in opts.items() if k != "batch"}
    x_low = x.to(dtype)
    xk = x_low.detach().clone().requires_grad_()
    out = dice_loss(xk, t, per_sample=not opts["batch"], reduction="sum", **kw)
    x64 = x_low.detach().double().requires_grad_()
    ref64 = LF.dice_loss(x64, t, batch=opts["batch"], reduction="sum", **kw)
    x32 = x_low.detach().clone().requires_grad_()
    ref32 = LF.dice_loss(x32, t, batch=opts["batch"], reduction="sum", **kw)
    for v in (out, ref64, ref32):
        v.backward()
    record("functional-dice:loss", dtype, assert_within_2x(out, ref64, ref32, dtype, "loss"))
    record(
        "functional-dice:grad", dtype, assert_within_2x(xk.grad, x64.grad, x32.grad, dtype, "grad")
    )


def test_grid_puts_spatial_blocks_on_the_unbounded_axis(monkeypatch):
    """CUDA grid axes 1 and 2 stop at 65535 (the interpreter has no such limit): a 3-d volume of
    2**21 voxels with 128 classes has 65536 spatial blocks, so they must be on axis 0, and a batch
    above 65535 samples is routed to the reference."""
    grids = []
    real = K.wrap_triton

    def spy(kernel):
        launcher = real(kernel)

        class Grid:
            def __getitem__(self, grid):
                grids.append(tuple(grid))
                return launcher[grid]

        return Grid()

    monkeypatch.setattr(K, "wrap_triton", spy)
    bs = K._blocks(5)[0]
    x = torch.randn(3, 5, 5 * bs, device=DEVICE, requires_grad=True)  # 5 spatial blocks, 3 samples
    t = torch.randint(0, 5, (3, 5 * bs), device=DEVICE)
    dice_loss(x, t).backward()
    # statistics and gradient passes (the one-program entry kernel reads the small sums)
    assert [g for g in grids if g != (1,)] == [(5, 3), (5, 3)], grids
    big = torch.empty(K.MAX_GRID_Y + 1, 2, 1)
    assert "batch" in K._reason(big, torch.zeros(K.MAX_GRID_Y + 1, 1, dtype=torch.long))
    assert K._reason(big[: K.MAX_GRID_Y], torch.zeros(K.MAX_GRID_Y, 1, dtype=torch.long)) is None


def test_float_or_bool_index_shaped_target_is_the_torch_routes_type_error():
    """A target without the class dimension must be class indices: a bool or float one is the
    torch route's TypeError on the kernel route too (it was the kernel's decline, a ValueError
    about the backend)."""
    x = torch.randn(2, 3, 4, 4, device=DEVICE)
    t = torch.randint(0, 3, (2, 4, 4), device=DEVICE)
    for bad in (t > 0, t.float()):
        for backend in ("torch", "triton", "auto"):
            with pytest.raises(TypeError, match=r"`target` an integer tensor of class indices"):
                LF.dice_loss(x, bad, backend=backend)
