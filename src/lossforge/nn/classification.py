"""Module forms of the classification losses."""

from __future__ import annotations

from lossforge import functional as F
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = [
    "BalancedSoftmaxLoss",
    "BinaryCrossEntropyLoss",
    "BinaryCrossEntropyWithLogitsLoss",
    "CrossEntropyLoss",
    "LogitAdjustedLoss",
    "NLLLoss",
]


class CrossEntropyLoss(
    Loss,
    functional=F.cross_entropy,
    traits=Traits(
        example="softmax_index",
        plot="softmax",
        task="single_label",
        sweep={"label_smoothing": [0.0, 0.1, 0.2]},
    ),
):
    """Module form of :func:`lossforge.functional.cross_entropy`.

    ``class_weight`` is a buffer (it follows ``.to()`` and ``state_dict``); lists are accepted.

    Example:
        >>> loss = CrossEntropyLoss(label_smoothing=0.1, class_weight=[1.0, 2.0, 1.0])
        >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 1]))
        tensor(1.0864)
    """


class NLLLoss(
    Loss,
    functional=F.nll_loss,
    name="nll",
    traits=Traits(example="log_probs_index", plot="softmax-logprob", logits=False),
):
    """Module form of :func:`lossforge.functional.nll_loss` (input: log-probabilities)."""


class BinaryCrossEntropyLoss(
    Loss,
    functional=F.binary_cross_entropy,
    traits=Traits(example="probs_dense", plot="sigmoid-prob", logits=False),
):
    """Module form of :func:`lossforge.functional.binary_cross_entropy` (input: probabilities)."""


class BinaryCrossEntropyWithLogitsLoss(
    Loss,
    functional=F.binary_cross_entropy_with_logits,
    traits=Traits(
        example="sigmoid_dense",
        plot="sigmoid",
        task="multi_label",
        sweep={"label_smoothing": [0.0, 0.1]},
    ),
):
    """Module form of :func:`lossforge.functional.binary_cross_entropy_with_logits`.

    ``pos_weight`` is a buffer when given as a list or tensor (a list becomes a ``(C,)`` vector,
    which lines up with the last dim); a number stays a number.

    Example:
        >>> loss = BinaryCrossEntropyWithLogitsLoss(pos_weight=[2.0, 1.0])
        >>> loss(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
        tensor(0.8087)
    """


class BalancedSoftmaxLoss(
    Loss,
    functional=F.balanced_softmax_loss,
    traits=Traits(
        example="softmax_index",
        params={"class_counts": [50.0, 20.0, 10.0, 5.0, 1.0]},
        plot="softmax",
        task="single_label",
    ),
):
    """Module form of :func:`lossforge.functional.balanced_softmax_loss`.

    ``class_counts`` (and ``class_weight``) are buffers; lists are accepted.

    Example:
        >>> loss = BalancedSoftmaxLoss(class_counts=[90, 10])
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7506)
    """


class LogitAdjustedLoss(
    Loss,
    functional=F.logit_adjusted_loss,
    traits=Traits(
        example="softmax_index",
        params={"class_counts": [50.0, 20.0, 10.0, 5.0, 1.0]},
        plot="softmax",
        task="single_label",
        sweep={"tau": [0.0, 0.5, 1.0, 2.0]},
    ),
):
    """Module form of :func:`lossforge.functional.logit_adjusted_loss`.

    Exactly one of ``class_counts`` / ``priors`` (a buffer; the other is ``None``).

    Example:
        >>> loss = LogitAdjustedLoss(class_counts=[90, 10], tau=0.0)
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.3133)
    """
