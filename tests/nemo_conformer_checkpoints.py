"""Random-weight ``.nemo`` archives in NeMo's Conformer-CTC and FastConformer hybrid layouts.

Key names and shapes are enumerated here from NeMo's module tree (ConformerEncoder,
ConvSubsampling, ConformerLayer, RelPositionMultiHeadAttention, ConvASRDecoder,
RNNTDecoder, RNNTJoint), independently of ``export.conformer``, so a strict load proves
the two layouts agree. Archives are packed as NeMo's SaveRestoreConnector packs them:
an uncompressed tar of ``./model_config.yaml``, ``./model_weights.ckpt`` and the
tokenizer artifacts ``./<32 hex>_tokenizer.model``, ``_vocab.txt``, ``_tokenizer.vocab``,
referred to from the config as ``nemo:<name>``.
"""

from __future__ import annotations

import copy
import importlib
import io
import math
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from export.nemo_preprocessor import frontend_from_nemo, preprocessor_state

SPACE = "▁"
TOKENIZER_UID = "0b6c3e7e1a9d4c57a5f1b2d3c4e5f607"
RUSSIAN_TEXT = [
    "привет как дела",
    "сегодня хорошая погода",
    "мы поедем на дачу в субботу",
    "съешь же ещё этих мягких французских булок да выпей чаю",
    "в чащах юга жил бы цитрус да но фальшивый экземпляр",
    "широкая электрификация южных губерний даст мощный толчок подъёму сельского хозяйства",
    "распознавание речи работает на процессоре",
    "модель выдаёт вероятности символов для каждого кадра",
    "пожалуйста повторите ещё раз",
    "завтра будет дождь и ветер",
    "поезд отправляется с первого пути",
    "позвоните мне вечером",
    "эй жлоб где туз прячь юных съёмщиц в шкаф",
]
CYRILLIC = [" "] + [chr(c) for c in range(ord("а"), ord("я") + 1) if chr(c) != "ё"]


@dataclass(frozen=True)
class Tokenizer:
    """A SentencePiece BPE tokenizer as NeMo's create_spt_model leaves it."""

    model: bytes  # tokenizer.model (serialized ModelProto)
    spe_vocab: bytes  # tokenizer.vocab ("piece\tscore" per line, id order)
    vocab_txt: bytes  # vocab.txt (WordPiece-style listing without special pieces)
    pieces: tuple[str, ...]

    def artifacts(self) -> dict[str, bytes]:
        return {
            f"{TOKENIZER_UID}_tokenizer.model": self.model,
            f"{TOKENIZER_UID}_vocab.txt": self.vocab_txt,
            f"{TOKENIZER_UID}_tokenizer.vocab": self.spe_vocab,
        }


def train_tokenizer(workdir: Path, vocab_size: int = 48) -> Tokenizer:
    """Train a tiny BPE model with the flags NeMo's tokenizer script passes."""
    spm = importlib.import_module("sentencepiece")  # export-time only (requirements-dev)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "text.txt"
    corpus.write_text("\n".join(RUSSIAN_TEXT * 4) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(workdir / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=str(workdir / "tokenizer.model"))
    pieces = tuple(processor.id_to_piece(i) for i in range(processor.get_piece_size()))
    listing = []
    for piece in pieces:
        if piece in ("<s>", "</s>", "<pad>", "<unk>"):
            continue
        token = piece[1:] if piece.startswith(SPACE) else f"##{piece}"
        listing.append(token or piece[0])
    return Tokenizer(
        model=(workdir / "tokenizer.model").read_bytes(),
        spe_vocab=(workdir / "tokenizer.vocab").read_bytes(),
        vocab_txt="".join(f"{t}\n" for t in listing).encode(),
        pieces=pieces,
    )


def _preprocessor(n_mels: int) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "sample_rate": 16000,
        "normalize": "per_feature",
        "window_size": 0.025,
        "window_stride": 0.01,
        "window": "hann",
        "features": n_mels,
        "n_fft": 512,
        "log": True,
        "frame_splicing": 1,
        "dither": 1.0e-05,
        "pad_to": 0,
        "pad_value": 0.0,
    }


def _encoder(
    *,
    n_mels: int,
    n_layers: int,
    d_model: int,
    n_heads: int,
    subsampling: str,
    factor: int,
    channels: int,
    kernel: int,
) -> dict[str, Any]:
    """ConformerEncoder's section as a saved model_config.yaml has it (interpolations resolved)."""
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": n_mels,
        "feat_out": -1,
        "n_layers": n_layers,
        "d_model": d_model,
        "subsampling": subsampling,
        "subsampling_factor": factor,
        "subsampling_conv_channels": channels,
        "causal_downsampling": False,
        "ff_expansion_factor": 4,
        "self_attention_model": "rel_pos",
        "n_heads": n_heads,
        "att_context_size": [-1, -1],
        "att_context_style": "regular",
        "xscaling": True,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": kernel,
        "conv_norm_type": "batch_norm",
        "conv_context_size": None,
        "dropout": 0.1,
        "dropout_pre_encoder": 0.1,
        "dropout_emb": 0.0,
        "dropout_att": 0.1,
        "stochastic_depth_drop_prob": 0.0,
        "stochastic_depth_mode": "linear",
        "stochastic_depth_start_layer": 1,
    }


def _tokenizer_section() -> dict[str, Any]:
    return {
        "dir": None,
        "type": "bpe",
        "model_path": f"nemo:{TOKENIZER_UID}_tokenizer.model",
        "vocab_path": f"nemo:{TOKENIZER_UID}_vocab.txt",
        "spe_tokenizer_vocab": f"nemo:{TOKENIZER_UID}_tokenizer.vocab",
    }


def _ctc_decoder(d_model: int, vocabulary: Sequence[str]) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
        "feat_in": d_model,
        "num_classes": len(vocabulary),
        "vocabulary": list(vocabulary),
    }


def conformer_ctc_bpe_config(
    pieces: Sequence[str],
    *,
    n_mels: int = 80,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    kernel: int = 31,
) -> dict[str, Any]:
    """stt_ru_conformer_ctc_large's layout (striding x4, channels = d_model), shrunk."""
    return {
        "sample_rate": 16000,
        "log_prediction": True,
        "ctc_reduction": "mean_batch",
        "skip_nan_grad": False,
        "train_ds": {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 32},
        "validation_ds": {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 32},
        "tokenizer": _tokenizer_section(),
        "preprocessor": _preprocessor(n_mels),
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2,
            "time_masks": 10,
            "freq_width": 27,
            "time_width": 0.05,
        },
        "encoder": _encoder(
            n_mels=n_mels,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            subsampling="striding",
            factor=4,
            channels=-1,
            kernel=kernel,
        ),
        "decoder": _ctc_decoder(d_model, pieces),
        "optim": {"name": "adamw", "lr": 2.0, "betas": [0.9, 0.98], "weight_decay": 0.001},
        "target": "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE",
        "nemo_version": "1.13.0rc0",
    }


def conformer_ctc_char_config(
    labels: Sequence[str] = tuple(CYRILLIC), *, n_layers: int = 1, d_model: int = 32
) -> dict[str, Any]:
    """A char-vocabulary EncDecCTCModel (Conformer-CTC-Char layout)."""
    config = conformer_ctc_bpe_config(labels, n_layers=n_layers, d_model=d_model, kernel=9)
    del config["tokenizer"]
    config["labels"] = list(labels)
    config["target"] = "nemo.collections.asr.models.ctc_models.EncDecCTCModel"
    return config


