"""Optional dependencies of the ``lossforge`` command (the ``lossforge[cli]`` extra).

A leaf module: it imports nothing from lossforge until a dependency is missing, so every CLI
module can use it without an import cycle.
"""

from __future__ import annotations

import importlib.util

__all__ = ["require"]

_PIP_NAMES = {"sklearn": "scikit-learn"}


def require(module: str, purpose: str) -> None:
    """Raise ``OptionalDependencyError`` if ``module`` cannot be imported.

    Args:
        module: Import name (``"sklearn"``, ``"matplotlib"``, ``"tqdm"``, ``"numpy"``).
        purpose: What needs it, for the message.
    """
    if importlib.util.find_spec(module) is None:
        from lossforge._checks import OptionalDependencyError

        name = _PIP_NAMES.get(module, module)
        raise OptionalDependencyError(f"{purpose} needs {name}: pip install lossforge[cli]")
