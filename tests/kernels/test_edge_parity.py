"""The fused route equals the torch route on the edge cases a differential fuzz of the two found
apart (about 27,600 random cases through the interpreter): each case runs both backends through
the public functions and compares values, gradients or the error.

* class weights with uint8 / int16 class-index targets (the weight vector was indexed by the raw
  target: an IndexError for int16, a boolean mask for uint8);
* a uint8 dense target with a negative ``ignore_index`` (the torch route compared in uint8, where
  -1 is 255, and dropped the 255s);
* probability targets with a masked (-inf) class: ``0 * -inf`` made the fused loss NaN;
* softmax focal with a masked class 0 at an ignored position (a NaN gradient row);
* cross-entropy of logits sharing a large offset (10^4: the fused loss was 0, its relative error
  9 % at 10^3), with probability targets and label smoothing;
* sigmoid focal with an infinite logit on the correct side, checks off (NaN where the torch route
  gives the finite loss);
* smooth L1 of a NaN prediction, checks off (gradient 0 where PyTorch's is NaN; L1's is 0).
"""

from __future__ import annotations

import pytest
import torch

import lossforge
import lossforge.functional as LF

INF = float("inf")


def _both(fn: str, x: torch.Tensor, *args, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for backend in ("torch", "triton"):
        xb = x.detach().clone().requires_grad_(True)
        loss = getattr(LF, fn)(xb, *args, backend=backend, **kwargs)
        (g,) = torch.autograd.grad(loss.sum(), xb)
        out.append((loss.detach(), g))
    return out


def _assert_same(pairs: list[tuple[torch.Tensor, torch.Tensor]], rtol: float = 1e-5) -> None:
    (lt, gt), (lk, gk) = pairs
    torch.testing.assert_close(lk, lt, rtol=rtol, atol=1e-7, equal_nan=True)
    torch.testing.assert_close(gk, gt, rtol=rtol, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize(
    ("fn", "kw"),
    [
        ("cross_entropy", {}),
        ("cross_entropy", {"ignore_index": None}),
        ("softmax_focal_loss", {"gamma": 2.0}),
        ("logit_adjusted_loss", {"class_counts": [3.0, 2.0, 1.0]}),
    ],
)
def test_class_weight_with_narrow_index_targets(fn, kw, dtype):
    x = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.0, 0.0]])
    for t in ([0, 2, 2], [1, 2, 2], [0, 2, 1]):  # N == C: a uint8 target fits as a bool mask
        _assert_same(_both(fn, x, torch.tensor(t, dtype=dtype), class_weight=[1.0, 2.0, 3.0], **kw))


def test_class_weight_with_a_0d_uint8_target():
    x = torch.tensor([-0.3, -0.4, 0.1, 0.5, -0.05])
    cw = [0.547, 1.023, 2.441, 0.173, 0.837]
    _assert_same(_both("cross_entropy", x, torch.tensor(1, dtype=torch.uint8), class_weight=cw))


@pytest.mark.parametrize("backend", ["torch", "triton", "auto"])
def test_uint8_dense_target_negative_ignore_index_ignores_nothing(backend):
    # -1 is no uint8 value: the 255 is a target value outside [0, 1] on every route
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[0, 1, 255], [1, 1, 0]], dtype=torch.uint8)
    with lossforge.value_checks(True), pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        LF.binary_cross_entropy_with_logits(
            x, t, ignore_index=-1, index_target=False, backend=backend
        )
    kept = torch.tensor([[0, 1, 1], [1, 1, 0]], dtype=torch.uint8)
    with lossforge.value_checks(True):
        want = LF.binary_cross_entropy_with_logits(x, kept, index_target=False)
        got = LF.binary_cross_entropy_with_logits(
            x, kept, ignore_index=-1, index_target=False, backend=backend
        )
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("fn", "kw"),
    [("cross_entropy", {}), ("balanced_softmax_loss", {"class_counts": [5.0, 3.0, 1.0]})],
)
def test_probability_targets_with_a_masked_class(fn, kw):
    x = torch.tensor([[1.0, -INF, 0.5], [0.2, 0.3, -1.0]])
    p = torch.tensor([[0.7, 0.0, 0.3], [0.2, 0.5, 0.3]])
    pairs = _both(fn, x, p, **kw)
    assert torch.isfinite(pairs[1][0]).all()
    _assert_same(pairs)
    _assert_same(_both(fn, x, p, reduction="none", **kw))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_masked_class_zero_at_an_ignored_position(gamma):
    x = torch.tensor([[-INF, 1.0, 0.5], [0.3, -0.2, 0.1]])
    pairs = _both("softmax_focal_loss", x, torch.tensor([-100, 2]), gamma=gamma)
    assert torch.equal(pairs[1][1][0], torch.zeros(3))
    _assert_same(pairs)
    # the target class itself masked: an infinite loss on both routes, and the same gradient
    # (the limit of p log p at p = 0), not NaN
    pairs = _both("softmax_focal_loss", x, torch.tensor([0, 2]), gamma=gamma)
    assert torch.isinf(pairs[1][0]) and torch.isfinite(pairs[1][1]).all()
    _assert_same(pairs)


