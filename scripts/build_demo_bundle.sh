#!/usr/bin/env bash
# Regenerate the demo: train the small QuartzNet on espeak-ng speech (only with --retrain;
# the checkpoint is committed), then export it to demo/bundle with the full verification gate
# (its held-out clips as a manifest, so int8 must keep their transcripts).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--retrain" ]; then
  .venv/bin/python scripts/train_demo_model.py --out demo/model
fi
.venv/bin/python -m export quartznet demo/model/demo_quartznet_ru.nemo \
  --out demo/bundle --model-id demo-quartznet-ru \
  --verify-manifest demo/audio/manifest.jsonl --force
