"""The first GPU run of the fused kernels (issue #12, item 14); run through scripts/gpu_check.sh.

    python scripts/gpu_check.py run --out DIR [--budget 480] [--start-epoch T] [--dry-run]

The budget (default 480 s: a minute of margin under the 9 minutes) counts from ``--start-epoch``
(``gpu_check.sh`` passes its own start, before the optional wheel install). Each stage runs in its
own process group with a time limit and its own log (``logs/<stage>.log``); no stage starts with
less than ``MIN_STAGE`` s left; at its limit a stage gets SIGINT (pytest prints its counts), then
SIGKILL ``GRACE`` s later. ``stages.json`` and the summary are rewritten after every stage.

1. ``env``: GPU, clocks and driver (``nvidia-smi``), torch / triton / Liger versions, and the
   ``LOSSFORGE_*`` / ``TRITON_*`` / ``CUDA_LAUNCH_BLOCKING`` variables as found (the timing stages
   run without the forcing ones, ``FORCING_ENV``).
2. ``checks``, through the public loss functions with ``backend="auto"`` on CUDA tensors above
   ``AUTO_MIN_NUMEL`` (one case per fused loss):
   no host sync over forward + backward (``torch.cuda.set_sync_debug_mode("error")``, after a
   warm-up); CUDA-graph capture of forward + backward, replay equal to eager; fp16 under
   ``torch.amp.GradScaler`` at about 1M elements, gradients equal to the torch backend's; peak extra
   memory in gradient buffers; host time (one synchronised call) of ``backend="triton"`` vs
   ``"torch"`` at a tiny shape, interleaved; the size from which the fused path is faster (for
   ``AUTO_MIN_NUMEL``); ``torch.compile(fullgraph=True)`` equal to eager.
3. ``pytest-gpu``: ``-m gpu`` over every test file with GPU-marked tests (``tests/test_dice.py``
   included); the test dependencies (``TEST_DEPS``) are checked first.
4. ``bench-key``: one representative benchmark row per target first (``KEY_ROWS``, through
   ``python -m benchmarks.run --rows``), the ``torch.compile`` reference on ``COMPILE_ROWS`` only.
5. ``bench-llm``: the LLM row with Liger, in a reserved slice.
6. ``pytest-fused``: the fused-path suites (``test_fused_path``, ``test_parity``) on the GPU.
7. ``bench-rest``: every other row, as time allows, without the compile reference. The protocol
   rewrites its files after every row, so a cut keeps what ran.

The summary (``summary.txt`` / ``.md`` / ``.json``): one line per stage (return code, "timeout"
or "skipped"), then every target of PERFORMANCE.md with the measured value and met / NOT MET /
not run; a failed row counts as not met and its error is printed under the target.

``--dry-run`` runs every stage on the CPU: the kernels through Triton's interpreter on tiny shapes,
a dispatch mode that fails on value reads instead of the CUDA sync debug mode, allocator events
instead of ``max_memory_allocated``, ``pytest --collect-only``, the protocol's ``--smoke`` path.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
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


# ---- the plan ------------------------------------------------------------------------------------

DEFAULT_BUDGET = 480.0  # seconds: 9 minutes less a minute of margin (start-up, a slow kill, output)
SUMMARY_RESERVE = 5.0  # seconds kept at the end for the last summary
GRACE = 8.0  # seconds between SIGINT (pytest prints its counts) and SIGKILL
MIN_STAGE = 10.0  # a stage with less than this left is not started
BENCH_FLAGS = ["--reps", "10", "--iters", "3", "--no-launches"]
#: Stage names in run order; the summary marks those that did not run.
STAGES = (
    "env",
    "checks",
    "pytest-gpu",
    "bench-key",
    "bench-llm",
    "pytest-fused",
    "bench-rest",
)
PYTEST_STAGES = ("pytest-gpu", "pytest-fused")
#: One representative row per bar first (``benchmarks.run --rows``, in this order) ...
KEY_ROWS = (
    "DET:sigmoid_focal_g2:float32:index",
    "DET:sigmoid_focal_g2:bfloat16:index",
    "SEG:ce_ignore[NCHW]:float32",
    "SEG:softmax_focal[NCHW]:float32",
    "SEG:dice[NCHW]:float32",
    "ML-L:asl:float32:dense:4096x9605",
    "ML-L:asl:bfloat16:dense:4096x9605",
    "ML-S",
)
#: ... of which these also time the torch.compile reference (the "vs torch.compile" bars) ...
COMPILE_ROWS = (
    "DET:sigmoid_focal_g2:float32:index",
    "SEG:ce_ignore[NCHW]:float32",
    "SEG:softmax_focal[NCHW]:float32",
    "ML-L:asl:float32:dense:4096x9605",
)
#: ... then the LLM row with Liger in a reserved slice, then every other row without compile.
LLM_ROWS = ("LLM:ce_ls0",)
#: (stage, cap in seconds, seconds kept for the stages after it)
LIMITS = {
    "env": (30.0, 0.0),  # (a cold `import torch` and nvidia-smi)
    "checks": (120.0, 240.0),
    "pytest-gpu": (60.0, 180.0),
    "bench-key": (200.0, 140.0),  # (keeps the LLM slice and the fused-kernel tests' minute)
    "bench-llm": (75.0, 60.0),
    "pytest-fused": (60.0, 0.0),
    "bench-rest": (float("inf"), 0.0),
}
#: Environment variables recorded in env.json; the timing stages (checks, bench) run without the
#: forcing ones (a blocking launch, value checks or a dispatch threshold set from outside).
RECORDED_ENV = ("LOSSFORGE_", "TRITON_", "CUDA_LAUNCH_BLOCKING", "CUDA_VISIBLE_DEVICES")
FORCING_ENV = ("CUDA_LAUNCH_BLOCKING", "LOSSFORGE_CHECKS", "LOSSFORGE_AUTO_MIN_NUMEL")
#: Modules the test suite imports at collection (tests/conftest.py: hypothesis).
TEST_DEPS = ("pytest", "hypothesis")


# ---- stage runner --------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: a reader (or a kill)
    never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _load_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _wait(proc: subprocess.Popen, limit: float, grace: float = GRACE) -> int | str:
    """Wait up to ``limit`` s; then SIGINT (pytest prints its summary, the protocol has written its
    rows), ``grace`` s more, then SIGKILL to the stage's process group. The return code or
    ``"timeout"``."""
    try:
        rc: int | str = proc.wait(timeout=max(limit, 0.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        rc = "timeout"
    except BaseException:  # Ctrl-C of the whole check: take the stage down with it
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    _kill_group(proc, signal.SIGKILL)  # leftover workers (compile pools) holding the GPU
    return rc


def _tail(path: Path, n: int = 2000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - n, 0))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _stage(
    name: str, cmd: list[str], limit: float, log: Path, env: dict | None = None
) -> dict[str, Any]:
    """Run one stage in its own process group with a wall-clock limit; its output goes to its own
    ``log`` (written as it runs, so a kill keeps it)."""
    t0 = time.monotonic()
    print(f"[gpu_check] {name} (limit {limit:.0f} s)", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # a background job of a non-interactive shell starts with SIGINT ignored, and its
                # children inherit that: pytest would then die at its limit without its counts
                preexec_fn=_default_sigint,
            )
        except OSError as exc:
            fh.write(f"could not start: {exc}\n")
            return {"stage": name, "rc": "not started", "seconds": 0.0, "limit": round(limit)}
        rc = _wait(proc, limit)
    return {
        "stage": name,
        "rc": rc,
        "seconds": round(time.monotonic() - t0, 1),
        "limit": round(limit),
        "log": str(log),
        "tail": _tail(log),
    }


def _gpu_test_files() -> list[str]:
    """The test files that hold GPU-marked tests (``-m gpu`` over these, not a whole-suite
    collection)."""
    found = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        try:
            if "mark.gpu" in f.read_text(errors="replace"):
                found.append(str(f.relative_to(ROOT)))
        except OSError:
            continue
    return found or ["tests/kernels"]


def _plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(stage, command) in run order."""
    py = [sys.executable, str(Path(__file__).resolve())]
    out = str(Path(args.out).resolve())
    dry = ["--dry-run"] if args.dry_run else []
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--maxfail=20"]
    pytest += ["-rfE", "--collect-only"] if args.dry_run else ["-rfE"]
    bench = [sys.executable, "-m", "benchmarks.run", "--out", str(Path(out) / "raw")]
    flags = ["--smoke", "--reps", "1"] if args.dry_run else BENCH_FLAGS
    logs = Path(out) / "logs"
    return [
        ("env", [*py, "env", "--out", out, *dry]),
        ("checks", [*py, "checks", "--out", out, *dry]),
        (
            "pytest-gpu",
            [*pytest, f"--junitxml={logs / 'pytest-gpu.xml'}", "-m", "gpu", *_gpu_test_files()],
        ),
        (
            "bench-key",
            [
                *bench,
                "--stem",
                "bench-key",
                *flags,
                "--rows",
                ",".join(KEY_ROWS),
                "--compile-rows",
                ",".join(COMPILE_ROWS),
            ],
        ),
        (
            "bench-llm",
            [*bench, "--stem", "bench-llm", *flags, "--no-compile", "--rows", ",".join(LLM_ROWS)],
        ),
        (
            "pytest-fused",
            [
                *pytest,
                f"--junitxml={logs / 'pytest-fused.xml'}",
                "tests/kernels/test_fused_path.py",
                "tests/kernels/test_parity.py",
                "-k",
                "not weight_layouts",
            ],
        ),
        (
            "bench-rest",
            [
                *bench,
                "--stem",
                "bench-rest",
                *flags,
                "--no-compile",
                "--skip-rows",
                ",".join(KEY_ROWS + LLM_ROWS),
            ],
        ),
    ]


