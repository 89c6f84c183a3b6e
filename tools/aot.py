"""Ahead-of-time compile of every lossforge Triton kernel for an NVIDIA target, on any machine.

The kernel tests run through Triton's CPU interpreter, which accepts code that the GPU compiler
rejects and uses small tiles; this module traces and compiles the *production* launches instead:

1. ``capture``: the kernel modules' ``wrap_triton`` is replaced by a spy that records
   ``(kernel, grid, args, kwargs)`` without launching, ``interpreting()`` answers False wherever
   the kernels consult it (production tiles), and the public entry points run forward + backward on
   ``meta`` tensors of the production shapes and strides (PERFORMANCE.md section 6): no storage.
2. ``spec``: each recorded launch goes through Triton's own launcher binder for the CUDA backend
   (``create_function_from_signature`` + ``JITFunction._pack_args``), so the signature, the
   constexprs (keyword ``tl.constexpr`` arguments, ints equal to 1), the divisibility attributes
   and the options (``num_warps``...) are exactly what a GPU launch would compile.
3. ``compile``: ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` down to a
   cubin with the bundled ptxas (fresh cache dir, so ptxas always runs); registers, spill bytes and
   stack come from the ptxas ``-v`` log, shared memory from the kernel metadata.

Must run in a process where triton was imported WITHOUT ``TRITON_INTERPRET`` (under the interpreter
``@triton.jit`` builds interpreter objects that cannot be compiled), hence a command line::

    env -u TRITON_INTERPRET .venv/bin/python -m tools.aot            # CI set, sm_90
    env -u TRITON_INTERPRET .venv/bin/python -m tools.aot --full --arch 90,80 \
        --md benchmarks/results/aot-sm90.md                                    # the full sweep

``tests/kernels/test_aot_compile.py`` runs it in a subprocess. Exit status 0 with
``{"skip": reason}`` in the JSON when triton, its NVIDIA backend or ptxas is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import pkgutil
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

#: Usable shared memory per block (opt-in maximum) by compute capability, bytes.
SHARED_LIMIT = {90: 232448, 80: 166912, 89: 101376, 86: 101376}
#: CUDA grid limits: axis 0 up to 2**31 - 1, axes 1 and 2 up to 65535.
GRID_LIMITS = (2**31 - 1, 65535, 65535)
#: SM count used for the persistent grids in the report (H100 SXM).
SM_COUNT = 132


@dataclass
class Case:
    name: str  # e.g. "DET sigmoid_focal g2 index"
    dtype: str
    run: Callable[[], None]  # forward + backward on meta tensors
    ci: bool = False  # in the CI (default) set


@dataclass
class Launch:
    kernel: Any  # JITFunction
    grid: tuple
    args: tuple
    kwargs: dict
    case: str = ""
    dtype: str = ""


@dataclass
class Variant:
    kernel: str  # "module:name"
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    cases: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    grids: list[tuple] = field(default_factory=list)
    ci: bool = False


# --------------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why an AOT compile for NVIDIA cannot run here (None when it can)."""
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "off"):
        return "TRITON_INTERPRET is set: @triton.jit builds interpreter objects"
    try:
        import triton  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        return f"triton is not importable ({e})"
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except ImportError as e:  # pragma: no cover
        return f"triton has no NVIDIA backend ({e})"
    try:
        ptxas = get_ptxas(90).path
    except Exception as e:  # noqa: BLE001  # pragma: no cover
        return f"no ptxas ({e})"
    if not ptxas or not os.path.exists(ptxas):  # pragma: no cover
        return f"ptxas not found at {ptxas!r}"
    return None


# --------------------------------------------------------------------------------------------------
# Capture the production launches
# --------------------------------------------------------------------------------------------------


def _kernel_modules() -> list[Any]:
    import lossforge.kernels as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mods.append(importlib.import_module(f"lossforge.kernels.{info.name}"))
    return mods


def launched_kernels() -> set[str]:
    """Every ``@triton.jit`` kernel the modules launch (top-level names ending in ``_kernel``)."""
    from triton.runtime.jit import JITFunction

    out = set()
    for m in _kernel_modules():
        for name, obj in vars(m).items():
            if (
                isinstance(obj, JITFunction)
                and name.endswith("_kernel")
                and obj.__module__ == m.__name__
            ):
                out.add(f"{m.__name__.rsplit('.', 1)[-1]}:{name}")
    return out


def _kname(k: Any) -> str:
    return f"{k.__module__.rsplit('.', 1)[-1]}:{k.fn.__name__}"


