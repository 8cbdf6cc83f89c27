"""NeMo Conformer-CTC / FastConformer hybrid checkpoints → SourceModel.

The reference forward below restates NeMo's equations directly on the checkpoint's tensors
(ConvSubsampling with MaskedConvSequential, RelPositionalEncoding with xscale,
RelPositionMultiHeadAttention, ConformerLayer, ConvASRDecoder). Its relative-position
term is gathered per (query, key) pair instead of NeMo's pad-and-reshape rel_shift, so an
orientation or shift error in export.conformer shows up as a mismatch.
"""

from __future__ import annotations

import copy
import gzip
import importlib
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as fn
from torch import Tensor

from export.checkpoint import LoadedCheckpoint, load_checkpoint
from export.nemo_conformer import load_nemo_conformer, model_kind
from export.quartznet import CheckpointError
from export.sentencepiece_tokens import sentencepiece_pieces
from export.source_model import CONFORMER_MAX_WINDOW_SECONDS
from tests.nemo_conformer_checkpoints import (
    CYRILLIC,
    Tokenizer,
    conformer_ctc_bpe_config,
    conformer_ctc_char_config,
    fastconformer_hybrid_config,
    random_state_dict,
    train_tokenizer,
    write_nemo_archive,
)

Config = dict[str, Any]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    pytest.importorskip("sentencepiece")
    return train_tokenizer(tmp_path_factory.mktemp("spm"))


def write(
    path: Path,
    config: Config,
    tokenizer: Tokenizer | None,
    *,
    edit: Callable[[dict[str, Tensor]], None] = lambda state: None,
    seed: int = 0,
    weights_config: Config | None = None,
) -> LoadedCheckpoint:
    """Pack ``config`` with random weights of ``weights_config`` (default: ``config``)."""
    state = random_state_dict(weights_config or config, seed)
    edit(state)
    artifacts = tokenizer.artifacts() if tokenizer is not None else None
    return load_checkpoint(write_nemo_archive(path, config, state, artifacts))


# --- the reference: NeMo's equations on the raw state_dict ---------------------------------


def _masked(x: Tensor, lengths: Tensor) -> Tensor:
    """MaskedConvSequential's mask: [B, C, T, F] times (t < length)."""
    keep = torch.arange(x.shape[2])[None, :] < lengths[:, None]
    return x * keep[:, None, :, None].to(x.dtype)


