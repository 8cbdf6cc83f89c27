"""GigaAM checkpoints → this project's Conformer: layouts, refusals, downloads, and the
upstream equations re-computed independently of export/conformer.py."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as nnf
from asr.config import GigaamMelConfig
from asr.tokens import BLANK_TOKEN, Vocabulary
from torch import Tensor

from export.conformer import ConformerCTC
from export.download import DownloadError
from export.gigaam import load_gigaam
from export.gigaam_releases import (
    GIGAAM_CDN,
    GIGAAM_RELEASES,
    GigaamRelease,
    download_gigaam,
    resolve_release_name,
)
from export.quartznet import CheckpointError
from export.source_model import CONFORMER_MAX_WINDOW_SECONDS
from tests.gigaam_checkpoints import (
    CHAR_VOCABULARY,
    mel_buffers,
    save_fine_tuned,
    save_gigaam,
    upstream_state_dict,
    v2_cfg,
    v3_cfg,
)

WINDOW = "preprocessor.featurizer.0.spectrogram.window"
FB = "preprocessor.featurizer.0.mel_scale.fb"


# --- GigaAM's inference maths, written from gigaam/encoder.py and decoder.py -------------


class GigaamReference:
    """Upstream GigaAMASR encoder + CTC head for one unpadded clip, on a raw state_dict.

    Follows upstream's batch-of-one path (no attention mask) in upstream's own tensor
    layouts: time-major rotary on the layer input before the q/k projections (base
    pos_emb_max_len), the Transformer-XL shift for rel_pos, BatchNorm with running
    statistics, macaron FF/2 → attention → conv → FF/2 → LayerNorm.
    """

    def __init__(self, sd: Mapping[str, Tensor], cfg: Mapping[str, Any]) -> None:
        self.sd = sd
        enc = cfg["encoder"]
        self.enc = enc
        self.d, self.h = int(enc["d_model"]), int(enc["n_heads"])
        self.dk = self.d // self.h
        self.rotary = enc.get("self_attention_model", "rotary") == "rotary"
        self.max_len = int(enc.get("pos_emb_max_len", 5000))

    def __call__(self, feats: Tensor) -> Tensor:
        """feats [F, T] → log-probs [T', C]."""
        x = self.encode(feats)
        head = "head.decoder_layers.0."
        logits = nnf.conv1d(x.transpose(1, 2), self.sd[head + "weight"], self.sd[head + "bias"])
        return nnf.log_softmax(logits.transpose(1, 2), dim=-1)[0]

    def encode(self, feats: Tensor) -> Tensor:
        """feats [F, T] → encoded [1, T', d_model]."""
        x = self.subsample(feats)
        positions = self.positions(x.shape[1])
        for layer in range(int(self.enc["n_layers"])):
            p = f"encoder.layers.{layer}."
            residual = x + 0.5 * self.feed_forward(
                self.norm(x, p + "norm_feed_forward1"), p + "feed_forward1"
            )
            residual = residual + self.attention(
                self.norm(residual, p + "norm_self_att"), positions, p + "self_attn."
            )
            residual = residual + self.convolution(
                self.norm(residual, p + "norm_conv"), p + "conv."
            )
            residual = residual + 0.5 * self.feed_forward(
                self.norm(residual, p + "norm_feed_forward2"), p + "feed_forward2"
            )
            x = self.norm(residual, p + "norm_out")
        return x

    def subsample(self, feats: Tensor) -> Tensor:
        kernel = int(self.enc.get("subs_kernel_size", 3))
        stages = int(math.log(int(self.enc.get("subsampling_factor", 4)), 2))
        conv2d = self.enc.get("subsampling", "conv2d") == "conv2d"
        x = feats.T[None, None] if conv2d else feats[None]  # [1, 1, T, F] or [1, F, T]
        for i in range(stages):
            w, b = (
                self.sd[f"encoder.pre_encode.conv.{2 * i}.weight"],
                self.sd[f"encoder.pre_encode.conv.{2 * i}.bias"],
            )
            conv = nnf.conv2d if conv2d else nnf.conv1d
            x = nnf.relu(conv(x, w, b, stride=2, padding=(kernel - 1) // 2))
        if not conv2d:
            return x.transpose(1, 2)
        _, channels, frames, freq = x.shape
        x = x.transpose(1, 2).reshape(1, frames, channels * freq)
        return self.linear(x, "encoder.pre_encode.out")

    def positions(self, t: int) -> tuple[Tensor, Tensor]:
        """Rotary (cos, sin) [t, 1, 1, dk], or the relative table [1, 2t-1, d] twice."""
        length, dk, d = self.max_len, self.dk, self.d
        if self.rotary:
            inv_freq = 1.0 / (length ** (torch.arange(0, dk, 2).float() / dk))
            freqs = torch.einsum("i,j->ij", torch.arange(length).float(), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            pe = torch.cat([emb.cos()[:, None, None, :], emb.sin()[:, None, None, :]])
            return pe[:t], pe[length : length + t]
        steps = torch.arange(length - 1, -length, -1).unsqueeze(1)
        pe = torch.zeros(steps.size(0), d)
        div = torch.exp(torch.arange(0, d, 2) * -(math.log(10000.0) / d))
        pe[:, 0::2] = torch.sin(steps * div)
        pe[:, 1::2] = torch.cos(steps * div)
        centre = pe.size(0) // 2 + 1
        rel = pe[None, centre - t : centre + t - 1]
        return rel, rel

    def attention(self, y: Tensor, positions: tuple[Tensor, Tensor], a: str) -> Tensor:
        t, h, dk, d = y.shape[1], self.h, self.dk, self.d
        if self.rotary:
            cos, sin = positions
            tm = y.transpose(0, 1).reshape(t, 1, h, dk)
            turned_half = torch.cat([-tm[..., dk // 2 :], tm[..., : dk // 2]], dim=-1)
            turned = (tm * cos + turned_half * sin).reshape(t, 1, d).transpose(0, 1)
            q = self.linear(turned, a + "linear_q").reshape(1, t, h, dk).transpose(1, 2)
            k = self.linear(turned, a + "linear_k").reshape(1, t, h, dk).transpose(1, 2)
            v = self.linear(y, a + "linear_v").reshape(1, t, h, dk).transpose(1, 2)
            scores = torch.matmul(q, k.transpose(-2, -1) / math.sqrt(dk))
        else:
            rel = positions[0]
            q = self.linear(y, a + "linear_q").reshape(1, t, h, dk)
            k = self.linear(y, a + "linear_k").reshape(1, t, h, dk).transpose(1, 2)
            v = self.linear(y, a + "linear_v").reshape(1, t, h, dk).transpose(1, 2)
            pos = (
                nnf.linear(rel, self.sd[a + "linear_pos.weight"])
                .reshape(1, -1, h, dk)
                .transpose(1, 2)
            )
            ac = torch.matmul((q + self.sd[a + "pos_bias_u"]).transpose(1, 2), k.transpose(-2, -1))
            bd = torch.matmul(
                (q + self.sd[a + "pos_bias_v"]).transpose(1, 2), pos.transpose(-2, -1)
            )
            batch, heads, qlen, plen = bd.shape
            bd = (
                nnf.pad(bd, (1, 0))
                .view(batch, heads, -1, qlen)[:, :, 1:]
                .reshape(batch, heads, qlen, plen)
            )
            scores = (ac + bd[..., :t]) / math.sqrt(dk)
        att = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(1, t, d)
        return self.linear(att, a + "linear_out")

    def convolution(self, y: Tensor, c: str) -> Tensor:
        sd = self.sd
        y = y.transpose(1, 2)
        y = nnf.glu(
            nnf.conv1d(y, sd[c + "pointwise_conv1.weight"], sd[c + "pointwise_conv1.bias"]), dim=1
        )
        kernel = sd[c + "depthwise_conv.weight"].shape[-1]
        y = nnf.conv1d(
            y,
            sd[c + "depthwise_conv.weight"],
            sd[c + "depthwise_conv.bias"],
            padding=(kernel - 1) // 2,
            groups=self.d,
        )
        weight, bias = sd[c + "batch_norm.weight"], sd[c + "batch_norm.bias"]
        if c + "batch_norm.running_mean" in sd:
            mean, var = sd[c + "batch_norm.running_mean"], sd[c + "batch_norm.running_var"]
            y = nnf.batch_norm(y, mean, var, weight, bias, training=False)
        else:
            y = nnf.layer_norm(y.transpose(1, 2), (self.d,), weight, bias).transpose(1, 2)
        y = nnf.conv1d(
            nnf.silu(y), sd[c + "pointwise_conv2.weight"], sd[c + "pointwise_conv2.bias"]
        )
        return y.transpose(1, 2)

    def feed_forward(self, y: Tensor, f: str) -> Tensor:
        return self.linear(nnf.silu(self.linear(y, f + ".linear1")), f + ".linear2")

    def linear(self, y: Tensor, name: str) -> Tensor:
        return nnf.linear(y, self.sd[name + ".weight"], self.sd.get(name + ".bias"))

    def norm(self, y: Tensor, name: str) -> Tensor:
        return nnf.layer_norm(y, (self.d,), self.sd[name + ".weight"], self.sd[name + ".bias"])


def reference_log_probs(sd: Mapping[str, Tensor], cfg: Mapping[str, Any], feats: Tensor) -> Tensor:
    return GigaamReference(sd, cfg)(feats)


def rel_pos_cfg() -> dict[str, Any]:
    """A v1-style cfg: conv2d subsampling, relative-position attention, batch norm."""
    cfg = v2_cfg(self_attention_model="rel_pos", conv_kernel_size=7)
    cfg["encoder"]["pos_emb_max_len"] = 600
    return cfg


# --- fixtures --------------------------------------------------------------------------


def e2e_cfg(tokenizer: Path) -> dict[str, Any]:
    import sentencepiece as spm  # type: ignore[import-untyped]

    pieces = spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size()
    return v3_cfg("e2e_ctc", num_classes=pieces + 1)


def write(tmp_path: Path, cfg: dict[str, Any], name: str = "model.ckpt", seed: int = 0) -> Path:
    return save_gigaam(tmp_path / name, cfg, upstream_state_dict(cfg, seed))


def features(frames: int, seed: int = 1) -> Tensor:
    return torch.randn(64, frames, generator=torch.Generator().manual_seed(seed))


# --- loading each layout ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, make_cfg",
    [
        ("v2_ctc", v2_cfg),
        ("v3_ctc", v3_cfg),
        ("v1_like_rel_pos", rel_pos_cfg),
    ],
)
def test_matches_upstream_maths(tmp_path: Path, name: str, make_cfg: Any) -> None:
    cfg = make_cfg()
    sd = upstream_state_dict(cfg, seed=3)
    source = load_gigaam(save_gigaam(tmp_path / f"{name}.ckpt", cfg, sd))
    feats = features(203)
    with torch.no_grad():
        ours, lengths = source.model(feats[None], torch.tensor([203]))
        reference = reference_log_probs(sd, cfg, feats)
    assert ours.shape[1:] == reference.shape
    assert int(lengths[0]) == reference.shape[0] == 51
    torch.testing.assert_close(ours[0], reference, atol=2e-4, rtol=1e-4)


def test_padded_batch_gives_each_clip_its_upstream_result(tmp_path: Path) -> None:
    cfg = v3_cfg()
    sd = upstream_state_dict(cfg, seed=4)
    source = load_gigaam(save_gigaam(tmp_path / "v3.ckpt", cfg, sd))
    short, long = features(97, seed=5), features(240, seed=6)
    batch = torch.zeros(2, 64, 240)
    batch[0, :, :97], batch[1] = short, long
    with torch.no_grad():
        ours, lengths = source.model(batch, torch.tensor([97, 240]))
        for row, clip in enumerate((short, long)):
            reference = reference_log_probs(sd, cfg, clip)
            assert int(lengths[row]) == reference.shape[0]
            torch.testing.assert_close(
                ours[row, : reference.shape[0]], reference, atol=2e-4, rtol=1e-4
            )


def test_v3_ctc_source_model(tmp_path: Path) -> None:
    source = load_gigaam(write(tmp_path, v3_cfg(), "v3_ctc.ckpt"))
    assert source.family == "conformer"
    assert source.token_kind == "char"
    assert source.subsampling == 4
    assert source.max_window_seconds == CONFORMER_MAX_WINDOW_SECONDS
    assert source.frontend == GigaamMelConfig(
        n_fft=320, win_length=320, hop_length=160, n_mels=64, center=False, bf16_buffers=True
    )
    vocab = source.vocabulary
    assert len(vocab) == 34 and vocab.blank_id == 33 and vocab.tokens[33] == BLANK_TOKEN
    assert vocab.tokens[0] == "▁" and vocab.tokens[1] == "а" and vocab.tokens[32] == "я"
    assert not source.model.training
    assert source.source["upstream_model"] == "v3_ctc"
    assert source.source["checkpoint"] == "v3_ctc.ckpt"
    digest = hashlib.sha256((tmp_path / "v3_ctc.ckpt").read_bytes()).hexdigest()
    assert source.source["checkpoint_sha256"] == digest
    assert source.source["published_release"] is None  # random weights: no upstream MD5
    assert source.source["parameters"] == source.parameters
    assert "rotary" in source.source["architecture"] and "conv1d" in source.source["architecture"]


def test_v2_ctc_takes_upstream_defaults(tmp_path: Path) -> None:
    source = load_gigaam(write(tmp_path, v2_cfg()))
    assert source.frontend == GigaamMelConfig(
        n_fft=400, win_length=400, hop_length=160, n_mels=64, center=True, bf16_buffers=False
    )
    assert isinstance(source.model, ConformerCTC)
    spec = source.model.spec
    assert (spec.subsampling, spec.subsampling_kernel, spec.conv_norm) == (
        "conv2d",
        3,
        "batch_norm",
    )
    assert spec.conv_kernel_size == 31 and spec.attention == "rotary"
    assert source.source["upstream_model"] is None
    assert source.vocabulary.tokens[:-1] == tuple(c.replace(" ", "▁") for c in CHAR_VOCABULARY)


def test_plain_dict_cfg_is_accepted(tmp_path: Path) -> None:
    cfg = v3_cfg()
    torch.save({"state_dict": upstream_state_dict(cfg), "cfg": cfg}, tmp_path / "plain.ckpt")
    assert load_gigaam(tmp_path / "plain.ckpt").vocabulary.blank_id == 33


def test_e2e_ctc_uses_the_sentencepiece_pieces(tmp_path: Path, tokenizer: Path) -> None:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer))
    source = load_gigaam(write(tmp_path, e2e_cfg(tokenizer)), tokenizer=tokenizer)
    assert source.token_kind == "sentencepiece"
    size = processor.get_piece_size()
    vocab = source.vocabulary
    assert vocab.blank_id == size and len(vocab) == size + 1
    assert list(vocab.tokens[:size]) == [processor.id_to_piece(i) for i in range(size)]
    assert source.source["tokenizer"] == tokenizer.name
    assert source.source["tokenizer_sha256"] == hashlib.sha256(tokenizer.read_bytes()).hexdigest()

    texts = ["Мороз и солнце; день чудесный!", "У лукоморья дуб зелёный.", "В 1833 году было 25"]
    sequences = [processor.encode(text) for text in texts]
    sequences.append([5, 17, 3, 40, 41, 3, 60, 61, 62])  # arbitrary ordinary pieces
    for ids in sequences:
        assert vocab.decode(ids) == " ".join(processor.decode(ids).split())
    with_blanks = [vocab.blank_id, *sequences[0], vocab.blank_id]
    assert vocab.decode(with_blanks) == " ".join(processor.decode(sequences[0]).split())

    # the tokens.txt round trip keeps every piece
    vocab.write(tmp_path / "tokens.txt")
    assert Vocabulary.read(tmp_path / "tokens.txt", vocab.blank_id) == vocab


def test_fine_tuned_checkpoint_takes_cfg_from_its_base(tmp_path: Path) -> None:
    cfg = v3_cfg()
    base = write(tmp_path, cfg, "v3_ctc.ckpt", seed=1)
    tuned_sd = upstream_state_dict(cfg, seed=2)
    tuned = save_fine_tuned(tmp_path / "gigaam-v3_ctc-epoch=02.ckpt", tuned_sd, "v3_ctc")

    source = load_gigaam(tuned, base=base)
    state = source.model.state_dict()
    torch.testing.assert_close(
        state["decoder.decoder_layers.0.weight"], tuned_sd["head.decoder_layers.0.weight"]
    )
    key = "encoder.layers.1.self_attn.linear_q.weight"
    torch.testing.assert_close(state[key], tuned_sd[key])
    assert source.source["fine_tuned_from"] == "v3_ctc"
    assert source.source["base_checkpoint"] == "v3_ctc.ckpt"
    assert source.source["checkpoint"] == tuned.name

    # upstream's short name ("ctc" = v3_ctc) is resolved as load_model does
    short = save_fine_tuned(tmp_path / "short.ckpt", tuned_sd, "ctc")
    assert load_gigaam(short, base=base).source["upstream_model"] == "v3_ctc"


def test_fine_tuned_checkpoint_needs_the_right_base(tmp_path: Path) -> None:
    cfg = v3_cfg()
    tuned = save_fine_tuned(tmp_path / "tuned.ckpt", upstream_state_dict(cfg), "v3_ctc")
    with pytest.raises(CheckpointError, match="fine-tuned from 'v3_ctc'.*pass that"):
        load_gigaam(tuned)
    wrong = write(tmp_path, v3_cfg("e2e_ctc"), "v3_e2e_ctc.ckpt")
    with pytest.raises(CheckpointError, match="the base is 'v3_e2e_ctc'"):
        load_gigaam(tuned, base=wrong)
    with pytest.raises(CheckpointError, match="holds no cfg"):
        load_gigaam(tuned, base=tuned)
    # a base without model_name in its cfg, of other dimensions: the weights do not fit
    other_cfg = v3_cfg(d_model=64)
    del other_cfg["model_name"]
    other = write(tmp_path, other_cfg, "other.ckpt")
    with pytest.raises(CheckpointError, match="does not match the ConformerCTC"):
        load_gigaam(tuned, base=other)


def test_fine_tuned_e2e_needs_its_tokenizer(tmp_path: Path, tokenizer: Path) -> None:
    cfg = e2e_cfg(tokenizer)
    base = write(tmp_path, cfg, "v3_e2e_ctc.ckpt")
    blank = cfg["head"]["num_classes"] - 1
    tuned = save_fine_tuned(
        tmp_path / "t.ckpt", upstream_state_dict(cfg, 7), "v3_e2e_ctc", blank_id=blank
    )
    with pytest.raises(CheckpointError, match="SentencePiece"):
        load_gigaam(tuned, base=base)
    assert load_gigaam(tuned, base=base, tokenizer=tokenizer).token_kind == "sentencepiece"


# --- refusals --------------------------------------------------------------------------


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    cfg = v3_cfg()
    sd = upstream_state_dict(cfg)
    del sd["encoder.layers.1.conv.depthwise_conv.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing.*depthwise_conv"):
        load_gigaam(save_gigaam(tmp_path / "a.ckpt", cfg, sd))
    sd = upstream_state_dict(cfg)
    sd["encoder.layers.0.self_attn.linear_pos.weight"] = torch.zeros(96, 96)
    with pytest.raises(CheckpointError, match=r"1 unexpected.*linear_pos"):
        load_gigaam(save_gigaam(tmp_path / "b.ckpt", cfg, sd))
    sd = upstream_state_dict(cfg)
    sd["preprocessor.featurizer.1.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected preprocessor"):
        load_gigaam(save_gigaam(tmp_path / "c.ckpt", cfg, sd))
    sd = upstream_state_dict(cfg)
    del sd[FB]
    with pytest.raises(CheckpointError, match="no preprocessor.featurizer.0.mel_scale.fb"):
        load_gigaam(save_gigaam(tmp_path / "d.ckpt", cfg, sd))
    # shapes the cfg does not describe (kernel 5 in the cfg, 7 in the weights)
    sd = upstream_state_dict(v3_cfg(conv_kernel_size=7))
    with pytest.raises(CheckpointError, match="of another shape"):
        load_gigaam(save_gigaam(tmp_path / "e.ckpt", cfg, sd))


def test_not_a_gigaam_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "junk.ckpt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_gigaam(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="neither a GigaAM checkpoint"):
        load_gigaam(tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gigaam(tmp_path / "absent.ckpt")


def test_wrong_vocabulary_size(tmp_path: Path, tokenizer: Path) -> None:
    cfg = v3_cfg(num_classes=35)
    with pytest.raises(CheckpointError, match="num_classes is 35.*33 tokens"):
        load_gigaam(write(tmp_path, cfg))
    cfg = v3_cfg("e2e_ctc", num_classes=1025)  # a real v3_e2e_ctc head, a tiny tokenizer
    with pytest.raises(CheckpointError, match="num_classes is 1025"):
        load_gigaam(write(tmp_path, cfg), tokenizer=tokenizer)


def test_tokenizer_rules(tmp_path: Path, tokenizer: Path) -> None:
    with pytest.raises(CheckpointError, match="pass its tokenizer"):
        load_gigaam(write(tmp_path, e2e_cfg(tokenizer), "e2e.ckpt"))
    with pytest.raises(CheckpointError, match="takes no tokenizer"):
        load_gigaam(write(tmp_path, v3_cfg(), "char.ckpt"), tokenizer=tokenizer)
    (tmp_path / "bad.model").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        load_gigaam(tmp_path / "e2e.ckpt", tokenizer=tmp_path / "bad.model")


@pytest.mark.parametrize(
    "bf16, stored",
    [
        (True, "fp32"),  # v3 front end with unrounded buffers still loads, as fp32
        (False, "bf16"),
    ],
)
def test_buffer_rounding_is_read_from_the_checkpoint(
    tmp_path: Path, bf16: bool, stored: str
) -> None:
    cfg = v3_cfg() if bf16 else v2_cfg()
    sd = upstream_state_dict(cfg)
    pre = cfg["preprocessor"]
    buffers = mel_buffers(
        sample_rate=16000,
        n_fft=pre.get("n_fft", 400),
        win_length=pre.get("win_length", 400),
        n_mels=64,
        bf16=stored == "bf16",
    )
    sd[WINDOW], sd[FB] = buffers["window"], buffers["fb"]
    source = load_gigaam(save_gigaam(tmp_path / "m.ckpt", cfg, sd))
    assert isinstance(source.frontend, GigaamMelConfig)
    assert source.frontend.bf16_buffers is (stored == "bf16")


def test_mismatched_preprocessor_buffers(tmp_path: Path) -> None:
    cfg = v3_cfg()
    sd = upstream_state_dict(cfg)
    # a Slaney-normalised filterbank, as a NeMo-style front end would have
    sd[FB] = (sd[FB] * 0.01).bfloat16().float()
    with pytest.raises(CheckpointError, match="mel_scale.fb differs"):
        load_gigaam(save_gigaam(tmp_path / "a.ckpt", cfg, sd))
    sd = upstream_state_dict(cfg)
    sd[WINDOW] = torch.hann_window(320, periodic=False).bfloat16().float()  # symmetric Hann
    with pytest.raises(CheckpointError, match="window differs"):
        load_gigaam(save_gigaam(tmp_path / "b.ckpt", cfg, sd))
    # the v2 buffers (400) under a v3 cfg (320)
    sd = upstream_state_dict(cfg)
    sd.update({k: v for k, v in upstream_state_dict(v2_cfg()).items() if k.startswith("pre")})
    with pytest.raises(CheckpointError, match=r"shape \(400,\).*\(320,\)"):
        load_gigaam(save_gigaam(tmp_path / "c.ckpt", cfg, sd))
    # rounded window, unrounded filterbank
    sd = upstream_state_dict(cfg)
    sd[FB] = mel_buffers(sample_rate=16000, n_fft=320, win_length=320, n_mels=64, bf16=False)["fb"]
    with pytest.raises(CheckpointError, match="disagree on bfloat16"):
        load_gigaam(save_gigaam(tmp_path / "d.ckpt", cfg, sd))


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("encoder", "subsampling", "dw_striding", "subsampling 'dw_striding'"),
        ("encoder", "self_attention_model", "abs_pos", "self_attention_model 'abs_pos'"),
        ("encoder", "conv_norm_type", "group_norm", "conv_norm_type 'group_norm'"),
        ("encoder", "causal_downsampling", True, r"encoder options \['causal_downsampling'\]"),
        ("encoder", "_target_", "nemo.ConformerEncoder", "only gigaam.encoder.ConformerEncoder"),
        ("encoder", "subsampling_factor", 3, "subsampling factor 3"),
        ("encoder", "n_heads", 5, "not divisible"),
        ("encoder", "feat_in", 80, "64 mel bins, encoder.feat_in is 80"),
        ("preprocessor", "mel_scale", "slaney", "mel_scale='slaney'"),
        ("preprocessor", "mel_norm", "slaney", "mel_norm='slaney'"),
        ("preprocessor", "dither", 1e-5, r"preprocessor options \['dither'\]"),
        ("preprocessor", "features", 80, r"fb has shape \(161, 64\).*\(161, 80\)"),
        ("preprocessor", "center", "yes", "not a boolean"),
        ("preprocessor", "n_fft", 256, "win_length <= n_fft"),
        ("head", "_target_", "gigaam.decoder.RNNTHead", "but model_class is 'ctc'"),
        ("head", "_target_", "gigaam.decoder.SomeHead", "only gigaam.decoder.CTCHead or"),
        ("head", "feat_in", 64, "head.feat_in 64 != encoder.d_model 96"),
        ("decoding", "_target_", "gigaam.decoding.RNNTGreedyDecoding", "CTCGreedyDecoding"),
        (None, "model_class", "ssl", "only ASR models"),
        (None, "model_class", "rnnt", "CTCHead' but model_class is 'rnnt'"),
        (None, "sample_rate", 8000, "cfg.sample_rate 8000"),
    ],
)
def test_unsupported_options_are_refused(
    tmp_path: Path, section: str | None, key: str, value: Any, message: str
) -> None:
    cfg = v3_cfg()
    sd = upstream_state_dict(cfg)
    (cfg[section] if section else cfg)[key] = value
    with pytest.raises(CheckpointError, match=message):
        load_gigaam(save_gigaam(tmp_path / "m.ckpt", cfg, sd))


def test_flash_attn_and_activation_checkpointing_are_ignored(tmp_path: Path) -> None:
    cfg = v3_cfg(flash_attn=True, activation_checkpointing=True)
    assert load_gigaam(write(tmp_path, cfg)).family == "conformer"


# --- downloads -------------------------------------------------------------------------


def cdn(tmp_path: Path, tokenizer: Path) -> tuple[str, GigaamRelease]:
    root = tmp_path / "cdn"
    root.mkdir()
    checkpoint = write(root, e2e_cfg(tokenizer), "v3_e2e_ctc.ckpt")
    (root / "v3_e2e_ctc_tokenizer.model").write_bytes(tokenizer.read_bytes())
    md5 = hashlib.md5(checkpoint.read_bytes()).hexdigest()
    return root.as_uri(), GigaamRelease("v3_e2e_ctc", md5, "test", sentencepiece=True)


def test_download_verifies_md5_and_fetches_the_tokenizer(tmp_path: Path, tokenizer: Path) -> None:
    url, release = cdn(tmp_path, tokenizer)
    checkpoint, fetched = download_gigaam(release, tmp_path / "dl", base_url=url)
    assert checkpoint.name == "v3_e2e_ctc.ckpt"
    assert fetched is not None and fetched.read_bytes() == tokenizer.read_bytes()
    assert not list((tmp_path / "dl").glob("*.part"))
    assert load_gigaam(checkpoint, tokenizer=fetched).token_kind == "sentencepiece"

    # a verified copy is reused: the CDN copy is gone, the cached one still serves
    (tmp_path / "cdn" / "v3_e2e_ctc.ckpt").unlink()
    assert download_gigaam(release, tmp_path / "dl", base_url=url)[0] == checkpoint


def test_download_md5_mismatch_leaves_nothing(tmp_path: Path, tokenizer: Path) -> None:
    url, release = cdn(tmp_path, tokenizer)
    wrong = GigaamRelease(release.name, "0" * 32, "test", sentencepiece=True)
    with pytest.raises(DownloadError, match="md5 .* does not match the published"):
        download_gigaam(wrong, tmp_path / "dl", base_url=url)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_tokenizer_sha256_is_checked_when_given(tmp_path: Path, tokenizer: Path) -> None:
    url, release = cdn(tmp_path, tokenizer)
    with pytest.raises(DownloadError, match="sha256"):
        download_gigaam(release, tmp_path / "dl", base_url=url, tokenizer_sha256="0" * 64)
    digest = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    assert download_gigaam(release, tmp_path / "ok", base_url=url, tokenizer_sha256=digest)[1]


def test_download_by_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="unknown GigaAM model 'v3_ssl'"):
        download_gigaam("v3_ssl", tmp_path)


def test_registry_has_upstream_names_and_md5s() -> None:
    assert {"v2_ctc", "v3_ctc", "v3_e2e_ctc"} <= GIGAAM_RELEASES.keys()
    assert GIGAAM_RELEASES["v3_ctc"].md5 == "73413e7be9c6a5935827bfab5c0dd678"
    for name, release in GIGAAM_RELEASES.items():
        assert release.name == name
        assert len(release.md5) == 32 and int(release.md5, 16) >= 0
        assert release.sentencepiece == ("e2e" in name or name == "v1_rnnt")
        entry = release.checkpoint()
        assert entry.url == f"{GIGAAM_CDN}/{name}.ckpt" and entry.md5 == release.md5
        assert entry.family == "conformer"
    tokenizer_url = GIGAAM_RELEASES["v3_e2e_ctc"].tokenizer().url
    assert tokenizer_url == f"{GIGAAM_CDN}/v3_e2e_ctc_tokenizer.model"
    assert resolve_release_name("e2e_ctc") == "v3_e2e_ctc"
    assert resolve_release_name("v2_ctc") == "v2_ctc"
