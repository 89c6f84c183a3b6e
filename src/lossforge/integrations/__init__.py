"""Adapters for configuration frameworks; each imports its framework only when used.

* ``lossforge.integrations.mmengine``: registers every loss into mmengine's ``MODELS`` registry
  under the ``lossforge`` scope (``custom_imports`` in an mmdetection config).
* ``lossforge.integrations.hydra``: the ``_target_`` form of a loss for ``hydra.utils.instantiate``.

Importing ``lossforge`` never imports this package.
"""

__all__: list[str] = []
