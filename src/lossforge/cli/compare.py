"""``lossforge compare``: train a small head with each loss, several seeds, and rank the losses.

Each (task, seed, loss) run trains a fresh linear or one-hidden-layer MLP head with Adam on the
training split and evaluates it on the test split. For a given seed, every loss sees the same data
split, the same initial weights and the same batch order, so differences between losses are
paired. Results are reported as mean +- sample standard deviation over the seeds.

Single-label tasks report accuracy, balanced accuracy and accuracy on the rarest third of the
classes (by training count); multi-label tasks report macro mean average precision over the labels
that have a test positive, plus per-class values in the results file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossforge._checks import value_checks
from lossforge.cli.data import (
    DataError,
    Task,
    digits_tasks,
    load_digits_arrays,
    load_user_data,
    multi_label_metrics,
    single_label_metrics,
    tail_classes,
    user_task,
)
from lossforge.cli.experiment import (
    MULTI_LABEL,
    SINGLE_LABEL,
    Experiment,
    LossSpec,
    check_experiment,
    resolve_params,
)

__all__ = [
    "METRICS",
    "DataError",
    "build_loss_for",
    "build_tasks",
    "default_out_dir",
    "format_leaderboard",
    "run_compare",
    "train_one",
]

#: Metrics per task kind, the first one ranks the leaderboard.
METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    SINGLE_LABEL: (
        ("balanced_accuracy", "bal. acc"),
        ("accuracy", "accuracy"),
        ("tail_accuracy", "tail-third acc"),
    ),
    MULTI_LABEL: (("mAP", "mAP"),),
}


def _make_model(num_features: int, num_outputs: int, kind: str, hidden: int) -> torch.nn.Module:
    if kind == "linear":
        return torch.nn.Linear(num_features, num_outputs)
    return torch.nn.Sequential(
        torch.nn.Linear(num_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_outputs)
    )


def build_loss_for(spec: LossSpec, task: Task) -> torch.nn.Module:
    """The loss module of ``spec`` for ``task`` (placeholders filled from its training split).

    Raises:
        ValueError: unknown parameter or bad value; the message names the loss.
    """
    from lossforge.registry import build_loss

    try:
        params = resolve_params(spec, task.train_counts().tolist())
        return build_loss({"type": spec.type, **params})
    except (ValueError, TypeError) as err:
        raise ValueError(f"loss {spec.label!r}: {err}") from None


def train_one(task: Task, loss: torch.nn.Module, exp: Experiment, seed: int) -> dict[str, Any]:
    """Train one head with ``loss`` on ``task`` and return its test metrics.

    The seed fixes the initial weights and the batch order (identical for every loss).
    """
    torch.manual_seed(seed)
    model = _make_model(task.x_train.shape[1], task.num_classes, exp.model.kind, exp.model.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=exp.train.lr, weight_decay=exp.train.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(task.x_train)
    y = torch.from_numpy(task.y_train)
    n, bs = len(x), exp.train.batch_size
    last = float("nan")
    model.train()
    with torch.no_grad():
        loss(model(x), y)  # value checks (targets in range, ...) once on the whole training split
    with value_checks(False):  # ... not again on every batch
        for _ in range(exp.train.epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                value = loss(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
            last = float(value.detach())
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(task.x_test)).double().numpy()
    if task.kind == SINGLE_LABEL:
        metrics = single_label_metrics(task.y_test, logits.argmax(axis=1), task.train_counts())
    else:
        metrics = multi_label_metrics(task.y_test, logits)
    metrics["final_train_loss"] = last
    return metrics


def _load_tasks(exp: Experiment) -> tuple[list[list[Task]], str]:
    """Tasks per seed, and a description of the data."""
    data = exp.data
    if data.is_digits:
        images, labels = load_digits_arrays()
        return [
            digits_tasks(data, s, images, labels) for s in exp.seeds
        ], "scikit-learn bundled digits (load_digits)"
    x, y, kind, names = load_user_data(data.source, data.label_column)
    return [[user_task(data.source, x, y, kind, names, data, s)] for s in exp.seeds], data.source


def build_tasks(exp: Experiment) -> tuple[list[list[Task]], str]:
    """Load the data and derive the tasks for every seed (``result[i]`` = tasks of seed ``i``)."""
    tasks, source = _load_tasks(exp)
    kinds = {t.kind for t in tasks[0]}
    if exp.losses:
        given = {s.kind for s in exp.losses}
        if not data_has_losses(kinds, given):
            wanted = " or ".join(sorted(kinds))
            raise ValueError(
                f"none of the given losses fits the data ({wanted}); losses given: "
                + ", ".join(f"{s.type} ({s.kind})" for s in exp.losses)
            )
        if not exp.data.is_digits:
            other = [s for s in exp.losses if s.kind not in kinds]
            if other:
                raise ValueError(
                    f"loss {other[0].type!r} is {other[0].kind.replace('_', '-')} but the data "
                    f"{exp.data.source!r} "
                    f"is {next(iter(kinds)).replace('_', '-')}"
                )
    return tasks, source


def data_has_losses(kinds: set[str], given: set[str]) -> bool:
    """Whether at least one task kind has at least one loss."""
    return bool(kinds & given)


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "values": list(values)}
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in values]}


def _per_class_mean(runs: list[dict[str, Any]]) -> list[float | None]:
    out: list[float | None] = []
    for j in range(len(runs[0]["per_class"])):
        vals = [r["per_class"][j] for r in runs if r["per_class"][j] is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def _public_info(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("train_images", "test_images")}


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, desc="compare", unit="run", file=sys.stderr, leave=False, dynamic_ncols=True
    )


def run_compare(
    exp: Experiment,
    out_dir: Path | None,
    *,
    progress: bool,
    plot: bool = True,
    echo: Any = print,
    argv: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``exp`` and write ``results.json`` (and ``compare.png``) into ``out_dir``.

    Args:
        exp: The experiment.
        out_dir: Output folder (created); ``None`` writes nothing.
        progress: Show a tqdm bar on stderr.
        plot: Draw the PNG chart.
        echo: Where the leaderboard text goes.
        argv: Recorded in the results file.

    Returns:
        The report written to ``results.json``.

    Raises:
        ValueError: bad data, loss names or parameters (before any training starts).
        OSError: unreadable data file or unwritable output folder.
    """
    from lossforge.cli import require

    if plot:
        require("matplotlib", "the compare chart (or pass --no-plot)")
    if progress:
        require("tqdm", "the progress bar (or pass --quiet)")
    started = time.perf_counter()
    tasks_by_seed, source = build_tasks(exp)
    first = tasks_by_seed[0]
    plan: list[tuple[int, LossSpec]] = []  # (task index, loss)
    for ti, task in enumerate(first):
        for spec in exp.losses_for(task.kind):
            build_loss_for(spec, task)  # validate every loss before any training
            plan.append((ti, spec))
    if not plan:
        raise ValueError("nothing to run: no loss fits the selected tasks")
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(
                f"cannot create output folder {str(out_dir)!r}: {err.strerror or err}"
            ) from None

    cells: dict[tuple[int, str], list[dict[str, Any]]] = {}
    bar = _progress(len(plan) * len(exp.seeds), progress)
    try:
        for si, seed in enumerate(exp.seeds):
            for ti, spec in plan:
                task = tasks_by_seed[si][ti]
                if bar is not None:
                    bar.set_postfix_str(f"{task.key} {spec.label[:28]} seed {seed}", refresh=False)
                metrics = train_one(task, build_loss_for(spec, task), exp, seed)
                cells.setdefault((ti, spec.label), []).append(metrics)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    report = _report(exp, source, first, plan, cells, time.perf_counter() - started, argv)
    for line in format_leaderboard(report):
        echo(line)
    if out_dir is not None:
        results = out_dir / "results.json"
        results.write_text(
            json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n"
        )
        echo(f"results: {results}")
        if plot:
            from lossforge.cli.plot import draw_compare_chart

            chart = out_dir / "compare.png"
            draw_compare_chart(report, chart)
            echo(f"chart:   {chart}")
    return report


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(value: Any) -> Any:
    """NaN -> None, recursively, so the JSON is strict."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _report(
    exp: Experiment,
    source: str,
    first: list[Task],
    plan: list[tuple[int, LossSpec]],
    cells: dict[tuple[int, str], list[dict[str, Any]]],
    wall: float,
    argv: Sequence[str],
) -> dict[str, Any]:
    import lossforge

    tasks_out = []
    for ti, task in enumerate(first):
        metric_names = [m for m, _ in METRICS[task.kind]]
        rows = []
        for tj, spec in plan:
            if tj != ti:
                continue
            runs = cells[(ti, spec.label)]
            rows.append(
                {
                    **spec.as_dict(),
                    "metrics": {m: _mean_std([r[m] for r in runs]) for m in metric_names},
                    "final_train_loss": _mean_std([r["final_train_loss"] for r in runs]),
                    "per_class": _per_class_mean(runs),
                }
            )
        primary = metric_names[0]
        rows.sort(
            key=lambda r: (
                -(
                    r["metrics"][primary]["mean"]
                    if r["metrics"][primary]["mean"] is not None
                    else -1
                )
            )
        )
        info = _public_info(task.info)
        if task.kind == SINGLE_LABEL:
            info["tail_classes"] = [task.class_names[c] for c in tail_classes(task.train_counts())]
        tasks_out.append(
            {
                "key": task.key,
                "title": task.title,
                "kind": task.kind,
                "primary_metric": primary,
                "metrics": metric_names,
                "class_names": task.class_names,
                "info": info,
                "leaderboard": rows,
            }
        )
    return _clean(
        {
            "lossforge_version": lossforge.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": ["lossforge", *argv],
            "data": source,
            "wall_seconds": round(wall, 2),
            "torch_threads": torch.get_num_threads(),
            "experiment": exp.as_dict(),
            "tasks": tasks_out,
        }
    )


def _pct(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "n/a"
    return f"{100 * cell['mean']:5.1f} ± {100 * cell['std']:4.1f}"


def format_leaderboard(report: dict[str, Any]) -> list[str]:
    """The terminal tables, one per task (values in percent, mean ± std over seeds)."""
    exp = report["experiment"]
    seeds = exp["seeds"]
    model = exp["model"]
    head = "linear" if model["kind"] == "linear" else f"mlp({model['hidden']})"
    lines = [
        f"lossforge compare: {report['data']}; {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
        f"{head} head, {exp['train']['epochs']} epochs; {report['wall_seconds']:.1f} s",
    ]
    for task in report["tasks"]:
        names = dict(METRICS[task["kind"]])
        cols = task["metrics"]
        width = max([len("loss")] + [len(r["label"]) for r in task["leaderboard"]])
        lines.append("")
        lines.append(f"{task['key']}: {task['title']}")
        header = f"  {'#':>2}  {'loss':<{width}}  " + "  ".join(f"{names[c]:>14}" for c in cols)
        lines.append(header)
        lines.append("  " + "-" * (len(header) - 2))
        for rank, row in enumerate(task["leaderboard"], start=1):
            vals = "  ".join(f"{_pct(row['metrics'][c]):>14}" for c in cols)
            lines.append(f"  {rank:>2}  {row['label']:<{width}}  {vals}")
    lines.append("")
    lines.append(
        "values in %, mean ± std over seeds; tail-third = the rarest third of the classes by "
        "training count"
    )
    types = {
        (r["type"], json.dumps(r["params"], sort_keys=True))
        for t in report["tasks"]
        for r in t["leaderboard"]
    }
    if (
        "logit_adjusted",
        json.dumps({"class_counts": "from_train", "tau": 1.0}, sort_keys=True),
    ) in types and any(t == "balanced_softmax" for t, _ in types):
        lines.append(
            "balanced softmax and logit adjustment with tau 1 are the same loss (identical rows "
            "expected)"
        )
    return lines


def default_out_dir() -> Path:
    """``./lossforge-out/compare-<UTC timestamp>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("lossforge-out") / f"compare-{stamp}"


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def experiment_from_args(args: Any) -> Experiment:
    """The experiment of a ``compare`` command line: config file (or defaults), then options.

    ``--full`` applies to whatever the config says (5 seeds, twice the epochs and canvases);
    explicit options win over both.

    Raises:
        ValueError: conflicting or invalid options, a bad config file or loss spec.
        OSError: the config file cannot be read.
    """
    from lossforge.cli.experiment import load_experiment, parse_loss_option

    exp = load_experiment(args.config) if args.config else Experiment()
    data, model, train = exp.data, exp.model, exp.train
    seeds = exp.seeds
    if args.full:
        seeds = tuple(range(max(5, len(seeds))))
        train = replace(train, epochs=2 * train.epochs)
        data = replace(data, mosaic_train=2 * data.mosaic_train, mosaic_test=2 * data.mosaic_test)
    if args.smoke:
        seeds = seeds[:1]
        train = replace(train, epochs=2)
        data = replace(data, mosaic_train=300, mosaic_test=200)
    if args.data:
        if args.task:
            raise ValueError(
                "--task selects the built-in digits tasks; it cannot be used with --data"
            )
        data = replace(data, source=args.data)
    elif args.task:
        if not data.is_digits:
            raise ValueError(
                "--task selects the built-in digits tasks; the experiment uses " + repr(data.source)
            )
        data = replace(
            data,
            source={"all": "digits", "long-tail": "digits-lt", "multi-label": "digits-multilabel"}[
                args.task
            ],
        )
    if args.label_column:
        data = replace(
            data, label_column=tuple(c.strip() for c in args.label_column.split(",") if c.strip())
        )
    if args.imbalance_ratios:
        data = replace(data, imbalance_ratios=args.imbalance_ratios)
    if args.test_size is not None:
        data = replace(data, test_size=args.test_size)
    if args.model:
        model = replace(model, kind=args.model)
    if args.hidden:
        model = replace(model, hidden=args.hidden)
    overrides = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("lr", args.lr),
            ("weight_decay", args.weight_decay),
        )
        if v is not None
    }
    train = replace(train, **overrides)
    if args.seeds:
        seeds = tuple(range(args.seeds))
    losses = tuple(parse_loss_option(text) for text in args.loss) if args.loss else exp.losses
    exp = replace(exp, seeds=seeds, data=data, model=model, train=train, losses=losses)
    check_experiment(exp, "command line" if not args.config else args.config)
    return exp


def run_compare_command(args: Any, argv: Sequence[str]) -> int:
    """``lossforge compare``: run, print the leaderboard and the output paths."""
    exp = experiment_from_args(args)
    out = Path(args.out) if args.out else default_out_dir()
    progress = not args.quiet and sys.stderr.isatty()
    run_compare(exp, out, progress=progress, plot=not args.no_plot, argv=argv)
    return 0
