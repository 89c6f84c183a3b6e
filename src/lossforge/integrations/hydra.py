"""Hydra ``_target_`` configs for lossforge losses.

Hydra needs no adapter: ``hydra.utils.instantiate`` builds any lossforge module or functional from
its import path::

    loss:
      _target_: lossforge.nn.SigmoidFocalLoss
      gamma: 2.0
      alpha: 0.25

    loss_fn:                      # a functional with its options bound
      _target_: lossforge.functional.sigmoid_focal_loss
      _partial_: true
      gamma: 2.0

List options (``class_weight``, ``pos_weight``, ``class_counts``) arrive from YAML as OmegaConf
``ListConfig`` objects; add ``_convert_: all`` so they reach the loss as plain lists (``to_hydra``
does it for you). Hydra 1.4 asks for a trusted-target whitelist: pass
``_target_whitelist_=["lossforge.*"]`` (spelled ``_execution_whitelist_`` in the newest docs).

This module never imports hydra; it only writes the dictionaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossforge._checks import fail

__all__ = ["to_hydra", "target_of"]


def target_of(name: str) -> str:
    """The ``_target_`` import path of a registered loss (``"sigmoid_focal"`` or a class name),
    or of a combinator ``build_loss`` knows (``"loss_sum"``)."""
    from lossforge.registry import _composite, get_loss

    cls = _composite(name) or get_loss(name, caller="to_hydra", argument="type", composites=True)
    import lossforge.nn

    if getattr(lossforge.nn, cls.__name__, None) is cls:
        return f"lossforge.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"  # a registered third-party class


def to_hydra(spec: Mapping[str, Any] | str) -> dict[str, Any]:
    """Turn a ``build_loss`` spec (``{"type": name, **params}``) into a Hydra config.

    A ``loss_sum`` spec keeps its nested ``losses`` specs as they are: ``LossSum`` builds them
    with ``build_loss`` (so Hydra need not instantiate them).

    Example:
        >>> to_hydra({"type": "sigmoid_focal", "gamma": 2.0})
        {'_target_': 'lossforge.nn.SigmoidFocalLoss', '_convert_': 'all', 'gamma': 2.0}
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or "type" not in spec:
        fail("to_hydra", "spec", "a mapping with a 'type' key, or a loss name", repr(spec))
    params = {k: v for k, v in spec.items() if k != "type"}
    return {"_target_": target_of(spec["type"]), "_convert_": "all", **params}
