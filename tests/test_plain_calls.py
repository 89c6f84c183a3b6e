"""Plain calls: a call that is exactly PyTorch's function runs PyTorch's kernel first.

Cross-entropy / NLL / softmax focal of class indices, BCE with logits, and L1 / MSE / smooth L1 /
Huber, called without class weights, ``weight``, ``avg_factor``, ``ignore_index`` (BCE), options
that need the pipeline, or a non-``"torch"`` backend, on exact ``torch.Tensor`` inputs of the
float32 / float64 compute dtypes: the pipeline hands them to PyTorch's kernel before its own
checks (``_pipeline._plain_nll`` and the first block of ``sigmoid`` / ``regression``), and runs
the general path only for what the kernel cannot settle. These tests check that the path is taken
exactly there (a spy on the general path's first check), and that every case it meets keeps the
contract of the general path: the same values and gradients (against the general path forced by
an all-ones ``weight`` and against the float64 references), the same ``ValueError`` under value
checks, NaN without, 0 over nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as TF
from reference import classification as ref_cls
from reference import regression as ref_reg
from reference import robust_regression as ref_robust

import lossforge as lf
import lossforge._pipeline as pipeline
import lossforge.functional as F

F64 = torch.float64


@pytest.fixture
def general(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per call of the general path's first check (``check_floating``)."""
    calls: list[str] = []
    original = pipeline.check_floating

    def counted(fn, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(fn)
        return original(fn, *a, **k)

    monkeypatch.setattr(pipeline, "check_floating", counted)
    return calls


def _grad(fn: Callable[..., torch.Tensor], x: torch.Tensor, *args, **kw) -> tuple:  # noqa: ANN002, ANN003
    a = x.detach().clone().requires_grad_(True)
    out = fn(a, *args, **kw)
    (g,) = torch.autograd.grad(out, a)
    return out.detach(), g


def _regression_inputs(dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(7, 4, generator=g, dtype=dtype), torch.randn(7, 4, generator=g, dtype=dtype)


REGRESSION = {
    "l1": (F.l1_loss, {}, lambda p, t: ref_reg.l1(p, t)),
    "mse": (F.mse_loss, {}, lambda p, t: ref_reg.mse(p, t)),
    "smooth_l1": (F.smooth_l1_loss, {"beta": 0.3}, lambda p, t: ref_reg.smooth_l1(p, t, 0.3)),
    "huber": (F.huber_loss, {"delta": 0.7}, lambda p, t: ref_robust.huber(p, t, 0.7)),
}


# --------------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", sorted(REGRESSION))
def test_regression_plain_call_equals_the_general_path(name, reduction, checks, general) -> None:
    fn, kw, reference = REGRESSION[name]
    p, t = _regression_inputs()
    expected = reference(p, t)
    expected = expected.mean() if reduction == "mean" else expected.sum()
    with lf.value_checks(checks):
        value, grad = _grad(fn, p, t, reduction=reduction, **kw)
        assert general == []  # the kernel alone, and with checks on one read of its result
        forced, forced_grad = _grad(fn, p, t, reduction=reduction, weight=torch.ones(7, 4), **kw)
        assert general  # an all-ones weight takes the general path
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, forced, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, forced_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REGRESSION))
def test_regression_plain_call_nan_and_infinity(name, general) -> None:
    fn, kw, _ = REGRESSION[name]
    p, t = _regression_inputs()
    p[2, 1] = float("nan")
    with lf.value_checks(True), pytest.raises(ValueError, match="no NaN values"):
        fn(p, t, **kw)
    assert general  # the NaN read off the kernel's result sends it to the prediction's check
    with lf.value_checks(False):
        assert torch.isnan(fn(p, t, **kw))
    p, t = _regression_inputs()
    p[0, 0] = float("inf")
    for checks in (True, False):
        with lf.value_checks(checks):
            assert fn(p, t, **kw) == float("inf")  # an infinite prediction, an infinite loss


