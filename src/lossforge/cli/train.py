"""Training for ``lossforge compare``: every (seed, loss) head of a task as one stacked model.

A job trains one small head per seed and per loss. The S x K heads are stacked along leading
dimensions: the first layer's weights are an ``(S, F, K*H)`` tensor (one matrix product per seed
covers every loss), the second's ``(S*K, H, C)``; one backward pass through the sum of every
head's own loss gives each head exactly the gradient of its loss, since the heads share no
parameter, and AdamW is element-wise. The stacked run is therefore the computation of S x K
separate runs, done with a few large tensor operations per step instead of many small ones; the
tests check it against separate ``torch.nn`` heads trained with ``torch.optim.AdamW``.

Each loss is called once per step on all seeds at once through ``torch.func.vmap`` when the seeds'
loss modules are interchangeable (same class, hyperparameters and state), the loss keeps no state
and supports vmap; else once per seed, on that seed's own module. Both compute each seed's loss
with its own mini-batch and its own reduction.

A loss parameter can change at a given step (``switches``: the deferred re-weighting of LDAM-DRW
assigns new class weights): the trainer assigns the new value to the buffer of every seed's module
between two steps (never inside a loss call), and checks again whether the seeds' modules are
still interchangeable; a loss whose seeds received different values is called seed by seed from
then on.

Protocol (docs/cli.md says why): every head of a seed starts from the same initial weights (those of
``torch.nn.Linear`` after ``torch.manual_seed(seed)``) and sees the same mini-batches (drawn from a
permutation of the training split seeded by the seed, redrawn after every pass). AdamW with a
constant learning rate, decoupled weight decay on the weight matrices only (biases are not
decayed). The budget is a number of optimiser steps; predictions are taken at each requested
checkpoint of the same run (the doubled-budget check is the same run continued).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from lossforge._checks import value_checks

__all__ = ["BETAS", "EPS", "Head", "Snapshot", "Switch", "adamw_step", "train_stacked"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Switch(Protocol):
    """A new value of a loss module's buffer from a given step on
    (``lossforge.cli.experiment.ParamSwitch``)."""

    @property
    def step(self) -> int:
        """Optimiser steps taken before the value applies (0 = from the first step)."""

    @property
    def key(self) -> str:
        """The buffer's name, e.g. ``class_weight``."""

    @property
    def value(self) -> Sequence[float]:
        """The new value."""


#: AdamW's moment decay rates and epsilon: the defaults of Loshchilov & Hutter and of PyTorch.
BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class Head:
    """The model and optimiser settings of a run.

    Attributes:
        kind: ``"mlp"`` (Linear -> ReLU -> Linear) or ``"linear"``.
        hidden: MLP hidden width.
        lr: AdamW learning rate (constant).
        weight_decay: AdamW decoupled weight decay on the weight matrices (biases: none).
        batch_size: Mini-batch size.
        fused: Use torch's fused AdamW kernel when it can be called (else the plain update).
        vmap: Call a loss once for all seeds through ``torch.func.vmap`` where that is exact
            (else seed by seed).
    """

    kind: str = "mlp"
    hidden: int = 128
    lr: float = 1e-2
    weight_decay: float = 2e-3
    batch_size: int = 64
    fused: bool = True
    vmap: bool = True


@dataclass
class Snapshot:
    """Predictions of every stacked head at one checkpoint.

    Attributes:
        step: Optimiser steps taken.
        test_logits: ``(S, K, M, C)`` float64 (seed, loss, test example, class).
        train_logits: ``(S, K, N, C)`` float64.
        train_loss: ``(S, K)`` loss of the last mini-batch.
    """

    step: int
    test_logits: torch.Tensor
    train_logits: torch.Tensor
    train_loss: torch.Tensor


