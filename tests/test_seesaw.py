"""Seesaw loss: float64 references from the paper, mmdetection / mmpretrain parity (their
``seesaw_ce_loss`` and the module's ``cum_samples`` update rewritten from the code's formulas),
the stateful module (training vs evaluation mode, state_dict, no host sync), and DDP on CPU: two
gloo ranks inside ``global_normalization()`` reproduce one process, counts included."""

from __future__ import annotations

import copy
import datetime
import math
import os
import pickle
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as TF
from _contract import LossCase, assert_close, contract_test_suite
from _sync import no_host_reads
from reference import long_tail as ref

import lossforge as lf
import lossforge.functional as F
from lossforge.distributed import global_normalization

F64 = torch.float64
COUNTS4 = [1000, 200, 20, 2]


def _frozen(**kw: Any) -> lf.SeesawLoss:
    """The module in evaluation mode: its counts stay fixed, so it equals the functional."""
    return lf.SeesawLoss(**kw).eval()


def _index(n: int, dtype: torch.dtype, g: torch.Generator, ignore: bool = False):
    x = (2 * torch.randn(n, 4, generator=g, dtype=F64)).to(dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    if ignore and n > 1:
        y[1::3] = -100
    return x, y


def _index_ignored(n, dtype, g):
    return _index(n, dtype, g, ignore=True)


def _spatial(n, dtype, g):
    x = (2 * torch.randn(n, 4, 2, 3, generator=g, dtype=F64)).to(dtype)
    return x, torch.randint(0, 4, (n, 2, 3), generator=g)


# Mitigation only: the loss is an exact function of the logits (gradcheck applies). With q > 0 the
# compensation factor is computed from detached scores (as in mmdetection), so its gradient is
# checked against the closed form below instead of finite differences.
CASES = [
    LossCase(
        "seesaw_mitigation",
        F.seesaw_loss,
        _frozen,
        {"class_counts": COUNTS4, "q": 0.0},
        _index,
        elementwise=False,
    ),
    LossCase(
        "seesaw_mitigation_ignore_spatial",
        F.seesaw_loss,
        _frozen,
        {"class_counts": COUNTS4, "q": 0.0, "p": 1.5, "ignore_index": 3},
        _spatial,
        elementwise=False,
        mean_is_count=False,
    ),
]
globals().update(contract_test_suite(CASES))
_WITH_Q = contract_test_suite(
    [
        LossCase(
            "seesaw_full",
            F.seesaw_loss,
            _frozen,
            {"class_counts": COUNTS4},
            _index_ignored,
            elementwise=False,
            mean_is_count=False,
        )
    ]
)
_WITH_Q.pop("test_gradcheck")
globals().update({f"{k}_compensated": v for k, v in _WITH_Q.items()})


# ------------------------------------------------------------------------------------------------
# The paper's formula
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "kw",
    [{}, {"p": 0.0}, {"q": 0.0}, {"p": 2.0, "q": 0.5, "eps": 0.2}, {"eps": 0.5}],
    ids=["defaults", "no_mitigation", "no_compensation", "strong", "large_eps"],
)
def test_matches_paper_reference(kw: dict, reduction: str) -> None:
    x, y = _index_ignored(12, F64, torch.Generator().manual_seed(0))
    got = F.seesaw_loss(x, y, class_counts=COUNTS4, reduction=reduction, **kw)
    assert_close(got, ref.seesaw(x, y, COUNTS4, reduction=reduction, **kw), F64)


def test_spatial_unbatched_and_zero_counts_match_reference() -> None:
    x, y = _spatial(2, F64, torch.Generator().manual_seed(1))
    counts = [0, 5, 0, 40]  # zero counts are floored at 1
    for red in ("none", "mean"):
        got = F.seesaw_loss(x, y, class_counts=counts, reduction=red)
        assert_close(got, ref.seesaw(x, y, counts, reduction=red), F64)
    row = torch.tensor([0.3, 2.0, -1.0, 0.5], dtype=F64)
    got = F.seesaw_loss(row, torch.tensor(0), class_counts=COUNTS4, reduction="none")
    assert got.shape == ()
    assert_close(got, ref.seesaw(row, torch.tensor(0), COUNTS4, reduction="none"), F64)


