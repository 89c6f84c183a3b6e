"""``lossforge plot``: loss and gradient curves of one loss against the true-class probability.

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas attached explicitly, so
nothing here touches pyplot's global state or the user's interactive backend, and nothing is
imported before a figure is actually drawn.

Loss curves follow Fig. 1 of the focal loss paper (Lin et al. 2017): for each grid point the loss
of one example is evaluated with ``reduction="none"`` and its gradient with respect to the logit is
taken with ``torch.autograd.grad``; the x-axis is the predicted probability of the true class

$$ p_t = \\sigma(x) \\text{ (target 1)}, \\qquad p_t = \\mathrm{softmax}([x, 0])_0 $$

for sigmoid and softmax losses. Sigmoid losses also show the negative branch (target 0) against
the predicted probability $p = \\sigma(x)$, as in the ASL paper's gradient figure. Regression
losses are drawn against the prediction error.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from lossforge.cli._paths import writable_dir
from lossforge.cli.chart import figure

__all__ = [
    "curves",
    "draw_loss_plot",
    "parse_sweeps",
    "run_plot",
]

#: Values for required parameters when the user gives none: a 2-class problem whose true class
#: (index 0) is ten times rarer than the other one.
REQUIRED_FILL: dict[str, Any] = {"class_counts": [1.0, 10.0]}

_MAX_CURVES = 16


def parse_sweeps(items: Sequence[str] | None) -> dict[str, list[Any]]:
    """``["gamma=0,1,2", "alpha=none"]`` -> ``{"gamma": [0, 1, 2], "alpha": [None]}``.

    Values are TOML literals (lists in brackets keep their commas: ``class_counts=[1,10],[1,100]``).

    Raises:
        ValueError: an item without ``=`` or without values, or a parameter given twice.
    """
    from lossforge.cli.experiment import parse_value, split_top_level

    out: dict[str, list[Any]] = {}
    for item in items or ():
        name, eq, values = item.partition("=")
        name = name.strip()
        parsed = [parse_value(v) for v in split_top_level(values)]
        if not eq or not name or not parsed:
            raise ValueError(f"--param {item!r}: expected NAME=V1,V2,...")
        if name in out:
            raise ValueError(f"--param {name!r} given twice")
        if name == "reduction":
            raise ValueError("--param reduction: plot evaluates every point with reduction='none'")
        out[name] = parsed
    return out


def _label(params: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "defaults"


def curves(
    name: str, sweeps: Mapping[str, Sequence[Any]], points: int = 400
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Evaluate ``name`` for every combination of the swept parameters.

    Returns:
        ``(family, curves, fixed)``: each curve has ``label``, ``params``, ``x`` and per branch
        (``"pos"``, plus ``"neg"`` for sigmoid losses) the ``loss`` and ``grad`` arrays; ``fixed``
        holds the parameters shared by every curve.

    Raises:
        ValueError: unknown loss, a loss that is not element-wise, unknown parameter or bad value.
    """
    from lossforge.registry import build_loss, get_loss

    cls = get_loss(name, caller="plot", argument="loss")  # ValueError listing the valid names
    key = getattr(cls, "registry_name", name) or name
    # How a loss is drawn, and its default sweep, are declared with it (lossforge._traits.Traits).
    traits = getattr(cls, "traits", None)
    if traits is None or traits.plot is None:
        why = traits.not_plotted if traits is not None else "it declares no plot family"
        raise ValueError(f"cannot plot {key!r}: it is not element-wise ({why})")
    family = traits.plot
    sweeps = dict(sweeps) if sweeps else {k: list(v) for k, v in traits.sweep.items()}
    if "class_counts" in sweeps or "priors" in sweeps:
        fill: dict[str, Any] = {}
    else:
        from lossforge.registry import list_losses

        info = next(i for i in list_losses() if i.name == key)
        fill = {k: v for k, v in REQUIRED_FILL.items() if k in info.params}
    names = list(sweeps)
    combos = list(itertools.product(*(sweeps[n] for n in names)))
    if len(combos) > _MAX_CURVES:
        raise ValueError(
            f"--param: {len(combos)} combinations; at most {_MAX_CURVES} curves fit in one plot"
        )
    fixed = {**fill, **{n: sweeps[n][0] for n in names if len(sweeps[n]) == 1}}
    varying = [n for n in names if len(sweeps[n]) > 1]
    out = []
    for combo in combos:
        params = {**fill, **dict(zip(names, combo, strict=True))}
        try:
            module = build_loss({"type": key, **params, "reduction": "none"})
        except (ValueError, TypeError) as err:
            raise ValueError(f"{key} with {_label(params)}: {err}") from None
        curve = _evaluate(module, family, points)
        curve["params"] = params
        curve["label"] = (
            _label({n: params[n] for n in varying})
            if varying
            else _label({n: params[n] for n in names})
        )
        out.append(curve)
    return family, out, fixed


