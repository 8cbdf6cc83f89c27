"""The RNNT head of a NeMo FastConformer hybrid (``EncDecHybridRNNTCTC[BPE]Model``).

Config sections (NeMo ``nemo/collections/asr/modules/rnnt.py``):

- ``decoder``: ``RNNTDecoder(prednet: {pred_hidden, pred_rnn_layers, …}, vocab_size,
  normalization_mode, random_state_sampling, blank_as_pad)``; weights
  ``decoder.prediction.embed`` (vocab + 1 rows, the blank the zero padding row) and
  ``decoder.prediction.dec_rnn.lstm``;
- ``joint``: ``RNNTJoint(jointnet: {encoder_hidden, pred_hidden, joint_hidden, activation,
  dropout}, num_classes, vocabulary, num_extra_outputs)``; weights ``joint.enc``,
  ``joint.pred``, ``joint.joint_net.{1|2}`` (a Dropout sits before the Linear when
  ``jointnet.dropout`` is set);
- ``decoding.greedy.max_symbols`` (or ``max_symbols_per_step``; NeMo's default 10).

Options that change inference and that export/transducer.py does not reproduce (layer-
normalised or projected LSTMs, TDT durations, multi-blank, stateless predictors) are
refused; training-only ones (dropout, initialisation scales, random state sampling) are
inference-neutral.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from .conformer import ConformerSpec
from .quartznet import CheckpointError
from .transducer import Activation, TransducerSpec

MAX_SYMBOLS_DEFAULT = 10
_PREDNET_KEYS = {
    "pred_hidden", "pred_rnn_layers", "t_max", "dropout", "forget_gate_bias",
    "weights_init_scale", "hidden_hidden_bias_scale", "rnn_hidden_size",
}  # fmt: skip
_JOINTNET_KEYS = {"encoder_hidden", "pred_hidden", "joint_hidden", "activation", "dropout"}
# Decoding strategies whose result is the greedy one (NeMo's batched greedy is exact).
GREEDY_STRATEGIES = ("greedy", "greedy_batch")


def transducer_spec(config: Mapping[str, Any], encoder: ConformerSpec) -> TransducerSpec:
    """The RNNT head's sizes, checked against the encoder and the vocabulary."""
    decoder, joint = _part(config, "decoder", "RNNTDecoder"), _part(config, "joint", "RNNTJoint")
    prednet, jointnet = _sub(decoder, "prednet"), _sub(joint, "jointnet")
    for name, part, keys in (
        ("prednet", prednet, _PREDNET_KEYS),
        ("jointnet", jointnet, _JOINTNET_KEYS),
    ):
        unknown = sorted(set(part) - keys)
        if unknown:
            raise CheckpointError(f"{name} options {unknown} are not supported")
    if decoder.get("normalization_mode") is not None:
        raise CheckpointError(
            f"decoder.normalization_mode={decoder['normalization_mode']!r}: only plain LSTMs"
        )
    if not decoder.get("blank_as_pad", True):
        raise CheckpointError("decoder.blank_as_pad=false is not supported")
    pred_hidden = _int(prednet, "pred_hidden")
    rnn_hidden = _int(prednet, "rnn_hidden_size", -1)
    if rnn_hidden > 0 and rnn_hidden != pred_hidden:
        raise CheckpointError("prednet.rnn_hidden_size (a projected LSTM) is not supported")
    if _int(joint, "num_extra_outputs", 0):
        raise CheckpointError("joint.num_extra_outputs (TDT durations) is not supported")
    loss = config.get("loss")
    if isinstance(loss, Mapping) and loss.get("loss_name") not in (None, "default"):
        raise CheckpointError(f"loss {loss.get('loss_name')!r} (TDT/multi-blank) is not supported")
    if _int(jointnet, "encoder_hidden", encoder.d_model) != encoder.d_model:
        raise CheckpointError(
            f"jointnet.encoder_hidden {jointnet['encoder_hidden']} != d_model {encoder.d_model}"
        )
    if _int(jointnet, "pred_hidden", pred_hidden) != pred_hidden:
        raise CheckpointError(f"jointnet.pred_hidden {jointnet['pred_hidden']} != {pred_hidden}")
    vocabulary = encoder.num_classes - 1
    for part, key in ((decoder, "vocab_size"), (joint, "num_classes")):
        if key in part and _int(part, key) != vocabulary:
            raise CheckpointError(f"{key} {part[key]} != the vocabulary's {vocabulary} tokens")
    activation = str(jointnet.get("activation", "relu")).lower()
    if activation not in ("relu", "tanh", "sigmoid"):
        raise CheckpointError(f"jointnet.activation {activation!r} is not supported")
    return TransducerSpec(
        encoder=encoder,
        pred_hidden=pred_hidden,
        pred_layers=_int(prednet, "pred_rnn_layers", 1),
        joint_hidden=_int(jointnet, "joint_hidden"),
        activation=cast(Activation, activation),
        max_symbols_per_step=max_symbols(config),
    )


def joint_dropout(config: Mapping[str, Any]) -> bool:
    """Whether ``joint.joint_net`` holds a Dropout (which shifts the Linear to index 2)."""
    return bool(_sub(_part(config, "joint", "RNNTJoint"), "jointnet").get("dropout", 0.0))


def max_symbols(config: Mapping[str, Any]) -> int:
    decoding = config.get("decoding")
    greedy = decoding.get("greedy") if isinstance(decoding, Mapping) else None
    greedy = greedy if isinstance(greedy, Mapping) else {}
    keys = [key for key in ("max_symbols", "max_symbols_per_step") if key in greedy]
    if not keys:
        return MAX_SYMBOLS_DEFAULT
    value = greedy.get("max_symbols") or greedy.get("max_symbols_per_step")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        # NeMo reads 0 or null as "no limit"; a served decoder needs one.
        raise CheckpointError(
            f"decoding.greedy.{keys[0]}={greedy[keys[0]]!r}: set a positive limit of symbols "
            "per frame (NeMo's default is 10)"
        )
    return value


def decoding_strategy(config: Mapping[str, Any]) -> str:
    decoding = config.get("decoding")
    return str(decoding.get("strategy", "greedy_batch")) if isinstance(decoding, Mapping) else ""


def _part(config: Mapping[str, Any], key: str, cls: str) -> Mapping[str, Any]:
    part = config.get(key)
    if not isinstance(part, Mapping):
        raise CheckpointError(f"the hybrid config has no {key} section (its RNNT {cls})")
    target = str(part.get("_target_", cls))
    if target.rsplit(".", 1)[-1] != cls:
        raise CheckpointError(f"{key} {target} is not supported ({cls} only)")
    return part


def _sub(part: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = part.get(key)
    if not isinstance(value, Mapping):
        raise CheckpointError(f"the RNNT config has no {key} section")
    return value


def _int(section: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = section.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config value {key}={value!r} is not an integer")
    return value
