"""``python -m export``: checkpoint → verified int8 model bundle.

python -m export nemo model.nemo --out bundles/my-model        # QuartzNet or (Fast)Conformer
python -m export nemo hybrid.nemo --head ctc --out b/          # a hybrid's CTC head (default: RNNT)
python -m export nemo weights.pt --config model_config.yaml --out bundles/my-model
python -m export nemo --download golos_quartznet15x5 --sha256 <hex> --out bundles/golos
python -m export gigaam --download v3_ctc --out bundles/gigaam-v3    # or a local .ckpt
python -m export gigaam --download v3_rnnt --out bundles/gigaam-v3-rnnt
python -m export gigaam finetuned.ckpt --base v3_ctc.ckpt --out bundles/mine
python -m export gigaam --download emo --out bundles/gigaam-emo      # GigaAM-Emo: an emotion bundle
python -m export onnx v3_ctc.onnx --gigaam-cfg v3_ctc.yaml --out bundles/gigaam-v3-onnx
python -m export onnx model.onnx --tokens tokens.txt --frontend nemo-fastconformer --out b/
python -m export download stt_ru_quartznet15x5 --dest checkpoints/ --accept-unverified
python -m export eval dev.jsonl --checkpoint model.nemo --bundle b/fp32 --bundle b/int8
python -m export build-lm corpus.txt --order 3 --out lm.arpa   # without KenLM's lmplz
python -m export attach-lm bundles/my-model lm.arpa --alpha 0.5 --beta 1.0  # or lm.bin --unigrams
python -m export tune-lm dev.jsonl --bundle bundles/my-model --write  # alpha, beta from a dev set
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
from .emotion_cli import add_arguments as add_emotion_arguments
from .emotion_cli import run as run_emotion
from .eval_cli import add_arguments as add_eval_arguments
from .eval_cli import run as run_eval
from .gigaam import asr_source, read_gigaam
from .gigaam_emo import EmotionSource, emotion_source
from .gigaam_heads import is_emotion_cfg
from .gigaam_releases import download_gigaam
from .lm_attach import attach_lm
from .lm_tune import add_arguments as add_tune_arguments
from .lm_tune import run as run_tune
from .nemo_conformer import load_nemo_conformer
from .nemo_preprocessor import NemoStft
from .ngram_estimate import build_arpa
from .onnx_import import FRONTEND_PRESETS, describe_gigaam_graph, describe_graph
from .pipeline import ExportOptions, ExportRejected, export_bundle, export_onnx_bundle
from .quantize import SCHEMES
from .quartznet import CheckpointError
from .source_model import ModelDescription, SourceModel
from .verify import Clip, Thresholds


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "tune-lm":
        try:
            return run_tune(args)
        except (AsrError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "download":
            path = _download(args.name, args.dest, args.sha256, args.accept_unverified)
            print(path)
            return 0
        if args.command == "build-lm":
            words = build_arpa(args.corpus, args.out, args.order)
            print(f"{args.out}: {args.order}-gram, {words} words")
            return 0
        if args.command == "attach-lm":
            lm = attach_lm(
                args.bundle,
                args.lm,
                alpha=args.alpha,
                beta=args.beta,
                unigrams=args.unigrams,
                default=args.default,
            )
            print(f"{args.bundle}: {lm.file} ({lm.kind}), default decoder {args.default}")
            return 0
        return _export(args)
    except ExportRejected as exc:
        print(f"export refused: {exc}", file=sys.stderr)
        return 3
    except (CheckpointError, DownloadError, AsrError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    if args.command == "onnx":
        description = _describe_graph(args)
        model_id = args.model_id or args.graph.stem
        return _bundle(args, description, model_id, graph=args.graph)
    if (args.checkpoint is None) == (args.download is None):
        raise ValueError("give either a checkpoint path or --download NAME")
    if args.command == "gigaam":
        source, model_id = _gigaam_source(args)
        if isinstance(source, EmotionSource):
            clips = _clips(args, source.frontend.sample_rate)
            return run_emotion(args, source, args.model_id or model_id, clips)
    else:
        source, model_id = _nemo_source(args)
    return _bundle(args, source, args.model_id or model_id)


def _nemo_source(args: argparse.Namespace) -> tuple[SourceModel, str]:
    checkpoint_path = args.checkpoint or _download(
        args.download, args.download_dir, args.sha256, args.accept_unverified
    )
    nemo_stft: NemoStft = args.nemo_stft or (
        REGISTRY[args.download].nemo_stft if args.download else "2.5"
    )
    checkpoint = load_checkpoint(checkpoint_path, args.config)
    target = str(checkpoint.config.get("encoder", {}).get("_target_", ""))
    if target.endswith("ConformerEncoder"):
        return load_nemo_conformer(checkpoint, nemo_stft, args.head), checkpoint_path.stem
    if args.head is not None:
        raise ValueError("--head applies to NeMo hybrid RNNT-CTC Conformer models")
    return load_quartznet(checkpoint, nemo_stft), checkpoint_path.stem


def _gigaam_source(args: argparse.Namespace) -> tuple[SourceModel | EmotionSource, str]:
    tokenizer = args.tokenizer
    if args.download:
        with tqdm(desc=f"downloading GigaAM {args.download}", unit="B", unit_scale=True) as bar:

            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            path, fetched = download_gigaam(
                args.download, args.download_dir, tokenizer_sha256=args.sha256, progress=progress
            )
        tokenizer = tokenizer or fetched
    else:
        path = args.checkpoint
    checkpoint = read_gigaam(path, base=args.base)
    if is_emotion_cfg(checkpoint.cfg):
        if tokenizer is not None:
            raise ValueError("a GigaAM-Emo checkpoint takes no tokenizer")
        return emotion_source(checkpoint), path.stem
    return asr_source(checkpoint, tokenizer=tokenizer), path.stem


def _describe_graph(args: argparse.Namespace) -> ModelDescription:
    if args.gigaam_cfg is not None:
        return describe_gigaam_graph(args.gigaam_cfg, args.tokenizer)
    if args.tokens is None or args.frontend is None:
        raise ValueError("describe the graph: --gigaam-cfg YAML, or --tokens FILE --frontend NAME")
    return describe_graph(args.tokens, args.frontend, subsampling=args.subsampling)


def _bundle(
    args: argparse.Namespace,
    source: ModelDescription,
    model_id: str,
    *,
    graph: Path | None = None,
) -> int:
    if args.precision == "auto":
        raise ValueError("--precision auto is for emotion classifiers; ASR bundles: int8 or fp32")
    args.precision = args.precision or "int8"
    clips = _clips(args, source.frontend.sample_rate)
    options = ExportOptions(
        model_id=model_id,
        thresholds=Thresholds(
            max_fp32_logprob_diff=args.max_logprob_diff,
            min_int8_token_agreement=args.min_token_agreement,
            max_int8_cer_delta=args.max_cer_delta,
            max_int8_cer_vs_fp32=args.max_cer_vs_fp32,
        ),
        precision=args.precision,
        scheme=SCHEMES[args.int8_scheme] if args.int8_scheme else None,
        overwrite=args.force,
    )
    with tqdm(total=len(clips), desc="verifying", unit="clip", disable=None) as bar:
        step = lambda message: tqdm.write(f"• {message}")  # noqa: E731
        on_clip = lambda clip: bar.update(1)  # noqa: E731
        if graph is not None:
            bundle = export_onnx_bundle(
                graph, source, args.out, clips, options, step=step, on_clip=on_clip
            )
        else:
            assert isinstance(source, SourceModel)
            bundle = export_bundle(source, args.out, clips, options, step=step, on_clip=on_clip)
    metrics = bundle.verification["metrics"]
    size = bundle.model_path.stat().st_size
    print(f"bundle written: {bundle.root} ({size / 1e6:.1f} MB model, {args.precision})")
    for key, value in metrics.items():
        print(f"  {key}: {value}")
    return 0


def _clips(args: argparse.Namespace, sample_rate: int) -> list[Clip]:
    clips = [] if args.no_synthetic else synthetic_clips(sample_rate)
    clips += file_clips(args.verify_audio, sample_rate)
    clips += manifest_clips(args.verify_manifest, sample_rate)
    return clips


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

    nemo = commands.add_parser(
        "nemo",
        aliases=["quartznet"],
        help="export a NeMo QuartzNet/Jasper, Conformer-CTC or FastConformer hybrid model",
    )
    nemo.add_argument("checkpoint", nargs="?", type=Path, help=".nemo archive or state_dict")
    nemo.add_argument("--config", type=Path, help="model_config.yaml for a plain state_dict")
    nemo.add_argument("--download", metavar="NAME", choices=sorted(REGISTRY))
    nemo.add_argument(
        "--nemo-stft",
        choices=["2.5", "legacy"],
        help="STFT of the NeMo release that trained the model: 2.5 = zero padding, len//hop "
        "frames (default); legacy = before NeMo 2.5, reflect padding, len//hop + 1 frames "
        "(the default for --download names, which predate 2.5)",
    )
    nemo.add_argument(
        "--head",
        choices=["ctc", "rnnt"],
        help="a hybrid RNNT-CTC model's head to export: rnnt (default, NeMo's own decoder for "
        "hybrids) or ctc",
    )
    _download_options(nemo)

    gigaam = commands.add_parser(
        "gigaam", help="export a GigaAM v1/v2/v3 CTC or RNNT checkpoint, or GigaAM-Emo"
    )
    gigaam.add_argument("checkpoint", nargs="?", type=Path, help="<name>.ckpt or a fine-tune")
    gigaam.add_argument(
        "--download",
        metavar="NAME",
        help="v2_ctc, v3_ctc, v3_e2e_ctc, v3_rnnt, v3_e2e_rnnt, emo, …",
    )
    gigaam.add_argument("--tokenizer", type=Path, help="SentencePiece model (e2e models)")
    gigaam.add_argument("--base", type=Path, help="the published .ckpt a fine-tune started from")
    gigaam.add_argument("--sha256", help="expected sha256 of the e2e tokenizer download")
    add_emotion_arguments(gigaam)

    graph = commands.add_parser(
        "onnx", help="bundle already-exported upstream graphs (CTC, or GigaAM RNNT encoder)"
    )
    graph.add_argument("graph", type=Path, help="fp32 ONNX: GigaAM to_onnx or NeMo export")
    graph.add_argument("--gigaam-cfg", type=Path, help="the <model_name>.yaml to_onnx saved")
    graph.add_argument("--tokenizer", type=Path, help="SentencePiece model (GigaAM e2e)")
    graph.add_argument("--tokens", type=Path, help="tokens.txt: '<token> <id>' per line")
    graph.add_argument("--frontend", choices=sorted(FRONTEND_PRESETS))
    graph.add_argument("--subsampling", type=int, help="output frames per 10 ms feature frames")

    for command in (nemo, gigaam, graph):
        _bundle_options(command)

    fetch = commands.add_parser("download", help="download a published NeMo checkpoint by name")
    fetch.add_argument("name", choices=sorted(REGISTRY))
    fetch.add_argument("--dest", type=Path, default=Path("checkpoints"))
    _download_options(fetch)

    evaluation = commands.add_parser(
        "eval", help="WER/CER of bundles (and the PyTorch original) on a manifest or folder"
    )
    add_eval_arguments(evaluation)

    add_tune_arguments(
        commands.add_parser("tune-lm", help="grid-search a bundle's LM alpha/beta on a dev set")
    )

    build = commands.add_parser("build-lm", help="estimate an ARPA word n-gram LM from text")
    build.add_argument("corpus", type=Path, help="text, one sentence per line")
    build.add_argument("--order", type=int, default=3)
    build.add_argument("--out", type=Path, required=True)

    attach = commands.add_parser("attach-lm", help="add a word LM to a CTC bundle (beam search)")
    attach.add_argument("bundle", type=Path)
    attach.add_argument("lm", type=Path, help="ARPA (.arpa, .arpa.gz) or a KenLM binary")
    attach.add_argument("--alpha", type=float, default=0.5, help="LM weight")
    attach.add_argument("--beta", type=float, default=1.0, help="word insertion bonus")
    attach.add_argument("--unigrams", type=Path, help="a KenLM binary's word list")
    attach.add_argument(
        "--default",
        choices=["beam", "greedy"],
        default="beam",
        help="the bundle's default decoder (requests may choose the other)",
    )
    return parser


def _bundle_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download-dir", type=Path, default=Path("checkpoints"))
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--model-id", help="identifier reported with every transcript")
    parser.add_argument(
        "--precision",
        choices=["int8", "fp32", "auto"],
        help="default int8; emotion bundles: auto (int8 only where it is faster and keeps "
        "every label)",
    )
    parser.add_argument(
        "--int8-scheme", choices=sorted(SCHEMES), help="default: the model family's"
    )
    parser.add_argument("--verify-audio", type=Path, nargs="*", default=[], metavar="FILE")
    parser.add_argument("--verify-manifest", type=Path, nargs="*", default=[], metavar="JSONL")
    parser.add_argument("--no-synthetic", action="store_true", help="skip espeak-ng clips")
    defaults = Thresholds()
    parser.add_argument("--max-logprob-diff", type=float, default=defaults.max_fp32_logprob_diff)
    parser.add_argument(
        "--min-token-agreement", type=float, default=defaults.min_int8_token_agreement
    )
    parser.add_argument("--max-cer-delta", type=float, default=defaults.max_int8_cer_delta)
    parser.add_argument("--max-cer-vs-fp32", type=float, default=defaults.max_int8_cer_vs_fp32)
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")


def _download_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sha256", help="expected sha256 of the download")
    parser.add_argument(
        "--accept-unverified", action="store_true", help="allow a download with no known sha256"
    )


if __name__ == "__main__":
    sys.exit(main())
