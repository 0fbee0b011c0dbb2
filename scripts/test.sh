#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then pytest. The suite also
# builds the sdist and wheel (twine check), the API reference (Sphinx, warnings as errors)
# and a core-only environment (tests/test_packaging.py, test_docs.py, test_install.py).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k wavelet`.
set -euo pipefail
cd "$(dirname "$0")/.."
SPECREG_EXTRAS=test bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pytest -q "$@"
