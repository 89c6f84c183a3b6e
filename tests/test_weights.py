"""Class weights from counts: each method against the papers' formulas, zero counts, normalisation,
input types and dtypes, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from reference import weights as ref

import lossforge as lf
from lossforge import class_weights

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: one intra-op thread avoids oversubscribing a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _close(got: torch.Tensor, want: list[float], rel: float = 1e-12) -> None:
    assert got.shape == (len(want),)
    for a, b in zip(got.tolist(), want, strict=True):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=0.0), (got.tolist(), want)


COUNTS = [10, 100, 1000]


def test_exported_at_top_level() -> None:
    assert lf.class_weights is class_weights
    assert "class_weights" in lf.__all__


def test_inverse_hand_values() -> None:
    _close(class_weights(np.array(COUNTS, dtype=np.float64), normalize=None), [0.1, 0.01, 0.001])
    _close(class_weights(COUNTS, normalize="max_one"), [1.0, 0.1, 0.01], rel=1e-6)
    _close(class_weights(COUNTS, normalize="sum_one"), [100 / 111, 10 / 111, 1 / 111], rel=1e-6)
    _close(class_weights(COUNTS), [300 / 111, 30 / 111, 3 / 111], rel=1e-6)  # mean one: sum to C
    _close(class_weights(torch.tensor(COUNTS, dtype=F64), normalize=None), ref.inverse(COUNTS))


def test_inverse_sqrt_hand_values() -> None:
    w = class_weights(
        torch.tensor([4.0, 16.0, 100.0], dtype=F64), method="inverse_sqrt", normalize=None
    )
    _close(w, [0.5, 0.25, 0.1])
    _close(
        class_weights(torch.tensor(COUNTS, dtype=F64), method="inverse_sqrt", normalize=None),
        ref.inverse_sqrt(COUNTS),
    )


def test_median_frequency_odd_and_even() -> None:
    # odd: freq = [10, 100, 1000] / 1110, median = 100/1110 -> weights [10, 1, 0.1]
    _close(
        class_weights(torch.tensor(COUNTS, dtype=F64), method="median", normalize=None),
        [10.0, 1.0, 0.1],
    )
    # even: counts [1, 2, 3, 4] (N = 10), median freq = (0.2 + 0.3) / 2 = 0.25
    w = class_weights(torch.tensor([1, 2, 3, 4], dtype=F64), method="median", normalize=None)
    _close(w, [2.5, 1.25, 0.25 / 0.3, 0.625])
    _close(w, ref.median_frequency([1, 2, 3, 4]))
    # not the lower median torch.median would return
    assert not math.isclose(w[0].item(), 0.2 / 0.1)


def test_enet_hand_values() -> None:
    w = class_weights(torch.tensor(COUNTS, dtype=F64), method="enet", normalize=None)
    total = 1110.0
    _close(
        w,
        [
            1 / math.log(1.02 + 10 / total),
            1 / math.log(1.02 + 100 / total),
            1 / math.log(1.02 + 1000 / total),
        ],
    )
    _close(w, ref.enet(COUNTS))
    _close(
        class_weights(torch.tensor(COUNTS, dtype=F64), method="enet", c=1.5, normalize=None),
        ref.enet(COUNTS, 1.5),
    )
    # bounded by 1 / ln(c) (a vanishing frequency)
    big = class_weights(torch.tensor([1, 10**9], dtype=F64), method="enet", normalize=None)
    assert big[0] < 1 / math.log(1.02)
    assert big[0] > 50


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999])
def test_effective_number_hand_values(beta: float) -> None:
    counts = [1, 5, 37, 400]
    w = class_weights(
        torch.tensor(counts, dtype=F64), method="effective_number", beta=beta, normalize=None
    )
    _close(w, ref.effective_number(counts, beta), rel=1e-9)
    _close(w, [(1 - beta) / (1 - beta**n) for n in counts])
    # Cui et al. normalisation: sum to the number of classes
    wn = class_weights(torch.tensor(counts, dtype=F64), method="effective_number", beta=beta)
    assert math.isclose(float(wn.sum()), len(counts), rel_tol=1e-12)


@pytest.mark.parametrize("beta", [1 - 1e-9, 1 - 1e-6, 0.999, 0.5])
def test_effective_number_is_exact_near_beta_one(beta: float) -> None:
    """(1 - beta) / (1 - beta^n) against 50-digit decimal arithmetic on the same float beta:
    within a few float64 ulps also for beta next to 1, where 1 - beta**n cancels (it lost
    8 digits at beta = 1 - 1e-9, n = 10)."""
    from decimal import Decimal, getcontext

    getcontext().prec = 50
    counts = [1.0, 10.0, 1000.0, 123456.0]
    w = class_weights(
        torch.tensor(counts, dtype=F64), method="effective_number", beta=beta, normalize=None
    )
    b = Decimal(beta)
    for got, n in zip(w.tolist(), counts, strict=True):
        want = (1 - b) / (1 - b ** int(n))
        assert abs(Decimal(got) / want - 1) < Decimal("1e-14"), (n, got, want)


def test_effective_number_limits() -> None:
    counts = torch.tensor([3.0, 30.0, 300.0], dtype=F64)
    uniform = class_weights(counts, method="effective_number", beta=0.0)
    _close(uniform, [1.0, 1.0, 1.0])
    near_inverse = class_weights(counts, method="effective_number", beta=1 - 1e-9)
    _close(near_inverse, class_weights(counts, method="inverse").tolist(), rel=1e-5)
    huge = class_weights(
        torch.tensor([1e12, 1.0], dtype=F64), method="effective_number", beta=0.999, normalize=None
    )
    _close(huge, [1 - 0.999, 1.0], rel=1e-9)  # beta^n underflows to 0: (1 - beta)


@pytest.mark.parametrize(
    "method", ["inverse", "inverse_sqrt", "median", "enet", "effective_number"]
)
def test_zero_counts_are_finite(method: str) -> None:
    counts = torch.tensor([0, 5, 50, 0, 500], dtype=F64)
    kw = dict(method=method, normalize=None, beta=0.99)
    as_one = class_weights(counts, zero_count="as_one", **kw)
    mx = class_weights(counts, zero_count="max", **kw)
    zero = class_weights(counts, zero_count="zero", **kw)
    for w in (as_one, mx, zero):
        assert torch.isfinite(w).all()
        assert (w >= 0).all()
    # the present classes keep their weights (N and the median of the others are unchanged)
    for w in (as_one, mx, zero):
        torch.testing.assert_close(w[[1, 2, 4]], zero[[1, 2, 4]], rtol=0, atol=0)
    assert zero[0] == 0
    assert zero[3] == 0
    assert mx[0] == mx[3] == zero.max()
    total = 555.0
    single = {
        "inverse": 1.0,
        "inverse_sqrt": 1.0,
        "median": (50 / total) / (1 / total),
        "enet": 1 / math.log(1.02 + 1 / total),
        "effective_number": 1.0,
    }[method]
    _close(as_one[[0, 3]], [single, single], rel=1e-12)
    # a count of one would give exactly that weight
    assert as_one[0] >= as_one[1]
    for w in (
        class_weights(counts, method=method),
        class_weights(counts, method=method, zero_count="zero"),
    ):
        assert torch.isfinite(w).all()
        assert math.isclose(float(w.sum()), 5.0, rel_tol=1e-12)


def test_normalize_options() -> None:
    counts = torch.tensor([7.0, 1.0, 30.0, 2.0], dtype=F64)
    raw = class_weights(counts, normalize=None)
    _close(class_weights(counts, normalize="mean_one"), (raw * 4 / raw.sum()).tolist())
    _close(class_weights(counts, normalize="sum_one"), (raw / raw.sum()).tolist())
    _close(class_weights(counts, normalize="max_one"), (raw / raw.max()).tolist())
    assert class_weights(counts, normalize="max_one").max() == 1.0


def test_input_types_dtype_and_device() -> None:
    want = class_weights([10, 100, 1000])
    assert want.dtype == torch.float32
    assert want.device.type == "cpu"
    for counts in (
        (10, 100, 1000),
        [10.0, 100.0, 1000.0],
        np.array([10, 100, 1000]),
        np.array([10, 100, 1000], dtype=np.int32),
        np.array([10, 100, 1000], dtype=np.float32),
        torch.tensor([10, 100, 1000]),
        torch.tensor([10, 100, 1000], dtype=torch.int32),
        torch.tensor([10.0, 100.0, 1000.0]),
        torch.tensor([10.0, 100.0, 1000.0], dtype=torch.float16),
    ):
        got = class_weights(counts)
        assert got.dtype == torch.float32, type(counts)
        torch.testing.assert_close(got, want)
    for counts in (np.array(COUNTS, dtype=np.float64), torch.tensor(COUNTS, dtype=F64)):
        got = class_weights(counts)
        assert got.dtype == F64
        torch.testing.assert_close(got.float(), want)
    # large integer counts (pixels) are computed in float64 before the cast
    big = class_weights(
        torch.tensor([2**40 + 1, 2**40], dtype=torch.int64), normalize=None, method="inverse"
    )
    assert big.dtype == torch.float32
    assert torch.isfinite(big).all()
    # a counts tensor that requires grad is read, not differentiated
    cw = class_weights(torch.tensor([1.0, 2.0], requires_grad=True))
    assert not cw.requires_grad


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12))
def test_properties(counts: list[int]) -> None:
    if not any(counts):
        with pytest.raises(ValueError, match="at least one positive count"):
            class_weights(counts)
        return
    for method in ("inverse", "inverse_sqrt", "median", "enet", "effective_number"):
        w = class_weights(torch.tensor(counts, dtype=F64), method=method)
        assert torch.isfinite(w).all()
        assert (w > 0).all()
        assert math.isclose(float(w.sum()), len(counts), rel_tol=1e-9)
        # rarer classes never get smaller weights (zero counts behave as a count of one)
        eff = [max(c, 1) for c in counts]
        order = sorted(range(len(counts)), key=lambda i: eff[i])
        ws = [float(w[i]) for i in order]
        assert all(a >= b * (1 - 1e-9) for a, b in zip(ws, ws[1:], strict=False)), (
            method,
            counts,
            w,
        )


def test_validation_errors() -> None:
    cases = [
        (
            ValueError,
            r"class_weights: expected `counts` non-negative values, got \[1.0, -2.0\]",
            [1, -2],
            {},
        ),
        (
            ValueError,
            r"class_weights: expected `counts` a 1-d sequence \(one count per class\), "
            r"got shape \(2, 2\)",
            torch.ones(2, 2),
            {},
        ),
        (ValueError, r"class_weights: expected `counts` a 1-d sequence", torch.tensor(3.0), {}),
        (
            ValueError,
            r"class_weights: expected `counts` at least one class, got an empty sequence",
            [],
            {},
        ),
        (ValueError, r"class_weights: expected `counts` at least one positive count", [0, 0], {}),
        (ValueError, r"class_weights: expected `counts` finite values", [1.0, float("nan")], {}),
        (
            ValueError,
            r"class_weights: expected `counts` finite values",
            np.array([1.0, np.inf]),
            {},
        ),
        (
            TypeError,
            r"class_weights: expected `counts` real \(integer or floating\) counts, "
            r"got dtype torch.bool",
            torch.tensor([True, False]),
            {},
        ),
        (
            TypeError,
            r"class_weights: expected `counts` real \(integer or floating\) counts",
            np.array(["a", "b"]),
            {},
        ),
        (TypeError, r"class_weights: expected `counts` a sequence of numbers", [1, "2"], {}),
        (TypeError, r"class_weights: expected `counts` a sequence of numbers", [True, 2], {}),
        (
            TypeError,
            r"class_weights: expected `counts` a 1-d tensor, array or sequence of numbers, got int",
            5,
            {},
        ),
        (
            TypeError,
            r"class_weights: expected `counts` a 1-d tensor, array or sequence of numbers, got str",
            "123",
            {},
        ),
        (
            ValueError,
            r"class_weights: expected `method` one of 'inverse', 'inverse_sqrt', 'median', "
            r"'enet', 'effective_number', got 'log'",
            COUNTS,
            {"method": "log"},
        ),
        (
            ValueError,
            r"class_weights: expected `normalize` one of 'mean_one', 'sum_one', 'max_one', "
            r"got 'sum_to_C'",
            COUNTS,
            {"normalize": "sum_to_C"},
        ),
        (
            ValueError,
            r"class_weights: expected `zero_count` one of 'as_one', 'max', 'zero'",
            COUNTS,
            {"zero_count": 0},
        ),
        (ValueError, r"class_weights: expected `beta` in \[0, 1\), got 1.0", COUNTS, {"beta": 1.0}),
        (
            ValueError,
            r"class_weights: expected `beta` in \[0, 1\), got -0.1",
            COUNTS,
            {"beta": -0.1},
        ),
        (TypeError, r"class_weights: expected `beta` a real number", COUNTS, {"beta": "0.9"}),
        (ValueError, r"class_weights: expected `c` in \(1, inf\], got 1.0", COUNTS, {"c": 1.0}),
        (ValueError, r"class_weights: expected `c` in \(1, inf\], got 0.5", COUNTS, {"c": 0.5}),
        (ValueError, r"class_weights: expected `c` a finite number", COUNTS, {"c": float("inf")}),
    ]
    for exc, match, counts, kw in cases:
        with pytest.raises(exc, match=match):
            class_weights(counts, **kw)


def test_feeds_the_losses() -> None:
    counts = [900, 90, 10]
    cw = class_weights(counts, method="enet")
    x = torch.randn(4, 3, 5, 5)
    t = torch.randint(0, 3, (4, 5, 5))
    loss = lf.dice_loss(x, t, class_weight=cw)
    mod = lf.DiceLoss(class_weight=cw.tolist())
    torch.testing.assert_close(mod(x, t), loss)


def test_counts_whose_sum_overflows_are_refused() -> None:
    """A sum of counts beyond float64 (it raised a bare ZeroDivisionError for "median")."""
    for method in ("inverse", "median", "enet"):
        with pytest.raises(ValueError, match=r"`counts` counts whose sum is finite"):
            class_weights([1e308, 1e308, 0.0], method=method)


# --------------------------------------------------------------------------------------------------
# class_counts: the counts from labels (FEATURES (d)-7)
# --------------------------------------------------------------------------------------------------


def test_class_counts_of_indices_match_a_plain_count() -> None:
    from collections import Counter

    gen = torch.Generator().manual_seed(0)
    maps = [torch.randint(0, 5, (2, 7, 9), generator=gen) for _ in range(3)]
    for m in maps:
        m[m == 4] = 255  # class 4 never appears: num_classes pads it
    want = Counter(v for m in maps for v in m.flatten().tolist() if v != 255)
    expected = torch.tensor([want[c] for c in range(5)])
    got = lf.class_counts((m for m in maps), num_classes=5, ignore_index=255)
    assert got.dtype == torch.int64 and torch.equal(got, expected)
    assert torch.equal(lf.class_counts(maps[0].flatten().tolist(), 5, ignore_index=255),
                       lf.class_counts(maps[0], 5, ignore_index=255))  # fmt: skip
    assert torch.equal(lf.class_counts(np.array([0, 2, 2])), torch.tensor([1, 0, 2]))
    # without num_classes: up to the largest label seen; batches of growing range add up
    assert torch.equal(
        lf.class_counts([torch.tensor([0, 1]), torch.tensor([3])]),
        torch.tensor([1, 1, 0, 1]),
    )


def test_class_counts_of_dense_targets_sum_the_other_dimensions() -> None:
    gen = torch.Generator().manual_seed(1)
    multi_hot = torch.rand(6, 4, generator=gen) < 0.4
    got = lf.class_counts(multi_hot)
    assert got.dtype == torch.int64 and got.tolist() == multi_hot.sum(0).tolist()
    soft = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    got = lf.class_counts([soft, soft], num_classes=3)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, 2 * soft.sum(dim=(0, 2, 3)))
    last = lf.class_counts(soft.movedim(1, -1), class_dim=-1)  # channels last
    torch.testing.assert_close(last, soft.sum(dim=(0, 2, 3)))


@pytest.mark.parametrize(
    ("labels", "kw", "message"),
    [
        (torch.tensor([0, -1, 1]), {}, "non-negative class indices \\(pass ignore_index"),
        (torch.tensor([0, 3]), {"num_classes": 3}, "class indices in \\[0, 3\\), got 3"),
        ([], {}, "at least one batch"),
        ([torch.tensor([0]), torch.tensor([[1.0]])], {}, "labels\\[1\\]` index labels"),
        (torch.rand(3), {}, "dense targets \\(N, C, ...\\) with a class dimension"),
        (torch.rand(2, 3), {"num_classes": 4}, "the labels' 3 classes, got 4"),
        (torch.tensor([[-1.0, 1.0]]), {}, "finite non-negative targets"),
        ([torch.rand(2, 3), torch.rand(2, 4)], {}, "3 classes as before"),
        (torch.tensor([255, 255]), {"ignore_index": 255}, "`num_classes` the number of classes"),
    ],
)
def test_class_counts_refuses_what_is_not_labels(labels, kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        lf.class_counts(labels, **kw)


def test_class_counts_feed_class_weights() -> None:
    counts = lf.class_counts(torch.tensor([0, 1, 1, 2, 2, 2]))
    torch.testing.assert_close(
        lf.class_weights(counts, method="inverse"),
        lf.class_weights([1, 2, 3], method="inverse"),
    )
    with pytest.raises(TypeError, match="labels\\[0\\]` a tensor of labels"):
        lf.class_counts([1.5, 2.5])


# --------------------------------------------------------------------------------------------------
# median_frequency_weights: Eigen & Fergus's frequencies over the images where a class appears
# --------------------------------------------------------------------------------------------------


def _median_frequency_reference(maps: list[torch.Tensor], c: int, ignore: int | None) -> list:
    """The published definition, written with Python loops: freq(c) = pixels of c / pixels of
    the images containing c; w = median over present classes / freq."""
    pixels = [0] * c
    support = [0] * c
    for image in (m for batch in maps for m in batch):
        values = [v for v in image.flatten().tolist() if v != ignore]
        for k in set(values):
            pixels[k] += values.count(k)
            support[k] += len(values)
    freq = {k: pixels[k] / support[k] for k in range(c) if pixels[k] > 0}
    f = sorted(freq.values())
    m = len(f) // 2
    med = f[m] if len(f) % 2 else 0.5 * (f[m - 1] + f[m])
    weights = {k: med / v for k, v in freq.items()}
    top = max(weights.values())
    return [weights.get(k, top) for k in range(c)]


def test_median_frequency_weights_match_the_published_definition() -> None:
    gen = torch.Generator().manual_seed(2)
    maps = []
    for _ in range(3):
        batch = torch.randint(0, 4, (4, 6, 5), generator=gen)
        batch[0][batch[0] == 3] = 1  # class 3 absent from some images: where the two differ
        batch[1, :2] = 255
        maps.append(batch)
    maps[0][2] = 5  # class 5 in one image only
    want = _median_frequency_reference(maps, 7, 255)  # class 6 never appears: "max"
    got = lf.median_frequency_weights(iter(maps), 7, ignore_index=255)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))
    one = lf.median_frequency_weights(torch.cat(maps), 7, ignore_index=255)
    torch.testing.assert_close(one, got)  # batches add up
    global_median = lf.class_weights(
        lf.class_counts(torch.cat(maps), 7, ignore_index=255), method="median", normalize=None
    )
    assert not torch.allclose(global_median, got)  # the global-frequency variant differs
    assert lf.median_frequency_weights(maps[0], 7, ignore_index=255, zero_count="zero")[6] == 0


def test_median_frequency_weights_know_where_the_images_are() -> None:
    """A single (H, W) map is one image, and a dataset's maps one image each (they were read as
    H one-row images: [1.0, 1.67, 0.83] for weights that are [0.4, 2.0, 1.0]); volumes and
    sequences say so with ``spatial_dims``; a map of any other rank is refused."""
    gen = torch.Generator().manual_seed(5)
    maps = [torch.randint(0, 4, (6, 5), generator=gen) for _ in range(4)]
    maps[0][maps[0] == 3] = 0  # class 3 absent from one image
    want = torch.tensor(_median_frequency_reference([maps], 4, None), dtype=torch.float32)
    torch.testing.assert_close(lf.median_frequency_weights(iter(maps), 4), want)
    torch.testing.assert_close(lf.median_frequency_weights(torch.stack(maps), 4), want)
    single = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 2, 2, 1], [0, 0, 2, 1]])
    torch.testing.assert_close(
        lf.median_frequency_weights(single, 3),
        torch.tensor(_median_frequency_reference([[single]], 3, None), dtype=torch.float32),
    )
    volume = torch.stack(maps[:3])  # one (D, H, W) volume
    torch.testing.assert_close(
        lf.median_frequency_weights(volume, 4, spatial_dims=3),
        lf.class_weights(lf.class_counts(volume, 4), method="median", normalize=None),
    )  # one image: the frequencies are the global ones
    torch.testing.assert_close(
        lf.median_frequency_weights(volume[None], 4, spatial_dims=3),
        lf.median_frequency_weights(volume, 4, spatial_dims=3),
    )
    seqs = torch.stack(maps).flatten(1)  # (N, L) sequences
    torch.testing.assert_close(lf.median_frequency_weights(seqs, 4, spatial_dims=1), want)
    with pytest.raises(ValueError, match=r"spatial_dims=2 .* got shape \(1, 3, 6, 5\)"):
        lf.median_frequency_weights(volume[None], 4)
    with pytest.raises(ValueError, match=r"`labels\[1\]` one label map"):
        lf.median_frequency_weights([maps[0], maps[1][0]], 4)
    with pytest.raises(ValueError, match="spatial_dims"):
        lf.median_frequency_weights(single, 3, spatial_dims=0)


@pytest.mark.parametrize(
    ("labels", "kw", "message"),
    [
        (torch.tensor([0, 1, 2]), {}, "one label map of spatial_dims=2 dimensions"),
        (torch.tensor([[0, 3]]), {}, "class indices in \\[0, 3\\), got 3"),
        (torch.full((2, 2), 255), {"ignore_index": 255}, "at least one class pixel"),
    ],
)
def test_median_frequency_weights_refuse_what_is_not_label_maps(labels, kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        lf.median_frequency_weights(labels, 3, **kw)
    with pytest.raises(TypeError, match="a tensor of class indices"):
        lf.median_frequency_weights(torch.rand(2, 3), 3)
    with pytest.raises(TypeError, match="a tensor of class indices"):
        lf.median_frequency_weights(torch.ones(2, 3, dtype=torch.bool), 3)
    maps = torch.tensor([[[0, 1]]])
    with pytest.raises(ValueError, match="median_frequency_weights: expected `normalize`"):
        lf.median_frequency_weights(maps, 3, normalize="bogus")
    with pytest.raises(ValueError, match="expected `zero_count` one of 'max', 'zero'"):
        lf.median_frequency_weights(maps, 3, zero_count="as_one")


def test_median_frequency_weights_skip_an_empty_batch() -> None:
    maps = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [2, 2]]])  # f = 5/8, 1/4, 2/4: median 1/2
    empty = torch.zeros((0, 2, 2), dtype=torch.int64)  # a loader's last, empty batch
    got = lf.median_frequency_weights([empty, maps], 3)
    torch.testing.assert_close(got, torch.tensor([0.8, 2.0, 1.0]))


def test_ignore_index_hint_only_without_ignore_index() -> None:
    with pytest.raises(ValueError, match="pass ignore_index"):
        lf.class_counts(torch.tensor([0, -1]), 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), got -1") as err:
        lf.class_counts(torch.tensor([0, -1, 255]), 3, ignore_index=255)
    assert "pass ignore_index" not in str(err.value)