class _Recorder:
    def __init__(self) -> None:
        self.launches: list[Launch] = []

    def wrap_triton(self, kernel: Any) -> Any:
        rec = self

        class _Grid:
            def __getitem__(self, grid: Any) -> Callable[..., None]:
                def launch(*args: Any, **kwargs: Any) -> None:
                    g = grid(kwargs) if callable(grid) else tuple(grid)
                    rec.launches.append(Launch(kernel, g, args, dict(kwargs)))

                return launch

        return _Grid()


@contextlib.contextmanager
def production_launches() -> Any:
    """Patch the kernel modules: spy ``wrap_triton``, production tiles, an H100-sized grid."""
    from lossforge.kernels import _launch

    rec = _Recorder()
    saved: list[tuple[Any, str, Any]] = []

    def patch(mod: Any, name: str, value: Any) -> None:
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)

    def persistent_programs(device: Any, n_blocks: int) -> int:  # noqa: ARG001
        return max(1, min(n_blocks, 4 * SM_COUNT))

    for m in _kernel_modules():
        if hasattr(m, "wrap_triton"):
            patch(m, "wrap_triton", rec.wrap_triton)
        if hasattr(m, "interpreting"):
            patch(m, "interpreting", lambda: False)
        if hasattr(m, "persistent_programs"):
            patch(m, "persistent_programs", persistent_programs)
    if not hasattr(_launch, "interpreting"):  # pragma: no cover
        raise RuntimeError("lossforge.kernels._launch.interpreting is gone: update tools/aot.py")
    try:
        yield rec
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)


def _meta(shape: tuple[int, ...], dtype: Any, grad: bool = False, channels_last: bool = False):
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=fmt, requires_grad=grad)


def _fwd_bwd(loss: Any) -> None:
    import torch

    loss.backward(torch.empty_like(loss))


