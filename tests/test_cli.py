"""Tests of the ``lossforge`` command (through ``lossforge.cli.main``): compare end to end on tiny
budgets, error paths, lazy imports, the chart, plot, list and bench. The parts of compare (trainer,
statistics, metrics, data checks) are tested one by one in ``test_cli_compare.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from lossforge.cli import main  # noqa: E402
from lossforge.cli.experiment import (  # noqa: E402
    DEFAULT_MULTI_LABEL_LOSSES,
    DEFAULT_SINGLE_LABEL_LOSSES,
    load_experiment,
    loss_kinds,
)
from lossforge.registry import list_losses  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000
    assert b"Matplotlib" in data[:4096]  # the Software text chunk matplotlib writes


def blobs(
    n: int = 150, classes: int = 3, features: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 3, (classes, features))
    return (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float32), y


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, X=x, y=y)
    return path


# ----------------------------------------------------------------------------------------------
# compare, end to end (tiny budgets)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """The default command at a tiny budget (1 seed, 20 steps, small mosaics): report, stdout,
    output folder."""
    out = tmp_path_factory.mktemp("smoke")
    capture: list[str] = []
    from lossforge.cli import build_parser
    from lossforge.cli.compare import experiment_from_args, run_compare

    args = build_parser().parse_args(["compare", "--smoke", "--seeds", "2", "--out", str(out)])
    report = run_compare(
        experiment_from_args(args), out, progress="off", jobs=1, echo=capture.append
    )
    return report, "\n".join(capture), out


def test_compare_default_run_report(smoke: tuple[dict[str, Any], str, Path]) -> None:
    report, stdout, out = smoke
    assert [t["key"] for t in report["tasks"]] == ["lt-ir10", "lt-ir100", "multilabel"]
    for task in report["tasks"]:
        expected = (
            DEFAULT_SINGLE_LABEL_LOSSES
            if task["kind"] == "single_label"
            else DEFAULT_MULTI_LABEL_LOSSES
        )
        labels = [r["label"] for r in task["leaderboard"]]
        assert sorted(labels) == sorted(s.label for s in expected)
        assert len(set(labels)) == len(labels)
        assert task["leaderboard"][0]["baseline"]  # the baseline row first
        assert task["baseline"] == expected[0].label
        for row in task["leaderboard"][1:]:
            cell = row["difference"][task["primary_metric"]]
            assert cell["low"] <= cell["mean"] <= cell["high"]
            assert cell["verdict"] in ("better", "worse", "within noise")
        assert task["budget_check"]["steps"] == 2 * task["steps"]
    lt = report["tasks"][0]
    assert lt["metrics"] == [
        "balanced_accuracy",
        "tail_accuracy",
    ]  # accuracy: same on balanced test
    assert "the test split is balanced" in " ".join(lt["notes"])
    assert len(report["tasks"][-1]["leaderboard"][0]["per_class"]) == 90
    proto = report["protocol"]
    assert proto["optimizer"]["name"] == "AdamW"
    assert proto["optimizer"]["weight_decay_on"].startswith("weight matrices")
    assert proto["seeds"] == [0, 1]
    assert proto["steps"] == {"lt-ir10": 20, "lt-ir100": 20, "multilabel": 20}
    for text in ("AdamW", "weight decay", "not biases", "budget: 20 steps", "2 seeds (0, 1)"):
        assert text in stdout
    assert "vs cross-entropy" in stdout
    assert "doubled budget (40 steps)" in stdout
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"][0]["leaderboard"] == report["tasks"][0]["leaderboard"]
    assert_png(out / "compare.png")


def test_compare_chart_layout(smoke: tuple[dict[str, Any], str, Path]) -> None:
    from lossforge.cli.chart import compare_figure, loss_colours

    report = smoke[0]
    fig = compare_figure(report)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.get_axes()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes)
    colours = loss_colours(report["tasks"])
    others = [c for label, c in colours.items() if label not in ("cross-entropy", "BCE")]
    assert len(set(others)) == len(others) == 6 + 2  # one colour per loss, across every panel
    assert colours["cross-entropy"] == colours["BCE"] not in others  # baselines: black
    tasks = report["tasks"]
    top, bottom = axes[: len(tasks)], axes[len(tasks) :]
    for task, ax in zip(tasks, top, strict=True):
        assert ax.get_title().replace("\n", " ") == task["chart_title"]
        lo, hi = ax.get_xlim()
        assert lo < 0 < hi  # the baseline's line at 0 is inside the dot plot
        ticks = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
        rows = [r["label"] for r in task["leaderboard"][1:]]
        assert sorted(ticks, key=ticks.get, reverse=True) == rows  # best difference on top
    lt_bottom = bottom[0]
    assert lt_bottom.get_ylim()[0] == 0  # per-class axis from 0
    assert [t.get_text() for t in lt_bottom.get_xticklabels()] == tasks[0]["class_names"]
    for line in lt_bottom.get_lines():  # the same colour as in the legend
        assert line.get_color() in colours.values()
    assert bottom[-1].get_xlim()[0] == 0 and bottom[-1].get_ylim()[0] == 0  # 90 labels: scatter


@pytest.mark.subprocess  # two forked worker processes
def test_compare_npz_is_deterministic_and_parallel_equals_serial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = blobs()
    data = _save_npz(tmp_path / "feats.npz", x, y)
    args = (
        "compare", "--data", str(data), "--model", "linear", "--steps", "15", "--seeds", "3",
        "--loss", "cross_entropy", "--loss", "cross_entropy:class_weight=from_train",
        "--loss", "balanced_softmax:class_counts=from_train", "--no-plot", "--quiet",
    )  # fmt: skip
    code, stdout, err = run(capsys, *args, "--jobs", "1", "--out", str(tmp_path / "a"))
    assert code == 0, err
    one = json.loads((tmp_path / "a" / "results.json").read_text())
    (task,) = one["tasks"]
    assert task["key"] == "feats"
    assert task["chart_title"].startswith("feats.npz: single-label, 3 classes")
    labels = [r["label"] for r in task["leaderboard"]]
    assert labels[0] == "cross_entropy"  # the first loss given is the baseline
    assert "cross_entropy (class_weight=from_train)" in labels  # not merged with cross_entropy
    assert len(task["leaderboard"][1]["metrics"]["balanced_accuracy"]["values"]) == 3
    code, _, err = run(capsys, *args, "--jobs", "2", "--out", str(tmp_path / "b"))
    assert code == 0, err
    two = json.loads((tmp_path / "b" / "results.json").read_text())
    assert two["processes"] == 2  # one task: its seeds are split over the two processes
    for board, again in (
        (task, two["tasks"][0]),
        (task["budget_check"], two["tasks"][0]["budget_check"]),
    ):
        for row, other in zip(board["leaderboard"], again["leaderboard"], strict=True):
            assert row["metrics"] == other["metrics"]  # every per-seed metric unchanged
            assert row.get("difference") == other.get("difference")
            # bit for bit: each seed's run does not depend on the seeds stacked with it
            assert row["final_train_loss"] == other["final_train_loss"]


def test_compare_npz_multi_hot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(160, 8)).astype(np.float32)
    y = (x[:, :4] + 0.5 * rng.normal(size=(160, 4)) > 1.0).astype(np.int64)  # multi-hot rows
    data = tmp_path / "ml.npz"
    np.savez(data, X=x, y=y, names=np.array(["red", "green", "blue", "gold"]))
    code, stdout, err = run(
        capsys, "compare", "--data", str(data), "--loss", "binary_cross_entropy_with_logits",
        "--loss", "sigmoid_focal:gamma=2,alpha=none", "--loss", "asymmetric:gamma_neg=4",
        "--steps", "10", "--seeds", "2", "--hidden", "16", "--quiet", "--jobs", "1",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    (task,) = report["tasks"]
    assert task["kind"] == "multi_label"
    assert task["class_names"] == ["red", "green", "blue", "gold"]
    assert len(task["leaderboard"]) == 3
    assert all(0.0 < r["metrics"]["mAP"]["mean"] <= 1.0 for r in task["leaderboard"])
    assert "vs binary_cross_entropy_with_logits" in stdout
    assert_png(tmp_path / "o" / "compare.png")


def test_compare_csv_reports_its_choices_and_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = blobs(n=90)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    lines = ["id,f1,f2,f3,f4,f5,f6,species"] + [
        ",".join([f"row{i}", *(f"{v:.4f}" for v in row), n])
        for i, (n, row) in enumerate(zip(names, x, strict=True))
    ]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    code, stdout, err = run(
        capsys, "compare", "--data", str(path), "--drop-columns", "id", "--steps", "5",
        "--seeds", "2", "--jobs", "1", "--loss", "cross_entropy",
        "--loss", "balanced_softmax:class_counts=from_train", "--no-plot",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    task = report["tasks"][0]
    assert task["class_names"] == ["setosa", "versicolor", "virginica"]
    assert task["info"]["features"] == 6
    assert "label column 'species': the last column" in stdout  # said, not silent
    assert "columns left out: 'id'" in stdout
    assert "tail-third accuracy not shown" in stdout  # 3 near-balanced classes: no tail
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert progress == [progress[0]]  # stderr is not a terminal: one line per finished job
    assert progress[0].startswith("[1/1] table (seeds 0, 1): 2 losses x 2 seeds")


def test_compare_says_when_a_run_diverges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = blobs(n=60)
    data = _save_npz(tmp_path / "d.npz", x, y)
    code, stdout, err = run(
        capsys, "compare", "--data", str(data), "--loss", "cross_entropy", "--loss",
        "softmax_focal:gamma=2", "--lr", "1e30", "--steps", "3", "--seeds", "2", "--jobs", "1",
        "--quiet", "--no-plot", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err
    assert "note: diverged (non-finite outputs" in stdout
    assert "NOT every loss fits its training split" in stdout


def test_compare_toml_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs(seed=3)
    _save_npz(tmp_path / "feats.npz", x, y)
    config = tmp_path / "exp.toml"
    config.write_text(
        """
