"""NeMo Conformer-CTC and FastConformer hybrid RNNT-CTC ``.nemo`` checkpoints → ``SourceModel``.

Supported upstream classes (``target`` in ``model_config.yaml``):

- ``EncDecCTCModelBPE`` / ``EncDecCTCModel`` (e.g. ``stt_ru_conformer_ctc_large``): the
  CTC head is ``decoder.decoder_layers.0``, its config ``decoder:``.
- ``EncDecHybridRNNTCTCBPEModel`` / ``EncDecHybridRNNTCTCModel`` (e.g.
  ``stt_ru_fastconformer_hybrid_large_pc``): the RNNT head (``decoder.`` prediction network
  and ``joint.``; export/nemo_rnnt.py), NeMo's default decoder for these models, or with
  ``head="ctc"`` the CTC head ``ctc_decoder.decoder_layers.0`` (config ``aux_ctc.decoder:``).

The encoder is NeMo's ``ConformerEncoder`` with relative-position attention and full
(unlimited) context; options that change inference and that ``export.conformer`` does not
reproduce are refused rather than approximated. The CTC vocabulary is the head config's
``vocabulary`` (BPE models: the SentencePiece pieces in id order, as NeMo lists them;
char models: the labels) with the blank appended last. When the archive carries its
SentencePiece model (``<uid>_tokenizer.model``, named by ``tokenizer.model_path:
nemo:<uid>_tokenizer.model``), its pieces must equal that vocabulary.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NoReturn

from asr.config import TransducerConfig
from asr.tokens import Vocabulary
from torch import Tensor

from . import nemo_rnnt
from .checkpoint import NON_MODEL_PREFIXES, LoadedCheckpoint
from .conformer import ConformerCTC, ConformerSpec, load_weights
from .nemo_preprocessor import NemoStft, check_preprocessor_buffers, read_preprocessor
from .quartznet import CheckpointError
from .sentencepiece_tokens import sentencepiece_pieces
from .source_model import CONFORMER_MAX_WINDOW_SECONDS, SourceModel
from .transducer import TransducerModel, nemo_keys, rename_head_keys

CTC_HEAD_KEY = "decoder.decoder_layers.0.weight"
NemoHead = Literal["ctc", "rnnt"]
# SentencePiece piece types (sentencepiece_model.proto): BYTE pieces stand for raw bytes,
# which a piece-by-piece decoder cannot render.


@dataclass(frozen=True)
class NemoModelKind:
    name: str  # upstream class name
    hybrid: bool  # hybrid RNNT-CTC: the CTC head is ``ctc_decoder``
    bpe: bool  # SentencePiece tokenizer (else a char vocabulary)


KNOWN_MODELS = {
    "EncDecCTCModel": NemoModelKind("EncDecCTCModel", hybrid=False, bpe=False),
    "EncDecCTCModelBPE": NemoModelKind("EncDecCTCModelBPE", hybrid=False, bpe=True),
    "EncDecHybridRNNTCTCModel": NemoModelKind("EncDecHybridRNNTCTCModel", hybrid=True, bpe=False),
    "EncDecHybridRNNTCTCBPEModel": NemoModelKind(
        "EncDecHybridRNNTCTCBPEModel", hybrid=True, bpe=True
    ),
}


def load_nemo_conformer(
    checkpoint: LoadedCheckpoint, nemo_stft: NemoStft = "2.5", head: NemoHead | None = None
) -> SourceModel:
    """Build the Conformer the config describes with its CTC head or (hybrids) its RNNT
    head, load the weights strictly, and attach the front end, vocabulary and provenance
    the export pipeline needs. ``head`` defaults to NeMo's own decoder for the class: RNNT
    for hybrids, CTC otherwise."""
    config = checkpoint.config
    kind = model_kind(config)
    head = head or ("rnnt" if kind.hybrid else "ctc")
    if head == "rnnt" and not kind.hybrid:
        raise CheckpointError(f"{kind.name} has no RNNT head (only hybrid RNNT-CTC models do)")
    if kind.hybrid:
        ctc_head = _section(_section(config, "aux_ctc", "config"), "decoder", "aux_ctc")
    else:
        ctc_head = _section(config, "decoder", "config")
    _check_head_type(ctc_head)
    listing = _section(config, "joint", "config") if head == "rnnt" else ctc_head
    vocabulary = ctc_vocabulary(config, listing, kind, _archive_tokenizer(checkpoint, config))
    preprocessor = read_preprocessor(config, nemo_stft)
    frontend = preprocessor.frontend
    spec = conformer_spec(config, num_classes=len(vocabulary) + 1)
    model: ConformerCTC | TransducerModel
    source: dict[str, Any] = {}
    transducer = None
    if head == "rnnt":
        head_spec = nemo_rnnt.transducer_spec(config, spec)
        model = TransducerModel(head_spec)
        renames = nemo_keys(nemo_rnnt.joint_dropout(config))
        load_weights(
            model,
            rename_head_keys(rnnt_weights(checkpoint.state_dict), renames),
            checkpoint.path.name,
        )
        transducer = TransducerConfig(
            pred_layers=head_spec.pred_layers,
            pred_hidden=head_spec.pred_hidden,
            max_symbols_per_step=head_spec.max_symbols_per_step,
        )
        strategy = nemo_rnnt.decoding_strategy(config)
        if strategy not in nemo_rnnt.GREEDY_STRATEGIES:
            source["nemo_decoding_strategy_replaced_by_greedy"] = strategy
    else:
        weights = ctc_weights(checkpoint.state_dict, hybrid=kind.hybrid)
        if CTC_HEAD_KEY in weights and weights[CTC_HEAD_KEY].shape[0] != len(vocabulary) + 1:
            raise CheckpointError(
                f"the CTC head has {weights[CTC_HEAD_KEY].shape[0]} outputs but the vocabulary "
                f"has {len(vocabulary)} tokens (+ blank = {len(vocabulary) + 1})"
            )
        _check_head_sizes(ctc_head, spec)
        model = ConformerCTC(spec)
        load_weights(model, weights, checkpoint.path.name)
    model.eval()

    if frontend.n_mels != spec.feat_in:
        raise CheckpointError(
            f"the preprocessor makes {frontend.n_mels} mel bins, the encoder expects {spec.feat_in}"
        )
    check_preprocessor_buffers(checkpoint.preprocessor_buffers, preprocessor)
    return SourceModel(
        model=model,
        family="conformer",
        frontend=frontend,
        vocabulary=Vocabulary.from_labels(vocabulary),
        token_kind="sentencepiece" if kind.bpe else "char",
        subsampling=spec.subsampling_factor,
        max_window_seconds=CONFORMER_MAX_WINDOW_SECONDS,
        transducer=transducer,
        source={
            "checkpoint": checkpoint.path.name,
            "checkpoint_sha256": checkpoint.sha256,
            "target": str(config.get("target") or kind.name),
            "nemo_version": config.get("nemo_version"),
            "architecture": _architecture(spec, kind, head),
            "parameters": sum(p.numel() for p in model.parameters()),
            **source,
            **preprocessor.provenance(),
        },
    )


def _architecture(spec: ConformerSpec, kind: NemoModelKind, head: NemoHead) -> str:
    name = "FastConformer" if spec.subsampling == "dw_striding" else "Conformer"
    head_name = f"hybrid RNNT-CTC, {head.upper()} head" if kind.hybrid else "CTC"
    decoder = "RNNTDecoder + RNNTJoint" if head == "rnnt" else "ConvASRDecoder"
    return (
        f"{name} {head_name} (NeMo ConformerEncoder {spec.n_layers}x{spec.d_model}, "
        f"{spec.subsampling} x{spec.subsampling_factor}, rel_pos attention; {decoder})"
    )


def rnnt_weights(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The encoder, prediction network and joint weights (the CTC head dropped)."""
    return {
        key: tensor
        for key, tensor in state_dict.items()
        if not key.startswith((*NON_MODEL_PREFIXES, "ctc_decoder.")) and key != "encoder.pos_enc.pe"
    }


