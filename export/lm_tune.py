"""``python -m export tune-lm``: grid-search the LM weight (alpha) and word bonus (beta) of a
bundle's beam search on a dev set, and optionally write the best pair into the bundle.

    python -m export tune-lm dev.jsonl --bundle bundles/golos \\
        --alphas 0.3,0.5,0.8,1.2 --betas 0,1,2 --beam-width 16 [--write]

The acoustic model runs once per utterance (``eval_systems.MemoisedModel``); each grid point
only re-runs the search. The best point has the lowest WER, then CER, then is the first
listed (ties keep the smaller weights).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from asr.bundle import CONFIG_FILE, load_bundle, write_checksums
from asr.decoding import DecodingOptions
from asr.transcribe import Transcriber

from .eval_data import load_dataset
from .eval_systems import BundleSystem, MemoisedModel
from .evaluate import SystemSummary, evaluate


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"--{name} needs at least one value")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="NeMo manifest or audio/+transcriptions/")
    parser.add_argument("--bundle", type=Path, required=True, help="a CTC bundle with an LM")
    parser.add_argument("--alphas", default="0.2,0.4,0.6,0.8,1.0,1.5")
    parser.add_argument("--betas", default="-1,0,1,2,3")
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--limit", type=int, help="only the first N utterances")
    parser.add_argument("--write", action="store_true", help="store the best pair in the bundle")


def tune(args: argparse.Namespace) -> tuple[float, float, list[tuple[float, float, SystemSummary]]]:
    alphas, betas = _floats(args.alphas, "alphas"), _floats(args.betas, "betas")
    transcriber = Transcriber.from_dir(args.bundle)
    if transcriber.bundle.config.decoder.lm is None:
        raise ValueError(f"{args.bundle} has no language model: python -m export attach-lm first")
    dataset = load_dataset(args.dataset)
    if args.limit is not None:
        dataset = replace(dataset, utterances=dataset.utterances[: args.limit])
    transcriber.model = MemoisedModel(transcriber.model)  # type: ignore[assignment]
    grid = [(alpha, beta) for alpha in alphas for beta in betas]
    systems = [
        BundleSystem(
            args.bundle,
            name=f"alpha={alpha:g} beta={beta:g}",
            transcriber=transcriber,
            decoding=DecodingOptions(
                method="beam", beam_width=args.beam_width, use_lm=True, alpha=alpha, beta=beta
            ),
        )
        for alpha, beta in grid
    ]
    report = evaluate(dataset, systems, warm_up=False)
    results = [(a, b, s) for (a, b), s in zip(grid, report.systems, strict=True)]
    scored = [r for r in results if r[2].wer is not None]
    if not scored:
        raise ValueError("no utterance could be scored")
    best = min(scored, key=lambda r: (r[2].wer, r[2].cer or 0.0))
    return best[0], best[1], results


def run(args: argparse.Namespace) -> int:
    alpha, beta, results = tune(args)
    print("alpha  beta   WER      CER")
    for a, b, summary in results:
        wer = "-" if summary.wer is None else f"{summary.wer:.4f}"
        cer = "-" if summary.cer is None else f"{summary.cer:.4f}"
        print(f"{a:<6g} {b:<6g} {wer:<8} {cer}")
    print(f"best: alpha {alpha:g}, beta {beta:g}")
    if args.write:
        write_weights(args.bundle, alpha, beta)
        print(f"{args.bundle}: config.json now has alpha {alpha:g}, beta {beta:g}")
    return 0


def write_weights(bundle_dir: Path, alpha: float, beta: float) -> None:
    config = load_bundle(bundle_dir).config
    lm = config.decoder.lm
    if lm is None:
        raise ValueError(f"{bundle_dir} has no language model")
    decoder = replace(config.decoder, lm=replace(lm, alpha=alpha, beta=beta))
    config = replace(config, decoder=decoder)
    (bundle_dir / CONFIG_FILE).write_text(
        json.dumps(config.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8"
    )
    write_checksums(bundle_dir, config)
