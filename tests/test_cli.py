"""Tests of the ``lossforge`` command (through ``lossforge.cli.main``) and its data protocols."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from lossforge.cli import main  # noqa: E402
from lossforge.cli.data import (  # noqa: E402
    average_precision,
    load_digits_arrays,
    long_tailed_counts,
    make_long_tailed,
    make_mosaics,
    multi_label_metrics,
    single_label_metrics,
    split_user_data,
    tail_classes,
)
from lossforge.cli.experiment import (  # noqa: E402
    DEFAULT_MULTI_LABEL_LOSSES,
    DEFAULT_SINGLE_LABEL_LOSSES,
    ConfigError,
    load_experiment,
    parse_experiment,
    parse_loss_option,
)
from lossforge.registry import list_losses  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits_arrays()


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


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------


def test_compare_default_path_reduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    code, stdout, err = run(capsys, "compare", "--smoke", "--quiet", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "results.json").read_text())
    keys = [t["key"] for t in report["tasks"]]
    assert keys == ["lt-ir10", "lt-ir50", "lt-ir100", "multilabel"]
    for task in report["tasks"]:
        expected = (
            DEFAULT_SINGLE_LABEL_LOSSES
            if task["kind"] == "single_label"
            else DEFAULT_MULTI_LABEL_LOSSES
        )
        assert {r["label"] for r in task["leaderboard"]} == {s.label for s in expected}
        for row in task["leaderboard"]:
            for metric in task["metrics"]:
                assert 0.0 <= row["metrics"][metric]["mean"] <= 1.0
    ml = report["tasks"][-1]
    assert len(ml["leaderboard"][0]["per_class"]) == 90
    assert_png(out / "compare.png")
    assert "lt-ir100" in stdout
    assert "multilabel" in stdout
    assert str(out / "results.json") in stdout


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, X=x, y=y)
    return path


def test_compare_npz_single_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs()
    data = _save_npz(tmp_path / "feats.npz", x, y)
    args = (
        "compare",
        "--data",
        str(data),
        "--model",
        "linear",
        "--epochs",
        "3",
        "--seeds",
        "2",
        "--quiet",
    )
    code, stdout, err = run(capsys, *args, "--out", str(tmp_path / "a"), "--no-plot")
    assert code == 0, err
    report = json.loads((tmp_path / "a" / "results.json").read_text())
    (task,) = report["tasks"]
    assert task["kind"] == "single_label"
    assert {r["label"] for r in task["leaderboard"]} == {
        s.label for s in DEFAULT_SINGLE_LABEL_LOSSES
    }
    assert len(task["leaderboard"][0]["metrics"]["accuracy"]["values"]) == 2
    # deterministic: the same command gives the same numbers
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "b"), "--no-plot")
    assert code == 0, err
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["tasks"][0]["leaderboard"] == task["leaderboard"]


def test_compare_npz_multi_hot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(160, 8)).astype(np.float32)
    y = (x[:, :4] + 0.5 * rng.normal(size=(160, 4)) > 1.0).astype(np.int64)  # multi-hot rows
    data = _save_npz(tmp_path / "ml.npz", x, y)
    code, _, err = run(
        capsys,
        "compare",
        "--data",
        str(data),
        "--loss",
        "binary_cross_entropy_with_logits",
        "--loss",
        "sigmoid_focal:gamma=2,alpha=none",
        "--loss",
        "asymmetric:gamma_neg=4",
        "--epochs",
        "3",
        "--seeds",
        "1",
        "--model",
        "mlp",
        "--hidden",
        "16",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    (task,) = report["tasks"]
    assert task["kind"] == "multi_label"
    assert len(task["leaderboard"]) == 3
    assert all(0.0 < r["metrics"]["mAP"]["mean"] <= 1.0 for r in task["leaderboard"])
    assert_png(tmp_path / "o" / "compare.png")


def test_compare_csv_with_label_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs(n=90)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    lines = ["species,f1,f2,f3,f4,f5,f6"] + [
        ",".join([n, *(f"{v:.4f}" for v in row)]) for n, row in zip(names, x, strict=True)
    ]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run(
        capsys, "compare", "--data", str(path), "--label-column", "species", "--epochs", "2",
        "--seeds", "1", "--loss", "cross_entropy",
        "--loss", "balanced_softmax:class_counts=from_train",
        "--quiet", "--no-plot",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err
    task = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"][0]
    assert task["class_names"] == ["setosa", "versicolor", "virginica"]
    assert task["info"]["features"] == 6


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
epochs = 2
batch_size = 32

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
    code, _, err = run(
        capsys,
        "compare",
        "--config",
        str(config),
        "--quiet",
        "--no-plot",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    assert report["experiment"]["name"] == "unit"
    assert report["experiment"]["seeds"] == [0, 1]
    labels = [r["label"] for r in report["tasks"][0]["leaderboard"]]
    assert sorted(labels) == sorted(["cross_entropy", "CB-CE", "logit_adjusted (tau=1.5)"])


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
    (tmp / "badkey.toml").write_text("[train]\nepochs = 2\nepoch = 3\n")
    (tmp / "badtable.toml").write_text("[trainer]\nepochs = 2\n")
    (tmp / "badtype.toml").write_text('[train]\nepochs = "many"\n')
    (tmp / "badsyntax.toml").write_text("[train\nepochs = 2\n")
    (tmp / "badloss.toml").write_text('[[loss]]\ntype = "cross_entropy"\nlabel_smoothing = 2.0\n')
    (tmp / "data.txt").write_text("1,2,3\n")
    return {p.name: p for p in tmp.iterdir()}


ERROR_CASES = [
    (("compare", "--loss", "no_such_loss"), "no_such_loss"),
    (("compare", "--loss", "softmax_focal:gamma=-1", "--smoke"), "gamma"),
    (("compare", "--loss", "cross_entropy:gama=2", "--smoke"), "gama"),
    (("compare", "--data", "{tmp}/missing.npz"), "cannot read data file"),
    (("compare", "--data", "{tmp}/garbage.npz"), "cannot read data file"),
    (("compare", "--data", "{tmp}/noy.npz"), "no array 'y'"),
    (("compare", "--data", "{tmp}/data.txt"), "unsupported type"),
    (("compare", "--config", "{tmp}/missing.toml"), "cannot read experiment file"),
    (("compare", "--config", "{tmp}/badkey.toml"), "unknown key 'epoch'"),
    (("compare", "--config", "{tmp}/badtable.toml"), "unknown table or key 'trainer'"),
    (("compare", "--config", "{tmp}/badtype.toml"), "expected an integer"),
    (("compare", "--config", "{tmp}/badsyntax.toml"), "invalid TOML"),
    (("compare", "--config", "{tmp}/badloss.toml", "--smoke"), "label_smoothing"),
    (("compare", "--epochs", "0"), "positive integer"),
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
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("lossforge")
    assert not (tmp_path / "o" / "results.json").exists()


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
    from lossforge.cli.plot import NOT_ELEMENTWISE, PLOT_FAMILIES, curves

    for info in list_losses():
        if info.name in NOT_ELEMENTWISE or info.name not in PLOT_FAMILIES:
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
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == names
    assert rows[names.index("sigmoid_focal")]["params"]["gamma"] == 2.0


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
    code, out, _ = run(capsys, "bench", "--list")
    assert code == 0
    assert "focal-dense" in out


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
# data protocols and metrics
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ir", [10, 50, 100])
def test_long_tailed_counts_follow_the_exponential_profile(
    digits: tuple[np.ndarray, np.ndarray], ir: int
) -> None:
    counts = long_tailed_counts(120, ir, 10)
    assert counts == [max(1, int(120 * ir ** (-c / 9))) for c in range(10)]
    assert counts[0] == 120
    assert counts[-1] == max(1, int(120 / ir))
    images, labels = digits
    task = make_long_tailed(images, labels, ir, seed=0)
    assert np.bincount(task.y_train, minlength=10).tolist() == counts
    assert np.bincount(task.y_test, minlength=10).tolist() == [50] * 10  # balanced test split
    train_rows = {row.tobytes() for row in task.x_train}
    overlap = sum(row.tobytes() in train_rows for row in task.x_test)
    assert overlap <= 2  # disjoint images (digits holds a handful of pixel-identical duplicates)
    assert tail_classes(task.train_counts()) == [7, 8, 9]


def test_long_tailed_is_seeded(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    a, b, c = (make_long_tailed(images, labels, 50, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_mosaics_protocol(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    task = make_mosaics(images, labels, seed=0, n_train=1500, n_test=800)
    assert task.num_classes == 90
    assert task.x_train.shape == (1500, 576)
    rate = task.y_train.mean()
    assert 0.018 < rate < 0.026  # 2 digits on average over 90 labels = 2.2 %
    per_row = task.y_train.sum(axis=1)
    assert per_row.min() >= 1
    assert per_row.max() <= 3
    cells = task.y_train.reshape(-1, 10, 9).sum(axis=1)  # (n, cell): at most one digit per cell
    assert cells.max() == 1
    assert not set(task.info["train_images"]) & set(task.info["test_images"])  # disjoint pools
    # label digit * 9 + cell matches the pixels: every labelled cell is non-empty, the others blank
    canvas = task.x_train.reshape(-1, 3, 8, 3, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 9, 64)
    filled = canvas.sum(axis=2) > 0
    np.testing.assert_array_equal(filled, cells.astype(bool))
    digit = task.y_train.reshape(-1, 10, 9).argmax(axis=1)
    n, cell = np.nonzero(cells)
    matches = [
        np.any(np.all(images.reshape(-1, 64)[labels == digit[i, k]] == canvas[i, k], axis=1))
        for i, k in zip(n[:200], cell[:200], strict=True)
    ]
    assert all(matches)


def test_average_precision_matches_sklearn() -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 200))
        y = (rng.random(n) < rng.uniform(0.02, 0.5)).astype(int)
        if y.sum() == 0:
            y[0] = 1
        s = rng.normal(size=n) if trial % 2 else rng.integers(0, 4, n).astype(float)  # odd: ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    y = (rng.random((300, 12)) < 0.1).astype(int)
    y[:, 3] = 0  # a label without positives is left out of the mean
    s = rng.normal(size=(300, 12)) + 2 * y
    got = multi_label_metrics(y, s)
    keep = y.sum(axis=0) > 0
    assert got["mAP"] == pytest.approx(
        average_precision_score(y[:, keep], s[:, keep], average="macro"), abs=1e-12
    )
    assert got["per_class"][3] is None
    assert got["labels_evaluated"] == 11


def test_single_label_metrics_match_sklearn() -> None:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, 6, 400))
    m = single_label_metrics(y, pred, np.array([100, 80, 60, 40, 20, 10.0]))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    tail = [4, 5]
    assert m["tail_accuracy"] == pytest.approx(np.mean([(pred[y == c] == c).mean() for c in tail]))


def test_user_split_is_stratified_and_seeded() -> None:
    x, y = blobs(n=200, classes=4)
    y[0] = 4  # a singleton class stays in the training split
    x_tr, y_tr, x_te, y_te = split_user_data(x, y, "single_label", test_size=0.25, seed=0)
    assert 4 in y_tr
    assert 4 not in y_te
    for c in range(4):
        assert abs((y_te == c).sum() - 0.25 * (y == c).sum()) <= 1
    assert abs(float(x_tr.mean())) < 1e-5  # standardised with training statistics
    again = split_user_data(x, y, "single_label", test_size=0.25, seed=0)
    np.testing.assert_array_equal(again[3], y_te)


def test_experiment_spec_is_strict() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] kind"):
        parse_experiment({"model": {"kind": "resnet"}})
    with pytest.raises(ConfigError, match="unknown key 'lr_rate'"):
        parse_experiment({"train": {"lr_rate": 0.1}})
    with pytest.raises(ConfigError, match="seeds"):
        parse_experiment({"experiment": {"seeds": []}})
    with pytest.raises(ConfigError, match="single-label or a multi-label"):
        parse_experiment({"loss": [{"type": "mse"}]})
    with pytest.raises(ConfigError, match="'type' key"):
        parse_experiment({"loss": [{"gamma": 2}]})
    exp = parse_experiment(
        {"experiment": {"seeds": 4}, "loss": [{"type": "sigmoid_focal", "gamma": 1}]}
    )
    assert exp.seeds == (0, 1, 2, 3)
    assert exp.losses[0].kind == "multi_label"
    assert exp.losses[0].label == "sigmoid_focal (gamma=1)"
    with pytest.raises(AttributeError):
        exp.seeds = (1,)  # type: ignore[misc]
    spec = parse_loss_option(
        'cross_entropy:class_weight={from_train="effective_number",beta=0.99},label_smoothing=0.1'
    )
    assert spec.params == {
        "class_weight": {"from_train": "effective_number", "beta": 0.99},
        "label_smoothing": 0.1,
    }
