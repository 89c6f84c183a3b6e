"""lossforge: loss functions for imbalanced, multi-label, dense-prediction and regression training.

``lossforge.functional`` holds the pure-PyTorch losses (the specification), ``lossforge.nn`` their
module forms. Importing lossforge never imports triton and never touches CUDA.
"""

from lossforge import functional, multitask, nn
from lossforge import weights as _weights
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

__version__ = "0.1.0"

__all__ = [
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
    *_weights.__all__,
]
