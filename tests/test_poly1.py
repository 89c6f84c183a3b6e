"""Poly-1 cross-entropy and Poly-1 focal loss: float64 references from the paper, parity with the
paper's listings and abhuse/polyloss-pytorch (rewritten from their formulas), identities with
cross_entropy / sigmoid_focal_loss, edge cases and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from reference import long_tail as ref

import lossforge as lf
import lossforge.functional as F

F64 = torch.float64
CW4 = [0.5, 2.0, 1.0, 0.25]


def _index(n: int, dtype: torch.dtype, g: torch.Generator, ignore: bool = False):
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    if ignore and n > 1:
        y[1::3] = -100
    return x, y


def _index_ignored(n, dtype, g):
    return _index(n, dtype, g, ignore=True)


def _probs(n, dtype, g):
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    return x, torch.softmax(torch.randn(n, 4, generator=g, dtype=F64), dim=1)


def _spatial(n, dtype, g):
    x = (2 * torch.randn(n, 4, 2, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 4, (n, 2, 3), generator=g)


def _sig_index(n, dtype, g):
    x = (2 * torch.randn(n, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 4, (n,), generator=g)  # 3 = background


def _sig_soft(n, dtype, g):
    x = (2 * torch.randn(n, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.rand(n, 3, generator=g, dtype=F64)


CE, FOCAL = F.poly1_cross_entropy, F.poly1_focal_loss
CE_MOD, FOCAL_MOD = lf.Poly1CrossEntropyLoss, lf.Poly1FocalLoss
CASES = [
    LossCase("ce", CE, CE_MOD, {}, _index, elementwise=False),
    LossCase("ce_eps_neg", CE, CE_MOD, {"epsilon": -1.0}, _index, elementwise=False),
    LossCase(
        "ce_weight_smooth_ignore",
        CE,
        CE_MOD,
        {"epsilon": 2.0, "class_weight": CW4, "label_smoothing": 0.1},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "ce_probs", CE, CE_MOD, {"epsilon": 1.5, "class_weight": CW4}, _probs, elementwise=False
    ),
    LossCase("ce_spatial", CE, CE_MOD, {"epsilon": 0.5}, _spatial, elementwise=False),
    LossCase("focal", FOCAL, FOCAL_MOD, {}, _sig_index),
    LossCase("focal_soft_small_gamma", FOCAL, FOCAL_MOD, {"gamma": 0.5, "epsilon": 2.0}, _sig_soft),
    LossCase(
        "focal_alpha_list_pos_weight",
        FOCAL,
        FOCAL_MOD,
        {"alpha": [0.2, 0.5, 0.8], "pos_weight": [2.0, 1.0, 0.5], "epsilon": -0.5},
        _sig_soft,
    ),
]
globals().update(contract_test_suite(CASES))


# ------------------------------------------------------------------------------------------------
# Paper references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "kw",
    [
        {"epsilon": 1.0},
        {"epsilon": -1.0},
        {"epsilon": 2.0, "class_weight": CW4},
        {"epsilon": 2.0, "label_smoothing": 0.1},
        {"epsilon": 0.7, "class_weight": CW4, "label_smoothing": 0.3, "ignore_index": -100},
    ],
    ids=["eps1", "eps_minus1", "class_weight", "smoothing", "all"],
)
def test_ce_matches_paper_reference(kw: dict, reduction: str) -> None:
    x, y = _index_ignored(10, F64, torch.Generator().manual_seed(0))
    got = CE(x, y, reduction=reduction, **kw)
    assert_close(got, ref.poly1_ce(x, y, reduction=reduction, **kw), F64)


@pytest.mark.parametrize("make", [_probs, _spatial], ids=["probs", "spatial"])
def test_ce_probability_and_spatial_targets_match_reference(make) -> None:
    x, t = make(3, F64, torch.Generator().manual_seed(1))
    for kw in ({"epsilon": 1.0}, {"epsilon": 2.0, "class_weight": CW4, "label_smoothing": 0.2}):
        for red in ("none", "mean"):
            got = CE(x, t, reduction=red, **kw)
            assert_close(got, ref.poly1_ce(x, t, reduction=red, **kw), F64)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.2, 0.5, 0.8]], ids=["none", "float", "list"])
@pytest.mark.parametrize("epsilon", [-1.0, 1.0, 3.0])
def test_focal_matches_paper_reference(gamma: float, alpha, epsilon: float) -> None:
    x, t = _sig_soft(6, F64, torch.Generator().manual_seed(2))
    got = FOCAL(x, t, epsilon=epsilon, gamma=gamma, alpha=alpha, reduction="none")
    want = ref.sigmoid_focal_map(x, t, alpha=alpha, gamma=gamma, epsilon=epsilon)
    assert_close(got, want, F64)
    pw = torch.tensor([2.0, 0.5, 1.0], dtype=F64)
    got = FOCAL(x, t, epsilon=epsilon, gamma=gamma, alpha=alpha, pos_weight=pw, reduction="none")
    want = ref.sigmoid_focal_map(x, t, alpha=alpha, gamma=gamma, epsilon=epsilon, pos_weight=pw)
    assert_close(got, want, F64)


# ------------------------------------------------------------------------------------------------
# The paper's listings and abhuse/polyloss-pytorch, rewritten from their formulas
# ------------------------------------------------------------------------------------------------


def _listing1_poly1_ce(logits, labels, epsilon):
    # pt = sum(labels * softmax(logits)); CE = softmax_cross_entropy_with_logits(labels, logits)
    pt = (labels * torch.softmax(logits, dim=-1)).sum(dim=-1)
    ce = -(labels * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
    return ce + epsilon * (1 - pt)


def _polyloss_ce(logits, labels, num_classes, epsilon=1.0, weight=None):
    onehot = TF.one_hot(labels, num_classes=num_classes).to(logits.dtype)
    pt = torch.sum(onehot * TF.softmax(logits, dim=-1), dim=-1)
    ce = TF.cross_entropy(logits, labels, reduction="none", weight=weight)
    return ce + epsilon * (1 - pt)


def _polyloss_focal(logits, labels, num_classes, epsilon=1.0, alpha=0.25, gamma=2.0, pw=None):
    p = torch.sigmoid(logits)
    if labels.ndim == 1:
        labels = TF.one_hot(labels, num_classes=num_classes)
    else:
        labels = TF.one_hot(labels.unsqueeze(1), num_classes).transpose(1, -1).squeeze_(-1)
    labels = labels.to(logits.dtype)
    ce = TF.binary_cross_entropy_with_logits(logits, labels, reduction="none", pos_weight=pw)
    pt = labels * p + (1 - labels) * (1 - p)
    fl = ce * ((1 - pt) ** gamma)
    if alpha >= 0:
        fl = (alpha * labels + (1 - alpha) * (1 - labels)) * fl
    return fl + epsilon * torch.pow(1 - pt, gamma + 1)


PEER_DELTA: dict[str, float] = {}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("epsilon", [-1.0, 1.0, 2.0])
def test_ce_matches_polyloss_and_the_listing(seed: int, epsilon: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(20, 7, generator=g, dtype=F64)
    y = torch.randint(0, 7, (20,), generator=g)
    want = _polyloss_ce(x, y, 7, epsilon)
    for red, agg in (("none", lambda v: v), ("mean", torch.mean), ("sum", torch.sum)):
        got = CE(x, y, epsilon=epsilon, reduction=red)
        assert_close(got, agg(want), F64, rtol=1e-12, atol=1e-12)
    PEER_DELTA[f"ce/{seed}/{epsilon}"] = float((CE(x, y, epsilon=epsilon) - want.mean()).abs())
    # Listing 1 with smoothed one-hot labels is label_smoothing here.
    smoothed = TF.one_hot(y, 7).to(F64) * 0.9 + 0.1 / 7
    got = CE(x, y, epsilon=epsilon, label_smoothing=0.1, reduction="none")
    assert_close(got, _listing1_poly1_ce(x, smoothed, epsilon), F64, rtol=1e-12, atol=1e-12)


def test_ce_class_weight_differs_from_polyloss_as_documented() -> None:
    """polyloss-pytorch weights only the CE term; here w_y scales the whole loss."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    theirs = _polyloss_ce(x, y, 3, 1.0, weight=w)
    ours = CE(x, y, epsilon=1.0, class_weight=w, reduction="none")
    p_y = torch.softmax(x, 1)[torch.arange(6), y]
    assert_close(ours - theirs, (w[y] - 1.0) * (1.0 - p_y), F64)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.0)])
