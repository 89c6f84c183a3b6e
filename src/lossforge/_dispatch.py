"""Backend selection between the pure-PyTorch reference and the optional fused kernels.

``backend="torch"`` always runs the reference. ``"auto"`` runs a fused kernel when every tensor is
on CUDA, triton is importable and the kernel supports the case, else the reference. ``"triton"``
raises a clear error when no kernel can serve. Nothing here imports triton at ``import lossforge``
time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from functools import lru_cache

from torch import Tensor

from lossforge._checks import check_choice, fail

BACKENDS = ("auto", "torch", "triton")

# Set only by ``cpu_kernels()`` (tests): CPU tensors count as kernel-eligible, the kernels then run
# through Triton's interpreter.
_cpu_kernels = False


@contextlib.contextmanager
def cpu_kernels() -> Iterator[None]:
    """Let ``backend="auto"`` / ``"triton"`` run the kernels on CPU tensors through Triton's
    interpreter (``TRITON_INTERPRET=1`` must be set before triton is imported). For tests: it
    exercises the whole fused path (routing, denominators, kernels) without a GPU, slowly."""
    global _cpu_kernels
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("", "0", "false", "off"):
        raise RuntimeError("cpu_kernels() needs TRITON_INTERPRET=1 set before triton is imported")
    saved = _cpu_kernels
    _cpu_kernels = True
    try:
        yield
    finally:
        _cpu_kernels = saved


@lru_cache(maxsize=1)
def triton_importable() -> bool:
    """Whether the ``triton`` package can be imported (checked lazily, once)."""
    return importlib.util.find_spec("triton") is not None


def kernel_eligible(fn: str, backend: object, *tensors: Tensor | None) -> bool:
    """Validate ``backend`` and say whether a fused kernel may be tried for these tensors.

    Returns False for ``"torch"``. For ``"triton"`` it raises ``ValueError`` when the tensors are
    not on CUDA or triton is missing; for ``"auto"`` it returns False in those cases.
    """
    backend = check_choice(fn, "backend", backend, BACKENDS)
    if backend == "torch":
        return False
    present = [t for t in tensors if t is not None]
    on_cuda = bool(present) and all(t.is_cuda or _cpu_kernels for t in present)
    if backend == "triton":
        if not on_cuda:
            devices = sorted({str(t.device) for t in present})
            fail(
                fn,
                "backend",
                "'triton' only with CUDA tensors (use 'auto' to fall back)",
                f"tensors on {devices}",
            )
        if not triton_importable():
            fail(
                fn,
                "backend",
                "'triton' with triton installed (pip install lossforge[triton])",
                "no triton module",
            )
    return on_cuda and triton_importable()


def unsupported(fn: str, backend: str, why: str) -> bool:
    """Called when a kernel cannot serve a case: raise for ``"triton"``, fall back for
    ``"auto"``."""
    if backend == "triton":
        fail(
            fn,
            "backend",
            f"a case the triton kernel supports ({why}); use backend='auto' to fall back",
            "'triton'",
        )
    return False
