"""Module forms of the long-tailed classification losses (LDAM, Seesaw, Poly-1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lossforge import functional as F
from lossforge._checks import (
    check_floating,
    check_int,
    fail,
    is_ndarray,
    refuse_state_update_under_transforms,
    value_checks_enabled,
)
from lossforge._params import signature_domains
from lossforge._targets import softmax_target
from lossforge._traits import Traits
from lossforge.distributed import all_reduce_sum, global_normalization_enabled, scope_group
from lossforge.nn._base import Loss

__all__ = ["LDAMLoss", "Poly1CrossEntropyLoss", "Poly1FocalLoss", "SeesawLoss"]


class LDAMLoss(
    Loss,
    functional=F.ldam_loss,
    traits=Traits(
        example="softmax_index",
        params={"class_counts": [50.0, 20.0, 10.0, 5.0, 1.0]},
        plot="softmax",
        task="single_label",
        sweep={"max_margin": [0.0, 0.25, 0.5]},
    ),
):
    """Module form of :func:`lossforge.functional.ldam_loss`.

    ``class_counts`` and ``class_weight`` are buffers (lists are accepted). For LDAM-DRW assign
    the epoch's weights before each epoch (``lossforge.drw_class_weights``).

    Example:
        >>> from lossforge import drw_class_weights
        >>> counts = [100, 10, 1]
        >>> loss = LDAMLoss(class_counts=counts, scale=1.0)
        >>> loss.class_weight = drw_class_weights(counts, epoch=160, start_epoch=160)
        >>> loss(torch.tensor([[0.3, 0.1, 0.0]]), torch.tensor([2]))
        tensor(1.6189)
    """


class Poly1CrossEntropyLoss(
    Loss,
    functional=F.poly1_cross_entropy,
    traits=Traits(
        example="softmax_index",
        plot="softmax",
        task="single_label",
        sweep={"epsilon": [-1.0, 0.0, 1.0, 2.0]},
    ),
):
    """Module form of :func:`lossforge.functional.poly1_cross_entropy`.

    Example:
        >>> loss = Poly1CrossEntropyLoss(epsilon=2.0, label_smoothing=0.1)
        >>> loss(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]))
        tensor(0.7510)
    """


class Poly1FocalLoss(
    Loss,
    functional=F.poly1_focal_loss,
    traits=Traits(
        example="sigmoid_index",
        plot="sigmoid",
        task="multi_label",
        sweep={"epsilon": [-1.0, 0.0, 1.0, 2.0]},
    ),
):
    """Module form of :func:`lossforge.functional.poly1_focal_loss` (sigmoid, RetinaNet-style).

    A per-class ``alpha`` and ``pos_weight`` given as lists or tensors are buffers.

    Example:
        >>> loss = Poly1FocalLoss(epsilon=1.0, alpha=0.25, gamma=2.0)
        >>> loss(torch.zeros(2, 3), torch.tensor([1, 3]), avg_factor=1.0)
        tensor(1.4431)
    """


_SEESAW_OPTIONS = ("p", "q", "eps", "ignore_index", "backend")


class SeesawLoss(Loss):
    r"""Seesaw loss with the cumulative class counts as module state (Wang et al. 2021).

    ``forward(logits, target, weight=None, avg_factor=None, reduction_override=None)`` is
    :func:`lossforge.functional.seesaw_loss` with ``class_counts=self.cum_samples``. In training
    mode (``module.train()``, the default) each call first adds the batch's non-ignored labels
    to ``cum_samples``, so the batch counts itself, as in mmdetection and mmpretrain; in
    evaluation mode the counts are left alone. The update is an ``index_add`` on the device:
    no host sync, no data-dependent shape.

    Under ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``, ``jacfwd``) a training-mode
    forward raises a ``RuntimeError``: the transforms cannot write a buffer the function did not
    take as an input, and under ``vmap`` each call would add its own sample to the one shared
    buffer. Use ``.eval()`` inside the transform and count the batch outside it
    (``docs/contract.md``, "Stateful losses under torch.func").

    State: ``cum_samples``, an ``int64`` buffer of length ``num_classes`` (in ``state_dict``, so
    checkpoints resume the counts; ``.half()`` leaves it integral). Start it from known dataset
    counts with ``class_counts=``, or from zeros with ``num_classes=`` (exactly one of the two);
    ``reset_counts()`` zeroes it.

    Data-parallel training: inside ``lossforge.distributed.global_normalization()`` the batch
    counts are all-reduced over the ranks (one ``all_reduce`` per training call, every rank must
    call the loss, as for any loss there) before they are added, so every rank holds the global
    counts and K ranks reproduce one process on the concatenated batch. Outside that scope each
    rank counts only its own batches (mmdetection's behaviour).

    Args:
        num_classes: Number of classes ``C >= 2`` (the counts start at 0).
        class_counts: Initial counts instead, length ``C``, non-negative integers (a tensor
            that requires grad is refused: the counts are state, not a learnable option; the
            function takes learned counts).
        p: Mitigation exponent $p \ge 0$.
        q: Compensation exponent $q \ge 0$.
        eps: Lower clamp of the target score in the compensation factor, $> 0$.
        ignore_index: Ignored target value (not counted); ``None`` disables it.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        loss_weight: Scalar multiplier of the loss.

    Example:
        >>> loss = SeesawLoss(num_classes=3)
        >>> x = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.5]])
        >>> loss(x, torch.tensor([0, 0]))  # counts become [2, 0, 0]
        tensor(4.3501)
        >>> loss.cum_samples
        tensor([2, 0, 0])
    """

    registry_name = "seesaw"
    functional = staticmethod(F.seesaw_loss)  # what forward calls (on the module's counts)
    traits = Traits(
        example="softmax_index",
        params={"class_counts": [50.0, 20.0, 10.0, 5.0, 1.0]},
        not_plotted="the class counts are state accumulated over the training batches",
        task="single_label",
        gradcheck_params={"q": 0.0},  # the compensation factor's scores are detached by design
        stateful=True,
        initial_state=("class_counts",),  # the start of cum_samples, not a learnable option
    )
    cum_samples: Tensor
    p: float
    q: float
    eps: float
    ignore_index: int | None
    backend: str

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        class_counts: Tensor | Sequence[float] | None = None,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 1e-2,
        ignore_index: int | None = -100,
        backend: str = "torch",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = type(self).__name__
        domains = signature_domains(F.seesaw_loss)
        given = {"p": p, "q": q, "eps": eps, "ignore_index": ignore_index, "backend": backend}
        for key in _SEESAW_OPTIONS:
            setattr(self, key, domains[key].check(name, key, given[key]))
        self.register_buffer("cum_samples", _initial_counts(name, num_classes, class_counts))

    @property
    def num_classes(self) -> int:
        return int(self.cum_samples.shape[0])

    def reset_counts(self) -> None:
        """Zero the cumulative counts."""
        self.cum_samples.zero_()

    @torch.no_grad()
    def _count(self, input: Tensor, target: Tensor) -> None:
        name = type(self).__name__
        # the inputs are checked as the function checks them, under its name (as in eval mode)
        fn = F.seesaw_loss.__name__
        x = check_floating(fn, "logits", input)
        st = softmax_target(fn, x, target, ignore_index=self.ignore_index)
        if st.index is None:
            fail(fn, "target", "an integer tensor of class indices", "probabilities", TypeError)
        c = x.shape[st.cdim]
        if c != self.num_classes:
            fail(name, "logits", f"C={self.num_classes} classes along dim {st.cdim}", f"C={c}")
        if self.cum_samples.device != x.device:
            fail(
                name,
                "cum_samples",
                f"on the device of `logits` ({x.device})",
                self.cum_samples.device,
            )
        keep = torch.ones_like(st.index, dtype=torch.bool)
        if st.valid is not None:
            keep = keep & st.valid
        if st.bad is not None:
            keep = keep & ~st.bad
        batch = torch.zeros_like(self.cum_samples).index_add(
            0, st.index.reshape(-1), keep.reshape(-1).to(self.cum_samples.dtype)
        )
        if global_normalization_enabled():
            batch = all_reduce_sum(batch, group=scope_group())
        self.cum_samples.add_(batch)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: str | None = None,
        **inputs: Tensor | None,
    ) -> Tensor:
        """Count the batch (training mode), then :func:`lossforge.functional.seesaw_loss`."""
        if inputs:
            fail(
                type(self).__name__,
                "forward keywords",
                "weight, avg_factor, reduction_override",
                ", ".join(sorted(inputs)),
                TypeError,
            )
        reduction = self._resolve_reduction(reduction_override)
        if self.training:
            refuse_state_update_under_transforms(type(self).__name__, "cum_samples")
            self._count(input, target)
        return self._scale(
            F.seesaw_loss(
                input,
                target,
                class_counts=self.cum_samples,
                p=self.p,
                q=self.q,
                eps=self.eps,
                ignore_index=self.ignore_index,
                weight=weight,
                reduction=reduction,  # type: ignore[arg-type]  # checked above
                avg_factor=avg_factor,
                backend=self.backend,  # type: ignore[arg-type]  # checked at construction
            )
        )

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}"]
        parts += [f"{k}={getattr(self, k)!r}" for k in _SEESAW_OPTIONS]
        parts.append(f"reduction={self.reduction!r}")
        if self.loss_weight != 1.0:
            parts.append(f"loss_weight={self.loss_weight!r}")
        return ", ".join(parts)


def _initial_counts(name: str, num_classes: object, class_counts: object) -> Tensor:
    """The initial ``int64`` counts from ``num_classes`` or ``class_counts`` (exactly one)."""
    if (num_classes is None) == (class_counts is None):
        fail(
            name,
            "num_classes",
            "exactly one of `num_classes` and `class_counts`",
            "both" if num_classes is not None else "neither",
        )
    if num_classes is not None:
        c = check_int(name, "num_classes", num_classes, low=2)
        return torch.zeros(c, dtype=torch.int64)
    counts: Any = class_counts
    if isinstance(counts, Tensor) and counts.requires_grad:
        # never detached silently: the counts are integer state that each training batch adds to
        fail(
            name,
            "class_counts",
            "initial counts that do not require grad (they start the int64 buffer `cum_samples`, "
            "which each training batch adds to and no gradient reaches; for learned per-class "
            "counts call lossforge.functional.seesaw_loss(class_counts=...))",
            "an nn.Parameter"
            if isinstance(counts, torch.nn.Parameter)
            else "a tensor that requires grad",
        )
    if is_ndarray(counts):
        counts = counts.tolist()  # a NumPy array: its numbers, as for every module option
    if isinstance(counts, Tensor):
        t = counts.detach()
    elif isinstance(counts, Sequence) and not isinstance(counts, (str, bytes)):
        try:
            t = torch.tensor([float(v) for v in counts], dtype=torch.float64, device="cpu")
        except (TypeError, ValueError):
            fail(name, "class_counts", "a sequence of numbers", repr(counts), TypeError)
    else:
        fail(name, "class_counts", "a 1-d tensor or a sequence", type(counts).__name__, TypeError)
    if t.is_complex() or t.dtype == torch.bool:
        fail(name, "class_counts", "a real tensor", f"dtype {t.dtype}", TypeError)
    if t.ndim != 1 or t.shape[0] < 2:
        fail(name, "class_counts", "a 1-d sequence of C >= 2 counts", f"shape {tuple(t.shape)}")
    # host values are always checked (no device read), as every module's options are
    if t.device.type == "cpu" or value_checks_enabled(t):
        ok = torch.isfinite(t) & (t >= 0) & (t == torch.round(t)) & (t < 2.0**63)  # (int64)
        if not bool(ok.all()):
            fail(name, "class_counts", "non-negative integer counts", t.tolist())
    counts_buffer = t.to(torch.int64).clone()
    if not isinstance(counts, Tensor):
        # host numbers, checked on the CPU above: placed as torch places a new tensor
        counts_buffer = counts_buffer.to(torch.get_default_device())
    return counts_buffer
