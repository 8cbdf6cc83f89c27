"""``python -m export gigaam emo.ckpt``: the emotion half of the gigaam subcommand (its
options and the export run); export/__main__.py dispatches here for GigaAM-Emo cfgs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tqdm import tqdm

from .emotion_export import EMOTION_SCHEME, EmotionExportOptions, export_emotion_bundle
from .emotion_verify import EmotionThresholds
from .gigaam_emo import EmotionSource
from .quantize import SCHEMES
from .verify import Clip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = EmotionThresholds()
    parser.add_argument(
        "--max-prob-diff",
        type=float,
        default=defaults.max_fp32_prob_diff,
        help="GigaAM-Emo: largest PyTorch vs ONNX fp32 probability difference",
    )
    parser.add_argument(
        "--min-label-agreement",
        type=float,
        default=defaults.min_int8_label_agreement,
        help="GigaAM-Emo: share of clips whose int8 label must be fp32's",
    )


def run(
    args: argparse.Namespace, source: EmotionSource, model_id: str, clips: Sequence[Clip]
) -> int:
    options = EmotionExportOptions(
        model_id=model_id,
        precision=args.precision or "auto",
        scheme=SCHEMES[args.int8_scheme] if args.int8_scheme else EMOTION_SCHEME,
        thresholds=EmotionThresholds(
            max_fp32_prob_diff=args.max_prob_diff,
            min_int8_label_agreement=args.min_label_agreement,
        ),
        overwrite=args.force,
    )
    with tqdm(total=len(clips), desc="verifying", unit="clip", disable=None) as bar:
        bundle = export_emotion_bundle(
            source, args.out, clips, options,
            step=lambda message: tqdm.write(f"• {message}"), on_clip=lambda clip: bar.update(1),
        )  # fmt: skip
    size = bundle.path(bundle.config.model.file).stat().st_size
    report = bundle.verification
    print(f"emotion bundle written: {bundle.root} ({size / 1e6:.1f} MB model)")
    print(f"  labels: {', '.join(bundle.config.labels)}")
    print(f"  precision: {report['precision']} ({report['precision_reason']})")
    for key, value in report["metrics"].items():
        print(f"  {key}: {value}")
    return 0
