"""Every loss takes every memory layout (issue #14, section 3).

``nll_loss`` crashed in backward on channels_last / transposed 4-D log-probabilities (inherited
from PyTorch's ``nll_loss2d``). The sweep: every registered loss on 4-D inputs (a 4-D version of
the example it declares), the input and the target each contiguous, channels_last, a transposed
view, a strided slice, or expanded (stride 0), every reduction: value and gradient equal those of
the same tensors made contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, fn_of, name_of, params
from torch import Tensor

from lossforge.registry import LossInfo

N, C, H, W = 2, 3, 4, 5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits() -> Tensor:
    return 2 * torch.randn(N, C, H, W, generator=_gen(0), dtype=F64)


def _index(high: int) -> Tensor:
    return torch.randint(0, high, (N, H, W), generator=_gen(1))


def _dense() -> Tensor:
    return (torch.rand(N, C, H, W, generator=_gen(2)) < 0.4).to(F64)


#: A 4-D version of each declared example: (input, target).
EXAMPLES_4D: dict[str, Callable[[LossInfo], tuple[Tensor, Tensor]]] = {
    "sigmoid_dense": lambda info: (_logits(), _dense()),
    "sigmoid_index": lambda info: (_logits(), _index(C + 1)),
    "probs_dense": lambda info: (torch.sigmoid(_logits()), _dense()),
    "softmax_index": lambda info: (_logits(), _index(C)),
    "log_probs_index": lambda info: (torch.log_softmax(_logits(), dim=1), _index(C)),
    "segmentation_index": lambda info: (_logits(), _index(C)),
    "regression": lambda info: (_logits(), 2 * torch.randn(N, C, H, W, generator=_gen(3))),
    "boxes": lambda info: _boxes(),
    "quality_dense": lambda info: (_logits(), _quality()),
    "distribution": lambda info: (_logits(), (C - 1) * torch.rand(N, H, W, generator=_gen(6))),
    # two channels (index targets in [0, 2], 2 = background): with the declared single channel
    # channels_last is the contiguous memory order itself, so it would test nothing
    "segmentation_binary": lambda info: (_logits()[:, :2].contiguous(), _index(3)),
}


def _boxes() -> tuple[Tensor, Tensor]:
    """``(N, H, W, 4)`` predicted and target boxes, some overlapping, some not."""
    g = _gen(5)
    xy = 8 * torch.rand(N, H, W, 2, generator=g, dtype=F64)
    wh = 0.5 + 3.5 * torch.rand(N, H, W, 2, generator=g, dtype=F64)
    shift = 2 * torch.randn(N, H, W, 2, generator=g, dtype=F64)
    size = wh * torch.exp(0.3 * torch.randn(N, H, W, 2, generator=g, dtype=F64))
    return torch.cat([xy + shift, xy + shift + size], dim=-1), torch.cat([xy, xy + wh], dim=-1)


def _quality() -> Tensor:
    """Dense IoU-quality targets: each position's class (or none: background) holds a quality."""
    labels = _index(C + 1)
    quality = 0.05 + 0.9 * torch.rand(N, 1, H, W, generator=_gen(7), dtype=F64)
    onehot = (labels[:, None] == torch.arange(C)[:, None, None]).to(F64)
    return onehot * quality


#: The dimension each example repeats (``sliced``) or broadcasts (``expanded``) along: the last
#: one, except for boxes, whose last dimension holds the 4 coordinates of one box (repeating or
#: broadcasting one coordinate would not be a box): there the positions' last dimension.
FREE_DIM = {"boxes": -2}


def _sliced(t: Tensor, dim: int) -> Tensor:
    """The values of ``t`` in a strided view (every other element of a doubled tensor)."""
    index = [slice(None)] * t.ndim
    index[dim] = slice(None, None, 2)
    return torch.repeat_interleave(t, 2, dim=dim)[tuple(index)]


def _expanded(t: Tensor, dim: int) -> Tensor:
    """The first slice of ``t`` along ``dim`` broadcast over it (stride 0)."""
    return t.narrow(dim, 0, 1).expand(t.shape)


#: A layout: the tensor's values (except ``expanded``, which repeats them) in another memory order.
#: Each takes the tensor and the example's free dimension (``FREE_DIM``).
LAYOUTS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "contiguous": lambda t, d: t,
    "channels_last": lambda t, d: (
        t.contiguous(memory_format=torch.channels_last)
        if t.ndim == 4
        else t.transpose(-1, -2).contiguous().transpose(-1, -2)
    ),
    "transposed": lambda t, d: t.transpose(-1, -2).contiguous().transpose(-1, -2),
    "sliced": _sliced,
    "expanded": _expanded,
}


def _params(info: LossInfo) -> dict[str, object]:
    kw = params(info)
    if "class_counts" in kw:  # the example's counts are for 5 classes
        kw["class_counts"] = [3.0, 2.0, 1.0]
    return kw


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=str)
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_every_layout_matches_contiguous(info: LossInfo, layout: str) -> None:
    assert info.traits is not None
    assert info.traits.example in EXAMPLES_4D, f"add a 4-D {info.traits.example} example here"
    x0, y0 = EXAMPLES_4D[info.traits.example](info)
    dim = FREE_DIM.get(info.traits.example, -1)

    def lay(t: Tensor) -> Tensor:
        return LAYOUTS[layout](t, dim)

    y = lay(y0)
    assert x0.is_contiguous() and y0.is_contiguous()
    if layout != "contiguous":  # the layout is another memory order, not a no-op
        assert lay(x0).stride() != x0.stride()
    fn = fn_of(info)
    kw = _params(info)
    for reduction in ("none", "mean", "sum"):
        leaf = x0.clone().requires_grad_(True)
        ref_leaf = x0.clone().requires_grad_(True)
        got = fn(lay(leaf), y, reduction=reduction, **kw)
        want = fn(lay(ref_leaf).contiguous(), y.contiguous(), reduction=reduction, **kw)
        assert_close(got, want, F64)
        up = torch.rand(got.shape, generator=_gen(4), dtype=F64) + 0.5
        got.backward(up)
        want.backward(up)
        assert leaf.grad is not None and ref_leaf.grad is not None
        assert_close(leaf.grad, ref_leaf.grad, F64)
