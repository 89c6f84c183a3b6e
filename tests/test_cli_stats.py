"""Statistics and metrics of ``lossforge compare``: paired intervals, verdicts, the doubled-budget
comparison, and the metrics with the rules for showing them. Expected values come from scipy,
scikit-learn or synthetic cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
scipy_stats = pytest.importorskip("scipy.stats")

from lossforge.cli.metrics import (  # noqa: E402
    average_precision,
    metric_plan,
    multi_label_metrics,
    single_label_metrics,
    tail_classes,
    training_fit,
)
from lossforge.cli.stats import (  # noqa: E402
    budget_changes,
    paired_interval,
    t_critical,
    verdict,
)

# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------


def test_t_critical_matches_scipy() -> None:
    for df in range(1, 301):
        assert t_critical(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-4), df
    with pytest.raises(ValueError, match="df >= 1"):
        t_critical(0)


def test_paired_interval_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8, 40):
        a = rng.normal(0.8, 0.05, n)
        b = a - rng.normal(0.02, 0.01, n)
        iv = paired_interval(a.tolist(), b.tolist())
        d = a - b
        low, high = scipy_stats.t.interval(
            0.95, n - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(n)
        )
        assert iv.mean == pytest.approx(d.mean(), abs=1e-15)
        assert iv.low == pytest.approx(low, rel=1e-4)
        assert iv.high == pytest.approx(high, rel=1e-4)
        assert iv.n == n


def test_paired_interval_hand_computed() -> None:
    # differences 1..5: mean 3, sd sqrt(2.5), half-width 2.7764 * sqrt(2.5) / sqrt(5) = 1.96321
    iv = paired_interval([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert iv.mean == 3.0
    assert iv.low == pytest.approx(3 - 1.96321, abs=1e-4)
    assert iv.high == pytest.approx(3 + 1.96321, abs=1e-4)
    one = paired_interval([0.5], [0.25])
    assert (one.mean, one.low, one.high) == (0.25, None, None)
    assert verdict(one) == "one seed"
    with pytest.raises(ValueError, match="equally long"):
        paired_interval([1.0, 2.0], [1.0])


def test_verdicts() -> None:
    assert verdict(paired_interval([0.9, 0.91, 0.92], [0.8, 0.8, 0.81])) == "better"
    assert verdict(paired_interval([0.7, 0.71, 0.7], [0.8, 0.8, 0.81])) == "worse"
    assert verdict(paired_interval([0.81, 0.79, 0.8], [0.8, 0.8, 0.8])) == "within noise"
    # identical losses: a zero-width interval at 0 is a tie, not a difference
    assert verdict(paired_interval([0.8, 0.7], [0.8, 0.7])) == "within noise"


def test_interval_coverage_on_synthetic_seeds() -> None:
    """95 % intervals from 5 paired normal draws cover the true difference ~95 % of the time,
    and 'within noise' is declared for a true difference of 0 about 95 % of the time."""
    rng = np.random.default_rng(1)
    trials, true = 4000, 0.02
    base = rng.normal(0.8, 0.03, (trials, 5))  # seed-to-seed variation shared by both losses
    other = base + true + rng.normal(0, 0.01, (trials, 5))
    covered = 0
    ties = 0
    for a, b in zip(other, base, strict=True):
        iv = paired_interval(a.tolist(), b.tolist())
        covered += iv.low <= true <= iv.high
        null = paired_interval((b + rng.normal(0, 0.01, 5)).tolist(), b.tolist())
        ties += verdict(null) == "within noise"
    assert 0.935 <= covered / trials <= 0.965
    assert 0.935 <= ties / trials <= 0.965


def test_budget_changes() -> None:
    labels = ["CE", "A", "B"]
    base = [0.80, 0.81, 0.79, 0.80, 0.82]
    a_up = [v + 0.05 for v in base]
    a_tie = [v + d for v, d in zip(base, [0.01, -0.01, 0.0, 0.005, -0.005], strict=True)]
    a_down = [v - 0.04 for v in base]
    b_up = [v + 0.03 for v in base]
    assert budget_changes(labels, [base, a_up, b_up], [base, a_up, b_up]) == ([], [])
    reorders, verdicts = budget_changes(labels, [base, a_up, b_up], [base, a_tie, b_up])
    assert reorders == ["A ahead of B -> behind"]  # A > B was significant, now B > A by the mean
    assert verdicts == ["A: better -> within noise"]
    reorders, verdicts = budget_changes(labels, [base, a_up, b_up], [base, a_down, b_up])
    assert "A ahead of CE -> behind" in reorders
    assert verdicts == []  # a swap with the baseline is reported once, as a swap


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


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


def test_training_fit_matches_sklearn() -> None:
    from sklearn.metrics import average_precision_score, balanced_accuracy_score

    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(50, int), np.ones(5, int), np.full(1, 2)]  # a one-image class
    scores = rng.normal(size=(56, 3))
    assert training_fit("single_label", y, scores) == pytest.approx(
        balanced_accuracy_score(y, scores.argmax(axis=1))
    )
    scores[np.arange(56), y] += 10  # every training example right: fit 1.0
    assert training_fit("single_label", y, scores) == 1.0
    ym = (rng.random((80, 6)) < 0.2).astype(int)
    ym[0] = 1
    sm = rng.normal(size=(80, 6))
    assert training_fit("multi_label", ym, sm) == pytest.approx(
        average_precision_score(ym, sm, average="macro"), abs=1e-12
    )


def test_metric_plan_shows_only_metrics_that_fit_the_data() -> None:
    names = [str(c) for c in range(10)]
    lt_train = np.array([120, 92, 71, 54, 42, 32, 25, 19, 14, 12.0])
    metrics, notes = metric_plan("single_label", lt_train, np.full(10, 50.0), names)
    assert metrics == ["balanced_accuracy", "tail_accuracy"]  # accuracy = balanced accuracy here
    assert any("balanced" in n and "accuracy not shown" in n for n in notes)
    metrics, notes = metric_plan(
        "single_label", np.array([50, 50.0]), np.array([20, 20.0]), ["a", "b"]
    )
    assert metrics == ["balanced_accuracy"]
    assert any("tail-third accuracy not shown: 2 classes" in n for n in notes)
    even = np.array([40, 38, 41, 39, 40, 42.0])
    metrics, notes = metric_plan(
        "single_label", even, np.array([9, 10, 10, 11, 10, 10.0]), names[:6]
    )
    assert metrics == ["balanced_accuracy", "accuracy"]  # unbalanced test split: both
    assert any("not clearly rarer" in n for n in notes)
    metrics, notes = metric_plan(
        "single_label", np.array([30, 20, 1.0]), np.array([10, 7, 0.0]), ["cat", "dog", "emu"]
    )
    assert any("'emu'" in n and "no test example" in n for n in notes)
    counts = np.array([60, 40, 17, 1, 1.0])
    metrics, notes = metric_plan(
        "single_label", counts, np.array([15, 10, 4, 1, 0.0]), list("abcde")
    )
    assert "tail_accuracy" in metrics
    assert any("classes 'd', 'e') rests on 1 test example per seed" in n for n in notes)
    metrics, notes = metric_plan("multi_label", np.ones(4), np.array([3, 0, 2, 1.0]), list("abcd"))
    assert metrics == ["mAP"]
    assert any("3 of 4 labels" in n and "'b'" in n for n in notes)


def test_tail_classes() -> None:
    assert tail_classes(np.array([120, 92, 71, 54, 42, 32, 25, 19, 14, 12.0])) == [7, 8, 9]
    assert tail_classes(np.array([5, 5, 5.0])) == [2]  # ties: the higher index counts as rarer


def test_one_seed_has_no_standard_deviation() -> None:
    """One value has no sample standard deviation: null in results.json and "n/a" in the
    report (it printed a misleading "± 0.0")."""
    from lossforge.cli.compare import _pct, _summary

    one = _summary([0.9])
    assert one["std"] is None and _pct(one) == " 90.0 ± n/a"
    two = _summary([0.9, 0.8])
    assert _pct(two) == " 85.0 ± 7.1"


def test_t_critical_beyond_the_table_is_within_1e_5() -> None:
    for df in range(31, 301):  # the expansion's documented accuracy, not the table's rounding
        assert t_critical(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-5), df


def test_paired_interval_refuses_no_values() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        paired_interval([], [])


def test_a_difference_significant_at_one_budget_only_changes_places() -> None:
    base = [0.80, 0.81, 0.79, 0.80, 0.82]
    a_up = [v + 0.05 for v in base]  # +0.05 on every seed: significant
    noise = [0.02, -0.05, 0.01, -0.03, 0.0]  # mean -0.01, sd 0.029: within noise
    a_down = [v + d for v, d in zip(base, noise, strict=True)]
    reorders, verdicts = budget_changes(["CE", "A"], [base, a_up], [base, a_down])
    assert reorders == ["A ahead of CE -> behind"]
    assert verdicts == []
