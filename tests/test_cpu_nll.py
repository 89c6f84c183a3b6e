"""Cross-entropy / NLL of class indices on the CPU through PyTorch's kernel alone (``_cpu_nll``).

On the CPU the reduced cross-entropy and NLL of class indices run ``F.cross_entropy``'s own
operations: PyTorch's NLL kernel range-checks every index and returns the mean's denominator. What
that kernel cannot settle alone (an index out of range, nothing valid, ``ignore_index=None``) goes
to the general path. These tests check that the path is taken where it should be, that it equals
PyTorch and the float64 reference (values and gradients), and that every case it hands on keeps the
contract: a ValueError under value checks, NaN without, 0 over nothing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from _contract import assert_close
from _ops import OpLog
from reference import classification as ref

import lossforge as lf
import lossforge._pipeline as pipeline
import lossforge.functional as F

F64 = torch.float64


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per call of ``_cpu_nll``: whether it returned the loss; ``_lean_nll`` (its lean
    first step for the commonest case) counts as ``_cpu_nll`` when the case is its own (served
    or declined for the general path; when it is not, ``_cpu_nll`` runs and counts itself)."""
    calls: list[bool] = []
    original = pipeline._cpu_nll
    original_one = pipeline._lean_nll

    def counted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = original(*a, **k)
        calls.append(out is not None)
        return out

    def counted_one(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = original_one(*a, **k)
        if out is not None:  # served (the loss), or declined for the general path
            calls.append(isinstance(out, torch.Tensor))
        return out

    monkeypatch.setattr(pipeline, "_cpu_nll", counted)
    monkeypatch.setattr(pipeline, "_lean_nll", counted_one)
    return calls


SHAPES = {
    "2d": ((6, 5), (6,)),
    "1d-unbatched": ((5,), ()),
    "3d": ((2, 5, 7), (2, 7)),
    "4d": ((2, 5, 3, 4), (2, 3, 4)),
    "5d": ((2, 5, 2, 3, 2), (2, 2, 3, 2)),
}


def _inputs(shape, tshape, seed: int = 0, ignore: int | None = None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64) * 2
    c = shape[1] if len(shape) >= 2 else shape[0]
    y = torch.randint(0, c, tshape, generator=g)
    if ignore is not None and y.numel() > 1:
        y.view(-1)[::3] = ignore
    return x, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kw", [{}, {"ignore_index": 255}, {"class_weight": [0.5, 2, 1, 0.25, 3]}])
@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("checks", [True, False])
def test_equals_pytorch_and_the_reference(name, kw, reduction, checks, taken) -> None:
    shape, tshape = SHAPES[name]
    x, y = _inputs(shape, tshape, ignore=kw.get("ignore_index"))
    tkw = dict(kw)
    if "class_weight" in tkw:
        tkw["weight"] = torch.tensor(tkw.pop("class_weight"), dtype=F64)
    for ours, theirs, reference, inp in (
        (F.cross_entropy, TF.cross_entropy, ref.cross_entropy, x),
        (F.nll_loss, TF.nll_loss, ref.nll_loss, torch.log_softmax(x, dim=min(1, x.ndim - 1))),
    ):
        taken.clear()
        a = inp.detach().clone().requires_grad_(True)
        b = inp.detach().clone().requires_grad_(True)
        r = inp.detach().clone().requires_grad_(True)
        with lf.value_checks(checks):
            out = ours(a, y, reduction=reduction, **kw)
        assert taken == [True], (ours.__name__, taken)
        expected = theirs(b, y, reduction=reduction, **tkw)
        assert_close(out, expected, F64)
        out.backward(torch.tensor(1.3, dtype=F64))
        expected.backward(torch.tensor(1.3, dtype=F64))
        assert_close(a.grad, b.grad, F64)
        rv = reference(r, y, reduction=reduction, **kw)
        assert_close(out.detach(), rv.detach(), F64)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("checks", [True, False])
def test_label_smoothing_equals_pytorch_and_the_reference(name, ignore, reduction, checks, taken):
    """Without class weights, cross-entropy with label smoothing is PyTorch's too: one call of
    its composite with value checks off, the log-softmax, the NLL kernel and the smoothing term
    (the summed -log p of the counted positions, reduced as the NLL) with them on."""
    shape, tshape = SHAPES[name]
    x, y = _inputs(shape, tshape, seed=3, ignore=ignore)
    kw = {} if ignore is None else {"ignore_index": ignore}
    for eps in (0.1, 0.7):
        taken.clear()
        a = x.detach().clone().requires_grad_(True)
        b = x.detach().clone().requires_grad_(True)
        with lf.value_checks(checks):
            out = F.cross_entropy(a, y, label_smoothing=eps, reduction=reduction, **kw)
        assert taken == [True], (eps, taken)
        expected = TF.cross_entropy(b, y, label_smoothing=eps, reduction=reduction, **kw)
        assert_close(out, expected, F64)
        out.backward(torch.tensor(1.3, dtype=F64))
        expected.backward(torch.tensor(1.3, dtype=F64))
        assert_close(a.grad, b.grad, F64)
        rv = ref.cross_entropy(x, y, label_smoothing=eps, reduction=reduction, **kw)
        assert_close(out.detach(), rv, F64)


def test_label_smoothing_over_nothing_valid_is_zero(taken) -> None:
    """Every position ignored: PyTorch's 0 / 0 is NaN; here 0 (the general path), with checks on
    and off."""
    x, y = _inputs((4, 3), (4,))
    y[:] = 255
    for checks in (True, False):
        with lf.value_checks(checks):
            out = F.cross_entropy(x, y, label_smoothing=0.2, ignore_index=255)
        assert float(out) == 0.0


def test_channels_last_and_integer_dtypes(taken) -> None:
    x, y = _inputs((2, 5, 3, 4), (2, 3, 4))
    xc = x.to(memory_format=torch.channels_last)
    for target in (y, y.to(torch.int32), y.to(torch.uint8)):
        for ours, inp in ((F.cross_entropy, xc), (F.nll_loss, torch.log_softmax(xc, 1))):
            taken.clear()
            a = inp.detach().clone().requires_grad_(True)
            out = ours(a, target)
            out.backward()
            assert taken == [True]
            b = inp.detach().clone().requires_grad_(True)
            theirs = TF.cross_entropy if ours is F.cross_entropy else TF.nll_loss
            expected = theirs(b, y)
            expected.backward()
            assert_close(out, expected, F64)
            assert_close(a.grad, b.grad, F64)


@pytest.mark.parametrize("bad", [5, -1, -100])
@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_an_index_out_of_range_is_loud(fn, bad, taken) -> None:
    # -100 is out of range with ignore_index=None, and 5 with ignore_index=-100
    x, y = _inputs((6, 5), (6,))
    y[2] = bad
    ignore = None if bad == -100 else -100
    with (
        lf.value_checks(True),
        pytest.raises(ValueError, match=r"`target` class indices in \[0, 4\]"),
    ):
        fn(x, y, ignore_index=ignore)
    with lf.value_checks(False):
        out = fn(x.requires_grad_(True), y, ignore_index=ignore)
    assert torch.isnan(out)
    assert taken[-1] is False  # handed to the general path


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_the_stand_in_ignore_value_is_not_ignored(fn, taken) -> None:
    # ignore_index=None: the kernel is given an ignore value no real index uses; an index equal
    # to it is still reported, never silently dropped.
    x, y = _inputs((6, 5), (6,))
    y[0] = pipeline._NO_INDEX
    with lf.value_checks(True), pytest.raises(ValueError, match="class indices"):
        fn(x, y, ignore_index=None)
    with lf.value_checks(False):
        assert torch.isnan(fn(x, y, ignore_index=None))
    with lf.value_checks(False):
        assert torch.isnan(fn(x, y, ignore_index=None, class_weight=[1.0] * 5))


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_nothing_valid_is_zero_with_zero_gradients(fn, checks, taken) -> None:
    x, y = _inputs((6, 5), (6,))
    cases = [
        (torch.full_like(y, -100), {}),  # every target ignored
        (torch.zeros_like(y), {"class_weight": [0.0, 1, 1, 1, 1]}),  # every valid target weighted 0
    ]
    for target, kw in cases:
        a = x.detach().clone().requires_grad_(True)
        with lf.value_checks(checks):
            out = fn(a, target, **kw)
        out.backward()
        assert out.item() == 0.0 and not a.grad.any()
        assert taken[-1] is False


def test_not_taken_where_it_does_not_apply(taken) -> None:
    x, y = _inputs((6, 5), (6,), ignore=-100)
    cases = [
        {"reduction": "none"},
        {"weight": torch.rand(6, dtype=F64)},
        {"avg_factor": 3.0},
        {"class_weight": torch.rand(5, dtype=F64, requires_grad=True)},
        {"class_weight": [1.0] * 5, "ignore_index": None},
    ]
    for kw in cases:
        taken.clear()
        F.cross_entropy(x, y.clamp_min(0) if kw.get("ignore_index", -100) is None else y, **kw)
        assert taken in ([], [False]), kw
    # label smoothing with class weights (whose all-zero "mean" is 0 here, NaN in PyTorch): the
    # pipeline is not asked
    taken.clear()
    F.cross_entropy(x, y, label_smoothing=0.1, class_weight=[1.0] * 5)
    assert taken == []
    # probability targets
    F.cross_entropy(x, torch.softmax(torch.randn(6, 5, dtype=F64), 1))
    assert taken in ([], [False])


def test_the_operations_are_pytorchs_plus_one_host_read() -> None:
    x, y = _inputs((4, 19, 8, 8), (4, 8, 8), ignore=255)

    def ops(fn, **kw):  # noqa: ANN001, ANN003, ANN202
        a = x.detach().clone().requires_grad_(True)
        with OpLog() as mode:
            fn(a, y, ignore_index=255, **kw).backward()
        return mode.ops

    theirs = ops(TF.cross_entropy)
    with lf.value_checks(False):
        ours = ops(F.cross_entropy)
    assert sorted(ours) == sorted([*theirs, "_local_scalar_dense"])


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss, F.softmax_focal_loss, F.dice_loss])
@pytest.mark.parametrize("ignore", [2**63, -(2**63) - 1, 2**70])
def test_an_ignore_index_beyond_int64_is_refused(fn, ignore) -> None:
    # it could never equal an index (PyTorch's kernels take an int64), and used to escape as an
    # OverflowError / RuntimeError from inside the loss
    x, y = _inputs((6, 5), (6,))
    for checks in (True, False):
        with (
            lf.value_checks(checks),
            pytest.raises(ValueError, match="`ignore_index` an integer in the int64 range"),
        ):
            fn(x, y, ignore_index=ignore)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_half_logits_compute_in_float32(dtype, scale, taken) -> None:
    # fp16 / bf16 logits (up to +-1e4) are computed in float32 on this path too: the loss and
    # the gradient equal PyTorch's float32 cross-entropy on the same (rounded) values, finite
    x, y = _inputs((6, 5), (6,), ignore=-100)
    xh = (x * scale).to(dtype)
    a = xh.detach().clone().requires_grad_(True)
    out = F.cross_entropy(a, y)
    out.backward()
    assert taken == [True] and out.dtype == torch.float32
    b = xh.detach().float().requires_grad_(True)
    expected = TF.cross_entropy(b, y)
    expected.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all()
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.grad.float(), b.grad, rtol=1e-2, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# The softmax focal loss of class indices: the same kernel gives log p_t (``nll_term``)
# ------------------------------------------------------------------------------------------------


