"""Registry and configuration: build_loss, TOML, mmengine's MODELS registry, Hydra ``_target_``."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from typing import Any

import pytest
import torch

import lossforge.nn as lnn
from lossforge._checks import OptionalDependencyError
from lossforge.integrations.hydra import target_of, to_hydra
from lossforge.registry import (
    build_loss,
    build_loss_from_toml,
    get_loss,
    list_losses,
    register_loss,
)

# Values for constructor parameters without a default.
REQUIRED = {"class_counts": [30.0, 10.0, 3.0], "num_classes": 3}
# Losses whose defaulted parameters still need one of them set (documented in their docstrings).
NEEDS = {"logit_adjusted": {"class_counts": [30.0, 10.0, 3.0]}}

NAMES = [info.name for info in list_losses()]


def _required(info: Any) -> dict[str, Any]:
    # A loss declares the parameters its example needs (Traits.params); NEEDS covers third-party
    # losses without traits.
    out = dict(info.traits.params) if info.traits is not None else dict(NEEDS.get(info.name, {}))
    for name, default in info.params.items():
        if default is inspect.Parameter.empty:
            if name not in REQUIRED:
                pytest.fail(f"{info.name}: no test value for the required parameter {name!r}")
            out[name] = REQUIRED[name]
    return out


def test_registry_is_nonempty_and_sorted() -> None:
    assert len(NAMES) >= 5
    assert sorted(NAMES) == NAMES
    for info in list_losses():
        assert issubclass(info.cls, lnn.Loss)
        assert info.cls.registry_name == info.name
        assert info.summary, f"{info.cls.__name__} has no docstring summary"


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_builds_with_defaults(name: str) -> None:
    info = next(i for i in list_losses() if i.name == name)
    loss = build_loss({"type": name, **_required(info)})
    assert type(loss) is info.cls
    assert loss.reduction == "mean"
    assert loss.loss_weight == 1.0
    # By class name too, and with the "lossforge." prefix used in mmengine-style configs.
    assert type(build_loss({"type": info.cls.__name__, **_required(info)})) is info.cls
    assert get_loss("lossforge." + name) is info.cls
    repr(loss)


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_builds_with_reduction_and_weight(name: str) -> None:
    info = next(i for i in list_losses() if i.name == name)
    loss = build_loss({"type": name, "reduction": "sum", "loss_weight": 0.5, **_required(info)})
    assert loss.reduction == "sum"
    assert loss.loss_weight == 0.5


def test_build_from_name_string() -> None:
    assert type(build_loss("smooth_l1")) is lnn.SmoothL1Loss


def test_build_passes_parameters() -> None:
    loss = build_loss({"type": "smooth_l1", "beta": 0.5, "loss_weight": 2.0})
    assert loss.beta == 0.5
    assert loss.loss_weight == 2.0
    x, y = torch.tensor([0.25, 3.0]), torch.zeros(2)
    torch.testing.assert_close(loss(x, y), 2.0 * lnn.SmoothL1Loss(beta=0.5)(x, y))


def test_unknown_name_lists_valid_ones() -> None:
    # The error names what the user called and wrote (build_loss, `type`), not an internal helper,
    # and suggests the close names.
    with pytest.raises(ValueError, match="build_loss: expected `type` a registered loss") as err:
        build_loss({"type": "focal_typo"})
    for name in NAMES:
        assert name in str(err.value)
    assert "did you mean" in str(err.value) and "'sigmoid_focal'" in str(err.value)
    with pytest.raises(TypeError, match="build_loss: expected `type`"):
        build_loss({"type": 3})


def test_near_misses_are_suggested() -> None:
    """A name one word short of a registered one is offered first (the word-containment rule
    offered only the shorter names it contains), and a misspelled parameter gets its closest
    spelling, as a constructor's message gives it."""
    with pytest.raises(ValueError, match="did you mean 'binary_cross_entropy_with_logits'"):
        build_loss({"type": "binary_cross_entropy_logits"})
    with pytest.raises(ValueError, match=r"unknown 'betta' \(did you mean 'beta'\?\)"):
        build_loss({"type": "smooth_l1", "betta": 1.0})


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown 'gama'") as err:
        build_loss({"type": "smooth_l1", "gama": 2.0})
    assert "beta" in str(err.value)
    assert "loss_weight" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "exc", "match"),
    [
        ({"beta": 1.0}, ValueError, "'type' key"),
        (3, TypeError, "mapping"),
        ({"type": 3}, TypeError, "a string"),
        ({"type": "smooth_l1", "beta": -1.0}, ValueError, "beta"),
        ({"type": "l1", "reduction": "avg"}, ValueError, "reduction"),
    ],
)
def test_bad_specs(spec: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        build_loss(spec)


def test_class_weight_lists_build() -> None:
    loss = build_loss({"type": "cross_entropy", "class_weight": [1.0, 2.0, 0.5]})
    assert isinstance(loss.class_weight, torch.Tensor)
    out = loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]))
    assert out.shape == ()


