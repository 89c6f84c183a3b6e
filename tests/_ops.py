"""A ``TorchDispatchMode`` that records the aten operations run inside it (operation counts are
recorded figures and path checks, never timings)."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class OpLog(TorchDispatchMode):
    """``with OpLog() as log: ...``; then ``log.ops`` lists the operations' names in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
