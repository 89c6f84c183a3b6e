"""``lossforge bench``: forward+backward time of lossforge losses against eager references.

Each ``Workload`` names a registered loss with its parameters, an input generator and the eager
formulas users run today (written below as the projects write them). Every provider runs
forward+backward under ``torch.utils.benchmark.Timer(...).blocked_autorange``; the report gives the
median time per call and the speed-up of each provider relative to the workload's first reference
($t_{ref} / t$, above 1 = faster than the reference). On CUDA the peak extra memory of one
forward+backward is measured with ``torch.cuda.max_memory_allocated``; on the CPU only time is
reported (tensor allocations are invisible to ``tracemalloc``).

The lossforge providers are ``backend="torch"`` everywhere and, on CUDA with triton installed,
``backend="triton"`` for the losses that have a fused kernel: adding a device or a backend is a
change to ``_providers`` only, and adding a workload is one more ``Workload`` in ``WORKLOADS``.
"""

from __future__ import annotations

import csv
import json
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["WORKLOADS", "Workload", "run_bench", "run_workloads"]

Inputs = tuple[Tensor, Tensor]


# ----------------------------------------------------------------------------------------------
# Eager references
# ----------------------------------------------------------------------------------------------


def torchvision_sigmoid_focal(
    x: Tensor, t: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """``torchvision.ops.sigmoid_focal_loss`` (dense targets), mean reduction."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def asl_repo_loss(
    x: Tensor,
    y: Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> Tensor:
    """``AsymmetricLoss`` of the ASL repository (Alibaba-MIIL/ASL ``losses.py``); it sums."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    pt0 = xs_pos * y
    pt1 = xs_neg * (1 - y)
    pt = pt0 + pt1
    one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
    loss = loss * torch.pow(1 - pt, one_sided_gamma)
    return -loss.sum()


def eager_softmax_focal(x: Tensor, t: Tensor, gamma: float = 2.0) -> Tensor:
    """The usual eager softmax focal loss: ``-(1 - p_t)^gamma log p_t``, mean over samples."""
    logp = F.log_softmax(x, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    return (-((1 - logp.exp()) ** gamma) * logp).mean()


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One benchmark row group.

    Attributes:
        name: Identifier (``--workloads``).
        description: Shapes and data, for the report.
        loss: Registry name of the lossforge loss.
        params: Its constructor parameters.
        make: ``(scale, device, generator) -> (input, target)``; the input is a leaf.
        references: Eager formulas ``(input, target) -> scalar``, the first is the baseline.
    """

    name: str
    description: str
    loss: str
    params: Mapping[str, Any]
    make: Callable[[float, torch.device, torch.Generator], Inputs]
    references: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = field(default_factory=dict)


def _rows(base: int, scale: float) -> int:
    return max(8, int(base * scale))


def _dense_multilabel(
    n: int, c: int, rate: float, mean: float, std: float
) -> Callable[..., Inputs]:
    def make(scale: float, device: torch.device, gen: torch.Generator) -> Inputs:
        rows = _rows(n, scale)
        x = torch.randn(rows, c, generator=gen) * std + mean
        t = (torch.rand(rows, c, generator=gen) < rate).float()
        return x.to(device), t.to(device)

    return make


def _segmentation(scale: float, device: torch.device, gen: torch.Generator) -> Inputs:
    n = max(1, int(4 * scale))
    x = torch.randn(n, 19, 64, 64, generator=gen)
    t = torch.randint(0, 19, (n, 64, 64), generator=gen)
    t[torch.rand(n, 64, 64, generator=gen) < 0.05] = 255
    return x.to(device), t.to(device)


def _classification(scale: float, device: torch.device, gen: torch.Generator) -> Inputs:
    rows = _rows(4096, scale)
    x = torch.randn(rows, 100, generator=gen)
    t = torch.randint(0, 100, (rows,), generator=gen)
    return x.to(device), t.to(device)


def _regression(scale: float, device: torch.device, gen: torch.Generator) -> Inputs:
    rows = _rows(65536, scale)
    return torch.randn(rows, 4, generator=gen).to(device), torch.randn(rows, 4, generator=gen).to(
        device
    )


#: The default workloads (small, CPU-friendly shapes; ``--scale`` multiplies the batch).
WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "focal-dense",
        "(4096, 80) logits ~ N(-4, 3^2), dense targets, 2% positive (RetinaNet-like head)",
        "sigmoid_focal",
        {"gamma": 2.0, "alpha": 0.25},
        _dense_multilabel(4096, 80, 0.02, -4.0, 3.0),
        {"torchvision focal": torchvision_sigmoid_focal},
    ),
    Workload(
        "bce-multilabel",
        "(4096, 80) logits ~ N(-4, 3^2), dense targets, 2% positive",
        "binary_cross_entropy_with_logits",
        {},
        _dense_multilabel(4096, 80, 0.02, -4.0, 3.0),
        {"F.binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits},
    ),
    Workload(
        "asl-multilabel",
        "(256, 80) logits ~ N(-3, 2^2), 3% positive (COCO-like); the repo's loss sums",
        "asymmetric",
        {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05},
        _dense_multilabel(256, 80, 0.03, -3.0, 2.0),
        {"ASL repo": asl_repo_loss},
    ),
    Workload(
        "softmax-focal",
        "(4096, 100) logits, index targets",
        "softmax_focal",
        {"gamma": 2.0},
        _classification,
        {"eager softmax focal": eager_softmax_focal},
    ),
    Workload(
        "ce-segmentation",
        "(4, 19, 64, 64) logits, index targets, 5% ignore_index 255",
        "cross_entropy",
        {"ignore_index": 255},
        _segmentation,
        {"F.cross_entropy": lambda x, t: F.cross_entropy(x, t, ignore_index=255)},
    ),
    Workload(
        "smooth-l1",
        "(65536, 4) box deltas, beta 1/9",
        "smooth_l1",
        {"beta": 1.0 / 9.0},
        _regression,
        {"F.smooth_l1_loss": lambda x, t: F.smooth_l1_loss(x, t, beta=1.0 / 9.0)},
    ),
)


def _providers(
    work: Workload, device: torch.device
) -> list[tuple[str, Callable[[Tensor, Tensor], Tensor]]]:
    from lossforge.registry import build_loss, list_losses

    info = {i.name: i for i in list_losses()}
    providers: list[tuple[str, Callable[[Tensor, Tensor], Tensor]]] = list(work.references.items())
    has_backend = work.loss in info and "backend" in info[work.loss].params
    backends = ["torch"]
    if device.type == "cuda" and has_backend:
        from lossforge._dispatch import triton_importable

        if triton_importable():
            backends.append("auto")
    for backend in backends:
        params = {**work.params, **({"backend": backend} if has_backend else {})}
        module = build_loss({"type": work.loss, **params}).to(device)
        providers.append(
            (
                f"lossforge {work.loss} ({backend})" if has_backend else f"lossforge {work.loss}",
                module,
            )
        )
    if device.type == "cpu":
        # On the CPU value checks (class indices in range, ...) run by default and read the tensors;
        # show the cost apart (on CUDA they are off by default).
        module = build_loss({"type": work.loss, **work.params})
        providers.append((f"lossforge {work.loss} (value checks off)", _unchecked(module)))
    return providers


def _unchecked(module: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    from lossforge import value_checks

    def call(x: Tensor, t: Tensor) -> Tensor:
        with value_checks(False):
            return module(x, t)

    return call


def _measure(
    fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, min_run_time: float
) -> dict[str, Any]:
    from torch.utils.benchmark import Timer

    leaf = x.detach().clone().requires_grad_(True)

    def step() -> None:
        fn(leaf, t).backward()
        leaf.grad = None

    step()  # warm-up (and compile caches)
    peak_mb = None
    if leaf.is_cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    m = Timer(stmt="step()", globals={"step": step}).blocked_autorange(min_run_time=min_run_time)
    return {
        "median_ms": m.median * 1e3,
        "iqr_ms": m.iqr * 1e3,
        "runs": len(m.times),
        "peak_extra_mb": peak_mb,
    }


def run_workloads(
    workloads: tuple[Workload, ...],
    device: torch.device,
    *,
    scale: float = 1.0,
    min_run_time: float = 0.3,
) -> list[dict[str, Any]]:
    """Time every provider of every workload; returns one row per (workload, provider)."""
    rows: list[dict[str, Any]] = []
    for work in workloads:
        gen = torch.Generator().manual_seed(0)
        x, t = work.make(scale, device, gen)
        group = []
        for provider, fn in _providers(work, device):
            result = _measure(fn, x, t, min_run_time)
            group.append(
                {"workload": work.name, "provider": provider, "shape": list(x.shape), **result}
            )
        ref = group[0]["median_ms"]
        for row in group:
            row["speedup_vs_ref"] = ref / row["median_ms"] if row["median_ms"] > 0 else None
            row["reference"] = group[0]["provider"]
        rows.extend(group)
    return rows


def _select(names: str | None) -> tuple[Workload, ...]:
    if not names:
        return WORKLOADS
    known = {w.name: w for w in WORKLOADS}
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(
            f"unknown workload {', '.join(map(repr, unknown))}; valid: {', '.join(known)}"
        )
    return tuple(known[n] for n in chosen)


def _markdown(rows: list[dict[str, Any]], header: Mapping[str, Any]) -> list[str]:
    lines = [
        f"device: {header['device']}, torch {header['torch']}, threads {header['threads']}",
        "",
        "| workload | provider | median ms | speed-up vs reference | peak extra MB |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        peak = "n/a" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.1f}"
        lines.append(
            f"| {r['workload']} | {r['provider']} | {r['median_ms']:.3f} | "
            f"{r['speedup_vs_ref']:.2f}x | {peak} |"
        )
    return lines


def run_bench(args: Any) -> int:
    """``lossforge bench``: print the table, optionally write JSON/CSV/markdown."""
    workloads = _select(args.workloads)
    if args.list:
        for w in WORKLOADS:
            print(f"{w.name:<16} {w.loss:<34} {w.description}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    device = torch.device(
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    header = {
        "device": f"{device.type} ({name})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    rows = run_workloads(workloads, device, scale=args.scale, min_run_time=args.min_run_time)
    for line in _markdown(rows, header):
        print(line)
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(
                f"cannot create output folder {str(out)!r}: {err.strerror or err}"
            ) from None
        (out / "bench.json").write_text(
            json.dumps({"header": header, "rows": rows}, indent=2) + "\n"
        )
        with (out / "bench.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "bench.md").write_text("\n".join(_markdown(rows, header)) + "\n")
        print(f"results: {out / 'bench.json'}, {out / 'bench.csv'}, {out / 'bench.md'}")
    return 0