def reference_subsampling(
    sd: Mapping[str, Tensor], enc: Config, x: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """ConvSubsampling (striding / dw_striding), masked before every layer as NeMo >= 2.5."""
    channels = (
        enc["d_model"]
        if enc["subsampling_conv_channels"] == -1
        else enc["subsampling_conv_channels"]
    )
    stages = int(math.log2(enc["subsampling_factor"]))
    # (index, stride, groups) of every conv, None for a ReLU.
    plan: list[tuple[int, int, int] | None] = []
    if enc["subsampling"] == "striding":
        for stage in range(stages):
            plan += [(2 * stage, 2, 1), None]
    else:
        plan += [(0, 2, 1), None]
        for stage in range(stages - 1):
            index = 2 + 3 * stage
            plan += [(index, 2, channels), (index + 1, 1, 1), None]
    h = x[:, None]  # [B, 1, T, F]
    current = lengths.clone()
    for step in plan:
        h = _masked(h, current)
        if step is None:
            h = torch.relu(h)
            continue
        index, stride, groups = step
        weight = sd[f"encoder.pre_encode.conv.{index}.weight"]
        bias = sd[f"encoder.pre_encode.conv.{index}.bias"]
        padding = 1 if weight.shape[-1] == 3 else 0
        h = fn.conv2d(h, weight, bias, stride=stride, padding=padding, groups=groups)
        if stride == 2:
            current = torch.floor((current.float() + 2 - 3) / 2 + 1).long()
    h = _masked(h, current)
    batch, _, frames, _ = h.shape
    flat = h.permute(0, 2, 1, 3).reshape(batch, frames, -1)
    return fn.linear(
        flat, sd["encoder.pre_encode.out.weight"], sd["encoder.pre_encode.out.bias"]
    ), current


def sinusoid(position: Tensor, d_model: int) -> Tensor:
    """pe(r): sin on even channels, cos on odd, frequency 10000^(-2m/d)."""
    m = torch.arange(d_model // 2, dtype=torch.float32)
    angle = position[..., None].float() / torch.pow(10000.0, 2 * m / d_model)
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)


def reference_attention(
    sd: Mapping[str, Tensor], prefix: str, x: Tensor, valid: Tensor, heads: int
) -> Tensor:
    """Transformer-XL scores ((q+u)·k + (q+v)·R[i-j]) / sqrt(d_k), R = linear_pos(pe(i - j))."""
    batch, frames, d_model = x.shape
    d_k = d_model // heads

    def project(name: str) -> Tensor:
        y = fn.linear(x, sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"])
        return y.reshape(batch, frames, heads, d_k)

    q, k, v = project("linear_q"), project("linear_k"), project("linear_v")
    steps = torch.arange(frames)
    relative = sinusoid(steps[:, None] - steps[None, :], d_model)  # [i, j, d], pe(i - j)
    r = fn.linear(relative, sd[f"{prefix}.linear_pos.weight"]).reshape(frames, frames, heads, d_k)
    u, w = sd[f"{prefix}.pos_bias_u"], sd[f"{prefix}.pos_bias_v"]
    content = torch.einsum("bihd,bjhd->bhij", q + u, k)
    position = torch.einsum("bihd,ijhd->bhij", q + w, r)
    scores = (content + position) / math.sqrt(d_k)
    allowed = (valid[:, :, None] & valid[:, None, :])[:, None]
    scores = scores.masked_fill(~allowed, -10000.0)
    weights = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)
    out = torch.einsum("bhij,bjhd->bihd", weights, v).reshape(batch, frames, d_model)
    return fn.linear(out, sd[f"{prefix}.linear_out.weight"], sd[f"{prefix}.linear_out.bias"])


def reference_layer(
    sd: Mapping[str, Tensor], prefix: str, x: Tensor, valid: Tensor, enc: Config
) -> Tensor:
    def norm(name: str, y: Tensor) -> Tensor:
        return fn.layer_norm(
            y, y.shape[-1:], sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"], 1e-5
        )

    def feed_forward(name: str, y: Tensor) -> Tensor:
        p = f"{prefix}.{name}"
        hidden = fn.silu(fn.linear(y, sd[f"{p}.linear1.weight"], sd[f"{p}.linear1.bias"]))
        return fn.linear(hidden, sd[f"{p}.linear2.weight"], sd[f"{p}.linear2.bias"])

    def convolution(y: Tensor) -> Tensor:
        p = f"{prefix}.conv"
        h = fn.conv1d(
            y.transpose(1, 2), sd[f"{p}.pointwise_conv1.weight"], sd[f"{p}.pointwise_conv1.bias"]
        )
        h = fn.glu(h, dim=1) * valid[:, None, :]
        kernel = enc["conv_kernel_size"]
        h = fn.conv1d(
            h,
            sd[f"{p}.depthwise_conv.weight"],
            sd[f"{p}.depthwise_conv.bias"],
            padding=(kernel - 1) // 2,
            groups=h.shape[1],
        )
        h = fn.batch_norm(
            h,
            sd[f"{p}.batch_norm.running_mean"],
            sd[f"{p}.batch_norm.running_var"],
            sd[f"{p}.batch_norm.weight"],
            sd[f"{p}.batch_norm.bias"],
            training=False,
            eps=1e-5,
        )
        h = fn.conv1d(
            fn.silu(h), sd[f"{p}.pointwise_conv2.weight"], sd[f"{p}.pointwise_conv2.bias"]
        )
        return h.transpose(1, 2)

    residual = x + 0.5 * feed_forward("feed_forward1", norm("norm_feed_forward1", x))
    attention_in = norm("norm_self_att", residual)
    residual = residual + reference_attention(
        sd, f"{prefix}.self_attn", attention_in, valid, enc["n_heads"]
    )
    residual = residual + convolution(norm("norm_conv", residual))
    residual = residual + 0.5 * feed_forward("feed_forward2", norm("norm_feed_forward2", residual))
    return norm("norm_out", residual)


def reference_log_probs(
    sd: Mapping[str, Tensor], config: Config, features: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """features [B, F, T] → log-probs [B, T', V + 1], lengths — NeMo's CTC path."""
    enc = config["encoder"]
    x, out_lengths = reference_subsampling(sd, enc, features.transpose(1, 2), lengths)
    x = x * math.sqrt(enc["d_model"])  # RelPositionalEncoding's xscale
    valid = torch.arange(x.shape[1])[None, :] < out_lengths[:, None]
    for n in range(enc["n_layers"]):
        x = reference_layer(sd, f"encoder.layers.{n}", x, valid, enc)
    head = "ctc_decoder" if "aux_ctc" in config else "decoder"
    logits = fn.conv1d(
        x.transpose(1, 2),
        sd[f"{head}.decoder_layers.0.weight"],
        sd[f"{head}.decoder_layers.0.bias"],
    )
    return fn.log_softmax(logits.transpose(1, 2), dim=-1), out_lengths


# --- loading ---------------------------------------------------------------------------------


def test_conformer_ctc_bpe_loads_as_a_source_model(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = conformer_ctc_bpe_config(tokenizer.pieces)
    checkpoint = write(tmp_path / "stt_ru_conformer_ctc_tiny.nemo", config, tokenizer)
    source = load_nemo_conformer(checkpoint)

    assert source.family == "conformer"
    assert source.token_kind == "sentencepiece"
    assert source.subsampling == 4
    assert source.max_window_seconds == CONFORMER_MAX_WINDOW_SECONDS
    assert source.vocabulary.tokens == (*tokenizer.pieces, "<blk>")
    assert source.vocabulary.blank_id == len(tokenizer.pieces)
    assert source.vocabulary.tokens[0] == "<unk>"  # NeMo's tokenizers keep unk at id 0
    frontend = source.frontend
    assert (frontend.n_mels, frontend.win_length, frontend.n_fft, frontend.hop_length) == (
        80,
        400,
        512,
        160,
    )
    assert not source.model.training
    assert source.source["checkpoint"] == "stt_ru_conformer_ctc_tiny.nemo"
    assert source.source["checkpoint_sha256"] == checkpoint.sha256
    assert source.source["target"].endswith("ctc_bpe_models.EncDecCTCModelBPE")
    assert "Conformer CTC" in source.source["architecture"]
    trainable = sum(
        t.numel()
        for k, t in checkpoint.state_dict.items()
        if not k.startswith("preprocessor.") and "running_" not in k and "num_batches" not in k
    )
    assert source.source["parameters"] == source.parameters == trainable


def test_fastconformer_hybrid_ctc_head(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = fastconformer_hybrid_config(tokenizer.pieces)
    checkpoint = write(tmp_path / "hybrid.nemo", config, tokenizer)
    assert "joint.joint_net.2.weight" in checkpoint.state_dict  # the RNNT head is there...
    source = load_nemo_conformer(checkpoint, nemo_stft="legacy", head="ctc")
    assert source.subsampling == 8
    assert source.token_kind == "sentencepiece"
    assert len(source.vocabulary) == len(tokenizer.pieces) + 1
    assert source.frontend.stft_pad_mode == "reflect"  # type: ignore[union-attr]
    assert "FastConformer hybrid RNNT-CTC, CTC head" in source.source["architecture"]
    head = source.model.state_dict()["decoder.decoder_layers.0.weight"]
    assert torch.equal(head, checkpoint.state_dict["ctc_decoder.decoder_layers.0.weight"])


def test_char_conformer_ctc_uses_its_labels(tmp_path: Path) -> None:
    checkpoint = write(tmp_path / "char.nemo", conformer_ctc_char_config(), None)
    source = load_nemo_conformer(checkpoint)
    assert source.token_kind == "char"
    assert source.vocabulary.tokens == ("▁", *CYRILLIC[1:], "<blk>")


@pytest.mark.parametrize("kind", ["conformer_ctc", "fastconformer_hybrid"])
def test_matches_the_nemo_reference_forward(
    tmp_path: Path, tokenizer: Tokenizer, kind: str
) -> None:
    build = conformer_ctc_bpe_config if kind == "conformer_ctc" else fastconformer_hybrid_config
    config = build(tokenizer.pieces)
    checkpoint = write(tmp_path / f"{kind}.nemo", config, tokenizer, seed=3)
    model = load_nemo_conformer(checkpoint, head="ctc").model
    torch.manual_seed(0)
    features = torch.randn(2, 80, 203)
    lengths = torch.tensor([203, 131])  # the second clip is padded: masking is exercised
    features[1, :, 131:] = 0.0  # as NeMo's featurizer leaves padded frames
    with torch.no_grad():
        ours, our_lengths = model(features, lengths)
        theirs, their_lengths = reference_log_probs(
            checkpoint.state_dict, config, features, lengths
        )
    assert our_lengths.tolist() == their_lengths.tolist()
    factor = 4 if kind == "conformer_ctc" else 8
    assert their_lengths.tolist()[0] == len(range(0, 203, factor))
    assert ours.shape == theirs.shape
    for item, valid in enumerate(their_lengths.tolist()):
        difference = (ours[item, :valid] - theirs[item, :valid]).abs().max().item()
        assert difference < 2e-4, f"clip {item}: max |Δ log p| {difference}"
    # Each clip alone gives what it gave in the padded batch.
    with torch.no_grad():
        alone, _ = model(features[1:, :, :131], lengths[1:])
    valid = int(their_lengths[1])
    assert (alone[0, :valid] - ours[1, :valid]).abs().max().item() < 2e-4


def test_untied_biases_false_loads_its_shared_biases(tmp_path: Path, tokenizer: Tokenizer) -> None:
    """untie_biases=false shares one pos_bias_u/v, but each layer's state_dict holds it."""
    config = conformer_ctc_bpe_config(tokenizer.pieces)
    config["encoder"]["untie_biases"] = False

    def share(state: dict[str, Tensor]) -> None:
        for name in ("pos_bias_u", "pos_bias_v"):
            state[f"encoder.layers.1.self_attn.{name}"] = state[
                f"encoder.layers.0.self_attn.{name}"
            ]

    source = load_nemo_conformer(write(tmp_path / "tied.nemo", config, tokenizer, edit=share))
    weights = source.model.state_dict()
    assert torch.equal(
        weights["encoder.layers.0.self_attn.pos_bias_u"],
        weights["encoder.layers.1.self_attn.pos_bias_u"],
    )


def test_sentencepiece_pieces_match_the_library(tokenizer: Tokenizer) -> None:
    spm = importlib.import_module("sentencepiece")
    processor = spm.SentencePieceProcessor(model_proto=tokenizer.model)
    pieces = sentencepiece_pieces(tokenizer.model, "tokenizer.model")
    assert pieces == [processor.id_to_piece(i) for i in range(len(pieces))]
    assert pieces[0] == "<unk>"
    with pytest.raises(CheckpointError):
        sentencepiece_pieces(tokenizer.model[:-3], "tokenizer.model")


def test_vocabulary_comes_from_the_tokenizer_when_the_config_lists_none(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    full = conformer_ctc_bpe_config(tokenizer.pieces, n_layers=1)
    config = copy.deepcopy(full)
    config["decoder"]["vocabulary"] = []
    config["decoder"]["num_classes"] = -1
    checkpoint = write(tmp_path / "novocab.nemo", config, tokenizer, weights_config=full)
    source = load_nemo_conformer(checkpoint)
    assert source.vocabulary.tokens[:-1] == tokenizer.pieces


def test_model_kind_without_target_follows_the_sections(tokenizer: Tokenizer) -> None:
    hybrid = fastconformer_hybrid_config(tokenizer.pieces)
    del hybrid["target"]
    assert model_kind(hybrid).name == "EncDecHybridRNNTCTCBPEModel"
    char = conformer_ctc_char_config()
    del char["target"]
    assert model_kind(char).name == "EncDecCTCModel"


# --- refusals --------------------------------------------------------------------------------


def _encoder_option(key: str, value: Any) -> Callable[[Config], None]:
    def edit(config: Config) -> None:
        config["encoder"][key] = value

    return edit


UNSUPPORTED: dict[str, tuple[Callable[[Config], None], str]] = {
    "limited attention context": (_encoder_option("att_context_size", [70, 13]), "att_context"),
    "multi-lookahead, limited first": (
        _encoder_option("att_context_size", [[70, 1], [-1, -1]]),
        "att_context",
    ),
    "causal conv context": (_encoder_option("conv_context_size", "causal"), "conv_context"),
    "asymmetric conv context": (_encoder_option("conv_context_size", [20, 10]), "conv_context"),
    "stacking subsampling": (_encoder_option("subsampling", "stacking"), "subsampling"),
    "vggnet subsampling": (_encoder_option("subsampling", "vggnet"), "subsampling"),
    "causal downsampling": (_encoder_option("causal_downsampling", True), "causal"),
    "local attention": (
        _encoder_option("self_attention_model", "rel_pos_local_attn"),
        "self_attention_model",
    ),
    "absolute positions": (_encoder_option("self_attention_model", "abs_pos"), "rel_pos"),
    "time reduction": (
        lambda c: c["encoder"].update(reduction="pooling", reduction_factor=2),
        "reduction",
    ),
    "output projection": (_encoder_option("feat_out", 64), "feat_out"),
    "no biases": (_encoder_option("use_bias", False), "use_bias"),
    "group norm": (_encoder_option("conv_norm_type", "group_norm4"), "conv_norm_type"),
    "squeezeformer": (
        _encoder_option("_target_", "nemo.collections.asr.modules.SqueezeformerEncoder"),
        "ConformerEncoder only",
    ),
    "wordpiece tokenizer": (lambda c: c["tokenizer"].update(type="wpe"), "wpe"),
    "rnnt-only model": (
        lambda c: c.update(target="nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel"),
        "not a NeMo CTC",
    ),
    "no blank": (lambda c: c["decoder"].update(add_blank=False), "add_blank"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_refuses_options_it_does_not_reproduce(
    tmp_path: Path, tokenizer: Tokenizer, case: str
) -> None:
    edit, message = UNSUPPORTED[case]
    config = conformer_ctc_bpe_config(tokenizer.pieces, n_layers=1, kernel=31)
    checkpoint = write(tmp_path / "base.nemo", config, tokenizer)
    changed = copy.deepcopy(config)
    edit(changed)
    checkpoint.config = changed
    with pytest.raises(CheckpointError, match=message):
        load_nemo_conformer(checkpoint)


def test_ignores_training_only_options(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = conformer_ctc_bpe_config(tokenizer.pieces, n_layers=1)
    config["encoder"].update(
        stochastic_depth_drop_prob=0.3,
        dropout=0.5,
        att_context_size=[[-1, -1], [70, 1]],  # inference uses the first
        att_context_style="chunked_limited",
        conv_context_size=[15, 15],
        subsampling_conv_chunking_factor=4,
    )
    load_nemo_conformer(write(tmp_path / "train.nemo", config, tokenizer))


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = conformer_ctc_bpe_config(tokenizer.pieces, n_layers=1)

    def drop(state: dict[str, Tensor]) -> None:
        del state["encoder.layers.0.self_attn.linear_pos.weight"]

    with pytest.raises(CheckpointError, match=r"1 missing .*linear_pos"):
        load_nemo_conformer(write(tmp_path / "missing.nemo", config, tokenizer, edit=drop))

    def extra(state: dict[str, Tensor]) -> None:
        state["encoder.layers.0.adapter.weight"] = torch.zeros(3)

    with pytest.raises(CheckpointError, match=r"1 unexpected .*adapter"):
        load_nemo_conformer(write(tmp_path / "extra.nemo", config, tokenizer, edit=extra))


def test_hybrid_without_a_ctc_head_is_refused(tmp_path: Path, tokenizer: Tokenizer) -> None:
    def drop(state: dict[str, Tensor]) -> None:
        for key in [k for k in state if k.startswith("ctc_decoder.")]:
            del state[key]

    config = fastconformer_hybrid_config(tokenizer.pieces, n_layers=1)
    with pytest.raises(CheckpointError, match="ctc_decoder"):
        load_nemo_conformer(write(tmp_path / "rnnt.nemo", config, tokenizer, edit=drop), head="ctc")


def test_vocabulary_size_mismatch_is_refused(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = conformer_ctc_bpe_config(tokenizer.pieces, n_layers=1)
    checkpoint = write(tmp_path / "vocab.nemo", config, None)  # no tokenizer to cross-check
    checkpoint.config = copy.deepcopy(config)
    checkpoint.config["decoder"]["vocabulary"] = list(tokenizer.pieces[:-1])
    with pytest.raises(CheckpointError, match="CTC head has .* outputs"):
        load_nemo_conformer(checkpoint)


def test_config_vocabulary_must_match_the_archived_tokenizer(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    pieces = list(tokenizer.pieces)
    pieces[5], pieces[6] = pieces[6], pieces[5]
    config = conformer_ctc_bpe_config(pieces, n_layers=1)
    with pytest.raises(CheckpointError, match="differs from the archive's SentencePiece model"):
        load_nemo_conformer(write(tmp_path / "swapped.nemo", config, tokenizer))


def test_mismatched_preprocessor_buffers_are_refused(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = conformer_ctc_bpe_config(tokenizer.pieces, n_layers=1)

    def periodic(state: dict[str, Tensor]) -> None:
        state["preprocessor.featurizer.window"] = torch.hann_window(400, periodic=True)

    with pytest.raises(CheckpointError, match="window differs"):
        load_nemo_conformer(write(tmp_path / "window.nemo", config, tokenizer, edit=periodic))


def test_gzipped_archive_tokenizer_is_read_too(tmp_path: Path, tokenizer: Tokenizer) -> None:
    pieces = list(tokenizer.pieces)
    pieces[5], pieces[6] = pieces[6], pieces[5]
    config = conformer_ctc_bpe_config(pieces, n_layers=1)
    plain = write(tmp_path / "swapped.nemo", config, tokenizer).path
    packed = tmp_path / "swapped_gz.nemo"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(CheckpointError, match="differs from the archive's SentencePiece model"):
        load_nemo_conformer(load_checkpoint(packed))