def _focal_reference(x, y, gamma, ignore, reduction):
    """Float64 softmax focal loss of class indices, from the formula, differentiable (autograd
    through the composite gives the reference gradient); classes on dim 1 (dim 0 unbatched)."""
    cdim = 1 if x.ndim >= 2 else 0
    logp = torch.log_softmax(x, dim=cdim)
    valid = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
    lpt = logp.gather(cdim, torch.where(valid, y, 0).unsqueeze(cdim)).squeeze(cdim)
    loss = -((1 - torch.exp(lpt)) ** gamma) * lpt * valid
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore", [None, -100, 255])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_softmax_focal_equals_the_reference(name, gamma, ignore, reduction, taken) -> None:
    shape, tshape = SHAPES[name]
    x, y = _inputs(shape, tshape, seed=1, ignore=None if ignore is None else ignore)
    for checks in (True, False):
        taken.clear()
        a = x.detach().clone().requires_grad_(True)
        r = x.detach().clone().requires_grad_(True)
        with lf.value_checks(checks):
            out = F.softmax_focal_loss(a, y, gamma=gamma, ignore_index=ignore, reduction=reduction)
        assert taken == [True]
        expected = _focal_reference(r, y, gamma, ignore, reduction)
        assert_close(out, expected, F64)
        out.backward(torch.tensor(0.7, dtype=F64))
        expected.backward(torch.tensor(0.7, dtype=F64))
        assert_close(a.grad, r.grad, F64)


