"""The demo Conformer (GigaAM v3 layout, scripts/train_demo_conformer.py).

Not committed (8 MB): scripts/setup.sh dev builds the checkpoint and its bundle with
scripts/build_demo_conformer.sh, which scripts/test.sh runs first.

Its checkpoint is a GigaAM checkpoint as upstream writes them; the shared training loop
trains a Conformer (smoke run); and its transcripts are identical through every stage:
PyTorch (``load_gigaam``) → ONNX fp32 → int8 bundle → Transcriber → Lambda handler.
"""

from __future__ import annotations

import base64
import json
import shutil
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
from asr.frontend import gigaam_buffers, make_frontend
from asr.tokens import Vocabulary
from asr.transcribe import Transcriber
from asr_service.settings import Settings
from omegaconf import DictConfig, OmegaConf

from export import synth as synth_speech
from export.clips import manifest_clips, synthetic_clips
from export.gigaam import FILTERBANK_KEY, WINDOW_KEY, load_gigaam
from export.pipeline import ExportOptions, export_bundle
from export.quantize import CONFORMER_SCHEME
from export.synth import Voice
from scripts.train_demo_conformer import (
    FRONTEND,
    MODEL_FILE,
    MODEL_NAME,
    REPORT_FILE,
    DemoShape,
    conformer_factory,
    conformer_spec,
    gigaam_cfg,
    preprocessor_state,
    save_gigaam,
)
from scripts.train_demo_model import (
    MANIFEST_FILE,
    MAX_HELDOUT_CER,
    VOCABULARY,
    Clip,
    TrainSettings,
    make_examples,
    spec_augment,
    train,
)
from tests.conftest import DEMO
from tests.test_handler import FakeContext, http_event, rest_event, s3_event, serving

CHECKPOINT = DEMO / "model" / MODEL_FILE
REPORT = DEMO / "model" / REPORT_FILE
MANIFEST = DEMO / "audio" / MANIFEST_FILE
BUNDLE = DEMO / "conformer_bundle"
# GigaAM's character vocabulary (cfg.decoding.vocabulary of v1/v2/v3 CTC).
GIGAAM_CHARS = [" ", *(chr(c) for c in range(ord("а"), ord("я") + 1))]


@pytest.fixture(autouse=True, scope="module")
def _built_demo_conformer() -> None:
    if not CHECKPOINT.is_file() or not (BUNDLE / "config.json").is_file():
        pytest.fail("the demo Conformer is not built: run scripts/build_demo_conformer.sh")


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


def demo_clips() -> list[tuple[Path, str]]:
    entries = [json.loads(line) for line in MANIFEST.read_text(encoding="utf-8").splitlines()]
    return [(MANIFEST.parent / e["audio_filepath"], e["text"]) for e in entries]


def load_raw() -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(CHECKPOINT, map_location="cpu", weights_only=False)
    return loaded


def test_checkpoint_is_an_upstream_gigaam_v3_ctc_checkpoint() -> None:
    loaded = load_raw()
    assert set(loaded) == {"state_dict", "cfg"}
    assert isinstance(loaded["cfg"], DictConfig)
    cfg = OmegaConf.to_container(loaded["cfg"])
    assert isinstance(cfg, dict)
    assert cfg["model_class"] == "ctc"
    assert cfg["model_name"] == MODEL_NAME
    assert cfg["preprocessor"] == {
        "_target_": "gigaam.preprocess.FeatureExtractor",
        "sample_rate": 16000,
        "features": 64,
        "win_length": 320,
        "hop_length": 160,
        "mel_scale": "htk",
        "n_fft": 320,
        "mel_norm": None,
        "center": False,
    }
    encoder = cfg["encoder"]
    assert encoder["_target_"] == "gigaam.encoder.ConformerEncoder"
    v3_layout = {
        "feat_in": 64,
        "subsampling_factor": 4,
        "ff_expansion_factor": 4,
        "self_attention_model": "rotary",
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 5,
        "flash_attn": False,
        "subs_kernel_size": 5,
        "subsampling": "conv1d",
        "conv_norm_type": "layer_norm",
    }
    assert {key: encoder[key] for key in v3_layout} == v3_layout
    assert set(encoder) == {*v3_layout, "_target_", "n_layers", "d_model", "n_heads"}
    assert cfg["head"] == {
        "_target_": "gigaam.decoder.CTCHead",
        "feat_in": encoder["d_model"],
        "num_classes": 34,
    }
    assert cfg["decoding"] == {
        "_target_": "gigaam.decoding.CTCGreedyDecoding",
        "vocabulary": GIGAAM_CHARS,
    }
    assert list(VOCABULARY) == GIGAAM_CHARS


