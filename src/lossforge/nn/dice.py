"""Module forms of the region (overlap) losses."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["DiceLoss"]


class DiceLoss(
    Loss,
    functional=F.dice_loss,
    traits=Traits(
        example="segmentation_index", not_plotted="a set-level overlap over a whole mask"
    ),
):
    """Module form of :func:`lossforge.functional.dice_loss` (soft dice, V-Net).

    ``class_weight`` is a buffer (it follows ``.to()`` and ``state_dict``) and may be given as a
    list.

    Example:
        >>> import torch
        >>> loss = DiceLoss(class_weight=[0.5, 1.5])
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """
