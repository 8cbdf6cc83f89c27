"""``python -m asr``: transcribe files, folders and lists with a model bundle (the Lambda's path).

python -m asr --bundle demo/bundle clip.wav other.mp3        # "path<TAB>text" per file
python -m asr --bundle demo/bundle talks/ @more.txt --jobs 2 --format srt --format json
python -m asr --bundle demo/bundle talks/ --output-dir out/ --format vtt
python -m asr --bundle demo/bundle talks/ --results all.jsonl  # or all.tsv, or - (stdout)
find calls -name '*.opus' | python -m asr --bundle demo/bundle - --format text
python -m asr --bundle demo/bundle calls/ --hotwords "иванов, сбербанк:3" --beam-width 16
python -m asr --bundle demo/bundle calls/ --channels split --speakers "agent, client" --format srt

Exit status: 0 when every file was transcribed (or skipped: its outputs exist), 1 when any
failed (each reported on stderr as "path<TAB>error CODE: message"), 2 for a usage or bundle
error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .batch import FileResult, transcribe_paths
from .batch_outputs import (
    FILE_FORMATS,
    RESULTS_FORMATS,
    FileFormat,
    ResultsFormat,
    ResultsSink,
    TextListing,
    output_paths,
    render_file,
    results_format_for,
    results_sink,
    write_atomically,
)
from .channels import CHANNEL_MODES, ChannelOptions, deployment_channels
from .decoding import DECODER_METHODS, DecodingOptions, parse_options
from .errors import AsrError
from .inputs import InputFile, InputListError, collect_inputs
from .progress import ProgressDisplay
from .transcribe import Transcriber

EXIT_FAILED_FILES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Plan:
    """What one run does: which files, their per-file outputs, where the results go."""

    todo: list[InputFile]
    outputs: dict[Path, dict[FileFormat, Path]]  # per input path
    skipped: int
    results_path: str | None  # "-" is stdout
    results_format: ResultsFormat | None  # None: the plain "path<TAB>text" listing
    decoding: DecodingOptions  # for every file
    channels: ChannelOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asr",
        description=(__doc__ or "").split("\n")[0],
        epilog="Inputs: audio files (any format ffmpeg reads), folders (searched recursively "
        "for audio extensions), @LIST (one path per line, relative to the list's folder) "
        "and - (such a list on stdin).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder, @list or -")
    parser.add_argument("--bundle", default=os.environ.get("MODEL_DIR"), help="model bundle dir")
    parser.add_argument(
        "--emotion",
        metavar="DIR",
        help="an emotion bundle: every segment gets an emotion (in the JSON outputs)",
    )
    parser.add_argument(
        "--jobs", "-j", type=int, default=1, help="files transcribed at once (0: one per CPU)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="onnxruntime threads (default: 1 per job)"
    )
    parser.add_argument(
        "--format",
        "-f",
        dest="formats",
        action="append",
        choices=FILE_FORMATS,
        help="write this output per file (repeatable): beside the input, as NAME.EXT.FORMAT",
    )
    parser.add_argument(
        "--output-dir", "-o", type=Path, help="write per-file outputs here, mirroring the inputs"
    )
    parser.add_argument("--results", help="one file for all inputs (.tsv: TSV, else JSON Lines)")
    parser.add_argument("--results-format", choices=RESULTS_FORMATS)
    parser.add_argument("--json", action="store_true", help="same as --results - (JSON Lines)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    decoding = parser.add_argument_group("decoding (default: the bundle's own)")
    decoding.add_argument("--decoder", choices=DECODER_METHODS)
    decoding.add_argument("--beam-width", metavar="N", help="beam search width, 1-64")
    decoding.add_argument(
        "--no-lm", action="store_true", help="beam search without the bundle's language model"
    )
    decoding.add_argument("--alpha", help="language model weight, 0-5")
    decoding.add_argument("--beta", help="word insertion bonus, -10-10")
    decoding.add_argument(
        "--hotwords", metavar="LIST", help='words to favour: "word[:boost], ..." (beam search)'
    )
    decoding.add_argument("--hotword-boost", metavar="BOOST", help="default boost, (0, 10]")
    calls = parser.add_argument_group("calls")
    calls.add_argument(
        "--channels",
        choices=CHANNEL_MODES,
        default="mix",
        help="split: transcribe each channel of a stereo file apart, as one dialogue "
        "(mono files as they are); mix (default): down-mix",
    )
    calls.add_argument("--speakers", metavar="NAMES", help='channel names, "agent, client"')
    return parser


def decoding_options(args: argparse.Namespace) -> DecodingOptions:
    """The decoding flags as ``asr.decoding`` request fields; UsageError when refused."""
    fields: dict[str, Any] = {
        "decoder": args.decoder,
        "beam_width": args.beam_width,
        "lm": False if args.no_lm else None,
        "alpha": args.alpha,
        "beta": args.beta,
        "hotwords": args.hotwords,
        "hotword_boost": args.hotword_boost,
    }
    try:
        return parse_options(fields)
    except AsrError as exc:
        raise UsageError(f"{exc.code}: {exc.message}") from None


def channel_options(args: argparse.Namespace) -> ChannelOptions:
    """``--channels``/``--speakers``: a folder of calls may hold mono files, which are
    transcribed as they are (as a deployment's ``CHANNELS=split`` does)."""
    if args.speakers and args.channels != "split":
        raise UsageError("--speakers name the channels of --channels split")
    try:
        return deployment_channels(args.channels, args.speakers or "")
    except AsrError as exc:
        raise UsageError(f"{exc.code}: {exc.message}") from None


def make_plan(args: argparse.Namespace, stdin: TextIO) -> Plan:
    if args.jobs < 0:
        raise UsageError("--jobs must be 0 (one per CPU) or more")
    if args.json and args.results:
        raise UsageError("give --json or --results, not both")
    decoding = decoding_options(args)
    channels = channel_options(args)
    results_path: str | None = "-" if args.json else args.results
    formats: list[FileFormat] = list(dict.fromkeys(args.formats or []))
    if args.output_dir is not None and not formats:
        formats = ["json"]
    if results_path not in (None, "-") and Path(results_path).exists() and not args.overwrite:
        raise UsageError(f"{results_path} exists; give --overwrite to replace it")
    results_format: ResultsFormat | None = None
    if results_path is not None:
        results_format = args.results_format or results_format_for(results_path)
    try:
        items = collect_inputs(args.inputs, stdin=stdin)
    except InputListError as exc:
        raise UsageError(str(exc)) from None
    if not items:
        raise UsageError("no audio files found in the inputs")
    outputs = {item.path: output_paths(item, formats, args.output_dir) for item in items}
    _refuse_collisions(items, outputs)
    todo = items
    # Only per-file outputs wanted: a file whose outputs all exist is done already.
    if formats and results_path is None and not args.overwrite:
        todo = [i for i in items if not all(p.exists() for p in outputs[i.path].values())]
    if results_path is None and not formats:
        results_path = "-"  # the default: a "path<TAB>text" listing on stdout
    skipped = len(items) - len(todo)
    return Plan(todo, outputs, skipped, results_path, results_format, decoding, channels)


def _refuse_collisions(items: list[InputFile], outputs: dict[Path, dict[FileFormat, Path]]) -> None:
    owners: dict[Path, Path] = {}
    for item in items:
        for path in outputs[item.path].values():
            first = owners.setdefault(path, item.path)
            if first != item.path:
                raise UsageError(
                    f"{first} and {item.path} would both write {path}; "
                    "pass their folders, or run them separately"
                )


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if not args.bundle:
        parser.error("give --bundle DIR (or set MODEL_DIR)")
    try:
        plan = make_plan(args, stdin or sys.stdin)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        transcriber = Transcriber.from_dir(
            args.bundle,
            threads=args.threads or (1 if args.jobs != 1 else None),
            emotion=args.emotion,
        )
        transcriber.decoding(plan.decoding)  # options this bundle cannot apply: refused once
    except AsrError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    show = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        failed = run(plan, transcriber, args, show_progress=show)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    done = len(plan.todo) - failed
    skipped = f", {plan.skipped} skipped (outputs exist)" if plan.skipped else ""
    print(f"{done} transcribed, {failed} failed{skipped}", file=sys.stderr)
    return EXIT_FAILED_FILES if failed else 0


def run(
    plan: Plan, transcriber: Transcriber, args: argparse.Namespace, *, show_progress: bool
) -> int:
    """Transcribe ``plan.todo``; returns how many files failed."""
    failed = 0
    with ExitStack() as stack:
        sink = _open_sink(plan, stack)
        progress = stack.enter_context(
            ProgressDisplay(len(plan.todo), sys.stderr, enabled=show_progress)
        )
        paths = [item.path for item in plan.todo]
        results = transcribe_paths(
            transcriber, paths, jobs=args.jobs, decoding=plan.decoding, channels=plan.channels
        )
        for result in results:
            error = _write_outputs(result, plan, args.overwrite)
            if sink is not None:
                sink.write(result)
            if result.error is not None:
                error = f"error {result.error.code}: {result.error.message}"
            if error:
                failed += 1
                progress.message(f"{result.path}\t{error}")
            progress.advance()
    return failed


def _open_sink(plan: Plan, stack: ExitStack) -> ResultsSink | None:
    if plan.results_path is None:
        return None
    stream = sys.stdout
    if plan.results_path != "-":
        path = Path(plan.results_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = stack.enter_context(path.open("w", encoding="utf-8", newline=""))
    if plan.results_format is None:
        return TextListing(stream)
    return results_sink(plan.results_format, stream)


def _write_outputs(result: FileResult, plan: Plan, overwrite: bool) -> str | None:
    """Write the per-file outputs of a transcribed file; an error line if one cannot be."""
    if result.transcript is None:
        return None
    for fmt, path in plan.outputs[result.path].items():
        if path.exists() and not overwrite:
            continue
        try:
            write_atomically(path, render_file(result.transcript, fmt))
        except OSError as exc:
            return f"error output_unwritable: cannot write {path}: {exc.strerror or exc}"
    return None


if __name__ == "__main__":
    sys.exit(main())
