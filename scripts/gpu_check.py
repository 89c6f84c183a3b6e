"""The first GPU run of the fused kernels (issue #12, item 14); run through scripts/gpu_check.sh.

    python scripts/gpu_check.py run --out DIR [--budget 540] [--dry-run]

Stages, each in its own process with a time limit (a hang or a crash costs its stage only):

1. ``env``: GPU, clocks and driver (``nvidia-smi``), torch / triton / Liger versions.
2. ``checks``, through the public loss functions with ``backend="auto"`` on CUDA tensors above
   ``AUTO_MIN_NUMEL`` (one case per fused loss):
   no host sync over forward + backward (``torch.cuda.set_sync_debug_mode("error")``, after a
   warm-up); CUDA-graph capture of forward + backward, replay equal to eager; fp16 under
   ``torch.amp.GradScaler`` at about 1M elements, gradients equal to the torch backend's; peak extra
   memory in gradient buffers; host time (one synchronised call) of ``backend="triton"`` vs
   ``"torch"`` at a tiny shape, interleaved; the size from which the fused path is faster (for
   ``AUTO_MIN_NUMEL``); ``torch.compile(fullgraph=True)`` equal to eager.
3. ``pytest``: the GPU tests (``-m gpu``, ``test_gpu_integration``) and the fused-path suites
   (``test_fused_path``, ``test_parity``) on the GPU.
4. ``bench``: the benchmark protocol (``python -m benchmarks.run``) rows of PERFORMANCE.md section
   6 that fit the remaining time (DET and SEG with the ``torch.compile`` reference first, then the
   rest without it); the protocol rewrites its files after every row, so a cut keeps what ran.
5. ``summary``: every target, the measured value, met or not: ``summary.md`` / ``summary.json``,
   and a one-screen table on stdout.

``--dry-run`` runs every stage on the CPU: the kernels through Triton's interpreter on tiny shapes,
a dispatch mode that fails on value reads instead of the CUDA sync debug mode, allocator events
instead of ``max_memory_allocated``, ``pytest --collect-only``, the protocol's ``--smoke`` path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# ---- the bars (PERFORMANCE.md section 6, issue #12) ----------------------------------------------

HOST_RATIO = 1.5  # host time of the fused path vs the torch backend (tiny input)
PEAK_BUFFERS = 1.05  # peak extra memory, in gradient buffers (the buffer plus small partials)
FP16_NONZERO = 0.99  # share of the torch backend's non-zero fp16 gradients the fused path keeps
FP16_REL_ERR = 2e-3  # max |fused - torch| / max |torch| of those gradients (an fp16 ulp is 1e-3)


# ---- stage runner --------------------------------------------------------------------------------


def _stage(
    name: str, cmd: list[str], limit: float, log: Path | None = None, env: dict | None = None
) -> dict[str, Any]:
    """Run one stage in a subprocess with a wall-clock limit; its output goes to ``log``."""
    t0 = time.monotonic()
    limit = max(limit, 5.0)
    print(f"[gpu_check] {name}: {' '.join(cmd[1:])} (limit {limit:.0f} s)", flush=True)
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = "timeout"
        out = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        out += (
            (exc.stderr or b"").decode(errors="replace")
            if isinstance(exc.stderr, bytes)
            else (exc.stderr or "")
        )
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"==== {name}: {' '.join(cmd)} -> {rc}\n{out}\n")
    return {
        "stage": name,
        "rc": rc,
        "seconds": round(time.monotonic() - t0, 1),
        "tail": out[-2000:],
    }


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw").mkdir(exist_ok=True)
    for stale in ("pytest.txt", "checks.json", "env.json"):
        (out / stale).unlink(missing_ok=True)
    start = time.monotonic()
    deadline = start + args.budget
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    py = [sys.executable, str(Path(__file__).resolve())]
    dry = ["--dry-run"] if args.dry_run else []
    stages = []

    def left(reserve: float = 15.0) -> float:
        return deadline - time.monotonic() - reserve

    stages.append(_stage("env", [*py, "env", "--out", str(out), *dry], min(30, left()), env=env))
    stages.append(
        _stage("checks", [*py, "checks", "--out", str(out), *dry], min(150, left()), env=env)
    )
    # pytest: the GPU-marked tests first, then the fused-path suites.
    pylog = out / "pytest.txt"
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--maxfail=20", "-rfE"]
    if args.dry_run:
        base.append("--collect-only")
    pytest_env = dict(env)
    pytest_env.pop("TRITON_INTERPRET", None)  # tests/kernels/conftest sets it without a GPU
    if importlib.util.find_spec("pytest") is None:
        pylog.write_text("==== pytest: not installed -> skipped\n(no output)\n")
        base = [sys.executable, "-c", "print('pytest is not installed')"]
    stages.append(
        _stage(
            "pytest-gpu",
            [*base, "-m", "gpu", "tests/kernels"],
            min(90, left()),
            pylog,
            pytest_env,
        )
    )
    stages.append(
        _stage(
            "pytest-fused",
            [
                *base,
                "tests/kernels/test_fused_path.py",
                "tests/kernels/test_parity.py",
                "-k",
                "not weight_layouts",
            ],
            min(90, left()),
            pylog,
            pytest_env,
        )
    )
    # The benchmark rows that fit: DET and SEG with the compile reference, then the rest.
    bench = [sys.executable, "-m", "benchmarks.run", "--out", str(out / "raw")]
    if args.dry_run:
        plans = [("bench-smoke", ["--smoke", "--only", "ML-S,REG", "--reps", "1"])]
    else:
        plans = [
            ("bench-det-seg", ["--only", "DET,SEG", "--reps", "10", "--iters", "3"]),
            (
                "bench-rest",
                ["--only", "LLM,ML-S,REG,ML-L", "--reps", "10", "--iters", "3", "--no-compile"],
            ),
        ]
    for i, (stem, flags) in enumerate(plans):
        share = 0.6 if i == 0 and len(plans) > 1 else 1.0
        stages.append(
            _stage(
                stem,
                [*bench, "--stem", stem, *flags],
                left() * share,
                out / "raw" / "bench.log",
                env,
            )
        )
    stages.append(
        _stage("summary", [*py, "summary", "--out", str(out), *dry], max(left(0), 10), env=env)
    )
    summary = out / "summary.txt"
    if summary.exists():
        print(summary.read_text())
    elapsed = time.monotonic() - start
    print(f"[gpu_check] {elapsed:.0f} s; results in {out}")
    (out / "stages.json").write_text(json.dumps(stages, indent=1))
    return 0 if all(s["rc"] == 0 for s in stages if s["stage"] in ("env", "summary")) else 1


# ---- stage 1: environment ------------------------------------------------------------------------


def env_stage(args: argparse.Namespace) -> int:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dry_run": args.dry_run,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        from importlib.metadata import version

        import liger_kernel  # noqa: F401

        info["liger_kernel"] = version("liger_kernel")
    except Exception:  # noqa: BLE001 - optional
        info["liger_kernel"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sms=p.multi_processor_count, memory_GiB=p.total_memory / 2**30)
    smi = shutil.which("nvidia-smi")
    if smi:
        q = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu"
        try:
            info["nvidia_smi"] = subprocess.run(
                [smi, f"--query-gpu={q}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            ).stdout.strip()
        except subprocess.TimeoutExpired:
            info["nvidia_smi"] = "timeout"
    (Path(args.out) / "env.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return 0


# ---- stage 2: checks through the public functions ------------------------------------------------


def _cases(dev: str, dry: bool, big: bool = False) -> dict[str, Callable[[Any], tuple]]:
    """name -> make(dtype) -> (function, input leaf, target, kwargs): one case per fused loss.

    Shapes: above ``AUTO_MIN_NUMEL`` on the GPU (``big``: about 1M elements, for fp16 under a
    GradScaler), tiny on the CPU (the interpreter)."""
    import torch

    import lossforge.functional as LF

    if dry:
        rows, c, seg, reg = 64, 8, (2, 4, 4, 4), 64
    elif big:
        rows, c, seg, reg = 1024, 1024, (4, 19, 128, 128), 262_144
    else:
        rows, c, seg, reg = 8192, 80, (2, 19, 64, 64), 65_536

    def g(seed: int) -> Any:  # every make() call draws the same values
        return torch.Generator().manual_seed(seed)

    def x(*shape: int, dtype: Any) -> Any:
        return (torch.randn(*shape, generator=g(1)) * 3 - 2).to(dev, dtype).requires_grad_()

    def idx(n: int, k: int, background: bool = False) -> Any:
        t = torch.randint(0, k + int(background), (n,), generator=g(2))
        t[::50] = -2 if background else -100
        return t.to(dev)

    def seg_t() -> Any:
        t = torch.randint(0, seg[1], (seg[0], *seg[2:]), generator=g(3))
        t[:, ::7] = 255
        return t.to(dev)

    dense = (torch.rand(rows, c, generator=g(4)) < 0.05).float().to(dev)
    counts = [float(1 + (7 * i) % 13) for i in range(c)]
    return {
        "bce": lambda dt: (
            LF.binary_cross_entropy_with_logits,
            x(rows, c, dtype=dt),
            dense,
            {"pos_weight": [2.0] * c},
        ),
        "sigmoid_focal": lambda dt: (
            LF.sigmoid_focal_loss,
            x(rows, c, dtype=dt),
            idx(rows, c, True),
            {"ignore_index": -2},
        ),
        "asl": lambda dt: (LF.asymmetric_loss, x(rows, c, dtype=dt), dense, {}),
        "balanced_bce": lambda dt: (
            LF.balanced_binary_cross_entropy,
            x(rows, c, dtype=dt),
            dense,
            {"beta": 0.9},
        ),
        "cross_entropy": lambda dt: (
            LF.cross_entropy,
            x(rows, c, dtype=dt),
            idx(rows, c),
            {"class_weight": counts, "label_smoothing": 0.1},
        ),
        "logit_adjusted": lambda dt: (
            LF.logit_adjusted_loss,
            x(rows, c, dtype=dt),
            idx(rows, c),
            {"class_counts": counts},
        ),
        "softmax_focal": lambda dt: (
            LF.softmax_focal_loss,
            x(*seg, dtype=dt),
            seg_t(),
            {"ignore_index": 255, "alpha": [0.5] * seg[1]},
        ),
        "dice": lambda dt: (LF.dice_loss, x(*seg, dtype=dt), seg_t(), {"ignore_index": 255}),
        "smooth_l1": lambda dt: (
            LF.smooth_l1_loss,
            x(reg, 4, dtype=dt),
            torch.randn(reg, 4, generator=g(5)).to(dev),
            {"beta": 1 / 9},
        ),
    }


def _sync(dev: str) -> None:
    import torch

    if dev == "cuda":
        torch.cuda.synchronize()


@contextmanager
def _no_sync_guard(dev: str) -> Iterator[None]:
    """CUDA: the sync debug mode raises on any synchronising call. CPU (dry run): a dispatch mode
    that raises on value reads (``aten._local_scalar_dense``), the CPU analogue."""
    import torch

    if dev == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if func.overloadpacket.__name__ == "_local_scalar_dense":
                raise RuntimeError("host read of a tensor value (a sync on a GPU)")
            return func(*args, **(kwargs or {}))

    with _Reads():
        yield


def _peak(dev: str, fn: Callable[[], None]) -> int:
    """Peak bytes allocated above the state before ``fn``."""
    import torch

    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


#: Checks whose value means nothing through the CPU interpreter (not judged in a dry run).
_TIMING = ("host time", "peak extra", "auto threshold")
DRY = False


def _record(rows: list, check: str, loss: str, value: Any, target: str, met: bool | None, note=""):
    if DRY and check.startswith(_TIMING) and met is not None:
        met, note = None, (note + " dry run: not judged").strip()
    rows.append(
        {"check": check, "loss": loss, "value": value, "target": target, "met": met, "note": note}
    )
    flag = {True: "met", False: "NOT MET", None: "-"}[met]
    print(f"{check:28s} {loss:16s} {value!s:>24s}  {target:22s} {flag} {note}", flush=True)


def checks_stage(args: argparse.Namespace) -> int:
    import torch

    global DRY
    dry = DRY = args.dry_run
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    dev = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run")
        return 2
    from lossforge import _dispatch, value_checks
    from lossforge.kernels import _common

    rows: list[dict[str, Any]] = []
    path = Path(args.out) / "checks.json"

    def save() -> None:
        path.write_text(json.dumps({"device": dev, "rows": rows}, indent=1, default=str))

    scope = _dispatch.cpu_kernels() if dry else _nullcontext()
    with scope:
        cases = _cases(dev, dry)
        for name, make in cases.items():
            fn, x, t, kw = make(torch.float32)

            def step(backend: str, fn=fn, x=x, t=t, kw=kw, go=None) -> Any:
                x.grad = None
                loss = fn(x, t, backend=backend, **kw)
                loss.backward(go)
                return loss

            # a. no host sync on the "auto" path (after a warm-up: kernels, option constants);
            # value checks as CUDA's default ("auto" reads no values on a GPU)
            try:
                with value_checks(False):
                    for _ in range(2):
                        step("auto")
                    _sync(dev)
                    fused = _uses_kernel(fn(x, t, backend="auto", **kw))
                    go = torch.ones((), device=dev)
                    with _no_sync_guard(dev):
                        step("auto", go=go)
                _record(
                    rows,
                    "no host sync (auto)",
                    name,
                    "0 syncs",
                    "0 syncs",
                    fused,
                    "" if fused else "not fused",
                )
            except Exception as exc:  # noqa: BLE001
                _record(rows, "no host sync (auto)", name, "sync", "0 syncs", False, _short(exc))
            save()
            # b. CUDA-graph capture of forward + backward
            if dev == "cuda":
                try:
                    ok = _graph_matches(step, x)
                    _record(
                        rows, "CUDA graph = eager", name, "equal" if ok else "differs", "equal", ok
                    )
                except Exception as exc:  # noqa: BLE001
                    _record(
                        rows,
                        "CUDA graph = eager",
                        name,
                        "capture failed",
                        "equal",
                        False,
                        _short(exc),
                    )
            # d. peak extra memory in gradient buffers
            try:
                step("auto")
                x.grad = None
                _sync(dev)
                grad_bytes = x.numel() * x.element_size()
                peak = _peak(dev, lambda: step("auto"))
                x.grad = None
                ref = _peak(dev, lambda: step("torch"))
                ratio = peak / grad_bytes
                _record(
                    rows,
                    "peak extra (grad buffers)",
                    name,
                    f"{ratio:.3f} (torch {ref / grad_bytes:.2f})",
                    f"<= {PEAK_BUFFERS}",
                    ratio <= PEAK_BUFFERS,
                )
            except Exception as exc:  # noqa: BLE001
                _record(
                    rows,
                    "peak extra (grad buffers)",
                    name,
                    "error",
                    f"<= {PEAK_BUFFERS}",
                    False,
                    _short(exc),
                )
            save()
            del x, t
        # c. fp16 under a GradScaler, ~1M elements ("mean" over them: the old design flushed)
        for name, make in _cases(dev, dry, big=True).items():
            try:
                scaler = torch.amp.GradScaler(dev)  # scale 65536: the grad_output of the loss
                grads = {}
                for backend in ("torch", "triton"):
                    fn, x, t, kw = make(torch.float16)  # the same values for both backends
                    scaler.scale(fn(x, t, backend=backend, **kw)).backward()
                    grads[backend] = x.grad.float()
                    del x
                g, ref = grads["triton"], grads["torch"]
                nz = int(torch.count_nonzero(g)) / max(int(torch.count_nonzero(ref)), 1)
                err = float((g - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
                _record(
                    rows,
                    "fp16 GradScaler = torch",
                    name,
                    f"nonzero {nz:.4f}, err {err:.1e}",
                    f">= {FP16_NONZERO}, <= {FP16_REL_ERR:g}",
                    nz >= FP16_NONZERO and err <= FP16_REL_ERR,
                )
            except Exception as exc:  # noqa: BLE001
                _record(rows, "fp16 GradScaler = torch", name, "error", "", False, _short(exc))
            save()
        # e. host time at a tiny shape: one synchronised forward + backward, interleaved
        tiny = {"rows": (256, 80) if not dry else (16, 8)}
        for name, make in _tiny_cases(dev, dry, tiny["rows"]).items():
            fn, x, t, kw = make()
            try:
                times: dict[str, list[float]] = {"torch": [], "triton": []}
                for _ in range(1 if dry else 3):
                    for b in times:
                        _timed_step(fn, x, t, kw, b, dev)
                reps = 3 if dry else 40
                for r in range(reps):
                    for b in ("torch", "triton") if r % 2 else ("triton", "torch"):
                        times[b].append(_timed_step(fn, x, t, kw, b, dev))
                ratios = [a / b for a, b in zip(times["triton"], times["torch"], strict=True)]
                med = statistics.median(ratios)
                _record(
                    rows,
                    "host time triton/torch",
                    name,
                    f"{med:.2f} [{min(ratios):.2f}-{max(ratios):.2f}] "
                    f"({statistics.median(times['triton']) * 1e6:.0f} us)",
                    f"<= {HOST_RATIO}",
                    med <= HOST_RATIO,
                )
            except Exception as exc:  # noqa: BLE001
                _record(
                    rows,
                    "host time triton/torch",
                    name,
                    "error",
                    f"<= {HOST_RATIO}",
                    False,
                    _short(exc),
                )
            save()
        # e'. the input size from which the fused path is faster back to back (AUTO_MIN_NUMEL)
        try:
            cross = _crossover(dev, dry)
            _record(
                rows,
                "auto threshold (numel)",
                "bce",
                f"fused faster from {cross}",
                f"set {_dispatch.AUTO_MIN_NUMEL}",
                None,
                "LOSSFORGE_AUTO_MIN_NUMEL overrides",
            )
        except Exception as exc:  # noqa: BLE001
            _record(rows, "auto threshold (numel)", "bce", "error", "", None, _short(exc))
        # f. torch.compile(fullgraph) = eager
        for name in ("bce", "cross_entropy"):
            fn, x, t, kw = _cases(dev, dry)[name](torch.float32)
            try:
                x.grad = None
                fn(x, t, backend="auto", **kw).backward()
                want = x.grad.clone()
                x.grad = None
                import torch._dynamo

                torch._dynamo.reset()
                compiled = torch.compile(
                    lambda z, fn=fn, t=t, kw=kw: fn(z, t, backend="auto", **kw),
                    fullgraph=True,
                    backend="aot_eager" if dry else "inductor",
                )
                compiled(x).backward()
                ok = bool(torch.allclose(x.grad, want, rtol=1e-5, atol=1e-6))
                _record(
                    rows, "torch.compile = eager", name, "equal" if ok else "differs", "equal", ok
                )
            except Exception as exc:  # noqa: BLE001
                _record(rows, "torch.compile = eager", name, "error", "equal", False, _short(exc))
            save()
    rows.append({"check": "max partials", "loss": "-", "value": _common.MAX_PARTIALS})
    save()
    return 0


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:150] if text else ''}"


def _uses_kernel(out: Any) -> bool:
    seen, todo = set(), [out.grad_fn]
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        if "Fused" in type(f).__name__:
            return True
        todo.extend(g for g, _ in f.next_functions)
    return False


def _graph_matches(step: Callable[..., Any], leaf: Any) -> bool:
    """Capture forward + backward of ``step`` in a CUDA graph; the replay's loss and gradient of
    ``leaf`` equal an eager call's."""
    import torch

    ref = step("auto").detach().clone()
    g_ref = leaf.grad.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step("auto")
    torch.cuda.current_stream().wait_stream(side)
    leaf.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step("auto")
    graph.replay()
    torch.cuda.synchronize()
    return bool(torch.allclose(loss, ref) and torch.allclose(leaf.grad, g_ref))


