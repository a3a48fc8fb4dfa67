#!/usr/bin/env bash
# Rehearse the GPU checks here, on the CPU, under the GPU image's Python (3.12) and its
# versions of torch, transformers, accelerate and torchmetrics (scripts/gpu/image_versions.txt),
# with run.sh installing the carried wheels itself as on the machine:
#   bash scripts/gpu/twin.sh [VENV]
# VENV (default /tmp/echosynth-gpu-twin) is made once: about 5 GB, torch's CUDA build from
# PyPI (it runs on the CPU). Then tests/test_gpu_kit.py's slow rehearsal runs every part of
# run.sh with the presets shrunk, in that interpreter. Run it when the image's versions
# change (KINDS.md) or the wheel list does; a failure here would fail the GPU call too.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-/tmp/echosynth-gpu-twin}
if [ ! -f "$VENV/.image-installed" ]; then  # made, or remade after a failed install
  PY312=${PY312:-$(bash scripts/find_python.sh 3.12 || true)}
  if [ -z "$PY312" ]; then
    echo "twin.sh: no Python 3.12 found (set PY312)" >&2
    exit 2
  fi
  rm -rf "$VENV"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r scripts/gpu/image_versions.txt
  touch "$VENV/.image-installed"
fi
if [ ! -d .whl ] || [ ! -d .minilm ]; then
  bash scripts/gpu/prepare.sh
fi
ECHOSYNTH_GPU_TWIN="$VENV/bin/python" HF_HUB_OFFLINE=1 python -m pytest -q -p no:cacheprovider \
  -m slow tests/test_gpu_kit.py -k rehearsed