def model_kind(config: Mapping[str, Any]) -> NemoModelKind:
    """The upstream class from ``target``, or (older configs) from the sections present."""
    target = config.get("target")
    if target:
        name = str(target).rsplit(".", 1)[-1]
        kind = KNOWN_MODELS.get(name)
        if kind is None:
            raise CheckpointError(
                f"{target} is not a NeMo CTC or hybrid RNNT-CTC model "
                f"(supported: {', '.join(KNOWN_MODELS)})"
            )
    else:
        hybrid, bpe = "aux_ctc" in config, "tokenizer" in config
        kind = next(k for k in KNOWN_MODELS.values() if (k.hybrid, k.bpe) == (hybrid, bpe))
    if kind.bpe and not isinstance(config.get("tokenizer"), Mapping):
        raise CheckpointError(f"{kind.name} config has no tokenizer section")
    if kind.hybrid and not isinstance(config.get("aux_ctc"), Mapping):
        raise CheckpointError(f"{kind.name} config has no aux_ctc section (its CTC head)")
    return kind


def conformer_spec(config: Mapping[str, Any], num_classes: int) -> ConformerSpec:
    """``ConformerSpec`` from the ``encoder:`` section (ConformerEncoder's defaults)."""
    enc = _section(config, "encoder", "config")
    target = str(enc.get("_target_", "ConformerEncoder"))
    if target.rsplit(".", 1)[-1] != "ConformerEncoder":
        raise CheckpointError(f"encoder {target} is not supported (ConformerEncoder only)")
    d_model = _int(enc, "d_model")
    kernel = _int(enc, "conv_kernel_size", 31)

    def refuse(key: str, why: str) -> NoReturn:
        raise CheckpointError(f"encoder.{key}={enc.get(key)!r} is not supported: {why}")

    subsampling = enc.get("subsampling", "striding")
    if subsampling not in ("striding", "dw_striding"):
        refuse("subsampling", "only striding and dw_striding conv subsampling")
    if enc.get("causal_downsampling", False):
        refuse("causal_downsampling", "causal subsampling is for streaming models")
    if enc.get("self_attention_model", "rel_pos") != "rel_pos":
        refuse("self_attention_model", "only rel_pos (Transformer-XL) attention")
    if _att_context(enc.get("att_context_size")) != [-1, -1]:
        refuse("att_context_size", "only unlimited attention context [-1, -1]")
    conv_context = enc.get("conv_context_size")
    if conv_context is not None and list(conv_context) != [(kernel - 1) // 2] * 2:
        refuse("conv_context_size", "only the symmetric (non-causal) conv context")
    if enc.get("reduction") and _int(enc, "reduction_factor", 1) > 1:
        refuse("reduction", "time reduction inside the encoder")
    feat_out = _int(enc, "feat_out", -1)
    if feat_out > 0 and feat_out != d_model:
        refuse("feat_out", "an output projection (feat_out != d_model)")
    if not enc.get("use_bias", True):
        refuse("use_bias", "bias-free linear and conv layers")
    conv_norm = enc.get("conv_norm_type", "batch_norm")
    if conv_norm not in ("batch_norm", "layer_norm"):
        refuse("conv_norm_type", "only batch_norm or layer_norm")
    # Inference-neutral: dropout*, stochastic_depth_* (training only), att_context_style
    # (no effect with unlimited context), subsampling_conv_chunking_factor (splits the
    # batch, same result), use_pytorch_sdpa (same equations), untie_biases=false (each
    # layer's state_dict still holds the shared pos_bias_u/v), global_tokens (local
    # attention only).
    feat_in = enc.get("feat_in")
    if not isinstance(feat_in, int):  # an unresolved ${model.preprocessor.features}
        feat_in = _int(_section(config, "preprocessor", "config"), "features", 64)
    return ConformerSpec(
        feat_in=feat_in,
        n_layers=_int(enc, "n_layers"),
        d_model=d_model,
        n_heads=_int(enc, "n_heads", 4),
        num_classes=num_classes,
        ff_expansion_factor=_int(enc, "ff_expansion_factor", 4),
        conv_kernel_size=kernel,
        conv_norm="layer_norm" if conv_norm == "layer_norm" else "batch_norm",
        attention="rel_pos",
        xscaling=bool(enc.get("xscaling", True)),
        subsampling="dw_striding" if subsampling == "dw_striding" else "striding",
        subsampling_factor=_int(enc, "subsampling_factor", 4),
        subsampling_channels=_int(enc, "subsampling_conv_channels", -1),
        pos_emb_max_len=_int(enc, "pos_emb_max_len", 5000),
    )


def ctc_weights(state_dict: Mapping[str, Tensor], *, hybrid: bool) -> dict[str, Tensor]:
    """The encoder and CTC head weights under ``ConformerCTC``'s names.

    Hybrid models keep the CTC head under ``ctc_decoder.``; their ``decoder.`` (RNNT
    prediction network) and ``joint.`` weights are dropped. Preprocessor buffers and a
    stray ``pos_enc.pe`` (a derived, non-persistent table) are not model weights.
    """
    weights: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith(NON_MODEL_PREFIXES) or key == "encoder.pos_enc.pe":
            continue
        if hybrid and key.startswith(("decoder.", "joint.")):
            continue
        renamed = key.removeprefix("ctc_") if hybrid and key.startswith("ctc_decoder.") else key
        weights[renamed] = tensor
    if hybrid and CTC_HEAD_KEY not in weights:
        raise CheckpointError("the hybrid checkpoint has no ctc_decoder.* weights (CTC head)")
    return weights


def ctc_vocabulary(
    config: Mapping[str, Any],
    head: Mapping[str, Any],
    kind: NemoModelKind,
    tokenizer_model: bytes | None = None,
) -> list[str]:
    """The CTC tokens without the blank, in output order."""
    listed = [str(token) for token in head.get("vocabulary") or []]
    if not kind.bpe:
        labels = listed or [str(label) for label in config.get("labels") or []]
        if not labels:
            raise CheckpointError("the config lists no vocabulary (decoder.vocabulary / labels)")
        return labels
    tokenizer = _section(config, "tokenizer", "config")
    tokenizer_type = str(tokenizer.get("type", "bpe")).lower()
    if tokenizer_type != "bpe":
        raise CheckpointError(
            f"tokenizer.type={tokenizer_type!r} is not supported (SentencePiece 'bpe' only)"
        )
    if tokenizer_model is not None:
        names = sentencepiece_pieces(tokenizer_model, "the archive's tokenizer model")
        if listed and listed != names:
            first = next(
                (i for i, (a, b) in enumerate(zip(listed, names, strict=False)) if a != b),
                min(len(listed), len(names)),
            )
            raise CheckpointError(
                f"the config vocabulary ({len(listed)} tokens) differs from the archive's "
                f"SentencePiece model ({len(names)} pieces) from index {first}"
            )
        listed = listed or names
    if not listed:
        raise CheckpointError("the config lists no vocabulary and the archive has no tokenizer")
    return listed


def _archive_tokenizer(checkpoint: LoadedCheckpoint, config: Mapping[str, Any]) -> bytes | None:
    """The SentencePiece model packed in the ``.nemo`` archive, if any.

    NeMo stores artifacts as ``<32 hex>_<basename>`` and refers to them from the config as
    ``nemo:<that name>``; an archive that has no such member but exactly one
    ``*tokenizer.model`` is read from that.
    """
    tokenizer = config.get("tokenizer")
    if not isinstance(tokenizer, Mapping) or not tarfile.is_tarfile(checkpoint.path):
        return None
    wanted = str(tokenizer.get("model_path") or "tokenizer.model")
    wanted = PurePosixPath(wanted.removeprefix("nemo:")).name
    return _read_member(checkpoint.path, wanted, fallback_suffix="tokenizer.model")


def _read_member(path: Path, name: str, fallback_suffix: str) -> bytes | None:
    try:
        with tarfile.open(path, "r:*") as archive:
            files = [m for m in archive.getmembers() if m.isfile()]
            chosen = [m for m in files if PurePosixPath(m.name).name == name]
            if not chosen:
                chosen = [m for m in files if m.name.endswith(fallback_suffix)]
            if len(chosen) != 1:
                return None
            handle = archive.extractfile(chosen[0])
            return handle.read() if handle is not None else None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is a damaged archive: {exc}") from exc


def _check_head_type(head: Mapping[str, Any]) -> None:
    target = str(head.get("_target_", "ConvASRDecoder"))
    if target.rsplit(".", 1)[-1] != "ConvASRDecoder":
        raise CheckpointError(f"CTC head {target} is not supported (ConvASRDecoder only)")
    if not head.get("add_blank", True):
        raise CheckpointError("CTC heads without a blank class (add_blank=false) are not supported")


def _check_head_sizes(head: Mapping[str, Any], spec: ConformerSpec) -> None:
    feat_in = head.get("feat_in")
    if isinstance(feat_in, int) and feat_in > 0 and feat_in != spec.d_model:
        raise CheckpointError(f"CTC head feat_in {feat_in} != encoder d_model {spec.d_model}")
    listed = head.get("num_classes")
    if isinstance(listed, int) and listed > 0 and listed + 1 != spec.num_classes:
        raise CheckpointError(
            f"CTC head num_classes {listed} != vocabulary size {spec.num_classes - 1}"
        )


def _att_context(value: Any) -> list[int]:
    """The context NeMo uses at inference: the first of a list of [left, right] pairs."""
    if not value:
        return [-1, -1]
    first = value[0] if isinstance(value[0], Sequence) else value
    return [int(v) for v in first]


def _section(config: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    section = config.get(key)
    if not isinstance(section, Mapping):
        raise CheckpointError(f"{where} has no {key} section")
    return section


def _int(section: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = section.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config value {key}={value!r} is not an integer")
    return value