def _log_factors(x: torch.Tensor, y: torch.Tensor, counts, p=0.8, q=2.0, eps=1e-2):
    """log S_yj from the paper's definitions, with Python floats (the reference's factors)."""
    out = torch.zeros_like(x, dtype=F64)
    n = [max(float(v), 1.0) for v in counts]
    for r in range(x.shape[0]):
        i = int(y[r])
        sigma = ref.softmax([float(v) for v in x[r]])
        for j in range(x.shape[1]):
            if j == i:
                continue
            m = (n[j] / n[i]) ** p if n[i] > n[j] else 1.0
            ratio = sigma[j] / max(sigma[i], eps)
            c = ratio**q if ratio > 1.0 else 1.0
            out[r, j] = math.log(m * c)
    return out


def test_gradient_treats_the_compensation_scores_as_constants() -> None:
    """d loss / d z_j = softmax(z + log S)_j - [j = y] with S fixed (scores detached, as in
    mmdetection)."""
    x, y = _index(10, F64, torch.Generator().manual_seed(2))
    z = x.clone().requires_grad_(True)
    F.seesaw_loss(z, y, class_counts=COUNTS4, reduction="sum").backward()
    adjusted = torch.softmax(x + _log_factors(x, y, COUNTS4), dim=1)
    want = adjusted - TF.one_hot(y, 4).to(F64)
    assert_close(z.grad, want, F64)


def test_identities() -> None:
    x, y = _index_ignored(10, F64, torch.Generator().manual_seed(3))
    ce = TF.cross_entropy(x, y, reduction="none")
    assert_close(
        F.seesaw_loss(x, y, class_counts=COUNTS4, p=0.0, q=0.0, reduction="none"),
        torch.where(y == -100, 0.0, ce),
        F64,
    )
    # Uniform counts: no mitigation; a rare target class (count 2) mitigates nothing either.
    assert_close(
        F.seesaw_loss(x, y, class_counts=[7, 7, 7, 7], q=0.0, reduction="none"),
        torch.where(y == -100, 0.0, ce),
        F64,
    )
    rare = y == 3
    got = F.seesaw_loss(x, y, class_counts=COUNTS4, q=0.0, reduction="none")
    assert_close(got[rare], ce[rare], F64)
    # Mitigation only lowers the loss (S <= 1), compensation only raises it (S >= 1).
    valid = y != -100
    assert (got[valid] <= ce[valid] + 1e-12).all()
    comp = F.seesaw_loss(x, y, class_counts=COUNTS4, p=0.0, reduction="none")
    assert (comp[valid] >= ce[valid] - 1e-12).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_at_extreme_logits_with_compensation(dtype: torch.dtype) -> None:
    # The factors are logs from log_softmax: a target score of e^-2e4 meets eps, never 0/0.
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], dtype=dtype, requires_grad=True)
    loss = F.seesaw_loss(x, torch.tensor([1, 0]), class_counts=[1, 100, 3])
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------------
# mmdetection / mmpretrain parity (seesaw_ce_loss and SeesawLoss.forward, rewritten)
# ------------------------------------------------------------------------------------------------


def _mm_seesaw_ce(cls_score, labels, cum_samples, num_classes, p, q, eps):
    onehot = TF.one_hot(labels, num_classes)
    seesaw_weights = cls_score.new_ones(onehot.size())
    if p > 0:
        ratio = cum_samples[None, :].clamp(min=1) / cum_samples[:, None].clamp(min=1)
        index = (ratio < 1.0).to(cls_score.dtype)
        sample_weights = ratio.pow(p) * index + (1 - index)
        seesaw_weights = seesaw_weights * sample_weights[labels.long(), :]
    if q > 0:
        scores = TF.softmax(cls_score.detach(), dim=1)
        self_scores = scores[torch.arange(0, len(scores)), labels.long()]
        score_matrix = scores / self_scores[:, None].clamp(min=eps)
        index = (score_matrix > 1.0).to(cls_score.dtype)
        seesaw_weights = seesaw_weights * (score_matrix.pow(q) * index + (1 - index))
    cls_score = cls_score + seesaw_weights.log() * (1 - onehot)
    return TF.cross_entropy(cls_score, labels, reduction="none")


