"""Infinite inputs give the loss's limit or a clear error, never an unexplained NaN (issue #14).

The rule per input convention (``docs/contract.md``, "Infinite values"; ``_checks.INFINITE_RULES``):

* softmax family (logits or log-probabilities over a class dimension): ``-inf`` masks a class.
  A masked class that is not the target gives the loss's limit (the loss at a very negative
  logit), with a zero gradient there; where the limit is infinite (the target masked, or label
  smoothing putting mass on a masked class) the loss is ``+inf`` as in PyTorch, with finite
  gradients. ``+inf``, and a position with every class at ``-inf``, raise under value checks.
* sigmoid family (element-wise losses on logits, also the IoU-quality targets of quality focal
  and varifocal): an infinite logit raises under value checks.
* dice with a sigmoid: the sigmoid's limits are exact (0 and 1), so the loss is its limit.
* regression: an infinite prediction has an infinite loss (its value), not NaN.
* boxes (IoU, GIoU, DIoU, CIoU): an infinite coordinate is no box (its IoU, enclosing-box ratio
  and centre distance are inf / inf): infinite ``pred`` values raise under value checks, and so
  do NaN or infinite ``target`` boxes.
* distribution (DFL, a softmax over the bins): ``-inf`` masks a bin; a masked bin without target
  mass gives the loss's limit, one with target mass ``+inf`` with finite gradients. ``+inf`` and
  a position with every bin masked raise under value checks.
* Lovasz hinge (binary logits): the hinge is linear in the logit; an infinite logit of the right
  sign has hinge error 0 (the limit, exact), one of the wrong sign an infinite error and the loss
  is ``+inf`` with finite gradients, with or without value checks.

Every registered loss is swept through the example inputs it declares.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, example, fn_of, name_of, params, takes
from torch import Tensor

import lossforge
import lossforge.functional as F
from lossforge.registry import LossInfo

INF = float("inf")
SOFTMAX = {"softmax_index", "log_probs_index", "segmentation_index"}
SIGMOID = {"sigmoid_dense", "sigmoid_index", "quality_dense"}
PROBS = {"probs_dense"}
REGRESSION = {"regression"}
BOXES = {"boxes"}
DISTRIBUTION = {"distribution"}
HINGE = {"segmentation_binary"}


def _kind(info: LossInfo) -> str:
    assert info.traits is not None
    ex = info.traits.example
    for kind, names in (
        ("softmax", SOFTMAX),
        ("sigmoid", SIGMOID),
        ("probs", PROBS),
        ("regression", REGRESSION),
        ("boxes", BOXES),
        ("distribution", DISTRIBUTION),
        ("hinge", HINGE),
    ):
        if ex in names:
            return kind
    raise AssertionError(f"{info.name}: example {ex!r} has no infinite-value rule in this test")


def _of_kind(kind: str) -> list[LossInfo]:
    return [info for info in INFOS if _kind(info) == kind]


def _outcome(info: LossInfo, x: Tensor, y: Tensor, **kw: Any) -> tuple[Tensor, Tensor] | str:
    """(loss, grad) or the error message."""
    xx = x.detach().clone().requires_grad_(True)
    try:
        loss = fn_of(info)(xx, y, **params(info), **kw)
    except ValueError as err:
        return str(err)
    (g,) = torch.autograd.grad(loss.sum(), xx)
    return loss.detach(), g


def _masked_non_target(x: Tensor, y: Tensor, value: float) -> Tensor:
    """``x`` with, in every position, one class other than the target set to ``value``."""
    out = x.detach().clone()
    c = x.shape[1]
    other = (y + 1) % c
    out.scatter_(1, other.unsqueeze(1), value)
    return out


@pytest.mark.parametrize("checks", [True, False], ids=["checks", "no-checks"])
@pytest.mark.parametrize("info", _of_kind("softmax"), ids=name_of)
def test_masked_class_gives_the_limit(info: LossInfo, checks: bool) -> None:
    """Softmax family: a class masked with -inf that is not the target is the limit of a very
    negative logit (exactly, in float64), with or without value checks, for every option that
    changes the math (label smoothing, focusing)."""
    x, y = example(info, n=4)
    options: list[dict[str, Any]] = [{}]
    if takes(info, "label_smoothing"):
        options.append({"label_smoothing": 0.2})
    if takes(info, "gamma_pos"):
        options += [{"gamma_pos": 1.0}, {"gamma_neg": 0.0, "label_smoothing": 0.0}]
    targets = [y]
    # probability targets without mass on the masked class (where the loss takes them)
    probs = torch.softmax(torch.randn(x.shape, dtype=F64), dim=1)
    probs = _masked_non_target(probs, y, 0.0)
    probs = probs / probs.sum(dim=1, keepdim=True)
    try:
        fn_of(info)(x, probs, **params(info))
        targets.append(probs)
    except TypeError:
        pass  # class indices only (NLL, softmax ASL)
    except ValueError as err:  # binary masks only (Lovasz-Softmax: an extension of sets)
        if "binary values" not in str(err):
            raise
    with lossforge.value_checks(checks):
        for kw, t in itertools.product(options, targets):
            for reduction in ("none", "sum"):
                got = _outcome(info, _masked_non_target(x, y, -INF), t, reduction=reduction, **kw)
                near = _outcome(info, _masked_non_target(x, y, -1e4), t, reduction=reduction, **kw)
                assert not isinstance(got, str), got
                assert not isinstance(near, str), near
                loss, g = got
                assert not torch.isnan(loss).any(), (kw, loss)
                assert not torch.isnan(g).any(), (kw, g)
                inf = torch.isinf(loss)
                # an infinite loss only where the loss grows without bound towards -inf
                assert torch.all(near[0][inf] > 100), (kw, near[0])
                assert_close(loss[~inf], near[0][~inf], F64)
                if not inf.any():
                    assert_close(g, near[1], F64)


@pytest.mark.parametrize("info", _of_kind("softmax"), ids=name_of)
def test_every_class_masked_or_plus_inf_raises_under_checks(info: LossInfo) -> None:
    x, y = example(info, n=4)
    all_masked = x.detach().clone()
    all_masked[1] = -INF
    plus = x.detach().clone()
    plus.view(-1)[3] = INF
    with lossforge.value_checks(True):
        msg = _outcome(info, all_masked, y)
        assert isinstance(msg, str) and "every class at -inf" in msg, msg
        msg = _outcome(info, plus, y)
        assert isinstance(msg, str) and "+inf" in msg, msg
    with lossforge.value_checks(False):
        # documented: the softmax of a fully masked position is 0/0 (PyTorch's NaN); NLL reads
        # log-probabilities of -inf directly (+inf)
        out = _outcome(info, all_masked, y, reduction="none")
        assert not isinstance(out, str)
        assert not torch.isfinite(out[0][1]).any()


@pytest.mark.parametrize("info", _of_kind("sigmoid"), ids=name_of)
def test_sigmoid_family_refuses_infinite_logits_under_checks(info: LossInfo) -> None:
    x, y = example(info, n=4)
    for value in (INF, -INF):
        for pos in (0, 5):
            bad = x.detach().clone()
            bad.view(-1)[pos] = value
            with lossforge.value_checks(True):
                msg = _outcome(info, bad, y)
            assert isinstance(msg, str), msg
            assert "expected `logits` finite values" in msg and "1 infinite" in msg, msg


@pytest.mark.parametrize("info", _of_kind("boxes"), ids=name_of)
def test_boxes_refuse_infinite_coordinates_under_checks(info: LossInfo) -> None:
    x, y = example(info, n=4)
    for value in (INF, -INF):
        for pos in (0, 2, 5, 15):  # x1, x2 and y1 of one box, y2 of another
            bad = x.detach().clone()
            bad.view(-1)[pos] = value
            with lossforge.value_checks(True):
                msg = _outcome(info, bad, y)
            assert isinstance(msg, str), msg
            assert "expected `pred` finite values" in msg and "1 infinite of 16" in msg, msg
            bad_target = y.clone()
            bad_target.view(-1)[pos] = value
            with lossforge.value_checks(True):
                msg = _outcome(info, x, bad_target)
            assert isinstance(msg, str), msg
            assert "expected `target` finite values" in msg and "1 NaN or infinite" in msg, msg
    bad_target = y.clone()
    bad_target[1, 3] = math.nan
    with lossforge.value_checks(True):
        msg = _outcome(info, x, bad_target)
    assert isinstance(msg, str) and "expected `target` finite values" in msg, msg


def _masked_bin(x: Tensor, y: Tensor, value: float, *, with_mass: bool) -> Tensor:
    """``x`` with, in every row, one bin set to ``value``: the left neighbour of the distance
    (mass ``i + 1 - y > 0`` for a distance off the bins' right end) or a bin two away from both
    neighbours (no mass)."""
    out = x.detach().clone()
    c = x.shape[1]
    left = torch.floor(y).clamp(max=c - 2).long()
    far = torch.where(left >= 3, left - 2, left + 3)
    out.scatter_(1, (left if with_mass else far).unsqueeze(1), value)
    return out


@pytest.mark.parametrize("checks", [True, False], ids=["checks", "no-checks"])
@pytest.mark.parametrize("info", _of_kind("distribution"), ids=name_of)
def test_distribution_masked_bin_gives_the_limit(info: LossInfo, checks: bool) -> None:
    """A bin masked with -inf: without target mass the limit of a very negative logit (value and
    gradient, exactly in float64); with target mass +inf (the limit) with finite gradients."""
    x, y = example(info, n=6)
    y = y.clamp(max=6.5)  # every distance puts mass on its left bin
    with lossforge.value_checks(checks):
        for reduction in ("none", "sum"):
            got = _outcome(info, _masked_bin(x, y, -INF, with_mass=False), y, reduction=reduction)
            near = _outcome(info, _masked_bin(x, y, -1e4, with_mass=False), y, reduction=reduction)
            assert not isinstance(got, str) and not isinstance(near, str), (got, near)
            assert torch.isfinite(got[0]).all(), got[0]
            assert_close(got[0], near[0], F64)
            assert_close(got[1], near[1], F64)
            out = _outcome(info, _masked_bin(x, y, -INF, with_mass=True), y, reduction=reduction)
            assert not isinstance(out, str), out
            loss, g = out
            assert (loss == INF).all(), loss
            assert torch.isfinite(g).all(), g


@pytest.mark.parametrize("info", _of_kind("distribution"), ids=name_of)
def test_distribution_every_bin_masked_or_plus_inf_raises_under_checks(info: LossInfo) -> None:
    x, y = example(info, n=4)
    all_masked = x.detach().clone()
    all_masked[1] = -INF
    plus = x.detach().clone()
    plus[2, 3] = INF
    with lossforge.value_checks(True):
        msg = _outcome(info, all_masked, y)
        assert isinstance(msg, str) and "every class at -inf" in msg, msg
        msg = _outcome(info, plus, y)
        assert isinstance(msg, str) and "+inf" in msg, msg


@pytest.mark.parametrize("checks", [True, False], ids=["checks", "no-checks"])
@pytest.mark.parametrize("info", _of_kind("hinge"), ids=name_of)
def test_hinge_infinite_logit_is_the_limit_or_plus_inf(info: LossInfo, checks: bool) -> None:
    """Right sign: the hinge error is 0 as at a very large logit (value and gradient exact in
    float64). Wrong sign: the loss of that entry is +inf, the gradient finite; also with several
    infinite errors in an entry without positives (whose Jaccard steps after the first are 0)."""
    x, y = example(info, n=4)
    sign = 2.0 * y.to(F64).unsqueeze(1) - 1.0  # +1 on the mask, -1 off it
    x = x.detach()
    with lossforge.value_checks(checks):
        for reduction in ("none", "sum"):
            right, near = x.clone(), x.clone()
            right.view(-1)[[0, 5, 17, 40]] = (INF * sign).view(-1)[[0, 5, 17, 40]]
            near.view(-1)[[0, 5, 17, 40]] = (1e4 * sign).view(-1)[[0, 5, 17, 40]]
            got, want = (
                _outcome(info, right, y, reduction=reduction),
                _outcome(info, near, y, reduction=reduction),
            )
            assert not isinstance(got, str) and not isinstance(want, str), (got, want)
            assert_close(got[0], want[0], F64)
            assert_close(got[1], want[1], F64)
            wrong = x.clone()
            wrong.view(-1)[[0, 17]] = (-INF * sign).view(-1)[[0, 17]]  # images 0 and 1
            out = _outcome(info, wrong, y, reduction=reduction)
            assert not isinstance(out, str), out
            loss, g = out
            if reduction == "none":
                assert (loss[:2] == INF).all() and torch.isfinite(loss[2:]).all(), loss
            else:
                assert loss == INF
            assert torch.isfinite(g).all(), g
    empty = torch.zeros_like(y)  # no positives: every error after the first has a zero step
    two = x.clone()
    two[0, 0, 0, :2] = INF
    out = _outcome(info, two, empty, reduction="none")
    assert not isinstance(out, str), out
    assert out[0][0] == INF and torch.isfinite(out[0][1:]).all(), out[0]
    assert torch.isfinite(out[1]).all(), out[1]


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_infinite_values_never_give_an_unexplained_nan(info: LossInfo) -> None:
    """Every loss, +inf and -inf at several positions, value checks on: a ValueError naming the
    input, or a loss without NaN (finite, or +inf where the loss itself is infinite) whose
    gradient has no NaN."""
    x, y = example(info, n=4)
    for value in (INF, -INF):
        for pos in range(0, x.numel(), max(1, x.numel() // 6)):
            bad = x.detach().clone()
            bad.view(-1)[pos] = value
            for reduction in ("none", "mean"):
                with lossforge.value_checks(True):
                    out = _outcome(info, bad, y, reduction=reduction)
                if isinstance(out, str):
                    assert "inf" in out or "[0, 1]" in out, out
                    continue
                loss, g = out
                assert not torch.isnan(loss).any(), (value, pos, loss)
                assert not torch.isnan(g).any(), (value, pos, g)


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_without_checks_a_finite_loss_has_finite_gradients(info: LossInfo) -> None:
    """Every loss, value checks off (the GPU default), +inf, -inf or NaN at several positions:
    the loss may be NaN or infinite (loud), but a finite loss never hides non-finite gradients,
    which would turn the model's weights into NaN one step later without a sign in the loss
    curve (IoU loss with a box side overflowed to +inf, e.g. exp() of a box delta, did)."""
    x, y = example(info, n=4)
    for value in (INF, -INF, math.nan):
        for pos in range(0, x.numel(), max(1, x.numel() // 6)):
            bad = x.detach().clone()
            bad.view(-1)[pos] = value
            for reduction in ("none", "mean"):
                with lossforge.value_checks(False):
                    out = _outcome(info, bad, y, reduction=reduction)
                assert not isinstance(out, str), out
                loss, g = out
                if torch.isfinite(loss).all():
                    assert torch.isfinite(g).all(), (value, pos, reduction, loss, g)


def test_iou_loss_overflowing_area_is_nan_with_or_without_checks() -> None:
    """Finite sides whose area overflows the dtype (an infinite union): NaN whatever the
    value-check mode (the NaN was added only with checks off, so CPU and CUDA differed)."""
    p = torch.tensor([[0.0, 0.0, 1e20, 1e20]])
    t = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    for checks in (True, False):
        with lossforge.value_checks(checks):
            assert torch.isnan(F.iou_loss(p, t, reduction="sum")), checks


def test_iou_loss_infinite_side_is_nan_without_checks() -> None:
    """The box with an overflowed side is NaN in every mode; the other boxes keep their values
    and gradients; a -inf x2 (an empty box) keeps its finite limit, -log(eps) with no gradient."""
    pred = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]], dtype=F64)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]], dtype=F64)
    for mode in ("linear", "square", "log"):
        clean = F.iou_loss(pred, target, mode=mode, reduction="none")
        for pos, value in ((2, INF), (0, -INF), (3, INF)):
            bad = pred.clone()
            bad.view(-1)[pos] = value
            with lossforge.value_checks(False):
                loss = F.iou_loss(bad, target, mode=mode, reduction="none")
            assert torch.isnan(loss[0]) and loss[1] == clean[1], (mode, pos, loss)
        empty = pred.clone()
        empty[0, 2] = -INF
        leaf = empty.requires_grad_(True)
        with lossforge.value_checks(False):
            loss = F.iou_loss(leaf, target, mode=mode, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), leaf)
        iou_eps = 1e-6
        expected = {"linear": 1 - iou_eps, "square": 1 - iou_eps**2, "log": -math.log(iou_eps)}
        assert_close(loss[0], torch.tensor(expected[mode], dtype=F64))
        assert (g[0] == 0).all() and torch.isfinite(g).all()


def test_dice_sigmoid_takes_the_sigmoid_limits() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, generator=g, dtype=F64)
    t = torch.rand(2, 3, 4, generator=g) > 0.5
    x[0, 0, :2] = INF
    x[1, 2, 1:] = -INF
    near = x.clamp(-1e4, 1e4)
    for checks in (True, False):
        with lossforge.value_checks(checks):
            got = F.dice_loss(x, t, activation="sigmoid", reduction="none")
            assert_close(got, F.dice_loss(near, t, activation="sigmoid", reduction="none"), F64)


def test_regression_infinite_prediction_is_an_infinite_loss() -> None:
    p = torch.tensor([1.0, INF, -INF], dtype=F64, requires_grad=True)
    t = torch.zeros(3, dtype=F64)
    for fn in (F.l1_loss, F.smooth_l1_loss, F.mse_loss):
        loss = fn(p, t, reduction="none")
        assert loss[0].item() < math.inf and torch.isinf(loss[1:]).all()


def test_softmax_asymmetric_masked_class_is_finite_issue_example() -> None:
    """The issue's case: ``0 * -inf`` in the focusing term made the loss NaN."""
    x = torch.tensor([[2.0, -INF, 0.5], [1.0, 0.0, -INF]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss = F.softmax_asymmetric_loss(x, y)
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert g[0, 1] == 0 and g[1, 2] == 0
    near = x.detach().clamp(min=-1e4)
    assert_close(loss, F.softmax_asymmetric_loss(near, y), torch.float32)


def test_cross_entropy_all_masked_row_is_a_value_error() -> None:
    x = torch.full((2, 3), -INF)
    x[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"cross_entropy: expected `logits` at least one class"):
        F.cross_entropy(x, torch.tensor([0, 1]))
