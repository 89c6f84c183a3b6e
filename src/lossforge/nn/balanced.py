"""Module forms of the class-balanced binary cross-entropies."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["BalancedBinaryCrossEntropyLoss", "OHEMBinaryCrossEntropyLoss"]


class BalancedBinaryCrossEntropyLoss(
    Loss,
    functional=F.balanced_binary_cross_entropy,
    traits=Traits(
        example="sigmoid_dense",
        plot="sigmoid",
        task="multi_label",
        sweep={"beta": [0.25, 0.5, 0.75]},
    ),
):
    """Module form of :func:`lossforge.functional.balanced_binary_cross_entropy` (HED).

    Example:
        >>> loss = BalancedBinaryCrossEntropyLoss(reduction="sum")
        >>> loss(torch.tensor([[2.0, -1.0, 0.0, -3.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        tensor(0.3589)
    """


class OHEMBinaryCrossEntropyLoss(
    Loss,
    functional=F.ohem_binary_cross_entropy,
    traits=Traits(
        example="sigmoid_dense",
        not_plotted="hard negatives are mined across the batch",
        task="multi_label",
        mean_is_count=False,
    ),
):
    """Module form of :func:`lossforge.functional.ohem_binary_cross_entropy` (DB / mmocr).

    The training ``mask`` is a per-batch input, so it is a ``forward`` argument.

    Example:
        >>> loss = OHEMBinaryCrossEntropyLoss(negative_ratio=2.0)
        >>> x = torch.tensor([2.0, -1.0, 1.0, -3.0, 0.5])
        >>> loss(x, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]), mask=torch.ones(5))
        tensor(0.8048)
    """
