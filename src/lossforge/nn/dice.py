"""Module forms of the region (overlap) losses."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = [
    "DiceLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "JaccardLoss",
    "TverskyLoss",
]

_OVERLAP = "a set-level overlap over a whole mask"


class DiceLoss(
    Loss,
    functional=F.dice_loss,
    traits=Traits(example="segmentation_index", not_plotted=_OVERLAP, region=True),
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


class TverskyLoss(
    Loss,
    functional=F.tversky_loss,
    traits=Traits(example="segmentation_index", not_plotted=_OVERLAP, region=True),
):
    """Module form of :func:`lossforge.functional.tversky_loss` (Salehi et al. 2017).

    Example:
        >>> import torch
        >>> loss = TverskyLoss(alpha=0.3, beta=0.7)
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """


class FocalTverskyLoss(
    Loss,
    functional=F.focal_tversky_loss,
    traits=Traits(example="segmentation_index", not_plotted=_OVERLAP, region=True),
):
    """Module form of :func:`lossforge.functional.focal_tversky_loss` (Abraham & Khan 2019;
    ``gamma`` is the exponent, the paper's ``1 / gamma``).

    Example:
        >>> import torch
        >>> loss = FocalTverskyLoss(gamma=0.75)
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """


class JaccardLoss(
    Loss,
    functional=F.jaccard_loss,
    traits=Traits(example="segmentation_index", not_plotted=_OVERLAP, region=True),
):
    """Module form of :func:`lossforge.functional.jaccard_loss` (soft IoU).

    Example:
        >>> import torch
        >>> loss = JaccardLoss(batch=True, soft_label=True)
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """


class GeneralizedDiceLoss(
    Loss,
    functional=F.generalized_dice_loss,
    traits=Traits(example="segmentation_index", not_plotted=_OVERLAP, region=True),
):
    """Module form of :func:`lossforge.functional.generalized_dice_loss` (Sudre et al. 2017).

    Example:
        >>> import torch
        >>> loss = GeneralizedDiceLoss(weight_type="simple")
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """
