#!/usr/bin/env bash
# Install PyTorch into the active Python environment (scripts/setup.sh calls this first, so
# that no dependency pulls another build). Which build:
#   TORCH_SPEC set      → exactly that requirement, from pip's default index (your choice wins);
#   an NVIDIA GPU       → $TORCH_PIN from the default index (on Linux: the CUDA build);
#   no NVIDIA GPU       → $TORCH_PIN from the PyTorch project's CPU wheel index, so a plain
#                         machine does not download several GB of NVIDIA libraries. When that
#                         index does not answer within $TORCH_INDEX_TIMEOUT seconds, the
#                         default index instead (with a message).
# Nothing is done when the pinned version of the wanted build (CPU: a "+cpu" wheel) is
# already installed, so re-running set-up (and CI) costs no network round trip.
# Environment: PYTHON (default python), TORCH_PIN (default torch==2.13.0),
# TORCH_CPU_INDEX (default https://download.pytorch.org/whl/cpu), TORCH_INDEX_TIMEOUT (3).
set -euo pipefail
PY="${PYTHON:-python}"
PIN="${TORCH_PIN:-torch==2.13.0}"
CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
WAIT="${TORCH_INDEX_TIMEOUT:-3}"

pip_install() { "$PY" -m pip install -q "$@"; }

if [ -n "${TORCH_SPEC:-}" ]; then
  echo "install_torch: TORCH_SPEC=$TORCH_SPEC"
  pip_install "$TORCH_SPEC"
  exit 0
fi

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi

# installed version, "" when torch is not installed (a metadata read: no import of torch)
have="$("$PY" -c 'import importlib.metadata as m
try: print(m.version("torch"))
except m.PackageNotFoundError: print("")')"
want="${PIN#torch==}"
if [ "$gpu" = 0 ] && [ "$have" = "$want+cpu" ]; then
  echo "install_torch: torch $have (CPU build) already installed"
  exit 0
fi
if [ "$gpu" = 1 ] && [ "${have%%+*}" = "$want" ] && [ "$have" != "$want+cpu" ]; then
  echo "install_torch: torch $have already installed (NVIDIA GPU found)"
  exit 0
fi
if [ "$gpu" = 1 ]; then
  echo "install_torch: NVIDIA GPU found: $PIN from the default index"
  pip_install "$PIN"
  exit 0
fi

# One short request, bounded as a whole (the socket timeout does not cover DNS look-ups;
# `timeout` is coreutils, absent on a bare macOS, where the socket timeout alone bounds it).
bound=()
if command -v timeout >/dev/null 2>&1; then bound=(timeout "$((WAIT + 1))"); fi
if ${bound[@]+"${bound[@]}"} "$PY" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/", timeout=float(sys.argv[2])).close()' \
    "$CPU_INDEX" "$WAIT" >/dev/null 2>&1 \
  && pip_install --index-url "$CPU_INDEX" --retries 1 --timeout 30 "$PIN"; then
  echo "install_torch: no NVIDIA GPU: $PIN (CPU build) from $CPU_INDEX"
  exit 0
fi
echo "install_torch: no NVIDIA GPU, but the CPU wheel index $CPU_INDEX did not answer within ${WAIT} s" \
     "(or failed); installing $PIN from the default index instead (on Linux that is the CUDA build," \
     "several GB; set TORCH_SPEC to choose another)"
pip_install "$PIN"