def test_checkpoint_tensors_have_upstream_names_and_bf16_buffers() -> None:
    state = load_raw()["state_dict"]
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert list(state)[:2] == [WINDOW_KEY, FILTERBANK_KEY]
    others = list(state)[2:]
    assert all(key.startswith(("encoder.", "head.")) for key in others)
    assert {key for key in others if key.startswith("head.")} == {
        "head.decoder_layers.0.weight",
        "head.decoder_layers.0.bias",
    }
    d_model = load_raw()["cfg"]["encoder"]["d_model"]
    assert tuple(state["head.decoder_layers.0.weight"].shape) == (34, d_model, 1)
    assert tuple(state["encoder.pre_encode.conv.0.weight"].shape) == (d_model, 64, 5)

    window, fb = state[WINDOW_KEY], state[FILTERBANK_KEY]
    assert window.dtype == fb.dtype == torch.float32
    assert tuple(window.shape) == (320,)
    assert tuple(fb.shape) == (161, 64)  # torchaudio's layout: [n_freqs, n_mels]
    for buffer in (window, fb):  # stored bfloat16-rounded, as v3 stores them
        assert torch.equal(buffer.to(torch.bfloat16).to(torch.float32), buffer)
    hann = torch.hann_window(320, periodic=True)
    assert torch.equal(window, hann.to(torch.bfloat16).to(torch.float32))
    assert not torch.equal(window, hann)  # the rounding is real
    fresh = preprocessor_state()
    assert torch.equal(fresh[WINDOW_KEY], window)
    assert torch.equal(fresh[FILTERBANK_KEY], fb)
    # The runtime's numpy front end computes its features with these very buffers.
    runtime_window, runtime_fb = gigaam_buffers(FRONTEND)
    assert np.array_equal(runtime_window, window.numpy())
    assert np.array_equal(runtime_fb, fb.numpy().T)


def test_load_gigaam_reads_the_v3_front_end_and_vocabulary() -> None:
    source = load_gigaam(CHECKPOINT)
    assert source.family == "conformer"
    assert source.frontend == FRONTEND
    assert source.vocabulary == Vocabulary.from_labels(GIGAAM_CHARS)
    assert source.token_kind == "char"
    assert source.subsampling == 4
    assert source.source["upstream_model"] == MODEL_NAME


def torch_transcript(samples: np.ndarray) -> str:
    source = load_gigaam(CHECKPOINT)
    features = make_frontend(source.frontend)(samples)
    with torch.no_grad():
        log_probs, _ = source.model(
            torch.from_numpy(features[None]), torch.tensor([features.shape[1]])
        )
    return greedy_decode(log_probs[0].numpy(), source.vocabulary, 0.04).text


def test_demo_checkpoint_transcribes_its_clips_exactly() -> None:
    for path, text in demo_clips():
        samples = decode_audio(path, 16000).samples
        assert torch_transcript(samples) == text


def test_training_report_records_the_acceptance() -> None:
    report = json.loads(REPORT.read_text(encoding="utf-8"))
    assert report["model_file"] == MODEL_FILE
    assert report["checkpoint_bytes"] == CHECKPOINT.stat().st_size
    assert report["parameters"] == load_gigaam(CHECKPOINT).parameters
    assert report["reloaded_checkpoint_heldout_cer"] <= MAX_HELDOUT_CER
    exact, total = map(int, report["demo_clips_exact"].split("/"))
    assert exact == total == 2 * len(demo_clips())  # as written, and via 8 kHz int16


def test_demo_conformer_files_stay_small() -> None:
    files = [CHECKPOINT, REPORT, *BUNDLE.iterdir()]
    assert sum(path.stat().st_size for path in files) < 13_000_000


def test_spec_augment_feature_mean_fill_masks_like_zero_fill() -> None:
    """Same masks as the zero fill; masked values are each bin's mean over valid frames."""
    torch.manual_seed(0)
    features = torch.randn(3, 64, 60) - 5.0  # never exactly 0
    lengths = torch.tensor([60, 45, 30])
    zero = spec_augment(features, lengths, torch.Generator().manual_seed(1))
    mean = spec_augment(features, lengths, torch.Generator().manual_seed(1), fill="feature_mean")
    masked = zero == 0.0
    assert masked.any()
    assert torch.equal(mean[~masked], features[~masked])
    for row, length in enumerate(lengths.tolist()):
        bin_means = features[row, :, :length].mean(dim=1, keepdim=True).expand(-1, 60)
        assert torch.equal(mean[row][masked[row]], bin_means[masked[row]])


def smoke_examples() -> list[Any]:
    voices = [Voice("m3", 150, 50), Voice("f2", 180, 60)]
    phrases = ["привет", "позвони маме", "включи музыку"]
    spoken = synth_speech.synthesize_clips(phrases, voices, seed=0)
    clips = [Clip(text, audio, "smoke") for text, audio in spoken]
    return make_examples(clips, make_frontend(FRONTEND))


