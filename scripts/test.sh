#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv and run it. On a fresh machine this is the
# only command needed; .ci/run calls it. The CPU build of torch is installed first on purpose: an
# unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,triton,docs,lint]"
# Static checks first (seconds; configured in pyproject.toml): lint, formatting of the Python files,
# types of src/lossforge (mypy as if on Python 3.10, the requires-python floor).
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Triton kernels run through Triton's CPU interpreter when no GPU is present (set in tests/conftest.py).
.venv/bin/python -m pytest "$@"
# The documentation site: broken references, missing pages and docstring warnings fail the build.
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --quiet --site-dir build/site
