"""lossforge: loss functions for imbalanced, multi-label, dense-prediction and regression training.

``lossforge.functional`` holds the pure-PyTorch losses (the specification), ``lossforge.nn`` their
module forms. Importing lossforge never imports triton and never touches CUDA.

The public names below are imported on first use (PEP 562): ``import lossforge`` itself is cheap,
so the ``lossforge`` command answers ``--help`` and argument errors without importing torch, and
``lossforge.<name>`` or ``from lossforge import <name>`` loads the library (torch included) once.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports below are re-exports that __getattr__ resolves)

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what the first attribute access imports (for type checkers and the docs)
    from lossforge import functional, multitask, nn
    from lossforge._checks import (
        OptionalDependencyError,
        set_value_checks,
        value_checks,
        value_checks_enabled,
    )
    from lossforge.functional import *  # noqa: F403
    from lossforge.nn import *  # noqa: F403
    from lossforge.registry import (
        build_loss,
        build_loss_from_toml,
        get_loss,
        list_losses,
        register_loss,
    )
    from lossforge.weights import *  # noqa: F403

_API: dict[str, Any] = {}


def _api() -> dict[str, Any]:
    """Import the public API on first use (the losses, their modules, the registry, torch)."""
    if not _API:
        # import_module, not `from lossforge import ...`: the latter asks this module for the
        # names first, which would land in __getattr__ again.
        _checks, functional, multitask, nn, registry, weights = (
            importlib.import_module(f"lossforge.{name}")
            for name in ("_checks", "functional", "multitask", "nn", "registry", "weights")
        )

        api: dict[str, Any] = {"functional": functional, "multitask": multitask, "nn": nn}
        for mod in (functional, nn, weights):
            api.update({name: getattr(mod, name) for name in mod.__all__})
        for name in ("OptionalDependencyError", "set_value_checks", "value_checks"):
            api[name] = getattr(_checks, name)
        api["value_checks_enabled"] = _checks.value_checks_enabled
        for name in ("build_loss", "build_loss_from_toml", "get_loss", "list_losses"):
            api[name] = getattr(registry, name)
        api["register_loss"] = registry.register_loss
        api["__all__"] = [
            "OptionalDependencyError",
            "__version__",
            "build_loss",
            "build_loss_from_toml",
            "functional",
            "get_loss",
            "list_losses",
            "multitask",
            "register_loss",
            "nn",
            "set_value_checks",
            "value_checks",
            "value_checks_enabled",
            *functional.__all__,
            *nn.__all__,
            *weights.__all__,
        ]
        _API.update(api)
    return _API


#: Subpackages and modules reached as attributes (``lossforge.functional``): imported alone.
_SUBMODULES = frozenset(
    {
        "cli",
        "distributed",
        "functional",
        "integrations",
        "kernels",
        "multitask",
        "nn",
        "registry",
        "weights",
    }
)


def __getattr__(name: str) -> Any:
    if name.startswith("_") and name != "__all__":
        # Private modules and dunders: not part of the API. `from lossforge import _x` (used
        # inside the package) then imports the submodule itself.
        raise AttributeError(f"module 'lossforge' has no attribute {name!r}")
    if name in _SUBMODULES:
        return importlib.import_module(f"lossforge.{name}")
    api = _api()
    if name not in api:
        raise AttributeError(f"module 'lossforge' has no attribute {name!r}")
    value = api[name]
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_api()))
