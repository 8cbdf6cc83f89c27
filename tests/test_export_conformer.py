"""Each Conformer family end to end: upstream-layout checkpoint (or upstream ONNX graph) →
``python -m export`` → verified int8 bundle → Transcriber and Lambda handler.

Random weights: the int8 token gate is off (``--min-token-agreement 0``); the trained demo
Conformer (tests/test_demo_conformer.py) runs the gate for real. What these prove is that
every layout loads, exports, verifies (PyTorch vs ONNX fp32 ≤ 1e-3) and serves.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from asr.bundle import load_bundle
from asr.config import GigaamMelConfig
from asr.transcribe import Transcriber
from torch import nn

from export.__main__ import main as export_main
from export.gigaam import load_gigaam
from export.onnx_graphs import graph_io_names
from tests.conftest import speech_dir
from tests.gigaam_checkpoints import (
    save_gigaam,
    train_tokenizer,
    upstream_state_dict,
    v2_cfg,
    v3_cfg,
)
from tests.nemo_conformer_checkpoints import (
    conformer_ctc_bpe_config,
    fastconformer_hybrid_config,
    random_state_dict,
    write_nemo_archive,
)
from tests.nemo_conformer_checkpoints import train_tokenizer as train_nemo_tokenizer

GATE_OFF = ("--no-synthetic", "--min-token-agreement", "0", "--max-cer-vs-fp32", "1")


def clip() -> str:
    return str(speech_dir() / "ru" / "golos_03.wav")


def export(*args: str) -> None:
    assert export_main([*args, "--verify-audio", clip(), *GATE_OFF]) == 0


def check_bundle(bundle_dir: Path, *, frontend_kind: str, token_kind: str) -> Transcriber:
    bundle = load_bundle(bundle_dir)
    config = bundle.config
    assert config.family == "conformer"
    assert config.frontend.kind == frontend_kind
    assert config.tokens.kind == token_kind
    assert config.model.max_window_seconds == 25.0
    assert bundle.verification["passed"]
    assert bundle.verification["metrics"]["fp32_max_logprob_diff"] <= 1e-3
    transcriber = Transcriber.from_dir(bundle_dir, threads=1)
    result = transcriber.transcribe(clip())
    assert result.duration > 1.0
    assert all(0 <= w.start <= w.end <= result.duration + 0.1 for w in result.words)
    return transcriber


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_gigaam_char_checkpoint_exports_and_serves(tmp_path: Path, version: str) -> None:
    cfg = v3_cfg() if version == "v3" else v2_cfg()
    ckpt = save_gigaam(tmp_path / f"{version}_ctc.ckpt", cfg, upstream_state_dict(cfg))
    export("gigaam", str(ckpt), "--out", str(tmp_path / "bundle"))
    check_bundle(tmp_path / "bundle", frontend_kind="gigaam_mel", token_kind="char")
    frontend = load_bundle(tmp_path / "bundle").config.frontend
    assert isinstance(frontend, GigaamMelConfig)
    assert frontend.bf16_buffers == (version == "v3")
    assert frontend.center == (version == "v2")


def test_gigaam_e2e_checkpoint_bundles_its_sentencepiece_pieces(tmp_path: Path) -> None:
    pieces = 120
    tokenizer = train_tokenizer(tmp_path / "tok.model", vocab_size=pieces)
    cfg = v3_cfg("e2e_ctc", num_classes=pieces + 1)
    ckpt = save_gigaam(tmp_path / "v3_e2e_ctc.ckpt", cfg, upstream_state_dict(cfg))
    export("gigaam", str(ckpt), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "b"))
    check_bundle(tmp_path / "b", frontend_kind="gigaam_mel", token_kind="sentencepiece")
    tokens = (tmp_path / "b" / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(tokens) == pieces + 1 and tokens[-1] == f"<blk> {pieces}"
    assert any(line.startswith("▁") for line in tokens)  # pieces kept as SentencePiece spells


@pytest.mark.parametrize(
    "kind, head",
    [("conformer", None), ("fastconformer", "ctc"), ("fastconformer", None)],
    ids=["conformer_ctc", "hybrid_ctc_head", "hybrid_default_rnnt_head"],
)
def test_nemo_conformer_checkpoints_export_and_serve(
    tmp_path: Path, kind: str, head: str | None
) -> None:
    tokenizer = train_nemo_tokenizer(tmp_path / "spm")
    if kind == "conformer":
        config = conformer_ctc_bpe_config(tokenizer.pieces)
    else:
        config = fastconformer_hybrid_config(tokenizer.pieces)
    nemo = write_nemo_archive(
        tmp_path / f"{kind}.nemo", config, random_state_dict(config), tokenizer.artifacts()
    )
    extra = ["--head", head] if head else []
    export("nemo", str(nemo), "--out", str(tmp_path / "bundle"), *extra)
    transcriber = check_bundle(
        tmp_path / "bundle", frontend_kind="nemo_mel", token_kind="sentencepiece"
    )
    assert transcriber.bundle.config.frontend.n_mels == 80
    assert transcriber.bundle.config.model.subsampling == (4 if kind == "conformer" else 8)
    transducer = transcriber.bundle.config.transducer
    assert (transducer is not None) == (kind == "fastconformer" and head is None)


class _NemoNames(nn.Module):
    """NeMo's export signature: (audio_signal, length) → logprobs only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        log_probs, _ = self.model(audio_signal, length)
        out: torch.Tensor = log_probs
        return out


