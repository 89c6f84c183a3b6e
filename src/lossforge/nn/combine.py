"""A weighted sum of named losses on the same input and target (dice + cross-entropy, dice +
focal, ...), with the parts returned for logging."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor, nn

from lossforge._checks import check_number, fail

__all__ = ["LossParts", "LossSum"]


class LossParts(NamedTuple):
    """What :meth:`LossSum.with_parts` returns.

    Attributes:
        total: The weighted sum (what ``forward`` returns), attached to the graph.
        parts: Each named loss's own value (before its weight in the sum), attached to the graph;
            detach them for logging (``value.detach().item()``).
    """

    total: Tensor
    parts: dict[str, Tensor]


class LossSum(nn.Module):
    r"""The weighted sum of named losses, each called on the same ``(input, target)``:

    $$
    \mathcal{L} = \text{loss\_weight} \cdot \sum_k w_k\, \mathcal{L}_k(\text{input}, \text{target}).
    $$

    ``forward`` returns the total, so the module drops in wherever one loss is expected.
    It is a combinator, not a loss of its own: it has no ``reduction`` (each part has its own)
    and is not in the table of losses (``lossforge list``), but ``build_loss`` and TOML build it
    under the name ``"loss_sum"`` (or ``"LossSum"``).
    :meth:`with_parts` returns the total *and* the value of every part (``LossParts``), for
    logging: nothing is stored on the module in ``forward`` (a stored tensor would keep its graph
    alive until the next step and break under threads and ``torch.compile``), so the parts are
    returned, and the caller decides how long to keep them.

    Args:
        losses: Name -> loss. A loss is any ``nn.Module`` called as ``loss(input, target)`` that
            returns a scalar (a lossforge module, ``torch.nn.CrossEntropyLoss``, ...), or a
            registry spec built with :func:`lossforge.registry.build_loss`: a mapping
            ``{"type": name, **params}`` or a bare name (so the whole sum can come from TOML or
            Hydra). Names must be non-empty and contain no ``"."``; the order is kept.
        weights: Name -> weight $w_k \ge 0$ (finite); names not listed weigh 1.
        loss_weight: A scalar multiplier of the total (the library-wide module option).

    Raises:
        ValueError: no loss, a bad name, a weight for an unknown name, a negative or non-finite
            weight, a spec the registry cannot build (the message names the part), or a part that
            does not return a scalar (reduction ``"none"``).
        TypeError: a loss that is neither a module, a mapping nor a name.

    Example:
        >>> import torch
        >>> import lossforge as lf
        >>> crit = LossSum({"dice": lf.DiceLoss(), "ce": {"type": "cross_entropy"}},
        ...                weights={"ce": 0.5})
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> total, parts = crit.with_parts(logits, target)
        >>> sorted(parts)
        ['ce', 'dice']
        >>> bool(torch.allclose(total, parts["dice"] + 0.5 * parts["ce"]))
        True
        >>> total.backward()
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module | Mapping[str, Any] | str],
        weights: Mapping[str, float] | None = None,
        *,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.loss_weight = check_number(owner, "loss_weight", loss_weight)
        if not isinstance(losses, Mapping) or not losses:
            got = type(losses).__name__ if not isinstance(losses, Mapping) else "an empty mapping"
            fail(owner, "losses", "a non-empty mapping of name -> loss", got)
        modules = nn.ModuleDict()
        for name, loss in losses.items():
            if not isinstance(name, str) or not name or "." in name:
                fail(owner, "losses", "names that are non-empty strings without '.'", repr(name))
            modules[name] = _as_module(owner, name, loss)
        self.losses = modules
        given = {} if weights is None else weights
        if not isinstance(given, Mapping):
            fail(owner, "weights", "a mapping of name -> weight, or None", type(given).__name__)
        unknown = sorted(str(k) for k in given if k not in modules)
        if unknown:
            fail(
                owner,
                "weights",
                "weights of the named losses (" + ", ".join(modules) + ")",
                "unknown " + ", ".join(repr(u) for u in unknown),
            )
        self.weights = {
            name: check_number(owner, f"weights[{name!r}]", given.get(name, 1.0), low=0.0)
            for name in modules
        }

    def with_parts(self, input: Tensor, target: Tensor) -> LossParts:
        """The total and every part's value (see the class docstring)."""
        parts: dict[str, Tensor] = {}
        terms: list[Tensor] = []
        for name, loss in self.losses.items():
            value = loss(input, target)
            if not isinstance(value, Tensor) or value.ndim != 0:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                fail(
                    type(self).__name__,
                    f"losses[{name!r}]",
                    "to return a scalar (a reduction of 'mean' or 'sum')",
                    shape,
                )
            parts[name] = value
            terms.append(value if self.weights[name] == 1.0 else value * self.weights[name])
        # at least one term: the constructor rejects an empty mapping
        total = sum(terms[1:], terms[0])
        return LossParts(total if self.loss_weight == 1.0 else total * self.loss_weight, parts)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The weighted total (``with_parts(input, target).total``)."""
        return self.with_parts(input, target).total

    def extra_repr(self) -> str:
        text = "weights={" + ", ".join(f"{k!r}: {v!r}" for k, v in self.weights.items()) + "}"
        if self.loss_weight != 1.0:
            text += f", loss_weight={self.loss_weight!r}"
        return text


def _as_module(owner: str, name: str, loss: object) -> nn.Module:
    if isinstance(loss, nn.Module):
        return loss
    if isinstance(loss, (Mapping, str)):
        from lossforge.registry import build_loss

        try:
            return build_loss(loss)  # type: ignore[no-any-return]
        except (ValueError, TypeError) as err:
            raise type(err)(f"{owner}: in losses[{name!r}]: {err}") from err
    kind = type(loss).__name__
    if isinstance(loss, numbers.Number):
        kind = repr(loss)
    fail(
        owner,
        f"losses[{name!r}]",
        "an nn.Module, a registry spec mapping or a loss name",
        kind,
        TypeError,
    )
