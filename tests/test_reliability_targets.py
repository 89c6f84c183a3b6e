"""Targets that could be read two ways are never guessed (issue #14, section 1).

* One logit channel with an integer target without the channel dimension is a binary mask for a
  segmentation user and class indices (0 = the class, 1 = background) for a single-class detector.
  Every loss refuses to guess; the sigmoid-family losses and dice take the explicit forms and read
  them the same way.
* ``ignore_index`` on a dense target that is a target value (0 or 1) would silently drop every
  negative or positive element: it raises, saying what to use instead.

The sweeps run over every registered loss (``lossforge.registry``), so a new loss is covered.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, example, fn_of, infos_with, name_of, params, takes
from torch import Tensor

import lossforge as lf
import lossforge.functional as F
from lossforge._targets import check_sigmoid_target
from lossforge.nn import DiceLoss, SigmoidFocalLoss
from lossforge.registry import LossInfo

INDEX_TARGET = infos_with("index_target")
IGNORE = infos_with("ignore_index")
#: (logits shape, target shape) with one channel: detection rows, segmentation maps, unbatched.
ONE_CHANNEL = [((6, 1), (6,)), ((2, 1, 4, 4), (2, 4, 4)), ((1,), ())]


def _input(info: LossInfo, shape: tuple[int, ...], seed: int = 0) -> tuple[Tensor, dict[str, Any]]:
    """An input of ``shape`` for the loss (probabilities where it takes them) and the keywords
    that make it a one-channel sigmoid call (dice: ``activation="sigmoid"``)."""
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))
    kw = params(info)
    if takes(info, "activation"):
        kw["activation"] = "sigmoid"
    assert info.traits is not None
    if not info.traits.logits and info.traits.example == "probs_dense":
        x = torch.sigmoid(x)
    if info.name == "balanced_binary_cross_entropy" and len(shape) == 2 and shape[1] == 1:
        # its per-sample balance refuses one-element samples (always 0): a given beta
        kw["beta"] = 0.25
    return x.requires_grad_(True), kw


def _refuses_unbatched(info: LossInfo, x: Tensor, kw: dict[str, Any]) -> bool:
    """A region loss (``Traits.region``: dice, Tversky, Jaccard, Lovasz, ...) takes ``(N, C, *)``
    logits only: an unbatched ``(C,)`` row is refused, whatever the target."""
    assert info.traits is not None
    if x.ndim >= 2 or not info.traits.region:
        return False
    mask = torch.ones(x.shape, dtype=F64)
    for call in (lambda: fn_of(info)(x, mask, **kw), lambda: info.cls(**kw)(x, mask)):
        with pytest.raises(ValueError, match=r"expected `logits` a tensor of shape \(N, C, \*\)"):
            call()
    return True


def _labels(shape: tuple[int, ...], seed: int = 1) -> Tensor:
    return torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(seed))


def _value_and_grad(fn: Any, x: Tensor, y: Tensor, **kw: Any) -> tuple[Tensor, Tensor]:
    loss = fn(x, y, reduction="sum", **kw)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


@pytest.mark.parametrize("shapes", ONE_CHANNEL, ids=str)
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_no_loss_guesses_an_integer_target_next_to_one_channel(
    info: LossInfo, shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> None:
    """Every loss, function and module: one channel + integer 0/1 labels raise a clear error."""
    xs, ys = shapes
    x, kw = _input(info, xs)
    y = _labels(ys)
    for call in (lambda: fn_of(info)(x, y, **kw), lambda: info.cls(**kw)(x, y)):
        with pytest.raises((ValueError, TypeError)) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(f"{fn_of(info).__name__}: expected `")
        if takes(info, "index_target") and "expected `logits`" not in msg:
            # both fixes are shown (region losses take no unbatched (C,) logits: that error
            # comes first)
            assert "index_target=True" in msg and "index_target=False" in msg, msg
            assert "unsqueeze" in msg, msg


@pytest.mark.parametrize("shapes", ONE_CHANNEL, ids=str)
@pytest.mark.parametrize("info", INDEX_TARGET, ids=name_of)
def test_one_channel_mask_forms_agree(
    info: LossInfo, shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> None:
    """A binary mask, however it is passed (the logits' shape, float / bool without the channel
    dimension, integers with ``index_target=False``, through the module), is the same mask."""
    xs, ys = shapes
    x, kw = _input(info, xs)
    if _refuses_unbatched(info, x, kw):
        return
    m = _labels(ys)
    cdim = 1 if len(xs) >= 2 else 0
    fn = fn_of(info)
    want = _value_and_grad(fn, x, m.unsqueeze(cdim).to(F64), **kw)
    forms = [
        (m.unsqueeze(cdim), {}),  # integers of the logits' shape: unambiguous
        (m.to(F64), {}),
        (m.bool(), {}),
        (m, {"index_target": False}),
        (m.to(F64), {"index_target": False}),
    ]
    for target, extra in forms:
        got = _value_and_grad(fn, x, target, **kw, **extra)
        assert_close(got[0], want[0], F64)
        assert_close(got[1], want[1], F64)
    mod = info.cls(**kw, index_target=False, reduction="sum")
    assert_close(mod(x, m), want[0], F64)


@pytest.mark.parametrize("shapes", ONE_CHANNEL, ids=str)
@pytest.mark.parametrize("info", INDEX_TARGET, ids=name_of)
def test_one_channel_class_indices_with_index_target(
    info: LossInfo, shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> None:
    """``index_target=True``: 0 is the class, 1 (= C) the background, the mmdetection convention
    a single-class detector relies on; an ignored row counts nowhere."""
    xs, ys = shapes
    x, kw = _input(info, xs)
    if _refuses_unbatched(info, x, kw):
        return
    labels = _labels(ys)
    cdim = 1 if len(xs) >= 2 else 0
    fn = fn_of(info)
    dense = (labels == 0).unsqueeze(cdim).to(F64)
    got = _value_and_grad(fn, x, labels, index_target=True, **kw)
    want = _value_and_grad(fn, x, dense, **kw)
    assert_close(got[0], want[0], F64)
    assert_close(got[1], want[1], F64)
    assert_close(info.cls(**kw, index_target=True, reduction="sum")(x, labels), want[0], F64)
    if len(ys) == 1 and takes(info, "ignore_index"):
        ignored = labels.clone()
        ignored[::2] = -1
        keep = torch.ones(ys, dtype=F64)
        keep[::2] = 0
        loss = fn(x, ignored, index_target=True, ignore_index=-1, reduction="none", **kw)
        kept = keep.bool()
        # the kept rows alone (GHM-C's weights come from the histogram of the counted rows)
        ref = fn(x[kept], dense[kept], reduction="none", **kw)
        if loss.shape == x.shape:  # element-wise losses (region losses reduce per entry)
            assert_close(loss[kept], ref, F64)
            assert_close(loss[~kept], torch.zeros_like(loss[~kept]), F64)
    # the explicit form is checked: it must be class indices without the channel dimension
    with pytest.raises(ValueError, match=r"index_target=True"):
        fn(x, dense, index_target=True, **kw)
    with pytest.raises(ValueError, match=r"index_target=True"):
        fn(x, labels.to(F64), index_target=True, **kw)


@pytest.mark.parametrize("info", INDEX_TARGET, ids=name_of)
def test_index_target_false_needs_a_dense_target_with_several_channels(info: LossInfo) -> None:
    x, kw = _input(info, (4, 3))
    with pytest.raises(ValueError, match=r"index_target=False"):
        fn_of(info)(x, torch.randint(0, 3, (4,)), index_target=False, **kw)
    # index targets with several channels need no flag, and True agrees with the default
    y = torch.randint(0, 4, (4,))
    assert_close(fn_of(info)(x, y, index_target=True, **kw), fn_of(info)(x, y, **kw), F64)


def test_binary_segmentation_calls() -> None:
    """What a segmentation user writes: (N, 1, H, W) logits and a (N, H, W) mask."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=F64)
    mask = torch.rand(2, 8, 8, generator=g) > 0.5
    ref_bce = torch.nn.functional.binary_cross_entropy_with_logits(x, mask.unsqueeze(1).to(F64))
    assert_close(F.binary_cross_entropy_with_logits(x, mask.unsqueeze(1)), ref_bce, F64)
    assert_close(F.binary_cross_entropy_with_logits(x, mask), ref_bce, F64)  # bool: a mask
    assert_close(F.binary_cross_entropy_with_logits(x, mask.long().unsqueeze(1)), ref_bce, F64)
    dice = DiceLoss(activation="sigmoid")
    focal = SigmoidFocalLoss()
    want = dice(x, mask.unsqueeze(1).float())
    assert_close(dice(x, mask.long().unsqueeze(1)), want, F64)
    assert_close(DiceLoss(activation="sigmoid", index_target=False)(x, mask.long()), want, F64)
    combined = focal(x, mask.unsqueeze(1).float()) + dice(x, mask.unsqueeze(1).float())
    assert torch.isfinite(combined)
    with pytest.raises(ValueError, match=r"either a binary mask \(1 = foreground\) or class"):
        focal(x, mask.long())
    with pytest.raises(ValueError, match=r"either a binary mask"):
        dice(x, mask.long())


