"""``python -m asr``: transcribe files with a model bundle (the same path the Lambda uses).

python -m asr --bundle demo/bundle clip.wav other.mp3
python -m asr --bundle demo/bundle --json clip.wav
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .errors import AsrError
from .transcribe import Transcriber


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asr", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="audio files (any format ffmpeg reads)")
    parser.add_argument("--bundle", default=os.environ.get("MODEL_DIR"), help="model bundle dir")
    parser.add_argument("--json", action="store_true", help="print full JSON results")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.bundle:
        parser.error("give --bundle DIR (or set MODEL_DIR)")
    try:
        transcriber = Transcriber.from_dir(args.bundle, threads=args.threads)
    except AsrError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    failures = 0
    for path in args.files:
        try:
            transcript = transcriber.transcribe(path)
        except AsrError as exc:
            failures += 1
            print(f"{path}\terror {exc.code}: {exc.message}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"file": path, **transcript.to_dict()}, ensure_ascii=False))
        else:
            print(f"{path}\t{transcript.text}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
