"""``lossforge.distributed``: K gloo ranks on CPU reproduce one process on the concatenated batch.

RELIABILITY.md section 4, L6. Every count-normalised loss is run in the scenarios that break naive
normalisers (balanced shards, a rank with zero positives, a rank with everything ignored, an empty
rank, fewer positives than ranks, int counts) under 2-process gloo, in float64; the mean of the rank
losses and the DDP-averaged gradients of a shared parameter must equal the single-process loss and
gradient on the whole batch to 1e-12.

All scenarios run in ONE spawn (a module-scoped fixture; each spawn costs ~2-3 s): every rank runs
every scenario in the same order, records its loss and parameter gradient in a file, and the parent
averages them (exactly what DDP does with gradients). One scenario uses a real
``DistributedDataParallel`` wrapper. Processes use a ``file://`` rendezvous in ``tmp_path`` (no port
clashes), ``barrier()`` before ``destroy_process_group()``, and a join timeout.
"""

from __future__ import annotations

import datetime
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import lossforge.distributed as D
import lossforge.functional as LF
import lossforge.nn as N
from lossforge import _reduction
from lossforge.distributed import (
    all_reduce_sum,
    global_avg_factor,
    global_normalization,
    global_normalization_enabled,
    global_sum,
    is_distributed,
    maybe_global_sum,
    scope_group,
    world_size,
)

WORLD = 2
SPAWN_TIMEOUT_S = 120.0
ATOL = 1e-12
IGNORE = -100

# --------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One loss configuration on one batch, split over two ranks.

    ``make()`` builds the whole batch (float64 inputs, batch on dim 0, class dim 1; targets);
    ``shards`` are the two ranks' row ranges. ``loss(logits, target, avg)`` calls the loss;
    ``count(target)`` is the rank-local count passed as ``avg_factor`` (None: the loss' own
    denominator). ``mode``: ``"scope"`` runs inside ``global_normalization(min_avg_factor=clamp)``
    with the local count; ``"factor"`` passes ``global_avg_factor(count, min_value=clamp)``. The
    single-process reference passes ``max(count(whole batch), clamp)``.
    """

    name: str
    needs: str  # functional that must exist in lossforge.functional
    make: Callable[[], tuple[Tensor, Tensor]]
    loss: Callable[[Tensor, Tensor, Any], Tensor]
    shards: tuple[tuple[int, int], tuple[int, int]] = ((0, 4), (4, 8))
    count: Callable[[Tensor], Any] | None = None
    scale_grad: bool = True  # False: the scope's sum-of-gradients mode (compared as sums)
    mode: str = "scope"
    clamp: float = 0.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(n: int, c: int, *spatial: int, seed: int = 0) -> Tensor:
    return torch.randn(n, c, *spatial, generator=_gen(seed), dtype=torch.float64) * 2


def _ce_data(
    spatial: tuple[int, ...] = (), ignore_rows: range | None = None, ignore_frac: float = 0.25
):
    def make() -> tuple[Tensor, Tensor]:
        x = _logits(8, 4, *spatial, seed=1)
        g = _gen(2)
        t = torch.randint(0, 4, (8, *spatial), generator=g)
        t = torch.where(
            torch.rand(t.shape, generator=g) < ignore_frac, torch.full_like(t, IGNORE), t
        )
        if ignore_rows is not None:
            t[ignore_rows.start : ignore_rows.stop] = IGNORE
        return x, t

    return make


def _multilabel(
    pos_rows: tuple[int, ...] | None = None,
    ignore_rows: range | None = None,
    n_pos: int | None = None,
):
    """Dense multi-label targets (8, 3) in {0, 1}, -1 = ignored; positives restricted as asked."""

    def make() -> tuple[Tensor, Tensor]:
        x = _logits(8, 3, seed=3)
        g = _gen(4)
        t = (torch.rand(8, 3, generator=g) < 0.3).to(torch.float64)
        if pos_rows is not None:
            keep = torch.zeros(8, 1, dtype=torch.bool)
            keep[list(pos_rows)] = True
            t = t * keep
        if n_pos is not None:
            t = torch.zeros(8, 3, dtype=torch.float64)
            t.view(-1)[: n_pos * 5 : 5] = 1.0  # n_pos positives, all in rank 0's rows
        t = torch.where(torch.rand(8, 3, generator=g) < 0.15, torch.full_like(t, -1.0), t)
        if ignore_rows is not None:
            t[ignore_rows.start : ignore_rows.stop] = -1.0
        return x, t

    return make


def _ce_rank_weighted_zero() -> Callable[[], tuple[Tensor, Tensor]]:
    """Rank 1 holds only class 0, whose class weight is 0: its local weighted denominator is 0."""

    def make() -> tuple[Tensor, Tensor]:
        x = _logits(8, 4, seed=5)
        t = torch.randint(1, 4, (8,), generator=_gen(6))
        t[4:] = 0
        return x, t

    return make


def _num_pos(t: Tensor) -> Tensor:
    return (t == 1).sum()  # int64, as detection heads compute it


def _num_pos_int(t: Tensor) -> int:
    return int((t == 1).sum())


def _boxes(zero_rows: range | None = None, n_pos: int | None = None):
    """(8, 4) box regression with a per-row positive mask folded into the targets' last column."""

    def make() -> tuple[Tensor, Tensor]:
        x = _logits(8, 4, seed=5)
        g = _gen(6)
        y = torch.randn(8, 4, generator=g, dtype=torch.float64)
        pos = (torch.rand(8, generator=g) < 0.6).to(torch.float64)
        if zero_rows is not None:
            pos[zero_rows.start : zero_rows.stop] = 0.0
        if n_pos is not None:
            pos = torch.zeros(8, dtype=torch.float64)
            pos[:n_pos] = 1.0
        return x, torch.cat([y, pos[:, None]], dim=1)

    return make


