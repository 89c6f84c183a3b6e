"""``lossforge list``: every registered loss with its parameters and defaults."""

from __future__ import annotations

import inspect
import json
from typing import Any

__all__ = ["loss_table", "run_list"]


def _default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return "<required>"
    return value


def loss_table() -> list[dict[str, Any]]:
    """One entry per registered loss: name, class, task kind, summary, parameters and defaults."""
    from lossforge.registry import list_losses

    rows = []
    for info in list_losses():
        rows.append(
            {
                "name": info.name,
                "class": info.cls.__name__,
                "compare_kind": info.traits.task if info.traits else None,
                "plot": info.traits.plot if info.traits else None,
                "summary": info.summary,
                "params": {k: _default(v) for k, v in info.params.items()},
            }
        )
    return rows


def _fmt(value: Any) -> str:
    return value if value == "<required>" else repr(value)


def run_list(args: Any) -> int:
    """Print the table (or JSON with ``--json``)."""
    rows = loss_table()
    if args.json:
        print(json.dumps(rows, indent=2, default=repr))
        return 0
    common = {"reduction", "loss_weight", "backend"}
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items() if k not in common)
        fused = "  [backend]" if "backend" in row["params"] else ""
        print(f"{row['name']:<{width}}  {row['class']}{fused}")
        print(f"{'':<{width}}  {params or '(no parameters)'}")
    print()
    print(
        f"{len(rows)} losses; every loss also takes reduction='mean' and loss_weight=1.0, those "
        "marked [backend] also backend='torch' ('triton' / 'auto': the fused kernels). "
        "--json lists every parameter."
    )
    print("Build one with lossforge.registry.build_loss({'type': NAME, **params}).")
    return 0
