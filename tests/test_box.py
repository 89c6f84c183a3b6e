"""IoU, GIoU, DIoU, CIoU: the contract, the papers' formulas, torchvision and mmdetection parity,
degenerate and disjoint boxes, identities, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import box as ref

import lossforge as lf
import lossforge.functional as F
from lossforge._examples import boxes as make_boxes

F64 = torch.float64

CASES = [
    LossCase("iou_log", F.iou_loss, lf.IoULoss, {}, make_boxes, extreme=False),
    LossCase("iou_linear", F.iou_loss, lf.IoULoss, {"mode": "linear"}, make_boxes, extreme=False),
    LossCase(
        "iou_square", F.iou_loss, lf.IoULoss, {"mode": "square", "eps": 1e-4}, make_boxes, False
    ),
    LossCase("giou", F.giou_loss, lf.GIoULoss, {}, make_boxes, elementwise=False, extreme=False),
    LossCase("diou", F.diou_loss, lf.DIoULoss, {"eps": 1e-5}, make_boxes, False, False),
    # The default CIoU treats alpha as a constant of the gradient, which finite differences (the
    # contract's gradcheck) cannot see: the contract runs the exact-gradient variant, and
    # test_ciou_default_gradient_holds_alpha_constant checks the default.
    LossCase(
        "ciou_exact_grad", F.ciou_loss, lf.CIoULoss, {"detach_tradeoff": False}, make_boxes, False
    ),
    LossCase(
        "ciou_mmdet_exact_grad",
        F.ciou_loss,
        lf.CIoULoss,
        {"detach_tradeoff": False, "aspect_min_iou": 0.5},
        make_boxes,
        False,
    ),
]
for _c in CASES:
    _c.elementwise = False
    _c.extreme = False
globals().update(contract_test_suite(CASES))

LOSSES: dict[str, Any] = {
    "iou": (F.iou_loss, lambda p, t, eps, **kw: ref.iou(p, t, kw.get("mode", "log"), eps)),
    "giou": (F.giou_loss, lambda p, t, eps, **kw: ref.giou(p, t, eps)),
    "diou": (F.diou_loss, lambda p, t, eps, **kw: ref.diou(p, t, eps)),
    "ciou": (
        F.ciou_loss,
        lambda p, t, eps, **kw: ref.ciou(p, t, eps, kw.get("aspect_min_iou")),
    ),
}


def _boxes(n: int = 40, seed: int = 0, dtype: torch.dtype = F64) -> tuple[torch.Tensor, ...]:
    p, t = make_boxes(n, F64, torch.Generator().manual_seed(seed))
    return p.to(dtype), t.to(dtype)


def _special_boxes() -> tuple[torch.Tensor, torch.Tensor]:
    """Degenerate, disjoint, nested, identical, touching and inverted predictions."""
    rows = [
        # (pred, target)
        ([0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]),  # identical
        ([0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]),  # nested
        ([3.0, 3.0, 4.0, 5.0], [0.0, 0.0, 2.0, 2.0]),  # disjoint
        ([2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]),  # touching edge
        ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]),  # point inside
        ([1.0, 0.0, 1.0, 3.0], [0.0, 0.0, 2.0, 2.0]),  # zero width
        ([0.0, 1.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]),  # zero height
        ([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]),  # identical points
        ([5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 1.0, 1.0]),  # two distinct points
        ([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 3.0]),  # degenerate target
        ([2.0, 2.0, 0.5, 0.5], [0.0, 0.0, 2.0, 2.0]),  # inverted prediction (empty box)
        ([0.0, 0.0, 1e4, 2.0], [1.0, 0.0, 3.0, 2e4]),  # huge, thin
    ]
    return (
        torch.tensor([r[0] for r in rows], dtype=F64),
        torch.tensor([r[1] for r in rows], dtype=F64),
    )


# --------------------------------------------------------------------------------------------------
# The papers' formulas (tests/reference/box.py)
# --------------------------------------------------------------------------------------------------

OPTIONS = [
    ("iou", {"mode": "log"}),
    ("iou", {"mode": "linear"}),
    ("iou", {"mode": "square"}),
    ("giou", {}),
    ("diou", {}),
    ("ciou", {}),
    ("ciou", {"aspect_min_iou": 0.5}),
]


@pytest.mark.parametrize(("name", "kw"), OPTIONS, ids=[f"{n}-{kw}" for n, kw in OPTIONS])
@pytest.mark.parametrize("eps", [1e-7, 1e-3])
def test_matches_paper_reference(name: str, kw: dict[str, Any], eps: float) -> None:
    fn, reference = LOSSES[name]
    for p, t in (_boxes(), _special_boxes()):
        got = fn(p, t, eps=eps, reduction="none", **kw)
        want = reference(p, t, eps, **kw)
        assert got.shape == p.shape[:-1]
        assert_close(got, want, F64, rtol=1e-10, atol=1e-12)
        assert_close(fn(p, t, eps=eps, **kw), want.mean(), F64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("shape", [(4,), (3, 5, 4), (0, 4), (2, 0, 4)])
def test_any_leading_shape(name: str, shape: tuple[int, ...]) -> None:
    fn, reference = LOSSES[name]
    n = math.prod(shape[:-1])
    p, t = _boxes(n, seed=3)
    p, t = p.reshape(shape), t.reshape(shape)
    got = fn(p, t, reduction="none")
    assert got.shape == shape[:-1]
    eps = 1e-6 if name == "iou" else 1e-7
    assert_close(got, reference(p, t, eps), F64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("aspect_min_iou", [None, 0.5])
def test_ciou_default_gradient_holds_alpha_constant(aspect_min_iou: float | None) -> None:
    """The default gradient is that of DIoU + alpha v with alpha frozen at the evaluation point
    (torchvision / mmdetection / the paper's code), checked against central differences of the
    reference with a frozen alpha."""
    p, t = _boxes(12, seed=5)
    p.requires_grad_(True)
    F.ciou_loss(p, t, aspect_min_iou=aspect_min_iou, reduction="sum").backward()
    want = ref.ciou_grad_constant_alpha(p, t, 1e-7, aspect_min_iou)
    assert_close(p.grad, want, F64, rtol=1e-6, atol=1e-7)
    # ...which differs from the exact gradient wherever alpha is active.
    exact = p.detach().clone().requires_grad_(True)
    F.ciou_loss(exact, t, detach_tradeoff=False, reduction="sum").backward()
    assert not torch.allclose(exact.grad, p.grad, atol=1e-6)


def test_ciou_default_low_precision_and_empty() -> None:
    """The contract checks the default CIoU cannot get from the shared suite (gradcheck aside)."""
    p, t = _boxes(6, seed=7)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = p.to(dtype).requires_grad_(True)
        x64 = x.detach().double().requires_grad_(True)
        got = F.ciou_loss(x, t, reduction="none")
        want = F.ciou_loss(x64, t, reduction="none")
        assert got.dtype == torch.float32
        assert_close(got, want, torch.float32, rtol=1e-5, atol=1e-5)
        got.sum().backward()
        want.sum().backward()
        assert x.grad.dtype == dtype
        assert_close(x.grad.float(), x64.grad, dtype, rtol=2e-2, atol=1e-2)
    empty = torch.zeros(0, 4, requires_grad=True)
    for reduction in ("mean", "sum"):
        out = F.ciou_loss(empty, torch.zeros(0, 4), reduction=reduction)
        assert out.item() == 0.0 and out.requires_grad
        (grad,) = torch.autograd.grad(out, empty)
        assert grad.shape == (0, 4)


# --------------------------------------------------------------------------------------------------
# torchvision parity: the installed function when it imports, and its formulas as read from
# torchvision/ops/{giou,diou,ciou}_loss.py and _utils._loss_inter_union (rewritten here)
# --------------------------------------------------------------------------------------------------


def _tv_inter_union(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x1, y1, x2, y2 = b1.unbind(-1)
    u1, v1, u2, v2 = b2.unbind(-1)
    left, right = torch.max(x1, u1), torch.min(x2, u2)
    bottom, top = torch.max(y1, v1), torch.min(y2, v2)
    overlaps = (top > bottom) & (right > left)
    inter = torch.where(overlaps, (right - left) * (top - bottom), torch.zeros_like(x1))
    return inter, (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter


def _tv_enclosing(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x1, y1, x2, y2 = b1.unbind(-1)
    u1, v1, u2, v2 = b2.unbind(-1)
    return torch.max(x2, u2) - torch.min(x1, u1), torch.max(y2, v2) - torch.min(y1, v1)


def tv_giou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    inter, union = _tv_inter_union(b1, b2)
    cw, ch = _tv_enclosing(b1, b2)
    area_c = cw * ch
    return 1 - (inter / (union + eps) - (area_c - union) / (area_c + eps))


def _tv_diou_iou(b1: torch.Tensor, b2: torch.Tensor, eps: float) -> tuple[torch.Tensor, ...]:
    inter, union = _tv_inter_union(b1, b2)
    iou = inter / (union + eps)
    cw, ch = _tv_enclosing(b1, b2)
    c1 = (b1[..., 0] + b1[..., 2]) / 2 - (b2[..., 0] + b2[..., 2]) / 2
    c2 = (b1[..., 1] + b1[..., 3]) / 2 - (b2[..., 1] + b2[..., 3]) / 2
    return 1 - iou + (c1**2 + c2**2) / (cw**2 + ch**2 + eps), iou


def tv_diou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return _tv_diou_iou(b1, b2, eps)[0]


def tv_ciou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    diou, iou = _tv_diou_iou(b1, b2, 1e-7)  # torchvision calls it with its default eps
    w1, h1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
    w2, h2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
    v = 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou + alpha * v


def _value_and_grad(fn: Any, p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = p.detach().clone().requires_grad_(True)
    out = fn(x, t)
    (out.sum() if out.ndim else out).backward()
    return out.detach(), x.grad


TV = [
    ("giou", F.giou_loss, tv_giou),
    ("diou", F.diou_loss, tv_diou),
    ("ciou", F.ciou_loss, tv_ciou),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), TV, ids=[n for n, _, _ in TV])
def test_matches_torchvision_formula(name: str, ours: Any, theirs: Any) -> None:
    p, t = _boxes(200, seed=11)
    special_p, special_t = _special_boxes()
    # torchvision needs positive heights (CIoU divides w / h) and non-inverted boxes
    ok = ((special_p[:, 3] > special_p[:, 1]) & (special_t[:, 3] > special_t[:, 1])).nonzero()[:, 0]
    p, t = torch.cat([p, special_p[ok]]), torch.cat([t, special_t[ok]])
    got, got_grad = _value_and_grad(lambda x, y: ours(x, y, reduction="none"), p, t)
    want, want_grad = _value_and_grad(theirs, p, t)
    assert_close(got, want, F64, rtol=1e-12, atol=1e-12)
    # Boxes whose intersection has exactly zero width (touching boxes, a zero-width prediction or
    # target inside the other box) sit on the kink of max(., 0): torchvision's mask gives the
    # subgradient 0 there, the clamp here (and in mmdetection) the one-sided derivative towards
    # overlap.
    iw = torch.min(p[:, 2], t[:, 2]) - torch.max(p[:, 0], t[:, 0])
    ih = torch.min(p[:, 3], t[:, 3]) - torch.max(p[:, 1], t[:, 1])
    smooth = (iw != 0) & (ih != 0)
    assert (~smooth).sum() == 3
    assert_close(got_grad[smooth], want_grad[smooth], F64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "ours", "theirs"), TV, ids=[n for n, _, _ in TV])
def test_matches_installed_torchvision(name: str, ours: Any, theirs: Any) -> None:
    ops = pytest.importorskip("torchvision.ops")
    peer = {
        "giou": ops.generalized_box_iou_loss,
        "diou": ops.distance_box_iou_loss,
        "ciou": ops.complete_box_iou_loss,
    }[name]
    p, t = _boxes(200, seed=13)
    for reduction in ("none", "mean", "sum"):
        got, got_grad = _value_and_grad(lambda x, y, r=reduction: ours(x, y, reduction=r), p, t)
        want, want_grad = _value_and_grad(lambda x, y, r=reduction: peer(x, y, reduction=r), p, t)
        assert_close(got, want, F64, rtol=1e-12, atol=1e-12)
        assert_close(got_grad, want_grad, F64, rtol=1e-10, atol=1e-12)
    # and the formulas above are what torchvision computes
    assert_close(theirs(p, t), peer(p, t), F64, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# mmdetection parity: mmdet/models/losses/iou_loss.py (3.x), mmdet/structures/bbox
# bbox_overlaps(is_aligned=True) and utils.weight_reduce_loss, rewritten here
# --------------------------------------------------------------------------------------------------


def _mm_overlaps(b1: torch.Tensor, b2: torch.Tensor, mode: str, eps: float = 1e-6) -> torch.Tensor:
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    wh = (torch.min(b1[..., 2:], b2[..., 2:]) - torch.max(b1[..., :2], b2[..., :2])).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.max(area1 + area2 - overlap, torch.tensor(eps, dtype=b1.dtype))
    ious = overlap / union
    if mode == "iou":
        return ious
    enc = (torch.max(b1[..., 2:], b2[..., 2:]) - torch.min(b1[..., :2], b2[..., :2])).clamp(min=0)
    enclose = torch.max(enc[..., 0] * enc[..., 1], torch.tensor(eps, dtype=b1.dtype))
    return ious - (enclose - union) / enclose


def mm_iou(p: torch.Tensor, t: torch.Tensor, mode: str = "log", eps: float = 1e-6) -> torch.Tensor:
    ious = _mm_overlaps(p, t, "iou").clamp(min=eps)
    return {"linear": 1 - ious, "square": 1 - ious**2, "log": -ious.log()}[mode]


def mm_giou(p: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return 1 - _mm_overlaps(p, t, "giou", eps)


def _mm_diou_parts(p: torch.Tensor, t: torch.Tensor, eps: float) -> tuple[torch.Tensor, ...]:
    wh = (torch.min(p[:, 2:], t[:, 2:]) - torch.max(p[:, :2], t[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    ap = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    ag = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    ious = overlap / (ap + ag - overlap + eps)
    enc = (torch.max(p[:, 2:], t[:, 2:]) - torch.min(p[:, :2], t[:, :2])).clamp(min=0)
    c2 = enc[:, 0] ** 2 + enc[:, 1] ** 2 + eps
    rho2 = ((t[:, 0] + t[:, 2]) - (p[:, 0] + p[:, 2])) ** 2 / 4 + (
        (t[:, 1] + t[:, 3]) - (p[:, 1] + p[:, 3])
    ) ** 2 / 4
    return ious, rho2 / c2


def mm_diou(p: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    ious, dist = _mm_diou_parts(p, t, eps)
    return 1 - (ious - dist)


def mm_ciou(p: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    ious, dist = _mm_diou_parts(p, t, eps)
    w1, h1 = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1] + eps
    w2, h2 = t[:, 2] - t[:, 0], t[:, 3] - t[:, 1] + eps
    v = 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = (ious > 0.5).to(v.dtype) * v / (1 - ious + v)
    return 1 - (ious - (dist + alpha * v)).clamp(min=-1.0, max=1.0)


def mm_module(loss: Any, p, t, weight=None, avg_factor=None, reduction="mean") -> torch.Tensor:
    """mmdet's IoU-family ``forward`` + ``weight_reduce_loss`` (3.x)."""
    if weight is not None and not torch.any(weight > 0):
        return (p * weight).sum()
    if weight is not None and weight.dim() > 1:
        weight = weight.mean(-1)
    out = loss(p, t)
    if weight is not None:
        out = out * weight
    if avg_factor is None:
        return {"none": out, "mean": out.mean(), "sum": out.sum()}[reduction]
    return out.sum() / (avg_factor + torch.finfo(torch.float32).eps)


MM = [
    ("iou_log", lf.IoULoss(eps=1e-6), mm_iou),
    ("iou_linear", lf.IoULoss(mode="linear"), lambda p, t: mm_iou(p, t, "linear")),
    ("iou_square", lf.IoULoss(mode="square"), lambda p, t: mm_iou(p, t, "square")),
    ("giou", lf.GIoULoss(eps=1e-6), mm_giou),
    ("diou", lf.DIoULoss(eps=1e-6), mm_diou),
    ("ciou", lf.CIoULoss(eps=1e-6, aspect_min_iou=0.5), mm_ciou),
]
MM_DIFF: dict[str, float] = {}


@pytest.mark.parametrize(("name", "ours", "theirs"), MM, ids=[n for n, _, _ in MM])
def test_matches_mmdetection_formula(name: str, ours: Any, theirs: Any) -> None:
    """Values and gradients of the module against mmdet's loss + weight_reduce_loss, with (N,)
    and (N, 4) weights and avg_factor. Differences come from where eps enters (below 1e-6 on
    boxes of area >= 0.25)."""
    p, t = _boxes(300, seed=17)
    special_p, special_t = _special_boxes()
    ok = ((special_p[:, 2:] > special_p[:, :2]).all(1)) & (special_t[:, 3] > special_t[:, 1])
    p, t = torch.cat([p, special_p[ok][:-1]]), torch.cat([t, special_t[ok][:-1]])
    g = torch.Generator().manual_seed(1)
    w1 = torch.rand(p.shape[0], generator=g, dtype=F64)
    w4 = torch.rand(p.shape, generator=g, dtype=F64)
    worst = 0.0
    for weight, avg, reduction in [
        (None, None, "none"),
        (None, None, "mean"),
        (w1, None, "sum"),
        (w4, 37.0, "mean"),
        (w4, None, "none"),
    ]:
        got, got_grad = _value_and_grad(
            lambda x, y, w=weight, a=avg, r=reduction: ours(
                x, y, weight=w, avg_factor=a, reduction_override=r
            ),
            p,
            t,
        )
        want, want_grad = _value_and_grad(
            lambda x, y, w=weight, a=avg, r=reduction: mm_module(theirs, x, y, w, a, r), p, t
        )
        assert_close(got, want, F64, rtol=1e-6, atol=2e-6)
        assert_close(got_grad, want_grad, F64, rtol=1e-5, atol=2e-6)
        worst = max(worst, float((got - want).abs().max()))
    MM_DIFF[name] = worst


def test_mmdetection_zero_weight_shortcut_gives_the_same_zero() -> None:
    p, t = _boxes(5)
    for loss in (lf.IoULoss(), lf.GIoULoss(), lf.DIoULoss(), lf.CIoULoss()):
        x = p.clone().requires_grad_(True)
        for weight in (torch.zeros(5, dtype=F64), torch.zeros(5, 4, dtype=F64)):
            for reduction, avg in (("mean", None), ("sum", None), ("mean", 0.0), ("mean", 3.0)):
                out = loss(x, t, weight=weight, avg_factor=avg, reduction_override=reduction)
                assert out.item() == 0.0
                (grad,) = torch.autograd.grad(out, x)
                assert torch.all(grad == 0)


# --------------------------------------------------------------------------------------------------
# Degenerate and disjoint boxes, identities, properties
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16])
def test_degenerate_and_disjoint_boxes_are_finite(name: str, dtype: torch.dtype) -> None:
    fn, _ = LOSSES[name]
    p, t = _special_boxes()
    if dtype in (torch.float16, torch.bfloat16):
        p, t = p[:-1], t[:-1]  # 2e4 is still representable, but not the row's precision
    x = p.to(dtype).requires_grad_(True)
    for kw in ({}, {"detach_tradeoff": False}) if name == "ciou" else ({},):
        out = fn(x, t.to(dtype), reduction="none", **kw)
        assert torch.isfinite(out).all(), out
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all(), grad