@pytest.mark.parametrize("name", sorted(REGRESSION))
def test_regression_not_plain_keeps_the_general_path(name, general) -> None:
    fn, kw, _ = REGRESSION[name]
    p, t = _regression_inputs(torch.float32)
    with lf.value_checks(False):
        # mixed dtypes, broadcasting, a subclass, an empty mean, "none", an avg_factor
        for call in (
            lambda: fn(p, t.double(), **kw),
            lambda: fn(torch.nn.Parameter(p), t, **kw),
            lambda: fn(p[:0], t[:0], **kw),
            lambda: fn(p, t, reduction="none", **kw),
            lambda: fn(p, t, avg_factor=3.0, **kw),
            lambda: fn(p.half(), t.half(), **kw),
        ):
            general.clear()
            call()
            assert general
        with pytest.raises(ValueError, match="shape"):
            fn(p, t[:, :1], **kw)  # PyTorch would broadcast it; the contract refuses
        assert fn(p[:0], t[:0], **kw) == 0  # an empty mean is 0 (PyTorch: NaN)


# --------------------------------------------------------------------------------------------------
# BCE with logits
# --------------------------------------------------------------------------------------------------


def _bce_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 5, generator=g, dtype=F64) * 3
    return x, (torch.rand(6, 5, generator=g, dtype=F64) < 0.3).to(F64) * 0.9


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_bce_plain_call_equals_the_general_path(eps, reduction, checks, general) -> None:
    x, y = _bce_inputs()
    kw = {"reduction": reduction, "label_smoothing": eps}
    expected = ref_cls.binary_cross_entropy_with_logits(x, y, **kw)
    with lf.value_checks(checks):
        value, grad = _grad(F.binary_cross_entropy_with_logits, x, y, **kw)
        assert general == []
        w = torch.ones(6, 5, dtype=F64)
        forced, forced_grad = _grad(F.binary_cross_entropy_with_logits, x, y, weight=w, **kw)
        assert general
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, forced, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, forced_grad, rtol=1e-12, atol=1e-12)
    if eps == 0:
        theirs, their_grad = _grad(TF.binary_cross_entropy_with_logits, x, y, reduction=reduction)
        torch.testing.assert_close(value, theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, their_grad, rtol=1e-12, atol=1e-12)


def test_bce_plain_call_value_checks() -> None:
    x, y = _bce_inputs()
    bad = y.clone()
    bad[1, 2] = 1.5
    with lf.value_checks(True), pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        F.binary_cross_entropy_with_logits(x, bad)
    bad[1, 2] = float("nan")
    with lf.value_checks(True), pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        F.binary_cross_entropy_with_logits(x, bad)
    for value, match in ((float("nan"), "no NaN values"), (float("inf"), "infinite")):
        z = x.clone()
        z[0, 0] = value
        with lf.value_checks(True), pytest.raises(ValueError, match=match):
            F.binary_cross_entropy_with_logits(z, y)
        with lf.value_checks(False):
            assert not torch.isfinite(F.binary_cross_entropy_with_logits(z, y))
    with lf.value_checks(False):
        # out-of-range targets are computed with as given (the contract's checks-off rule)
        bad = y.clone()
        bad[1, 2] = 1.5
        a = x.clone().requires_grad_(True)
        theirs = TF.binary_cross_entropy_with_logits(a, bad)
        torch.testing.assert_close(F.binary_cross_entropy_with_logits(x, bad), theirs.detach())
        assert F.binary_cross_entropy_with_logits(x[:0], y[:0]) == 0  # PyTorch: NaN


def test_bce_not_plain_keeps_the_general_path(general) -> None:
    x, y = _bce_inputs()
    with lf.value_checks(False):
        for call in (
            lambda: F.binary_cross_entropy_with_logits(x, y.float()),
            lambda: F.binary_cross_entropy_with_logits(x, y > 0),
            lambda: F.binary_cross_entropy_with_logits(x, y, pos_weight=2.0),
            lambda: F.binary_cross_entropy_with_logits(x, y, ignore_index=-1),
            lambda: F.binary_cross_entropy_with_logits(x, y, reduction="none"),
        ):
            general.clear()
            call()
            assert general


# --------------------------------------------------------------------------------------------------
# Cross-entropy, NLL and softmax focal of class indices
# --------------------------------------------------------------------------------------------------


def _ce_inputs(ignore: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 3, 4, generator=g, dtype=F64) * 2
    y = torch.randint(0, 5, (2, 3, 4), generator=g)
    if ignore is not None:
        y.view(-1)[::4] = ignore
    return x, y