def _box_loss(fn: Callable[..., Tensor], **kw: Any) -> Callable[[Tensor, Tensor, Any], Tensor]:
    def loss(x: Tensor, yt: Tensor, avg: Any) -> Tensor:
        y, pos = yt[:, :4], yt[:, 4]
        return fn(x, y, weight=pos, avg_factor=avg, **kw)

    return loss


def _box_count(yt: Tensor) -> Tensor:
    return (yt[:, 4] > 0).sum()


def _ce(**kw: Any) -> Callable[[Tensor, Tensor, Any], Tensor]:
    return lambda x, t, avg: LF.cross_entropy(x, t, ignore_index=IGNORE, avg_factor=avg, **kw)


def _bce(**kw: Any) -> Callable[[Tensor, Tensor, Any], Tensor]:
    return lambda x, t, avg: LF.binary_cross_entropy_with_logits(
        x, t, ignore_index=-1, avg_factor=avg, **kw
    )


def _sigmoid_focal(x: Tensor, t: Tensor, avg: Any) -> Tensor:
    # Dense {0, 1} targets with ignored elements given zero weight (focal has no ignore_index).
    valid = t >= 0
    return LF.sigmoid_focal_loss(x, t.clamp(min=0), weight=valid.to(x.dtype), avg_factor=avg)


def _softmax_focal(x: Tensor, t: Tensor, avg: Any) -> Tensor:
    return LF.softmax_focal_loss(x, t, ignore_index=IGNORE, avg_factor=avg)


def _seg(ignore_rows: range | None = None) -> Callable[[], tuple[Tensor, Tensor]]:
    """(8, 3, 4, 4) logits, (8, 4, 4) class indices; rows 5-7 only class 0; some pixels ignored."""

    def make() -> tuple[Tensor, Tensor]:
        x = _logits(8, 3, 4, 4, seed=11)
        g = _gen(12)
        t = torch.randint(0, 3, (8, 4, 4), generator=g)
        t[5:] = 0
        t = torch.where(torch.rand(t.shape, generator=g) < 0.2, torch.full_like(t, IGNORE), t)
        if ignore_rows is not None:
            t[ignore_rows.start : ignore_rows.stop] = IGNORE
        return x, t

    return make


def _dice(**kw: Any) -> Callable[[Tensor, Tensor, Any], Tensor]:
    def loss(x: Tensor, t: Tensor, avg: Any) -> Tensor:
        if "ignore_index" not in kw:
            t = t.clamp(min=0)
        return LF.dice_loss(x, t, avg_factor=avg, **kw)

    return loss


