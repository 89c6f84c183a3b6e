"""Quality focal, distribution focal, varifocal and GHM losses: the contract, references from the
papers, mmdetection parity (formulas rewritten from its source), target formats, GHM state and its
DDP consistency (2 gloo ranks on CPU), no host syncs."""

from __future__ import annotations

import datetime
import functools
import math
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from reference import detection as ref

import lossforge as lf
import lossforge.functional as F
from lossforge._examples import EXAMPLES
from lossforge.distributed import global_normalization

F64 = torch.float64
quality_dense = EXAMPLES["quality_dense"]
sigmoid_index = EXAMPLES["sigmoid_index"]
sigmoid_dense = EXAMPLES["sigmoid_dense"]
distribution = EXAMPLES["distribution"]
regression = EXAMPLES["regression"]


def _ghmc_ignore(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    x, y = sigmoid_index(n, dtype, g)
    return x, torch.where(torch.arange(n) % 3 == 1, -1, y)


CASES = [
    LossCase("qfl_dense", F.quality_focal_loss, lf.QualityFocalLoss, {}, quality_dense),
    LossCase(
        "qfl_beta_0.5", F.quality_focal_loss, lf.QualityFocalLoss, {"beta": 0.5}, quality_dense
    ),
    LossCase("qfl_index", F.quality_focal_loss, lf.QualityFocalLoss, {"beta": 1.5}, sigmoid_index),
    LossCase(
        "qfl_ignore",
        F.quality_focal_loss,
        lf.QualityFocalLoss,
        {"ignore_index": -1},
        _ghmc_ignore,
        mean_is_count=False,
    ),
    LossCase("vfl_dense", F.varifocal_loss, lf.VarifocalLoss, {}, quality_dense),
    LossCase(
        "vfl_unweighted",
        F.varifocal_loss,
        lf.VarifocalLoss,
        {"iou_weighted": False, "alpha": 0.25, "gamma": 0.5},
        quality_dense,
    ),
    LossCase("vfl_index", F.varifocal_loss, lf.VarifocalLoss, {"gamma": 1.0}, sigmoid_index),
    LossCase(
        "dfl",
        F.distribution_focal_loss,
        lf.DistributionFocalLoss,
        {},
        distribution,
        elementwise=False,
    ),
    # GHM: the functional against its module without running statistics (momentum 0 is the
    # stateless case; the running form is tested below).
    LossCase("ghmc_index", F.ghmc_loss, lf.GHMCLoss, {"bins": 10, "momentum": 0.0}, sigmoid_index),
    LossCase(
        "ghmc_dense_3bins", F.ghmc_loss, lf.GHMCLoss, {"bins": 3, "momentum": 0.0}, sigmoid_dense
    ),
    LossCase(
        "ghmc_ignore",
        F.ghmc_loss,
        lf.GHMCLoss,
        {"bins": 4, "ignore_index": -1, "momentum": 0.0},
        _ghmc_ignore,
        mean_is_count=False,
    ),
    LossCase(
        "ghmr",
        F.ghmr_loss,
        lf.GHMRLoss,
        {"mu": 0.5, "bins": 5, "momentum": 0.0},
        regression,
        extreme=False,
    ),
]
globals().update(contract_test_suite(CASES))


def _logits(n: int = 30, c: int = 5, seed: int = 0) -> torch.Tensor:
    return 2.5 * torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _labels_scores(n: int = 30, c: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c + 1, (n,), generator=g)  # c = background
    return labels, torch.rand(n, generator=g, dtype=F64)


def _dense(labels: torch.Tensor, scores: torch.Tensor, c: int) -> torch.Tensor:
    return (labels[:, None] == torch.arange(c)).to(F64) * scores[:, None]


def _value_and_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (out.sum() if out.ndim else out).backward()
    return out.detach(), x.grad


# --------------------------------------------------------------------------------------------------
# Quality focal loss
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0, 3.5])
def test_qfl_matches_reference_in_every_target_format(beta: float) -> None:
    x = _logits()
    labels, scores = _labels_scores()
    dense = _dense(labels, scores, 5)
    want = ref.quality_focal(x, dense, beta)
    forms = [
        F.quality_focal_loss(x, dense, beta=beta, reduction="none"),
        F.quality_focal_loss(x, labels, score=scores, beta=beta, reduction="none"),
        F.quality_focal_loss(x, (labels, scores), beta=beta, reduction="none"),
        lf.QualityFocalLoss(beta=beta)(x, (labels, scores), reduction_override="none"),
        lf.QualityFocalLoss(beta=beta)(x, labels, reduction_override="none", score=scores),
    ]
    for got in forms:
        assert_close(got, want, F64, rtol=1e-10, atol=1e-12)


def test_qfl_spatial_index_targets_with_scores() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 3, 5, generator=g, dtype=F64)
    labels = torch.randint(0, 5, (2, 3, 5), generator=g)
    scores = torch.rand(2, 3, 5, generator=g, dtype=F64)
    dense = (labels[:, None] == torch.arange(4)[None, :, None, None]).to(F64) * scores[:, None]
    got = F.quality_focal_loss(x, labels, score=scores, reduction="none")
    assert_close(got, ref.quality_focal(x, dense, 2.0), F64, rtol=1e-10, atol=1e-12)