def test_disjoint_boxes_still_get_a_gradient_except_plain_iou() -> None:
    p = torch.tensor([[3.0, 3.0, 4.0, 5.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=F64)
    for fn in (F.giou_loss, F.diou_loss, F.ciou_loss):
        (grad,) = torch.autograd.grad(fn(p, t), p)
        assert grad.abs().sum() > 0
    for mode in ("linear", "square", "log"):  # the IoU is clamped at eps: no gradient (mmdet)
        (grad,) = torch.autograd.grad(F.iou_loss(p, t, mode=mode), p)
        assert torch.all(grad == 0)


def test_identities_between_the_family() -> None:
    p, t = _boxes(60, seed=23)
    # a prediction inside its target: C = U, so GIoU = linear IoU
    inner = torch.cat([t[:, :2] + 0.1, t[:, 2:] - 0.1], dim=1)
    assert_close(
        F.giou_loss(inner, t, reduction="none"),
        F.iou_loss(inner, t, mode="linear", eps=1e-7, reduction="none"),
        F64,
    )
    # same centre: DIoU = linear IoU; same aspect ratio too: CIoU = DIoU
    centre = (t[:, :2] + t[:, 2:]) / 2
    half = (t[:, 2:] - t[:, :2]) / 2 * torch.linspace(0.5, 1.5, 60, dtype=F64)[:, None]
    same_centre = torch.cat([centre - half, centre + half], dim=1)
    diou = F.diou_loss(same_centre, t, reduction="none")
    assert_close(diou, F.iou_loss(same_centre, t, mode="linear", eps=1e-7, reduction="none"), F64)
    assert_close(F.ciou_loss(same_centre, t, reduction="none"), diou, F64, atol=1e-12)
    # the mmdet gate: no aspect term where IoU <= 0.5
    iou = 1 - F.iou_loss(p, t, mode="linear", eps=1e-7, reduction="none")
    gated = F.ciou_loss(p, t, aspect_min_iou=0.5, reduction="none")
    low = iou <= 0.5
    assert low.any() and (~low).any()
    assert_close(gated[low], F.diou_loss(p, t, reduction="none")[low], F64)
    assert_close(gated[~low], F.ciou_loss(p, t, reduction="none")[~low], F64)
    # modes of the IoU loss
    lin = F.iou_loss(p, t, mode="linear", reduction="none")
    sq = F.iou_loss(p, t, mode="square", reduction="none")
    log = F.iou_loss(p, t, mode="log", reduction="none")
    assert_close(sq, 1 - (1 - lin) ** 2, F64)
    assert_close(log, -torch.log(1 - lin), F64)


def test_exact_values_from_hand_computation() -> None:
    """Numbers worked out on paper (not by the code under test)."""
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=F64)
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]], dtype=F64)  # I = 2, U = 6, C = 3 x 2, rho = 1
    eps = 1e-12
    assert_close(F.iou_loss(a, b, mode="linear", eps=eps), torch.tensor(2 / 3, dtype=F64), F64)
    assert_close(F.giou_loss(a, b, eps=eps), torch.tensor(2 / 3, dtype=F64), F64)
    assert_close(F.diou_loss(a, b, eps=eps), torch.tensor(2 / 3 + 1 / 13, dtype=F64), F64)
    # CIoU, w/h: 2/1 vs 1/1, IoU = 1/2, rho^2 = 1/4, c^2 = 5
    p = torch.tensor([[0.0, 0.0, 2.0, 1.0]], dtype=F64)
    q = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=F64)
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    want = 0.5 + 0.25 / 5 + v / (0.5 + v) * v
    assert_close(F.ciou_loss(p, q, eps=eps), torch.tensor(want, dtype=F64), F64)


