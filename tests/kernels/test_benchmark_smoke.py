"""The benchmark script's CPU smoke path runs and writes its three result files."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke path is the CPU path")
def test_benchmark_smoke(tmp_path):
    from benchmarks.run import main

    assert (
        main(
            [
                "--smoke",
                "--reps",
                "1",
                "--only",
                "ML-S,SEG,REG",
                "--out",
                str(tmp_path),
                "--stem",
                "t",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "t.json").read_text())
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert {r["provider"] for r in ok} >= {"eager_ref", "lossforge_torch"}
    assert (tmp_path / "t.csv").read_text().startswith("workload,")
    assert "| workload |" in (tmp_path / "t.md").read_text()


def test_lazy_entry_points_and_no_triton_on_import():
    import subprocess
    import sys

    code = (
        "import sys, lossforge, lossforge.kernels as K; assert 'triton' not in sys.modules; "
        "assert K.is_available(); "
        "[getattr(K, n) for n in K.__all__ if n != 'is_available']"
    )
    env = {"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
