"""GigaAM's heads as its cfg describes them: ``CTCHead``, or ``RNNTHead`` (an
``RNNTDecoder`` prediction network and an ``RNNTJoint``), with their decoding sections.

The head's ``_target_`` says which (``cfg.model_class``, where present, must agree). An RNNT
cfg (upstream gigaam/decoder.py)::

    head: {_target_: gigaam.decoder.RNNTHead,
           decoder: {pred_hidden, pred_rnn_layers, num_classes},
           joint: {enc_hidden, pred_hidden, joint_hidden, num_classes}}
    decoding: {_target_: gigaam.decoding.RNNTGreedyDecoding, vocabulary | model_path,
               max_symbols_per_step (default 10)}

GigaAM-Emo (upstream ``GigaAMEmo``) has no decoding section: ``id2name`` names the classes
and ``head`` (hydra-instantiated) maps the time-averaged encoder output to their logits. Its
published cfg is not in upstream's repository; ``GigaAMEmo`` calls ``head(pooled)`` on a
[B, d_model] tensor and gigaam/decoder.py defines no classification head, so a
``torch.nn.Linear`` (``in_features``, ``out_features``, ``bias``) is what is read here, and
any other head is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .conformer import ConformerSpec
from .quartznet import CheckpointError
from .transducer import TransducerSpec

ModelClass = Literal["ctc", "rnnt"]
HEAD_TARGETS: dict[ModelClass, str] = {
    "ctc": "gigaam.decoder.CTCHead",
    "rnnt": "gigaam.decoder.RNNTHead",
}
DECODING_TARGETS: dict[ModelClass, str] = {
    "ctc": "gigaam.decoding.CTCGreedyDecoding",
    "rnnt": "gigaam.decoding.RNNTGreedyDecoding",
}
# RNNTGreedyDecoding's default.
MAX_SYMBOLS_PER_STEP = 10
_DECODING_KEYS = {"_target_", "vocabulary", "model_path"}
_RNNT_DECODER_KEYS = {"pred_hidden", "pred_rnn_layers", "num_classes"}
_RNNT_JOINT_KEYS = {"enc_hidden", "pred_hidden", "joint_hidden", "num_classes"}
EMOTION_HEAD_TARGETS = ("torch.nn.Linear", "torch.nn.modules.linear.Linear")
_EMOTION_HEAD_KEYS = {"_target_", "in_features", "out_features", "bias", "device", "dtype"}


def is_emotion_cfg(cfg: Mapping[str, Any]) -> bool:
    """GigaAM-Emo's cfg: it names its classes (``id2name``) where ASR cfgs have a decoding."""
    return "id2name" in cfg or cfg.get("model_class") == "emo"


def emotion_labels(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """``cfg.id2name`` in class order: a list, or a mapping from 0..N-1 (ints or digits)."""
    names = cfg.get("id2name")
    if isinstance(names, Mapping):
        try:
            by_index = {int(key): value for key, value in names.items()}
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"cfg.id2name keys must be class indices: {exc}") from exc
        if sorted(by_index) != list(range(len(by_index))):
            raise CheckpointError(f"cfg.id2name indices {sorted(by_index)} are not 0..N-1")
        names = [by_index[index] for index in range(len(by_index))]
    if not isinstance(names, list | tuple) or len(names) < 2:
        raise CheckpointError("cfg.id2name must list at least two class names")
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise CheckpointError("cfg.id2name must hold non-empty strings")
    if len(set(names)) != len(names):
        raise CheckpointError(f"cfg.id2name repeats a name: {list(names)}")
    return tuple(str(name) for name in names)


def emotion_head(cfg: Mapping[str, Any], d_model: int, classes: int) -> bool:
    """Check ``cfg.head`` (a Linear from d_model to the classes); whether it has a bias."""
    head = section(cfg, "head")
    target = head.get("_target_")
    if target not in EMOTION_HEAD_TARGETS:
        raise CheckpointError(
            f"cfg.head is {target!r}; a GigaAM-Emo head is read as torch.nn.Linear only"
        )
    unknown = sorted(set(head) - _EMOTION_HEAD_KEYS)
    if unknown:
        raise CheckpointError(f"head options {unknown} are not a Linear's")
    if integer(head, "in_features") != d_model:
        raise CheckpointError(f"head.in_features {head['in_features']} != d_model {d_model}")
    if integer(head, "out_features") != classes:
        raise CheckpointError(
            f"head.out_features {head['out_features']} != {classes} names in cfg.id2name"
        )
    bias = head.get("bias", True)
    if not isinstance(bias, bool):
        raise CheckpointError(f"head.bias {bias!r} is not a boolean")
    return bias