def _clear(out: Path) -> None:
    """A rerun into the same folder starts from nothing: no stale row, log or summary."""
    for d in ("raw", "logs"):
        shutil.rmtree(out / d, ignore_errors=True)
    for name in (
        "summary.md",
        "summary.json",
        "summary.txt",
        "stages.json",
        "run.json",
        "pytest.txt",
        "checks.json",
        "env.json",
        "bench.json",
        "bench.md",
    ):
        (out / name).unlink(missing_ok=True)
    (out / "raw").mkdir()
    (out / "logs").mkdir()


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    # The clock starts in gpu_check.sh (before the optional wheel install): --start-epoch.
    start = args.start_epoch if args.start_epoch else time.time()
    deadline = start + args.budget
    recorded = {k: v for k, v in os.environ.items() if k.startswith(RECORDED_ENV)}
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    timing_env = {k: v for k, v in env.items() if k not in FORCING_ENV}
    pytest_env = dict(env)
    pytest_env.pop("TRITON_INTERPRET", None)  # tests/kernels/conftest sets it without a GPU
    missing = [m for m in TEST_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        print(f"[gpu_check] test dependencies missing: {', '.join(missing)}: no pytest stage")
    meta = {
        "budget_s": args.budget,
        "start_epoch": start,
        "dry_run": bool(args.dry_run),
        "bench_flags": ["--smoke", "--reps", "1"] if args.dry_run else BENCH_FLAGS,
        "key_rows": list(KEY_ROWS),
        "compile_rows": list(COMPILE_ROWS),
        "llm_rows": list(LLM_ROWS),
        "missing_test_deps": missing,
        "env_vars": recorded,
        "unset_for_timing": sorted(k for k in FORCING_ENV if k in env),
    }
    _write_atomic(out / "run.json", json.dumps(meta, indent=1))
    stages: list[dict[str, Any]] = []

    def left() -> float:
        return deadline - time.time() - SUMMARY_RESERVE

    def progress() -> None:
        """stages.json and the summary after every stage: a kill keeps what ran."""
        meta["elapsed_s"] = round(time.time() - start, 1)
        try:
            _write_atomic(out / "run.json", json.dumps(meta, indent=1))
            _write_atomic(out / "stages.json", json.dumps(stages, indent=1))
            summary_stage(args)
        except Exception as exc:  # noqa: BLE001 - the run goes on; the last summary says why
            print(f"[gpu_check] summary failed: {_short(exc)}", flush=True)

    try:
        for name, cmd in _plan(args):
            cap, keep = LIMITS[name]
            limit = min(cap, left() - keep - GRACE)
            if name in PYTEST_STAGES and missing:
                note = "missing " + ", ".join(missing)
                stages.append({"stage": name, "rc": "skipped", "seconds": 0.0, "note": note})
            elif limit < MIN_STAGE:  # never start a stage past (or just before) the deadline
                stages.append(
                    {"stage": name, "rc": "skipped", "seconds": 0.0, "note": "no time left"}
                )
            else:
                stage_env = pytest_env if name in PYTEST_STAGES else env
                if name == "checks" or name.startswith("bench"):
                    stage_env = timing_env
                try:
                    stages.append(_stage(name, cmd, limit, out / "logs" / f"{name}.log", stage_env))
                except Exception as exc:  # noqa: BLE001 - the next stages still run
                    stages.append({"stage": name, "rc": f"error: {_short(exc)}", "seconds": 0.0})
            if name == "env":  # the variables as found, before the stages' own changes
                info = _load_json(out / "env.json", {})
                info.update(env_vars=recorded, unset_for_timing=meta["unset_for_timing"])
                _write_atomic(out / "env.json", json.dumps(info, indent=1))
            if name in PYTEST_STAGES:
                _write_atomic(out / "pytest.txt", _pytest_text(out))
            progress()
    finally:  # Ctrl-C included: what ran is summarised
        progress()
    text = _read_text(out / "summary.txt")
    if text:
        print(text, end="")
    else:  # the summary itself failed: the stages at least
        for s in stages:
            print(f"stage {s['stage']:13s} {_rc_text(s)}")
    print(f"[gpu_check] {time.time() - start:.0f} s; results in {out}")
    env_ok = any(s["stage"] == "env" and s["rc"] == 0 for s in stages)
    return 0 if env_ok and text else 1


def _rc_text(stage: dict[str, Any]) -> str:
    rc = stage.get("rc")
    if rc == "timeout":
        return f"timeout at {stage.get('limit', '?')} s"
    if rc == "skipped":
        return f"skipped ({stage.get('note', '')})"
    return f"rc {rc}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _pytest_text(out: Path) -> str:
    """pytest.txt: the pytest stages' logs one after the other (each result is read from its own
    log, never from this file)."""
    parts = []
    for name in PYTEST_STAGES:
        log = out / "logs" / f"{name}.log"
        if log.exists():
            parts.append(f"## {name} (logs/{name}.log)\n{_read_text(log)}")
    return "\n".join(parts) or "(no pytest stage ran)\n"


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
                timeout=8,
                check=False,
            ).stdout.strip()
        except subprocess.TimeoutExpired:
            info["nvidia_smi"] = "timeout"
    _write_atomic(Path(args.out) / "env.json", json.dumps(info, indent=1))
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
        _write_atomic(path, json.dumps({"device": dev, "rows": rows}, indent=1, default=str))

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
                x.grad = None  # no accumulation into a stale gradient (an extra add per call)
                LF.binary_cross_entropy_with_logits(x, y, backend=backend).backward()
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(calls):
                x.grad = None
                LF.binary_cross_entropy_with_logits(x, y, backend=backend).backward()
            _sync(dev)
            dt = time.perf_counter() - t0
            best[backend] = min(best.get(backend, dt), dt)
        if best["triton"] <= best["torch"]:
            return rows * 80
    return None


