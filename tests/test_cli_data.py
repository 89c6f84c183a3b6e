"""Data and specification of ``lossforge compare``: the built-in digits tasks, the checks on a
user's ``.npz`` / ``.csv`` file, the train/test split and the experiment specification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from lossforge.cli.data import (  # noqa: E402
    DataError,
    load_digits_arrays,
    load_user_data,
    long_tailed_counts,
    make_long_tailed,
    make_mosaics,
    split_user_data,
)
from lossforge.cli.experiment import (  # noqa: E402
    ConfigError,
    LossSpec,
    check_unique_labels,
    parse_experiment,
    parse_loss_option,
)
from lossforge.cli.metrics import tail_classes  # noqa: E402

# ----------------------------------------------------------------------------------------------
# built-in tasks
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits_arrays()


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


# ----------------------------------------------------------------------------------------------
# user data
# ----------------------------------------------------------------------------------------------


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(labels: list[str], header: str = "a,b,label") -> str:
    return "\n".join([header] + [f"{i},{i % 3},{lab}" for i, lab in enumerate(labels)]) + "\n"


def test_csv_empty_label_is_refused_or_dropped(tmp_path: Path) -> None:
    path = _csv(tmp_path, _rows(["x", "y", "", "x", "y", "x", ""]))
    with pytest.raises(
        DataError, match=r"2 rows without a label \(lines 4, 8\).*--ignore-label ''"
    ):
        load_user_data(path)
    data = load_user_data(path, ignore_label="")
    assert data.class_names == ["x", "y"]
    assert len(data.y) == 5
    assert any("dropped 2 rows without a label" in n for n in data.notes)


def test_csv_minus_one_beside_classes_is_an_ignore_marker(tmp_path: Path) -> None:
    path = _csv(tmp_path, _rows(["0", "1", "-1", "0", "1", "0", "2"]))
    with pytest.raises(
        DataError, match=r"label -1 \(line 4\).*--ignore-label -1.*--ignore-label none"
    ):
        load_user_data(path)
    dropped = load_user_data(path, ignore_label="-1")
    assert dropped.class_names == ["0", "1", "2"]
    assert len(dropped.y) == 6
    kept = load_user_data(path, ignore_label="none")
    assert kept.class_names == ["-1", "0", "1", "2"]
    binary = load_user_data(_csv(tmp_path, _rows(["-1", "1", "-1", "1", "1"]), "pm.csv"))
    assert binary.class_names == ["-1", "1"]  # the +-1 convention is two classes


def test_csv_label_column_choice_is_reported(tmp_path: Path) -> None:
    data = load_user_data(_csv(tmp_path, "f1,f2,f3\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n5,6,1\n"))
    assert data.x.shape == (5, 2)
    assert data.label_source == "column 'f3'"
    assert any("label column 'f3': the last column" in n for n in data.notes)
    named = load_user_data(_csv(tmp_path, "target,f1\n0,1\n1,2\n0,3\n1,4\n", "n.csv"))
    assert named.label_source == "column 'target'"


def test_csv_text_column_is_named_and_can_be_dropped(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,name,f1,label\n1,ann,0.5,a\n2,bob,0.7,b\n3,cy,0.1,a\n4,di,0.2,b\n")
    with pytest.raises(
        DataError, match=r"line 2, column 'name': 'ann' is not a number.*--drop-columns name"
    ):
        load_user_data(path)
    data = load_user_data(path, drop_columns=("name",))
    assert data.x.shape == (4, 2)
    assert any("columns left out: 'name'" in n for n in data.notes)
    with pytest.raises(DataError, match="no column 'nope'"):
        load_user_data(path, drop_columns=("nope",))


def test_csv_semicolons_get_a_delimiter_hint(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a;b;label\n1,5;2;x\n2;3;y\n")
    with pytest.raises(DataError, match="semicolon-separated.*sep=';'"):
        load_user_data(path)


def test_multi_hot_csv_uses_the_column_names(tmp_path: Path) -> None:
    text = "f1,f2,cat,dog\n" + "".join(f"{i},{i % 2},{i % 2},{(i + 1) % 2}\n" for i in range(8))
    data = load_user_data(_csv(tmp_path, text), label_columns=("cat", "dog"))
    assert data.kind == "multi_label"
    assert data.class_names == ["cat", "dog"]
    bad = "f1,cat,dog\n1,1,0\n2,0,2\n3,1,1\n4,0,1\n"
    with pytest.raises(DataError, match=r"label column 'dog' holds '2' \(line 3\)"):
        load_user_data(_csv(tmp_path, bad, "bad.csv"), label_columns=("cat", "dog"))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((0, 5)), np.zeros(0), "X holds no examples"),
        (np.zeros((6, 0)), np.zeros(6), "X has no features"),
        (np.zeros((6, 2)), np.zeros(6, dtype=np.int64), r"a single class \('0'\)"),
        (np.zeros((3, 2)), np.array([0, 1, 0]), "at least 4 labelled examples"),
        (np.zeros((6, 2)), np.array([0, 1, 0.5, 1, 0, 1]), "class labels"),
    ],
)
def test_npz_problems_read_as_sentences(
    tmp_path: Path, x: np.ndarray, y: np.ndarray, message: str
) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=x, y=y)
    with pytest.raises(DataError, match=message) as info:
        load_user_data(path)
    assert "np." not in str(info.value)
    assert "reshape" not in str(info.value)


def test_npz_names_name_the_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(
        path, X=np.zeros((6, 2)), y=np.array([0, 2, 0, 2, 2, 0]), names=np.array(["a", "b", "c"])
    )
    assert load_user_data(path).class_names == ["a", "c"]


def test_user_split_is_stratified_and_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y[0] = 4  # a singleton class stays in the training split
    x_tr, y_tr, x_te, y_te = split_user_data(x, y, "single_label", test_size=0.25, seed=0)
    assert 4 in y_tr
    assert 4 not in y_te
    for c in range(4):
        assert abs((y_te == c).sum() - 0.25 * (y == c).sum()) <= 1
    assert abs(float(x_tr.mean())) < 1e-5  # standardised with training statistics
    again = split_user_data(x, y, "single_label", test_size=0.25, seed=0)
    np.testing.assert_array_equal(again[3], y_te)


# ----------------------------------------------------------------------------------------------
# experiment specification
# ----------------------------------------------------------------------------------------------


def test_loss_option_strings_keep_their_commas() -> None:
    spec = parse_loss_option('sigmoid_focal:gamma=1,label="focal, gamma 1",alpha=none')
    assert (spec.label, spec.params) == ("focal, gamma 1", {"gamma": 1, "alpha": None})
    spec = parse_loss_option("sigmoid_focal:label='a,b\\c',gamma=2")  # literal string: no escapes
    assert (spec.label, spec.params) == ("a,b\\c", {"gamma": 2})
    spec = parse_loss_option('sigmoid_focal:label="say \\"x, y\\"",gamma=2')
    assert (spec.label, spec.params) == ('say "x, y"', {"gamma": 2})
    # an apostrophe inside an unquoted value does not open a string
    spec = parse_loss_option("sigmoid_focal:label=Lin's focal,gamma=3")
    assert (spec.label, spec.params) == ("Lin's focal", {"gamma": 3})
    # an unclosed string would swallow every parameter after it: an error, not a silent default
    with pytest.raises(ConfigError, match='a string opened with " is not closed'):
        parse_loss_option('sigmoid_focal:label="focal g1,gamma=1,alpha=none')


def test_labels_are_unique() -> None:
    plain = parse_loss_option("cross_entropy")
    weighted = parse_loss_option("cross_entropy:class_weight=from_train")
    assert plain.label != weighted.label  # every parameter, from_train included, is in the label
    assert weighted.label == "cross_entropy (class_weight=from_train)"
    check_unique_labels([plain, weighted])
    with pytest.raises(ConfigError, match="the same loss is given twice"):
        check_unique_labels([plain, parse_loss_option("cross_entropy")])
    doc = {
        "loss": [
            {"type": "cross_entropy", "label": "mine"},
            {"type": "softmax_focal", "label": "mine"},
        ]
    }
    with pytest.raises(ConfigError, match="two losses are labelled 'mine'.*two different losses"):
        parse_experiment(doc)


def test_experiment_spec_is_strict() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] kind"):
        parse_experiment({"model": {"kind": "resnet"}})
    with pytest.raises(ConfigError, match="unknown key 'lr_rate'"):
        parse_experiment({"train": {"lr_rate": 0.1}})
    with pytest.raises(ConfigError, match="steps"):
        parse_experiment({"train": {"epochs": 30}})
    with pytest.raises(ConfigError, match="seeds"):
        parse_experiment({"experiment": {"seeds": []}})
    with pytest.raises(ConfigError, match="distinct"):
        parse_experiment({"experiment": {"seeds": [1, 1]}})
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
    assert isinstance(spec, LossSpec)


def test_small_data_is_noted(tmp_path: Path) -> None:
    """Fewer than SMALL_DATA labelled examples: a note says the results rest on very few test
    examples (a 4-row file ran with 2 test rows and printed intervals of hundreds of points)."""
    from lossforge.cli.data import SMALL_DATA

    small = load_user_data(_csv(tmp_path, "f1,label\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n", "s.csv"))
    assert any("only 6 labelled examples" in n for n in small.notes)
    rows = "f1,label\n" + "".join(f"{i},{i % 2}\n" for i in range(SMALL_DATA))
    enough = load_user_data(_csv(tmp_path, rows, "e.csv"))
    assert not any("labelled examples" in n for n in enough.notes)


def test_non_finite_feature_is_located_as_the_file_counts(tmp_path: Path) -> None:
    """A NaN feature: the CSV line (as every other CSV error gives it), or the 0-based row of
    an array (it gave a CSV's 0-based data row, two less than its line)."""
    text = "f1,f2,label\n1,2,0\n3,4,1\n5,nan,0\n7,8,1\n9,1,0\n"
    with pytest.raises(DataError, match=r"the first in line 4, feature 1"):
        load_user_data(_csv(tmp_path, text, "nan.csv"))
    path = tmp_path / "nan.npz"
    x = np.zeros((5, 2))
    x[2, 1] = np.inf
    np.savez(path, X=x, y=np.array([0, 1, 0, 1, 0]))
    with pytest.raises(DataError, match=r"the first in row 2, feature 1"):
        load_user_data(path)