@given(
    st.lists(st.floats(-50, 50), min_size=2, max_size=2),
    st.lists(st.floats(0.1, 20), min_size=2, max_size=2),
    st.lists(st.floats(-50, 50), min_size=2, max_size=2),
    st.lists(st.floats(0.1, 20), min_size=2, max_size=2),
    st.floats(0.1, 10),
)
def test_property_bounds_symmetry_and_invariance(
    xy: list[float], wh: list[float], uv: list[float], st_wh: list[float], scale: float
) -> None:
    p = torch.tensor([[xy[0], xy[1], xy[0] + wh[0], xy[1] + wh[1]]], dtype=F64)
    t = torch.tensor([[uv[0], uv[1], uv[0] + st_wh[0], uv[1] + st_wh[1]]], dtype=F64)
    eps = 1e-15  # eps / area stays below the tolerances for the smallest scaled boxes
    lin = F.iou_loss(p, t, mode="linear", eps=eps)
    giou, diou, ciou = (fn(p, t, eps=eps) for fn in (F.giou_loss, F.diou_loss, F.ciou_loss))
    assert 0 <= lin <= 1
    assert lin - 1e-12 <= giou < 2
    assert lin - 1e-12 <= diou < 2
    assert diou - 1e-12 <= ciou < 2.5
    for fn in (F.giou_loss, F.diou_loss, F.ciou_loss):
        value = fn(p, t, eps=eps)
        # symmetric in the two boxes, and invariant to translation and scale
        assert_close(fn(t, p, eps=eps), value, F64, rtol=1e-9, atol=1e-9)
        shift = torch.tensor([3.0, -7.0, 3.0, -7.0], dtype=F64)
        assert_close(fn(p + shift, t + shift, eps=eps), value, F64, rtol=1e-9, atol=1e-9)
        assert_close(fn(p * scale, t * scale, eps=eps), value, F64, rtol=1e-8, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Shapes, weights and errors
# --------------------------------------------------------------------------------------------------


def test_weight_per_box_or_per_coordinate() -> None:
    p, t = _boxes(6)
    none = F.giou_loss(p, t, reduction="none")
    w4 = torch.rand(6, 4, dtype=F64)
    assert_close(F.giou_loss(p, t, weight=w4, reduction="none"), none * w4.mean(-1), F64)
    assert_close(
        F.giou_loss(p, t, weight=w4, avg_factor=2.5), (none * w4.mean(-1)).sum() / 2.5, F64
    )
    assert_close(F.giou_loss(p, t, weight=torch.tensor(2.0)), 2 * none.mean(), F64)
    with pytest.raises(ValueError, match="weight"):
        F.giou_loss(p, t, weight=torch.ones(6, 3))
    with pytest.raises(ValueError, match="weight"):
        F.giou_loss(p, t, weight=torch.ones(4))


@pytest.mark.parametrize("fn", [F.iou_loss, F.giou_loss, F.diou_loss, F.ciou_loss])
def test_errors(fn: Any) -> None:
    name = fn.__name__
    with pytest.raises(
        ValueError, match=rf"{name}: expected `pred` a tensor of shape \(\.\.\., 4\)"
    ):
        fn(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="pred"):
        fn(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="target"):
        fn(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="floating"):
        fn(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"eps"):
        fn(torch.zeros(3, 4), torch.zeros(3, 4), eps=0.0)
    inverted = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"x2 >= x1 and y2 >= y1, got 1 inverted"):
        fn(torch.zeros(2, 4), inverted)
    with lf.value_checks(False):  # no check: finite anyway (the inverted target is empty)
        x = torch.zeros(2, 4, requires_grad=True)
        out = fn(x, inverted)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="reduction"):
        fn(torch.zeros(3, 4), torch.zeros(3, 4), reduction="batchmean")