def _plain_equals_forced(fn, x, y, kw, checks, ignore, general) -> tuple:  # noqa: ANN001
    """The plain call's value and gradient, checked equal to the general path's (forced by an
    all-ones weight); the general path's first check does not run in the plain call of clean
    logits (with ignored positions under value checks, the log-softmax's class-0 slice clears
    them: ``_pipeline._log_softmax_clean``)."""
    with lf.value_checks(checks):
        value, grad = _grad(fn, x, y, **kw)
        assert general == []
        forced, forced_grad = _grad(fn, x, y, weight=torch.ones(2, 3, 4), **kw)
    torch.testing.assert_close(value, forced, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, forced_grad, rtol=1e-12, atol=1e-12)
    return value, grad


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore", [None, 255])
def test_cross_entropy_plain_call(ignore, reduction, checks, general) -> None:
    x, y = _ce_inputs(ignore)
    kw = {"ignore_index": -100 if ignore is None else ignore, "reduction": reduction}
    expected = ref_cls.cross_entropy(x, y, **kw)
    # with checks on and ignored positions the logits' own check runs after the kernel
    value, grad = _plain_equals_forced(F.cross_entropy, x, y, kw, checks, ignore, general)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    theirs, their_grad = _grad(TF.cross_entropy, x, y, **kw)
    torch.testing.assert_close(value, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, their_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("checks", [True, False])
def test_cross_entropy_plain_call_edge_cases(checks) -> None:
    x, y = _ce_inputs()
    with lf.value_checks(checks):
        everything_ignored = torch.full_like(y, 255)
        value, grad = _grad(F.cross_entropy, x, everything_ignored, ignore_index=255)
        assert value == 0 and torch.count_nonzero(grad) == 0  # PyTorch: NaN
        bad = y.clone()
        bad[0, 1, 2] = 5
        if checks:
            with pytest.raises(ValueError, match="class indices"):
                F.cross_entropy(x, bad)
        else:
            assert torch.isnan(F.cross_entropy(x, bad))
    # a NaN logit in an ignored row: refused under value checks, not read without them
    x, y = _ce_inputs(255)
    x[0, 3, 0, 0] = float("nan")  # y[0, 0, 0] is ignored
    with lf.value_checks(True), pytest.raises(ValueError, match="no NaN values"):
        F.cross_entropy(x, y, ignore_index=255)
    with lf.value_checks(False):
        torch.testing.assert_close(
            F.cross_entropy(x, y, ignore_index=255), TF.cross_entropy(x, y, ignore_index=255)
        )
        x[0, 3, 0, 1] = float("nan")  # a counted row
        assert torch.isnan(F.cross_entropy(x, y, ignore_index=255))


BAD_COLUMNS = {
    "NaN": ([0.0, float("nan"), 1.0, 0.0, 0.0], "no NaN values"),
    "+inf": ([0.0, 1.0, float("inf"), 0.0, 0.0], r"no \+inf values"),
    "+inf at class 0": ([float("inf"), 1.0, 0.0, 0.0, 0.0], r"no \+inf values"),
    "every class -inf": ([float("-inf")] * 5, "-inf"),
}


@pytest.mark.parametrize("bad", sorted(BAD_COLUMNS))
@pytest.mark.parametrize("loss", ["cross_entropy", "softmax_focal_loss"])
def test_bad_logits_at_an_ignored_position_are_refused_under_value_checks(
    loss, bad, general
) -> None:
    """The plain call's loss never reads an ignored position: under value checks its logits are
    cleared by the class-0 slice of the log-softmax (NaN there for each of these), and a
    non-finite slice hands the decision to the logits' own check, with its message."""
    fn = getattr(F, loss)
    x, y = _ce_inputs(255)
    column, message = BAD_COLUMNS[bad]
    x[0, :, 0, 0] = torch.tensor(column, dtype=F64)  # y[0, 0, 0] is ignored
    with lf.value_checks(True), pytest.raises(ValueError, match=message):
        fn(x, y, ignore_index=255)
    assert general == [loss]


@pytest.mark.parametrize("loss", ["cross_entropy", "softmax_focal_loss"])
def test_masked_classes_at_ignored_and_counted_positions_pass_the_value_checks(
    loss, general
) -> None:
    """-inf logits (masked classes) are valid: at class 0 they make the class-0 slice -inf, and
    the logits' own check (which runs then) accepts them; the loss equals the general path's."""
    fn = getattr(F, loss)
    x, y = _ce_inputs(255)
    x[0, 0, 0, 0] = float("-inf")  # an ignored position, class 0
    x[0, 2, 0, 1] = float("-inf")  # a counted position, another class
    y[0, 0, 1] = 1
    with lf.value_checks(True):
        value, grad = _grad(fn, x, y, ignore_index=255)
        assert general == [loss]
        forced, forced_grad = _grad(fn, x, y, ignore_index=255, weight=torch.ones(2, 3, 4))
    assert torch.isfinite(value)
    torch.testing.assert_close(value, forced, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, forced_grad, rtol=1e-12, atol=1e-12)


def test_nll_plain_call_checks_unread_classes_under_value_checks(general) -> None:
    """A finite NLL says nothing of the log-probabilities it did not read: under value checks
    NLL's plain call is not taken, so a NaN in another class is still refused."""
    x, y = _ce_inputs()
    logp = torch.log_softmax(x, 1)
    expected = ref_cls.nll_loss(logp, y)
    with lf.value_checks(False):
        torch.testing.assert_close(F.nll_loss(logp, y), expected, rtol=1e-12, atol=1e-12)
        assert general == []
    with lf.value_checks(True):
        torch.testing.assert_close(F.nll_loss(logp, y), expected, rtol=1e-12, atol=1e-12)
        assert general
    other = (int(y[0, 0, 0]) + 1) % 5
    logp[0, other, 0, 0] = float("nan")
    with lf.value_checks(True), pytest.raises(ValueError, match="no NaN values"):
        F.nll_loss(logp, y)


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("ignore", [None, 255])
def test_softmax_focal_plain_call(ignore, checks, general) -> None:
    x, y = _ce_inputs(ignore)
    kw = {"gamma": 2.0, "ignore_index": ignore}
    value, _ = _plain_equals_forced(F.softmax_focal_loss, x, y, kw, checks, ignore, general)
    # float64 formula: -(1 - p_t)^2 log p_t over the valid positions
    logp = torch.log_softmax(x, 1)
    valid = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
    lp = logp.gather(1, y.clamp(0, 4).unsqueeze(1)).squeeze(1)[valid]
    expected = (-((1 - lp.exp()) ** 2) * lp).sum() / valid.sum()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)


