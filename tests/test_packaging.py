"""Packaging is honest: what ``pyproject.toml`` promises (Python >= 3.10, torch >= 2.6, one version)
holds for the code, and the static checks run in CI."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

import lossforge
from lossforge._toml import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lossforge"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _floor(spec: str) -> tuple[int, ...]:
    match = re.fullmatch(r">=\s*([\d.]+)", spec.strip())
    assert match, f"expected a '>=X.Y' floor, got {spec!r}"
    return tuple(int(p) for p in match.group(1).split("."))


def test_one_version_source() -> None:
    """``lossforge.__version__`` is the only place the version is written: pyproject reads it
    (setuptools dynamic version) and the installed metadata agrees."""
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "lossforge.__version__"}
    init = ast.parse((PACKAGE / "__init__.py").read_text())
    assigned = [
        node.value
        for node in init.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
    ]
    assert len(assigned) == 1 and isinstance(assigned[0], ast.Constant)  # statically readable
    assert assigned[0].value == lossforge.__version__
    assert importlib.metadata.version("lossforge") == lossforge.__version__


def test_sources_parse_as_the_oldest_supported_python() -> None:
    """No syntax newer than ``requires-python`` (3.10) in the package."""
    floor = _floor(PYPROJECT["project"]["requires-python"])
    assert floor == (3, 10)
    for path in SOURCES:
        ast.parse(path.read_text(), filename=str(path), feature_version=floor[:2])


def test_tomllib_comes_from_the_fallback_helper() -> None:
    """``tomllib`` is 3.11+: every module reads TOML through ``lossforge._toml``."""
    offenders = []
    for path in SOURCES:
        if path.name == "_toml.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n.split(".")[0] in ("tomllib", "tomli") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
    deps = PYPROJECT["project"]["dependencies"]
    assert "tomli>=2; python_version < '3.11'" in deps


def _load_toml_helper(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "_toml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toml_helper_uses_tomli_on_python_310(monkeypatch: pytest.MonkeyPatch) -> None:
    backport = types.ModuleType("tomli")
    monkeypatch.setitem(sys.modules, "tomli", backport)
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    assert _load_toml_helper("lossforge_toml_on_310").tomllib is backport


def test_toml_helper_uses_the_standard_library_from_311() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("Python 3.10 has no tomllib")
    import tomllib as stdlib

    assert _load_toml_helper("lossforge_toml_here").tomllib is stdlib
    assert lossforge.build_loss_from_toml  # registry imported it at import time without error


def test_torch_floor_covers_the_apis_used() -> None:
    """torch >= 2.6: ``torch.library.wrap_triton`` (the kernels' launches) became public in 2.6.
    The floor is stated with its reason next to it."""
    (torch_dep,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert _floor(torch_dep.removeprefix("torch")) == (2, 6)
    text = (ROOT / "pyproject.toml").read_text()
    assert "wrap_triton" in text.split('"torch>=2.6"')[0].rsplit("dependencies", 1)[1]
    uses = [p for p in SOURCES if "wrap_triton" in p.read_text()]
    assert uses, "no module uses wrap_triton any more: revisit the torch floor"


def test_ci_runs_the_static_checks() -> None:
    """scripts/test.sh (what .ci/run calls) installs the lint extra and runs ruff and mypy."""
    script = (ROOT / "scripts" / "test.sh").read_text()
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert any('-e ".[' in line and "lint" in line for line in commands)
    for step in ("ruff check .", "ruff format --check .", "bin/mypy", "-m pytest", "mkdocs build"):
        assert any(step in line for line in commands), step
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    mypy = PYPROJECT["tool"]["mypy"]
    assert mypy["python_version"] == "3.10"
    assert mypy["check_untyped_defs"] and mypy["warn_unused_ignores"]
