"""The benchmark protocol of PERFORMANCE.md section 6 (repository only; not in the wheel).

    python -m benchmarks.run                   # every workload (needs CUDA)
    python -m benchmarks.run --only DET,SEG    # a subset
    python -m benchmarks.run --smoke           # tiny CPU version, seconds

(``benchmarks/run.py`` is the command line; results go to ``benchmarks/results/`` unless ``--out``
says otherwise.) This module may import from the package (the eager references and
``cpu_memory`` of ``lossforge.cli.bench``); the package never imports it.

For every (workload, dtype, loss) it times, in one process and interleaved rep by rep: the eager
reference users run today (``lossforge.cli.bench``: torchvision-style focal, the ASL repo,
F.cross_entropy with and without ``.float()``, smp-style dice, F.l1/smooth_l1), ``torch.compile`` of
it (compile time reported apart), Liger's cross-entropy when installed, and lossforge's
``backend="torch"`` and ``backend="triton"`` (the kernel entry point directly when the functional
is not wired to it yet).

**Only the loss is timed.** Inputs, targets in the dtype each provider takes, class weights and
every other constant are built by the row's ``make()`` before any timing; a provider that needs a
fresh input per call (Liger overwrites its logits with the gradient) declares a ``prepare`` step
that runs outside the timed region (``Provider``), once per timed call. The timed region holds the
forward, the backward and ``x.grad = None``.

Reported per row: GPU time (N back-to-back fwd+bwd between two CUDA events / N; median, p20, p80
over the reps), single-shot latency (sync per rep), fwd-only / bwd-only medians, saved-for-backward
and peak extra memory (MB and per logit; CUDA: ``max_memory_allocated``, CPU: the profiler's
allocator events, ``lossforge.cli.bench.cpu_memory``), CUDA kernel launches per direction
(torch.profiler), ideal bytes, the roofline time at the copy bandwidth measured in the same run,
``x_roof``, effective TB/s, a measured floor op with the same streams (``torch.sub`` for dense
sigmoid losses, ``torch.neg`` otherwise), and speed-ups (and memory ratios) vs eager, vs compile and
vs Liger. Results go to ``<out>/<stem>.{json,csv,md}``, rewritten after every row; the header
records GPU, clocks, versions and bandwidth. On the CPU (``--smoke``, or no CUDA) the shapes are
tiny and only the eager reference and ``backend="torch"`` run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import lossforge as lf
import lossforge.functional as LF
from lossforge.cli.bench import (
    _median_ci,
    _quartiles,
    asl_repo_loss,
    balanced_bce_eager,
    cpu_memory,
    eager_softmax_focal,
    smp_dice,
    torchvision_sigmoid_focal,
)

__all__ = [
    "COLUMNS",
    "PROTOCOL_WORKLOADS",
    "Provider",
    "Row",
    "match_rows",
    "row_key",
    "run_protocol",
    "select_rows",
    "select_workloads",
    "workloads",
    "write",
]

#: Workload ids of PERFORMANCE.md section 6 (``--only``), with what they stand for.
PROTOCOL_WORKLOADS: dict[str, str] = {
    "DET": "RetinaNet-style head (1.6M, 80), ~2% positive, index and dense targets: "
    "sigmoid focal (gamma 2, 1.5), BCE, balanced BCE",
    "SEG": "Cityscapes-like (8, 19, 512, 1024), NCHW and channels_last, 5% ignore: "
    "CE (+class weights, label smoothing), softmax focal, dice",
    "ML-L": "OpenImages-like multi-label (256 and 4096, 9605), ~0.3% positive: ASL, BCE, focal",
    "LLM": "LM head (8192, 128256) bf16, 10% ignore: CE (label smoothing 0, 0.1), vs Liger",
    "ML-S": "COCO-like multi-label (256, 80), ~3% positive: ASL, BCE, focal",
    "REG": "box regression (1.6M, 4): L1, smooth L1 (beta 1/9)",
}

# --------------------------------------------------------------------------------------------------
# Workloads.
# --------------------------------------------------------------------------------------------------


Call = Callable[[dict[str, Any]], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Provider:
    """A timed call and, optionally, a preparation that runs before it, outside the timed region.

    ``prepare(d)`` returns the dict that ``call`` receives (a fresh input for a provider that
    overwrites its input in place, as Liger does); without it ``call`` receives the row's dict.
    """

    call: Call
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def inputs(self, d: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """The arguments of ``n`` calls, prepared now (before the caller starts its clock)."""
        return [d if self.prepare is None else self.prepare(d) for _ in range(n)]


def _as_provider(p: Call | Provider) -> Provider:
    return p if isinstance(p, Provider) else Provider(p)


def _unchecked(p: Provider) -> Provider:
    """``p`` with lossforge's value checks off around each call (the CPU's default is on)."""

    def call(d: dict[str, Any]) -> torch.Tensor:
        with lf.value_checks(False):
            return p.call(d)

    return Provider(call, p.prepare)


@dataclasses.dataclass
class Row:
    workload: str
    loss: str
    dtype: str
    shape: tuple[int, ...]
    target_format: str
    # "sigmoid_dense" | "sigmoid_index" | "softmax" | "softmax_2read" | "dice" | "regression"
    family: str
    # -> {"x": logits (leaf, requires grad), "t": target, ...}: everything a provider reads, built
    # before timing (targets in the logits' dtype for the eager references, class weights, ...)
    make: Callable[[], dict[str, Any]]
    providers: dict[str, Call | Provider]


def row_key(row: Row) -> str:
    """``WORKLOAD:loss:dtype:target:shape``, e.g. ``DET:sigmoid_focal_g2:float32:index:1600000x80``:
    what ``--rows`` / ``--skip-rows`` / ``--compile-rows`` match."""
    shape = "x".join(str(n) for n in row.shape)
    return f"{row.workload}:{row.loss}:{row.dtype}:{row.target_format}:{shape}"


def _part_matches(pattern: str, part: str) -> bool:
    if pattern in ("", "*") or pattern == part:
        return True
    return pattern.endswith("*") and part.startswith(pattern[:-1])


def _key_matches(pattern: str, key: str) -> bool:
    """``pattern``: ``:``-separated parts of a ``row_key``, each exact, ``*``, or a prefix ending in
    ``*``; missing trailing parts match anything (``DET:bce`` is every DET bce row). No other
    wildcard, so the brackets of ``ce_ignore[NCHW]`` are literal."""
    pats, parts = pattern.strip().split(":"), key.split(":")
    if len(pats) > len(parts):
        return False
    return all(_part_matches(p, k) for p, k in zip(pats, parts, strict=False))


def match_rows(patterns: Sequence[str] | None, rows: Sequence[Row]) -> list[Row]:
    """The rows matching any of ``patterns`` (see ``_key_matches``), ordered by the first pattern
    each matches, then in protocol order: the caller sets the priority. None = all rows."""
    if patterns is None:
        return list(rows)
    ranked = []
    for i, row in enumerate(rows):
        key = row_key(row)
        first = next((j for j, p in enumerate(patterns) if _key_matches(p, key)), None)
        if first is not None:
            ranked.append((first, i, row))
    return [row for _, _, row in sorted(ranked, key=lambda r: (r[0], r[1]))]


def select_rows(
    all_rows: Sequence[Row],
    only: set[str] | None = None,
    rows: Sequence[str] | None = None,
    skip_rows: Sequence[str] | None = None,
) -> list[Row]:
    """The rows of the workloads ``only`` that match ``rows`` and not ``skip_rows``, in the order
    of ``match_rows``."""
    chosen = match_rows(rows, [r for r in all_rows if only is None or r.workload in only])
    skip = skip_rows or ()
    return [r for r in chosen if not any(_key_matches(p, row_key(r)) for p in skip)]


def _kern(name: str) -> Callable[..., torch.Tensor]:
    def call(*a, **k):
        import lossforge.kernels as K

        return getattr(K, name)(*a, **k)

    return call


def _lf(name: str, kernel: str | None = None, **fixed) -> dict[str, Callable]:
    """lossforge torch / triton providers for a functional name (triton: functional with
    backend="triton" when it dispatches, else the kernel entry point)."""

    def torch_backend(d):
        return getattr(LF, name)(d["x"], d["t"], backend="torch", **fixed, **d.get("kw", {}))

    def triton_backend(d):
        fn = getattr(LF, name, None)
        meta = d["meta"]  # shared by the dicts derived from d ({**d, "kw": ...})
        if fn is not None and meta.get("via") != "kernels":
            try:
                return fn(d["x"], d["t"], backend="triton", **fixed, **d.get("kw", {}))
            except ValueError:
                meta["via"] = "kernels"  # decided in the warm-up, before any timing
        return _kern(kernel or name)(d["x"], d["t"], **fixed, **d.get("kw", {}))

    return {"lossforge_torch": torch_backend, "lossforge_triton": triton_backend}


def _det(n, c, dtype, dev, dense):
    def make():
        x = (torch.randn(n, c, device=dev) * 3 - 4).to(dtype).requires_grad_()
        idx = torch.randint(0, c, (n,), device=dev)
        pos = torch.rand(n, device=dev) < 0.02  # ~2 % positive anchors
        idx = torch.where(pos, idx, torch.full_like(idx, c))  # background = C
        ign = torch.rand(n, device=dev) < 0.01
        idx = torch.where(ign, torch.full_like(idx, -2), idx)
        dense_t = (idx.unsqueeze(1) == torch.arange(c, device=dev)).to(torch.float32)
        return {
            "x": x,
            "t": dense_t if dense else idx,
            "dense": dense_t,
            "dense_x": dense_t.to(dtype),  # the eager references take targets in x's dtype
            "kw": {} if dense else {"ignore_index": -2},
        }

    return make


def _ml(n, c, dtype, dev, frac, mean, std):
    def make():
        x = (torch.randn(n, c, device=dev) * std + mean).to(dtype).requires_grad_()
        y = (torch.rand(n, c, device=dev) < frac).to(torch.float32)
        return {"x": x, "t": y, "dense": y, "t_x": y.to(dtype), "kw": {}}

    return make


def _seg(shape, dtype, dev, channels_last=False):
    def make():
        x = torch.randn(*shape, device=dev).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        t = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), device=dev)
        t = torch.where(torch.rand(t.shape, device=dev) < 0.05, torch.full_like(t, 255), t)
        cw = torch.linspace(0.5, 2, shape[1], device=dev)  # class weights of the ce_..._cw rows
        return {"x": x, "t": t, "cw": cw, "cw_x": cw.to(dtype), "kw": {"ignore_index": 255}}

    return make


def _llm(n, v, dev):
    def make():
        x = torch.randn(n, v, device=dev, dtype=torch.bfloat16).requires_grad_()
        t = torch.randint(0, v, (n,), device=dev)
        t = torch.where(torch.rand(n, device=dev) < 0.1, torch.full_like(t, -100), t)
        return {"x": x, "t": t, "kw": {}}

    return make


def _reg(n, dtype, dev):
    def make():
        x = torch.randn(n, 4, device=dev).to(dtype).requires_grad_()
        t = torch.randn(n, 4, device=dev).to(dtype)
        return {"x": x, "t": t, "kw": {}}

    return make


def _liger_cross_entropy(label_smoothing: float) -> Any:
    """Liger-Kernel's cross-entropy module when liger_kernel is installed and usable, else None."""
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss  # type: ignore
    except Exception:  # noqa: BLE001 - optional dependency, any import failure means "absent"
        return None
    return LigerCrossEntropyLoss(label_smoothing=label_smoothing)