def test_focal_matches_polyloss(seed: int, alpha: float, gamma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    ours_alpha = None if alpha < 0 else alpha
    # [N] labels, and [N, H, W] segmentation labels (their one-hot transpose).
    x = 3 * torch.randn(12, 5, generator=g, dtype=F64)
    y = torch.randint(0, 5, (12,), generator=g)
    pw = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=F64)
    want = _polyloss_focal(x, y, 5, epsilon=1.0, alpha=alpha, gamma=gamma, pw=pw)
    got = FOCAL(x, y, alpha=ours_alpha, gamma=gamma, pos_weight=pw, reduction="none")
    assert_close(got, want, F64, rtol=1e-12, atol=1e-13)
    PEER_DELTA[f"focal/{seed}/{alpha}/{gamma}"] = float((got - want).abs().max())
    xs = 3 * torch.randn(2, 5, 3, 4, generator=g, dtype=F64)
    ys = torch.randint(0, 5, (2, 3, 4), generator=g)
    want = _polyloss_focal(xs, ys, 5, epsilon=2.0, alpha=alpha, gamma=gamma).mean()
    got = FOCAL(xs, ys, epsilon=2.0, alpha=ours_alpha, gamma=gamma)
    assert_close(got, want, F64, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# Identities and edge cases
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_index_ignored, _probs], ids=["index", "probs"])
def test_ce_epsilon_zero_is_cross_entropy(make) -> None:
    x, t = make(8, F64, torch.Generator().manual_seed(3))
    kw = {"class_weight": CW4, "label_smoothing": 0.1}
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, want = CE(a, t, epsilon=0.0, **kw), F.cross_entropy(b, t, **kw)
    assert_close(got, want, F64)
    got.backward()
    want.backward()
    assert_close(a.grad, b.grad, F64)