class _MMSeesaw:
    """mmpretrain's SeesawLoss state: cum_samples updated with the batch before the loss."""

    def __init__(self, num_classes: int, p=0.8, q=2.0, eps=1e-2) -> None:
        self.cum_samples = torch.zeros(num_classes, dtype=F64)
        self.num_classes, self.p, self.q, self.eps = num_classes, p, q, eps

    def __call__(self, cls_score, labels):
        for u in labels.unique():
            self.cum_samples[u] += (labels == u.item()).sum()
        loss = _mm_seesaw_ce(
            cls_score, labels, self.cum_samples, self.num_classes, self.p, self.q, self.eps
        )
        return loss.mean()


PEER_DELTA: dict[str, float] = {}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("p", "q"), [(0.8, 2.0), (0.0, 2.0), (0.8, 0.0), (1.2, 0.7)])
def test_module_matches_mmpretrain_over_training_steps(seed: int, p: float, q: float) -> None:
    g = torch.Generator().manual_seed(seed)
    c = 6
    peer = _MMSeesaw(c, p=p, q=q)
    ours = lf.SeesawLoss(num_classes=c, p=p, q=q)
    weights = torch.tensor([0.5, 0.25, 0.12, 0.07, 0.04, 0.02])
    for step in range(5):
        x = 3 * torch.randn(16, c, generator=g, dtype=F64)
        y = torch.multinomial(weights, 16, replacement=True, generator=g)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        got, want = ours(xa, y), peer(xb, y)
        got.backward()
        want.backward()
        assert_close(got, want, F64, rtol=1e-12, atol=1e-12)
        assert_close(xa.grad, xb.grad, F64, rtol=1e-12, atol=1e-13)
        assert ours.cum_samples.tolist() == peer.cum_samples.long().tolist()
        PEER_DELTA[f"{seed}/{p}/{q}/{step}"] = float((got - want).detach().abs())


def test_functional_matches_mmdet_seesaw_ce_with_float32_counts() -> None:
    """mmdet keeps ``cum_samples`` in float32 and computes in the input dtype."""
    g = torch.Generator().manual_seed(9)
    x = 2 * torch.randn(40, 8, generator=g)
    y = torch.randint(0, 8, (40,), generator=g)
    counts = torch.tensor([900.0, 300.0, 100.0, 50.0, 10.0, 5.0, 1.0, 0.0])
    want = _mm_seesaw_ce(x, y, counts, 8, 0.8, 2.0, 1e-2)
    got = F.seesaw_loss(x, y, class_counts=counts, reduction="none")
    assert_close(got, want, torch.float32, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The stateful module
# ------------------------------------------------------------------------------------------------


def test_counts_update_only_in_training_mode_and_skip_ignored() -> None:
    loss = lf.SeesawLoss(num_classes=4, ignore_index=255)
    x = torch.randn(6, 4)
    y = torch.tensor([0, 0, 3, 255, 1, 0])
    loss(x, y)
    assert loss.cum_samples.dtype == torch.int64
    assert loss.cum_samples.tolist() == [3, 1, 0, 1]
    # The batch counts itself: the first call used counts [3, 1, 0, 1], not zeros.
    fresh = lf.SeesawLoss(num_classes=4, ignore_index=255)
    assert_close(
        fresh(x, y),
        F.seesaw_loss(x, y, class_counts=[3, 1, 0, 1], ignore_index=255),
        torch.float32,
    )
    loss.eval()
    loss(x, y)
    assert loss.cum_samples.tolist() == [3, 1, 0, 1]
    loss.train()
    with torch.no_grad():  # training mode counts, with or without grad (mmdetection does too)
        loss(x, y)
    assert loss.cum_samples.tolist() == [6, 2, 0, 2]
    loss.reset_counts()
    assert loss.cum_samples.tolist() == [0, 0, 0, 0]


def test_state_dict_pickle_dtype_and_initial_counts() -> None:
    loss = lf.SeesawLoss(class_counts=[5, 0, 2], p=1.0, loss_weight=2.0)
    assert loss.num_classes == 3 and loss.cum_samples.tolist() == [5, 0, 2]
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 2])
    loss(x, y)
    again = lf.SeesawLoss(num_classes=3, p=1.0, loss_weight=2.0)
    again.load_state_dict(loss.state_dict())
    assert again.cum_samples.tolist() == [6, 2, 3]
    for other in (again, pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss)):
        other.eval()
        assert_close(other(x, y), loss.eval()(x, y), torch.float32)
        loss.train()
    half = copy.deepcopy(loss).half()
    assert half.cum_samples.dtype == torch.int64  # .half() leaves the counts integral
    text = repr(loss)
    for part in ("num_classes=3", "p=1.0", "q=2.0", "eps=0.01", "loss_weight=2.0"):
        assert part in text
    assert lf.build_loss({"type": "seesaw", "num_classes": 4}).num_classes == 4
    assert lf.get_loss("SeesawLoss") is lf.SeesawLoss