def test_softmax_focal_takes_the_kernel_not_the_index_routing() -> None:
    x, y = _inputs((64, 10), (64,), ignore=-100)
    a = x.float().requires_grad_(True)
    with lf.value_checks(False), OpLog() as mode:
        F.softmax_focal_loss(a, y).backward()
    assert "nll_loss_forward" in mode.ops and "nll_loss_backward" in mode.ops
    assert "gather" not in mode.ops and "clamp" not in mode.ops  # no index clamping or gathering


@pytest.mark.parametrize("bad", [10, -1, -100])
def test_softmax_focal_index_out_of_range_is_loud(bad, taken) -> None:
    x, y = _inputs((6, 10), (6,))
    y[4] = bad
    ignore = None if bad == -100 else -100
    with lf.value_checks(True), pytest.raises(ValueError, match="class indices"):
        F.softmax_focal_loss(x, y, ignore_index=ignore)
    with lf.value_checks(False):
        out = F.softmax_focal_loss(x, y, ignore_index=ignore)
    assert torch.isnan(out) and taken[-1] is False


@pytest.mark.parametrize("checks", [True, False])
def test_softmax_focal_nothing_valid_and_the_stand_in_value(checks, taken) -> None:
    x, y = _inputs((6, 10), (6,))
    a = x.detach().clone().requires_grad_(True)
    with lf.value_checks(checks):
        out = F.softmax_focal_loss(a, torch.full_like(y, -100))
    out.backward()
    assert out.item() == 0.0 and not a.grad.any() and taken[-1] is False
    y[1] = pipeline._NO_INDEX  # not ignored with ignore_index=None
    if checks:
        with lf.value_checks(True), pytest.raises(ValueError, match="class indices"):
            F.softmax_focal_loss(x, y, ignore_index=None)
    else:
        with lf.value_checks(False):
            assert torch.isnan(F.softmax_focal_loss(x, y, ignore_index=None))


