"""GigaAM RNNT (v2, v3, v3 e2e) checkpoints in upstream's layout: load → export → verify →
bundle → Transcriber, against upstream's greedy decoding written again in the tests."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
import yaml
from asr.bundle import load_bundle
from asr.frontend import make_frontend
from asr.transcribe import Transcriber
from torch import Tensor, nn

from export.__main__ import main as export_main
from export.gigaam import load_gigaam
from export.gigaam_releases import GIGAAM_RELEASES, GigaamRelease, download_gigaam
from export.quartznet import CheckpointError
from export.transducer import TransducerModel, greedy_path
from tests.conftest import SpeechClip
from tests.gigaam_checkpoints import rnnt_cfg, save_gigaam, upstream_state_dict, v2_cfg, v3_cfg
from tests.rnnt_reference import UpstreamRnnt, gigaam_names
from tests.test_gigaam import GigaamReference, e2e_cfg

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# The blank logit's extra bias that gives each random layout a mix of blank frames and
# frames with tokens (see gigaam_checkpoints.upstream_state_dict).
BLANK_BIAS = {"v2_rnnt": 2.0, "v3_rnnt": 3.0, "v3_e2e_rnnt": 2.0}


def layouts(tokenizer_path: Path | None = None) -> dict[str, dict[str, Any]]:
    out = {
        "v2_rnnt": rnnt_cfg(v2_cfg()),
        "v3_rnnt": rnnt_cfg(v3_cfg(), layers=2),
    }
    if tokenizer_path is not None:
        out["v3_e2e_rnnt"] = rnnt_cfg(e2e_cfg(tokenizer_path), max_symbols_per_step=3)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tokenizer: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rnnt")
    return {
        name: save_gigaam(
            root / f"{name}.ckpt", cfg, upstream_state_dict(cfg, blank_bias=BLANK_BIAS[name])
        )
        for name, cfg in layouts(tokenizer).items()
    }


def tokenizer_for(name: str, tokenizer: Path) -> Path | None:
    return tokenizer if "e2e" in name else None


@pytest.mark.parametrize("name", ["v2_rnnt", "v3_rnnt", "v3_e2e_rnnt"])
def test_every_upstream_key_loads_and_decodes_as_upstream(
    name: str, checkpoints: dict[str, Path], tokenizer: Path, ru_clips: list[SpeechClip]
) -> None:
    cfg = layouts(tokenizer)[name]
    loaded = torch.load(checkpoints[name], weights_only=False)
    source = load_gigaam(checkpoints[name], tokenizer=tokenizer_for(name, tokenizer))
    model = source.model
    assert isinstance(model, TransducerModel)
    head_keys = {k for k in loaded["state_dict"] if k.startswith("head.")}
    assert len(head_keys) == 7 + 4 * cfg["head"]["decoder"]["pred_rnn_layers"]
    assert source.transducer is not None
    decoding_cap = cfg["decoding"].get("max_symbols_per_step", 10)
    assert source.transducer.max_symbols_per_step == decoding_cap
    assert source.vocabulary.blank_id == cfg["head"]["joint"]["num_classes"] - 1

    # Upstream's encoder maths (tests/test_gigaam.py) and greedy decoding (tests/
    # rnnt_reference.py) on the raw state_dict vs this project's PyTorch model.
    frontend = make_frontend(source.frontend)
    audio = soundfile.read(ru_clips[0].path, dtype="float32")[0]
    features = torch.from_numpy(frontend(audio))
    with torch.no_grad():
        ours, _ = model.encoder(features[None], torch.tensor([features.shape[1]]))
    theirs = GigaamReference(loaded["state_dict"], cfg).encode(features)
    assert torch.allclose(ours, theirs, atol=2e-4)
    layers = cfg["head"]["decoder"]["pred_rnn_layers"]
    reference = UpstreamRnnt(loaded["state_dict"], gigaam_names(layers), layers)
    tokens, frames = reference.greedy(theirs[0], decoding_cap)
    # A real sequence: tokens, and frames the blank passes over.
    assert len(tokens) > 5 and len(set(frames)) < theirs.shape[1]

    path = greedy_path(model, ours[0])
    assert (path.token_ids, path.frames) == (tokens, frames)


@pytest.mark.parametrize("name", ["v3_rnnt", "v3_e2e_rnnt"])
def test_export_bundles_a_transducer_the_transcriber_decodes_as_upstream(
    name: str,
    checkpoints: dict[str, Path],
    tokenizer: Path,
    ru_clips: list[SpeechClip],
    tmp_path: Path,
) -> None:
    clip = ru_clips[1].path
    out = tmp_path / "bundle"
    args = [
        "gigaam", str(checkpoints[name]), "--out", str(out), "--no-synthetic",
        "--verify-audio", str(clip), "--min-token-agreement", "0", "--max-cer-vs-fp32", "1",
        "--precision", "fp32",
    ]  # fmt: skip
    if "e2e" in name:
        args += ["--tokenizer", str(tokenizer)]
    assert export_main(args) == 0
    bundle = load_bundle(out)
    assert sorted(p.name for p in out.iterdir()) == [
        ".verified.json", "SHA256SUMS", "config.json", "decoder.onnx", "joint.onnx", "model.onnx",
        "tokens.txt",
        "verification.json",
    ]  # fmt: skip
    metrics = bundle.verification["metrics"]
    assert metrics["fp32_max_logprob_diff"] < 1e-4
    assert metrics["torch_fp32_transcripts_identical"] == 1.0
    assert bundle.config.transducer is not None and bundle.config.model.output == "encoded"

    cfg = layouts(tokenizer)[name]
    loaded = torch.load(checkpoints[name], weights_only=False)
    frontend = make_frontend(bundle.config.frontend)
    audio = soundfile.read(clip, dtype="float32")[0]
    encoded = GigaamReference(loaded["state_dict"], cfg).encode(torch.from_numpy(frontend(audio)))
    layers = cfg["head"]["decoder"]["pred_rnn_layers"]
    cap = cfg["decoding"].get("max_symbols_per_step", 10)
    tokens, frames = UpstreamRnnt(loaded["state_dict"], gigaam_names(layers), layers).greedy(
        encoded[0], cap
    )
    assert len(tokens) > 5
    transcript = Transcriber(bundle, threads=1).transcribe(clip)
    assert [t for s in transcript.segments for t in s.token_ids] == tokens
    assert transcript.text == bundle.verification["clips"][0]["text_torch"]
    # Word times come from the emission frames (40 ms each).
    first_word = transcript.words[0]
    assert first_word.start == pytest.approx(frames[0] * 0.04, abs=1e-3)
    assert all(0.0 < w.confidence <= 1.0 for w in transcript.words)


def test_int8_bundle_quantises_the_encoder_only(
    checkpoints: dict[str, Path], ru_clips: list[SpeechClip], tmp_path: Path
) -> None:
    out = tmp_path / "int8"
    args = [
        "gigaam", str(checkpoints["v3_rnnt"]), "--out", str(out), "--no-synthetic",
        "--verify-audio", str(ru_clips[2].path), "--min-token-agreement", "0",
        "--max-cer-vs-fp32", "1",
    ]  # fmt: skip
    assert export_main(args) == 0
    bundle = load_bundle(out)
    assert bundle.config.model.precision == "int8"
    ops = _op_types(out / "model.onnx")
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    for small in ("decoder.onnx", "joint.onnx"):
        assert not {"MatMulInteger", "DynamicQuantizeLinear"} & _op_types(out / small)
    text = Transcriber(bundle, threads=1).transcribe(ru_clips[2].path).text
    assert text == bundle.verification["clips"][0]["text_int8"]


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["head"]["joint"].update(enc_hidden=64), "enc_hidden 64 != d_model 96"),
        (lambda c: c["head"]["decoder"].update(num_classes=35), "decoder.num_classes 35"),
        (lambda c: c["head"]["joint"].update(pred_hidden=40), "joint.pred_hidden 40"),
        (lambda c: c["head"]["decoder"].update(blank_as_pad=True), "unsupported options"),
        (lambda c: c["head"].update(extra=1), "not an RNNT head's"),
        (lambda c: c["decoding"].update(max_symbols_per_step=0), "must be >= 1"),
        (lambda c: c["decoding"].update(beam_size=4), r"decoding options \['beam_size'\]"),
    ],
)
def test_rnnt_cfg_mismatches_are_refused(tmp_path: Path, change: Any, message: str) -> None:
    cfg = rnnt_cfg(v3_cfg())
    sd = upstream_state_dict(cfg)
    change(cfg)
    with pytest.raises(CheckpointError, match=message):
        load_gigaam(save_gigaam(tmp_path / "m.ckpt", cfg, sd))


def test_missing_or_misshapen_head_keys_are_named(tmp_path: Path) -> None:
    cfg = rnnt_cfg(v3_cfg())
    sd = upstream_state_dict(cfg)
    del sd["head.decoder.lstm.bias_hh_l0"]
    with pytest.raises(CheckpointError, match=r"1 missing.*predictor.lstm.bias_hh_l0"):
        load_gigaam(save_gigaam(tmp_path / "a.ckpt", cfg, sd))
    sd = upstream_state_dict(cfg)
    sd["head.joint.joint_net.1.weight"] = torch.zeros(34, 57)
    with pytest.raises(CheckpointError, match="joint.out.weight"):
        load_gigaam(save_gigaam(tmp_path / "b.ckpt", cfg, sd))


def test_download_by_name_verifies_the_rnnt_release(tmp_path: Path) -> None:
    root = tmp_path / "cdn"
    root.mkdir()
    cfg = rnnt_cfg(v3_cfg())
    checkpoint = save_gigaam(root / "v3_rnnt.ckpt", cfg, upstream_state_dict(cfg))
    md5 = hashlib.md5(checkpoint.read_bytes()).hexdigest()
    release = GigaamRelease("v3_rnnt", md5, "test")
    fetched, tokenizer_path = download_gigaam(release, tmp_path / "dl", base_url=root.as_uri())
    assert tokenizer_path is None
    assert isinstance(load_gigaam(fetched).model, TransducerModel)
    published = {name: GIGAAM_RELEASES[name].md5 for name in ("v2_rnnt", "v3_rnnt", "v3_e2e_rnnt")}
    assert published == {
        "v2_rnnt": "547460139acfebd842323f59ed54ab54",
        "v3_rnnt": "0fd2c9a1ff66abd8d32a3a07f7592815",
        "v3_e2e_rnnt": "2730de7545ac43ad256485a462b0a27a",
    }
    assert np.all([GIGAAM_RELEASES[n].sentencepiece for n in ("v1_rnnt", "v3_e2e_rnnt")])


class _UpstreamEncoder(nn.Module):
    """GigaAM's encoder export: (audio_signal, length) → encoded [B, D, T'], encoded_len
    (int32, as its calc_length leaves it)."""

    def __init__(self, model: TransducerModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, audio_signal: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
        encoded, lengths = self.encoder(audio_signal, length)
        return encoded.transpose(1, 2), lengths.to(torch.int32)


class _UpstreamDecoder(nn.Module):
    """RNNTDecoder.forward for ONNX: embed(x) → LSTM, no start-of-sequence special case
    (the blank's embedding row is zero)."""

    def __init__(self, model: TransducerModel) -> None:
        super().__init__()
        self.embed, self.lstm = model.predictor.embed, model.predictor.lstm

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        g, (h, c) = self.lstm(self.embed(x).transpose(0, 1), (h, c))
        return g.transpose(0, 1), h, c


class _UpstreamJoint(nn.Module):
    def __init__(self, model: TransducerModel) -> None:
        super().__init__()
        self.joint = model.joint

    def forward(self, enc: Tensor, dec: Tensor) -> Tensor:
        joint = self.joint
        hidden = joint.enc(enc.transpose(1, 2)).unsqueeze(2)
        hidden = hidden + joint.pred(dec.transpose(1, 2)).unsqueeze(1)
        return torch.log_softmax(joint.out(torch.relu(hidden)), dim=-1)


def write_upstream_onnx(
    model: TransducerModel, directory: Path, name: str, decoder_names: tuple[list[str], list[str]]
) -> Path:
    """What GigaAM's to_onnx writes for an RNNT model, with its dynamic axes (batch only for
    the decoder and joint; the encoder's output time axis mislabelled as dim 1)."""
    spec = model.spec
    state = torch.zeros(spec.pred_layers, 1, spec.pred_hidden)
    features = torch.randn(1, 64, 200)
    graphs: list[tuple[nn.Module, tuple[Tensor, ...], str, list[str], list[str], Any]] = [
        (
            _UpstreamEncoder(model), (features, torch.tensor([200])), "encoder",
            ["audio_signal", "length"], ["encoded", "encoded_len"],
            {"audio_signal": {0: "batch_size", 2: "seq_len"}, "length": {0: "batch_size"},
             "encoded": {0: "batch_size", 1: "seq_len"}, "encoded_len": {0: "batch_size"}},
        ),
        (
            _UpstreamDecoder(model), (torch.zeros(1, 1, dtype=torch.long), state, state),
            "decoder", *decoder_names,
            {n: {0 if n in ("x", decoder_names[1][0]) else 1: "batch_size"}
             for n in (*decoder_names[0], *decoder_names[1])},
        ),
        (
            _UpstreamJoint(model),
            (torch.zeros(1, spec.encoder.d_model, 1), torch.zeros(1, spec.pred_hidden, 1)),
            "joint", ["enc", "dec"], ["joint"],
            {"enc": {0: "batch_size"}, "dec": {0: "batch_size"}, "joint": {0: "batch_size"}},
        ),
    ]  # fmt: skip
    for module, example, part, inputs, outputs, axes in graphs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(), example, str(directory / f"{name}_{part}.onnx"),
                input_names=inputs, output_names=outputs, dynamic_axes=axes,
                opset_version=17, dynamo=False,
            )  # fmt: skip
    return directory / f"{name}_encoder.onnx"