def test_option_errors() -> None:
    with pytest.raises(ValueError, match=r"iou_loss: expected `mode` one of 'linear', 'square'"):
        F.iou_loss(torch.zeros(1, 4), torch.zeros(1, 4), mode="exp")
    with pytest.raises(ValueError, match=r"ciou_loss: expected `aspect_min_iou` in \[0, 1\]"):
        F.ciou_loss(torch.zeros(1, 4), torch.zeros(1, 4), aspect_min_iou=1.5)
    with pytest.raises(ValueError, match="mode"):
        lf.IoULoss(mode="exp")
    with pytest.raises(ValueError, match="eps"):
        lf.GIoULoss(eps=-1.0)
    # IoU's clamp at eps: at 1 or above every loss would be 0 or negative (identical boxes at
    # eps = 2 gave -0.69)
    for eps in (1.0, 2.0, 0.0):
        with pytest.raises(ValueError, match=r"iou_loss: expected `eps` in \(0, 1\)"):
            F.iou_loss(torch.zeros(1, 4), torch.zeros(1, 4), eps=eps)
        with pytest.raises(ValueError, match=r"IoULoss: expected `eps` in \(0, 1\)"):
            lf.IoULoss(eps=eps)


def test_module_is_a_drop_in_for_mmdetection_heads() -> None:
    loss = lf.build_loss({"type": "giou", "loss_weight": 2.0, "reduction": "mean"})
    p, t = _boxes(8)
    w = torch.ones(8, 4, dtype=F64)
    got = loss(p, t, w, avg_factor=4.0)
    assert_close(got, 2.0 * F.giou_loss(p, t, reduction="sum") / 4.0, F64)
    assert loss(p, t, reduction_override="none").shape == (8,)
    assert "eps=1e-07" in repr(loss)


