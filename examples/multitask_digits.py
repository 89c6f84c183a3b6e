"""Two-head model on scikit-learn's digits: equal weighting vs uncertainty weighting vs DTP.

Task 1 classifies the digit (10-way, cross-entropy; metric: test accuracy). Task 2 regresses the
amount of ink, the number of pixels at least half on (13..30 here), standardised with the training
mean and standard deviation (metrics: test R^2 and mean absolute error in pixels). The ink count is
a thresholded statistic, so it is only partly predictable from a small shared trunk: the two tasks
compete for it.

* ``equal``: ``EqualWeighting``, the plain sum.
* ``uncertainty``: ``UncertaintyWeighting`` with a regression and a classification task; its
  log-variances are trained with the model.
* ``dtp``: ``DynamicTaskPrioritization`` with the batch KPIs (accuracy, R^2 clipped to [0, 1]) and,
  as in the paper, an example-level focal loss for the classification task.

Offline (the digits ship with scikit-learn). Run: ``python examples/multitask_digits.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import lossforge.functional as LF
from lossforge.multitask import (
    DynamicTaskPrioritization,
    EqualWeighting,
    UncertaintyWeighting,
    Weighting,
)

METHODS = ("equal", "uncertainty", "dtp")


def _focal_loss() -> Callable[[Tensor, Tensor], Tensor]:
    """lossforge's softmax focal loss (gamma=2), the example-level focusing DTP is paired with."""
    return lambda logits, y: LF.softmax_focal_loss(logits, y, gamma=2.0)


def load_data(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Digits as float32 in [0, 1], class labels, ink counts; a fixed 75/25 train/test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    ink = (x >= 0.5).sum(dim=1).to(torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.75 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], ink[tr], x[te], y[te], ink[te]


def standardise(ink: Tensor, ref: Tensor) -> Tensor:
    return (ink - ref.mean()) / ref.std()


class TwoHead(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.digit = nn.Linear(hidden, 10)
        self.ink = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.digit(h), self.ink(h).squeeze(-1)


def r2_score(pred: Tensor, target: Tensor) -> Tensor:
    return 1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum()


def train(
    method: str, *, epochs: int, batch_size: int = 64, lr: float = 1e-2, seed: int = 0
) -> dict[str, float]:
    """Train one model with one weighting; return the test metrics."""
    x_tr, y_tr, ink_tr_raw, x_te, y_te, ink_te = load_data(seed)
    ink_tr = standardise(ink_tr_raw, ink_tr_raw)
    torch.manual_seed(seed)
    model = TwoHead()
    weighting: Weighting
    if method == "equal":
        weighting = EqualWeighting(2)
    elif method == "uncertainty":
        weighting = UncertaintyWeighting(2, task_types=["classification", "regression"])
    elif method == "dtp":
        weighting = DynamicTaskPrioritization(2, gamma=1.0, momentum=0.1)
    else:
        raise ValueError(f"train: expected `method` one of {METHODS}, got {method!r}")
    focal = _focal_loss()
    opt = torch.optim.Adam(list(model.parameters()) + list(weighting.parameters()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x_tr), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits, ink_pred = model(x_tr[idx])
            if method == "dtp":
                digit_loss = focal(logits, y_tr[idx])
            else:
                digit_loss = nn.functional.cross_entropy(logits, y_tr[idx])
            ink_loss = nn.functional.mse_loss(ink_pred, ink_tr[idx])
            total = weighting([digit_loss, ink_loss])
            opt.zero_grad()
            total.backward()
            opt.step()
            if isinstance(weighting, DynamicTaskPrioritization):
                with torch.no_grad():  # batch KPIs: accuracy and R^2 clipped to [0, 1]
                    acc = (logits.argmax(1) == y_tr[idx]).float().mean()
                    r2 = r2_score(ink_pred, ink_tr[idx]).clamp(0.0, 1.0)
                weighting.update(torch.stack([acc, r2]))
    with torch.no_grad():
        logits, ink_z = model(x_te)
        ink_pred = ink_z * ink_tr_raw.std() + ink_tr_raw.mean()  # back to pixels
        result = {
            "digit_acc": float((logits.argmax(1) == y_te).float().mean()),
            "ink_r2": float(r2_score(ink_pred, ink_te)),
            "ink_mae": float((ink_pred - ink_te).abs().mean()),
        }
        w = weighting.weights().detach()
        result["w_digit"], result["w_ink"] = float(w[0]), float(w[1])
    return result


def main(
    epochs: int = 30, methods: tuple[str, ...] = METHODS, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Train every method and print one line of test metrics each."""
    results = {}
    print(f"digits: 1347 train / 450 test, {epochs} epochs, seed {seed}")
    header = ("method", "digit acc", "ink R2", "ink MAE", "w_digit", "w_ink", "time")
    print("{:<12} {:>9} {:>7} {:>8} {:>8} {:>8} {:>6}".format(*header))
    for method in methods:
        start = time.perf_counter()
        r = train(method, epochs=epochs, seed=seed)
        elapsed = time.perf_counter() - start
        results[method] = r
        print(
            f"{method:<12} {r['digit_acc']:>9.4f} {r['ink_r2']:>7.4f} {r['ink_mae']:>8.3f} "
            f"{r['w_digit']:>8.4f} {r['w_ink']:>8.4f} {elapsed:>5.1f}s"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # The script owns its process. One thread is fastest for a model this small, and on a busy
    # machine extra intra-op threads only spin against other processes.
    torch.set_num_threads(1)
    main(epochs=args.epochs, seed=args.seed)
