#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k wavelet`.
set -euo pipefail
cd "$(dirname "$0")/.."
SPECREG_EXTRAS=test bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pytest -q "$@"