def liger_provider(module: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Provider:
    """Liger's cross-entropy writes the gradient into its input: each timed call gets its own copy
    of the logits, made (2.1 GB on the LLM row) before the clock starts."""
    return Provider(
        call=lambda dd: module(dd["x_fresh"], dd["t"]),
        prepare=lambda d: {**d, "x_fresh": d["x"].clone()},
    )


def _scaled(n: int, scale: float) -> int:
    """A batch size of the protocol times ``scale``, at least 1."""
    return max(1, round(n * scale))


def workloads(
    dev: str,
    smoke: bool,
    dtypes: Sequence[torch.dtype] | None = None,
    scale: float | None = None,
) -> list[Row]:
    """The rows of the protocol (``smoke``: the tiny CPU shapes, float32 unless ``dtypes``).

    ``scale`` (the CPU table of the protocol's shapes, ``--cpu-scale``): the batch sizes of the
    large rows (DET anchors, the 4096-image ML-L row, SEG images, REG boxes) times ``scale``; the
    256-image ML rows, the class and the spatial sizes as they are; float32 unless ``dtypes``;
    no LLM row (its 1.05G-logit bf16 cross-entropy is a GPU workload)."""
    rows: list[Row] = []
    if scale is not None and smoke:
        raise ValueError("scale is for the protocol's shapes, not the smoke shapes")
    k = 1.0 if scale is None else scale
    if dtypes is None:
        dtypes = [torch.float32] if smoke or scale is not None else [torch.float32, torch.bfloat16]
    det_n = 2048 if smoke else _scaled(1_600_000, k)
    for dt in dtypes:
        dn = str(dt).replace("torch.", "")
        for gamma in (2.0, 1.5):
            for dense in (False, True):
                rows.append(
                    Row(
                        "DET",
                        f"sigmoid_focal_g{gamma:g}",
                        dn,
                        (det_n, 80),
                        "dense" if dense else "index",
                        "sigmoid_dense" if dense else "sigmoid_index",
                        _det(det_n, 80, dt, dev, dense),
                        {
                            "eager_ref": lambda d, g=gamma: torchvision_sigmoid_focal(
                                d["x"], d["dense_x"], 0.25, g
                            ),
                            **_lf("sigmoid_focal_loss", alpha=0.25, gamma=gamma),
                        },
                    )
                )
        rows.append(
            Row(
                "DET",
                "bce",
                dn,
                (det_n, 80),
                "dense",
                "sigmoid_dense",
                _det(det_n, 80, dt, dev, True),
                {
                    "eager_ref": lambda d: F.binary_cross_entropy_with_logits(d["x"], d["dense_x"]),
                    **_lf("binary_cross_entropy_with_logits"),
                },
            )
        )
        rows.append(
            Row(
                "DET",
                "balanced_bce",
                dn,
                (det_n, 80),
                "dense",
                "sigmoid_dense",
                _det(det_n, 80, dt, dev, True),
                {
                    "eager_ref": lambda d: balanced_bce_eager(d["x"], d["dense_x"]),
                    **_lf("balanced_binary_cross_entropy", beta=0.98),
                },
            )
        )
        ml_shapes = (
            [(256, 80, 0.03, 0.0, 1.0)]
            if smoke
            else [
                (256, 80, 0.03, 0.0, 1.0),  # (the small rows as they are)
                (256, 9605, 0.003, -3.0, 2.0),
                (_scaled(4096, k), 9605, 0.003, -3.0, 2.0),
            ]
        )
        for n, c, frac, mu, sd in ml_shapes:
            wid = "ML-S" if c == 80 else "ML-L"
            mk = _ml(n, c, dt, dev, frac, mu, sd)
            rows.append(
                Row(
                    wid,
                    "asl",
                    dn,
                    (n, c),
                    "dense",
                    "sigmoid_dense",
                    mk,
                    {
                        "eager_ref": lambda d: asl_repo_loss(
                            d["x"], d["t_x"], gamma_neg=4.0, gamma_pos=1.0, clip=0.05
                        ),
                        **_lf("asymmetric_loss", gamma_pos=1.0, gamma_neg=4.0, clip=0.05),
                    },
                )
            )
            rows.append(
                Row(
                    wid,
                    "bce",
                    dn,
                    (n, c),
                    "dense",
                    "sigmoid_dense",
                    mk,
                    {
                        "eager_ref": lambda d: F.binary_cross_entropy_with_logits(d["x"], d["t_x"]),
                        **_lf("binary_cross_entropy_with_logits"),
                    },
                )
            )
            rows.append(
                Row(
                    wid,
                    "sigmoid_focal_g2",
                    dn,
                    (n, c),
                    "dense",
                    "sigmoid_dense",
                    mk,
                    {
                        "eager_ref": lambda d: torchvision_sigmoid_focal(d["x"], d["t_x"]),
                        **_lf("sigmoid_focal_loss", alpha=0.25, gamma=2.0),
                    },
                )
            )
        seg = (1, 19, 32, 64) if smoke else (_scaled(8, k), 19, 512, 1024)
        for cl in (False, True) if not smoke else (False,):
            lay = "channels_last" if cl else "NCHW"
            mk = _seg(seg, dt, dev, cl)
            rows.append(
                Row(
                    "SEG",
                    f"ce_ignore[{lay}]",
                    dn,
                    seg,
                    "index",
                    "softmax",
                    mk,
                    {
                        "eager_ref": lambda d: F.cross_entropy(d["x"], d["t"], ignore_index=255),
                        **_lf("cross_entropy"),
                    },
                )
            )
            rows.append(
                Row(
                    "SEG",
                    f"ce_ignore_cw_ls[{lay}]",
                    dn,
                    seg,
                    "index",
                    "softmax",
                    mk,
                    {
                        "eager_ref": lambda d: F.cross_entropy(
                            d["x"],
                            d["t"],
                            ignore_index=255,
                            label_smoothing=0.1,
                            weight=d["cw_x"],
                        ),
                        **{
                            k: (
                                lambda d, f=f: f(
                                    {
                                        **d,
                                        "kw": {
                                            **d["kw"],
                                            "label_smoothing": 0.1,
                                            "class_weight": d["cw"],
                                        },
                                    }
                                )
                            )
                            for k, f in _lf("cross_entropy").items()
                        },
                    },
                )
            )
            rows.append(
                Row(
                    "SEG",
                    f"softmax_focal[{lay}]",
                    dn,
                    seg,
                    "index",
                    "softmax",
                    mk,
                    {
                        "eager_ref": lambda d: eager_softmax_focal(d["x"], d["t"], 2.0, 255),
                        **_lf("softmax_focal_loss", gamma=2.0),
                    },
                )
            )
            rows.append(
                Row(
                    "SEG",
                    f"dice[{lay}]",
                    dn,
                    seg,
                    "index",
                    "dice",
                    mk,
                    {
                        "eager_ref": lambda d: smp_dice(d["x"], d["t"]),
                        **_lf("dice_loss"),
                    },
                )
            )
        reg_n = 4096 if smoke else _scaled(1_600_000, k)
        mk = _reg(reg_n, dt, dev)
        rows.append(
            Row(
                "REG",
                "l1",
                dn,
                (reg_n, 4),
                "dense",
                "regression",
                mk,
                {"eager_ref": lambda d: F.l1_loss(d["x"], d["t"]), **_lf("l1_loss")},
            )
        )
        rows.append(
            Row(
                "REG",
                "smooth_l1_b1/9",
                dn,
                (reg_n, 4),
                "dense",
                "regression",
                mk,
                {
                    "eager_ref": lambda d: F.smooth_l1_loss(d["x"], d["t"], beta=1 / 9),
                    **_lf("smooth_l1_loss", beta=1 / 9),
                },
            )
        )
    if not smoke and scale is None:
        llm = (8192, 128256)
        for ls in (0.0, 0.1):
            provs = {
                "eager_ref": lambda d, ls=ls: F.cross_entropy(d["x"], d["t"], label_smoothing=ls),
                "eager_ref_float": lambda d, ls=ls: F.cross_entropy(
                    d["x"].float(), d["t"], label_smoothing=ls
                ),
                **{
                    k: (lambda d, f=f, ls=ls: f({**d, "kw": {"label_smoothing": ls}}))
                    for k, f in _lf("cross_entropy").items()
                },
            }
            liger = _liger_cross_entropy(ls)
            if liger is not None:
                provs["liger"] = liger_provider(liger)
            rows.append(
                Row(
                    "LLM",
                    f"ce_ls{ls:g}",
                    "bfloat16",
                    llm,
                    "index",
                    "softmax_2read",
                    _llm(*llm, dev),
                    provs,
                )
            )
    return rows


def ideal_bytes(row: Row, d: dict[str, Any]) -> int:
    x, t = d["x"], d["t"]
    b = x.element_size() * x.numel()
    tb = t.element_size() * t.numel()
    if row.family == "softmax_2read" or row.family == "dice":
        return 3 * b + tb
    if row.family == "regression":
        return 2 * b + tb
    return 2 * b + tb


# --------------------------------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------------------------------


def _step(call: Call, d: dict[str, Any]) -> None:
    d["x"].grad = None
    loss = call(d)
    loss.backward()


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def gpu_time(p: Provider, d: dict[str, Any], iters: int) -> float:
    """Milliseconds per fwd+bwd: ``iters`` back-to-back calls between two CUDA events."""
    calls = p.inputs(d, iters)  # before the start event
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for di in calls:
        _step(p.call, di)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def cpu_time(p: Provider, d: dict[str, Any], iters: int) -> float:
    calls = p.inputs(d, iters)  # before the clock
    t0 = time.perf_counter()
    for di in calls:
        _step(p.call, di)
    return (time.perf_counter() - t0) * 1e3 / iters


def split_time(p: Provider, d: dict[str, Any], dev: str) -> tuple[float, float, float]:
    """(single-shot fwd+bwd latency with sync, fwd ms, bwd ms)."""
    (di,) = p.inputs(d, 1)
    d["x"].grad = None
    _sync(dev)
    t0 = time.perf_counter()
    if dev == "cuda":
        e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        e0.record()
        loss = p.call(di)
        e1.record()
        loss.backward()
        e2.record()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3, e0.elapsed_time(e1), e1.elapsed_time(e2)
    loss = p.call(di)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    return (t2 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3


def memory(p: Provider, d: dict[str, Any], dev: str = "cuda") -> tuple[int | None, int]:
    """(saved-for-backward bytes after the forward, peak extra bytes over fwd+bwd); the prepared
    input exists before the baseline, as the logits of a training step do."""
    d["x"].grad = None
    (di,) = p.inputs(d, 1)
    if dev != "cuda":  # counts the allocations of the step itself: no baseline to clean
        mem = cpu_memory(lambda: p.call(di))
        d["x"].grad = None
        return mem.saved_bytes, mem.peak_bytes
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = p.call(di)
    torch.cuda.synchronize()
    saved = torch.cuda.memory_allocated() - base
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del loss
    d["x"].grad = None
    return saved, peak


def launches(p: Provider, d: dict[str, Any]) -> tuple[int, int]:
    from torch.profiler import ProfilerActivity, profile

    d["x"].grad = None
    (di,) = p.inputs(d, 1)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        loss = p.call(di)
        torch.cuda.synchronize()
    n_fwd = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        loss.backward()
        torch.cuda.synchronize()
    n_bwd = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    return n_fwd, n_bwd


def bandwidth() -> dict[str, float]:
    """Best of copy_ and a 2-read-1-write torch.sub on 1 GiB, in TB/s (bytes read + written)."""
    n = (1 << 30) // 4
    a = torch.empty(n, device="cuda").uniform_()
    b = torch.empty(n, device="cuda").uniform_()
    c = torch.empty(n, device="cuda")
    out = {}
    for name, op, nbytes in (
        ("copy", lambda: c.copy_(a), 8 * n),
        ("sub_2r1w", lambda: torch.sub(a, b, out=c), 12 * n),
    ):
        for _ in range(3):
            op()
        ts = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            op()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        out[name] = nbytes / (statistics.median(ts) * 1e-3) / 1e12
    torch.cuda.empty_cache()
    out["best"] = max(out["copy"], out["sub_2r1w"])
    return out


def floor_ms(row: Row, d: dict[str, Any], iters: int) -> float:
    x = d["x"].detach()
    g = torch.empty_like(x)
    if row.family == "sigmoid_dense" or row.family == "regression":
        t = d["t"].detach()

        def op():
            torch.sub(x, t, out=g) if t.dtype == x.dtype else torch.sub(x, t.to(x.dtype), out=g)
    else:

        def op():
            torch.neg(x, out=g)

    for _ in range(3):
        op()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(10):
        s.record()
        for _ in range(iters):
            op()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) / iters)
    return statistics.median(ts)


