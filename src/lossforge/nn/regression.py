"""Module forms of the regression losses."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["BalancedL1Loss", "HuberLoss", "L1Loss", "MSELoss", "SmoothL1Loss"]


class L1Loss(
    Loss,
    functional=F.l1_loss,
    traits=Traits(example="regression", plot="regression", logits=False),
):
    """Module form of :func:`lossforge.functional.l1_loss`.

    Example:
        >>> L1Loss(loss_weight=2.0)(torch.tensor([1.0]), torch.tensor([0.0]))
        tensor(2.)
    """


class MSELoss(
    Loss,
    functional=F.mse_loss,
    traits=Traits(example="regression", plot="regression", logits=False),
):
    """Module form of :func:`lossforge.functional.mse_loss`.

    Example:
        >>> MSELoss()(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
        tensor(2.5000)
    """


class SmoothL1Loss(
    Loss,
    functional=F.smooth_l1_loss,
    traits=Traits(
        example="regression", plot="regression", logits=False, sweep={"beta": [0.5, 1.0, 2.0]}
    ),
):
    """Module form of :func:`lossforge.functional.smooth_l1_loss`.

    Example:
        >>> SmoothL1Loss(beta=1.0)(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(1.3125)
    """


class HuberLoss(
    Loss,
    functional=F.huber_loss,
    traits=Traits(
        example="regression", plot="regression", logits=False, sweep={"delta": [0.5, 1.0, 2.0]}
    ),
):
    """Module form of :func:`lossforge.functional.huber_loss`.

    Example:
        >>> HuberLoss(delta=2.0)(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(2.0625)
    """


class BalancedL1Loss(
    Loss,
    functional=F.balanced_l1_loss,
    traits=Traits(
        example="regression",
        plot="regression",
        logits=False,
        sweep={"alpha": [0.25, 0.5, 1.0], "gamma": [1.5]},
    ),
):
    """Module form of :func:`lossforge.functional.balanced_l1_loss` (mmdetection's
    ``BalancedL1Loss``).

    Example:
        >>> BalancedL1Loss()(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(1.2893)
    """
