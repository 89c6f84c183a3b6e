"""Balanced BCE (HED) and OHEM BCE (DB / mmocr): float64 references, identities, edge cases,
validation and properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import balanced as ref

import lossforge as lf
import lossforge.functional as F


def _make(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 2, 3, generator=g, dtype=torch.float64) * 2).to(dtype)
    y = (torch.rand(n, 2, 3, generator=g) < 0.3).to(dtype)
    return x, y


def _make_index(
    n: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(n, 4, generator=g, dtype=torch.float64) * 2).to(dtype)
    t = torch.randint(0, 5, (n,), generator=g)
    if n > 2:
        t[2] = 255
    return x, t


BAL, OHEM = F.balanced_binary_cross_entropy, F.ohem_binary_cross_entropy
CASES = [
    LossCase("balanced_per_sample", BAL, lf.BalancedBinaryCrossEntropyLoss, {}, _make),
    LossCase("balanced_fixed_beta", BAL, lf.BalancedBinaryCrossEntropyLoss, {"beta": 0.8}, _make),
    LossCase(
        "balanced_index_ignore",
        BAL,
        lf.BalancedBinaryCrossEntropyLoss,
        {"ignore_index": 255},
        _make_index,
        mean_is_count=False,
    ),
    # OHEM's mean divides by (#pos + k + eps), not by the element count.
    LossCase("ohem_default", OHEM, lf.OHEMBinaryCrossEntropyLoss, {}, _make, mean_is_count=False),
    LossCase(
        "ohem_ratio1_fallback",
        OHEM,
        lf.OHEMBinaryCrossEntropyLoss,
        {"negative_ratio": 1.0, "fallback_negative_num": 5, "eps": 0.0},
        _make,
        mean_is_count=False,
    ),
]
globals().update(contract_test_suite(CASES))


# --------------------------------------------------------------------------------------------------
# Balanced BCE (HED)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [None, 0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(4, 2, 3, 3), (5, 7), (9,)])
def test_balanced_matches_reference(beta: float | None, reduction: str, shape: tuple) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(shape, generator=g) < 0.25).double()
    assert_close(
        BAL(x, y, beta=beta, reduction=reduction),
        ref.balanced_bce(x, y, beta=beta, reduction=reduction),
        torch.float64,
    )


def test_balanced_beta_is_per_sample_fraction_of_negatives() -> None:
    x = torch.randn(2, 4, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    got = BAL(x, y, reduction="none")
    bce = TF.binary_cross_entropy_with_logits(x, y, reduction="none")
    beta = torch.tensor([[0.75], [0.25]], dtype=torch.float64)
    expected = torch.where(y == 1, beta * bce, (1 - beta) * bce)
    assert_close(got, expected, torch.float64)


def test_balanced_beta_half_is_half_bce_with_grads() -> None:
    x = (torch.randn(6, 5, dtype=torch.float64) * 4).requires_grad_()
    y = torch.rand(6, 5, dtype=torch.float64)  # soft targets too
    a = BAL(x, y, beta=0.5)
    b = 0.5 * TF.binary_cross_entropy_with_logits(x, y)
    assert_close(a, b, torch.float64)
    assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0], torch.float64)


def test_balanced_soft_targets_count_fractionally() -> None:
    x = torch.zeros(1, 4, dtype=torch.float64)
    y = torch.tensor([[0.5, 0.5, 0.0, 1.0]], dtype=torch.float64)  # sum(1 - y) = 2 -> beta = 0.5
    assert_close(BAL(x, y), BAL(x, y, beta=0.5), torch.float64)


def test_balanced_all_positive_all_negative_empty_and_ignored() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.stack([torch.ones(4), torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 0.0])])
    none = BAL(x, y, reduction="none")
    assert torch.isfinite(none).all()
    assert torch.all(none[:2] == 0)  # beta = 0 for all-positive, 1 for all-negative (HED): no loss
    (g,) = torch.autograd.grad(none.sum(), x)
    assert torch.isfinite(g).all() and torch.all(g[:2] == 0)
    # index targets: background row is all-negative, ignored rows are excluded from beta and loss
    t = torch.tensor([4, 255, 1])
    got = BAL(x, t, ignore_index=255, reduction="none")
    dense = torch.zeros(3, 4)
    dense[2, 1] = 1.0
    assert torch.all(got[1] == 0) and torch.all(got[0] == 0)
    assert_close(got[2], BAL(x[2:], dense[2:], reduction="none")[0], torch.float32)
    kept = t != 255
    assert_close(BAL(x, t, ignore_index=255), BAL(x[kept], t[kept]), torch.float32)
    every = BAL(x, torch.full((3,), 255), ignore_index=255)
    assert every.item() == 0.0 and every.requires_grad
    assert torch.all(torch.autograd.grad(every, x)[0] == 0)
    # an element-wise ignore: ignored elements leave beta
    yd = torch.tensor([[1.0, 0.0, 7.0, 7.0]])
    assert_close(
        BAL(x[:1], yd, ignore_index=7, reduction="sum"),
        BAL(x[:1, :2], yd[:, :2], reduction="sum"),
        torch.float32,
    )


def test_balanced_validation() -> None:
    x, y = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"balanced_binary_cross_entropy: expected `beta` in \[0, 1\], got 1.5"
    ):
        BAL(x, y, beta=1.5)
    with pytest.raises(TypeError, match="beta"):
        BAL(x, y, beta="auto")
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        BAL(x, y - 1)
    with pytest.raises(ValueError, match="target"):
        BAL(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="beta"):
        lf.BalancedBinaryCrossEntropyLoss(beta=-0.1)
    with pytest.raises(ValueError, match="triton"):
        BAL(x, y, backend="triton")


# --------------------------------------------------------------------------------------------------
# OHEM BCE
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.5, 1.0, 3.0, 1000.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("fallback", [0, 4])
def test_ohem_matches_reference(ratio: float, reduction: str, fallback: int) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 5, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(2, 6, 5, generator=g) < 0.15).double()
    m = (torch.rand(2, 6, 5, generator=g) < 0.8).double()
    for mask in (m, None):
        got = OHEM(
            x,
            y,
            mask=mask,
            negative_ratio=ratio,
            fallback_negative_num=fallback,
            reduction=reduction,
        )
        exp = ref.ohem_bce(
            x, y, mask, negative_ratio=ratio, fallback_negative_num=fallback, reduction=reduction
        )
        assert_close(got, exp, torch.float64)
    # no positives: the fallback decides
    got = OHEM(x, torch.zeros_like(y), mask=m, fallback_negative_num=fallback, reduction=reduction)
    exp = ref.ohem_bce(
        x, torch.zeros_like(y), m, fallback_negative_num=fallback, reduction=reduction
    )
    assert_close(got, exp, torch.float64)


def test_ohem_worked_example_and_selection() -> None:
    x = torch.tensor([2.0, -1.0, 1.0, -3.0, 0.5], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    bce = TF.binary_cross_entropy_with_logits(x, y, reduction="none")
    none = OHEM(x, y, negative_ratio=2.0, reduction="none")
    assert_close(
        none, bce * torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64), torch.float64
    )
    assert_close(
        OHEM(x, y, negative_ratio=2.0), (bce[0] + bce[2] + bce[4]) / (3 + 1e-6), torch.float64
    )
    assert_close(OHEM(x, y, negative_ratio=2.0, reduction="sum"), none.sum(), torch.float64)
    assert_close(OHEM(x, y, negative_ratio=2.0, avg_factor=10.0), none.sum() / 10.0, torch.float64)


def test_ohem_taking_all_negatives_is_masked_bce_mean() -> None:
    x = (torch.randn(3, 8, 8, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(3, 8, 8) < 0.2).double()
    m = (torch.rand(3, 8, 8) < 0.7).double()
    got = OHEM(x, y, mask=m, negative_ratio=1e6)
    bce = TF.binary_cross_entropy_with_logits(x, y, reduction="none")
    expected = (bce * m).sum() / (m.sum() + 1e-6)
    assert_close(got, expected, torch.float64)
    assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(expected, x)[0], torch.float64)


def test_ohem_edge_cases() -> None:
    x = torch.randn(2, 3, 3, requires_grad=True)
    y = torch.zeros(2, 3, 3)
    # no positives, default fallback 0: exactly 0, zero grads, attached
    for loss in (OHEM(x, y), OHEM(x, y, reduction="sum")):
        assert loss.item() == 0.0 and loss.requires_grad
        assert torch.all(torch.autograd.grad(loss, x)[0] == 0)
    # no negatives: plain mean of the positives
    ones = torch.ones(2, 3, 3)
    bce = TF.binary_cross_entropy_with_logits(x, ones, reduction="none")
    assert_close(OHEM(x, ones, eps=0.0), bce.mean(), torch.float32)
    # k > #neg: every negative is used
    y1 = torch.zeros(2, 3, 3)
    y1[0, 0, 0] = 1.0
    y1[1, :, :2] = 1.0  # 7 positives, 11 negatives, ratio 3 asks for 21
    full = TF.binary_cross_entropy_with_logits(x, y1, reduction="none")
    assert_close(OHEM(x, y1, eps=0.0), full.mean(), torch.float32)
    # all masked: 0 with zero grads
    zero = OHEM(x, y1, mask=torch.zeros(2, 3, 3))
    assert zero.item() == 0.0 and torch.all(torch.autograd.grad(zero, x)[0] == 0)
    # bool mask == float mask
    mb = torch.rand(2, 3, 3) < 0.5
    assert_close(OHEM(x, y1, mask=mb), OHEM(x, y1, mask=mb.float()), torch.float32)
    # empty input
    e = torch.zeros(0, 4, requires_grad=True)
    assert OHEM(e, torch.zeros(0, 4)).item() == 0.0


def test_ohem_ties_are_broken_by_lower_index() -> None:
    x = torch.zeros(8, dtype=torch.float64)  # every negative has the same loss
    y = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)
    none = OHEM(x, y, negative_ratio=3.0, reduction="none")
    assert torch.equal(none > 0, torch.tensor([True, True, True, True, False, False, False, False]))
    assert torch.equal(none, OHEM(x, y, negative_ratio=3.0, reduction="none"))


def test_ohem_weight_applies_after_selection() -> None:
    x = torch.randn(4, 6, dtype=torch.float64) * 2
    y = (torch.rand(4, 6) < 0.3).double()
    w = torch.rand(4, 6, dtype=torch.float64)
    base = OHEM(x, y, reduction="none")
    assert_close(OHEM(x, y, weight=w, reduction="none"), base * w, torch.float64)
    n_pos = y.sum()
    k = min(int((1 - y).sum()), int(n_pos * 3))
    assert_close(OHEM(x, y, weight=w), (base * w).sum() / (n_pos + k + 1e-6), torch.float64)


def test_ohem_module_takes_mask_in_forward() -> None:
    x = torch.randn(2, 5, 5)
    y = (torch.rand(2, 5, 5) < 0.3).float()
    m = (torch.rand(2, 5, 5) < 0.6).float()
    mod = lf.OHEMBinaryCrossEntropyLoss(negative_ratio=2.0, loss_weight=0.5)
    assert_close(mod(x, y, mask=m), 0.5 * OHEM(x, y, mask=m, negative_ratio=2.0), torch.float32)
    assert "negative_ratio=2.0" in repr(mod)
    from lossforge.registry import build_loss

    assert isinstance(
        build_loss({"type": "ohem_binary_cross_entropy"}), lf.OHEMBinaryCrossEntropyLoss
    )
    assert isinstance(
        build_loss({"type": "balanced_binary_cross_entropy", "beta": 0.7}),
        lf.BalancedBinaryCrossEntropyLoss,
    )


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ohem_soft_mask_matches_reference(reduction: str, per_image: bool) -> None:
    """A soft mask counts fractionally and ranks the negatives by mask * loss (a mask of 0.1 on
    the two hardest negatives moves them behind the others)."""
    x = torch.tensor([[2.0, 3.0, 2.5, 1.0, 0.5, 0.2, -1.0, 0.0]] * 2, dtype=torch.float64)
    x[1] = x[1].flip(0)
    y = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1.0]], dtype=torch.float64)
    m = torch.tensor([[1.0, 0.1, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0]] * 2, dtype=torch.float64)
    m[1] = m[1].flip(0)
    g = torch.Generator().manual_seed(9)
    soft = torch.rand(2, 8, generator=g, dtype=torch.float64)
    for mask in (m, soft):
        kw = {"negative_ratio": 3.0, "reduction": reduction}
        want = (ref.ohem_bce_per_image if per_image else ref.ohem_bce)(x, y, mask, **kw)
        got = OHEM(x, y, mask=mask, per_image=per_image, **kw)
        assert_close(got, want, torch.float64)


@pytest.mark.parametrize("ratio", [0.5, 3.0, 1000.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("fallback", [0, 4])
def test_ohem_per_image_matches_reference(ratio: float, reduction: str, fallback: int) -> None:
    """Per-image mining: each sample's k from its own counts (a sample without positives keeps
    its fallback negatives however many positives the others have), pooled normalisation."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 6, 5, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(3, 6, 5, generator=g) < 0.15).double()
    y[1] = 0.0  # one image without positives
    m = (torch.rand(3, 6, 5, generator=g) < 0.8).double()
    for mask in (m, None):
        kw = {"negative_ratio": ratio, "fallback_negative_num": fallback, "reduction": reduction}
        got = OHEM(x, y, mask=mask, per_image=True, **kw)
        assert_close(got, ref.ohem_bce_per_image(x, y, mask, **kw), torch.float64)
        whole = OHEM(x, y, mask=mask, **kw)
        if reduction == "none" and ratio == 0.5:
            assert not torch.equal(got, whole)  # the two minings differ on this batch
    for empty in (torch.zeros(0, 8), torch.zeros(0, 4, 4), torch.zeros(2, 0)):
        e = empty.double().requires_grad_(True)
        out = OHEM(e, torch.zeros_like(empty).double(), per_image=True)
        assert out.item() == 0.0 and out.requires_grad  # nothing valid: 0, attached
    one = OHEM(x[:1], y[:1], per_image=True, negative_ratio=ratio)
    assert_close(one, OHEM(x[:1], y[:1], negative_ratio=ratio), torch.float64)  # N = 1: equal


