"""The new region losses under data parallelism (2 gloo ranks on CPU, one spawn): inside
``global_normalization()`` the mean of the rank losses and of the gradients of a shared parameter
equal one process on the concatenated batch, for the batch sums (Tversky, Jaccard, pooled dice,
generalised dice, whose class weights then come from the global volumes) and per-image entries
(Lovasz); Lovasz with ``batch=True`` is per shard, as documented."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import lossforge.functional as F
from lossforge.distributed import global_normalization

WORLD = 2
IGNORE = 255
F64 = torch.float64

CASES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "tversky_batch": lambda x, t: F.tversky_loss(
        x, t, alpha=0.3, beta=0.7, batch=True, ignore_index=IGNORE
    ),
    "focal_tversky_batch": lambda x, t: F.focal_tversky_loss(x, t, batch=True, ignore_index=IGNORE),
    "jaccard_batch_soft": lambda x, t: F.jaccard_loss(
        x, t, batch=True, soft_label=True, ignore_index=IGNORE
    ),
    "dice_batch_pooled": lambda x, t: F.dice_loss(
        x, t, batch=True, pool_classes=True, smooth_nr=0.0, smooth_dr=1e-5, ignore_index=IGNORE
    ),
    "gdl_batch": lambda x, t: F.generalized_dice_loss(x, t, batch=True, ignore_index=IGNORE),
    "gdl_per_sample": lambda x, t: F.generalized_dice_loss(x, t, ignore_index=IGNORE),
    "lovasz_softmax_per_image": lambda x, t: F.lovasz_softmax_loss(x, t, ignore_index=IGNORE),
    "lovasz_hinge_per_image": lambda x, t: F.lovasz_hinge_loss(
        x[:, :1],
        (t == 1).long().masked_fill(t == IGNORE, IGNORE),
        ignore_index=IGNORE,
        index_target=False,  # an integer mask next to one channel
    ),
}
PER_SHARD = {
    "lovasz_softmax_batch": lambda x, t: F.lovasz_softmax_loss(
        x, t, batch=True, ignore_index=IGNORE
    )
}


def _data() -> tuple[Tensor, Tensor, Tensor]:
    """(8, 4, 4, 4) features, (8, 4, 4) targets (class 3 only in the first shard, some pixels
    ignored, one fully ignored image), and the shared (4, 4) parameter."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 4, 4, generator=g, dtype=F64)
    t = torch.randint(0, 3, (8, 4, 4), generator=g)
    t[1, :2] = 3
    t = torch.where(torch.rand(t.shape, generator=g) < 0.2, torch.full_like(t, IGNORE), t)
    t[6] = IGNORE
    w = torch.eye(4, dtype=F64) + 0.1 * torch.randn(4, 4, generator=g, dtype=F64)
    return x, t, w


def _loss_and_grad(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, w: Tensor):
    w = w.clone().requires_grad_(True)
    loss = fn(torch.einsum("dc,nc...->nd...", w, x), t)
    (grad,) = torch.autograd.grad(loss, w)
    return loss.detach(), grad


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
        x, t, w = _data()
        shard = slice(rank * 4, rank * 4 + 4)
        with global_normalization():
            for name, fn in {**CASES, **PER_SHARD}.items():
                results[name] = _loss_and_grad(fn, x[shard], t[shard], w)
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("region_ddp")
    out = tmp / "out"
    out.mkdir()
    ctx = mp.spawn(_worker, args=(WORLD, str(tmp / "pg_init"), str(out)), nprocs=WORLD, join=False)
    deadline = time.perf_counter() + 120
    while not ctx.join(timeout=1.0):
        if time.perf_counter() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail("DDP workers did not finish within 120 s (deadlock?)")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ranks_equal_single_process(name: str, ranks: list[dict[str, Any]]) -> None:
    x, t, w = _data()
    want_loss, want_grad = _loss_and_grad(CASES[name], x, t, w)
    loss = torch.stack([r[name][0] for r in ranks]).mean()
    grad = torch.stack([r[name][1] for r in ranks]).mean(0)  # what DDP's all-reduce averages
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=1e-12)


def test_lovasz_batch_is_per_shard(ranks: list[dict[str, Any]]) -> None:
    """The sort runs over each rank's batch (documented): every shard gives one entry per class,
    and with the global denominator the mean over the ranks is the mean of all shards' entries."""
    x, t, w = _data()
    fn = PER_SHARD["lovasz_softmax_batch"]
    total, count = 0.0, 0
    for i in (0, 1):
        xs, ts = x[i * 4 : i * 4 + 4], t[i * 4 : i * 4 + 4]
        logits = torch.einsum("dc,nc...->nd...", w, xs)
        total += float(
            F.lovasz_softmax_loss(logits, ts, batch=True, ignore_index=IGNORE, reduction="sum")
        )
        count += int(sum(bool((ts == c).any()) for c in range(4)))
    got = torch.stack([r["lovasz_softmax_batch"][0] for r in ranks]).mean()
    torch.testing.assert_close(got, torch.tensor(total / count, dtype=F64), rtol=0, atol=1e-12)
    whole = _loss_and_grad(fn, x, t, w)[0]
    assert abs(float(got) - float(whole)) > 1e-6  # not the loss of the concatenated batch
