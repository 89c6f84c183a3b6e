"""What the reliability sweeps (``tests/test_reliability_*.py``) share: every registered loss, its
example inputs and its signature, read from the registry so that a new loss is swept without an
edit here."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from lossforge._examples import EXAMPLES
from lossforge.nn import Loss
from lossforge.registry import LossInfo, list_losses

F64 = torch.float64

#: Every registered loss declared from a functional.
INFOS: list[LossInfo] = [
    info for info in list_losses() if issubclass(info.cls, Loss) and info.cls.functional
]


def name_of(info: LossInfo) -> str:
    return info.name


def fn_of(info: LossInfo) -> Any:
    return info.cls.functional


def params(info: LossInfo) -> dict[str, Any]:
    """The constructor parameters the loss's example needs (e.g. ``class_counts``)."""
    assert info.traits is not None
    return dict(info.traits.params)


def takes(info: LossInfo, keyword: str) -> bool:
    return keyword in inspect.signature(fn_of(info)).parameters


def example(
    info: LossInfo, n: int = 5, dtype: torch.dtype = F64, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The loss's declared example inputs: a fresh leaf input and a target."""
    assert info.traits is not None
    x, y = EXAMPLES[info.traits.example](n, dtype, torch.Generator().manual_seed(seed))
    return x.detach().requires_grad_(True), y


def infos_with(keyword: str) -> list[LossInfo]:
    return [info for info in INFOS if takes(info, keyword)]
