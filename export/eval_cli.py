"""``python -m export eval``: WER/CER of bundles (and the PyTorch original) on a dataset.

python -m export eval dev.jsonl --bundle bundles/golos                       # one bundle
python -m export eval corpus/ --bundle b/fp32 --bundle b/int8 --results rows.tsv
python -m export eval dev.jsonl --bundle b/lm --decoders greedy,beam,beam+lm,beam+lm+hotwords \
    --hotwords "иванов"
python -m export eval dev.jsonl --checkpoint model.nemo --bundle b/fp32 --bundle b/int8 \
    --summary summary.json --results rows.jsonl

The first system is the baseline the others are compared with: the PyTorch original when
``--checkpoint`` is given, else the first ``--bundle``. Exit status: 0 when every utterance
was transcribed by every system, 1 when some failed (recorded per utterance with their error
code, left out of the scores; the run completes), 2 for a bad dataset, checkpoint, bundle
or option.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import torch
from asr.decoding import parse_hotwords
from asr.errors import AsrError
from asr.transcribe import Transcriber
from tqdm import tqdm

from .eval_data import Dataset, DatasetError, load_dataset
from .eval_results import rows_format_for, write_rows, write_summary
from .eval_systems import (
    DECODER_SYSTEMS,
    BundleSystem,
    MemoisedModel,
    System,
    decoder_options,
    load_torch_system,
    unique_names,
)
from .evaluate import EvaluationReport, evaluate
from .quartznet import CheckpointError

EXIT_FAILED_UTTERANCES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", type=Path, help="NeMo JSON-lines manifest, or a folder with audio/ + "
        "transcriptions/",
    )  # fmt: skip
    parser.add_argument(
        "--bundle", type=Path, action="append", default=[], metavar="DIR",
        help="a model bundle to evaluate (repeatable; the first is the baseline unless "
        "--checkpoint is given)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", type=Path, metavar="PATH",
        help="the PyTorch original (.nemo, state_dict + --config, or GigaAM .ckpt): the "
        "baseline, fed the numpy front end's features",
    )  # fmt: skip
    parser.add_argument("--config", type=Path, help="model_config.yaml for a NeMo state_dict")
    parser.add_argument(
        "--checkpoint-kind", choices=["nemo", "gigaam"],
        help="default: by suffix (.nemo or --config: nemo; .ckpt: gigaam)",
    )  # fmt: skip
    parser.add_argument(
        "--nemo-stft", choices=["2.5", "legacy"], default="2.5",
        help="STFT of the NeMo release that trained the checkpoint (as for export nemo)",
    )  # fmt: skip
    parser.add_argument(
        "--head", choices=["ctc", "rnnt"],
        help="a NeMo hybrid checkpoint's head (default rnnt, as for export nemo)",
    )  # fmt: skip
    parser.add_argument("--tokenizer", type=Path, help="SentencePiece model (GigaAM e2e)")
    parser.add_argument("--base", type=Path, help="published .ckpt a GigaAM fine-tune started from")
    parser.add_argument(
        "--no-normalize", action="store_true",
        help="score the raw texts (default: lower case, ё→е, punctuation removed, …)",
    )  # fmt: skip
    parser.add_argument(
        "--results", type=Path, metavar="FILE",
        help="per-utterance rows: .jsonl/.json (JSON Lines) or .tsv",
    )  # fmt: skip
    parser.add_argument("--summary", type=Path, metavar="FILE", help="corpus metrics as JSON")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="utterances at once")
    parser.add_argument(
        "--threads", type=int, help="onnxruntime (and torch) threads; default: 1 per job when "
        "--jobs > 1, else every CPU",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, help="only the first N utterances")
    parser.add_argument(
        "--decoders", metavar="LIST",
        help="compare each bundle under these decoders, comma-separated: "
        f"{', '.join(DECODER_SYSTEMS)} (default: the bundle's own; the model runs once)",
    )  # fmt: skip
    parser.add_argument("--hotwords", help='for the "+hotwords" decoders: "word[:boost], ..."')
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )  # fmt: skip


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    try:
        dataset, systems = _prepare(args)
    except DatasetError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except AsrError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    total = len(dataset.utterances) * len(systems)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        with tqdm(total=total, file=sys.stderr, disable=not show, unit="utt", desc="eval") as bar:
            report = evaluate(
                dataset,
                systems,
                normalize=not args.no_normalize,
                jobs=args.jobs,
                on_result=lambda: bar.update(1),
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(render_summary(report), file=out)
    try:
        if args.results is not None:
            write_rows(report, args.results)
        if args.summary is not None:
            write_summary(report, args.summary)
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILED_UTTERANCES if report.failures else 0


def _prepare(args: argparse.Namespace) -> tuple[Dataset, list[System]]:
    """Check the options, load the dataset, then the systems (the slow part) last."""
    if not args.bundle and args.checkpoint is None:
        raise ValueError("give at least one --bundle DIR or a --checkpoint PATH")
    if args.jobs < 1:
        raise ValueError("--jobs must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    if args.results is not None:
        rows_format_for(args.results)
    dataset = load_dataset(args.dataset)
    if args.limit is not None:
        dataset = replace(dataset, utterances=dataset.utterances[: args.limit])
    for item in dataset.skipped:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
    threads = args.threads or (1 if args.jobs > 1 else None)
    if threads is not None:
        torch.set_num_threads(threads)
    names = unique_names(
        ([f"pytorch:{args.checkpoint.stem}"] if args.checkpoint else [])
        + [bundle.name or str(bundle) for bundle in args.bundle]
    )
    systems: list[System] = []
    if args.checkpoint is not None:
        systems.append(
            load_torch_system(
                args.checkpoint,
                kind=args.checkpoint_kind,
                config=args.config,
                nemo_stft=args.nemo_stft,
                head=args.head,
                tokenizer=args.tokenizer,
                base=args.base,
                name=names[0],
            )
        )
    decoders = [d.strip() for d in (args.decoders or "").split(",") if d.strip()]
    hotwords = parse_hotwords(args.hotwords) if args.hotwords else ()
    options = [decoder_options(d, hotwords) for d in decoders]
    for bundle, name in zip(args.bundle, names[len(systems) :], strict=True):
        if not options:
            systems.append(BundleSystem(bundle, name=name, threads=threads))
            continue
        transcriber = Transcriber.from_dir(bundle, threads=threads)
        transcriber.model = MemoisedModel(transcriber.model)  # type: ignore[assignment]
        for decoder, decoding in zip(decoders, options, strict=True):
            systems.append(
                BundleSystem(
                    bundle, name=f"{name}/{decoder}", decoding=decoding, transcriber=transcriber
                )
            )
    return dataset, systems


def render_summary(report: EvaluationReport) -> str:
    dataset = report.dataset
    normalised = "normalised (russian)" if report.normalized else "raw (--no-normalize)"
    lines = [
        f"dataset: {dataset.source} ({dataset.kind}), {len(report.utterances)} utterances, "
        f"{report.audio_seconds / 3600:.4f} h of audio; texts {normalised}",
    ]
    if dataset.skipped:
        lines.append(f"skipped files (unpaired or not audio/.txt): {len(dataset.skipped)}")
    lines.append("systems (the first is the baseline):")
    lines += [f"  {s.name}: {s.description}" for s in report.systems]
    lines += ["", _table(
        ["system", "utts", "failed", "WER %", "CER %", "words S/D/I", "chars S/D/I",
         "audio h", "proc s", "RTF"],
        [
            [s.name, str(s.utterances), str(s.failed), _percent(s.wer), _percent(s.cer),
             _sdi(s.words.substitutions, s.words.deletions, s.words.insertions),
             _sdi(s.chars.substitutions, s.chars.deletions, s.chars.insertions),
             f"{s.audio_seconds / 3600:.4f}", f"{s.processing_seconds:.2f}",
             "-" if s.rtf is None else f"{s.rtf:.4f}"]
            for s in report.systems
        ],
    )]  # fmt: skip
    failed = [s for s in report.systems if s.failed]
    if failed:
        lines.append("failed utterances are left out of that system's scores:")
        lines += [
            f"  {s.name}: {s.failed} ({', '.join(f'{c} {n}' for c, n in s.error_codes.items())})"
            for s in failed
        ]
    if report.comparisons:
        lines += ["", f"against the baseline {report.baseline}, over utterances both transcribed:"]
        lines.append(_table(
            ["system", "utts", "ΔWER pts", "ΔCER pts", "token agreement", "unit", "identical"],
            [
                [c.system, str(c.utterances), _signed(c.wer_delta_points),
                 _signed(c.cer_delta_points),
                 "-" if c.token_agreement is None else f"{c.token_agreement:.4%}",
                 c.token_unit, f"{c.identical}/{c.utterances}"]
                for c in report.comparisons
            ],
        ))  # fmt: skip
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}"


def _signed(points: float | None) -> str:
    return "-" if points is None else f"{points:+.2f}"


def _sdi(substitutions: int, deletions: int, insertions: int) -> str:
    return f"{substitutions}/{deletions}/{insertions}"
