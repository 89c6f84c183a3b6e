r"""Box-overlap losses on ``(x1, y1, x2, y2)`` boxes: IoU, GIoU, DIoU and CIoU.

Every loss here takes predicted and target boxes of one shape ``(..., 4)`` and returns one value per
box, shape ``(...,)`` (``"mean"`` averages over boxes). A ``weight`` is per box (``(...,)`` or its
leading dimensions) or per coordinate (``(..., 4)``, averaged over the coordinates first, as
mmdetection's IoU losses do with ``(N, 4)`` weights).

With $I$ the intersection area, $U = |B| + |B^{gt}| - I$ the union, $C$ the smallest enclosing
box (width $c_w$, height $c_h$) and $\rho$ the distance between the box centres:

$$
\mathrm{IoU} = \frac{I}{U + \epsilon}, \qquad
\mathrm{GIoU} = \mathrm{IoU} - \frac{|C| - U}{|C| + \epsilon}, \qquad
\mathrm{DIoU} = \mathrm{IoU} - \frac{\rho^2}{c_w^2 + c_h^2 + \epsilon}.
$$

The numerics, shared by the four losses:

* Widths and heights are clamped at 0: a predicted box with ``x2 < x1`` (or ``y2 < y1``) is an
  empty box (area 0, no intersection), not a negative area that could make the union vanish.
  The intersection's sides are clamped at 0 too (mmdetection, torchvision); the enclosing box
  holds all four corners of both boxes (for ``x1 <= x2`` the usual enclosing box; for an
  inverted prediction it keeps the prediction's centre inside it, so DIoU's centre term stays
  at most 1).
* Every denominator is a sum of non-negative terms plus ``eps > 0``, so degenerate boxes (zero
  width or height, points, two identical points) and non-overlapping boxes give finite values and
  finite gradients. ``eps`` enters where torchvision puts it (``I / (U + eps)``,
  ``(|C| - U) / (|C| + eps)``, ``c^2 + eps``).
* CIoU's aspect angle is ``atan2(w, h)`` (``atan(w / h)`` for ``h > 0``): finite at ``h = 0``,
  and a zero-size box gets the angle $\pi/4$ with no gradient instead of ``0 / 0``.
* Inputs are computed in float32 (float64 stays float64), also for half-precision boxes, whose
  areas would overflow or lose all precision in float16.

Target boxes must satisfy ``x2 >= x1`` and ``y2 >= y1``; this is checked (a ``ValueError``) while
value checks are on (CPU tensors by default), never with a device sync.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._checks import fail, value_checks_on
from lossforge._params import OpenUnitInterval, Positive, Probability, loss_function
from lossforge._reduction import AvgFactor, Reduction

__all__ = ["ciou_loss", "diou_loss", "giou_loss", "iou_loss"]


class _Pair(NamedTuple):
    """The overlap terms of a predicted box and its target (one entry per box)."""

    iou: Tensor  # I / (U + eps)
    union: Tensor  # U
    enclose_w: Tensor  # c_w
    enclose_h: Tensor  # c_h
    w: Tensor  # predicted width (clamped at 0)
    h: Tensor
    tw: Tensor  # target width
    th: Tensor
    center_dist2: Tensor  # rho^2


#: Why box coordinates must be finite (the value checks' explanation).
_FINITE_WHY = (
    "a box with an infinite side has no area, overlap or centre to compare: IoU, GIoU and DIoU "
    "would be inf / inf"
)


def _check_target_boxes(fn: str, t: Tensor) -> None:
    if t.numel() == 0 or not value_checks_on(t):
        return
    t = t.detach()
    n_bad = int((~torch.isfinite(t)).sum())
    if n_bad:
        fail(
            fn,
            "target",
            f"finite values ({_FINITE_WHY})",
            f"{n_bad} NaN or infinite of {t.numel()}",
        )
    bad = (t[..., 2] < t[..., 0]) | (t[..., 3] < t[..., 1])
    if bool(bad.any()):
        fail(
            fn,
            "target",
            "(x1, y1, x2, y2) boxes with x2 >= x1 and y2 >= y1",
            f"{int(bad.sum())} inverted boxes, e.g. {t[bad][0].tolist()}",
        )


def _pair(p: Tensor, t: Tensor, eps: float) -> _Pair:
    px1, py1, px2, py2 = p.unbind(-1)
    tx1, ty1, tx2, ty2 = t.unbind(-1)
    pw, ph = px2 - px1, py2 - py1
    w, h = pw.clamp(min=0), ph.clamp(min=0)
    tw, th = (tx2 - tx1).clamp(min=0), (ty2 - ty1).clamp(min=0)
    iw = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0)
    ih = (torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp(min=0)
    inter = iw * ih
    union = w * h + tw * th - inter
    # The enclosing box holds all four corners of both boxes: for a predicted box with x2 < x1
    # (an empty box) its centre stays inside it, so DIoU's rho^2 / c^2 stays <= 1 (with the
    # target's corners only, an inverted prediction's centre left it: a loss growing with the
    # square of the inversion, fp16 gradients overflowing). The prediction's corners in order
    # are (x1 + n, x2 - n) with n = min(x2 - x1, 0): for x1 <= x2 (n = 0) the usual box.
    nx, ny = pw - w, ph - h  # (min(d, 0) with no gradient at d = 0, where x1 == x2)
    cw = torch.maximum(px2 - nx, tx2) - torch.minimum(px1 + nx, tx1)
    ch = torch.maximum(py2 - ny, ty2) - torch.minimum(py1 + ny, ty1)
    # (sum of x-coordinates difference)^2 / 4 = squared distance of the centres along x
    dx = (px1 + px2) - (tx1 + tx2)
    dy = (py1 + py2) - (ty1 + ty2)
    return _Pair(inter / (union + eps), union, cw, ch, w, h, tw, th, 0.25 * (dx * dx + dy * dy))


def _aspect_angle(w: Tensor, h: Tensor) -> Tensor:
    """atan(w / h) as atan2(w, h); a box with w = h = 0 gets pi/4 and no gradient."""
    nonzero = (w > 0) | (h > 0)
    one = torch.ones_like(w)
    angle = torch.atan2(torch.where(nonzero, w, one), torch.where(nonzero, h, one))
    return torch.where(nonzero, angle, math.pi / 4)


def _iou(p: Tensor, t: Tensor, _total: str | None, *, fn: str, mode: str, eps: float) -> Tensor:
    _check_target_boxes(fn, t)
    q = _pair(p, t, eps)
    # An infinite union (a side at +inf with value checks off, or finite sides whose area
    # overflows) makes I / U = 0: the clamped loss would be a finite -log(eps) with NaN
    # gradients (inf * 0 in the area's backward). 0 * U makes that box's loss NaN, loud as
    # GIoU's and DIoU's are, with or without value checks; a finite union adds 0 (and a -inf x2,
    # an empty box, keeps its finite limit).
    iou = (q.iou + 0.0 * q.union).clamp(min=eps)
    if mode == "linear":
        return 1.0 - iou
    if mode == "square":
        return 1.0 - iou * iou
    return -torch.log(iou)


def _giou(p: Tensor, t: Tensor, _total: str | None, *, fn: str, eps: float) -> Tensor:
    _check_target_boxes(fn, t)
    q = _pair(p, t, eps)
    area_c = q.enclose_w * q.enclose_h
    return 1.0 - q.iou + (area_c - q.union) / (area_c + eps)


def _diou_terms(q: _Pair, eps: float) -> Tensor:
    """1 - IoU + rho^2 / (c^2 + eps): the DIoU loss."""
    diag2 = q.enclose_w * q.enclose_w + q.enclose_h * q.enclose_h + eps
    return 1.0 - q.iou + q.center_dist2 / diag2


def _diou(p: Tensor, t: Tensor, _total: str | None, *, fn: str, eps: float) -> Tensor:
    _check_target_boxes(fn, t)
    return _diou_terms(_pair(p, t, eps), eps)


def _ciou(
    p: Tensor,
    t: Tensor,
    _total: str | None,
    *,
    fn: str,
    eps: float,
    aspect_min_iou: float | None,
    detach_tradeoff: bool,
) -> Tensor:
    _check_target_boxes(fn, t)
    q = _pair(p, t, eps)
    delta = _aspect_angle(q.tw, q.th) - _aspect_angle(q.w, q.h)
    v = (4.0 / math.pi**2) * delta * delta
    iou, v_alpha = (q.iou.detach(), v.detach()) if detach_tradeoff else (q.iou, v)
    alpha = v_alpha / (1.0 - iou + v_alpha + eps)
    if aspect_min_iou is not None:
        alpha = torch.where(iou > aspect_min_iou, alpha, torch.zeros_like(alpha))
    return _diou_terms(q, eps) + alpha * v


@loss_function
def iou_loss(
    pred: Tensor,
    target: Tensor,
    *,
    mode: Literal["linear", "square", "log"] = "log",
    eps: OpenUnitInterval = 1e-6,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""IoU loss between predicted and target ``(x1, y1, x2, y2)`` boxes.

    With $\mathrm{IoU} = \max\bigl(I / (U + \epsilon), \epsilon\bigr)$ per box pair,

    $$
    \ell = \begin{cases} 1 - \mathrm{IoU} & \text{mode="linear"} \\
    1 - \mathrm{IoU}^2 & \text{mode="square"} \\
    -\log \mathrm{IoU} & \text{mode="log" (UnitBox)} \end{cases}
    $$

    The IoU is clamped at ``eps`` in every mode, as mmdetection's ``IoULoss`` does: the loss is
    finite for non-overlapping boxes but has no gradient there (use :func:`giou_loss` or
    :func:`diou_loss` when boxes may not overlap). Equals mmdetection's
    ``IoULoss(mode=..., eps=...)`` up to where ``eps`` enters the IoU (there ``I / max(U, eps)``,
    here ``I / (U + eps)``, as torchvision writes it): a relative difference of about
    ``eps / U`` in the IoU, negligible for boxes in pixels but about 1 % for normalised
    coordinates with unions near ``1e-4`` at the default ``eps``; pass a smaller ``eps`` there.

    Args:
        pred: Predicted boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``.
        target: Target boxes of ``pred``'s shape, with ``x2 >= x1`` and ``y2 >= y1``.
        mode: ``"linear"`` | ``"square"`` | ``"log"``.
        eps: Lower clamp of the IoU and the union's guard, in ``(0, 1)`` (a clamp at 1 or
            above would make every loss 0 or negative).
        weight: Per-box weight: the loss shape ``(...,)`` or its leading dimensions, or per
            coordinate ``(..., 4)`` (averaged over the 4 coordinates, as mmdetection does).
        reduction: ``"none"`` | ``"mean"`` (over boxes, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (e.g. the number of positive boxes).

    Returns:
        ``(...,)`` (one value per box) for ``"none"``, else a scalar; float32 (float64 for
        float64 boxes).

    References:
        Yu, Jiang, Wang, Cao, Huang, "UnitBox: An Advanced Object Detection Network", ACM MM 2016,
        arXiv:1608.01471.

    Example:
        >>> box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
        >>> iou_loss(box, torch.tensor([[1.0, 0.0, 3.0, 2.0]]), mode="linear")
        tensor(0.6667)
    """
    return pipeline.regression(
        "iou_loss",
        pred,
        target,
        loss=partial(_iou, fn="iou_loss", mode=mode, eps=eps),
        vector=4,
        infinite="finite",
        finite_why=_FINITE_WHY,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


@loss_function
def giou_loss(
    pred: Tensor,
    target: Tensor,
    *,
    eps: Positive = 1e-7,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Generalized IoU loss between ``(x1, y1, x2, y2)`` boxes.

    $$
    \ell = 1 - \mathrm{IoU} + \frac{|C| - U}{|C| + \epsilon}, \qquad
    \mathrm{IoU} = \frac{I}{U + \epsilon},
    $$

    with $C$ the smallest box enclosing both. $\ell \in [0, 2)$; for disjoint boxes the second
    term still pulls the prediction towards the target. Equals
    ``torchvision.ops.generalized_box_iou_loss`` (same ``eps`` placement) and mmdetection's
    ``GIoULoss`` up to where ``eps`` enters (there ``max(U, eps)``, ``max(|C|, eps)``): a relative
    difference of about ``eps / U``, which matters only for tiny unions (normalised coordinates:
    see :func:`iou_loss`).

    Args:
        pred: Predicted boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``.
        target: Target boxes of ``pred``'s shape, with ``x2 >= x1`` and ``y2 >= y1``.
        eps: Guard of the denominators, ``> 0``.
        weight: Per-box weight: the loss shape ``(...,)`` or its leading dimensions, or per
            coordinate ``(..., 4)`` (averaged over the 4 coordinates, as mmdetection does).
        reduction: ``"none"`` | ``"mean"`` (over boxes, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (e.g. the number of positive boxes).

    Returns:
        ``(...,)`` for ``"none"``, else a scalar.

    References:
        Rezatofighi, Tsoi, Gwak, Sadeghian, Reid, Savarese, "Generalized Intersection over Union:
        A Metric and A Loss for Bounding Box Regression", CVPR 2019, arXiv:1902.09630.

    Example:
        >>> box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        >>> giou_loss(box, torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
        tensor(1.3333)
    """
    return pipeline.regression(
        "giou_loss",
        pred,
        target,
        loss=partial(_giou, fn="giou_loss", eps=eps),
        vector=4,
        infinite="finite",
        finite_why=_FINITE_WHY,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


@loss_function
def diou_loss(
    pred: Tensor,
    target: Tensor,
    *,
    eps: Positive = 1e-7,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Distance-IoU loss between ``(x1, y1, x2, y2)`` boxes.

    $$
    \ell = 1 - \mathrm{IoU} + \frac{\rho^2(b, b^{gt})}{c^2 + \epsilon},
    $$

    with $\rho$ the distance between the box centres and $c$ the diagonal of the smallest
    enclosing box. $\ell \in [0, 2)$. Equals ``torchvision.ops.distance_box_iou_loss`` and
    mmdetection's ``DIoULoss`` (both put ``eps`` where this function does).

    Args:
        pred: Predicted boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``.
        target: Target boxes of ``pred``'s shape, with ``x2 >= x1`` and ``y2 >= y1``.
        eps: Guard of the denominators, ``> 0``.
        weight: Per-box weight: the loss shape ``(...,)`` or its leading dimensions, or per
            coordinate ``(..., 4)`` (averaged over the 4 coordinates, as mmdetection does).
        reduction: ``"none"`` | ``"mean"`` (over boxes, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (e.g. the number of positive boxes).

    Returns:
        ``(...,)`` for ``"none"``, else a scalar.

    References:
        Zheng, Wang, Liu, Li, Ye, Ren, "Distance-IoU Loss: Faster and Better Learning for
        Bounding Box Regression", AAAI 2020, arXiv:1911.08287.

    Example:
        >>> box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        >>> diou_loss(box, torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
        tensor(1.4000)
    """
    return pipeline.regression(
        "diou_loss",
        pred,
        target,
        loss=partial(_diou, fn="diou_loss", eps=eps),
        vector=4,
        infinite="finite",
        finite_why=_FINITE_WHY,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )


@loss_function
def ciou_loss(
    pred: Tensor,
    target: Tensor,
    *,
    eps: Positive = 1e-7,
    aspect_min_iou: Probability | None = None,
    detach_tradeoff: bool = True,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    r"""Complete-IoU loss between ``(x1, y1, x2, y2)`` boxes.

    $$
    \ell = 1 - \mathrm{IoU} + \frac{\rho^2(b, b^{gt})}{c^2 + \epsilon} + \alpha v, \qquad
    v = \frac{4}{\pi^2}\Bigl(\arctan\frac{w^{gt}}{h^{gt}} - \arctan\frac{w}{h}\Bigr)^2, \qquad
    \alpha = \frac{v}{1 - \mathrm{IoU} + v + \epsilon}.
    $$

    By default the trade-off factor $\alpha$ is a constant of the gradient
    (``detach_tradeoff=True``): the paper derives the gradient of $v$ only, and torchvision,
    mmdetection and the authors' code compute $\alpha$ under ``no_grad``, so gradients match
    theirs. ``detach_tradeoff=False`` differentiates $\alpha$ too (the exact gradient of the
    value). $v$ is always differentiated exactly; the aspect angle is ``atan2(w, h)``, finite for
    ``h = 0``.

    ``aspect_min_iou`` selects the variant: ``None`` (default) applies $\alpha v$ everywhere, as
    the AAAI 2020 paper and ``torchvision.ops.complete_box_iou_loss``; ``0.5`` sets $\alpha = 0$
    where $\mathrm{IoU} \le 0.5$, as the journal version (Zheng et al., IEEE TCYB 2021) and
    mmdetection's ``CIoULoss`` (whose final clamp of the CIoU to ``[-1, 1]`` never binds:
    with the gate, the loss stays below 2).

    Args:
        pred: Predicted boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``.
        target: Target boxes of ``pred``'s shape, with ``x2 >= x1`` and ``y2 >= y1``.
        eps: Guard of the denominators, ``> 0``.
        aspect_min_iou: Apply the aspect-ratio term only where IoU exceeds this value (``0.5``:
            mmdetection); ``None`` applies it everywhere (torchvision).
        detach_tradeoff: Treat $\alpha$ as a constant of the gradient (the peers' convention).
        weight: Per-box weight: the loss shape ``(...,)`` or its leading dimensions, or per
            coordinate ``(..., 4)`` (averaged over the 4 coordinates, as mmdetection does).
        reduction: ``"none"`` | ``"mean"`` (over boxes, or ``avg_factor``) | ``"sum"``.
        avg_factor: Denominator of ``"mean"`` (e.g. the number of positive boxes).

    Returns:
        ``(...,)`` for ``"none"``, else a scalar.

    References:
        Zheng, Wang, Liu, Li, Ye, Ren, "Distance-IoU Loss: Faster and Better Learning for
        Bounding Box Regression", AAAI 2020, arXiv:1911.08287; Zheng et al., "Enhancing
        Geometric Factors in Model Learning and Inference for Object Detection and Instance
        Segmentation", IEEE TCYB 2021, arXiv:2005.03572.

    Example:
        >>> box = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
        >>> ciou_loss(box, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
        tensor(0.5532)
    """
    return pipeline.regression(
        "ciou_loss",
        pred,
        target,
        loss=partial(
            _ciou,
            fn="ciou_loss",
            eps=eps,
            aspect_min_iou=aspect_min_iou,
            detach_tradeoff=detach_tradeoff,
        ),
        vector=4,
        infinite="finite",
        finite_why=_FINITE_WHY,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
    )
