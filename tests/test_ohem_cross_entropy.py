"""OHEM cross-entropy: the float64 reference of its definition, mmsegmentation parity
(``OhemCrossEntropy`` and ``OHEMPixelSampler`` rewritten from their formulas, with the documented
differences), identities with cross_entropy, edge cases, no host synchronisation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from _sync import no_host_reads
from reference import ohem as ref

import lossforge as lf
import lossforge.functional as F
from lossforge.distributed import global_normalization

F64 = torch.float64
CW3 = [0.5, 2.0, 1.0]
OHEM, MOD = F.ohem_cross_entropy, lf.OHEMCrossEntropyLoss


def _seg(n: int, dtype: torch.dtype, g: torch.Generator, ignore: bool = False):
    x = (2 * torch.randn(n, 3, 4, 5, generator=g, dtype=F64)).to(dtype)
    y = torch.randint(0, 3, (n, 4, 5), generator=g)
    if ignore and n > 0:
        y[0, 0] = 255
    return x, y


def _seg_ignored(n, dtype, g):
    return _seg(n, dtype, g, ignore=True)


def _rows(n, dtype, g):
    x = (2 * torch.randn(n, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 3, (n,), generator=g)


CASES = [
    LossCase("seg", OHEM, MOD, {"min_kept": 7}, _seg, elementwise=False, mean_is_count=False),
    LossCase(
        "seg_weight_ignore",
        OHEM,
        MOD,
        {"min_kept": 10, "thresh": 0.5, "class_weight": CW3, "ignore_index": 255},
        _seg_ignored,
        elementwise=False,
        mean_is_count=False,
    ),
    LossCase(
        "rows_hardest_only",
        OHEM,
        MOD,
        {"min_kept": 2, "thresh": 0.0},
        _rows,
        elementwise=False,
        mean_is_count=False,
    ),
]
globals().update(contract_test_suite(CASES))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "kw",
    [
        {"thresh": 0.7, "min_kept": 5},
        {"thresh": 0.0, "min_kept": 13},
        {"thresh": 1.0, "min_kept": 1},
        {"thresh": 0.4, "min_kept": 1000},
        {"thresh": 0.6, "min_kept": 8, "class_weight": CW3, "ignore_index": 255},
    ],
    ids=["thresh", "hardest_only", "keep_all", "min_kept_above_n", "weights_ignore"],
)
def test_matches_reference(kw: dict, reduction: str) -> None:
    x, y = _seg_ignored(2, F64, torch.Generator().manual_seed(0))
    kw = {"ignore_index": 255, **kw}
    got = OHEM(x, y, reduction=reduction, **kw)
    assert_close(got, ref.ohem_ce(x, y, reduction=reduction, **kw), F64)


def test_kept_set_is_at_least_min_kept_and_every_low_confidence_position() -> None:
    x, y = _seg(3, F64, torch.Generator().manual_seed(1))
    p = torch.softmax(x, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    for thresh, k in ((0.3, 5), (0.9, 5), (0.0, 17), (0.5, 60)):
        kept = OHEM(x, y, thresh=thresh, min_kept=k, reduction="none") != 0
        assert int(kept.sum()) == max(k, int((p < thresh).sum()))
        assert kept[p < thresh].all()
        # the kept ones are the hardest: every kept p is below every dropped p
        if (~kept).any():
            assert p[kept].max() < p[~kept].min()


# ------------------------------------------------------------------------------------------------
# mmsegmentation, rewritten from the formulas
# ------------------------------------------------------------------------------------------------


def _mmseg_ohem_ce(score, target, thres=0.7, min_kept=100000, ignore_label=255, class_weight=None):
    """mmseg/models/losses/ohem_cross_entropy_loss.py OhemCrossEntropy.forward."""
    min_kept = max(1, min_kept)
    pred = TF.softmax(score, dim=1)
    weight = None if class_weight is None else score.new_tensor(class_weight)
    pixel_losses = (
        TF.cross_entropy(score, target, weight=weight, ignore_index=ignore_label, reduction="none")
        .contiguous()
        .view(-1)
    )
    mask = target.contiguous().view(-1) != ignore_label
    tmp_target = target.clone()
    tmp_target[tmp_target == ignore_label] = 0
    pred = pred.gather(1, tmp_target.unsqueeze(1))
    pred, ind = pred.contiguous().view(-1)[mask].contiguous().sort()
    if pred.numel() == 0:
        return score.new_tensor(0.0)
    min_value = pred[min(min_kept, pred.numel() - 1)]
    threshold = max(min_value, thres)
    pixel_losses = pixel_losses[mask][ind]
    return pixel_losses[pred < threshold].mean()


def _mmseg_sampler_weight(seg_logit, seg_label, thresh, min_kept, ignore_index=255):
    """mmseg OHEMPixelSampler.sample with a threshold: a 0/1 weight per pixel."""
    seg_label = seg_label.long()
    batch_kept = min_kept * seg_label.size(0)
    valid_mask = seg_label != ignore_index
    seg_weight = seg_logit.new_zeros(size=seg_label.size())
    valid_seg_weight = seg_weight[valid_mask]
    seg_prob = TF.softmax(seg_logit, dim=1)
    tmp = seg_label.clone().unsqueeze(1)
    tmp[tmp == ignore_index] = 0
    seg_prob = seg_prob.gather(1, tmp).squeeze(1)
    sort_prob, _ = seg_prob[valid_mask].sort()
    min_threshold = sort_prob[min(batch_kept, sort_prob.numel() - 1)]
    threshold = max(min_threshold, thresh)
    valid_seg_weight[seg_prob[valid_mask] < threshold] = 1.0
    seg_weight[valid_mask] = valid_seg_weight
    return seg_weight


PEER_DELTA: dict[str, float] = {}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("thres", "min_kept"), [(0.7, 10), (0.7, 60), (0.3, 5), (0.9, 1)])
def test_matches_mmseg_ohem_cross_entropy(seed: int, thres: float, min_kept: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(2, 4, 6, 7, generator=g, dtype=F64)
    y = torch.randint(0, 4, (2, 6, 7), generator=g)
    y[1, :2] = 255
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    want = _mmseg_ohem_ce(b, y, thres=thres, min_kept=min_kept)
    got = OHEM(a, y, thresh=thres, min_kept=min_kept, ignore_index=255)
    assert_close(got, want, F64, rtol=1e-12, atol=1e-13)
    got.backward()
    want.backward()
    assert_close(a.grad, b.grad, F64, rtol=1e-12, atol=1e-13)
    PEER_DELTA[f"{seed}/{thres}/{min_kept}"] = float((got - want).detach().abs())
    # With class weights mmseg divides by the kept count, lossforge by the kept weights: the sums
    # agree, the means differ by that ratio (documented).
    cw = [0.5, 2.0, 1.0, 0.25]
    want_w = _mmseg_ohem_ce(x, y, thres=thres, min_kept=min_kept, class_weight=cw)
    kw = {"thresh": thres, "min_kept": min_kept, "ignore_index": 255, "class_weight": cw}
    none = OHEM(x, y, reduction="none", **kw)
    kept = none != 0
    assert_close(none.sum() / kept.sum(), want_w, F64, rtol=1e-12, atol=1e-13)
    w_kept = torch.tensor(cw, dtype=F64)[y.clamp(max=3)][kept].sum()
    assert_close(OHEM(x, y, **kw), none.sum() / w_kept, F64)


@pytest.mark.parametrize("seed", range(3))
def test_matches_mmseg_pixel_sampler_with_min_kept_per_image(seed: int) -> None:
    """OHEMPixelSampler keeps min_kept x N pixels and the decode head's CrossEntropyLoss then
    averages over every pixel: sum(weight * ce) / numel."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(3, 4, 5, 5, generator=g, dtype=F64)
    y = torch.randint(0, 4, (3, 5, 5), generator=g)
    y[0, 0] = 255
    sw = _mmseg_sampler_weight(x, y, thresh=0.6, min_kept=8)
    ce = TF.cross_entropy(x, y, ignore_index=255, reduction="none")
    want = (sw * ce).sum() / y.numel()
    got = OHEM(x, y, thresh=0.6, min_kept=8 * 3, ignore_index=255, avg_factor=y.numel())
    assert_close(got, want, F64, rtol=1e-12, atol=1e-13)