def cases() -> list[Case]:
    """The production workloads of PERFORMANCE.md section 6 (``ci``: the representative subset)."""
    import torch

    import lossforge.kernels as K

    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    i64 = torch.int64
    names = {f32: "fp32", bf16: "bf16", f16: "fp16"}
    out: list[Case] = []

    def add(name: str, dt: Any, fn: Callable[[], Any], ci: bool = False) -> None:
        out.append(Case(name, names[dt], lambda: _fwd_bwd(fn()), ci))

    det, seg, llm, reg = (1_600_000, 80), (8, 19, 512, 1024), (8192, 128256), (1_600_000, 4)
    for dt in (f32, bf16, f16):
        main = dt in (f32, bf16)
        # DET: index targets (background = C, ignore -2), and the dense one-hot variant (fp32)
        for g in (2.0, 1.5):
            add(
                f"DET sigmoid_focal g{g:g} index",
                dt,
                lambda dt=dt, g=g: K.sigmoid_focal_loss(
                    _meta(det, dt, True), _meta(det[:1], i64), alpha=0.25, gamma=g, ignore_index=-2
                ),
                ci=main and g == 2.0,
            )
            add(
                f"DET sigmoid_focal g{g:g} dense",
                dt,
                lambda dt=dt, g=g: K.sigmoid_focal_loss(
                    _meta(det, dt, True), _meta(det, f32), alpha=0.25, gamma=g
                ),
                ci=main and g == 1.5,
            )
        add(
            "DET bce dense",
            dt,
            lambda dt=dt: K.binary_cross_entropy_with_logits(_meta(det, dt, True), _meta(det, f32)),
            ci=main,
        )
        add(
            "DET balanced_bce b.98 dense",
            dt,
            lambda dt=dt: K.balanced_binary_cross_entropy(
                _meta(det, dt, True), _meta(det, f32), beta=0.98
            ),
        )
        add(
            "DET bce pos_weight[C] dense",
            dt,
            lambda dt=dt: K.binary_cross_entropy_with_logits(
                _meta(det, dt, True), _meta(det, f32), pos_weight=_meta((80,), f32)
            ),
            ci=dt == f32,
        )
        add(
            "DET bce none dense",
            dt,
            lambda dt=dt: K.binary_cross_entropy_with_logits(
                _meta(det, dt, True), _meta(det, f32), reduction="none"
            ),
        )
        # ML-S / ML-L: dense float targets
        for wid, shape in (("ML-S", (256, 80)), ("ML-L", (256, 9605)), ("ML-L", (4096, 9605))):
            big = shape == (4096, 9605)
            add(
                f"{wid} {shape[0]}x{shape[1]} asl g+1 g-4 clip.05",
                dt,
                lambda dt=dt, shape=shape: K.asymmetric_loss(
                    _meta(shape, dt, True),
                    _meta(shape, f32),
                    gamma_pos=1.0,
                    gamma_neg=4.0,
                    clip=0.05,
                ),
                ci=main and big,
            )
            add(
                f"{wid} {shape[0]}x{shape[1]} bce",
                dt,
                lambda dt=dt, shape=shape: K.binary_cross_entropy_with_logits(
                    _meta(shape, dt, True), _meta(shape, f32)
                ),
            )
            add(
                f"{wid} {shape[0]}x{shape[1]} sigmoid_focal g2",
                dt,
                lambda dt=dt, shape=shape: K.sigmoid_focal_loss(
                    _meta(shape, dt, True), _meta(shape, f32), alpha=0.25, gamma=2.0
                ),
            )
        # SEG: NCHW and channels_last, int64 labels, ignore 255
        for cl in (False, True):
            lay = "channels_last" if cl else "NCHW"

            def x(dt=dt, cl=cl):
                return _meta(seg, dt, True, channels_last=cl)

            def t():
                return _meta((8, 512, 1024), i64)

            add(
                f"SEG ce ignore [{lay}]",
                dt,
                lambda x=x: K.cross_entropy(x(), t(), ignore_index=255),
                ci=main and not cl,
            )
            add(
                f"SEG ce ignore+cw+ls.1 [{lay}]",
                dt,
                lambda x=x: K.cross_entropy(
                    x(), t(), ignore_index=255, label_smoothing=0.1, class_weight=_meta((19,), f32)
                ),
                ci=main and cl,
            )
            add(
                f"SEG softmax_focal g2 [{lay}]",
                dt,
                lambda x=x: K.softmax_focal_loss(x(), t(), gamma=2.0, ignore_index=255),
                ci=main and not cl,
            )
            add(
                f"SEG dice ignore [{lay}]",
                dt,
                lambda x=x: K.dice_loss(x(), t(), ignore_index=255),
                ci=main and not cl,
            )
            add(
                f"SEG dice squared per_sample [{lay}]",
                dt,
                lambda x=x: K.dice_loss(x(), t(), squared=True, per_sample=True),
            )
        # LLM: (8192, 128256), the online-softmax path
        for ls in (0.0, 0.1):
            add(
                f"LLM ce ls{ls:g}",
                dt,
                lambda dt=dt, ls=ls: K.cross_entropy(
                    _meta(llm, dt, True), _meta(llm[:1], i64), label_smoothing=ls
                ),
                ci=dt == bf16,
            )
        add(
            "LLM ce none",
            dt,
            lambda dt=dt: K.cross_entropy(
                _meta(llm, dt, True), _meta(llm[:1], i64), reduction="none"
            ),
        )
        add(
            "LLM ce probs (distillation)",
            dt,
            lambda dt=dt: K.cross_entropy(_meta(llm, dt, True), _meta(llm, dt)),
            ci=dt == bf16,
        )
        add(
            "IMG ce probs 256x1000 (mixup)",
            dt,
            lambda dt=dt: K.cross_entropy(_meta((256, 1000), dt, True), _meta((256, 1000), dt)),
            ci=dt == f32,
        )
        # Other softmax tile shapes: (N, C) rows, small / medium C and the 16-warp single pass
        for shape in ((1_600_000, 81), (256, 1000), (4096, 9605)):
            add(
                f"CLS ce {shape[0]}x{shape[1]}",
                dt,
                lambda dt=dt, shape=shape: K.cross_entropy(
                    _meta(shape, dt, True), _meta(shape[:1], i64)
                ),
                ci=dt == bf16 and shape[1] == 9605,
            )
        # REG: (1.6M, 4)
        add(
            "REG l1",
            dt,
            lambda dt=dt: K.l1_loss(_meta(reg, dt, True), _meta(reg, dt)),
            ci=main,
        )
        add(
            "REG smooth_l1 b1/9",
            dt,
            lambda dt=dt: K.smooth_l1_loss(_meta(reg, dt, True), _meta(reg, dt), beta=1 / 9),
        )
        add("REG mse", dt, lambda dt=dt: K.mse_loss(_meta(reg, dt, True), _meta(reg, dt)))
        add(
            "REG l1 weight[N]",
            dt,
            lambda dt=dt: K.l1_loss(
                _meta(reg, dt, True), _meta(reg, dt), weight=_meta(reg[:1], f32)
            ),
        )
    return out


