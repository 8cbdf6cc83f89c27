"""GigaAM-Emo (upstream ``GigaAMEmo``): the GigaAM Conformer encoder, the mean of its output
over time, a Linear head and a softmax over ``cfg.id2name`` (Dusha: angry, sad, neutral,
positive).

Upstream averages every encoder frame of one unpadded clip. ``EmotionModel`` averages only
each clip's valid frames, so a padded batch gives every clip its unbatched probabilities
(upstream's own ONNX export averages the padding too). The state_dict keys are upstream's
(``encoder.*``, ``head.weight``/``head.bias``): no renaming, strict load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from asr.config import GigaamMelConfig
from torch import Tensor, nn

from .conformer import ConformerEncoder, ConformerSpec, load_weights
from .gigaam import (
    GigaamCheckpoint,
    conformer_spec,
    describe,
    frontend_config,
    read_gigaam,
)
from .gigaam_heads import emotion_head, emotion_labels, is_emotion_cfg
from .quartznet import CheckpointError
from .source_model import CONFORMER_MAX_WINDOW_SECONDS


class EmotionModel(nn.Module):
    """features [B, n_mels, T] + lengths [B] → class probabilities [B, classes]."""

    def __init__(self, spec: ConformerSpec, classes: int, *, bias: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = ConformerEncoder(spec)
        self.head = nn.Linear(spec.d_model, classes, bias=bias)

    def pooled(self, features: Tensor, lengths: Tensor) -> Tensor:
        """The mean of each clip's valid encoder frames, [B, d_model]."""
        encoded, encoded_lengths = self.encoder(features, lengths)
        steps = torch.arange(encoded.shape[1], device=encoded.device)
        valid = (steps[None, :] < encoded_lengths[:, None]).to(encoded.dtype)
        # Multiply and sum rather than a matrix product: the int8 quantiser leaves it alone.
        total = (encoded * valid[:, :, None]).sum(dim=1)
        mean: Tensor = total / encoded_lengths.clamp(min=1)[:, None].to(encoded.dtype)
        return mean

    def logits(self, features: Tensor, lengths: Tensor) -> Tensor:
        out: Tensor = self.head(self.pooled(features, lengths))
        return out

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return torch.softmax(self.logits(features, lengths), dim=-1)


@dataclass(frozen=True, kw_only=True)
class EmotionSource:
    """An emotion classifier with the front end it was trained on and its class names."""

    model: EmotionModel
    frontend: GigaamMelConfig
    labels: tuple[str, ...]
    max_window_seconds: float = CONFORMER_MAX_WINDOW_SECONDS
    # Provenance for config.json: checkpoint name and sha256, upstream name, architecture.
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def subsampling(self) -> int:
        return self.model.spec.subsampling_factor

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def probabilities(self, features: Tensor, lengths: Tensor) -> Tensor:
        with torch.no_grad():
            out: Tensor = self.model(features, lengths)
        return out


def load_gigaam_emo(path: Path) -> EmotionSource:
    """A GigaAM-Emo ``.ckpt`` (upstream's layout) as an ``EmotionSource``."""
    return emotion_source(read_gigaam(path))


def emotion_source(checkpoint: GigaamCheckpoint) -> EmotionSource:
    cfg, name = checkpoint.cfg, checkpoint.path.name
    if not is_emotion_cfg(cfg):
        raise CheckpointError(f"{name} has no cfg.id2name: not a GigaAM-Emo checkpoint")
    labels = emotion_labels(cfg)
    spec = conformer_spec(cfg, num_classes=len(labels))
    bias = emotion_head(cfg, spec.d_model, len(labels))
    frontend = frontend_config(cfg, checkpoint.state_dict)
    if frontend.n_mels != spec.feat_in:
        raise CheckpointError(
            f"preprocessor makes {frontend.n_mels} mel bins, encoder.feat_in is {spec.feat_in}"
        )
    model = EmotionModel(spec, len(labels), bias=bias)
    load_weights(model, checkpoint.model_weights(), name)
    model.eval()
    source = {
        **checkpoint.source,
        "architecture": describe(spec, head="Emo")
        + "; masked mean over time, Linear head, softmax",
        "labels": list(labels),
    }
    source["parameters"] = sum(p.numel() for p in model.parameters())
    return EmotionSource(model=model, frontend=frontend, labels=labels, source=source)
