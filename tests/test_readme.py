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


def test_loss_table_lists_every_registered_loss() -> None:
    text = README.read_text(encoding="utf-8")
    for info in lf.list_losses():
        assert f"`{info.name}`" in text, f"{info.name} missing from the README's loss table"
        assert f"`{info.cls.__name__}`" in text