CW = [0.2, 1.0, 3.0, 0.5]
SCENARIOS: list[Scenario] = [
    # cross_entropy: valid-count and class-weight denominators
    Scenario("ce_ignore_balanced", "cross_entropy", _ce_data(), _ce()),
    Scenario(
        "ce_ignore_rank_all_ignored", "cross_entropy", _ce_data(ignore_rows=range(4, 8)), _ce()
    ),
    Scenario("ce_rank_empty", "cross_entropy", _ce_data(), _ce(), shards=((0, 8), (8, 8))),
    # fewer valid targets than ranks, beside ignored ones: the rank-mean count (1/2) must not be
    # clamped to 1 (the loss and gradients came out halved; found by an audit)
    Scenario(
        "ce_one_valid_fewer_than_ranks",
        "cross_entropy",
        _ce_data(ignore_rows=range(1, 8), ignore_frac=0.0),
        _ce(),
    ),
    Scenario(
        "softmax_focal_one_valid_fewer_than_ranks",
        "softmax_focal_loss",
        _ce_data(ignore_rows=range(1, 8), ignore_frac=0.0),
        _softmax_focal,
    ),
    Scenario(
        "ce_dense_uneven", "cross_entropy", _ce_data(spatial=(3, 2)), _ce(), shards=((0, 3), (3, 8))
    ),
    Scenario("ce_class_weight", "cross_entropy", _ce_data(), _ce(class_weight=CW)),
    Scenario(
        "ce_class_weight_rank_all_ignored",
        "cross_entropy",
        _ce_data(ignore_rows=range(0, 4)),
        _ce(class_weight=CW),
    ),
    Scenario(
        "ce_class_weight_rank_empty",
        "cross_entropy",
        _ce_data(),
        _ce(class_weight=CW),
        shards=((0, 0), (0, 8)),
    ),
    Scenario("ce_label_smoothing_ignore", "cross_entropy", _ce_data(), _ce(label_smoothing=0.1)),
    Scenario(
        "ce_class_weight_smoothing_rank_weight_zero",
        "cross_entropy",
        _ce_rank_weighted_zero(),
        _ce(class_weight=[0.0, 1.0, 2.0, 0.5], label_smoothing=0.2),
    ),
    # binary_cross_entropy_with_logits: valid-element count, and avg_factor = number of positives
    Scenario("bce_ignore_balanced", "binary_cross_entropy_with_logits", _multilabel(), _bce()),
    Scenario(
        "bce_rank_all_ignored",
        "binary_cross_entropy_with_logits",
        _multilabel(ignore_rows=range(4, 8)),
        _bce(),
    ),
    Scenario(
        "bce_rank_empty",
        "binary_cross_entropy_with_logits",
        _multilabel(),
        _bce(),
        shards=((0, 8), (8, 8)),
    ),
    Scenario(
        "bce_pos_factor_rank_zero_pos",
        "binary_cross_entropy_with_logits",
        _multilabel(pos_rows=(0, 1, 2)),
        _bce(),
        count=_num_pos,
        mode="factor",
        clamp=1.0,
    ),
    Scenario(
        "bce_pos_scope_fewer_pos_than_ranks",
        "binary_cross_entropy_with_logits",
        _multilabel(n_pos=1),
        _bce(),
        count=_num_pos,
        mode="scope",
        clamp=1.0,
    ),
    Scenario(
        "bce_pos_factor_zero_pos_anywhere",
        "binary_cross_entropy_with_logits",
        _multilabel(n_pos=0),
        _bce(),
        count=_num_pos_int,
        mode="factor",
        clamp=1.0,
    ),
    # l1 / smooth_l1 with avg_factor = number of positive boxes
    Scenario(
        "l1_factor_balanced",
        "l1_loss",
        _boxes(),
        _box_loss(LF.l1_loss),
        count=_box_count,
        mode="factor",
        clamp=1.0,
    ),
    Scenario(
        "l1_scope_int_count",
        "l1_loss",
        _boxes(),
        _box_loss(LF.l1_loss),
        count=lambda yt: int((yt[:, 4] > 0).sum()),
        clamp=1.0,
    ),
    Scenario(
        "smooth_l1_factor_rank_zero_pos",
        "smooth_l1_loss",
        _boxes(zero_rows=range(4, 8)),
        _box_loss(LF.smooth_l1_loss, beta=0.5),
        count=_box_count,
        mode="factor",
        clamp=1.0,
    ),
    Scenario(
        "smooth_l1_factor_rank_empty",
        "smooth_l1_loss",
        _boxes(),
        _box_loss(LF.smooth_l1_loss, beta=0.5),
        shards=((0, 0), (0, 8)),
        count=_box_count,
        mode="factor",
        clamp=1.0,
    ),
    Scenario(
        "smooth_l1_scope_fewer_pos_than_ranks",
        "smooth_l1_loss",
        _boxes(n_pos=1),
        _box_loss(LF.smooth_l1_loss, beta=0.5),
        count=_box_count,
        clamp=1.0,
    ),
    Scenario(
        "mse_valid_count_uneven",
        "mse_loss",
        _boxes(),
        lambda x, yt, avg: LF.mse_loss(x, yt[:, :4]),
        shards=((0, 7), (7, 8)),
    ),
    # focal losses (skipped until they land)
    Scenario(
        "sigmoid_focal_factor_rank_zero_pos",
        "sigmoid_focal_loss",
        _multilabel(pos_rows=(5, 6)),
        _sigmoid_focal,
        count=_num_pos,
        mode="factor",
        clamp=1.0,
    ),
    Scenario(
        "sigmoid_focal_scope_fewer_pos_than_ranks",
        "sigmoid_focal_loss",
        _multilabel(n_pos=1),
        _sigmoid_focal,
        count=_num_pos,
        clamp=1.0,
    ),
    Scenario(
        "sigmoid_focal_factor_rank_empty",
        "sigmoid_focal_loss",
        _multilabel(),
        _sigmoid_focal,
        shards=((0, 8), (8, 8)),
        count=_num_pos_int,
        mode="factor",
        clamp=1.0,
    ),
    Scenario("softmax_focal_ignore", "softmax_focal_loss", _ce_data(), _softmax_focal),
    Scenario(
        "softmax_focal_rank_all_ignored",
        "softmax_focal_loss",
        _ce_data(ignore_rows=range(4, 8)),
        _softmax_focal,
    ),
    Scenario(
        "softmax_focal_rank_empty",
        "softmax_focal_loss",
        _ce_data(),
        _softmax_focal,
        shards=((0, 8), (8, 8)),
    ),
    # dice: whole-batch sums through maybe_global_sum (batch=True), per-sample means (batch=False)
    Scenario("dice_batch_balanced", "dice_loss", _seg(), _dice(batch=True)),
    Scenario(
        "dice_batch_ignore_rank_all_ignored",
        "dice_loss",
        _seg(ignore_rows=range(4, 8)),
        _dice(batch=True, ignore_index=IGNORE, class_weight=[0.5, 1.0, 2.0]),
    ),
    Scenario(
        "dice_batch_rank_empty", "dice_loss", _seg(), _dice(batch=True), shards=((0, 8), (8, 8))
    ),
    # scale_grad=False (gradients summed): the entry count is summed over the ranks, so the local
    # gradient of the global sums needs K as well (it came out K times too small; found by an
    # audit); the summed losses equal the single process
    Scenario("dice_batch_sum_grads", "dice_loss", _seg(), _dice(batch=True), scale_grad=False),
    Scenario("ce_sum_grads", "cross_entropy", _ce_data(), _ce(), scale_grad=False),
    Scenario(
        "dice_batch_squared_uneven",
        "dice_loss",
        _seg(),
        _dice(batch=True, squared=True, smooth=0.0),
        shards=((0, 7), (7, 8)),
    ),
    Scenario(
        "dice_per_sample_ignore_uneven",
        "dice_loss",
        _seg(ignore_rows=range(0, 2)),
        _dice(ignore_index=IGNORE),
        shards=((0, 3), (3, 8)),
    ),
]

