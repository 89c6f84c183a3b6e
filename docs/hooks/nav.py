"""mkdocs hook: fill the "Losses" and "API reference" sections from the files present.

Loss-family pages (docs/losses/*.md) and API pages (docs/api/*.md) are written by several people;
listing them here means a new page is in the navigation as soon as it exists, and ``--strict`` never
fails on a page that has not been written yet. Other top-level pages (the CLI page, multitask.md)
are added before "Benchmarks" when present, titled by their first heading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Families in reading order; anything else follows alphabetically.
ORDER = [
    "classification",
    "focal",
    "asymmetric",
    "balanced",
    "dice",
    "regression",
    "weights",
    "multitask",
]
OPTIONAL_TOP = [("Command line and compare", "cli.md")]


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("_", " ").capitalize()


def _pages(docs: Path, sub: str) -> list[dict[str, str]]:
    files = sorted(
        (docs / sub).glob("*.md"),
        key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem),
    )
    return [{_title(p): f"{sub}/{p.name}"} for p in files]


def on_config(config: Any, **kwargs: Any) -> Any:
    docs = Path(config["docs_dir"])
    nav = config["nav"] or []
    for entry in nav:
        if isinstance(entry, dict) and "Losses" in entry:
            entry["Losses"] = _pages(docs, "losses")
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = _pages(docs, "api")
    known = {v for e in nav if isinstance(e, dict) for v in e.values() if isinstance(v, str)}
    tail = next(
        (i for i, e in enumerate(nav) if isinstance(e, dict) and "Benchmarks" in e), len(nav)
    )
    extra = [(title, page) for title, page in OPTIONAL_TOP if (docs / page).exists()]
    # Any other top-level page written by someone (multitask.md, ...) goes in too, by its heading.
    for path in sorted(docs.glob("*.md")):
        if path.name not in known and path.name not in {p for _, p in extra}:
            extra.append((_title(path), path.name))
    for title, page in extra:
        if page not in known:
            nav.insert(tail, {title: page})
            tail += 1
    config["nav"] = nav
    return config