def test_toml_text_file_and_table(tmp_path: Any) -> None:
    text = 'type = "smooth_l1"\nbeta = 0.25\nloss_weight = 3.0\n'
    assert build_loss_from_toml(text).beta == 0.25
    path = tmp_path / "loss.toml"
    path.write_text(
        '[train.loss]\ntype = "cross_entropy"\nclass_weight = [1.0, 2.0]\nlabel_smoothing = 0.1\n'
    )
    loss = build_loss_from_toml(path, table="train.loss")
    assert type(loss) is lnn.CrossEntropyLoss
    assert loss.label_smoothing == 0.1
    torch.testing.assert_close(loss.class_weight, torch.tensor([1.0, 2.0]))
    assert build_loss_from_toml(str(path), table="train.loss").label_smoothing == 0.1


def test_toml_errors(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="valid TOML"):
        build_loss_from_toml("type = = 3\n")
    with pytest.raises(ValueError, match="readable TOML file"):
        build_loss_from_toml(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="table present"):
        build_loss_from_toml('[loss]\ntype = "l1"\n', table="model")
    with pytest.raises(ValueError, match="unknown 'betaa'"):
        build_loss_from_toml('type = "smooth_l1"\nbetaa = 1.0\n')
    # a table name that reaches a value, not a table, would drop the configuration around it
    with pytest.raises(ValueError, match=r"`table` the name of a table.*'loss.type', a str"):
        build_loss_from_toml('[loss]\ntype = "l1"\nloss_weight = 2.0\n', table="loss.type")


def test_composite_without_its_required_parameter() -> None:
    """``loss_sum`` without ``losses`` is the same TypeError the loss modules give for a missing
    required parameter (it was Python's bare "missing 1 required positional argument")."""
    with pytest.raises(TypeError, match=r"^LossSum: expected `losses` a value \(it has no default"):
        build_loss({"type": "loss_sum"})


def test_toml_none_is_null_where_the_parameter_takes_none() -> None:
    """TOML has no null: ``"none"`` is None where the parameter takes None and not the string
    (focal's alpha could not be turned off from TOML); a choice or reduction named "none" stays
    a string; nested loss_sum specs and compare's [[loss]] tables too."""
    from lossforge.cli.experiment import parse_experiment

    focal = build_loss_from_toml('type = "sigmoid_focal"\nalpha = "none"\nreduction = "none"')
    assert focal.alpha is None and focal.reduction == "none"
    assert build_loss_from_toml('type = "dice"\nactivation = "none"').activation == "none"
    ce = build_loss_from_toml('type = "binary_cross_entropy_with_logits"\nignore_index = "none"')
    assert ce.ignore_index is None
    with pytest.raises(TypeError, match="label_smoothing"):
        build_loss_from_toml('type = "cross_entropy"\nlabel_smoothing = "none"')
    total = build_loss_from_toml(
        'type = "loss_sum"\n[losses.a]\ntype = "sigmoid_focal"\nalpha = "none"\n'
    )
    assert total.losses["a"].alpha is None
    exp = parse_experiment({"loss": [{"type": "sigmoid_focal", "alpha": "none"}]})
    assert exp.losses[0].params == {"alpha": None}


