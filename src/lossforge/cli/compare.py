"""``lossforge compare``: train a small head with each loss, several seeds, and compare the losses.

A job is a task's seeds, or a group of them (``plan_jobs``): the heads of all its losses train
together as one stacked model (``lossforge.cli.train``), so for a given seed every loss sees the
same data split, the same initial weights and the same mini-batches. Jobs are independent and run
in ``--jobs`` processes.

Each loss is reported as a paired difference to the task's baseline (the first loss of its kind:
cross-entropy or BCE by default) with a 95 % Student-t interval over the seeds
(``lossforge.cli.stats``); a difference whose interval contains 0 is "within noise". The run
records how well every loss fits its training split at the budget, and continues every job to
twice the budget to report what that changes (``[train] budget_check``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossforge.cli._paths import writable_dir
from lossforge.cli.data import (
    DataError,
    Task,
    digits_tasks,
    load_digits_arrays,
    load_user_data,
    user_task,
)
from lossforge.cli.experiment import (
    SINGLE_LABEL,
    TASK_STEPS,
    Experiment,
    LossSpec,
    ParamSwitch,
    check_experiment,
    param_switches,
    resolve_params,
)
from lossforge.cli.metrics import (
    METRIC_NAMES,
    metric_plan,
    multi_label_metrics,
    single_label_metrics,
    tail_classes,
    training_fit,
)
from lossforge.cli.stats import budget_changes, paired_interval, t_critical, verdict
from lossforge.cli.train import Head, train_stacked

__all__ = [
    "FIT_THRESHOLD",
    "DataError",
    "build_loss_for",
    "build_tasks",
    "default_out_dir",
    "experiment_from_args",
    "format_report",
    "plan_jobs",
    "run_compare",
    "run_compare_command",
    "run_job",
]

#: A loss "fits its training split" when its training metric (balanced accuracy, or mAP) reaches
#: this value on every seed.
FIT_THRESHOLD = 0.995


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


def budget_of(exp: Experiment, task: Task) -> int:
    """The task's budget in optimiser steps: ``[train] steps``, else ``TASK_STEPS``."""
    return exp.train.steps or TASK_STEPS[task.family]


def switches_for(spec: LossSpec, task: Task, budget: int) -> tuple[ParamSwitch, ...]:
    """The parameter changes of ``spec`` during a run on ``task`` with ``budget`` steps (the
    deferred class weights of ``{ from_train = "drw", ... }``).

    Raises:
        ValueError: the schedule cannot be computed; the message names the loss.
    """
    try:
        return param_switches(spec, task.train_counts().tolist(), budget)
    except (ValueError, TypeError) as err:
        raise ValueError(f"loss {spec.label!r}: {err}") from None


# ----------------------------------------------------------------------------------------------
# Tasks and jobs
# ----------------------------------------------------------------------------------------------


def build_tasks(exp: Experiment) -> tuple[list[list[Task]], str, list[str]]:
    """Load the data and derive the tasks of every seed.

    Returns:
        ``(tasks, source, notes)``: ``tasks[i]`` are the tasks of seed ``exp.seeds[i]``; ``notes``
        are the choices made about the user's file (label column, dropped rows).

    Raises:
        DataError, OSError: unreadable or unusable data.
        ValueError: no loss fits the data.
    """
    data = exp.data
    notes: list[str] = []
    if data.is_digits:
        images, labels = load_digits_arrays()
        tasks = [digits_tasks(data, s, images, labels) for s in exp.seeds]
        source = "scikit-learn's bundled digits (load_digits)"
    else:
        user = load_user_data(data.source, data.label_column, data.drop_columns, data.ignore_label)
        notes = user.notes
        tasks = [[user_task(data.source, user, data, s)] for s in exp.seeds]
        source = data.source
    kinds = {t.kind for t in tasks[0]}
    if exp.losses:
        if not kinds & {s.kind for s in exp.losses}:
            wanted = " or ".join(sorted(k.replace("_", "-") for k in kinds))
            raise ValueError(
                f"none of the given losses fits the data ({wanted}); losses given: "
                + ", ".join(f"{s.type} ({s.kind.replace('_', '-')})" for s in exp.losses)
            )
        if not data.is_digits:
            other = [s for s in exp.losses if s.kind not in kinds]
            if other:
                raise ValueError(
                    f"loss {other[0].type!r} is {other[0].kind.replace('_', '-')} but the data "
                    f"{data.source!r} is {next(iter(kinds)).replace('_', '-')}"
                )
    return tasks, source, notes


