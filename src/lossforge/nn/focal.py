"""Module forms of the focal losses."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["SigmoidFocalLoss", "SoftmaxFocalLoss"]


class SigmoidFocalLoss(
    Loss,
    functional=F.sigmoid_focal_loss,
    traits=Traits(
        example="sigmoid_index",
        plot="sigmoid",
        task="multi_label",
        sweep={"gamma": [0.0, 0.5, 1.0, 2.0, 5.0], "alpha": [None]},
    ),
):
    """Module form of :func:`lossforge.functional.sigmoid_focal_loss`.

    Drop-in for mmdetection's ``FocalLoss(use_sigmoid=True)``: ``forward(logits, target, weight,
    avg_factor, reduction_override)`` with index targets (``C`` = background) or dense targets.

    Example:
        >>> loss = SigmoidFocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0)
        >>> loss(torch.zeros(2, 3), torch.tensor([1, 3]), avg_factor=1.0)
        tensor(0.6931)
    """


class SoftmaxFocalLoss(
    Loss,
    functional=F.softmax_focal_loss,
    traits=Traits(
        example="softmax_index",
        plot="softmax",
        task="single_label",
        sweep={"gamma": [0.0, 0.5, 1.0, 2.0, 5.0]},
    ),
):
    """Module form of :func:`lossforge.functional.softmax_focal_loss`.

    A per-class ``alpha`` (sequence or tensor) and ``class_weight`` are buffers (they follow
    ``.to()`` and ``state_dict``); lists are accepted. A float ``alpha`` stays a plain attribute.

    Example:
        >>> loss = SoftmaxFocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.25], label_smoothing=0.1)
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 1]))
        tensor(0.1811)
    """