def test_module_options_weight_avg_factor_and_reduction_override() -> None:
    loss = lf.SeesawLoss(class_counts=COUNTS4, loss_weight=0.5).eval()
    x, y = _index(8, F64, torch.Generator().manual_seed(4))
    w = torch.rand(8, dtype=F64)
    kw = {"class_counts": COUNTS4}
    assert_close(loss(x, y, weight=w), 0.5 * F.seesaw_loss(x, y, weight=w, **kw), F64)
    assert_close(loss(x, y, avg_factor=3.0), 0.5 * F.seesaw_loss(x, y, avg_factor=3.0, **kw), F64)
    assert_close(
        loss(x, y, reduction_override="none"),
        0.5 * F.seesaw_loss(x, y, reduction="none", **kw),
        F64,
    )
    with pytest.raises(ValueError, match="reduction_override"):
        loss(x, y, reduction_override="avg")


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({}, ValueError, "exactly one of `num_classes` and `class_counts`"),
        ({"num_classes": 3, "class_counts": [1, 2, 3]}, ValueError, "exactly one"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"num_classes": 2.5}, TypeError, "num_classes"),
        ({"class_counts": [1.5, 2.0]}, ValueError, "non-negative integer counts"),
        ({"class_counts": [1, -2]}, ValueError, "non-negative integer counts"),
        ({"class_counts": "abc"}, TypeError, "class_counts"),
        ({"num_classes": 3, "p": -1.0}, ValueError, "SeesawLoss: expected `p`"),
        ({"num_classes": 3, "eps": 0.0}, ValueError, "SeesawLoss: expected `eps`"),
        ({"num_classes": 3, "reduction": "avg"}, ValueError, "reduction"),
    ],
)
def test_module_rejects(kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        lf.SeesawLoss(**kw)


def test_module_rejects_bad_batches_before_counting() -> None:
    loss = lf.SeesawLoss(num_classes=3)
    with pytest.raises(ValueError, match="C=3 classes"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="class indices"):
        loss(torch.randn(2, 3), torch.softmax(torch.randn(2, 3), dim=1))  # valid probabilities
    with pytest.raises(ValueError, match="target"):
        loss(torch.randn(2, 3), torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="forward keywords"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]), mask=torch.ones(2))
    assert loss.cum_samples.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"class_counts": [1, 2]}, ValueError, "seesaw_loss: expected `class_counts`"),
        ({"class_counts": [1, -2, 3, 4]}, ValueError, "non-negative"),
        ({"class_counts": COUNTS4, "q": -1.0}, ValueError, "q"),
        ({"class_counts": COUNTS4, "eps": -0.1}, ValueError, "eps"),
        ({"class_counts": COUNTS4, "backend": "triton"}, ValueError, "backend"),
    ],
)
def test_functional_rejects(kw: dict, exc: type, match: str) -> None:
    x, y = _index(3, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(exc, match=match):
        F.seesaw_loss(x, y, **kw)


def test_training_step_reads_nothing_on_the_host() -> None:
    loss = lf.SeesawLoss(num_classes=3)
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 1, -100, 2, 0, 0])
    with lf.value_checks(False), no_host_reads():
        loss(x, y).backward()
    assert loss.cum_samples.tolist() == [3, 1, 1]