def test_focal_epsilon_zero_is_sigmoid_focal() -> None:
    x, y = _sig_index(8, F64, torch.Generator().manual_seed(4))
    for kw in ({}, {"alpha": [0.2, 0.5, 0.8], "pos_weight": 2.0, "gamma": 0.5}):
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        got, want = FOCAL(a, y, epsilon=0.0, **kw), F.sigmoid_focal_loss(b, y, **kw)
        assert_close(got, want, F64)
        got.backward()
        want.backward()
        assert_close(a.grad, b.grad, F64)


def test_ce_bounds() -> None:
    x, y = _index(50, F64, torch.Generator().manual_seed(5))
    ce = TF.cross_entropy(x, y, reduction="none")
    assert (CE(x, y, epsilon=-1.0, reduction="none") >= -1e-15).all()  # -log p >= 1 - p
    assert (CE(x, y, epsilon=1.0, reduction="none") >= ce).all()
    assert (CE(x, y, epsilon=1.0, reduction="none") <= ce + 1.0).all()


@pytest.mark.parametrize(
    ("fn", "kw", "exc", "match"),
    [
        (CE, {"epsilon": -1.5}, ValueError, "poly1_cross_entropy: expected `epsilon` in \\[-1"),
        (FOCAL, {"epsilon": -2.0}, ValueError, "poly1_focal_loss: expected `epsilon`"),
        (CE, {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        (FOCAL, {"alpha": [0.5, 0.5]}, ValueError, "alpha"),
        (FOCAL, {"gamma": -1.0}, ValueError, "gamma"),
        (CE, {"backend": "triton"}, ValueError, "backend"),
        (FOCAL, {"backend": "triton"}, ValueError, "backend"),
    ],
)
def test_rejects(fn, kw: dict, exc: type, match: str) -> None:
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    with pytest.raises(exc, match=match):
        fn(x, y, **kw)
