"""Probability targets that are not distributions are refused (issue #14, section 1).

Every registered softmax-family loss that takes probability targets (found by calling it with
one): rows summing to C / 2, or to 0, raise a ``ValueError`` under value checks (tolerance
``1e-3 * C``, RELIABILITY.md); a row within the tolerance passes; with value checks off the values
are used as given.
"""

from __future__ import annotations

import pytest
import torch
from _contract import assert_close
from _reliability import F64, INFOS, example, fn_of, name_of, params
from torch import Tensor

import lossforge
from lossforge.registry import LossInfo


def _probs(x: Tensor) -> Tensor:
    return torch.softmax(torch.randn(x.shape, dtype=F64), dim=1 if x.ndim >= 2 else 0)


def _takes_probabilities(info: LossInfo) -> bool:
    """A softmax-family loss (class-index examples) that also takes probability targets."""
    assert info.traits is not None
    if info.traits.example not in ("softmax_index", "log_probs_index", "segmentation_index"):
        return False  # element-wise targets: independent per class, not a distribution
    x, _ = example(info, n=3)
    try:
        fn_of(info)(x, _probs(x), **params(info))
    except (TypeError, ValueError):
        return False
    return True


#: The region losses take per-class masks, not distributions: see the last test.
PROBS = [
    info
    for info in INFOS
    if _takes_probabilities(info) and not (info.traits is not None and info.traits.region)
]


def test_the_softmax_family_is_swept() -> None:
    names = {info.name for info in PROBS}
    assert {"cross_entropy", "softmax_focal", "balanced_softmax", "logit_adjusted"} <= names


@pytest.mark.parametrize("info", PROBS, ids=name_of)
def test_rows_must_sum_to_one(info: LossInfo) -> None:
    x, _ = example(info, n=4)
    c = x.shape[1]
    t = _probs(x)
    fn = fn_of(info)
    for bad in (torch.full_like(t, 0.5), t * 0):  # rows summing to C / 2, to 0
        expected = rf"probabilities summing to 1 over the classes \(dim 1, tolerance {1e-3 * c:g}\)"
        with lossforge.value_checks(True), pytest.raises(ValueError, match=expected):
            fn(x, bad, **params(info))
        with lossforge.value_checks(True), pytest.raises(ValueError, match=expected):
            info.cls(**params(info))(x, bad)
        with lossforge.value_checks(False):
            assert torch.isfinite(fn(x, bad, **params(info)))
    # within the tolerance: accepted (a float32 softmax does not sum to 1 exactly)
    near = t.clone()
    near[:, 0] += 0.5e-3 * c
    with lossforge.value_checks(True):
        fn(x, near.clamp(max=1.0), **params(info))
        one_bad_row = t.clone()
        one_bad_row[2] *= 1.5
        with pytest.raises(ValueError, match="1 of 4 positions off"):
            fn(x, one_bad_row, **params(info))


REGION = [info for info in INFOS if info.traits is not None and info.traits.region]


@pytest.mark.parametrize("info", REGION, ids=name_of)
def test_region_dense_targets_are_masks_not_distributions(info: LossInfo) -> None:
    """The region losses' dense targets are per-class masks (docs/contract.md): a pixel in no
    class or in every class is a valid target, never refused as a bad distribution."""
    x, _ = example(info, n=4)
    rows = torch.zeros(x.shape, dtype=F64)
    rows[0] = 1.0  # sample 0: every pixel in every class; the others in none
    with lossforge.value_checks(True):
        out = fn_of(info)(x, rows, **params(info))
        assert torch.isfinite(out)
        assert_close(info.cls(**params(info))(x, rows), out, F64)
