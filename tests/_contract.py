"""Shared checks of the lossforge contract, run by every family's test file on its own cases.

A family test module builds a list of :class:`LossCase` and calls ``contract_test_suite(CASES)`` at
module level, which defines the parametrised contract tests in that module. Family-specific tests
(references from the papers, identities, edge cases) live beside them.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

# (rtol, atol) when comparing a low-precision computation with the float64 reference on the *same
# rounded inputs* (RELIABILITY.md section 4, L1). Reductions over many elements get the looser
# value.
TOL = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


def assert_close(
    actual: Tensor, expected: Tensor, dtype: torch.dtype = torch.float32, **kw: Any
) -> None:
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(
        actual.to(torch.float64),
        expected.to(torch.float64),
        rtol=kw.get("rtol", rtol),
        atol=kw.get("atol", atol),
    )


@dataclass
class LossCase:
    """One loss configuration for the generic contract tests.

    Attributes:
        id: Test id.
        fn: The functional loss.
        module: The module class.
        kwargs: Hyperparameters accepted by both ``fn`` (keywords) and ``module`` (constructor).
        make: ``make(shape_n, dtype, generator) -> (input, target)`` with ``shape_n`` rows (N may
            be 0). The input must be a leaf created in ``dtype``; the target must not require grad.
        elementwise: The unreduced loss has the input's shape (sigmoid/regression losses) rather
            than the target's (softmax losses).
        extreme: Whether the input is logits (so +-1e4 is a meaningful test).
        mean_is_count: ``"mean" == none.sum() / none.numel()`` holds for these kwargs.
        supports_weight: Accepts an element-wise ``weight``.
    """

    id: str
    fn: Callable[..., Tensor]
    module: type
    kwargs: dict[str, Any]
    make: Callable[[int, torch.dtype, torch.Generator], tuple[Tensor, Tensor]]
    elementwise: bool = True
    extreme: bool = True
    mean_is_count: bool = True
    supports_weight: bool = True
    supports_avg_factor: bool = True
    stateful: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> Any:
        """The module; a stateful one in evaluation mode (its state then stays as built)."""
        mod = self.module(**{**self.kwargs, **overrides})
        return mod.eval() if self.stateful else mod


def _inputs(
    case: LossCase, n: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, y = case.make(n, dtype, g)
    return x.detach().requires_grad_(True), y


def _zero_and_zero_grad(loss: Tensor, x: Tensor) -> None:
    assert loss.ndim == 0
    assert loss.item() == 0.0
    assert loss.requires_grad, "an empty / all-ignored loss must stay attached to the graph"
    (grad,) = torch.autograd.grad(loss, x, allow_unused=False)
    assert grad.shape == x.shape
    assert torch.all(grad == 0)


def contract_test_suite(cases: list[LossCase]) -> dict[str, Callable[..., None]]:
    """Return the generic contract tests parametrised over ``cases`` (assign into module globals).

    Usage: ``globals().update(contract_test_suite(CASES))``.
    """
    ids = [c.id for c in cases]
    param = pytest.mark.parametrize("case", cases, ids=ids)

    @param
    def test_sum_equals_none_sum(case: LossCase) -> None:
        x, y = _inputs(case)
        none = case.fn(x, y, reduction="none", **case.kwargs)
        total = case.fn(x, y, reduction="sum", **case.kwargs)
        assert_close(total, none.sum(), torch.float64)
        if case.elementwise:
            assert none.shape == x.shape
        if case.mean_is_count:
            mean = case.fn(x, y, reduction="mean", **case.kwargs)
            assert_close(mean, none.sum() / none.numel(), torch.float64)

    @param
    def test_avg_factor_divides_the_sum(case: LossCase) -> None:
        if not case.supports_avg_factor:
            pytest.skip("no avg_factor")
        x, y = _inputs(case)
        total = case.fn(x, y, reduction="sum", **case.kwargs)
        for af in (3.0, torch.tensor(3.0, dtype=torch.float64), torch.tensor(3)):
            got = case.fn(x, y, reduction="mean", avg_factor=af, **case.kwargs)
            assert_close(got, total / 3.0, torch.float64)
        with pytest.raises(ValueError, match="avg_factor"):
            case.fn(x, y, reduction="sum", avg_factor=2.0, **case.kwargs)
        with pytest.raises(ValueError, match="avg_factor"):
            case.fn(x, y, reduction="mean", avg_factor=-1.0, **case.kwargs)

    @param
    def test_weight_scales_elements(case: LossCase) -> None:
        if not case.supports_weight:
            pytest.skip("no element weight")
        x, y = _inputs(case)
        none = case.fn(x, y, reduction="none", **case.kwargs)
        w = torch.rand(none.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        got = case.fn(x, y, reduction="none", weight=w, **case.kwargs)
        assert_close(got, none * w, torch.float64)
        ones = case.fn(x, y, reduction="sum", weight=torch.ones_like(w), **case.kwargs)
        assert_close(ones, none.sum(), torch.float64)
        zero = case.fn(x, y, reduction="sum", weight=torch.zeros_like(w), **case.kwargs)
        assert zero.item() == 0.0
        # a per-sample (N,) weight broadcasts over the remaining dimensions
        per_row = torch.rand(
            none.shape[:1], dtype=torch.float64, generator=torch.Generator().manual_seed(2)
        )
        got = case.fn(x, y, reduction="none", weight=per_row, **case.kwargs)
        assert_close(got, none * per_row.reshape((-1,) + (1,) * (none.ndim - 1)), torch.float64)
        with pytest.raises(ValueError, match="weight"):
            case.fn(x, y, weight=torch.ones(none.numel() + 1, dtype=torch.float64), **case.kwargs)

    @param
    def test_empty_batch_gives_zero(case: LossCase) -> None:
        x, y = _inputs(case, n=0)
        for reduction in ("mean", "sum"):
            _zero_and_zero_grad(case.fn(x, y, reduction=reduction, **case.kwargs), x)
        none = case.fn(x, y, reduction="none", **case.kwargs)
        assert none.numel() == 0
        if case.elementwise:
            assert none.shape == x.shape

    @param
    def test_rejects_bad_reduction(case: LossCase) -> None:
        x, y = _inputs(case)
        for bad in ("avg", None, "elementwise_mean"):
            with pytest.raises(ValueError, match="reduction"):
                case.fn(x, y, reduction=bad, **case.kwargs)

    @param
    def test_rejects_non_tensor_and_integer_input(case: LossCase) -> None:
        x, y = _inputs(case)
        with pytest.raises(TypeError):
            case.fn(x.detach().numpy(), y, **case.kwargs)
        with pytest.raises(TypeError):
            case.fn(x.detach().round().long(), y, **case.kwargs)

    @param
    def test_gradcheck(case: LossCase) -> None:
        x, y = _inputs(case, n=3)
        kwargs = {**case.kwargs, **case.extra.get("gradcheck_kwargs", {})}
        for reduction in ("none", "mean"):
            assert torch.autograd.gradcheck(
                lambda inp, r=reduction: case.fn(inp, y, reduction=r, **kwargs),
                (x,),
                eps=1e-6,
                atol=1e-6,
            )

    @param
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_low_precision_matches_float64_on_same_inputs(
        case: LossCase, dtype: torch.dtype
    ) -> None:
        x, y = _inputs(case, n=6, dtype=dtype)
        x64 = x.detach().double().requires_grad_(True)
        y64 = y.double() if y.is_floating_point() else y
        got = case.fn(x, y, reduction="none", **case.kwargs)
        ref = case.fn(x64, y64, reduction="none", **case.kwargs)
        assert got.dtype == torch.float32, "half inputs are computed and returned in float32"
        assert_close(got, ref, torch.float32, rtol=1e-5, atol=1e-5)
        got.sum().backward()
        ref.sum().backward()
        assert x.grad.dtype == dtype
        assert_close(x.grad.float(), x64.grad, dtype, rtol=2e-2, atol=1e-2)

    @param
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_finite_at_extreme_logits(case: LossCase, dtype: torch.dtype) -> None:
        if not case.extreme:
            pytest.skip("input is not logits")
        x, y = _inputs(case, n=4, dtype=torch.float32)
        big = (
            (torch.sign(x.detach() - x.detach().mean() + 1e-3) * 1e4).to(dtype).requires_grad_(True)
        )
        for reduction in ("mean", "sum", "none"):
            loss = case.fn(big, y, reduction=reduction, **case.kwargs)
            assert torch.isfinite(loss).all(), f"{reduction}: {loss}"
            (grad,) = torch.autograd.grad(loss.sum(), big)
            assert torch.isfinite(grad).all()

    @param
    def test_float_target_requiring_grad(case: LossCase) -> None:
        """A float target that requires grad (a soft label from another network, a learned
        box): the same loss as its detached copy, no warning (a host read of a tensor that
        requires grad warns), and a finite gradient where the target gets one."""
        x, y = _inputs(case)
        if not y.is_floating_point():
            pytest.skip("class-index target")
        y_grad = y.detach().clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for reduction in ("none", "mean"):
                got = case.fn(x, y_grad, reduction=reduction, **case.kwargs)
                assert_close(
                    got,
                    case.fn(x, y, reduction=reduction, **case.kwargs),
                    torch.float64,
                )
                grads = torch.autograd.grad(got.sum(), (x, y_grad), allow_unused=True)
                for grad in grads:
                    assert grad is None or torch.isfinite(grad).all()

    @param
    def test_non_contiguous_input_matches(case: LossCase) -> None:
        x, y = _inputs(case)
        wide = torch.repeat_interleave(x.detach(), 2, dim=-1)[..., ::2].requires_grad_(False)
        assert not wide.is_contiguous() or wide.numel() <= 1
        assert_close(
            case.fn(wide, y, reduction="none", **case.kwargs),
            case.fn(x.detach(), y, reduction="none", **case.kwargs),
            torch.float64,
        )

    @param
    def test_module_matches_functional(case: LossCase) -> None:
        x, y = _inputs(case)
        mod = case.build()
        assert_close(mod(x, y), case.fn(x, y, **case.kwargs), torch.float64)
        scaled = case.build(loss_weight=2.5)
        assert_close(scaled(x, y), 2.5 * case.fn(x, y, **case.kwargs), torch.float64)
        assert_close(
            mod(x, y, reduction_override="sum"),
            case.fn(x, y, reduction="sum", **case.kwargs),
            torch.float64,
        )
        if case.supports_avg_factor:
            assert_close(
                mod(x, y, avg_factor=4.0),
                case.fn(x, y, avg_factor=4.0, **case.kwargs),
                torch.float64,
            )
        with pytest.raises(ValueError, match="reduction_override"):
            mod(x, y, reduction_override="avg")
        with pytest.raises(ValueError, match="reduction"):
            case.module(reduction="batchmean", **case.kwargs)

    @param
    def test_module_state_repr_and_pickle(case: LossCase) -> None:
        mod = case.build()
        again = case.build()
        again.load_state_dict(mod.state_dict())
        clone = pickle.loads(pickle.dumps(mod))
        deep = copy.deepcopy(mod)
        x, y = _inputs(case)
        for other in (again, clone, deep):
            assert_close(other(x, y), mod(x, y), torch.float64)
        text = repr(mod)
        for key, value in case.kwargs.items():
            if isinstance(value, (int, float, str, bool)) and value is not None:
                assert key in text, f"{key} missing from repr {text}"

    @param
    def test_forward_writes_no_state(case: LossCase) -> None:
        mod = case.build()
        before = dict(vars(mod))
        before_buffers = {k: v.clone() for k, v in mod.named_buffers()}
        x, y = _inputs(case)
        mod(x, y).backward()
        assert dict(vars(mod)).keys() == before.keys()
        for k, v in mod.named_buffers():
            torch.testing.assert_close(v, before_buffers[k])

    return {
        name: obj for name, obj in locals().items() if name.startswith("test_") and callable(obj)
    }
