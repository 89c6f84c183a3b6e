"""``lossforge bench``: forward+backward time and peak memory of lossforge against eager references.

Small CPU-friendly workloads (the quick suite). Each ``Workload`` names a registered loss with its
parameters, an input generator and the eager formulas users run today. Per workload, every provider
is warmed up with one forward+backward and its peak extra memory measured by one separate, untimed
forward+backward (MB, bytes per logit, ratio to the reference: below 1 = less memory). On CUDA the
memory comes from ``torch.cuda.max_memory_allocated``, on the CPU from the allocator events of
``torch.profiler`` (``cpu_memory``). The providers are then timed interleaved, never one after the
other: a block size ``k`` is chosen once, on the workload's first reference, so that its block of
``k`` back-to-back forward+backward calls takes 20-50 ms (proportionally less for a ``min_run_time``
under 0.25 s, so that five blocks fit it); each round times one block of every provider with
``time.perf_counter`` (CUDA synchronized at both ends) in an order shuffled by ``random.Random(0)``,
and rounds repeat until the reference's blocks total ``min_run_time`` seconds, at least five
rounds. A load swing or allocator drift on a shared machine thus hits every provider of the
rounds it spans. The report gives the median and IQR over the rounds of the time per call, and the
speed-up relative to the reference as the median and quartiles of the paired per-round ratios
$t_{ref} / t$ (above 1 = faster than the reference), with the distribution-free 95 % confidence
interval of that median (order statistics of the rounds): a provider is measurably slower than
the reference only when the whole interval lies below 1. The lossforge providers call the functional
with the workload's parameters (the references are functions): ``backend="torch"`` everywhere, on
the CPU also with value checks off (set once around each timed block, as a training loop sets it),
and on CUDA with triton ``backend="auto"``; a last row calls the module built by ``build_loss``
(``nn.Module.__call__`` and its ``forward`` on top). With ``--aa`` the reference is timed a second
time as its own provider (``"<reference> (A/A)"``): its ratio to the reference is the run's noise
band, which a ratio near 1 must be read against. Adding a device or a backend is a change to
``_providers`` only, adding a workload one more ``Workload``. Inputs, targets and modules are built
before any timing starts, so a timed block holds the loss's forward and backward only.

The full GPU protocol of PERFORMANCE.md section 6 is not part of the installed package: it lives
in the repository (``benchmarks/protocol.py``, run as ``python -m benchmarks.run``) and imports the
eager references, ``cpu_memory``, ``resolve_device`` and ``output_dir`` from this module (never the
other way round).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "WORKLOADS",
    "CpuMemory",
    "Workload",
    "asl_repo_loss",
    "balanced_bce_eager",
    "cpu_memory",
    "eager_softmax_focal",
    "output_dir",
    "resolve_device",
    "run_bench",
    "run_workloads",
    "smp_dice",
    "torchvision_sigmoid_focal",
]

Inputs = tuple[Tensor, Tensor]


# ----------------------------------------------------------------------------------------------
# Eager references, written as the projects write them (composites, autograd through every op).
# The quick suite and the repository's protocol (benchmarks/protocol.py) use these.
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
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> Tensor:
    """``AsymmetricLoss.forward`` of the ASL repository (Alibaba-MIIL/ASL ``losses.py``, with its
    defaults); it sums."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    pt = xs_pos * y + xs_neg * (1 - y)
    one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
    return -(loss * torch.pow(1 - pt, one_sided_gamma)).sum()


def eager_softmax_focal(
    x: Tensor, t: Tensor, gamma: float = 2.0, ignore_index: int | None = None
) -> Tensor:
    """The usual eager softmax focal loss ``-(1 - p_t)^gamma log p_t`` (log-softmax in float32),
    mean over the samples whose target is not ``ignore_index``."""
    logp = F.log_softmax(x.float(), dim=1)
    if ignore_index is None:
        lpy = logp.gather(1, t.unsqueeze(1)).squeeze(1)
        return (-((1 - lpy.exp()) ** gamma) * lpy).mean()
    valid = t != ignore_index
    lpy = logp.gather(1, torch.where(valid, t, torch.zeros_like(t)).unsqueeze(1)).squeeze(1)
    loss = -((1 - lpy.exp()) ** gamma) * lpy
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def balanced_bce_eager(x: Tensor, y: Tensor, beta: float = 0.98) -> Tensor:
    """Class-balanced BCE as written by hand: ``beta`` on positives, ``1 - beta`` on negatives."""
    w = beta * y + (1 - beta) * (1 - y)
    return F.binary_cross_entropy_with_logits(x, y, weight=w)