def test_qfl_identities() -> None:
    x = _logits()
    labels, scores = _labels_scores()
    dense = _dense(labels, scores, 5)
    # beta = 0: BCE with soft targets (values and gradients)
    ours, g_ours = _value_and_grad(
        lambda v: F.quality_focal_loss(v, dense, beta=0.0, reduction="sum"), x
    )
    bce, g_bce = _value_and_grad(
        lambda v: TF.binary_cross_entropy_with_logits(v, dense, reduction="sum"), x
    )
    assert_close(ours, bce, F64)
    assert_close(g_ours, g_bce, F64)
    # hard targets: the sigmoid focal loss with gamma = beta and no alpha (values and gradients)
    for beta in (0.5, 2.0, 3.0):
        ours, g_ours = _value_and_grad(
            lambda v, b=beta: F.quality_focal_loss(v, labels, beta=b, reduction="sum"), x
        )
        focal, g_focal = _value_and_grad(
            lambda v, b=beta: F.sigmoid_focal_loss(v, labels, gamma=b, alpha=None, reduction="sum"),
            x,
        )
        assert_close(ours, focal, F64)
        assert_close(g_ours, g_focal, F64)


def test_qfl_gradient_finite_where_score_equals_sigmoid() -> None:
    """|y - sigma|^beta with beta < 1 has an infinite derivative at y = sigma; the naive pow
    backward gives NaN there (0 * inf), this loss the subgradient 0 of the factor."""
    x = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    y = torch.tensor([[0.5, 0.0]], dtype=F64)
    out = F.quality_focal_loss(x, y, beta=0.5, reduction="sum")
    out.backward()
    assert torch.isfinite(x.grad).all()
    naive = x.detach().clone().requires_grad_(True)
    s = torch.sigmoid(naive)
    (
        TF.binary_cross_entropy_with_logits(naive, y, reduction="none") * (y - s).abs() ** 0.5
    ).sum().backward()
    assert torch.isnan(naive.grad).any()
    # away from y = sigma the two agree
    xs = _logits(8, 2, seed=9)
    a, ga = _value_and_grad(lambda v: F.quality_focal_loss(v, y.expand(8, 2), beta=0.5), xs)
    b, gb = _value_and_grad(
        lambda v: (
            TF.binary_cross_entropy_with_logits(v, y.expand(8, 2), reduction="none")
            * (y - torch.sigmoid(v)).abs() ** 0.5
        ).mean(),
        xs,
    )
    assert_close(a, b, F64)
    assert_close(ga, gb, F64)


# mmdetection 3.x mmdet/models/losses/gfocal_loss.py, rewritten from reading the source:
# quality_focal_loss (label, score tuple) and quality_focal_loss_tensor_target (dense), both summed
# over the classes; distribution_focal_loss; then utils.weight_reduce_loss.
def mm_qfl(pred: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor], beta: float = 2.0):
    label, score = target
    sig = pred.sigmoid()
    loss = TF.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    loss = loss * sig.pow(beta)
    pos = ((label >= 0) & (label < pred.size(1))).nonzero().squeeze(1)
    pos_label = label[pos].long()
    scale = score[pos] - sig[pos, pos_label]
    loss[pos, pos_label] = TF.binary_cross_entropy_with_logits(
        pred[pos, pos_label], score[pos], reduction="none"
    ) * scale.abs().pow(beta)
    return loss.sum(dim=1)


def mm_qfl_tensor(pred: torch.Tensor, target: torch.Tensor, beta: float = 2.0):
    sig = pred.sigmoid()
    loss = TF.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    loss = loss * sig.pow(beta)
    pos = target != 0
    scale = target - sig
    full = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
    loss[pos] = full[pos] * scale[pos].abs().pow(beta)
    return loss.sum(dim=1)


def mm_dfl(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    left = label.long()
    right = left + 1
    wl = right.to(label.dtype) - label
    wr = label - left.to(label.dtype)
    return (
        TF.cross_entropy(pred, left, reduction="none") * wl
        + TF.cross_entropy(pred, right, reduction="none") * wr
    )


def mm_varifocal(pred, target, weight=None, alpha=0.75, gamma=2.0, iou_weighted=True, **red):
    sig = pred.sigmoid()
    neg = alpha * (sig - target).abs().pow(gamma) * (target <= 0.0).to(pred.dtype)
    pos = target * (target > 0.0) if iou_weighted else (target > 0.0).to(pred.dtype)
    loss = TF.binary_cross_entropy_with_logits(pred, target, reduction="none") * (pos + neg)
    return mm_reduce(loss, weight, **red)


def mm_reduce(loss, weight=None, reduction="mean", avg_factor=None) -> torch.Tensor:
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]
    return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)


MM_DIFF: dict[str, float] = {}


