"""Lovasz-Softmax and Lovasz hinge losses (Berman et al. 2018): a float64 reference evaluating the
Lovasz extension from its definition, identities with the Jaccard loss, parity with Berman's code
(as shipped by SMP) and kornia, edge cases, validation and torch.compile."""

from __future__ import annotations

import pytest
import torch
from _contract import LossCase, assert_close, contract_test_suite
from _region import (
    F64,
    IGNORE,
    binary_mask,
    inputs,
    kornia_losses,
    reduce,
    sigmoid_dense,
    smp_losses,
    softmax_index,
    softmax_index_ignored,
)
from reference import region as ref

import lossforge as lf
import lossforge.functional as F

LS, LH = F.lovasz_softmax_loss, F.lovasz_hinge_loss


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _case(id_, fn, mod, kwargs, make, **kw):
    return LossCase(id_, fn, mod, kwargs, make, elementwise=False, **kw)


def _binary_probs(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (0.05 + 0.9 * torch.rand(n, 3, 7, generator=g, dtype=F64)).to(dtype)
    return x, (torch.rand(n, 3, 7, generator=g, dtype=F64) < 0.4).to(F64)


def _hinge_index(n: int, dtype: torch.dtype, g: torch.Generator):
    x = (2 * torch.randn(n, 3, 2, 3, generator=g, dtype=F64)).to(dtype)
    t = torch.randint(0, 4, (n, 2, 3), generator=g)  # 3 = background
    t = torch.where(torch.rand(t.shape, generator=g) < 0.2, torch.full_like(t, IGNORE), t)
    return x, t


LSM, LHM = lf.LovaszSoftmaxLoss, lf.LovaszHingeLoss
CASES = [
    _case("softmax_all", LS, LSM, {"classes": "all"}, softmax_index),
    _case("softmax_present", LS, LSM, {}, softmax_index, mean_is_count=False),
    _case(
        "softmax_ignore_cw",
        LS,
        LSM,
        {"ignore_index": IGNORE, "class_weight": [0.5, 1.0, 2.0], "include_background": False},
        softmax_index_ignored,
        mean_is_count=False,
    ),
    _case("sigmoid_all", LS, LSM, {"activation": "sigmoid", "classes": "all"}, sigmoid_dense),
    _case(
        "probs_all",
        LS,
        LSM,
        {"activation": "none", "classes": "all"},
        _binary_probs,
        extreme=False,
    ),
    _case("hinge_binary", LH, LHM, {}, binary_mask),
    _case("hinge_multilabel", LH, LHM, {"class_weight": [1.0, 0.5, 2.0, 1.0]}, sigmoid_dense),
    _case(
        "hinge_index_ignore",
        LH,
        LHM,
        {"ignore_index": IGNORE},
        _hinge_index,
        mean_is_count=False,
    ),
]
globals().update(contract_test_suite(CASES))


# --------------------------------------------------------------------------------------------------
# Against the reference (the Lovasz extension from the set function's definition).
# --------------------------------------------------------------------------------------------------

SHAPES = [(3, 4), (2, 3, 4, 5), (2, 3, 2, 3, 3), (0, 3, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ignore", [False, True], ids=["all", "ignore"])
@pytest.mark.parametrize("batch", [False, True], ids=["per_image", "batch"])
@pytest.mark.parametrize("kind", ["index", "dense"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "none"])
def test_softmax_matches_reference(
    shape, activation: str, kind: str, batch: bool, ignore: bool
) -> None:
    x, t = inputs(shape, activation, kind, ignore, seed=1)
    c = shape[1]
    ig = IGNORE if ignore else None
    for classes, cw, background in (
        ("present", None, True),
        ("all", [0.2, 1.0, 3.0, 0.5][:c], True),
        ("present", [1.5, 0.0, 2.0, 1.0][:c], False),
    ):
        kept, pairs = ref.entries(
            x,
            t,
            activation=activation,
            batch=batch,
            ignore_index=ig,
            include_background=background,
        )
        want, valid = ref.per_entry(
            kept,
            pairs,
            ref.lovasz_softmax_entry,
            batch=batch,
            n=shape[0],
            class_weight=cw,
            present_only=classes == "present",
            ignore=ignore,
        )
        kw = dict(
            classes=classes,
            activation=activation,
            batch=batch,
            ignore_index=ig,
            class_weight=cw,
            include_background=background,
        )
        for reduction in ("none", "mean", "sum"):
            got = LS(x, t, reduction=reduction, **kw)
            assert got.dtype == F64
            assert_close(got, reduce(want, valid, reduction), F64)


@pytest.mark.parametrize("shape", [(3, 1, 4, 5), (2, 3, 4, 5), (4, 2, 7), (0, 1, 4)])
@pytest.mark.parametrize("ignore", [False, True], ids=["all", "ignore"])
@pytest.mark.parametrize("batch", [False, True], ids=["per_image", "batch"])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_hinge_matches_reference(shape, kind: str, batch: bool, ignore: bool) -> None:
    x, t = inputs(shape, "sigmoid", kind, ignore, seed=2)
    ig = IGNORE if ignore else None
    c = shape[1]
    for cw in (None, [0.5, 2.0, 1.0][:c]):
        kept, pairs = ref.entries(
            x, t, activation="sigmoid", batch=batch, ignore_index=ig, raw=True
        )
        want, valid = ref.per_entry(
            kept,
            pairs,
            ref.lovasz_hinge_entry,
            batch=batch,
            n=shape[0],
            class_weight=cw,
            ignore=ignore,
        )
        for reduction in ("none", "mean", "sum"):
            got = LH(
                x,
                t,
                batch=batch,
                ignore_index=ig,
                # one channel: the reference reads an (N, *) target as a mask; say so
                index_target=False if kind == "index" and c == 1 else None,
                class_weight=cw,
                reduction=reduction,
            )
            assert_close(got, reduce(want, valid, reduction), F64)


def test_hand_values() -> None:
    # one entry, g = [1, 0, 1], p = [0.9, 0.6, 0.2]: errors [0.1, 0.6, 0.8], order 2, 1, 0
    # prefixes: {2}: |M|=1, |G u M|=2 -> 1/2; {2,1}: 2/3; {2,1,0}: 3/3
    # loss = 0.8 * 1/2 + 0.6 * (2/3 - 1/2) + 0.1 * (1 - 2/3)
    p = torch.tensor([[[0.9, 0.6, 0.2]]], dtype=F64)
    g = torch.tensor([[[1.0, 0.0, 1.0]]], dtype=F64)
    want = 0.8 * 0.5 + 0.6 * (2 / 3 - 0.5) + 0.1 * (1 - 2 / 3)
    assert_close(LS(p, g, activation="none"), torch.tensor(want, dtype=F64), F64)
    # hinge, z = [2, 0.5, -1], g = [1, 0, 1]: errors [0, 1.5, 2] -> order 2, 1
    z = torch.tensor([[[2.0, 0.5, -1.0]]], dtype=F64)
    want = 2.0 * 0.5 + 1.5 * (2 / 3 - 0.5)
    assert_close(LH(z, g), torch.tensor(want, dtype=F64), F64)


# --------------------------------------------------------------------------------------------------
# Identities.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
def test_binary_predictions_give_the_jaccard_loss(batch: bool) -> None:
    """On binary errors the extension is the set function itself: 1 - IoU of the prediction."""
    gen = torch.Generator().manual_seed(3)
    p = (torch.rand(3, 4, 5, 6, generator=gen) < 0.5).to(F64)
    g = (torch.rand(3, 4, 5, 6, generator=gen) < 0.4).to(F64)
    kw = dict(activation="none", batch=batch, reduction="none")
    assert_close(LS(p, g, classes="all", **kw), F.jaccard_loss(p, g, smooth=0.0, **kw), F64)
    # hinge at logits of +-1 on the predicted mask: twice the Jaccard loss
    z = 2 * p - 1
    assert_close(
        LH(z, g, batch=batch, reduction="none"),
        2 * F.jaccard_loss(p, g, smooth=0.0, **kw),
        F64,
    )


def test_positively_homogeneous_and_convex() -> None:
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(2, 1, 6, 5, generator=gen, dtype=F64)
    g = (torch.rand(2, 1, 6, 5, generator=gen) < 0.5).to(F64)
    # hinge errors scale with (z - margin): extension(2 m) = 2 extension(m) at zero margin terms
    e1 = LH(z, g, reduction="none")
    m = (1 - z * (2 * g - 1)).clamp(min=0)
    assert float(m.max()) <= 10
    p_equiv = g + (1 - 2 * g) * m / 10  # probabilities whose errors |g - p| are m / 10
    assert_close(LS(p_equiv, g, activation="none", classes="all", reduction="none") * 10, e1, F64)
    # convexity along a segment of probability vectors
    pa = torch.rand(2, 1, 6, 5, generator=gen, dtype=F64)
    pb = torch.rand(2, 1, 6, 5, generator=gen, dtype=F64)
    kw = dict(activation="none", classes="all", reduction="none")
    for lam in (0.25, 0.5, 0.75):
        mix = LS(lam * pa + (1 - lam) * pb, g, **kw)
        assert torch.all(mix <= lam * LS(pa, g, **kw) + (1 - lam) * LS(pb, g, **kw) + 1e-12)


def test_ignoring_pixels_equals_cropping_them() -> None:
    x, t = inputs((2, 3, 4, 6), "softmax", "index", False, seed=5)
    t_ign = t.clone()
    t_ign[..., 4:] = IGNORE
    x_ign = x.clone()
    x_ign[..., 4:] = 1e3
    for batch in (False, True):
        for classes in ("present", "all"):
            kw = dict(batch=batch, classes=classes, reduction="none")
            got = LS(x_ign, t_ign, ignore_index=IGNORE, **kw)
            assert_close(got, LS(x[..., :4], t[..., :4], **kw), F64)
        xh = x[:, :1]
        got = LH(
            x_ign[:, :1],
            (t_ign == 1).long().masked_fill(t_ign == IGNORE, IGNORE),
            ignore_index=IGNORE,
            index_target=False,  # (N, *) integer masks next to one channel
            batch=batch,
            reduction="none",
        )
        want = LH(
            xh[..., :4], (t[..., :4] == 1).long(), index_target=False, batch=batch, reduction="none"
        )
        assert_close(got, want, F64)


# --------------------------------------------------------------------------------------------------
# Edge cases.
# --------------------------------------------------------------------------------------------------


def test_empty_ground_truth() -> None:
    p = torch.tensor([[[0.2, 0.7, 0.1]], [[0.8, 0.3, 0.9]]], dtype=F64).unsqueeze(0)  # C=2
    t = torch.tensor([[[0, 0, 0]]])  # class 1 absent
    none = LS(p, t, activation="none", classes="all", reduction="none")
    assert_close(none[0, 1], torch.tensor(0.9, dtype=F64), F64)  # the largest false positive
    present = LS(p, t, activation="none", reduction="none")
    assert present[0, 1].item() == 0.0
    assert_close(LS(p, t, activation="none"), none[0, 0], F64)  # only class 0 counts
    # hinge: an empty mask still counts, with its largest hinge error
    z = torch.tensor([[[[-3.0, 0.5, -0.5]]]], dtype=F64, requires_grad=True)
    loss = LH(z, torch.zeros(1, 1, 3, dtype=torch.long), index_target=False)
    assert_close(loss, torch.tensor(1.5, dtype=F64), F64)
    (grad,) = torch.autograd.grad(loss, z)
    assert_close(grad, torch.tensor([[[[0.0, 1.0, 0.0]]]], dtype=F64), F64)


def test_all_ignored_gives_zero_with_zero_gradient() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=F64, requires_grad=True)
    for fn, t in (
        (LS, torch.full((2, 4, 4), IGNORE)),
        (LH, torch.full((2, 4, 4), IGNORE)),
    ):
        for batch in (False, True):
            loss = fn(x, t, ignore_index=IGNORE, batch=batch)
            (grad,) = torch.autograd.grad(loss, x)
            assert loss.item() == 0.0
            assert loss.requires_grad
            assert torch.all(grad == 0)


def test_fully_ignored_image_is_left_out_of_the_mean() -> None:
    x, t = inputs((3, 3, 4, 5), "softmax", "index", False, seed=6)
    t_ign = t.clone()
    t_ign[1] = IGNORE
    assert_close(LS(x, t_ign, ignore_index=IGNORE), LS(x[[0, 2]], t[[0, 2]]), F64)
    assert_close(
        LH(
            x[:, :1],
            (t_ign == 1).long().masked_fill(t_ign == IGNORE, IGNORE),
            ignore_index=IGNORE,
            index_target=False,
        ),
        LH(x[[0, 2], :1], (t[[0, 2]] == 1).long(), index_target=False),
        F64,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_extreme_logits(dtype: torch.dtype) -> None:
    x, t = inputs((2, 3, 6, 5), "softmax", "index", True, seed=7)
    xl = x.to(dtype).requires_grad_(True)
    got = LS(xl, t, ignore_index=IGNORE, batch=True)
    assert got.dtype == torch.float32
    assert_close(
        got,
        LS(xl.detach().double(), t, ignore_index=IGNORE, batch=True),
        torch.float32,
        rtol=1e-5,
        atol=1e-6,
    )
    got.backward()
    assert xl.grad.dtype == dtype
    assert torch.isfinite(xl.grad).all()
    for fn, target in ((LS, t), (LH, (t == 1).long().masked_fill(t == IGNORE, IGNORE))):
        big = (torch.sign(x) * 1e4).to(dtype).requires_grad_(True)
        mask = {} if fn is LS else {"index_target": False}
        loss = fn(big if fn is LS else big[:, :1], target, ignore_index=IGNORE, **mask)
        (grad,) = torch.autograd.grad(loss, big)
        assert torch.isfinite(loss)
        assert torch.isfinite(grad).all()


def test_gradcheck_options() -> None:
    x, t = inputs((2, 3, 3, 2), "softmax", "index", True, seed=8)
    x.requires_grad_(True)
    for kw in (
        {"batch": True, "classes": "all"},
        {"class_weight": [1.0, 2.0, 0.5], "include_background": False},
        {"activation": "sigmoid", "classes": "all", "batch": True},
    ):
        assert torch.autograd.gradcheck(
            lambda inp, kw=kw: LS(inp, t, ignore_index=IGNORE, reduction="none", **kw), (x,)
        )
    xh = torch.randn(3, 2, 3, 3, dtype=F64, requires_grad=True)
    th = (torch.rand(3, 2, 3, 3) < 0.5).to(F64)
    assert torch.autograd.gradcheck(lambda inp: LH(inp, th, batch=True, reduction="none"), (xh,))


def test_compiles_without_graph_breaks() -> None:
    x, t = inputs((2, 3, 4, 5), "softmax", "index", True, seed=9)
    for loss in (
        lf.LovaszSoftmaxLoss(ignore_index=IGNORE),
        lf.LovaszHingeLoss(batch=True, index_target=False),
    ):
        target = t if isinstance(loss, lf.LovaszSoftmaxLoss) else (t == 1).long()
        inp = x if isinstance(loss, lf.LovaszSoftmaxLoss) else x[:, :1]
        torch._dynamo.reset()
        compiled = torch.compile(loss, fullgraph=True, backend="eager")
        assert_close(compiled(inp, target), loss(inp, target), F64)


# --------------------------------------------------------------------------------------------------
# Peers: Berman's reference code (as shipped in SMP) and kornia.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_image", [False, True])
def test_berman_smp_softmax_parity(per_image: bool) -> None:
    sl = smp_losses()
    x, t = inputs((4, 4, 5, 6), "softmax", "index", True, seed=10)
    t[0][t[0] == 3] = 1  # class 3 absent from image 0
    t[2][t[2] == 2] = 0
    # Berman's code mixes float32 Jaccard steps into its dot products: float32 inputs only.
    x = x.float()
    peer = sl.LovaszLoss("multiclass", per_image=per_image, ignore_index=IGNORE)(x, t)
    if per_image:
        none = LS(x, t, ignore_index=IGNORE, reduction="none")
        present = torch.stack([(t == c).flatten(1).any(1) for c in range(4)], dim=1)
        # Berman averages the present classes of each image, then the images
        want = ((none * present).sum(1) / present.sum(1)).mean()
        mean_of_entries = LS(x, t, ignore_index=IGNORE)
        assert abs(float(mean_of_entries) - float(want)) > 1e-6  # the documented difference
    else:
        want = LS(x, t, ignore_index=IGNORE, batch=True)
    assert_close(want, peer, torch.float32)
    assert_close(want, peer.double(), torch.float32)


@pytest.mark.parametrize("per_image", [False, True])
def test_berman_smp_hinge_parity(per_image: bool) -> None:
    sl = smp_losses()
    g = torch.Generator().manual_seed(11)
    x = 2 * torch.randn(4, 1, 5, 6, generator=g)  # float32: see the softmax parity test
    t = (torch.rand(4, 5, 6, generator=g) < 0.4).long()
    t[1] = 0  # an image with an empty mask
    t = torch.where(torch.rand(t.shape, generator=g) < 0.2, torch.full_like(t, IGNORE), t)
    peer = sl.LovaszLoss("binary", per_image=per_image, ignore_index=IGNORE)(x, t)
    # SMP's "binary" mode takes (N, H, W) integer masks: the explicit mask reading here
    kw = {"batch": not per_image, "ignore_index": IGNORE, "index_target": False}
    assert_close(LH(x, t, **kw), peer, torch.float32)
    assert_close(LH(x.double(), t, **kw), peer, torch.float32)


def test_kornia_parity() -> None:
    kl = kornia_losses()
    x, t = inputs((3, 4, 5, 6), "softmax", "index", False, seed=12)
    t[0][t[0] == 3] = 1
    for w in (None, torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=F64)):
        # kornia: per image, every class, mean over images then classes
        peer = kl.lovasz_softmax_loss(x, t, weight=w)
        got = LS(x, t, classes="all", class_weight=w)
        assert_close(got, peer, F64, rtol=1e-10, atol=1e-12)
    xb = x[:, :1]
    tb = (t == 1).long()
    got = LH(xb, tb, index_target=False)  # kornia takes (N, H, W) integer masks
    assert_close(got, kl.lovasz_hinge_loss(xb, tb), F64, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Validation, module, registry.
# --------------------------------------------------------------------------------------------------


def test_validation_errors() -> None:
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    for exc, match, kw in (
        (ValueError, r"lovasz_softmax_loss: expected `classes` one of", {"classes": "some"}),
        (ValueError, r"lovasz_softmax_loss: expected `activation` one of", {"activation": "x"}),
        (TypeError, r"lovasz_softmax_loss: expected `batch` a bool", {"batch": 1}),
        (
            ValueError,
            r"lovasz_softmax_loss: expected `backend` 'triton' only",
            {"backend": "triton"},
        ),
    ):
        with pytest.raises(exc, match=match):
            LS(x, t, **kw)
    with pytest.raises(ValueError, match=r"lovasz_softmax_loss: expected `target` binary values"):
        LS(x, torch.rand(2, 3, 4), activation="sigmoid")
    with pytest.raises(ValueError, match=r"lovasz_hinge_loss: expected `target` binary values"):
        LH(x, torch.full((2, 3, 4), 0.5))
    with pytest.raises(ValueError, match=r"lovasz_hinge_loss: expected `target` class indices"):
        LH(x, torch.full((2, 4), 5))
    with pytest.raises(ValueError, match=r"lovasz_softmax_loss: expected `logits` at least 2"):
        LS(torch.randn(2, 1, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lovasz_hinge_loss: expected `logits` a tensor of shape"):
        LH(torch.randn(4), torch.zeros(4))


def test_modules_and_registry() -> None:
    from lossforge.registry import build_loss, get_loss

    assert get_loss("lovasz_softmax") is lf.LovaszSoftmaxLoss
    assert get_loss("lovasz_hinge") is lf.LovaszHingeLoss
    mod = build_loss({"type": "lovasz_softmax", "classes": "all", "class_weight": [1, 2, 3]})
    assert "class_weight" in dict(mod.named_buffers())
    assert "classes='all'" in repr(mod)
    x, t = inputs((2, 3, 4, 5), "softmax", "index", False, seed=13)
    assert_close(mod(x, t), LS(x, t, classes="all", class_weight=[1, 2, 3]), F64)


def test_one_channel_integer_target_is_never_guessed() -> None:
    """The contract's rule (docs/contract.md, "Targets"): next to one logit channel an integer
    target without the channel dimension may be a mask or class indices (0 = the channel), so
    it raises unless ``index_target`` says which; float and bool targets are masks."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 3, 4, generator=g, dtype=F64)
    m = torch.rand(2, 3, 4, generator=g) < 0.5
    for fn in (LH, lambda a, b, **kw: LS(a, b, activation="sigmoid", **kw)):
        with pytest.raises(ValueError, match="an explicit target for one logit channel"):
            fn(x, m.long())
        want = fn(x, m.unsqueeze(1).to(F64))
        assert_close(fn(x, m), want, F64)
        assert_close(fn(x, m.to(F64)), want, F64)
        assert_close(fn(x, m.long(), index_target=False), want, F64)
        assert_close(fn(x, (~m).long(), index_target=True), want, F64)  # 1 = background


# --------------------------------------------------------------------------------------------------
# The radix-sorted order (float32 on the CPU from 2^15 errors) against the float sort.
# --------------------------------------------------------------------------------------------------


def _both_orders(monkeypatch: pytest.MonkeyPatch, call, x: torch.Tensor):
    """(loss, gradient) by the integer-key order and by the float sort (the radix check off)."""
    import lossforge.functional.lovasz as lovasz

    out = []
    for radix in (True, False):
        monkeypatch.setattr(lovasz, "_radix_sort", lambda radix=radix: radix)
        leaf = x.detach().clone().requires_grad_(True)
        loss = call(leaf)
        (grad,) = torch.autograd.grad(loss.nansum(), leaf)
        out.append((loss.detach(), grad))
    return out


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_radix_order_matches_the_float_sort_softmax(
    monkeypatch: pytest.MonkeyPatch, batch: bool, ignore: bool
) -> None:
    """2 x 4 x 64 x 64 float32 logits (2^15 errors per call): the same losses and gradients as
    the float sort, and the float64 reference's within float32 rounding."""
    g = torch.Generator().manual_seed(40)
    x = 3 * torch.randn(2, 4, 64, 64, generator=g)
    t = torch.randint(0, 4, (2, 64, 64), generator=g)
    t[1][t[1] == 3] = 0  # class 3 absent from image 1
    if ignore:
        t[0, :10] = IGNORE
    kw = {"batch": batch, "ignore_index": IGNORE if ignore else None, "reduction": "none"}
    (radix, radix_grad), (plain, plain_grad) = _both_orders(
        monkeypatch, lambda z: LS(z, t, **kw), x
    )
    assert_close(radix, plain, torch.float32)
    torch.testing.assert_close(radix_grad, plain_grad, rtol=0, atol=0)  # ties in the same order
    assert_close(radix, LS(x.double(), t, **kw), torch.float32)


def test_radix_order_matches_the_float_sort_hinge_with_inf_and_nan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hinge errors above 1, +inf (a logit of -inf at a positive pixel) and NaN (value checks
    off) take the same places in both orders: NaN first (its entry's loss NaN), +inf next (a
    finite step of 0 at the top of an empty entry stays 0)."""
    g = torch.Generator().manual_seed(41)
    x = 4 * torch.randn(2, 2, 96, 96, generator=g)
    t = (torch.rand(2, 2, 96, 96, generator=g) < 0.3).float()
    x[0, 0, 0, 0] = float("nan")
    x[1, 1, 5, 5] = -float("inf")
    t[1, 1, 5, 5] = 1.0
    x[1, 0, 3, :] = -0.0
    with lf.value_checks(False):
        (radix, _), (plain, _) = _both_orders(monkeypatch, lambda z: LH(z, t, reduction="none"), x)
    assert torch.isnan(radix[0, 0]) and torch.isnan(plain[0, 0])
    torch.testing.assert_close(radix, plain, equal_nan=True)
    finite = x.clone()
    finite[0, 0, 0, 0] = 0.0
    finite[1, 1, 5, 5] = 0.0
    (r, r_grad), (p, p_grad) = _both_orders(monkeypatch, lambda z: LH(z, t, batch=True), finite)
    assert_close(r, p, torch.float32)
    torch.testing.assert_close(r_grad, p_grad, rtol=0, atol=0)


def test_radix_order_of_signed_zeros_nans_and_infinities(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order itself, on crafted rows of 2^14 errors: -0.0 ties with 0.0, a NaN of either sign
    sorts first (as the float sort puts NaN), +inf next, and no element leaves its row."""
    import lossforge.functional.lovasz as lovasz

    g = torch.Generator().manual_seed(42)
    errors = torch.rand(2, 1 << 14, generator=g) * 3.0
    errors[:, :64] = 0.0
    errors[0, 7] = -0.0
    errors[1, 9] = -0.0
    errors[0, 100] = float("nan")
    errors[0, 101] = -float("nan")
    errors[1, 200] = -float("nan")
    errors[1, 300] = float("inf")
    assert torch.signbit(errors[0, 101]) and torch.signbit(errors[0, 7])
    target = torch.arange(errors.numel(), dtype=torch.float32).view(errors.shape)
    got = []
    for radix in (True, False):
        monkeypatch.setattr(lovasz, "_radix_sort", lambda radix=radix: radix)
        got.append(lovasz._sorted_decreasing(errors, target))
    (m_radix, g_radix), (m_float, g_float) = got
    # the positions (carried by the target) in the same order; the errors equal, NaN included
    torch.testing.assert_close(g_radix, g_float, rtol=0, atol=0)
    torch.testing.assert_close(m_radix, m_float, rtol=0, atol=0, equal_nan=True)
    assert (g_radix[0] < (1 << 14)).all() and (g_radix[1] >= (1 << 14)).all()
    assert torch.isnan(m_radix[0, :2]).all() and torch.isnan(m_radix[1, 0])
    assert m_radix[1, 1] == float("inf")