def smp_dice(
    x: Tensor, t: Tensor, ignore_index: int = 255, smooth: float = 0.0, eps: float = 1e-7
) -> Tensor:
    """segmentation_models.pytorch ``DiceLoss(mode="multiclass", from_logits=True)``."""
    n, c = x.shape[:2]
    p = x.log_softmax(dim=1).exp().view(n, c, -1)
    y = t.view(n, -1)
    mask = (y != ignore_index).unsqueeze(1)
    p = p * mask
    oh = F.one_hot((y * mask.squeeze(1)).long(), c).permute(0, 2, 1) * mask
    inter = (p * oh).sum(dim=(0, 2))
    card = (p + oh).sum(dim=(0, 2))
    dice = (2 * inter + smooth) / (card + smooth).clamp_min(eps)
    return (1 - dice).mean()


# ----------------------------------------------------------------------------------------------
# Peak memory on the CPU
# ----------------------------------------------------------------------------------------------


class CpuMemory(NamedTuple):
    """Bytes allocated by one forward+backward above the state before it (``cpu_memory``)."""

    saved_bytes: int | None  # held when the backward starts: the loss and what autograd saved
    peak_bytes: int  # the maximum over forward and backward


_BACKWARD_MARK = "lossforge.bench.backward"


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (Kineto prints a line at every profiler start and stop)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters, some test runners)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_memory(forward: Callable[[], Tensor]) -> CpuMemory:
    """Peak extra CPU memory of ``forward().backward()``, from the allocator's own events.

    Tensor allocations are invisible to ``tracemalloc``, so the step runs once under
    ``torch.profiler.profile(activities=[CPU], profile_memory=True)``; the ``[memory]`` events
    (``nbytes() > 0`` an allocation, ``< 0`` a free) are replayed in time order and the running sum
    is the memory allocated above the state before the call. Tensors that exist before it (the
    inputs) are not counted; the gradient buffers the backward allocates (``x.grad``) are, and
    every implementation pays them. Profiling slows the step: time it separately.

    Args:
        forward: Computes the scalar loss from leaves that require grad.

    Returns:
        ``CpuMemory(saved_bytes, peak_bytes)``; ``saved_bytes`` is the running sum when the backward
        starts (None if the profiler did not record the mark).
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = forward()
        with record_function(_BACKWARD_MARK):
            loss.backward()
        del loss
    events = list(prof.profiler.kineto_results.events())
    marks = [e.start_ns() for e in events if e.name() == _BACKWARD_MARK]
    allocs = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    running = peak = 0
    saved: int | None = None
    for event in allocs:
        if saved is None and marks and event.start_ns() >= marks[0]:
            saved = running
        running += event.nbytes()
        peak = max(peak, running)
    if saved is None and marks:
        saved = running
    return CpuMemory(saved, peak)


# ----------------------------------------------------------------------------------------------
# Quick suite: workloads
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One benchmark row group of the quick suite.

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


def _asl_gamma_pos_0(x: Tensor, y: Tensor) -> Tensor:
    return asl_repo_loss(x, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05)


#: The quick suite (small, CPU-friendly shapes; ``--scale`` multiplies the batch).
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
        {"ASL repo": _asl_gamma_pos_0},
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
    work: Workload, device: torch.device, *, aa: bool = False
) -> list[tuple[str, Callable[[Tensor, Tensor], Tensor]]]:
    from lossforge.registry import build_loss, list_losses

    info = {i.name: i for i in list_losses()}
    providers: list[tuple[str, Callable[[Tensor, Tensor], Tensor]]] = list(work.references.items())
    if aa:
        # The baseline once more, on a leaf of its own: its ratio to the baseline is this run's
        # noise band (an A/A comparison), against which the other ratios can be read.
        name, fn = next(iter(work.references.items()))
        providers.insert(1, (f"{name} (A/A)", fn))
    has_backend = work.loss in info and "backend" in info[work.loss].params
    backends = ["torch"]
    if device.type == "cuda" and has_backend:
        from lossforge._dispatch import triton_importable

        if triton_importable():
            backends.append("auto")
    # The lossforge rows call the functional, as the references are functions; the module row
    # adds ``nn.Module.__call__`` and the module's ``forward`` (which any module pays, PyTorch's
    # own loss modules too).
    for backend in backends:
        params = {**work.params, **({"backend": backend} if has_backend else {})}
        module = build_loss({"type": work.loss, **params}).to(device)
        providers.append(
            (
                f"lossforge {work.loss} ({backend})" if has_backend else f"lossforge {work.loss}",
                _functional(module, params),
            )
        )
    if device.type == "cpu":
        # On the CPU value checks (class indices in range, ...) run by default and read the tensors;
        # show the cost apart (on CUDA they are off by default).
        module = build_loss({"type": work.loss, **work.params})
        providers.append(
            (
                f"lossforge {work.loss} (value checks off)",
                _unchecked(_functional(module, work.params)),
            )
        )
    module = build_loss({"type": work.loss, **work.params}).to(device)
    providers.append((f"lossforge {work.loss} module", module))
    return providers


def _functional(module: Any, params: Mapping[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """The module's functional with the workload's parameters bound: the call a user of the
    functional writes (only the parameters that differ from the defaults)."""
    return functools.partial(type(module).functional, **params)


class _Unchecked:
    """A provider run with value checks off. The mode is set once around each timed block (and
    the warm-up and memory step, ``_prepare``), as a training loop sets it once, not per call:
    a ``with value_checks(False)`` block per call would time the context manager too."""

    value_checks = False

    def __init__(self, module: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.module = module

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.module(x, t)


def _unchecked(module: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    return _Unchecked(module)


def _mode_of(fn: object) -> contextlib.AbstractContextManager[None]:
    """The value-check mode a provider's calls run under (``_Unchecked``), as a ``with`` block."""
    if isinstance(fn, _Unchecked):
        from lossforge import value_checks

        return value_checks(fn.value_checks)
    return contextlib.nullcontext()


