"""Speech emotion from an emotion bundle (GigaAM-Emo, or the demo classifier): numpy +
onnxruntime only.

``EmotionClassifier.classify`` gives one clip's label and every class's probability;
``classify_many`` runs many clips in padded batches (the graph masks the padding out of its
mean over time, so each clip gets its unbatched probabilities), sorted by length and capped
at ``BATCH_SECONDS`` of padded audio per run so a long list of segments never builds one
giant tensor; or one clip per run where the export found batches change results by more
than 1e-4 (``batch_invariant``: int8 graphs of deep models). A clip longer than the
bundle's ``max_window_seconds`` is cut into equal pieces, classified piece by piece, and its
probabilities averaged weighted by length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .acoustic_model import default_threads, onnx_session, require_names
from .emotion_bundle import EmotionBundle, is_emotion_bundle, load_emotion_bundle
from .errors import BundleError, EmptyAudio, InvalidRequest, NonFiniteAudio
from .frontend import make_frontend

__all__ = [
    "BATCH_SECONDS",
    "MIN_EMOTION_SECONDS",
    "Emotion",
    "EmotionClassifier",
    "is_emotion_bundle",
    "pad_features",
]

# Shorter clips hold a syllable or two: too little prosody to judge an emotion by (Dusha's
# utterances, which GigaAM-Emo was trained on, are seconds long).
MIN_EMOTION_SECONDS: Final[float] = 0.5
# Padded audio per onnxruntime run in classify_many. Small: GigaAM-Emo's Conv2d subsampling
# keeps [768, frames/2, 32] float maps and onnxruntime's arena keeps its peak; on the
# published shape (bench/emotion.py, 10 min of segments) 25 s batches peaked ~400 MB above
# 10 s ones and ran ~15 % slower, 60 s batches peaked at 3 GB. Longer clips run alone.
BATCH_SECONDS: Final[float] = 10.0

Probabilities = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Emotion:
    label: str
    probabilities: dict[str, float]  # every class, in the bundle's label order

    def to_dict(self) -> dict[str, Any]:
        rounded = {name: round(p, 4) for name, p in self.probabilities.items()}
        return {"label": self.label, "probabilities": rounded}


class EmotionClassifier:
    """An emotion bundle's model behind onnxruntime, with the bundle's own front end."""

    labels: tuple[str, ...]
    sample_rate: int
    model_id: str

    def __init__(self, bundle: EmotionBundle, threads: int | None = None) -> None:
        config = bundle.config
        self.bundle = bundle
        self.labels = config.labels
        self.sample_rate = config.frontend.sample_rate
        self.model_id = config.model_id
        self._frontend = make_frontend(config.frontend)
        self._io = io = config.model
        self._session = onnx_session(bundle.path(io.file), threads or default_threads())
        require_names(
            self._session, io.file, (io.features_input, io.lengths_input), (io.probs_output,)
        )
        output = next(o for o in self._session.get_outputs() if o.name == io.probs_output)
        classes = output.shape[-1] if output.shape else None
        if isinstance(classes, int) and classes != len(self.labels):
            raise BundleError(
                f"{io.file} gives {classes} probabilities, config.json names "
                f"{len(self.labels)} labels"
            )
        self._window = max(1, round(io.max_window_seconds * self.sample_rate))
        self._batch_frames = BATCH_SECONDS * self.sample_rate / config.frontend.hop_length
        self.threads = self._session.get_session_options().intra_op_num_threads

    @classmethod
    def load(cls, root: Path | str, *, threads: int | None = None) -> EmotionClassifier:
        """BundleError when ``root`` is not a complete, verified, uncorrupted emotion bundle."""
        return cls(load_emotion_bundle(root), threads)

    def classify(self, samples: np.ndarray) -> Emotion:
        """Float mono samples at ``sample_rate`` → the emotion (EmptyAudio when shorter
        than ``MIN_EMOTION_SECONDS``)."""
        return self.classify_many([samples])[0]

    def classify_many(self, clips: Sequence[np.ndarray]) -> list[Emotion]:
        """Each clip's emotion, as ``classify`` gives it, computed in padded batches."""
        features: list[np.ndarray] = []
        owners: list[int] = []
        weights: list[int] = []
        for index, clip in enumerate(clips):
            audio = self._checked(clip, index, len(clips))
            pieces = math.ceil(audio.size / self._window)
            for piece in np.array_split(audio, pieces):
                features.append(self._frontend(piece))
                owners.append(index)
                weights.append(piece.size)
        probabilities = self._probabilities(features)
        totals = np.zeros((len(clips), len(self.labels)))
        np.add.at(totals, owners, probabilities * np.asarray(weights)[:, None])
        return [self._emotion(row / row.sum()) for row in totals]

    def _checked(self, clip: np.ndarray, index: int, count: int) -> np.ndarray:
        where = f"clip {index}: " if count > 1 else ""
        audio = np.asarray(clip)
        if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
            raise InvalidRequest(
                f"{where}emotion needs float mono samples (a 1-D array), got {audio.dtype} "
                f"of shape {audio.shape}"
            )
        seconds = audio.size / self.sample_rate
        if seconds < MIN_EMOTION_SECONDS:
            raise EmptyAudio(
                f"{where}{seconds:.2f} s of audio is too short to judge an emotion by: "
                f"at least {MIN_EMOTION_SECONDS} s is needed"
            )
        if not np.isfinite(audio).all():
            raise NonFiniteAudio(f"{where}the audio holds NaN or infinite samples")
        return audio.astype(np.float32, copy=False)

    def _probabilities(self, features: Sequence[np.ndarray]) -> Probabilities:
        """[len(features), classes]: runs of similar lengths, padded audio capped per run."""
        out = np.zeros((len(features), len(self.labels)))
        if not self._io.batch_invariant:  # its batches would not give one-by-one results
            for index, matrix in enumerate(features):
                out[index] = self._run([matrix])[0]
            return out
        batch: list[int] = []
        for index in sorted(range(len(features)), key=lambda i: features[i].shape[1]):
            frames = features[index].shape[1]  # ascending: this clip is the batch's longest
            if batch and frames * (len(batch) + 1) > self._batch_frames:
                out[batch] = self._run([features[i] for i in batch])
                batch = []
            batch.append(index)
        if batch:
            out[batch] = self._run([features[i] for i in batch])
        return out

    def _run(self, features: Sequence[np.ndarray]) -> Probabilities:
        batch, lengths = pad_features(features)
        io = self._io
        (probs,) = self._session.run(
            [io.probs_output], {io.features_input: batch, io.lengths_input: lengths}
        )
        return np.asarray(probs, dtype=np.float64)

    def _emotion(self, probabilities: Probabilities) -> Emotion:
        best = int(np.argmax(probabilities))
        named = {name: float(p) for name, p in zip(self.labels, probabilities, strict=True)}
        return Emotion(self.labels[best], named)


def pad_features(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrices [n_mels, T_i] → zero-padded float32 [B, n_mels, max T_i] and int64
    lengths [B], the graph's two inputs."""
    longest = max(f.shape[1] for f in features)
    batch = np.zeros((len(features), features[0].shape[0], longest), dtype=np.float32)
    for row, item in zip(batch, features, strict=True):
        row[:, : item.shape[1]] = item
    return batch, np.array([f.shape[1] for f in features], dtype=np.int64)