def test_softmax_not_plain_keeps_the_general_path(general) -> None:
    x, y = _ce_inputs()
    with lf.value_checks(False):
        for call in (
            lambda: F.cross_entropy(x, y, class_weight=[1, 2, 1, 1, 1]),
            lambda: F.cross_entropy(x, y, label_smoothing=0.1),
            lambda: F.cross_entropy(x, y, avg_factor=4.0),
            lambda: F.cross_entropy(x.half(), y),
            lambda: F.cross_entropy(torch.nn.Parameter(x), y),
            lambda: F.cross_entropy(x, torch.softmax(x, 1)),
            lambda: F.softmax_focal_loss(x, y, alpha=[0.5] * 5),
        ):
            general.clear()
            call()
            assert general


# --------------------------------------------------------------------------------------------------
# The argument checks' memory (``loss_function``)
# --------------------------------------------------------------------------------------------------


def test_checked_scalars_are_remembered_by_type_and_value() -> None:
    x, y = _ce_inputs()
    F.cross_entropy(x, y, ignore_index=1)
    with pytest.raises(TypeError, match="ignore_index"):
        F.cross_entropy(x, y, ignore_index=True)  # equal to 1 as a key, but a bool
    with pytest.raises(TypeError, match="ignore_index"):
        F.cross_entropy(x, y, ignore_index=1.0)
    for _ in range(2):  # a refused value is refused again (never remembered)
        with pytest.raises(ValueError, match="gamma"):
            F.softmax_focal_loss(x, y, gamma=-1.0)
    # beyond the memory's size every value is still checked
    for i in range(300):
        F.softmax_focal_loss(x, y, gamma=1.0 + i / 1000)
    with pytest.raises(ValueError, match="gamma"):
        F.softmax_focal_loss(x, y, gamma=-2.0)


