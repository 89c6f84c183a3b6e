"""Errors on the registry and configuration paths name what the user called and wrote (issue #14,
section 4): ``build_loss`` / ``build_loss_from_toml`` / the module class and the key of the spec,
never an internal helper (``get_loss``, ``bind``, ...) or Python's anonymous argument errors.

The sweep: every registered loss, every constructor parameter given a value of the wrong kind,
an unknown key, a missing required key, through ``build_loss`` and the module constructor.
"""

from __future__ import annotations

from typing import Any

import pytest
from _reliability import INFOS, name_of, params

from lossforge.registry import LossInfo, build_loss, build_loss_from_toml

#: Words that would leak the implementation into a user-facing message.
INTERNAL = (
    "get_loss",
    "_fill",
    "bind",
    "_set_option",
    "wrapper",
    "signature",
    "`name`",
    "positional",
)
JUNK: list[Any] = [{"junk": 1}, "junk", object()]


def _message(call: Any) -> str:
    with pytest.raises((ValueError, TypeError)) as err:
        call()
    msg = str(err.value)
    for word in INTERNAL:
        assert word not in msg, msg
    return msg


def _spec(info: LossInfo, key: str, value: Any) -> dict[str, Any]:
    spec = {"type": info.name, **params(info), key: value}
    if key == "priors":
        spec["class_counts"] = None  # exactly one of the two
    return spec


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_every_parameter_error_names_the_class_and_the_key(info: LossInfo) -> None:
    owner = info.cls.__name__
    for key in info.params:
        for junk in JUNK:
            msg = _message(lambda key=key, junk=junk: build_loss(_spec(info, key, junk)))
            assert msg.startswith(f"{owner}: expected `{key}` "), msg


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_unknown_and_missing_keys(info: LossInfo) -> None:
    owner = info.cls.__name__
    msg = _message(lambda: build_loss({"type": info.name, **params(info), "gama": 2.0}))
    assert msg.startswith("build_loss: expected `parameters` parameters of " + owner), msg
    assert "'gama'" in msg
    msg = _message(lambda: info.cls(**params(info), gama=2.0))
    assert msg.startswith(f"{owner}: expected `keywords` keywords of {owner}: "), msg
    assert "unknown 'gama'" in msg
    for key in params(info):  # the parameters the example needs are the required ones
        partial = {k: v for k, v in params(info).items() if k != key}
        msg = _message(lambda partial=partial: build_loss({"type": info.name, **partial}))
        assert msg.startswith(f"{owner}: expected `{key}` "), msg


def test_registry_level_messages() -> None:
    cases = [
        ({"type": "focal"}, "build_loss: expected `type` a registered loss name"),
        ({"type": 3}, "build_loss: expected `type` a loss name"),
        ({"gamma": 2}, "build_loss: expected `spec` a 'type' key"),
        ([1], "build_loss: expected `spec` a mapping"),
        ("nope", "build_loss: expected `type` a registered loss name"),
    ]
    for spec, start in cases:
        msg = _message(lambda spec=spec: build_loss(spec))
        assert msg.startswith(start), msg
    assert "did you mean 'softmax_focal', 'sigmoid_focal'?" in _message(
        lambda: build_loss({"type": "focal"})
    )
    for text, start in [
        ('type = "focal"', "build_loss: expected `type`"),
        ("type = ", "build_loss_from_toml: expected `source` valid TOML"),
        ("/nonexistent/loss.toml", "build_loss_from_toml: expected `source` a readable TOML file"),
    ]:
        msg = _message(lambda text=text: build_loss_from_toml(text))
        assert msg.startswith(start), msg
    msg = _message(lambda: build_loss_from_toml('[loss]\ntype = "l1"', table="los"))
    assert msg.startswith("build_loss_from_toml: expected `table`"), msg