def test_toml_none_reaches_the_hand_written_modules() -> None:
    """Seesaw and GHM-C declare no domains (their constructors are written by hand): ``"none"``
    is None where their constructor's annotation takes None (it reached them as the string: a
    TypeError for ignore_index, and "both" for Seesaw's num_classes with class_counts)."""
    seesaw = build_loss_from_toml('type = "seesaw"\nnum_classes = 3\nignore_index = "none"')
    assert seesaw.ignore_index is None
    ghmc = build_loss_from_toml('type = "ghmc"\nignore_index = "none"')
    assert ghmc.ignore_index is None
    counted = build_loss_from_toml(
        'type = "seesaw"\nnum_classes = "none"\nclass_counts = [10, 5, 1]'
    )
    assert counted.cum_samples.tolist() == [10, 5, 1]
    assert build_loss_from_toml('type = "ghmc"\nreduction = "none"').reduction == "none"


def test_toml_path_holding_an_equals_sign(tmp_path: Any) -> None:
    """Hydra's run directories hold "=" (runs/lr=0.1/): such a path is a file, not TOML text,
    whether it exists or not; one line of TOML text is still text."""
    folder = tmp_path / "lr=0.1"
    folder.mkdir()
    path = folder / "train.toml"
    path.write_text('[model.loss]\ntype = "cross_entropy"\nignore_index = 255\n')
    assert build_loss_from_toml(str(path), table="model.loss").ignore_index == 255
    with pytest.raises(ValueError, match="readable TOML file"):
        build_loss_from_toml(str(tmp_path / "lr=0.2" / "train.toml"))
    assert build_loss_from_toml('type = "smooth_l1"').beta == 1.0


def test_register_loss_third_party() -> None:
    class MyLoss(lnn.Loss):
        """A third-party loss."""

        registry_name = "test_config_my_loss"

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self._scale((x - y).abs().mean())

    register_loss("test_config_my_loss", MyLoss)
    register_loss("test_config_my_loss", MyLoss)  # idempotent for the same class
    assert type(build_loss({"type": "test_config_my_loss", "loss_weight": 2.0})) is MyLoss
    with pytest.raises(ValueError, match="taken by MyLoss"):
        register_loss("test_config_my_loss", lnn.L1Loss)
    from lossforge import registry

    del registry._REGISTRY["test_config_my_loss"]


def test_register_subclass_forwarding_kwargs() -> None:
    """A third-party subclass whose constructor forwards ``**kwargs`` to a lossforge module takes
    the module's parameters through ``build_loss`` and shows them in ``list_losses`` (they were
    refused as unknown)."""

    class Scaled(lnn.SigmoidFocalLoss):
        def __init__(self, *, scale: float = 2.0, **kw: Any) -> None:
            super().__init__(**kw)
            self.scale = scale

    register_loss("test_config_scaled_focal", Scaled)
    try:
        built = build_loss({"type": "test_config_scaled_focal", "gamma": 1.0, "scale": 3.0})
        assert type(built) is Scaled and built.gamma == 1.0 and built.scale == 3.0
        (info,) = [i for i in list_losses() if i.name == "test_config_scaled_focal"]
        assert list(info.params)[:3] == ["scale", "alpha", "gamma"]
        assert info.params["gamma"] == 2.0
        with pytest.raises(ValueError, match="unknown 'scal'"):
            build_loss({"type": "test_config_scaled_focal", "scal": 2.0})
        # Hydra's target is the class's own import path, not a lossforge.nn name it lacks
        assert target_of("test_config_scaled_focal") == f"{__name__}.{Scaled.__qualname__}"
        assert target_of("sigmoid_focal") == "lossforge.nn.SigmoidFocalLoss"
    finally:
        from lossforge import registry

        del registry._REGISTRY["test_config_scaled_focal"]