# ---- stage 5: summary ----------------------------------------------------------------------------
# Standard library only: it runs in the driving process after every stage.

#: The checks stage's losses (``_cases``) and tiny host-time cases (``_tiny_cases``).
CASES = (
    "bce",
    "sigmoid_focal",
    "asl",
    "balanced_bce",
    "cross_entropy",
    "logit_adjusted",
    "softmax_focal",
    "dice",
    "smooth_l1",
)
TINY_CASES = ("bce", "sigmoid_focal", "asl", "cross_entropy", "smooth_l1")
#: check -> the losses it should cover (None: CUDA only, not expected in a dry run)
EXPECTED_CHECKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "no host sync (auto)": (CASES, False),
    "CUDA graph = eager": (CASES, True),
    "peak extra (grad buffers)": (CASES, False),
    "fp16 GradScaler = torch": (CASES, False),
    "host time triton/torch": (TINY_CASES, False),
    "auto threshold (numel)": (("bce",), False),
    "torch.compile = eager": (("bce", "cross_entropy"), False),
}

# (workload, dtype or None, loss prefix or None, shape or None, column, bound, op, label)
BARS: list[tuple[str, str | None, str | None, tuple[int, ...] | None, str, float, str, str]] = [
    ("DET", "float32", None, None, "x_roof", 1.3, "<=", "DET fp32 x roof"),
    ("DET", "bfloat16", None, None, "x_roof", 1.5, "<=", "DET bf16 x roof"),
    ("DET", None, None, None, "speedup_vs_compile", 1.5, ">=", "DET vs torch.compile"),
    # judged at 4096x9605: 256x9605 is L2-resident and launch-bound (PERFORMANCE.md section 1)
    ("ML-L", "float32", None, (4096, 9605), "x_roof", 1.3, "<=", "ML-L 4096x9605 fp32 x roof"),
    ("ML-L", "bfloat16", None, (4096, 9605), "x_roof", 1.5, "<=", "ML-L 4096x9605 bf16 x roof"),
    (
        "ML-L",
        None,
        None,
        (4096, 9605),
        "speedup_vs_compile",
        1.5,
        ">=",
        "ML-L 4096x9605 vs compile",
    ),
    ("SEG", None, "ce", None, "x_roof", 1.5, "<=", "SEG CE x roof"),
    ("SEG", None, "softmax_focal", None, "x_roof", 1.5, "<=", "SEG focal x roof"),
    ("SEG", None, "ce", None, "speedup_vs_compile", 3.0, ">=", "SEG CE vs torch.compile"),
    ("SEG", None, "softmax_focal", None, "speedup_vs_compile", 3.0, ">=", "SEG focal vs compile"),
    ("SEG", None, "dice", None, "x_floor", 2.0, "<=", "SEG dice x 1R1W floor"),
    ("LLM", None, None, None, "x_roof", 1.2, "<=", "LLM CE x 2R1W roof"),
    ("LLM", None, None, None, "speedup_vs_liger", 1.0, ">=", "LLM CE vs Liger"),
]
MEMORY_WORKLOADS = ("DET", "ML-L", "SEG", "LLM", "REG")
_REFS = {"speedup_vs_compile": "compile_ref", "speedup_vs_liger": "liger"}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
WIDTH = 100  # characters per summary line
MAX_ERROR_LINES = 10  # "!" lines under targets not met (all of them in summary.md / .json)