def _record(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    MM_DIFF[name] = max(MM_DIFF.get(name, 0.0), float((a - b).abs().max()))


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_qfl_matches_mmdetection(beta: float) -> None:
    """GFL heads: loss_cls(cls_score, (labels, score), weight=label_weights, avg_factor=num_pos).
    mmdetection sums the classes first: with avg_factor (and for "sum") the values are equal; the
    unreduced loss here keeps the classes (its sum over dim 1 is mmdetection's)."""
    x = _logits(40, 6, seed=4)
    labels, scores = _labels_scores(40, 6, seed=5)
    w = torch.rand(40, dtype=F64, generator=torch.Generator().manual_seed(6))
    for red in ({"reduction": "sum"}, {"reduction": "mean", "avg_factor": 11.0}):
        ours, g_ours = _value_and_grad(
            lambda v, r=red: lf.QualityFocalLoss(beta=beta)(
                v, (labels, scores), w, r.get("avg_factor"), r["reduction"]
            ),
            x,
        )
        theirs, g_theirs = _value_and_grad(
            lambda v, r=red: mm_reduce(mm_qfl(v, (labels, scores), beta), w, **r), x
        )
        assert_close(ours, theirs, F64, rtol=1e-6, atol=1e-12)
        assert_close(g_ours, g_theirs, F64, rtol=1e-6, atol=1e-12)
        _record("quality_focal", ours, theirs)
        dense = _dense(labels, scores, 6)
        tensor_form = mm_reduce(mm_qfl_tensor(x, dense, beta), w, **red)
        assert_close(F.quality_focal_loss(x, dense, beta=beta, weight=w, **red), tensor_form, F64)
    none = F.quality_focal_loss(x, (labels, scores), beta=beta, reduction="none")
    assert_close(none.sum(1), mm_qfl(x, (labels, scores), beta), F64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("target", "score", "exc", "match"),
    [
        (torch.zeros(4, 3), torch.zeros(4), ValueError, "expected `score` None with dense"),
        (torch.zeros(4, dtype=torch.long), torch.zeros(3), ValueError, r"shape \(4,\)"),
        (torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), TypeError, "float"),
        (torch.zeros(4, dtype=torch.long), torch.full((4,), 1.5), ValueError, r"\[0, 1\]"),
        ((torch.zeros(4, dtype=torch.long),) * 3, None, TypeError, "pair"),
        ((torch.zeros(4, dtype=torch.long), torch.zeros(4)), torch.zeros(4), ValueError, "pair"),
        (torch.zeros(4, 2), None, ValueError, "target"),
        (torch.full((4,), 5), None, ValueError, r"class indices in \[0, 3\]"),
    ],
)
def test_quality_target_errors(target: Any, score: Any, exc: type, match: str) -> None:
    for fn in (F.quality_focal_loss, F.varifocal_loss):
        with pytest.raises(exc, match=match):
            fn(torch.zeros(4, 3), target, score=score)


# --------------------------------------------------------------------------------------------------
# Varifocal loss
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"iou_weighted": False},
        {"alpha": 0.25, "gamma": 0.5},
        {"alpha": 1.0, "gamma": 0.0, "iou_weighted": False},
    ],
)
def test_vfl_matches_reference_and_mmdetection(kw: dict[str, Any]) -> None:
    x = _logits(40, 6, seed=7)
    labels, scores = _labels_scores(40, 6, seed=8)
    dense = _dense(labels, scores, 6)
    full = {"alpha": 0.75, "gamma": 2.0, "iou_weighted": True, **kw}
    want = ref.varifocal(x, dense, full["alpha"], full["gamma"], full["iou_weighted"])
    assert_close(F.varifocal_loss(x, dense, reduction="none", **kw), want, F64, rtol=1e-10)
    assert_close(
        F.varifocal_loss(x, labels, score=scores, reduction="none", **kw), want, F64, rtol=1e-10
    )
    w_elem = torch.rand(40, 6, dtype=F64, generator=torch.Generator().manual_seed(9))
    w_row = w_elem[:, 0]
    for weight, red in (
        (None, {"reduction": "mean"}),
        (w_elem, {"reduction": "none"}),
        (w_row[:, None], {"reduction": "sum"}),
        (w_elem, {"reduction": "mean", "avg_factor": 9.0}),
    ):
        ours, g_ours = _value_and_grad(
            lambda v, w=weight, r=red: lf.VarifocalLoss(**kw)(
                v, dense, w, r.get("avg_factor"), r["reduction"]
            ),
            x,
        )
        theirs, g_theirs = _value_and_grad(
            lambda v, w=weight, r=red: mm_varifocal(v, dense, w, **full, **r), x
        )
        assert_close(ours, theirs, F64, rtol=1e-6, atol=1e-12)
        assert_close(g_ours, g_theirs, F64, rtol=1e-6, atol=1e-12)
        _record("varifocal", ours, theirs)


def test_vfl_identities() -> None:
    x = _logits()
    labels = torch.randint(0, 6, (30,), generator=torch.Generator().manual_seed(2))
    bce = F.binary_cross_entropy_with_logits(x, labels, reduction="none")
    vfl = F.varifocal_loss(x, labels, alpha=1.0, gamma=0.0, iou_weighted=False, reduction="none")
    assert_close(vfl, bce, F64)
    # positives of a dense target are weighted by their IoU, untouched by alpha and gamma
    dense = _dense(labels, torch.rand(30, dtype=F64), 5)
    a = F.varifocal_loss(x, dense, alpha=0.1, gamma=5.0, reduction="none")
    b = F.varifocal_loss(x, dense, alpha=0.9, gamma=1.0, reduction="none")
    pos = dense > 0
    assert_close(a[pos], b[pos], F64)
    assert_close(
        a[pos],
        dense[pos] * TF.binary_cross_entropy_with_logits(x, dense, reduction="none")[pos],
        F64,
    )


# --------------------------------------------------------------------------------------------------
# Distribution focal loss
# --------------------------------------------------------------------------------------------------


def test_dfl_matches_reference_and_mmdetection() -> None:
    g = torch.Generator().manual_seed(10)
    reg_max = 16
    x = 3 * torch.randn(64, reg_max + 1, generator=g, dtype=F64)
    y = (reg_max - 0.01) * torch.rand(64, generator=g, dtype=F64)  # GFL's bbox2distance range
    y[:3] = torch.tensor([0.0, 5.0, reg_max - 0.01], dtype=F64)
    assert_close(
        F.distribution_focal_loss(x, y, reduction="none"), ref.distribution_focal(x, y), F64
    )
    # GFL head: weight = per-box weight expanded over the 4 sides, avg_factor = 4.0
    w = torch.rand(16, dtype=F64, generator=g)[:, None].expand(-1, 4).reshape(-1)
    for red in (
        {"reduction": "mean", "avg_factor": 4.0},
        {"reduction": "none"},
        {"reduction": "mean"},
    ):
        ours, g_ours = _value_and_grad(
            lambda v, r=red: lf.DistributionFocalLoss()(
                v, y, w, r.get("avg_factor"), r["reduction"]
            ),
            x,
        )
        theirs, g_theirs = _value_and_grad(lambda v, r=red: mm_reduce(mm_dfl(v, y), w, **r), x)
        assert_close(ours, theirs, F64, rtol=1e-6, atol=1e-12)
        assert_close(g_ours, g_theirs, F64, rtol=1e-6, atol=1e-12)
        _record("distribution_focal", ours, theirs)


