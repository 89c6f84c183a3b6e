#!/usr/bin/env bash
# The first GPU run of the fused kernels, as one command (issue #12, item 14).
#
#   scripts/gpu_check.sh OUT_DIR [--liger-wheel FILE] [--budget SECONDS] [--dry-run]
#
# Runs in about 8 minutes (--budget, default 480 s, counted from this script's start, the wheel
# install included: a minute of margin under 9) on one H100/H200 with whatever torch (>= 2.6) and
# triton are installed, without network: the GPU tests, the no-sync / CUDA-graph / fp16
# GradScaler / peak memory / host-time checks through the public functions, and the benchmark
# rows of PERFORMANCE.md section 6 (one representative row per target first, then the LLM row,
# then the rest as time allows). Results go to OUT_DIR (summary.txt/.md/.json, stages.json,
# checks.json, env.json, pytest.txt, bench.json, bench.md; logs/ holds each stage's output, raw/
# the protocol's own files), rewritten after every stage; a one-screen summary (one line per
# stage, then per target: measured value, met or not) is printed at the end.
#
# --liger-wheel FILE  install a Liger-Kernel wheel brought along as a file (no dependencies, no
#                     index) so the LLM row compares with it
# --dry-run           every stage on the CPU (Triton's interpreter, tiny shapes): seconds; the test
#                     suite runs it (tests/kernels/test_gpu_check.py)
#
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python3).
set -uo pipefail
START=$(date +%s)  # the budget starts here, before the optional wheel install
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: scripts/gpu_check.sh OUT_DIR [--liger-wheel FILE] [--budget SECONDS] [--dry-run]" >&2
  exit 2
fi
OUT=$1
shift
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --liger-wheel)
      if [ $# -lt 2 ]; then echo "--liger-wheel needs a file" >&2; exit 2; fi
      LIMIT=()
      if command -v timeout >/dev/null; then LIMIT=(timeout 120); fi
      if "${LIMIT[@]}" "$PY" -m pip install --quiet --no-deps --no-index "$2"; then
        echo "installed $2"
      else
        echo "could not install $2: the LLM row runs without Liger" >&2
      fi
      shift 2
      ;;
    *)
      ARGS+=("$1")
      shift
      ;;
  esac
done
mkdir -p "$OUT"
# The source tree, not an installed copy: the checks measure this checkout.
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_check.py run --out "$OUT" --start-epoch "$START" "${ARGS[@]}"
