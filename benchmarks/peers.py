"""lossforge's torch backend against the peers users trust for the same loss, on the CPU.

    python -m benchmarks.peers                         # every row, 3 repeats
    python -m benchmarks.peers --only dice,tversky     # rows whose id starts with these
    python -m benchmarks.peers --threads 1 --rounds 15 --repeats 3 --out DIR --stem NAME
    python -m benchmarks.peers --smoke                 # tiny shapes, one round: a dry run

The protocol (``benchmarks.run``) times the workloads of the design's section 6 against the eager
references named there (torchvision's focal formula, the ASL repository, smp-style dice,
PyTorch's functions). This one times the losses users bring from MONAI, segmentation_models_pytorch
(SMP) and kornia, and the IoU family against torchvision's formulas (written out below: the
benchmark environment has no torchvision), each configured to compute the same value as lossforge's
call: before timing, every row checks that both give the same loss (float32, relative 1e-4;
a row whose peer normalises differently states the factor). Rows whose peer is not installed are
skipped.

``--heap reuse`` sets glibc's allocator as a long training run leaves it (``lossforge bench``'s
option): freed temporaries are reused instead of fresh pages from the kernel, which otherwise
decide much of the time of these allocation-heavy losses and make it depend on what ran before.

Protocol: one forward + backward per timed call, fresh leaf logits each call, the two providers
of a row alternating in rotated order over ``--rounds`` rounds; the speed-up is the median of the
per-round ratios (peer time / lossforge time). ``--repeats`` runs that whole measurement again
(in the same process), and the table gives the median of the repeats and their range. lossforge
runs with its defaults (value checks on, as on the CPU by default). Results go to
``<out>/<stem>.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor

import lossforge
import lossforge.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
PROG = "python -m benchmarks.peers"

Loss = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Row:
    """One comparison: ``ours(x)`` and ``peer(x)`` compute the same loss of the logits ``x``
    (``peer = scale * ours``)."""

    id: str
    peer_name: str
    shape: str
    ours: Loss
    peer: Loss
    x: Tensor
    scale: float = 1.0


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def smp_losses() -> Any | None:
    """``segmentation_models_pytorch.losses`` without the package's ``__init__`` (which imports
    timm and torchvision for the models; the losses need only torch), or None."""
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "_lossforge_smp_losses_only"
    if name not in sys.modules:
        stub = types.ModuleType(name)
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = stub
    return importlib.import_module(f"{name}.losses")


# torchvision's box-loss formulas (torchvision.ops.giou_loss / diou_loss / ciou_loss, v0.15+),
# written from their documented definitions: eps inside the union and enclosing-box divisions,
# the intersection of overlapping boxes only, CIoU's trade-off weight without gradient.


def _tv_union(b: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    x1, y1, x2, y2 = b.unbind(-1)
    u1, v1, u2, v2 = t.unbind(-1)
    iw = torch.min(x2, u2) - torch.max(x1, u1)
    ih = torch.min(y2, v2) - torch.max(y1, v1)
    inter = torch.zeros_like(x1)
    overlap = (iw > 0) & (ih > 0)
    inter[overlap] = iw[overlap] * ih[overlap]
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    return inter, union


def _tv_enclosing(b: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    x1, y1, x2, y2 = b.unbind(-1)
    u1, v1, u2, v2 = t.unbind(-1)
    return torch.max(x2, u2) - torch.min(x1, u1), torch.max(y2, v2) - torch.min(y1, v1)


def tv_giou(b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    inter, union = _tv_union(b, t)
    iou = inter / (union + eps)
    cw, ch = _tv_enclosing(b, t)
    area = cw * ch
    return (1 - (iou - (area - union) / (area + eps))).mean()


def _tv_diou(b: Tensor, t: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    inter, union = _tv_union(b, t)
    iou = inter / (union + eps)
    cw, ch = _tv_enclosing(b, t)
    x1, y1, x2, y2 = b.unbind(-1)
    u1, v1, u2, v2 = t.unbind(-1)
    dist = ((x1 + x2) / 2 - (u1 + u2) / 2) ** 2 + ((y1 + y2) / 2 - (v1 + v2) / 2) ** 2
    return 1 - iou + dist / (cw**2 + ch**2 + eps), iou


def tv_diou(b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    return _tv_diou(b, t, eps)[0].mean()


def tv_ciou(b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    diou, iou = _tv_diou(b, t, eps)
    x1, y1, x2, y2 = b.unbind(-1)
    u1, v1, u2, v2 = t.unbind(-1)
    v = (4 / math.pi**2) * (
        torch.atan((u2 - u1) / (v2 - v1)) - torch.atan((x2 - x1) / (y2 - y1))
    ) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return (diou + alpha * v).mean()


# mmdetection's dense-detection formulas (mmdet/models/losses: gfocal_loss.py, varifocal_loss.py,
# ghm_loss.py), written from their definitions: QFL on (labels, scores) targets, summed over the
# classes and divided by the number of positives (GFL's avg_factor); VFL on dense IoU-aware
# targets; GHM-C with its loop over the bins; DFL as two weighted cross-entropies.


def mm_quality_focal(
    pred: Tensor, labels: Tensor, scores: Tensor, avg: float, beta: float = 2.0
) -> Tensor:
    sig = pred.sigmoid()
    loss = TF.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    loss = loss * sig.pow(beta)
    pos = ((labels >= 0) & (labels < pred.size(1))).nonzero().squeeze(1)
    cls = labels[pos]
    scale = scores[pos] - sig[pos, cls]
    loss[pos, cls] = TF.binary_cross_entropy_with_logits(
        pred[pos, cls], scores[pos], reduction="none"
    ) * scale.abs().pow(beta)
    return loss.sum() / avg


def mm_varifocal(
    pred: Tensor, target: Tensor, avg: float, alpha: float = 0.75, gamma: float = 2.0
) -> Tensor:
    sig = pred.sigmoid()
    positive = (target > 0.0).float()
    weight = target * positive + alpha * (sig - target).abs().pow(gamma) * (1.0 - positive)
    return (
        TF.binary_cross_entropy_with_logits(pred, target, reduction="none") * weight
    ).sum() / avg


def mm_ghmc(pred: Tensor, target: Tensor, bins: int = 10) -> Tensor:
    """mmdetection's ``GHMC`` without momentum, every element valid: each element weighted by
    the number of elements over the count of its gradient-norm bin, over the non-empty bins."""
    edges = torch.arange(bins + 1, dtype=pred.dtype) / bins
    edges[-1] += 1e-6
    weights = torch.zeros_like(pred)
    norm = (pred.sigmoid().detach() - target).abs()
    total = float(pred.numel())
    filled = 0
    for i in range(bins):
        inside = (norm >= edges[i]) & (norm < edges[i + 1])
        count = int(inside.sum())
        if count > 0:
            weights[inside] = total / count
            filled += 1
    if filled:
        weights = weights / filled
    bce = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
    return (bce * weights).sum() / total


def mm_distribution_focal(pred: Tensor, label: Tensor) -> Tensor:
    left = label.long()
    right = left + 1
    w_left = right.float() - label
    w_right = label - left.float()
    ce_left = TF.cross_entropy(pred, left, reduction="none")
    return (ce_left * w_left + TF.cross_entropy(pred, right, reduction="none") * w_right).mean()


# Long-tail losses from their papers' formulas (seesaw: mmdetection's, above): poly-1 (Leng et
# al. 2022: CE + eps (1 - p_t)), LDAM (Cao et al. 2019: margins C / n_j^(1/4) scaled to
# max_margin, subtracted from the target logit, times s), balanced softmax (Ren et al. 2020: CE
# of the logits plus log prior).


def poly1_formula(z: Tensor, t: Tensor, eps: float = 1.0) -> Tensor:
    ce = TF.cross_entropy(z, t, reduction="none")
    p_t = torch.softmax(z, dim=1).gather(1, t[:, None]).squeeze(1)
    return (ce + eps * (1.0 - p_t)).mean()


def ldam_formula(
    z: Tensor, t: Tensor, counts: Tensor, max_margin: float = 0.5, s: float = 30.0
) -> Tensor:
    margins = counts.pow(-0.25)
    margins = margins * (max_margin / margins.max())
    at_target = torch.zeros_like(z, dtype=torch.bool).scatter_(1, t[:, None], True)
    return TF.cross_entropy(s * torch.where(at_target, z - margins[t][:, None], z), t)


def mm_seesaw(z: Tensor, t: Tensor, counts: Tensor, p: float = 0.8, q: float = 2.0) -> Tensor:
    """mmdetection's ``seesaw_ce_loss`` (seesaw_loss.py), mean over the samples: the non-target
    logits shifted by log of the mitigation factor (count ratios below 1, to the power p) times
    the compensation factor (score ratios above 1, to the power q, from detached scores)."""
    c = z.size(1)
    one_hot = TF.one_hot(t, c)
    ratio = counts[None, :].clamp(min=1) / counts[:, None].clamp(min=1)
    below = (ratio < 1.0).float()
    weights = (ratio.pow(p) * below + (1 - below))[t, :]
    scores = TF.softmax(z.detach(), dim=1)
    own = scores[torch.arange(len(scores)), t]
    relative = scores / own[:, None].clamp(min=1e-2)
    above = (relative > 1.0).float()
    weights = weights * (relative.pow(q) * above + (1 - above))
    return TF.cross_entropy(z + weights.log() * (1 - one_hot), t)


def _detection(n: int, c: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """RetinaNet-like logits, 5 % positive rows with a quality score (labels: C = background),
    the dense quality target and the number of positives."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) - 4.0
    positive = torch.rand(n, generator=g) < 0.05
    positive[0] = True
    labels = torch.full((n,), c)
    labels[positive] = torch.randint(0, c, (int(positive.sum()),), generator=g)
    scores = torch.rand(n, generator=g) * positive
    dense = torch.zeros(n, c)
    dense[positive, labels[positive]] = scores[positive]
    return x, labels, scores, dense, float(positive.sum())