[experiment]
name = "unit"
seeds = [0, 1]

[data]
source = "feats.npz"   # relative to this file
test_size = 0.3

[model]
kind = "linear"

[train]
steps = 8
batch_size = 32
budget_check = false

[[loss]]
type = "cross_entropy"

[[loss]]
label = "CB-CE"
type = "cross_entropy"
class_weight = { from_train = "effective_number", beta = 0.99 }

[[loss]]
type = "logit_adjusted"
class_counts = "from_train"
tau = 1.5
"""
    )
    code, stdout, err = run(
        capsys, "compare", "--config", str(config), "--quiet", "--no-plot", "--jobs", "1",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    assert report["experiment"]["name"] == "unit"
    assert report["protocol"]["seeds"] == [0, 1]
    assert report["protocol"]["steps"] == {"feats": 8}
    assert report["protocol"]["budget_check_steps"] is None
    assert "budget_check" not in report["tasks"][0]
    labels = [r["label"] for r in report["tasks"][0]["leaderboard"]]
    assert sorted(labels) == sorted(
        ["cross_entropy", "CB-CE", "logit_adjusted (class_counts=from_train, tau=1.5)"]
    )
    assert "doubled-budget check: off" in stdout


def test_example_experiment_file_is_valid() -> None:
    exp = load_experiment(ROOT / "examples" / "experiment.toml")
    assert exp.losses
    assert exp.seeds


# ----------------------------------------------------------------------------------------------
# error paths: one line on stderr, exit code 2, no traceback
# ----------------------------------------------------------------------------------------------


def _bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "garbage.npz").write_bytes(b"this is not a zip file")
    np.savez(tmp / "noy.npz", X=np.zeros((10, 2)))
    np.savez(tmp / "empty.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    np.savez(tmp / "oneclass.npz", X=np.zeros((8, 3)), y=np.full(8, 3))
    np.savez(tmp / "multi.npz", X=np.zeros((8, 3)), y=np.eye(2)[np.arange(8) % 2])
    (tmp / "badkey.toml").write_text("[train]\nsteps = 2\nstep = 3\n")
    (tmp / "epochs.toml").write_text("[train]\nepochs = 30\n")
    (tmp / "badtable.toml").write_text("[trainer]\nsteps = 2\n")
    (tmp / "noloss.toml").write_text("loss = []\n")
    (tmp / "badtype.toml").write_text('[train]\nsteps = "many"\n')
    (tmp / "badsyntax.toml").write_text("[train\nsteps = 2\n")
    (tmp / "badloss.toml").write_text('[[loss]]\ntype = "cross_entropy"\nlabel_smoothing = 2.0\n')
    (tmp / "twice.toml").write_text(
        '[[loss]]\ntype = "cross_entropy"\nlabel = "a"\n\n[[loss]]\ntype = "softmax_focal"\n'
        'label = "a"\n'
    )
    (tmp / "semi.csv").write_text("a;b;label\n1;2;x\n3;4;y\n")
    (tmp / "text.csv").write_text("a,name,label\n1,ann,x\n2,bob,y\n3,cy,x\n4,di,y\n")
    (tmp / "empty_label.csv").write_text("a,label\n1,x\n2,\n3,y\n4,x\n5,y\n")
    (tmp / "minus.csv").write_text("a,label\n1,0\n2,-1\n3,1\n4,0\n5,1\n")
    (tmp / "header.csv").write_text("a,b,label\n")
    (tmp / "data.txt").write_text("1,2,3\n")
    (tmp / "table.npz").write_text("a,b,label\n1,2,0\n")
    (tmp / "blank.npz").write_bytes(b"")
    np.save(tmp / "single.npy", np.zeros(3))
    (tmp / "single.npy").rename(tmp / "single.npz")
    return {p.name: p for p in tmp.iterdir()}


ERROR_CASES = [
    (("compare", "--loss", "no_such_loss"), "no_such_loss"),
    (("compare", "--loss", "softmax_focal:gamma=-1", "--smoke"), "gamma"),
    (("compare", "--loss", "cross_entropy:gama=2", "--smoke"), "gama"),
    (
        ("compare", "--loss", "cross_entropy", "--loss", "cross_entropy"),
        "the same loss is given twice",
    ),
    (("compare", "--data", "{tmp}/missing.npz"), "cannot read data file"),
    (("compare", "--data", "{tmp}/garbage.npz"), "is not an .npz archive (a zip file"),
    (("compare", "--data", "{tmp}/noy.npz"), "no array 'y'"),
    (("compare", "--data", "{tmp}/empty.npz"), "X holds no examples"),
    (("compare", "--data", "{tmp}/oneclass.npz"), "a single class ('3')"),
    (("compare", "--data", "{tmp}/multi.npz", "--ignore-label", "-1"), "single-label data"),
    (("compare", "--data", "{tmp}/semi.csv"), "semicolon-separated"),
    (("compare", "--data", "{tmp}/text.csv"), "column 'name': 'ann' is not a number"),
    (("compare", "--data", "{tmp}/empty_label.csv"), "without a label (line 3)"),
    (("compare", "--data", "{tmp}/minus.csv"), "--ignore-label -1"),
    (("compare", "--data", "{tmp}/header.csv"), "no data rows"),
    (("compare", "--data", "{tmp}/data.txt"), "unsupported type"),
    # what a .npz file really is, before NumPy's messages (a text table read as "pickled data")
    (("compare", "--data", "{tmp}/table.npz"), "is not an .npz archive"),
    (("compare", "--data", "{tmp}/blank.npz"), "is empty"),
    (("compare", "--data", "{tmp}/single.npz"), "a single .npy array"),
    (("compare", "--data", "{tmp}/mnist"), "a built-in source ('digits'"),
    (("compare", "--config", "{tmp}/missing.toml"), "cannot read experiment file"),
    (("compare", "--config", "{tmp}/badkey.toml"), "unknown key 'step'"),
    (("compare", "--config", "{tmp}/epochs.toml"), "steps"),
    (("compare", "--config", "{tmp}/badtable.toml"), "unknown table or key 'trainer'"),
    (("compare", "--config", "{tmp}/noloss.toml"), "'loss' is an empty list"),
    (("compare", "--config", "{tmp}/badtype.toml"), "expected an integer"),
    (("compare", "--config", "{tmp}/badsyntax.toml"), "invalid TOML"),
    (("compare", "--config", "{tmp}/badloss.toml", "--smoke"), "label_smoothing"),
    (("compare", "--config", "{tmp}/twice.toml"), "two losses are labelled 'a'"),
    (("compare", "--steps", "0"), "positive integer"),
    (("compare", "--weight-decay", "-1"), "number >= 0"),
    (("compare", "--epochs", "30"), "unrecognized arguments: --epochs"),
    (("compare", "--task", "multi-label", "--data", "{tmp}/noy.npz"), "--task"),
    (("frobnicate",), "invalid choice"),
    (("plot", "no_such_loss"), "no_such_loss"),
    (("plot", "sigmoid_focal", "--param", "gamma=-1"), "gamma"),
    (("plot", "sigmoid_focal", "--param", "gamma"), "NAME=V1,V2"),
    (("plot", "ohem_binary_cross_entropy"), "not element-wise"),
    (("plot", "sigmoid_focal", "--out", "{tmp}/x.jpg"), ".png"),
    (("bench", "--workloads", "nope"), "unknown workload"),
    # the protocol is repository-only (benchmarks/): the installed command names it
    (("bench", "--suite", "protocol"), "python -m benchmarks.run"),
    (("bench", "--smoke"), "--smoke is an option of the benchmark protocol"),
    # found by the CLI audit: an unbounded grid exhausted memory (killed, no message); a stem
    # with a folder wrote outside --out; reduction="none" failed inside a training worker
    (("plot", "sigmoid_focal", "--points", "100000000"), "at most 100000 grid points"),
    (("bench", "--stem", "../escape"), "a plain file name without a folder"),
    (("compare", "--loss", 'cross_entropy:reduction="none"'), "`reduction` is not a loss option"),
    # options the source would ignore are refused, not dropped silently
    (("compare", "--test-size", "0.3"), "--test-size applies to a --data file"),
    (("compare", "--task", "long-tail", "--label-column", "y"), "--label-column applies to"),
    (("compare", "--ignore-label", ""), "--ignore-label applies to a --data file"),
    (("compare", "--task", "multi-label", "--imbalance-ratios", "5"), "runs --task multi-label"),
    (("compare", "--data", "{tmp}/semi.csv", "--imbalance-ratios", "5"), "long-tailed task"),
]


@pytest.mark.parametrize(
    ("argv", "message"), ERROR_CASES, ids=[" ".join(a)[:60] for a, _ in ERROR_CASES]
)
def test_error_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    _bad_files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(
        capsys, *args, *(["--out", str(tmp_path / "o")] if args[0] == "compare" else [])
    )
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert "np.int64" not in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("lossforge")
    assert not (tmp_path / "o" / "results.json").exists()


def test_unknown_option_is_reported_by_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/cli.md: usage errors read ``lossforge <command>: error: ...`` and point at that
    command's help, also for an option no parser knows."""
    for command in ("compare", "plot", "bench"):
        argv = [command, "--bogus"] if command != "plot" else [command, "l1", "--bogus"]
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert err.startswith(f"lossforge {command}: error: unrecognized arguments: --bogus"), err
        assert f"see 'lossforge {command} --help'" in err