def _bench_rows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((out / "raw").glob("bench-*.json")):
        data = _load_json(f, {})
        if isinstance(data, dict):
            rows += [r for r in data.get("results", []) if isinstance(r, dict)]
    return rows


_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _row_label(r: dict[str, Any]) -> str:
    dt = _SHORT.get(str(r.get("dtype")), str(r.get("dtype")))
    return f"{r.get('loss')} {dt} {r.get('target')}"


def _fused_candidates(bench: list[dict[str, Any]], wl: str) -> list[dict[str, Any]]:
    """The lossforge_triton records of ``wl``, failed ones included (a crashed provider, or a row
    that failed as a whole: provider ``*``)."""
    return [
        r
        for r in bench
        if r.get("workload") == wl and r.get("provider") in ("lossforge_triton", "*")
    ]


def _judge(
    label: str,
    sel: list[dict[str, Any]],
    col: str,
    bound: float,
    op: str,
    why_none: str = "not run",
) -> dict[str, Any]:
    """One bar over ``sel``: every measured row within ``bound``; a failed row counts as not met
    (its error goes to ``error``); rows without the column are left out (no reference there)."""
    target = f"{label} {op} {bound:g}"
    errors = [r for r in sel if r.get("status") != "ok"]
    vals = [(float(r[col]), _row_label(r)) for r in sel if r.get("status") == "ok" and r.get(col)]
    if not vals and not errors:
        flag = "not run" if not sel else "-"
        return {
            "target": target,
            "value": why_none if not sel else "no value",
            "met": None,
            "flag": flag,
        }
    ok = [v for v, _ in vals if (v <= bound if op == "<=" else v >= bound)]
    n = len(vals) + len(errors)
    parts = [f"{len(ok)}/{n} rows"]
    if vals:
        worst = max(vals) if op == "<=" else min(vals)
        parts.append(f"worst {worst[0]:.2f} ({worst[1]})")
    if errors:
        parts.append(f"{len(errors)} failed")
    row: dict[str, Any] = {"target": target, "value": ", ".join(parts), "met": len(ok) == n}
    if errors:
        e = errors[0]
        row["error"] = f"{_row_label(e)}: {e.get('status')}"
    return row