# --------------------------------------------------------------------------------------------------
# Extreme inputs and gradcheck on the plain path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checks", [True, False])
def test_plain_calls_at_extreme_inputs_equal_pytorch(checks, general) -> None:
    """+-1e4 logits / predictions (float32): finite, equal to PyTorch's function (values and
    gradients), and still the plain path."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 5, generator=g).sign() * 1e4
    idx = torch.randint(0, 5, (6,), generator=g)
    dense = (torch.rand(6, 5, generator=g) < 0.5).float()
    cases = [
        (F.cross_entropy, TF.cross_entropy, idx, {}),
        (F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits, dense, {}),
        (F.smooth_l1_loss, TF.smooth_l1_loss, dense, {"beta": 0.5}),
        (F.mse_loss, TF.mse_loss, dense, {}),
    ]
    for ours, theirs, y, kw in cases:
        with lf.value_checks(checks):
            value, grad = _grad(ours, x, y, **kw)
        want, want_grad = _grad(theirs, x, y, **kw)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        torch.testing.assert_close(value, want)
        torch.testing.assert_close(grad, want_grad)
    assert general == []


def test_plain_calls_pass_gradcheck(general) -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    idx = torch.randint(0, 3, (4,), generator=g)
    soft = torch.rand(4, 3, generator=g, dtype=F64)
    with lf.value_checks(False):
        assert torch.autograd.gradcheck(lambda a: F.cross_entropy(a, idx, ignore_index=1), (x,))
        assert torch.autograd.gradcheck(lambda a: F.softmax_focal_loss(a, idx, gamma=2.0), (x,))
        assert torch.autograd.gradcheck(lambda a: F.binary_cross_entropy_with_logits(a, soft), (x,))
        assert torch.autograd.gradcheck(lambda a: F.huber_loss(a, soft, delta=0.3), (x,))
    assert general == []


# --------------------------------------------------------------------------------------------------
# Plain-call entries: tried before the argument checks (``@loss_function(plain=...)``)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per call of a pipeline's entry (``softmax``, ``sigmoid``, ``regression``): the
    checked route; a call its plain-call entry serves never reaches one."""
    calls: list[str] = []
    for name in ("softmax", "sigmoid", "regression"):
        original = getattr(pipeline, name)

        def counted(fn, *a, _original=original, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            calls.append(fn)
            return _original(fn, *a, **k)

        monkeypatch.setattr(pipeline, name, counted)
    return calls


def _entry_cases() -> dict[str, tuple]:
    """``name -> (function, PyTorch's function, inputs, plain keywords)``."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 5, 4, generator=g) * 2
    y = torch.randint(0, 5, (3, 4), generator=g)
    y[0, 1] = 255
    p, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    z = torch.randn(6, 5, generator=g) * 3
    d = (torch.rand(6, 5, generator=g) < 0.3).float()
    logp = torch.log_softmax(x, dim=1)
    return {
        "cross_entropy": (F.cross_entropy, TF.cross_entropy, (x, y), {"ignore_index": 255}),
        "nll_loss": (F.nll_loss, TF.nll_loss, (logp, y), {"ignore_index": 255}),
        "bce_with_logits": (
            F.binary_cross_entropy_with_logits,
            TF.binary_cross_entropy_with_logits,
            (z, d),
            {},
        ),
        "l1": (F.l1_loss, TF.l1_loss, (p, t), {}),
        "mse": (F.mse_loss, TF.mse_loss, (p, t), {}),
        "smooth_l1": (F.smooth_l1_loss, TF.smooth_l1_loss, (p, t), {"beta": 0.25}),
        "huber": (F.huber_loss, TF.huber_loss, (p, t), {"delta": 0.5}),
        # no PyTorch function: checked against the row reference in its own test
        "softmax_focal": (F.softmax_focal_loss, None, (x, y), {"gamma": 2.0, "ignore_index": 255}),
    }


ENTRIES = sorted(_entry_cases())
#: The entries whose loss is one of PyTorch's functions.
PYTORCH_ENTRIES = [name for name in ENTRIES if _entry_cases()[name][1] is not None]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", PYTORCH_ENTRIES)
def test_plain_entry_serves_plain_calls_bitwise_as_pytorch(name, reduction, dtype, routed) -> None:
    """A plain call never reaches the pipeline, and gives PyTorch's value and gradient bit for
    bit (its kernels, on inputs below BCE's closed-form size), value checks off and on (NLL of
    log-probabilities is not plain under value checks: its unread classes are checked)."""
    fn, theirs, (a, b), kw = _entry_cases()[name]
    a = a.to(dtype)
    b = b.to(dtype) if b.is_floating_point() else b
    for checks in (False, True):
        routed.clear()
        mine = a.detach().clone().requires_grad_(True)
        ref = a.detach().clone().requires_grad_(True)
        with lf.value_checks(checks):
            out = fn(mine, b, reduction=reduction, **kw)
        assert routed == ([] if not (checks and name == "nll_loss") else ["nll_loss"])
        expected = theirs(ref, b, reduction=reduction, **kw)
        assert out.dtype == expected.dtype and torch.equal(out, expected), (name, checks)
        out.backward()
        expected.backward()
        assert torch.equal(mine.grad, ref.grad), (name, checks)


@pytest.mark.parametrize("name", ENTRIES)
def test_plain_entry_leaves_everything_else_to_the_checked_route(name, routed) -> None:
    """Explicit defaults, other keywords, values of another type (a bool, a NumPy integer, an
    int as a float hyperparameter) or out of the entry's range, ``"none"`` and a third positional
    argument take the checked route (the entry returns None, never raises), which coerces, serves
    or reports them exactly as before."""
    import numpy as np

    fn, _, (a, b), kw = _entry_cases()[name]
    with lf.value_checks(False):
        expected = fn(a, b, **kw)
        calls: list = [
            {**kw, "weight": None},
            {**kw, "avg_factor": None},
            {**kw, "reduction": "none"},
        ]
        for key in kw:  # the loss's own keyword: ignore_index / beta / delta
            value = kw[key]
            calls.append({**kw, key: np.int64(value) if key == "ignore_index" else 1})
        for call in calls:
            routed.clear()
            out = fn(a, b, **call)
            assert routed == [fn.__name__], call
            if call.get("reduction") != "none" and all(
                type(v) is type(kw.get(k, v)) for k, v in call.items()
            ):
                assert torch.equal(out, expected), call
        routed.clear()
        with pytest.raises(TypeError):
            fn(a, b, "mean")  # keyword-only
        with pytest.raises(ValueError, match="reduction"):
            fn(a, b, reduction="avg", **kw)
        with pytest.raises((TypeError, ValueError), match="reduction"):
            fn(a, b, reduction=["mean"], **kw)  # unhashable: the entry declines, no crash
        if "ignore_index" in kw:
            for bad in (2**63, True):
                routed.clear()
                with pytest.raises((TypeError, ValueError), match="ignore_index"):
                    fn(a, b, ignore_index=bad)
        for key in ("beta", "delta"):
            if key in kw:
                for bad in (float("nan"), -1.0, float("inf")):
                    with pytest.raises(ValueError, match=key):
                        fn(a, b, **{key: bad})
                routed.clear()
                fn(a, b, **{key: 1e30})
                assert routed == []  # a large finite value is plain
        if name == "smooth_l1":
            routed.clear()
            torch.testing.assert_close(fn(a, b, beta=0.0), F.l1_loss(a, b))
            assert routed  # beta = 0 is L1: the checked route decides


@pytest.mark.parametrize("name", ENTRIES)
def test_plain_entry_serves_an_explicit_torch_backend(name, routed) -> None:
    """``backend="torch"`` spelled out (the default; code that pins its backend, the benchmark
    protocol) is still a plain call, with the same value and gradient, under value checks too;
    any other backend value or type takes the checked route, which serves or reports it."""
    import inspect

    fn, _, (a, b), kw = _entry_cases()[name]
    if "backend" not in inspect.signature(fn).parameters:  # Huber: no backend to pin
        with pytest.raises(TypeError, match="unknown 'backend'"):
            fn(a, b, backend="torch", **kw)
        return
    x = a.detach().clone().requires_grad_(True)
    for checks in (True, False):
        with lf.value_checks(checks):
            value, grad = _grad(fn, x, b, **kw)
            routed.clear()
            pinned, pinned_grad = _grad(fn, x, b, backend="torch", **kw)
            assert routed == ([] if not (checks and name == "nll_loss") else ["nll_loss"])
            assert torch.equal(value, pinned) and torch.equal(grad, pinned_grad)
            routed.clear()
            auto, _ = _grad(fn, x, b, backend="auto", **kw)  # CPU inputs: the torch backend
            assert routed == [fn.__name__] and torch.equal(auto, value)
    for bad in ("Torch", "cuda"):
        with pytest.raises(ValueError, match="backend"):
            fn(a, b, backend=bad, **kw)
    with pytest.raises(ValueError, match="triton"):
        fn(a, b, backend="triton", **kw)  # CPU inputs: no kernel serves them


@pytest.mark.parametrize("name", ENTRIES)
def test_plain_entry_keeps_the_value_checks_and_their_messages(name) -> None:
    """Under value checks the entry reports what the checked route reports, with its message:
    a NaN input, an index out of range, a target outside [0, 1]; without them NaN, not an
    error."""
    fn, _, (a, b), kw = _entry_cases()[name]
    bad_input = a.clone()
    if b.is_floating_point():
        bad_input.view(-1)[3] = float("nan")
    else:  # at a counted position's target class (NLL reads no other)
        bad_input[0, int(b[0, 0]), 0] = float("nan")
    with lf.value_checks(True), pytest.raises(ValueError, match="NaN"):
        fn(bad_input, b, **kw)
    with lf.value_checks(False):
        assert torch.isnan(fn(bad_input, b, **kw))
    if not b.is_floating_point():
        bad = b.clone()
        bad[1, 1] = 9
        with lf.value_checks(True), pytest.raises(ValueError, match=r"class indices in \[0, 4\]"):
            fn(a, bad, **kw)
    if name == "bce_with_logits":
        bad = b.clone()
        bad[1, 1] = 1.5
        with lf.value_checks(True), pytest.raises(ValueError, match=r"values in \[0, 1\]"):
            fn(a, bad)


def test_plain_entry_serves_modules_and_refuses_a_constraint(routed) -> None:
    """A module's call with its non-default configuration is a plain call; an entry cannot be
    combined with a ``check`` constraint (it would skip it)."""
    from lossforge import nn
    from lossforge._params import loss_function

    fn, theirs, (x, y), kw = _entry_cases()["cross_entropy"]
    with lf.value_checks(True):
        out = nn.CrossEntropyLoss(ignore_index=255)(x, y)
        assert routed == []
        assert torch.equal(out, theirs(x, y, ignore_index=255))
        nn.CrossEntropyLoss(ignore_index=255, label_smoothing=0.1)(x, y)
    assert routed == ["cross_entropy"]
    with pytest.raises(TypeError, match="plain-call entry"):
        loss_function(check=lambda owner, values: None, plain=lambda *a, **k: None)


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_plain_entry(gamma, reduction, checks, routed) -> None:
    """Softmax focal's entry serves ``gamma`` (a float), ``ignore_index`` and ``reduction``
    without the pipeline, bit for bit the checked route's value and gradient (forced by an
    explicit ``weight=None``), and the float64 row reference; an int ``gamma`` or any
    other keyword takes the checked route."""
    from reference.focal import softmax_focal_rows

    g = torch.Generator().manual_seed(13)
    x = torch.randn(9, 5, generator=g, dtype=F64) * 2
    y = torch.randint(0, 5, (9,), generator=g)
    y[[2, 6]] = 255
    kw = {"gamma": gamma, "ignore_index": 255, "reduction": reduction}
    with lf.value_checks(checks):
        value, grad = _grad(F.softmax_focal_loss, x, y, **kw)
        assert routed == []
        forced, forced_grad = _grad(F.softmax_focal_loss, x, y, weight=None, **kw)
        assert routed == ["softmax_focal_loss"]
        routed.clear()
        F.softmax_focal_loss(x, y, gamma=2, ignore_index=255)
        assert routed == ["softmax_focal_loss"]
    assert torch.equal(value, forced) and torch.equal(grad, forced_grad)
    rows, valid, _ = softmax_focal_rows(x, y, gamma=gamma, ignore_index=255)
    expected = rows.sum() / valid.sum() if reduction == "mean" else rows.sum()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    bad = y.clone()
    bad[0] = 7
    with lf.value_checks(True), pytest.raises(ValueError, match=r"class indices in \[0, 4\]"):
        F.softmax_focal_loss(x, bad, **kw)


def _outcome(fn, a, b, kw) -> tuple:  # noqa: ANN001
    """``("ok", value, gradient)`` or ``("error", type, message)`` of one call."""
    leaf = a.detach().clone().requires_grad_(a.is_floating_point())
    try:
        out = fn(leaf, b, **kw)
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        return ("error", type(err), str(err))
    grad = None
    if leaf.requires_grad and out.requires_grad:
        (grad,) = torch.autograd.grad(out.sum(), leaf)
    return ("ok", out.detach(), grad)


def _same(mine: tuple, checked: tuple) -> bool:
    if mine[0] != checked[0]:
        return False
    if mine[0] == "error":
        return mine[1:] == checked[1:]
    for x, y in zip(mine[1:], checked[1:], strict=True):
        if (x is None) != (y is None):
            return False
        if x is not None and not (
            x.dtype == y.dtype and torch.equal(x.nan_to_num(), y.nan_to_num())
        ):
            return False
        if x is not None and not torch.equal(x.isnan(), y.isnan()):
            return False
    return True


@pytest.mark.parametrize("seed", range(8))
def test_plain_entries_never_change_an_answer(seed) -> None:
    """Differential: random inputs (dtypes, shapes with empty and 1-d cases, non-contiguous views,
    NaN and out-of-range values, int32 and float targets) and keywords (reductions, ignore
    values), value checks on and off; each call's value, gradient or error (type and message)
    is the same with the entry as through the checked route (forced by an explicit
    ``weight=None``, which the entry declines)."""
    rng = random.Random(seed)
    for _ in range(40):
        name = rng.choice(ENTRIES)
        fn, _, (a, b), kw = _entry_cases()[name]
        kw = dict(kw)
        kw["reduction"] = rng.choice(["mean", "sum", "mean", "sum", "none"])
        dtype = rng.choice([torch.float32, F64, torch.float16])
        a = a.to(dtype)
        if b.is_floating_point():
            b = b.to(rng.choice([dtype, torch.float32]))
        elif rng.random() < 0.2:
            b = b.to(torch.int32)
        if rng.random() < 0.3:  # a NaN input
            a = a.clone()
            a.view(-1)[rng.randrange(a.numel())] = float("nan")
        if rng.random() < 0.2 and not b.is_floating_point():  # an index out of range
            b = b.clone()
            b.view(-1)[0] = 5
        if rng.random() < 0.2 and b.is_floating_point() and name == "bce_with_logits":
            b = b.clone()
            b[0, 0] = 1.5
        if rng.random() < 0.2:  # a non-contiguous view of the same values
            a = a.transpose(0, -1).contiguous().transpose(0, -1)
        if rng.random() < 0.1:  # empty
            a, b = a[:0], b[:0]
        if "ignore_index" in kw and rng.random() < 0.3:
            kw["ignore_index"] = rng.choice([-100, 0, 255])
        if "ignore_index" in kw and rng.random() < 0.1 and b.numel():
            b = torch.full_like(b, kw["ignore_index"])  # everything ignored
        for checks in (True, False):
            with lf.value_checks(checks):
                mine = _outcome(fn, a, b, kw)
                checked = _outcome(fn, a, b, {**kw, "weight": None})
            assert _same(mine, checked), (name, kw, dtype, checks, mine[:1], checked[:1])


def test_plain_value_predicates() -> None:
    """What the entries accept unchanged: exact types, values the argument checks would pass
    as they are."""
    import numpy as np

    class Name(str):
        pass

    assert pipeline.plain_reduction("mean") and pipeline.plain_reduction("sum")
    for bad in ("none", "Mean", Name("mean"), ["mean"], None, 1):
        assert not pipeline.plain_reduction(bad)
    assert pipeline.plain_index(-100) and pipeline.plain_index(2**63 - 1)
    assert pipeline.plain_index(-(2**63))
    for bad in (2**63, -(2**63) - 1, True, np.int64(3), 3.0, None):
        assert not pipeline.plain_index(bad)
    assert pipeline.plain_number(0.5) and pipeline.plain_number(1e300)
    assert not pipeline.plain_number(0.0) and pipeline.plain_number(0.0, zero=True)
    assert pipeline.plain_number(-0.0, zero=True)  # -0.0 == 0.0: the checks accept it too
    for bad in (1, -1.0, float("inf"), float("nan"), np.float64(0.5), True):
        assert not pipeline.plain_number(bad) and not pipeline.plain_number(bad, zero=True)
