"""Gradients a loss hands to autograd are never buffers it keeps (issue #14, section 1).

A custom autograd function that returns a tensor it also saved lets the caller's ``.grad`` alias
that tensor (autograd may adopt a returned gradient as a leaf's ``.grad``, through a view's
backward for one). Zeroing ``.grad`` in place, as every optimiser's ``zero_grad(set_to_none=False)``
does, then changes (or, through the version counter, breaks) the next backward of a retained graph.
The sweep: every registered loss, function and module, every reduction, the input a leaf or a view
of one, two dtypes: after ``backward(retain_graph=True)`` and an in-place change of ``.grad``, the
next backward gives the same gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _reliability import F64, INFOS, example, fn_of, name_of, params
from torch import Tensor

from lossforge.registry import LossInfo

LAYOUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "leaf": lambda leaf: leaf,
    "view": lambda leaf: leaf.view(leaf.shape),
}
EDITS: dict[str, Callable[[Tensor], None]] = {
    "zero_": lambda leaf: leaf.grad.zero_(),  # type: ignore[union-attr]
    "set_to_none": lambda leaf: setattr(leaf, "grad", None),
}


def _loss(info: LossInfo, module: bool, x: Tensor, y: Tensor, reduction: str) -> Tensor:
    kw = params(info)
    if module:
        return info.cls(**kw)(x, y, reduction_override=reduction)  # type: ignore[no-any-return]
    return fn_of(info)(x, y, reduction=reduction, **kw)  # type: ignore[no-any-return]


def _backward(loss: Tensor, up: Tensor | None) -> None:
    loss.backward(gradient=up, retain_graph=True)


@pytest.mark.parametrize("dtype", [F64, torch.float16], ids=str)
@pytest.mark.parametrize("module", [False, True], ids=["function", "module"])
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_retained_graph_survives_in_place_edits_of_grad(
    info: LossInfo, module: bool, dtype: torch.dtype
) -> None:
    x0, y = example(info, n=5, dtype=dtype)
    checked = 0
    for reduction in ("sum", "mean", "none"):
        for layout, view in LAYOUTS.items():
            for edit, apply_edit in EDITS.items():
                leaf = x0.detach().clone().requires_grad_(True)
                loss = _loss(info, module, view(leaf), y, reduction)
                up = None
                if reduction == "none":
                    gen = torch.Generator().manual_seed(7)
                    up = torch.rand(loss.shape, generator=gen, dtype=loss.dtype) + 0.5
                _backward(loss, up)
                assert leaf.grad is not None
                first = leaf.grad.detach().clone()
                apply_edit(leaf)
                _backward(loss, up)
                case: Any = (reduction, layout, edit)
                torch.testing.assert_close(leaf.grad, first, msg=lambda m, c=case: f"{c}: {m}")
                # and a third backward accumulates onto the second
                _backward(loss, up)
                torch.testing.assert_close(leaf.grad, 2 * first, msg=lambda m, c=case: f"{c}: {m}")
                checked += 1
    assert checked == 12