def model_class(cfg: Mapping[str, Any]) -> ModelClass:
    """The head's ``_target_`` decides, as it does for upstream's hydra (v2-era cfgs have
    no ``model_class``); a ``model_class`` that is there must agree."""
    declared = cfg.get("model_class")
    if declared is not None and declared not in HEAD_TARGETS:
        raise CheckpointError(
            f"model_class {declared!r}: only ASR models (ctc, rnnt) are supported here"
        )
    target = section(cfg, "head").get("_target_")
    by_head = {head: kind for kind, head in HEAD_TARGETS.items()}.get(str(target))
    if target is None:
        by_head = declared or "ctc"
    if by_head is None:
        raise CheckpointError(
            f"cfg.head is {target!r}; only {' or '.join(HEAD_TARGETS.values())} is supported"
        )
    if declared is not None and declared != by_head:
        raise CheckpointError(f"cfg.head is {target!r} but model_class is {declared!r}")
    kind: ModelClass = by_head
    return kind


def head_classes(cfg: Mapping[str, Any], d_model: int) -> int:
    """The classes the head outputs (vocabulary + blank), after checking the head's cfg."""
    kind = model_class(cfg)
    head = section(cfg, "head")
    require_target(head, "head", HEAD_TARGETS[kind])
    if kind == "ctc":
        if set(head) - {"_target_", "feat_in", "num_classes"}:
            raise CheckpointError(f"head options {sorted(head)} are not a CTC head's")
        if integer(head, "feat_in", d_model) != d_model:
            raise CheckpointError(f"head.feat_in {head['feat_in']} != encoder.d_model {d_model}")
        if "num_classes" not in head:
            raise CheckpointError("cfg.head has no num_classes")
        return integer(head, "num_classes")
    decoder, joint = _rnnt_sections(head)
    classes = integer(joint, "num_classes")
    if integer(decoder, "num_classes") != classes:
        raise CheckpointError(
            f"head.decoder.num_classes {decoder['num_classes']} != head.joint.num_classes {classes}"
        )
    if integer(joint, "enc_hidden") != d_model:
        raise CheckpointError(f"head.joint.enc_hidden {joint['enc_hidden']} != d_model {d_model}")
    return classes


def transducer_spec(cfg: Mapping[str, Any], encoder: ConformerSpec) -> TransducerSpec:
    decoder, joint = _rnnt_sections(section(cfg, "head"))
    pred_hidden = integer(decoder, "pred_hidden")
    if integer(joint, "pred_hidden") != pred_hidden:
        raise CheckpointError(
            f"head.joint.pred_hidden {joint['pred_hidden']} != head.decoder.pred_hidden "
            f"{pred_hidden}"
        )
    return TransducerSpec(
        encoder=encoder,
        pred_hidden=pred_hidden,
        pred_layers=integer(decoder, "pred_rnn_layers"),
        joint_hidden=integer(joint, "joint_hidden"),
        activation="relu",  # RNNTJoint: Sequential(ReLU(), Linear(...))
        max_symbols_per_step=max_symbols(cfg),
    )


def decoding_section(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = model_class(cfg)
    decoding = section(cfg, "decoding")
    require_target(decoding, "decoding", DECODING_TARGETS[kind])
    allowed = _DECODING_KEYS | ({"max_symbols_per_step"} if kind == "rnnt" else set())
    unknown = sorted(set(decoding) - allowed)
    if unknown:
        raise CheckpointError(f"decoding options {unknown} are not supported")
    return decoding


def max_symbols(cfg: Mapping[str, Any]) -> int:
    decoding = decoding_section(cfg)
    value = integer(decoding, "max_symbols_per_step", MAX_SYMBOLS_PER_STEP)
    if value < 1:
        raise CheckpointError(f"decoding.max_symbols_per_step {value} must be >= 1")
    return value


def _rnnt_sections(head: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    if set(head) - {"_target_", "decoder", "joint"}:
        raise CheckpointError(f"head options {sorted(head)} are not an RNNT head's")
    decoder, joint = section(head, "decoder"), section(head, "joint")
    for name, part, keys in (
        ("decoder", decoder, _RNNT_DECODER_KEYS),
        ("joint", joint, _RNNT_JOINT_KEYS),
    ):
        unknown, missing = sorted(set(part) - keys), sorted(keys - set(part))
        if unknown or missing:
            raise CheckpointError(
                f"head.{name}: unsupported options {unknown}, missing {missing} "
                "(upstream RNNTDecoder/RNNTJoint arguments)"
            )
    return decoder, joint


def section(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = cfg.get(name)
    if not isinstance(value, Mapping):
        raise CheckpointError(f"cfg has no {name!r} section")
    return value


def require_target(part: Mapping[str, Any], name: str, target: str) -> None:
    found = part.get("_target_", target)
    if found != target:
        raise CheckpointError(f"cfg.{name} is {found!r}; only {target} is supported here")


def integer(part: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = part.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"cfg option {key}={value!r} is not an integer")
    return value