# The mmdetection idiom avg = max(reduce_mean(num_pos), 1) clamps the rank mean, not the global sum.
MMDET_CLAMP = "bce_pos_rank_mean_clamp"
MMDET_DATA = _multilabel(n_pos=1)


def _available(needs: str) -> bool:
    return hasattr(LF, needs)


def _weight_matrix(c: int) -> Tensor:
    return torch.eye(c, dtype=torch.float64) + 0.1 * torch.randn(
        c, c, generator=_gen(9), dtype=torch.float64
    )


def _apply(x: Tensor, w: Tensor) -> Tensor:
    """Logits = a learned linear map over the class dim (dim 1): the shared "parameter"."""
    return torch.movedim(torch.movedim(x, 1, -1) @ w, -1, 1)


def _run(sc: Scenario, rank: int | None) -> dict[str, Any]:
    """Loss and parameter gradient on the whole batch (rank None) or on one rank's shard."""
    x, t = sc.make()
    if rank is not None:
        lo, hi = sc.shards[rank]
        x, t = x[lo:hi], t[lo:hi]
    w = _weight_matrix(x.shape[1]).requires_grad_(True)
    out: dict[str, Any] = {}
    count = sc.count(t) if sc.count is not None else None
    count_before = count.clone() if isinstance(count, Tensor) else count
    if rank is None:
        avg = None if count is None else max(float(count), sc.clamp)
        loss = sc.loss(_apply(x, w), t, avg)
    elif sc.mode == "factor":
        avg = global_avg_factor(count, min_value=sc.clamp) if count is not None else None
        loss = sc.loss(_apply(x, w), t, avg)
    else:
        with global_normalization(min_avg_factor=sc.clamp, scale_grad=sc.scale_grad):
            loss = sc.loss(_apply(x, w), t, count)
    loss.backward()
    out["loss"] = loss.detach()
    out["grad"] = w.grad.detach().clone() if w.grad is not None else torch.zeros_like(w)
    if isinstance(count, Tensor):
        out["count_unchanged"] = (
            bool(torch.equal(count, count_before)) and count.dtype == count_before.dtype
        )
    return out


def _run_mmdet_clamp(rank: int | None) -> dict[str, Any]:
    """Per-rank-mean clamp (the common idiom) vs global_avg_factor, fewer positives than ranks."""
    x, t = MMDET_DATA()
    if rank is not None:
        lo, hi = ((0, 4), (4, 8))[rank]
        x, t = x[lo:hi], t[lo:hi]
    out: dict[str, Any] = {}
    num_pos = (t == 1).sum().to(torch.float64)
    if rank is None:
        out["loss"] = LF.binary_cross_entropy_with_logits(
            x, t, ignore_index=-1, avg_factor=max(float(num_pos), 1.0)
        )
        return out
    mean = num_pos.clone()
    dist.all_reduce(mean.div_(dist.get_world_size()))  # mmdet reduce_mean
    wrong = torch.clamp(mean, min=1.0)
    out["wrong"] = LF.binary_cross_entropy_with_logits(x, t, ignore_index=-1, avg_factor=wrong)
    out["loss"] = LF.binary_cross_entropy_with_logits(
        x, t, ignore_index=-1, avg_factor=global_avg_factor(num_pos)
    )
    return out


def _subgroup_data(rank: int) -> tuple[Tensor, Tensor, Tensor]:
    g = _gen(40 + rank)
    x = torch.randn(5 + 3 * rank, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 4, (5 + 3 * rank,), generator=g)
    t[: rank + 1] = IGNORE
    return x, t, (t >= 0).sum()


def _run_subgroups(rank: int) -> dict[str, Any]:
    """Two models in one job, one rank each (groups {0} and {1}): inside
    ``global_normalization(group=...)`` each rank's losses are its own model's, as one process on
    its own batch; the default group mixes the two models' counts."""
    groups = [dist.new_group([0]), dist.new_group([1])]  # (every rank creates every group)
    mine = groups[rank]
    x, t, count = _subgroup_data(rank)
    x = x.requires_grad_(True)
    out: dict[str, Any] = {}
    with global_normalization(group=mine):
        ce = LF.cross_entropy(x, t, ignore_index=IGNORE)
        dice = LF.dice_loss(x.unsqueeze(-1), t.clamp_min(0).unsqueeze(-1), batch=True)
        seesaw = N.SeesawLoss(num_classes=4, ignore_index=IGNORE).train()
        seesaw(x, t)
    (grad,) = torch.autograd.grad(ce, x)
    out["ce"], out["ce_grad"], out["dice"] = ce.detach(), grad, dice.detach()
    out["seesaw_counts"] = seesaw.cum_samples.clone()
    out["factor"] = global_avg_factor(count, group=mine)
    with global_normalization():  # the default group: both ranks' counts
        out["ce_world"] = LF.cross_entropy(x, t, ignore_index=IGNORE).detach()
    return out


