"""A PyTorch Lightning module trained with a lossforge loss built from a config dict.

Long-tailed digits (scikit-learn's bundled 8x8 digits, class c keeps ``n_max * ratio**(-c/9)``
training images), a small MLP, and a loss chosen by a ``build_loss`` spec (class-balanced focal
loss by default, with class weights from the training counts). Points worth copying:

* the loss is a submodule (``self.loss_fn``): its class-weight buffer follows ``.to(device)`` and
  the checkpoint;
* the loss runs inside ``lossforge.distributed.global_normalization()``, so with ``strategy="ddp"``
  the mean is taken over the whole global batch (Lightning's ``sync_dist=True`` only synchronises
  what is *logged*); on one device the scope changes nothing;
* the spec is a plain dict, so it round-trips through ``save_hyperparameters`` and LightningCLI.

Run::

    python examples/lightning_module.py --epochs 20
    python examples/lightning_module.py --loss '{"type": "cross_entropy"}'
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lossforge
from lossforge.distributed import global_normalization
from lossforge.registry import build_loss

try:
    import lightning.pytorch as pl
except ImportError:  # the example (and its test) need `pip install lightning`
    pl = None

DEFAULT_LOSS: dict[str, Any] = {"type": "softmax_focal", "gamma": 2.0}


def long_tailed_digits(
    ratio: float = 10.0, seed: int = 0
) -> tuple[TensorDataset, TensorDataset, Tensor]:
    """Long-tailed train and balanced test (50 per class) splits of sklearn's digits; counts."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[:50])
        n = max(1, int(120 * ratio ** (-c / 9)))
        train_idx.append(idx[50 : 50 + n])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    counts = torch.bincount(y[tr], minlength=10).to(torch.float32)
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]), counts


if pl is not None:

    class LongTailClassifier(pl.LightningModule):
        """MLP on 8x8 digits with a configurable lossforge loss.

        Args:
            loss: A ``build_loss`` spec; ``class_weight="effective_number"`` is replaced by
                ``lossforge.class_weights(counts, method="effective_number")``.
            class_counts: Training counts per class (for the class weights).
            lr: SGD learning rate.
            hidden: Hidden width.
        """

        def __init__(
            self,
            loss: dict[str, Any] | None = None,
            class_counts: list[float] | None = None,
            lr: float = 0.5,
            hidden: int = 64,
        ) -> None:
            super().__init__()
            self.save_hyperparameters()
            spec = dict(loss or DEFAULT_LOSS)
            if spec.get("class_weight") == "effective_number" and class_counts is not None:
                weights = lossforge.class_weights(class_counts, method="effective_number")
                spec["class_weight"] = weights.tolist()
            self.loss_fn = build_loss(spec)
            self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
            self.lr = lr

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

        def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
            x, y = batch
            with global_normalization():  # global mean under DDP; a no-op on one device
                loss = self.loss_fn(self(x), y)
            self.log("train_loss", loss, sync_dist=True, prog_bar=True, batch_size=len(y))
            return loss

        def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
            x, y = batch
            pred = self(x).argmax(dim=1)
            recall = torch.stack([(pred[y == c] == c).float().mean() for c in range(10)])
            self.log("val_balanced_acc", recall.mean(), sync_dist=True, batch_size=len(y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main(
    loss: dict[str, Any] | None = None, epochs: int = 20, max_steps: int = -1, seed: int = 0
) -> dict[str, float]:
    """Train on long-tailed digits and return the last logged metrics."""
    if pl is None:
        raise lossforge.OptionalDependencyError(
            "examples/lightning_module.py: expected `lightning` installed "
            "(pip install lightning), got ImportError"
        )
    pl.seed_everything(seed, verbose=False)
    train, test, counts = long_tailed_digits(seed=seed)
    model = LongTailClassifier(loss=loss, class_counts=counts.tolist())
    trainer = pl.Trainer(
        max_epochs=epochs,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(1, epochs),
    )
    trainer.fit(
        model,
        DataLoader(train, batch_size=64, shuffle=True),
        DataLoader(test, batch_size=500),
    )
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", type=json.loads, default=None, help="a build_loss spec as JSON")
    parser.add_argument("--epochs", type=int, default=20)
    a = parser.parse_args()
    print(main(a.loss, a.epochs))
