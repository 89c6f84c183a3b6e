"""Module forms of the asymmetric losses (ASL)."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = ["AsymmetricLoss", "SoftmaxAsymmetricLoss"]


class AsymmetricLoss(
    Loss,
    functional=F.asymmetric_loss,
    traits=Traits(
        example="sigmoid_dense",
        plot="sigmoid",
        task="multi_label",
        sweep={"gamma_neg": [0.0, 1.0, 2.0, 4.0]},
    ),
):
    """Module form of :func:`lossforge.functional.asymmetric_loss` (multi-label ASL on logits).

    Defaults are the paper's multi-label setting ($\\gamma_+ = 0$, $\\gamma_- = 4$, $m = 0.05$);
    ``reduction="mean"`` averages over elements, while the reference repo and timm return the sum
    (use ``reduction="sum"`` for their number).

    Example:
        >>> loss = AsymmetricLoss(reduction="sum")
        >>> loss(torch.tensor([[3.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]))
        tensor(0.1404)
    """


class SoftmaxAsymmetricLoss(
    Loss,
    functional=F.softmax_asymmetric_loss,
    traits=Traits(
        example="softmax_index",
        plot="softmax",
        task="single_label",
        sweep={"gamma_neg": [0.0, 1.0, 2.0, 4.0]},
    ),
):
    """Module form of :func:`lossforge.functional.softmax_asymmetric_loss` (single-label ASL).

    ``label_smoothing`` is what the reference's ``ASLSingleLabel`` calls ``eps``.

    Example:
        >>> loss = SoftmaxAsymmetricLoss(gamma_neg=0.0, label_smoothing=0.0)
        >>> loss(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0]))
        tensor(0.2413)
    """