def test_failed_run_leaves_no_empty_folder_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails after creating its output folder, before writing anything, removes that
    folder (a default one too); a folder the user had already made stays."""
    from lossforge.cli import compare as compare_mod

    def failing(exp, out_dir, **kw):  # noqa: ANN001, ANN003, ANN202
        out_dir.mkdir(parents=True, exist_ok=True)
        raise ValueError("a job failed")

    monkeypatch.setattr(compare_mod, "run_compare", failing)
    fresh = tmp_path / "fresh"
    code, _, err = run(capsys, "compare", "--smoke", "--out", str(fresh))
    assert code == 2 and "a job failed" in err and not fresh.exists()
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "compare", "--smoke")
    assert code == 2 and not any((tmp_path / "lossforge-out").iterdir())
    mine = tmp_path / "mine"
    mine.mkdir()
    code, _, _ = run(capsys, "compare", "--smoke", "--out", str(mine))
    assert code == 2 and mine.is_dir()


def test_default_output_folders_never_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs started in the same second get two folders (the stamp has one-second
    resolution): the folder is created when it is chosen, the second one with a suffix."""
    from lossforge.cli import compare as compare_mod

    monkeypatch.chdir(tmp_path)
    first, second, third = (compare_mod.default_out_dir() for _ in range(3))
    assert len({first, second, third}) == 3 and all(p.is_dir() for p in (first, second, third))
    assert second.name.startswith(first.name) and second.name.endswith(("-2", "-3"))


