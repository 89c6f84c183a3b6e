"""The shared weighting / reduction rules (``lossforge._reduction``) and the value-check switch."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import lossforge as lf
from lossforge._checks import value_checks_enabled
from lossforge._reduction import weight_reduce


def _loss(*shape: int) -> torch.Tensor:
    return torch.arange(1, 1 + int(torch.Size(shape).numel()), dtype=torch.float64).reshape(shape)


def test_mean_divides_by_valid_count_not_numel() -> None:
    loss = _loss(2, 3)
    valid = torch.tensor([[True, False, True], [False, False, True]])
    got = weight_reduce(loss, fn="t", reduction="mean", valid=valid)
    assert got.item() == pytest.approx((1 + 3 + 6) / 3)
    assert weight_reduce(loss, fn="t", reduction="sum", valid=valid).item() == 10
    none = weight_reduce(loss, fn="t", reduction="none", valid=valid)
    assert none.tolist() == [[1, 0, 3], [0, 0, 6]]


def test_row_mask_counts_every_element_of_a_valid_row() -> None:
    loss = _loss(3, 4)
    rows = torch.tensor([[True], [False], [True]])
    got = weight_reduce(loss, fn="t", reduction="mean", valid=rows)
    expected = (loss[0].sum() + loss[2].sum()) / 8
    assert got.item() == pytest.approx(expected.item())


def test_weight_shapes() -> None:
    loss = _loss(3, 4)
    per_row = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    got = weight_reduce(loss, fn="t", reduction="none", weight=per_row)
    assert torch.equal(got, loss * per_row[:, None])
    col = torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64)
    assert torch.equal(weight_reduce(loss, fn="t", reduction="none", weight=col), loss * col)
    assert torch.equal(
        weight_reduce(loss, fn="t", reduction="none", weight=torch.tensor(2.0)), 2 * loss
    )
    # a (C,) weight on (N, C) would broadcast along the wrong axis in plain PyTorch: we refuse it
    with pytest.raises(ValueError, match=r"t: expected `weight` the loss shape \(3, 4\)"):
        weight_reduce(loss, fn="t", reduction="mean", weight=torch.ones(4))
    with pytest.raises(TypeError, match="weight"):
        weight_reduce(loss, fn="t", reduction="mean", weight=[1.0, 2.0, 3.0])  # type: ignore[arg-type]


def test_avg_factor_rules() -> None:
    loss = _loss(2, 2)
    assert weight_reduce(loss, fn="t", reduction="mean", avg_factor=5.0).item() == 2.0
    assert weight_reduce(loss, fn="t", reduction="mean", avg_factor=torch.tensor(5)).item() == 2.0
    with pytest.raises(ValueError, match=r"avg_factor can not be used with sum"):
        weight_reduce(loss, fn="t", reduction="sum", avg_factor=5.0)
    for bad in (-1.0, float("nan"), float("inf"), torch.tensor(-2.0)):
        with pytest.raises(ValueError, match="avg_factor"):
            weight_reduce(loss, fn="t", reduction="mean", avg_factor=bad)
    with pytest.raises(ValueError, match="one-element"):
        weight_reduce(loss, fn="t", reduction="mean", avg_factor=torch.ones(2))
    with pytest.raises(TypeError, match="avg_factor"):
        weight_reduce(loss, fn="t", reduction="mean", avg_factor="3")  # type: ignore[arg-type]


def test_avg_factor_zero_with_nothing_to_sum_is_zero_with_zero_grad() -> None:
    x = torch.randn(4, requires_grad=True, dtype=torch.float64)
    valid = torch.zeros(4, dtype=torch.bool)
    for af in (0.0, torch.tensor(0.0, dtype=torch.float64)):
        out = weight_reduce(x * 2, fn="t", reduction="mean", avg_factor=af, valid=valid)
        assert out.item() == 0.0
        (g,) = torch.autograd.grad(out, x)
        assert torch.all(g == 0)


def test_avg_factor_zero_with_nonzero_sum_is_an_error_not_a_blow_up() -> None:
    # mmdetection divides by avg_factor + eps here and returns sum * 8.4e6 without a word
    with pytest.raises(ValueError, match="avg_factor"):
        weight_reduce(_loss(3), fn="t", reduction="mean", avg_factor=0.0)
    with pytest.raises(ValueError, match="avg_factor"):
        weight_reduce(_loss(3), fn="t", reduction="mean", avg_factor=torch.tensor(0.0))


def test_empty_and_all_invalid_give_exact_zero_connected_to_graph() -> None:
    x = torch.randn(0, 3, requires_grad=True)
    for reduction in ("mean", "sum"):
        out = weight_reduce(x.exp(), fn="t", reduction=reduction)
        assert out.item() == 0.0 and out.requires_grad
    y = torch.randn(2, 3, requires_grad=True)
    out = weight_reduce(
        y.exp(), fn="t", reduction="mean", valid=torch.zeros(2, 3, dtype=torch.bool)
    )
    assert out.item() == 0.0
    (g,) = torch.autograd.grad(out, y)
    assert torch.all(g == 0)


def test_denominator_zero_is_safe() -> None:
    x = torch.randn(3, requires_grad=True, dtype=torch.float64)
    out = weight_reduce(
        x * 0, fn="t", reduction="mean", denominator=torch.tensor(0.0, dtype=torch.float64)
    )
    assert out.item() == 0.0
    (g,) = torch.autograd.grad(out, x)
    assert torch.isfinite(g).all()


def test_value_check_modes() -> None:
    cpu = torch.zeros(2)
    meta = torch.zeros(2, device="meta")
    with lf.value_checks(None):
        assert value_checks_enabled(cpu)
        assert not value_checks_enabled(meta)
    with lf.value_checks(True):
        assert value_checks_enabled(meta)
    with lf.value_checks(False):
        assert not value_checks_enabled(cpu)
    with pytest.raises(TypeError, match="mode"):
        lf.set_value_checks("yes")  # type: ignore[arg-type]


def test_environment_variable_sets_the_starting_mode() -> None:
    code = "import lossforge, torch; print(lossforge.value_checks_enabled(torch.zeros(1)))"
    env_off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"LOSSFORGE_CHECKS": "0", "PATH": ""},
    )
    assert env_off.stdout.strip() == "False", env_off.stderr


def test_import_does_not_touch_triton_or_cuda() -> None:
    code = (
        "import sys, lossforge, lossforge.registry; "
        "print('triton' in sys.modules, 'sklearn' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False False"


def _nan_cases() -> list[tuple[str, object, str]]:
    dense = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    index = torch.tensor([0, 1, 2, 1])
    counts = [10.0, 5.0, 1.0]
    return [
        (
            "binary_cross_entropy_with_logits",
            lambda x: lf.binary_cross_entropy_with_logits(x, dense),
            "logits",
        ),
        ("sigmoid_focal_loss", lambda x: lf.sigmoid_focal_loss(x, dense), "logits"),
        ("asymmetric_loss", lambda x: lf.asymmetric_loss(x, dense), "logits"),
        (
            "balanced_binary_cross_entropy",
            lambda x: lf.balanced_binary_cross_entropy(x, dense),
            "logits",
        ),
        ("ohem_binary_cross_entropy", lambda x: lf.ohem_binary_cross_entropy(x, dense), "logits"),
        ("cross_entropy", lambda x: lf.cross_entropy(x, index), "logits"),
        ("softmax_focal_loss", lambda x: lf.softmax_focal_loss(x, index), "logits"),
        ("softmax_asymmetric_loss", lambda x: lf.softmax_asymmetric_loss(x, index), "logits"),
        (
            "balanced_softmax_loss",
            lambda x: lf.balanced_softmax_loss(x, index, class_counts=counts),
            "logits",
        ),
        ("dice_loss", lambda x: lf.dice_loss(x, index), "logits"),
        ("binary_cross_entropy", lambda x: lf.binary_cross_entropy(x.sigmoid(), dense), "probs"),
        ("smooth_l1_loss", lambda x: lf.smooth_l1_loss(x, dense), "pred"),
    ]


def test_nan_input_raises_with_checks_and_propagates_without() -> None:
    x = torch.randn(4, 3)
    x[1, 2] = float("nan")
    for name, call, arg in _nan_cases():
        with pytest.raises(
            ValueError, match=rf"{name}: expected `{arg}` no NaN values, got 1 NaN of 12"
        ):
            call(x)
        with lf.value_checks(False):
            assert torch.isnan(call(x)), f"{name}: a NaN input must not become a finite loss"


def test_negative_infinity_logits_mask_classes_in_cross_entropy() -> None:
    x = torch.tensor([[2.0, float("-inf"), 0.5], [float("-inf"), 1.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    loss = lf.cross_entropy(x, y)
    ref = torch.nn.functional.cross_entropy(x, y)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref.item())
    loss.backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("binary_cross_entropy_with_logits", lambda g, s: torch.rand(s, generator=g) < 0.3),
        ("l1_loss", lambda g, s: torch.randn(s, generator=g)),
        ("mse_loss", lambda g, s: torch.randn(s, generator=g)),
        ("smooth_l1_loss", lambda g, s: torch.randn(s, generator=g)),
        ("cross_entropy", lambda g, s: torch.randint(0, s[1], (s[0],), generator=g)),
    ],
)
@pytest.mark.parametrize("shape", [(6, 4), (0, 4)])
@pytest.mark.parametrize(
    "opts", [{"reduction": "mean"}, {"reduction": "sum"}, {"avg_factor": 2.5}], ids=str
)
def test_summing_path_equals_weighted_path(name, make, shape, opts) -> None:
    """Without an element-wise weight the reduced losses let PyTorch's kernel sum; an all-ones
    weight takes the unreduced path. Same value, same gradient, 0 for an empty batch."""
    import lossforge.functional as F

    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    t = make(g, shape)
    t = (
        t.double()
        if t.dtype == torch.bool
        else t.to(torch.float64 if t.is_floating_point() else t.dtype)
    )
    fn = getattr(F, name)
    results = []
    for weight in (None, torch.ones(t.shape, dtype=torch.float64)):
        x = x0.clone().requires_grad_(True)
        out = fn(x, t, weight=weight, **opts)
        out.backward(torch.tensor(1.3, dtype=torch.float64))
        results.append((out.detach(), x.grad))
    (v1, g1), (v2, g2) = results
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)
    if x0.numel() == 0:
        assert float(v1) == 0.0


def test_ignore_mask_is_skipped_only_when_the_values_prove_it_absent() -> None:
    from lossforge._checks import check_index_range
    from lossforge._targets import sigmoid_target, softmax_target

    x = torch.randn(4, 3)
    clean, with_ignored = torch.tensor([0, 2, 1, 2]), torch.tensor([0, -100, 1, 2])
    assert check_index_range("f", clean, 3, ignore_index=-100) is False
    assert check_index_range("f", clean, 3, ignore_index=1) is True  # a valid class, present
    assert check_index_range("f", with_ignored, 3, ignore_index=-100) is True
    assert check_index_range("f", clean, 3, ignore_index=None) is False
    assert softmax_target("f", x, clean, ignore_index=-100).valid is None
    st = softmax_target("f", x, with_ignored, ignore_index=-100)
    assert st.valid is not None and st.valid.tolist() == [True, False, True, True]
    assert sigmoid_target("f", x, clean, ignore_index=-1).valid is None
    assert sigmoid_target("f", x, torch.tensor([0, -1, 3, 1]), ignore_index=-1).valid is not None
    with lf.value_checks(False):  # nothing read: the mask is always built
        assert check_index_range("f", clean, 3, ignore_index=-100) is None
        assert softmax_target("f", x, clean, ignore_index=-100).valid is not None
    # and the losses agree either way
    with lf.value_checks(False):
        off = lf.functional.cross_entropy(x, clean), lf.functional.softmax_focal_loss(x, clean)
    on = lf.functional.cross_entropy(x, clean), lf.functional.softmax_focal_loss(x, clean)
    for a, b in zip(on, off, strict=True):
        torch.testing.assert_close(a, b)


def test_nan_check_is_exact_behind_its_summing_filter() -> None:
    """The NaN check sums first (a NaN sum can also come from +inf and -inf, or from overflow in
    half precision) and only an exact count raises."""
    from lossforge._checks import check_floating

    check_floating("f", "x", torch.tensor([float("inf"), float("-inf"), 1.0]))  # no NaN: fine
    h = torch.full((1000,), 60000.0, dtype=torch.float16)
    h[::2] = -60000.0
    check_floating("f", "x", h)
    for bad in (torch.tensor([1.0, float("nan")]), torch.tensor([float("inf"), float("nan")])):
        with pytest.raises(ValueError, match="1 NaN of 2"):
            check_floating("f", "x", bad)
    with lf.value_checks(False):
        check_floating("f", "x", torch.tensor([float("nan")]))  # not read with checks off


@pytest.mark.parametrize("strict", [False, True])
def test_divide_rule_for_device_denominators(strict: bool) -> None:
    """``Denominator``'s rule for a 0-d tensor ``d`` (value checks off, so nothing is read):
    ``total / d`` for ``d > 0``; for ``d == 0`` exactly 0 with zero gradients (strict: only when
    the sum is 0, NaN otherwise); NaN for ``d < 0`` and a NaN ``d``, never a silent 0."""
    from lossforge._reduction import Denominator, divide

    nan = float("nan")
    cases = [(6.0, 3.0, 2.0), (0.0, 0.0, 0.0), (6.0, 0.0, nan if strict else 0.0)]
    cases += [(6.0, -3.0, nan), (6.0, nan, nan), (0.0, nan, nan), (nan, 3.0, nan)]
    for total_value, d_value, expected in cases:
        total = torch.tensor(total_value, dtype=torch.float64, requires_grad=True)
        d = torch.tensor(d_value, dtype=torch.float64)
        with lf.value_checks(False):
            out = divide("f", total, Denominator(d, strict=strict))
        value = float(out.detach())
        assert (math.isnan(value) and expected != expected) or value == expected, (
            total_value,
            d_value,
            value,
        )
        (grad,) = torch.autograd.grad(out, total)
        if d_value == 0.0 and expected == 0.0:
            assert float(grad) == 0.0  # the safe denominator: no NaN from the unused branch
        elif d_value > 0:
            assert float(grad) == pytest.approx(1.0 / d_value)


def test_ohem_bce_nan_target_is_loud_with_value_checks_off() -> None:
    """A NaN in the target or the mask of OHEM BCE (its own device denominator turns NaN)
    gives a NaN loss with value checks off, not 0 (and a ValueError with them on)."""
    import lossforge.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, generator=g)
    y = (torch.rand(4, 4, generator=g) < 0.4).double().float()
    y[0, 0] = float("nan")
    mask = torch.ones(4, 4)
    mask[1, 1] = float("nan")
    with lf.value_checks(False):
        assert torch.isnan(F.ohem_binary_cross_entropy(x, y))
        assert torch.isnan(F.ohem_binary_cross_entropy(x, y.nan_to_num(0.0), mask=mask))
        assert torch.isfinite(F.ohem_binary_cross_entropy(x, y.nan_to_num(0.0)))
    with lf.value_checks(True), pytest.raises(ValueError, match="target"):
        F.ohem_binary_cross_entropy(x, y)


@pytest.mark.parametrize("checks", [True, False])
def test_avg_factor_tensor_requiring_grad_is_read_without_a_warning(checks: bool) -> None:
    """A 0-d ``avg_factor`` that requires grad (a learned normaliser, or the output of a
    differentiable count) is read with ``.item()`` where it is read: ``float()`` warned
    "Converting a tensor with requires_grad=True to a scalar" on every call. Every loss that
    takes ``avg_factor``, on its example."""
    import warnings

    from _reliability import INFOS, example, fn_of, params, takes

    import lossforge

    for info in INFOS:
        if not takes(info, "avg_factor"):
            continue
        x, y = example(info, n=4)
        avg = torch.tensor(2.0, dtype=x.dtype, requires_grad=True)
        with warnings.catch_warnings(), lossforge.value_checks(checks):
            warnings.simplefilter("error")
            loss = fn_of(info)(x, y, **params(info), avg_factor=avg)
        loss.backward()
        assert avg.grad is not None, info.name
