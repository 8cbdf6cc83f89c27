"""The NeMo FastConformer hybrid's RNNT head: NeMo's key layout → export → bundle →
Transcriber, against upstream's greedy decoding written again in the tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile
import torch
from asr.bundle import load_bundle
from asr.frontend import make_frontend
from asr.transcribe import Transcriber

from export.__main__ import main as export_main
from export.checkpoint import LoadedCheckpoint, load_checkpoint
from export.nemo_conformer import load_nemo_conformer
from export.quartznet import CheckpointError
from export.transducer import TransducerModel, greedy_path
from tests.conftest import SpeechClip
from tests.nemo_conformer_checkpoints import (
    Tokenizer,
    conformer_ctc_bpe_config,
    fastconformer_hybrid_config,
    random_state_dict,
    train_tokenizer,
    write_nemo_archive,
)
from tests.rnnt_reference import UpstreamRnnt, nemo_names

pytestmark = pytest.mark.usefixtures("single_torch_thread")
# Random weights emit at nearly every step; a trained joint says blank on most frames.
BLANK_BIAS = 2.5


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return train_tokenizer(tmp_path_factory.mktemp("spm"))


def hybrid(
    path: Path,
    spm: Tokenizer,
    *,
    edit_config: Callable[[dict[str, Any]], None] = lambda config: None,
    seed: int = 0,
) -> LoadedCheckpoint:
    config = fastconformer_hybrid_config(spm.pieces)
    state = random_state_dict(config, seed)
    state["joint.joint_net.2.bias"][-1] += BLANK_BIAS
    edit_config(config)
    return load_checkpoint(write_nemo_archive(path, config, state, spm.artifacts()))


def test_rnnt_head_is_nemo_s_default_and_decodes_as_upstream(
    tmp_path: Path, spm: Tokenizer, ru_clips: list[SpeechClip]
) -> None:
    checkpoint = hybrid(tmp_path / "h.nemo", spm)
    source = load_nemo_conformer(checkpoint)
    model = source.model
    assert isinstance(model, TransducerModel)
    assert "RNNT head" in source.source["architecture"]
    assert source.transducer is not None and source.transducer.max_symbols_per_step == 10
    assert source.vocabulary.blank_id == len(spm.pieces)

    frontend = make_frontend(source.frontend)
    audio = soundfile.read(ru_clips[3].path, dtype="float32")[0]
    features = torch.from_numpy(frontend(audio))
    with torch.no_grad():
        encoded, _ = model.encoder(features[None], torch.tensor([features.shape[1]]))
    reference = UpstreamRnnt(checkpoint.state_dict, nemo_names(1, joint_dropout=True), 1)
    tokens, frames = reference.greedy(encoded[0], 10)
    assert len(tokens) > 3 and len(set(frames)) < encoded.shape[1]
    path = greedy_path(model, encoded[0])
    assert (path.token_ids, path.frames) == (tokens, frames)


def test_hybrid_rnnt_bundle_serves_upstream_s_tokens(
    tmp_path: Path, spm: Tokenizer, ru_clips: list[SpeechClip]
) -> None:
    checkpoint = hybrid(tmp_path / "h.nemo", spm, seed=4)
    clip = ru_clips[4].path
    out = tmp_path / "bundle"
    args = [
        "nemo", str(checkpoint.path), "--head", "rnnt", "--out", str(out), "--no-synthetic",
        "--verify-audio", str(clip), "--min-token-agreement", "0", "--max-cer-vs-fp32", "1",
        "--precision", "fp32",
    ]  # fmt: skip
    assert export_main(args) == 0
    bundle = load_bundle(out)
    assert bundle.verification["metrics"]["fp32_max_logprob_diff"] < 1e-4
    frontend = make_frontend(bundle.config.frontend)
    features = torch.from_numpy(frontend(soundfile.read(clip, dtype="float32")[0]))
    model = load_nemo_conformer(checkpoint).model
    assert isinstance(model, TransducerModel)
    with torch.no_grad():
        encoded, _ = model.encoder(features[None], torch.tensor([features.shape[1]]))
    reference = UpstreamRnnt(checkpoint.state_dict, nemo_names(1, joint_dropout=True), 1)
    tokens, _ = reference.greedy(encoded[0], 10)
    transcript = Transcriber(bundle, threads=1).transcribe(clip)
    assert [t for s in transcript.segments for t in s.token_ids] == tokens
    assert tokens


def test_tanh_joint_without_dropout(tmp_path: Path, spm: Tokenizer) -> None:
    def tanh(config: dict[str, Any]) -> None:
        config["joint"]["jointnet"].update(activation="tanh", dropout=0.0)

    config = fastconformer_hybrid_config(spm.pieces)
    state = random_state_dict(config)
    state["joint.joint_net.1.weight"] = state.pop("joint.joint_net.2.weight")
    state["joint.joint_net.1.bias"] = state.pop("joint.joint_net.2.bias")
    tanh(config)
    checkpoint = load_checkpoint(
        write_nemo_archive(tmp_path / "t.nemo", config, state, spm.artifacts())
    )
    model = load_nemo_conformer(checkpoint).model
    assert isinstance(model, TransducerModel)
    encoded = torch.randn(30, 32)
    reference = UpstreamRnnt(checkpoint.state_dict, nemo_names(1, joint_dropout=False), 1)
    tokens, frames = reference.greedy(encoded, 10, activation="tanh")
    path = greedy_path(model, encoded)
    assert (path.token_ids, path.frames) == (tokens, frames)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["decoder"].update(normalization_mode="layer"), "normalization_mode"),
        (lambda c: c["decoder"].update(blank_as_pad=False), "blank_as_pad"),
        (lambda c: c["decoder"]["prednet"].update(rnn_hidden_size=64), "projected LSTM"),
        (lambda c: c["joint"].update(num_extra_outputs=5), "TDT durations"),
        (lambda c: c.update(loss={"loss_name": "tdt"}), "'tdt'"),
        (lambda c: c["joint"]["jointnet"].update(activation="gelu"), "activation 'gelu'"),
        (lambda c: c["joint"]["jointnet"].update(encoder_hidden=64), "encoder_hidden 64"),
        (lambda c: c["decoder"].update(vocab_size=7), "vocab_size 7"),
        (lambda c: c["decoder"]["prednet"].update(norm="x"), r"prednet options \['norm'\]"),
        (lambda c: c["decoding"]["greedy"].update(max_symbols=0), "max_symbols"),
        (lambda c: c["joint"].update(_target_="x.SampledRNNTJoint"), "RNNTJoint only"),
    ],
)
def test_rnnt_options_not_reproduced_are_refused(
    tmp_path: Path, spm: Tokenizer, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    checkpoint = hybrid(tmp_path / "h.nemo", spm, edit_config=edit)
    with pytest.raises(CheckpointError, match=message):
        load_nemo_conformer(checkpoint)


def test_rnnt_head_of_a_ctc_model_is_refused(tmp_path: Path, spm: Tokenizer) -> None:
    config = conformer_ctc_bpe_config(spm.pieces, n_layers=1)
    path = write_nemo_archive(tmp_path / "c.nemo", config, random_state_dict(config))
    with pytest.raises(CheckpointError, match="has no RNNT head"):
        load_nemo_conformer(load_checkpoint(path), head="rnnt")


def test_beam_strategy_is_served_greedily_and_recorded(tmp_path: Path, spm: Tokenizer) -> None:
    def beam(config: dict[str, Any]) -> None:
        config["decoding"] = {**copy.deepcopy(config["decoding"]), "strategy": "beam"}

    source = load_nemo_conformer(hybrid(tmp_path / "h.nemo", spm, edit_config=beam))
    assert source.source["nemo_decoding_strategy_replaced_by_greedy"] == "beam"
