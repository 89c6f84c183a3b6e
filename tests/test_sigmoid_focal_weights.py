"""``sigmoid_focal_loss`` with a per-class ``alpha`` and a ``pos_weight``: float64 references,
mmsegmentation (per-class alpha) and kornia (pos_weight) parity from their formulas, identities,
saturated-gradient cases, the fused kernel declining the options, and errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from reference import long_tail as ref

import lossforge as lf
import lossforge.functional as F

F64 = torch.float64
A3 = [0.75, 0.25, 0.5]
PW3 = [2.0, 0.5, 1.5]


def _index(n: int, dtype: torch.dtype, g: torch.Generator):
    """(N, 3) logits, class indices in [0, 3] (3 = background), one ignored row (-1)."""
    x = (2 * torch.randn(n, 3, generator=g, dtype=F64)).to(dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    if n > 2:
        y[2] = -1
    return x, y


def _soft(n, dtype, g):
    x = (2 * torch.randn(n, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 3, generator=g, dtype=F64)


def _hard(n, dtype, g):
    x = (2 * torch.randn(n, 3, generator=g, dtype=F64)).to(dtype)
    return x, (torch.rand(n, 3, generator=g) < 0.4).to(F64)


def _spatial(n, dtype, g):
    x = (2 * torch.randn(n, 3, 2, 2, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 4, (n, 2, 2), generator=g)


CASES = [
    LossCase(
        "alpha_list_index",
        F.sigmoid_focal_loss,
        lf.SigmoidFocalLoss,
        {"alpha": A3, "ignore_index": -1},
        _index,
        mean_is_count=False,
    ),
    LossCase(
        "alpha_list_soft",
        F.sigmoid_focal_loss,
        lf.SigmoidFocalLoss,
        {"alpha": A3, "gamma": 1.5},
        _soft,
    ),
    LossCase(
        "pos_weight_scalar_hard",
        F.sigmoid_focal_loss,
        lf.SigmoidFocalLoss,
        {"pos_weight": 3.0},
        _hard,
    ),
    LossCase(
        "pos_weight_vector_soft_small_gamma",
        F.sigmoid_focal_loss,
        lf.SigmoidFocalLoss,
        {"pos_weight": PW3, "gamma": 0.5, "alpha": None},
        _soft,
    ),
    LossCase(
        "both_index",
        F.sigmoid_focal_loss,
        lf.SigmoidFocalLoss,
        {"pos_weight": PW3, "alpha": A3, "ignore_index": -1},
        _index,
        mean_is_count=False,
    ),
    LossCase(
        "both_spatial",
        F.sigmoid_focal_loss,
        lf.SigmoidFocalLoss,
        {"pos_weight": torch.tensor(PW3).reshape(3, 1, 1), "alpha": A3},
        _spatial,
    ),
]
globals().update(contract_test_suite(CASES))


def _dense_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    if y.shape == x.shape:
        return y.double()
    hit = y.unsqueeze(1) == torch.arange(c).view((1, c) + (1,) * (x.ndim - 2))
    return hit.double()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("make", [_soft, _hard, _spatial], ids=["soft", "hard", "spatial"])
@pytest.mark.parametrize(
    ("alpha", "pw"),
    [(A3, None), (None, PW3), (0.25, 2.5), (A3, PW3)],
    ids=["alpha_list", "pos_weight", "float_alpha_pw", "both"],
)
def test_matches_reference(make, gamma: float, alpha, pw) -> None:
    x, y = make(5, F64, torch.Generator().manual_seed(3))
    pos_weight = None if pw is None else torch.tensor(pw, dtype=F64)
    if pos_weight is not None and pos_weight.ndim == 1 and x.ndim == 4:
        pos_weight = pos_weight.reshape(3, 1, 1)  # PyTorch's broadcast: (C,) is the last dim
    got = F.sigmoid_focal_loss(
        x, y, alpha=alpha, gamma=gamma, pos_weight=pos_weight, reduction="none"
    )
    want = ref.sigmoid_focal_map(
        x, _dense_of(x, y), alpha=alpha, gamma=gamma, pos_weight=pos_weight
    )
    assert_close(got, want, F64)


def test_ignored_rows_and_mean_denominator() -> None:
    x, y = _index(6, F64, torch.Generator().manual_seed(1))
    got = F.sigmoid_focal_loss(x, y, alpha=A3, pos_weight=PW3, ignore_index=-1)
    keep = y != -1
    dense = _dense_of(x[keep], y[keep])
    want = ref.sigmoid_focal_map(
        x[keep], dense, alpha=A3, gamma=2.0, pos_weight=torch.tensor(PW3, dtype=F64)
    )
    assert_close(got, want.sum() / want.numel(), F64)


# ------------------------------------------------------------------------------------------------
# Peers, rewritten from their formulas
# ------------------------------------------------------------------------------------------------


def _mmseg_py_sigmoid_focal(pred, target, gamma=2.0, alpha=0.5):
    # mmseg/models/losses/focal_loss.py py_sigmoid_focal_loss: alpha may be a per-class list.
    if isinstance(alpha, list):
        alpha = pred.new_tensor(alpha)
    p = pred.sigmoid()
    one_minus_pt = (1 - p) * target + p * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * one_minus_pt.pow(gamma)
    return TF.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight


def _kornia_binary_focal(x, target, alpha=0.25, gamma=2.0, pos_weight=None):
    # kornia.losses.binary_focal_loss_with_logits (0.9): separate positive / negative terms.
    log_pos, log_neg = TF.logsigmoid(x), TF.logsigmoid(-x)
    pos = -log_neg.exp().pow(gamma) * target * log_pos
    neg = -log_pos.exp().pow(gamma) * (1.0 - target) * log_neg
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    if pos_weight is not None:
        pos = pos_weight.view([-1] + [1] * (x.ndim - 2)) * pos
    return pos + neg


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_matches_mmseg_per_class_alpha(seed: int, gamma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(12, 3, generator=g, dtype=F64)
    for t in (torch.rand(12, 3, generator=g, dtype=F64), _dense_of(x, torch.arange(12) % 4)):
        want = _mmseg_py_sigmoid_focal(x, t, gamma=gamma, alpha=A3)
        got = F.sigmoid_focal_loss(x, t, alpha=A3, gamma=gamma, reduction="none")
        assert_close(got, want, F64, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_matches_kornia_pos_weight_on_hard_targets(seed: int, alpha) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(10, 3, generator=g, dtype=F64)
    t = (torch.rand(10, 3, generator=g) < 0.3).to(F64)
    pw = torch.tensor(PW3, dtype=F64)
    want = _kornia_binary_focal(x, t, alpha=alpha, pos_weight=pw)
    got = F.sigmoid_focal_loss(x, t, alpha=alpha, pos_weight=pw, reduction="none")
    assert_close(got, want, F64, rtol=1e-12, atol=1e-14)
    # kornia lines a (C,) pos_weight up with dim 1; lossforge follows PyTorch (the last dim), so
    # (N, C, H, W) logits take it as (C, 1, 1).
    xs = 3 * torch.randn(2, 3, 2, 2, generator=g, dtype=F64)
    ts = (torch.rand(2, 3, 2, 2, generator=g) < 0.3).to(F64)
    want = _kornia_binary_focal(xs, ts, alpha=alpha, pos_weight=pw)
    got = F.sigmoid_focal_loss(xs, ts, alpha=alpha, pos_weight=pw.view(3, 1, 1), reduction="none")
    assert_close(got, want, F64, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_soft, _hard], ids=["soft", "hard"])
def test_gamma_zero_is_bce_with_pos_weight_values_and_grads(make) -> None:
    x, t = make(6, F64, torch.Generator().manual_seed(2))
    pw = torch.tensor(PW3, dtype=F64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    got = F.sigmoid_focal_loss(a, t, gamma=0.0, alpha=None, pos_weight=pw)
    want = TF.binary_cross_entropy_with_logits(b, t, pos_weight=pw)
    assert_close(got, want, F64)
    got.backward()
    want.backward()
    assert_close(a.grad, b.grad, F64)


def test_constant_list_alpha_and_unit_pos_weight_change_nothing() -> None:
    x, y = _index(7, F64, torch.Generator().manual_seed(6))
    base = F.sigmoid_focal_loss(x, y, alpha=0.3, ignore_index=-1, reduction="none")
    assert_close(
        F.sigmoid_focal_loss(x, y, alpha=[0.3] * 3, ignore_index=-1, reduction="none"), base, F64
    )
    assert_close(
        F.sigmoid_focal_loss(x, y, alpha=0.3, pos_weight=1.0, ignore_index=-1, reduction="none"),
        base,
        F64,
    )
    assert_close(
        F.sigmoid_focal_loss(
            x, y, alpha=torch.full((3,), 0.3, dtype=F64), ignore_index=-1, reduction="none"
        ),
        base,
        F64,
    )


def test_index_targets_equal_one_hot_targets() -> None:
    x, y = _index(8, F64, torch.Generator().manual_seed(7))
    keep = y != -1
    x, y = x[keep], y[keep]
    kw = {"alpha": A3, "pos_weight": PW3, "gamma": 0.5, "reduction": "none"}
    assert_close(F.sigmoid_focal_loss(x, y, **kw), F.sigmoid_focal_loss(x, _dense_of(x, y), **kw))


def test_soft_and_hard_forms_agree_on_binary_targets() -> None:
    # The soft-target path (float 0/1 targets) and the hard path (bool targets) give one value.
    x, t = _hard(8, F64, torch.Generator().manual_seed(8))
    for gamma in (0.5, 2.0):
        kw = {"alpha": A3, "pos_weight": PW3, "gamma": gamma, "reduction": "none"}
        assert_close(F.sigmoid_focal_loss(x, t, **kw), F.sigmoid_focal_loss(x, t.bool(), **kw), F64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_saturated_small_gamma_soft_targets_have_finite_grads(dtype: torch.dtype) -> None:
    x = torch.tensor([[30.0, -30.0, 25.0], [-40.0, 40.0, 0.0]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, 0.5]])
    loss = F.sigmoid_focal_loss(x, t, alpha=A3, pos_weight=PW3, gamma=0.5)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_module_buffers() -> None:
    m = lf.SigmoidFocalLoss(alpha=A3, pos_weight=PW3)
    assert set(dict(m.named_buffers())) == {"alpha", "pos_weight"}
    assert "alpha=[0.75, 0.25, 0.5]" in repr(m)
    x, y = _hard(4, F64, torch.Generator().manual_seed(0))
    want = F.sigmoid_focal_loss(x, y, alpha=A3, pos_weight=PW3)
    assert_close(m.double()(x, y), want, F64)
    assert lf.SigmoidFocalLoss(alpha=0.5).alpha == 0.5  # a float stays a plain attribute


# ------------------------------------------------------------------------------------------------
# Errors and the fused kernel
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"alpha": [0.5, 0.5]}, ValueError, "alpha.*length C=3"),
        ({"alpha": [0.5, 1.5, 0.5]}, ValueError, "alpha.*in \\[0, 1\\]"),
        ({"alpha": [0.5, -0.5, 0.5]}, ValueError, "alpha"),
        ({"alpha": "per-class"}, TypeError, "alpha"),
        ({"pos_weight": -1.0}, ValueError, "pos_weight"),
        ({"pos_weight": [1.0, -2.0, 1.0]}, ValueError, "pos_weight"),
        ({"pos_weight": [1.0, 2.0]}, ValueError, "pos_weight.*broadcasts"),
        ({"alpha": A3, "backend": "triton"}, ValueError, "backend"),
    ],
)
def test_rejects(kw: dict, exc: type, match: str) -> None:
    x, y = _index(4, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(exc, match=match):
        F.sigmoid_focal_loss(x, y, **kw)
    with pytest.raises(ValueError, match="alpha"):
        F.sigmoid_focal_loss(torch.tensor(0.5), torch.tensor(1.0), alpha=[0.5])
    with pytest.raises(ValueError, match="alpha"):
        lf.SigmoidFocalLoss(alpha=[0.5, 1.5])


_DECLINE = r"""
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch
from lossforge import _dispatch
import lossforge.functional as F
x = 3 * torch.randn(6, 3)
y = torch.tensor([0, 3, 1, 2, 3, 0])
for kw in ({"alpha": [0.2, 0.5, 0.8]}, {"pos_weight": 2.0}):
    with _dispatch.cpu_kernels():
        try:
            F.sigmoid_focal_loss(x, y, backend="triton", **kw)
        except ValueError as err:
            assert "per-class alpha or a pos_weight" in str(err), err
        else:
            raise AssertionError("backend='triton' served an option the kernel lacks")
        auto = F.sigmoid_focal_loss(x, y, backend="auto", **kw)
    torch.testing.assert_close(auto, F.sigmoid_focal_loss(x, y, **kw), rtol=0, atol=0)
# A float alpha is still served by the kernel.
with _dispatch.cpu_kernels():
    fused = F.sigmoid_focal_loss(x, y, alpha=0.25, backend="triton")
torch.testing.assert_close(fused, F.sigmoid_focal_loss(x, y, alpha=0.25), rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_fused_kernel_declines_per_class_alpha_and_pos_weight() -> None:
    """Under the Triton interpreter: ``"triton"`` names the options it cannot serve, ``"auto"``
    falls back to the reference, a float alpha still goes to the kernel."""
    pytest.importorskip("triton")
    import os

    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _DECLINE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
