"""``torch.export`` of a model with every registered loss (``strict=False``, the mode that traces
Python code as it runs): the exported program's loss and gradients equal eager, and a dynamic
batch dimension stays symbolic.

Two defects this guards against: the closed forms' custom autograd Functions were recorded by
their forward (in-place operations, no backward) so the exported program's backward failed
(sigmoid / poly-1 / softmax focal, ASL), and ``float()`` of the element count specialised the
batch size to a constant in 19 losses. Softmax focal with ``0 < gamma < 1`` at saturation checks
that the traced formula keeps a finite derivative.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _contract import assert_close
from _reliability import INFOS, example, name_of, params
from torch import Tensor, nn
from torch.export import Dim, export

from lossforge.registry import LossInfo

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class _Head(nn.Module):
    """A learned scale of the input (one value per trailing position, in [0.85, 0.95]: it keeps
    probabilities in [0, 1] and box corners in order) before the loss."""

    def __init__(self, loss: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.85, 0.95, int(torch.tensor(shape).prod())))
        self.shape = shape
        self.loss = loss

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.loss(x * self.scale.view(self.shape), y)  # type: ignore[no-any-return]


def _grads(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    loss = model(x, y)
    (g,) = torch.autograd.grad(loss, [p for _, p in model.named_parameters()])
    return loss.detach(), g


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_export_with_a_dynamic_batch_equals_eager(info: LossInfo) -> None:
    x, y = example(info, n=6, dtype=torch.float32)
    x = x.detach()
    base: dict[str, Any] = params(info)
    model = _Head(info.cls(**base), tuple(x.shape[1:]))
    model.eval()  # stateful losses (Seesaw, GHM) keep their state: the two runs see the same
    batch = Dim("batch", min=2, max=64)
    program = export(
        model, (x, y), dynamic_shapes={"x": {0: batch}, "y": {0: batch}}, strict=False
    ).module()
    for n, seed in ((6, 0), (10, 1)):  # the traced batch, and another one
        xn, yn = example(info, n=n, dtype=torch.float32, seed=seed)
        want, gw = _grads(model, xn.detach(), yn)
        got, gg = _grads(program, xn.detach(), yn)
        assert_close(got, want, torch.float32)
        assert_close(gg, gw, torch.float32)


def test_export_softmax_focal_below_one_at_saturation() -> None:
    from lossforge.nn import SoftmaxFocalLoss

    x = torch.tensor([[60.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    y = torch.tensor([0, 2])
    model = _Head(SoftmaxFocalLoss(gamma=0.5), (3,))
    program = export(model, (x, y), strict=False).module()
    want, gw = _grads(model, x, y)
    got, gg = _grads(program, x, y)
    assert torch.isfinite(gg).all(), gg
    assert_close(got, want, torch.float32)
    assert_close(gg, gw, torch.float32)
