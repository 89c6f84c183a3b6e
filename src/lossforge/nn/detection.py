"""Module forms of the dense-detection losses: QFL, DFL, VFL, and the stateful GHM-C / GHM-R."""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import Tensor

from lossforge import functional as F
from lossforge._checks import check_number, fail
from lossforge._params import signature_domains
from lossforge._reduction import Reduction, check_avg_factor
from lossforge._traits import Traits
from lossforge.nn._base import Loss

__all__ = [
    "DistributionFocalLoss",
    "GHMCLoss",
    "GHMRLoss",
    "QualityFocalLoss",
    "VarifocalLoss",
]


class QualityFocalLoss(
    Loss,
    functional=F.quality_focal_loss,
    traits=Traits(
        example="quality_dense",
        plot="sigmoid",
        task="multi_label",
        sweep={"beta": [0.0, 1.0, 2.0, 4.0]},
    ),
):
    """Module form of :func:`lossforge.functional.quality_focal_loss`.

    Drop-in for mmdetection's ``QualityFocalLoss`` in GFL heads: ``forward(cls_score,
    (labels, scores), weight, avg_factor=...)``; dense quality targets and ``score=`` work too.

    Example:
        >>> loss = QualityFocalLoss(beta=2.0)
        >>> loss(torch.tensor([[0.0, 0.0]]), (torch.tensor([1]), torch.tensor([0.5])))
        tensor(0.0866)
    """


class DistributionFocalLoss(
    Loss,
    functional=F.distribution_focal_loss,
    traits=Traits(
        example="distribution",
        not_plotted="a distribution over n + 1 bins with a continuous target",
    ),
):
    """Module form of :func:`lossforge.functional.distribution_focal_loss`.

    Example:
        >>> DistributionFocalLoss()(torch.zeros(1, 5), torch.tensor([1.5]))
        tensor(1.6094)
    """


class VarifocalLoss(
    Loss,
    functional=F.varifocal_loss,
    traits=Traits(
        example="quality_dense",
        plot="sigmoid",
        task="multi_label",
        sweep={"gamma": [0.0, 1.0, 2.0, 4.0]},
    ),
):
    """Module form of :func:`lossforge.functional.varifocal_loss` (mmdetection's
    ``VarifocalLoss``).

    Example:
        >>> VarifocalLoss()(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.8, 0.0]]))
        tensor(0.3422)
    """