def _bars(
    bench: list[dict[str, Any]], dry: bool, env: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    out = []
    ran = {r.get("workload") for r in bench}
    for wl, dt, loss, shape, col, bound, op, label in BARS:
        sel = [
            r
            for r in _fused_candidates(bench, wl)
            if (dt is None or r.get("dtype") == dt)
            and (loss is None or str(r.get("loss", "")).startswith(loss))
            and (shape is None or tuple(r.get("shape") or ()) == shape)
        ]
        why = "not run" if wl not in ran else "no fused row ran"
        row = _judge(label, sel, col, bound, op, why)
        ref = _REFS.get(col)
        if row["met"] is None and sel and ref:
            failed = [
                r
                for r in bench
                if r.get("workload") == wl and r.get("provider") == ref and r.get("status") != "ok"
            ]
            if failed:
                row["value"] = f"{ref} failed"
                row["error"] = str(failed[0].get("status"))
            elif ref == "liger" and env is not None and not env.get("liger_kernel"):
                row["value"] = "Liger not installed (--liger-wheel)"
            else:
                row["value"] = f"no {ref} row"
        out.append(row)
    # per logit extra memory: at most the logits' own bytes (the gradient buffer)
    for wl in MEMORY_WORKLOADS:
        sel = _fused_candidates(bench, wl)
        scaled = [
            {**r, "_mem": r["peak_B_per_logit"] / _BYTES.get(str(r.get("dtype")), 4)}
            if r.get("status") == "ok" and r.get("peak_B_per_logit") is not None
            else r
            for r in sel
        ]
        row = _judge(f"{wl} extra mem (x b B/logit)", scaled, "_mem", PEAK_BUFFERS, "<=")
        out.append(row)
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
        sel = [r for r in _fused_candidates(bench, "ML-S") if r.get("dtype") == dt]
        label = f"ML-S {_SHORT[dt]} time / eager BCE's"
        if not ref and not sel:
            out.append(
                {"target": f"{label} <= 1", "value": "not run", "met": None, "flag": "not run"}
            )
            continue
        if not ref:
            out.append({"target": f"{label} <= 1", "value": "no eager BCE row", "met": None})
            continue
        base = float(ref[0]["median_ms"])
        scaled = [
            {**r, "_rel": float(r["median_ms"]) / base} if r.get("status") == "ok" else r
            for r in sel
        ]
        out.append(_judge(label, scaled, "_rel", 1.0, "<="))
    if dry:
        for b in out:
            b["note"] = "dry run (CPU smoke shapes): not a measurement of the bar"
            b["met"] = None
            b.pop("error", None)
    return out


_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
_FINAL = re.compile(r"^(no tests ran|\d+(/\d+)? [a-z].*) in \d+(\.\d+)?s\b")


def _pytest_counts(log_text: str, junit: Path | None = None) -> tuple[dict[str, int], str]:
    """pytest's own result: its final count line (``3 failed, 10 passed in 12.3s``; with ``-q``
    the line has no ``=`` frame), else the junit XML; ``({}, "")`` when neither says."""
    for line in reversed(log_text.splitlines()):
        s = line.strip().strip("=").strip()
        if _FINAL.match(s):
            counts: dict[str, int] = {}
            for n, kind in _COUNT.findall(s):
                counts[kind.rstrip("s") if kind.startswith("error") else kind] = int(n)
            m = re.match(r"^(\d+)(?:/\d+)? tests? collected", s)
            if m:
                counts = {"collected": int(m.group(1)), **counts}
            return counts, s
    if junit is not None and junit.exists():
        try:
            import xml.etree.ElementTree as ET

            root = ET.parse(junit).getroot()
            suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
            tot = {
                k: sum(int(s.get(k, 0)) for s in suites)
                for k in ("tests", "failures", "errors", "skipped")
            }
            counts = {
                "passed": tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"],
                "failed": tot["failures"],
                "error": tot["errors"],
                "skipped": tot["skipped"],
            }
            return counts, "junit: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        except (OSError, ValueError, ET.ParseError):
            pass
    return {}, ""


def _pytest_rows(out: Path, stages: list[dict[str, Any]], dry: bool) -> list[dict[str, Any]]:
    by = {s.get("stage"): s for s in stages}
    meta = _load_json(out / "run.json", {})
    rows = []
    for name in PYTEST_STAGES:
        target = f"{name} passes"
        st = by.get(name)
        if st is None:
            rows.append({"target": target, "value": "not run", "met": None, "flag": "not run"})
            continue
        if st.get("rc") == "skipped":
            note = st.get("note", "")
            if meta.get("missing_test_deps"):
                note = f"missing test dependency: {', '.join(meta['missing_test_deps'])}"
            rows.append(
                {"target": target, "value": f"not run: {note}", "met": None, "flag": "not run"}
            )
            continue
        log = out / "logs" / f"{name}.log"
        counts, line = _pytest_counts(_read_text(log), out / "logs" / f"{name}.xml")
        bad = counts.get("failed", 0) + counts.get("error", 0)
        rc = st.get("rc")
        said = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k == "passed")
        value = f"{_rc_text(st)}: {said or line or 'no counts in the log'}"
        row: dict[str, Any] = {"target": target, "value": value}
        if bad:
            row["met"] = False
            failed = [
                ln for ln in _read_text(log).splitlines() if ln.startswith(("FAILED", "ERROR"))
            ]
            if failed:
                row["error"] = failed[0]
        elif rc == 0 and not dry:
            row["met"] = True
        elif rc == "timeout":
            row.update(met=None, flag="partial")
        elif dry and rc == 0:
            row["met"] = None  # --collect-only
        else:  # a crash, an internal error, no tests collected (5)
            row["met"] = False
            tail = [ln for ln in _read_text(log).splitlines() if ln.strip()][-1:]
            if tail:
                row["error"] = tail[0]
        rows.append(row)
    return rows


