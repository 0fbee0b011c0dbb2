#!/usr/bin/env bash
# The main job on a fresh machine: set-up (idempotent), then `specreg demo`.
# Writes runs/demo/report.md (sample grids, radial power spectra, log-spectral distances).
set -euo pipefail
cd "$(dirname "$0")/.."
SPECREG_EXTRAS=all bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
specreg demo --out "${1:-runs/demo}"
