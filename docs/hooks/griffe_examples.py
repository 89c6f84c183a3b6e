"""Griffe extension: read a Google-style ``Example:`` section as ``Examples:``.

The codebase writes ``Example:`` (singular, as PyTorch and kornia do). Griffe's Google parser only
knows ``Examples:``; the singular becomes an admonition whose ``>>>`` lines render as nested
block quotes (and doctest output such as ``[0.8756, 1.1244]`` as a broken reference). This rewrites
the header before the docstring is parsed, so doctests render as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADER = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        doc = getattr(obj, "docstring", None)
        if doc is not None and "Example:" in doc.value:
            doc.value = _HEADER.sub(r"\1Examples:", doc.value)