def _per_point(loss: torch.Tensor, n: int) -> torch.Tensor:
    if loss.numel() != n:
        raise ValueError(
            f"the loss returned {loss.numel()} values for {n} points: it is not element-wise"
        )
    return loss.reshape(n)


def _evaluate(module: torch.nn.Module, family: str, points: int) -> dict[str, Any]:
    dt = torch.float64
    if family == "regression":
        err = torch.linspace(-3.0, 3.0, points, dtype=dt).requires_grad_(True)
        loss = _per_point(module(err, torch.zeros_like(err)), points)
        (grad,) = torch.autograd.grad(loss.sum(), err)
        return {
            "x": err.detach().numpy(),
            "pos": {"loss": loss.detach().numpy(), "grad": grad.numpy()},
        }
    p = torch.linspace(0.002, 0.998, points, dtype=dt)
    out: dict[str, Any] = {"x": p.numpy()}
    branches = {"pos": 1.0, "neg": 0.0} if family.startswith("sigmoid") else {"pos": None}
    for branch, target_value in branches.items():
        z = torch.logit(p).requires_grad_(True)
        if family.startswith("sigmoid"):
            inp = torch.sigmoid(z) if family == "sigmoid-prob" else z
            target = torch.full((points, 1), cast(float, target_value), dtype=dt)
            loss = module(inp.unsqueeze(1), target)
        else:
            pair = torch.stack(
                [z, torch.zeros_like(z)], dim=1
            )  # softmax([z, 0])_0 = sigmoid(z) = p_t
            inp = torch.log_softmax(pair, dim=1) if family == "softmax-logprob" else pair
            loss = module(inp, torch.zeros(points, dtype=torch.long))
        loss = _per_point(loss, points)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        out[branch] = {"loss": loss.detach().numpy(), "grad": grad.numpy()}
    return out


def draw_loss_plot(
    name: str, family: str, data: list[dict[str, Any]], fixed: Mapping[str, Any], path: Path
) -> None:
    """Write the loss / gradient figure of ``curves`` to ``path`` (PNG)."""
    two = family.startswith("sigmoid")
    fig = figure(10.5 if two else 10.0, 7.5 if two else 4.0)
    axes = np.atleast_2d(fig.subplots(2 if two else 1, 2, squeeze=False))
    branches = (
        [("pos", "positive (target 1)"), ("neg", "negative (target 0)")] if two else [("pos", "")]
    )
    if family == "regression":
        xlabel = "prediction error (prediction - target)"
    elif two:
        xlabel = ""
    else:
        xlabel = "probability of the true class $p_t$ (2-class logit pair)"
    for row, (branch, title) in enumerate(branches):
        ax_loss, ax_grad = (axes[row, 0], axes[row, 1]) if two else (axes[0, 0], axes[0, 1])
        for curve in data:
            ax_loss.plot(curve["x"], curve[branch]["loss"], label=curve["label"])
            ax_grad.plot(curve["x"], curve[branch]["grad"], label=curve["label"])
        xl = xlabel or (
            "predicted probability $p = p_t$"
            if branch == "pos"
            else "predicted probability $p$ (= 1 - $p_t$)"
        )
        suffix = f" - {title}" if title else ""
        ax_loss.set(xlabel=xl, ylabel="loss", title=f"loss{suffix}")
        ax_grad.set(
            xlabel=xl,
            ylabel="d loss / d " + ("prediction" if family == "regression" else "logit"),
            title=f"gradient{suffix}",
        )
        if family != "regression" and branch == "pos":
            ax_loss.set_ylim(
                bottom=0,
                top=min(5.0, max(float(np.nanmax(c[branch]["loss"])) for c in data) * 1.05),
            )
        for ax in (ax_loss, ax_grad):
            ax.grid(alpha=0.3)
            ax.axhline(0.0, color="0.6", lw=0.6)
        ax_loss.legend(fontsize=8)
    fixed_text = f" ({_label(fixed)})" if fixed else ""
    fig.suptitle(f"lossforge plot {name}{fixed_text}")
    fig.savefig(path, format="png")


def run_plot(args: Any) -> int:
    """``lossforge plot``: draw the figure and print its path."""
    sweeps = parse_sweeps(args.param)
    family, data, fixed = curves(args.loss, sweeps, args.points)
    path = Path(args.out) if args.out else Path("lossforge-out") / f"plot-{args.loss}.png"
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out {str(path)!r}: expected a .png file name")
    writable_dir(path.parent)
    draw_loss_plot(args.loss, family, data, fixed, path)
    print(f"plot: {path}")
    return 0
