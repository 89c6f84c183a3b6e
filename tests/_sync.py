"""A CPU stand-in for "no host synchronisation": fail on any read of a tensor's value on the host.

On CUDA each of these reads (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``, a tensor used
as an index or a shape) waits for the device. Run a loss under ``no_host_reads()`` with value
checks off: if it passes on CPU, the default path issues no such read on a GPU either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor value was read on the host (a device sync on CUDA)")

    saved = {name: getattr(torch.Tensor, name) for name in _READS}
    try:
        for name in _READS:
            setattr(torch.Tensor, name, refuse)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
