"""Data for ``lossforge compare``: the built-in digits tasks, user files and their splits.

Built-in tasks are derived from scikit-learn's bundled handwritten digits (``load_digits``: 1,797
8 x 8 images, 10 classes, shipped inside the wheel, no download):

* **Long-tailed single-label** (the CIFAR-LT protocol of Cui et al. 2019 and Cao et al. 2019):
  per seed, each class's images are shuffled, the first ``n_test`` go to a balanced test split and
  the next $n_c$ to the training split, with the exponential profile

  $$ n_c = \\max\\left(1, \\left\\lfloor n_{max} \\, \\rho^{-c/(C-1)} \\right\\rfloor\\right) $$

  for imbalance ratio $\\rho$ and class $c = 0 \\dots C-1$ (digit 0 is the head, digit 9 the tail).
* **Multi-label mosaics**: the images are first split per class into disjoint training and test
  pools; each canvas is a ``grid x grid`` mosaic holding 1 to 3 digits from one pool in distinct
  cells; label ``digit * grid**2 + cell`` (90 labels for a 3 x 3 grid, about 2 % positive).

User files (``.npz`` with arrays ``X``, ``y``; ``.csv`` with a header row) are checked before any
training: every problem ends in a ``DataError`` naming the file, the line and the column, and every
choice made for the user (the label column when none is named, rows dropped) is returned as a note
that the report prints.

Only numpy is needed here, except for ``load_digits`` (scikit-learn, imported when called).
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossforge.cli.experiment import MULTI_LABEL, SINGLE_LABEL, DataSpec

__all__ = [
    "DataError",
    "Task",
    "UserData",
    "digits_tasks",
    "load_digits_arrays",
    "load_user_data",
    "long_tailed_counts",
    "make_long_tailed",
    "make_mosaics",
    "split_user_data",
    "user_task",
]


class DataError(ValueError):
    """A data file that cannot be read or does not hold usable ``X`` / ``y``."""


@dataclass
class Task:
    """One train/test problem.

    Attributes:
        key: Short identifier (``"lt-ir100"``, ``"multilabel"``, or the file's stem).
        title: One-line description for the report.
        family: ``"long-tail"``, ``"mosaics"`` or ``"user"`` (selects the default budget).
        kind: ``"single_label"`` (``y`` = class indices) or ``"multi_label"`` (multi-hot rows).
        x_train, y_train, x_test, y_test: float32 features; int64 indices or float32 multi-hot.
        class_names: One name per class / label.
        info: Extra facts for the results file (counts, positive rate, pool sizes).
        short_title: What the task is, in a few words (chart titles).
    """

    key: str
    title: str
    family: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    short_title: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes (single-label) or labels (multi-label)."""
        return len(self.class_names)

    def train_counts(self) -> np.ndarray:
        """Training examples per class (single-label) or positives per label (multi-label)."""
        return _counts(self.y_train, self.kind, self.num_classes)

    def test_counts(self) -> np.ndarray:
        """Test examples per class (single-label) or positives per label (multi-label)."""
        return _counts(self.y_test, self.kind, self.num_classes)


def _counts(y: np.ndarray, kind: str, num: int) -> np.ndarray:
    if kind == SINGLE_LABEL:
        return np.bincount(y, minlength=num).astype(np.float64)
    return y.sum(axis=0).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Built-in digits tasks
# ----------------------------------------------------------------------------------------------


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as ``(images (1797, 8, 8) in [0, 1], labels (1797,))``.

    Raises:
        lossforge.OptionalDependencyError: scikit-learn is not installed.
    """
    from lossforge.cli._deps import require

    require("sklearn", "the built-in digits data")
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def long_tailed_counts(n_max: int, imbalance_ratio: float, num_classes: int) -> list[int]:
    """Training images per class of the exponential profile, head first.

    $$ n_c = \\max\\left(1, \\left\\lfloor n_{max} \\, \\rho^{-c/(C-1)} \\right\\rfloor\\right) $$

    (``imbalance_cifar.py`` of LDAM-DRW with ``imb_factor`` $= 1/\\rho$, floored at one image.)
    """
    if num_classes == 1:
        return [n_max]
    return [
        max(1, int(n_max * imbalance_ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)
    ]


def make_long_tailed(
    images: np.ndarray,
    labels: np.ndarray,
    imbalance_ratio: float,
    seed: int,
    *,
    n_max: int = 120,
    n_test: int = 50,
) -> Task:
    """The long-tailed task for one ratio and seed: exponential training profile, balanced test.

    Raises:
        DataError: a class has fewer than ``n_test + n_max`` images.
    """
    num_classes = int(labels.max()) + 1
    counts = long_tailed_counts(n_max, imbalance_ratio, num_classes)
    rng = np.random.default_rng(seed)
    features = images.reshape(len(images), -1)
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < n_test + counts[c]:
            raise DataError(
                f"class {c} has {len(idx)} images, fewer than lt_test_per_class + lt_max_per_class "
                f"= {n_test + counts[c]}"
            )
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test : n_test + counts[c]])
    tr, te = np.concatenate(train_idx), np.concatenate(test_idx)
    return Task(
        key=f"lt-ir{imbalance_ratio:g}",
        title=(
            f"long-tailed digits, imbalance ratio {imbalance_ratio:g}: {len(tr)} training images "
            f"({counts[0]} of digit 0 ... {counts[-1]} of digit {num_classes - 1}), balanced "
            f"test {len(te)}"
        ),
        family="long-tail",
        kind=SINGLE_LABEL,
        x_train=features[tr],
        y_train=labels[tr],
        x_test=features[te],
        y_test=labels[te],
        class_names=[str(c) for c in range(num_classes)],
        info={"imbalance_ratio": imbalance_ratio, "train_counts": counts, "test_per_class": n_test},
        short_title=f"long-tailed digits, imbalance ratio {imbalance_ratio:g}",
    )


def split_pools(
    labels: np.ndarray, rng: np.random.Generator, test_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training / test image pools, split per class."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _compose(
    images: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    n: int,
    rng: np.random.Generator,
    grid: int,
    low: int,
    high: int,
    num_digits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cells = grid * grid
    h, w = images.shape[1:]
    k = rng.integers(low, high + 1, size=n)
    rank = np.argsort(rng.random((n, cells)), axis=1).argsort(
        axis=1
    )  # a random permutation per canvas
    used = rank < k[:, None]  # (n, cells): cell holds a digit
    pick = pool[rng.integers(0, len(pool), size=(n, cells))]  # image index per (canvas, cell)
    canvas = np.zeros((n, grid * h, grid * w), dtype=np.float32)
    y = np.zeros((n, num_digits * cells), dtype=np.float32)
    rows = np.arange(n)
    for cell in range(cells):
        r, col = divmod(cell, grid)
        on = used[:, cell]
        canvas[on, r * h : (r + 1) * h, col * w : (col + 1) * w] = images[pick[on, cell]]
        y[rows[on], labels[pick[on, cell]] * cells + cell] = 1.0
    return canvas.reshape(n, -1), y, np.unique(pick[used])


def make_mosaics(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    *,
    grid: int = 3,
    digits: tuple[int, ...] = (1, 3),
    n_train: int = 2000,
    n_test: int = 1000,
) -> Task:
    """The multi-label mosaic task for one seed (pools split before composing).

    ``info`` records the image indices used by each side (``train_images``, ``test_images``),
    which are disjoint, and the positive rate.
    """
    rng = np.random.default_rng(seed)
    num_digits = int(labels.max()) + 1
    cells = grid * grid
    train_pool, test_pool = split_pools(labels, rng)
    low, high = digits
    x_tr, y_tr, used_tr = _compose(
        images, labels, train_pool, n_train, rng, grid, low, high, num_digits
    )
    x_te, y_te, used_te = _compose(
        images, labels, test_pool, n_test, rng, grid, low, high, num_digits
    )
    rate = float(y_tr.mean())
    return Task(
        key="multilabel",
        title=(
            f"multi-label digit mosaics: {grid}x{grid} cells, label = digit@cell "
            f"({num_digits * cells} labels, {100 * rate:.1f} % positive), {n_train} training / "
            f"{n_test} test canvases"
        ),
        family="mosaics",
        kind=MULTI_LABEL,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        class_names=[f"{d}@{c}" for d in range(num_digits) for c in range(cells)],
        info={
            "grid": grid,
            "digits_per_canvas": [low, high],
            "positive_rate_train": rate,
            "positive_rate_test": float(y_te.mean()),
            "train_images": used_tr.tolist(),
            "test_images": used_te.tolist(),
        },
        short_title=f"multi-label digit mosaics, {num_digits * cells} labels (digit@cell)",
    )


def digits_tasks(spec: DataSpec, seed: int, images: np.ndarray, labels: np.ndarray) -> list[Task]:
    """The built-in tasks selected by ``spec.source`` for one seed."""
    tasks: list[Task] = []
    if spec.source in ("digits", "digits-lt"):
        for ir in spec.imbalance_ratios:
            tasks.append(
                make_long_tailed(
                    images,
                    labels,
                    ir,
                    seed,
                    n_max=spec.lt_max_per_class,
                    n_test=spec.lt_test_per_class,
                )
            )
    if spec.source in ("digits", "digits-multilabel"):
        tasks.append(
            make_mosaics(
                images,
                labels,
                seed,
                grid=spec.mosaic_grid,
                digits=spec.mosaic_digits,
                n_train=spec.mosaic_train,
                n_test=spec.mosaic_test,
            )
        )
    return tasks


# ----------------------------------------------------------------------------------------------
# User data
# ----------------------------------------------------------------------------------------------


@dataclass
class UserData:
    """A user's data file after checking.

    Attributes:
        x: ``(N, F)`` float32 features.
        y: ``(N,)`` int64 class indices or ``(N, C)`` float32 multi-hot rows.
        kind: ``"single_label"`` or ``"multi_label"``.
        class_names: One name per class (the label values) or label (the columns / ``names``).
        label_source: Where the labels came from (``"column 'species'"``, ``"array y"``).
        notes: Choices made for the user (label column guessed, rows dropped), for the report.
    """

    x: np.ndarray
    y: np.ndarray
    kind: str
    class_names: list[str]
    label_source: str
    notes: list[str] = field(default_factory=list)


_LABEL_NAMES = ("label", "y", "target", "class")


def _rows(where: np.ndarray, lines: np.ndarray | None, limit: int = 5) -> str:
    """``line 3, 7 and 9`` (CSV) or ``rows 2, 6 and 8 of y`` (npz), at most ``limit`` shown."""
    picked = (lines[where] if lines is not None else where)[:limit].tolist()
    more = len(where) - len(picked)
    text = ", ".join(str(v) for v in picked) + (f" and {more} more" if more > 0 else "")
    if lines is not None:
        return ("line " if len(where) == 1 else "lines ") + text
    return ("row " if len(where) == 1 else "rows ") + text + " of y"


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as err:
        raise OSError(f"cannot read data file {str(path)!r}: {err.strerror or err}") from None
    # what the file is, from its first bytes, before NumPy's messages about pickles or zips
    if not head:
        raise DataError(f"data file {str(path)!r} is empty")
    if head == b"\x93NUMPY":
        raise DataError(
            f"data file {str(path)!r} is a single .npy array, not an .npz archive; save X and y "
            "together with np.savez(path, X=..., y=...)"
        )
    if not head.startswith(b"PK"):
        raise DataError(
            f"data file {str(path)!r} is not an .npz archive (a zip file; it starts with "
            f"{head!r}); a text table goes in a .csv file, arrays in np.savez(path, X=..., y=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            missing = [k for k in ("X", "y") if k not in names]
            if missing:
                raise DataError(
                    f"data file {str(path)!r} has no array {', '.join(map(repr, missing))} "
                    f"(found: {', '.join(names) or 'nothing'}); save it with np.savez(path, "
                    "X=..., y=...)"
                )
            label_names = np.asarray(archive["names"]) if "names" in names else None
            return np.asarray(archive["X"]), np.asarray(archive["y"]), label_names
    except DataError:
        raise
    except OSError as err:
        raise OSError(f"cannot read data file {str(path)!r}: {err.strerror or err}") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read data file {str(path)!r} as .npz: {err}") from None


def _read_csv(
    path: Path, label_columns: tuple[str, ...], drop_columns: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, list[str]]:
    """``(features (N, F) float64, labels (N,) str or (N, C) str, label column names, line
    numbers, notes)``."""
    name = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as err:
        raise OSError(f"cannot read data file {name!r}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read data file {name!r} as UTF-8 text: {err}") from None
    except csv.Error as err:
        raise DataError(f"data file {name!r}: not a readable CSV file: {err}") from None
    numbered = [(i, r) for i, r in enumerate(rows, start=1) if any(cell.strip() for cell in r)]
    if not numbered:
        raise DataError(f"data file {name!r} is empty: expected a header row and data rows")
    header = [h.strip() for h in numbered[0][1]]
    data = numbered[1:]
    for sep, word in ((";", "semicolon"), ("\t", "tab")):
        if len(header) == 1 and sep in header[0]:
            raise DataError(
                f"data file {name!r} looks {word}-separated (header {header[0][:60]!r}); "
                "lossforge reads comma-separated files: convert it, e.g. "
                f"pandas.read_csv(path, sep={sep!r}).to_csv('data.csv', index=False) "
                "(add decimal=',' if it writes decimals with a comma)"
            )
    if not data:
        raise DataError(f"data file {name!r} has a header row but no data rows")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DataError(
            f"data file {name!r}: duplicate column names {', '.join(map(repr, duplicated))}"
        )
    unknown = [c for c in (*label_columns, *drop_columns) if c not in header]
    if unknown:
        raise DataError(
            f"data file {name!r}: no column {', '.join(map(repr, unknown))} (columns: "
            f"{', '.join(header)})"
        )
    both = sorted(set(label_columns) & set(drop_columns))
    if both:
        raise DataError(f"column {both[0]!r} is both a label column and a dropped column")
    notes: list[str] = []
    if label_columns:
        chosen = list(label_columns)
    else:
        kept = [h for h in header if h not in drop_columns]
        named = [n for n in _LABEL_NAMES if n in kept]
        if named:
            chosen = [named[0]]
            notes.append(f"label column {named[0]!r} (choose another with --label-column)")
        else:
            chosen = [kept[-1]] if kept else []
            notes.append(
                f"label column {chosen[0]!r}: the last column, since none is named "
                f"{', '.join(map(repr, _LABEL_NAMES))} (choose another with --label-column)"
            )
    if drop_columns:
        notes.append(f"columns left out: {', '.join(map(repr, drop_columns))}")
    label_idx = [header.index(c) for c in chosen]
    feat_idx = [i for i, h in enumerate(header) if h not in chosen and h not in drop_columns]
    if not feat_idx:
        raise DataError(f"data file {name!r}: no feature columns besides the label column(s)")
    feats = np.empty((len(data), len(feat_idx)), dtype=np.float64)
    labels = np.empty((len(data), len(label_idx)), dtype=object)
    lines = np.array([line for line, _ in data], dtype=np.int64)
    for k, (line, row) in enumerate(data):
        if len(row) != len(header):
            raise DataError(
                f"data file {name!r}, line {line}: {len(row)} fields, the header has {len(header)}"
            )
        for j, i in enumerate(feat_idx):
            cell = row[i].strip()
            try:
                feats[k, j] = float(cell)
            except ValueError:
                what = "an empty cell" if not cell else f"{cell[:40]!r}"
                raise DataError(
                    f"data file {name!r}, line {line}, column {header[i]!r}: {what} is not a "
                    f"number; every column but the label is a feature (leave a column out with "
                    f"--drop-columns {header[i]}, or make it the label with --label-column "
                    f"{header[i]})"
                ) from None
        labels[k] = [row[i].strip() for i in label_idx]
    return feats, labels if len(label_idx) > 1 else labels[:, 0], chosen, lines, notes


def load_user_data(
    path: str | Path,
    label_columns: tuple[str, ...] = (),
    drop_columns: tuple[str, ...] = (),
    ignore_label: str = "auto",
) -> UserData:
    """Read and check ``X`` and ``y`` from a ``.npz`` or ``.csv`` file.

    ``y`` of shape ``(N,)`` holds class labels (integers or names; the sorted distinct values are
    the classes) and selects the single-label losses; ``y`` of shape ``(N, C)`` with 0/1 entries is
    multi-hot and selects the multi-label losses. ``X`` of shape ``(N, ...)`` is flattened to
    ``(N, F)``. An ``.npz`` may hold ``names``: one name per label (multi-hot) or per integer class
    value ``0 ... K-1``. A ``.csv`` has a header row; the label column is ``label_columns`` or the
    first of ``label``, ``y``, ``target``, ``class``, else the last column (said in the notes);
    ``drop_columns`` are left out; every other column must be numeric.

    Args:
        path: The file.
        label_columns: ``.csv``: the label column(s); several make multi-hot labels.
        drop_columns: ``.csv``: columns to leave out (ids, free text).
        ignore_label: Single-label data: ``"auto"`` refuses labels that look like an "ignore"
            marker (empty cells; a negative integer beside the classes 0, 1, ...); ``"none"``
            keeps every value as a class; any other value drops the rows with that label
            (``""``: empty cells).

    Raises:
        OSError: the file cannot be opened.
        DataError: unsupported type, missing arrays, bad shapes or values.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise DataError(
            f"data file {name!r}: unsupported type {suffix or '(none)'!r}; use .npz (arrays "
            "X, y) or .csv, or a built-in source ('digits', 'digits-lt', 'digits-multilabel')"
        )
    if not path.is_file():
        raise OSError(f"cannot read data file {name!r}: no such file")
    if suffix == ".npz":
        if label_columns or drop_columns:
            raise DataError("--label-column and --drop-columns are options of .csv data")
        x, y, names = _read_npz(path)
        notes: list[str] = []
        lines = None
        source = "array y"
        label_cols: list[str] = []
    else:
        x, y, label_cols, lines, notes = _read_csv(path, label_columns, drop_columns)
        names = np.asarray(label_cols) if y.ndim == 2 else None
        source = ", ".join(f"column {c!r}" for c in label_cols)
    x = _check_x(name, x, lines)
    if len(y) != len(x):
        raise DataError(f"data {name!r}: X has {len(x)} rows but y has {len(y)}")
    if y.ndim == 2 and y.shape[1] == 1 and not label_cols:
        y = y[:, 0]
    if y.ndim == 1:
        keep, idx, class_names, more = _single_label(name, y, ignore_label, lines, names)
        x, y = x[keep], idx
        kind = SINGLE_LABEL
    elif y.ndim == 2:
        if ignore_label not in ("auto", "none"):
            raise DataError(
                f"data {name!r}: --ignore-label applies to single-label data (one label value per "
                "row); multi-hot labels hold 0/1 entries"
            )
        y, class_names = _multi_hot(name, y, label_cols, lines, names)
        more = []
        kind = MULTI_LABEL
    else:
        raise DataError(f"data {name!r}: expected y of shape (N,) or (N, C), got shape {y.shape}")
    if len(x) < 4:
        raise DataError(f"data {name!r}: expected at least 4 labelled examples, got {len(x)}")
    if len(x) < SMALL_DATA:
        more = [
            *more,
            f"only {len(x)} labelled examples: each test split is a handful of them, so the "
            "per-seed metrics move in large steps and the intervals are wide",
        ]
    return UserData(x, y, kind, class_names, source, notes + more)


def _check_x(name: str, x: np.ndarray, lines: np.ndarray | None = None) -> np.ndarray:
    if x.ndim < 2:
        raise DataError(f"data {name!r}: expected X of shape (N, features), got shape {x.shape}")
    if len(x) == 0:
        raise DataError(f"data {name!r}: X holds no examples (shape {x.shape})")
    if x.size == 0:
        raise DataError(f"data {name!r}: X has no features (shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"data {name!r}: expected numeric X, got dtype {x.dtype}")
    x = x.reshape(len(x), -1).astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        # a CSV file's line, as its other errors give it; an array's 0-based row
        where = f"line {int(lines[row])}" if lines is not None else f"row {row}"
        raise DataError(
            f"data {name!r}: X holds NaN or infinite values ({int(bad.sum())}; the first in "
            f"{where}, feature {col})"
        )
    return x


def _as_numbers(values: np.ndarray) -> np.ndarray | None:
    """Label values as float64 when every non-empty one is a number, else ``None``."""
    if np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
        return values.astype(np.float64)
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        text = str(v).strip()
        if not text:
            continue
        try:
            out[i] = float(text)
        except ValueError:
            return None
    return out


def _single_label(
    name: str,
    y: np.ndarray,
    ignore: str,
    lines: np.ndarray | None,
    names: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``(rows kept, class index per kept row, class names, notes)``."""
    notes: list[str] = []
    numbers = _as_numbers(y)
    if numbers is not None:
        missing = np.isnan(numbers) if y.dtype.kind in "OUS" else np.zeros(len(y), dtype=bool)
        bad = ~missing & (~np.isfinite(numbers) | (numbers != np.round(numbers)))
        if bad.any():
            where = np.flatnonzero(bad)
            raise DataError(
                f"data {name!r}: y must hold class labels (integers or names), got "
                f"{_fmt_value(numbers[where[0]])} ({_rows(where, lines)})"
            )
        text = np.array(["" if m else str(int(v)) for v, m in zip(numbers, missing, strict=True)])
    else:
        text = np.array([str(v).strip() for v in y])
        missing = text == ""
    keep = np.ones(len(y), dtype=bool)
    if missing.any():
        where = np.flatnonzero(missing)
        if ignore != "":
            raise DataError(
                f"data {name!r}: {len(where)} row{'s' if len(where) > 1 else ''} without a label "
                f"({_rows(where, lines)}); fill them in, or drop them with --ignore-label ''"
            )
        keep &= ~missing
        notes.append(f"dropped {len(where)} rows without a label (--ignore-label '')")
    if ignore not in ("auto", "none", ""):
        marker = ignore
        if numbers is not None:
            try:
                value = float(ignore)
            except ValueError:
                value = math.nan
            if value == round(value):
                marker = str(int(value))
        hit = text == marker
        keep &= ~hit
        notes.append(
            f"dropped {int(hit.sum())} rows labelled {marker!r} (--ignore-label)"
            if hit.any()
            else f"no row is labelled {marker!r} (--ignore-label): nothing dropped"
        )
    if ignore == "auto" and numbers is not None:
        values = numbers[keep]
        negative = sorted({int(v) for v in values if v < 0})
        if negative and (values == 0).any():
            where = np.flatnonzero(keep & (numbers == negative[0]))
            raise DataError(
                f"data {name!r}: the label {negative[0]} ({_rows(where, lines)}) sits beside the "
                f"classes 0, 1, ...; {negative[0]} is a common 'ignore' marker: drop those rows "
                f"with --ignore-label {negative[0]}, or keep it as a class with --ignore-label none"
            )
    kept = text[keep]
    if numbers is not None:
        values = np.unique(numbers[keep]).astype(np.int64)
        index = np.searchsorted(values, numbers[keep].astype(np.int64))
        class_names = [str(v) for v in values]
        if names is not None:
            class_names = _named_values(name, values, names)
    else:
        if names is not None:
            raise DataError(f"data {name!r}: 'names' names integer classes; y holds names already")
        labels, index = np.unique(kept, return_inverse=True)
        class_names = [str(v) for v in labels]
    if len(class_names) == 0:
        raise DataError(f"data {name!r}: no labelled rows left")
    if len(class_names) < 2:
        raise DataError(
            f"data {name!r}: y holds a single class ({class_names[0]!r}); need at least 2"
        )
    return keep, np.asarray(index, dtype=np.int64), class_names, notes


def _fmt_value(v: float) -> str:
    return f"{v:g}"


def _named_values(name: str, values: np.ndarray, names: np.ndarray) -> list[str]:
    if names.ndim != 1 or values.min() < 0 or values.max() >= len(names):
        raise DataError(
            f"data {name!r}: 'names' must be a 1-D array naming the class values 0 ... K-1 "
            f"(got shape {names.shape} for class values {values.min()} ... {values.max()})"
        )
    return [str(names[v]) for v in values]


def _multi_hot(
    name: str,
    y: np.ndarray,
    label_cols: list[str],
    lines: np.ndarray | None,
    names: np.ndarray | None,
) -> tuple[np.ndarray, list[str]]:
    numbers = _as_numbers(y.reshape(-1))
    if numbers is None:
        raise DataError(f"data {name!r}: multi-hot labels must be 0/1 numbers, got text")
    values = numbers.reshape(y.shape)
    bad = ~((values == 0) | (values == 1))
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        where = f"line {lines[row]}" if lines is not None else f"row {row} of y"
        what = f"label column {label_cols[col]!r}" if label_cols else f"label {col}"
        cell = y[row, col]
        shown = "an empty cell" if str(cell).strip() == "" else repr(str(cell))
        raise DataError(
            f"data {name!r}: multi-hot labels must be 0 or 1; {what} holds {shown} ({where})"
        )
    if names is not None:
        if names.ndim != 1 or len(names) != y.shape[1]:
            raise DataError(
                f"data {name!r}: 'names' must hold one name per label ({y.shape[1]}), got shape "
                f"{names.shape}"
            )
        class_names = [str(n) for n in names]
    else:
        class_names = [str(c) for c in range(y.shape[1])]
    return values.astype(np.float32), class_names


def split_user_data(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    *,
    test_size: float,
    seed: int,
    standardize: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/test split, stratified by class for single-label data.

    A class with a single example stays in the training split (it cannot be stratified). Features
    are standardised with the training statistics when ``standardize`` is set.

    Returns:
        ``(x_train, y_train, x_test, y_test)``.

    Raises:
        DataError: the test split would be empty.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    if kind == SINGLE_LABEL:
        test = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            k = int(round(len(idx) * test_size)) if len(idx) > 1 else 0
            k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
            test.append(idx[:k])
        test_idx = np.concatenate(test)
    else:
        k = min(max(1, int(round(n * test_size))), n - 1)
        test_idx = rng.permutation(n)[:k]
    if len(test_idx) == 0:
        raise DataError("the test split is empty: every class has a single example")
    mask = np.zeros(n, dtype=bool)
    mask[test_idx] = True
    x_tr, x_te = x[~mask], x[mask]
    if standardize:
        mean = x_tr.mean(axis=0)
        std = x_tr.std(axis=0)
        std[std < 1e-8] = 1.0
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return x_tr.astype(np.float32), y[~mask], x_te.astype(np.float32), y[mask]


#: Below this many labelled examples the report says the results rest on very few of them.
SMALL_DATA = 50


def user_task(name: str, data: UserData, spec: DataSpec, seed: int) -> Task:
    """A ``Task`` from checked user data for one seed (the split depends on the seed)."""
    x_tr, y_tr, x_te, y_te = split_user_data(
        data.x, data.y, data.kind, test_size=spec.test_size, seed=seed, standardize=spec.standardize
    )
    stem = Path(name).name
    what = "classes" if data.kind == SINGLE_LABEL else "labels"
    kind = "single-label" if data.kind == SINGLE_LABEL else "multi-label"
    info: dict[str, Any] = {
        "source": name,
        "features": int(data.x.shape[1]),
        "labels_from": data.label_source,
    }
    if data.kind == MULTI_LABEL:
        info["positive_rate_train"] = float(y_tr.mean())
    return Task(
        key=Path(name).stem or "data",
        title=(
            f"{stem}: {kind}, {len(data.class_names)} {what} ({data.label_source}), "
            f"{data.x.shape[1]} features, {len(x_tr)} train / {len(x_te)} test"
        ),
        family="user",
        kind=data.kind,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        class_names=data.class_names,
        info=info,
        short_title=f"{stem}: {kind}, {len(data.class_names)} {what}",
    )
