"""The demo transducer (GigaAM v3 RNNT layout, scripts/train_demo_transducer.py).

Not committed (9 MB): scripts/setup.sh dev builds the checkpoint and its bundle with
scripts/build_demo_transducer.sh after the demo Conformer, whose encoder it starts from.

Its checkpoint is a GigaAM RNNT checkpoint as upstream writes them; the shared training
loop trains a transducer with the RNN-T loss (smoke run); and its transcripts are identical
through every stage: PyTorch (``load_gigaam``, upstream's greedy rules) → ONNX fp32 → int8
bundle → Transcriber → Lambda handler (HTTP and S3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from asr.audio import decode_audio
from asr.bundle import load_bundle, sha256_of
from asr.frontend import make_frontend
from asr.transcribe import Transcriber
from asr_service.settings import Settings
from omegaconf import OmegaConf

from export.gigaam import FILTERBANK_KEY, WINDOW_KEY, load_gigaam
from export.transducer import TransducerModel
from scripts.train_demo_model import MAX_HELDOUT_CER, VOCABULARY, TrainSettings, train
from scripts.train_demo_transducer import (
    MODEL_FILE,
    MODEL_NAME,
    REPORT_FILE,
    TransducerObjective,
    encoder_factory,
    rnnt_cfg,
    save_gigaam,
    transcribe,
    transducer_spec,
)
from tests.conftest import DEMO
from tests.test_demo_conformer import (
    assert_gate_keeps_every_transcript,
    check_handler_transcripts,
    demo_clips,
    export_demo,
    needs_espeak,
    smoke_examples,
)
from tests.test_handler import serving

CHECKPOINT = DEMO / "model" / MODEL_FILE
REPORT = DEMO / "model" / REPORT_FILE
MANIFEST = DEMO / "audio" / "manifest.jsonl"
BUNDLE = DEMO / "transducer_bundle"


@pytest.fixture(autouse=True, scope="module")
def _built_demo_transducer() -> None:
    if not CHECKPOINT.is_file() or not (BUNDLE / "config.json").is_file():
        pytest.fail("the demo transducer is not built: run scripts/build_demo_transducer.sh")


def load_raw() -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(CHECKPOINT, map_location="cpu", weights_only=False)
    return loaded


def test_checkpoint_is_an_upstream_gigaam_v3_rnnt_checkpoint() -> None:
    loaded = load_raw()
    assert set(loaded) == {"state_dict", "cfg"}
    cfg = OmegaConf.to_container(loaded["cfg"])
    assert isinstance(cfg, dict)
    assert (cfg["model_class"], cfg["model_name"]) == ("rnnt", MODEL_NAME)
    d_model = cfg["encoder"]["d_model"]
    assert cfg["head"] == {
        "_target_": "gigaam.decoder.RNNTHead",
        "decoder": {"pred_hidden": 320, "pred_rnn_layers": 1, "num_classes": 34},
        "joint": {
            "enc_hidden": d_model,
            "pred_hidden": 320,
            "joint_hidden": 320,
            "num_classes": 34,
        },
    }
    assert cfg["decoding"] == {
        "_target_": "gigaam.decoding.RNNTGreedyDecoding",
        "vocabulary": list(VOCABULARY),
    }
    state = loaded["state_dict"]
    assert list(state)[:2] == [WINDOW_KEY, FILTERBANK_KEY]
    head = {key: tuple(value.shape) for key, value in state.items() if key.startswith("head.")}
    assert head == {
        "head.decoder.embed.weight": (34, 320),
        "head.decoder.lstm.weight_ih_l0": (1280, 320),
        "head.decoder.lstm.weight_hh_l0": (1280, 320),
        "head.decoder.lstm.bias_ih_l0": (1280,),
        "head.decoder.lstm.bias_hh_l0": (1280,),
        "head.joint.pred.weight": (320, 320),
        "head.joint.pred.bias": (320,),
        "head.joint.enc.weight": (320, d_model),
        "head.joint.enc.bias": (320,),
        "head.joint.joint_net.1.weight": (34, 320),
        "head.joint.joint_net.1.bias": (34,),
    }
    # nn.Embedding(padding_idx=blank) never trains the blank's row
    assert not state["head.decoder.embed.weight"][33].any()


def test_demo_checkpoint_transcribes_its_clips_exactly() -> None:
    source = load_gigaam(CHECKPOINT)
    assert isinstance(source.model, TransducerModel)
    frontend = make_frontend(source.frontend)
    for path, text in demo_clips():
        features = torch.from_numpy(frontend(decode_audio(path, 16000).samples))
        assert transcribe(source.model, features) == text


def test_training_report_records_the_acceptance() -> None:
    report = json.loads(REPORT.read_text(encoding="utf-8"))
    assert report["model_file"] == MODEL_FILE
    assert report["checkpoint_bytes"] == CHECKPOINT.stat().st_size
    assert report["encoder_initialised_from"] == "demo_gigaam_ru.ckpt"
    assert report["reloaded_checkpoint_heldout_cer"] <= MAX_HELDOUT_CER
    exact, total = map(int, report["demo_clips_exact"].split("/"))
    assert exact == total == 2 * len(demo_clips())


@needs_espeak
def test_transducer_training_smoke_run(tmp_path: Path) -> None:
    """The shared loop trains a transducer with the RNN-T loss: the loss falls, runs
    repeat exactly, and the saved checkpoint reloads through load_gigaam to the same model."""
    from scripts.train_demo_conformer import DemoShape

    spec = transducer_spec(DemoShape(d_model=32, n_layers=1, n_heads=2))
    examples = smoke_examples()
    settings = TrainSettings(
        batch_size=6, lr=5e-3, warmup_steps=5, max_steps=30, max_epochs=30,
        mask_fill="feature_mean", seed=0,
    )  # fmt: skip
    objective = TransducerObjective()
    factory = encoder_factory(spec, None)
    result = train(factory, examples, [], settings, log=False, objective=objective)
    assert result.steps == 30
    assert np.mean(result.step_losses[-5:]) < 0.7 * np.mean(result.step_losses[:5])
    again = train(factory, examples, [], settings, log=False, objective=objective)
    assert again.step_losses == result.step_losses

    path = tmp_path / "smoke.ckpt"
    save_gigaam(path, rnnt_cfg(spec, note="smoke test"), result.model)
    source = load_gigaam(path)
    assert isinstance(source.model, TransducerModel)
    for ours, theirs in zip(
        source.model.state_dict().values(), result.model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("transducer") / "bundle"
    return export_demo(CHECKPOINT, out, "demo-transducer-test")


def test_export_gate_passes_and_int8_keeps_every_transcript(exported: Path) -> None:
    bundle = load_bundle(exported)
    assert bundle.config.transducer is not None
    assert bundle.verification["metrics"]["fp32_max_logprob_diff"] < 1e-4
    assert_gate_keeps_every_transcript(bundle)


def test_transcriber_reads_every_demo_clip(exported: Path) -> None:
    transcriber = Transcriber.from_dir(exported)
    for path, text in demo_clips():
        samples = decode_audio(path, 16000).samples
        result = transcriber.transcribe(path)
        assert result.text == text
        assert result.timings.decoder > 0.0
        assert [w.text for w in result.words] == text.split()
        starts = [w.start for w in result.words]
        assert starts == sorted(starts) and all(w.end > w.start for w in result.words)
        as_8k_int16 = (samples[::2] * 32767).astype(np.int16)  # another rate and dtype
        assert transcriber.transcribe(as_8k_int16, sample_rate=8000).text == text


@pytest.fixture
def transducer_handler(exported: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    settings = Settings(model_dir=exported, output_bucket="demo-out")
    yield from serving(settings, monkeypatch, ("demo-in", "demo-out"))


def test_handler_returns_the_same_transcripts(transducer_handler: Any) -> None:
    check_handler_transcripts(transducer_handler, "demo-transducer-test", "transducer")


def test_demo_bundle_is_the_export_of_the_demo_checkpoint() -> None:
    bundle = load_bundle(BUNDLE)
    assert bundle.config.source["checkpoint_sha256"] == sha256_of(CHECKPOINT)
    assert bundle.verification["passed"] is True
    transcriber = Transcriber(bundle)
    for path, text in demo_clips():
        assert transcriber.transcribe(path).text == text


def test_cli_and_subtitles_read_the_transducer_like_any_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI and the SRT/VTT renderings work on a transducer bundle unchanged."""
    import srt  # type: ignore[import-untyped]  # no stubs or py.typed
    from asr.__main__ import main as asr_main
    from asr.formats import render

    (path, text), *_ = demo_clips()
    assert asr_main(["--bundle", str(BUNDLE), str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith(text)
    transcript = Transcriber(load_bundle(BUNDLE)).transcribe(path)
    cues = list(srt.parse(render(transcript, "srt").body))
    assert " ".join(cue.content.replace("\n", " ") for cue in cues) == text
    assert cues[0].start.total_seconds() == pytest.approx(transcript.words[0].start, abs=2e-3)


def test_batched_greedy_equals_each_utterance_alone() -> None:
    """The batch loop (longest first, a shrinking prefix, gathered emitters) and the
    one-utterance path take the same decisions."""
    transcriber = Transcriber(load_bundle(BUNDLE), threads=1)
    transducer = transcriber.search.transducer  # type: ignore[attr-defined]
    encoded = [
        transcriber.model(transcriber.frontend(decode_audio(path, 16000).samples))
        for path, _ in demo_clips()
    ]
    batched = transducer.greedy(encoded)
    assert len({e.shape[0] for e in encoded}) > 1  # different lengths: the prefix shrinks
    for item, together in zip(encoded, batched, strict=True):
        (alone,) = transducer.greedy([item])
        assert (together.token_ids, together.frames) == (alone.token_ids, alone.frames)
        assert together.token_ids
        np.testing.assert_allclose(together.confidences, alone.confidences, rtol=1e-4)
