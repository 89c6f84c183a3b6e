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


def _input_kind(info: Any) -> str | None:
    """The loss's input convention (``_examples.INPUT_KINDS``); a loss with an ``activation``
    option names it (dice: softmax by default, or sigmoid, or probabilities)."""
    from lossforge._examples import INPUT_KINDS

    if info.traits is None:
        return None
    kind = INPUT_KINDS.get(info.traits.example)
    activation = info.params.get("activation")
    if kind is not None and isinstance(activation, str):
        kind = f"logits ({activation} by default; activation=)"
    return kind


def _family(info: Any) -> str | None:
    """The loss's family: the module of its functional (``classification``, ``dice``, ...)."""
    functional = getattr(info.cls, "functional", None)
    return None if functional is None else str(functional.__module__).rsplit(".", 1)[-1]


def loss_table() -> list[dict[str, Any]]:
    """One entry per registered loss: name, class, family, input convention, task kind, summary,
    parameters and defaults."""
    from lossforge.registry import list_losses

    rows = []
    for info in list_losses():
        rows.append(
            {
                "name": info.name,
                "class": info.cls.__name__,
                "family": _family(info),
                "input": _input_kind(info),
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
        about = ", ".join(v for v in (row["family"], row["input"]) if v)
        about = f"  ({about})" if about else ""
        print(f"{row['name']:<{width}}  {row['class']}{about}{fused}")
        print(f"{'':<{width}}  {params or '(no parameters)'}")
    print()
    print(
        f"{len(rows)} losses; every loss also takes reduction='mean' and loss_weight=1.0, those "
        "marked [backend] also backend='torch' ('triton' / 'auto': the fused kernels). "
        "--json lists every parameter."
    )
    print("Build one with lossforge.registry.build_loss({'type': NAME, **params}).")
    return 0
