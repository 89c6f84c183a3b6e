"""Data for ``lossforge compare``: the built-in digits tasks, user files, splits and metrics.

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

Only numpy is needed here, except for ``load_digits`` (scikit-learn, imported when called).
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossforge.cli.experiment import MULTI_LABEL, SINGLE_LABEL, DataSpec

__all__ = [
    "DataError",
    "Task",
    "average_precision",
    "digits_tasks",
    "load_digits_arrays",
    "load_user_data",
    "long_tailed_counts",
    "make_long_tailed",
    "make_mosaics",
    "multi_label_metrics",
    "single_label_metrics",
    "split_user_data",
    "user_task",
]


class DataError(ValueError):
    """A data file that cannot be read or does not hold usable ``X`` / ``y``."""


@dataclass
class Task:
    """One train/test problem.

    Attributes:
        key: Short identifier (``"lt-ir100"``, ``"multilabel"``, ``"user"``).
        title: One-line description for the report.
        kind: ``"single_label"`` (``y`` = class indices) or ``"multi_label"`` (multi-hot rows).
        x_train, y_train, x_test, y_test: float32 features; int64 indices or float32 multi-hot.
        class_names: One name per class / label.
        info: Extra facts for the results file (counts, positive rate, pool sizes).
    """

    key: str
    title: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes (single-label) or labels (multi-label)."""
        return len(self.class_names)

    def train_counts(self) -> np.ndarray:
        """Training examples per class (single-label) or positives per label (multi-label)."""
        if self.kind == SINGLE_LABEL:
            return np.bincount(self.y_train, minlength=self.num_classes).astype(np.float64)
        return self.y_train.sum(axis=0).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Built-in digits tasks
# ----------------------------------------------------------------------------------------------


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as ``(images (1797, 8, 8) in [0, 1], labels (1797,))``.

    Raises:
        lossforge.OptionalDependencyError: scikit-learn is not installed.
    """
    from lossforge.cli import require

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
            f"long-tailed digits, imbalance ratio {imbalance_ratio:g} ({len(tr)} train / "
            f"{len(te)} balanced test)"
        ),
        kind=SINGLE_LABEL,
        x_train=features[tr],
        y_train=labels[tr],
        x_test=features[te],
        y_test=labels[te],
        class_names=[str(c) for c in range(num_classes)],
        info={"imbalance_ratio": imbalance_ratio, "train_counts": counts, "test_per_class": n_test},
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
            f"multi-label digit mosaics {grid}x{grid}, {num_digits * cells} labels "
            f"({n_train} train / {n_test} test canvases, {100 * rate:.1f}% positive)"
        ),
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


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
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
            return np.asarray(archive["X"]), np.asarray(archive["y"])
    except DataError:
        raise
    except OSError as err:
        raise OSError(f"cannot read data file {str(path)!r}: {err.strerror or err}") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read data file {str(path)!r} as .npz: {err}") from None


def _read_csv(path: Path, label_columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as err:
        raise OSError(f"cannot read data file {str(path)!r}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read data file {str(path)!r} as text: {err}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise DataError(f"data file {str(path)!r}: expected a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_columns:
        missing = [c for c in label_columns if c not in header]
        if missing:
            raise DataError(
                f"data file {str(path)!r}: no column {', '.join(map(repr, missing))} (columns: "
                f"{', '.join(header)})"
            )
        chosen = list(label_columns)
    else:
        chosen = next(([n] for n in ("label", "y", "target", "class") if n in header), [header[-1]])
    label_idx = [header.index(c) for c in chosen]
    feat_idx = [i for i in range(len(header)) if i not in label_idx]
    if not feat_idx:
        raise DataError(f"data file {str(path)!r}: no feature columns besides the label column(s)")
    feats = np.empty((len(rows) - 1, len(feat_idx)), dtype=np.float64)
    labels: list[list[str]] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"data file {str(path)!r}, line {line}: {len(row)} fields, header has {len(header)}"
            )
        try:
            feats[line - 2] = [float(row[i]) for i in feat_idx]
        except ValueError:
            raise DataError(
                f"data file {str(path)!r}, line {line}: a feature value is not a number"
            ) from None
        labels.append([row[i].strip() for i in label_idx])
    if len(chosen) == 1:
        raw = [lab[0] for lab in labels]
        try:
            y = np.array([float(v) for v in raw])
        except ValueError:
            y = np.array(raw)  # class names
    else:
        try:
            y = np.array([[float(v) for v in lab] for lab in labels])
        except ValueError:
            raise DataError(
                f"data file {str(path)!r}: multi-label columns must hold 0/1 values"
            ) from None
    return feats, y


def load_user_data(
    path: str | Path, label_columns: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """Read ``X`` and ``y`` from a ``.npz`` or ``.csv`` file.

    ``y`` of shape ``(N,)`` holds class labels (any values; sorted unique values become class
    indices) and selects the single-label losses; ``y`` of shape ``(N, C)`` with 0/1 entries is
    multi-hot and selects the multi-label losses. ``X`` of shape ``(N, ...)`` is flattened to
    ``(N, F)``.

    Returns:
        ``(X float32 (N, F), y, kind, class_names)`` with ``y`` int64 indices or float32 multi-hot.

    Raises:
        OSError: the file cannot be opened.
        DataError: unsupported type, missing arrays, bad shapes or values.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise DataError(
            f"data file {str(path)!r}: unsupported type {suffix or '(none)'!r}; use .npz (arrays "
            "X, y) or .csv"
        )
    if not path.is_file():
        raise OSError(f"cannot read data file {str(path)!r}: no such file")
    x, y = _read_npz(path) if suffix == ".npz" else _read_csv(path, label_columns)
    return _check_xy(str(path), x, y)