# --------------------------------------------------------------------------------------------------
# mmengine
# --------------------------------------------------------------------------------------------------


def test_mmengine_missing_raises_optional_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossforge.integrations import mmengine as adapter

    monkeypatch.setitem(sys.modules, "mmengine", None)
    monkeypatch.setitem(sys.modules, "mmengine.registry", None)
    with pytest.raises(OptionalDependencyError, match="lossforge\\[mmengine\\]"):
        adapter.register_all()


def test_mmengine_registry() -> None:
    pytest.importorskip("mmengine")
    from mmengine.registry import MODELS, Registry

    from lossforge.integrations.mmengine import SCOPE, register_all

    child = register_all()
    assert child is register_all()  # idempotent, reused
    assert child.scope == SCOPE
    assert child.parent is MODELS
    focal = MODELS.build({"type": "lossforge.SigmoidFocalLoss", "gamma": 1.0})
    assert type(focal) is lnn.SigmoidFocalLoss
    assert focal.gamma == 1.0
    ce = MODELS.build(
        {"type": "lossforge.cross_entropy", "class_weight": [1.0, 2.0], "loss_weight": 0.5}
    )
    assert type(ce) is lnn.CrossEntropyLoss
    assert ce.loss_weight == 0.5
    for info in list_losses():
        assert child.get(info.cls.__name__) is info.cls
    with pytest.raises(KeyError):
        MODELS.build({"type": "lossforge.NoSuchLoss"})
    # A downstream registry (as mmdetection's MODELS) gets its own lossforge child.
    downstream = Registry("model", parent=MODELS, scope="test_config_downstream")
    sub = register_all(downstream)
    assert sub.parent is downstream
    assert type(downstream.build({"type": "lossforge.L1Loss"})) is lnn.L1Loss
    with pytest.raises(TypeError, match="mmengine Registry"):
        register_all(object())


def test_mmengine_forward_keywords() -> None:
    """mmdetection calls loss(pred, target, weight, avg_factor=..., reduction_override=...)."""
    pytest.importorskip("mmengine")
    from mmengine.registry import MODELS

    import lossforge.integrations.mmengine  # noqa: F401  (custom_imports does exactly this)

    loss = MODELS.build({"type": "lossforge.L1Loss", "loss_weight": 2.0})
    pred, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    w = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(loss(pred, target, w, avg_factor=2.0), torch.tensor(3.0))
    torch.testing.assert_close(loss(pred, target, reduction_override="sum"), torch.tensor(20.0))


# --------------------------------------------------------------------------------------------------
# Hydra
# --------------------------------------------------------------------------------------------------


def test_to_hydra_without_hydra() -> None:
    cfg = to_hydra({"type": "sigmoid_focal", "gamma": 2.0})
    assert cfg == {"_target_": "lossforge.nn.SigmoidFocalLoss", "_convert_": "all", "gamma": 2.0}
    assert target_of("SmoothL1Loss") == "lossforge.nn.SmoothL1Loss"
    with pytest.raises(ValueError, match="'type' key"):
        to_hydra({"gamma": 2.0})


