"""Inside ``global_normalization()`` a loss either reproduces one process or refuses (issue #14).

OHEM mines its hard negatives per rank, so no global denominator can make K ranks equal one
process: it raises inside the scope (documented: call it outside, per-rank mining as DB / mmocr).
Every other registered loss, function and module, runs in the scope; without a process group
(K = 1) it equals the call outside the scope, value and gradient, for every reduction. The K = 2
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
            mod = info.cls(**params(info))(x, y, reduction_override=reduction)
        (got,) = torch.autograd.grad(inside.sum(), x)
        assert_close(inside, out, F64)
        assert_close(mod, out, F64)
        assert_close(got, want, F64)


def test_ohem_outside_the_scope_is_unchanged() -> None:
    x = torch.tensor([2.0, -1.0, 1.0, -3.0, 0.5])
    y = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    with global_normalization(enabled=False):
        got = F.ohem_binary_cross_entropy(x, y, negative_ratio=2.0)
    assert_close(got, torch.tensor(0.8048), torch.float32, atol=1e-4)