def _check_xy(
    name: str, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    if x.ndim < 2:
        raise DataError(f"data {name!r}: expected X of shape (N, features), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise DataError(f"data {name!r}: expected numeric X, got dtype {x.dtype}")
    x = x.reshape(len(x), -1).astype(np.float32)
    if len(y) != len(x):
        raise DataError(f"data {name!r}: X has {len(x)} rows but y has {len(y)}")
    if len(x) < 4:
        raise DataError(f"data {name!r}: expected at least 4 examples, got {len(x)}")
    if not np.isfinite(x).all():
        raise DataError(f"data {name!r}: X holds NaN or infinite values")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        if np.issubdtype(y.dtype, np.floating):
            if not np.isfinite(y).all() or not np.all(y == np.round(y)):
                raise DataError(
                    f"data {name!r}: y of shape (N,) must hold class labels (integers or names), "
                    "got non-integer values"
                )
            y = y.astype(np.int64)
        values, idx = np.unique(y, return_inverse=True)
        if len(values) < 2:
            raise DataError(
                f"data {name!r}: y holds a single class ({values[0]!r}); need at least 2"
            )
        return x, idx.astype(np.int64), SINGLE_LABEL, [str(v) for v in values]
    if y.ndim == 2:
        if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
            raise DataError(f"data {name!r}: multi-hot y must be numeric, got dtype {y.dtype}")
        yf = y.astype(np.float32)
        if not np.all((yf == 0) | (yf == 1)):
            raise DataError(f"data {name!r}: y of shape (N, C) must be multi-hot (0/1 entries)")
        return x, yf, MULTI_LABEL, [str(c) for c in range(y.shape[1])]
    raise DataError(f"data {name!r}: expected y of shape (N,) or (N, C), got shape {y.shape}")


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


def user_task(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    class_names: list[str],
    spec: DataSpec,
    seed: int,
) -> Task:
    """A ``Task`` from user arrays for one seed (the split depends on the seed)."""
    x_tr, y_tr, x_te, y_te = split_user_data(
        x, y, kind, test_size=spec.test_size, seed=seed, standardize=spec.standardize
    )
    what = "classes" if kind == SINGLE_LABEL else "labels"
    info: dict[str, Any] = {"source": name, "features": int(x.shape[1])}
    if kind == MULTI_LABEL:
        info["positive_rate_train"] = float(y_tr.mean())
    return Task(
        key="user",
        title=(
            f"{Path(name).name}: {len(x_tr)} train / {len(x_te)} test, {x.shape[1]} features, "
            f"{len(class_names)} {what}"
        ),
        kind=kind,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        class_names=class_names,
        info=info,
    )


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one label (the step-wise sum of scikit-learn, ties grouped).

    $$ \\mathrm{AP} = \\sum_k (R_k - R_{k-1}) P_k $$

    over the distinct score thresholds in decreasing order. ``nan`` when there is no positive.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    total = y.sum()
    if total <= 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    precision = tps / (tps + fps)
    recall = tps / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multi_label_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Macro mAP over the labels with a test positive, and per-label AP (``None`` if none)."""
    aps = [average_precision(y_true[:, j], scores[:, j]) for j in range(y_true.shape[1])]
    valid = [a for a in aps if not np.isnan(a)]
    return {
        "mAP": float(np.mean(valid)) if valid else float("nan"),
        "labels_evaluated": len(valid),
        "per_class": [None if np.isnan(a) else a for a in aps],
    }


def tail_classes(train_counts: np.ndarray) -> list[int]:
    """The rarest third of the classes by training count (ties: the higher index is rarer)."""
    num = len(train_counts)
    order = sorted(range(num), key=lambda c: (train_counts[c], -c))
    return sorted(order[: max(1, round(num / 3))])


def single_label_metrics(
    y_true: np.ndarray, pred: np.ndarray, train_counts: np.ndarray
) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean per-class recall over classes in the test split), accuracy
    on the rarest third of the classes (mean recall), and per-class recall (``None`` if absent)."""
    num = len(train_counts)
    recall: list[float | None] = []
    for c in range(num):
        m = y_true == c
        recall.append(float((pred[m] == c).mean()) if m.any() else None)
    present = [r for r in recall if r is not None]
    tail = [recall[c] for c in tail_classes(train_counts) if recall[c] is not None]
    return {
        "accuracy": float((pred == y_true).mean()),
        "balanced_accuracy": float(np.mean(present)),
        "tail_accuracy": float(np.mean(tail)) if tail else float("nan"),
        "per_class": recall,
    }