def test_to_hydra_takes_every_build_loss_spec() -> None:
    """``loss_sum`` too (it refused the combinator ``build_loss`` builds), its nested specs kept
    for ``LossSum`` to build; an unknown name suggests the combinator as well."""
    spec = {"type": "loss_sum", "losses": {"a": "l1", "b": {"type": "smooth_l1", "beta": 0.5}}}
    cfg = to_hydra(spec)
    assert cfg == {"_target_": "lossforge.nn.LossSum", "_convert_": "all", "losses": spec["losses"]}
    mod, _, attr = cfg["_target_"].rpartition(".")
    assert getattr(sys.modules[mod], attr) is lnn.LossSum
    with pytest.raises(ValueError, match="to_hydra: expected `type`.*did you mean 'loss_sum'"):
        to_hydra({"type": "loss_summ"})
    with pytest.raises(ValueError, match="build_loss: expected `type`.*did you mean 'loss_sum'"):
        build_loss({"type": "loss_summ", "losses": {"a": "l1"}})
    if importlib.util.find_spec("hydra") is not None:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        built = instantiate(OmegaConf.create(cfg))
        x, y = torch.randn(3, 2), torch.randn(3, 2)
        torch.testing.assert_close(built(x, y), build_loss(spec)(x, y))


@pytest.mark.parametrize("name", NAMES)
def test_hydra_target_paths_resolve(name: str) -> None:
    mod, _, attr = target_of(name).rpartition(".")
    assert getattr(sys.modules[mod], attr) is get_loss(name)


def test_hydra_instantiate_module_and_partial() -> None:
    pytest.importorskip("hydra")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import lossforge.functional as LF

    cfg = OmegaConf.create({"_target_": "lossforge.nn.SigmoidFocalLoss", "gamma": 2.0})
    focal = instantiate(cfg)
    assert type(focal) is lnn.SigmoidFocalLoss
    assert focal.gamma == 2.0
    # Lists from YAML (class weights) with _convert_: all, as to_hydra writes it.
    yaml = (
        "_target_: lossforge.nn.CrossEntropyLoss\n_convert_: all\nclass_weight: [1.0, 2.0, 0.5]\n"
    )
    ce = instantiate(OmegaConf.create(yaml))
    torch.testing.assert_close(ce.class_weight, torch.tensor([1.0, 2.0, 0.5]))
    ce2 = instantiate(
        OmegaConf.create(to_hydra({"type": "cross_entropy", "class_weight": [1.0, 2.0, 0.5]}))
    )
    torch.testing.assert_close(ce2.class_weight, ce.class_weight)
    # Without _convert_, Hydra passes an OmegaConf ListConfig: modules accept any sequence.
    raw = "_target_: lossforge.nn.CrossEntropyLoss\nclass_weight: [1.0, 2.0, 0.5]\n"
    ce3 = instantiate(OmegaConf.create(raw))
    torch.testing.assert_close(ce3.class_weight, ce.class_weight)
    # _partial_ for functionals.
    fn = instantiate(
        {"_target_": "lossforge.functional.smooth_l1_loss", "_partial_": True, "beta": 0.5}
    )
    x, y = torch.tensor([0.25, 3.0]), torch.zeros(2)
    torch.testing.assert_close(fn(x, y), LF.smooth_l1_loss(x, y, beta=0.5))


# From a mutation audit of registry.py.


def test_spelling_suggestions_are_at_most_three() -> None:
    # "entropy" is a word of seven registered names, none of which is "entropy" alone
    with pytest.raises(ValueError, match="did you mean") as err:
        build_loss("entropy_xyz")
    hint = str(err.value).rsplit("did you mean", 1)[1]
    assert hint.count("'") == 2 * 3


def test_register_subclass_not_forwarding_takes_only_its_own_keywords() -> None:
    class Fixed(lnn.Loss):
        def __init__(self, *, scale: float = 2.0) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.scale * (x - y).abs().mean()

    register_loss("test_config_fixed", Fixed)
    try:
        (info,) = [i for i in list_losses() if i.name == "test_config_fixed"]
        assert list(info.params) == ["scale"]
        with pytest.raises(ValueError, match="unknown 'reduction'"):
            build_loss({"type": "test_config_fixed", "reduction": "sum"})
    finally:
        del __import__("lossforge.registry").registry._REGISTRY["test_config_fixed"]


def _registry_module():  # noqa: ANN202
    import lossforge.registry

    return lossforge.registry