@needs_espeak
def test_conformer_training_smoke_run(tmp_path: Path) -> None:
    """The shared loop trains a Conformer: loss falls, runs repeat exactly, and the
    checkpoint it saves reloads through load_gigaam to the same outputs."""
    spec = conformer_spec(DemoShape(d_model=32, n_layers=1, n_heads=2))
    examples = smoke_examples()
    settings = TrainSettings(
        batch_size=6,
        lr=5e-3,
        warmup_steps=5,
        max_steps=40,
        max_epochs=40,
        mask_fill="feature_mean",
        seed=0,
    )
    result = train(conformer_factory(spec), examples, [], settings, log=False)
    assert result.steps == 40
    assert np.mean(result.step_losses[-5:]) < 0.7 * np.mean(result.step_losses[:5])

    again = train(conformer_factory(spec), examples, [], settings, log=False)
    assert again.step_losses == result.step_losses

    path = tmp_path / "smoke.ckpt"
    save_gigaam(path, gigaam_cfg(spec, note="smoke test"), result.model)
    source = load_gigaam(path)  # strict load, buffers checked against the cfg
    assert source.frontend == FRONTEND
    features, lengths = examples[0].features[None], torch.tensor([examples[0].features.shape[1]])
    with torch.no_grad():
        expected, _ = result.model(features, lengths)
        actual, _ = source.model(features, lengths)
    assert torch.equal(actual, expected)


def export_demo(checkpoint: Path, out: Path, model_id: str) -> Path:
    """A demo GigaAM checkpoint exported with the default scheme and gate, on the export's
    synthetic clips and the demo's held-out clips (with references)."""
    clips = synthetic_clips(16000) + manifest_clips([MANIFEST], 16000)
    options = ExportOptions(model_id=model_id)
    export_bundle(load_gigaam(checkpoint), out, clips, options, step=lambda message: None)
    return out


def assert_gate_keeps_every_transcript(bundle: Any) -> None:
    """Passed with the Conformer int8 scheme; PyTorch → ONNX fp32 → int8 transcripts
    identical, and equal to the references on the demo clips."""
    assert bundle.config.source["quantization"]["name"] == CONFORMER_SCHEME.name
    report = bundle.verification
    assert report["passed"] is True
    metrics = report["metrics"]
    assert metrics["int8_token_agreement"] >= 0.995
    assert metrics["fp32_cer_vs_reference"] == metrics["int8_cer_vs_reference"] == 0.0
    assert metrics["torch_fp32_transcripts_identical"] == 1.0
    referenced = [clip for clip in report["clips"] if clip["reference"]]
    assert len(referenced) == len(demo_clips())
    for clip in report["clips"]:
        assert clip["text_torch"] == clip["text_fp32"]
    for clip in referenced:
        assert clip["text_torch"] == clip["text_fp32"] == clip["text_int8"] == clip["reference"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conformer") / "bundle"
    return export_demo(CHECKPOINT, out, "demo-conformer-test")


def test_export_gate_passes_and_int8_keeps_every_transcript(exported: Path) -> None:
    bundle = load_bundle(exported)
    assert bundle.config.family == "conformer" and bundle.config.transducer is None
    assert_gate_keeps_every_transcript(bundle)


def test_torch_bundle_and_reference_agree_on_every_demo_clip(exported: Path) -> None:
    transcriber = Transcriber.from_dir(exported)
    for path, text in demo_clips():
        samples = decode_audio(path, 16000).samples
        assert torch_transcript(samples) == text
        assert transcriber.transcribe(path).text == text
        as_8k_int16 = (samples[::2] * 32767).astype(np.int16)  # another rate and dtype
        assert transcriber.transcribe(as_8k_int16, sample_rate=8000).text == text


@pytest.fixture
def conformer_handler(exported: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    settings = Settings(model_dir=exported, output_bucket="demo-out")
    yield from serving(settings, monkeypatch, ("demo-in", "demo-out"))


def check_handler_transcripts(module: Any, model_id: str, key_prefix: str) -> None:
    """Every demo clip through the handler (API Gateway HTTP and REST events, and an S3
    upload) gives its known text."""
    s3 = boto3.client("s3")
    for index, (path, text) in enumerate(demo_clips()):
        body = json.dumps({"audio": base64.b64encode(path.read_bytes()).decode()})
        for event in (http_event(body), rest_event(body)):
            response = module.lambda_handler(event, FakeContext())
            assert response["statusCode"] == 200
            payload = json.loads(response["body"])
            assert payload["text"] == text
            assert payload["model_id"] == model_id
        key = f"uploads/{key_prefix} clip {index}.wav"
        s3.put_object(Bucket="demo-in", Key=key, Body=path.read_bytes())
        module.lambda_handler(s3_event("demo-in", key), FakeContext())
        result = json.loads(
            s3.get_object(Bucket="demo-out", Key=f"transcripts/{key}.json")["Body"].read()
        )
        assert result["transcript"]["text"] == text


def test_handler_returns_the_same_transcripts(conformer_handler: Any) -> None:
    check_handler_transcripts(conformer_handler, "demo-conformer-test", "conformer")


def test_demo_bundle_is_the_export_of_the_demo_checkpoint() -> None:
    bundle = load_bundle(BUNDLE)
    assert bundle.config.source["checkpoint_sha256"] == sha256_of(CHECKPOINT)
    assert bundle.config.source["quantization"]["name"] == CONFORMER_SCHEME.name
    assert bundle.verification["passed"] is True
    transcriber = Transcriber(bundle)
    for path, text in demo_clips():
        assert transcriber.transcribe(path).text == text
