"""A RetinaNet-style dense head trained under DDP with the global positive-count normaliser.

A tiny convolutional head predicts, at every location of a feature map, C class logits (sigmoid
focal loss, mmdetection's index targets with ``C`` = background) and 4 box offsets (smooth L1 on
the positive locations). Both losses are normalised by the number of positives in the **whole**
batch, obtained with ``lossforge.distributed.global_avg_factor``: the per-rank count is all-reduced,
clamped on the global sum, and divided by the world size, because DDP averages gradients.

The batch is split unevenly on purpose: rank 1 gets images with very few objects (one image has
none), the case where per-rank normalisation (or the ``max(reduce_mean(num_pos), 1)`` idiom) goes
wrong. With ``--check``, rank 0 also trains a replica on the whole batch in one process and reports
the largest difference in loss and parameters after every step (0 up to rounding).

Run (CPU, gloo, 2 processes)::

    python examples/ddp_dense_head.py --steps 20 --check
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from lossforge.distributed import global_avg_factor
from lossforge.functional import sigmoid_focal_loss, smooth_l1_loss

NUM_CLASSES = 3
CHANNELS = 8
SIZE = 6


class DenseHead(nn.Module):
    """Shared 3x3 conv tower, then a classification and a box branch (one anchor per location)."""

    def __init__(self, channels: int = CHANNELS, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.tower = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.cls = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box = nn.Conv2d(channels, 4, 3, padding=1)
        nn.init.constant_(self.cls.bias, -2.0)  # prior probability ~0.12, as RetinaNet's init

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.tower(x)
        return self.cls(h), self.box(h)


def make_batch(step: int, batch: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Features (B, CH, S, S), labels (B, S, S) in [0, C] (C = background), boxes (B, S, S, 4).

    The second half of the batch is nearly empty (and its last image has no object at all).
    """
    g = torch.Generator().manual_seed(1000 + step)
    feats = torch.randn(batch, CHANNELS, SIZE, SIZE, generator=g, dtype=dtype)
    density = torch.full((batch, 1, 1), 0.15, dtype=dtype)
    density[batch // 2 :] = 0.01
    density[-1] = 0.0
    pos = torch.rand(batch, SIZE, SIZE, generator=g, dtype=dtype) < density
    labels = torch.randint(0, NUM_CLASSES, (batch, SIZE, SIZE), generator=g)
    labels = torch.where(pos, labels, torch.full_like(labels, NUM_CLASSES))
    # Object features carry the class and box signal so that the head can learn something.
    boxes = torch.randn(batch, SIZE, SIZE, 4, generator=g, dtype=dtype)
    feats[:, :4] += boxes.permute(0, 3, 1, 2) * pos[:, None]
    onehot = nn.functional.one_hot(labels.clamp(max=NUM_CLASSES - 1), NUM_CLASSES).permute(
        0, 3, 1, 2
    )
    feats[:, 4 : 4 + NUM_CLASSES] += 2.0 * onehot.to(dtype) * pos[:, None]
    return feats, labels, boxes


def head_loss(
    model: nn.Module, feats: Tensor, labels: Tensor, boxes: Tensor, avg: Tensor | float
) -> Tensor:
    """Focal classification + smooth L1 box regression, both divided by ``avg``."""
    cls, box = model(feats)
    logits = cls.permute(0, 2, 3, 1).reshape(-1, NUM_CLASSES)
    target = labels.reshape(-1)
    pos = (target < NUM_CLASSES).to(logits.dtype)
    loss_cls = sigmoid_focal_loss(logits, target, gamma=2.0, alpha=0.25, avg_factor=avg)
    box_pred = box.permute(0, 2, 3, 1).reshape(-1, 4)
    loss_box = smooth_l1_loss(
        box_pred, boxes.reshape(-1, 4), beta=1.0 / 9.0, weight=pos, avg_factor=avg
    )
    return loss_cls + loss_box


def train(rank: int, world: int, args: dict[str, Any]) -> list[dict[str, float]]:
    """Train on this rank's shard (the process group must be initialised); per-step history."""
    dtype = torch.float64 if args["dtype"] == "float64" else torch.float32
    torch.manual_seed(0)
    model = DenseHead().to(dtype)
    reference = copy.deepcopy(model) if (args["check"] and rank == 0) else None
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=args["lr"])
    ref_opt = (
        torch.optim.SGD(reference.parameters(), lr=args["lr"]) if reference is not None else None
    )
    per = args["batch"] // world
    history: list[dict[str, float]] = []
    for step in range(args["steps"]):
        feats, labels, boxes = make_batch(step, args["batch"], dtype)
        lo, hi = rank * per, (rank + 1) * per
        num_pos = (labels[lo:hi] < NUM_CLASSES).sum()  # int64 count of this rank
        avg = global_avg_factor(num_pos)  # max(sum over ranks, 1) / world size
        loss = head_loss(ddp, feats[lo:hi], labels[lo:hi], boxes[lo:hi], avg)
        opt.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks
        opt.step()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        row = {"step": step, "loss": float(mean_loss), "rank_pos": int(num_pos)}
        if reference is not None and ref_opt is not None:
            # One process on the whole batch: the plain clamped count, no communication.
            total_pos = float((labels < NUM_CLASSES).sum())
            ref_loss = head_loss(reference, feats, labels, boxes, max(total_pos, 1.0))
            ref_opt.zero_grad()
            ref_loss.backward()
            ref_opt.step()
            row["single_loss"] = float(ref_loss.detach())
            row["max_dloss"] = abs(row["loss"] - row["single_loss"])
            row["max_dparam"] = max(
                float((p - q).detach().abs().max())
                for p, q in zip(model.parameters(), reference.parameters(), strict=False)
            )
        history.append(row)
        if rank == 0 and args["verbose"]:
            extra = (
                f"  |dloss| {row['max_dloss']:.1e}  |dparam| {row['max_dparam']:.1e}"
                if reference
                else ""
            )
            print(
                f"step {step:3d}  loss {row['loss']:.5f}  "
                f"positives on rank 0: {row['rank_pos']}{extra}"
            )
    return history


def _worker(rank: int, world: int, init_file: str, args: dict[str, Any], out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        history = train(rank, world, args)
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump(history, f)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def run(
    steps: int = 10,
    world: int = 2,
    batch: int = 8,
    lr: float = 0.05,
    dtype: str = "float32",
    check: bool = False,
    verbose: bool = True,
    timeout: float = 300.0,
) -> list[dict[str, float]]:
    """Spawn ``world`` gloo processes, train, and return rank 0's per-step history."""
    if batch % world:
        raise ValueError(f"run: expected `batch` divisible by world={world}, got {batch}")
    args = {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "dtype": dtype,
        "check": check,
        "verbose": verbose,
    }
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "pg"), os.path.join(tmp, "history.json")
        ctx = mp.spawn(_worker, args=(world, init_file, args, out_file), nprocs=world, join=False)
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.terminate()
                raise TimeoutError(f"run: DDP workers did not finish within {timeout:.0f} s")
        with open(out_file) as f:
            return json.load(f)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument(
        "--check", action="store_true", help="compare with one process on the whole batch"
    )
    parser.add_argument("--json", help="write the per-step history here")
    a = parser.parse_args(argv)
    history = run(a.steps, a.world_size, a.batch, a.lr, a.dtype, a.check)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(history, f)


if __name__ == "__main__":
    main()