#: A timed block of the reference lasts about this long (seconds): long enough for
#: ``time.perf_counter`` and the per-call overhead to vanish, short enough that a load swing on a
#: shared machine hits a few rounds, not one provider.
_BLOCK_S = (0.02, 0.05)
_BLOCK_AIM_S = 0.03
#: Trials of the block size at most (``_block_size``).
_BLOCK_TRIALS = 10
#: At least this many rounds per workload, whatever ``min_run_time``.
_MIN_ROUNDS = 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(
    fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor
) -> tuple[Callable[[], None], dict[str, Any]]:
    """Warm ``fn`` up and measure its memory; returns the timed step and the memory columns."""
    leaf = x.detach().clone().requires_grad_(True)

    def step() -> None:
        fn(leaf, t).backward()
        leaf.grad = None

    step.mode = lambda: _mode_of(fn)  # type: ignore[attr-defined]  # entered per timed block
    with _mode_of(fn):
        step()  # warm-up (and compile caches)
        # Memory: one separate forward+backward (the CPU measurement profiles, which slows it).
        if leaf.is_cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = cpu_memory(lambda: fn(leaf, t)).peak_bytes
            leaf.grad = None
    return step, {
        "peak_extra_mb": peak / 2**20,
        "peak_extra_bytes": peak,
        "peak_B_per_logit": peak / x.numel(),
    }


def _time_block(step: Callable[[], None], calls: int, device: torch.device) -> float:
    """Seconds of ``calls`` back-to-back steps (device work included on CUDA), under the step's
    value-check mode (``step.mode``, set by ``_prepare``) when it has one."""
    mode = getattr(step, "mode", contextlib.nullcontext)
    _sync(device)
    start = time.perf_counter()
    with mode():
        for _ in range(calls):
            step()
    _sync(device)
    return time.perf_counter() - start


