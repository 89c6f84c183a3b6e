"""Module forms of the dense-detection losses: QFL, DFL, VFL, and the stateful GHM-C / GHM-R."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from lossforge import functional as F
from lossforge._checks import fail, refuse_state_update_under_transforms
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
    """Shared state handling of the GHM modules: the running per-bin counts ``acc_sum``.

    A GHM module is its functional (``functional``, with the same configuration keywords) plus
    this state: in training mode with ``momentum > 0`` a forward is the functional with
    ``bin_counts=acc_sum`` followed by the in-place update of ``acc_sum`` to the counts the
    functional divided by (``ghm_running_counts``); in eval mode the functional with
    ``momentum=1`` (the running counts as they are, no update).
    """

    #: Gradient-norm bins.
    bins: int
    #: Weight of the old running counts in the update (0: this batch's histogram only).
    momentum: float
    acc_sum: Tensor

    def _configure(self, values: dict[str, object]) -> None:
        domains = signature_domains(type(self).functional)
        name = type(self).__name__
        for key in type(self).config:
            setattr(self, key, domains[key].check(name, key, values[key]))
        self.register_buffer("acc_sum", torch.zeros(self.bins))

    #: The batch histogram of the subclass's loss (``F.ghmc_histogram`` / ``F.ghmr_histogram``).
    histogram: ClassVar[Callable[..., Tensor]]

    def _options(self) -> dict[str, Any]:
        """The configuration keywords the functional and the histogram share (all but momentum)."""
        return {k: getattr(self, k) for k in type(self).config if k != "momentum"}

    def _histogram(self, input: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return type(self).histogram(input, target, weight=weight, **self._options())

    def _call(self, input: Tensor, target: Tensor, **kw: Any) -> Tensor:
        fn = type(self).functional
        if fn is None:  # every GHM module declares its functional; keeps mypy's narrowing
            fail(type(self).__name__, "functional", "a GHM loss function", None, TypeError)
        return fn(input, target, **self._options(), **kw)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: str | None = None,
        **inputs: Tensor | None,
    ) -> Tensor:
        """The loss of ``(input, target)``; updates ``acc_sum`` in training mode."""
        if inputs:
            fail(
                type(self).__name__,
                "forward keywords",
                "weight, avg_factor, reduction_override",
                ", ".join(sorted(inputs)),
                TypeError,
            )
        reduction = cast(Reduction, self._resolve_reduction(reduction_override))
        check_avg_factor(type(self).__name__, avg_factor, reduction)
        shared = {"weight": weight, "reduction": reduction, "avg_factor": avg_factor}
        if self.momentum == 0.0:
            return self._scale(self._call(input, target, momentum=0.0, **shared))
        if not self.training:
            return self._scale(
                self._call(input, target, momentum=1.0, bin_counts=self.acc_sum, **shared)
            )
        refuse_state_update_under_transforms(type(self).__name__, "acc_sum")
        loss = self._call(input, target, momentum=self.momentum, bin_counts=self.acc_sum, **shared)
        self._update(self._histogram(input, target, weight))
        return self._scale(loss)

    @torch.no_grad()
    def _update(self, histogram: Tensor) -> None:
        acc = self.acc_sum
        if acc.device != histogram.device:
            fail(
                type(self).__name__,
                "acc_sum",
                f"on the input's device ({histogram.device}); move the module with .to()",
                acc.device,
            )
        new = F.ghm_running_counts(acc, histogram.to(acc.dtype), momentum=self.momentum)
        acc.copy_(new)


# The registry-wide tests (compile, contract) call one module several times and compare it with
# one functional call, which only a module without running statistics can pass: they build the
# GHM modules with momentum=0. The running form is tested in tests/test_detection.py (mmdetection
# over steps, functional with explicit state, train / eval, state_dict, compile, DDP).
_STATELESS = {"momentum": 0.0}


class GHMCLoss(
    _GHMLoss,
    traits=Traits(
        example="sigmoid_index",
        params=_STATELESS,
        not_plotted="its weights come from the histogram of the whole batch",
        stateful=True,
    ),
):
    """Gradient harmonizing classification loss with running bin counts (stateful).

    The module form of :func:`lossforge.functional.ghmc_loss` (same keywords) plus its state: the
    buffer ``acc_sum`` ``(bins,)`` of running per-bin counts (in ``state_dict``; mmdetection's
    name). In training mode with ``momentum > 0`` a forward is
    ``ghmc_loss(..., momentum=momentum, bin_counts=acc_sum)`` and then updates ``acc_sum`` in
    place to ``momentum * acc_sum + (1 - momentum) * counts`` on the bins this batch fills
    (mmdetection's rule, without a host sync). In eval mode it reads ``acc_sum`` without updating
    it (``momentum=1``; a bin never counted uses this batch's count). ``momentum=0`` keeps no
    state: the loss is the functional with this batch's histogram.

    Under ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``, ``jacfwd``) a training-mode
    forward with ``momentum > 0`` raises a ``RuntimeError`` (the transforms cannot write a buffer
    the function did not take as an input; under ``vmap`` each call would write its own histogram
    into the one shared buffer): use ``.eval()`` inside the transform and update ``acc_sum`` from
    the whole batch outside it (``docs/contract.md``, "Stateful losses under torch.func").

    Under DDP call it inside ``lossforge.distributed.global_normalization()``: the histogram is
    summed over the ranks (an all-reduce of ``bins`` counts), so every rank applies the same update
    and its buffer stays identical, and the loss and gradients equal one process on the whole
    batch. Outside the scope each rank keeps its own statistics.

    Args:
        bins: Number of gradient-norm bins (mmdetection's RetinaNet-GHM config uses 30).
        momentum: Running-average momentum in ``[0, 1]``; mmdetection's class default is 0, its
            configs use 0.75.
        ignore_index: Ignored target value.
        index_target: What a target without the class dimension holds, as in
            :func:`lossforge.functional.ghmc_loss` (``True`` for a one-channel head's labels).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        loss_weight: Scalar multiplier.

    Example:
        >>> loss = GHMCLoss(bins=10, momentum=0.75)
        >>> value = loss(torch.randn(8, 3), torch.randint(0, 4, (8,)))
        >>> bool(loss.acc_sum.sum() > 0)
        True
    """

    registry_name: ClassVar[str] = "ghmc"
    functional = staticmethod(F.ghmc_loss)
    histogram = staticmethod(F.ghmc_histogram)
    config: ClassVar[tuple[str, ...]] = ("bins", "momentum", "ignore_index", "index_target")
    ignore_index: int | None
    index_target: bool | None

    def __init__(
        self,
        *,
        bins: int = 10,
        momentum: float = 0.75,
        ignore_index: int | None = None,
        index_target: bool | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self._configure(
            {
                "bins": bins,
                "momentum": momentum,
                "ignore_index": ignore_index,
                "index_target": index_target,
            }
        )


class GHMRLoss(
    _GHMLoss,
    traits=Traits(
        example="regression",
        params=_STATELESS,
        not_plotted="its weights come from the histogram of the whole batch",
        logits=False,
        stateful=True,
    ),
):
    """Gradient harmonizing regression loss with running bin counts (stateful).

    The module form of :func:`lossforge.functional.ghmr_loss` plus the state of
    :class:`GHMCLoss` (``acc_sum``, updated in training mode only, the same DDP rule), with the
    histogram of :func:`lossforge.functional.ghmr_histogram`.

    Args:
        mu: The ASL1 smoothing $\\mu > 0$.
        bins: Number of gradient-norm bins.
        momentum: Running-average momentum in ``[0, 1]`` (default 0: no state, as mmdetection).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        loss_weight: Scalar multiplier.

    Example:
        >>> GHMRLoss(bins=2)(torch.tensor([0.0, 1.0]), torch.tensor([0.01, 0.0]))
        tensor(0.4913)
    """

    registry_name: ClassVar[str] = "ghmr"
    functional = staticmethod(F.ghmr_loss)
    histogram = staticmethod(F.ghmr_histogram)
    config: ClassVar[tuple[str, ...]] = ("mu", "bins", "momentum")
    mu: float

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
        self._configure({"mu": mu, "bins": bins, "momentum": momentum})