def test_dfl_masked_bins() -> None:
    """A -inf logit (a masked bin) adds nothing where its weight is 0 (an integer distance's
    right neighbour, the end point's left one, any bin away from the target): finite, the
    cross-entropy over the other bins, with finite gradients; under the target's mass it makes
    the loss inf."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 6, generator=g, dtype=F64)
    y = torch.tensor([2.0, 5.0, 1.5], dtype=F64)
    masked = x.clone()
    masked[0, 3] = -math.inf  # right neighbour of y = 2 (weight 0)
    masked[1, 4] = -math.inf  # left neighbour of the end point y = 5 (weight 0)
    masked[2, 5] = -math.inf  # away from the target
    with lf.value_checks(False):
        loss, grad = _value_and_grad(
            lambda v: F.distribution_focal_loss(v, y, reduction="sum"), masked
        )
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    ls = torch.log_softmax(masked, dim=1)  # -inf at the masked bins, exact elsewhere
    want = -float(ls[0, 2] + ls[1, 5] + 0.5 * (ls[2, 1] + ls[2, 2]))
    assert math.isclose(float(loss), want, rel_tol=1e-12)
    target_masked = x.clone()
    target_masked[2, 2] = -math.inf  # half of y = 1.5's mass
    with lf.value_checks(False):
        out = F.distribution_focal_loss(target_masked, y, reduction="none")
    assert torch.isfinite(out[:2]).all() and out[2] == math.inf


def test_dfl_identities_and_layouts() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(10, 8, generator=g, dtype=F64)
    k = torch.randint(0, 8, (10,), generator=g)
    # integer targets (and the end point n = 7) are cross-entropy on that bin
    assert_close(
        F.distribution_focal_loss(x, k, reduction="none"),
        TF.cross_entropy(x, k, reduction="none"),
        F64,
    )
    end = torch.full((10,), 7.0, dtype=F64)
    assert_close(
        F.distribution_focal_loss(x, end, reduction="none"),
        TF.cross_entropy(x, end.long(), reduction="none"),
        F64,
    )
    # the minimum over the logits is at the two-hot distribution: zero gradient there
    y = torch.tensor([2.25], dtype=F64)
    q = torch.zeros(1, 8, dtype=F64)
    q[0, 2], q[0, 3] = 0.75, 0.25
    logits = torch.log(q + 1e-300).requires_grad_(True)
    F.distribution_focal_loss(logits, y).backward()
    assert logits.grad.abs().max() < 1e-12
    # (N, n + 1, 4): bins on dim 1, one distance per side
    boxes = torch.randn(5, 8, 4, generator=g, dtype=F64)
    sides = 7 * torch.rand(5, 4, generator=g, dtype=F64)
    flat = F.distribution_focal_loss(
        boxes.permute(0, 2, 1).reshape(20, 8), sides.reshape(20), reduction="none"
    )
    assert_close(F.distribution_focal_loss(boxes, sides, reduction="none"), flat.reshape(5, 4), F64)
    # one row
    assert_close(
        F.distribution_focal_loss(x[0], k[0].double(), reduction="none"),
        TF.cross_entropy(x[:1], k[:1])[None][0],
        F64,
    )


def test_dfl_errors() -> None:
    x = torch.zeros(3, 5)
    with pytest.raises(ValueError, match=r"distances in \[0, 4\] \(n \+ 1 = 5 bins\)"):
        F.distribution_focal_loss(x, torch.tensor([0.0, 4.5, 1.0]))
    with pytest.raises(ValueError, match=r"distances in \[0, 4\]"):
        F.distribution_focal_loss(x, torch.tensor([-0.1, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        F.distribution_focal_loss(x, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2 bins"):
        F.distribution_focal_loss(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(TypeError, match="real distances"):
        F.distribution_focal_loss(x, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        F.distribution_focal_loss(x.long(), torch.zeros(3))
    with lf.value_checks(False):  # no check: the out-of-range row is NaN, the others are not
        out = F.distribution_focal_loss(x, torch.tensor([0.0, 4.5, 1.0]), reduction="none")
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()


# --------------------------------------------------------------------------------------------------
# GHM-C / GHM-R
# --------------------------------------------------------------------------------------------------


# mmdetection 3.x mmdet/models/losses/ghm_loss.py (GHMC / GHMR forward), rewritten from reading
# the source: a Python loop over the bins with .item() (test code only).
class MMGHMC:
    def __init__(self, bins: int = 10, momentum: float = 0.0) -> None:
        self.bins, self.momentum = bins, momentum
        self.edges = torch.arange(bins + 1).float() / bins
        self.edges[-1] += 1e-6
        self.acc_sum = torch.zeros(bins, dtype=F64)

    def __call__(self, pred, target, label_weight, reduction="mean"):
        if pred.dim() != target.dim():
            onehot = torch.zeros_like(pred)
            inds = ((target >= 0) & (target < pred.size(-1))).nonzero().squeeze(1)
            onehot[inds, target[inds]] = 1
            target = onehot
            label_weight = label_weight.view(-1, 1).expand_as(pred)
        edges = self.edges.to(pred.dtype)
        weights = torch.zeros_like(pred)
        g = torch.abs(pred.sigmoid().detach() - target)
        valid = label_weight > 0
        tot = max(valid.float().sum().item(), 1.0)
        n = 0
        for i in range(self.bins):
            inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
            num = inds.sum().item()
            if num > 0:
                if self.momentum > 0:
                    self.acc_sum[i] = self.momentum * self.acc_sum[i] + (1 - self.momentum) * num
                    weights[inds] = tot / self.acc_sum[i]
                else:
                    weights[inds] = tot / num
                n += 1
        if n > 0:
            weights = weights / n
        loss = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
        return mm_reduce(loss, weights, reduction, avg_factor=tot)


class MMGHMR:
    def __init__(self, mu: float = 0.02, bins: int = 10, momentum: float = 0.0) -> None:
        self.mu, self.bins, self.momentum = mu, bins, momentum
        self.edges = torch.arange(bins + 1).float() / bins
        self.edges[-1] = 1e3
        self.acc_sum = torch.zeros(bins, dtype=F64)

    def __call__(self, pred, target, label_weight, reduction="mean"):
        mu = self.mu
        diff = pred - target
        loss = torch.sqrt(diff * diff + mu * mu) - mu
        g = torch.abs(diff / torch.sqrt(mu * mu + diff * diff)).detach()
        weights = torch.zeros_like(g)
        valid = label_weight > 0
        tot = max(label_weight.float().sum().item(), 1.0)
        n = 0
        edges = self.edges.to(pred.dtype)
        for i in range(self.bins):
            inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
            num = inds.sum().item()
            if num > 0:
                n += 1
                if self.momentum > 0:
                    self.acc_sum[i] = self.momentum * self.acc_sum[i] + (1 - self.momentum) * num
                    weights[inds] = tot / self.acc_sum[i]
                else:
                    weights[inds] = tot / num
        if n > 0:
            weights /= n
        return mm_reduce(loss, weights, reduction, avg_factor=tot)


@pytest.mark.parametrize("bins", [1, 3, 10, 30])
def test_ghmc_matches_reference(bins: int) -> None:
    x = _logits(50, 4, seed=12)
    labels = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(13))
    dense = (labels[:, None] == torch.arange(4)).to(F64)
    counted = torch.rand(50, 1, generator=torch.Generator().manual_seed(14)) > 0.2
    loss, total = ref.ghmc(x, dense, bins, counted=counted.expand(50, 4))
    w = counted.to(F64)[:, 0]
    got = F.ghmc_loss(x, labels, bins=bins, weight=w, reduction="none")
    assert_close(got, loss, F64, rtol=1e-10, atol=1e-12)
    assert_close(F.ghmc_loss(x, labels, bins=bins, weight=w), loss.sum() / total, F64, rtol=1e-10)
    # the same with ignored rows instead of zero weights
    ignored = torch.where(counted[:, 0], labels, -7)
    got = F.ghmc_loss(x, ignored, bins=bins, ignore_index=-7, reduction="none")
    assert_close(got, loss, F64, rtol=1e-10, atol=1e-12)
    # histogram helper
    counts = F.ghmc_histogram(x, ignored, bins=bins, ignore_index=-7)
    assert counts.sum() == total and counts.shape == (bins,)


@pytest.mark.parametrize("bins", [1, 10])
def test_ghmr_matches_reference(bins: int) -> None:
    g = torch.Generator().manual_seed(15)
    p = 0.1 * torch.randn(40, 4, generator=g, dtype=F64)
    t = 0.1 * torch.randn(40, 4, generator=g, dtype=F64)
    w = (torch.rand(40, 4, generator=g) > 0.3).to(F64)
    loss, total = ref.ghmr(p, t, 0.02, bins, counted=w)
    assert_close(F.ghmr_loss(p, t, bins=bins, weight=w, reduction="none"), loss, F64, rtol=1e-9)
    assert_close(F.ghmr_loss(p, t, bins=bins, weight=w), loss.sum() / total, F64, rtol=1e-9)
    assert F.ghmr_histogram(p, t, bins=bins, weight=w).sum() == total


@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_ghmc_module_matches_mmdetection_over_steps(momentum: float) -> None:
    ours = lf.GHMCLoss(bins=10, momentum=momentum).double()
    theirs = MMGHMC(bins=10, momentum=momentum)
    for step in range(4):
        x = _logits(60, 4, seed=20 + step)
        labels = torch.randint(0, 5, (60,), generator=torch.Generator().manual_seed(30 + step))
        lw = (torch.rand(60, generator=torch.Generator().manual_seed(40 + step)) > 0.1).to(F64)
        a, ga = _value_and_grad(lambda v, y=labels, w=lw: ours(v, y, w), x)
        b, gb = _value_and_grad(lambda v, y=labels, w=lw: theirs(v, y, w), x)
        assert_close(a, b, F64, rtol=1e-6, atol=1e-12)
        assert_close(ga, gb, F64, rtol=1e-6, atol=1e-12)
        assert_close(ours.acc_sum, theirs.acc_sum, F64)
        _record("ghmc", a, b)


@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_ghmc_functional_with_explicit_state_reproduces_the_module(momentum: float) -> None:
    """The pure form: bin_counts in, ghm_running_counts out; no state anywhere."""
    module = lf.GHMCLoss(bins=8, momentum=momentum).double()
    state = None
    for step in range(4):
        x = _logits(40, 3, seed=90 + step)
        y = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(95 + step))
        got = F.ghmc_loss(x, y, bins=8, momentum=momentum, bin_counts=state)
        hist = F.ghmc_histogram(x, y, bins=8)
        state = F.ghm_running_counts(state, hist, momentum=momentum)
        assert_close(module(x, y), got, F64, rtol=1e-12, atol=1e-12)
        if momentum > 0:
            assert_close(module.acc_sum, state, F64, rtol=1e-12, atol=1e-12)
    # the running counts are what the loss divided by: momentum=1 with them gives the same loss
    frozen = F.ghmc_loss(x, y, bins=8, momentum=1.0, bin_counts=state)
    assert_close(frozen, got, F64, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_ghmr_module_matches_mmdetection_over_steps(momentum: float) -> None:
    ours = lf.GHMRLoss(mu=0.02, bins=10, momentum=momentum).double()
    theirs = MMGHMR(mu=0.02, bins=10, momentum=momentum)
    for step in range(4):
        g = torch.Generator().manual_seed(50 + step)
        p = 0.05 * torch.randn(30, 4, generator=g, dtype=F64)
        t = 0.05 * torch.randn(30, 4, generator=g, dtype=F64)
        lw = (torch.rand(30, 4, generator=g) > 0.2).to(F64)
        a, ga = _value_and_grad(lambda v, y=t, w=lw: ours(v, y, w), p)
        b, gb = _value_and_grad(lambda v, y=t, w=lw: theirs(v, y, w), p)
        assert_close(a, b, F64, rtol=1e-6, atol=1e-12)
        assert_close(ga, gb, F64, rtol=1e-6, atol=1e-12)
        assert_close(ours.acc_sum, theirs.acc_sum, F64)
        _record("ghmr", a, b)


def test_ghm_state_training_eval_and_state_dict() -> None:
    x = _logits(20, 3, seed=60)
    y = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(61))
    loss = lf.GHMCLoss(bins=5, momentum=0.75)
    assert loss.acc_sum.shape == (5,) and torch.all(loss.acc_sum == 0)
    # eval on a fresh module: nothing recorded yet, so this batch's histogram (= momentum 0)
    loss.eval()
    assert_close(loss(x, y), F.ghmc_loss(x, y, bins=5), F64)
    assert torch.all(loss.acc_sum == 0)
    # training: the buffer follows acc = m acc + (1 - m) counts on the non-empty bins
    loss.train()
    counts = F.ghmc_histogram(x, y, bins=5).float()
    loss(x, y)
    assert_close(loss.acc_sum, 0.25 * counts, torch.float32)
    loss(x, y)
    assert_close(
        loss.acc_sum,
        torch.where(counts > 0, 0.75 * 0.25 * counts + 0.25 * counts, 0.0),
        torch.float32,
    )
    # eval reads the running counts without changing them
    loss.eval()
    before = loss.acc_sum.clone()
    got = loss(x, y)
    assert torch.equal(loss.acc_sum, before)
    assert_close(got, F.ghmc_loss(x, y, bins=5, momentum=1.0, bin_counts=before), torch.float32)
    # state_dict round trip
    again = lf.GHMCLoss(bins=5, momentum=0.75)
    again.load_state_dict(loss.state_dict())
    assert torch.equal(again.acc_sum, loss.acc_sum)
    assert "acc_sum" in loss.state_dict()
    assert repr(loss) == (
        "GHMCLoss(bins=5, momentum=0.75, ignore_index=None, index_target=None, reduction='mean')"
    )
    # momentum 0 keeps no state
    stateless = lf.GHMCLoss(bins=5, momentum=0.0)
    stateless(x, y)
    assert torch.all(stateless.acc_sum == 0)


@pytest.mark.parametrize("name", ["ghmc", "ghmr"])
def test_ghm_stateful_module_compiles_without_graph_breaks(name: str) -> None:
    """torch.compile(fullgraph=True) of the training-mode forward, buffer update included: two
    modules, one compiled, step through the same batches and keep equal losses and buffers."""
    params = {"bins": 6, "momentum": 0.75}
    eager, compiled_module = (
        lf.build_loss({"type": name, **params}),
        lf.build_loss({"type": name, **params}),
    )
    torch._dynamo.reset()
    compiled = torch.compile(compiled_module, fullgraph=True, backend="eager")
    for step in range(3):
        x = _logits(10, 3, seed=80 + step).float()
        y = torch.randint(0, 4, (10,)) if name == "ghmc" else torch.randn(10, 3)
        assert_close(compiled(x, y), eager(x, y), torch.float32, rtol=1e-6, atol=1e-6)
        assert torch.equal(compiled_module.acc_sum, eager.acc_sum)
    assert eager.acc_sum.sum() > 0


def test_ghm_options_and_errors() -> None:
    x, y = _logits(6, 3), torch.randint(0, 4, (6,))
    with pytest.raises(ValueError, match=r"ghmc_loss: expected `bins` >= 1, got 0"):
        F.ghmc_loss(x, y, bins=0)
    with pytest.raises(ValueError, match=r"expected `bin_counts` a 1-d tensor of length bins=10"):
        F.ghmc_loss(x, y, bin_counts=torch.ones(5))
    with pytest.raises(ValueError, match="finite non-negative"):
        F.ghmc_loss(x, y, bin_counts=-torch.ones(10))
    with pytest.raises(TypeError, match="bin_counts"):
        F.ghmc_loss(x, y, bin_counts=[1.0] * 10)
    with pytest.raises(ValueError, match=r"GHMCLoss: expected `momentum` in \[0, 1\]"):
        lf.GHMCLoss(momentum=1.5)
    with pytest.raises(ValueError, match=r"ghmc_loss: expected `momentum` in \[0, 1\]"):
        F.ghmc_loss(x, y, momentum=-0.5)
    with pytest.raises(ValueError, match="histogram"):
        F.ghm_running_counts(None, torch.ones(2, 2), momentum=0.5)
    with pytest.raises(ValueError, match="bins"):
        lf.GHMRLoss(bins=0)
    with pytest.raises(ValueError, match="mu"):
        lf.GHMRLoss(mu=0.0)
    with pytest.raises(ValueError, match="mu"):
        F.ghmr_histogram(x, x, mu=-1.0)
    with pytest.raises(ValueError, match="weight"):
        F.ghmc_loss(x, y, weight=torch.ones(5))
    module = lf.GHMCLoss()
    with pytest.raises(ValueError, match="avg_factor"):
        module(x, y, avg_factor=2.0, reduction_override="sum")
    assert torch.all(module.acc_sum == 0)  # a refused call updates nothing
    with pytest.raises(TypeError, match="GHMCLoss: expected `forward keywords`"):
        module(x, y, score=torch.ones(6))
    with pytest.raises(TypeError):
        lf.GHMCLoss(bin=3)
    assert lf.build_loss({"type": "ghmc", "bins": 30, "momentum": 0.75}).bins == 30
    assert lf.build_loss({"type": "GHMRLoss", "mu": 0.1}).mu == 0.1


def test_ghm_bins_follow_mmdetections_edges() -> None:
    """Bin k holds k / bins <= g < (k + 1) / bins; g = 1 (a saturated wrong prediction) is in the
    last bin; an edge value goes to the upper bin."""
    x = torch.tensor([[-1e4, 0.0, 1e4]])
    y = torch.tensor([[1.0, 0.5, 1.0]])  # g = 1, 0 (exact), 0
    assert F.ghmc_histogram(x, y, bins=4).tolist() == [2.0, 0.0, 0.0, 1.0]
    g = torch.tensor([0.25, 0.5, 0.75], dtype=F64)  # sigmoid(logit(g)) = g up to rounding
    counts = F.ghmc_histogram(torch.logit(g)[None], torch.zeros(1, 3, dtype=F64), bins=4)
    assert counts.tolist() == [0.0, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------------
# No host synchronisation in any of these losses (value checks off, as on an accelerator)
# --------------------------------------------------------------------------------------------------


def _forbid_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a tensor value was read on the host")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def test_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _logits(12, 4, seed=70).requires_grad_(True)
    labels, scores = _labels_scores(12, 4, seed=71)
    p, t = EXAMPLES["boxes"](12, F64, torch.Generator().manual_seed(72))
    p.requires_grad_(True)
    d = 3 * torch.rand(12, dtype=F64)
    w = torch.rand(12, dtype=F64)
    modules = [lf.GHMCLoss(momentum=0.75).double(), lf.GHMRLoss(momentum=0.5).double()]
    with lf.value_checks(False):
        _forbid_host_reads(monkeypatch)
        outs = [
            F.quality_focal_loss(x, labels, score=scores, weight=w, avg_factor=torch.tensor(3.0)),
            F.varifocal_loss(x, _dense(labels, scores, 4)),
            F.distribution_focal_loss(x, d, weight=w),
            F.ghmc_loss(x, labels, weight=w, ignore_index=-1),
            modules[0](x, labels, w),
            modules[1](x, x.detach() * 0.5, w),
            F.iou_loss(p, t),
            F.giou_loss(p, t),
            F.diou_loss(p, t),
            F.ciou_loss(p, t, aspect_min_iou=0.5, weight=torch.ones(12, 4, dtype=F64)),
            F.huber_loss(x, x.detach() * 0.5),
            F.balanced_l1_loss(x, x.detach() * 0.5),
        ]
        torch.stack(outs).sum().backward()
    monkeypatch.undo()
    assert all(torch.isfinite(o) for o in outs)


# --------------------------------------------------------------------------------------------------
# DDP: 2 gloo ranks on CPU reproduce one process on the concatenated batch (loss, gradients and
# the GHM running counts), in one spawn (test_distributed.py's harness, reduced)
# --------------------------------------------------------------------------------------------------

WORLD = 2
SHARDS = ((0, 7), (7, 16))  # uneven
STEPS = 3


def _ddp_batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    labels = torch.randint(0, 4, (16,), generator=g)
    labels[:3] = -1  # ignored rows, all on rank 0
    return {
        "feats": torch.randn(16, 4, generator=g, dtype=F64),
        "labels": labels,
        "scores": torch.rand(16, generator=g, dtype=F64),
        "reg_target": 0.05 * torch.randn(16, 4, generator=g, dtype=F64),
        "weight": (torch.rand(16, 4, generator=g) > 0.25).to(F64),
    }


def _ddp_losses() -> dict[str, Callable[..., torch.Tensor]]:
    return {
        "ghmc_module": lambda: lf.GHMCLoss(bins=5, momentum=0.75, ignore_index=-1).double(),
        "ghmr_module": lambda: lf.GHMRLoss(bins=4, momentum=0.5).double(),
    }


def _ddp_step(name: str, module: Any, b: dict[str, torch.Tensor], w: torch.Tensor):
    out = b["feats"] @ w  # the shared "parameter"
    if name == "ghmc_module":
        return module(out, b["labels"])
    if name == "ghmr_module":
        return module(out, b["reg_target"], b["weight"])
    if name == "ghmc_functional":
        return F.ghmc_loss(out, b["labels"], bins=7, ignore_index=-1)
    if name == "qfl_avg_factor":
        num_pos = (b["labels"] >= 0).sum()
        return F.quality_focal_loss(
            out, b["labels"], score=b["scores"], ignore_index=-1, avg_factor=num_pos
        )
    if name == "giou_mean":
        base = torch.tensor([0.0, 0.0, 2.0, 2.0], dtype=F64)
        return F.giou_loss(base + 0.1 * out, base + b["reg_target"], weight=b["weight"])
    raise KeyError(name)


DDP_CASES = ["ghmc_module", "ghmr_module", "ghmc_functional", "qfl_avg_factor", "giou_mean"]


def _ddp_run(rank: int | None) -> dict[str, Any]:
    """Every case for STEPS steps on one rank's shard (rank None: the whole batch)."""
    results: dict[str, Any] = {}
    factories = _ddp_losses()
    for name in DDP_CASES:
        module = factories[name]() if name in factories else None
        w = (torch.eye(4, dtype=F64) + 0.1 * torch.ones(4, 4, dtype=F64)).requires_grad_(True)
        losses, grads, states = [], [], []
        for step in range(STEPS):
            b = _ddp_batch(step)
            if rank is not None:
                lo, hi = SHARDS[rank]
                b = {k: v[lo:hi] for k, v in b.items()}
            w.grad = None
            if rank is None:
                loss = _ddp_step(name, module, b, w)
            else:
                with global_normalization():
                    loss = _ddp_step(name, module, b, w)
            loss.backward()
            losses.append(loss.detach())
            grads.append(w.grad.detach().clone())
            states.append(None if module is None else module.acc_sum.detach().clone())
        results[name] = {"loss": losses, "grad": grads, "state": states}
    return results


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        try:
            res: dict[str, Any] = _ddp_run(rank)
        except Exception:
            res = {"error": traceback.format_exc()}
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ddp_detection")
    out = tmp / "out"
    out.mkdir()
    ctx = mp.spawn(_ddp_worker, args=(WORLD, str(tmp / "pg"), str(out)), nprocs=WORLD, join=False)
    deadline = time.perf_counter() + 120
    while not ctx.join(timeout=1.0):
        if time.perf_counter() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail("DDP workers did not finish in 120 s")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in ranks:
        if "error" in r:
            pytest.fail(r["error"])
    return ranks


