"""GPU-only checks of the fused path through the public functions (``backend="auto"``): no host
sync, torch.compile capture, CUDA-graph capture, bitwise determinism.

Skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _cases():
    import lossforge.functional as LF

    x = torch.randn(4096, 80, device="cuda", requires_grad=True)
    t = torch.randint(0, 81, (4096,), device="cuda")
    seg = torch.randn(2, 19, 64, 64, device="cuda", requires_grad=True)
    st = torch.randint(0, 19, (2, 64, 64), device="cuda")
    onehot = (t.unsqueeze(1) == torch.arange(80, device="cuda")).float()
    zeros = torch.zeros_like(x).detach()
    auto = {"backend": "auto"}
    return [
        (
            "focal",
            lambda: LF.sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, ignore_index=-2, **auto),
            x,
        ),
        ("asl", lambda: LF.asymmetric_loss(x, onehot, **auto), x),
        (
            "ce",
            lambda: LF.cross_entropy(seg, st, ignore_index=255, label_smoothing=0.1, **auto),
            seg,
        ),
        ("sfocal", lambda: LF.softmax_focal_loss(seg, st, gamma=2.0, **auto), seg),
        ("dice", lambda: LF.dice_loss(seg, st, **auto), seg),
        ("l1", lambda: LF.l1_loss(x, zeros, **auto), x),
    ]


@pytest.mark.parametrize("i", range(6))
def test_no_host_sync(i):
    name, fn, x = _cases()[i]
    fn().backward()  # warm up (compiles the kernels)
    torch.cuda.synchronize()
    x.grad = None
    go = torch.full((), 2.0, device="cuda")  # made before the check: a host->device copy syncs
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = fn()
        loss.backward(go)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("i", range(6))
def test_torch_compile_fullgraph_matches_eager(i):
    name, fn, x = _cases()[i]
    x.grad = None
    ref = fn()
    ref.backward()
    g_ref = x.grad.clone()
    x.grad = None
    out = torch.compile(fn, fullgraph=True)()
    out.backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, g_ref)


@pytest.mark.parametrize("i", range(6))
def test_bitwise_deterministic_30_runs(i):
    name, fn, x = _cases()[i]
    losses, grads = set(), set()
    for _ in range(30):
        x.grad = None
        loss = fn()
        loss.backward()
        losses.add(loss.item())
        grads.add(hash(x.grad.cpu().numpy().tobytes()))
    assert len(losses) == 1, f"{name}: {len(losses)} distinct losses in 30 runs"
    assert len(grads) == 1, f"{name}: {len(grads)} distinct gradients in 30 runs"


@pytest.mark.parametrize("i", range(6))
def test_cuda_graph_capture(i):
    name, fn, x = _cases()[i]
    x.grad = None
    ref = fn()
    ref.backward()
    g_ref = x.grad.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up (kernel compilation) outside the capture
            x.grad = None
            fn().backward()
    torch.cuda.current_stream().wait_stream(side)
    x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = fn()
        loss.backward()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, g_ref)