def _run_compiled(rank: int) -> dict[str, Any]:
    """torch.compile(fullgraph=True) with a live process group: dynamo traces the all-reduces."""
    g = _gen(30 + rank)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, IGNORE, 2]) if rank == 0 else torch.full((4,), IGNORE)

    def scoped(x: Tensor, t: Tensor) -> Tensor:
        with global_normalization():
            return LF.cross_entropy(x, t, ignore_index=IGNORE)

    def explicit(x: Tensor, t: Tensor) -> Tensor:
        avg = global_avg_factor((t >= 0).sum())
        return LF.l1_loss(x, torch.zeros_like(x), weight=(t >= 0).to(x.dtype), avg_factor=avg)

    out: dict[str, Any] = {}
    for name, fn in (("scoped", scoped), ("explicit", explicit)):
        compiled = torch.compile(fn, fullgraph=True, backend="eager")
        out[name] = (compiled(x, t).detach(), fn(x, t).detach())
    return out


def _run_ddp_wrapper(rank: int | None) -> dict[str, Any]:
    """A real DistributedDataParallel model (a Linear layer) with cross_entropy in the scope."""
    g = _gen(21)
    feats = torch.randn(10, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 3, (10,), generator=g)
    t[6:] = IGNORE  # rank 1 has 1 valid target of 5
    t[5] = 2
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    if rank is None:
        loss = LF.cross_entropy(model(feats), t, ignore_index=IGNORE)
    else:
        lo, hi = ((0, 5), (5, 10))[rank]
        model = torch.nn.parallel.DistributedDataParallel(model)
        with global_normalization():
            loss = LF.cross_entropy(model(feats[lo:hi]), t[lo:hi], ignore_index=IGNORE)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        params = model.module.parameters()
        return {"loss": loss.detach(), "grad": torch.cat([p.grad.reshape(-1) for p in params])}
    loss.backward()
    return {
        "loss": loss.detach(),
        "grad": torch.cat([p.grad.reshape(-1) for p in model.parameters()]),
    }


EXAMPLE = "examples/ddp_dense_head.py"
EXAMPLE_ARGS = {
    "steps": 3,
    "batch": 8,
    "lr": 0.05,
    "dtype": "float64",
    "check": True,
    "verbose": False,
}