def _segmentation(n: int, c: int, h: int, w: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g), torch.randint(0, c, (n, h, w), generator=g)


def _boxes(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Valid target boxes and predictions near them (every predicted side positive)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    target = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 1], dim=-1)
    pred = target + torch.randn(n, 4, generator=g) * 5
    pred = torch.cat([torch.minimum(pred[:, :2], pred[:, 2:] - 0.5), pred[:, 2:]], dim=-1)
    return pred, target


def rows(smoke: bool = False) -> list[Row]:
    """Every row whose peer is installed."""
    n, c, h, w = (2, 5, 8, 8) if smoke else (8, 19, 128, 128)
    x, t = _segmentation(n, c, h, w, seed=0)
    t1 = t.unsqueeze(1)
    seg = f"{n} x {c} x {h} x {w}"
    boxes = 64 if smoke else 200_000
    bp, bt = _boxes(boxes, seed=1)
    mn, mc = (16, 8) if smoke else (4096, 80)
    gm = torch.Generator().manual_seed(5)
    ml_x = torch.randn(mn, mc, generator=gm) - 2.0
    ml_y = (torch.rand(mn, mc, generator=gm) < 0.05).float()
    ml_shape = f"{mn} x {mc}"
    out: list[Row] = []
    monai = _module("monai.losses")
    if monai is not None:
        dice = monai.DiceLoss(to_onehot_y=True, softmax=True)
        gdl = monai.GeneralizedDiceLoss(to_onehot_y=True, softmax=True)
        tversky = monai.TverskyLoss(to_onehot_y=True, softmax=True, alpha=0.3, beta=0.7)
        focal = monai.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)
        dice_ce = monai.DiceCELoss(to_onehot_y=True, softmax=True)
        ours_dice_ce = lossforge.LossSum(
            {
                "dice": {"type": "dice", "smooth_nr": 1e-5, "smooth_dr": 1e-5},
                "ce": {"type": "cross_entropy"},
            }
        )
        out += [
            Row(
                "dice",
                "MONAI DiceLoss",
                seg,
                lambda z: F.dice_loss(z, t, smooth_nr=1e-5, smooth_dr=1e-5),
                lambda z: dice(z, t1),
                x,
            ),
            Row(
                "dice + cross_entropy",
                "MONAI DiceCELoss",
                seg,
                lambda z: ours_dice_ce(z, t),
                lambda z: dice_ce(z, t1),
                x,
            ),
            Row(
                "generalized_dice",
                "MONAI GeneralizedDiceLoss",
                seg,
                lambda z: F.generalized_dice_loss(z, t, smooth_nr=1e-5, smooth_dr=1e-5),
                lambda z: gdl(z, t1),
                x,
            ),
            Row(
                "tversky",
                "MONAI TverskyLoss",
                seg,
                lambda z: F.tversky_loss(z, t, alpha=0.3, beta=0.7, smooth_nr=1e-5, smooth_dr=1e-5),
                lambda z: tversky(z, t1),
                x,
            ),
            # MONAI's mean runs over the classes too: C times smaller than the per-pixel mean
            Row(
                "softmax_focal",
                "MONAI FocalLoss",
                seg,
                lambda z: F.softmax_focal_loss(z, t, gamma=2.0),
                lambda z: focal(z, t1),
                x,
                scale=1.0 / c,
            ),
        ]
    smp = smp_losses()
    if smp is not None:
        sdice = smp.DiceLoss("multiclass")
        sjac = smp.JaccardLoss("multiclass")
        slov = smp.LovaszLoss("multiclass")
        sfocal = smp.FocalLoss("multilabel", alpha=0.25, gamma=2.0)
        ssoft = smp.SoftCrossEntropyLoss(smooth_factor=0.1)
        # (every class occurs in the batch: SMP's zeroing of absent classes changes nothing)
        out += [
            Row(
                "dice",
                "SMP DiceLoss",
                seg,
                lambda z: F.dice_loss(z, t, smooth=0.0, batch=True),
                lambda z: sdice(z, t),
                x,
            ),
            Row(
                "jaccard",
                "SMP JaccardLoss",
                seg,
                lambda z: F.jaccard_loss(z, t, smooth=0.0, batch=True),
                lambda z: sjac(z, t),
                x,
            ),
            Row(
                "lovasz_softmax",
                "SMP LovaszLoss",
                seg,
                lambda z: F.lovasz_softmax_loss(z, t, batch=True),
                lambda z: slov(z, t),
                x,
            ),
            Row(
                "cross_entropy, smoothing 0.1",
                "SMP SoftCrossEntropyLoss",
                seg,
                lambda z: F.cross_entropy(z, t, label_smoothing=0.1),
                lambda z: ssoft(z, t),
                x,
            ),
            Row(
                "sigmoid_focal",
                "SMP FocalLoss (multilabel)",
                ml_shape,
                lambda z: F.sigmoid_focal_loss(z, ml_y, alpha=0.25, gamma=2.0),
                lambda z: sfocal(z, ml_y),
                ml_x,
            ),
        ]
    kornia = _module("kornia.losses")
    if kornia is not None:
        out += [
            # (every class occurs in every sample: kornia's mean over the present classes is
            # the mean over all entries)
            Row(
                "tversky",
                "kornia tversky_loss",
                seg,
                lambda z: F.tversky_loss(z, t, alpha=0.3, beta=0.7, smooth_nr=0.0, smooth_dr=1e-8),
                lambda z: kornia.tversky_loss(z, t, 0.3, 0.7, eps=1e-8),
                x,
            ),
            Row(
                "softmax_focal",
                "kornia focal_loss",
                seg,
                lambda z: F.softmax_focal_loss(z, t, gamma=2.0),
                lambda z: kornia.focal_loss(z, t, alpha=None, gamma=2.0, reduction="mean"),
                x,
                scale=1.0 / c,  # kornia's mean runs over the classes too, as MONAI's
            ),
            Row(
                "sigmoid_focal",
                "kornia binary_focal_loss_with_logits",
                ml_shape,
                lambda z: F.sigmoid_focal_loss(z, ml_y, alpha=0.25, gamma=2.0),
                lambda z: kornia.binary_focal_loss_with_logits(
                    z, ml_y, alpha=0.25, gamma=2.0, reduction="mean"
                ),
                ml_x,
            ),
        ]
    dn, dc = (64, 8) if smoke else (20_000, 80)
    dx, labels, scores, dense, npos = _detection(dn, dc, seed=2)
    det = f"{dn} x {dc}"
    ghm_y = (dense > 0).float()  # GHM-C's binary targets: the positives' classes
    bins, sides = 17, (64 if smoke else 20_000)
    gd = torch.Generator().manual_seed(3)
    dfl_x = torch.randn(sides, bins, generator=gd)
    dfl_y = torch.rand(sides, generator=gd) * (bins - 1.01)
    ln, lc = (64, 10) if smoke else (4096, 1000)
    gl = torch.Generator().manual_seed(4)
    lx = torch.randn(ln, lc, generator=gl)
    lt = torch.randint(0, lc, (ln,), generator=gl)
    counts = torch.randint(1, 1000, (lc,), generator=gl).float()
    log_prior = (counts / counts.sum()).log()
    tail = f"{ln} x {lc}"
    sc = 12 if smoke else 1203  # LVIS
    sx = torch.randn(ln, sc, generator=gl)
    st_ = torch.randint(0, sc, (ln,), generator=gl)
    s_counts = torch.randint(1, 5000, (sc,), generator=gl).float()
    mm = "mmdetection's formula"
    out += [
        Row(
            "quality_focal",
            mm,
            det,
            lambda z: F.quality_focal_loss(z, (labels, scores), avg_factor=npos),
            lambda z: mm_quality_focal(z, labels, scores, npos),
            dx,
        ),
        Row(
            "varifocal",
            mm,
            det,
            lambda z: F.varifocal_loss(z, dense, avg_factor=npos),
            lambda z: mm_varifocal(z, dense, npos),
            dx,
        ),
        Row(
            "ghmc",
            mm,
            det,
            lambda z: F.ghmc_loss(z, ghm_y),
            lambda z: mm_ghmc(z, ghm_y),
            dx,
        ),
        Row(
            "distribution_focal",
            mm,
            f"{sides} x {bins}",
            lambda z: F.distribution_focal_loss(z, dfl_y),
            lambda z: mm_distribution_focal(z, dfl_y),
            dfl_x,
        ),
        Row(
            "poly1_cross_entropy",
            "the paper's formula",
            tail,
            lambda z: F.poly1_cross_entropy(z, lt, epsilon=1.0),
            lambda z: poly1_formula(z, lt),
            lx,
        ),
        Row(
            "ldam",
            "the paper's formula",
            tail,
            lambda z: F.ldam_loss(z, lt, class_counts=counts),
            lambda z: ldam_formula(z, lt, counts),
            lx,
        ),
        Row(
            "seesaw",
            mm,
            f"{ln} x {sc}",
            lambda z: F.seesaw_loss(z, st_, class_counts=s_counts),
            lambda z: mm_seesaw(z, st_, s_counts),
            sx,
        ),
        Row(
            "balanced_softmax",
            "F.cross_entropy(x + log prior)",
            tail,
            lambda z: F.balanced_softmax_loss(z, lt, class_counts=counts),
            lambda z: TF.cross_entropy(z + log_prior, lt),
            lx,
        ),
    ]
    box = f"{boxes} x 4"
    out += [
        Row(
            "giou",
            "torchvision's formula",
            box,
            lambda b: F.giou_loss(b, bt),
            lambda b: tv_giou(b, bt),
            bp,
        ),
        Row(
            "diou",
            "torchvision's formula",
            box,
            lambda b: F.diou_loss(b, bt),
            lambda b: tv_diou(b, bt),
            bp,
        ),
        Row(
            "ciou",
            "torchvision's formula",
            box,
            lambda b: F.ciou_loss(b, bt),
            lambda b: tv_ciou(b, bt),
            bp,
        ),
    ]
    return out


