"""The documentation site builds with ``mkdocs build --strict`` and all of its math renders.

The build turns broken references, missing pages and docstring warnings into errors. The math check
renders every formula of the built site (docstrings included) with the vendored KaTeX under node,
so a formula KaTeX cannot parse fails here rather than as red text in a browser. Both skip when the
``docs`` extra (or node) is not installed; ``scripts/test.sh`` installs the extra.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KATEX = ROOT / "docs" / "javascripts" / "katex" / "katex.min.js"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    if proc.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return out


def test_build_strict_has_every_page(site: Path) -> None:
    for page in (
        "index.html",
        "contract/index.html",
        "distributed/index.html",
        "config/index.html",
    ):
        assert (site / page).is_file(), page
    for md in (ROOT / "docs" / "losses").glob("*.md"):
        assert (site / "losses" / md.stem / "index.html").is_file(), md.name
    for md in (ROOT / "docs" / "api").glob("*.md"):
        assert (site / "api" / md.stem / "index.html").is_file(), md.name
    # mkdocstrings rendered the docstrings (not just the headings).
    api = (site / "api" / "distributed" / "index.html").read_text()
    assert "global_avg_factor" in api
    assert "doc-function" in api
    assert (site / "javascripts" / "katex" / "katex.min.js").is_file()
    # `Example:` sections render their doctests as code (docs/hooks/griffe_examples.py), not as
    # nested block quotes.
    reg = (site / "api" / "regression" / "index.html").read_text()
    assert '<span class="gp">&gt;&gt;&gt; </span>' in reg
    for page in site.rglob("*.html"):
        assert "<blockquote>\n<blockquote>" not in page.read_text(encoding="utf-8"), page


_MATH = re.compile(r'<(div|span) class="arithmatex">(.*?)</\1>', re.S)


def test_math_renders_with_katex(site: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    formulas: list[dict[str, object]] = []
    for page in sorted(site.rglob("*.html")):
        for tag, body in _MATH.findall(page.read_text(encoding="utf-8")):
            tex = html.unescape(re.sub(r"<[^>]+>", "", body)).strip()
            tex = (
                re.sub(r"^\\\[|\\\]$", "", tex) if tag == "div" else re.sub(r"^\\\(|\\\)$", "", tex)
            )
            formulas.append(
                {"page": str(page.relative_to(site)), "tex": tex, "display": tag == "div"}
            )
    assert len(formulas) > 20, "expected the docstrings' math on the API pages"
    (tmp_path / "math.json").write_text(json.dumps(formulas))
    script = (
        f"const katex = require({json.dumps(str(KATEX))});"
        f"const items = require({json.dumps(str(tmp_path / 'math.json'))});"
        "const bad = [];"
        "for (const it of items) { try {"
        " katex.renderToString(it.tex, {displayMode: it.display, throwOnError: true});"
        " } catch (e) { bad.push(it.page + ': ' + e.message); } }"
        "console.log(JSON.stringify({n: items.length, bad}));"
    )
    proc = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == len(formulas)
    assert not result["bad"], "KaTeX cannot render:\n" + "\n".join(result["bad"])


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_code_fences_are_well_formed() -> None:
    """Every fenced block closes on a line of its own: text after a closing fence (```` ``` Every
    loss...````) is not a fence to Markdown, so the block runs on over the following sections,
    which the strict build does not report."""
    for path in _markdown_files():
        open_fence: str | None = None
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = _FENCE.match(line)
            if m is None:
                continue
            fence, rest = m.groups()
            if open_fence is None:
                assert re.fullmatch(r"[\w+-]*(\s*\{.*\})?\s*", rest), (
                    f"{path.name}:{n}: an opening fence takes a language name only, got {rest!r}"
                )
                open_fence = fence
            elif fence.startswith(open_fence[0]) and len(fence) >= len(open_fence):
                assert not rest.strip(), f"{path.name}:{n}: text after a closing fence: {rest!r}"
                open_fence = None
        assert open_fence is None, f"{path.name}: a fenced block is never closed"


def test_referenced_markdown_files_exist() -> None:
    """A document the README or the docs name as one (``PERFORMANCE.md``, in capitals) or link
    to (``[...](docs/x.md)``, from the README, whose links the site build does not check) is a file
    of this repository: the design notes behind the project are not, and what the docs take from
    them is in docs/design.md. (Lower-case names elsewhere are files commands write.)"""
    named = re.compile(r"(?<![\w/.-])([A-Z][A-Z_-]*\.md)\b")
    linked = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
    skip = {".venv", "build", "site"}
    known = {p.name for p in ROOT.rglob("*.md") if not skip.intersection(p.parts)}
    for path in _markdown_files():
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            for ref in named.findall(line):
                assert ref in known, f"{path.name}:{n}: {ref} is not a file of this repository"
            for ref in linked.findall(line) if path.name == "README.md" else []:
                target = ROOT / ref
                assert target.is_file(), f"README.md:{n}: the link {ref} points to no file"
