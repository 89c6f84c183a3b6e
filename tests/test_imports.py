"""Imports: every module of ``src/lossforge`` imports on its own, ``import lossforge`` has no side
effects, and the import graph has no cycles.

**Static graph** (``ast``, no import): an edge ``A -> B`` for each ``import`` / ``from ... import``
in ``A`` that names a module of the package (``from pkg import name`` counts as an edge to the
submodule ``pkg.name`` when that is a module, else to ``pkg``).

* *Module-level* imports are the ones that run when ``A`` is imported: at the top level of the
  file and inside top-level ``if`` / ``try`` / ``with`` blocks and class bodies, but not under
  ``if TYPE_CHECKING:`` (never run). **They must form no cycle**, not even through a package's
  ``__init__``: a module-level cycle means some import order meets a half-initialised module.
* *Function-level* (lazy) imports run when the function is called. They are how the package keeps
  triton, scikit-learn and matplotlib out of ``import lossforge``, so they do **not** count for the
  rule above. Their cycles are reported separately: an edge from a module to its own package
  (``lossforge.cli.compare`` -> ``lossforge.cli``) is harmless, since Python has imported the
  package before the module; any other lazy cycle must be listed in ``KNOWN_LAZY_CYCLES`` (and
  leave it when fixed: the test fails on a listed cycle that no longer exists).

**At run time**, one subprocess imports torch and ``lossforge`` (checking that this imported
neither triton nor an optional extra, and initialised neither CUDA nor ``torch.distributed``), then
forks one child per module, which imports that module first, as a fresh interpreter that had only
imported ``lossforge`` would (Python always imports the parent package first). Kernel modules,
which need triton, come last, after the parent has imported triton and ``torch._inductor`` once
(so their children do not pay for them again). ``LOSSFORGE_CHECKS`` is set to junk in that
process: importing must not read it. Extras that torch itself imports (tqdm) are not counted.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lossforge"

#: Lazy (function-level) import cycles that are known and being removed; each entry is the set of
#: modules of one cycle. cli/compare.py and cli/plot.py call each other's functions (plot draws the
#: compare figure, compare's sweep uses plot's curves): another branch is breaking this circle.
KNOWN_LAZY_CYCLES: list[frozenset[str]] = [
    # LossSum builds nested specs through build_loss at construction, and the registry fills itself
    # from lossforge.nn on first use: both edges are imports inside functions, so no module is
    # ever imported half-initialised; the registry is where specs are resolved, by design.
    frozenset({"lossforge.nn", "lossforge.nn.combine", "lossforge.registry"}),
]

#: Optional extras and heavy dependencies that importing lossforge must not pull in.
OPTIONAL = (
    "triton",
    "sklearn",
    "matplotlib",
    "tqdm",
    "mmengine",
    "hydra",
    "omegaconf",
    "lightning",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _edges(name: str, path: Path) -> list[tuple[str, bool, int]]:
    """``(target module, lazy, line)`` for every import of a lossforge module in ``name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool, int]] = []

    def targets(node: ast.Import | ast.ImportFrom) -> Iterable[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            return
        base = node.module or ""
        if node.level:
            anchor = package
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in MODULES else base

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in targets(child):
                    while target and target not in MODULES:  # `import lossforge.x.y` -> nearest
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        found.append((target, lazy, child.lineno))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(ast.Module(body=child.orelse, type_ignores=[]), lazy)  # only the else runs
            else:
                visit(child, lazy)

    visit(tree, False)
    return found


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, is_lazy, _ in _edges(name, path):
            if is_lazy and not lazy:
                continue
            if is_lazy and name.startswith(target + "."):
                continue  # a lazy import of the module's own package: imported before it anyway
            graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _describe(cycle: frozenset[str]) -> str:
    lines = []
    for name in sorted(cycle):
        for target, lazy, line in _edges(name, MODULES[name]):
            if target in cycle:
                kind = "function-level" if lazy else "module-level"
                lines.append(f"  {MODULES[name].relative_to(SRC)}:{line} -> {target} ({kind})")
    return "\n".join(lines)


def test_the_graph_sees_every_module_and_real_edges() -> None:
    """Guards the parser: the package has its known shape, and known edges are found."""
    assert {"lossforge", "lossforge.cli.bench", "lossforge.kernels.sigmoid"} <= set(MODULES)
    module_level = _graph(lazy=False)
    assert "lossforge._checks" in module_level["lossforge._pipeline"]
    assert "lossforge.functional" not in module_level["lossforge"]  # the API loads on first use
    assert "lossforge._checks" in module_level["lossforge.multitask"]
    lazy = _graph(lazy=True)
    assert "lossforge.cli.bench" in lazy["lossforge.cli"]  # dispatched lazily by the command
    assert "lossforge.cli.bench" not in module_level["lossforge.cli"]
    # a made-up module-level circle is found
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_module_level_import_cycle() -> None:
    cycles = _cycles(_graph(lazy=False))
    assert not cycles, "module-level import cycles:\n" + "\n\n".join(map(_describe, cycles))


def test_lazy_import_cycles_are_only_the_known_ones() -> None:
    cycles = _cycles(_graph(lazy=True))
    print("\nfunction-level import cycles (known):", [sorted(c) for c in cycles])
    unknown = [c for c in cycles if c not in KNOWN_LAZY_CYCLES]
    assert not unknown, "new import cycles:\n" + "\n\n".join(map(_describe, unknown))
    gone = [sorted(c) for c in KNOWN_LAZY_CYCLES if c not in cycles]
    assert not gone, f"fixed, remove from KNOWN_LAZY_CYCLES: {gone}"


def test_benchmarks_and_tools_are_outside_the_package() -> None:
    """The benchmark protocol and the AOT tool are repository code (not in the wheel), and no
    module of the package imports them."""
    assert not (PACKAGE / "cli" / "protocol.py").exists()
    for name, path in MODULES.items():
        text = path.read_text()
        assert "benchmarks" not in {t.partition(".")[0] for t in _raw_imports(text)}, name
        assert "tools" not in {t.partition(".")[0] for t in _raw_imports(text)}, name


def _raw_imports(text: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


_CHILD = r"""
import importlib, json, os, sys, time
OPTIONAL = {optional!r}

def state():
    import torch
    return {{
        "optional": sorted(m for m in OPTIONAL if m in sys.modules and m not in WITH_TORCH),
        "cuda": torch.cuda.is_initialized(),
        "dist": torch.distributed.is_available() and torch.distributed.is_initialized(),
    }}

import torch
WITH_TORCH = set(sys.modules)  # torch itself imports some (tqdm): not lossforge's doing
import lossforge
print(json.dumps({{"module": "import lossforge", **state()}}), flush=True)

def each(names, extra=None):
    for name in names:
        pid = os.fork()
        if pid == 0:
            t0 = time.perf_counter()
            try:
                module = importlib.import_module(name)
                if extra:
                    extra(module)
                out = {{"module": name, "ok": True, **state()}}
            except BaseException as err:
                out = {{"module": name, "ok": False, "error": f"{{type(err).__name__}}: {{err}}"}}
            out["s"] = round(time.perf_counter() - t0, 3)
            print(json.dumps(out), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)

names = {names!r}
kernels = [n for n in names if n.startswith("lossforge.kernels.")]
each([n for n in names if n not in kernels])
# Once here, so that each kernel child does not pay for them again: triton, and the part of
# torch that registering a triton_op imports (torch._inductor, ~2 s).
import triton
import torch._inductor.utils
def entry_points(module):
    if module.__name__ == "lossforge.kernels._launch":
        import lossforge.kernels as K
        [getattr(K, n) for n in K.__all__]  # the lazy entry points resolve
each(kernels, entry_points)
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, dict]:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork (one child per module keeps this test cheap)")
    pytest.importorskip("triton")
    names = sorted(MODULES)
    code = _CHILD.format(optional=OPTIONAL, names=names)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["LOSSFORGE_CHECKS"] = "flase"  # importing must not read it (reading it raises)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["module"]: r for r in rows}


@pytest.mark.subprocess
def test_import_lossforge_has_no_side_effects(imported: dict[str, dict]) -> None:
    """``import lossforge`` imports no triton and no optional extra, and initialises neither CUDA
    nor a process group."""
    assert imported["import lossforge"] == {
        "module": "import lossforge",
        "optional": [],
        "cuda": False,
        "dist": False,
    }


@pytest.mark.subprocess
def test_every_module_imports_on_its_own(imported: dict[str, dict]) -> None:
    missing = sorted(set(MODULES) - set(imported))
    assert not missing, f"no report for {missing}"
    failed = {n: r["error"] for n, r in imported.items() if not r.get("ok", True)}
    assert not failed, failed
    touched = {n: r for n, r in imported.items() if r["cuda"] or r["dist"]}
    assert not touched, f"initialised CUDA or torch.distributed on import: {touched}"


@pytest.mark.subprocess
def test_only_kernel_modules_import_triton_and_no_module_imports_an_extra(
    imported: dict[str, dict],
) -> None:
    """``lossforge.kernels`` itself stays lazy (its entry points import triton on first use); the
    CLI imports numpy, scikit-learn, matplotlib and tqdm only when a subcommand runs."""
    pulled = {
        n: r["optional"]
        for n, r in imported.items()
        if not n.startswith("lossforge.kernels.") and r["optional"]
    }
    assert not pulled, pulled


def test_no_loss_file_imports_another_familys_private_helpers() -> None:
    """Issue #10: a loss family's file (``lossforge/functional/<family>.py``) takes shared math from
    the shared modules (``_terms``, ``_closed_form``, the pipelines), never an underscore name of
    another family's file."""
    functional = SRC / "lossforge" / "functional"
    families = {p.stem for p in functional.glob("*.py") if not p.stem.startswith("_")}
    found = []
    for path in sorted(functional.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            module = node.module.rsplit(".", 1)[-1] if node.level == 0 else node.module
            inside = node.level > 0 or node.module.startswith("lossforge.functional.")
            if inside and module in families and module != path.stem:
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    found.append(f"{path.name}: from {node.module} import {', '.join(private)}")
    assert not found, found
