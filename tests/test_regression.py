"""L1, smooth L1 and MSE: references, PyTorch parity, identities, edge cases, properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from hypothesis import given
from hypothesis import strategies as st
from reference import regression as ref

import lossforge as lf
import lossforge.functional as F


def _make(n: int, dtype: torch.dtype, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(n, 4, generator=g, dtype=torch.float64).to(dtype)
    return x, y


CASES = [
    LossCase("l1", F.l1_loss, lf.L1Loss, {}, _make, extreme=False),
    LossCase("mse", F.mse_loss, lf.MSELoss, {}, _make, extreme=False),
    LossCase("smooth_l1", F.smooth_l1_loss, lf.SmoothL1Loss, {"beta": 0.7}, _make, extreme=False),
    LossCase(
        "smooth_l1_beta0", F.smooth_l1_loss, lf.SmoothL1Loss, {"beta": 0.0}, _make, extreme=False
    ),
]
globals().update(contract_test_suite(CASES))


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), (0, 4)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_torch_and_reference(shape: tuple[int, ...], reduction: str) -> None:
    x, y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    for beta in (0.0, 0.3, 1.0, 5.0):
        got = F.smooth_l1_loss(x, y, beta=beta, reduction=reduction)
        if x.numel() or reduction != "mean":  # torch's mean of an empty tensor is NaN, ours is 0
            assert_close(
                got, TF.smooth_l1_loss(x, y, beta=beta, reduction=reduction), torch.float64
            )
        r = ref.smooth_l1(x, y, beta) if beta > 0 else ref.l1(x, y)
        expected = {"none": r, "sum": r.sum(), "mean": r.sum() / max(r.numel(), 1)}[reduction]
        assert_close(got, expected, torch.float64)
    for ours, theirs, mine in ((F.l1_loss, TF.l1_loss, ref.l1), (F.mse_loss, TF.mse_loss, ref.mse)):
        got = ours(x, y, reduction=reduction)
        if x.numel() or reduction != "mean":
            assert_close(got, theirs(x, y, reduction=reduction), torch.float64)
        r = mine(x, y)
        assert_close(
            got,
            {"none": r, "sum": r.sum(), "mean": r.sum() / max(r.numel(), 1)}[reduction],
            torch.float64,
        )


def test_smooth_l1_beta_zero_is_l1_with_gradients() -> None:
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 3, dtype=torch.float64)
    a = F.smooth_l1_loss(x, y, beta=0.0)
    (ga,) = torch.autograd.grad(a, x)
    b = F.l1_loss(x, y)
    (gb,) = torch.autograd.grad(b, x)
    assert_close(a, b, torch.float64)
    assert_close(ga, gb, torch.float64)


def test_l1_subgradient_is_zero_at_zero() -> None:
    x = torch.zeros(4, requires_grad=True)
    F.l1_loss(x, torch.zeros(4)).backward()
    assert torch.all(x.grad == 0)
    x.grad = None
    F.smooth_l1_loss(x, torch.zeros(4), beta=0.0).backward()
    assert torch.all(x.grad == 0)


def test_huber_relation() -> None:
    x, y = torch.randn(20, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    for delta in (0.5, 2.0):
        assert_close(
            delta * F.smooth_l1_loss(x, y, beta=delta, reduction="none"),
            TF.huber_loss(x, y, delta=delta, reduction="none"),
            torch.float64,
        )


def test_rejects_shape_mismatch_instead_of_broadcasting() -> None:
    with pytest.raises(
        ValueError, match=r"l1_loss: expected `target` to have the shape of `pred` \(2, 3\)"
    ):
        F.l1_loss(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="target"):
        F.mse_loss(torch.zeros(2, 3), torch.zeros(3, 2))


def test_rejects_negative_beta_and_bad_backend() -> None:
    with pytest.raises(
        ValueError, match=r"smooth_l1_loss: expected `beta` in \[0, inf\], got -1.0"
    ):
        F.smooth_l1_loss(torch.zeros(2), torch.zeros(2), beta=-1.0)
    with pytest.raises(ValueError, match="beta"):
        lf.SmoothL1Loss(beta=-0.1)
    with pytest.raises(ValueError, match="backend"):
        F.l1_loss(torch.zeros(2), torch.zeros(2), backend="cuda")
    with pytest.raises(ValueError, match="triton"):
        F.l1_loss(torch.zeros(2), torch.zeros(2), backend="triton")


def test_integer_and_bool_targets_are_cast() -> None:
    x = torch.tensor([0.5, 2.0])
    assert_close(F.l1_loss(x, torch.tensor([1, 2])), torch.tensor(0.25), torch.float32)
    assert_close(F.l1_loss(x, torch.tensor([True, False])), torch.tensor(1.25), torch.float32)


def test_mixed_devices_rejected() -> None:
    meta = torch.zeros(2, device="meta")
    with pytest.raises(ValueError, match="device"):
        F.l1_loss(torch.zeros(2), meta)


@given(
    st.lists(st.floats(-50, 50, width=32), min_size=1, max_size=30),
    st.floats(0.0, 5.0, width=32),
)
def test_property_smooth_l1_bounded_by_l1_and_nonnegative(values: list[float], beta: float) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    y = torch.zeros_like(x)
    s = F.smooth_l1_loss(x, y, beta=beta, reduction="none")
    l1 = F.l1_loss(x, y, reduction="none")
    assert torch.all(s >= 0)
    assert torch.all(s <= l1 + 1e-12)
    assert torch.all(l1 - s <= 0.5 * beta + 1e-12)


@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 10_000))
def test_property_split_additivity_of_sum(n: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = (
        torch.randn(n, c, generator=g, dtype=torch.float64),
        torch.randn(n, c, generator=g, dtype=torch.float64),
    )
    k = n // 2
    whole = F.mse_loss(x, y, reduction="sum")
    parts = F.mse_loss(x[:k], y[:k], reduction="sum") + F.mse_loss(x[k:], y[k:], reduction="sum")
    assert_close(whole, parts, torch.float64)
    perm = torch.randperm(n, generator=g)
    assert_close(F.mse_loss(x[perm], y[perm]), F.mse_loss(x, y), torch.float64)