def test_documented_differences_from_mmseg() -> None:
    # min_kept >= n: mmseg caps k at n - 1 and drops the most confident pixel(s); here all kept.
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]], dtype=F64)
    y = torch.tensor([0, 1, 0])
    ce = TF.cross_entropy(x, y, reduction="none")
    assert_close(OHEM(x, y, thresh=0.5, min_kept=100), ce.mean(), F64)
    assert_close(_mmseg_ohem_ce(x, y, thres=0.5, min_kept=100), ce[:2].mean(), F64)
    # Ties at the k-th probability: mmseg drops all of them; here the first ones by index stay.
    x = torch.zeros(4, 2, dtype=F64)
    y = torch.tensor([0, 1, 0, 1])  # every p = 0.5
    got = OHEM(x, y, thresh=0.1, min_kept=2, reduction="none")
    assert (got != 0).tolist() == [True, True, False, False]
    assert torch.isnan(_mmseg_ohem_ce(x, y, thres=0.1, min_kept=2))  # mean of nothing


# ------------------------------------------------------------------------------------------------
# Identities and edge cases
# ------------------------------------------------------------------------------------------------


def test_keeping_everything_is_cross_entropy_with_class_weights() -> None:
    x, y = _seg_ignored(2, F64, torch.Generator().manual_seed(2))
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    kw = {"class_weight": CW3, "ignore_index": 255}
    got = OHEM(a, y, thresh=1.0, min_kept=10**6, **kw)
    want = F.cross_entropy(b, y, **kw)
    assert_close(got, want, F64)
    got.backward()
    want.backward()
    assert_close(a.grad, b.grad, F64)


