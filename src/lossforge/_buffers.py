"""Floating-point buffers that keep float32 when their module is cast to fp16 / bf16.

``module.half()``, ``.bfloat16()`` and ``.to(torch.float16)`` cast every floating buffer with the
model. A loss's or a weighting's buffers are configuration and running state (class weights,
counts, GHM's running bin counts, moving averages), which the loss computes with in float32
anyway: in fp16 a count above 65504 is inf, in bf16 120000 rounds to 119808 and a moving average
cannot move by less than 1/256 of its value. They keep float32 (restored from their values before
the cast, not rounded and widened back); ``.double()`` and device moves still apply. Parameters
(a learned class weight) follow the module's dtype, as any parameter does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["apply_keeping_float32"]

_LOW = (torch.float16, torch.bfloat16)


def apply_keeping_float32(module: nn.Module, apply: Callable[[], object]) -> None:
    """Run ``apply`` (the module's ``nn.Module._apply``) and undo a cast of its own floating
    buffers to fp16 / bf16: each gets its value from before the cast in float32, on the device
    the cast put it on. A buffer that was fp16 / bf16 already (given so) is left as it is; one
    materialised from the meta device (``to_empty``) is uninitialised float32 memory, as
    ``to_empty`` gives."""
    before = {
        k: b
        for k, b in module._buffers.items()
        if b is not None and b.is_floating_point() and b.dtype not in _LOW
    }
    apply()
    for name, old in before.items():
        new: Tensor | None = module._buffers[name]
        if new is None or new.dtype not in _LOW:
            continue
        if old.device.type == "meta":
            module._buffers[name] = torch.empty_like(new, dtype=torch.float32)
        else:
            module._buffers[name] = old.to(device=new.device, dtype=torch.float32)