class _Stack:
    """The parameters of S x K heads and their forward pass.

    ``weights[0]`` is ``(S, F, K*H)`` (or ``(S, F, K*C)`` for a linear head): head (s, k) uses the
    columns ``k*H:(k+1)*H`` of seed s's matrix. ``weights[1]`` (MLP) is ``(S*K, H, C)``.
    """

    def __init__(self, sizes: Sequence[int], seeds: Sequence[int], k: int) -> None:
        self.s, self.k = len(seeds), k
        per_seed = [_init_layers(sizes, seed) for seed in seeds]  # [seed][layer] -> (w, b)
        first_w = torch.stack([torch.cat([layers[0][0]] * k, dim=1) for layers in per_seed])
        first_b = torch.stack([torch.cat([layers[0][1]] * k) for layers in per_seed])
        first_b = first_b.unsqueeze(1)
        self.weights = [first_w.requires_grad_(True)]
        self.biases = [first_b.requires_grad_(True)]
        if len(sizes) == 3:
            w2 = torch.stack([layers[1][0] for layers in per_seed])  # (S, H, C)
            b2 = torch.stack([layers[1][1] for layers in per_seed])  # (S, C)
            self.weights.append(w2.repeat_interleave(k, dim=0).requires_grad_(True))
            self.biases.append(b2.repeat_interleave(k, dim=0).unsqueeze(1).requires_grad_(True))
        self.out = sizes[-1]

    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(S, K, B, C)`` logits for the inputs ``x (S, B, F)`` of each seed."""
        s, k, b = self.s, self.k, x.shape[1]
        h = torch.baddbmm(self.biases[0], x, self.weights[0])  # (S, B, K*width)
        if len(self.weights) == 1:
            return h.view(s, b, k, self.out).permute(0, 2, 1, 3)
        h = torch.relu(h).view(s, b, k, -1).permute(0, 2, 1, 3).reshape(s * k, b, -1)
        out = torch.baddbmm(self.biases[1], h, self.weights[1])  # (S*K, B, C)
        return out.view(s, k, b, self.out)


def _init_layers(sizes: Sequence[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight (in, out), bias (out,))`` per layer, as ``torch.nn.Linear`` initialises them
    after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        lin = torch.nn.Linear(fan_in, fan_out)
        layers.append((lin.weight.detach().t().contiguous(), lin.bias.detach().clone()))
    return layers


class _AdamW:
    """AdamW (Loshchilov & Hutter 2019) on a few stacked tensors.

    Per element, at step t with gradient g: m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
    p <- p (1 - lr wd) (decayed tensors only), p <- p - lr m_hat / (sqrt(v_hat) + eps) with
    m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t): the update of ``torch.optim.AdamW``. It runs
    as torch's fused kernel through the functional ``torch.optim.adamw.adamw`` (one pass over each
    tensor; the ``torch.optim.AdamW`` class would import torch's compiler stack, seconds per
    process) and falls back to ``adamw_step`` where that call is not available.
    """

    def __init__(
        self, decayed: list[torch.Tensor], plain: list[torch.Tensor], lr: float, wd: float,
        fused: bool = True,
    ) -> None:  # fmt: skip
        self.groups = [(list(decayed), wd), (list(plain), 0.0)]
        self.lr = lr
        self.state = [
            ([torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps])
            for ps, _ in self.groups
        ]
        # the fused kernel's step counts: one per row of each stacked tensor (see _fused_adamw)
        self.steps = [[torch.zeros(()) for p in ps for _ in range(len(p))] for ps, _ in self.groups]
        self.t = 0
        self.fused = fused

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for (ps, wd), (ms, vs), steps in zip(self.groups, self.state, self.steps, strict=True):
            if self.fused:
                try:
                    _fused_adamw(ps, ms, vs, steps, self.lr, wd)
                except (AttributeError, ImportError, RuntimeError, TypeError):
                    self.fused = False
            if not self.fused:
                for p, m, v in zip(ps, ms, vs, strict=True):
                    adamw_step(p, p.grad, m, v, self.t, self.lr, wd)
            for p in ps:
                p.grad = None


def _fused_adamw(
    ps: list[torch.Tensor],
    ms: list[torch.Tensor],
    vs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: float,
    wd: float,
) -> None:
    from torch.optim.adamw import adamw

    for p in ps:
        if p.grad is None:
            raise RuntimeError("missing gradient")
    # Row by row of the stacked tensors (a seed's, or a seed and loss's, parameters): the kernel
    # rounds an element by where it falls in its tensor (vector body or scalar tail), so a whole
    # stacked tensor would give a seed's parameters other values with other seeds beside them
    # (--jobs, --seeds); a row's size does not depend on how many seeds are stacked.
    params: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    avgs: list[torch.Tensor] = []
    sqs: list[torch.Tensor] = []
    for p, m, v in zip(ps, ms, vs, strict=True):
        params += p.unbind()
        grads += p.grad.unbind()  # type: ignore[union-attr]
        avgs += m.unbind()
        sqs += v.unbind()
    adamw(  # the fused kernel counts the steps itself
        params, grads, avgs, sqs, [], steps, foreach=False, fused=True, capturable=False,
        differentiable=False, grad_scale=None, found_inf=None, amsgrad=False, beta1=BETAS[0],
        beta2=BETAS[1], lr=lr, weight_decay=wd, eps=EPS, maximize=False,
    )  # fmt: skip


def adamw_step(
    p: torch.Tensor,
    grad: torch.Tensor | None,
    m: torch.Tensor,
    v: torch.Tensor,
    t: int,
    lr: float,
    weight_decay: float,
) -> None:
    """One AdamW update of ``p`` in place (moments ``m``, ``v`` updated in place)."""
    if grad is None:
        return
    b1, b2 = BETAS
    m.lerp_(grad, 1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    if weight_decay:
        p.mul_(1 - lr * weight_decay)
    denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(EPS)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


def _state(loss: LossFn) -> dict[str, torch.Tensor]:
    """A copy of a loss module's state (buffers such as running class counts); ``{}`` for a
    plain function."""
    if isinstance(loss, torch.nn.Module):
        return {k: v.detach().clone() for k, v in loss.state_dict().items()}
    return {}


def _restore(loss: LossFn, state: dict[str, torch.Tensor]) -> None:
    if state and isinstance(loss, torch.nn.Module):
        loss.load_state_dict(state)


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _interchangeable(per_seed: Sequence[LossFn]) -> bool:
    """Whether one seed's loss module can stand for every seed's: the same class, the same
    hyperparameters (``repr``) and the same state."""
    first = per_seed[0]
    return all(
        type(f) is type(first) and repr(f) == repr(first) and _same_state(_state(f), _state(first))
        for f in per_seed[1:]
    )


def _vmappable(loss: LossFn, logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``torch.func.vmap`` runs ``loss`` (forward and backward) on stacked seeds, agrees
    with calling it seed by seed, and leaves its state alone (a loss that accumulates statistics,
    such as seesaw's class counts, is called seed by seed on its own modules). The state the probe
    changes is restored."""
    before = _state(loss)
    try:
        z = logits.detach().clone().requires_grad_(True)
        batched = torch.func.vmap(loss)(z, target)
        (grad,) = torch.autograd.grad(batched.sum(), z)
        looped = torch.stack([loss(z[i], target[i]) for i in range(len(z))])
        stateless = _same_state(before, _state(loss))
    except Exception:  # noqa: BLE001 - any failure (no vmap rule, data-dependent branch) = no
        return False
    finally:
        _restore(loss, before)
    return (
        stateless
        and bool(torch.allclose(batched, looped, rtol=1e-5, atol=1e-7))
        and bool(torch.isfinite(grad).all())
    )


