"""What every checkpoint loader hands the export pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from asr.config import AnyFrontendConfig, ModelFamily, TokenKind, TransducerConfig
from asr.tokens import Vocabulary
from torch import nn

# Conformer windows: GigaAM refuses more than 25 s in one pass; attention memory grows with
# the square of the length, so the runtime cuts longer audio at quiet points.
CONFORMER_MAX_WINDOW_SECONDS = 25.0


@dataclass(frozen=True, kw_only=True)
class ModelDescription:
    """How to feed an acoustic model and read its output: front end, vocabulary, frame
    rate, the decoder (CTC, or an RNN-T's ``transducer``), and provenance. Enough to bundle
    already-exported ONNX graphs."""

    family: ModelFamily
    frontend: AnyFrontendConfig
    vocabulary: Vocabulary
    token_kind: TokenKind
    subsampling: int
    max_window_seconds: float | None = None
    # An RNN-T's prediction network and joint (None: the model's log-probs are CTC's).
    transducer: TransducerConfig | None = None
    # Provenance for config.json: checkpoint name and sha256, upstream name, architecture.
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SourceModel(ModelDescription):
    """A PyTorch model with the front end, vocabulary and provenance it was trained with.

    ``model`` runs in eval mode. CTC: ``model(features [B, n_mels, T], lengths [B])`` returns
    ``(log_probs [B, T', len(vocabulary)], encoded_lengths [B])``. Transducer: an
    ``export.transducer.TransducerModel`` (encoder, predictor, joint).
    """

    model: nn.Module

    @classmethod
    def of(cls, description: ModelDescription, model: nn.Module) -> SourceModel:
        described = {f.name: getattr(description, f.name) for f in fields(ModelDescription)}
        return cls(model=model, **described)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
