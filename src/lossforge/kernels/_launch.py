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

from lossforge._reduction import Denominator

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


def denominator_args(denom: Denominator | None) -> tuple[float, Tensor | None, float, int]:
    """The kernels' view of ``lossforge._reduction.Denominator``: ``(scale, scale_t, d, mode)``.

    ``scale`` / ``scale_t``: the element gradients' factor ``1 / d`` (0 where ``d <= 0``) as a host
    float, or on the device as element 0 of ``scale_t = [1 / d, d]`` when ``d`` is a device tensor
    (no host sync); ``d``: the host denominator; ``mode``: 0 no mean, 1 mean, 2 mean with a strict
    (``avg_factor``) denominator. The final stage (``_common.finish_sum``) divides by ``d``.
    """
    if denom is None:
        return 1.0, None, 1.0, 0
    mode = 2 if denom.strict else 1
    s, s_t = denom.grad_scale()
    if s_t is None:
        return s, None, float(denom.value), mode  # type: ignore[arg-type]
    d_t = denom.value.detach().to(device=s_t.device, dtype=torch.float32).reshape(1)  # type: ignore[union-attr]
    return 1.0, torch.cat([s_t, d_t]), 0.0, mode
