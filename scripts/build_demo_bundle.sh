#!/usr/bin/env bash
# Regenerate the demo: train the small QuartzNet and the small Conformer (GigaAM v3 layout)
# on espeak-ng speech (only with --retrain; the checkpoints are committed), then export each
# with the full verification gate (their shared held-out clips as a manifest, so int8 must
# keep their transcripts): QuartzNet to demo/bundle, the Conformer to demo/conformer_bundle
# (the Conformer family's default int8 scheme).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--retrain" ]; then
  .venv/bin/python scripts/train_demo_model.py --out demo/model
  # After the QuartzNet: it writes demo/audio, which the Conformer is then checked on.
  .venv/bin/python scripts/train_demo_conformer.py --out demo/model
fi
.venv/bin/python -m export quartznet demo/model/demo_quartznet_ru.nemo \
  --out demo/bundle --model-id demo-quartznet-ru \
  --verify-manifest demo/audio/manifest.jsonl --force
.venv/bin/python -m export gigaam demo/model/demo_gigaam_ru.ckpt \
  --out demo/conformer_bundle --model-id demo-gigaam-ru \
  --verify-manifest demo/audio/manifest.jsonl --force
