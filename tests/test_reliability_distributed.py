"""Inside ``global_normalization()`` a loss either reproduces one process or refuses (issue #14).

OHEM mines its hard negatives per rank, so no global denominator can make K ranks equal one
process: it raises inside the scope (documented: call it outside, per-rank mining as DB / mmocr).
Every other registered loss, function and module, runs in the scope; without a process group
(K = 1) it equals the call outside the scope, value and gradient, for every reduction; a stateful
module (``Traits.stateful``) is compared in evaluation mode, where it is its function on its state,
and in training mode with a twin trained outside the scope (losses, gradients, state). The K = 2
equalities are in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, example, fn_of, name_of, params

import lossforge.functional as F
from lossforge.distributed import global_normalization
from lossforge.registry import LossInfo

#: Losses whose result depends on a per-rank selection that the scope cannot make global.
PER_RANK = {"ohem_binary_cross_entropy"}


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_every_loss_runs_in_the_scope_or_refuses_it(info: LossInfo) -> None:
    fn = fn_of(info)
    x, y = example(info, n=5)
    for reduction in ("mean", "sum", "none"):
        if fn.__name__ in PER_RANK:
            with global_normalization(), pytest.raises(RuntimeError, match="per rank"):
                fn(x, y, reduction=reduction, **params(info))
            with global_normalization(), pytest.raises(RuntimeError, match="global_normalization"):
                info.cls(**params(info))(x, y, reduction_override=reduction)
            continue
        out = fn(x, y, reduction=reduction, **params(info))
        (want,) = torch.autograd.grad(out.sum(), x)
        with global_normalization():
            inside = fn(x, y, reduction=reduction, **params(info))
            # a stateful module in evaluation mode is its function on its current state
            mod = _module(info).eval()(x, y, reduction_override=reduction)
        (got,) = torch.autograd.grad(inside.sum(), x)
        assert_close(inside, out, F64)
        assert_close(mod, out, F64)
        assert_close(got, want, F64)


STATEFUL = [info for info in INFOS if info.traits is not None and info.traits.stateful]


def _module(info: LossInfo) -> torch.nn.Module:
    module: torch.nn.Module = info.cls(**params(info))
    return module


@pytest.mark.parametrize("info", STATEFUL, ids=name_of)
def test_stateful_modules_train_in_the_scope_as_one_process(info: LossInfo) -> None:
    """In training mode a stateful module updates its state each call (Seesaw's class counts,
    GHM's histogram, all-reduced inside the scope): with one process, three training steps inside
    the scope give the losses, gradients and state of the same steps outside it."""
    outside, inside = _module(info), _module(info)
    for step in range(3):
        x, y = example(info, n=5, seed=step)
        want = outside(x, y)
        (want_grad,) = torch.autograd.grad(want, x)
        with global_normalization():
            got = inside(x, y)
        (got_grad,) = torch.autograd.grad(got, x)
        assert_close(got, want, F64)
        assert_close(got_grad, want_grad, F64)
    for (key, a), (_, b) in zip(
        inside.state_dict().items(), outside.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


def test_seesaw_counts_grow_in_the_scope() -> None:
    """The training-mode sweep above compares states; Seesaw's counts do change there (GHM is
    declared with momentum 0, no running state: its running form under 2 ranks is in
    tests/test_detection.py, Seesaw's in tests/test_seesaw.py)."""
    (info,) = [i for i in STATEFUL if i.name == "seesaw"]
    mod = _module(info)
    before = mod.state_dict()["cum_samples"].clone()
    x, y = example(info, n=5)
    with global_normalization():
        mod(x, y)
    assert int((mod.state_dict()["cum_samples"] - before).sum()) == 5


def test_ohem_outside_the_scope_is_unchanged() -> None:
    x = torch.tensor([2.0, -1.0, 1.0, -3.0, 0.5])
    y = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    with global_normalization(enabled=False):
        got = F.ohem_binary_cross_entropy(x, y, negative_ratio=2.0)
    assert_close(got, torch.tensor(0.8048), torch.float32, atol=1e-4)
