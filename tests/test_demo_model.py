"""The trained demo model's transcripts are identical through every stage:
PyTorch → ONNX fp32 → int8 bundle → Transcriber → Lambda handler (HTTP API, REST API, S3)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import torch
from asr.audio import decode_audio
from asr.bundle import load_bundle, sha256_of
from asr.ctc import greedy_decode
from asr.frontend import NemoMelFrontend
from asr.tokens import Vocabulary
from asr.transcribe import Transcriber
from asr_service.settings import Settings

from export.checkpoint import build_quartznet, load_checkpoint, load_quartznet
from export.clips import manifest_clips, synthetic_clips
from export.nemo_preprocessor import frontend_from_nemo
from export.pipeline import ExportOptions, export_bundle
from tests.conftest import DEMO
from tests.test_handler import FakeContext, http_event, rest_event, s3_event, serving

NEMO = DEMO / "model" / "demo_quartznet_ru.nemo"
MANIFEST = DEMO / "audio" / "manifest.jsonl"


def demo_clips() -> list[tuple[Path, str]]:
    entries = [json.loads(line) for line in MANIFEST.read_text(encoding="utf-8").splitlines()]
    return [(MANIFEST.parent / e["audio_filepath"], e["text"]) for e in entries]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo checkpoint exported here with the DEFAULT gate (trained model: strict)."""
    out = tmp_path_factory.mktemp("demo") / "bundle"
    checkpoint = load_checkpoint(NEMO)
    clips = synthetic_clips(16000) + manifest_clips([MANIFEST], 16000)
    export_bundle(
        load_quartznet(checkpoint),
        out,
        clips,
        ExportOptions(model_id="demo-test"),
        step=lambda m: None,
    )
    return out


def torch_transcript(path: Path) -> str:
    checkpoint = load_checkpoint(NEMO)
    model = build_quartznet(checkpoint)
    frontend = NemoMelFrontend(frontend_from_nemo(checkpoint.config))
    features = frontend(decode_audio(path, 16000).samples)
    with torch.no_grad():
        log_probs, _ = model(torch.from_numpy(features[None]), torch.tensor([features.shape[1]]))
    vocabulary = Vocabulary.from_labels(model.spec.vocabulary)
    return greedy_decode(log_probs[0].numpy(), vocabulary, 0.02).text


def test_export_gate_passes_and_int8_keeps_every_transcript(exported: Path) -> None:
    report = load_bundle(exported).verification
    assert report["passed"] is True
    metrics = report["metrics"]
    assert metrics["int8_token_agreement"] >= 0.995
    assert metrics["fp32_cer_vs_reference"] == 0.0
    assert metrics["int8_cer_vs_reference"] == 0.0
    for clip in report["clips"]:
        assert clip["text_torch"] == clip["text_fp32"]
        if clip["reference"]:  # the demo clips: identical through int8 too
            assert clip["text_int8"] == clip["text_fp32"] == clip["reference"]


def test_torch_bundle_and_reference_agree_on_every_demo_clip(exported: Path) -> None:
    transcriber = Transcriber.from_dir(exported)
    for path, text in demo_clips():
        assert torch_transcript(path) == text
        assert transcriber.transcribe(path).text == text
        samples = decode_audio(path, 16000).samples
        as_8k_int16 = (samples[::2] * 32767).astype(np.int16)  # another rate and dtype
        assert transcriber.transcribe(as_8k_int16, sample_rate=8000).text == text


@pytest.fixture
def demo_handler(exported: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    settings = Settings(model_dir=exported, output_bucket="demo-out")
    yield from serving(settings, monkeypatch, ("demo-in", "demo-out"))


def test_handler_returns_the_same_transcripts(demo_handler: Any) -> None:
    s3 = boto3.client("s3")
    for index, (path, text) in enumerate(demo_clips()):
        body = json.dumps({"audio": base64.b64encode(path.read_bytes()).decode()})
        for event in (http_event(body), rest_event(body)):
            response = demo_handler.lambda_handler(event, FakeContext())
            assert response["statusCode"] == 200
            assert json.loads(response["body"])["text"] == text
        key = f"uploads/clip {index}.wav"
        s3.put_object(Bucket="demo-in", Key=key, Body=path.read_bytes())
        demo_handler.lambda_handler(s3_event("demo-in", key), FakeContext())
        result = json.loads(
            s3.get_object(Bucket="demo-out", Key=f"transcripts/{key}.json")["Body"].read()
        )
        assert result["transcript"]["text"] == text


def test_committed_bundle_is_the_export_of_the_committed_checkpoint(demo_bundle: Path) -> None:
    bundle = load_bundle(demo_bundle)
    assert bundle.config.source["checkpoint_sha256"] == sha256_of(NEMO)
    transcriber = Transcriber(bundle)
    for path, text in demo_clips():
        assert transcriber.transcribe(path).text == text
