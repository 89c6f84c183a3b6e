"""Online hard example mining for softmax cross-entropy (mmsegmentation's OHEM)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, cast

import torch
from torch import Tensor

from lossforge import _pipeline as pipeline
from lossforge._params import ClassValues, Integer, Probability, loss_function
from lossforge._pipeline import SoftmaxInput, Unreduced
from lossforge._reduction import AvgFactor, Backend, Reduction
from lossforge.functional._terms import softmax_ce

__all__ = ["ohem_cross_entropy"]

#: ``min_kept``: an integer >= 1.
MinKept = Annotated[int, Integer(low=1)]


def _ohem_ce(inp: SoftmaxInput, want_total: bool, *, thresh: float, min_kept: int) -> Unreduced:
    """The selected positions' cross-entropy and the default denominator (their summed class
    weights, or their number)."""
    st, z, cdim = inp.target, inp.z, inp.cdim
    idx = cast(Tensor, st.index)  # allow_probs=False
    ce = cast(Tensor, softmax_ce(inp, False, eps=0.0, log_softmax=True))
    with torch.no_grad():
        logp_y = torch.log_softmax(z.detach(), dim=cdim).gather(cdim, idx.unsqueeze(cdim))
        p_y = torch.exp(logp_y.squeeze(cdim)).reshape(-1)
        usable = torch.ones_like(p_y, dtype=torch.bool)
        if st.valid is not None:
            usable = usable & st.valid.reshape(-1)
        if st.bad is not None:
            usable = usable & ~st.bad.reshape(-1)
        # Hardest first: ascending probability of the true class, unusable positions last (2 > any
        # probability); a stable sort breaks ties by the lower flat index. No host sync. A NaN
        # probability (a position without a softmax, value checks off) counts as the hardest
        # (-1), so it is kept and its NaN reaches the loss instead of being mined away.
        key = torch.where(usable, p_y.nan_to_num(nan=-1.0), 2.0)
        order = torch.sort(key, stable=True).indices
        # (out of place: in-place scatter_ has no vmap batching rule, a slow fallback loop)
        rank = torch.scatter(
            torch.empty_like(order), 0, order, torch.arange(order.numel(), device=order.device)
        )
        keep = (usable & ((key < thresh) | (rank < min_kept))).reshape(idx.shape)
    loss = torch.where(keep, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))
    w = inp.class_weight
    kept = keep.to(ce.dtype)
    denominator = (kept if w is None else kept * w[idx]).sum()
    return Unreduced(loss, denominator)


@loss_function
def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    thresh: Probability = 0.7,
    min_kept: MinKept = 100_000,
    class_weight: ClassValues | None = None,
    ignore_index: int | None = -100,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: AvgFactor = None,
    backend: Backend = "torch",
) -> Tensor:
    r"""Cross-entropy over the hard positions only (online hard example mining, segmentation).

    With $p_i$ the predicted probability of position $i$'s true class and $r_i$ its rank among
    the $n$ non-ignored positions of the **whole batch** by ascending $p_i$ (hardest first; ties
    by the lower flat index), the kept set is

    $$
    K = \{\, i : p_i < \tau \ \text{or}\ r_i < k \,\}, \qquad \tau = \text{thresh},\ k =
    \text{min\_kept},
    $$

    i.e. every position predicted with less than ``thresh`` confidence, and at least the ``k``
    hardest (all of them when $k \ge n$). With the per-position cross-entropy
    $\ell_i = w_{y_i}(-\log p_i)$ (class weights $w$, 1 when unset),

    $$
    L = \frac{\sum_{i \in K} \ell_i}{\sum_{i \in K} w_{y_i}} .
    $$

    ``"mean"`` is $L$ (``avg_factor`` replaces the denominator); ``"sum"`` is the numerator;
    ``"none"`` is $\ell_i$ on the kept positions and 0 elsewhere. ``weight`` multiplies the kept
    losses after the selection and does not change the denominator. The selection uses the
    probabilities without gradient and stays on the device (a sort, no ``.item()``, no
    data-dependent shape): no host sync. An empty batch or every target ignored gives 0.

    This is mmsegmentation's ``OhemCrossEntropy`` (``thres``, ``min_kept``; from PIDNet/HRNet),
    which keeps $p_i < \max(\tau, p_{(k)})$ with $p_{(k)}$ the $k$-th smallest probability
    (0-based, $k$ capped at $n - 1$) and averages over the kept positions. For distinct
    probabilities and $k < n$ the kept sets are identical; the differences: tied probabilities at
    $p_{(k)}$ are all dropped there (here the first ones by index are kept, so at least $k$ always
    are), $k \ge n$ drops the most confident position there (here: keep every position), and
    with ``class_weight`` it divides by the number of kept positions (here: their summed weights,
    so that with everything kept this is exactly ``cross_entropy``). mmsegmentation's
    ``OHEMPixelSampler`` keeps ``min_kept`` per image: pass ``min_kept * N`` for it. ``thresh=0``
    keeps exactly the $k$ hardest (sorting by $p$ is sorting by the unweighted cross-entropy).

    Under ``lossforge.distributed.global_normalization()`` the denominator is the global number of
    kept positions; the selection is per rank, as in mmsegmentation.

    Args:
        logits: Unnormalised scores ``(N, C, d1, ..., dk)`` (e.g. ``(N, C, H, W)``) or ``(C,)``.
        target: Class indices ``(N, d1, ..., dk)`` (any integer dtype).
        thresh: $\tau \in [0, 1]$: positions whose true-class probability is below it are kept.
        min_kept: $k \ge 1$: at least the $k$ hardest positions of the batch are kept.
        class_weight: Per-class weights, length ``C``, non-negative.
        ignore_index: Ignored target value (mmsegmentation uses 255); ``None`` disables it.
        weight: Element-wise weight of the per-position loss (after the selection).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: Replaces the denominator of ``"mean"``.
        backend: ``"torch"`` | ``"auto"`` | ``"triton"`` (no fused kernel).

    Returns:
        The target's shape for ``"none"``, else a scalar; float32 (float64 for float64 logits).

    References:
        Shrivastava, Gupta, Girshick, "Training Region-based Object Detectors with Online Hard
        Example Mining", CVPR 2016, arXiv:1604.03540; Wu, Shen, van den Hengel, "High-performance
        Semantic Segmentation Using Very Deep Fully Convolutional Networks" (bootstrapped
        cross-entropy), arXiv:1604.04339.

    Example:
        >>> x = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 0.0], [0.0, 4.0]])
        >>> y = torch.tensor([0, 1, 0, 1])  # p_y = 0.95, 0.62, 0.73, 0.98
        >>> ohem_cross_entropy(x, y, thresh=0.7, min_kept=2)  # keeps rows 1 and 2
        tensor(0.3937)
    """
    return pipeline.softmax(
        "ohem_cross_entropy",
        logits,
        target,
        loss=partial(_ohem_ce, thresh=thresh, min_kept=min_kept),
        class_weight=class_weight,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
        avg_factor=avg_factor,
        backend=backend,
        allow_probs=False,
    )