def _block_size(step: Callable[[], None], device: torch.device, scale: float = 1.0) -> int:
    """Calls per block such that one block of ``step`` takes ``_BLOCK_S`` (times ``scale``).

    Starts from one call and rescales toward ``_BLOCK_AIM_S`` from the last trial (growing at most
    tenfold per trial), so a load swing during one trial is corrected by the next; at least 1 call,
    at most ``_BLOCK_TRIALS`` trials (then the last size)."""
    low, high, aim = _BLOCK_S[0] * scale, _BLOCK_S[1] * scale, _BLOCK_AIM_S * scale
    calls = 1
    for _ in range(_BLOCK_TRIALS):
        elapsed = _time_block(step, calls, device)
        if low <= elapsed <= high:
            break
        resized = max(1, min(10 * calls, round(calls * aim / max(elapsed, 1e-9))))
        if resized == calls:  # one call already takes longer than the window
            break
        calls = resized
    return calls


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` (linear interpolation, as ``numpy.percentile``); the quartiles are
    clamped to the median against rounding, so ``q1 <= median <= q3`` always holds."""
    median = statistics.median(values)
    if len(values) == 1:
        return median, median, median
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return min(q1, median), median, max(q3, median)


def _interleave(
    steps: list[Callable[[], None]], device: torch.device, min_run_time: float, seed: int = 0
) -> tuple[int, list[list[float]]]:
    """Time blocks of every step in rounds; ``steps[0]`` is the reference.

    The block size ``k`` (calls per block) is chosen once, on the reference, so that its block
    takes 20-50 ms (proportionally less when ``_MIN_ROUNDS`` blocks of 50 ms exceed
    ``min_run_time``). Each round then times one block of every step, in an order shuffled by
    ``random.Random(seed)``, until the reference's blocks add up to ``min_run_time`` and at least
    ``_MIN_ROUNDS`` rounds have run: a load swing or allocator drift hits all providers of the
    rounds it spans, and the per-round ratios pair blocks timed moments apart.

    Returns:
        ``(k, blocks)``: ``blocks[i][r]`` is the seconds of round ``r``'s block of ``steps[i]``.
    """
    scale = min(1.0, min_run_time / (_MIN_ROUNDS * _BLOCK_S[1]))
    calls = _block_size(steps[0], device, scale)
    rng = random.Random(seed)
    blocks: list[list[float]] = [[] for _ in steps]
    order = list(range(len(steps)))
    while len(blocks[0]) < _MIN_ROUNDS or sum(blocks[0]) < min_run_time:
        rng.shuffle(order)
        for i in order:
            blocks[i].append(_time_block(steps[i], calls, device))
    return calls, blocks


def _median_ci_ranks(n: int, level: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(k, n + 1 - k)`` of the order statistics that bracket the median of ``n``
    independent draws of a continuous quantity with probability at least ``level``, whatever its
    distribution: the largest ``k`` with ``P(B < k) <= (1 - level) / 2`` for ``B ~ Bin(n, 1/2)``
    (the number of draws below the true median). ``None`` when even ``[min, max]`` falls short
    (``n < 6`` at 95 %)."""
    tail = (1.0 - level) / 2.0
    cdf = 0.0  # P(B < k), summed up exactly for growing k
    k = 0
    while k < n:
        cdf_next = cdf + math.comb(n, k) / 2.0**n  # P(B < k + 1)
        if cdf_next > tail:
            break
        cdf, k = cdf_next, k + 1
    if k == 0:
        return None
    return k, n + 1 - k


def _median_ci(values: list[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """The distribution-free confidence interval of the median of ``values`` (order statistics at
    ``_median_ci_ranks``), or ``(None, None)`` for too few values."""
    ranks = _median_ci_ranks(len(values), level)
    if ranks is None:
        return None, None
    ordered = sorted(values)
    return ordered[ranks[0] - 1], ordered[ranks[1] - 1]


def _timing(blocks: list[float], ref_blocks: list[float], calls: int) -> dict[str, Any]:
    """Columns of one provider: per-call median and IQR (ms) and the paired ratios to the
    reference (median, quartiles and the 95 % confidence interval of the median of
    ``ref_block / block`` over the rounds, ``_median_ci``)."""
    q1, median, q3 = _quartiles([b / calls for b in blocks])
    if all(b > 0 for b in blocks):
        ratios = [ref / b for ref, b in zip(ref_blocks, blocks, strict=True)]
        r1, ratio, r3 = _quartiles(ratios)
        low, high = _median_ci(ratios)
        speedup: dict[str, float | None] = {
            "speedup_vs_ref": ratio,
            "speedup_q1": r1,
            "speedup_q3": r3,
            "speedup_ci_low": low,
            "speedup_ci_high": high,
        }
    else:
        speedup = dict.fromkeys(
            ("speedup_vs_ref", "speedup_q1", "speedup_q3", "speedup_ci_low", "speedup_ci_high")
        )
    return {
        "median_ms": median * 1e3,
        "iqr_ms": (q3 - q1) * 1e3,
        "runs": len(blocks),
        "calls_per_run": calls,
        **speedup,
    }


def run_workloads(
    workloads: tuple[Workload, ...],
    device: torch.device,
    *,
    scale: float = 1.0,
    min_run_time: float = 0.3,
    aa: bool = False,
) -> list[dict[str, Any]]:
    """Time and measure every provider of every workload; one row per (workload, provider).

    With ``aa`` the reference is timed twice (a second row ``"<reference> (A/A)"``): the ratio of
    the two is the run's own noise band.

    Per workload every provider is warmed up and its peak memory measured, then the providers are
    timed interleaved (``_interleave``): rounds of one block per provider in a shuffled order until
    the reference's blocks total ``min_run_time`` seconds (at least ``_MIN_ROUNDS`` rounds). A row
    gives the median and IQR over the rounds of the time per call, ``runs`` (the rounds) and
    ``calls_per_run``, and the median (``speedup_vs_ref``), quartiles (``speedup_q1``,
    ``speedup_q3``) and 95 % confidence interval of the median (``speedup_ci_low``,
    ``speedup_ci_high``; ``None`` under six rounds) of the per-round ratios reference block /
    provider block; the reference's own are 1.0.
    """
    rows: list[dict[str, Any]] = []
    for work in workloads:
        gen = torch.Generator().manual_seed(0)
        x, t = work.make(scale, device, gen)
        providers = _providers(work, device, aa=aa)
        prepared = [_prepare(fn, x, t) for _, fn in providers]
        calls, blocks = _interleave([step for step, _ in prepared], device, min_run_time)
        group = [
            {
                "workload": work.name,
                "provider": provider,
                "shape": list(x.shape),
                **_timing(times, blocks[0], calls),
                **memory,
            }
            for (provider, _), (_, memory), times in zip(providers, prepared, blocks, strict=True)
        ]
        ref = group[0]
        for row in group:
            row["mem_ratio_vs_ref"] = (
                row["peak_extra_bytes"] / ref["peak_extra_bytes"]
                if ref["peak_extra_bytes"] > 0
                else None
            )
            row["reference"] = ref["provider"]
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
            f"unknown workload {', '.join(map(repr, unknown))} of --suite quick; "
            f"valid: {', '.join(known)}"
        )
    return tuple(known[n] for n in chosen)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _ratio_range(
    value: float | None,
    low: float | None,
    high: float | None,
    ci_low: float | None = None,
    ci_high: float | None = None,
) -> str:
    """``1.02x (0.98-1.05; CI 1.00-1.03)``: the median ratio, its quartiles and, when known, the
    95 % confidence interval of the median (just ``1.00x`` for the reference, whose quartiles
    are the median)."""
    if value is None or low is None or high is None or low == high:
        return _ratio(value)
    ci = "" if ci_low is None or ci_high is None else f"; CI {ci_low:.2f}-{ci_high:.2f}"
    return f"{value:.2f}x ({low:.2f}-{high:.2f}{ci})"


_SPEEDUP_KEYS = (
    "speedup_vs_ref",
    "speedup_q1",
    "speedup_q3",
    "speedup_ci_low",
    "speedup_ci_high",
)


def _markdown(rows: list[dict[str, Any]], header: Mapping[str, Any]) -> list[str]:
    lines = [
        f"device: {header['device']}, torch {header['torch']}, threads {header['threads']}, "
        f"heap {header.get('heap', 'as-is')}; "
        f"peak extra memory of one forward+backward above the inputs, gradient included "
        f"({header['memory']}); speed-up: median (quartiles; CI: 95 % confidence interval of "
        f"the median, order statistics) over the interleaved rounds of reference block time / "
        f"provider block time",
        "",
        "| workload | provider | median ms | speed-up vs reference | peak extra MB "
        "| bytes/logit | memory vs reference |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['provider']} | {r['median_ms']:.3f} | "
            f"{_ratio_range(*(r.get(k) for k in _SPEEDUP_KEYS))} | "
            f"{r['peak_extra_mb']:.2f} | "
            f"{r['peak_B_per_logit']:.1f} | {_ratio(r['mem_ratio_vs_ref'])} |"
        )
    return lines


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------

#: Options that cli/__init__.py still parses for the protocol, which moved to the repository.
_PROTOCOL_ONLY = ("smoke", "reps", "iters", "no_compile", "no_launches")
_PROTOCOL_MOVED = (
    "the benchmark protocol (docs/design.md) is not part of the installed package: "
    "from a repository checkout run `python -m benchmarks.run` (options --only, --smoke, --out, "
    "--stem, --reps, --iters, --no-compile, --no-launches; see its --help)"
)


def resolve_device(choice: str) -> torch.device:
    """``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"`` as a device; ``ValueError`` for
    ``"cuda"`` without a CUDA device."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def output_dir(path: str | Path) -> Path:
    """Create the folder ``path`` (and parents) and check that it takes files; an ``OSError``
    naming it when that fails (``lossforge.cli._paths.writable_dir``)."""
    from lossforge.cli._paths import writable_dir

    return writable_dir(path)


def run_bench(args: Any) -> int:
    """``lossforge bench``: run the quick suite.

    ``--suite protocol`` and the protocol's options (``--smoke``, ``--reps``, ...) raise a
    ``ValueError`` that names the repository command, ``python -m benchmarks.run``.
    """
    if (getattr(args, "suite", None) or "quick") != "quick":
        raise ValueError(f"--suite {args.suite}: {_PROTOCOL_MOVED}")
    for name in _PROTOCOL_ONLY:
        if getattr(args, name, None) not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is an option of the benchmark protocol; {_PROTOCOL_MOVED}")
    return _run_quick(args)


#: ``mallopt`` parameters of glibc (malloc.h) and the values of ``--heap reuse``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_REUSE_MMAP_THRESHOLD = 32 * 2**20  # glibc's cap for its own dynamic threshold (64-bit)
_REUSE_TRIM_THRESHOLD = 2**30


def set_heap(mode: str) -> str:
    """The CPU allocator state the timings run in, set for this process (``--heap``); returns
    its description for the header.

    ``"as-is"`` changes nothing: glibc's malloc serves a block above its mmap threshold with
    fresh pages from the kernel (zero-filled on first touch) and raises that threshold, up to
    32 MiB, whenever such a block is freed; which temporaries of a loss come fresh on every call
    then depends on what the process allocated before, and a benchmark's ratios with it (up to
    1.5x between runs of the same code on the development VM). ``"reuse"`` fixes the mmap
    threshold at 32 MiB and the trim threshold at 1 GiB (``mallopt``), the state a training
    process reaches after freeing its first large activations: freed temporaries are reused from
    the heap. ``ValueError`` where glibc's ``mallopt`` is not available or refuses."""
    if mode == "as-is":
        env = [f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("MALLOC_")]
        return "as-is" + (f" ({', '.join(env)})" if env else "")
    if mode != "reuse":
        raise ValueError(f"--heap: expected 'as-is' or 'reuse', got {mode!r}")
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        raise ValueError("--heap reuse: needs glibc's mallopt (Linux), not available") from None
    ok = mallopt(_M_MMAP_THRESHOLD, _REUSE_MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _REUSE_TRIM_THRESHOLD) == 1 and ok
    if not ok:
        raise ValueError("--heap reuse: mallopt refused the thresholds")
    return "reuse (glibc mmap threshold 32 MiB, trim threshold 1 GiB)"


def _run_quick(args: Any) -> int:
    workloads = _select(args.workloads)
    if args.list:
        for w in WORKLOADS:
            print(f"{w.name:<16} {w.loss:<34} {w.description}")
        return 0
    device = resolve_device(args.device)
    heap = set_heap(getattr(args, "heap", None) or "as-is")
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    header = {
        "device": f"{device.type} ({name})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "memory": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "torch.profiler memory events",
        "heap": heap,
    }
    out = output_dir(args.out) if args.out else None  # before the timing, not after it
    rows = run_workloads(
        workloads,
        device,
        scale=args.scale if args.scale is not None else 1.0,
        min_run_time=args.min_run_time if args.min_run_time is not None else 0.3,
        aa=bool(getattr(args, "aa", False)),
    )
    for line in _markdown(rows, header):
        print(line)
    if out is not None:
        stem = getattr(args, "stem", None) or "bench"
        paths = [out / f"{stem}.{ext}" for ext in ("json", "csv", "md")]
        paths[0].write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
        with paths[1].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        paths[2].write_text("\n".join(_markdown(rows, header)) + "\n")
        print(f"results: {', '.join(map(str, paths))}")
    return 0
