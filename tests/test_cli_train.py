"""The stacked trainer of ``lossforge compare`` against separate ``torch.nn`` heads trained with
``torch.optim.AdamW``, and the protocol's independence from the loss's scale."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from lossforge import drw_class_weights
from lossforge.cli.train import BETAS, EPS, Head, _AdamW, train_stacked
from lossforge.registry import build_loss

# ----------------------------------------------------------------------------------------------
# the stacked trainer
# ----------------------------------------------------------------------------------------------


def _separate_run(
    x: torch.Tensor,
    y: torch.Tensor,
    xt: torch.Tensor,
    spec: dict,
    head: Head,
    seed: int,
    steps: tuple[int, ...],
    switch: tuple[int, tuple[float, ...]] | None = None,
) -> dict[int, torch.Tensor]:
    """The reference: one torch.nn head, torch.optim.AdamW, the same seeded batch order;
    test logits after each of ``steps``; ``switch = (t, w)``: ``loss.class_weight = w`` after
    ``t`` steps."""
    n, features = x.shape
    classes = 5
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(features, head.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(head.hidden, classes),
    )
    opt = torch.optim.AdamW(
        [
            {"params": [model[0].weight, model[2].weight], "weight_decay": head.weight_decay},
            {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
        ],
        lr=head.lr,
        foreach=False,
    )
    gen = torch.Generator().manual_seed(seed)
    loss = build_loss(spec)
    perm, pos = torch.randperm(n, generator=gen), 0
    out = {}
    for step in range(1, max(steps) + 1):
        if switch is not None and step == switch[0] + 1:
            loss.class_weight = torch.tensor(switch[1])
        if pos >= n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + head.batch_size]
        pos += head.batch_size
        value = loss(model(x[idx]), y[idx])
        opt.zero_grad()
        value.backward()
        opt.step()
        if step in steps:
            with torch.no_grad():
                out[step] = model(xt).double()
    return out


def _features_and_labels(
    s: int, n: int, f: int, c: int, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, N, F)`` normal features and ``(S, N)`` labels in ``[0, C)`` from one seeded
    generator (features first, then labels)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(s, n, f, generator=gen)
    return x, torch.randint(0, c, (s, n), generator=gen)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-adamw", "plain-adamw"])
def test_stacked_training_equals_separate_heads(fused: bool) -> None:
    s, n, m, f, c = 3, 50, 20, 12, 5
    gen = torch.Generator().manual_seed(0)
    x, xt = torch.randn(s, n, f, generator=gen), torch.randn(s, m, f, generator=gen)
    y = torch.randint(0, c, (s, n), generator=gen)
    specs = [
        {"type": "cross_entropy"},
        {"type": "softmax_focal", "gamma": 2.0},  # no vmap rule: called seed by seed
        {"type": "balanced_softmax", "class_counts": [10, 8, 6, 4, 2]},
    ]
    head = Head(kind="mlp", hidden=16, lr=1e-2, weight_decay=0.05, batch_size=16, fused=fused)
    seeds = [3, 7, 11]
    losses = [[build_loss(spec)] * s for spec in specs]
    snaps = train_stacked(x, y, xt, c, losses, head, seeds, [30, 7])
    assert [snap.step for snap in snaps] == [7, 30]
    for j, seed in enumerate(seeds):
        for k, spec in enumerate(specs):
            ref = _separate_run(x[j], y[j], xt[j], spec, head, seed, (7, 30))
            for snap in snaps:
                torch.testing.assert_close(
                    snap.test_logits[j, k], ref[snap.step], rtol=1e-5, atol=2e-6
                )


def test_vmap_and_per_seed_loss_calls_agree() -> None:
    s, n, f, c = 4, 40, 6, 3
    x, y = _features_and_labels(s, n, f, c, seed=1)
    spec = {"type": "cross_entropy", "class_weight": [1.0, 2.0, 3.0]}
    losses = [[build_loss(spec) for _ in range(s)]]
    runs = [
        train_stacked(x, y, x, c, losses, Head(kind="linear", batch_size=8, vmap=v), range(s), [25])
        for v in (True, False)
    ]
    torch.testing.assert_close(runs[0][0].test_logits, runs[1][0].test_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "asymmetric"},  # closed form when called plainly, composite under vmap
        {"type": "softmax_focal", "gamma": 2.0},
        {"type": "logit_adjusted", "class_counts": [30, 10, 5, 2]},
        {"type": "seesaw", "num_classes": 4},  # stateful: called seed by seed
    ],
    ids=lambda spec: spec["type"],
)
def test_a_seed_trains_the_same_whatever_seeds_share_its_process(spec: dict) -> None:
    """``--jobs`` and ``--seeds`` decide which seeds are stacked together; each seed's run must
    not depend on it, bit for bit. A lone seed took the plain call and stacked seeds vmap, which
    round differently: 400 steps turned that into a 0.3 mAP difference and a changed verdict."""
    s, n, f, c = 3, 40, 6, 4
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(s, n, f, generator=gen)
    if spec["type"] == "asymmetric":
        y = (torch.rand(s, n, c, generator=gen) < 0.3).float()
    else:
        y = torch.randint(0, c, (s, n), generator=gen)
    head = Head(kind="mlp", hidden=16, batch_size=8)

    def run(rows: list[int]) -> torch.Tensor:
        losses = [[build_loss(spec) for _ in rows]]
        (snap,) = train_stacked(x[rows], y[rows], x[rows], c, losses, head, rows, [40])
        return snap.test_logits

    together = run([0, 1, 2])
    for j in range(s):
        assert torch.equal(run([j])[0], together[j]), j
    assert torch.equal(run([1, 2]), together[1:])


def test_stateful_loss_keeps_one_state_per_seed() -> None:
    """Seesaw counts the classes it has seen: each seed's module counts its own batches only
    (not the other seeds', not the value check before training)."""
    s, n, f, c = 3, 40, 5, 4
    x, y = _features_and_labels(s, n, f, c, seed=3)
    losses = [[build_loss({"type": "seesaw", "num_classes": c}) for _ in range(s)]]
    train_stacked(x, y, x, c, losses, Head(kind="linear", batch_size=8), range(s), [25])
    for j in range(s):  # 25 steps of 8 = 5 passes over the 40 examples of seed j
        expected = 5 * torch.bincount(y[j], minlength=c)
        assert losses[0][j].cum_samples.tolist() == expected.tolist()


def test_protocol_does_not_depend_on_the_loss_scale() -> None:
    """AdamW normalises the gradient and decays the weights apart from it: a loss multiplied by
    100 trains the same head (the reason coupled L2 was replaced)."""
    s, n, f, c = 2, 60, 8, 4
    x, y = _features_and_labels(s, n, f, c, seed=2)
    head = Head(kind="mlp", hidden=16, lr=3e-3, weight_decay=0.01, batch_size=16)
    one = build_loss({"type": "softmax_focal", "gamma": 2.0})
    hundred = build_loss({"type": "softmax_focal", "gamma": 2.0, "loss_weight": 100.0})
    a = train_stacked(x, y, x, c, [[one] * s], head, [0, 1], [60])[0].test_logits
    b = train_stacked(x, y, x, c, [[hundred] * s], head, [0, 1], [60])[0].test_logits
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# a loss parameter switched during training (deferred re-weighting, LDAM-DRW)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sw:
    step: int
    key: str
    value: tuple[float, ...]


def _weights_per_call(loss: torch.nn.Module) -> list[list[float]]:
    """A spy: the module's class_weight at every call (forward pre-hook; reads, writes nothing)."""
    seen: list[list[float]] = []
    loss.register_forward_pre_hook(lambda mod, args: seen.append(mod.class_weight.tolist()))
    return seen


@pytest.mark.parametrize("vmap", [True, False], ids=["vmap", "per-seed"])
def test_switch_assigns_the_buffer_at_its_step(vmap: bool) -> None:
    """Weights 1 for the first ``step`` updates, the new value from update ``step + 1`` on, for
    every seed's module; the value is assigned between steps, not inside a loss call."""
    s, n, f, c, switch, total = 3, 40, 5, 4, 6, 10
    x, y = _features_and_labels(s, n, f, c, seed=4)
    new = (0.5, 1.0, 1.5, 1.0)
    losses = [[build_loss({"type": "ldam", "class_counts": [9, 5, 3, 1], "class_weight": [1.0] * c})
               for _ in range(s)]]  # fmt: skip
    spies = [_weights_per_call(m) for m in losses[0]]
    head = Head(kind="linear", batch_size=8, vmap=vmap)
    train_stacked(
        x, y, x, c, losses, head, range(s), [total], [[[_Sw(switch, "class_weight", new)]] * s]
    )
    called = [0] if vmap else range(s)  # vmap calls seed 0's module for every seed
    for j in called:
        steps = spies[j][-total:]  # the training calls come last (after the value check, probe)
        assert steps[:switch] == [[1.0] * c] * switch
        assert steps[switch:] == [list(new)] * (total - switch)
    for m in losses[0]:
        assert m.class_weight.tolist() == list(new)
    if vmap:
        assert len(spies[1]) == 1  # the value check only: seed 0's module served every seed


def test_switch_equals_assigning_the_weights_by_hand() -> None:
    """A stacked run with a switch = separate torch.nn heads whose loss gets the weights assigned
    by hand after the same number of steps (the LDAM-DRW recipe's ``loss.class_weight = ...``)."""
    s, n, m, f, c = 2, 50, 20, 12, 5
    gen = torch.Generator().manual_seed(5)
    x, xt = torch.randn(s, n, f, generator=gen), torch.randn(s, m, f, generator=gen)
    y = torch.randint(0, c, (s, n), generator=gen)
    counts = [20.0, 12.0, 8.0, 6.0, 4.0]
    spec = {"type": "ldam", "class_counts": counts, "scale": 5.0, "class_weight": [1.0] * c}
    new = tuple(drw_class_weights(counts, epoch=12, start_epoch=12).tolist())
    head = Head(kind="mlp", hidden=16, lr=1e-2, weight_decay=0.05, batch_size=16)
    losses = [[build_loss(spec) for _ in range(s)]]
    snaps = train_stacked(
        x, y, xt, c, losses, head, [3, 7], [20], [[[_Sw(12, "class_weight", new)]] * s]
    )
    plain = train_stacked(x, y, xt, c, [[build_loss(spec) for _ in range(s)]], head, [3, 7], [20])
    assert not torch.allclose(snaps[0].test_logits, plain[0].test_logits)  # the switch matters
    for j, seed in enumerate([3, 7]):
        ref = _separate_run(x[j], y[j], xt[j], spec, head, seed, (20,), switch=(12, new))
        torch.testing.assert_close(snaps[0].test_logits[j, 0], ref[20], rtol=1e-5, atol=2e-6)


def test_switch_to_different_values_per_seed_leaves_vmap() -> None:
    """Modules that agree at the start (vmapped) but switch to different weights per seed are
    called seed by seed after the switch: the run equals the per-seed run."""
    s, n, f, c = 3, 40, 6, 3
    x, y = _features_and_labels(s, n, f, c, seed=6)
    spec = {"type": "cross_entropy", "class_weight": [1.0] * c}
    per_seed = [[_Sw(5, "class_weight", (1.0 + j, 1.0, 0.5))] for j in range(s)]
    runs = []
    for v in (True, False):
        losses = [[build_loss(spec) for _ in range(s)]]
        head = Head(kind="linear", batch_size=8, vmap=v)
        runs.append(train_stacked(x, y, x, c, losses, head, range(s), [15], [per_seed]))
    torch.testing.assert_close(runs[0][0].test_logits, runs[1][0].test_logits, rtol=1e-5, atol=1e-6)


def test_switch_refuses_what_it_cannot_assign() -> None:
    x = torch.randn(2, 8, 3)
    y = torch.randint(0, 3, (2, 8))
    head = Head(kind="linear", batch_size=4)
    weighted = {"type": "cross_entropy", "class_weight": [1.0] * 3}
    shared = build_loss(weighted)
    unweighted = [[build_loss({"type": "cross_entropy"})] * 2]
    same = [[_Sw(2, "class_weight", (1.0, 2.0, 3.0))]] * 2
    differ = [[_Sw(2, "class_weight", (1.0, 2.0, 3.0))], [_Sw(2, "class_weight", (3.0, 2.0, 1.0))]]
    short = [[_Sw(2, "class_weight", (1.0, 2.0))]] * 2
    cases = [
        (unweighted, same, "no tensor buffer 'class_weight'"),
        (
            [[build_loss({**weighted, "class_weight": torch.nn.Parameter(torch.ones(3))})] * 2],
            same,
            "no tensor buffer 'class_weight'",
        ),  # a learned weight is not switched
        ([[shared, shared]], differ, "different values"),
        ([[build_loss(weighted), build_loss(weighted)]], short, "shape"),
    ]
    for losses, sw, message in cases:
        with pytest.raises(ValueError, match=message):
            train_stacked(x, y, x, 3, losses, head, [0, 1], [4], [sw])


# From a mutation audit of cli/train.py.


class _CountingCE(torch.nn.Module):
    """Cross-entropy that counts its calls in a buffer: vmap runs it, but it keeps state."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.nn.functional.cross_entropy(logits, target)


def test_a_stateful_loss_that_vmap_runs_is_still_called_seed_by_seed() -> None:
    s, n, f, c = 3, 40, 5, 4
    x, y = _features_and_labels(s, n, f, c, seed=5)
    losses = [[_CountingCE() for _ in range(s)]]
    train_stacked(x, y, x, c, losses, Head(kind="linear", batch_size=8), range(s), [25])
    # one call per step on each seed's own module (the value check and the vmap probe restore)
    assert [int(m.calls) for m in losses[0]] == [25, 25, 25]


def test_seeds_with_different_hyperparameters_are_not_vmapped_as_one() -> None:
    s, n, f, c = 2, 40, 6, 3
    x, y = _features_and_labels(s, n, f, c, seed=6)
    head = Head(kind="linear", batch_size=8)
    specs = [{"type": "cross_entropy"}, {"type": "cross_entropy", "label_smoothing": 0.3}]
    (both,) = train_stacked(x, y, x, c, [[build_loss(sp) for sp in specs]], head, [0, 1], [20])
    (alone,) = train_stacked(x[1:], y[1:], x[1:], c, [[build_loss(specs[1])]], head, [1], [20])
    torch.testing.assert_close(both.test_logits[1], alone.test_logits[0], rtol=1e-5, atol=1e-6)


@dataclass(frozen=True)
class _Sw:
    step: int
    key: str
    value: tuple[float, ...]


def test_switch_keeps_the_buffer_dtype() -> None:
    s, n, f, c = 2, 16, 3, 3
    x, y = _features_and_labels(s, n, f, c, seed=7)
    losses = [[build_loss({"type": "cross_entropy", "class_weight": [1.0] * c}) for _ in range(s)]]
    sw = [[[_Sw(2, "class_weight", (0.1, 0.2, 0.3))]] * s]
    train_stacked(x, y, x, c, losses, Head(kind="linear", batch_size=4), range(s), [4], sw)
    for m in losses[0]:
        assert m.class_weight.dtype == torch.float32
        assert torch.equal(m.class_weight, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32))


def test_fused_adamw_is_taken_and_matches_torch_row_by_row() -> None:
    try:
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
    except RuntimeError:
        pytest.skip("no fused AdamW here")
    gen = torch.Generator().manual_seed(8)
    w = torch.randn(3, 4, 5, generator=gen).requires_grad_(True)
    b = torch.randn(3, 1, 5, generator=gen).requires_grad_(True)
    w_rows = [r.clone().requires_grad_(True) for r in w.detach()]
    b_rows = [r.clone().requires_grad_(True) for r in b.detach()]
    opt = _AdamW([w], [b], lr=1e-2, wd=0.1, fused=True)
    ref = torch.optim.AdamW(
        [{"params": w_rows, "weight_decay": 0.1}, {"params": b_rows, "weight_decay": 0.0}],
        lr=1e-2, betas=BETAS, eps=EPS, fused=True,
    )  # fmt: skip
    for _ in range(3):
        gw, gb = torch.randn(w.shape, generator=gen), torch.randn(b.shape, generator=gen)
        w.grad, b.grad = gw.clone(), gb.clone()
        for r, g in zip(w_rows + b_rows, list(gw) + list(gb), strict=True):
            r.grad = g.clone()
        opt.step()
        ref.step()
    assert opt.fused  # no silent fallback to the plain update
    assert torch.equal(w.detach(), torch.stack([r.detach() for r in w_rows]))
    assert torch.equal(b.detach(), torch.stack([r.detach() for r in b_rows]))


class _Drifting(torch.nn.Module):
    """Cross-entropy scaled by 1 + 1e-3 * (its number of calls): vmap's single call and a loop
    over the seeds disagree by ~1e-3, so the probe must call it seed by seed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.nn.functional.cross_entropy(logits, target) * (1 + 1e-3 * self.calls)


def test_a_loss_whose_vmap_disagrees_with_the_loop_is_called_seed_by_seed() -> None:
    s, n, f, c = 3, 16, 3, 3
    x, y = _features_and_labels(s, n, f, c, seed=9)
    losses = [[_Drifting() for _ in range(s)]]
    train_stacked(x, y, x, c, losses, Head(kind="linear", batch_size=4), range(s), [10])
    assert [m.calls for m in losses[0][1:]] == [1 + 10, 1 + 10]  # the value check, 10 steps