@functools.cache
def _single_process() -> dict[str, Any]:
    return _ddp_run(None)


@pytest.mark.parametrize("name", DDP_CASES)
def test_ddp_ranks_equal_one_process(name: str, ddp_results: list[dict[str, Any]]) -> None:
    single = _single_process()[name]
    for step in range(STEPS):
        loss = torch.stack([r[name]["loss"][step] for r in ddp_results]).mean()
        grad = torch.stack([r[name]["grad"][step] for r in ddp_results]).mean(0)
        torch.testing.assert_close(loss, single["loss"][step], rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, single["grad"][step], rtol=0, atol=1e-12)
        if single["state"][step] is not None:
            for r in ddp_results:  # identical running counts on every rank, = one process
                torch.testing.assert_close(
                    r[name]["state"][step], single["state"][step], rtol=0, atol=0
                )


def test_ddp_outside_the_scope_ranks_keep_their_own_histogram() -> None:
    """Without global_normalization() and without a process group the rank-local histogram is
    used: the shard's loss differs from its share of the whole batch's (what the scope fixes)."""
    b = _ddp_batch(0)
    w = torch.eye(4, dtype=F64)
    lo, hi = SHARDS[1]
    whole = F.ghmc_loss(b["feats"] @ w, b["labels"], bins=7, ignore_index=-1, reduction="none")
    part = F.ghmc_loss(
        b["feats"][lo:hi] @ w, b["labels"][lo:hi], bins=7, ignore_index=-1, reduction="none"
    )
    assert not torch.allclose(whole[lo:hi], part)
    assert math.isfinite(float(part.sum()))


