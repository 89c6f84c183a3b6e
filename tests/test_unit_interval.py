"""The ``[0, 1]`` value check (``_checks.check_unit_interval``) and its integer fast path.

The fast path reads the values' bit patterns as signed integers of the same width and accepts
exactly when they lie in ``[0, bits(1.0)]``; anything else goes to the floating check. These
tests hold the check to an independent predicate written on float64 values
(``0 <= v <= 1``, NaN refused), over every floating dtype, the boundary values around 0 and 1,
signed zeros and NaNs, infinities, subnormals, non-contiguous views, and random bit patterns.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import lossforge
import lossforge.functional as LF
from lossforge import _checks
from lossforge._checks import _unit_bits_clean, check_unit_interval

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
INT_OF = {torch.float32: torch.int32, torch.float64: torch.int64}


def _in_unit_interval(v: Tensor) -> bool:
    """The specification: every value in [0, 1] (so no NaN), judged in float64."""
    w = v.double()
    return bool(((w >= 0) & (w <= 1)).all())


def _accepts(v: Tensor) -> bool:
    with lossforge.value_checks(True):
        try:
            check_unit_interval("f", "target", v)
        except ValueError as err:
            message = str(err)
        else:
            return True
    assert "values in [0, 1]" in message
    return False


def _edges(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(dtype)
    one = torch.tensor(1.0, dtype=dtype)
    above = float(torch.nextafter(one, torch.tensor(2.0, dtype=dtype)))
    below = float(torch.nextafter(one, torch.tensor(0.0, dtype=dtype)))
    return [
        0.0,
        -0.0,
        1.0,
        below,
        above,
        info.tiny,  # smallest normal
        info.tiny / 4,  # subnormal
        -info.tiny / 4,
        -info.tiny,
        0.5,
        2.0,
        -1.0,
        info.max,
        -info.max,
        float("inf"),
        float("-inf"),
        float("nan"),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_edge_value_against_the_float64_predicate(dtype: torch.dtype) -> None:
    clean = torch.tensor([0.0, 0.25, 1.0], dtype=dtype)
    assert _accepts(clean)
    for value in _edges(dtype):
        v = torch.cat([clean, torch.tensor([value], dtype=dtype)])
        assert _accepts(v) == _in_unit_interval(v), (dtype, value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_negative_nan_is_refused(dtype: torch.dtype) -> None:
    # x86's default NaN (0 * inf, inf - inf) has its sign bit set: a negative integer pattern.
    nan = torch.tensor([0.0, float("inf")], dtype=dtype)
    nan = nan[:1] * nan[1:]
    v = torch.cat([torch.tensor([0.5], dtype=dtype), nan.neg(), nan])
    assert torch.isnan(v[1:]).all()
    assert not _accepts(v)
    assert not _accepts(v[:2])
    assert not _accepts(torch.cat([v[:1], v[2:]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_random_bit_patterns(dtype: torch.dtype) -> None:
    """Values drawn as raw bits (every sign, exponent and mantissa, NaN payloads included), one
    at a time in a clean tensor and in batches: the check agrees with the predicate."""
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31, (4000,), generator=g, dtype=torch.int64)
    if dtype == torch.float64:
        bits = bits * (2**32) + torch.randint(0, 2**32, (4000,), generator=g, dtype=torch.int64)
        values = bits.view(torch.float64)
    else:
        values = bits.to(torch.int32).view(torch.float32)
    # half of them mapped into [0, 1) so that both answers occur often
    inside = torch.rand(4000, generator=g, dtype=torch.float64).to(dtype)
    values = torch.where(torch.arange(4000) % 2 == 0, values, inside)
    clean = torch.tensor([0.0, 1.0], dtype=dtype)
    for i in range(0, 4000, 37):
        v = torch.cat([clean, values[i : i + 1]])
        assert _accepts(v) == _in_unit_interval(v), float(values[i])
    for chunk in values.split(8):
        assert _accepts(chunk) == _in_unit_interval(chunk)


def test_fast_path_is_exact_where_it_answers() -> None:
    """``_unit_bits_clean`` may say "not sure" (False) but never accepts a bad value; it is sure
    of every clean tensor without a negative zero."""
    for dtype in DTYPES:
        for value in _edges(dtype):
            v = torch.tensor([0.5, value], dtype=dtype)
            if _unit_bits_clean(v):
                assert _in_unit_interval(v), (dtype, value)
        assert _unit_bits_clean(torch.tensor([0.0, 1.0, 0.3], dtype=dtype))
        assert not _unit_bits_clean(torch.tensor([0.0, -0.0], dtype=dtype))  # decided by floats
    assert not _unit_bits_clean(torch.zeros(0))


def test_non_contiguous_and_strided_views() -> None:
    base = torch.rand(6, 8)
    assert _accepts(base.t())
    assert _accepts(base[:, ::2])
    bad = base.clone()
    bad[5, 7] = 1.5
    assert not _accepts(bad.t())
    assert not _accepts(bad[1:, 1::3])
    assert _accepts(bad[:5])


def test_the_message_counts_and_shows_a_bad_value() -> None:
    v = torch.tensor([0.2, -0.5, 1.5, float("nan"), 1.0])
    with (
        lossforge.value_checks(True),
        pytest.raises(ValueError, match=r"f: expected `target` values in \[0, 1\], got 3 values"),
    ):
        check_unit_interval("f", "target", v)


def test_public_losses_use_it() -> None:
    """BCE with logits on a dense float target: -0.0 and subnormals pass, 1 + ulp and a negative
    NaN are refused with the loss's name, and the loss equals PyTorch's on the clean target."""
    z = torch.randn(64, 5)
    y = (torch.rand(64, 5) < 0.3).float()
    y[0, 0] = -0.0
    y[1, 1] = torch.finfo(torch.float32).tiny / 8
    with lossforge.value_checks(True):
        got = LF.binary_cross_entropy_with_logits(z, y)
    torch.testing.assert_close(got, torch.nn.functional.binary_cross_entropy_with_logits(z, y))
    for bad in (float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))), -1e-30):
        y2 = y.clone()
        y2[3, 2] = bad
        with lossforge.value_checks(True), pytest.raises(ValueError, match="binary_cross_entropy"):
            LF.binary_cross_entropy_with_logits(z, y2)
    y3 = y.clone()
    y3[2, 2] = (torch.zeros(()) * float("inf")).neg()  # a NaN, sign bit either way
    with lossforge.value_checks(True), pytest.raises(ValueError, match="values in"):
        LF.binary_cross_entropy_with_logits(z, y3)


def test_int_views_are_the_width_of_each_dtype() -> None:
    for dtype, (int_dtype, one) in _checks._ONE_BITS.items():
        assert torch.tensor(1.0, dtype=dtype).view(int_dtype).item() == one
        assert (
            torch.empty((), dtype=dtype).element_size()
            == torch.empty((), dtype=int_dtype).element_size()
        )