def _example() -> Any:
    """examples/ddp_dense_head.py, loaded by path (examples/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "ddp_dense_head.py"
    spec = importlib.util.spec_from_file_location("lossforge_example_ddp_dense_head", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# --------------------------------------------------------------------------------------------------
# Spawn harness
# --------------------------------------------------------------------------------------------------


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
        jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (sc.name, (lambda sc=sc: _run(sc, rank))) for sc in SCENARIOS if _available(sc.needs)
        ]
        jobs.append((MMDET_CLAMP, lambda: _run_mmdet_clamp(rank)))
        jobs.append(("ddp_wrapper_cross_entropy", lambda: _run_ddp_wrapper(rank)))
        jobs.append(("compiled", lambda: _run_compiled(rank)))
        jobs.append(("subgroups", lambda: _run_subgroups(rank)))
        jobs.append((EXAMPLE, lambda: {"history": _example().train(rank, world, EXAMPLE_ARGS)}))
        t0 = time.perf_counter()
        for name, job in jobs:
            # Scenarios are deterministic and identical on both ranks, so an exception is raised on
            # both (no rank is left waiting in a collective).
            try:
                results[name] = job()
            except Exception:
                results[name] = {"error": traceback.format_exc()}
        results["_seconds"] = time.perf_counter() - t0
        results["_in_scope_after"] = global_normalization_enabled()
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
        dist.destroy_process_group()


def spawn(
    worker: Callable[..., None], tmp_path: Path, *args: Any, timeout: float = SPAWN_TIMEOUT_S
) -> float:
    """Run ``worker(rank, WORLD, init_file, out_dir, *args)`` on WORLD processes; wall seconds."""
    init_file = tmp_path / "pg_init"
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    ctx = mp.spawn(worker, args=(WORLD, str(init_file), str(out), *args), nprocs=WORLD, join=False)
    deadline = t0 + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.perf_counter())):
        if time.perf_counter() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            for p in ctx.processes:
                p.join(5)
            pytest.fail(f"DDP workers did not finish within {timeout:.0f} s (deadlock?)")
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ddp")
    wall = spawn(_worker, tmp)
    ranks = [torch.load(tmp / "out" / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    print(
        f"\nDDP spawn (2 gloo ranks, all loss scenarios): {wall:.2f} s wall, "
        f"work {ranks[0]['_seconds']:.2f} s"
    )
    return {"ranks": ranks, "wall": wall}


def _combine(
    ddp_results: dict[str, Any], name: str
) -> tuple[Tensor, Tensor | None, list[dict[str, Any]]]:
    per_rank = [r.get(name) for r in ddp_results["ranks"]]
    if per_rank[0] is None:
        pytest.skip(f"{name} did not run")
    for r in per_rank:
        if "error" in r:
            pytest.fail(f"{name} raised on a rank:\n{r['error']}")
    loss = torch.stack([r["loss"] for r in per_rank]).mean()
    grad = torch.stack([r["grad"] for r in per_rank]).mean(0) if "grad" in per_rank[0] else None
    return loss, grad, per_rank


MAX_DELTA: dict[str, tuple[float, float]] = {}


# --------------------------------------------------------------------------------------------------
# DDP tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_ranks_equal_single_process(sc: Scenario, ddp_results: dict[str, Any]) -> None:
    if not _available(sc.needs):
        pytest.skip(f"lossforge.functional.{sc.needs} has not landed")
    loss, grad, per_rank = _combine(ddp_results, sc.name)
    if not sc.scale_grad:  # gradients (and losses) summed over the ranks, not averaged
        loss, grad = loss * WORLD, None if grad is None else grad * WORLD
    ref = _run(sc, None)
    torch.testing.assert_close(loss, ref["loss"], rtol=0, atol=ATOL)
    torch.testing.assert_close(grad, ref["grad"], rtol=0, atol=ATOL)
    MAX_DELTA[sc.name] = (
        float((loss - ref["loss"]).abs()),
        float((grad - ref["grad"]).abs().max()),
    )
    assert torch.isfinite(ref["loss"])
    for r in per_rank:
        if "count_unchanged" in r:
            assert r["count_unchanged"], "the caller's count tensor was modified"


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
def test_real_ddp_wrapper(ddp_results: dict[str, Any]) -> None:
    loss, grad, _ = _combine(ddp_results, "ddp_wrapper_cross_entropy")
    ref = _run_ddp_wrapper(None)
    # DDP already averaged the gradients: both ranks hold the single-process gradient.
    for r in ddp_results["ranks"]:
        torch.testing.assert_close(
            r["ddp_wrapper_cross_entropy"]["grad"], ref["grad"], rtol=0, atol=ATOL
        )
    torch.testing.assert_close(loss, ref["loss"], rtol=0, atol=ATOL)


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
def test_compiled_with_process_group(ddp_results: dict[str, Any]) -> None:
    """fullgraph compile in the scope and with global_avg_factor: no graph break, same values."""
    for r in ddp_results["ranks"]:
        res = r["compiled"]
        if "error" in res:
            pytest.fail(res["error"])
        for name in ("scoped", "explicit"):
            compiled, eager = res[name]
            torch.testing.assert_close(compiled, eager, rtol=0, atol=ATOL)


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
def test_global_normalization_over_a_process_group(ddp_results: dict[str, Any]) -> None:
    """``group=``: every reduction of the scope (denominators, dice's batch sums, Seesaw's class
    counts) and global_avg_factor run over the given group, K its size. Without it the default
    group was always used: two models trained by disjoint groups got each other's counts,
    silently."""
    for rank, r in enumerate(ddp_results["ranks"]):
        res = r["subgroups"]
        if "error" in res:
            pytest.fail(res["error"])
        x, t, count = _subgroup_data(rank)
        x = x.requires_grad_(True)
        ce = LF.cross_entropy(x, t, ignore_index=IGNORE)
        (grad,) = torch.autograd.grad(ce, x)
        torch.testing.assert_close(res["ce"], ce.detach(), rtol=0, atol=ATOL)
        torch.testing.assert_close(res["ce_grad"], grad, rtol=0, atol=ATOL)
        dice = LF.dice_loss(x.unsqueeze(-1), t.clamp_min(0).unsqueeze(-1), batch=True)
        torch.testing.assert_close(res["dice"], dice.detach(), rtol=0, atol=ATOL)
        seesaw = N.SeesawLoss(num_classes=4, ignore_index=IGNORE).train()
        seesaw(x, t)
        assert torch.equal(res["seesaw_counts"], seesaw.cum_samples)
        assert res["factor"].item() == float(count)
        assert not torch.allclose(res["ce_world"], ce.detach())  # the world scope mixes them


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
def test_rank_mean_clamp_is_wrong_when_positives_are_scarce(ddp_results: dict[str, Any]) -> None:
    """max(reduce_mean(num_pos), 1) vs max(sum(num_pos), 1) / K with one positive on two ranks."""
    ranks = ddp_results["ranks"]
    for r in ranks:
        if "error" in r[MMDET_CLAMP]:
            pytest.fail(r[MMDET_CLAMP]["error"])
    ref = _run_mmdet_clamp(None)["loss"]
    ours = torch.stack([r[MMDET_CLAMP]["loss"] for r in ranks]).mean()
    wrong = torch.stack([r[MMDET_CLAMP]["wrong"] for r in ranks]).mean()
    torch.testing.assert_close(ours, ref, rtol=0, atol=ATOL)
    # reduce_mean gives 0.5, clamped to 1 on each rank: half the single-process loss.
    torch.testing.assert_close(wrong * WORLD, ref, rtol=0, atol=ATOL)


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
def test_scope_restored_in_workers(ddp_results: dict[str, Any]) -> None:
    assert ddp_results["ranks"][0]["_in_scope_after"] is False


def test_global_sum_gradients_spawn_free() -> None:
    """global_sum's value/gradient split, checked without a group by emulating the all-reduce."""
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert global_sum(x) is x  # no group: identity
    assert maybe_global_sum(x) is x


# --------------------------------------------------------------------------------------------------
# Single-process behaviour (no process group)
# --------------------------------------------------------------------------------------------------