#: What a forked worker needs; set by ``run_compare`` before the processes start.
_STATE: dict[str, Any] = {}


def run_job(
    tasks: Sequence[Task],
    specs: Sequence[LossSpec],
    exp: Experiment,
    seeds: Sequence[int],
    steps: Sequence[int],
) -> list[list[list[dict[str, Any]]]]:
    """Train every loss of ``specs`` on one task for several seeds (one stacked model) and
    evaluate at ``steps``.

    Args:
        tasks: The task for each seed (the same problem, split or subsampled by the seed).
        specs: The losses.
        exp: Model and training settings.
        seeds: One per task.
        steps: The checkpoints.

    Returns:
        ``result[c][j][k]``: checkpoint c, seed j, loss k: the test metrics, ``"train_fit"`` and
        ``"final_train_loss"``.
    """
    losses = [[build_loss_for(spec, task) for task in tasks] for spec in specs]  # one per seed
    budget = budget_of(exp, tasks[0])  # a deferred schedule switches at a fraction of the budget
    switches = [[switches_for(spec, task, budget) for task in tasks] for spec in specs]
    head = Head(
        kind=exp.model.kind,
        hidden=exp.model.hidden,
        lr=exp.train.lr,
        weight_decay=exp.train.weight_decay,
        batch_size=exp.train.batch_size,
    )
    snapshots = train_stacked(
        torch.from_numpy(np.stack([t.x_train for t in tasks])),
        torch.from_numpy(np.stack([t.y_train for t in tasks])),
        torch.from_numpy(np.stack([t.x_test for t in tasks])),
        tasks[0].num_classes,
        losses,
        head,
        seeds,
        steps,
        switches,
    )
    out = []
    for snap in snapshots:
        per_seed = []
        for j, task in enumerate(tasks):
            counts = task.train_counts()
            rows = []
            for k in range(len(specs)):
                test = snap.test_logits[j, k].numpy()
                train = snap.train_logits[j, k].numpy()
                if task.kind == SINGLE_LABEL:
                    metrics = single_label_metrics(task.y_test, test.argmax(axis=1), counts)
                else:
                    metrics = multi_label_metrics(task.y_test, test)
                metrics["train_fit"] = training_fit(task.kind, task.y_train, train)
                metrics["final_train_loss"] = float(snap.train_loss[j, k])
                metrics["diverged"] = not bool(np.isfinite(test).all() and np.isfinite(train).all())
                rows.append(metrics)
            per_seed.append(rows)
        out.append(per_seed)
    return out


def _job(item: tuple[int, tuple[int, ...]]) -> tuple[int, tuple[int, ...], float, Any]:
    """One job, with what ``_STATE`` holds: a task index and the indices of its seeds."""
    ti, group = item
    exp: Experiment = _STATE["exp"]
    tasks = [_STATE["tasks"][si][ti] for si in group]
    started = time.process_time()
    torch.set_num_threads(1)
    seeds = [exp.seeds[si] for si in group]
    result = run_job(tasks, _STATE["plan"][ti], exp, seeds, _STATE["steps"][ti])
    return ti, group, time.process_time() - started, result


def _map_jobs(
    items: list[tuple[int, tuple[int, ...]]],
    processes: int,
    done: Callable[[tuple[Any, ...]], None],
) -> None:
    """Run ``_job`` on every item, in ``processes`` forked workers when there are several."""
    import multiprocessing

    if processes > 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(processes) as pool:
            for result in pool.imap_unordered(_job, items):
                done(result)
        return
    for item in items:
        done(_job(item))


