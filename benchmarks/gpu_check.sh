#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (≈ 6–8 min on one H100-class GPU; no network):
#   bash benchmarks/gpu_check.sh OUT_DIR            → OUT_DIR/gpu_check.{md,json}, losses.md, overhead.md
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run  → the same on the CPU with tiny sizes (the test suite runs it)
# Uses the active Python (or .venv when none is active) with a CUDA build of PyTorch and
# specreg's `test` extra; this checkout's src/ is imported, so nothing needs installing.
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--budget SECONDS] [--only SECTIONS]" >&2
  exit 2
fi
out="$(mkdir -p "$1" && cd "$1" && pwd)"
shift
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$out" "$@"
