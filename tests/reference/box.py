"""Box-overlap losses from the papers' definitions, one box pair at a time in Python floats.

UnitBox / GIoU (Rezatofighi et al. 2019, Algorithm 1-2) / DIoU and CIoU (Zheng et al. 2020,
eq. 6, 9-11). ``eps`` sits where lossforge documents it (``I / (U + eps)``,
``(|C| - U) / (|C| + eps)``, ``rho^2 / (c^2 + eps)``, ``v / (1 - IoU + v + eps)``); widths of
inverted predicted boxes count as 0.
"""

from __future__ import annotations

import math

import torch


def _terms(p: list[float], t: list[float], eps: float) -> dict[str, float]:
    px1, py1, px2, py2 = p
    tx1, ty1, tx2, ty2 = t
    w, h = max(px2 - px1, 0.0), max(py2 - py1, 0.0)
    tw, th = max(tx2 - tx1, 0.0), max(ty2 - ty1, 0.0)
    iw = max(min(px2, tx2) - max(px1, tx1), 0.0)
    ih = max(min(py2, ty2) - max(py1, ty1), 0.0)
    inter = iw * ih
    union = w * h + tw * th - inter
    cw = max(px2, tx2) - min(px1, tx1)
    ch = max(py2, ty2) - min(py1, ty1)
    pcx, pcy = (px1 + px2) / 2, (py1 + py2) / 2
    tcx, tcy = (tx1 + tx2) / 2, (ty1 + ty2) / 2
    return {
        "iou": inter / (union + eps),
        "union": union,
        "area_c": cw * ch,
        "c2": cw**2 + ch**2,
        "rho2": (pcx - tcx) ** 2 + (pcy - tcy) ** 2,
        "w": w,
        "h": h,
        "tw": tw,
        "th": th,
    }


def _angle(w: float, h: float) -> float:
    if w == 0 and h == 0:
        return math.pi / 4
    return math.pi / 2 if h == 0 else math.atan(w / h)


def _per_box(fn, pred: torch.Tensor, target: torch.Tensor, **kw: float) -> torch.Tensor:
    p = pred.detach().double().reshape(-1, 4).tolist()
    t = target.detach().double().reshape(-1, 4).tolist()
    out = [fn(a, b, **kw) for a, b in zip(p, t, strict=True)]
    return torch.tensor(out, dtype=torch.float64).reshape(pred.shape[:-1])


def _iou(p: list[float], t: list[float], mode: str, eps: float) -> float:
    iou = max(_terms(p, t, eps)["iou"], eps)
    if mode == "linear":
        return 1 - iou
    if mode == "square":
        return 1 - iou**2
    return -math.log(iou)


def _giou(p: list[float], t: list[float], eps: float) -> float:
    q = _terms(p, t, eps)
    giou = q["iou"] - (q["area_c"] - q["union"]) / (q["area_c"] + eps)
    return 1 - giou


def _diou(p: list[float], t: list[float], eps: float) -> float:
    q = _terms(p, t, eps)
    return 1 - q["iou"] + q["rho2"] / (q["c2"] + eps)


def aspect_v(p: list[float], t: list[float]) -> float:
    q = _terms(p, t, 1.0)  # only the widths and heights are used
    return 4 / math.pi**2 * (_angle(q["tw"], q["th"]) - _angle(q["w"], q["h"])) ** 2


def ciou_alpha(p: list[float], t: list[float], eps: float, min_iou: float | None) -> float:
    q = _terms(p, t, eps)
    if min_iou is not None and not q["iou"] > min_iou:
        return 0.0
    v = aspect_v(p, t)
    return v / (1 - q["iou"] + v + eps)


def _ciou(
    p: list[float],
    t: list[float],
    eps: float,
    min_iou: float | None = None,
    alpha: float | None = None,
) -> float:
    a = ciou_alpha(p, t, eps, min_iou) if alpha is None else alpha
    return _diou(p, t, eps) + a * aspect_v(p, t)


def iou(pred: torch.Tensor, target: torch.Tensor, mode: str, eps: float) -> torch.Tensor:
    return _per_box(_iou, pred, target, mode=mode, eps=eps)


def giou(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    return _per_box(_giou, pred, target, eps=eps)


def diou(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    return _per_box(_diou, pred, target, eps=eps)


def ciou(
    pred: torch.Tensor, target: torch.Tensor, eps: float, min_iou: float | None = None
) -> torch.Tensor:
    return _per_box(_ciou, pred, target, eps=eps, min_iou=min_iou)


def ciou_grad_constant_alpha(
    pred: torch.Tensor, target: torch.Tensor, eps: float, min_iou: float | None = None, h=1e-6
) -> torch.Tensor:
    """d CIoU / d pred with alpha frozen at the evaluation point (central differences)."""
    p = pred.detach().double().reshape(-1, 4).tolist()
    t = target.detach().double().reshape(-1, 4).tolist()
    grads = []
    for a, b in zip(p, t, strict=True):
        alpha = ciou_alpha(a, b, eps, min_iou)
        row = []
        for k in range(4):
            hi, lo = list(a), list(a)
            hi[k] += h
            lo[k] -= h
            row.append((_ciou(hi, b, eps, alpha=alpha) - _ciou(lo, b, eps, alpha=alpha)) / (2 * h))
        grads.append(row)
    return torch.tensor(grads, dtype=torch.float64).reshape(pred.shape)