def test_single_class_detection_calls() -> None:
    """What an mmdetection-style single-class head writes: (N, 1) scores, (N,) labels with the
    background as 1 (= num_classes), avg_factor = number of positives, a per-anchor weight."""
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(50, 1, generator=g, dtype=F64, requires_grad=True)
    labels = torch.where(torch.rand(50, generator=g) < 0.2, 0, 1)
    weight = torch.rand(50, generator=g, dtype=F64)
    num_pos = float((labels == 0).sum())
    head = SigmoidFocalLoss(alpha=0.25, gamma=2.0, index_target=True)
    got = head(scores, labels, weight=weight, avg_factor=num_pos)
    want = F.sigmoid_focal_loss(
        scores, (labels == 0).to(F64).unsqueeze(1), weight=weight, avg_factor=num_pos
    )
    assert_close(got, want, F64)
    (g1,) = torch.autograd.grad(got, scores)
    (g2,) = torch.autograd.grad(want, scores)
    assert_close(g1, g2, F64)
    with pytest.raises(ValueError, match=r"index_target=True"):
        SigmoidFocalLoss()(scores, labels)
    # with several classes nothing changes: index C is the background
    x4 = torch.randn(6, 4, dtype=F64)
    y4 = torch.tensor([0, 1, 2, 3, 4, 4])
    assert_close(
        SigmoidFocalLoss(index_target=True)(x4, y4), SigmoidFocalLoss()(x4, y4), torch.float64
    )