def fastconformer_hybrid_config(
    pieces: Sequence[str],
    *,
    n_mels: int = 80,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    channels: int = 16,
    kernel: int = 9,
    pred_hidden: int = 24,
    joint_hidden: int = 20,
) -> dict[str, Any]:
    """stt_ru_fastconformer_hybrid_large_pc's layout (dw_striding x8), shrunk."""
    vocabulary = list(pieces)
    return {
        "sample_rate": 16000,
        "compute_eval_loss": False,
        "log_prediction": True,
        "skip_nan_grad": False,
        "model_defaults": {
            "enc_hidden": d_model,
            "pred_hidden": pred_hidden,
            "joint_hidden": joint_hidden,
        },
        "train_ds": {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 16},
        "tokenizer": _tokenizer_section(),
        "preprocessor": _preprocessor(n_mels),
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2,
            "time_masks": 10,
            "freq_width": 27,
            "time_width": 0.05,
        },
        "encoder": {
            **_encoder(
                n_mels=n_mels,
                n_layers=n_layers,
                d_model=d_model,
                n_heads=n_heads,
                subsampling="dw_striding",
                factor=8,
                channels=channels,
                kernel=kernel,
            ),
            "use_bias": True,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {
                "pred_hidden": pred_hidden,
                "pred_rnn_layers": 1,
                "t_max": None,
                "dropout": 0.2,
            },
            "vocab_size": len(vocabulary),
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": True,
            "fused_batch_size": 4,
            "jointnet": {
                "joint_hidden": joint_hidden,
                "activation": "relu",
                "dropout": 0.2,
                "encoder_hidden": d_model,
                "pred_hidden": pred_hidden,
            },
            "num_classes": len(vocabulary),
            "vocabulary": vocabulary,
        },
        "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}},
        "aux_ctc": {
            "ctc_loss_weight": 0.3,
            "use_cer": False,
            "ctc_reduction": "mean_batch",
            "decoder": _ctc_decoder(d_model, vocabulary),
            "decoding": {"strategy": "greedy"},
        },
        "interctc": {"loss_weights": [], "apply_at_layers": []},
        "labels": vocabulary,
        "target": (
            "nemo.collections.asr.models.hybrid_rnnt_ctc_bpe_models.EncDecHybridRNNTCTCBPEModel"
        ),
        "nemo_version": "1.21.0rc0",
    }


