"""Launch heuristics and host-side helpers shared by the kernel families.

Block sizes follow PERFORMANCE.md section 5: element-wise tiles of 1024 with 4 warps (8192-wide
tiles
halved the throughput on an H100 from register pressure), row tiles capped at 16K columns. Under the
Triton CPU interpreter the tiles are small so that the tests exercise many programs and masked
tails.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from torch import Tensor

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "off")


def fast_math() -> bool:
    """Approximate division/log (libdevice) on the GPU: opt-in with ``LOSSFORGE_FAST_MATH=1``.

    Always off under the interpreter, where libdevice calls fail (PERFORMANCE.md section 4).
    """
    return os.environ.get("LOSSFORGE_FAST_MATH", "0") == "1" and not interpreting()


def elementwise_block() -> int:
    return 128 if interpreting() else 1024


def elementwise_warps() -> int:
    return 4


@lru_cache(maxsize=8)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def persistent_programs(device: torch.device, n_blocks: int) -> int:
    """Grid of a grid-stride kernel: at most 4 programs per SM (4 under the interpreter)."""
    if device.type == "cuda":
        cap = 4 * _sm_count(
            device.index if device.index is not None else torch.cuda.current_device()
        )
    else:
        cap = 4
    return max(1, min(n_blocks, cap))


def is_dense(x: Tensor) -> bool:
    """Non-overlapping and dense in one of the layouts the element-wise kernels walk in memory
    order."""
    if x.is_contiguous():
        return True
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return True
    return x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)


def same_layout(ref: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Return ``(ref, *others)`` in one dense memory layout, copying only what does not match.

    Element-wise kernels then walk all of them in memory order, so channels_last inputs are read in
    place. A copy happens only for strided views (``x[..., ::2]``, expanded tensors).
    """
    if not is_dense(ref):
        ref = ref.contiguous()
    out = [ref]
    for o in others:
        if o.shape != ref.shape or o.stride() != ref.stride():
            o = (
                o.contiguous()
                if ref.is_contiguous()
                else torch.empty_like(ref, dtype=o.dtype).copy_(o)
            )
        out.append(o)
    return tuple(out)


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints (``triton.cdiv`` is a constexpr-function wrapper costing about 10
    us of host time per call)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for ``n <= 1``), as ``triton.next_power_of_2``."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
