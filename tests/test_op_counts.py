"""Operations per call of the default (torch) backend, every registered loss (issue #12, item 12).

On a GPU every aten operation is a kernel launch (and often an allocation), so the number of
operations one ``loss(x, y).backward()`` issues is the torch backend's fixed cost. It is counted
here with a ``TorchDispatchMode`` on the loss's declared example (float32, ``reduction="mean"``),
with value checks on (the CPU default) and off (the CUDA default), and compared with the figures
recorded in ``docs/benchmarks.md`` ("Operations per call"): a change that adds operations fails
here and must update the table, so the docs stay a measurement. These are counts, not timings.

For the losses PyTorch has as a function, the count with value checks off is also held to the
reference's count plus 3 plus what the loss's semantics cost beyond PyTorch's, each cost named in
``SEMANTICS`` (and in the docs).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from _ops import OpLog
from _reliability import INFOS, example, fn_of, name_of, params
from torch import Tensor

import lossforge
from lossforge.registry import LossInfo

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def count_ops(fn: Any, x: Tensor, y: Tensor, **kw: Any) -> list[str]:
    """The aten operations of one forward + backward of ``fn(x, y, **kw)``."""
    x = x.detach().to(torch.float32).requires_grad_(True)
    with OpLog() as mode:
        fn(x, y, **kw).backward()
    return mode.ops


def _inputs(info: LossInfo) -> tuple[Tensor, Tensor]:
    x, y = example(info, n=8, dtype=torch.float32)
    return x, (y.to(torch.float32) if y.is_floating_point() else y)


def _measure(info: LossInfo, checks: bool, device: str = "cpu") -> int:
    x, y = _inputs(info)
    with lossforge.value_checks(checks):
        return len(count_ops(fn_of(info), x.to(device), y.to(device), **params(info)))


def measure(info: LossInfo) -> tuple[int, int, int]:
    """(CPU with checks on, CPU with checks off, off the CPU with checks off).

    The last is counted on the meta device: the path a CUDA tensor takes on the torch backend
    (no CPU-only shortcut, host options as device constants), with its default, checks off. A host
    read there would fail, so it also proves the path reads no value."""
    return _measure(info, True), _measure(info, False), _measure(info, False, "meta")


def recorded() -> dict[str, tuple[int, int, int]]:
    """The table of ``docs/benchmarks.md``: loss -> (checks on, checks off, off the CPU)."""
    text = DOC.read_text()
    section = text.split("### Operations per call", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \|", section, flags=re.M)
    return {name: (int(on), int(off), int(meta)) for name, on, off, meta in rows}


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_ops_per_call_match_the_recorded_figures(info: LossInfo) -> None:
    table = recorded()
    assert info.name in table, f"add `{info.name}` to the table in {DOC.name}"
    got = measure(info)
    assert got == table[info.name], (
        f"{info.name}: measured (CPU checks on, CPU checks off, off the CPU) = {got}, recorded "
        f"{table[info.name]}: update docs/benchmarks.md (python scripts/op_counts.py) if the "
        "change is intended"
    )


def test_the_table_lists_only_registered_losses() -> None:
    assert set(recorded()) == {info.name for info in INFOS}


# PyTorch's functions, called on the same example (their targets as PyTorch takes them).
REFERENCES: dict[str, Any] = {
    "cross_entropy": TF.cross_entropy,
    "nll": TF.nll_loss,
    "binary_cross_entropy_with_logits": TF.binary_cross_entropy_with_logits,
    "binary_cross_entropy": TF.binary_cross_entropy,
    "l1": TF.l1_loss,
    "smooth_l1": TF.smooth_l1_loss,
    "mse": TF.mse_loss,
    "huber": TF.huber_loss,
}

# What a loss's semantics cost beyond PyTorch's kernel with value checks off (docs/benchmarks.md):
# an out-of-range class index becomes NaN instead of a device-side assert (ignore mask, clamp,
# compare, and, masked_fill of the raw target; any, a where of NaN or 0 added to the total, and
# the addition's backward: 10), and "mean" over nothing is 0 instead of NaN (count, clamp,
# divide, and the division's backward: 4; PyTorch's kernel divides inside).
# BCE on probabilities is written from its formula (log1p precision, zero gradient where the -100
# clamps are active), each guarded log a where pair: 44; a probability outside [0, 1] is NaN
# with checks off (ge, le, and, where with a NaN scalar, the where's backward): 7.
SEMANTICS: dict[str, int] = {"cross_entropy": 14, "nll": 14, "binary_cross_entropy": 51}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_checks_off_within_the_reference_plus_three(name: str) -> None:
    info = next(i for i in INFOS if i.name == name)
    x, y = _inputs(info)
    ref = len(count_ops(REFERENCES[name], x, y))
    with lossforge.value_checks(False):
        ours = len(count_ops(fn_of(info), x, y, **params(info)))
        off_cpu = len(count_ops(fn_of(info), x.to("meta"), y.to("meta"), **params(info)))
    assert ours <= ref + 3 + SEMANTICS.get(name, 0), (name, ours, ref)
    assert off_cpu <= ref + 3 + SEMANTICS.get(name, 0), (name, off_cpu, ref)
