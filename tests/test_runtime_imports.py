"""The Lambda runtime imports numpy + onnxruntime + soundfile + boto3 + powertools only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, speech_dir

FORBIDDEN = ("torch", "torchaudio", "librosa", "scipy", "numba", "sklearn", "export", "yaml")

PROBE = """
import json, os, sys
sys.path.insert(0, {lambda_dir!r})
os.environ["MODEL_DIR"] = {bundle!r}
os.environ["POWERTOOLS_METRICS_NAMESPACE"] = "probe"
import handler
from asr.transcribe import Transcriber
text = Transcriber.from_dir({bundle!r}).transcribe({clip!r}).text
mp3 = Transcriber.from_dir({bundle!r}).transcribe({mp3!r}).text
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def test_handler_and_transcription_import_no_heavy_library(tiny_bundle: Path) -> None:
    speech = speech_dir()
    code = PROBE.format(
        lambda_dir=str(REPO / "lambda_app"),
        bundle=str(tiny_bundle),
        clip=str(speech / "ru" / "golos_00.wav"),
        mp3=str(speech / "ru_untranscribed" / "tinkoff_sample_1.mp3"),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not modules & set(FORBIDDEN), modules & set(FORBIDDEN)
    assert {"numpy", "onnxruntime", "soundfile"} <= modules
