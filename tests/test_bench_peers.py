"""The peers benchmark (``benchmarks/peers.py``, repository only): its dry run, and that each row
compares the same loss (the row refuses to time two different values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import peers


def test_peers_smoke_writes_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peers.main(["--smoke", "--out", str(tmp_path), "--stem", "t"]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    got = {(r["loss"], r["peer"]) for r in data["rows"]}
    # the box rows need no peer package; the segmentation rows need MONAI, SMP and kornia,
    # which the test environment installs (scripts/test.sh)
    assert {("giou", "torchvision's formula"), ("ciou", "torchvision's formula")} <= got
    assert {("dice", "MONAI DiceLoss"), ("dice", "SMP DiceLoss")} <= got
    assert ("softmax_focal", "kornia focal_loss") in got
    assert {("quality_focal", "mmdetection's formula"), ("ldam", "the paper's formula")} <= got
    assert all(r["peer_ms"] > 0 and r["lossforge_ms"] > 0 for r in data["rows"])
    assert all(r["speedup_range"][0] <= r["speedup"] <= r["speedup_range"][1] for r in data["rows"])
    assert "| loss | peer |" in (tmp_path / "t.md").read_text()
    assert "dice" in capsys.readouterr().out


def test_only_selects_rows_by_prefix(tmp_path: Path) -> None:
    assert peers.main(["--smoke", "--only", "ciou", "--out", str(tmp_path), "--stem", "c"]) == 0
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["loss"] for r in rows] == ["ciou"]


@pytest.mark.parametrize("name", ["tv_giou", "tv_diou", "tv_ciou"])
def test_box_formulas_match_lossforge_on_valid_boxes(name: str) -> None:
    """torchvision's formulas as the benchmark writes them agree with lossforge on valid,
    overlapping and disjoint boxes (float64), and differ by the factor a wrong row would show."""
    pred, target = peers._boxes(256, seed=5)
    pred, target = pred.double(), target.double()
    pred[:8, :2] += 200.0  # some disjoint boxes (still x2 > x1 after the shift of x2 below)
    pred[:8, 2:] += 200.0
    ours = {"tv_giou": "giou_loss", "tv_diou": "diou_loss", "tv_ciou": "ciou_loss"}[name]
    want = getattr(peers.F, ours)(pred, target)
    got = getattr(peers, name)(pred, target)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_row_with_different_values_is_refused() -> None:
    x = torch.randn(4)
    row = peers.Row("l1", "x", "4", lambda z: z.abs().mean(), lambda z: z.abs().sum(), x)
    with pytest.raises(AssertionError, match="l1 vs x"):
        peers.check_values(row)
    assert peers.check_values(peers.Row("l1", "x", "4", row.ours, row.peer, x, scale=4.0))