def test_compare_with_one_task_skipped_and_a_stale_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only multi-label losses with the default tasks: the long-tail task is left out of the
    header, the tables and results.json, and a note says why; with --no-plot into a folder that
    holds an earlier run's chart, that chart is removed (it would be read as these results')."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "compare.png").write_bytes(b"an earlier run's chart")
    code, stdout, err = run(
        capsys,
        "compare", "--smoke", "--seeds", "2", "--no-plot", "--quiet",
        "--loss", "binary_cross_entropy_with_logits", "--loss", "asymmetric:gamma_neg=2",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "results.json").read_text())
    keys = [t["key"] for t in report["tasks"]]
    assert keys == ["multilabel"]
    assert set(report["protocol"]["steps"]) == {"multilabel"}
    assert "lt-ir" not in stdout.split("multilabel:")[0].split("budget:")[1].splitlines()[0]
    assert "skipped: none of the given losses is single-label" in stdout
    assert not (out / "compare.png").exists()
    assert "removed" in stdout


def test_missing_extra_gives_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    code, _, err = run(capsys, "plot", "sigmoid_focal", "--out", "unused.png")
    assert code == 2
    assert "pip install lossforge[cli]" in err
    assert "matplotlib" in err


@pytest.mark.parametrize("command", ["compare", "plot", "list", "bench"])
def test_subcommand_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert f"lossforge {command}" in out


@pytest.mark.subprocess
def test_help_and_argument_errors_import_no_torch() -> None:
    """The CLI layer answers --help and usage errors from the standard library alone (the
    ``lossforge`` package itself is replaced by an empty namespace here, so that only
    ``lossforge.cli`` is measured)."""
    package = str(ROOT / "src" / "lossforge")
    probe = (
        "import sys, types\n"
        f"pkg = types.ModuleType('lossforge'); pkg.__path__ = [{package!r}]\n"
        "sys.modules['lossforge'] = pkg\n"
        "from lossforge.cli import main\n"
        "codes = [main(['--help']), main(['compare', '--help']), main(['compare', '--bogus']),\n"
        "         main(['compare', '--steps', 'x'])]\n"
        "heavy = sorted({'torch', 'numpy', 'sklearn', 'matplotlib', 'tqdm'} & set(sys.modules))\n"
        "print('RESULT', codes, heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "RESULT [0, 0, 2, 2] []" in proc.stdout


@pytest.mark.subprocess  # two fresh interpreters that import torch
def test_python_m_lossforge_help_and_lazy_imports() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lossforge", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("compare", "plot", "list", "bench"):
        assert command in proc.stdout
    # torch itself may import tqdm; lossforge must add none of the CLI extras
    probe = (
        "import sys, torch; before = set(sys.modules); import lossforge, lossforge.cli; "
        "print(sorted({'sklearn', 'matplotlib', 'tqdm'} & (set(sys.modules) - before)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_modules_import_each_other_without_cycles() -> None:
    """compare, chart, plot, data, metrics, stats and train import in one direction only."""
    import ast

    cli = ROOT / "src" / "lossforge" / "cli"
    owned = ["__init__", "_deps", "compare", "chart", "plot", "data", "experiment", "listing",
             "metrics", "stats", "train"]  # fmt: skip
    graph: dict[str, set[str]] = {}
    for name in owned:
        tree = ast.parse((cli / f"{name}.py").read_text())
        deps = set()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("lossforge.cli")
            ):
                target = node.module.removeprefix("lossforge.cli").lstrip(".") or "__init__"
                deps.add(target)
        graph[name] = deps & set(owned)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert not [name for name in owned if reaches(name, name, {name})]
    assert "compare" not in graph["chart"] and "compare" not in graph["plot"]


# ----------------------------------------------------------------------------------------------
# plot, list, bench
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("sigmoid_focal", "--param", "gamma=0,0.5,1,2,5"),
        ("asymmetric", "--param", "gamma_neg=0,2,4", "--param", "clip=0.05"),
        ("softmax_focal",),
        ("balanced_softmax", "--param", "class_counts=[1,10],[1,100]"),
        ("smooth_l1", "--param", "beta=0.5,1"),
    ],
)
def test_plot_writes_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    out = tmp_path / "fig.png"
    code, stdout, err = run(capsys, "plot", *argv, "--points", "50", "--out", str(out))
    assert code == 0, err
    assert_png(out)
    assert str(out) in stdout


def test_plot_curves_for_every_registered_elementwise_loss() -> None:
    from lossforge.cli.plot import curves

    for info in list_losses():
        if info.traits is None or info.traits.plot is None:
            with pytest.raises(ValueError, match="cannot plot"):
                curves(info.name, {}, points=16)
            continue
        family, data, _ = curves(info.name, {}, points=16)
        branches = ("pos", "neg") if family.startswith("sigmoid") else ("pos",)
        for curve in data:
            for b in branches:
                assert np.isfinite(curve[b]["loss"]).all(), info.name
                assert np.isfinite(curve[b]["grad"]).all(), info.name


def test_plot_focal_gradient_matches_the_paper_shape() -> None:
    from lossforge.cli.plot import curves

    _, data, _ = curves("sigmoid_focal", {"gamma": [0.0, 2.0], "alpha": [None]}, points=101)
    ce, focal = data
    easy = (
        ce["x"] > 0.6
    )  # well-classified positives: focal loss is down-weighted (Lin et al. Fig. 1)
    assert (focal["pos"]["loss"][easy] < ce["pos"]["loss"][easy]).all()
    # gamma = 0 is BCE: d loss / d logit = p - 1 for a positive
    np.testing.assert_allclose(ce["pos"]["grad"], ce["x"] - 1.0, atol=1e-9)


def test_list_shows_every_loss(capsys: pytest.CaptureFixture[str]) -> None:
    names = [info.name for info in list_losses()]
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in names:
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert "gamma=2.0" in out
    assert "class_counts=<required>" in out
    # the text says which losses take ``backend`` (the common parameters are in the footer)
    for info in list_losses():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [info.name])
        assert line.endswith("[backend]") == ("backend" in info.params), line
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == names
    assert rows[names.index("sigmoid_focal")]["params"]["gamma"] == 2.0
    # family and input convention (ECOSYSTEM: "logits or probabilities") for every loss
    by_name = {r["name"]: r for r in rows}
    assert all(r["family"] and r["input"] for r in rows), [r["name"] for r in rows]
    assert by_name["cross_entropy"]["input"] == "logits (softmax)"
    assert by_name["binary_cross_entropy"]["input"] == "probabilities"
    assert by_name["nll"]["input"] == "log-probabilities"
    assert by_name["sigmoid_focal"]["family"] == "focal"
    assert "activation" in by_name["dice"]["input"]


