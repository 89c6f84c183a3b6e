"""Module forms of the box-overlap losses (IoU, GIoU, DIoU, CIoU)."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["CIoULoss", "DIoULoss", "GIoULoss", "IoULoss"]

_NOT_PLOTTED = "a loss of (x1, y1, x2, y2) box pairs, not of one scalar"


class IoULoss(
    Loss,
    functional=F.iou_loss,
    traits=Traits(example="boxes", not_plotted=_NOT_PLOTTED, logits=False),
):
    """Module form of :func:`lossforge.functional.iou_loss`.

    Drop-in for mmdetection's ``IoULoss(mode=..., eps=...)``: ``forward(pred, target, weight,
    avg_factor, reduction_override)`` with ``(N,)`` or ``(N, 4)`` weights.

    Example:
        >>> loss = IoULoss(mode="linear")
        >>> loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
        tensor(0.6667)
    """


class GIoULoss(
    Loss,
    functional=F.giou_loss,
    traits=Traits(example="boxes", not_plotted=_NOT_PLOTTED, logits=False),
):
    """Module form of :func:`lossforge.functional.giou_loss`.

    Example:
        >>> GIoULoss()(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
        tensor(1.3333)
    """


class DIoULoss(
    Loss,
    functional=F.diou_loss,
    traits=Traits(example="boxes", not_plotted=_NOT_PLOTTED, logits=False),
):
    """Module form of :func:`lossforge.functional.diou_loss`.

    Example:
        >>> DIoULoss()(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
        tensor(1.4000)
    """


class CIoULoss(
    Loss,
    functional=F.ciou_loss,
    # The registry-wide contract checks gradients against finite differences, which only the
    # exact-gradient variant can pass; tests/test_box.py checks the default (a constant alpha)
    # against its own reference.
    traits=Traits(
        example="boxes",
        params={"detach_tradeoff": False},
        not_plotted=_NOT_PLOTTED,
        logits=False,
    ),
):
    """Module form of :func:`lossforge.functional.ciou_loss`.

    ``CIoULoss(aspect_min_iou=0.5)`` is mmdetection's ``CIoULoss``; the default is torchvision's
    ``complete_box_iou_loss``.

    Example:
        >>> CIoULoss()(torch.tensor([[0.0, 0.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
        tensor(0.5532)
    """
