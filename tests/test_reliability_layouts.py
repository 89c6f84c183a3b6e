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
}

#: A layout: the tensor's values (except ``expanded``, which repeats them) in another memory order.
LAYOUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: (
        t.contiguous(memory_format=torch.channels_last)
        if t.ndim == 4
        else t.transpose(-1, -2).contiguous().transpose(-1, -2)
    ),
    "transposed": lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2),
    "sliced": lambda t: torch.repeat_interleave(t, 2, dim=-1)[..., ::2],
    "expanded": lambda t: t[..., :1].expand(t.shape),
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
    lay = LAYOUTS[layout]
    y = lay(y0)
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