def write_graph(model: nn.Module, path: Path, names: tuple[list[str], list[str]]) -> Path:
    inputs, outputs = names
    features = torch.randn(1, 64, 300)
    lengths = torch.tensor([300])
    axes: dict[str, dict[int, str]] = {inputs[0]: {0: "b", 2: "t"}, inputs[1]: {0: "b"}}
    axes |= {outputs[0]: {0: "b", 1: "t2"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (features, lengths), str(path), input_names=inputs,
            output_names=outputs, dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return path


def test_upstream_gigaam_onnx_graph_is_quantized_verified_and_bundled(tmp_path: Path) -> None:
    """GigaAM's to_onnx output: <name>.onnx (features, feature_lengths → log_probs,
    encoded_lengths) and the <name>.yaml cfg it saves beside it."""
    cfg = {**v3_cfg(), "model_name": "v3_ctc"}
    source = load_gigaam(save_gigaam(tmp_path / "v3_ctc.ckpt", cfg, upstream_state_dict(cfg)))
    names = (["features", "feature_lengths"], ["log_probs", "encoded_lengths"])
    graph = write_graph(source.model, tmp_path / "v3_ctc.onnx", names)
    (tmp_path / "v3_ctc.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out = tmp_path / "bundle"
    export("onnx", str(graph), "--gigaam-cfg", str(tmp_path / "v3_ctc.yaml"), "--out", str(out))
    check_bundle(out, frontend_kind="gigaam_mel", token_kind="char")
    frontend = load_bundle(out).config.frontend
    assert isinstance(frontend, GigaamMelConfig) and frontend.bf16_buffers


def test_nemo_style_onnx_graph_with_tokens_and_a_preset(tmp_path: Path) -> None:
    """NeMo's export names (audio_signal, length → logprobs) and a sherpa-style tokens.txt."""
    cfg = {**v3_cfg(), "model_name": "v3_ctc"}
    source = load_gigaam(save_gigaam(tmp_path / "m.ckpt", cfg, upstream_state_dict(cfg)))
    graph = write_graph(
        _NemoNames(source.model), tmp_path / "m.onnx", (["audio_signal", "length"], ["logprobs"])
    )
    assert graph_io_names(graph) == ("audio_signal", "length", "logprobs")
    tokens = tmp_path / "tokens.txt"
    source.vocabulary.write(tokens)
    out = tmp_path / "bundle"
    export(
        "onnx", str(graph), "--tokens", str(tokens), "--frontend", "gigaam-v3", "--out", str(out)
    )
    transcriber = check_bundle(out, frontend_kind="gigaam_mel", token_kind="char")
    assert transcriber.bundle.config.model.features_input == "audio_signal"
    # The imported graph computes what the PyTorch model does on the same features.
    features = transcriber.frontend(np.zeros(16000, np.float32) + 0.01)
    with torch.no_grad():
        expected, _ = source.model(
            torch.from_numpy(features)[None], torch.tensor([features.shape[1]])
        )
    fp32 = Transcriber.from_dir(out, threads=1).model(features)
    assert np.abs(fp32 - expected[0].numpy()).max() < 0.5  # int8 graph: coarse bound


def test_a_graph_that_is_not_ctc_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Doubler(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    path = tmp_path / "x.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Doubler(), (torch.randn(1, 4),), str(path), dynamo=False)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("а 0\n<blk> 1\n", encoding="utf-8")
    args = [
        "onnx",
        str(path),
        "--tokens",
        str(tokens),
        "--frontend",
        "gigaam-v2",
        "--out",
        str(tmp_path / "b"),
    ]
    assert export_main(args) == 2
    assert "is not a CTC graph" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_handler_serves_a_conformer_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler needs nothing Conformer-specific: the bundle's config selects it all."""
    import handler
    from asr_service import model_cache
    from asr_service.settings import Settings

    from tests.test_handler import FakeContext, http_event

    cfg = {**v3_cfg(), "model_name": "v3_ctc"}
    ckpt = save_gigaam(tmp_path / "v3_ctc.ckpt", cfg, upstream_state_dict(cfg))
    export("gigaam", str(ckpt), "--out", str(tmp_path / "bundle"))
    expected = Transcriber.from_dir(tmp_path / "bundle", threads=1).transcribe(clip()).text
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
    monkeypatch.setattr(handler, "settings", Settings(model_dir=tmp_path / "bundle"))
    model_cache.reset()
    try:
        event = http_event(Path(clip()).read_bytes(), content_type="audio/wav")
        response: dict[str, Any] = handler.lambda_handler(event, FakeContext())
    finally:
        model_cache.reset()
    assert response["statusCode"] == 200, response
    result = json.loads(response["body"])
    assert result["text"] == expected
    assert result["model_id"] == "v3_ctc"