def test_no_group_is_noop() -> None:
    assert not is_distributed()
    assert world_size() == 1
    assert global_avg_factor(torch.tensor(0)).item() == 1.0
    assert global_avg_factor(torch.tensor(0), min_value=0.0).item() == 0.0
    assert global_avg_factor(7).item() == 7.0
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(x), x)
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, IGNORE, 2, 1])
    with global_normalization():
        assert global_normalization_enabled()
        inside = LF.cross_entropy(x, t, ignore_index=IGNORE)
        inside_avg = LF.l1_loss(x, x + 1, avg_factor=3.0)
    assert not global_normalization_enabled()
    torch.testing.assert_close(inside, LF.cross_entropy(x, t, ignore_index=IGNORE), rtol=0, atol=0)
    torch.testing.assert_close(inside_avg, LF.l1_loss(x, x + 1, avg_factor=3.0), rtol=0, atol=0)


def test_global_avg_factor_types_and_no_mutation() -> None:
    c = torch.tensor(3, dtype=torch.int64)
    out = global_avg_factor(c)
    assert out.dtype == torch.float64  # an integer count stays exact
    assert out.ndim == 0
    assert not out.requires_grad
    assert c.dtype == torch.int64
    assert int(c) == 3
    f = torch.tensor([2.5], dtype=torch.float64, requires_grad=True)
    out = global_avg_factor(f, min_value=0.0)
    assert out.dtype == torch.float64
    assert out.shape == ()
    assert not out.requires_grad
    out.add_(1)  # the result is a new tensor
    assert float(f.detach()) == 2.5
    assert global_avg_factor(torch.tensor(0.3)).item() == 1.0  # clamped


