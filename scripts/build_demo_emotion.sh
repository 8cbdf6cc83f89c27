#!/usr/bin/env bash
# Build the demo emotion classifier (GigaAM-Emo layout) and its emotion bundle; not committed.
# Training on espeak-ng speaking styles named after Dusha's classes is seeded and
# deterministic (about a minute on 2 cores) and fails unless the reloaded checkpoint labels
# at least 90 % of held-out sentences right. The export runs the emotion gate and picks
# int8 only where it is faster and keeps every label (--precision auto).
#   scripts/build_demo_emotion.sh            build what is missing
#   scripts/build_demo_emotion.sh --retrain  train and export again
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=demo/model/demo_gigaam_emo_ru.ckpt
bundle=demo/emotion_bundle
if [ "${1:-}" = "--retrain" ]; then
  rm -f "$checkpoint"
fi
if [ ! -f "$checkpoint" ]; then
  echo "• training the demo emotion classifier (GigaAM-Emo layout) on espeak-ng speaking styles"
  rm -rf "$bundle"
  .venv/bin/python scripts/train_demo_emotion.py --out demo/model
fi
if [ ! -f "$bundle/config.json" ]; then
  echo "• exporting the demo emotion classifier to $bundle"
  .venv/bin/python -m export gigaam "$checkpoint" \
    --out "$bundle" --model-id demo-gigaam-emo-ru \
    --verify-audio demo/model/emotion_clips/*.wav --force
fi
