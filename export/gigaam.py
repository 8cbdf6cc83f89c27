"""Load Sber GigaAM CTC and RNNT checkpoints into this project's Conformer
(export/conformer.py) and RNN-T head (export/transducer.py; the cfg: export/gigaam_heads.py).

A published checkpoint ``<name>.ckpt`` is a pickle (``torch.load(weights_only=False)``,
so only load files you trust: MD5-verified downloads or your own fine-tunes) holding
``{"state_dict": ..., "cfg": omegaconf.DictConfig}``; the cfg has ``preprocessor``,
``encoder``, ``head`` and ``decoding`` sections that upstream instantiates with hydra.
Missing encoder keys take upstream ``ConformerEncoder``'s defaults, which is how a v2 cfg
(no ``subsampling``/``subs_kernel_size``/``conv_norm_type``) means conv2d, kernel 3,
batch norm; a v2 preprocessor cfg has only ``sample_rate`` and ``features``, so
``FeatureExtractor``'s defaults apply (n_fft = win = sr/40, hop sr/100, centred).

The e2e models decode with a SentencePiece model, ``<name>_tokenizer.model``, published
next to the checkpoint; character models carry their vocabulary in
``cfg.decoding.vocabulary``. Either way the blank is the last class.

A fine-tuned checkpoint from upstream ``train_utils/train.py`` is a PyTorch Lightning
checkpoint of ``GigaAMFineTuner``: its ``state_dict`` holds the same
``preprocessor.``/``encoder.``/``head.`` keys (the module keeps the model's parts as
attributes of those names, so there is no ``model.`` prefix) and its ``hyper_parameters``
name the base model (``model_name``, the ``--model_name`` the run started from) but hold
no cfg: the base checkpoint supplies it, as upstream ``load_model`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from asr.config import GigaamMelConfig, TokenKind, TransducerConfig
from asr.errors import BundleError
from asr.frontend import gigaam_buffers
from asr.tokens import BLANK_TOKEN, Vocabulary
from torch import Tensor

from .conformer import ConformerCTC, ConformerSpec, load_weights
from .gigaam_heads import (
    decoding_section,
    head_classes,
    integer,
    is_emotion_cfg,
    model_class,
    require_target,
    section,
    transducer_spec,
)
from .gigaam_releases import file_digests, release_by_md5, resolve_release_name
from .quartznet import CheckpointError
from .sentencepiece_tokens import sentencepiece_pieces
from .source_model import CONFORMER_MAX_WINDOW_SECONDS, ModelDescription, SourceModel
from .transducer import GIGAAM_KEYS, TransducerModel, TransducerSpec, rename_head_keys

# Parts of a GigaAMASR state_dict; upstream keeps exactly these from a fine-tuned one.
MODEL_PREFIXES = ("preprocessor.", "encoder.", "head.")
WINDOW_KEY = "preprocessor.featurizer.0.spectrogram.window"
FILTERBANK_KEY = "preprocessor.featurizer.0.mel_scale.fb"
# bfloat16 keeps 8 significant bits: rounding moves a value by at most 2**-8 of itself.
BF16_RELATIVE_ROUNDING = 2.0**-8
# asr.frontend repeats torchaudio's float32 steps; its pow still moves a few filterbank
# weights by up to ~1e-5. Other front ends (norms, scales, sizes) differ by far more.
FP32_TOLERANCE = 5e-5

_PREPROCESSOR_TARGET = "gigaam.preprocess.FeatureExtractor"
_ENCODER_TARGET = "gigaam.encoder.ConformerEncoder"
# Upstream ConformerEncoder's keyword defaults (gigaam/encoder.py), used for absent keys.
_ENCODER_DEFAULTS: dict[str, Any] = {
    "feat_in": 64,
    "n_layers": 16,
    "d_model": 768,
    "subsampling": "conv2d",
    "subs_kernel_size": 3,
    "subsampling_factor": 4,
    "ff_expansion_factor": 4,
    "self_attention_model": "rotary",
    "n_heads": 16,
    "pos_emb_max_len": 5000,
    "conv_norm_type": "batch_norm",
    "conv_kernel_size": 31,
}
# Encoder keys that change training or kernels only, never the maths of inference.
_ENCODER_IGNORED = {"_target_", "flash_attn", "activation_checkpointing"}
_PREPROCESSOR_KEYS = {
    "_target_",
    "sample_rate",
    "features",
    "win_length",
    "hop_length",
    "n_fft",
    "center",
    "mel_scale",
    "mel_norm",
}


@dataclass(frozen=True)
class GigaamCheckpoint:
    """A GigaAM checkpoint as read: its cfg (plain dicts), tensors and provenance."""

    path: Path
    cfg: dict[str, Any]
    state_dict: dict[str, Tensor]
    source: dict[str, Any]

    def model_weights(self) -> dict[str, Tensor]:
        """The encoder's and head's tensors (the preprocessor's two buffers left out)."""
        weights = {k: v for k, v in self.state_dict.items() if not k.startswith("preprocessor.")}
        extra = sorted(set(self.state_dict) - set(weights) - {WINDOW_KEY, FILTERBANK_KEY})
        if extra:
            raise CheckpointError(f"{self.path.name}: unexpected preprocessor tensors {extra[:3]}")
        return weights


def read_gigaam(path: Path, *, base: Path | None = None) -> GigaamCheckpoint:
    """Read a published ``<name>.ckpt`` or a fine-tuned Lightning ``.ckpt``; the latter
    needs ``base``, the published checkpoint it was fine-tuned from (for the cfg)."""
    loaded = _read_pickle(path)
    sha256, md5 = file_digests(path)
    source: dict[str, Any] = {"checkpoint": path.name, "checkpoint_sha256": sha256}
    if "cfg" in loaded:
        cfg = _plain_config(loaded["cfg"], path)
        state_dict = _tensors(loaded.get("state_dict"), path)
        source["upstream_model"] = cfg.get("model_name") or release_by_md5(md5)
    elif "hyper_parameters" in loaded:
        cfg, state_dict = _fine_tuned(loaded, path, base, source)
    else:
        raise CheckpointError(
            f"{path} is neither a GigaAM checkpoint (state_dict + cfg) nor a fine-tuned "
            "Lightning checkpoint (state_dict + hyper_parameters)"
        )
    source["published_release"] = release_by_md5(md5)
    return GigaamCheckpoint(path, cfg, state_dict, source)


def load_gigaam(
    path: Path, *, tokenizer: Path | None = None, base: Path | None = None
) -> SourceModel:
    """A GigaAM CTC or RNNT checkpoint as this project's model, front end and vocabulary.

    ``path`` is a published ``<name>.ckpt`` or a fine-tuned Lightning ``.ckpt``; the latter
    needs ``base``, the published checkpoint it was fine-tuned from (for the cfg).
    ``tokenizer`` is the SentencePiece model of e2e models and must be absent otherwise.
    """
    return asr_source(read_gigaam(path, base=base), tokenizer=tokenizer)


def asr_source(checkpoint: GigaamCheckpoint, *, tokenizer: Path | None = None) -> SourceModel:
    """The ASR model of a read checkpoint (GigaAM-Emo: see export.gigaam_emo)."""
    cfg, source = checkpoint.cfg, dict(checkpoint.source)
    if is_emotion_cfg(cfg):
        raise CheckpointError(
            f"{checkpoint.path.name} is a GigaAM-Emo emotion classifier, not a speech "
            "recognition model: `python -m export gigaam` writes it as an emotion bundle"
        )
    spec = conformer_spec(cfg)
    frontend = frontend_config(cfg, checkpoint.state_dict)
    description = gigaam_description(cfg, spec, frontend, tokenizer, source)
    weights = checkpoint.model_weights()
    model: ConformerCTC | TransducerModel
    if model_class(cfg) == "rnnt":
        transducer = transducer_spec(cfg, spec)
        model = TransducerModel(transducer)
        load_weights(model, rename_head_keys(weights, GIGAAM_KEYS), checkpoint.path.name)
        source["architecture"] = describe(spec, transducer)
    else:
        model = ConformerCTC(spec)
        load_weights(model, rename_head_keys(weights, {"head.": "decoder."}), checkpoint.path.name)
        source["architecture"] = describe(spec)
    model.eval()
    source["parameters"] = sum(p.numel() for p in model.parameters())
    return SourceModel.of(description, model)


def gigaam_description(
    cfg: Mapping[str, Any],
    spec: ConformerSpec,
    frontend: GigaamMelConfig,
    tokenizer: Path | None,
    source: dict[str, Any],
) -> ModelDescription:
    """Front end, vocabulary, frame rate and decoder of a GigaAM model (a checkpoint's or
    exported graphs'); ``source`` gains the tokenizer's provenance."""
    if frontend.n_mels != spec.feat_in:
        raise CheckpointError(
            f"preprocessor makes {frontend.n_mels} mel bins, encoder.feat_in is {spec.feat_in}"
        )
    vocabulary, token_kind = gigaam_vocabulary(cfg, tokenizer, spec.num_classes, source)
    transducer = None
    if model_class(cfg) == "rnnt":
        head = transducer_spec(cfg, spec)
        transducer = TransducerConfig(
            pred_layers=head.pred_layers,
            pred_hidden=head.pred_hidden,
            max_symbols_per_step=head.max_symbols_per_step,
        )
    return ModelDescription(
        family="conformer",
        frontend=frontend,
        vocabulary=vocabulary,
        token_kind=token_kind,
        subsampling=spec.subsampling_factor,
        max_window_seconds=CONFORMER_MAX_WINDOW_SECONDS,
        transducer=transducer,
        source=source,
    )


def conformer_spec(cfg: Mapping[str, Any], num_classes: int | None = None) -> ConformerSpec:
    """The ``ConformerSpec`` of a GigaAM cfg (its num_classes: the head's, vocabulary +
    blank, unless given); any option we cannot reproduce is refused."""
    encoder = section(cfg, "encoder")
    require_target(encoder, "encoder", _ENCODER_TARGET)
    unknown = sorted(set(encoder) - set(_ENCODER_DEFAULTS) - _ENCODER_IGNORED)
    if unknown:
        raise CheckpointError(f"encoder options {unknown} are not supported")
    options = {**_ENCODER_DEFAULTS, **encoder}
    subsampling = options["subsampling"]
    if subsampling not in ("conv1d", "conv2d"):
        raise CheckpointError(f"encoder.subsampling {subsampling!r} is not supported")
    attention = options["self_attention_model"]
    if attention not in ("rotary", "rel_pos"):
        raise CheckpointError(f"encoder.self_attention_model {attention!r} is not supported")
    norm = options["conv_norm_type"]
    if norm not in ("batch_norm", "layer_norm"):
        raise CheckpointError(f"encoder.conv_norm_type {norm!r} is not supported")
    d_model = integer(options, "d_model")
    return ConformerSpec(
        feat_in=integer(options, "feat_in"),
        n_layers=integer(options, "n_layers"),
        d_model=d_model,
        n_heads=integer(options, "n_heads"),
        num_classes=head_classes(cfg, d_model) if num_classes is None else num_classes,
        ff_expansion_factor=integer(options, "ff_expansion_factor"),
        conv_kernel_size=integer(options, "conv_kernel_size"),
        conv_norm=norm,
        attention=attention,
        xscaling=False,  # GigaAM's positional modules do not scale the input
        subsampling=subsampling,
        subsampling_factor=integer(options, "subsampling_factor"),
        subsampling_kernel=integer(options, "subs_kernel_size"),
        subsampling_channels=-1,  # upstream: conv_channels = d_model
        pos_emb_max_len=integer(options, "pos_emb_max_len"),
    )


def frontend_config(cfg: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> GigaamMelConfig:
    """The front end the cfg describes, checked against the window and filterbank stored
    in the checkpoint; whether those were stored bfloat16-rounded (v3) is read from them."""
    config = frontend_from_cfg(cfg)
    return _check_stored_buffers(config, state_dict)


def frontend_from_cfg(cfg: Mapping[str, Any]) -> GigaamMelConfig:
    """The front end a cfg's preprocessor section describes (bf16_buffers not decided)."""
    pre = section(cfg, "preprocessor")
    require_target(pre, "preprocessor", _PREPROCESSOR_TARGET)
    unknown = sorted(set(pre) - _PREPROCESSOR_KEYS)
    if unknown:
        raise CheckpointError(f"preprocessor options {unknown} are not supported")
    if pre.get("mel_scale", "htk") != "htk" or pre.get("mel_norm") is not None:
        raise CheckpointError(
            f"preprocessor mel_scale={pre.get('mel_scale')!r} mel_norm={pre.get('mel_norm')!r}: "
            "only the HTK scale without filterbank norm (torchaudio's default) is supported"
        )
    rate = integer(pre, "sample_rate", integer(cfg, "sample_rate", 16000))
    if integer(cfg, "sample_rate", rate) != rate:
        raise CheckpointError(f"cfg.sample_rate {cfg['sample_rate']} != preprocessor's {rate}")
    center = pre.get("center", True)
    if not isinstance(center, bool):
        raise CheckpointError(f"preprocessor.center {center!r} is not a boolean")
    try:
        config = GigaamMelConfig(
            sample_rate=rate,
            n_fft=integer(pre, "n_fft", rate // 40),
            win_length=integer(pre, "win_length", rate // 40),
            hop_length=integer(pre, "hop_length", rate // 100),
            n_mels=integer(pre, "features"),
            center=center,
        )
    except BundleError as exc:
        raise CheckpointError(f"cfg.preprocessor: {exc}") from exc
    return config


def _check_stored_buffers(
    config: GigaamMelConfig, state_dict: Mapping[str, Tensor]
) -> GigaamMelConfig:
    window, filterbank = gigaam_buffers(config)  # what the bundle's front end will use
    expected = {"window": torch.from_numpy(window), "fb": torch.from_numpy(filterbank.T.copy())}
    rounding: set[bool] = {False, True}
    for key, name in ((WINDOW_KEY, "window"), (FILTERBANK_KEY, "fb")):
        if key not in state_dict:
            raise CheckpointError(f"the checkpoint has no {key}")
        rounding &= _buffer_rounding(key, state_dict[key], expected[name])
    if not rounding:
        raise CheckpointError(
            "the stored window and filterbank disagree on bfloat16 rounding; refusing to "
            "guess which features the model was trained on"
        )
    return GigaamMelConfig(**{**vars(config), "bf16_buffers": True in rounding})


def describe(
    spec: ConformerSpec, transducer: TransducerSpec | None = None, *, head: str | None = None
) -> str:
    attention = "rotary" if spec.attention == "rotary" else "relative-position"
    head = head or ("CTC" if transducer is None else "RNNT")
    text = (
        f"GigaAM Conformer-{head}: {spec.n_layers} layers, d_model {spec.d_model}, "
        f"{spec.n_heads} heads, {attention} attention, {spec.subsampling} subsampling "
        f"x{spec.subsampling_factor} (kernel {spec.subsampling_kernel}), conv kernel "
        f"{spec.conv_kernel_size} with {spec.conv_norm}, {spec.num_classes} classes"
    )
    if transducer is not None:
        text += (
            f"; prediction network LSTM {transducer.pred_layers}x{transducer.pred_hidden}, "
            f"joint {transducer.joint_hidden}, at most {transducer.max_symbols_per_step} "
            "symbols per frame"
        )
    return text


def _buffer_rounding(key: str, stored: Tensor, expected: Tensor) -> set[bool]:
    """Which ``bf16_buffers`` settings explain a stored buffer (empty: neither)."""
    if tuple(stored.shape) != tuple(expected.shape):
        raise CheckpointError(
            f"{key} has shape {tuple(stored.shape)}, the preprocessor cfg implies "
            f"{tuple(expected.shape)}"
        )
    theirs = stored.detach().float()
    if not bool(torch.isfinite(theirs).all()):
        raise CheckpointError(f"{key} holds non-finite values")
    settings: set[bool] = set()
    difference = float((theirs - expected).abs().max())
    if difference <= FP32_TOLERANCE:
        settings.add(False)
    representable = bool(torch.equal(theirs.bfloat16().float(), theirs))
    bound = expected.abs() * BF16_RELATIVE_ROUNDING + FP32_TOLERANCE
    if representable and bool(((theirs - expected).abs() <= bound).all()):
        settings.add(True)
    if not settings:
        raise CheckpointError(
            f"{key} differs from the front end the preprocessor cfg describes (max |Δ| "
            f"{difference:.2e}, not explained by bfloat16 rounding); refusing to export "
            "mismatched features"
        )
    return settings


def gigaam_vocabulary(
    cfg: Mapping[str, Any], tokenizer: Path | None, num_classes: int, source: dict[str, Any]
) -> tuple[Vocabulary, TokenKind]:
    decoding = decoding_section(cfg)
    labels = decoding.get("vocabulary")
    if decoding.get("model_path") or not labels:
        if tokenizer is None:
            raise CheckpointError(
                "this GigaAM model decodes with SentencePiece: pass its tokenizer "
                "(<name>_tokenizer.model, published next to the checkpoint)"
            )
        vocabulary = sentencepiece_vocabulary(tokenizer)
        source["tokenizer"] = tokenizer.name
        source["tokenizer_sha256"] = file_digests(tokenizer)[0]
        kind: TokenKind = "sentencepiece"
    else:
        if tokenizer is not None:
            raise CheckpointError(
                "this GigaAM model has a character vocabulary; it takes no tokenizer"
            )
        if not all(isinstance(label, str) and label for label in labels):
            raise CheckpointError("cfg.decoding.vocabulary must list non-empty strings")
        vocabulary = Vocabulary.from_labels([str(label) for label in labels])
        kind = "char"
    if len(vocabulary) != num_classes:
        raise CheckpointError(
            f"the head's num_classes is {num_classes}, but the vocabulary has "
            f"{len(vocabulary) - 1} "
            "tokens plus the blank"
        )
    return vocabulary, kind


def sentencepiece_vocabulary(path: Path) -> Vocabulary:
    """The tokenizer's pieces for ids 0..N-1, then the blank (N), as upstream's greedy
    decodings."""
    try:
        model = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read tokenizer {path}: {exc}") from exc
    pieces = sentencepiece_pieces(model, path.name)
    return Vocabulary((*pieces, BLANK_TOKEN), blank_id=len(pieces))


def _fine_tuned(
    loaded: Mapping[str, Any], path: Path, base: Path | None, source: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    hyper = loaded.get("hyper_parameters")
    name = hyper.get("model_name") if isinstance(hyper, Mapping) else None
    if not isinstance(name, str) or not name:
        raise CheckpointError(
            f"{path} looks like a Lightning checkpoint but its hyper_parameters name no "
            "model_name: not a GigaAM train_utils fine-tune"
        )
    base_name = resolve_release_name(name)
    if base is None:
        raise CheckpointError(
            f"{path.name} is fine-tuned from {base_name!r} and holds no cfg: pass that "
            "checkpoint as the base (e.g. download it by name)"
        )
    base_loaded = _read_pickle(base)
    if "cfg" not in base_loaded:
        raise CheckpointError(f"base {base} holds no cfg: give the published checkpoint")
    cfg = _plain_config(base_loaded["cfg"], base)
    base_sha256, base_md5 = file_digests(base)
    known = cfg.get("model_name") or release_by_md5(base_md5)
    if known is not None and resolve_release_name(str(known)) != base_name:
        raise CheckpointError(
            f"{path.name} was fine-tuned from {base_name!r}, but the base is {known!r}"
        )
    weights = _tensors(loaded.get("state_dict"), path)
    source.update(
        upstream_model=base_name,
        fine_tuned_from=base_name,
        base_checkpoint=base.name,
        base_checkpoint_sha256=base_sha256,
    )
    return cfg, {k: v for k, v in weights.items() if k.startswith(MODEL_PREFIXES)}


def _read_pickle(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise CheckpointError(
            f"{path} needs {exc.name!r} to unpickle (GigaAM's cfg is an omegaconf DictConfig: "
            "pip install -r requirements-dev.txt)"
        ) from exc
    except Exception as exc:  # torch raises many types for corrupt pickles
        raise CheckpointError(f"{path} is not a loadable PyTorch checkpoint: {exc}") from exc
    if not isinstance(loaded, Mapping) or "state_dict" not in loaded:
        raise CheckpointError(f"{path} holds no state_dict: not a GigaAM checkpoint")
    return cast(Mapping[str, Any], loaded)


def _plain_config(cfg: Any, path: Path) -> dict[str, Any]:
    """An omegaconf DictConfig (as published) or a plain mapping, as nested dicts."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # noqa: PLC0415 (export-only dependency)

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{path}: cfg is a {type(cfg).__name__}, not a mapping")
    return {str(key): _plain(value) for key, value in cfg.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _tensors(state_dict: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, Tensor) for v in state_dict.values()
    ):
        raise CheckpointError(f"{path}: state_dict is not a mapping of tensors")
    return {str(k): v for k, v in state_dict.items()}
