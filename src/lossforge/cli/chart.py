"""The ``lossforge compare`` chart, drawn from the report (``results.json``) alone.

One column per task. Top: the paired difference of each loss to the task's baseline with its 95 %
interval (filled marker: the interval excludes 0; hollow: within noise), a line at 0. Bottom, label
by label: per-class recall or AP of every loss on a 0-100 axis with the task's own class names, or
for many labels each loss's per-label AP against the baseline's (above the diagonal = better than
the baseline on that label). A loss has the same colour in every panel; the baseline is black;
the legend sits below the panels.

The figure is a ``matplotlib.figure.Figure`` with the Agg canvas attached, so nothing here touches
pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare_figure", "draw_compare_chart", "figure", "loss_colours"]

#: Above this many classes / labels the per-label panel is a scatter against the baseline.
MANY_LABELS = 30

_BASELINE_COLOUR = "0.1"
_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
)  # fmt: skip


def figure(width: float, height: float) -> Any:
    """A constrained-layout Figure with the Agg canvas attached (no pyplot)."""
    from lossforge.cli._deps import require

    require("matplotlib", "drawing PNG files")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def loss_colours(tasks: list[Mapping[str, Any]]) -> dict[str, str]:
    """One colour per loss label over every task: black for baselines, then the palette in order
    of first appearance."""
    colours: dict[str, str] = {}
    for task in tasks:
        colours.setdefault(task["baseline"], _BASELINE_COLOUR)
    k = 0
    for task in tasks:
        for row in task["leaderboard"]:
            if row["label"] not in colours:
                colours[row["label"]] = _PALETTE[k % len(_PALETTE)]
                k += 1
    return colours


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _difference_panel(ax: Any, task: Mapping[str, Any], colours: Mapping[str, str]) -> None:
    primary = task["primary_metric"]
    name = task["metric_names"][primary]
    rows = [r for r in task["leaderboard"] if not r["baseline"]]
    ax.axvline(0.0, color=_BASELINE_COLOUR, lw=1.0)
    y = np.arange(len(rows))[::-1]
    for pos, row in zip(y, rows, strict=True):
        cell = row["difference"][primary]
        if cell["mean"] is None:
            continue
        mean = 100 * cell["mean"]
        colour = colours[row["label"]]
        if cell["low"] is not None:
            ax.errorbar(
                mean, pos, xerr=[[mean - 100 * cell["low"]], [100 * cell["high"] - mean]],
                fmt="none", ecolor=colour, elinewidth=1.6, capsize=3,
            )  # fmt: skip
        filled = cell["verdict"] in ("better", "worse")
        ax.plot(
            mean, pos, "o", ms=7, color=colour, markerfacecolor=colour if filled else "white",
            markeredgewidth=1.6,
        )  # fmt: skip
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lo, hi = ax.get_xlim()
    span = max(abs(lo), abs(hi), 1.0)
    ax.set_xlim(-1.05 * span, 1.05 * span)  # 0 in the middle: better to the right
    ax.set_xlabel(f"{name}: difference to {task['baseline']} (points, 95 % CI)", fontsize=8)
    ax.set_title(_wrap(task["chart_title"]), fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def _per_class_panel(ax: Any, task: Mapping[str, Any], colours: Mapping[str, str]) -> None:
    names = task["class_names"]
    metric = "recall" if task["kind"] == "single_label" else "AP"
    rows = task["leaderboard"]
    if len(names) > MANY_LABELS:
        base = next(r for r in rows if r["baseline"])
        x = np.array([np.nan if v is None else 100 * v for v in base["per_class"]], dtype=float)
        for row in rows:
            if row["baseline"]:
                continue
            yv = np.array([np.nan if v is None else 100 * v for v in row["per_class"]], dtype=float)
            ax.plot(x, yv, "o", ms=3, alpha=0.75, color=colours[row["label"]])
        ax.plot([0, 100], [0, 100], color=_BASELINE_COLOUR, lw=1.0)
        ax.set_xlim(0, 101)
        ax.set_ylim(0, 101)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"{metric} of {task['baseline']} per label (%)", fontsize=8)
        ax.set_ylabel(f"{metric} of the other losses (%)", fontsize=8)
        ax.set_title(
            _wrap(f"per label ({len(names)}): above the diagonal = better than {task['baseline']}"),
            fontsize=8,
        )
    else:
        xs = np.arange(len(names))
        for row in rows:
            vals = np.array(
                [np.nan if v is None else 100 * v for v in row["per_class"]], dtype=float
            )
            ax.plot(
                xs, vals, marker="o", ms=3.5, lw=1.6 if row["baseline"] else 1.0,
                ls="--" if row["baseline"] else "-", color=colours[row["label"]],
            )  # fmt: skip
        ax.set_xticks(xs, names, fontsize=7, rotation=45 if max(map(len, names)) > 3 else 0)
        ax.set_ylim(0, 101)
        unit = "label" if task.get("kind") == "multi_label" else "class"
        ax.set_xlabel(task.get("class_axis", unit), fontsize=8)
        ax.set_ylabel(f"{metric} per {unit} (%)", fontsize=8)
        ax.set_title(f"per {unit}: {metric} of every loss (mean over seeds)", fontsize=8)
    ax.grid(alpha=0.3)


def compare_figure(report: Mapping[str, Any]) -> Any:
    """The chart of a ``compare`` report as a matplotlib ``Figure``."""
    from matplotlib.lines import Line2D

    tasks = list(report["tasks"])
    colours = loss_colours(tasks)
    cols = len(tasks)
    fig = figure(max(6.5, 5.0 * cols), 9.0)
    axes = fig.subplots(2, cols, squeeze=False)
    for j, task in enumerate(tasks):
        _difference_panel(axes[0, j], task, colours)
        _per_class_panel(axes[1, j], task, colours)
    baselines = [label for label, c in colours.items() if c == _BASELINE_COLOUR]
    handles = [
        Line2D([], [], color=_BASELINE_COLOUR, marker="o", ls="--",
               label="baseline: " + " / ".join(baselines)),
        *(
            Line2D([], [], color=c, marker="o", label=label)
            for label, c in colours.items()
            if c != _BASELINE_COLOUR
        ),
    ]  # fmt: skip
    # A one-task chart (every --data run) is narrow: fewer legend columns and a two-line title,
    # so neither runs off the canvas.
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(4 if cols > 1 else 2, len(handles)),
        fontsize=8, frameon=False,
    )  # fmt: skip
    seeds = len(report["protocol"]["seeds"])
    fig.suptitle(
        f"lossforge compare: {report['data']} ({seeds} seed{'s' if seeds != 1 else ''})\n"
        "filled marker: the 95 % interval excludes 0, hollow: within noise",
        fontsize=10,
    )
    return fig


def draw_compare_chart(report: Mapping[str, Any], path: Path) -> None:
    """Write the chart of a ``compare`` report to ``path`` (PNG)."""
    # (a tight bounding box: long loss labels on the axes stay inside the image)
    compare_figure(report).savefig(path, format="png", bbox_inches="tight", pad_inches=0.1)