def _check_rows(checks: dict[str, Any], dry: bool) -> list[dict[str, Any]]:
    """One line per check, aggregated over the losses, against the full list of expected
    (check, loss) pairs: a missing one is "not run"."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in checks.get("rows", []) if isinstance(checks, dict) else []:
        if isinstance(r, dict) and "met" in r:
            by.setdefault(str(r.get("check")), []).append(r)
    names = [c for c, (_, cuda) in EXPECTED_CHECKS.items() if not (dry and cuda)]
    names += [c for c in by if c not in names]
    table = []
    for check in names:
        rs = by.get(check, [])
        want = EXPECTED_CHECKS.get(check, ((), False))[0]
        missing = [w for w in want if w not in {r.get("loss") for r in rs}]
        tgt = next((str(r.get("target")) for r in rs if r.get("target")), "")
        target = f"{check} {tgt}".strip()
        if not rs:
            table.append({"target": target, "value": "not run", "met": None, "flag": "not run"})
            continue
        flags = [r["met"] for r in rs if r["met"] is not None]
        bad = [r for r in rs if r["met"] is False]
        if check in ("peak extra (grad buffers)", "host time triton/torch"):
            worst = max(rs, key=lambda r: _num(r.get("value")))
            value = f"worst {str(worst.get('value')).split(' (')[0]} ({worst.get('loss')})"
        elif bad:
            value = "fails: " + ", ".join(str(r.get("loss")) for r in bad[:3])
        else:
            value = str(rs[0].get("value"))
        if flags:
            value = f"{len(flags) - len(bad)}/{len(flags)} ok, {value}"
        if missing:
            value += f"; not run: {', '.join(missing)}"
        row: dict[str, Any] = {"target": target, "value": value}
        if bad:
            row["met"] = False
            row["error"] = f"{bad[0].get('loss')}: {bad[0].get('note') or bad[0].get('value')}"
        elif missing:
            row.update(met=None, flag="partial")
        else:
            row["met"] = True if flags else None
        table.append(row)
    return table


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _render(table: list[dict[str, Any]], head: list[str], stages: list[dict[str, Any]]) -> str:
    """The one-screen text: header, one line per stage, one line per target (value, met or not),
    a second ``!`` line with the first error of a target that is not met; <= WIDTH chars."""
    lines = [_fit(h, WIDTH) for h in head]
    errors = 0
    ran = {s.get("stage"): s for s in stages}
    for name in STAGES:
        s = ran.get(name)
        text = "not run" if s is None else f"{_rc_text(s)}, {float(s.get('seconds', 0)):.0f} s"
        lines.append(_fit(f"stage {name:13s} {text}", WIDTH))
    lines.append("")
    for r in table:
        flag = r.get("flag") or {True: "met", False: "NOT MET", None: "-"}[r["met"]]
        lines.append(f"{_fit(str(r['target']), 42):42s} {_fit(str(r['value']), 48):48s} {flag}")
        if r.get("error") and r["met"] is False and errors < MAX_ERROR_LINES:
            errors += 1
            lines.append(_fit(f"    ! {r['error']}", WIDTH))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def summary_stage(args: argparse.Namespace) -> int:
    out = Path(args.out)
    dry = bool(args.dry_run)
    env = _load_json(out / "env.json", {})
    checks = _load_json(out / "checks.json", {})
    stages = _load_json(out / "stages.json", [])
    meta = _load_json(out / "run.json", {})
    env = env if isinstance(env, dict) else {}
    stages = [s for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
    bench = _bench_rows(out)
    table = _check_rows(checks, dry)
    table += _pytest_rows(out, stages, dry)
    table += _bars(bench, dry, env)
    merged = {"header": env, "results": bench}
    _write_atomic(out / "bench.json", json.dumps(merged, indent=1, default=str))
    _write_atomic(out / "bench.md", _bench_md(bench))
    _write_atomic(
        out / "summary.json",
        json.dumps(
            {"env": env, "run": meta, "stages": stages, "summary": table, "checks": checks},
            indent=1,
            default=str,
        ),
    )
    head = [
        f"# gpu_check {env.get('time', '')}: {env.get('gpu', 'CPU dry run' if dry else '?')}, "
        f"torch {env.get('torch')}, triton {env.get('triton')}, liger {env.get('liger_kernel')}",
        f"budget {meta.get('budget_s', '?')} s, used {meta.get('elapsed_s', '?')} s; bench "
        f"{' '.join(meta.get('bench_flags', []))}; torch.compile ref on "
        f"{len(meta.get('compile_rows', []))} key rows only",
    ]
    env_vars = meta.get("env_vars") or {}
    if env_vars:
        unset = set(meta.get("unset_for_timing", []))
        head.append(
            "env: "
            + ", ".join(
                f"{k}={v}" + (" (unset for checks/bench)" if k in unset else "")
                for k, v in sorted(env_vars.items())
            )
        )
    if meta.get("missing_test_deps"):
        head.append(f"missing test dependencies: {', '.join(meta['missing_test_deps'])}")
    md = [*head, "", "| target | measured | met |", "|---|---|---|"]
    for r in table:
        flag = r.get("flag") or {True: "yes", False: "**no**", None: "-"}[r["met"]]
        err = f" ({r['error']})" if r.get("error") and r["met"] is False else ""
        md.append(f"| {r['target']} | {r['value']}{err} | {flag} |")
    _write_atomic(out / "summary.md", "\n".join(md) + "\n")
    _write_atomic(out / "summary.txt", _render(table, [*head, ""], stages))
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
    ap.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help=f"seconds for everything, from --start-epoch (run; default {DEFAULT_BUDGET:g})",
    )
    ap.add_argument(
        "--start-epoch",
        type=float,
        default=None,
        help="time.time() at which the budget started (gpu_check.sh: before the wheel install)",
    )
    ap.add_argument("--dry-run", action="store_true", help="every stage on the CPU, tiny shapes")
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return {"run": run, "env": env_stage, "checks": checks_stage, "summary": summary_stage}[
        args.stage
    ](args)


if __name__ == "__main__":
    sys.exit(main())
