"""Backend selection between the pure-PyTorch reference and the optional fused kernels.

``backend="torch"`` always runs the reference. ``"auto"`` runs a fused kernel when every tensor is
on CUDA, the input has at least ``AUTO_MIN_NUMEL`` elements (below that a call is host-bound and
the reference's few small launches cost no more than the kernels' launches), triton is importable
and the kernel supports the case, else the reference. ``"triton"`` raises a clear error when no
kernel can serve (it ignores the size threshold). Nothing here imports triton at
``import lossforge`` time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

from torch import Tensor

from lossforge._checks import check_choice, fail

BACKENDS = ("auto", "torch", "triton")


def _min_numel() -> int:
    raw = os.environ.get("LOSSFORGE_AUTO_MIN_NUMEL", "").strip()
    try:
        return max(int(raw), 0) if raw else 65536
    except ValueError:
        return 65536


#: ``backend="auto"`` runs the reference below this many input elements (the environment variable
#: ``LOSSFORGE_AUTO_MIN_NUMEL`` overrides it; ``scripts/gpu_check.sh`` measures the crossover).
AUTO_MIN_NUMEL = _min_numel()

# Set only by ``cpu_kernels()`` (tests): CPU tensors count as kernel-eligible, the kernels then run
# through Triton's interpreter.
_cpu_kernels = False
_cpu_min_numel = 0


@contextlib.contextmanager
def cpu_kernels(min_numel: int = 0) -> Iterator[None]:
    """Let ``backend="auto"`` / ``"triton"`` run the kernels on CPU tensors through Triton's
    interpreter (``TRITON_INTERPRET=1`` must be set before triton is imported). For tests: it
    exercises the whole fused path (routing, denominators, kernels) without a GPU, slowly.

    Args:
        min_numel: ``"auto"``'s size threshold inside the scope (0: tiny test inputs are fused).
    """
    global _cpu_kernels, _cpu_min_numel
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("", "0", "false", "off"):
        raise RuntimeError("cpu_kernels() needs TRITON_INTERPRET=1 set before triton is imported")
    saved = _cpu_kernels, _cpu_min_numel
    _cpu_kernels, _cpu_min_numel = True, min_numel
    try:
        yield
    finally:
        _cpu_kernels, _cpu_min_numel = saved


_triton_found: bool | None = None


def triton_importable() -> bool:
    """Whether the ``triton`` package can be imported (checked lazily, once; a plain module global
    rather than ``functools.lru_cache``, which ``torch.compile`` warns about)."""
    global _triton_found
    if _triton_found is None:
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def kernel_eligible(fn: str, backend: object, *tensors: Tensor | None) -> bool:
    """Validate ``backend`` and say whether a fused kernel may be tried for these tensors.

    Returns False for ``"torch"``. For ``"triton"`` it raises ``ValueError`` when the tensors are
    not on CUDA or triton is missing; for ``"auto"`` it returns False in those cases and when the
    first tensor (the loss's input) has fewer than ``AUTO_MIN_NUMEL`` elements.
    """
    if backend == "torch":  # the default, on every call: before the general check
        return False
    backend = check_choice(fn, "backend", backend, BACKENDS)
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
    if backend == "auto" and present:
        limit = _cpu_min_numel if _cpu_kernels else AUTO_MIN_NUMEL
        if present[0].numel() < limit:
            return False
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
