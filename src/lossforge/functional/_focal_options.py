r"""Per-class ``alpha`` and ``pos_weight`` for the sigmoid focal family.

Shared by ``sigmoid_focal_loss`` (when either option is given) and ``poly1_focal_loss``. With
$p = \sigma(x)$, a target $y \in [0, 1]$, $m = 1 - p_t = y (1 - p) + (1 - y) p$, a positive weight
$w_+$ and $\alpha_t = y\,\alpha_c + (1 - y)(1 - \alpha_c)$ (the class's own $\alpha_c$):

$$
\ell = \alpha_t\, m^{\gamma} \bigl[\, w_+\, y\, (-\log p) + (1 - y)(-\log(1 - p)) \,\bigr].
$$

The unweighted focal term $m^\gamma \operatorname{BCE}$ is the library's sigmoid focal math
(closed-form gradient, finite for every $\gamma \ge 0$). For hard targets the positive weight is
the factor $1 + (w_+ - 1)\,y$ of that term; soft targets add
$(w_+ - 1)\, y\, (-\log p)\, m^\gamma$, with $m^\gamma = \exp(\gamma \log m)$ and $\log m$ a
``logaddexp`` of log-sigmoids for $0 < \gamma < 1$ (a bounded gradient at saturated logits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossforge._checks import (
    as_class_weight,
    fail,
    in_compute_dtype,
    is_ndarray,
    value_checks_enabled,
)
from lossforge._dispatch import kernel_eligible, unsupported
from lossforge._targets import DenseTarget, class_dim, class_view
from lossforge.functional._terms import as_pos_weight

#: Why the fused sigmoid kernel does not serve these options (it takes a float alpha only).
KERNEL_DECLINES = "a per-class alpha or a pos_weight (the fused focal kernel takes a float alpha)"


def is_per_class(alpha: object) -> bool:
    """Whether ``alpha`` is a per-class vector (a tensor, a sequence or a NumPy array), not a
    float or None."""
    return (
        isinstance(alpha, Tensor)
        or (is_ndarray(alpha) and alpha.ndim > 0)  # type: ignore[attr-defined]
        or (isinstance(alpha, Sequence) and not isinstance(alpha, (str, bytes)))
    )


def decline_kernel(fn: str, backend: object, logits: object) -> None:
    """``backend="triton"`` raises, naming the options the kernel cannot serve; ``"auto"`` runs
    the reference."""
    if isinstance(logits, Tensor) and kernel_eligible(fn, backend, logits):
        unsupported(fn, backend, KERNEL_DECLINES)  # type: ignore[arg-type]


def sigmoid_alpha(fn: str, alpha: object, like: Tensor) -> float | Tensor | None:
    """A float or None unchanged; a per-class sequence / tensor as a ``(C,)`` vector (compute
    dtype, ``like``'s device) with values in ``[0, 1]``, ``C`` the size of the class dim."""
    if not is_per_class(alpha):
        return alpha  # type: ignore[return-value]  # None or a float (checked by its domain)
    if like.ndim == 0:
        fail(fn, "alpha", "a float for 0-d logits (a per-class alpha needs a class dim)", alpha)
    c = like.shape[class_dim(like)]
    # as_class_weight returns None only for None, and alpha is a vector here.
    a = cast(Tensor, as_class_weight(fn, alpha, c, like, name="alpha"))
    if value_checks_enabled(a) and bool((a > 1).any()):
        fail(fn, "alpha", "per-class values in [0, 1]", a.tolist())
    return a


def focal_options(
    fn: str, alpha: object, pos_weight: object
) -> Callable[[Tensor], Mapping[str, Any]]:
    """The pipeline's ``options``: alpha and pos_weight checked against the validated logits."""

    def options(x: Tensor) -> dict[str, Any]:
        pw = None if pos_weight is None else as_pos_weight(fn, pos_weight, x)
        return {"alpha": sigmoid_alpha(fn, alpha, x), "pos_weight": pw}

    return options


def _log_or_neg_inf(v: Tensor) -> Tensor:
    """log v with log 0 = -inf and a zero (not NaN) gradient there."""
    positive = v > 0
    return torch.where(positive, torch.log(torch.where(positive, v, 1.0)), float("-inf"))


def modulating_factor(z: Tensor, y: Tensor, gamma: float) -> Tensor:
    """$(1 - p_t)^\\gamma$ for soft targets, with a finite gradient for every $\\gamma \\ge 0$."""
    if gamma == 0.0:
        return torch.ones_like(z)
    if gamma >= 1.0:
        # d/dm m^gamma = gamma m^(gamma - 1) is finite for gamma >= 1; no cancellation in m.
        return (y * torch.sigmoid(-z) + (1.0 - y) * torch.sigmoid(z)).pow(gamma)
    log_m = torch.logaddexp(
        _log_or_neg_inf(y) + TF.logsigmoid(-z), _log_or_neg_inf(1.0 - y) + TF.logsigmoid(z)
    )
    return torch.exp(gamma * log_m)


def alpha_factor(y: Tensor, alpha: float | Tensor, cdim: int) -> Tensor | float:
    """$\\alpha_t = y \\alpha + (1 - y)(1 - \\alpha)$, a per-class alpha along the class dim."""
    a = alpha if not isinstance(alpha, Tensor) else class_view(alpha, y.ndim, cdim)
    return y * (2.0 * a - 1.0) + (1.0 - a)


def weighted_sigmoid_focal(
    x: Tensor,
    t: DenseTarget,
    want_total: bool,
    *,
    gamma: float,
    alpha: float | Tensor | None,
    pos_weight: Tensor | None,
    base: Callable[..., Tensor],
) -> Tensor:
    """The element-wise loss of the module docstring.

    ``base(x, t, want_total, gamma=, alpha=)`` is the sigmoid focal math with a float alpha (or
    None); it alone serves a float alpha without ``pos_weight``.
    """
    if pos_weight is None and not isinstance(alpha, Tensor):
        return base(x, t, want_total, gamma=gamma, alpha=alpha)
    y = t.target
    loss = base(x, t, False, gamma=gamma, alpha=None)
    if pos_weight is not None:
        if t.binary:
            loss = loss * (1.0 + (pos_weight - 1.0) * y)
        else:
            z = in_compute_dtype(x)
            extra = y * -TF.logsigmoid(z) * modulating_factor(z, y, gamma)
            loss = loss + (pos_weight - 1.0) * extra
    if alpha is not None:
        loss = loss * alpha_factor(y, alpha, class_dim(x))
    return loss
