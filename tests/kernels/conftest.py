"""Kernel tests: run on the GPU when there is one, else through the Triton CPU interpreter.

``TRITON_INTERPRET`` must be set before triton is imported, so this conftest sets it (when no CUDA
device is present) before anything imports ``lossforge.kernels``. Without triton the whole directory
is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# `tests.kernels._helpers` and `benchmarks.run` are imported from the repository root.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# triton reads TRITON_INTERPRET when it is first imported: if something imported it before this
# conftest ran without the variable, the kernels cannot run on the CPU in this process.
_LATE = (
    not torch.cuda.is_available()
    and "triton" in sys.modules
    and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore_glob: list[str] = []
if importlib.util.find_spec("triton") is None or _LATE:
    collect_ignore_glob = ["test_*.py"]
    if _LATE:
        print(
            "tests/kernels skipped: triton was imported before TRITON_INTERPRET=1 was set; "
            "run them with TRITON_INTERPRET=1 in the environment",
            file=sys.stderr,
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001, ARG001
    """Print the largest kernel error vs float64 seen per (family, dtype)."""
    try:
        from tests.kernels._helpers import ERRORS
    except ImportError:
        return
    if not ERRORS:
        return
    terminalreporter.section("max error vs float64 / max(1, |ref|): kernel, same-dtype torch")
    for (family, dtype), (ek, er) in sorted(ERRORS.items()):
        terminalreporter.write_line(f"{family:48s} {dtype:9s} kernel {ek:.2e}  torch {er:.2e}")


@pytest.fixture(autouse=True)
def _fused_path_on_cpu():
    """Without a GPU, let ``backend="auto"`` / ``"triton"`` run the kernels on CPU tensors through
    the interpreter (``lossforge._dispatch.cpu_kernels``), so the tests go through the public
    functions exactly as CUDA callers do."""
    if torch.cuda.is_available() or collect_ignore_glob:
        yield
        return
    from lossforge._dispatch import cpu_kernels

    with cpu_kernels():
        yield