@pytest.mark.parametrize(
    "decoder_names",
    [(["x", "hi", "ci"], ["dec", "ho", "co"]), (["x", "h.1", "c.1"], ["dec", "h", "c"])],
    ids=["current", "earlier"],
)
def test_gigaam_to_onnx_rnnt_graphs_import_as_a_bundle(
    tmp_path: Path,
    checkpoints: dict[str, Path],
    ru_clips: list[SpeechClip],
    decoder_names: tuple[list[str], list[str]],
) -> None:
    cfg = {**layouts()["v3_rnnt"], "model_name": "v3_rnnt"}
    source = load_gigaam(checkpoints["v3_rnnt"])
    assert isinstance(source.model, TransducerModel)
    encoder = write_upstream_onnx(source.model, tmp_path, "v3_rnnt", decoder_names)
    (tmp_path / "v3_rnnt.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    clip = ru_clips[5].path
    out = tmp_path / "bundle"
    args = [
        "onnx", str(encoder), "--gigaam-cfg", str(tmp_path / "v3_rnnt.yaml"), "--out", str(out),
        "--no-synthetic", "--verify-audio", str(clip), "--min-token-agreement", "0",
        "--max-cer-vs-fp32", "1", "--precision", "fp32",
    ]  # fmt: skip
    assert export_main(args) == 0
    bundle = load_bundle(out)
    transducer = bundle.config.transducer
    assert transducer is not None
    assert (list(transducer.decoder_inputs), list(transducer.decoder_outputs)) == decoder_names
    assert bundle.config.model.lengths_output == "encoded_len"

    loaded = torch.load(checkpoints["v3_rnnt"], weights_only=False)
    frontend = make_frontend(bundle.config.frontend)
    features = torch.from_numpy(frontend(soundfile.read(clip, dtype="float32")[0]))
    encoded = GigaamReference(loaded["state_dict"], cfg).encode(features)
    layers = cfg["head"]["decoder"]["pred_rnn_layers"]
    tokens, _ = UpstreamRnnt(loaded["state_dict"], gigaam_names(layers), layers).greedy(
        encoded[0], 10
    )
    transcript = Transcriber(bundle, threads=1).transcribe(clip)
    assert [t for s in transcript.segments for t in s.token_ids] == tokens and tokens


def test_an_rnnt_encoder_without_its_decoder_is_refused(
    tmp_path: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = load_gigaam(checkpoints["v3_rnnt"])
    assert isinstance(source.model, TransducerModel)
    names = (["x", "hi", "ci"], ["dec", "ho", "co"])
    encoder = write_upstream_onnx(source.model, tmp_path, "v3_rnnt", names)
    (tmp_path / "v3_rnnt_decoder.onnx").unlink()
    (tmp_path / "v3_rnnt.yaml").write_text(yaml.safe_dump(layouts()["v3_rnnt"]))
    args = ["onnx", str(encoder), "--gigaam-cfg", str(tmp_path / "v3_rnnt.yaml"), "--out", "x"]
    assert export_main(args) == 2
    assert "v3_rnnt_decoder.onnx does not exist" in capsys.readouterr().err