def capture(selected: list[Case]) -> list[Launch]:
    """Run the cases under the spy; every launch tagged with its case."""
    with production_launches() as rec:
        for c in selected:
            start = len(rec.launches)
            c.run()
            if len(rec.launches) == start:
                raise RuntimeError(f"case {c.name!r} launched no kernel")
            for la in rec.launches[start:]:
                la.case, la.dtype = c.name, c.dtype
        return list(rec.launches)


# --------------------------------------------------------------------------------------------------
# Launch -> what the GPU launcher would compile
# --------------------------------------------------------------------------------------------------


def _backend(arch: int) -> Any:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    return make_backend(GPUTarget("cuda", arch, 32))


def spec(launch: Launch, backend: Any) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, attrs, options) exactly as ``JITFunction.run`` builds them."""
    from triton import knobs
    from triton.runtime.jit import create_function_from_signature

    k = launch.kernel
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", k.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(k.signature, k.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    opts, signature, constexprs, attrs = k._pack_args(
        backend, kwargs, bound, specialization, options
    )
    return signature, constexprs, attrs, opts.__dict__


def variants(launches: list[Launch], arch: int, ci_cases: set[str]) -> list[Variant]:
    backend = _backend(arch)
    out: dict[str, Variant] = {}
    for la in launches:
        sig, cx, attrs, opts = spec(la, backend)
        key = repr((_kname(la.kernel), sig, sorted(cx.items()), sorted(attrs.items()), opts))
        v = out.get(key)
        if v is None:
            v = out[key] = Variant(_kname(la.kernel), sig, cx, attrs, opts)
        if la.case not in v.cases:
            v.cases.append(la.case)
        if la.dtype not in v.dtypes:
            v.dtypes.append(la.dtype)
        if la.grid not in v.grids:
            v.grids.append(la.grid)
        v.ci = v.ci or la.case in ci_cases
    return list(out.values())


# --------------------------------------------------------------------------------------------------
# Compile
# --------------------------------------------------------------------------------------------------

_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)


def _compile_one(job: tuple[str, dict, dict, dict, dict, int]) -> dict:
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kname, sig, cx, attrs, opts, arch = job
    mod, name = kname.split(":")
    kernel = getattr(importlib.import_module(f"lossforge.kernels.{mod}"), name)
    res: dict[str, Any] = {"kernel": kname, "arch": arch}
    knobs.nvidia.dump_ptxas_log = True
    buf = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(buf):
            c = triton.compile(
                ASTSource(kernel, sig, cx, attrs), target=GPUTarget("cuda", arch, 32), options=opts
            )
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        res.update(status="FAIL", error=f"{type(e).__name__}: {e}"[-4000:])
        res["seconds"] = round(time.perf_counter() - t0, 2)
        return res
    res["seconds"] = round(time.perf_counter() - t0, 2)
    log = buf.getvalue()
    regs = _PTXAS_REGS.findall(log)
    frame = _PTXAS_FRAME.findall(log)
    res.update(
        status="ok",
        registers=int(regs[-1]) if regs else None,
        stack=int(frame[-1][0]) if frame else None,
        spill_stores=int(frame[-1][1]) if frame else None,
        spill_loads=int(frame[-1][2]) if frame else None,
        shared=int(c.metadata.shared),
        num_warps=int(c.metadata.num_warps),
        num_stages=int(c.metadata.num_stages),
    )
    if regs == [] or frame == []:
        res.update(_cuobjdump(c.asm["cubin"]))
    res["ptx"] = ptx_stats(c.asm["ptx"], c.asm["ttgir"])
    return res


_PTX_PATTERNS = {
    # global memory access widths (v4.b32 = 16 B: 4 fp32 or 8 bf16/fp16 values)
    "ld_v4": r"ld\.global[\w.:]*?\.v4\.",
    "ld_v2": r"ld\.global[\w.:]*?\.v2\.",
    "ld": r"\bld\.global",
    "st_v4": r"st\.global[\w.:]*?\.v4\.",
    "st_v2": r"st\.global[\w.:]*?\.v2\.",
    "st": r"\bst\.global",
    "local": r"(?:ld|st)\.local",
    # transcendental (MUFU) instructions; precise tl.log / tl.log2 are libdevice polynomials
    "ex2": r"ex2\.approx",
    "lg2": r"lg2\.approx",
    "rcp": r"rcp\.approx|div\.(?:full|approx)\.f32",
    "div_rn": r"div\.rn\.f32",
    "div_s64": r"(?:div|rem)\.[su]64",
}


def ptx_stats(ptx: str, ttgir: str = "") -> dict:
    """Static instruction counts in the PTX (per thread, not per element) + TTGIR layout moves."""
    out = {k: len(re.findall(v, ptx)) for k, v in _PTX_PATTERNS.items()}
    for op in ("ld", "st"):  # scalar: 1, 2, 4 or 8 bytes
        out[f"{op}_scalar"] = out.pop(op) - out[f"{op}_v4"] - out[f"{op}_v2"]
    out["convert_layout"] = ttgir.count("ttg.convert_layout")
    return out


def _cuobjdump(cubin: bytes) -> dict:
    """REG / LOCAL from ``cuobjdump --dump-resource-usage`` (when the ptxas log was not seen)."""
    import subprocess

    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=False
        ).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if not m:
        return {}
    return {"registers": int(m[1]), "stack": int(m[2]), "spill_stores": int(m[4])}


def compile_all(vs: list[Variant], arch: int, jobs: int) -> list[dict]:
    work = [(v.kernel, v.signature, v.constexprs, v.attrs, v.options, arch) for v in vs]
    if jobs <= 1:
        results = [_compile_one(w) for w in work]
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as ex:
            results = list(ex.map(_compile_one, work))
    for v, r in zip(vs, results, strict=True):
        sh = SHARED_LIMIT.get(arch)
        r.update(
            cases=v.cases,
            dtypes=v.dtypes,
            grids=[list(g) for g in v.grids],
            ci=v.ci,
            constexprs=_constexpr_names(v.kernel, v.constexprs),
            signature={k: s for k, s in v.signature.items() if s != "constexpr"},
            shared_limit=sh,
        )
        r["problems"] = problems(r)
    return results


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) or v is None else repr(v)


def problems(r: dict) -> list[str]:
    """What would make this variant unusable or slow on the GPU."""
    out = []
    if r["status"] != "ok":
        out.append("compile failed")
        return out
    if r.get("spill_stores"):
        out.append(f"spills {r['spill_stores']} B stores / {r.get('spill_loads')} B loads")
    lim = r.get("shared_limit")
    if lim and r["shared"] > lim:
        out.append(f"shared {r['shared']} B > {lim} B")
    for g in r["grids"]:
        for ax, (n, cap) in enumerate(zip(g, GRID_LIMITS[: len(g)], strict=True)):
            if n > cap:
                out.append(f"grid axis {ax} = {n} > {cap}")
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _constexpr_names(kname: str, cx: dict) -> dict:
    """``{(index,): value}`` -> ``{argument name: value}``."""
    mod, name = kname.split(":")
    k = getattr(importlib.import_module(f"lossforge.kernels.{mod}"), name)
    return {k.arg_names[p[0]]: _jsonable(v) for p, v in cx.items()}


def markdown(results: list[dict], command: str, elapsed: float) -> str:
    import torch
    import triton

    lines = [
        "# AOT compile of the Triton kernels for NVIDIA targets",
        "",
        f"Produced by `{command}`",
        "(tools/aot.py; no GPU needed: the production launches are captured on meta",
        "tensors and compiled to cubin with the bundled ptxas).",
        f"triton {triton.__version__}, torch {torch.__version__}; "
        f"{len(results)} compiles in {elapsed:.0f} s.",
        "",
        "Registers per thread and spill bytes from `ptxas -v`; shared = Triton's shared-memory",
        "allocation per program (limit 227 KiB on sm_90, 163 KiB on sm_80). `constexprs` lists the",
        "launch's constexprs that are tile sizes or not False/0 (lower-case names: int arguments",
        "equal to 1, which the launcher specializes, e.g. a unit class stride `sC=1`).",
        "",
    ]
    bad = [r for r in results if r["problems"]]
    lines.append(
        f"**{sum(r['status'] == 'ok' for r in results)}/{len(results)} compiled**; "
        + (f"{len(bad)} with problems (below)." if bad else "no spills, no limit exceeded.")
    )
    lines.append("")
    lines += [
        "| arch | kernel | variants | registers (min-max) | max spill B | max shared B | warps |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in sorted({r["arch"] for r in results}, reverse=True):
        for k in sorted({r["kernel"] for r in results if r["arch"] == arch}):
            rs = [
                r for r in results if r["arch"] == arch and r["kernel"] == k and r["status"] == "ok"
            ]
            if not rs:
                continue
            regs = [r.get("registers") or 0 for r in rs]
            lines.append(
                f"| sm_{arch} | {k.split(':')[1]} | {len(rs)} | {min(regs)}-{max(regs)} "
                f"| {max(r.get('spill_stores') or 0 for r in rs)} "
                f"| {max(r.get('shared') or 0 for r in rs)} "
                f"| {','.join(str(w) for w in sorted({r.get('num_warps') for r in rs}))} |"
            )
    lines.append("")
    for arch in sorted({r["arch"] for r in results}, reverse=True):
        lines += [
            f"## sm_{arch}",
            "",
            "| kernel | variant (first case) | dtypes | warps | regs | spill st/ld B | stack B "
            "| shared B | grid | constexprs | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = [r for r in results if r["arch"] == arch]
        rows.sort(key=lambda r: (r["kernel"], r["cases"][0]))
        for r in rows:
            cx = {
                k: v
                for k, v in r["constexprs"].items()
                if k.startswith("BLOCK") or v not in (False, 0)
            }
            cxs = " ".join(f"{k}={v}" for k, v in cx.items())
            more = f" (+{len(r['cases']) - 1})" if len(r["cases"]) > 1 else ""
            status = "ok" if not r["problems"] else "; ".join(r["problems"])
            if r["status"] != "ok":
                status = "FAIL: " + r["error"].splitlines()[0][:120].replace("|", "/")
            grid = "x".join(str(n) for n in r["grids"][0]) if r["grids"] else ""
            lines.append(
                f"| {r['kernel'].split(':')[1]} | {r['cases'][0]}{more} | {','.join(r['dtypes'])} "
                f"| {r.get('num_warps', '')} | {r.get('registers', '')} "
                f"| {r.get('spill_stores', '')}/{r.get('spill_loads', '')} | {r.get('stack', '')} "
                f"| {r.get('shared', '')} | {grid} | {cxs} | {status} |"
            )
        lines.append("")
    return "\n".join(lines)


def run(
    full: bool = False, archs: tuple[int, ...] = (90,), jobs: int | None = None
) -> dict[str, Any]:
    reason = unavailable_reason()
    if reason is not None:
        return {"skip": reason}
    # A fresh cache: ptxas runs for every variant (its -v log gives the registers and spills).
    cache = tempfile.mkdtemp(prefix="lossforge-aot-")
    os.environ["TRITON_CACHE_DIR"] = cache
    try:
        return _run(full, archs, jobs)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run(full: bool, archs: tuple[int, ...], jobs: int | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    all_cases = cases()
    selected = all_cases if full else [c for c in all_cases if c.ci]
    launches = capture(selected)
    ci_cases = {c.name for c in all_cases if c.ci}
    t_capture = time.perf_counter() - t0
    results: list[dict] = []
    jobs = jobs or min(os.cpu_count() or 1, 8)
    for arch in archs:
        vs = variants(launches, arch, ci_cases)
        results += compile_all(vs, arch, jobs)
    return {
        "results": results,
        "kernels": sorted(launched_kernels()),
        "cases": len(selected),
        "capture_s": round(t_capture, 2),
        "total_s": round(time.perf_counter() - t0, 2),
        "jobs": jobs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="every case (default: the CI subset)")
    ap.add_argument("--arch", default="90", help="compute capabilities, comma-separated")
    ap.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: #cpus)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--md", default=None, help="write the markdown report here")
    a = ap.parse_args(argv)
    out = run(a.full, tuple(int(s) for s in a.arch.split(",")), a.jobs)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    if "skip" in out:
        print(f"skipped: {out['skip']}")
        return 0
    res = out["results"]
    for r in res:
        print(
            f"sm_{r['arch']} {r['kernel']:40s} {r['status']:4s} regs={r.get('registers')} "
            f"spill={r.get('spill_stores')} shared={r.get('shared')} w={r.get('num_warps')} "
            f"{r['seconds']:5.1f}s  {r['cases'][0]} [{','.join(r['dtypes'])}] "
            f"{'; '.join(r['problems'])}"
        )
    print(f"{len(res)} compiles, {out['total_s']} s total (capture {out['capture_s']} s)")
    if a.md:
        cmd = "env -u TRITON_INTERPRET python -m tools.aot " + " ".join(
            x for x in (argv if argv is not None else sys.argv[1:])
        )
        with open(a.md, "w") as f:
            f.write(markdown(res, cmd.strip(), out["total_s"]) + "\n")
    return 1 if any(r["problems"] for r in res) else 0


if __name__ == "__main__":
    sys.exit(main())