def test_softmax_focal_not_taken_where_it_does_not_apply(taken) -> None:
    x, y = _inputs((6, 5), (6,), ignore=-100)
    cases = [
        {"alpha": 0.25},
        {"alpha": [0.1, 0.2, 0.3, 0.2, 0.2]},
        {"class_weight": [1.0, 2.0, 1.0, 1.0, 0.5]},
        {"label_smoothing": 0.1},
        {"reduction": "none"},
        {"weight": torch.rand(6, dtype=F64)},
        {"avg_factor": 3.0},
    ]
    for kw in cases:
        taken.clear()
        F.softmax_focal_loss(x, y, **kw)
        assert True not in taken, kw
    taken.clear()
    F.softmax_focal_loss(x, torch.softmax(torch.randn(6, 5, dtype=F64), 1))
    assert True not in taken


def test_softmax_focal_deferred_logit_check(taken) -> None:
    # Under value checks a NaN / +inf logit anywhere (also in an ignored row) is refused; a class
    # masked with -inf is allowed, also as the target of a row (an infinite loss).
    x, y = _inputs((6, 5), (6,))
    y[0] = -100
    for row, value in ((0, float("nan")), (2, float("nan")), (3, float("inf"))):
        bad = x.clone()
        bad[row, 1] = value
        with lf.value_checks(True), pytest.raises(ValueError, match="`logits`"):
            F.softmax_focal_loss(bad, y)
    masked = x.clone()
    masked[:, 4] = float("-inf")
    yy = y.clamp_max(3)
    yy[0] = -100
    with lf.value_checks(True):
        assert torch.isfinite(F.softmax_focal_loss(masked, yy))
        yy[2] = 4  # a masked class as the target
        assert F.softmax_focal_loss(masked, yy).item() == float("inf")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softmax_focal_half_logits_compute_in_float32(dtype, taken) -> None:
    x, y = _inputs((6, 5), (6,), ignore=-100)
    xh = (x * 100).to(dtype)
    a = xh.detach().clone().requires_grad_(True)
    out = F.softmax_focal_loss(a, y)
    out.backward()
    assert taken == [True] and out.dtype == torch.float32
    r = xh.detach().double().requires_grad_(True)
    expected = _focal_reference(r, y, 2.0, -100, "mean")
    expected.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-2, atol=1e-3)


