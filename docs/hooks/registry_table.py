"""mkdocs hook: the table of every registered loss, generated from the registry.

A page holding the marker ``<!-- registry-table -->`` gets the marker replaced by one row per
registered loss (``lossforge.registry.list_losses``): registry name, module, function, the
``lossforge compare`` task and ``lossforge plot`` family it declares, and its parameters with their
defaults. A new loss appears here as soon as it is declared.
"""

from __future__ import annotations

import inspect
from typing import Any

MARKER = "<!-- registry-table -->"
COMMON = {"reduction", "loss_weight", "backend"}


def _fmt(value: Any) -> str:
    return "required" if value is inspect.Parameter.empty else repr(value)


def table() -> str:
    from lossforge.registry import list_losses

    rows = [
        "| registry name | module | function | compare task | plot | parameters (defaults) |",
        "|---|---|---|---|---|---|",
    ]
    for info in list_losses():
        fn = getattr(info.cls, "functional", None)
        fname = f"`{fn.__name__}`" if fn is not None else ""
        t = info.traits
        task = t.task if t is not None and t.task else ""
        plot = (t.plot or "") if t is not None else ""
        params = ", ".join(
            f"`{k}={_fmt(v)}`" for k, v in info.params.items() if k not in COMMON
        ).replace("|", "\\|")
        rows.append(
            f"| `{info.name}` | `{info.cls.__name__}` | {fname} | {task} | {plot} | {params} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, table())
    return markdown