def encoder_shapes(encoder: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every ``encoder.*`` state_dict entry of NeMo's ConformerEncoder and its shape."""
    d = int(encoder["d_model"])
    heads = int(encoder["n_heads"])
    ff = d * int(encoder.get("ff_expansion_factor", 4))
    kernel = int(encoder["conv_kernel_size"])
    channels = int(encoder["subsampling_conv_channels"])
    channels = d if channels == -1 else channels
    stages = int(math.log2(int(encoder["subsampling_factor"])))
    shapes: dict[str, tuple[int, ...]] = {}
    pre = "encoder.pre_encode.conv"
    if encoder["subsampling"] == "striding":  # [Conv2d, ReLU] * stages
        for stage in range(stages):
            shapes[f"{pre}.{2 * stage}.weight"] = (channels, 1 if stage == 0 else channels, 3, 3)
            shapes[f"{pre}.{2 * stage}.bias"] = (channels,)
    else:  # Conv2d, ReLU, then [depthwise Conv2d, pointwise Conv2d, ReLU] * (stages - 1)
        shapes[f"{pre}.0.weight"], shapes[f"{pre}.0.bias"] = (channels, 1, 3, 3), (channels,)
        for stage in range(stages - 1):
            index = 2 + 3 * stage
            shapes[f"{pre}.{index}.weight"] = (channels, 1, 3, 3)
            shapes[f"{pre}.{index}.bias"] = (channels,)
            shapes[f"{pre}.{index + 1}.weight"] = (channels, channels, 1, 1)
            shapes[f"{pre}.{index + 1}.bias"] = (channels,)
    freq = int(encoder["feat_in"])
    for _ in range(stages):  # calc_length: floor((f + 1 + 1 - 3) / 2) + 1
        freq = math.floor((freq + 2 - 3) / 2) + 1
    shapes["encoder.pre_encode.out.weight"] = (d, channels * freq)
    shapes["encoder.pre_encode.out.bias"] = (d,)
    for n in range(int(encoder["n_layers"])):
        layer = f"encoder.layers.{n}"
        for norm in ("norm_feed_forward1", "norm_conv", "norm_self_att"):
            shapes[f"{layer}.{norm}.weight"] = shapes[f"{layer}.{norm}.bias"] = (d,)
        for norm in ("norm_feed_forward2", "norm_out"):
            shapes[f"{layer}.{norm}.weight"] = shapes[f"{layer}.{norm}.bias"] = (d,)
        for ffn in ("feed_forward1", "feed_forward2"):
            shapes[f"{layer}.{ffn}.linear1.weight"] = (ff, d)
            shapes[f"{layer}.{ffn}.linear1.bias"] = (ff,)
            shapes[f"{layer}.{ffn}.linear2.weight"] = (d, ff)
            shapes[f"{layer}.{ffn}.linear2.bias"] = (d,)
        conv = f"{layer}.conv"
        shapes[f"{conv}.pointwise_conv1.weight"] = (2 * d, d, 1)
        shapes[f"{conv}.pointwise_conv1.bias"] = (2 * d,)
        shapes[f"{conv}.depthwise_conv.weight"] = (d, 1, kernel)
        shapes[f"{conv}.depthwise_conv.bias"] = (d,)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{conv}.batch_norm.{stat}"] = (d,)
        shapes[f"{conv}.batch_norm.num_batches_tracked"] = ()
        shapes[f"{conv}.pointwise_conv2.weight"] = (d, d, 1)
        shapes[f"{conv}.pointwise_conv2.bias"] = (d,)
        attn = f"{layer}.self_attn"
        shapes[f"{attn}.pos_bias_u"] = shapes[f"{attn}.pos_bias_v"] = (heads, d // heads)
        for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
            shapes[f"{attn}.{proj}.weight"], shapes[f"{attn}.{proj}.bias"] = (d, d), (d,)
        shapes[f"{attn}.linear_pos.weight"] = (d, d)
    return shapes


def ctc_head_shapes(prefix: str, d_model: int, vocabulary: int) -> dict[str, tuple[int, ...]]:
    """ConvASRDecoder: Conv1d(d_model, vocabulary + 1 blank, kernel 1) as decoder_layers.0."""
    return {
        f"{prefix}.decoder_layers.0.weight": (vocabulary + 1, d_model, 1),
        f"{prefix}.decoder_layers.0.bias": (vocabulary + 1,),
    }


def rnnt_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """RNNTDecoder (blank_as_pad embedding + 1-layer LSTM) and RNNTJoint (dropout → index 2)."""
    pred = int(config["model_defaults"]["pred_hidden"])
    joint = int(config["model_defaults"]["joint_hidden"])
    enc = int(config["model_defaults"]["enc_hidden"])
    vocabulary = len(config["joint"]["vocabulary"])
    lstm = "decoder.prediction.dec_rnn.lstm"
    return {
        "decoder.prediction.embed.weight": (vocabulary + 1, pred),
        f"{lstm}.weight_ih_l0": (4 * pred, pred),
        f"{lstm}.weight_hh_l0": (4 * pred, pred),
        f"{lstm}.bias_ih_l0": (4 * pred,),
        f"{lstm}.bias_hh_l0": (4 * pred,),
        "joint.pred.weight": (joint, pred),
        "joint.pred.bias": (joint,),
        "joint.enc.weight": (joint, enc),
        "joint.enc.bias": (joint,),
        "joint.joint_net.2.weight": (vocabulary + 1, joint),
        "joint.joint_net.2.bias": (vocabulary + 1,),
    }


def checkpoint_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The model weights of a CTC or hybrid config (preprocessor buffers aside)."""
    encoder = config["encoder"]
    d_model = int(encoder["d_model"])
    if "aux_ctc" in config:
        vocabulary = len(config["aux_ctc"]["decoder"]["vocabulary"])
        return {
            **encoder_shapes(encoder),
            **rnnt_shapes(config),
            **ctc_head_shapes("ctc_decoder", d_model, vocabulary),
        }
    vocabulary = len(config["decoder"]["vocabulary"])
    return {**encoder_shapes(encoder), **ctc_head_shapes("decoder", d_model, vocabulary)}


def random_state_dict(config: Mapping[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of trained-model scale (non-zero pos_bias_u/v, non-trivial BN stats)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in checkpoint_shapes(config).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) * 1.5 + 0.5
        elif key.endswith(("running_mean", "pos_bias_u", "pos_bias_v")) or (
            key.endswith(".bias") and "norm" not in key
        ):
            state[key] = torch.randn(shape, generator=generator) * 0.1
        elif "norm" in key and key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        elif "norm" in key:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:  # weights: fan-in scaled, as trained layers roughly are
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    frontend = frontend_from_nemo(config)
    return {**state, **preprocessor_state(frontend)}


def write_nemo_archive(
    path: Path,
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    artifacts: Mapping[str, bytes] | None = None,
) -> Path:
    """``tar.add(folder, arcname=".")`` as NeMo does: a ``.`` entry, then ``./<file>``."""
    weights = io.BytesIO()
    torch.save(dict(state_dict), weights)
    members = {
        "model_config.yaml": yaml.safe_dump(
            copy.deepcopy(dict(config)), allow_unicode=True, sort_keys=False
        ).encode(),
        "model_weights.ckpt": weights.getvalue(),
        **(artifacts or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:") as archive:
        root = tarfile.TarInfo(".")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(root)
        for name, payload in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(payload), 0o644
            archive.addfile(info, io.BytesIO(payload))
    return path