def test_softmax_focal_channels_last_and_integer_dtypes(taken) -> None:
    x, y = _inputs((2, 5, 3, 4), (2, 3, 4), seed=4)
    y[0, 0, 0] = -100
    xc = x.to(memory_format=torch.channels_last)
    r = x.detach().clone().requires_grad_(True)
    expected = _focal_reference(r, y, 2.0, -100, "mean")
    expected.backward()
    for target in (y, y.to(torch.int32), y.to(torch.int16)):
        taken.clear()
        a = xc.detach().clone().requires_grad_(True)
        out = F.softmax_focal_loss(a, target)
        out.backward()
        assert taken == [True]
        assert_close(out, expected, F64)
        assert_close(a.grad, r.grad, F64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_softmax_focal_extreme_logits_stay_finite(dtype, taken) -> None:
    # +-1e4 logits (confidently right and confidently wrong rows, an ignored row): a finite loss
    # and finite gradients equal to the float64 formula on the same (rounded) values
    x = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [0.0, 0.0, 1e4], [1e4, 1e4, -1e4]], dtype=dtype
    )
    y = torch.tensor([0, 0, 2, -100])
    a = x.detach().clone().requires_grad_(True)
    out = F.softmax_focal_loss(a, y)
    out.backward()
    assert taken == [True]
    r = x.detach().double().requires_grad_(True)
    expected = _focal_reference(r, y, 2.0, -100, "mean")
    expected.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-2, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# _lean_nll: the lean first step for the commonest plain call (int64 indices, an ignore_index)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def lean(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per call of ``_lean_nll``: whether it served the call (returned the loss, or
    raised the ``ValueError`` of its deferred check of the logits)."""
    calls: list[bool] = []
    original = pipeline._lean_nll

    def counted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        try:
            out = original(*a, **k)
        except ValueError:
            calls.append(True)
            raise
        calls.append(isinstance(out, torch.Tensor))
        return out

    monkeypatch.setattr(pipeline, "_lean_nll", counted)
    return calls


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("checks", [False, True])
def test_lean_nll_serves_plain_calls_and_equals_pytorch(name, reduction, checks, lean) -> None:
    """Every shape, logits and log-probabilities, contiguous and channels-last (4-D), value
    checks off and on (log-probabilities then go to the general path): served by the lean step,
    equal to PyTorch and the float64 reference, values and gradients."""
    shape, tshape = SHAPES[name]
    x, y = _inputs(shape, tshape, ignore=255)
    layouts = [x]
    if x.ndim == 4:
        layouts.append(x.contiguous(memory_format=torch.channels_last))
    for inp0 in layouts:
        cdim = min(1, inp0.ndim - 1)
        for ours, theirs, reference, inp in (
            (F.cross_entropy, TF.cross_entropy, ref.cross_entropy, inp0),
            (F.nll_loss, TF.nll_loss, ref.nll_loss, torch.log_softmax(inp0, dim=cdim)),
        ):
            lean.clear()
            a = inp.detach().clone().requires_grad_(True)
            b = inp.detach().clone().requires_grad_(True)
            with lf.value_checks(checks):
                out = ours(a, y, reduction=reduction, ignore_index=255)
            served = not (checks and ours is F.nll_loss)
            # (not served: asked by the plain-call entry and by the pipeline's plain step)
            assert lean == ([True] if served else [False, False]), (ours.__name__, name)
            expected = theirs(b, y, reduction=reduction, ignore_index=255)
            assert_close(out, expected, F64)
            out.backward(torch.tensor(0.7, dtype=F64))
            expected.backward(torch.tensor(0.7, dtype=F64))
            assert_close(a.grad, b.grad, F64)
            rv = reference(inp, y, reduction=reduction, ignore_index=255)
            assert_close(out.detach(), rv, F64)


def test_lean_nll_declines_what_it_does_not_settle(lean, taken) -> None:
    """An int32 target, ignore_index=None, everything ignored, an index out of range (value
    checks off and on), a NaN logit at an ignored position, global normalisation: the lean step
    declines (or is not asked) and the rest of the path keeps the contract."""
    x, y = _inputs((6, 5), (6,))
    with lf.value_checks(True):
        F.nll_loss(torch.log_softmax(x, 1), y)
    # log-probabilities under checks: not the lean step's (asked by the plain-call entry and by
    # the pipeline's plain step); the general path checks them, then its own _cpu_nll
    assert lean == [False, False] and taken == [True]
    lean.clear(), taken.clear()
    for checks in (True, False):
        with lf.value_checks(checks):
            out = F.cross_entropy(x, y.to(torch.int32))
        assert lean == [False] and taken == [True]  # int32: _cpu_nll converts it
        assert_close(out, TF.cross_entropy(x, y), F64)
        lean.clear(), taken.clear()
    bad = y.clone()
    bad[1] = 7
    with lf.value_checks(True), pytest.raises(ValueError, match=r"class indices in \[0, 4\]"):
        F.cross_entropy(x, bad)
    # Declined by the plain-call entry, then by the pipeline's plain step (which serves calls
    # the entry does not take): never served, and the general path reports it.
    assert lean == [False, False] and taken == [False, False]
    lean.clear(), taken.clear()
    masked = x.clone()
    masked[2, 3] = float("nan")
    ignored = y.clone()
    ignored[2] = 255
    with lf.value_checks(True), pytest.raises(ValueError, match="NaN"):
        F.cross_entropy(masked, ignored, ignore_index=255)  # the lean step's class-0 check
    assert lean == [True]
    with lf.value_checks(False):
        assert torch.isfinite(F.cross_entropy(masked, ignored, ignore_index=255))
    with lf.value_checks(True):
        out = F.cross_entropy(x.requires_grad_(True), torch.full((6,), -100))
    assert float(out) == 0.0  # nothing counted under checks: 0, not NaN
    out.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0
    x.grad = None
    x.requires_grad_(False)
    lean.clear(), taken.clear()
    with lf.value_checks(False):
        F.cross_entropy(x, y, ignore_index=None)
    assert lean == [] and taken == [True]
    lean.clear(), taken.clear()
    with lf.value_checks(False):
        out = F.cross_entropy(x.requires_grad_(True), torch.full((6,), -100))
    # nothing counted: 0, not NaN (declined by the entry and the pipeline's plain step alike)
    assert lean == [False, False] and float(out) == 0.0
    out.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0
    lean.clear()
    bad = y.clone()
    bad[1] = 7
    with lf.value_checks(False):
        assert torch.isnan(F.cross_entropy(x.detach(), bad))
    assert lean == [False, False]
    lean.clear()
    from lossforge.distributed import global_normalization

    with lf.value_checks(False), global_normalization():
        out = F.cross_entropy(x.detach(), y)
    assert lean == [False, False]
    assert_close(out, TF.cross_entropy(x.detach(), y), F64)  # no process group: unchanged


@pytest.mark.parametrize("seed", range(12))
def test_lean_nll_is_bitwise_the_general_signature(seed, monkeypatch) -> None:
    """Differential: random shapes, ignore patterns (none, some, all), reductions, dtypes and
    value-check modes; the lean step and ``_cpu_nll`` (the lean step switched off) give the same
    loss and gradient bit for bit, or the same error."""
    g = torch.Generator().manual_seed(seed)
    ndim = int(torch.randint(1, 5, (1,), generator=g))
    c = int(torch.randint(2, 7, (1,), generator=g))
    n = int(torch.randint(1, 5, (1,), generator=g))
    spatial = [int(v) for v in torch.randint(1, 4, (max(ndim - 2, 0),), generator=g)]
    shape = [c] if ndim == 1 else [n, c, *spatial]
    tshape = [] if ndim == 1 else [n, *spatial]
    dtype = (torch.float32, F64)[seed % 2]
    x = (torch.randn(shape, generator=g, dtype=F64) * 3).to(dtype)
    y = torch.randint(0, c, tshape, generator=g)
    fill = seed % 3  # 0: nothing ignored, 1: some, 2: everything
    if fill == 2:
        y.fill_(255)
    elif fill == 1 and y.numel() > 1:
        y.view(-1)[::2] = 255
    if seed % 4 == 3 and y.numel() > 0:
        y.view(-1)[0] = c + 1  # out of range
    reduction = ("mean", "sum")[seed // 2 % 2]

    def run(lean_on: bool, checks: bool) -> tuple[str, object, object]:
        if not lean_on:
            monkeypatch.setattr(pipeline, "_lean_nll", lambda *a, **k: None)
        a = x.detach().clone().requires_grad_(True)
        try:
            with lf.value_checks(checks):
                out = F.cross_entropy(a, y, ignore_index=255, reduction=reduction)
        except ValueError as err:
            monkeypatch.undo()
            return "error", str(err), None
        if torch.isfinite(out):
            out.backward()
        monkeypatch.undo()
        return "value", out.detach(), None if a.grad is None else a.grad.detach()

    for checks in (False, True):
        kind_a, va, ga = run(True, checks)
        kind_b, vb, gb = run(False, checks)
        assert kind_a == kind_b, (checks, kind_a, kind_b)
        if kind_a == "error":
            assert va == vb
            continue
        assert torch.equal(va, vb) or (torch.isnan(va) and torch.isnan(vb))
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert torch.equal(ga, gb)
