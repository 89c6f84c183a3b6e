"""Python floats reach compiled losses without specialising (issue #14, section 3).

* ``torch.compile(fullgraph=True, dynamic=True)`` of every registered loss with its float
  hyperparameters and ``avg_factor`` passed as arguments (so they are symbolic): no graph break,
  values equal to eager, and no new graph when only ``avg_factor`` changes.
* The mmdetection pattern: a Python-float ``avg_factor`` that changes every step. A 10-step loop
  compiles at most twice (the first value, then a dynamic float: dynamo's automatic dynamic
  shapes) without ``fullgraph`` and runs with ``fullgraph=True``.

Dynamo tracing only (``backend="eager"``); ``tests/test_compile.py`` covers the rest.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from _contract import assert_close
from _reliability import INFOS, example, fn_of, name_of, params
from torch._dynamo.utils import counters

from lossforge._params import AnyOf, Number, signature_domains
from lossforge.registry import LossInfo


def _floats(info: LossInfo) -> dict[str, float]:
    """The loss's float hyperparameters with a non-None default, and avg_factor; each starts at
    the value the loss's declaration gives it (``Traits.params``, e.g. GHM's ``momentum=0``),
    else at its default."""
    out: dict[str, float] = {}
    sig = inspect.signature(fn_of(info)).parameters
    declared = params(info)
    for key, dom in signature_domains(fn_of(info)).items():
        members = dom.members if isinstance(dom, AnyOf) else (dom,)
        default = declared.get(key, sig[key].default)
        if isinstance(default, float) and any(isinstance(m, Number) for m in members):
            out[key] = default
    out["avg_factor"] = 3.0
    return out


def _nudged(values: dict[str, float], step: int) -> dict[str, float]:
    """Other valid values: defaults move towards 0 (inside every domain used by the losses)."""
    return {
        k: (v + step if k == "avg_factor" else v * (1.0 - 0.1 * step)) for k, v in values.items()
    }


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_float_hyperparameters_are_dynamic_under_fullgraph(info: LossInfo) -> None:
    x, y = example(info, n=6, dtype=torch.float32)
    x = x.detach()
    base = params(info)
    floats = _floats(info)
    fn = fn_of(info)

    def f(x: torch.Tensor, y: torch.Tensor, **hp: float) -> torch.Tensor:
        # the symbolic hyperparameters replace the declared values they start from
        return fn(x, y, **{**base, **hp})  # type: ignore[no-any-return]

    compiled = torch.compile(f, backend="eager", fullgraph=True, dynamic=True)
    for step in range(3):
        hp = _nudged(floats, step)
        assert_close(compiled(x, y, **hp), f(x, y, **hp), torch.float32)
    # A hyperparameter that PyTorch's own kernel takes as a number (smooth L1's beta) or that
    # enters math.log (ASL's eps) is specialised: a new value compiles once more. avg_factor, which
    # changes every step, never is.
    counters.clear()
    for step in range(3, 6):
        hp = {**_nudged(floats, 2), "avg_factor": 3.0 + step}
        assert_close(compiled(x, y, **hp), f(x, y, **hp), torch.float32)
    assert not counters["stats"]["unique_graphs"], dict(counters["stats"])


@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph-breaks-allowed", "fullgraph"])
@pytest.mark.parametrize("info", INFOS, ids=name_of)
def test_changing_float_avg_factor_does_not_recompile(info: LossInfo, fullgraph: bool) -> None:
    x, y = example(info, n=6, dtype=torch.float32)
    x = x.detach()
    base: dict[str, Any] = params(info)
    # Two twins in training mode: a stateful module (Seesaw's class counts) updates its state on
    # every call, so the compiled module is compared with an eager one that saw the same calls,
    # state included.
    mod, eager = info.cls(**base), info.cls(**base)
    compiled = torch.compile(mod, backend="eager", fullgraph=fullgraph)
    for step in range(10):
        af = 1.5 + 0.37 * step
        assert_close(compiled(x, y, avg_factor=af), eager(x, y, avg_factor=af), torch.float32)
    for (key, got), (_, want) in zip(
        mod.state_dict().items(), eager.state_dict().items(), strict=True
    ):
        assert torch.equal(got, want), key
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
