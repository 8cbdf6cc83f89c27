"""RNN-T heads in plain PyTorch: GigaAM's RNNTHead and NeMo's RNNTDecoder + RNNTJoint.

Both upstreams build the same maths under different key names, so one module set loads
both once the loaders rename the keys (``GIGAAM_KEYS``, ``nemo_keys``):

- prediction network: ``Embedding(classes, H, padding_idx=blank)`` → ``LSTM(H, H, L)``; the
  first step's input is a zero vector (upstream ``predict(None)``), which is what the blank's
  padding row holds, so the blank label stands for "start of sequence";
- joint: ``log_softmax(out(act(enc(f) + pred(g))))``, act ReLU (GigaAM) or NeMo's
  relu/tanh/sigmoid.

``greedy_path`` is upstream's greedy decoding (GigaAM ``RNNTGreedyDecoding``, NeMo
``GreedyRNNTInfer``) for one utterance, recording the joint's log-probs at every step: the
export gate's reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .conformer import ConformerEncoder, ConformerSpec
from .quartznet import CheckpointError

Activation = Literal["relu", "tanh", "sigmoid"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}

# GigaAM RNNTHead key → ours.
GIGAAM_KEYS = {
    "head.decoder.embed.": "predictor.embed.",
    "head.decoder.lstm.": "predictor.lstm.",
    "head.joint.enc.": "joint.enc.",
    "head.joint.pred.": "joint.pred.",
    "head.joint.joint_net.1.": "joint.out.",
}


def nemo_keys(joint_dropout: bool) -> dict[str, str]:
    """NeMo RNNTDecoder/RNNTJoint key → ours; the joint's Linear follows a Dropout when the
    config sets ``jointnet.dropout`` (joint_net = [activation, dropout?, linear])."""
    return {
        "decoder.prediction.embed.": "predictor.embed.",
        "decoder.prediction.dec_rnn.lstm.": "predictor.lstm.",
        "joint.enc.": "joint.enc.",
        "joint.pred.": "joint.pred.",
        f"joint.joint_net.{2 if joint_dropout else 1}.": "joint.out.",
    }


@dataclass(frozen=True)
class TransducerSpec:
    encoder: ConformerSpec  # its num_classes is the joint's: vocabulary + blank
    pred_hidden: int
    pred_layers: int
    joint_hidden: int
    activation: Activation = "relu"
    max_symbols_per_step: int = 10

    @property
    def num_classes(self) -> int:
        return self.encoder.num_classes

    @property
    def blank_id(self) -> int:
        return self.num_classes - 1

    def __post_init__(self) -> None:
        if min(self.pred_hidden, self.pred_layers, self.joint_hidden) < 1:
            raise CheckpointError(f"transducer sizes must be positive: {self}")
        if self.activation not in _ACTIVATIONS:
            raise CheckpointError(f"joint activation {self.activation!r} is not supported")
        if self.max_symbols_per_step < 1:
            raise CheckpointError("max_symbols_per_step must be >= 1")


class PredictionNetwork(nn.Module):
    def __init__(self, spec: TransducerSpec) -> None:
        super().__init__()
        self.blank_id = spec.blank_id
        self.embed = nn.Embedding(spec.num_classes, spec.pred_hidden, padding_idx=spec.blank_id)
        self.lstm = nn.LSTM(spec.pred_hidden, spec.pred_hidden, spec.pred_layers)

    def forward(self, labels: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step: labels [B] → output [B, H], h and c [L, B, H]. The blank label is the
        zero start-of-sequence input whatever its embedding row holds."""
        start = (labels == self.blank_id).unsqueeze(-1)
        embedded = self.embed(labels).masked_fill(start, 0.0)
        output, (h, c) = self.lstm(embedded.unsqueeze(0), (h, c))
        return output[0], h, c

    def initial_state(self, batch: int) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(self.lstm.num_layers, batch, self.lstm.hidden_size)
        return zeros, zeros.clone()


class JointNetwork(nn.Module):
    def __init__(self, spec: TransducerSpec) -> None:
        super().__init__()
        self.enc = nn.Linear(spec.encoder.d_model, spec.joint_hidden)
        self.pred = nn.Linear(spec.pred_hidden, spec.joint_hidden)
        self.activation = _ACTIVATIONS[spec.activation]()
        self.out = nn.Linear(spec.joint_hidden, spec.num_classes)

    def forward(self, encoded: Tensor, prediction: Tensor) -> Tensor:
        """encoded [B, T, D], prediction [B, U, H] → log-probs [B, T, U, V]."""
        hidden = self.enc(encoded).unsqueeze(2) + self.pred(prediction).unsqueeze(1)
        return torch.log_softmax(self.out(self.activation(hidden)), dim=-1)


class TransducerModel(nn.Module):
    """A Conformer encoder with an RNN-T prediction network and joint."""

    def __init__(self, spec: TransducerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = ConformerEncoder(spec.encoder)
        self.predictor = PredictionNetwork(spec)
        self.joint = JointNetwork(spec)


@dataclass
class GreedyPath:
    """One utterance's greedy decoding, and the joint's log-probs [V] at every step."""

    token_ids: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    step_log_probs: list[Tensor] = field(default_factory=list)


@torch.no_grad()
def greedy_path(model: TransducerModel, encoded: Tensor) -> GreedyPath:
    """Upstream's greedy decoding of encoded frames [T, D] (see the module doc)."""
    spec, path = model.spec, GreedyPath()
    h, c = model.predictor.initial_state(1)
    prediction, h, c = model.predictor(torch.tensor([spec.blank_id]), h, c)
    for t in range(encoded.shape[0]):
        for _ in range(spec.max_symbols_per_step):
            log_probs = model.joint(encoded[None, t : t + 1], prediction[None])[0, 0, 0]
            path.step_log_probs.append(log_probs)
            token = int(log_probs.argmax())
            if token == spec.blank_id:
                break
            path.token_ids.append(token)
            path.frames.append(t)
            prediction, h, c = model.predictor(torch.tensor([token]), h, c)
    return path


def rename_head_keys(
    weights: Mapping[str, Tensor], renames: Mapping[str, str]
) -> dict[str, Tensor]:
    """Keys under a head prefix of ``renames`` renamed; other keys as they are."""
    renamed = {}
    for key, tensor in weights.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        renamed[renames[prefix] + key[len(prefix) :] if prefix else key] = tensor
    return renamed