def test_training_step_compiles_without_graph_breaks() -> None:
    """fullgraph=True: the count update and the loss have no host sync or data-dependent shape."""
    loss = lf.SeesawLoss(num_classes=3)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, -100, 2, 0, 0])

    def step(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with global_normalization():
            return loss(a, b)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="eager")
    got = compiled(x, y)
    assert loss.cum_samples.tolist() == [3, 1, 1]
    loss.reset_counts()
    assert_close(got, step(x, y), torch.float32)


# ------------------------------------------------------------------------------------------------
# DDP on CPU (tests/test_distributed.py's harness, one spawn)
# ------------------------------------------------------------------------------------------------

WORLD = 2
STEPS = 4
C = 5


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    out = []
    probs = torch.tensor([0.55, 0.25, 0.12, 0.06, 0.02])
    for step in range(STEPS):
        feats = torch.randn(8, 3, generator=g, dtype=F64)
        y = torch.multinomial(probs, 8, replacement=True, generator=g)
        y[torch.rand(8, generator=g) < 0.2] = -100
        if step == 2:
            y[4:] = -100  # rank 1 has nothing valid in this step
        out.append((feats, y))
    return out


def _run(rank: int | None, scope: bool) -> dict[str, Any]:
    """Train-mode steps on the whole batch (rank None) or on one rank's half."""
    weight = torch.nn.Parameter(
        torch.randn(3, C, generator=torch.Generator().manual_seed(5), dtype=F64)
    )
    loss_fn = lf.SeesawLoss(num_classes=C)
    losses, grads = [], []
    for feats, y in _batches():
        if rank is not None:
            feats, y = feats[4 * rank : 4 * rank + 4], y[4 * rank : 4 * rank + 4]
        weight.grad = None
        with global_normalization(scope):
            value = loss_fn(feats @ weight, y)
        value.backward()
        losses.append(value.detach())
        grads.append(weight.grad.detach().clone())
    return {"loss": torch.stack(losses), "grad": torch.stack(grads), "counts": loss_fn.cum_samples}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    results: dict[str, Any] = {}
    try:
        for name, scope in (("scope", True), ("local", False)):
            try:
                results[name] = _run(rank, scope)
            except Exception:
                results[name] = {"error": traceback.format_exc()}
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("seesaw_ddp")
    out = tmp / "out"
    out.mkdir()
    ctx = mp.spawn(_worker, args=(WORLD, str(tmp / "pg_init"), str(out)), nprocs=WORLD, join=False)
    deadline = time.perf_counter() + 120.0
    while not ctx.join(timeout=max(0.1, deadline - time.perf_counter())):
        if time.perf_counter() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.terminate()
            pytest.fail("DDP workers did not finish within 120 s (deadlock?)")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in ranks:
        for part in r.values():
            if "error" in part:
                pytest.fail(part["error"])
    return ranks


def test_ddp_ranks_in_global_normalization_equal_one_process(ddp: list[dict[str, Any]]) -> None:
    single = _run(None, scope=False)
    per_rank = [r["scope"] for r in ddp]
    for r in per_rank:  # every rank holds the global counts
        assert r["counts"].tolist() == single["counts"].tolist()
    loss = torch.stack([r["loss"] for r in per_rank]).mean(0)
    grad = torch.stack([r["grad"] for r in per_rank]).mean(0)  # what DDP does with gradients
    torch.testing.assert_close(loss, single["loss"], rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, single["grad"], rtol=0, atol=1e-12)


def test_ddp_outside_the_scope_each_rank_counts_its_own_batches(
    ddp: list[dict[str, Any]],
) -> None:
    batches = _batches()
    for rank, r in enumerate(ddp):
        labels = torch.cat([y[4 * rank : 4 * rank + 4] for _, y in batches])
        want = torch.bincount(labels[labels >= 0], minlength=C)
        assert r["local"]["counts"].tolist() == want.tolist()