def test_ohem_index_targets_and_ignore_index() -> None:
    """The shared sigmoid target rules: (N,) class indices equal their one-hot rows (value C: all
    negative); ignore_index drops an index row, and a dense ignore value is like a 0 in mask."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    idx = torch.tensor([0, 4, 2, 4, 1, 3])
    onehot = torch.nn.functional.one_hot(idx, 5)[:, :4].double()
    for per_image in (False, True):
        for reduction in ("none", "mean", "sum"):
            kw = {"reduction": reduction, "per_image": per_image, "negative_ratio": 1.0}
            assert_close(OHEM(x, idx, **kw), OHEM(x, onehot, **kw), torch.float64)
    dropped = idx.clone()
    dropped[2] = 255
    keep = torch.ones(6, 4, dtype=torch.float64)
    keep[2] = 0.0
    for reduction in ("none", "mean", "sum"):
        got = OHEM(x, dropped, ignore_index=255, reduction=reduction, negative_ratio=1.0)
        exp = OHEM(x, onehot, mask=keep, reduction=reduction, negative_ratio=1.0)
        assert_close(got, exp, torch.float64)
        dense = onehot.clone()
        dense[0, 1] = dense[3, 2] = -1.0  # a dense ignore value
        mask = torch.ones_like(dense)
        mask[0, 1] = mask[3, 2] = 0.0
        got = OHEM(x, dense, ignore_index=-1, reduction=reduction, negative_ratio=1.0)
        exp = OHEM(x, onehot, mask=mask, reduction=reduction, negative_ratio=1.0)
        assert_close(got, exp, torch.float64)
    module = lf.OHEMBinaryCrossEntropyLoss(per_image=True, ignore_index=255, negative_ratio=1.0)
    assert_close(module(x, dropped), OHEM(x, dropped, per_image=True, ignore_index=255,
                                          negative_ratio=1.0), torch.float64)  # fmt: skip


def test_ohem_validation() -> None:
    x, y = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"ohem_binary_cross_entropy: expected `negative_ratio` in \(0, inf\]"
    ):
        OHEM(x, y, negative_ratio=0.0)
    with pytest.raises(ValueError, match="negative_ratio"):
        OHEM(x, y, negative_ratio=-1.0)
    with pytest.raises(ValueError, match=r"expected `mask` to have the shape of `logits` \(2, 3\)"):
        OHEM(x, y, mask=torch.ones(3))
    with pytest.raises(TypeError, match=r"expected `target` an integer tensor of class indices"):
        OHEM(x, torch.zeros(2))  # (N,) targets are class indices, as for every sigmoid loss
    with pytest.raises(ValueError, match=r"expected `per_image` logits with a sample dimension"):
        OHEM(torch.zeros(5), torch.zeros(5), per_image=True)
    with pytest.raises(ValueError, match=r"expected `target` values in \[0, 1\]"):
        OHEM(x, torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match=r"expected `mask` values in \[0, 1\]"):
        OHEM(x, y, mask=torch.full((2, 3), -1.0))
    with pytest.raises(ValueError, match="fallback_negative_num"):
        OHEM(x, y, fallback_negative_num=-1)
    with pytest.raises(ValueError, match="eps"):
        OHEM(x, y, eps=-1.0)
    with pytest.raises(ValueError, match="triton"):
        OHEM(x, y, backend="triton")
    with pytest.raises(ValueError, match="negative_ratio"):
        lf.OHEMBinaryCrossEntropyLoss(negative_ratio=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_finite_at_extreme_logits(dtype: torch.dtype) -> None:
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    for scale in (20.0, 1e4):
        x = (
            (torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, -1.0, -1.0, 1.0]]) * scale)
            .to(dtype)
            .requires_grad_()
        )
        for loss in (BAL(x, y), BAL(x, y, beta=0.3), OHEM(x, y), OHEM(x, y, mask=torch.ones(2, 4))):
            (g,) = torch.autograd.grad(loss, x)
            assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(g).all()


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 10_000), st.floats(0.1, 8.0))
def test_property_ohem_matches_sorted_reference(n: int, s: int, seed: int, ratio: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, s, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(n, s, generator=g) < 0.3).double()
    m = (torch.rand(n, s, generator=g) < 0.8).double()
    none = OHEM(x, y, mask=m, negative_ratio=ratio, reduction="none")
    assert torch.all(none >= 0)
    assert_close(none, ref.ohem_bce(x, y, m, negative_ratio=ratio, reduction="none"), torch.float64)
    assert_close(
        OHEM(x, y, mask=m, negative_ratio=ratio),
        ref.ohem_bce(x, y, m, negative_ratio=ratio),
        torch.float64,
    )


@given(st.integers(1, 4), st.integers(2, 10), st.integers(0, 10_000))
def test_property_balanced_nonnegative_symmetric_and_below_bce(n: int, s: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, s, generator=g, dtype=torch.float64) * 4
    y = (torch.rand(n, s, generator=g) < 0.5).double()
    a = BAL(x, y, reduction="none")
    assert torch.all(a >= 0)
    assert torch.all(a <= TF.binary_cross_entropy_with_logits(x, y, reduction="none") + 1e-12)
    # swapping the classes (x -> -x, y -> 1 - y) swaps beta and 1 - beta: the loss is unchanged
    assert_close(BAL(-x, 1 - y, reduction="none"), a, torch.float64)


def test_per_sample_balance_refuses_one_element_samples() -> None:
    """beta=None balances each sample over its own elements: an (N, 1) input (one logit per
    sample, a single-class detector's rows) would give 0 whatever the logits, so it raises,
    saying what to pass instead; a 1-d input (one sample), a float beta and N = 0 are fine."""
    x = torch.randn(6, 1, dtype=torch.float64)
    y = (torch.rand(6, 1) < 0.5).double()
    for logits, target in ((x, y), (x.view(6, 1, 1), y.view(6, 1, 1))):
        with pytest.raises(ValueError, match=r"at least 2 elements per sample.*view\(1, -1\)"):
            BAL(logits, target)
        with pytest.raises(ValueError, match="at least 2 elements per sample"):
            lf.BalancedBinaryCrossEntropyLoss()(logits, target)
    flat = BAL(x.view(1, -1), y.view(1, -1), reduction="sum")
    assert_close(flat, BAL(x.view(-1), y.view(-1), reduction="sum"), torch.float64)
    assert float(flat) > 0
    assert float(BAL(x, y, beta=0.5)) > 0
    assert float(BAL(x[:0], y[:0])) == 0.0


@pytest.mark.parametrize("beta", [None, 0.9])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_closed_form_keeps_tiny_losses_and_gradients(beta, reduction) -> None:
    """A plain reduced call (no weight, nothing ignored) takes the reduced closed form: the
    forward keeps no gradient-sized buffer (``TotalLoss`` saves the inputs), the backward
    computes the derivative. Confident, correct logits (|z| = 30: loss and gradient ~1e-13)
    keep their values to float32 precision against float64: each term is a softplus of its own
    sign and each gradient term a sigmoid of its own sign (no ``z - softplus`` or ``1 - sigma``
    cancellation, which would give 0)."""
    z = torch.tensor([[30.0, -30.0, 25.0, -28.0], [-30.0, 30.0, -27.0, 26.0]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    x = z.clone().requires_grad_(True)
    with lf.value_checks(False):
        out = F.balanced_binary_cross_entropy(x, y, beta=beta, reduction=reduction)
    assert type(out.grad_fn).__name__ == "TotalLossBackward"
    expected = ref.balanced_bce(z, y, beta=beta, reduction=reduction)
    assert float(expected) > 0
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0.0)
    out.backward()
    zd, yd = z.double(), y.double()
    b = (1.0 - yd).sum(dim=1, keepdim=True) / yd.shape[1] if beta is None else beta
    grad = (1.0 - b) * (1.0 - yd) * torch.sigmoid(zd) - b * yd * torch.sigmoid(-zd)
    grad = grad / z.numel() if reduction == "mean" else grad
    assert bool((grad.abs() < 1e-10).all())  # every element confident: tiny gradients
    torch.testing.assert_close(x.grad.double(), grad, rtol=1e-5, atol=0.0)


def test_reduced_closed_form_saves_no_gradient_buffer() -> None:
    """The reduced form's graph holds the logits and the target only; the element-wise form
    (a weight) keeps its derivative as well."""
    x = torch.randn(64, 32, requires_grad=True)
    y = (torch.rand(64, 32) < 0.1).float()
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.balanced_binary_cross_entropy(x, y, beta=0.98)
    assert set(saved) <= {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.balanced_binary_cross_entropy(x, y, beta=0.98, weight=torch.ones(64, 32))
    assert not set(saved) <= {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}


@pytest.mark.parametrize("seed", range(8))
def test_reduced_closed_form_equals_the_element_wise_form(seed) -> None:
    """Differential, float64: random shapes (1-d to 4-d), soft and hard targets, a float or
    per-sample beta, "mean" and "sum", and float16 / bfloat16 logits (computed in float32): the
    reduced closed form (a plain call) equals the element-wise form (the same call with an
    all-ones weight), values and gradients, first and second order."""
    g = torch.Generator().manual_seed(seed)
    ndim = 1 + seed % 4
    shape = [int(v) for v in torch.randint(1, 6, (ndim,), generator=g)]
    shape[0] = max(shape[0], 2)
    x64 = torch.randn(shape, generator=g, dtype=torch.float64) * 4
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    if seed % 2:
        y = (y > 0.7).double()
    beta = None if seed % 3 else 0.3
    reduction = ("mean", "sum")[seed // 2 % 2]
    dtype = (torch.float64, torch.float64, torch.float16, torch.bfloat16)[seed % 4]
    xs = x64.to(dtype)
    a = xs.clone().requires_grad_(True)
    b = xs.clone().requires_grad_(True)
    yt = y.to(torch.float32) if dtype != torch.float64 else y
    plain = F.balanced_binary_cross_entropy(a, yt, beta=beta, reduction=reduction)
    assert type(plain.grad_fn).__name__ == "TotalLossBackward"
    ones = torch.ones(shape, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    element = F.balanced_binary_cross_entropy(b, yt, beta=beta, reduction=reduction, weight=ones)
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(plain, element, **tol)
    # First order by the closed-form derivative (a plain backward), then second order through
    # the composite (create_graph=True differentiates the specification).
    (ga,) = torch.autograd.grad(plain, a, retain_graph=True)
    (gb,) = torch.autograd.grad(element, b, retain_graph=True)
    gtol = tol if dtype == torch.float64 else {"rtol": 1e-2, "atol": 1e-3}  # (half gradients)
    torch.testing.assert_close(ga, gb, **gtol)
    if dtype == torch.float64:
        (ga,) = torch.autograd.grad(plain, a, create_graph=True)
        (gb,) = torch.autograd.grad(element, b, create_graph=True)
        torch.testing.assert_close(ga, gb, **tol)
        (ha,) = torch.autograd.grad(ga.sum(), a)
        (hb,) = torch.autograd.grad(gb.sum(), b)
        torch.testing.assert_close(ha, hb, **tol)