def test_global_avg_factor_keeps_integer_counts_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """7 positives over 3 ranks: the float32 default made it 2.3333332538604736 (a float64 loss
    then differed from one process by 1.5e-7); integer and Python counts are float64 now. The
    all-reduce is stood in for (its sum is the count given), the world size is 3."""
    import lossforge.distributed as D

    monkeypatch.setattr(D, "world_size", lambda group=None: 3)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op=None: t)
    for count in (7, torch.tensor(7), torch.tensor([7], dtype=torch.int32)):
        out = global_avg_factor(count)
        assert out.dtype == torch.float64 and out.item() == 7 / 3
    assert global_avg_factor(torch.tensor(7.0)).dtype == torch.float32  # a float count's dtype
    assert global_avg_factor(7, dtype=torch.float32).item() == float(torch.tensor(7 / 3))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"count": torch.ones(2)}, ValueError, "one-element"),
        ({"count": "3"}, TypeError, "a number"),
        ({"count": True}, TypeError, "a number"),
        ({"count": float("inf")}, ValueError, "finite"),
        ({"count": 1, "min_value": -1}, ValueError, ">= 0"),
        ({"count": -5}, ValueError, r"`count` a finite number >= 0"),
        ({"count": 1, "min_value": True}, TypeError, r"`min_value` a real number"),
        ({"count": 1, "min_value": "1"}, TypeError, r"`min_value` a real number"),
        ({"count": 1, "min_value": float("inf")}, ValueError, r"`min_value` a finite"),
        ({"count": 3, "dtype": torch.int64}, TypeError, r"`dtype` a floating torch.dtype"),
        ({"count": torch.tensor(True)}, TypeError, r"`count` a real tensor \(not bool\)"),
    ],
)
def test_global_avg_factor_rejects(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        global_avg_factor(**kwargs)


def test_double_reduction_is_refused() -> None:
    with global_normalization(), pytest.raises(RuntimeError, match="reduce it twice"):
        global_avg_factor(3)


def test_scope_arguments_and_nesting() -> None:
    with (
        pytest.raises(TypeError, match="enabled"),
        global_normalization(enabled=1),  # type: ignore[arg-type]
    ):
        pass
    with (
        pytest.raises(ValueError, match="min_avg_factor"),
        global_normalization(min_avg_factor=-1.0),
    ):
        pass
    with (
        pytest.raises(TypeError, match=r"`min_avg_factor` a real number"),
        global_normalization(min_avg_factor="1"),  # type: ignore[arg-type]
    ):
        pass
    with (
        pytest.raises(TypeError, match=r"`scale_grad` a bool"),
        global_normalization(scale_grad="no"),  # type: ignore[arg-type]
    ):
        pass
    with global_normalization(enabled=False):
        assert not global_normalization_enabled()
    with global_normalization():
        with global_normalization(min_avg_factor=2.0):
            assert (
                LF.l1_loss(torch.ones(2), torch.zeros(2), avg_factor=1.0).item() == 1.0
            )  # 2 / max(1, 2)
        assert global_normalization_enabled()
        assert LF.l1_loss(torch.ones(2), torch.zeros(2), avg_factor=1.0).item() == 2.0
    assert not global_normalization_enabled()
    assert _reduction._denominator_hook is None


def test_scope_restored_after_exception() -> None:
    with pytest.raises(ZeroDivisionError), global_normalization():
        raise ZeroDivisionError
    assert not global_normalization_enabled()


def test_zero_avg_factor_with_loss_still_raises_in_scope() -> None:
    with global_normalization(), pytest.raises(ValueError, match="avg_factor"):
        LF.l1_loss(torch.ones(2), torch.zeros(2), avg_factor=0)


def test_global_denominator_outside_and_inside() -> None:
    d = torch.tensor(4.0)
    assert _reduction.global_denominator(d) is d
    with global_normalization():
        out = _reduction.global_denominator(3, like=torch.zeros((), dtype=torch.float64))
        assert out.dtype == torch.float64
        assert float(out) == 3.0


@pytest.mark.subprocess  # reads the one DDP spawn (ddp_results)
def test_report_max_delta(ddp_results: dict[str, Any]) -> None:
    """Prints the largest |loss - single| and |grad - single| over the scenarios (run with -s)."""
    if MAX_DELTA:
        dl = max(v[0] for v in MAX_DELTA.values())
        dg = max(v[1] for v in MAX_DELTA.values())
        print(
            f"\nDDP == single process: {len(MAX_DELTA)} scenarios, "
            f"max |dloss| {dl:.2e}, max |dgrad| {dg:.2e}"
        )
        assert dl <= ATOL
        assert dg <= ATOL


def test_lightning_example() -> None:
    """examples/lightning_module.py in a reduced form (a few steps; skipped without lightning)."""
    pytest.importorskip("lightning")
    pytest.importorskip("sklearn")
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "lightning_module.py"
    spec = importlib.util.spec_from_file_location("lossforge_example_lightning", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    metrics = module.main(epochs=1)  # ~7 steps and one validation pass
    assert set(metrics) >= {"train_loss", "val_balanced_acc"}
    assert all(v == v and abs(v) < 1e6 for v in metrics.values())  # finite
    spec = {"type": "cross_entropy", "class_weight": "effective_number"}
    model = module.LongTailClassifier(loss=spec, class_counts=[100.0, 10.0, 1.0] + [5.0] * 7)
    assert isinstance(model.loss_fn.class_weight, torch.Tensor)
    assert "loss_fn.class_weight" in model.state_dict()  # a buffer: follows .to() and checkpoints


def test_batch_region_loss_refuses_avg_factor_in_the_scope() -> None:
    """dice with batch=True sums its statistics over the ranks inside the scope; a per-rank
    avg_factor then has no global meaning (the loss came out K times too large): refused on
    every rank alike (it depends on the arguments only, so no rank is left in a collective)."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 4, 4))
    with global_normalization(), pytest.raises(ValueError, match="`avg_factor` None with batch"):
        LF.dice_loss(x, t, batch=True, avg_factor=2.0)
    with global_normalization():
        LF.dice_loss(x, t, batch=False, avg_factor=2.0)  # per-sample entries: local, allowed
    LF.dice_loss(x, t, batch=True, avg_factor=2.0)  # outside the scope: as before


# From a mutation audit of distributed.py, with a stand-in two-rank reduce (the spawn tests'
# groups of one rank skip every collective).


@pytest.fixture
def two_ranks(monkeypatch: pytest.MonkeyPatch) -> list:
    """A stand-in 2-rank group whose ranks hold equal values: the all-reduce doubles its argument
    in place, as torch.distributed.all_reduce writes into its argument; the groups are recorded."""
    groups: list = []

    def all_reduce(t: torch.Tensor, op=None, group=None) -> None:
        groups.append(group)
        t.mul_(2)

    monkeypatch.setattr(D, "is_distributed", lambda: True)
    monkeypatch.setattr(D, "world_size", lambda group=None: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    return groups


def test_reductions_never_write_into_the_callers_tensor(two_ranks: list) -> None:
    x = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(x).tolist() == [2.0, 4.0]
    assert x.tolist() == [1.0, 2.0]
    c = torch.tensor(3.0)
    assert global_avg_factor(c).item() == 3.0  # (3 + 3) / 2
    assert c.item() == 3.0


@pytest.mark.parametrize(("scale_grad", "grad"), [(True, 2.0), (False, 1.0)])
def test_maybe_global_sum_follows_the_scope(two_ranks: list, scale_grad: bool, grad: float) -> None:
    group = object()
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with global_normalization(scale_grad=scale_grad, group=group):
        total = maybe_global_sum(x)
    assert total.tolist() == [2.0, 4.0]  # the sum over the two ranks
    total.sum().backward()
    assert x.grad.tolist() == [grad, grad]  # scaled by K = 2 only with scale_grad
    assert two_ranks == [group]  # reduced over the scope's group


def test_min_avg_factor_clamps_avg_factor_only() -> None:
    x, y = torch.tensor([1.0, 3.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    with global_normalization(min_avg_factor=5.0):
        plain = LF.l1_loss(x, y)  # the valid count, 2: not an avg_factor, not clamped
        given = LF.l1_loss(x, y, avg_factor=2.0)  # clamped to 5
    assert plain.item() == 2.0  # (1 + 3) / 2
    assert given.item() == 0.8  # (1 + 3) / 5


def test_the_scope_reduces_denominators_over_its_group(two_ranks: list) -> None:
    group = object()
    x, y = torch.tensor([1.0, 3.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    with global_normalization(group=group):
        loss = LF.l1_loss(x, y)
    assert loss.item() == 2.0  # 4 / ((2 + 2) / 2): both ranks hold two elements
    assert two_ranks == [group]  # a group of 2 ranks, not the default group


def test_the_scope_group_is_restored_on_exit() -> None:
    outer, inner = object(), object()
    with global_normalization(group=outer):
        with global_normalization(group=inner):
            assert scope_group() is inner
        assert scope_group() is outer
    assert scope_group() is None
