"""LossSum: the weighted total and its parts, nested registry / TOML specs, no state written in
forward, module plumbing (buffers, dtype, pickle), validation."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest
import torch
from torch import nn

import lossforge as lf
import lossforge.functional as F
from lossforge.nn import LossParts, LossSum
from lossforge.registry import build_loss, build_loss_from_toml, get_loss

F64 = torch.float64


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(2, 3, 5, 6, generator=g, dtype=F64)).requires_grad_(True)
    t = torch.randint(0, 3, (2, 5, 6), generator=g)
    t[0, 0] = 255
    return x, t


def test_total_is_the_weighted_sum_of_the_parts() -> None:
    x, t = _inputs()
    crit = LossSum(
        {
            "dice": lf.DiceLoss(ignore_index=255, squared=True),
            "ce": lf.CrossEntropyLoss(ignore_index=255),
            "focal": lf.SoftmaxFocalLoss(ignore_index=255, gamma=2.0),
        },
        weights={"ce": 0.5, "focal": 2.0},
    )
    dice = F.dice_loss(x, t, ignore_index=255, squared=True)
    ce = F.cross_entropy(x, t, ignore_index=255)
    focal = F.softmax_focal_loss(x, t, ignore_index=255, gamma=2.0)
    want = dice + 0.5 * ce + 2.0 * focal
    total, parts = crit.with_parts(x, t)
    assert isinstance(crit.with_parts(x, t), LossParts)
    assert list(parts) == ["dice", "ce", "focal"]
    torch.testing.assert_close(parts["dice"], dice)
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["focal"], focal)
    torch.testing.assert_close(total, want)
    torch.testing.assert_close(crit(x, t), want)
    (g_dice_ref,) = torch.autograd.grad(dice, x, retain_graph=True)
    (got,) = torch.autograd.grad(crit(x, t), x)
    (ref,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, ref)
    # parts stay attached (a part can be differentiated on its own)
    (g_dice,) = torch.autograd.grad(crit.with_parts(x, t).parts["dice"], x)
    torch.testing.assert_close(g_dice, g_dice_ref)


def test_loss_weight_scales_the_total_and_default_weights_are_one() -> None:
    x, t = _inputs(1)
    crit = LossSum({"dice": lf.DiceLoss(), "ce": nn.CrossEntropyLoss()}, loss_weight=3.0)
    want = 3.0 * (F.dice_loss(x, t.clamp(max=2)) + nn.functional.cross_entropy(x, t.clamp(max=2)))
    torch.testing.assert_close(crit(x, t.clamp(max=2)), want)
    assert crit.weights == {"dice": 1.0, "ce": 1.0}


def test_forward_writes_no_state_and_keeps_no_graph_alive() -> None:
    x, t = _inputs(2)
    crit = LossSum(
        {
            "dice": lf.DiceLoss(ignore_index=255),
            "ce": {"type": "cross_entropy", "ignore_index": 255},
        }
    )
    before = {k: v for k, v in vars(crit).items() if k != "_modules"}
    out = crit.with_parts(x, t)
    out.total.backward()
    after = {k: v for k, v in vars(crit).items() if k != "_modules"}
    assert after.keys() == before.keys()
    assert not any(isinstance(v, torch.Tensor) for v in after.values())
    ref = weakref.ref(out.parts["ce"])
    del out
    gc.collect()
    assert ref() is None, "a part survived its caller: something holds it"


def test_build_from_registry_spec_and_toml() -> None:
    spec = {
        "type": "loss_sum",
        "losses": {
            "dice": {"type": "dice", "squared": True, "class_weight": [1.0, 2.0, 0.5]},
            "ce": "cross_entropy",
            "lovasz": {"type": "lovasz_softmax", "loss_weight": 0.5},
        },
        "weights": {"ce": 0.25},
        "loss_weight": 2.0,
    }
    crit = build_loss(spec)
    assert isinstance(crit, LossSum)
    assert type(build_loss({**spec, "type": "lossforge.LossSum"})) is LossSum
    assert isinstance(crit.losses["dice"], lf.DiceLoss)
    assert "losses.dice.class_weight" in crit.state_dict()
    x, t = _inputs(3)
    t = t.clamp(max=2)
    cw = [1.0, 2.0, 0.5]
    want = 2.0 * (
        F.dice_loss(x, t, squared=True, class_weight=cw)
        + 0.25 * F.cross_entropy(x, t)
        + 0.5 * F.lovasz_softmax_loss(x, t)
    )
    torch.testing.assert_close(crit(x, t), want)
    toml = """
    [model.loss]
    type = "loss_sum"
    loss_weight = 2.0
    [model.loss.weights]
    ce = 0.25
    [model.loss.losses.dice]
    type = "dice"
    squared = true
    class_weight = [1.0, 2.0, 0.5]
    [model.loss.losses.ce]
    type = "cross_entropy"
    [model.loss.losses.lovasz]
    type = "lovasz_softmax"
    loss_weight = 0.5
    """
    from_toml = build_loss_from_toml(toml, table="model.loss")
    torch.testing.assert_close(from_toml(x, t), want)
    # nesting: a sum of sums
    nested = build_loss({"type": "loss_sum", "losses": {"inner": spec, "l": "dice"}})
    torch.testing.assert_close(nested(x, t), want + F.dice_loss(x, t))


def test_module_plumbing() -> None:
    crit = LossSum({"dice": lf.DiceLoss(class_weight=[1.0, 2.0, 3.0]), "ce": "cross_entropy"})
    x, t = _inputs(4)
    t = t.clamp(max=2)
    want = crit(x, t)
    for other in (pickle.loads(pickle.dumps(crit)), copy.deepcopy(crit)):
        torch.testing.assert_close(other(x, t), want)
    again = LossSum({"dice": lf.DiceLoss(class_weight=[0.0, 0.0, 0.0]), "ce": "cross_entropy"})
    again.load_state_dict(crit.state_dict())
    torch.testing.assert_close(again(x, t), want)
    d = copy.deepcopy(crit).double()
    assert d.losses["dice"].class_weight.dtype == F64
    text = repr(crit)
    assert "weights={'dice': 1.0, 'ce': 1.0}" in text
    assert "DiceLoss(" in text
    assert "CrossEntropyLoss(" in text
    # a combinator, not a loss: no reduction of its own, not in the table of losses
    assert "loss_sum" not in [info.name for info in lf.list_losses()]
    assert not hasattr(crit, "reduction")
    with pytest.raises(
        ValueError, match=r"build_loss: expected `parameters` parameters of LossSum"
    ):
        build_loss({"type": "loss_sum", "losses": {"d": "dice"}, "reduction": "sum"})
    with pytest.raises(ValueError, match=r"get_loss: expected `name` a registered loss name"):
        get_loss("loss_sum")


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"LossSum: expected `losses` a non-empty mapping"):
        LossSum({})
    with pytest.raises(ValueError, match=r"LossSum: expected `losses` a non-empty mapping"):
        LossSum([lf.DiceLoss()])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"LossSum: expected `losses` names that are non-empty"):
        LossSum({"a.b": lf.DiceLoss()})
    with pytest.raises(
        ValueError, match=r"LossSum: expected `weights` weights of the named losses \(dice\)"
    ):
        LossSum({"dice": lf.DiceLoss()}, weights={"dcie": 1.0})
    with pytest.raises(ValueError, match=r"LossSum: expected `weights\['dice'\]` in \[0, inf\]"):
        LossSum({"dice": lf.DiceLoss()}, weights={"dice": -1.0})
    with pytest.raises(ValueError, match=r"LossSum: expected `weights\['dice'\]` a finite"):
        LossSum({"dice": lf.DiceLoss()}, weights={"dice": float("nan")})
    with pytest.raises(TypeError, match=r"LossSum: expected `losses\['dice'\]` an nn.Module"):
        LossSum({"dice": 3})
    with pytest.raises(
        ValueError, match=r"LossSum: in losses\['d'\]: build_loss: expected `type` a registered"
    ):
        LossSum({"d": {"type": "dcie"}})
    with pytest.raises(ValueError, match=r"LossSum: in losses\['d'\]: build_loss: .*'gama'"):
        LossSum({"d": {"type": "softmax_focal", "gama": 2.0}})
    with pytest.raises(ValueError, match=r"LossSum: in losses\['d'\]: DiceLoss: expected `smooth`"):
        build_loss({"type": "loss_sum", "losses": {"d": {"type": "dice", "smooth": -1.0}}})
    x, t = _inputs(5)
    crit = LossSum({"dice": lf.DiceLoss(reduction="none"), "ce": "cross_entropy"})
    with pytest.raises(
        ValueError, match=r"LossSum: expected `losses\['dice'\]` to return a scalar"
    ):
        crit(x, t.clamp(max=2))
