"""Module forms of the Lovasz losses."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["LovaszHingeLoss", "LovaszSoftmaxLoss"]

_SORTED = "a set-level surrogate: the errors of a whole mask are sorted"


class LovaszSoftmaxLoss(
    Loss,
    functional=F.lovasz_softmax_loss,
    traits=Traits(example="segmentation_index", not_plotted=_SORTED, region=True),
):
    """Module form of :func:`lossforge.functional.lovasz_softmax_loss` (Berman et al. 2018).

    Example:
        >>> import torch
        >>> loss = LovaszSoftmaxLoss(classes="all", batch=True)
        >>> loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])).shape
        torch.Size([])
    """


class LovaszHingeLoss(
    Loss,
    functional=F.lovasz_hinge_loss,
    traits=Traits(example="segmentation_binary", not_plotted=_SORTED, region=True),
):
    """Module form of :func:`lossforge.functional.lovasz_hinge_loss` (Berman et al. 2018).

    Example:
        >>> import torch
        >>> loss = LovaszHingeLoss()
        >>> loss(torch.zeros(2, 1, 3), torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])).shape
        torch.Size([])
    """