@pytest.mark.parametrize("name", ["giou_loss", "diou_loss", "ciou_loss"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_inverted_prediction_is_bounded_with_finite_gradients(
    name: str, dtype: torch.dtype
) -> None:
    """A predicted box with x2 < x1 (or y2 < y1) is an empty box: the enclosing box holds its
    corners, so DIoU's centre term stays <= 1 and every loss <= 3 (IoU 0, GIoU's ratio <= 1,
    CIoU's aspect term <= 1), with finite gradients in fp16. With the target's corners only, the
    centre left the enclosing box: 46 for a 20-pixel inversion, inf fp16 gradients at 1e4 (found
    by a fuzzer)."""
    fn = getattr(F, name)
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 9.0, 8.0]])
    pred = torch.tensor([[20.0, 0.0, 0.0, 1.0], [1e4, 0.0, 0.0, 1.0], [6.0, 9.0, 8.0, -300.0]])
    x = pred.to(dtype).requires_grad_(True)
    loss = fn(x, target.to(dtype), reduction="none")
    loss.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), x.grad
    assert torch.isfinite(loss).all() and (loss <= 3.0).all(), loss


def test_enclosing_box_of_ordered_boxes_is_unchanged() -> None:
    """For x1 <= x2 the all-corner enclosing box is the usual one: DIoU equals the paper's
    formula written with the usual enclosure (the reference)."""
    gen = torch.Generator().manual_seed(4)
    p, t = make_boxes(64, F64, gen)
    assert_close(F.diou_loss(p, t, reduction="none", eps=1e-7), ref.diou(p, t, 1e-7), F64)


@pytest.mark.parametrize("name", ["giou_loss", "diou_loss"])  # (CIoU shares DIoU's terms)
def test_zero_width_prediction_keeps_the_usual_subgradient(name: str) -> None:
    """The ordered-corner enclosure adds nothing at x1 == x2: the enclosing side's gradient
    stays on x2 (a clamp at 0 passed it to x1 instead; found by a review), as the usual
    enclosing box (mmdetection's formula) gives it."""
    fn = getattr(F, name)
    target = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]], dtype=F64)
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [-2.0, 1.0, -2.0, 3.0]], dtype=F64)

    def usual(p: torch.Tensor) -> torch.Tensor:  # the loss with the usual enclosing box
        px1, py1, px2, py2 = p.unbind(-1)
        tx1, ty1, tx2, ty2 = target.unbind(-1)
        w, h = (px2 - px1).clamp(min=0), (py2 - py1).clamp(min=0)
        inter = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0) * (
            torch.minimum(py2, ty2) - torch.maximum(py1, ty1)
        ).clamp(min=0)
        union = w * h + 16.0 - inter
        iou = inter / (union + 1e-7)
        cw = (torch.maximum(px2, tx2) - torch.minimum(px1, tx1)).clamp(min=0)
        ch = (torch.maximum(py2, ty2) - torch.minimum(py1, ty1)).clamp(min=0)
        if name == "giou_loss":
            return 1 - iou + (cw * ch - union) / (cw * ch + 1e-7)
        rho2 = 0.25 * (((px1 + px2) - (tx1 + tx2)) ** 2 + ((py1 + py2) - (ty1 + ty2)) ** 2)
        return 1 - iou + rho2 / (cw * cw + ch * ch + 1e-7)

    x = pred.clone().requires_grad_(True)
    fn(x, target, reduction="sum", eps=1e-7).backward()
    y = pred.clone().requires_grad_(True)
    usual(y).sum().backward()
    assert_close(x.grad, y.grad, F64)