def header(dev: str, smoke: bool = False) -> dict[str, Any]:
    h: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": dev,
        "smoke": smoke,
        "threads": torch.get_num_threads(),
        "memory": "torch.cuda.max_memory_allocated"
        if dev == "cuda"
        else "torch.profiler memory events (lossforge.cli.bench.cpu_memory)",
    }
    if dev != "cuda":
        h["cpu"] = platform.processor() or platform.machine()
    try:
        import triton

        h["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        h["triton"] = None
    if dev == "cuda":
        h["gpu"] = torch.cuda.get_device_name()
        try:
            h["nvidia_smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,driver_version",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except Exception as exc:  # noqa: BLE001
            h["nvidia_smi"] = f"unavailable: {exc}"
    return h


def _paired(mine: list[float], ref: list[float] | None) -> dict[str, float | None]:
    """The paired speed-up against the eager reference: the median, quartiles and the 95 %
    confidence interval of the median (order statistics) of ``ref[r] / mine[r]`` over the reps,
    each rep having timed every provider moments apart (so a load swing that spans a rep hits
    both sides of its ratio). Empty without a reference."""
    if not ref or len(ref) != len(mine) or not all(t > 0 for t in mine):
        return {}
    ratios = [a / b for a, b in zip(ref, mine, strict=True)]
    q1, med, q3 = _quartiles(ratios)
    low, high = _median_ci(ratios)
    return {
        "speedup_paired": med,
        "speedup_paired_q1": q1,
        "speedup_paired_q3": q3,
        "speedup_ci_low": low,
        "speedup_ci_high": high,
    }


def _q(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def run_protocol(
    dev: str,
    *,
    only: set[str] | None = None,
    reps: int | None = None,
    iters: int | None = None,
    compile_ref: bool = True,
    count_launches: bool = True,
    on_row: Callable[[dict[str, Any]], Any] | None = None,
    rows: Sequence[str] | None = None,
    skip_rows: Sequence[str] | None = None,
    compile_rows: Sequence[str] | None = None,
    scale: float | None = None,
) -> dict[str, Any]:
    """Run the protocol on ``dev`` (``"cuda"``: full shapes; ``"cpu"``: the smoke shapes, or the
    protocol's shapes with the batch sizes times ``scale``).

    On the CPU the providers are the eager reference and lossforge's ``backend="torch"`` with
    value checks on (the CPU's default) and off (``lossforge_torch_unchecked``: the mode set
    around each call).

    Args:
        dev: ``"cuda"`` or ``"cpu"``.
        only: Workload ids to run (``PROTOCOL_WORKLOADS``); None = all.
        reps: Timed reps per provider (default 20 on CUDA, 3 on the CPU).
        iters: Back-to-back fwd+bwd per timed rep (default 5 on CUDA, 1 on the CPU).
        compile_ref: Also time ``torch.compile`` of the eager reference (CUDA only).
        count_launches: Count CUDA kernel launches with the profiler.
        on_row: Called with ``{"header", "results"}`` so far after every row.
        rows: Row patterns (``row_key``; see ``match_rows``) to run, in the patterns' order;
            None = every row of ``only``.
        skip_rows: Row patterns not to run.
        compile_rows: With ``compile_ref``, only these rows get the ``torch.compile`` reference;
            None = every row.
        scale: CPU only: the protocol's shapes (``workloads``' ``scale``) instead of the smoke
            shapes; default reps 7.

    Returns:
        ``{"header": ..., "results": [one dict per (row, provider)]}``.
    """
    if scale is not None and (dev == "cuda" or not 0 < scale <= 1):
        raise ValueError(f"scale is a CPU option in (0, 1], got {scale!r} on {dev!r}")
    smoke = dev != "cuda" and scale is None
    hdr = header(dev, smoke)
    hdr["scale"] = scale
    bw = bandwidth() if dev == "cuda" else None
    hdr["bandwidth_TBps"] = bw
    selected = select_rows(workloads(dev, smoke, scale=scale), only, rows, skip_rows)
    reps = reps or (20 if dev == "cuda" else 3 if smoke else 7)
    iters = iters or (5 if dev == "cuda" else 1)
    hdr["reps"], hdr["iters"] = reps, iters
    results = []
    for row in selected:
        try:
            torch.manual_seed(0)
            d = row.make()
            d["meta"] = {}
            provs = {k: _as_provider(v) for k, v in row.providers.items()}
            if dev != "cuda":
                provs = {k: v for k, v in provs.items() if k in ("eager_ref", "lossforge_torch")}
                provs["lossforge_torch_unchecked"] = _unchecked(provs["lossforge_torch"])
            elif compile_ref and (
                compile_rows is None or any(_key_matches(p, row_key(row)) for p in compile_rows)
            ):
                # Rows built in loops share lambda code objects: reset dynamo so no row hits the
                # recompile limit and silently falls back to eager.
                torch._dynamo.reset()
                ref = provs["eager_ref"]
                provs["compile_ref"] = Provider(
                    torch.compile(lambda dd, f=ref.call: f(dd), dynamic=False), ref.prepare
                )
            numel = d["x"].numel()
            # Warm-up (compile included, timed apart); providers that fail are recorded, not fatal.
            status: dict[str, str] = {}
            compile_s: dict[str, float] = {}
            for name, fn in list(provs.items()):
                try:
                    t0 = time.perf_counter()
                    for di in fn.inputs(d, 3):
                        _step(fn.call, di)
                    _sync(dev)
                    if name == "compile_ref":
                        compile_s[name] = time.perf_counter() - t0
                    status[name] = "ok"
                except Exception as exc:  # noqa: BLE001
                    first = str(exc).splitlines()[0][:160] if str(exc) else ""
                    status[name] = f"{type(exc).__name__}: {first}"
                    provs.pop(name)
            times: dict[str, list[float]] = {k: [] for k in provs}
            names = list(provs)
            for r in range(reps):  # interleaved: rotate the provider order every rep
                for k in names[r % len(names) :] + names[: r % len(names)]:
                    times[k].append((gpu_time if dev == "cuda" else cpu_time)(provs[k], d, iters))
            floor = floor_ms(row, d, iters) if dev == "cuda" else None
            ib = ideal_bytes(row, d)
            roof = ib / (bw["best"] * 1e12) * 1e3 if bw else None
            for k in names:
                med = statistics.median(times[k])
                single, fwd, bwd = zip(
                    *(split_time(provs[k], d, dev) for _ in range(5)), strict=False
                )
                rec: dict[str, Any] = {
                    "workload": row.workload,
                    "loss": row.loss,
                    "dtype": row.dtype,
                    "shape": list(row.shape),
                    "target": row.target_format,
                    "provider": k,
                    "status": "ok",
                    "via": d["meta"].get("via", "functional") if k == "lossforge_triton" else "",
                    "median_ms": med,
                    "p20_ms": _q(times[k], 0.2),
                    "p80_ms": _q(times[k], 0.8),
                    "times_ms": list(times[k]),
                    **_paired(times[k], times.get("eager_ref")),
                    "single_shot_ms": statistics.median(single),
                    "fwd_ms": statistics.median(fwd),
                    "bwd_ms": statistics.median(bwd),
                    "compile_s": compile_s.get(k),
                    "ideal_bytes": ib,
                    "roof_ms": roof,
                    "x_roof": med / roof if roof else None,
                    "eff_TBps": ib / (med * 1e-3) / 1e12 if dev == "cuda" else None,
                    "floor_ms": floor,
                    "x_floor": med / floor if floor else None,
                }
                # Memory: one separate, untimed fwd+bwd (the CPU path profiles, which is slow).
                saved, peak = memory(provs[k], d, dev)
                rec.update(
                    saved_bytes=saved,
                    peak_extra_bytes=peak,
                    peak_extra_MB=peak / 2**20,
                    saved_B_per_logit=None if saved is None else saved / numel,
                    peak_B_per_logit=peak / numel,
                )
                if dev == "cuda" and count_launches:
                    with contextlib.suppress(Exception):
                        rec["launches_fwd"], rec["launches_bwd"] = launches(provs[k], d)
                results.append(rec)
            for k, st in status.items():
                if st != "ok":
                    results.append(
                        {
                            "workload": row.workload,
                            "loss": row.loss,
                            "dtype": row.dtype,
                            "shape": list(row.shape),
                            "target": row.target_format,
                            "provider": k,
                            "status": st,
                        }
                    )
            # Ratios against the references of the same row.
            same = [
                x
                for x in results
                if x["workload"] == row.workload
                and x["loss"] == row.loss
                and x["dtype"] == row.dtype
                and x["target"] == row.target_format
                and x["shape"] == list(row.shape)  # (ML-L runs two shapes of one loss)
                and x["status"] == "ok"
            ]
            by = {x["provider"]: x for x in same}
            for x in same:
                for refname, col in (
                    ("eager_ref", "speedup_vs_eager"),
                    ("compile_ref", "speedup_vs_compile"),
                    ("liger", "speedup_vs_liger"),
                ):
                    if refname in by:
                        x[col] = by[refname]["median_ms"] / x["median_ms"]
                        if "peak_extra_bytes" in x and by[refname].get("peak_extra_bytes"):
                            x[col.replace("speedup", "mem_ratio")] = x["peak_extra_bytes"] / max(
                                by[refname]["peak_extra_bytes"], 1
                            )
            print(
                f"{row.workload:5s} {row.loss:28s} {row.dtype:9s} {row.target_format:6s} "
                + "  ".join(
                    f"{k}={by[k]['median_ms']:.3f}ms/{by[k]['peak_extra_MB']:.2f}MB" for k in names
                ),
                flush=True,
            )
        except Exception as exc:  # noqa: BLE001 - one failing row must not lose the run
            results.append(
                {
                    "workload": row.workload,
                    "loss": row.loss,
                    "dtype": row.dtype,
                    "shape": list(row.shape),
                    "target": row.target_format,
                    "provider": "*",
                    "status": f"row failed: {type(exc).__name__}: {str(exc)[:200]}",
                }
            )
            print(f"{row.workload} {row.loss} {row.dtype}: FAILED {exc!r}", flush=True)
        if on_row is not None:
            on_row({"header": hdr, "results": results})  # results so far, after each row
        d = None
        gc.collect()
        if dev == "cuda":
            torch.cuda.empty_cache()
    return {"header": hdr, "results": results}


COLUMNS = [
    "workload",
    "loss",
    "dtype",
    "target",
    "provider",
    "status",
    "via",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "single_shot_ms",
    "fwd_ms",
    "bwd_ms",
    "compile_s",
    "launches_fwd",
    "launches_bwd",
    "saved_B_per_logit",
    "peak_B_per_logit",
    "peak_extra_MB",
    "roof_ms",
    "x_roof",
    "eff_TBps",
    "floor_ms",
    "x_floor",
    "speedup_vs_eager",
    "speedup_paired",
    "speedup_ci_low",
    "speedup_ci_high",
    "speedup_vs_compile",
    "speedup_vs_liger",
    "mem_ratio_vs_eager",
    "mem_ratio_vs_compile",
    "mem_ratio_vs_liger",
]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def write(out: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    """Write ``<stem>.json`` (everything), ``.csv`` and ``.md`` (the ``COLUMNS``)."""
    directory.mkdir(parents=True, exist_ok=True)
    pj, pc, pm = directory / f"{stem}.json", directory / f"{stem}.csv", directory / f"{stem}.md"
    pj.write_text(json.dumps(out, indent=1, default=str))
    with pc.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in out["results"]:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
    lines = [
        f"# lossforge benchmark {out['header']['time']}",
        "",
        "```",
        json.dumps(out["header"], indent=1, default=str),
        "```",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in out["results"]:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in COLUMNS) + " |")
    pm.write_text("\n".join(lines) + "\n")
    return [pj, pc, pm]


def select_workloads(names: str | None) -> set[str] | None:
    """``--only`` as a set of workload ids (None = all); ``ValueError`` naming unknown ones."""
    if not names:
        return None
    chosen = {n.strip() for n in names.split(",") if n.strip()}
    unknown = sorted(chosen - set(PROTOCOL_WORKLOADS))
    if unknown:
        raise ValueError(
            f"unknown workload {', '.join(map(repr, unknown))} of the protocol; "
            f"valid: {', '.join(PROTOCOL_WORKLOADS)}"
        )
    return chosen
