"""``module.half()`` / ``.bfloat16()`` leave a loss's floating buffers (class weights, counts, GHM's
running bin counts) in float32; ``.double()`` and device moves apply (``lossforge._buffers``).

Found by an audit of the module layer: cast with the model, fp16 class counts above 65504 became
inf (balanced softmax / logit adjustment NaN, LDAM another loss, with value checks off), GHM's
running counts overflowed after one step (then 0 loss, or an error naming ``bin_counts``), bf16
rounded 120000 to 119808.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _contract import assert_close
from _reliability import INFOS, example, name_of, params

import lossforge
import lossforge.nn as N
from lossforge.registry import LossInfo

LOW = (torch.float16, torch.bfloat16)


def _floating_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: b for k, b in module.named_buffers() if b.is_floating_point()}


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_floating_buffers_keep_float32_and_the_loss(info: LossInfo, dtype: torch.dtype) -> None:
    module = info.cls(**params(info))
    cast = copy.deepcopy(module).to(dtype)
    before, after = _floating_buffers(module), _floating_buffers(cast)
    assert before.keys() == after.keys()
    for key, buffer in after.items():
        assert buffer.dtype == torch.float32, key
        assert torch.equal(buffer, before[key]), key
    assert all(b.dtype == torch.float64 for b in _floating_buffers(cast.double()).values())
    x, y = example(info, n=4, dtype=dtype)
    module.eval(), cast.eval()  # (GHM: no running update; both read the same state)
    assert_close(cast(x, y), module(x, y))


COUNTS = [120000.0, 800.0, 5.0]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("cls", [N.BalancedSoftmaxLoss, N.LogitAdjustedLoss, N.LDAMLoss])
def test_large_class_counts_survive_a_low_precision_cast(
    cls: type[torch.nn.Module], dtype: torch.dtype
) -> None:
    reference = cls(class_counts=COUNTS)
    cast = cls(class_counts=COUNTS).to(dtype)
    assert cast.class_counts.tolist() == COUNTS
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with lossforge.value_checks(False):
        got = cast(x, y)
    assert torch.isfinite(got)
    assert_close(got, reference(x, y))


@pytest.mark.parametrize("cls", [N.GHMCLoss, N.GHMRLoss])
def test_ghm_running_counts_do_not_overflow_in_fp16(cls: type[torch.nn.Module]) -> None:
    gen = torch.Generator().manual_seed(0)
    reference = cls(momentum=0.75)
    cast = cls(momentum=0.75).half()
    for _ in range(3):
        if cls is N.GHMCLoss:
            x = (torch.randn(2000, 40, generator=gen) * 3).half()
            y = torch.randint(0, 41, (2000,), generator=gen)
        else:
            x = torch.randn(40000, 4, generator=gen).half()
            y = torch.randn(40000, 4, generator=gen).half()
        with lossforge.value_checks(True):
            got, want = cast(x, y), reference(x, y)
        assert torch.isfinite(got) and got > 0
        assert_close(got, want)
    assert cast.acc_sum.dtype == torch.float32
    assert_close(cast.acc_sum, reference.acc_sum)


def test_casts_leave_low_precision_buffers_given_so_and_materialise_from_meta() -> None:
    """A buffer given in fp16 stays fp16 through a device move (only a cast to fp16 / bf16 is
    undone); a module built on the meta device, cast and materialised with ``to_empty`` gets
    float32 buffers (it failed: a meta tensor has no values to copy); repr works on the meta
    device and inside a meta default-device scope."""
    given = N.SoftmaxFocalLoss(alpha=torch.tensor([0.1, 0.2]).half())
    assert given.to("cpu").alpha.dtype == torch.float16
    with torch.device("meta"):
        deferred = N.SoftmaxFocalLoss(alpha=[0.1, 0.2])
        assert "alpha=tensor(shape=(2,))" in repr(deferred)
        assert "alpha=[0.25, 0.5]" in repr(N_OUTSIDE)
    materialised = deferred.half().to_empty(device="cpu")
    assert materialised.alpha.dtype == torch.float32 and materialised.alpha.device.type == "cpu"


N_OUTSIDE = N.SoftmaxFocalLoss(alpha=[0.25, 0.5])