def test_weight_applies_after_selection_and_all_ignored_is_zero() -> None:
    x, y = _seg(2, F64, torch.Generator().manual_seed(3))
    w = torch.rand(y.shape, dtype=F64, generator=torch.Generator().manual_seed(4))
    plain = OHEM(x, y, min_kept=6, reduction="none")
    kept = plain != 0
    got = OHEM(x, y, min_kept=6, weight=w)
    assert_close(got, (plain * w).sum() / kept.sum(), F64)
    z = x.clone().requires_grad_(True)
    loss = OHEM(z, torch.full_like(y, 255), min_kept=6, ignore_index=255)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)


def test_global_normalization_without_a_group_changes_nothing() -> None:
    x, y = _seg(2, F64, torch.Generator().manual_seed(5))
    with global_normalization():
        inside = OHEM(x, y, min_kept=9)
    assert_close(inside, OHEM(x, y, min_kept=9), F64)


def test_no_host_sync_with_value_checks_off() -> None:
    x, y = _seg_ignored(2, torch.float32, torch.Generator().manual_seed(6))
    x.requires_grad_(True)
    with lf.value_checks(False), no_host_reads():
        loss = OHEM(x, y, min_kept=7, class_weight=torch.tensor(CW3), ignore_index=255)
        loss.backward()
    assert torch.isfinite(loss)


def test_compiles_without_graph_breaks() -> None:
    x, y = _seg_ignored(2, torch.float32, torch.Generator().manual_seed(7))
    fn = lf.OHEMCrossEntropyLoss(min_kept=9, thresh=0.6, ignore_index=255)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    assert_close(compiled(x, y), fn(x, y), torch.float32)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"min_kept": 0}, ValueError, "ohem_cross_entropy: expected `min_kept` >= 1"),
        ({"min_kept": 2.5}, TypeError, "min_kept"),
        ({"thresh": 1.5}, ValueError, "thresh"),
        ({"class_weight": [1.0, 2.0]}, ValueError, "class_weight"),
        ({"backend": "triton"}, ValueError, "backend"),
    ],
)
def test_rejects(kw: dict, exc: type, match: str) -> None:
    x, y = _rows(4, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(exc, match=match):
        OHEM(x, y, **kw)
    with pytest.raises(TypeError, match="class indices"):
        OHEM(x, torch.softmax(x, 1))
