#!/usr/bin/env bash
# The first GPU run of the fused kernels, as one command (issue #12, item 14).
#
#   scripts/gpu_check.sh OUT_DIR [--liger-wheel FILE] [--budget SECONDS] [--dry-run]
#
# Runs in at most ~9 minutes on one H100/H200 with whatever torch (>= 2.6) and triton are
# installed, without network: the GPU tests, the no-sync / CUDA-graph / fp16 GradScaler / peak
# memory / host-time checks through the public functions, and the benchmark rows of
# PERFORMANCE.md section 6 that fit the remaining time. Results go to OUT_DIR (summary.md,
# summary.json, checks.json, pytest.txt, bench.json, bench.md; raw/ holds the protocol's own
# files); a one-screen summary (target, measured value, met or not) is printed at the end.
#
# --liger-wheel FILE  install a Liger-Kernel wheel brought along as a file (no dependencies, no
#                     index) so the LLM row compares with it
# --dry-run           every stage on the CPU (Triton's interpreter, tiny shapes): seconds; the test
#                     suite runs it (tests/kernels/test_gpu_check.py)
#
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python3).
set -uo pipefail
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
      if "$PY" -m pip install --quiet --no-deps --no-index "$2"; then
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
exec "$PY" scripts/gpu_check.py run --out "$OUT" "${ARGS[@]}"
