"""The README's quick-start runs as written and its loss table names every registered loss."""

from __future__ import annotations

import re
from pathlib import Path

import lossforge as lf

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_quick_start_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_python_blocks()[0], "README quick start", "exec"), namespace)  # noqa: S102
    for name in ("loss", "seg", "ce", "bs"):
        value = namespace[name]
        assert value.ndim == 0 and bool(value.isfinite())  # type: ignore[attr-defined]


def _loss_table() -> list[tuple[list[str], list[str], list[str]]]:
    """(functions, modules, registry names) of each row of the README's loss table."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| function (`lossforge.functional`)")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = line.split("|")[1:-1]
        fns, mods, names = (re.findall(r"`([^`]+)`", c) for c in cells[:3])
        rows.append((fns, mods, names))
    return rows


def test_loss_table_matches_the_registry() -> None:
    """Every registered loss has a row naming its function, module and registry name, in the same
    order within the row; every row that names a registry entry matches the registry."""
    by_name = {info.name: info for info in lf.list_losses()}
    seen: set[str] = set()
    for fns, mods, names in _loss_table():
        if not names:
            continue  # helpers such as class_weights, not losses
        assert len(fns) == len(mods) == len(names), (fns, mods, names)
        for fn, mod, name in zip(fns, mods, names, strict=True):
            assert name in by_name, f"README names {name!r}, which is not registered"
            cls = by_name[name].cls
            assert cls.__name__ == mod, (name, mod, cls.__name__)
            assert cls.functional.__name__ == fn, (name, fn)
            assert getattr(lf.functional, fn) is cls.functional
            seen.add(name)
    missing = sorted(set(by_name) - seen)
    assert not missing, f"registered but missing from the README's loss table: {missing}"


def test_multitask_example_output_is_the_readmes() -> None:
    """``examples/multitask_digits.py`` (seeded, one thread) prints the rows the README and
    docs/multitask.md show, the time column aside: a change of the losses or weightings that
    moves them must update the docs too."""
    import subprocess
    import sys

    root = README.parent
    run = subprocess.run(
        [sys.executable, str(root / "examples" / "multitask_digits.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    printed = [line.rsplit(None, 1)[0] for line in run.stdout.splitlines()[2:] if line.strip()]
    assert [row.split()[0] for row in printed] == ["equal", "uncertainty", "dtp"], run.stdout
    for doc in (README, root / "docs" / "multitask.md"):
        text = doc.read_text(encoding="utf-8")
        for row in printed:
            assert row in text, f"{doc.name} lacks the example's row {row!r}"
