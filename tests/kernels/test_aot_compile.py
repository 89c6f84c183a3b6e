"""Compile every Triton kernel for sm_90 at its production launch configuration, without a GPU.

The interpreter tests in this directory never run the GPU compiler and use small tiles; the
developer tool ``tools/aot.py`` (``python -m tools.aot``) captures the launches the entry points
make at the PERFORMANCE.md section 6 shapes (meta tensors) and compiles them to cubin with the
bundled ptxas. It runs in a subprocess because this directory's conftest sets
``TRITON_INTERPRET=1`` before triton is imported, and under the interpreter ``@triton.jit`` builds
objects that cannot be compiled.

By default a representative set (every kernel at production tiles, fp32 and bf16; ~10-20 s on two
cores). ``LOSSFORGE_AOT_FULL=1`` runs the whole sweep (every workload, fp32/bf16/fp16, sm_90 and
sm_80; ~1-2 min). Skipped when triton has no NVIDIA backend or ptxas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # one `python -m tools.aot` run (parallel ptxas compiles)

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("LOSSFORGE_AOT_FULL", "0") == "1"


@pytest.fixture(scope="module")
def aot(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "tools.aot", "--json", str(out)]
    if FULL:
        cmd += ["--full", "--arch", "90,80"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if not out.exists():
        pytest.fail(f"{' '.join(cmd)} wrote nothing (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(out.read_text())
    if "skip" in data:
        pytest.skip(f"no AOT compile for NVIDIA here: {data['skip']}")
    return data


def _fmt(r: dict) -> str:
    return f"sm_{r['arch']} {r['kernel']} [{','.join(r['dtypes'])}] {r['cases'][0]!r}"


def test_every_kernel_compiles_at_production_tiles_fp32_and_bf16(aot):
    seen: dict[str, set[str]] = {}
    for r in aot["results"]:
        if r["status"] == "ok":
            seen.setdefault(r["kernel"], set()).update(r["dtypes"])
    missing = [k for k in aot["kernels"] if not {"fp32", "bf16"} <= seen.get(k, set())]
    assert not missing, f"kernels not compiled for both fp32 and bf16 workloads: {missing}"


def test_no_compile_failures(aot):
    failed = [f"{_fmt(r)}: {r['error']}" for r in aot["results"] if r["status"] != "ok"]
    assert not failed, "\n\n".join(failed)


def test_no_spills_and_within_shared_memory_and_grid_limits(aot):
    bad = [
        f"{_fmt(r)}: {'; '.join(r['problems'])}"
        for r in aot["results"]
        if r["status"] == "ok" and r["problems"]
    ]
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------------------------------
# PTX checks of the hot variants (benchmarks/results/ptx-review.md): counted on the same compiles.
# --------------------------------------------------------------------------------------------------


def _sm90(aot: dict, kernel: str, case: str, dtype: str) -> list[dict]:
    rs = [
        r
        for r in aot["results"]
        if r["arch"] == 90
        and r["status"] == "ok"
        and r["kernel"].endswith(":" + kernel)
        and dtype in r["dtypes"]
        and case in r["cases"]
    ]
    assert rs, f"no sm_90 {kernel} variant for {case!r} [{dtype}] in the AOT run"
    return rs


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize(
    ("kernel", "case"),
    [
        ("_sigmoid_fwd_kernel", "DET sigmoid_focal g2 index"),
        ("_sigmoid_fwd_kernel", "DET bce dense"),
        ("_softmax_fwd_kernel", "SEG ce ignore [NCHW]"),
        ("_dice_grad_kernel", "SEG dice ignore [NCHW]"),
        ("_regression_fwd_kernel", "REG l1"),
        ("_scale_grad_kernel", "DET sigmoid_focal g2 index"),
    ],
)
def test_hot_loads_and_stores_are_128_bit(aot, kernel, case, dtype):
    # ld/st.global.v4.b32: 4 fp32 or 8 bf16 per instruction. A scalar access where a vector one is
    # possible means the compiler lost the contiguity/divisibility of the offsets.
    for r in _sm90(aot, kernel, case, dtype):
        p = r["ptx"]
        assert p["ld_v4"] >= 1 and p["st_v4"] >= 1, (r["cases"][0], p)
        assert p["local"] == 0, (r["cases"][0], p)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sigmoid_focal_transcendental_budget_and_no_layout_moves(aot, dtype):
    # PERFORMANCE.md rule 4: <= 3 MUFU ops (ex2, rcp, lg2) per element for integer gamma.
    for r in _sm90(aot, "_sigmoid_fwd_kernel", "DET sigmoid_focal g2 index", dtype):
        p = r["ptx"]
        per_thread = r["constexprs"]["BLOCK"] // (32 * r["num_warps"])
        assert p["ex2"] + p["rcp"] + p["lg2"] <= 3 * per_thread, p
        assert p["div_rn"] == 0, p
        # the class index is loaded per row: no shared-memory layout conversion in the tile
        assert p["convert_layout"] == 0, p


def test_softmax_channels_last_has_no_64_bit_division(aot):
    for dt in ("fp32", "bf16"):
        for r in _sm90(aot, "_softmax_fwd_kernel", "SEG ce ignore+cw+ls.1 [channels_last]", dt):
            assert r["ptx"]["div_s64"] == 0, r["ptx"]
