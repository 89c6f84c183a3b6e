"""``scripts/gpu_check.sh --dry-run``: every stage of the first GPU run, on the CPU (issue #12,
item 14), so the script is known to run end to end before a GPU is at hand; and the summary's
reading of its inputs (pytest logs, benchmark rows, check rows) on synthetic ones."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


gc = _load()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the CPU path")
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    (out / "raw").mkdir(parents=True)
    (out / "raw" / "bench-stale.json").write_text('{"results": [{"workload": "DET"}]}')
    (out / "summary.txt").write_text("stale")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("TRITON_INTERPRET", None)  # the script sets what each stage needs
    env.update(CUDA_LAUNCH_BLOCKING="1", LOSSFORGE_CHECKS="auto")  # recorded, unset for timing
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
    assert not (out / "raw" / "bench-stale.json").exists()
    stages = {s["stage"]: s for s in json.loads((out / "stages.json").read_text())}
    assert list(stages) == list(gc.STAGES)
    assert all(s["rc"] == 0 for s in stages.values()), stages
    for name in gc.STAGES:
        assert (out / "logs" / f"{name}.log").exists(), name
    checks = json.loads((out / "checks.json").read_text())["rows"]
    judged = {r["check"] for r in checks if r.get("met") is not None}
    assert {"no host sync (auto)", "fp16 GradScaler = torch", "torch.compile = eager"} <= judged
    failed = [r for r in checks if r.get("met") is False]
    assert not failed, failed
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert any(r["target"].startswith("DET fp32 x roof") for r in summary)
    assert not [r for r in summary if r["met"] is False], summary
    env_json = json.loads((out / "env.json").read_text())
    assert env_json["env_vars"]["CUDA_LAUNCH_BLOCKING"] == "1"
    assert set(env_json["unset_for_timing"]) == {"CUDA_LAUNCH_BLOCKING", "LOSSFORGE_CHECKS"}
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert {r["workload"] for r in rows} >= {"DET", "SEG", "ML-S", "REG"}
    # the one-screen summary: a line per stage and per target, <= 100 characters
    assert "no host sync" in proc.stdout and "x roof" in proc.stdout
    assert "stage bench-rest" in proc.stdout and "--reps 1" in proc.stdout
    assert len(proc.stdout.splitlines()) < 80
    text = (out / "summary.txt").read_text().splitlines()
    assert max(map(len, text)) <= gc.WIDTH


# ---- pytest results ------------------------------------------------------------------------------

_LOG_PASS = textwrap.dedent(
    """\
    $ python -m pytest -q -m gpu tests/kernels
    ....s.....
    ==================================== warnings summary ====================================
    tests/kernels/test_x.py::test_y
      UserWarning: something
    ==== FAILURES (none, but the marker is here) ====
    =========================== short test summary info ===========================
    SKIPPED [1] tests/kernels/test_x.py:3: not here
    9 passed, 1 skipped, 3 warnings in 12.34s
    """
)


def test_pytest_counts_read_the_final_line() -> None:
    counts, line = gc._pytest_counts(_LOG_PASS)
    assert counts == {"passed": 9, "skipped": 1}
    assert line.startswith("9 passed")
    framed = "=== 2 failed, 7 passed, 1 error, 4 deselected in 3.1s (0:00:03) ==="
    counts, _ = gc._pytest_counts("x\n" + framed + "\n")
    assert counts == {"failed": 2, "passed": 7, "error": 1, "deselected": 4}
    counts, _ = gc._pytest_counts("34/547 tests collected (513 deselected) in 0.84s\n")
    assert counts["collected"] == 34
    counts, line = gc._pytest_counts("!!! KeyboardInterrupt !!!\n1 passed in 60.01s\n")
    assert counts == {"passed": 1}
    assert gc._pytest_counts("Traceback ...\nImportError: hypothesis\n") == ({}, "")


def test_pytest_counts_fall_back_to_junit(tmp_path: Path) -> None:
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1"/></testsuites>'
    )
    counts, line = gc._pytest_counts("killed\n", xml)
    assert counts == {"passed": 3, "failed": 1, "error": 0, "skipped": 1}
    assert line.startswith("junit")


def _out_with_logs(tmp_path: Path, logs: dict[str, str], stages: list[dict]) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    for name, text in logs.items():
        (tmp_path / "logs" / f"{name}.log").write_text(text)
    (tmp_path / "stages.json").write_text(json.dumps(stages))
    return tmp_path


def test_pytest_rows_no_false_not_met_from_pytest_banners(tmp_path: Path) -> None:
    failing = (
        "F.\nFAILED tests/kernels/test_x.py::test_z - AssertionError\n1 failed, 1 passed in 2s\n"
    )
    out = _out_with_logs(
        tmp_path,
        {"pytest-gpu": _LOG_PASS, "pytest-fused": failing},
        [{"stage": "pytest-gpu", "rc": 0}, {"stage": "pytest-fused", "rc": 1}],
    )
    rows = {
        r["target"]: r
        for r in gc._pytest_rows(out, json.loads((out / "stages.json").read_text()), False)
    }
    assert list(rows) == ["pytest-gpu passes", "pytest-fused passes"]  # no row per banner
    assert rows["pytest-gpu passes"]["met"] is True
    assert "9 passed" in rows["pytest-gpu passes"]["value"]
    assert rows["pytest-fused passes"]["met"] is False
    assert rows["pytest-fused passes"]["error"].startswith("FAILED tests/kernels/test_x.py")


def test_pytest_rows_timeout_crash_skip_and_missing(tmp_path: Path) -> None:
    stages = [
        {"stage": "pytest-gpu", "rc": "timeout", "limit": 60},
        {"stage": "pytest-fused", "rc": -11},
    ]
    out = _out_with_logs(
        tmp_path,
        {"pytest-gpu": "..\n!!! KeyboardInterrupt !!!\n2 passed in 60s\n", "pytest-fused": "Segm"},
        stages,
    )
    rows = gc._pytest_rows(out, stages, False)
    assert rows[0]["met"] is None and rows[0]["flag"] == "partial"
    assert "timeout" in rows[0]["value"] and "2 passed" in rows[0]["value"]
    assert rows[1]["met"] is False  # a crash with no count is not a pass
    (out / "run.json").write_text(json.dumps({"missing_test_deps": ["hypothesis"]}))
    rows = gc._pytest_rows(out, [{"stage": "pytest-gpu", "rc": "skipped", "note": "x"}], False)
    assert rows[0]["value"] == "not run: missing test dependency: hypothesis"
    assert rows[1] == {
        "target": "pytest-fused passes",
        "value": "not run",
        "met": None,
        "flag": "not run",
    }


# ---- benchmark bars ------------------------------------------------------------------------------


def _row(
    wl: str, loss: str, dtype: str, shape: list[int], provider: str = "lossforge_triton", **kw: Any
) -> dict:
    return {
        "workload": wl,
        "loss": loss,
        "dtype": dtype,
        "shape": shape,
        "target": "index",
        "provider": provider,
        "status": "ok",
        **kw,
    }


def test_bars_count_failed_rows_and_mark_missing_ones() -> None:
    det = [1_600_000, 80]
    bench = [
        _row("DET", "sigmoid_focal_g2", "float32", det, x_roof=1.1, speedup_vs_compile=2.0),
        _row("DET", "bce", "float32", det, status="RuntimeError: out of resources"),
        _row("DET", "balanced_bce", "float32", det, provider="*", status="row failed: OOM"),
        # the L2-resident 256x9605 shape is not judged for the ML-L x-roof bars
        _row("ML-L", "asl", "float32", [256, 9605], x_roof=9.0),
        _row("ML-L", "asl", "float32", [4096, 9605], x_roof=1.2),
        _row("LLM", "ce_ls0", "bfloat16", [8192, 128256], x_roof=1.1),
    ]
    bars = {b["target"]: b for b in gc._bars(bench, False, {"liger_kernel": None})}
    fp32 = bars["DET fp32 x roof <= 1.3"]
    assert fp32["met"] is False and fp32["value"].startswith("1/3 rows")
    assert "out of resources" in fp32["error"]
    assert bars["DET vs torch.compile >= 1.5"]["met"] is False  # failed rows count here too
    assert bars["DET bf16 x roof <= 1.5"]["flag"] == "not run"
    assert bars["ML-L 4096x9605 fp32 x roof <= 1.3"]["met"] is True
    assert bars["ML-L 4096x9605 vs compile >= 1.5"]["met"] is None
    assert bars["LLM CE x 2R1W roof <= 1.2"]["met"] is True
    assert "Liger not installed" in bars["LLM CE vs Liger >= 1"]["value"]
    assert bars["SEG CE x roof <= 1.5"]["value"] == "not run"
    assert "REG extra mem (x b B/logit) <= 1.05" in bars
    # a dry run judges nothing
    assert all(b["met"] is None for b in gc._bars(bench, True))


def test_bars_ml_s_against_eager_bce() -> None:
    s = [256, 80]
    bench = [
        _row("ML-S", "bce", "float32", s, provider="eager_ref", median_ms=0.10),
        _row("ML-S", "bce", "float32", s, median_ms=0.08),
        _row("ML-S", "asl", "float32", s, median_ms=0.12),
    ]
    bars = {b["target"]: b for b in gc._bars(bench, False)}
    row = bars["ML-S fp32 time / eager BCE's <= 1"]
    assert row["met"] is False and "1.20" in row["value"]


def test_every_bar_has_a_key_row() -> None:
    """The first benchmark stages run one row for every bar (LLM in its own slice), with the
    torch.compile reference where a bar compares with it."""
    from benchmarks.protocol import _key_matches, row_key, select_rows, workloads

    rows = select_rows(workloads("meta", False), rows=[*gc.KEY_ROWS, *gc.LLM_ROWS])
    for wl, dt, loss, shape, col, *_ in gc.BARS:
        hit = [
            r
            for r in rows
            if r.workload == wl
            and (dt is None or r.dtype == dt)
            and (loss is None or r.loss.startswith(loss))
            and (shape is None or r.shape == shape)
        ]
        assert hit, (wl, dt, loss, col)
        if col == "speedup_vs_compile":
            assert any(any(_key_matches(p, row_key(r)) for p in gc.COMPILE_ROWS) for r in hit)
    assert [row_key(r).split(":")[0] for r in rows[:2]] == ["DET", "DET"]  # the patterns' order


def test_plan_runs_the_rest_without_the_key_rows(tmp_path: Path) -> None:
    import argparse

    plan = dict(gc._plan(argparse.Namespace(out=str(tmp_path), dry_run=False)))
    assert list(plan) == list(gc.STAGES)
    rest = plan["bench-rest"]
    assert rest[rest.index("--skip-rows") + 1] == ",".join(gc.KEY_ROWS + gc.LLM_ROWS)
    assert "--no-launches" in rest and "--no-compile" in rest
    assert "tests/test_dice.py" in plan["pytest-gpu"]  # -m gpu beyond tests/kernels


# ---- checks --------------------------------------------------------------------------------------


def test_cases_are_the_expected_ones() -> None:
    assert tuple(gc._cases("cpu", True)) == gc.CASES
    assert tuple(gc._tiny_cases("cpu", True, (4, 3))) == gc.TINY_CASES


def test_check_rows_against_the_expected_list() -> None:
    rows = [
        {
            "check": "no host sync (auto)",
            "loss": name,
            "value": "0 syncs",
            "target": "0 syncs",
            "met": True,
        }
        for name in gc.CASES[:-1]
    ] + [
        {
            "check": "fp16 GradScaler = torch",
            "loss": "bce",
            "value": "error",
            "target": "",
            "met": False,
            "note": "RuntimeError: boom",
        },
    ]
    table = {
        r["target"].split(" ")[0] + r["target"].split(" ")[1]: r
        for r in gc._check_rows({"rows": rows}, False)
    }
    sync = table["nohost"]
    assert (
        sync["met"] is None and sync["flag"] == "partial" and "not run: smooth_l1" in sync["value"]
    )
    fp16 = table["fp16GradScaler"]
    assert fp16["met"] is False and "boom" in fp16["error"]
    assert table["CUDAgraph"]["flag"] == "not run"  # expected on a GPU
    assert "CUDAgraph" not in {
        r["target"].split(" ")[0] + r["target"].split(" ")[1]
        for r in gc._check_rows({"rows": rows}, True)
    }


def test_render_fits_the_width() -> None:
    table = [
        {"target": "x" * 80, "value": "y" * 120, "met": False, "error": "z" * 300},
        {"target": "t", "value": "v", "met": None, "flag": "not run"},
    ]
    text = gc._render(
        table, ["h" * 150], [{"stage": "env", "rc": "timeout", "limit": 20, "seconds": 28}]
    )
    lines = text.splitlines()
    assert max(map(len, lines)) <= gc.WIDTH
    assert "stage env           timeout at 20 s, 28 s" in lines
    assert "stage checks        not run" in lines
    assert any(line.startswith("    ! zzz") for line in lines)


# ---- the runner ----------------------------------------------------------------------------------


def test_stage_timeout_interrupts_first_then_kills(tmp_path: Path) -> None:
    polite = textwrap.dedent(
        """\
        import time
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            print('3 passed in 1.0s', flush=True)
        """
    )
    t0 = time.monotonic()
    rec = gc._stage("p", [sys.executable, "-c", polite], 1.5, tmp_path / "p.log")
    assert rec["rc"] == "timeout"
    assert "3 passed in 1.0s" in (tmp_path / "p.log").read_text()
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
    assert gc._wait(proc, 1.0, grace=1.0) == "timeout"
    assert proc.returncode is not None
    assert time.monotonic() - t0 < 20


def test_no_stage_starts_past_the_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    (out / "raw").mkdir(parents=True)
    (out / "raw" / "bench-old.json").write_text("{}")
    (out / "checks.json").write_text('{"rows": []}')
    # the clock started (in gpu_check.sh) longer ago than the budget
    rc = gc.main(
        [
            "run",
            "--out",
            str(out),
            "--dry-run",
            "--budget",
            "30",
            "--start-epoch",
            str(time.time() - 60),
        ]
    )
    assert rc == 1  # env did not run
    stages = json.loads((out / "stages.json").read_text())
    assert [s["rc"] for s in stages] == ["skipped"] * len(gc.STAGES)
    assert not (out / "raw" / "bench-old.json").exists() and not (out / "checks.json").exists()
    text = capsys.readouterr().out
    assert "stage env           skipped (no time left)" in text
    assert "checks" in (out / "summary.txt").read_text()


def test_summary_survives_broken_inputs(tmp_path: Path) -> None:
    import argparse

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "bench-key.json").write_text('{"results": [1, {"workload": "DET"')
    (tmp_path / "checks.json").write_text("{not json")
    (tmp_path / "stages.json").write_text("[]")
    assert gc.summary_stage(argparse.Namespace(out=str(tmp_path), dry_run=False)) == 0
    assert "not run" in (tmp_path / "summary.txt").read_text()
