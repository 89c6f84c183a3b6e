"""Cross-entropy, NLL, BCE, BCE with logits and the long-tail softmax losses: float64 references,
PyTorch parity, worked numbers, identities, edge cases and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import classification as ref

import lossforge as lf
import lossforge.functional as F

F64 = torch.float64
LOW = [torch.float32, torch.float16, torch.bfloat16]
CW4 = [0.5, 2.0, 1.0, 0.25]
COUNTS4 = [40.0, 10.0, 2.0, 0.0]


# ------------------------------------------------------------------------------------------------
# Input makers for the contract suite
# ------------------------------------------------------------------------------------------------


def _index(n: int, dtype: torch.dtype, g: torch.Generator, c: int = 4, ignore: int | None = None):
    x = torch.randn(n, c, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    if ignore is not None and n > 1:
        y[1::3] = ignore  # some, never all, rows ignored
    return x, y


def _index_ignored(n, dtype, g):
    return _index(n, dtype, g, ignore=-100)


def _spatial(n, dtype, g):
    x = torch.randn(n, 3, 2, 3, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 3, (n, 2, 3), generator=g)
    if n > 0:
        y[0, 0, 1] = 255
    return x, y


def _probs(n, dtype, g):
    x = torch.randn(n, 4, generator=g, dtype=F64).to(dtype)
    t = torch.softmax(torch.randn(n, 4, generator=g, dtype=F64), dim=1).to(dtype)
    return x, t


def _log_probs(n, dtype, g):
    x, y = _index(n, dtype, g, ignore=-100)
    return torch.log_softmax(x.double(), dim=1).to(dtype), y


def _bce_probs(n, dtype, g):
    p = (0.05 + 0.9 * torch.rand(n, 3, generator=g, dtype=F64)).to(dtype)
    y = torch.rand(n, 3, generator=g, dtype=F64).to(dtype)
    return p, y


def _bce_dense(n, dtype, g):
    x = torch.randn(n, 3, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 2, (n, 3), generator=g).to(dtype)
    return x, y


def _bce_index(n, dtype, g):
    x = torch.randn(n, 3, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 4, (n,), generator=g)  # 3 = background
    if n > 1:
        y[1] = -1
    return x, y


def _bce_spatial_dense(n, dtype, g):
    x = torch.randn(n, 2, 3, 3, generator=g, dtype=F64).to(dtype)
    y = torch.rand(n, 2, 3, 3, generator=g, dtype=F64).to(dtype)
    return x, y


CASES = [
    LossCase("ce", F.cross_entropy, lf.CrossEntropyLoss, {}, _index, elementwise=False),
    LossCase(
        "ce_ignore",
        F.cross_entropy,
        lf.CrossEntropyLoss,
        {},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "ce_class_weight",
        F.cross_entropy,
        lf.CrossEntropyLoss,
        {"class_weight": CW4},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "ce_smoothing",
        F.cross_entropy,
        lf.CrossEntropyLoss,
        {"label_smoothing": 0.2},
        _index,
        elementwise=False,
    ),
    LossCase(
        "ce_weight_smooth_ignore",
        F.cross_entropy,
        lf.CrossEntropyLoss,
        {"class_weight": CW4, "label_smoothing": 0.1},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "ce_spatial",
        F.cross_entropy,
        lf.CrossEntropyLoss,
        {"ignore_index": 255, "label_smoothing": 0.05},
        _spatial,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase("ce_probs", F.cross_entropy, lf.CrossEntropyLoss, {}, _probs, elementwise=False),
    LossCase(
        "ce_probs_weight_smooth",
        F.cross_entropy,
        lf.CrossEntropyLoss,
        {"class_weight": CW4, "label_smoothing": 0.3},
        _probs,
        elementwise=False,
    ),
    LossCase(
        "nll",
        F.nll_loss,
        lf.NLLLoss,
        {"class_weight": CW4},
        _log_probs,
        elementwise=False,
        mean_is_count=False,
        extreme=False,
    ),
    LossCase(
        "bce", F.binary_cross_entropy, lf.BinaryCrossEntropyLoss, {}, _bce_probs, extreme=False
    ),
    LossCase(
        "bce_logits",
        F.binary_cross_entropy_with_logits,
        lf.BinaryCrossEntropyWithLogitsLoss,
        {},
        _bce_dense,
    ),
    LossCase(
        "bce_logits_pos_weight_smooth",
        F.binary_cross_entropy_with_logits,
        lf.BinaryCrossEntropyWithLogitsLoss,
        {"pos_weight": [3.0, 0.5, 1.0], "label_smoothing": 0.1},
        _bce_dense,
    ),
    LossCase(
        "bce_logits_index",
        F.binary_cross_entropy_with_logits,
        lf.BinaryCrossEntropyWithLogitsLoss,
        {"ignore_index": -1},
        _bce_index,
        mean_is_count=False,
    ),
    LossCase(
        "bce_logits_spatial_soft",
        F.binary_cross_entropy_with_logits,
        lf.BinaryCrossEntropyWithLogitsLoss,
        {"pos_weight": torch.tensor([[[2.0]], [[0.5]]], dtype=F64)},
        _bce_spatial_dense,
    ),
    LossCase(
        "balanced_softmax",
        F.balanced_softmax_loss,
        lf.BalancedSoftmaxLoss,
        {"class_counts": COUNTS4},
        _index,
        elementwise=False,
    ),
    LossCase(
        "balanced_softmax_opts",
        F.balanced_softmax_loss,
        lf.BalancedSoftmaxLoss,
        {"class_counts": COUNTS4, "class_weight": CW4, "label_smoothing": 0.1},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "logit_adjusted",
        F.logit_adjusted_loss,
        lf.LogitAdjustedLoss,
        {"class_counts": COUNTS4, "tau": 1.5},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "logit_adjusted_priors_probs",
        F.logit_adjusted_loss,
        lf.LogitAdjustedLoss,
        {"priors": [0.5, 0.25, 0.125, 0.125], "tau": 0.5},
        _probs,
        elementwise=False,
    ),
]
globals().update(contract_test_suite(CASES))


# ------------------------------------------------------------------------------------------------
# Reference and PyTorch parity
# ------------------------------------------------------------------------------------------------

# (logits shape, index-target shape)
CE_SHAPES = [
    ((5,), ()),  # unbatched
    ((7, 3), (7,)),
    ((2, 3, 4, 5), (2, 4, 5)),
    ((2, 3, 2, 1, 2, 3), (2, 2, 1, 2, 3)),  # 6-d
    ((0, 4), (0,)),  # empty
    ((3, 5, 1), (3, 1)),
]


def _expected_vs_torch_ok(reduction: str, n_valid: int) -> bool:
    """Torch gives NaN for a mean over nothing; ours is 0 (documented)."""
    return reduction != "mean" or n_valid > 0


@pytest.mark.parametrize(
    ("shape", "tshape"), CE_SHAPES, ids=lambda s: "x".join(map(str, s)) or "scalar"
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_matches_torch_and_reference(shape, tshape, reduction) -> None:
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    c = shape[1] if len(shape) >= 2 else shape[0]
    x = torch.randn(shape, generator=g, dtype=F64) * 2
    y = torch.randint(0, c, tshape, generator=g)
    cw = torch.rand(c, generator=g, dtype=F64) + 0.1
    y_ign = y.clone()
    if y_ign.numel() > 1:
        y_ign.view(-1)[::2] = -100
    y_ign1 = y.clone()  # ignore a valid class (it stays in the softmax denominator)
    options = [
        ({}, y),
        ({"class_weight": cw}, y),
        ({"ignore_index": -100}, y_ign),
        ({"ignore_index": 1}, y_ign1),
        ({"label_smoothing": 0.15}, y),
        ({"label_smoothing": 0.15, "class_weight": cw, "ignore_index": -100}, y_ign),
        ({"label_smoothing": 0.15, "ignore_index": 1}, y_ign1),
        ({"label_smoothing": 1.0, "class_weight": cw}, y),
    ]
    for kw, tgt in options:
        got = F.cross_entropy(x, tgt, reduction=reduction, **kw)
        ignore = kw.get("ignore_index", -100)
        n_valid = int((tgt != ignore).sum())
        torch_kw = {("weight" if k == "class_weight" else k): v for k, v in kw.items()}
        if _expected_vs_torch_ok(reduction, n_valid):
            assert_close(got, TF.cross_entropy(x, tgt, reduction=reduction, **torch_kw), F64)
        r_kw = dict(kw)
        if "class_weight" in r_kw:
            r_kw["class_weight"] = cw.tolist()
        assert_close(got, ref.cross_entropy(x, tgt, reduction=reduction, **r_kw), F64)
        assert got.shape == (tgt.shape if reduction == "none" else ())

    # probability targets, incl. class weights and smoothing (no ignore_index with probabilities)
    t = torch.softmax(torch.randn(shape, generator=g, dtype=F64), dim=1 if len(shape) > 1 else 0)
    for kw in (
        {},
        {"class_weight": cw},
        {"label_smoothing": 0.25},
        {"label_smoothing": 0.25, "class_weight": cw},
    ):
        got = F.cross_entropy(x, t, reduction=reduction, **kw)
        torch_kw = {("weight" if k == "class_weight" else k): v for k, v in kw.items()}
        if _expected_vs_torch_ok(reduction, t.numel()):
            assert_close(got, TF.cross_entropy(x, t, reduction=reduction, **torch_kw), F64)
        r_kw = dict(kw)
        if "class_weight" in r_kw:
            r_kw["class_weight"] = cw.tolist()
        assert_close(got, ref.cross_entropy(x, t, reduction=reduction, **r_kw), F64)


@pytest.mark.parametrize(("shape", "tshape"), CE_SHAPES[:4], ids=["unbatched", "2d", "4d", "6d"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nll_loss_matches_torch_and_reference(shape, tshape, reduction) -> None:
    g = torch.Generator().manual_seed(7)
    c = shape[1] if len(shape) >= 2 else shape[0]
    lp = torch.log_softmax(
        torch.randn(shape, generator=g, dtype=F64), dim=1 if len(shape) > 1 else 0
    )
    y = torch.randint(0, c, tshape, generator=g)
    if y.numel() > 2:
        y.view(-1)[::3] = -100
    cw = torch.rand(c, generator=g, dtype=F64) + 0.1
    for kw in ({}, {"class_weight": cw}):
        got = F.nll_loss(lp, y, reduction=reduction, **kw)
        torch_kw = {("weight" if k == "class_weight" else k): v for k, v in kw.items()}
        assert_close(got, TF.nll_loss(lp, y, reduction=reduction, **torch_kw), F64)
        r_kw = {"class_weight": cw.tolist()} if kw else {}
        assert_close(got, ref.nll_loss(lp, y, reduction=reduction, **r_kw), F64)
    x = torch.randn(shape, generator=g, dtype=F64)
    assert_close(
        F.nll_loss(torch.log_softmax(x, dim=1 if len(shape) > 1 else 0), y, reduction=reduction),
        F.cross_entropy(x, y, reduction=reduction),
        F64,
    )


@pytest.mark.parametrize("shape", [(7,), (4, 3), (2, 3, 4, 5), (0, 3), (3, 1, 5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_binary_cross_entropy_matches_torch_and_reference(shape, reduction) -> None:
    g = torch.Generator().manual_seed(3)
    p = torch.rand(shape, generator=g, dtype=F64)
    if p.numel() >= 3:
        p.view(-1)[0], p.view(-1)[1] = 0.0, 1.0  # the -100 clamp
    y = torch.rand(shape, generator=g, dtype=F64)
    w = torch.rand(shape, generator=g, dtype=F64)
    got = F.binary_cross_entropy(p, y, reduction=reduction)
    if _expected_vs_torch_ok(reduction, p.numel()):
        assert_close(got, TF.binary_cross_entropy(p, y, reduction=reduction), F64)
        assert_close(
            F.binary_cross_entropy(p, y, weight=w, reduction=reduction),
            TF.binary_cross_entropy(p, y, weight=w, reduction=reduction),
            F64,
        )
    assert_close(got, ref.binary_cross_entropy(p, y, reduction=reduction), F64)


@pytest.mark.parametrize("shape", [(7,), (4, 3), (2, 3, 4, 5), (0, 3), (3, 5, 1, 2)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_dense_matches_torch_and_reference(shape, reduction) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g, dtype=F64) * 3
    y = torch.rand(shape, generator=g, dtype=F64)
    pw = torch.rand(shape[-1:], generator=g, dtype=F64) * 3  # torch: lines up with the last dim
    for kw in (
        {},
        {"pos_weight": pw},
        {"label_smoothing": 0.2},
        {"pos_weight": pw, "label_smoothing": 0.2},
    ):
        got = F.binary_cross_entropy_with_logits(x, y, reduction=reduction, **kw)
        eps = kw.get("label_smoothing", 0.0)
        y_s = y * (1 - eps) + eps / 2
        if _expected_vs_torch_ok(reduction, x.numel()):
            expected = TF.binary_cross_entropy_with_logits(
                x, y_s, pos_weight=kw.get("pos_weight"), reduction=reduction
            )
            assert_close(got, expected, F64)
        assert_close(
            got,
            ref.binary_cross_entropy_with_logits(
                x, y, pos_weight=kw.get("pos_weight"), label_smoothing=eps, reduction=reduction
            ),
            F64,
        )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_index_targets_match_reference(reduction) -> None:
    g = torch.Generator().manual_seed(5)
    for shape in ((6, 4), (3, 4, 2, 3), (4,)):
        x = torch.randn(shape, generator=g, dtype=F64)
        c = shape[1] if len(shape) > 1 else shape[0]
        tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
        y = torch.randint(0, c + 1, tshape, generator=g)  # c = background
        if y.numel() > 1:
            y.view(-1)[0] = 255
            y.view(-1)[-1] = c
        cdim = 1 if len(shape) > 1 else 0
        classes = torch.arange(c).view([c if d == cdim else 1 for d in range(len(shape))])
        dense = (y.unsqueeze(cdim) == classes).double().expand(shape)
        valid = (y != 255).unsqueeze(cdim).expand(shape)
        pw = torch.tensor([2.0, 1.0, 0.5, 3.0], dtype=F64).view(
            [c if d == cdim else 1 for d in range(len(shape))]
        )
        for eps in (0.0, 0.1):
            got = F.binary_cross_entropy_with_logits(
                x, y, ignore_index=255, pos_weight=pw, label_smoothing=eps, reduction=reduction
            )
            expected = ref.binary_cross_entropy_with_logits(
                x, dense, pos_weight=pw, valid=valid, label_smoothing=eps, reduction=reduction
            )
            assert_close(got, expected, F64)
            # index targets == the same dense one-hot targets with the ignored rows dropped
            keep = valid.all(dim=cdim) if len(shape) > 1 else valid.all()
            if reduction == "sum" and len(shape) == 2:
                dense_sum = F.binary_cross_entropy_with_logits(
                    x[keep], dense[keep], pos_weight=pw, label_smoothing=eps, reduction="sum"
                )
                assert_close(got, dense_sum, F64)


def test_bce_with_logits_dense_ignore_index() -> None:
    x = torch.randn(5, 3, dtype=F64)
    y = torch.randint(0, 2, (5, 3)).double()
    y[0, 1] = -1
    y[3, 2] = -1
    got = F.binary_cross_entropy_with_logits(x, y, ignore_index=-1)
    valid = y != -1
    expected = TF.binary_cross_entropy_with_logits(x[valid], y[valid])
    assert_close(got, expected, F64)
    none = F.binary_cross_entropy_with_logits(x, y, ignore_index=-1, reduction="none")
    assert none[0, 1] == 0 and none[3, 2] == 0


# ------------------------------------------------------------------------------------------------
# Worked numbers
# ------------------------------------------------------------------------------------------------

CE_X = [[0.2, 0.3, 0.4], [-0.02, -0.13, 0.2], [0.5, -0.3, 0.73]]


def test_worked_bce_example() -> None:
    p = torch.tensor([[0.5, 0.1], [0.3, 0.2]])
    y = torch.tensor([[0, 0], [1, 0]])
    got = F.binary_cross_entropy(p, y, reduction="none")
    torch.testing.assert_close(
        got, torch.tensor([[0.6931, 0.1054], [1.2040, 0.2231]]), atol=1e-4, rtol=0
    )
    assert got.dtype == torch.float32
    assert abs(F.binary_cross_entropy(p, y).item() - (0.6931 + 0.1054 + 1.2040 + 0.2231) / 4) < 1e-4


def test_worked_cross_entropy_example() -> None:
    x = torch.tensor(CE_X)
    y = torch.tensor([0, 2, 1])
    assert abs(F.cross_entropy(x, y).item() - 1.3077) < 5e-5
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert abs(F.cross_entropy(x, onehot).item() - 1.3077) < 5e-5
    assert abs(lf.CrossEntropyLoss()(x, y).item() - 1.3077) < 5e-5


# ------------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------------


def test_zero_label_smoothing_is_plain_cross_entropy_with_grads() -> None:
    x = torch.randn(6, 5, dtype=F64, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    a = F.cross_entropy(x, y, label_smoothing=0.0, class_weight=CW4 + [1.0])
    b = F.cross_entropy(x, y, class_weight=CW4 + [1.0])
    (ga,) = torch.autograd.grad(a, x)
    (gb,) = torch.autograd.grad(b, x)
    assert a.item() == b.item()
    assert torch.equal(ga, gb)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"class_weight": CW4},
        {"label_smoothing": 0.2},
        {"class_weight": CW4, "label_smoothing": 0.2},
    ],
)
@pytest.mark.parametrize("fn", [F.cross_entropy, F.balanced_softmax_loss])
def test_ignoring_rows_equals_dropping_them(kw, fn) -> None:
    if fn is F.balanced_softmax_loss:
        kw = {**kw, "class_counts": COUNTS4}
    g = torch.Generator().manual_seed(11)
    x = torch.randn(9, 4, dtype=F64, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (9,), generator=g)
    drop = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    y_ign = torch.where(drop, torch.full_like(y, 7), y)
    for reduction in ("mean", "sum"):
        a = fn(x, y_ign, ignore_index=7, reduction=reduction, **kw)
        b = fn(x[~drop], y[~drop], reduction=reduction, **kw)
        assert_close(a, b, F64)
        (ga,) = torch.autograd.grad(a, x)
        assert torch.all(ga[drop] == 0)
    # spatial: ignored pixels == dropping them
    xs = torch.randn(2, 4, 3, 3, dtype=F64, generator=g)
    ys = torch.randint(0, 4, (2, 3, 3), generator=g)
    mask = torch.rand(2, 3, 3, generator=g) < 0.4
    flat_x = xs.movedim(1, -1)[~mask]
    a = fn(xs, torch.where(mask, torch.full_like(ys, -100), ys), **kw)
    assert_close(a, fn(flat_x, ys[~mask], **kw), F64)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_one_hot_probability_targets_equal_index_targets(eps) -> None:
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 4, 3, 2, dtype=F64, generator=g)
    y = torch.randint(0, 4, (2, 3, 2), generator=g)
    onehot = TF.one_hot(y, 4).movedim(-1, 1).double()
    for reduction in ("none", "mean", "sum"):
        assert_close(
            F.cross_entropy(x, onehot, label_smoothing=eps, reduction=reduction),
            F.cross_entropy(x, y, label_smoothing=eps, reduction=reduction),
            F64,
        )
    # with class weights the unreduced losses and sums agree; only the mean denominators differ
    for reduction in ("none", "sum"):
        assert_close(
            F.cross_entropy(x, onehot, class_weight=CW4, label_smoothing=eps, reduction=reduction),
            F.cross_entropy(x, y, class_weight=CW4, label_smoothing=eps, reduction=reduction),
            F64,
        )
    s = F.cross_entropy(x, y, class_weight=CW4, label_smoothing=eps, reduction="sum")
    cw = torch.tensor(CW4, dtype=F64)
    assert_close(F.cross_entropy(x, y, class_weight=CW4, label_smoothing=eps), s / cw[y].sum(), F64)
    assert_close(
        F.cross_entropy(x, onehot, class_weight=CW4, label_smoothing=eps), s / y.numel(), F64
    )


def test_bce_symmetry() -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(5, 3, dtype=F64, generator=g) * 4
    y = torch.rand(5, 3, dtype=F64, generator=g)
    for eps in (0.0, 0.2):
        assert_close(
            F.binary_cross_entropy_with_logits(x, y, label_smoothing=eps, reduction="none"),
            F.binary_cross_entropy_with_logits(-x, 1 - y, label_smoothing=eps, reduction="none"),
            F64,
        )
    p = torch.sigmoid(x)
    assert_close(
        F.binary_cross_entropy(p, y, reduction="none"),
        F.binary_cross_entropy(1 - p, 1 - y, reduction="none"),
        F64,
    )
    assert_close(
        F.binary_cross_entropy(p, y), F.binary_cross_entropy_with_logits(x, y), F64, rtol=1e-6
    )


def test_long_tail_reductions_to_cross_entropy() -> None:
    g = torch.Generator().manual_seed(14)
    x = torch.randn(6, 4, 2, dtype=F64, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (6, 2), generator=g)
    y[0, 0] = -100
    kw = {"class_weight": CW4, "label_smoothing": 0.1}
    ce = F.cross_entropy(x, y, **kw)
    (g_ce,) = torch.autograd.grad(ce, x)
    for other in (
        F.balanced_softmax_loss(x, y, class_counts=[7.0] * 4, **kw),
        F.logit_adjusted_loss(x, y, class_counts=COUNTS4, tau=0.0, **kw),
        F.logit_adjusted_loss(x, y, priors=[0.25] * 4, tau=2.0, **kw),
    ):
        assert_close(other, ce, F64)
        (g_o,) = torch.autograd.grad(other, x)
        assert_close(g_o, g_ce, F64)
    # balanced softmax == logit adjustment with tau = 1; scaling the counts changes nothing
    counts = [30.0, 5.0, 1.0, 12.0]
    bal = F.balanced_softmax_loss(x, y, class_counts=counts, reduction="none")
    assert_close(bal, F.logit_adjusted_loss(x, y, class_counts=counts, reduction="none"), F64)
    assert_close(
        bal, F.logit_adjusted_loss(x, y, priors=[c / 48 for c in counts], reduction="none"), F64
    )
    assert_close(
        bal,
        F.balanced_softmax_loss(x, y, class_counts=[3 * c for c in counts], reduction="none"),
        F64,
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_long_tail_losses_match_reference(reduction) -> None:
    g = torch.Generator().manual_seed(15)
    x = torch.randn(7, 4, dtype=F64, generator=g)
    y = torch.randint(0, 4, (7,), generator=g)
    y[2] = 3  # a zero-count class as target: finite
    y[4] = -100
    for tau in (0.5, 1.0, 2.0):
        lp = ref.log_prior(COUNTS4, tau)
        for kw in ({}, {"class_weight": CW4, "label_smoothing": 0.2}):
            got = F.logit_adjusted_loss(
                x, y, class_counts=COUNTS4, tau=tau, reduction=reduction, **kw
            )
            expected = ref.cross_entropy(x, y, log_prior=lp, reduction=reduction, **kw)
            assert_close(got, expected, F64)
            assert torch.isfinite(got).all()
            # as PyTorch's CE on the adjusted logits
            adj = x + torch.tensor(lp, dtype=F64)
            torch_kw = (
                {"weight": torch.tensor(CW4, dtype=F64), "label_smoothing": 0.2} if kw else {}
            )
            assert_close(got, TF.cross_entropy(adj, y, reduction=reduction, **torch_kw), F64)
    got = F.balanced_softmax_loss(x, y, class_counts=COUNTS4, reduction=reduction)
    assert_close(
        got, ref.cross_entropy(x, y, log_prior=ref.log_prior(COUNTS4), reduction=reduction), F64
    )


@given(st.floats(-1e4, 1e4), st.integers(0, 1000), st.floats(0.0, 1.0))
def test_property_cross_entropy_shift_invariance(c: float, seed: int, eps: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, dtype=F64, generator=g)
    y = torch.randint(0, 5, (4,), generator=g)
    t = torch.softmax(torch.randn(4, 5, dtype=F64, generator=g), dim=1)
    for tgt in (y, t):
        a = F.cross_entropy(x, tgt, label_smoothing=eps, reduction="none")
        b = F.cross_entropy(x + c, tgt, label_smoothing=eps, reduction="none")
        assert_close(a, b, F64, rtol=1e-9, atol=1e-9)
    # float32: the shift moves the logits by rounding only; no overflow anywhere
    a32 = F.cross_entropy(x.float() + c, y)
    assert torch.isfinite(a32)
    assert abs(a32.item() - F.cross_entropy(x, y).item()) < 2e-3 * max(1.0, abs(c) / 1e3)


# ------------------------------------------------------------------------------------------------
# Edge cases (RELIABILITY.md section 3), fp32 / fp16 / bf16
# ------------------------------------------------------------------------------------------------


def _zero_with_zero_grad(loss: torch.Tensor, x: torch.Tensor) -> None:
    assert loss.ndim == 0 and loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.dtype == x.dtype and torch.all(grad == 0)


@pytest.mark.parametrize("dtype", LOW)
def test_all_ignored_and_zero_class_weights_give_zero(dtype) -> None:
    x = torch.randn(4, 3, 2).to(dtype).requires_grad_(True)
    ign = torch.full((4, 2), -100)
    for kw in (
        {},
        {"class_weight": [1.0, 2.0, 3.0]},
        {"label_smoothing": 0.3},
        {"class_weight": [1.0, 2.0, 3.0], "label_smoothing": 0.3},
    ):
        _zero_with_zero_grad(F.cross_entropy(x, ign, **kw), x)
        _zero_with_zero_grad(F.balanced_softmax_loss(x, ign, class_counts=[1, 2, 3], **kw), x)
        _zero_with_zero_grad(F.logit_adjusted_loss(x, ign, class_counts=[1, 2, 3], **kw), x)
    _zero_with_zero_grad(F.nll_loss(x, ign), x)
    # class weights that are zero for every valid target: 0 (torch: NaN), also with smoothing
    only0 = torch.zeros((4, 2), dtype=torch.long)
    _zero_with_zero_grad(F.cross_entropy(x, only0, class_weight=[0.0, 0.0, 0.0]), x)
    _zero_with_zero_grad(
        F.cross_entropy(x, only0, class_weight=[0.0, 1.0, 1.0], label_smoothing=0.2), x
    )
    # sigmoid losses: every row ignored / every dense element ignored
    xb = torch.randn(4, 3).to(dtype).requires_grad_(True)
    _zero_with_zero_grad(
        F.binary_cross_entropy_with_logits(xb, torch.full((4,), -1), ignore_index=-1), xb
    )
    _zero_with_zero_grad(
        F.binary_cross_entropy_with_logits(xb, torch.full((4, 3), 255.0), ignore_index=255), xb
    )
    pb = torch.rand(4, 3).to(dtype).requires_grad_(True)
    _zero_with_zero_grad(F.binary_cross_entropy(pb, torch.full((4, 3), -1.0), ignore_index=-1), pb)
    # empty batches
    e = torch.randn(0, 3).to(dtype).requires_grad_(True)
    _zero_with_zero_grad(
        F.cross_entropy(e, torch.zeros(0, dtype=torch.long), class_weight=[1.0, 2.0, 3.0]), e
    )
    _zero_with_zero_grad(F.binary_cross_entropy_with_logits(e, torch.zeros(0, 3)), e)


@pytest.mark.parametrize("dtype", LOW)
def test_extreme_logits_finite_in_low_precision(dtype) -> None:
    x = (torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])).to(dtype).requires_grad_(True)
    y = torch.tensor([1, 0])
    for loss in (
        F.cross_entropy(x, y, label_smoothing=0.1, class_weight=[1.0, 2.0, 0.5]),
        F.logit_adjusted_loss(x, y, class_counts=[5, 0, 1], tau=2.0),
        F.binary_cross_entropy_with_logits(
            x, torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), pos_weight=[2, 1, 1]
        ),
        F.binary_cross_entropy_with_logits(x, torch.tensor([3, 0]), label_smoothing=0.1),
    ):
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert abs(loss.item()) > 1e3  # ~ 1e4 * margin, not a clamped value
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(grad).all()
    p = torch.tensor([0.0, 1.0, 0.5]).to(dtype).requires_grad_(True)
    loss = F.binary_cross_entropy(p, torch.tensor([1.0, 0.0, 1.0]), reduction="none")
    assert torch.allclose(loss[:2], torch.tensor([100.0, 100.0]))
    (grad,) = torch.autograd.grad(loss.sum(), p)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", LOW)
def test_half_inputs_computed_in_float32(dtype) -> None:
    g = torch.Generator().manual_seed(16)
    x = torch.randn(6, 5, generator=g).to(dtype)
    y = torch.randint(0, 5, (6,), generator=g)
    got = F.cross_entropy(x, y, label_smoothing=0.1, class_weight=[1, 2, 3, 4, 5])
    assert got.dtype == torch.float32
    expected = ref.cross_entropy(x.double(), y, label_smoothing=0.1, class_weight=[1, 2, 3, 4, 5])
    assert_close(got, expected, torch.float32, rtol=1e-5, atol=1e-5)


def test_out_of_range_class_raises_naming_min_and_max() -> None:
    x = torch.randn(3, 3)
    with pytest.raises(
        ValueError,
        match=r"cross_entropy: expected `target` class indices in \[0, 2\].*got values in \[0, 5\]",
    ):
        F.cross_entropy(x, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        F.cross_entropy(x, torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"nll_loss.*\[0, 3\]"):
        F.nll_loss(x, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"balanced_softmax_loss.*target"):
        F.balanced_softmax_loss(x, torch.tensor([0, 3, 1]), class_counts=[1, 1, 1])
    with pytest.raises(
        ValueError, match=r"binary_cross_entropy_with_logits.*\[0, 3\] \(C = background\)"
    ):
        F.binary_cross_entropy_with_logits(x, torch.tensor([0, 4, 1]))


@pytest.mark.parametrize("dtype", LOW)
def test_value_checks_off_out_of_range_gives_nan(dtype) -> None:
    x = torch.randn(3, 3).to(dtype)
    with lf.value_checks(False):
        none = F.cross_entropy(x, torch.tensor([0, 5, 1]), reduction="none")
        assert torch.isnan(none[1]) and torch.isfinite(none[[0, 2]]).all()
        assert torch.isnan(F.cross_entropy(x, torch.tensor([0, 5, 1])))
        assert torch.isnan(F.cross_entropy(x, torch.tensor([0, -3, 1]), class_weight=[1, 2, 3]))
        assert torch.isnan(F.nll_loss(x, torch.tensor([0, 5, 1])))
        # an ignored target is not "out of range"
        assert torch.isfinite(F.cross_entropy(x, torch.tensor([0, -100, 1])))
        for t in ([255, 7, 1], [255, -100, 1], [0, 3, 255]):  # bad next to ignored positions
            for reduction in ("sum", "mean"):
                leaf = x.detach().clone().requires_grad_(True)
                out = F.cross_entropy(leaf, torch.tensor(t), ignore_index=255, reduction=reduction)
                assert torch.isnan(out), (t, reduction)
                out.backward()
                assert torch.isfinite(leaf.grad).all()
        b = F.binary_cross_entropy_with_logits(x, torch.tensor([0, 9, 3]), reduction="none")
        assert torch.isnan(b[1]).all() and torch.isfinite(b[[0, 2]]).all()
        p = torch.sigmoid(x.float()).to(dtype)
        b = F.binary_cross_entropy(p, torch.tensor([0, 9, 3]), reduction="none")
        assert torch.isnan(b[1]).all() and torch.isfinite(b[[0, 2]]).all()


def test_target_dtypes() -> None:
    x = torch.randn(5, 4)
    y = torch.tensor([0, 3, 2, 1, 3])
    expected = F.cross_entropy(x, y)
    for dt in (torch.int32, torch.uint8, torch.int16, torch.int8):
        assert_close(F.cross_entropy(x, y.to(dt)), expected)
        assert_close(F.nll_loss(x, y.to(dt)), F.nll_loss(x, y))
        assert_close(
            F.binary_cross_entropy_with_logits(x, y.to(dt)),
            F.binary_cross_entropy_with_logits(x, y),
        )
    with pytest.raises(
        TypeError, match=r"cross_entropy: expected `target` an integer tensor of class indices"
    ):
        F.cross_entropy(x, y.float())
    with pytest.raises(TypeError, match="target"):
        F.cross_entropy(x, y.bool())
    with pytest.raises(TypeError, match=r"nll_loss: expected `target` an integer tensor"):
        F.nll_loss(x, TF.one_hot(y, 4).float())
    with pytest.raises(TypeError, match="logits"):
        F.cross_entropy(x.long(), y)
    # bool / integer dense targets for the sigmoid losses are cast
    yb = torch.rand(5, 4) > 0.5
    assert_close(
        F.binary_cross_entropy_with_logits(x, yb),
        TF.binary_cross_entropy_with_logits(x, yb.float()),
    )
    assert_close(
        F.binary_cross_entropy(torch.sigmoid(x), yb.long()),
        TF.binary_cross_entropy(torch.sigmoid(x), yb.float()),
    )


def test_structural_errors() -> None:
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(
        ValueError, match=r"cross_entropy: expected `logits` at least 2 classes.*C=1"
    ):
        F.cross_entropy(torch.randn(4, 1), torch.zeros(4, dtype=torch.long))
    # NLL's input is named as such in the class-axis, shape and device messages
    for log_probs in (torch.zeros(4, 1), torch.zeros(())):
        with pytest.raises(
            ValueError, match=r"nll_loss: expected `log_probs` (at least 2|a tensor)"
        ):
            F.nll_loss(log_probs, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`target` on the device of `log_probs`"):
        F.nll_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="ignore_index"):
        F.cross_entropy(x, torch.softmax(x, 1), ignore_index=0)
    with pytest.raises(
        ValueError, match=r"`class_weight` a 1-d tensor of length C=3, got shape \(4,\)"
    ):
        F.cross_entropy(x, y, class_weight=[1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"`class_weight` non-negative"):
        F.cross_entropy(x, y, class_weight=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`class_weight` non-negative"):
        F.nll_loss(x, y, class_weight=[1.0, -1.0, 1.0])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"`label_smoothing` in \[0, 1\]"):
            F.cross_entropy(x, y, label_smoothing=bad)
        with pytest.raises(ValueError, match="label_smoothing"):
            F.binary_cross_entropy_with_logits(x, y, label_smoothing=bad)
        with pytest.raises(ValueError, match="label_smoothing"):
            lf.CrossEntropyLoss(label_smoothing=bad)
    with pytest.raises(
        ValueError, match=r"binary_cross_entropy: expected `probs` values in \[0, 1\]"
    ):
        F.binary_cross_entropy(torch.tensor([0.2, 1.5]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`probs` values in \[0, 1\]"):
        F.binary_cross_entropy(torch.tensor([-0.1, 0.5]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`target` values in \[0, 1\]"):
        F.binary_cross_entropy_with_logits(x, torch.full((4, 3), 2.0))
    # mismatched shapes name both shapes
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
        F.cross_entropy(x, torch.rand(4, 5))
    with pytest.raises(ValueError, match=r"class indices of shape \(2, 4, 5\).*shape \(2, 4\)"):
        F.cross_entropy(torch.randn(2, 3, 4, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3,\)"):
        F.binary_cross_entropy_with_logits(x, torch.rand(3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 4\)"):
        F.binary_cross_entropy(torch.rand(4, 3), torch.rand(3, 4))
    with pytest.raises(ValueError, match="pos_weight"):
        F.binary_cross_entropy_with_logits(x, torch.rand(4, 3), pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="pos_weight"):
        F.binary_cross_entropy_with_logits(x, torch.rand(4, 3), pos_weight=torch.ones(1, 4, 3))
    with pytest.raises(ValueError, match="pos_weight"):
        F.binary_cross_entropy_with_logits(x, torch.rand(4, 3), pos_weight=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="backend"):
        F.cross_entropy(x, y, backend="cuda")
    with pytest.raises(ValueError, match="triton"):
        F.cross_entropy(x, y, backend="triton")
    assert_close(F.cross_entropy(x, y, backend="auto"), F.cross_entropy(x, y))
    with pytest.raises(TypeError, match="ignore_index"):
        F.cross_entropy(x, y, ignore_index=1.5)


def test_long_tail_argument_errors() -> None:
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(
        ValueError,
        match=r"balanced_softmax_loss: expected `class_counts` a 1-d tensor of length C=3",
    ):
        F.balanced_softmax_loss(x, y, class_counts=[1, 2])
    with pytest.raises(ValueError, match="class_counts.*non-negative"):
        F.balanced_softmax_loss(x, y, class_counts=[1, -2, 3])
    with pytest.raises(ValueError, match="class_counts.*positive"):
        F.balanced_softmax_loss(x, y, class_counts=[0, 0, 0])
    with pytest.raises(ValueError, match="exactly one"):
        F.logit_adjusted_loss(x, y)
    with pytest.raises(ValueError, match="exactly one"):
        F.logit_adjusted_loss(x, y, class_counts=[1, 1, 1], priors=[0.3, 0.3, 0.4])
    with pytest.raises(ValueError, match=r"`tau` in \[0, inf\]"):
        F.logit_adjusted_loss(x, y, class_counts=[1, 1, 1], tau=-1.0)
    with pytest.raises(ValueError, match="exactly one"):
        lf.LogitAdjustedLoss()
    with pytest.raises(ValueError, match="class_counts"):
        lf.BalancedSoftmaxLoss(class_counts=[1.0, -1.0])
    with pytest.raises(ValueError, match="class_weight"):
        lf.CrossEntropyLoss(class_weight=[1.0, -1.0])


def test_zero_count_class_is_finite_and_documented_floor() -> None:
    x = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    loss = F.balanced_softmax_loss(x, torch.tensor([2]), class_counts=[5, 5, 0])
    # log-prior of the empty class is log(1e-12); the others log(0.5)
    expected = -(math.log(1e-12) - math.log(0.5 + 0.5 + 1e-12))
    assert abs(loss.item() - expected) < 1e-9
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------


def test_module_buffers_registry_and_repr() -> None:
    from lossforge.registry import build_loss

    ce = lf.CrossEntropyLoss(class_weight=[1.0, 2.0, 3.0], label_smoothing=0.1, ignore_index=255)
    assert "class_weight" in dict(ce.named_buffers())
    assert ce.class_weight.dtype == torch.float32
    assert "label_smoothing=0.1" in repr(ce) and "[1.0, 2.0, 3.0]" in repr(ce)
    sd = ce.double().state_dict()
    assert sd["class_weight"].dtype == F64
    bce = lf.BinaryCrossEntropyWithLogitsLoss(pos_weight=[2.0, 1.0])
    assert set(dict(bce.named_buffers())) == {"pos_weight"}
    bal = lf.BalancedSoftmaxLoss(class_counts=[3, 1])
    assert "class_counts" in dict(bal.named_buffers())
    la = lf.LogitAdjustedLoss(priors=torch.tensor([0.7, 0.3]), tau=0.5)
    assert la.class_counts is None and la.priors is not None
    names = {
        "cross_entropy": lf.CrossEntropyLoss,
        "nll": lf.NLLLoss,
        "binary_cross_entropy": lf.BinaryCrossEntropyLoss,
        "binary_cross_entropy_with_logits": lf.BinaryCrossEntropyWithLogitsLoss,
        "balanced_softmax": lf.BalancedSoftmaxLoss,
        "logit_adjusted": lf.LogitAdjustedLoss,
    }
    for name, cls in names.items():
        assert cls.registry_name == name
    built = build_loss({"type": "logit_adjusted", "class_counts": [5, 1], "tau": 2.0})
    assert isinstance(built, lf.LogitAdjustedLoss) and built.tau == 2.0
    x = torch.randn(3, 2)
    y = torch.tensor([0, 1, 1])
    assert_close(built(x, y), F.logit_adjusted_loss(x, y, class_counts=[5, 1], tau=2.0))
    assert_close(
        build_loss({"type": "cross_entropy", "label_smoothing": 0.2})(x, y),
        F.cross_entropy(x, y, label_smoothing=0.2),
    )


def test_module_forward_weight_and_avg_factor() -> None:
    x = torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, -100, 2])
    w = torch.rand(5)
    mod = lf.CrossEntropyLoss(class_weight=[1.0, 2.0, 0.5], loss_weight=0.5)
    assert_close(
        mod(x, y, weight=w), 0.5 * F.cross_entropy(x, y, class_weight=[1.0, 2.0, 0.5], weight=w)
    )
    assert_close(
        mod(x, y, avg_factor=7.0),
        0.5 * F.cross_entropy(x, y, class_weight=[1.0, 2.0, 0.5], reduction="sum") / 7,
    )
    none = mod(x, y, reduction_override="none")
    assert none.shape == (5,) and none[3] == 0


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------


@given(st.integers(1, 10), st.integers(2, 6), st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_property_non_negative(n: int, c: int, seed: int, eps: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, dtype=F64, generator=g) * 5
    y = torch.randint(0, c, (n,), generator=g)
    t = torch.softmax(torch.randn(n, c, dtype=F64, generator=g) * 3, dim=1)
    cw = torch.rand(c, dtype=F64, generator=g)
    assert (
        F.cross_entropy(x, y, label_smoothing=eps, class_weight=cw, reduction="none") >= 0
    ).all()
    assert (F.cross_entropy(x, t, label_smoothing=eps, reduction="none") >= 0).all()
    counts = torch.randint(0, 100, (c,), generator=g).double() + 1
    assert (
        F.balanced_softmax_loss(x, y, class_counts=counts, label_smoothing=eps, reduction="none")
        >= 0
    ).all()
    yb = torch.rand(n, c, dtype=F64, generator=g)
    assert (
        F.binary_cross_entropy_with_logits(
            x, yb, label_smoothing=eps, pos_weight=cw, reduction="none"
        )
        >= 0
    ).all()
    assert (F.binary_cross_entropy(torch.sigmoid(x), yb, reduction="none") >= 0).all()


@given(
    st.integers(1, 12),
    st.integers(0, 10_000),
    st.sampled_from(["ce", "ce_soft", "bal", "bce", "bce_idx", "nll"]),
)
def test_property_permutation_invariance_and_split_additivity(
    n: int, seed: int, which: str
) -> None:
    g = torch.Generator().manual_seed(seed)
    c = 4
    x = torch.randn(n, c, 2, dtype=F64, generator=g)
    if which in ("ce", "bal", "nll"):
        y = torch.randint(0, c, (n, 2), generator=g)
        y[torch.rand(n, 2, generator=g) < 0.3] = -100
    elif which == "ce_soft":
        y = torch.softmax(torch.randn(n, c, 2, dtype=F64, generator=g), dim=1)
    elif which == "bce_idx":
        y = torch.randint(0, c + 1, (n, 2), generator=g)
    else:
        y = torch.rand(n, c, 2, dtype=F64, generator=g)
    fns = {
        "ce": lambda a, b, **k: F.cross_entropy(a, b, class_weight=CW4, label_smoothing=0.1, **k),
        "ce_soft": lambda a, b, **k: F.cross_entropy(a, b, class_weight=CW4, **k),
        "bal": lambda a, b, **k: F.balanced_softmax_loss(a, b, class_counts=COUNTS4, **k),
        "nll": lambda a, b, **k: F.nll_loss(a, b, class_weight=CW4, **k),
        "bce": lambda a, b, **k: F.binary_cross_entropy_with_logits(
            a, b, pos_weight=[1.0, 2.0], **k
        ),
        "bce_idx": lambda a, b, **k: F.binary_cross_entropy_with_logits(
            a, b, label_smoothing=0.1, **k
        ),
    }
    fn = fns[which]
    perm = torch.randperm(n, generator=g)
    assert_close(fn(x[perm], y[perm]), fn(x, y), F64)
    k = n // 2
    whole = fn(x, y, reduction="sum")
    parts = fn(x[:k], y[:k], reduction="sum") + fn(x[k:], y[k:], reduction="sum")
    assert_close(whole, parts, F64)


# ------------------------------------------------------------------------------------------------
# Tracing, autocast, determinism
# ------------------------------------------------------------------------------------------------


def test_torch_compile_smoke_eager_backend() -> None:
    # Dynamo tracing with the "eager" backend (~2 s); inductor takes ~20 s on the CI CPU.
    fn = torch.compile(
        lambda a, b: F.cross_entropy(
            a, b, label_smoothing=0.1, class_weight=[1.0, 2.0, 3.0], ignore_index=2
        ),
        fullgraph=False,
        backend="eager",
    )
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    got = fn(x, y)
    (g1,) = torch.autograd.grad(got, x)
    expected = TF.cross_entropy(
        x, y, label_smoothing=0.1, weight=torch.tensor([1.0, 2.0, 3.0]), ignore_index=2
    )
    (g2,) = torch.autograd.grad(expected, x)
    assert_close(got, expected)
    assert_close(g1, g2)


def test_cpu_bf16_autocast_is_finite_and_float32() -> None:
    x = torch.tensor([[1e4, -1e4, 3.0], [0.5, -0.5, 20.0]], requires_grad=True)
    lin = torch.nn.Linear(3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16
        losses = [
            F.cross_entropy(h, torch.tensor([1, 2]), label_smoothing=0.1),
            F.binary_cross_entropy_with_logits(h, torch.tensor([0, 3])),
            F.balanced_softmax_loss(h, torch.tensor([1, 2]), class_counts=[1, 0, 5]),
        ]
    for loss in losses:
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, x, retain_graph=True)
        assert torch.isfinite(grad).all()


def test_deterministic_mode_spatial_cross_entropy() -> None:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        x = torch.randn(2, 3, 4, 4, requires_grad=True)
        y = torch.randint(0, 3, (2, 4, 4))
        a = F.cross_entropy(x, y, class_weight=[1.0, 2.0, 0.5], label_smoothing=0.1)
        a.backward()
        b = F.cross_entropy(x, y, class_weight=[1.0, 2.0, 0.5], label_smoothing=0.1)
        assert a.item() == b.item()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_bce_with_logits_routes_to_the_fused_kernel_when_it_can_serve(monkeypatch) -> None:
    """Dispatch plumbing (no GPU needed): a stand-in kernel module records what it receives."""
    import sys
    import types

    import lossforge._pipeline as pipeline_mod
    import lossforge.kernels
    from lossforge._reduction import divide
    from lossforge.kernels import sigmoid as real

    calls: list[dict] = []

    def fake_loss(logits, target, *, kind, index_target, weight, ignore_index, reduce, denom, **kw):
        calls.append({"target": target, "ignore_index": ignore_index, **kw})
        out = F.binary_cross_entropy_with_logits(
            logits, target, weight=weight.tensor, ignore_index=ignore_index, reduction="none", **kw
        )
        if not reduce:
            return out
        return out.sum() if denom is None else divide("fake", out.sum(), denom)

    def fake_reason(logits, target, weight=None, **params):
        if logits.dtype == F64:
            return "logits dtype torch.float64"
        return real._reason(logits, target, weight, **params)  # the pos_weight layout rule

    fake = types.SimpleNamespace(_loss=fake_loss, _reason=fake_reason)
    monkeypatch.setitem(sys.modules, "lossforge.kernels.sigmoid", fake)
    monkeypatch.setattr(lossforge.kernels, "sigmoid", fake, raising=False)
    monkeypatch.setattr(pipeline_mod, "kernel_eligible", lambda fn, backend, *t: backend != "torch")

    x = torch.randn(5, 3)
    y = torch.tensor([0, 3, 2, -1, 1], dtype=torch.int32)
    kw = {"pos_weight": [2.0, 1.0, 0.5], "label_smoothing": 0.1, "ignore_index": -1}
    got = F.binary_cross_entropy_with_logits(x, y, backend="auto", **kw)
    assert len(calls) == 1 and calls[0]["target"] is y  # raw index target, no one-hot built
    assert calls[0]["label_smoothing"] == 0.1 and calls[0]["ignore_index"] == -1
    assert_close(got, F.binary_cross_entropy_with_logits(x, y, **kw))
    # validation still runs before the kernel
    with pytest.raises(ValueError, match="target"):
        F.binary_cross_entropy_with_logits(x, torch.tensor([0, 9, 2, 1, 1]), backend="auto")
    with pytest.raises(ValueError, match="weight"):
        F.binary_cross_entropy_with_logits(
            x, y.long(), weight=torch.ones(4), ignore_index=-1, backend="auto"
        )
    # cases the kernel cannot serve: fall back under "auto", raise under "triton"
    x4 = torch.randn(2, 3, 4, 4)
    t4 = torch.rand(2, 3, 4, 4)
    pw4 = torch.rand(4)  # PyTorch's last-dim broadcast on 4-d logits
    n_calls = len(calls)
    assert_close(
        F.binary_cross_entropy_with_logits(x4, t4, pos_weight=pw4, backend="auto"),
        TF.binary_cross_entropy_with_logits(x4, t4, pos_weight=pw4),
    )
    assert len(calls) == n_calls
    with pytest.raises(ValueError, match="pos_weight of shape"):
        F.binary_cross_entropy_with_logits(x4, t4, pos_weight=pw4, backend="triton")
    with pytest.raises(ValueError, match="float64"):
        F.binary_cross_entropy_with_logits(x.double(), y, backend="triton", ignore_index=-1)
    # a scalar is fine (checks off: the dense-target count would launch a real Triton kernel, which
    # needs the interpreter that tests/kernels sets up)
    with lossforge.value_checks(False):
        F.binary_cross_entropy_with_logits(x4, t4, pos_weight=2.0, backend="triton")
    assert len(calls) == n_calls + 1


def test_list_options_follow_the_logits_device() -> None:
    # "meta" stands in for an accelerator: list options are checked on the host, then moved.
    x = torch.randn(3, 4, device="meta")
    y = torch.zeros(3, dtype=torch.long, device="meta")
    for loss in (
        F.balanced_softmax_loss(x, y, class_counts=[1, 2, 3, 0], class_weight=[1, 1, 2, 2]),
        F.logit_adjusted_loss(x, y, priors=[0.1, 0.2, 0.3, 0.4], label_smoothing=0.1),
        F.binary_cross_entropy_with_logits(x, y, pos_weight=[1.0, 2.0, 3.0, 4.0]),
        F.binary_cross_entropy_with_logits(x, y, pos_weight=2.0),
    ):
        assert loss.device.type == "meta" and loss.shape == ()
    with pytest.raises(ValueError, match="class_counts.*non-negative"):
        F.balanced_softmax_loss(x, y, class_counts=[1, -2, 3, 0])
    with pytest.raises(ValueError, match="pos_weight.*non-negative"):
        F.binary_cross_entropy_with_logits(x, y, pos_weight=[1.0, -2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="device"):
        F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.ones(4))


def test_gradgradcheck_float64() -> None:
    g = torch.Generator().manual_seed(21)
    x = torch.randn(3, 4, 2, dtype=F64, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (3, 2), generator=g)
    y[0, 0] = -100
    t = torch.softmax(torch.randn(3, 4, 2, dtype=F64, generator=g), dim=1)
    yb = torch.rand(3, 4, 2, dtype=F64, generator=g)
    fns = [
        lambda a: F.cross_entropy(a, y, class_weight=CW4, label_smoothing=0.2),
        lambda a: F.cross_entropy(a, t, class_weight=CW4, label_smoothing=0.2, reduction="sum"),
        lambda a: F.logit_adjusted_loss(a, y, class_counts=COUNTS4, tau=1.5, reduction="none"),
        lambda a: F.binary_cross_entropy_with_logits(
            a, yb, pos_weight=torch.tensor([2.0, 0.5], dtype=F64), label_smoothing=0.1
        ),
        lambda a: F.binary_cross_entropy(torch.sigmoid(a), yb),
    ]
    for fn in fns:
        assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(("shape", "tshape"), CE_SHAPES[1:5], ids=["2d", "4d", "6d", "empty"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"ignore_index": -100},
        {"ignore_index": 1},
        {"class_weight": "cw"},
        {"label_smoothing": 0.2, "class_weight": "cw", "ignore_index": -100},
        {"avg_factor": 3.5},
        {"reduction": "sum", "ignore_index": -100, "label_smoothing": 0.1},
    ],
    ids=lambda kw: ",".join(kw) or "plain",
)
def test_summing_fast_path_equals_unreduced_path(shape, tshape, kw, monkeypatch) -> None:
    # Without an element-wise weight, the reduced cross-entropy / NLL run PyTorch's reducing kernel
    # (value checks on or off; on the CPU it also range-checks the indices and gives the mean's
    # denominator); an all-ones element-wise weight forces the unreduced path. All must
    # equal the float64 reference, values and gradients.
    import lossforge.functional._terms as mod  # where the CE term lives

    calls: list[int] = []

    class CountedTotal(mod.Total):  # the summing path returns a Total
        def __new__(cls, *a):
            calls.append(1)
            return super().__new__(cls, *a)

    monkeypatch.setattr(mod, "Total", CountedTotal)
    # ... or, on the CPU, PyTorch's NLL kernel reduces and returns the denominator (_cpu_nll)
    import lossforge._pipeline as pipeline

    cpu_nll = pipeline._cpu_nll

    def counted_cpu_nll(*a, **k):
        out = cpu_nll(*a, **k)
        if out is not None:
            calls.append(1)
        return out

    one_call = pipeline._lean_nll  # (_cpu_nll's lean first step for the commonest plain call)

    def counted_lean_nll(*a, **k):
        out = one_call(*a, **k)
        if isinstance(out, torch.Tensor):
            calls.append(1)
        return out

    monkeypatch.setattr(pipeline, "_cpu_nll", counted_cpu_nll)
    monkeypatch.setattr(pipeline, "_lean_nll", counted_lean_nll)
    for all_ignored in (False, True) if "ignore_index" in kw else (False,):
        _check_fast_path_case(shape, tshape, dict(kw), all_ignored, calls)


def _check_fast_path_case(shape, tshape, kw, all_ignored, calls) -> None:
    g = torch.Generator().manual_seed(11)
    c = shape[1]
    x = torch.randn(shape, generator=g, dtype=F64) * 3
    y = torch.randint(0, c, tshape, generator=g)
    if kw.get("class_weight") == "cw":
        kw["class_weight"] = (torch.rand(c, generator=g, dtype=F64) + 0.1).tolist()
    ignore = kw.get("ignore_index")
    if ignore is not None and y.numel() > 1:
        y.view(-1)[::3] = ignore
        if all_ignored:
            y.fill_(ignore)
    reduction = kw.pop("reduction", "mean")
    for fn, rfn, inp in (
        (F.cross_entropy, ref.cross_entropy, x),
        (F.nll_loss, ref.nll_loss, torch.log_softmax(x, 1)),
    ):
        fkw = dict(kw)
        if fn is F.nll_loss:
            fkw.pop("label_smoothing", None)
        results = []
        ones = torch.ones(y.shape, dtype=F64)
        for checks, extra, fast in ((True, {}, 1), (False, {}, 1), (True, {"weight": ones}, 0)):
            leaf = inp.detach().clone().requires_grad_(True)
            calls.clear()
            with lf.value_checks(checks):
                out = fn(leaf, y, reduction=reduction, **fkw, **extra)
            assert len(calls) == fast, (fn.__name__, checks, extra)  # the path really taken
            out.backward(torch.tensor(1.7, dtype=F64))
            results.append((out.detach(), leaf.grad))
        (v1, g1), *others = results
        for v2, g2 in others:
            assert_close(v1, v2, F64)
            assert_close(g1, g2, F64)
        r_leaf = inp.detach().clone().requires_grad_(True)
        rkw = {k: v for k, v in fkw.items() if k != "avg_factor"}
        if "avg_factor" in fkw:
            expected = rfn(r_leaf, y, reduction="sum", **rkw) / fkw["avg_factor"]
        else:
            expected = rfn(r_leaf, y, reduction=reduction, **rkw)
        assert_close(v1, expected, F64)
        if expected.requires_grad:
            expected.backward(torch.tensor(1.7, dtype=F64))
            assert_close(g1, r_leaf.grad, F64)
        if all_ignored or y.numel() == 0:
            assert float(v1) == 0.0 and not g1.any()


def test_bce_probabilities_outside_the_unit_interval_are_nan_with_checks_off() -> None:
    """binary_cross_entropy: a probability outside [0, 1] (or NaN) is a ValueError under value
    checks; without them its element is NaN (never a negative loss, -inf or the clamp's 100),
    the others keep PyTorch's values, including the clamped ends 0 and 1."""
    p = torch.tensor([0.0, 1.0, 0.3, 1.5, -0.2, float("inf"), float("nan"), 0.7], dtype=F64)
    y = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0], dtype=F64)
    out_of_range = torch.tensor([False, False, False, True, True, True, True, False])
    with lf.value_checks(False):
        got = F.binary_cross_entropy(p, y, reduction="none")
        assert torch.isnan(F.binary_cross_entropy(p, y))
    assert torch.equal(torch.isnan(got), out_of_range)
    ok = ~out_of_range
    assert_close(got[ok], TF.binary_cross_entropy(p[ok], y[ok], reduction="none"), F64)
    with lf.value_checks(True), pytest.raises(ValueError, match=r"`probs` no NaN"):
        F.binary_cross_entropy(p, y)
    for bad in (1.5, -0.2, float("inf")):
        q = torch.tensor([0.3, bad], dtype=F64)
        with lf.value_checks(True), pytest.raises(ValueError, match=r"`probs`.*\[0, 1\]"):
            F.binary_cross_entropy(q, y[:2])


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}, {"class_weight": [1.0, 2.0, 0.5]}])
def test_out_of_range_index_with_checks_off_keeps_valid_gradients(kw) -> None:
    """With value checks off an out-of-range index makes the reduced loss NaN (loud), and the
    valid positions keep their gradients, as the unreduced path and the fused kernels give them
    (the reduced path filled the total with NaN, which zeroed every gradient)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=g, dtype=F64)
    t = torch.tensor([0, 2, 7, 1, 2])
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    with lf.value_checks(False):
        total = F.cross_entropy(a, t, reduction="sum", **kw)
        per = F.cross_entropy(b, t, reduction="none", **kw)
    assert torch.isnan(total) and torch.isnan(per[2]) and torch.isfinite(per[[0, 1, 3, 4]]).all()
    total.backward()
    per[[0, 1, 3, 4]].sum().backward()
    assert_close(a.grad, b.grad, F64)
    assert float(a.grad[[0, 1, 3, 4]].abs().sum()) > 0 and float(a.grad[2].abs().sum()) == 0
