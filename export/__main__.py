"""``python -m export``: checkpoint → verified int8 model bundle.

python -m export quartznet model.nemo --out bundles/my-model
python -m export quartznet weights.pt --config model_config.yaml --out bundles/my-model
python -m export quartznet --download golos_quartznet15x5 --sha256 <hex> --out bundles/golos
python -m export download stt_ru_quartznet15x5 --dest checkpoints/ --accept-unverified
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from asr.bundle import sha256_of
from asr.errors import AsrError
from tqdm import tqdm

from .checkpoint import load_checkpoint, load_quartznet
from .clips import file_clips, manifest_clips, synthetic_clips
from .download import REGISTRY, DownloadError, download
from .nemo_config import NemoStft
from .pipeline import ExportOptions, ExportRejected, export_bundle
from .quartznet import CheckpointError
from .verify import Thresholds


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "download":
            path = _download(args.name, args.dest, args.sha256, args.accept_unverified)
            print(path)
            return 0
        return _export(args)
    except ExportRejected as exc:
        print(f"export refused: {exc}", file=sys.stderr)
        return 3
    except (CheckpointError, DownloadError, AsrError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.download is None):
        raise ValueError("give either a checkpoint path or --download NAME")
    checkpoint_path = args.checkpoint or _download(
        args.download, args.download_dir, args.sha256, args.accept_unverified
    )
    nemo_stft: NemoStft = args.nemo_stft or (
        REGISTRY[args.download].nemo_stft if args.download else "2.5"
    )
    source = load_quartznet(load_checkpoint(checkpoint_path, args.config), nemo_stft)
    model_id = args.model_id or checkpoint_path.stem
    sample_rate = source.frontend.sample_rate
    clips = [] if args.no_synthetic else synthetic_clips(sample_rate)
    clips += file_clips(args.verify_audio, sample_rate)
    clips += manifest_clips(args.verify_manifest, sample_rate)
    options = ExportOptions(
        model_id=model_id,
        thresholds=Thresholds(
            max_fp32_logprob_diff=args.max_logprob_diff,
            min_int8_token_agreement=args.min_token_agreement,
            max_int8_cer_delta=args.max_cer_delta,
            max_int8_cer_vs_fp32=args.max_cer_vs_fp32,
        ),
        precision=args.precision,
        overwrite=args.force,
    )
    with tqdm(total=len(clips), desc="verifying", unit="clip", disable=None) as bar:
        bundle = export_bundle(
            source,
            args.out,
            clips,
            options,
            step=lambda message: tqdm.write(f"• {message}"),
            on_clip=lambda clip: bar.update(1),
        )
    metrics = bundle.verification["metrics"]
    size = bundle.model_path.stat().st_size
    print(f"bundle written: {bundle.root} ({size / 1e6:.1f} MB model, {args.precision})")
    for key, value in metrics.items():
        print(f"  {key}: {value}")
    return 0


def _download(name: str, dest: Path, sha256: str | None, accept_unverified: bool) -> Path:
    entry = REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(REGISTRY))}")
    with tqdm(desc=f"downloading {entry.filename}", unit="B", unit_scale=True) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        path = download(
            entry, dest, sha256=sha256, accept_unverified=accept_unverified, progress=progress
        )
    tqdm.write(f"sha256 {sha256_of(path)}  {path}")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    quartznet = commands.add_parser("quartznet", help="export a NeMo QuartzNet/Jasper CTC model")
    quartznet.add_argument("checkpoint", nargs="?", type=Path, help=".nemo archive or state_dict")
    quartznet.add_argument("--config", type=Path, help="model_config.yaml for a plain state_dict")
    quartznet.add_argument("--download", metavar="NAME", choices=sorted(REGISTRY))
    quartznet.add_argument("--download-dir", type=Path, default=Path("checkpoints"))
    quartznet.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    quartznet.add_argument("--model-id", help="identifier reported with every transcript")
    quartznet.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    quartznet.add_argument(
        "--nemo-stft",
        choices=["2.5", "legacy"],
        help="STFT of the NeMo release that trained the model: 2.5 = zero padding, len//hop "
        "frames (default); legacy = before NeMo 2.5, reflect padding, len//hop + 1 frames "
        "(the default for --download names, which predate 2.5)",
    )
    quartznet.add_argument("--verify-audio", type=Path, nargs="*", default=[], metavar="FILE")
    quartznet.add_argument("--verify-manifest", type=Path, nargs="*", default=[], metavar="JSONL")
    quartznet.add_argument("--no-synthetic", action="store_true", help="skip espeak-ng clips")
    defaults = Thresholds()
    quartznet.add_argument("--max-logprob-diff", type=float, default=defaults.max_fp32_logprob_diff)
    quartznet.add_argument(
        "--min-token-agreement", type=float, default=defaults.min_int8_token_agreement
    )
    quartznet.add_argument("--max-cer-delta", type=float, default=defaults.max_int8_cer_delta)
    quartznet.add_argument("--max-cer-vs-fp32", type=float, default=defaults.max_int8_cer_vs_fp32)
    quartznet.add_argument("--force", action="store_true", help="replace an existing bundle")
    _download_options(quartznet)

    fetch = commands.add_parser("download", help="download a published checkpoint by name")
    fetch.add_argument("name", choices=sorted(REGISTRY))
    fetch.add_argument("--dest", type=Path, default=Path("checkpoints"))
    _download_options(fetch)
    return parser


def _download_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sha256", help="expected sha256 of the download")
    parser.add_argument(
        "--accept-unverified", action="store_true", help="allow a download with no known sha256"
    )


if __name__ == "__main__":
    sys.exit(main())
