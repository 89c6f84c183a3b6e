"""Metrics of ``lossforge compare``, and which of them fit a task.

Single-label tasks: balanced accuracy (the mean per-class recall over the classes present in the
test split; the ranking metric), accuracy (shown only when the test split is not balanced, since
on a balanced split it equals balanced accuracy) and tail-third accuracy (the mean recall over the
rarest third of the classes by training count; shown only when there are at least three classes
and that third is clearly rarer than the rest). Multi-label tasks: macro mean average precision
over the labels that have a test positive.

Only numpy is needed here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "average_precision",
    "metric_plan",
    "multi_label_metrics",
    "single_label_metrics",
    "tail_classes",
    "training_fit",
]

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"

#: Display name of every metric (terminal table, results file, chart).
METRIC_NAMES: dict[str, str] = {
    "balanced_accuracy": "bal. acc",
    "accuracy": "accuracy",
    "tail_accuracy": "tail-third acc",
    "mAP": "mAP",
}

#: A tail third is "clearly rarer" when its mean training count is at most this fraction of the
#: mean count of the other classes.
TAIL_RATIO = 0.5

#: Below this many test examples in the tail third, its accuracy gets a note saying so.
FEW_TEST_EXAMPLES = 10


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
    on the rarest third of the classes (mean recall over those with a test example), and per-class
    recall (``None`` for a class without a test example)."""
    num = len(train_counts)
    recall: list[float | None] = []
    for c in range(num):
        m = y_true == c
        recall.append(float((pred[m] == c).mean()) if m.any() else None)
    present = [r for r in recall if r is not None]
    tail = [r for c in tail_classes(train_counts) if (r := recall[c]) is not None]
    return {
        "accuracy": float((pred == y_true).mean()),
        "balanced_accuracy": float(np.mean(present)),
        "tail_accuracy": float(np.mean(tail)) if tail else float("nan"),
        "per_class": recall,
    }


def training_fit(kind: str, y_train: np.ndarray, scores: np.ndarray) -> float:
    """How well a head fits its own training split: balanced accuracy over the training classes
    (single-label; one missed example of a one-image tail class costs 1/C) or mAP over the labels
    with a training positive (multi-label)."""
    if kind == SINGLE_LABEL:
        pred = scores.argmax(axis=1)
        recalls = [float((pred[y_train == c] == c).mean()) for c in np.unique(y_train)]
        return float(np.mean(recalls))
    return float(multi_label_metrics(y_train, scores)["mAP"])


def metric_plan(
    kind: str,
    train_counts: np.ndarray,
    test_counts: np.ndarray,
    class_names: list[str],
) -> tuple[list[str], list[str]]:
    """The metrics that fit a task (the first ranks it), and a note for each one left out.

    Args:
        kind: ``"single_label"`` or ``"multi_label"``.
        train_counts: Training examples per class (positives per label).
        test_counts: Test examples per class (positives per label).
        class_names: For the notes.

    Returns:
        ``(metrics, notes)``.
    """
    notes: list[str] = []
    if kind == MULTI_LABEL:
        missing = [class_names[j] for j in np.flatnonzero(test_counts == 0)]
        if missing:
            notes.append(
                f"mAP over the {len(class_names) - len(missing)} of {len(class_names)} labels "
                f"with a test positive (none for {_names(missing)})"
            )
        return ["mAP"], notes
    metrics = ["balanced_accuracy"]
    absent = [class_names[c] for c in np.flatnonzero(test_counts == 0)]
    if absent:
        notes.append(
            f"balanced accuracy over the {len(class_names) - len(absent)} classes with a test "
            f"example; not evaluated (no test example: too few examples to hold one out): "
            f"{_names(absent)}"
        )
    present = test_counts[test_counts > 0]
    if present.min() != present.max():
        metrics.append("accuracy")
    else:
        notes.append(
            "accuracy not shown: the test split is balanced, so it equals balanced accuracy"
        )
    num = len(train_counts)
    if num < 3:
        notes.append(f"tail-third accuracy not shown: {num} classes")
        return metrics, notes
    tail = tail_classes(train_counts)
    rest = [c for c in range(num) if c not in tail]
    tail_mean = float(np.mean(train_counts[tail]))
    rest_mean = float(np.mean(train_counts[rest]))
    if tail_mean > TAIL_RATIO * rest_mean:
        notes.append(
            "tail-third accuracy not shown: the rarest third of the classes is not clearly rarer "
            f"than the rest ({tail_mean:.3g} vs {rest_mean:.3g} training examples per class)"
        )
    elif not any(test_counts[c] > 0 for c in tail):
        notes.append(
            "tail-third accuracy not shown: no class of the rarest third has a test example"
        )
    else:
        metrics.append("tail_accuracy")
        held_out = int(sum(test_counts[c] for c in tail))
        if held_out < FEW_TEST_EXAMPLES:
            notes.append(
                f"tail-third accuracy (classes {_names([class_names[c] for c in tail])}) rests on "
                f"{held_out} test example{'s' if held_out != 1 else ''} per seed"
            )
    return metrics, notes


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