def _tiny_cases(dev: str, dry: bool, shape: tuple[int, int]) -> dict[str, Callable[[], tuple]]:
    import torch

    import lossforge.functional as LF

    n, c = shape
    g = torch.Generator().manual_seed(1)

    def x() -> Any:
        return (torch.randn(n, c, generator=g) * 3).to(dev).requires_grad_()

    dense = (torch.rand(n, c, generator=g) < 0.05).float().to(dev)
    idx = torch.randint(0, c, (n,), generator=g).to(dev)
    return {
        "bce": lambda: (LF.binary_cross_entropy_with_logits, x(), dense, {}),
        "sigmoid_focal": lambda: (LF.sigmoid_focal_loss, x(), idx, {}),
        "asl": lambda: (LF.asymmetric_loss, x(), dense, {}),
        "cross_entropy": lambda: (LF.cross_entropy, x(), idx, {}),
        "smooth_l1": lambda: (LF.smooth_l1_loss, x(), dense, {"beta": 1 / 9}),
    }


def _timed_step(fn: Any, x: Any, t: Any, kw: dict, backend: str, dev: str) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    x.grad = None
    fn(x, t, backend=backend, **kw).backward()
    _sync(dev)
    return time.perf_counter() - t0


def _crossover(dev: str, dry: bool) -> int | None:
    """Smallest BCE input (rows x 80) at which ``"triton"`` is no slower than ``"torch"`` over 10
    back-to-back forward + backward calls."""
    import torch

    import lossforge.functional as LF

    sizes = [2**k for k in ((8,) if dry else range(10, 23))]
    calls = 2 if dry else 10
    for numel in sizes:
        rows = max(numel // 80, 1)
        x = torch.randn(rows, 80, device=dev).requires_grad_()
        y = (torch.rand(rows, 80, device=dev) < 0.05).float()
        best = {}
        for backend in ("torch", "triton", "torch", "triton"):
            for _ in range(2):
                LF.binary_cross_entropy_with_logits(x, y, backend=backend).backward()
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(calls):
                LF.binary_cross_entropy_with_logits(x, y, backend=backend).backward()
            _sync(dev)
            dt = time.perf_counter() - t0
            best[backend] = min(best.get(backend, dt), dt)
        if best["triton"] <= best["torch"]:
            return rows * 80
    return None


# ---- stage 5: summary ----------------------------------------------------------------------------

# (workload, dtype or None, loss filter or None, column, bound, "<=" / ">=", what)
BARS: list[tuple[str, str | None, str | None, str, float, str, str]] = [
    ("DET", "float32", None, "x_roof", 1.3, "<=", "DET fp32 x roof"),
    ("DET", "bfloat16", None, "x_roof", 1.5, "<=", "DET bf16 x roof"),
    ("DET", None, None, "speedup_vs_compile", 1.5, ">=", "DET vs torch.compile"),
    ("ML-L", "float32", None, "x_roof", 1.3, "<=", "ML-L fp32 x roof"),
    ("ML-L", "bfloat16", None, "x_roof", 1.5, "<=", "ML-L bf16 x roof"),
    ("ML-L", None, None, "speedup_vs_compile", 1.5, ">=", "ML-L vs torch.compile"),
    ("SEG", None, "ce", "x_roof", 1.5, "<=", "SEG CE x roof"),
    ("SEG", None, "softmax_focal", "x_roof", 1.5, "<=", "SEG focal x roof"),
    ("SEG", None, "ce", "speedup_vs_compile", 3.0, ">=", "SEG CE vs torch.compile"),
    ("SEG", None, "softmax_focal", "speedup_vs_compile", 3.0, ">=", "SEG focal vs compile"),
    ("SEG", None, "dice", "x_floor", 2.0, "<=", "SEG dice x 1R1W floor"),
    ("LLM", None, None, "x_roof", 1.2, "<=", "LLM CE x 2R1W roof"),
    ("LLM", None, None, "speedup_vs_liger", 1.0, ">=", "LLM CE vs Liger"),
]


def _bench_rows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((out / "raw").glob("bench-*.json")):
        try:
            rows += json.loads(f.read_text()).get("results", [])
        except (OSError, ValueError):
            continue
    return rows


def _bars(bench: list[dict[str, Any]], dry: bool) -> list[dict[str, Any]]:
    out = []
    fused = [
        r for r in bench if r.get("provider") == "lossforge_triton" and r.get("status") == "ok"
    ]
    for wl, dt, loss, col, bound, op, what in BARS:
        sel = [
            r
            for r in fused
            if r["workload"] == wl
            and (dt is None or r["dtype"] == dt)
            and (loss is None or r["loss"].startswith(loss))
            and r.get(col) is not None
        ]
        if not sel:
            out.append({"target": f"{what} {op} {bound:g}", "value": "not measured", "met": None})
            continue
        vals = [(r[col], f"{r['loss']} {r['dtype'][:4]} {r['target']}") for r in sel]
        ok = [v for v, _ in vals if (v <= bound if op == "<=" else v >= bound)]
        worst = max(vals) if op == "<=" else min(vals)
        out.append(
            {
                "target": f"{what} {op} {bound:g}",
                "value": f"{len(ok)}/{len(vals)} rows, worst {worst[0]:.2f} ({worst[1]})",
                "met": len(ok) == len(vals),
            }
        )
    # per logit extra memory: at most the logits' own bytes (the gradient buffer)
    for wl in ("DET", "ML-L", "SEG", "LLM", "REG"):
        sel = [r for r in fused if r["workload"] == wl and r.get("peak_B_per_logit") is not None]
        if not sel:
            continue
        size = {"float32": 4, "bfloat16": 2, "float16": 2}
        over = [r for r in sel if r["peak_B_per_logit"] > size.get(r["dtype"], 4) * PEAK_BUFFERS]
        worst = max(sel, key=lambda r: r["peak_B_per_logit"] / size.get(r["dtype"], 4))
        out.append(
            {
                "target": f"{wl} extra memory <= b B/logit",
                "value": f"{len(sel) - len(over)}/{len(sel)} rows, worst "
                f"{worst['peak_B_per_logit']:.2f} B ({worst['loss']} {worst['dtype'][:4]})",
                "met": not over,
            }
        )
    # ML-S: wall clock per fwd+bwd <= eager BCE's
    for dt in ("float32", "bfloat16"):
        ref = [
            r
            for r in bench
            if r.get("workload") == "ML-S"
            and r.get("dtype") == dt
            and r.get("loss") == "bce"
            and r.get("provider") == "eager_ref"
            and r.get("status") == "ok"
        ]
        sel = [r for r in fused if r["workload"] == "ML-S" and r["dtype"] == dt]
        if ref and sel:
            worst = max(sel, key=lambda r: r["median_ms"])
            out.append(
                {
                    "target": f"ML-S {dt[:4]} <= eager BCE",
                    "value": f"{worst['median_ms']:.3f} vs {ref[0]['median_ms']:.3f} ms "
                    f"({worst['loss']})",
                    "met": worst["median_ms"] <= ref[0]["median_ms"],
                }
            )
    if dry:
        for b in out:
            b["note"] = "dry run (CPU smoke shapes): not a measurement of the bar"
            b["met"] = None
    return out


def _pytest_summary(out: Path) -> list[dict[str, Any]]:
    log = out / "pytest.txt"
    if not log.exists():
        return [{"target": "GPU tests pass", "value": "not run", "met": None}]
    rows = []
    for block in log.read_text().split("==== ")[1:]:
        head, _, body = block.partition("\n")
        name = head.split(":", 1)[0]
        rc = head.rsplit("-> ", 1)[-1].strip()
        last = [ln for ln in body.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        met = rc == "0"
        rows.append({"target": f"{name} pass", "value": f"rc {rc}: {last[0][:70]}", "met": met})
    return rows


def summary_stage(args: argparse.Namespace) -> int:
    out = Path(args.out)
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    checks = json.loads((out / "checks.json").read_text()) if (out / "checks.json").exists() else {}
    bench = _bench_rows(out)
    table: list[dict[str, Any]] = []
    # checks, aggregated per check over the losses
    by: dict[str, list[dict[str, Any]]] = {}
    for r in checks.get("rows", []):
        if "met" in r:
            by.setdefault(r["check"], []).append(r)
    for check, rs in by.items():
        flags = [r["met"] for r in rs if r["met"] is not None]
        bad = [r for r in rs if r["met"] is False]
        if check in ("peak extra (grad buffers)", "host time triton/torch"):
            worst = max(rs, key=lambda r: _num(r["value"]))
            value = f"worst {str(worst['value']).split(' (')[0]} ({worst['loss']})"
        elif bad:
            value = "fails: " + ", ".join(
                f"{r['loss']} ({r['note'] or r['value']})" for r in bad[:3]
            )
        else:
            value = "; ".join(str(r["value"]) for r in rs[:1])
        table.append(
            {
                "target": f"{check} {rs[0]['target']}".strip(),
                "value": f"{len(flags) - len(bad)}/{len(flags)} losses, {value}"
                if flags
                else value,
                "met": (not bad) if flags else None,
            }
        )
    if not by:
        table.append({"target": "checks", "value": "not run", "met": None})
    table += _pytest_summary(out)
    table += _bars(bench, bool(args.dry_run))
    merged = {"header": env, "results": bench}
    (out / "bench.json").write_text(json.dumps(merged, indent=1, default=str))
    (out / "bench.md").write_text(_bench_md(bench))
    (out / "summary.json").write_text(
        json.dumps({"env": env, "summary": table, "checks": checks}, indent=1, default=str)
    )
    lines = [
        f"# gpu_check {env.get('time', '')}: {env.get('gpu', 'CPU dry run')}, torch "
        f"{env.get('torch')}, triton {env.get('triton')}, liger {env.get('liger_kernel')}",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for r in table:
        flag = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['target']} | {r['value']} | {flag} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    text = [lines[0], ""]
    for r in table:
        flag = {True: "met", False: "NOT MET", None: "-"}[r["met"]]
        text.append(f"{r['target'][:44]:44s} {str(r['value'])[:78]:78s} {flag}")
    (out / "summary.txt").write_text("\n".join(text) + "\n")
    return 0


def _num(v: Any) -> float:
    try:
        return float(str(v).split()[0])
    except (ValueError, IndexError):
        return float("inf")


def _bench_md(rows: list[dict[str, Any]]) -> str:
    cols = [
        "workload",
        "loss",
        "dtype",
        "target",
        "provider",
        "median_ms",
        "x_roof",
        "x_floor",
        "peak_B_per_logit",
        "speedup_vs_eager",
        "speedup_vs_compile",
        "speedup_vs_liger",
        "status",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:.3g}" if isinstance(v, float) else ("" if v is None else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ---- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("run", "env", "checks", "summary"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for everything (run)")
    ap.add_argument("--dry-run", action="store_true", help="every stage on the CPU, tiny shapes")
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return {"run": run, "env": env_stage, "checks": checks_stage, "summary": summary_stage}[
        args.stage
    ](args)


if __name__ == "__main__":
    sys.exit(main())
