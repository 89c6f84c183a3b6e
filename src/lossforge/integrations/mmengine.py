"""Register every lossforge loss into mmengine's ``MODELS`` registry (mmdetection, mmsegmentation).

In an mmdetection/mmsegmentation config::

    custom_imports = dict(imports=["lossforge.integrations.mmengine"], allow_failed_imports=False)
    model = dict(bbox_head=dict(loss_cls=dict(type="lossforge.SigmoidFocalLoss", gamma=2.0)))

Importing this module (which is what ``custom_imports`` does) calls ``register_all()`` when mmengine
is installed. The losses live in a child registry ``Registry("model", parent=MODELS,
scope="lossforge")``, so ``type="lossforge.<Name>"`` resolves from any downstream ``MODELS``
registry; each loss is registered under its class name (``SigmoidFocalLoss``) and its lossforge
registry name (``sigmoid_focal``). The modules already take mmdetection's ``forward(pred, target,
weight=None, avg_factor=None, reduction_override=None)`` keywords and a ``loss_weight``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lossforge._checks import OptionalDependencyError

__all__ = ["SCOPE", "register_all"]

SCOPE = "lossforge"


def _mmengine_registry() -> Any:
    try:
        from mmengine.registry import MODELS, Registry
    except ImportError as err:
        raise OptionalDependencyError(
            "lossforge.integrations.mmengine.register_all: expected `mmengine` installed "
            "(pip install 'lossforge[mmengine]'), got ImportError: " + str(err)
        ) from err
    return MODELS, Registry


def register_all(registry: Any = None, *, force: bool = False) -> Any:
    """Register every loss of ``lossforge.registry`` into an mmengine registry.

    Args:
        registry: The parent registry (default: ``mmengine.registry.MODELS``; pass a downstream
            ``MODELS`` such as mmdetection's to register under it). The losses go into its child
            registry with scope ``"lossforge"``, created on the first call and reused afterwards.
        force: Replace entries that already exist under the same name.

    Returns:
        The ``lossforge``-scoped child registry.

    Raises:
        OptionalDependencyError: mmengine is not installed.
    """
    models, registry_cls = _mmengine_registry()
    parent = models if registry is None else registry
    if not isinstance(parent, registry_cls):
        raise TypeError(
            "register_all: expected `registry` an mmengine Registry or None, got "
            + type(parent).__name__
        )
    child = parent.children.get(SCOPE)
    if child is None:
        child = registry_cls("model", parent=parent, scope=SCOPE)
    from lossforge.registry import list_losses

    for info in list_losses():
        for name in dict.fromkeys((info.cls.__name__, info.name)):
            existing = child.module_dict.get(name)
            if existing is info.cls and not force:
                continue
            child.register_module(name=name, module=info.cls, force=force or existing is not None)
    return child


if importlib.util.find_spec("mmengine") is not None:  # what `custom_imports` relies on
    register_all()