def _exact_ce(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(x.double(), t)


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4])
def test_cross_entropy_of_logits_with_a_large_common_offset(offset):
    base = torch.tensor([[8.0, 0.0, -1.0], [0.5, 3.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0, 1])
    x = (base + offset).float()  # exact in float32 at these offsets
    exact = _exact_ce(base, t)  # the loss does not depend on the offset
    got = LF.cross_entropy(x, t, backend="triton")
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=0.0)
    probs = torch.nn.functional.one_hot(t, 3).float() * 0.9 + 0.1 / 3
    exact_p = torch.nn.functional.cross_entropy(base, probs.double())
    got_p = LF.cross_entropy(x, probs, backend="triton")
    torch.testing.assert_close(got_p.double(), exact_p, rtol=1e-5, atol=0.0)
    exact_s = torch.nn.functional.cross_entropy(base, t, label_smoothing=0.1)
    got_s = LF.cross_entropy(x, t, label_smoothing=0.1, backend="triton")
    torch.testing.assert_close(got_s.double(), exact_s, rtol=1e-5, atol=0.0)
    for kw in (
        {"class_weight": [1.0, 2.0, 0.5]},
        {"class_weight": [1.0, 2.0, 0.5], "label_smoothing": 0.2},
    ):
        want = torch.nn.functional.cross_entropy(
            base,
            t,
            weight=torch.tensor(kw["class_weight"], dtype=torch.float64),
            label_smoothing=kw.get("label_smoothing", 0.0),
        )
        torch.testing.assert_close(
            LF.cross_entropy(x, t, backend="triton", **kw).double(), want, rtol=1e-5, atol=0.0
        )


@pytest.mark.parametrize("gamma", [1.5, 2.0])
def test_sigmoid_focal_infinite_logit_on_the_correct_side(gamma):
    x = torch.tensor([[-INF, 0.3, 1.2], [INF, -0.2, 0.4]])
    hard = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    with lossforge.value_checks(False):
        pairs = _both("sigmoid_focal_loss", x, hard, gamma=gamma)
    assert torch.isfinite(pairs[1][0]) and torch.isfinite(pairs[1][1]).all()
    _assert_same(pairs)


@pytest.mark.parametrize("fn", ["l1_loss", "smooth_l1_loss", "mse_loss"])
def test_regression_nan_prediction_gradient(fn):
    pred = torch.tensor([float("nan"), 1.0, -1.0])
    with lossforge.value_checks(False):
        _assert_same(_both(fn, pred, torch.tensor([0.0, 0.0, 1.0]), reduction="none"))


@pytest.mark.parametrize(
    ("fn", "kw", "probs"),
    [
        ("cross_entropy", {}, False),
        ("cross_entropy", {"label_smoothing": 0.1}, False),
        ("softmax_focal_loss", {"gamma": 2.0}, False),
        ("cross_entropy", {}, True),
    ],
)
def test_long_row_variant_with_a_masked_leading_chunk(monkeypatch, fn, kw, probs):
    """The multi-block (online softmax) variant, forced with 4-class chunks: a first chunk whose
    classes are all masked left the running max at -inf and made the row NaN (-inf - (-inf))."""
    from lossforge.kernels import softmax as K

    monkeypatch.setattr(K, "SINGLE_PASS_MAX_C", 4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 10, generator=g)
    x[0, :4] = -INF
    if probs:
        t = torch.softmax(torch.randn(2, 10, generator=g), 1)
        t[0, :4] = 0.0
        t = t / t.sum(1, keepdim=True)
    else:
        t = torch.tensor([6, 1])
    for offset in (0.0, 1e4):
        pairs = _both(fn, x + offset, t, reduction="none", **kw)
        if "label_smoothing" not in kw:  # (smoothing over a masked class: inf, on both routes)
            assert torch.isfinite(pairs[1][0]).all()
        _assert_same(pairs, rtol=1e-5 if offset == 0.0 else 2e-3)
