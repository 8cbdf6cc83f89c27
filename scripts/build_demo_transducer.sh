#!/usr/bin/env bash
# Build the demo transducer (GigaAM v3 RNNT layout) and its int8 bundle; not committed (9 MB).
# Its encoder starts from the demo Conformer's (scripts/build_demo_conformer.sh runs first);
# training is seeded and deterministic, stops once every validation clip is exact (~2.5 min
# on 2 cores with the speech synthesis), and fails unless every held-out demo clip is exact
# after reloading the checkpoint. The export runs the full gate.
#   scripts/build_demo_transducer.sh            build what is missing
#   scripts/build_demo_transducer.sh --retrain  train and export again
set -euo pipefail
cd "$(dirname "$0")/.."
encoder=demo/model/demo_gigaam_ru.ckpt
checkpoint=demo/model/demo_gigaam_rnnt_ru.ckpt
bundle=demo/transducer_bundle
if [ "${1:-}" = "--retrain" ]; then
  rm -f "$checkpoint"
fi
if [ ! -f "$checkpoint" ]; then
  echo "• training the demo transducer (GigaAM v3 RNNT layout) on espeak-ng speech"
  rm -rf "$bundle"
  .venv/bin/python scripts/train_demo_transducer.py --out demo/model --encoder-from "$encoder"
fi
if [ ! -f "$bundle/config.json" ]; then
  echo "• exporting the demo transducer to $bundle"
  .venv/bin/python -m export gigaam "$checkpoint" \
    --out "$bundle" --model-id demo-gigaam-rnnt-ru \
    --verify-manifest demo/audio/manifest.jsonl --force
fi