def test_bench_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "bench", "--workloads", "bce-multilabel,smooth-l1", "--scale", "0.01",
        "--min-run-time", "0.01",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads((tmp_path / "bench.json").read_text())
    providers = {(r["workload"], r["provider"]) for r in payload["rows"]}
    assert ("bce-multilabel", "F.binary_cross_entropy_with_logits") in providers
    assert any(p.startswith("lossforge smooth_l1") for _, p in providers)
    assert all(r["median_ms"] > 0 for r in payload["rows"])
    # peak memory on the CPU too: at least the gradient buffer (4 bytes per float32 logit)
    assert all(r["peak_B_per_logit"] >= 4 for r in payload["rows"])
    assert all(r["peak_extra_mb"] == r["peak_extra_bytes"] / 2**20 for r in payload["rows"])
    assert {r["mem_ratio_vs_ref"] for r in payload["rows"] if r["provider"] == r["reference"]} == {
        1.0
    }
    assert (tmp_path / "bench.csv").read_text().startswith("workload,provider")
    md = (tmp_path / "bench.md").read_text()
    assert "| workload |" in md
    assert "peak extra MB | bytes/logit | memory vs reference |" in md
    for r in payload["rows"]:  # interleaved rounds: the paired ratios and their quartiles
        assert r["runs"] >= 5
        assert r["speedup_q1"] <= r["speedup_vs_ref"] <= r["speedup_q3"]
        if r["runs"] >= 6:  # and the confidence interval of their median
            assert r["speedup_ci_low"] <= r["speedup_vs_ref"] <= r["speedup_ci_high"]
        else:
            assert r["speedup_ci_low"] is None and r["speedup_ci_high"] is None
    code, out, _ = run(capsys, "bench", "--list")
    assert code == 0
    assert "focal-dense" in out


def test_bench_interleaved_rounds() -> None:
    """Every provider of a workload is timed in the same rounds with the same block size; the
    reference's paired ratios are exactly 1 and every median lies within its quartiles."""
    import torch

    from lossforge.cli.bench import WORKLOADS, run_workloads

    work = next(w for w in WORKLOADS if w.name == "bce-multilabel")
    rows = run_workloads((work,), torch.device("cpu"), scale=0.01, min_run_time=0.01)
    # the reference, lossforge's functional (checks on by default, then off), its module
    assert [r["provider"] for r in rows] == [
        "F.binary_cross_entropy_with_logits",
        "lossforge binary_cross_entropy_with_logits (torch)",
        "lossforge binary_cross_entropy_with_logits (value checks off)",
        "lossforge binary_cross_entropy_with_logits module",
    ]
    assert rows[0]["reference"] == "F.binary_cross_entropy_with_logits"
    assert len({r["runs"] for r in rows}) == 1 and rows[0]["runs"] >= 5
    assert len({r["calls_per_run"] for r in rows}) == 1 and rows[0]["calls_per_run"] >= 1
    ref = rows[0]
    assert ref["speedup_vs_ref"] == ref["speedup_q1"] == ref["speedup_q3"] == 1.0
    for r in rows:
        assert 0 < r["speedup_q1"] <= r["speedup_vs_ref"] <= r["speedup_q3"]
        assert r["median_ms"] > 0 and r["iqr_ms"] >= 0


