#!/usr/bin/env bash
# Build the demo Conformer (GigaAM v3 layout) and its int8 bundle; not committed (8 MB).
# Training on espeak-ng speech is seeded and deterministic, and stops once every
# validation clip is exact (~4 min on 2 cores); the script then reloads the checkpoint
# and fails unless every held-out demo clip is exact. The export runs the full gate.
#   scripts/build_demo_conformer.sh            build what is missing
#   scripts/build_demo_conformer.sh --retrain  train and export again
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=demo/model/demo_gigaam_ru.ckpt
bundle=demo/conformer_bundle
if [ "${1:-}" = "--retrain" ]; then
  rm -f "$checkpoint"
fi
if [ ! -f "$checkpoint" ]; then
  # The demo transducer's encoder starts from this checkpoint: retrain it too.
  rm -f demo/model/demo_gigaam_rnnt_ru.ckpt
fi
if [ ! -f "$checkpoint" ]; then
  echo "• training the demo Conformer (GigaAM v3 layout) on espeak-ng speech"
  rm -rf "$bundle"
  .venv/bin/python scripts/train_demo_conformer.py --out demo/model
fi
if [ ! -f "$bundle/config.json" ]; then
  echo "• exporting the demo Conformer to $bundle"
  .venv/bin/python -m export gigaam "$checkpoint" \
    --out "$bundle" --model-id demo-gigaam-ru \
    --verify-manifest demo/audio/manifest.jsonl --force
fi
