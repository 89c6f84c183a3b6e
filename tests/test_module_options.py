"""Module construction with per-class options given as NumPy arrays or empty sequences (found by
an audit of the module layer): an array (sklearn's ``compute_class_weight`` returns one) is a
sequence of numbers; an empty vector fails at construction, when a config is loaded, not at the
first forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _contract import assert_close
from _reliability import INFOS, example, name_of, params

import lossforge.nn as N
from lossforge.nn._base import _class_vector
from lossforge.registry import LossInfo


def _vector_options(info: LossInfo) -> list[str]:
    return [k for k, d in info.cls._domains.items() if _class_vector(d) is not None]


WITH_VECTORS = [info for info in INFOS if _vector_options(info)]


@pytest.mark.parametrize("info", WITH_VECTORS, ids=name_of)
def test_empty_per_class_vectors_fail_at_construction(info: LossInfo) -> None:
    for key in _vector_options(info):
        kw = {**params(info), key: []}
        if key == "priors":  # (logit adjustment takes class counts or priors)
            kw["class_counts"] = None
        with pytest.raises(ValueError, match=f"`{key}` at least one value.*got an empty sequence"):
            info.cls(**kw)
        kw[key] = torch.empty(0)
        with pytest.raises(ValueError, match=f"`{key}` at least one value"):
            info.cls(**kw)


@pytest.mark.parametrize(
    ("cls", "key", "values"),
    [
        (N.CrossEntropyLoss, "class_weight", [0.5, 1.0, 2.0, 1.5, 1.0]),
        (N.SigmoidFocalLoss, "alpha", [0.25, 0.5, 0.75, 0.5, 0.25]),
        (N.BinaryCrossEntropyWithLogitsLoss, "pos_weight", [1.0, 2.0, 3.0, 1.0, 0.5]),
        (N.BalancedSoftmaxLoss, "class_counts", [100.0, 50.0, 10.0, 5.0, 1.0]),
    ],
)
def test_numpy_arrays_are_sequences_of_numbers(cls, key, values) -> None:
    info = next(i for i in INFOS if i.cls is cls)
    x, y = example(info, n=4)
    c = x.shape[1]
    vals = (values * 4)[:c]
    base = params(info)
    from_list = cls(**{**base, key: vals})
    for arr in (np.array(vals), np.array(vals, dtype=np.float32), np.array(vals).astype(int) + 1):
        from_array = cls(**{**base, key: arr})
        assert torch.equal(
            getattr(from_array, key), torch.tensor(arr.tolist(), dtype=torch.float32)
        )
        if arr.dtype.kind == "f":
            assert_close(from_array(x, y), from_list(x, y))
    assert N.SigmoidFocalLoss(alpha=np.array(0.5)).alpha == 0.5  # a 0-d array is its number
    assert N.SigmoidFocalLoss(alpha=np.float32(0.5)).alpha == 0.5


def test_repr_is_what_the_user_wrote() -> None:
    """Float32 buffers print as the decimals that were given (not 0.10000000149011612), more than
    8 values as an unquoted shape, a NumPy string option as a plain string; GradNorm shows a
    non-default min_weight."""
    from lossforge.multitask import GradNorm

    focal = N.SigmoidFocalLoss(alpha=[0.1, 0.2, 0.3, 1 / 3])
    assert "alpha=[0.1, 0.2, 0.3, 0.33333334]," in repr(focal)
    assert torch.tensor(0.33333334).item() == focal.alpha[3].item()  # the shortest that rounds
    many = N.CrossEntropyLoss(class_weight=[0.1] * 10)
    assert "class_weight=tensor(shape=(10,))," in repr(many)
    exact = N.CrossEntropyLoss(class_weight=torch.tensor([0.1, 1 / 3], dtype=torch.float64))
    assert "class_weight=[0.1, 0.3333333333333333]," in repr(exact)
    ce = N.CrossEntropyLoss(reduction=np.str_("sum"))
    assert type(ce.reduction) is str and "reduction='sum'" in repr(ce)
    assert "min_weight=0.1" in repr(GradNorm(2, min_weight=0.1))
    assert "min_weight" not in repr(GradNorm(2))


def test_every_module_takes_every_configuration_keyword_of_its_functional() -> None:
    """CONTRACT: a module takes every keyword of its functional except the per-call ``weight``
    / ``avg_factor``, its per-batch inputs (``forward`` keywords such as OHEM's ``mask``) and
    the running state it keeps itself (GHM's ``bin_counts``). SeesawLoss, whose constructor is
    written by hand, lacked ``backend`` (found by a fuzzer)."""
    import inspect

    state = {"ghmc": {"bin_counts"}, "ghmr": {"bin_counts"}}
    for info in INFOS:
        sig = inspect.signature(info.cls.functional).parameters
        keywords = {n for n, p in sig.items() if p.kind == p.KEYWORD_ONLY}
        missing = keywords - set(info.params) - {"weight", "avg_factor"}
        missing -= set(info.cls.inputs) | state.get(info.name, set())
        assert not missing, (info.name, sorted(missing))


def test_seesaw_checks_its_initial_counts_in_every_value_check_mode() -> None:
    """Host counts cost no device read, so they are checked with value checks off too (they
    were cast to int64 unchecked: inf became -2**63, 0.5 became 0, -3 stayed)."""
    import lossforge

    for bad in ([float("inf"), 1, 1], [0.5, 2, 3], [-3.0, 1, 1]):
        with lossforge.value_checks(False), pytest.raises(ValueError, match="integer counts"):
            N.SeesawLoss(class_counts=bad)
    seesaw = N.SeesawLoss(class_counts=[5, 4, 3], backend="auto")
    assert seesaw.backend == "auto" and "backend='auto'" in repr(seesaw)


def test_host_options_are_checked_whatever_the_default_device() -> None:
    """A list option is built on the CPU and checked there, then placed on torch's default
    device: under ``with torch.device(...)`` (any accelerator; meta here) its values were not
    read (the check skips tensors off the CPU) and a negative or NaN weight was accepted."""
    with torch.device("meta"):
        with pytest.raises(ValueError, match="class_weight"):
            N.CrossEntropyLoss(class_weight=[-1.0, float("nan")])
        with pytest.raises(ValueError, match="integer counts"):
            N.SeesawLoss(class_counts=[-3, 2.5])
        ce = N.CrossEntropyLoss(class_weight=[1.0, 2.0])
        seesaw = N.SeesawLoss(class_counts=[3, 2])
    assert ce.class_weight.device.type == "meta"
    assert seesaw.cum_samples.device.type == "meta" and seesaw.cum_samples.dtype == torch.int64
    assert N.CrossEntropyLoss(class_weight=[1.0, 2.0]).class_weight.device.type == "cpu"


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (N.DiceLoss, {"smooth_nr": np.array(5.0)}, "smooth_nr"),
        (N.JaccardLoss, {"smooth_nr": np.array(5.0), "smooth_dr": np.array(1.0)}, "smooth_nr"),
        (N.TverskyLoss, {"smooth": np.array(1e-40)}, "smooth"),
    ],
)
def test_constraints_see_the_converted_options(cls, kwargs, match) -> None:
    """A module checks the constraint between its options on the values its domains converted
    (a 0-d NumPy array is a float), as the functional does: the NumPy form of a refused float
    was accepted at construction and failed at the first forward."""
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_a_forwarding_subclass_lists_its_own_keywords() -> None:
    """The documented subclass pattern (``__init__(self, *, scale=2.0, **kw)``): an unknown
    keyword's message lists the subclass's own keywords too and suggests them."""

    class MyL1(N.L1Loss):
        def __init__(self, *, scale: float = 2.0, **kw: object) -> None:
            super().__init__(**kw)
            self.scale = scale

    with pytest.raises(TypeError, match=r"MyL1: scale, reduction.*'scal' \(did you mean 'scale'"):
        MyL1(scal=3.0)
    assert MyL1(scale=3.0, reduction="sum").reduction == "sum"


def test_functional_per_class_options_take_arrays_and_keep_float64() -> None:
    """The functionals take a NumPy array where they take a list (the modules did, the
    functionals refused it), and a list for float64 inputs keeps its float64 values (it was
    rounded to float32 first: cross-entropy with class weights differed from PyTorch's by 1e-8
    relative; found by a fuzzer)."""
    import lossforge.functional as F

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    cw = [0.1, 0.3, 0.7, 1.1, 1.3]
    want = torch.nn.functional.cross_entropy(x, y, weight=torch.tensor(cw, dtype=torch.float64))
    assert F.cross_entropy(x, y, class_weight=cw) == want  # exactly: no float32 rounding
    assert F.cross_entropy(x, y, class_weight=np.array(cw)) == want
    dense = torch.zeros(6, 5, dtype=torch.float64)
    counts = [50.0, 20.0, 7.0, 3.0, 1.0]
    for name, key, values in (
        ("sigmoid_focal_loss", "alpha", [0.25, 0.5, 0.1, 0.9, 0.3]),
        ("binary_cross_entropy_with_logits", "pos_weight", [1.0, 2.0, 0.5, 3.0, 1.5]),
    ):
        fn = getattr(F, name)
        ref = fn(x, dense, **{key: torch.tensor(values, dtype=torch.float64)})
        assert fn(x, dense, **{key: np.array(values)}) == ref
        assert fn(x, dense, **{key: values}) == ref
    for name in ("balanced_softmax_loss", "logit_adjusted_loss", "ldam_loss"):
        fn = getattr(F, name)
        ref = fn(x, y, class_counts=torch.tensor(counts, dtype=torch.float64))
        assert fn(x, y, class_counts=np.array(counts)) == ref
        assert fn(x, y, class_counts=counts) == ref


def test_review_fixes_of_the_numpy_and_float64_options() -> None:
    """A number pos_weight keeps a float64 input's precision; 0-d arrays are numbers for alpha
    and pos_weight; a bool array is refused as weights; Seesaw takes an array of counts and
    refuses counts beyond int64; a misspelled keyword of a loss with a constraint is reported
    as the misspelling, not as the constraint."""
    import lossforge.functional as F

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(4, 3, dtype=torch.float64)
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        x, zeros, pos_weight=torch.tensor(0.1, dtype=torch.float64)
    )
    assert F.binary_cross_entropy_with_logits(x, zeros, pos_weight=0.1) == want
    assert F.binary_cross_entropy_with_logits(x, zeros, pos_weight=np.array(0.1)) == want
    assert F.sigmoid_focal_loss(x, zeros, alpha=np.array(0.25)) == F.sigmoid_focal_loss(
        x, zeros, alpha=0.25
    )
    with pytest.raises(TypeError, match="expected `class_weight` a real array, got dtype bool"):
        F.cross_entropy(x, torch.tensor([0, 1, 2, 0]), class_weight=np.array([True, False, True]))
    assert N.SeesawLoss(class_counts=np.array([3, 4, 5])).cum_samples.tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="integer counts"):
        N.SeesawLoss(class_counts=[1e19, 1.0])
    with pytest.raises(TypeError, match="unknown 'prior' \\(did you mean 'priors'\\?\\)"):
        F.logit_adjusted_loss(x, torch.tensor([0, 1, 2, 0]), prior=[0.2, 0.3, 0.5])


def test_pos_weight_of_any_shape_from_nested_lists() -> None:
    """A (C, 1, 1) pos_weight for (N, C, H, W) logits, written as nested lists (a TOML array of
    arrays) or a 3-d NumPy array: taken as the tensor would be (both were refused, though a 2-d
    tensor is accepted); ragged nesting and bools are refused."""
    import lossforge.functional as LF

    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 2, 4, 4, generator=gen), torch.rand(3, 2, 4, 4, generator=gen)
    want = LF.binary_cross_entropy_with_logits(
        x, t, pos_weight=torch.tensor([1.0, 2.0]).view(2, 1, 1)
    )
    for pw in ([[[1.0]], [[2.0]]], np.array([1.0, 2.0]).reshape(2, 1, 1)):
        assert_close(LF.binary_cross_entropy_with_logits(x, t, pos_weight=pw), want)
        module = N.BinaryCrossEntropyWithLogitsLoss(pos_weight=pw)
        assert module.pos_weight.shape == (2, 1, 1)
        assert_close(module(x, t), want)
        assert_close(
            LF.sigmoid_focal_loss(x, t, pos_weight=pw),
            LF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor([1.0, 2.0]).view(2, 1, 1)),
        )
    for bad in ([[[1.0]], [2.0]], [[[True]], [[2.0]]]):
        with pytest.raises(TypeError, match="pos_weight"):
            LF.binary_cross_entropy_with_logits(x, t, pos_weight=bad)
        with pytest.raises(TypeError, match="pos_weight"):
            N.BinaryCrossEntropyWithLogitsLoss(pos_weight=bad)


def test_loss_weight_takes_a_0d_array_as_gamma_does() -> None:
    """A 0-d NumPy loss_weight (a config read with NumPy) was refused while gamma took one."""
    module = N.SigmoidFocalLoss(gamma=np.array(2.0), loss_weight=np.array(0.5))
    assert module.loss_weight == 0.5 and type(module.loss_weight) is float
    with pytest.raises(TypeError, match="loss_weight"):
        N.SigmoidFocalLoss(loss_weight=np.array([0.5, 1.0]))


# From a mutation audit of nn/_base.py: each kills a mutation the suite let through.


def test_a_tensor_option_is_copied_not_aliased() -> None:
    w = torch.tensor([1.0, 2.0, 3.0])
    m = N.CrossEntropyLoss(class_weight=w)
    w[0] = 10.0  # the caller reuses its tensor
    assert m.class_weight.tolist() == [1.0, 2.0, 3.0]


def test_an_integer_tensor_option_becomes_float() -> None:
    m = N.CrossEntropyLoss(class_weight=torch.tensor([1, 2, 3]))
    assert m.class_weight.dtype == torch.float32
    assert m.class_weight.tolist() == [1.0, 2.0, 3.0]


def test_an_option_that_may_be_a_number_set_to_none_can_become_a_number() -> None:
    m = N.SoftmaxFocalLoss(alpha=None)
    m.alpha = 0.5  # a plain attribute, not a None buffer that refuses a float
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(
        m(x, t), __import__("lossforge.functional").functional.softmax_focal_loss(x, t, alpha=0.5)
    )


def test_repr_shows_eight_values_and_no_default_loss_weight() -> None:
    m = N.CrossEntropyLoss(class_weight=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert "class_weight=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]" in repr(m)
    assert "loss_weight" not in repr(m)
    assert "loss_weight=2.0" in repr(N.CrossEntropyLoss(loss_weight=2.0))


def test_a_forwarding_subclass_with_a_required_keyword_builds() -> None:
    class Scaled(N.SigmoidFocalLoss):
        def __init__(self, *, scale: float, **kw) -> None:
            super().__init__(**kw)
            self.scale = scale

    m = Scaled(scale=3.0, gamma=1.0)
    assert (m.scale, m.gamma) == (3.0, 1.0)


@pytest.mark.parametrize(
    ("values", "match"),
    [([-1.0, 1.0], "finite non-negative"), ([[1.0, 2.0]], "1-d"), ([], "at least one value")],
)
def test_a_learned_option_is_checked_like_a_buffer(values: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        N.CrossEntropyLoss(class_weight=torch.nn.Parameter(torch.tensor(values)))


def test_an_unknown_forward_keyword_is_named_with_the_valid_ones() -> None:
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    with pytest.raises(TypeError, match=r"forward keywords.*got mask"):
        N.CrossEntropyLoss()(x, t, mask=torch.ones(4))