def test_bench_aa_row_times_the_reference_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--aa adds the reference once more, right after it, on a leaf of its own: the same
    function, timed in the same rounds; its ratio is the run's noise band (near 1, not exactly 1
    as the reference's own)."""
    import torch

    from lossforge.cli.bench import WORKLOADS, _providers, run_workloads

    work = next(w for w in WORKLOADS if w.name == "smooth-l1")
    names = [n for n, _ in _providers(work, torch.device("cpu"), aa=True)]
    plain = [n for n, _ in _providers(work, torch.device("cpu"))]
    assert names == [plain[0], "F.smooth_l1_loss (A/A)", *plain[1:]]
    fns = dict(_providers(work, torch.device("cpu"), aa=True))
    assert fns["F.smooth_l1_loss (A/A)"] is fns["F.smooth_l1_loss"]
    rows = run_workloads((work,), torch.device("cpu"), scale=0.01, min_run_time=0.01, aa=True)
    aa = rows[1]
    assert aa["provider"] == "F.smooth_l1_loss (A/A)" and aa["reference"] == "F.smooth_l1_loss"
    assert aa["runs"] == rows[0]["runs"] and aa["mem_ratio_vs_ref"] == 1.0
    assert 0.2 < aa["speedup_vs_ref"] < 5.0  # a ratio of two timings of one function
    code, out, err = run(
        capsys, "bench", "--aa", "--workloads", "smooth-l1", "--scale", "0.01",
        "--min-run-time", "0.01", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "| smooth-l1 | F.smooth_l1_loss (A/A) |" in out
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert [r["provider"] for r in payload["rows"]][:2] == ["F.smooth_l1_loss", aa["provider"]]


def test_bench_lossforge_rows_call_the_functional_and_the_module() -> None:
    """The lossforge rows call the functional with the workload's parameters (as the references
    are functions), the last one the module built by the registry."""
    import functools

    import torch

    import lossforge.functional as F
    from lossforge.cli.bench import WORKLOADS, _providers
    from lossforge.nn import Loss

    work = next(w for w in WORKLOADS if w.name == "smooth-l1")
    providers = dict(_providers(work, torch.device("cpu")))
    on = providers["lossforge smooth_l1 (torch)"]
    off = providers["lossforge smooth_l1 (value checks off)"]
    assert isinstance(on, functools.partial) and on.func is F.smooth_l1_loss
    assert on.keywords == {"beta": 1.0 / 9.0, "backend": "torch"}
    assert off.module.func is F.smooth_l1_loss  # type: ignore[attr-defined]
    module = providers["lossforge smooth_l1 module"]
    assert isinstance(module, Loss) and module.beta == 1.0 / 9.0


def test_bench_unchecked_provider_runs_with_checks_off_per_block() -> None:
    """The "value checks off" provider runs every call (warm-up, memory step, timed blocks) with
    value checks off, set around the block rather than per call; the others keep the default."""
    import torch

    import lossforge.cli.bench as bench
    from lossforge._checks import value_checks_enabled

    x, t = torch.randn(4, 3), torch.rand(4, 3)
    for wrap, expected in ((bench._unchecked, False), (lambda f: f, True)):
        seen: list[bool] = []

        def loss(a: torch.Tensor, b: torch.Tensor, seen: list[bool] = seen) -> torch.Tensor:
            seen.append(value_checks_enabled(a))
            return (a * b).sum()

        step, _ = bench._prepare(wrap(loss), x, t)
        assert seen and set(seen) == {expected}  # warm-up and the memory step
        seen.clear()
        bench._time_block(step, 3, torch.device("cpu"))
        assert seen == [expected] * 3
        assert value_checks_enabled(x)  # nothing left set after the block


def test_bench_interleave_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round times one block (k calls) of every provider, in an order that changes from round
    to round and repeats from run to run (``random.Random(0)``); no timing is asserted."""
    import torch

    import lossforge.cli.bench as bench

    monkeypatch.setattr(bench, "_block_size", lambda step, device, scale=1.0: 3)

    def rounds() -> list[list[int]]:
        log: list[int] = []
        steps = [lambda i=i: log.append(i) for i in range(3)]
        calls, blocks = bench._interleave(steps, torch.device("cpu"), min_run_time=1e-9)
        assert calls == 3
        n = len(blocks[0])
        assert n >= 5 and all(len(b) == n for b in blocks)
        assert len(log) == 3 * 3 * n
        blocks_run = log[::3]
        assert all(log[i : i + 3] == [log[i]] * 3 for i in range(0, len(log), 3))
        order = [blocks_run[i : i + 3] for i in range(0, len(blocks_run), 3)]
        assert all(sorted(o) == [0, 1, 2] for o in order)
        return order

    first = rounds()
    assert len({tuple(o) for o in first}) > 1  # shuffled, not a fixed A, B, C
    assert rounds()[:5] == first[:5]  # seeded: the same order every run


def test_bench_markdown_speedup_range() -> None:
    from lossforge.cli.bench import _markdown

    def row(provider: str, s: float | None, q1: float | None, q3: float | None) -> dict[str, Any]:
        return {
            "workload": "w",
            "provider": provider,
            "median_ms": 1.0,
            "speedup_vs_ref": s,
            "speedup_q1": q1,
            "speedup_q3": q3,
            "peak_extra_mb": 1.0,
            "peak_B_per_logit": 8.0,
            "mem_ratio_vs_ref": 1.0,
        }

    header = {"device": "cpu", "torch": "x", "threads": 1, "memory": "m"}
    lines = _markdown(
        [row("ref", 1.0, 1.0, 1.0), row("a", 1.02, 0.981, 1.049), row("b", None, None, None)],
        header,
    )
    cells = [line.split(" | ")[3] for line in lines[-3:]]
    assert cells == ["1.00x", "1.02x (0.98-1.05)", "n/a"]
    with_ci = {**row("c", 0.97, 0.91, 1.04), "speedup_ci_low": 0.951, "speedup_ci_high": 0.994}
    assert _markdown([with_ci], header)[-1].split(" | ")[3] == "0.97x (0.91-1.04; CI 0.95-0.99)"
    assert "95 % confidence interval of the median" in lines[0]


#: The distribution-free 95 % confidence interval of a median: ranks of the order statistics
#: (Conover, "Practical Nonparametric Statistics", table A3; e.g. n = 20: 6th and 15th values).
MEDIAN_CI_RANKS = {
    6: (1, 6),
    8: (1, 8),
    9: (2, 8),
    10: (2, 9),
    12: (3, 10),
    15: (4, 12),
    20: (6, 15),
    25: (8, 18),
    30: (10, 21),
}


def test_median_ci_ranks_match_the_table_and_are_the_tightest() -> None:
    import torch

    from lossforge.cli.bench import _median_ci_ranks

    assert _median_ci_ranks(5) is None  # [min, max] covers 1 - 2 / 32 < 95 %
    for n, ranks in MEDIAN_CI_RANKS.items():
        assert _median_ci_ranks(n) == ranks
    for n in range(6, 200, 7):
        ranks = _median_ci_ranks(n)
        assert ranks is not None
        k = ranks[0]
        assert ranks[1] == n + 1 - k
        # coverage 1 - 2 P(B <= k - 1), B ~ Bin(n, 1/2), from torch's own distribution
        binom = torch.distributions.Binomial(n, probs=torch.tensor(0.5, dtype=torch.float64))
        below = torch.arange(0, k + 1, dtype=torch.float64)
        pmf = binom.log_prob(below).exp()
        assert 1 - 2 * float(pmf[:k].sum()) >= 0.95 - 1e-12  # covers
        assert 1 - 2 * float(pmf[: k + 1].sum()) < 0.95  # one rank tighter does not


def test_median_ci_covers_the_true_median() -> None:
    """Monte Carlo: samples of 30 ratios from a skewed distribution (log-normal, median 1): the
    interval holds 1 in at least 94 % of 2000 trials (nominal >= 95 %, 97.9 % exactly at n=30)."""
    import torch

    from lossforge.cli.bench import _median_ci

    g = torch.Generator().manual_seed(0)
    samples = torch.randn(2000, 30, generator=g, dtype=torch.float64).mul(0.2).exp()
    hits = 0
    for row in samples.tolist():
        low, high = _median_ci(row)
        assert low is not None and high is not None and low <= high
        hits += low <= 1.0 <= high
    assert hits >= 0.94 * 2000
    assert _median_ci([1.0, 2.0, 3.0]) == (None, None)


def test_cpu_memory_known_case() -> None:
    """sigmoid -> exp -> sum of a 1000 x 1000 float32 leaf: the forward keeps sigmoid's and exp's
    outputs (4 MB each) for the backward, which adds exp's gradient and then x.grad: peak 3 x 4 MB;
    the inputs, allocated before, are not counted."""
    import torch

    from lossforge.cli.bench import cpu_memory

    x = torch.randn(1000, 1000, requires_grad=True)
    mem = cpu_memory(lambda: x.sigmoid().exp().sum())
    assert x.grad is not None
    mb = 4_000_000
    assert 3 * mb <= mem.peak_bytes < 3 * mb + 4096
    assert 2 * mb <= mem.saved_bytes < 2 * mb + 4096
    x.grad = None
    # F.binary_cross_entropy_with_logits' fused backward: only its gradient and x.grad
    t = torch.rand(1000, 1000)
    mem = cpu_memory(lambda: torch.nn.functional.binary_cross_entropy_with_logits(x, t))
    assert 1 * mb <= mem.peak_bytes < 2 * mb + 4096


def test_bench_references_agree_with_lossforge() -> None:
    import torch

    import lossforge.functional as LF
    from lossforge.cli.bench import (
        WORKLOADS,
        asl_repo_loss,
        balanced_bce_eager,
        eager_softmax_focal,
        torchvision_sigmoid_focal,
    )
    from lossforge.registry import build_loss

    gen = torch.Generator().manual_seed(0)
    for work in WORKLOADS:
        x, t = work.make(0.05, torch.device("cpu"), gen)
        ours = build_loss({"type": work.loss, **work.params})(x, t)
        ref_fn = next(iter(work.references.values()))
        ref = ref_fn(x, t)
        if work.loss == "asymmetric":
            ref = ref / x.numel()  # the ASL repository sums
        torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-4, atol=1e-5, msg=work.name)
    # the same references with the protocol's parameters
    x = torch.randn(64, 19, 4, 4, generator=gen)
    t = torch.randint(0, 19, (64, 4, 4), generator=gen)
    t[torch.rand(64, 4, 4, generator=gen) < 0.1] = 255
    torch.testing.assert_close(
        eager_softmax_focal(x, t, 2.0, 255),
        LF.softmax_focal_loss(x, t, gamma=2.0, ignore_index=255),
        rtol=1e-4,
        atol=1e-6,
    )
    x = torch.randn(256, 80, generator=gen) * 2 - 3
    y = (torch.rand(256, 80, generator=gen) < 0.03).float()
    torch.testing.assert_close(
        asl_repo_loss(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05) / x.numel(),
        LF.asymmetric_loss(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05),
        rtol=1e-4,
        atol=1e-6,
    )
    torch.testing.assert_close(
        torchvision_sigmoid_focal(x, y, 0.25, 1.5),
        LF.sigmoid_focal_loss(x, y, alpha=0.25, gamma=1.5),
        rtol=1e-4,
        atol=1e-6,
    )
    torch.testing.assert_close(
        balanced_bce_eager(x, y, 0.98),
        LF.balanced_binary_cross_entropy(x, y, beta=0.98),
        rtol=1e-4,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# every loss with a compare kind is a candidate
# ----------------------------------------------------------------------------------------------


def test_compare_kinds_are_the_registry_traits() -> None:
    from lossforge.cli.experiment import LossSpec

    declared = {i.name: i.traits.task for i in list_losses() if i.traits and i.traits.task}
    assert loss_kinds() == declared and "cross_entropy" in declared
    # a LossSpec takes its kind from the declaration, by registry or class name
    assert LossSpec("ldam", {"class_counts": "from_train"}).kind == "single_label"
    assert LossSpec("AsymmetricLoss").kind == "multi_label"


def _candidate_params(name: str, classes: int) -> dict[str, Any]:
    """The loss's example parameters (its traits), with the class statistics of the task."""
    info = next(i for i in list_losses() if i.name == name)
    params = dict(info.traits.params) if info.traits else {}
    for key in params:
        if key == "class_counts":
            params[key] = "from_train"
        elif key == "num_classes":
            params[key] = classes
    return params


@pytest.mark.parametrize("name", sorted(loss_kinds()))
def test_every_compare_kind_trains_as_a_candidate(name: str) -> None:
    from lossforge.cli.compare import run_job
    from lossforge.cli.data import Task
    from lossforge.cli.experiment import Experiment, LossSpec

    kind = loss_kinds()[name]
    rng = np.random.default_rng(0)
    classes = 3
    tasks = []
    for seed in (0, 1):
        x = rng.normal(size=(60, 5)).astype(np.float32)
        if kind == "single_label":
            y = np.arange(60) % classes
        else:
            y = (rng.random((60, classes)) < 0.3).astype(np.float32)
            y[np.arange(classes), np.arange(classes)] = 1.0  # every label has a positive
        tasks.append(
            Task(f"t{seed}", "toy", "user", kind, x[:40], y[:40], x[40:], y[40:], list("abc"))
        )
    spec = LossSpec(name, _candidate_params(name, classes))
    rows = run_job(tasks, [spec], Experiment(), [0, 1], [3, 6])
    assert len(rows) == 2 and len(rows[0]) == 2
    metric = "balanced_accuracy" if kind == "single_label" else "mAP"
    assert all(0.0 <= rows[c][j][0][metric] <= 1.0 for c in range(2) for j in range(2))


# ----------------------------------------------------------------------------------------------
# deferred class weights (DRW): { from_train = "drw", start = ... }
# ----------------------------------------------------------------------------------------------

DRW_LOSS = 'ldam:class_counts=from_train,class_weight={from_train="drw",start=0.5,beta=0.999}'


def test_drw_schedule_parses_from_the_command_line_and_toml(tmp_path: Path) -> None:
    from lossforge.cli.experiment import parse_loss_option

    spec = parse_loss_option(DRW_LOSS)
    assert spec.params["class_weight"] == {"from_train": "drw", "start": 0.5, "beta": 0.999}
    assert spec.kind == "single_label"
    assert spec.label == "ldam (class_counts=from_train, class_weight=drw(start=0.5,beta=0.999))"
    config = tmp_path / "drw.toml"
    config.write_text(
        '[[loss]]\ntype = "cross_entropy"\n\n[[loss]]\ntype = "ldam"\nclass_counts = "from_train"'
        '\nclass_weight = { from_train = "drw", start = 0.5, beta = 0.999 }\n'
    )
    assert load_experiment(config).losses[1] == spec


DRW_ERRORS = [
    ("start=1.5", "expected start in (0, 1], got 1.5"),
    ("start=0", "expected start in (0, 1], got 0"),
    ('start="late"', "expected start in (0, 1], got 'late'"),
    ("beta=1.0,start=0.8", "expected beta in [0, 1), got 1.0"),
    ("", "expected start = FRACTION of the budget in (0, 1]"),
    ("start=0.8,epoch=160", "unknown option 'epoch'"),
]


@pytest.mark.parametrize(
    ("options", "message"), DRW_ERRORS, ids=[o or "no start" for o, _ in DRW_ERRORS]
)
def test_malformed_drw_schedule_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: str, message: str
) -> None:
    table = '{from_train="drw"' + (f",{options}" if options else "") + "}"
    code, _, err = run(
        capsys, "compare", "--loss", f"ldam:class_counts=from_train,class_weight={table}",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert "--loss 'ldam:class_counts=from_train,class_weight=" in err  # what the user wrote
    assert 'class_weight = { from_train = "drw"' in err
    # the same table in an experiment file names the file and the loss
    toml_options = options.replace(",", ", ").replace("=", " = ")
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[loss]]\ntype = "ldam"\nclass_counts = "from_train"\nclass_weight = { from_train = '
        f'"drw"{", " + toml_options if options else ""} }}\n'
    )
    code, _, err = run(capsys, "compare", "--config", str(config), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and f"{config}: [[loss]] #1" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'cross_entropy:class_weight={from_train="drx",start=0.8}',
            "unknown from_train method 'drx'; expected one of 'inverse'",
        ),
        (
            'balanced_softmax:class_counts={from_train="drw",start=0.8}',
            "it applies to 'class_weight', not 'class_counts'",
        ),
    ],
)
def test_unknown_from_train_method_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    code, _, err = run(capsys, "compare", "--loss", text, "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_drw_weights_through_compare_are_one_then_the_drw_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through compare's job (budget 10 steps, start 0.5, doubled-budget check to 20): every seed's
    module sees class weight 1 in the first 5 training calls and
    ``drw_class_weights(counts, epoch=5, start_epoch=5, beta=0.999)`` in the 15 after them: the
    switch stays at start x the budget, so the doubled budget is a longer DRW phase."""
    import lossforge.cli.compare as compare
    from lossforge import drw_class_weights
    from lossforge.cli.data import Task
    from lossforge.cli.experiment import Experiment, TrainSpec, parse_loss_option

    seen: dict[int, list[list[float]]] = {}
    real = compare.build_loss_for

    def spied(spec: Any, task: Any) -> Any:
        module = real(spec, task)
        calls = seen.setdefault(id(module), [])
        module.register_forward_pre_hook(lambda mod, args: calls.append(mod.class_weight.tolist()))
        return module

    monkeypatch.setattr(compare, "build_loss_for", spied)
    rng = np.random.default_rng(0)
    tasks = []
    for seed in (0, 1):  # different class counts per seed: per-seed DRW weights
        y = np.repeat(np.arange(3), [20, 8 + 4 * seed, 7 - 4 * seed])  # 35 each
        x = rng.normal(size=(len(y), 4)).astype(np.float32)
        tasks.append(Task(f"t{seed}", "toy", "user", "single_label", x, y, x, y, list("abc")))
    exp = Experiment(train=TrainSpec(steps=10, batch_size=8))
    compare.run_job(tasks, [parse_loss_option(DRW_LOSS)], exp, [0, 1], [10, 20])
    assert len(seen) == 2  # one module per seed, each called seed by seed
    for calls, task in zip(seen.values(), tasks, strict=True):
        counts = np.bincount(task.y_train).tolist()
        drw = drw_class_weights(counts, epoch=5, start_epoch=5, beta=0.999).tolist()
        assert drw != [1.0, 1.0, 1.0]
        assert calls[-20:] == [[1.0, 1.0, 1.0]] * 5 + [drw] * 15


def test_default_long_tail_set_has_ldam_drw_with_the_reference_recipe(
    smoke: tuple[dict[str, Any], str, Path],
) -> None:
    """LDAM-DRW joins the default single-label losses with kaidic/LDAM-DRW's recipe (max margin
    0.5, s 30, DRW from epoch 160 of 200 with beta 0.9999) under its own label; the smoke run (20
    steps) switches at step 16 and says so under each long-tailed table."""
    (spec,) = [s for s in DEFAULT_SINGLE_LABEL_LOSSES if s.type == "ldam"]
    assert spec.label == "LDAM-DRW (margin 0.5, s 30, DRW at 80%)"
    assert dict(spec.params) == {
        "class_counts": "from_train",
        "max_margin": 0.5,
        "scale": 30.0,
        "class_weight": {"from_train": "drw", "start": 0.8, "beta": 0.9999},
    }
    labels = [s.label for s in DEFAULT_SINGLE_LABEL_LOSSES]
    assert len(set(labels)) == len(labels)
    report, stdout, _ = smoke
    for task in report["tasks"][:2]:
        assert spec.label in [r["label"] for r in task["leaderboard"]]
        assert any(
            n.startswith(f"{spec.label}: class_weight 1 for the first 16 steps")
            for n in task["notes"]
        ), task["notes"]
    assert "4 re-weighted steps at the budget (24 at twice the budget)" in stdout


def test_bench_heap_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """--heap as-is changes nothing and names any MALLOC_* variables; --heap reuse calls glibc's
    mallopt with M_MMAP_THRESHOLD = 32 MiB and M_TRIM_THRESHOLD = 1 GiB (checked on a stand-in
    library), and refuses clearly where mallopt is missing or says no."""
    import ctypes

    from lossforge.cli import bench

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert bench.set_heap("as-is").startswith("as-is")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert "MALLOC_ARENA_MAX=2" in bench.set_heap("as-is")
    with pytest.raises(ValueError, match="--heap: expected 'as-is' or 'reuse'"):
        bench.set_heap("fresh")

    calls: list[tuple[int, int]] = []

    class FakeLibc:
        answer = 1

        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return self.answer

    fake = FakeLibc()
    monkeypatch.setattr(bench.sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    assert bench.set_heap("reuse").startswith("reuse (glibc mmap threshold 32 MiB")
    assert calls == [(-3, 32 * 2**20), (-1, 2**30)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    fake.answer = 0
    with pytest.raises(ValueError, match="mallopt refused"):
        bench.set_heap("reuse")

    class NoMallopt:
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NoMallopt())
    with pytest.raises(ValueError, match="needs glibc's mallopt"):
        bench.set_heap("reuse")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_bench_heap_reuse_end_to_end(tmp_path: Path) -> None:
    """The real thing, in a fresh interpreter (mallopt changes the process): the run's header
    records the heap state."""
    cmd = [sys.executable, "-m", "lossforge", "bench", "--heap", "reuse", "--workloads"]
    cmd += ["smooth-l1", "--scale", "0.01", "--min-run-time", "0.01", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    header = json.loads((tmp_path / "bench.json").read_text())["header"]
    assert header["heap"].startswith("reuse (glibc mmap threshold 32 MiB")
    assert "heap reuse (glibc" in (tmp_path / "bench.md").read_text().splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--lr", "inf"), "--lr: expected a finite number > 0, got 'inf'"),
        (("--weight-decay", "1e400"), "--weight-decay: expected a finite number >= 0"),
        (("--model", "linear", "--hidden", "64"), "a linear head has no hidden layer"),
        (("--imbalance-ratios", "10,10"), "distinct finite numbers >= 1, got \\[10.0, 10.0\\]"),
    ],
)
def test_compare_refuses_what_it_would_fail_on_or_ignore(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Refused before any training: an infinite learning rate or weight decay trained and then
    failed in the report's formatting; --hidden with a linear head was ignored silently; a
    repeated ratio ran the task twice under one key of results.json."""
    import lossforge.cli.compare as compare

    monkeypatch.setattr(compare, "train_stacked", _no_training)
    code, _, err = run(capsys, "compare", "--no-plot", "--quiet", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err


def _no_training(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the run trained before refusing its options")


def test_output_folders_are_proven_writable_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """An existing folder that takes no files (read-only: simulated, the tests may run as root)
    failed only when the results were written, after the training (compare) or the timing
    (bench); plot gave a raw errno message."""
    import tempfile

    import lossforge.cli.compare as compare
    from lossforge.cli._paths import writable_dir

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(compare, "train_stacked", _no_training)
    with pytest.raises(OSError, match="cannot write to output folder .*Permission denied"):
        writable_dir(tmp_path)
    compare_dir, bench_dir, plot_dir = (tmp_path / name for name in ("c", "b", "p"))
    for folder in (compare_dir, bench_dir, plot_dir):
        folder.mkdir()
    for out, argv in (
        (compare_dir, ("compare", "--task", "multi-label", "--seeds", "1", "--steps", "5",
                       "--no-plot", "--quiet", "--out", str(compare_dir))),
        (bench_dir, ("bench", "--workloads", "bce-multilabel", "--min-run-time", "0.01",
                     "--out", str(bench_dir))),
        (plot_dir, ("plot", "sigmoid_focal", "--out", str(plot_dir / "p.png"))),
    ):  # fmt: skip
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert f"cannot write to output folder '{out}': Permission denied" in err, err


def test_a_zero_width_interval_is_flagged() -> None:
    """Identical per-seed differences (a 60-row CSV, 2 seeds) printed -5.6 [-5.6, -5.6] worse
    without a word: the report now says that the width 0 comes from a coarse metric."""
    from lossforge.cli.compare import _interval, _zero_width_notes

    board = [
        {"label": "ce", "baseline": True},
        {"label": "focal", "difference": {"balanced_accuracy": _interval([0.4, 0.5], [0.5, 0.6])}},
        {"label": "ls", "difference": {"balanced_accuracy": _interval([0.4, 0.5], [0.5, 0.5])}},
        {"label": "one", "difference": {"balanced_accuracy": _interval([0.4], [0.5])}},
    ]
    (note,) = _zero_width_notes(board, ["balanced_accuracy"])
    assert note.startswith("focal: every seed gave the same bal. acc difference")
