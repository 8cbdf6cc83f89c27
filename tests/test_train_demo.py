"""The demo-model build: espeak-ng synthesis, a short training smoke run, the saved .nemo
layout, and the committed demo model transcribing its committed held-out clips."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from asr.frontend import NemoMelFrontend

from export import synth as synth_speech
from export.checkpoint import build_quartznet, load_checkpoint
from export.nemo_preprocessor import frontend_from_nemo
from export.quartznet import QuartzNetSpec
from export.synth import Voice
from scripts import train_demo_model
from scripts.train_demo_model import (
    BLANK,
    VOCABULARY,
    Clip,
    TrainSettings,
    demo_blocks,
    greedy_ctc,
    make_examples,
    model_config,
    normalize_text,
    save_nemo,
    train,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO_ROOT / "demo" / "model" / train_demo_model.MODEL_FILE
DEMO_MANIFEST = REPO_ROOT / "demo" / "audio" / train_demo_model.MANIFEST_FILE

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


def test_vocabulary_is_golos_quartznet() -> None:
    assert len(VOCABULARY) == 33
    assert VOCABULARY[0] == " "
    assert VOCABULARY[1] == "а"
    assert VOCABULARY[-1] == "я"
    assert "ё" not in VOCABULARY
    assert BLANK == 33


def test_normalize_text() -> None:
    assert normalize_text("Ещё раз, пожалуйста!") == "еще раз пожалуйста"
    assert normalize_text("  Санкт-Петербург  ") == "санкт петербург"


def test_greedy_ctc_collapses_repeats_and_drops_blank() -> None:
    ids = [BLANK, 1, 1, BLANK, 1, 0, 0, 2, BLANK]  # а а _ б
    log_probs = torch.full((len(ids), BLANK + 1), -10.0)
    log_probs[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    assert greedy_ctc(log_probs, len(ids)) == "аа б"
    assert greedy_ctc(log_probs, 3) == "а"


@needs_espeak
def test_synthesis_is_deterministic_16k_float32() -> None:
    voice = Voice("m3", 160, 50)
    first = synth_speech.synthesize("привет", voice, seed=3)
    again = synth_speech.synthesize("привет", voice, seed=3)
    other = synth_speech.synthesize("привет", voice, seed=4)
    assert first.dtype == np.float32
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert 0.3 < len(first) / synth_speech.SAMPLE_RATE < 1.5
    assert np.abs(first).max() <= 1.0


def test_missing_espeak_has_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(synth_speech.EspeakMissingError, match="apt-get install espeak-ng"):
        synth_speech.espeak_binary()


@needs_espeak
def test_training_smoke_run_lowers_loss_and_saves_a_real_nemo(tmp_path: Path) -> None:
    blocks = demo_blocks(filters=32, repeat=1, head=64)
    config = model_config(blocks, note="smoke test")
    spec = QuartzNetSpec.from_nemo_config(config)
    frontend = NemoMelFrontend(frontend_from_nemo(config))
    voices = [Voice("m3", 150, 50), Voice("f2", 180, 60)]
    phrases = ["привет", "позвони маме", "включи музыку"]
    spoken = synth_speech.synthesize_clips(phrases, voices, seed=0)
    examples = make_examples([Clip(text, audio, "smoke") for text, audio in spoken], frontend)

    settings = TrainSettings(
        batch_size=6, lr=3e-3, warmup_steps=5, max_steps=40, max_epochs=40, seed=0
    )
    result = train(spec, examples, [], settings, log=False)

    assert result.steps == 40
    assert np.mean(result.step_losses[-5:]) < 0.7 * np.mean(result.step_losses[:5])

    path = tmp_path / "smoke.nemo"
    save_nemo(path, config, result.model)
    with tarfile.open(path) as archive:
        names = {Path(name).name for name in archive.getnames()}
    assert {"model_config.yaml", "model_weights.ckpt"} <= names

    checkpoint = load_checkpoint(path)
    assert checkpoint.config["demo_model_note"] == "smoke test"
    assert checkpoint.config["labels"] == list(VOCABULARY)
    buffers = checkpoint.preprocessor_buffers
    assert tuple(buffers["window"].shape) == (320,)
    assert tuple(buffers["fb"].shape) == (1, 64, 257)
    reloaded = build_quartznet(checkpoint)  # strict load
    features = torch.from_numpy(frontend(spoken[0][1]))[None]
    lengths = torch.tensor([features.shape[2]])
    with torch.no_grad():
        expected, _ = result.model(features, lengths)
        actual, _ = reloaded(features, lengths)
    torch.testing.assert_close(actual, expected)


def test_committed_demo_model_transcribes_its_clips_exactly() -> None:
    checkpoint = load_checkpoint(DEMO_MODEL)
    model = build_quartznet(checkpoint)
    frontend = NemoMelFrontend(frontend_from_nemo(checkpoint.config))
    entries = [json.loads(line) for line in DEMO_MANIFEST.read_text("utf-8").splitlines() if line]
    assert 3 <= len(entries) <= 5
    for entry in entries:
        audio, rate = sf.read(str(DEMO_MANIFEST.parent / entry["audio_filepath"]), dtype="float32")
        assert rate == 16000
        assert audio.ndim == 1
        assert entry["duration"] == pytest.approx(len(audio) / rate, abs=1e-3)
        features = torch.from_numpy(frontend(audio))[None]
        with torch.no_grad():
            log_probs, lengths = model(features, torch.tensor([features.shape[2]]))
        assert greedy_ctc(log_probs[0], int(lengths[0])) == entry["text"]


def test_committed_demo_files_are_small() -> None:
    """The QuartzNet demo's files; the demo Conformer's, transducer's and emotion
    classifier's are built at setup, not committed (tests/test_demo_conformer.py,
    tests/test_demo_transducer.py, tests/test_demo_emotion.py)."""
    demo = REPO_ROOT / "demo"
    built = {
        "demo_gigaam_ru.ckpt", "conformer_training_report.json", "conformer_bundle",
        "demo_gigaam_rnnt_ru.ckpt", "transducer_training_report.json", "transducer_bundle",
        "demo_gigaam_emo_ru.ckpt", "emotion_training_report.json", "emotion_clips",
        "emotion_bundle",
    }  # fmt: skip
    files = [p for p in demo.rglob("*") if p.is_file() and not built & {p.name, *p.parts}]
    total = sum(path.stat().st_size for path in files)
    assert total < 4_000_000