# --------------------------------------------------------------------------------------------------
# ignore_index on dense targets
# --------------------------------------------------------------------------------------------------


def _dense_target(info: LossInfo) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The example input and a 0/1 target of its own shape (a dense target)."""
    x, _ = example(info, n=4)
    kw = params(info)
    y = (torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) > 0.5).to(F64)
    return x, y, kw


@pytest.mark.parametrize("info", IGNORE, ids=name_of)
def test_ignore_index_that_is_a_dense_target_value_raises(info: LossInfo) -> None:
    """Every loss with ``ignore_index``: a dense target with ``ignore_index`` 0 or 1 raises (the
    softmax family: probability targets take no ignore_index at all)."""
    x, y, kw = _dense_target(info)
    fn = fn_of(info)
    for target in (y, y.long(), y.bool()):
        for value in (0, 1):
            with pytest.raises((ValueError, TypeError), match="ignore_index|target"):
                fn(x, target, ignore_index=value, **kw)
            with pytest.raises((ValueError, TypeError), match="ignore_index|target"):
                info.cls(**kw, ignore_index=value)(x, target)


@pytest.mark.parametrize("info", [i for i in IGNORE if takes(i, "index_target")], ids=name_of)
def test_dense_ignore_index_outside_the_target_values(info: LossInfo) -> None:
    """The fix the message suggests works: elements marked -1 or 255 are ignored exactly."""
    x, y, kw = _dense_target(info)
    fn = fn_of(info)
    with pytest.raises(ValueError, match=r"ignore_index.*outside \[0, 1\].*-1 or 255"):
        fn(x, y, ignore_index=1, **kw)
    marked = y.clone()
    marked[0] = -1
    keep = torch.ones_like(y)
    keep[0] = 0
    got = fn(x, marked, ignore_index=-1, reduction="sum", **kw)
    assert info.traits is not None
    if info.traits.region:  # ignored pixels leave the sums: the same as cropping them out
        want = fn(x[1:], y[1:], reduction="sum", **kw)
    else:
        want = fn(x, y, weight=keep, reduction="sum", **kw)
    assert_close(got, want, F64)
    assert_close(fn(x, y, ignore_index=255, **kw), fn(x, y, **kw), F64)


def test_dense_ignore_index_check_covers_the_kernel_route() -> None:
    """``check_sigmoid_target`` (what the fused route validates with) applies the same rule."""
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="ignore_index"):
        check_sigmoid_target("f", x, torch.zeros(3, 4), ignore_index=0)
    t, index = check_sigmoid_target("f", x, torch.zeros(3, 4), ignore_index=255)
    assert not index
    # class indices may use 0 or 1 as ignore_index: they are then not a class
    t, index = check_sigmoid_target("f", x, torch.tensor([0, 1, 2]), ignore_index=1)
    assert index


def _class_index_example(info: LossInfo) -> tuple[Tensor, Tensor] | None:
    """The loss's example when its target is class indices (an integer tensor with the class
    dimension dropped), else None."""
    x, y = example(info)
    if y.is_floating_point() or y.dtype == torch.bool or x.ndim < 2:
        return None
    if tuple(y.shape) != tuple(x.shape[:1]) + tuple(x.shape[2:]):
        return None
    return x, y


INDEX_LOSSES = [info for info in INFOS if _class_index_example(info) is not None]


@pytest.mark.parametrize("info", INDEX_LOSSES, ids=name_of)
@pytest.mark.parametrize("variant", ["default", "batch", "classes_all"])
def test_out_of_range_class_index_raises_or_is_nan(info: LossInfo, variant: str) -> None:
    """Every loss of class indices: an index far out of range is a ValueError under value
    checks and makes the reduced loss NaN without them (never a plausible finite number, never
    an exact 0), whatever options decide which entries count."""
    kw = params(info)
    if variant == "batch":
        if not takes(info, "batch"):
            pytest.skip("no `batch` option")
        kw["batch"] = True
    if variant == "classes_all":
        if not takes(info, "classes"):
            pytest.skip("no `classes` option")
        kw["classes"] = "all"
    found = _class_index_example(info)
    assert found is not None
    x, y = found
    bad = y.clone()
    bad.view(-1)[0] = 1000
    with lf.value_checks(True), pytest.raises(ValueError, match="target"):
        fn_of(info)(x, bad, **kw)
    for reduction in ("mean", "sum"):
        with lf.value_checks(False):
            out = fn_of(info)(x, bad, reduction=reduction, **kw)
        assert torch.isnan(out), (reduction, float(out))
