"""LDAM loss and the DRW schedule: float64 references from the paper, kaidic/LDAM-DRW parity (its
``LDAMLoss`` and ``--train_rule DRW`` rewritten here from their formulas), identities, edge cases
and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from _sync import no_host_reads
from reference import long_tail as ref

import lossforge as lf
import lossforge.functional as F

F64 = torch.float64
COUNTS4 = [500.0, 120.0, 20.0, 3.0]
CW4 = [0.5, 2.0, 1.0, 0.25]


def _index(n: int, dtype: torch.dtype, g: torch.Generator, ignore: bool = False):
    x = torch.randn(n, 4, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    if ignore and n > 1:
        y[1::3] = -100
    return x, y


def _index_ignored(n, dtype, g):
    return _index(n, dtype, g, ignore=True)


def _spatial(n, dtype, g):
    x = torch.randn(n, 4, 2, 3, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 4, (n, 2, 3), generator=g)
    if n > 0:
        y[0, 1, 2] = 7
    return x, y


CASES = [
    LossCase(
        "ldam", F.ldam_loss, lf.LDAMLoss, {"class_counts": COUNTS4}, _index, elementwise=False
    ),
    LossCase(
        "ldam_small_scale",
        F.ldam_loss,
        lf.LDAMLoss,
        {"class_counts": COUNTS4, "scale": 2.0, "max_margin": 1.5},
        _index,
        elementwise=False,
    ),
    LossCase(
        "ldam_class_weight_ignore",
        F.ldam_loss,
        lf.LDAMLoss,
        {"class_counts": COUNTS4, "class_weight": CW4, "scale": 4.0},
        _index_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "ldam_spatial",
        F.ldam_loss,
        lf.LDAMLoss,
        {"class_counts": COUNTS4, "scale": 3.0, "ignore_index": 7},
        _spatial,
        elementwise=False,
        mean_is_count=False,
    ),
]
globals().update(contract_test_suite(CASES))


# ------------------------------------------------------------------------------------------------
# The paper's formula (float64 reference)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scale": 1.0, "max_margin": 0.3},
        {"class_weight": CW4, "scale": 5.0},
        {"class_weight": CW4, "ignore_index": -100},
        {"ignore_index": None, "max_margin": 0.0},
    ],
    ids=["defaults", "small_scale", "class_weight", "weight_ignore", "no_margin"],
)
def test_matches_paper_reference(kw: dict, reduction: str) -> None:
    x, y = _index(9, F64, torch.Generator().manual_seed(4), ignore=kw.get("ignore_index") == -100)
    got = F.ldam_loss(x, y, class_counts=COUNTS4, reduction=reduction, **kw)
    want = ref.ldam(x, y, COUNTS4, reduction=reduction, **kw)
    assert_close(got, want, F64)


def test_spatial_and_unbatched_match_reference() -> None:
    g = torch.Generator().manual_seed(5)
    x, y = _spatial(3, F64, g)
    for red in ("none", "mean"):
        got = F.ldam_loss(x, y, class_counts=COUNTS4, scale=3.0, ignore_index=7, reduction=red)
        assert_close(got, ref.ldam(x, y, COUNTS4, scale=3.0, ignore_index=7, reduction=red), F64)
    row = torch.tensor([0.2, -0.4, 1.0, 0.1], dtype=F64)
    got = F.ldam_loss(row, torch.tensor(2), class_counts=COUNTS4, scale=2.0, reduction="none")
    assert got.shape == ()
    assert_close(got, ref.ldam(row, torch.tensor(2), COUNTS4, scale=2.0, reduction="none"), F64)


def test_margins_follow_the_quarter_power_rule() -> None:
    # m_c = mu * (n_min / n_c)^(1/4): the rarest class gets mu, 16x the samples halve the margin.
    m = ref.ldam_margins([1.0, 16.0, 256.0], 0.5)
    assert m == pytest.approx([0.5, 0.25, 0.125])
    # lossforge's margin is exactly what one extra unit of the target logit costs: with s = 1,
    # ldam(x + m_y e_y) == ce(x).
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    shifted = x.clone()
    shifted[torch.arange(6), y] += torch.tensor(m, dtype=F64)[y]
    got = F.ldam_loss(shifted, y, class_counts=[1.0, 16.0, 256.0], scale=1.0, reduction="none")
    assert_close(got, TF.cross_entropy(x, y, reduction="none"), F64)


# ------------------------------------------------------------------------------------------------
# kaidic/LDAM-DRW parity (losses.py LDAMLoss, cifar_train.py DRW), rewritten from the formulas
# ------------------------------------------------------------------------------------------------


def _kaidic_ldam(x, target, cls_num_list, max_m=0.5, weight=None, s=30.0):
    # m_list = 1 / sqrt(sqrt(n)), rescaled so that its max is max_m (the repo does it in numpy).
    m_list = 1.0 / torch.sqrt(torch.sqrt(torch.tensor(cls_num_list, dtype=F64)))
    m_list = m_list * (max_m / m_list.max())
    index = torch.zeros_like(x, dtype=torch.bool)
    index.scatter_(1, target.view(-1, 1), True)
    batch_m = torch.matmul(m_list[None, :], index.to(F64).transpose(0, 1)).view(-1, 1)
    output = torch.where(index, x - batch_m, x)
    return TF.cross_entropy(s * output, target, weight=weight)


def _kaidic_drw(cls_num_list, epoch, switch=160):
    betas = [0.0, 0.9999]
    beta = betas[epoch // switch]
    effective_num = 1.0 - torch.pow(torch.tensor(beta, dtype=F64), torch.tensor(cls_num_list))
    w = (1.0 - beta) / effective_num
    return w / w.sum() * len(cls_num_list)


PEER_DELTA: dict[str, float] = {}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("epoch", [0, 159, 160, 199])
def test_matches_kaidic_ldam_drw(seed: int, epoch: int) -> None:
    g = torch.Generator().manual_seed(seed)
    c = 10
    # CIFAR-10-LT style exponential profile (imbalance 100), as imbalance_cifar.py builds it.
    counts = [int(5000 * 0.01 ** (i / (c - 1))) for i in range(c)]
    x = torch.randn(32, c, generator=g, dtype=F64) * 0.5  # cosine-like logits
    y = torch.randint(0, c, (32,), generator=g)
    w = _kaidic_drw(counts, epoch)
    want = _kaidic_ldam(x, y, counts, weight=w)
    drw = lf.drw_class_weights(torch.tensor(counts, dtype=F64), epoch, start_epoch=160)
    assert_close(drw, w, F64, rtol=1e-12, atol=1e-12)
    got = F.ldam_loss(x, y, class_counts=counts, class_weight=drw)
    assert_close(got, want, F64, rtol=1e-12, atol=1e-12)
    PEER_DELTA[f"{seed}/{epoch}"] = float((got - want).abs())


def test_module_matches_kaidic_with_drw_schedule() -> None:
    counts = [400, 100, 30, 5]
    loss = lf.LDAMLoss(class_counts=counts)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.arange(16) % 4
    for epoch in (0, 170):
        loss.class_weight = lf.drw_class_weights(counts, epoch, start_epoch=160)
        want = _kaidic_ldam(x, y, counts, weight=_kaidic_drw(counts, epoch))
        assert_close(loss(x, y), want, torch.float32)
    assert "class_weight" in dict(loss.named_buffers())


# ------------------------------------------------------------------------------------------------
# Identities and edge cases
# ------------------------------------------------------------------------------------------------


def test_zero_margin_is_scaled_cross_entropy() -> None:
    x, y = _index_ignored(10, F64, torch.Generator().manual_seed(2))
    got = F.ldam_loss(x, y, class_counts=COUNTS4, max_margin=0.0, scale=7.0, class_weight=CW4)
    want = TF.cross_entropy(7.0 * x, y, weight=torch.tensor(CW4, dtype=F64))
    assert_close(got, want, F64)


def test_scaling_counts_changes_nothing_and_ldam_exceeds_ce() -> None:
    x, y = _index(10, F64, torch.Generator().manual_seed(3))
    a = F.ldam_loss(x, y, class_counts=COUNTS4, reduction="none")
    b = F.ldam_loss(x, y, class_counts=[10 * v for v in COUNTS4], reduction="none")
    assert_close(a, b, F64)
    # A positive margin on the target logit can only raise the loss.
    assert (a >= TF.cross_entropy(30.0 * x, y, reduction="none") - 1e-12).all()


def test_zero_count_class_gets_the_largest_margin() -> None:
    counts = [100.0, 0.0, 1.0]
    n = torch.tensor(counts, dtype=F64)
    from lossforge.functional.long_tail import ldam_margins

    m = ldam_margins(n, 0.5)
    assert m.tolist() == pytest.approx([0.5 * 100**-0.25, 0.5, 0.5])
    x = torch.zeros(3, 3, dtype=F64, requires_grad=True)
    loss = F.ldam_loss(x, torch.tensor([0, 1, 2]), class_counts=counts)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_all_ignored_gives_zero_with_zero_grad() -> None:
    x = torch.randn(4, 4, dtype=F64, requires_grad=True)
    loss = F.ldam_loss(x, torch.full((4,), -100), class_counts=COUNTS4, class_weight=CW4)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(x.grad == 0)


def test_no_host_sync_with_value_checks_off() -> None:
    # The counts are never read on the host: the margins are computed on the logits' device.
    x, y = _index_ignored(5, torch.float32, torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    counts, cw = torch.tensor(COUNTS4), torch.tensor(CW4)
    with lf.value_checks(False), no_host_reads():
        got = F.ldam_loss(x, y, class_counts=counts, class_weight=cw)
        got.backward()
    assert_close(got, F.ldam_loss(x, y, class_counts=COUNTS4, class_weight=CW4), torch.float32)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"class_counts": [1.0, 2.0]}, ValueError, "class_counts.*length C=4"),
        ({"class_counts": [0.0, 0.0, 0.0, 0.0]}, ValueError, "at least one positive"),
        ({"class_counts": [1.0, -2.0, 3.0, 4.0]}, ValueError, "non-negative"),
        ({"class_counts": [1.0, math.inf, 3.0, 4.0]}, ValueError, "finite"),
        ({"class_counts": "many"}, TypeError, "class_counts"),
        ({"class_counts": COUNTS4, "scale": 0.0}, ValueError, "scale"),
        ({"class_counts": COUNTS4, "max_margin": -0.1}, ValueError, "max_margin"),
        ({"class_counts": COUNTS4, "backend": "triton"}, ValueError, "backend"),
    ],
)
def test_rejects(kw: dict, exc: type, match: str) -> None:
    x, y = _index(3, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(exc, match=match):
        F.ldam_loss(x, y, **kw)


def test_rejects_probability_targets_and_requires_counts() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="ldam_loss: expected `target` an integer tensor"):
        F.ldam_loss(x, torch.softmax(x, 1), class_counts=COUNTS4)
    with pytest.raises(TypeError, match="class_counts"):
        F.ldam_loss(x, torch.tensor([0, 1, 2]))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        lf.LDAMLoss()  # class_counts is required


# ------------------------------------------------------------------------------------------------
# drw_class_weights
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [0, 9, 10, 50])
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.9999])
def test_drw_matches_reference(epoch: int, beta: float) -> None:
    counts = [300.0, 40.0, 7.0, 1.0]
    got = lf.drw_class_weights(counts, epoch, start_epoch=10, beta=beta)
    want = ref.drw(counts, epoch, 10, beta)
    assert got.dtype == torch.float32
    assert_close(got, torch.tensor(want, dtype=F64), torch.float32)
    assert got.sum().item() == pytest.approx(4.0, rel=1e-6)


def test_drw_zero_counts_and_types() -> None:
    w = lf.drw_class_weights([10, 0, 5], 3, start_epoch=0)
    assert torch.isfinite(w).all() and w[1] == w.max()  # "as_one": the weight of a count of 1
    assert lf.drw_class_weights([10, 0, 5], 3, start_epoch=0, zero_count="zero")[1] == 0.0
    t64 = lf.drw_class_weights(torch.tensor([4.0, 2.0], dtype=F64), 0, start_epoch=5)
    assert t64.dtype == F64 and t64.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("args", "kw", "exc", "match"),
    [
        (([1, 2], -1), {}, ValueError, "drw_class_weights: expected `epoch` >= 0"),
        (([1, 2], 1.5), {}, TypeError, "epoch"),
        (([1, 2], 1), {"start_epoch": -2}, ValueError, "start_epoch"),
        (([1, 2], 1), {"beta": 1.0}, ValueError, "beta"),
        (([0, 0], 1), {}, ValueError, "drw_class_weights: expected `counts` at least one"),
        (([1, -1], 0), {"start_epoch": 5}, ValueError, "drw_class_weights: expected `counts`"),
        (([1, 2], 1), {"zero_count": "inf"}, ValueError, "zero_count"),
    ],
)
def test_drw_rejects(args: tuple, kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        lf.drw_class_weights(*args, **kw)