def test_one_channel_index_targets_take_index_target() -> None:
    """A one-logit head with integer labels (0 = the class, 1 = background): the loss's error
    tells the user to pass index_target=True, which QFL, VFL, GHM-C and Poly-1 focal refused
    (TypeError). With it each equals its dense form, the (N, 1) mask (times the score)."""
    import lossforge.nn as N

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 1, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    mask = (labels == 0).to(torch.float64).unsqueeze(1)
    score = torch.rand(6, generator=gen, dtype=torch.float64)
    cases = [
        (F.quality_focal_loss, {"score": score}, mask * score.unsqueeze(1), {}),
        (F.varifocal_loss, {"score": score}, mask * score.unsqueeze(1), {}),
        (F.ghmc_loss, {"bins": 3}, mask, {"bins": 3}),
        (F.poly1_focal_loss, {}, mask, {}),
    ]
    for fn, kw, dense, dense_kw in cases:
        with pytest.raises(ValueError, match="index_target=True"):
            fn(x, labels, **kw)
        torch.testing.assert_close(fn(x, labels, index_target=True, **kw), fn(x, dense, **dense_kw))
    torch.testing.assert_close(
        F.ghmc_histogram(x, labels, index_target=True, bins=3), F.ghmc_histogram(x, mask, bins=3)
    )
    module = N.GHMCLoss(index_target=True, bins=3, momentum=0.5).train()
    reference = N.GHMCLoss(bins=3, momentum=0.5).train()
    torch.testing.assert_close(module(x, labels), reference(x, mask))
    assert torch.equal(module.acc_sum, reference.acc_sum)
    assert N.Poly1FocalLoss(index_target=True)(x, labels) == F.poly1_focal_loss(x, mask)
