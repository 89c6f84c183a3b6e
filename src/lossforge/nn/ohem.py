"""Module form of the OHEM cross-entropy."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["OHEMCrossEntropyLoss"]


class OHEMCrossEntropyLoss(
    Loss,
    functional=F.ohem_cross_entropy,
    traits=Traits(
        example="segmentation_index",
        params={"min_kept": 12},
        not_plotted="hard positions are mined across the batch",
        mean_is_count=False,
    ),
):
    """Module form of :func:`lossforge.functional.ohem_cross_entropy` (mmsegmentation's OHEM).

    Example:
        >>> loss = OHEMCrossEntropyLoss(thresh=0.7, min_kept=2, ignore_index=255)
        >>> x = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 0.0], [0.0, 4.0]])
        >>> loss(x, torch.tensor([0, 1, 0, 255]))
        tensor(0.3937)
    """