class _GHMLoss(Loss):
    """Shared state handling of the GHM modules: the running per-bin counts ``acc_sum``."""

    #: Gradient-norm bins.
    bins: int
    #: Weight of the old running counts in the update (0: this batch's histogram only).
    momentum: float
    acc_sum: Tensor

    def _init_state(self, bins: int, momentum: float) -> None:
        name = type(self).__name__
        self.momentum = check_number(name, "momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.register_buffer("acc_sum", torch.zeros(bins))

    @torch.no_grad()
    def _update(self, batch: Tensor) -> None:
        """``acc = m * acc + (1 - m) * counts`` on the bins this batch fills (mmdetection's rule),
        in place and on the device."""
        acc = self.acc_sum
        if acc.device != batch.device:
            fail(
                type(self).__name__,
                "acc_sum",
                f"on the input's device ({batch.device}); move the module with .to()",
                acc.device,
            )
        b = batch.to(acc.dtype)
        acc.copy_(torch.where(b > 0, self.momentum * acc + (1.0 - self.momentum) * b, acc))

    def _no_inputs(self, inputs: dict[str, Tensor | None]) -> None:
        if inputs:
            fail(
                type(self).__name__,
                "forward keywords",
                "weight, avg_factor, reduction_override",
                ", ".join(sorted(inputs)),
                TypeError,
            )

    def _density(self, histogram: Tensor | None) -> Tensor | None:
        """The density the loss divides by: ``None`` (this batch) without momentum, else the
        running counts, first updated from ``histogram`` (training mode only)."""
        if self.momentum == 0.0:
            return None
        if self.training and histogram is not None:
            self._update(histogram)
        return self.acc_sum


# The registry-wide tests (compile, contract) call one module twice and compare the results, which
# only a module without running statistics can pass: they build the GHM modules with momentum=0.
# The stateful form is tested in tests/test_detection.py (mmdetection over steps, train / eval,
# state_dict, compile, DDP).
_STATELESS = {"momentum": 0.0}


class GHMCLoss(
    _GHMLoss,
    traits=Traits(
        example="sigmoid_index",
        params=_STATELESS,
        not_plotted="its weights come from the histogram of the whole batch",
    ),
):
    """Gradient harmonizing classification loss with running bin counts (stateful).

    ``forward`` calls :func:`lossforge.functional.ghmc_loss` with the running counts as its
    density. State: the buffer ``acc_sum`` ``(bins,)`` (in ``state_dict``; mmdetection's name).
    In training mode with ``momentum > 0`` each forward first updates it from this batch's
    histogram (:func:`lossforge.functional.ghmc_histogram`) as
    ``acc = momentum * acc + (1 - momentum) * counts`` on the non-empty bins, in place and without
    a host sync; in eval mode it is read, not updated (a bin never filled uses the batch's count).
    ``momentum=0`` keeps no state: the loss is the functional with this batch's histogram.

    Under DDP call it inside ``lossforge.distributed.global_normalization()``: the histogram is
    summed over the ranks (an all-reduce of ``bins`` counts), so every rank applies the same update
    and its buffer stays identical, and the loss and gradients equal one process on the whole
    batch. Outside the scope each rank keeps its own statistics.

    Args:
        bins: Number of gradient-norm bins (mmdetection's RetinaNet-GHM config uses 30).
        momentum: Running-average momentum in ``[0, 1)``; mmdetection's class default is 0, its
            configs use 0.75.
        ignore_index: Ignored target value.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        loss_weight: Scalar multiplier.

    Example:
        >>> loss = GHMCLoss(bins=10, momentum=0.75)
        >>> value = loss(torch.randn(8, 3), torch.randint(0, 4, (8,)))
        >>> bool(loss.acc_sum.sum() > 0)
        True
    """

    registry_name: ClassVar[str] = "ghmc"

    def __init__(
        self,
        *,
        bins: int = 10,
        momentum: float = 0.75,
        ignore_index: int | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        domains = signature_domains(F.ghmc_loss)
        name = type(self).__name__
        self.bins = domains["bins"].check(name, "bins", bins)
        self.ignore_index = domains["ignore_index"].check(name, "ignore_index", ignore_index)
        self._init_state(self.bins, momentum)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: str | None = None,
        **inputs: Tensor | None,
    ) -> Tensor:
        """The GHM-C loss of ``(input, target)``; updates ``acc_sum`` in training mode."""
        self._no_inputs(inputs)
        reduction = cast(Reduction, self._resolve_reduction(reduction_override))
        check_avg_factor(type(self).__name__, avg_factor, reduction)
        histogram = None
        if self.momentum > 0.0 and self.training:
            histogram = F.ghmc_histogram(
                input, target, bins=self.bins, ignore_index=self.ignore_index, weight=weight
            )
        return self._scale(
            F.ghmc_loss(
                input,
                target,
                bins=self.bins,
                bin_counts=self._density(histogram),
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=reduction,
                avg_factor=avg_factor,
            )
        )

    def extra_repr(self) -> str:
        parts = [f"bins={self.bins}", f"momentum={self.momentum}"]
        if self.ignore_index is not None:
            parts.append(f"ignore_index={self.ignore_index}")
        parts.append(f"reduction={self.reduction!r}")
        if self.loss_weight != 1.0:
            parts.append(f"loss_weight={self.loss_weight!r}")
        return ", ".join(parts)


class GHMRLoss(
    _GHMLoss,
    traits=Traits(
        example="regression",
        params=_STATELESS,
        not_plotted="its weights come from the histogram of the whole batch",
        logits=False,
    ),
):
    """Gradient harmonizing regression loss with running bin counts (stateful).

    ``forward`` calls :func:`lossforge.functional.ghmr_loss`; the state (``acc_sum``), its update
    in training mode and the DDP rule are those of :class:`GHMCLoss`, with the histogram of
    :func:`lossforge.functional.ghmr_histogram`.

    Args:
        mu: The ASL1 smoothing $\\mu > 0$.
        bins: Number of gradient-norm bins.
        momentum: Running-average momentum in ``[0, 1)`` (default 0: no state, as mmdetection).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        loss_weight: Scalar multiplier.

    Example:
        >>> GHMRLoss(bins=2)(torch.tensor([0.0, 1.0]), torch.tensor([0.01, 0.0]))
        tensor(0.4913)
    """

    registry_name: ClassVar[str] = "ghmr"

    def __init__(
        self,
        *,
        mu: float = 0.02,
        bins: int = 10,
        momentum: float = 0.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        domains = signature_domains(F.ghmr_loss)
        name = type(self).__name__
        self.mu = domains["mu"].check(name, "mu", mu)
        self.bins = domains["bins"].check(name, "bins", bins)
        self._init_state(self.bins, momentum)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: str | None = None,
        **inputs: Tensor | None,
    ) -> Tensor:
        """The GHM-R loss of ``(input, target)``; updates ``acc_sum`` in training mode."""
        self._no_inputs(inputs)
        reduction = cast(Reduction, self._resolve_reduction(reduction_override))
        check_avg_factor(type(self).__name__, avg_factor, reduction)
        histogram = None
        if self.momentum > 0.0 and self.training:
            histogram = F.ghmr_histogram(input, target, mu=self.mu, bins=self.bins, weight=weight)
        return self._scale(
            F.ghmr_loss(
                input,
                target,
                mu=self.mu,
                bins=self.bins,
                bin_counts=self._density(histogram),
                weight=weight,
                reduction=reduction,
                avg_factor=avg_factor,
            )
        )

    def extra_repr(self) -> str:
        parts = [f"mu={self.mu}", f"bins={self.bins}", f"momentum={self.momentum}"]
        parts.append(f"reduction={self.reduction!r}")
        if self.loss_weight != 1.0:
            parts.append(f"loss_weight={self.loss_weight!r}")
        return ", ".join(parts)