def _switch_plan(
    losses: Sequence[Sequence[LossFn]], switches: Sequence[Sequence[Sequence[Switch]]]
) -> dict[int, list[tuple[int, int, str, torch.Tensor]]]:
    """``{step: [(loss k, seed j, buffer name, new value), ...]}``, checked: every switched
    attribute is a tensor buffer of the value's size, and a module object shared by several seeds
    gets the same value for each."""
    if len(switches) != len(losses):
        raise ValueError(
            f"switches: expected one list per loss ({len(losses)}), got {len(switches)}"
        )
    plan: dict[int, list[tuple[int, int, str, torch.Tensor]]] = {}
    for k, (per_seed, per_seed_switches) in enumerate(zip(losses, switches, strict=True)):
        if len(per_seed_switches) != len(per_seed):
            raise ValueError(
                f"switches of loss {k}: expected one list per seed ({len(per_seed)}), got "
                f"{len(per_seed_switches)}"
            )
        given: dict[tuple[int, int, str], torch.Tensor] = {}
        for j, (loss, seed_switches) in enumerate(zip(per_seed, per_seed_switches, strict=True)):
            for sw in seed_switches:
                buffers = (
                    dict(loss.named_buffers(recurse=False))
                    if isinstance(loss, torch.nn.Module)
                    else {}
                )  # a buffer, not a learned parameter: assigning a tensor replaces it
                current = buffers.get(sw.key)
                if current is None:
                    raise ValueError(
                        f"loss {k} ({type(loss).__name__}) has no tensor buffer {sw.key!r} to "
                        f"switch at step {sw.step}"
                    )
                value = torch.tensor(list(sw.value), dtype=current.dtype, device=current.device)
                if value.shape != current.shape:
                    raise ValueError(
                        f"loss {k}: {sw.key} switches from shape {tuple(current.shape)} to "
                        f"{tuple(value.shape)}"
                    )
                shared = given.setdefault((id(loss), sw.step, sw.key), value)
                if not torch.equal(shared, value):
                    raise ValueError(
                        f"loss {k}: one module object serves several seeds but its {sw.key} "
                        f"switches to different values; give every seed its own module"
                    )
                plan.setdefault(sw.step, []).append((k, j, sw.key, value))
    return plan


