"""python -m local {invoke,serve,demo}: see ``local/__init__.py``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import REPO_ROOT
from .concurrent_handler import ConcurrentHandler, warm_transcriber
from .demo import run_demo
from .events import EventError, load_event
from .fake_s3 import fake_s3
from .invoke import Invoker
from .runtime import (
    DEFAULT_INPUT_BUCKET,
    DEFAULT_OUTPUT_BUCKET,
    LocalEnvironment,
    call_handler,
    load_handler,
)
from .server import ApiGatewayEmulator

DEFAULT_BUNDLE = REPO_ROOT / "demo" / "bundle"
DEFAULT_MANIFEST = REPO_ROOT / "demo" / "audio" / "manifest.jsonl"


def _bundle(path: Path) -> Path:
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise SystemExit(
            f"no model bundle at {path}: pass --bundle DIR (a directory the export step wrote)"
        )
    return path


def cmd_invoke(args: argparse.Namespace) -> int:
    if args.audio is not None and not args.audio.is_file():
        print(f"error: no audio file {args.audio}", file=sys.stderr)
        return 2
    try:
        template = load_event(args.event)
        handler = load_handler(
            LocalEnvironment(model_dir=_bundle(args.bundle), output_bucket=args.output_bucket)
        )
        invoker = Invoker(handler, input_bucket=args.bucket, output_bucket=args.output_bucket)
        result = invoker.invoke(template, audio=args.audio, key=args.key)
    except EventError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_display(), ensure_ascii=False, indent=2))
    return 0 if result.ok else 1


def cmd_serve(args: argparse.Namespace) -> int:
    if args.concurrency > 1:
        # N requests in flight already use the CPUs; onnxruntime's own worker threads would
        # only spin against them (measured: 100 at once, 52 req/s on 2 threads, 151 on 1).
        os.environ.setdefault("ASR_THREADS", "1")
    handler = load_handler(LocalEnvironment(model_dir=_bundle(args.bundle)))
    with fake_s3(DEFAULT_INPUT_BUCKET, DEFAULT_OUTPUT_BUCKET) as s3:
        for path in args.upload:
            key = f"uploads/{path.name}"
            s3.put(DEFAULT_INPUT_BUCKET, key, path.read_bytes())
            print(f'fake S3: {{"s3": {{"bucket": "{DEFAULT_INPUT_BUCKET}", "key": "{key}"}}}}')
        concurrent: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if args.concurrency == 1:
            server = ApiGatewayEmulator(args.port, lambda event: call_handler(handler, event))
        else:
            concurrent = invoke = ConcurrentHandler(handler, warm_transcriber())
            server = ApiGatewayEmulator(args.port, invoke, concurrency=args.concurrency)
        print(
            f"API Gateway emulator on {server.url} (POST /transcribe, GET /health; "
            f"{args.concurrency} at a time); Ctrl-C stops",
            flush=True,
        )
        with concurrent:
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
    return 0


def _concurrency(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.manifest.is_file():
        raise SystemExit(f"no demo manifest at {args.manifest}: pass --manifest FILE")
    return run_demo(_bundle(args.bundle), args.manifest)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    bundle_default = Path(os.environ.get("MODEL_DIR") or DEFAULT_BUNDLE)

    invoke = commands.add_parser("invoke", help="run one sample event through the handler")
    invoke.add_argument("event", type=Path, help="an event file, e.g. events/*.json")
    invoke.add_argument("--audio", type=Path, help="audio for the event's placeholders")
    invoke.add_argument("--bucket", default=DEFAULT_INPUT_BUCKET, help="fake input bucket")
    invoke.add_argument("--key", help="input object key (default uploads/<audio file name>)")
    invoke.add_argument("--output-bucket", default=DEFAULT_OUTPUT_BUCKET)
    invoke.set_defaults(run=cmd_invoke)

    serve = commands.add_parser("serve", help="emulate API Gateway on 127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument(
        "--upload", type=Path, action="append", default=[], help="put FILE in the fake S3"
    )
    serve.add_argument(
        "--concurrency",
        type=_concurrency,
        default=1,
        metavar="N",
        help="serve N requests at once, as N warm containers sharing one loaded model, "
        "onnxruntime on one thread each unless ASR_THREADS is set "
        "(default 1: one at a time, like one container)",
    )
    serve.set_defaults(run=cmd_serve)

    demo = commands.add_parser("demo", help="demo clips through all three entry points")
    demo.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    demo.set_defaults(run=cmd_demo)

    for command in (invoke, serve, demo):
        command.add_argument(
            "--bundle", type=Path, default=bundle_default, help="model bundle directory"
        )
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