def _step(fn: Loss, x: Tensor) -> float:
    leaf = x.detach().requires_grad_(True)
    start = time.perf_counter()
    fn(leaf).backward()
    return time.perf_counter() - start


def check_values(row: Row) -> tuple[float, float]:
    """Both losses of the row (the peer's divided by the row's scale); raises if they differ."""
    ours = float(row.ours(row.x))
    peer = float(row.peer(row.x)) / row.scale
    if not math.isclose(ours, peer, rel_tol=1e-4, abs_tol=1e-6):
        raise AssertionError(f"{row.id} vs {row.peer_name}: lossforge {ours!r}, peer {peer!r}")
    return ours, peer


def measure(row: Row, rounds: int) -> tuple[float, float, float]:
    """(median peer seconds, median lossforge seconds, median per-round ratio peer / ours)."""
    for _ in range(2):  # warm-up
        _step(row.peer, row.x)
        _step(row.ours, row.x)
    peer: list[float] = []
    ours: list[float] = []
    for r in range(rounds):
        if r % 2:
            ours.append(_step(row.ours, row.x))
            peer.append(_step(row.peer, row.x))
        else:
            peer.append(_step(row.peer, row.x))
            ours.append(_step(row.ours, row.x))
    ratios = [p / q for p, q in zip(peer, ours, strict=True)]
    return statistics.median(peer), statistics.median(ours), statistics.median(ratios)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated row-id prefixes (e.g. dice,tversky,ciou)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (torch's default)")
    p.add_argument("--rounds", type=int, default=15, help="paired rounds per repeat (15)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the measurement (3)")
    p.add_argument(
        "--heap",
        choices=("as-is", "reuse"),
        default="as-is",
        help="the CPU heap: as-is, or reuse (glibc thresholds of a training run; lossforge bench)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one round, one repeat")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument("--stem", default=None, help="file name stem (cpu-peers, or peers-smoke)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lossforge.cli.bench import set_heap

    heap = set_heap(args.heap)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rounds, repeats = (1, 1) if args.smoke else (args.rounds, args.repeats)
    prefixes = None if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    selected = [
        r for r in rows(args.smoke) if prefixes is None or any(r.id.startswith(s) for s in prefixes)
    ]
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lossforge": lossforge.__version__,
        "threads": torch.get_num_threads(),
        "heap": heap,
        "rounds": rounds,
        "repeats": repeats,
        "command": " ".join([PROG, *(argv if argv is not None else sys.argv[1:])]),
    }
    results = []
    for row in selected:
        ours_value, peer_value = check_values(row)
        runs = [measure(row, rounds) for _ in range(repeats)]
        speedups = sorted(r[2] for r in runs)
        results.append(
            {
                "loss": row.id,
                "peer": row.peer_name,
                "shape": row.shape,
                "loss_value": ours_value,
                "peer_value": peer_value * row.scale,
                "peer_ms": statistics.median(r[0] for r in runs) * 1e3,
                "lossforge_ms": statistics.median(r[1] for r in runs) * 1e3,
                "speedup": statistics.median(speedups),
                "speedup_range": [speedups[0], speedups[-1]],
            }
        )
        res = results[-1]
        print(
            f"{row.id:28s} vs {row.peer_name:38s} {row.shape:18s} "
            f"peer {res['peer_ms']:8.2f} ms  lossforge {res['lossforge_ms']:8.2f} ms  "
            f"{res['speedup']:.2f}x ({speedups[0]:.2f}-{speedups[-1]:.2f})",
            flush=True,
        )
    stem = args.stem or ("peers-smoke" if args.smoke else "cpu-peers")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(
        json.dumps({"header": header, "rows": results}, indent=2)
    )
    lines = [
        f"# lossforge vs peers on the CPU ({header['date']})",
        "",
        f"`{header['command']}`: torch {header['torch']}, {header['threads']} threads, "
        f"heap {heap}, {rounds} paired rounds x {repeats} repeats, forward + backward, value "
        "checks on.",
        "",
        "| loss | peer | shape | peer ms | lossforge ms | speed-up (range) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        lo, hi = r["speedup_range"]
        lines.append(
            f"| {r['loss']} | {r['peer']} | {r['shape']} | {r['peer_ms']:.2f} | "
            f"{r['lossforge_ms']:.2f} | {r['speedup']:.2f}x ({lo:.2f}-{hi:.2f}) |"
        )
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
