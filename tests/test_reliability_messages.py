"""Errors on the registry and configuration paths name what the user called and wrote (issue #14,
section 4): ``build_loss`` / ``build_loss_from_toml`` / the module class and the key of the spec,
never an internal helper (``get_loss``, ``bind``, ...) or Python's anonymous argument errors.

The sweep: every registered loss, every constructor parameter given a value of the wrong kind,
an unknown key, a missing required key, through ``build_loss`` and the module constructor.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from _reliability import INFOS, example, fn_of, name_of, params

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
    required = [k for k, default in info.params.items() if default is inspect.Parameter.empty]
    assert set(required) <= set(params(info)), "the example gives every required parameter"
    for key in params(info):
        partial = {k: v for k, v in params(info).items() if k != key}
        build = lambda partial=partial: build_loss({"type": info.name, **partial})  # noqa: E731
        if key in required:
            msg = _message(build)
            assert msg.startswith(f"{owner}: expected `{key}` "), msg
            continue
        # a parameter the example chooses (CIoU's detach_tradeoff, OHEM's min_kept) or one of a
        # pair (Seesaw: num_classes or class_counts): building without it works, or fails naming
        # the class and one of its keywords
        try:
            build()
        except (ValueError, TypeError) as err:
            msg = str(err)
            assert any(msg.startswith(f"{owner}: expected `{k}` ") for k in info.params), msg
            for word in INTERNAL:
                assert word not in msg, msg


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
    # The suggestion is the loss the user named: "focal" is the focal loss in its two input
    # conventions, not every loss containing the word (quality_focal, focal_tversky, ...).
    for typed, meant in [
        ("focal", "'sigmoid_focal', 'softmax_focal'"),
        ("Focal-Loss", "'sigmoid_focal', 'softmax_focal'"),
        ("focall", "'sigmoid_focal', 'softmax_focal'"),
        ("sigmoid_focal_los", "'sigmoid_focal'"),
        ("poly_focal", "'poly1_focal'"),
        ("tversky_focal", "'tversky', 'focal_tversky'"),
        ("ghm", "'ghmc', 'ghmr'"),
    ]:
        msg = _message(lambda typed=typed: build_loss({"type": typed}))
        assert msg.endswith(f"got {typed!r} (did you mean {meant}?)"), msg
    for text, start in [
        ('type = "focal"', "build_loss: expected `type`"),
        ("type = ", "build_loss_from_toml: expected `source` valid TOML"),
        ("/nonexistent/loss.toml", "build_loss_from_toml: expected `source` a readable TOML file"),
    ]:
        msg = _message(lambda text=text: build_loss_from_toml(text))
        assert msg.startswith(start), msg
    msg = _message(lambda: build_loss_from_toml('[loss]\ntype = "l1"', table="los"))
    assert msg.startswith("build_loss_from_toml: expected `table`"), msg


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_call_binding_errors_follow_the_template(info: LossInfo) -> None:
    """A misspelled or missing keyword, an option passed positionally, an input given twice:
    ``TypeError`` in the library's template naming the function (Python's own binding errors
    came through, e.g. "cross_entropy() got an unexpected keyword argument 'gama'")."""
    fn = fn_of(info)
    name = fn.__name__
    x, y = example(info, n=3)
    kw = params(info)
    with pytest.raises(TypeError, match=rf"^{name}: expected `keywords` keywords of {name}: .*"
                       r"got unknown 'reductoin' \(did you mean 'reduction'\?\)$"):  # fmt: skip
        fn(x, y, **kw, reductoin="sum")
    with pytest.raises(TypeError, match=rf"^{name}: expected `arguments` 2 positional arguments"):
        fn(x, y, "sum", **kw)
    first, second = list(inspect.signature(fn).parameters)[:2]
    with pytest.raises(TypeError, match=rf"^{name}: expected `{second}` one value, got one "):
        fn(x, y, **kw, **{second: y})
    sig = inspect.signature(fn).parameters
    required = [k for k, p in sig.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    for key in required:  # (class_counts of balanced softmax, LDAM, ...)
        rest = {k: v for k, v in kw.items() if k != key}
        with pytest.raises(TypeError, match=rf"^{name}: expected `{key}` a value \(it has no"):
            fn(x, y, **rest)
    assert first
