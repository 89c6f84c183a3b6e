"""``scripts/gpu_check.sh --dry-run``: every stage of the first GPU run, on the CPU (issue #12,
item 14), so the script is known to run end to end before a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the CPU path")
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("TRITON_INTERPRET", None)  # the script sets what each stage needs
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run", "--budget", "400"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("summary.md", "summary.json", "checks.json", "pytest.txt", "bench.json"):
        assert (out / name).exists(), name
    stages = {s["stage"]: s for s in json.loads((out / "stages.json").read_text())}
    assert all(s["rc"] == 0 for s in stages.values()), stages
    checks = json.loads((out / "checks.json").read_text())["rows"]
    judged = {r["check"] for r in checks if r.get("met") is not None}
    assert {"no host sync (auto)", "fp16 GradScaler = torch", "torch.compile = eager"} <= judged
    failed = [r for r in checks if r.get("met") is False]
    assert not failed, failed
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert any(r["target"].startswith("DET fp32 x roof") for r in summary)
    # the one-screen summary: a line per target
    assert "no host sync" in proc.stdout and "x roof" in proc.stdout
    assert len(proc.stdout.splitlines()) < 80
