"""Random-weight GigaAM checkpoints in upstream's exact layouts, for tests.

Key names and shapes are written out here from upstream's module structure
(gigaam/encoder.py, decoder.py, torchaudio's MelSpectrogram buffers), not taken from
export/conformer.py, so a loader that only agrees with itself would fail against them.
Layer counts and widths are small; front-end buffers and vocabularies are real.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

CHAR_VOCABULARY = [" "] + [chr(c) for c in range(ord("а"), ord("я") + 1) if chr(c) != "ё"]
SMALL = {"n_layers": 2, "d_model": 96, "n_heads": 4}

RUSSIAN_TEXT = """Ничьих не требуя похвал, счастлив уж я надеждой сладкой,
что дева с трепетом любви посмотрит, может быть, украдкой
на песни грешные мои. У лукоморья дуб зелёный; златая цепь на дубе том:
и днём и ночью кот учёный всё ходит по цепи кругом.
Идёт направо — песнь заводит, налево — сказку говорит.
Там чудеса: там леший бродит, русалка на ветвях сидит.
Мороз и солнце; день чудесный! Ещё ты дремлешь, друг прелестный?
Пора, красавица, проснись: открой сомкнуты негой взоры.
В 1833 году, 19 октября, было 25 человек."""


def v3_cfg(kind: str = "ctc", *, num_classes: int | None = None, **encoder: Any) -> dict[str, Any]:
    """A v3 cfg as published (model_class, conv1d subsampling, layer-norm conv, 320/160)."""
    e2e = kind == "e2e_ctc"
    classes = num_classes if num_classes is not None else (1025 if e2e else 34)
    d_model = int(encoder.get("d_model", SMALL["d_model"]))
    return {
        "model_class": "ctc",
        "sample_rate": 16000,
        "preprocessor": {
            "_target_": "gigaam.preprocess.FeatureExtractor",
            "sample_rate": 16000,
            "features": 64,
            "win_length": 320,
            "hop_length": 160,
            "mel_scale": "htk",
            "n_fft": 320,
            "mel_norm": None,
            "center": False,
        },
        "encoder": {
            "_target_": "gigaam.encoder.ConformerEncoder",
            "feat_in": 64,
            **SMALL,
            "subsampling_factor": 4,
            "ff_expansion_factor": 4,
            "self_attention_model": "rotary",
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 5,
            "flash_attn": False,
            "subs_kernel_size": 5,
            "subsampling": "conv1d",
            "conv_norm_type": "layer_norm",
            **encoder,
        },
        "head": {"_target_": "gigaam.decoder.CTCHead", "feat_in": d_model, "num_classes": classes},
        "decoding": (
            {
                "_target_": "gigaam.decoding.CTCGreedyDecoding",
                "vocabulary": None,
                "model_path": "/home/jovyan/gigaam/v3_e2e_ctc_tokenizer.model",
            }
            if e2e
            else {"_target_": "gigaam.decoding.CTCGreedyDecoding", "vocabulary": CHAR_VOCABULARY}
        ),
        "model_name": f"v3_{kind}",
    }


def v2_cfg(**encoder: Any) -> dict[str, Any]:
    """A v2-era cfg: no subsampling/subs_kernel_size/conv_norm_type keys, two-key
    preprocessor (400/400/160 centred by FeatureExtractor's defaults), no model_name."""
    return {
        "sample_rate": 16000,
        "preprocessor": {
            "_target_": "gigaam.preprocess.FeatureExtractor",
            "sample_rate": 16000,
            "features": 64,
        },
        "encoder": {
            "_target_": "gigaam.encoder.ConformerEncoder",
            "feat_in": 64,
            **SMALL,
            "subsampling_factor": 4,
            "ff_expansion_factor": 4,
            "self_attention_model": "rotary",
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 31,
            "flash_attn": False,
            **encoder,
        },
        "head": {
            "_target_": "gigaam.decoder.CTCHead",
            "feat_in": int(encoder.get("d_model", SMALL["d_model"])),
            "num_classes": 34,
        },
        "decoding": {
            "_target_": "gigaam.decoding.CTCGreedyDecoding",
            "vocabulary": CHAR_VOCABULARY,
        },
    }


# GigaAM-Emo's classes (Dusha), in the order upstream's README prints its probabilities.
EMOTION_LABELS = ["angry", "sad", "neutral", "positive"]


def emo_cfg(*, labels: list[str] | None = None, **encoder: Any) -> dict[str, Any]:
    """GigaAM-Emo's cfg as ``GigaAMEmo`` reads it: a v1-era encoder (conv2d subsampling,
    relative-position attention, batch norm; two-key preprocessor, 400/400/160 centred),
    ``head`` a Linear from d_model to the classes, ``id2name``; no decoding section."""
    cfg = v2_cfg(**{"self_attention_model": "rel_pos", "conv_kernel_size": 7, **encoder})
    names = list(EMOTION_LABELS if labels is None else labels)
    del cfg["decoding"]
    cfg["head"] = {
        "_target_": "torch.nn.Linear",
        "in_features": int(cfg["encoder"]["d_model"]),
        "out_features": len(names),
    }
    cfg["id2name"] = names
    return cfg


def mel_buffers(
    *, sample_rate: int, n_fft: int, win_length: int, n_mels: int, bf16: bool
) -> dict[str, Tensor]:
    """torchaudio MelSpectrogram's window and fb (periodic Hann; HTK, no norm), in float64
    numpy, then float32 (and bfloat16-rounded when ``bf16``, as v3 stores them)."""
    n = np.arange(win_length, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    mel_top = 2595.0 * np.log10(1.0 + (sample_rate // 2) / 700.0)
    hz = 700.0 * (10.0 ** (np.linspace(0.0, mel_top, n_mels + 2) / 2595.0) - 1.0)
    fb = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        lower, centre, upper = hz[m], hz[m + 1], hz[m + 2]
        up = (freqs - lower) / (centre - lower)
        down = (upper - freqs) / (upper - centre)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    out = {"window": torch.from_numpy(window).float(), "fb": torch.from_numpy(fb).float()}
    if bf16:
        out = {k: v.to(torch.bfloat16).float() for k, v in out.items()}
    return out


class _Random:
    """Well-scaled random tensors from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def weight(self, *shape: int, fan_in: int) -> Tensor:
        return torch.randn(*shape, generator=self.generator) / math.sqrt(fan_in)

    def bias(self, *shape: int) -> Tensor:
        return 0.1 * torch.randn(*shape, generator=self.generator)

    def gain(self, size: int) -> Tensor:
        return 1.0 + 0.1 * torch.randn(size, generator=self.generator)

    def variance(self, size: int) -> Tensor:
        return 0.5 + torch.rand(size, generator=self.generator)


def upstream_state_dict(
    cfg: Mapping[str, Any], seed: int = 0, *, blank_bias: float = 2.0
) -> dict[str, Tensor]:
    """A GigaAMASR state_dict for ``cfg`` (plain dict), random but well-scaled weights.
    RNNT heads get ``blank_bias`` added to the blank's logit: a trained transducer says
    blank on most frames, random weights would emit at every step; tests pick the bias
    that gives their layout a mix of blank frames and frames with tokens."""
    rnd = _Random(seed)
    enc, pre = cfg["encoder"], cfg["preprocessor"]
    rate = int(pre["sample_rate"])
    buffers = mel_buffers(
        sample_rate=rate,
        n_fft=int(pre.get("n_fft", rate // 40)),
        win_length=int(pre.get("win_length", rate // 40)),
        n_mels=int(pre["features"]),
        bf16="n_fft" in pre,  # the v3 releases store them bfloat16-rounded; v2 does not
    )
    sd: dict[str, Tensor] = {
        "preprocessor.featurizer.0.spectrogram.window": buffers["window"],
        "preprocessor.featurizer.0.mel_scale.fb": buffers["fb"],
    }
    sd.update(_subsampling(enc, rnd))
    for layer in range(int(enc["n_layers"])):
        sd.update(_layer(enc, rnd, f"encoder.layers.{layer}."))
    head = cfg["head"]
    if head["_target_"] == "gigaam.decoder.RNNTHead":
        sd.update(_rnnt_head(head, rnd, blank_bias))
        return sd
    d = int(enc["d_model"])
    if head["_target_"] == "torch.nn.Linear":  # GigaAM-Emo: nn.Linear's weight [out, in]
        sd["head.weight"] = rnd.weight(int(head["out_features"]), d, fan_in=d)
        sd["head.bias"] = rnd.bias(int(head["out_features"]))
        return sd
    classes = int(head["num_classes"])
    sd["head.decoder_layers.0.weight"] = rnd.weight(classes, d, 1, fan_in=d)
    sd["head.decoder_layers.0.bias"] = rnd.bias(classes)
    return sd


def rnnt_cfg(
    cfg: Mapping[str, Any],
    *,
    pred_hidden: int = 48,
    layers: int = 1,
    joint_hidden: int = 56,
    **decoding: Any,
) -> dict[str, Any]:
    """The RNNT release of a CTC cfg: same preprocessor and encoder; upstream RNNTHead
    (RNNTDecoder + RNNTJoint) and RNNTGreedyDecoding with the same vocabulary."""
    classes = int(cfg["head"]["num_classes"])
    out = dict(cfg)
    out["head"] = {
        "_target_": "gigaam.decoder.RNNTHead",
        "decoder": {"pred_hidden": pred_hidden, "pred_rnn_layers": layers, "num_classes": classes},
        "joint": {
            "enc_hidden": int(cfg["encoder"]["d_model"]),
            "pred_hidden": pred_hidden,
            "joint_hidden": joint_hidden,
            "num_classes": classes,
        },
    }
    out["decoding"] = {
        **cfg["decoding"],
        "_target_": "gigaam.decoding.RNNTGreedyDecoding",
        **decoding,
    }
    if "model_class" in cfg:
        out["model_class"] = "rnnt"
    if "model_name" in cfg:
        out["model_name"] = str(cfg["model_name"]).replace("ctc", "rnnt")
    return out


def _rnnt_head(head: Mapping[str, Any], rnd: _Random, blank_bias: float) -> dict[str, Tensor]:
    """RNNTDecoder (Embedding with the blank as padding row, LSTM) and RNNTJoint (pred,
    enc, joint_net = [ReLU, Linear]) under upstream's attribute names."""
    decoder, joint = head["decoder"], head["joint"]
    classes, hidden = int(decoder["num_classes"]), int(decoder["pred_hidden"])
    joint_hidden, enc_hidden = int(joint["joint_hidden"]), int(joint["enc_hidden"])
    embed = rnd.weight(classes, hidden, fan_in=1)
    embed[classes - 1] = 0.0  # nn.Embedding(padding_idx=blank) keeps this row at zero
    sd: dict[str, Tensor] = {"head.decoder.embed.weight": embed}
    for layer in range(int(decoder["pred_rnn_layers"])):
        for kind in ("ih", "hh"):
            sd[f"head.decoder.lstm.weight_{kind}_l{layer}"] = rnd.weight(
                4 * hidden, hidden, fan_in=hidden
            )
            sd[f"head.decoder.lstm.bias_{kind}_l{layer}"] = rnd.bias(4 * hidden)
    sd["head.joint.pred.weight"] = rnd.weight(joint_hidden, hidden, fan_in=hidden)
    sd["head.joint.pred.bias"] = rnd.bias(joint_hidden)
    sd["head.joint.enc.weight"] = rnd.weight(joint_hidden, enc_hidden, fan_in=enc_hidden)
    sd["head.joint.enc.bias"] = rnd.bias(joint_hidden)
    sd["head.joint.joint_net.1.weight"] = rnd.weight(classes, joint_hidden, fan_in=joint_hidden)
    bias = rnd.bias(classes)
    bias[classes - 1] += blank_bias
    sd["head.joint.joint_net.1.bias"] = bias
    return sd


def _subsampling(enc: Mapping[str, Any], rnd: _Random) -> dict[str, Tensor]:
    """StridingSubsampling: Conv1d (v3) or Conv2d (v1/v2) + ReLU per stage; conv2d adds
    ``out``, a Linear from channels x remaining mel bins."""
    d, feat_in = int(enc["d_model"]), int(enc["feat_in"])
    conv1d = enc.get("subsampling", "conv2d") == "conv1d"
    kernel = int(enc.get("subs_kernel_size", 3))
    sd: dict[str, Tensor] = {}
    channels, freq = (feat_in if conv1d else 1), feat_in
    for stage in range(int(math.log2(int(enc.get("subsampling_factor", 4))))):
        shape = (kernel,) if conv1d else (kernel, kernel)
        key = f"encoder.pre_encode.conv.{2 * stage}"
        sd[key + ".weight"] = rnd.weight(d, channels, *shape, fan_in=channels * math.prod(shape))
        sd[key + ".bias"] = rnd.bias(d)
        channels, freq = d, (freq + 2 * ((kernel - 1) // 2) - kernel) // 2 + 1
    if not conv1d:
        sd["encoder.pre_encode.out.weight"] = rnd.weight(d, d * freq, fan_in=d * freq)
        sd["encoder.pre_encode.out.bias"] = rnd.bias(d)
    return sd


def _layer(enc: Mapping[str, Any], rnd: _Random, p: str) -> dict[str, Tensor]:
    """One ConformerLayer's parameters and buffers under prefix ``p``."""
    d, heads = int(enc["d_model"]), int(enc["n_heads"])
    d_ff = d * int(enc.get("ff_expansion_factor", 4))
    kernel = int(enc.get("conv_kernel_size", 31))
    sd: dict[str, Tensor] = {}
    for norm in ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2"):
        sd[p + norm + ".weight"], sd[p + norm + ".bias"] = rnd.gain(d), rnd.bias(d)
    sd[p + "norm_out.weight"], sd[p + "norm_out.bias"] = rnd.gain(d), rnd.bias(d)
    for ff in ("feed_forward1", "feed_forward2"):
        sd[p + ff + ".linear1.weight"] = rnd.weight(d_ff, d, fan_in=d)
        sd[p + ff + ".linear1.bias"] = rnd.bias(d_ff)
        sd[p + ff + ".linear2.weight"] = rnd.weight(d, d_ff, fan_in=d_ff)
        sd[p + ff + ".linear2.bias"] = rnd.bias(d)
    for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
        sd[p + f"self_attn.{proj}.weight"] = rnd.weight(d, d, fan_in=d)
        sd[p + f"self_attn.{proj}.bias"] = rnd.bias(d)
    if enc.get("self_attention_model", "rotary") == "rel_pos":
        sd[p + "self_attn.linear_pos.weight"] = rnd.weight(d, d, fan_in=d)
        sd[p + "self_attn.pos_bias_u"] = rnd.bias(heads, d // heads)
        sd[p + "self_attn.pos_bias_v"] = rnd.bias(heads, d // heads)
    c = p + "conv."
    sd[c + "pointwise_conv1.weight"] = rnd.weight(2 * d, d, 1, fan_in=d)
    sd[c + "pointwise_conv1.bias"] = rnd.bias(2 * d)
    sd[c + "depthwise_conv.weight"] = rnd.weight(d, 1, kernel, fan_in=kernel)
    sd[c + "depthwise_conv.bias"] = rnd.bias(d)
    # ConformerConvolution names its norm "batch_norm" whether it is one or a LayerNorm
    sd[c + "batch_norm.weight"], sd[c + "batch_norm.bias"] = rnd.gain(d), rnd.bias(d)
    if enc.get("conv_norm_type", "batch_norm") == "batch_norm":
        sd[c + "batch_norm.running_mean"] = rnd.bias(d)
        sd[c + "batch_norm.running_var"] = rnd.variance(d)
        sd[c + "batch_norm.num_batches_tracked"] = torch.tensor(1000)
    sd[c + "pointwise_conv2.weight"] = rnd.weight(d, d, 1, fan_in=d)
    sd[c + "pointwise_conv2.bias"] = rnd.bias(d)
    return sd


def save_gigaam(path: Path, cfg: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> Path:
    """As published: ``torch.save({"state_dict": ..., "cfg": DictConfig})``."""
    torch.save({"state_dict": dict(state_dict), "cfg": OmegaConf.create(dict(cfg))}, path)
    return path


def save_fine_tuned(
    path: Path, state_dict: Mapping[str, Tensor], model_name: str, *, blank_id: int = 33
) -> Path:
    """A PyTorch Lightning checkpoint of upstream train_utils' GigaAMFineTuner.

    Its state_dict keys are the LightningModule's own (``preprocessor.``, ``encoder.``,
    ``head.``); hyper_parameters are the __init__ arguments (minus model/cli_args) updated
    with train.py's argparse namespace, whose ``model_name`` names the base model.
    """
    first = next(iter(state_dict.values()))
    checkpoint = {
        "epoch": 2,
        "global_step": 1200,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": dict(state_dict),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"ready": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_wer', 'mode': 'min'}": {
                "monitor": "val_wer",
                "best_model_score": torch.tensor(0.123),
                "dirpath": "./checkpoints/models/run",
            }
        },
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros_like(first)}}}],
        "lr_schedulers": [{"base_lrs": [2e-05], "last_epoch": 1200}],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "blank_id": blank_id,
            "lr": 2e-05,
            "freeze_encoder": False,
            "rnnt_subbatch_size": 0,
            "weight_decay": 0.01,
            "warmup_ratio": 0.1,
            "log_every_n_steps": 25,
            "spec_augment": True,
            "model_name": model_name,
            "train_manifest": "train.tsv",
            "val_manifest": "val.tsv",
            "batch_size": 8,
            "max_epochs": 3,
            "raw_text": True,
        },
    }
    torch.save(checkpoint, path)
    return path


def train_tokenizer(path: Path, vocab_size: int = 120) -> Path:
    """A small unigram SentencePiece model on Russian text (deterministic, ~10 ms)."""
    import sentencepiece as spm  # type: ignore[import-untyped]

    lines = [line for line in RUSSIAN_TEXT.splitlines() if line.strip()] * 3
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path
