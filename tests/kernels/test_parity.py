"""One "mean" rule for every backend (issue #10, item 1): ``backend="triton"`` equals
``backend="torch"`` for every fused loss, in values and gradients.

Through the interpreter on CPU (this directory's conftest enters ``cpu_kernels()``), for each fused
loss and option set:

* inside ``global_normalization(min_avg_factor=10.0)`` (no process group: the hook still applies
  the clamp to ``avg_factor``) and outside it, with ``avg_factor`` unset, a float and a 0-d tensor;
* ``avg_factor`` a 0-d zero (and a float zero) with a non-zero sum: ``ValueError`` on both backends
  with value checks on, NaN on both with them off;
* ``reduction="sum"`` and ``"none"`` (``grad_output`` not 1);
* ``weight`` of every accepted layout: the loss's shape, its leading dimensions, a scalar, a
  same-rank broadcast;
* targets, weights, per-class options or ``avg_factor`` that require grad: the kernel cannot give
  their gradients, so the pipeline declines the case: ``"auto"`` falls back to the reference (the
  same values and gradients, the target's and weight's included) and ``"triton"`` raises.

``expect_fused`` states which cases the kernels serve; every other case must fall back under
``"auto"`` and raise under ``"triton"``. Shapes are tiny: the interpreter runs one program at a
time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

import lossforge.functional as LF
from lossforge import value_checks
from lossforge.distributed import global_normalization
from tests.kernels._helpers import DEVICE, uses_kernel

G = torch.Generator().manual_seed


@dataclass(frozen=True)
class Case:
    fn: str
    make: Callable[[], tuple[Tensor, Tensor]]
    kw: dict[str, Any] = field(default_factory=dict)
    loss_shape: Callable[[Tensor, Tensor], tuple[int, ...]] | None = None  # default: logits'
    dense_target: bool = False  # a float target that may require grad
    region: bool = False  # dice: (sample, class) entries


def _logits(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=G(seed)) * 3


def _dense(n: int = 6, c: int = 5) -> Callable[[], tuple[Tensor, Tensor]]:
    return lambda: (_logits(n, c), (torch.rand(n, c, generator=G(1)) < 0.3).float())


def _soft(n: int = 6, c: int = 5) -> Callable[[], tuple[Tensor, Tensor]]:
    return lambda: (_logits(n, c), torch.rand(n, c, generator=G(1)))


def _index(n: int = 6, c: int = 5, ignore: int | None = -1, background: bool = True):
    def make() -> tuple[Tensor, Tensor]:
        t = torch.randint(0, c + int(background), (n,), generator=G(2))
        if ignore is not None:
            t[1] = ignore
        return _logits(n, c), t

    return make


def _seg(n: int = 2, c: int = 4, h: int = 3, w: int = 3, ignore: int | None = 255):
    def make() -> tuple[Tensor, Tensor]:
        t = torch.randint(0, c, (n, h, w), generator=G(3))
        if ignore is not None:
            t[0, 0, :2] = ignore
        return _logits(n, c, h, w), t

    return make


def _probs(n: int = 2, c: int = 4, h: int = 3) -> Callable[[], tuple[Tensor, Tensor]]:
    return lambda: (_logits(n, c, h), torch.softmax(_logits(n, c, h, seed=4), dim=1))


def _regression() -> tuple[Tensor, Tensor]:
    return _logits(7, 4), _logits(7, 4, seed=5)


def _index_shape(x: Tensor, t: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + tuple(x.shape[2:])


CASES: dict[str, Case] = {
    "bce_pw_ls": Case(
        "binary_cross_entropy_with_logits",
        _soft(),
        {"pos_weight": torch.tensor([0.5, 1.0, 2.0, 3.0, 1.5]), "label_smoothing": 0.1},
        dense_target=True,
    ),
    "bce_index_pw": Case(
        "binary_cross_entropy_with_logits",
        _index(),
        {"ignore_index": -1, "pos_weight": 2.5, "label_smoothing": 0.05},
    ),
    "bce_pw_list": Case(
        "binary_cross_entropy_with_logits", _dense(), {"pos_weight": [2.0, 1.0, 0.5, 1.0, 3.0]}
    ),
    "focal": Case("sigmoid_focal_loss", _dense(), {"alpha": 0.25, "gamma": 2.0}, dense_target=True),
    "focal_index_g15": Case(
        "sigmoid_focal_loss", _index(), {"alpha": None, "gamma": 1.5, "ignore_index": -1}
    ),
    "asl": Case(
        "asymmetric_loss",
        _dense(),
        {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8},
        dense_target=True,
    ),
    "balanced_bce": Case("balanced_binary_cross_entropy", _dense(), {"beta": 0.8}),
    "ce": Case(
        "cross_entropy",
        _index(background=False, ignore=-100),
        {"class_weight": [1.0, 2.0, 0.5, 1.0, 3.0], "label_smoothing": 0.1},
        loss_shape=_index_shape,
    ),
    "ce_nchw_ignore": Case("cross_entropy", _seg(), {"ignore_index": 255}, loss_shape=_index_shape),
    "ce_probs_ls_cw": Case(
        "cross_entropy",
        _probs(),
        {"label_smoothing": 0.1, "class_weight": torch.tensor([1.0, 2.0, 0.5, 3.0])},
        loss_shape=_index_shape,
        dense_target=True,
    ),
    "balanced_softmax": Case(
        "balanced_softmax_loss",
        _index(background=False, ignore=-100),
        {"class_counts": [30.0, 10.0, 5.0, 1.0, 0.0]},
        loss_shape=_index_shape,
    ),
    "logit_adjusted": Case(
        "logit_adjusted_loss",
        _seg(),
        {"class_counts": [30.0, 10.0, 5.0, 1.0], "tau": 0.5, "ignore_index": 255},
        loss_shape=_index_shape,
    ),
    "softmax_focal": Case(
        "softmax_focal_loss",
        _seg(),
        {"gamma": 2.0, "alpha": [0.25, 0.5, 0.75, 1.0], "ignore_index": 255},
        loss_shape=_index_shape,
    ),
    "dice": Case("dice_loss", _seg(ignore=None), {"smooth": 1.0}, region=True),
    "dice_ignore_squared": Case(
        "dice_loss", _seg(), {"ignore_index": 255, "squared": True, "smooth": 0.5}, region=True
    ),
    "dice_batch": Case("dice_loss", _seg(ignore=None), {"batch": True}, region=True),
    "dice_cw_no_background": Case(
        "dice_loss",
        _seg(),
        {"ignore_index": 255, "class_weight": [0.5, 1.0, 2.0, 3.0], "include_background": False},
        region=True,
    ),
    "l1": Case("l1_loss", _regression, dense_target=True),
    "smooth_l1": Case("smooth_l1_loss", _regression, {"beta": 0.5}, dense_target=True),
    "mse": Case("mse_loss", _regression, dense_target=True),
}


def expect_fused(case: Case, *, scope: bool = False) -> bool:
    """Whether the kernels serve this case (else "auto" falls back and "triton" raises)."""
    # dice with batch=True inside the scope: the batch sums are all-reduced over the ranks
    return not (case.region and scope and case.kw.get("batch", False))


def _loss_shape(case: Case, x: Tensor, t: Tensor) -> tuple[int, ...]:
    if case.region:
        cols = x.shape[1] - (0 if case.kw.get("include_background", True) else 1)
        return (cols,) if case.kw.get("batch") else (x.shape[0], cols)
    return case.loss_shape(x, t) if case.loss_shape else tuple(x.shape)


def _on_device(v: Any) -> Any:
    """Inputs are made on the CPU (seeded) and run on the test device (a GPU when present)."""
    if isinstance(v, Tensor):
        return v.to(DEVICE)
    if isinstance(v, dict):
        return {k: _on_device(a) for k, a in v.items()}
    return v


def _run(case: Case, backend: str, x: Tensor, t: Tensor, **extra: Any) -> tuple[Tensor, ...]:
    """(loss, d loss / d leaves...) for the leaves that require grad: x, then t and extra."""
    xg = x.detach().to(DEVICE).requires_grad_()
    out = getattr(LF, case.fn)(
        xg, _on_device(t), backend=backend, **_on_device(case.kw), **_on_device(extra)
    )
    leaves = [xg] + [v for v in (t, *extra.values()) if isinstance(v, Tensor) and v.requires_grad]
    go = torch.linspace(0.5, 1.5, out.numel(), device=out.device).reshape(out.shape)
    grads = torch.autograd.grad(out, leaves, go, allow_unused=True)
    return (out.detach(), *grads, uses_kernel(out))


def _same(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    """Equal losses and gradients (the last entry, whether a kernel ran, is not compared)."""
    assert len(got) == len(want)
    for g, w in zip(got[:-1], want[:-1], strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=2e-5, atol=2e-6, equal_nan=True)


def _check(case: Case, fused: bool, x: Tensor, t: Tensor, **extra: Any) -> None:
    """ "auto" and "triton" against "torch": equal, and the kernel ran iff ``fused``."""
    want = _run(case, "torch", x, t, **extra)
    got = _run(case, "auto", x, t, **extra)
    _same(got, want)
    assert got[-1] == fused, f"backend='auto' {'did not run' if fused else 'ran'} the kernel"
    if not fused:  # (when fused, "triton" takes the path "auto" just took)
        with pytest.raises(ValueError, match="backend"):
            _run(case, "triton", x, t, **extra)


AVG = {"no_avg": None, "avg_float": 3.0, "avg_tensor": torch.tensor(4.0)}


@pytest.mark.parametrize("avg", list(AVG))
@pytest.mark.parametrize("scope", [False, True], ids=["plain", "global_normalization"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name: str, scope: bool, avg: str) -> None:
    case = CASES[name]
    x, t = case.make()
    a = AVG[avg]
    extra = {} if a is None else {"avg_factor": a}
    with global_normalization(scope, min_avg_factor=10.0):
        if scope and a is not None and case.kw.get("batch"):
            # batch statistics are global in the scope: a per-rank avg_factor is refused alike
            for backend in ("torch", "triton"):
                with pytest.raises(ValueError, match="`avg_factor` None with batch=True"):
                    _run(case, backend, x, t, **extra)
            return
        _check(case, expect_fused(case, scope=scope), x, t, **extra)


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("name", list(CASES))
def test_other_reductions(name: str, reduction: str) -> None:
    case = CASES[name]
    x, t = case.make()
    _check(case, True, x, t, reduction=reduction)


def test_min_avg_factor_reaches_the_kernel() -> None:
    """The issue's reproduction: inside the scope, avg_factor=1.0 is clamped to 10 for the fused
    path too (it used to return 10x the reference)."""
    case = CASES["focal"]
    x, t = case.make()
    plain = _run(case, "triton", x, t, avg_factor=1.0)[0]
    with global_normalization(min_avg_factor=10.0):
        scoped = _run(case, "triton", x, t, avg_factor=1.0)[0]
    torch.testing.assert_close(scoped, plain / 10.0)


@pytest.mark.parametrize("zero", ["tensor", "float"])
@pytest.mark.parametrize("checks", [True, False], ids=["checks_on", "checks_off"])
@pytest.mark.parametrize("name", list(CASES))
def test_zero_avg_factor_with_a_non_zero_sum(name: str, checks: bool, zero: str) -> None:
    case = CASES[name]
    x, t = case.make()
    avg = torch.tensor(0.0) if zero == "tensor" else 0.0
    with value_checks(checks):
        for backend in ("torch", "triton"):
            if checks:
                with pytest.raises(ValueError, match="avg_factor"):
                    _run(case, backend, x, t, avg_factor=avg)
        if not checks:
            want = _run(case, "torch", x, t, avg_factor=avg)
            got = _run(case, "triton", x, t, avg_factor=avg)
            assert torch.isnan(want[0]) and torch.isnan(got[0]) and got[-1]
            _same(got, want)


def test_zero_avg_factor_with_a_zero_sum_is_zero() -> None:
    case = CASES["l1"]
    x, t = case.make()
    w = torch.zeros(7)
    for checks in (True, False):
        with value_checks(checks):
            out = _run(case, "triton", x, t, weight=w, avg_factor=torch.tensor(0.0))
            assert out[0].item() == 0.0 and torch.count_nonzero(out[1]) == 0


def _weights(case: Case, x: Tensor, t: Tensor) -> dict[str, Tensor]:
    shape = _loss_shape(case, x, t)
    g = G(6)
    out = {
        "full": torch.rand(shape, generator=g),
        "leading": torch.rand(shape[:1], generator=g),
        "scalar": torch.tensor(0.7),
    }
    if len(shape) >= 2:
        out["broadcast"] = torch.rand((1,) + tuple(shape[1:]), generator=g)
        out["broadcast_rows"] = torch.rand(tuple(shape[:1]) + (1,) * (len(shape) - 1), generator=g)
    return out


@pytest.mark.parametrize("layout", ["full", "leading", "scalar", "broadcast", "broadcast_rows"])
@pytest.mark.parametrize("name", list(CASES))
def test_weight_layouts(name: str, layout: str) -> None:
    case = CASES[name]
    x, t = case.make()
    ws = _weights(case, x, t)
    if layout not in ws:
        pytest.skip(f"a 1-d loss has no {layout} weight")
    w = ws[layout]
    _check(case, expect_fused(case), x, t, weight=w)


def _grad_options(case: Case) -> list[str]:
    opts = ["weight", "avg_factor"]
    if case.dense_target:
        opts.append("target")
    # pos_weight: PyTorch's own binary_cross_entropy_with_logits is not differentiable in it
    opts += [k for k, v in case.kw.items() if isinstance(v, Tensor) and k != "pos_weight"]
    return opts


GRAD_CASES = [(name, what) for name in CASES for what in _grad_options(CASES[name])]


@pytest.mark.parametrize(("name", "what"), GRAD_CASES)
def test_requires_grad_declines(name: str, what: str) -> None:
    """A gradient the kernel cannot give: "auto" runs the reference (gradients of the target,
    weight, option or avg_factor included), "triton" raises instead of dropping it silently."""
    case = CASES[name]
    x, t = case.make()
    extra: dict[str, Any] = {}
    if what == "target":
        t = t.detach().clone().requires_grad_()
    elif what == "weight":
        extra["weight"] = torch.rand(_loss_shape(case, x, t), generator=G(7)).requires_grad_()
    elif what == "avg_factor":
        extra["avg_factor"] = torch.tensor(5.0, requires_grad=True)
    else:
        case = Case(
            case.fn,
            case.make,
            {**case.kw, what: case.kw[what].detach().clone().requires_grad_()},
            case.loss_shape,
            case.dense_target,
            case.region,
        )
    want = _run(case, "torch", x, t, **extra)
    got = _run(case, "auto", x, t, **extra)
    _same(got, want)
    assert not got[-1]
    if what not in ("target", "weight", "avg_factor"):
        # a per-class option: its gradient is not among _run's leaves; check it directly
        opt = case.kw[what]
        xg, td, kw = x.to(DEVICE), _on_device(t), _on_device(case.kw)
        (g_auto,) = torch.autograd.grad(getattr(LF, case.fn)(xg, td, backend="auto", **kw), opt)
        (g_ref,) = torch.autograd.grad(getattr(LF, case.fn)(xg, td, **kw), opt)
        torch.testing.assert_close(g_auto, g_ref)
    with pytest.raises(ValueError, match="requires grad"):
        _run(case, "triton", x, t, **extra)