def plan_jobs(
    tasks: list[Task], plan: list[tuple[LossSpec, ...]], seeds: int, processes: int
) -> list[tuple[int, tuple[int, ...]]]:
    """The jobs: each task with all its seeds, split into groups of seeds when there are fewer
    tasks than processes; the biggest first."""
    active = [ti for ti in range(len(tasks)) if plan[ti]]
    groups = max(1, min(seeds, -(-processes // max(1, len(active)))))
    bounds = [round(g * seeds / groups) for g in range(groups + 1)]
    items = [(ti, tuple(range(bounds[g], bounds[g + 1]))) for ti in active for g in range(groups)]

    def cost(item: tuple[int, tuple[int, ...]]) -> int:
        task = tasks[item[0]]
        return task.x_train.size * (task.num_classes + len(plan[item[0]])) * len(item[1])

    return sorted(items, key=cost, reverse=True)


def _warm_up() -> None:
    """Run the lazy first-call set-up of vmap, autograd and the fused optimiser on a toy problem."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 3, generator=gen)
    y = torch.randint(0, 2, (2, 8), generator=gen)
    loss = torch.nn.CrossEntropyLoss()
    train_stacked(x, y, x, 2, [[loss, loss]], Head(hidden=4, batch_size=4), [0, 1], [2])


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished worker processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def default_jobs() -> int:
    """Worker processes: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class _Progress:
    """A tqdm bar on a terminal; otherwise one line per finished job (CI logs, ``| tee``)."""

    def __init__(self, total: int, mode: str, write: Callable[[str], None]) -> None:
        self.total, self.count, self.mode, self.write = total, 0, mode, write
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc="compare", unit="job", file=sys.stderr, leave=False,
                dynamic_ncols=True,
            )  # fmt: skip

    def update(self, text: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.mode == "lines":
            self.write(f"[{self.count}/{self.total}] {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def run_compare(
    exp: Experiment,
    out_dir: Path | None,
    *,
    progress: str = "off",
    plot: bool = True,
    jobs: int = 1,
    echo: Callable[[str], None] = print,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``exp``, print the report and write ``results.json`` (and ``compare.png``).

    Args:
        exp: The experiment.
        out_dir: Output folder (created); ``None`` writes nothing.
        progress: ``"bar"`` (tqdm on stderr), ``"lines"`` (one line per finished job) or ``"off"``.
        plot: Draw the PNG chart.
        jobs: Worker processes for the jobs (a task's seeds, or a group of them).
        echo: Where the report goes.
        log: Where progress lines go (default: stderr).
        argv: Recorded in the results file.

    Returns:
        The report written to ``results.json``.

    Raises:
        ValueError: bad data, loss names or parameters (before any training starts).
        OSError: unreadable data file or unwritable output folder.
    """
    from lossforge.cli._deps import require

    if plot:
        require("matplotlib", "the compare chart (or pass --no-plot)")
    if progress == "bar":
        require("tqdm", "the progress bar (or pass --quiet)")
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    tasks_by_seed, source, notes = build_tasks(exp)
    first = tasks_by_seed[0]
    plan = [tuple(exp.losses_for(task.kind)) for task in first]
    if not any(plan):
        raise ValueError("nothing to run: no loss fits the selected tasks")
    skipped = [task for task, specs in zip(first, plan, strict=True) if not specs]
    if skipped:
        # A task none of the given losses fits is left out everywhere (tables, header,
        # results.json), and the report says so.
        keep = [i for i, specs in enumerate(plan) if specs]
        tasks_by_seed = [[tasks[i] for i in keep] for tasks in tasks_by_seed]
        first = tasks_by_seed[0]
        plan = [plan[i] for i in keep]
        notes = [
            *notes,
            *(
                f"task {t.key} skipped: none of the given losses is {t.kind.replace('_', '-')}"
                for t in skipped
            ),
        ]
    for ti, specs in enumerate(plan):
        for tasks in tasks_by_seed:
            for spec in specs:
                build_loss_for(spec, tasks[ti])  # every loss is valid before any training
                switches_for(spec, tasks[ti], budget_of(exp, first[ti]))
    steps = [
        [budget_of(exp, t), 2 * budget_of(exp, t)]
        if exp.train.budget_check
        else [budget_of(exp, t)]
        for t in first
    ]
    if out_dir is not None:
        writable_dir(out_dir)  # before the training: an unwritable folder fails now, not after it

    processes = max(1, jobs)
    items = plan_jobs(first, plan, len(exp.seeds), processes)
    processes = min(processes, len(items))
    results: dict[tuple[int, int], list[list[dict[str, Any]]]] = {}  # (task, seed) -> [c][k]
    bar = _Progress(len(items), progress, log or (lambda s: print(s, file=sys.stderr, flush=True)))

    def done(result: tuple[Any, ...]) -> None:
        ti, group, seconds, rows = result
        for j, si in enumerate(group):
            results[(ti, si)] = [rows[c][j] for c in range(len(rows))]
        seeds = [exp.seeds[si] for si in group]
        which = f"seed{'s' if len(seeds) > 1 else ''} {_seeds_text(seeds)}"
        bar.update(
            f"{first[ti].key} ({which}): {len(plan[ti])} losses x {len(group)} seeds, "
            f"{steps[ti][-1]} steps, {seconds:.1f} s CPU"
        )

    _STATE.update(exp=exp, tasks=tasks_by_seed, plan=plan, steps=steps)
    if processes > 1:
        _warm_up()  # once here rather than once in every forked worker
    try:
        _map_jobs(items, processes, done)
    finally:
        bar.close()
        _STATE.clear()

    report = _report(
        exp, source, notes, first, plan, steps, results, argv,
        wall=time.perf_counter() - started,
        cpu=_cpu_seconds() - cpu_started,
        processes=processes,
    )  # fmt: skip
    for line in format_report(report):
        echo(line)
    if out_dir is not None:
        results_path = out_dir / "results.json"
        results_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        echo(f"results: {results_path}")
        chart = out_dir / "compare.png"
        if plot:
            from lossforge.cli.chart import draw_compare_chart

            draw_compare_chart(report, chart)
            echo(f"chart:   {chart}")
        elif chart.is_file():
            # an earlier run's chart next to these results would be read as theirs
            chart.unlink()
            echo(f"removed {chart} (an earlier run's chart; --no-plot draws none)")
    return report


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """NaN -> None and numpy scalars -> Python, recursively, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(values: Sequence[float | None]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "values": list(values)}
    # one value has no sample standard deviation (null, printed "n/a"; it was a misleading 0)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "values": list(values)}


def _interval(values: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    pairs = [
        (a, b)
        for a, b in zip(values, base, strict=True)
        if a is not None and b is not None and not (math.isnan(a) or math.isnan(b))
    ]
    if not pairs:
        return {"mean": None, "low": None, "high": None, "n": 0, "verdict": "n/a"}
    iv = paired_interval([a for a, _ in pairs], [b for _, b in pairs])
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "verdict": verdict(iv)}


def _zero_width_notes(board: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """A note for each loss whose every seed gave the same difference to the baseline: its
    interval has width 0 and its verdict looks certain, but a metric that moves in coarse steps
    (a small test split) hides the seeds' spread rather than proving the difference."""
    notes = []
    for row in board:
        d = row.get("difference", {}).get(metrics[0])
        # (equal up to the rounding of the metric's differences)
        if d and d["n"] >= 2 and d["low"] is not None and d["high"] - d["low"] <= 1e-9:
            notes.append(
                f"{row['label']}: every seed gave the same {METRIC_NAMES[metrics[0]]} difference, "
                "so its interval has width 0; a metric that moves in coarse steps (a small test "
                "split) hides the seeds' spread, and the verdict is less certain than it looks: "
                "use more test data or seeds"
            )
    return notes


def _per_class_mean(runs: list[dict[str, Any]]) -> list[float | None]:
    out: list[float | None] = []
    for j in range(len(runs[0]["per_class"])):
        vals = [r["per_class"][j] for r in runs if r["per_class"][j] is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def _leaderboard(
    specs: Sequence[LossSpec], runs: list[list[dict[str, Any]]], metrics: list[str]
) -> list[dict[str, Any]]:
    """Rows for one task and checkpoint; ``runs[k][s]`` = loss ``k`` on seed ``s``."""
    base = runs[0]
    rows = []
    for k, spec in enumerate(specs):
        row: dict[str, Any] = {
            **spec.as_dict(),
            "baseline": k == 0,
            "metrics": {m: _summary([r[m] for r in runs[k]]) for m in metrics},
            "train_fit": _summary([r["train_fit"] for r in runs[k]]),
            "final_train_loss": _summary([r["final_train_loss"] for r in runs[k]]),
            "per_class": _per_class_mean(runs[k]),
        }
        if k:
            row["difference"] = {
                m: _interval([r[m] for r in runs[k]], [r[m] for r in base]) for m in metrics
            }
        rows.append(row)
    primary = metrics[0]

    def order(row: dict[str, Any]) -> tuple[int, float]:
        if row["baseline"]:
            return (0, 0.0)
        mean = row["difference"][primary]["mean"]
        return (1, -mean if mean is not None else math.inf)

    return sorted(rows, key=order)


def _report(
    exp: Experiment,
    source: str,
    notes: list[str],
    first: list[Task],
    plan: list[tuple[LossSpec, ...]],
    steps: list[list[int]],
    results: dict[tuple[int, int], list[list[dict[str, Any]]]],
    argv: Sequence[str],
    *,
    wall: float,
    cpu: float,
    processes: int,
) -> dict[str, Any]:
    import lossforge

    tasks_out = []
    for ti, task in enumerate(first):
        specs = plan[ti]
        if not specs:
            continue
        metrics, metric_notes = metric_plan(
            task.kind, task.train_counts(), task.test_counts(), task.class_names
        )
        boards = []
        for ci, step in enumerate(steps[ti]):
            runs = [
                [results[(ti, si)][ci][k] for si in range(len(exp.seeds))]
                for k in range(len(specs))
            ]
            boards.append((step, runs, _leaderboard(specs, runs, metrics)))
        step, runs, board = boards[0]
        metric_notes = [*metric_notes, *_zero_width_notes(board, metrics)]
        fit = [min(r["train_fit"] for r in runs[k]) for k in range(len(specs))]
        diverged = sorted(
            {
                specs[k].label
                for _, runs_c, _ in boards
                for k in range(len(specs))
                if any(r["diverged"] for r in runs_c[k])
            }
        )
        if diverged:
            metric_notes = [
                "diverged (non-finite outputs on some seed; its numbers mean nothing, try a lower "
                f"--lr): {', '.join(diverged)}",
                *metric_notes,
            ]
        for spec in specs:
            for sw in switches_for(spec, task, steps[ti][0]):
                after = (
                    f" ({steps[ti][1] - sw.step} at twice the budget)" if len(steps[ti]) > 1 else ""
                )
                metric_notes = [
                    *metric_notes,
                    f"{spec.label}: {sw.key} 1 for the first {sw.step} steps, then the deferred "
                    f"re-weighting (DRW) weights: {steps[ti][0] - sw.step} re-weighted steps at "
                    f"the budget{after}",
                ]
        info = {k: v for k, v in task.info.items() if k not in ("train_images", "test_images")}
        if task.kind == SINGLE_LABEL:
            info["tail_classes"] = [task.class_names[c] for c in tail_classes(task.train_counts())]
        entry: dict[str, Any] = {
            "key": task.key,
            "title": task.title,
            "chart_title": task.short_title or task.title,
            "class_axis": (
                "digit (head ... tail)"
                if task.family == "long-tail"
                else "label"
                if task.kind != SINGLE_LABEL
                else "class"
            ),
            "kind": task.kind,
            "baseline": specs[0].label,
            "primary_metric": metrics[0],
            "metrics": metrics,
            "metric_names": {m: METRIC_NAMES[m] for m in metrics},
            "class_names": task.class_names,
            "info": info,
            "notes": metric_notes,
            "steps": step,
            "training_fit": {
                "metric": "balanced accuracy" if task.kind == SINGLE_LABEL else "mAP",
                "threshold": FIT_THRESHOLD,
                "lowest_per_loss": {spec.label: fit[k] for k, spec in enumerate(specs)},
                "not_fitted": [
                    spec.label for k, spec in enumerate(specs) if fit[k] < FIT_THRESHOLD
                ],
            },
            "leaderboard": board,
        }
        if len(boards) > 1:
            step2, runs2, board2 = boards[1]
            primary = metrics[0]
            reorders, verdicts = budget_changes(
                [s.label for s in specs],
                [[r[primary] for r in runs[k]] for k in range(len(specs))],
                [[r[primary] for r in runs2[k]] for k in range(len(specs))],
            )
            fit2 = [min(r["train_fit"] for r in runs2[k]) for k in range(len(specs))]
            entry["budget_check"] = {
                "steps": step2,
                "reorders": reorders,
                "verdict_changes": verdicts,
                "not_fitted": [s.label for k, s in enumerate(specs) if fit2[k] < FIT_THRESHOLD],
                "leaderboard": board2,
            }
        tasks_out.append(entry)
    t = exp.train
    return _clean(
        {
            "lossforge_version": lossforge.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": ["lossforge", *argv],
            "data": source,
            "data_notes": notes,
            "wall_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),  # user + system, workers included, imports excluded
            "processes": processes,
            "protocol": {
                "seeds": list(exp.seeds),
                "model": {"kind": exp.model.kind, "hidden": exp.model.hidden},
                "optimizer": {
                    "name": "AdamW",
                    "lr": t.lr,
                    "lr_schedule": "constant",
                    "betas": [0.9, 0.999],
                    "eps": 1e-8,
                    "weight_decay": t.weight_decay,
                    "weight_decay_on": "weight matrices (decoupled); biases are not decayed",
                },
                "batch_size": t.batch_size,
                "steps": {task.key: steps[ti][0] for ti, task in enumerate(first)},
                "budget_check_steps": (
                    {task.key: steps[ti][1] for ti, task in enumerate(first)}
                    if t.budget_check
                    else None
                ),
                "statistics": (
                    "per loss: mean and sample std over seeds; difference to the baseline paired "
                    "by seed, 95 % Student-t interval (n-1 df); 'within noise' when it contains 0"
                ),
            },
            "experiment": exp.as_dict(),
            "tasks": tasks_out,
        }
    )


def _pct(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "n/a"
    if cell["std"] is None:
        return f"{100 * cell['mean']:5.1f} ± n/a"
    return f"{100 * cell['mean']:5.1f} ± {100 * cell['std']:3.1f}"


def _diff(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "n/a"
    if cell["low"] is None:
        return f"{100 * cell['mean']:+5.1f} (one seed: no interval)"
    return f"{100 * cell['mean']:+5.1f} [{100 * cell['low']:+5.1f}, {100 * cell['high']:+5.1f}]"


def _seeds_text(seeds: Sequence[int]) -> str:
    """``0-4`` for a run of three or more consecutive seeds, else ``0, 1`` / ``3, 7, 9``."""
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def format_report(report: dict[str, Any]) -> list[str]:
    """The terminal report: a header with the protocol, then one table per task."""
    proto = report["protocol"]
    opt = proto["optimizer"]
    seeds = proto["seeds"]
    model = proto["model"]
    head = "linear" if model["kind"] == "linear" else f"MLP ({model['hidden']} hidden)"
    budgets: dict[int, list[str]] = {}
    for key, s in proto["steps"].items():
        budgets.setdefault(s, []).append(key)
    budget = "; ".join(f"{s} steps ({', '.join(keys)})" for s, keys in budgets.items())
    check = proto["budget_check_steps"]
    n = len(seeds)
    lines = [
        f"lossforge compare: {report['data']}",
        f"  {n} seed{'s' if n != 1 else ''} ({_seeds_text(seeds)}); {head} head; AdamW, lr "
        f"{opt['lr']:g} constant, weight decay {opt['weight_decay']:g} on weights (not biases), "
        f"batch {proto['batch_size']}",
        f"  budget: {budget}"
        + ("; doubled-budget check: on" if check else "; doubled-budget check: off"),
    ]
    if n > 1:
        lines.append(
            f"  differences to the baseline: paired by seed, mean [95 % Student-t interval, "
            f"t = {t_critical(n - 1):.2f}]; 'within noise' = the interval contains 0"
        )
    for note in report.get("data_notes", []):
        lines.append(f"  data: {note}")
    for task in report["tasks"]:
        lines.append("")
        lines.extend(_task_lines(task))
    lines.append("")
    lines.append("values in %: mean ± sample std over seeds; differences in percentage points")
    return lines


def _task_lines(task: dict[str, Any]) -> list[str]:
    names = task["metric_names"]
    primary, others = task["metrics"][0], task["metrics"][1:]
    board = task["leaderboard"]
    labels = [r["label"] + (" (baseline)" if r["baseline"] else "") for r in board]
    diffs, words = [], []
    for row in board:
        cell = None if row["baseline"] else row["difference"][primary]
        diffs.append("" if cell is None else _diff(cell))
        words.append("" if cell is None else cell["verdict"])
    diff_head = f"vs {task['baseline']} [95 % CI]"
    w_label = max(len("loss"), *map(len, labels))
    w_diff = max(len(diff_head), *map(len, diffs))
    w_word = max(len("within noise"), *map(len, words))
    w_metric = [max(12, len(names[m]) + 2) for m in task["metrics"]]
    lines = [f"{task['key']}: {task['title']}"]
    head = (
        f"  {'loss':<{w_label}}  {names[primary] + ' %':>{w_metric[0]}}  {diff_head:<{w_diff}}  "
        f"{'':<{w_word}}"
        + "".join(f"  {names[m] + ' %':>{w}}" for m, w in zip(others, w_metric[1:], strict=True))
    )
    lines.append(head.rstrip())
    for label, row, diff, word in zip(labels, board, diffs, words, strict=True):
        text = (
            f"  {label:<{w_label}}  {_pct(row['metrics'][primary]):>{w_metric[0]}}  "
            f"{diff:<{w_diff}}  {word:<{w_word}}"
            + "".join(
                f"  {_pct(row['metrics'][m]):>{w}}"
                for m, w in zip(others, w_metric[1:], strict=True)
            )
        )
        lines.append(text.rstrip())
    fit = task["training_fit"]
    low = min(fit["lowest_per_loss"].values())
    if fit["not_fitted"]:
        worst = ", ".join(
            f"{label} ({100 * fit['lowest_per_loss'][label]:.1f} %)" for label in fit["not_fitted"]
        )
        lines.append(
            f"  training fit at {task['steps']} steps: NOT every loss fits its training split "
            f"(training {fit['metric']} < {100 * fit['threshold']:.1f} % on some seed): {worst}; "
            "the ranking may depend on the budget (--steps)"
        )
    else:
        lowest = "100 %" if low == 1.0 else f">= {100 * low:.1f} %"
        lines.append(
            f"  training fit at {task['steps']} steps: every loss fits its training split "
            f"(training {fit['metric']} {lowest} on every seed)"
        )
    check = task.get("budget_check")
    if check is not None:
        if check["reorders"]:
            text = (
                f"  doubled budget ({check['steps']} steps) REORDERS the leaderboard: "
                + "; ".join(check["reorders"])
            )
        else:
            text = f"  doubled budget ({check['steps']} steps): no loss changes places"
        if check["verdict_changes"]:
            text += "; verdicts that change (intervals near 0): " + "; ".join(
                check["verdict_changes"]
            )
        lines.append(text)
    for note in task["notes"]:
        lines.append(f"  note: {note}")
    return lines


def default_out_dir() -> Path:
    """``./lossforge-out/compare-<UTC timestamp>``, created here: a run that started in the same
    second has it already, so this one takes ``-2``, ``-3``, ... (two runs never write into one
    folder). When the folder cannot be created the path is returned all the same, and the run
    reports why when it creates its output folder."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path("lossforge-out")
    for n in range(1, 1000):
        path = base / (f"compare-{stamp}" if n == 1 else f"compare-{stamp}-{n}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError:
            return path
        return path
    return base / f"compare-{stamp}"


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def experiment_from_args(args: Any) -> Experiment:
    """The experiment of a ``compare`` command line: config file (or defaults), then options.

    Raises:
        ValueError: conflicting or invalid options, a bad config file or loss spec.
        OSError: the config file cannot be read.
    """
    from lossforge.cli.experiment import load_experiment, parse_loss_option

    exp = load_experiment(args.config) if args.config else Experiment()
    data, model, train = exp.data, exp.model, exp.train
    seeds = exp.seeds
    if args.smoke:  # the tests' tiny run
        seeds = seeds[:1]
        train = replace(train, steps=20)
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
    _options_fit_source(args, data.source)
    if args.label_column:
        data = replace(data, label_column=_columns(args.label_column))
    if args.drop_columns:
        data = replace(data, drop_columns=_columns(args.drop_columns))
    if args.ignore_label is not None:
        data = replace(data, ignore_label=args.ignore_label)
    if args.imbalance_ratios:
        data = replace(data, imbalance_ratios=args.imbalance_ratios)
    if args.test_size is not None:
        data = replace(data, test_size=args.test_size)
    if args.model:
        model = replace(model, kind=args.model)
    if args.hidden:
        if model.kind == "linear":
            raise ValueError("--hidden sets the MLP's width; a linear head has no hidden layer")
        model = replace(model, hidden=args.hidden)
    overrides = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("batch_size", args.batch_size),
            ("lr", args.lr),
            ("weight_decay", args.weight_decay),
        )
        if v is not None
    }
    if args.no_budget_check:
        overrides["budget_check"] = False
    train = replace(train, **overrides)
    if args.seeds:
        seeds = tuple(range(args.seeds))
    losses = tuple(parse_loss_option(text) for text in args.loss) if args.loss else exp.losses
    exp = replace(exp, seeds=seeds, data=data, model=model, train=train, losses=losses)
    check_experiment(exp, "command line" if not args.config else args.config)
    return exp


def _options_fit_source(args: Any, source: str) -> None:
    """Refuse a data option that the experiment's source would ignore (``ValueError``): the file
    options with the built-in digits, the long-tailed ratios with a file or the multi-label task
    alone. An option that does nothing would read as if it had been applied."""
    from lossforge.cli.experiment import DIGIT_SOURCES

    given = [
        flag
        for flag, value in (
            ("--label-column", args.label_column),
            ("--drop-columns", args.drop_columns),
            ("--ignore-label", args.ignore_label),
            ("--test-size", args.test_size),
        )
        if value is not None
    ]
    if source in DIGIT_SOURCES and given:
        raise ValueError(
            f"{given[0]} applies to a --data file; the experiment uses the built-in {source!r} "
            "(its split is fixed)"
        )
    if args.imbalance_ratios and source not in ("digits", "digits-lt"):
        where = "--task multi-label" if source == "digits-multilabel" else f"--data {source}"
        raise ValueError(
            f"--imbalance-ratios applies to the built-in long-tailed task; the experiment runs "
            f"{where}"
        )


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def run_compare_command(args: Any, argv: Sequence[str]) -> int:
    """``lossforge compare``: run, print the report and the output paths."""
    exp = experiment_from_args(args)
    created = not args.out or not Path(args.out).exists()
    out = Path(args.out) if args.out else default_out_dir()
    progress = "off" if args.quiet else ("bar" if sys.stderr.isatty() else "lines")
    try:
        run_compare(
            exp,
            out,
            progress=progress,
            plot=not args.no_plot,
            jobs=args.jobs or default_jobs(),
            argv=argv,
        )
    except BaseException:
        # a run that failed before writing anything leaves no empty folder of its own behind
        if created and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return 0
