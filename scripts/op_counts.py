"""Recount the aten operations per call of every registered loss and rewrite the table
"Operations per call" of docs/benchmarks.md (the figures ``tests/test_op_counts.py`` holds).

Run after a change that adds or removes operations on the torch backend:

    python scripts/op_counts.py          # rewrite the table
    python scripts/op_counts.py --check  # print the differences, exit 1 if any
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import test_op_counts as counts  # noqa: E402  (the test's own counter and examples)
from _reliability import INFOS  # noqa: E402

import lossforge  # noqa: E402


def measure() -> dict[str, tuple[int, int, int, int | None]]:
    """loss -> (CPU checks on, CPU checks off, off the CPU, PyTorch's function or None)."""
    out: dict[str, tuple[int, int, int, int | None]] = {}
    for info in INFOS:
        ref = None
        if info.name in counts.REFERENCES:
            x, y = counts._inputs(info)
            ref = len(counts.count_ops(counts.REFERENCES[info.name], x, y))
        out[info.name] = (*counts.measure(info), ref)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args()
    lossforge.set_value_checks(None)
    figures = measure()
    recorded = counts.recorded()
    changed = {k: v for k, v in figures.items() if recorded.get(k) != v[:3]}
    for name, (on, off, meta, _) in sorted(changed.items()):
        print(f"{name}: {recorded.get(name)} -> ({on}, {off}, {meta})")
    if args.check:
        return 1 if changed else 0
    text = counts.DOC.read_text()
    head, rest = text.split("### Operations per call", 1)
    section, tail = rest.split("\n#", 1) if "\n#" in rest else (rest, None)
    rows = [
        f"| `{name}` | {on} | {off} | {meta} | {'–' if ref is None else ref} |"
        for name, (on, off, meta, ref) in sorted(figures.items())
    ]
    body = re.sub(r"(?:^\| `\w+` \|.*\n)+", "\n".join(rows) + "\n", section, count=1, flags=re.M)
    counts.DOC.write_text(
        head + "### Operations per call" + body + ("" if tail is None else "\n#" + tail)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
