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
# Every step runs even when an earlier one fails (a lint error must not hide a test failure); the
# script fails at the end, naming the steps that failed.
failed=()
step() {
  local name=$1
  shift
  "$@" || failed+=("$name")
}
# Static checks (seconds; configured in pyproject.toml): lint, formatting of the Python files,
# types of src/lossforge (mypy as if on Python 3.10, the requires-python floor).
step "ruff check" .venv/bin/ruff check .
step "ruff format --check" .venv/bin/ruff format --check .
step "mypy" .venv/bin/mypy
# Triton kernels run through Triton's CPU interpreter when no GPU is present (set in tests/conftest.py).
# pytest's exit code 5 (no test collected) fails too.
step "pytest" .venv/bin/python -m pytest "$@"
# The documentation site: broken references, missing pages and docstring warnings fail the build.
step "mkdocs build --strict" env NO_MKDOCS_2_WARNING=1 \
  .venv/bin/python -m mkdocs build --strict --quiet --site-dir build/site
if ((${#failed[@]})); then
  printf 'scripts/test.sh: failed: %s\n' "$(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