def train_stacked(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    num_outputs: int,
    losses: Sequence[Sequence[LossFn]],
    head: Head,
    seeds: Sequence[int],
    checkpoints: Sequence[int],
    switches: Sequence[Sequence[Sequence[Switch]]] | None = None,
) -> list[Snapshot]:
    """Train one head per (seed, loss), stacked, and snapshot the predictions at ``checkpoints``.

    Args:
        x_train: ``(S, N, F)`` float32: each seed's training features (same N for every seed).
        y_train: ``(S, N)`` int64 class indices or ``(S, N, C)`` float32 multi-hot rows.
        x_test: ``(S, M, F)`` float32.
        num_outputs: Classes (single-label) or labels (multi-label).
        losses: ``losses[k][s]``: loss k for seed s (``loss(logits (B, C), targets)``), one
            object per seed (a loss module may hold state, such as running class counts). When
            the seeds' modules are interchangeable and stateless, one of them is called for all
            seeds at once through ``torch.func.vmap``.
        head: Model and optimiser settings.
        seeds: One seed per stacked seed: initial weights and batch order.
        checkpoints: Step counts at which to take a ``Snapshot``.
        switches: ``switches[k][s]``: the buffer values of loss k's module for seed s that change
            during the run. After ``sw.step`` optimiser steps the trainer assigns ``sw.value`` to
            the module's buffer ``sw.key`` (of every seed, before the next step's loss calls) and
            calls the loss seed by seed from then on if the seeds' modules no longer agree.

    Returns:
        One ``Snapshot`` per distinct checkpoint, in increasing order.
    """
    s, n, num_features = x_train.shape
    k = len(losses)
    sizes = (
        [num_features, num_outputs]
        if head.kind == "linear"
        else [num_features, head.hidden, num_outputs]
    )
    pending = _switch_plan(losses, switches) if switches is not None else {}
    model = _Stack(sizes, seeds, k)
    opt = _AdamW(model.weights, model.biases, head.lr, head.weight_decay, fused=head.fused)
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    rows = torch.arange(s).unsqueeze(1)
    with torch.no_grad():  # value checks (targets in range, ...) once on each training split
        logits = model(x_train)
        for i, per_seed in enumerate(losses):
            for j, loss in enumerate(per_seed):
                before = _state(loss)
                loss(logits[j, i], y_train[j])
                _restore(loss, before)  # a check, not a training step: no counts accumulated
    with value_checks(False), warnings.catch_warnings():  # ... not again on every batch
        # vmap runs an op without a batching rule in a loop and says so; the result is the same
        warnings.filterwarnings("ignore", message="There is a performance drop because we have")
        batch = min(head.batch_size, n)
        # One seed too goes through vmap: a loss's batched route rounds differently from its plain
        # call (closed forms vs composites), so a seed's results would depend on how many seeds
        # share its process (``--jobs``, ``--seeds``); vmap's own results do not depend on it.
        vmapped = [
            head.vmap
            and _interchangeable(per_seed)
            and _vmappable(per_seed[0], logits[:, i, :batch], y_train[:, :batch])
            for i, per_seed in enumerate(losses)
        ]
        snapshots: list[Snapshot] = []
        wanted = sorted(set(checkpoints))
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
        pos = step = 0
        while wanted:
            due = pending.pop(step, [])
            for i, j, key, value in due:
                setattr(losses[i][j], key, value)  # a registered buffer: replaced, not copied
            for i in sorted({i for i, *_ in due}):
                vmapped[i] = vmapped[i] and _interchangeable(losses[i])
            if pos >= n:
                perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
                pos = 0
            idx = perms[:, pos : pos + batch]
            pos += batch
            logits = model(x_train[rows, idx])
            target = y_train[rows, idx]
            values = []
            for i, per_seed in enumerate(losses):
                if vmapped[i]:
                    values.append(torch.func.vmap(per_seed[0])(logits[:, i], target))
                else:
                    values.append(
                        torch.stack([per_seed[j](logits[j, i], target[j]) for j in range(s)])
                    )
            stacked = torch.stack(values, dim=1)  # (S, K)
            stacked.sum().backward()
            opt.step()
            step += 1
            if step == wanted[0]:
                wanted.pop(0)
                with torch.no_grad():
                    snapshots.append(
                        Snapshot(
                            step=step,
                            test_logits=model(x_test).double(),
                            train_logits=model(x_train).double(),
                            train_loss=stacked.detach().clone(),
                        )
                    )
    return snapshots
