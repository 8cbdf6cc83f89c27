#!/usr/bin/env bash
# Regenerate the demo: train the small QuartzNet on espeak-ng speech (only with --retrain;
# its checkpoint is committed), then export it with the full verification gate (its
# held-out clips as a manifest, so int8 must keep their transcripts) to demo/bundle. The
# demo Conformer (GigaAM v3 layout) is built by scripts/build_demo_conformer.sh, which
# setup runs: its 8 MB checkpoint is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--retrain" ]; then
  .venv/bin/python scripts/train_demo_model.py --out demo/model
fi
.venv/bin/python -m export nemo demo/model/demo_quartznet_ru.nemo \
  --out demo/bundle --model-id demo-quartznet-ru \
  --verify-manifest demo/audio/manifest.jsonl --force
# After the QuartzNet: it writes demo/audio, which the Conformer is checked on.
bash scripts/build_demo_conformer.sh "$@"
