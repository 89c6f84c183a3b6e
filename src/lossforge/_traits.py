"""What the command line and the test suite need to know about a loss, declared with it.

A module declaration carries its loss's traits::

    class SigmoidFocalLoss(
        Loss,
        functional=F.sigmoid_focal_loss,
        traits=Traits(example="sigmoid_index", plot="sigmoid", task="multi_label",
                      sweep={"gamma": [0.0, 0.5, 1.0, 2.0, 5.0], "alpha": [None]}),
    ): ...

``lossforge list``, ``lossforge plot``, ``lossforge compare``, the README and docs tables and the
registry-wide contract and compile tests all read them from ``lossforge.registry``, so a registered
loss is plotted, compared and tested without a second table to update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PLOT_FAMILIES", "TASKS", "Traits"]

#: How ``lossforge plot`` evaluates a loss on a 1-D grid of the true class's logit / probability.
PLOT_FAMILIES = ("sigmoid", "sigmoid-prob", "softmax", "softmax-logprob", "regression")
#: The ``lossforge compare`` tasks a classification loss can serve.
TASKS = ("single_label", "multi_label")


@dataclass(frozen=True)
class Traits:
    """A loss's metadata.

    Attributes:
        example: Name of its example-input maker in ``lossforge._examples.EXAMPLES``.
        params: Constructor parameters the example needs (required ones, e.g. ``class_counts``).
        plot: Its ``lossforge plot`` family (``PLOT_FAMILIES``), or ``None`` when it has no curve.
        not_plotted: Why there is no curve (a set-level or batch-level loss).
        task: The ``lossforge compare`` task it can serve (``TASKS``), or ``None``.
        sweep: The parameter values ``lossforge plot`` draws by default.
        mean_is_count: ``"mean"`` equals ``none.sum() / none.numel()`` on its example (false for
            losses with their own denominator, e.g. OHEM's ``n_pos + k + eps``).
        logits: The input is logits (so ``+-1e4`` is a meaningful stress test).
        gradcheck_params: Parameters under which autograd's gradient is the derivative of the
            value, for the finite-difference check, when the loss stops a gradient by design
            (Seesaw's compensation factor uses detached scores, as the paper does).
        stateful: The module keeps state that ``forward`` updates in training mode (documented
            buffers: Seesaw's class counts); the shared tests run it in evaluation mode, where it
            equals its function on the current state.
        initial_state: Constructor options of a stateful module that start its state instead of
            configuring its function (Seesaw's ``class_counts`` start the int64 running counts
            ``cum_samples``): not learnable through the module, which refuses a tensor that
            requires grad; the function takes them as learnable options.
        region: A set-level overlap loss of the region pipeline (the dice family, Lovasz): it
            takes ``(N, C, *)`` logits only (no unbatched ``(C,)`` row), its unreduced loss has
            one value per (sample, class) entry, an ignored pixel leaves its sums (ignoring
            equals cropping, not a weight of 0), and its dense targets are per-class masks, not
            distributions over the classes (a pixel may belong to no class or to several).
    """

    example: str
    params: Mapping[str, Any] = field(default_factory=dict)
    plot: str | None = None
    not_plotted: str = ""
    task: str | None = None
    sweep: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    mean_is_count: bool = True
    logits: bool = True
    gradcheck_params: Mapping[str, Any] = field(default_factory=dict)
    stateful: bool = False
    initial_state: tuple[str, ...] = ()
    region: bool = False

    def __post_init__(self) -> None:
        if self.plot is not None and self.plot not in PLOT_FAMILIES:
            raise ValueError(f"Traits: expected `plot` one of {PLOT_FAMILIES}, got {self.plot!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"Traits: expected `task` one of {TASKS}, got {self.task!r}")
        if self.initial_state and not self.stateful:
            raise ValueError("Traits: only a stateful module has `initial_state` options")
        if self.plot is None and not self.not_plotted:
            raise ValueError("Traits: a loss without a `plot` family says why in `not_plotted`")
