"""The systems the export gate and the evaluation run on features: PyTorch or ONNX, CTC or
transducer, each giving tokens, text and the log-probs the gate compares.

CTC log-probs are per frame, whatever was decoded. A transducer's are the joint's at each
step of a greedy path (per frame: one step per token emitted there, then the blank that
ends the frame unless ``max_symbols_per_step`` tokens were); ``run(features, along=…)``
computes them along *another* system's path (teacher forcing), so PyTorch and ONNX are
compared on the same steps even where their paths part. Each run encodes once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from asr.acoustic_model import OnnxAcousticModel
from asr.bundle import ModelBundle
from asr.ctc import greedy_decode
from asr.tokens import Vocabulary
from asr.transducer import OnnxTransducer
from asr.words import hypothesis

from .source_model import SourceModel
from .transducer import TransducerModel, greedy_path

LogProbsFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Output:
    """What a system makes of one utterance's features [n_mels, T]."""

    token_ids: tuple[int, ...]
    text: str
    # CTC [T', V]; transducer [steps of a greedy path, V] (empty when not asked for)
    log_probs: np.ndarray
    frames: tuple[int, ...] = ()  # transducer: each token's encoder frame


class System(Protocol):
    def run(
        self, features: np.ndarray, along: Output | None = None, *, with_log_probs: bool = True
    ) -> Output:
        """Tokens and text of ``features``; a transducer's log-probs at the steps of
        ``along``'s path (another system's output) or of its own, or none when
        ``with_log_probs`` is false. CTC log-probs are per frame whatever the path."""


class CtcSystem:
    def __init__(self, log_probs: LogProbsFn, vocabulary: Vocabulary, frame_seconds: float):
        self._log_probs = log_probs
        self.vocabulary = vocabulary
        self.frame_seconds = frame_seconds

    def run(
        self, features: np.ndarray, along: Output | None = None, *, with_log_probs: bool = True
    ) -> Output:
        log_probs = self._log_probs(features)
        decoded = greedy_decode(log_probs, self.vocabulary, self.frame_seconds)
        return Output(decoded.token_ids, decoded.text, log_probs)


class TorchTransducerSystem:
    def __init__(self, model: TransducerModel, vocabulary: Vocabulary) -> None:
        self.model = model.eval()
        self.vocabulary = vocabulary

    def encode(self, features: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            batch = torch.from_numpy(features[None].astype(np.float32))
            encoded: torch.Tensor = self.model.encoder(batch, torch.tensor([features.shape[1]]))[0]
        return encoded[0]

    def run(
        self, features: np.ndarray, along: Output | None = None, *, with_log_probs: bool = True
    ) -> Output:
        encoded = self.encode(features)
        path = greedy_path(self.model, encoded)
        if along is not None and with_log_probs:
            log_probs = self._along(encoded, along)
        elif path.step_log_probs:  # its own path's, recorded while decoding
            log_probs = torch.stack(path.step_log_probs).numpy()
        else:
            log_probs = np.zeros((0, self.model.spec.num_classes), np.float32)
        return _output(self.vocabulary, path.token_ids, path.frames, log_probs)

    def _along(self, encoded: torch.Tensor, path: Output) -> np.ndarray:
        predictor, joint = self.model.predictor, self.model.joint
        with torch.no_grad():
            h, c = predictor.initial_state(1)
            labels = [self.model.spec.blank_id, *path.token_ids]
            predictions = []
            for label in labels:
                prediction, h, c = predictor(torch.tensor([label]), h, c)
                predictions.append(prediction[0])
            frames, contexts = path_steps(
                path, encoded.shape[0], self.model.spec.max_symbols_per_step
            )
            stacked = torch.stack(predictions)[contexts]
            log_probs = joint(encoded[frames][:, None], stacked[:, None])[:, 0, 0]
        return np.asarray(log_probs.numpy(), dtype=np.float32)


class OnnxTransducerSystem:
    def __init__(self, bundle: ModelBundle) -> None:
        self.encoder = OnnxAcousticModel(bundle, threads=1)
        self.transducer = OnnxTransducer(bundle)
        self.vocabulary = bundle.vocabulary

    def run(
        self, features: np.ndarray, along: Output | None = None, *, with_log_probs: bool = True
    ) -> Output:
        encoded = self.encoder(features)
        path = self.transducer.greedy([encoded])[0]
        output = _output(self.vocabulary, path.token_ids, path.frames, np.zeros((0, 0)))
        if not with_log_probs:
            return output
        log_probs = self._along(encoded, along or output)
        return Output(output.token_ids, output.text, log_probs, output.frames)

    def _along(self, encoded: np.ndarray, path: Output) -> np.ndarray:
        transducer = self.transducer
        prediction, h, c = transducer.initial_state(1)
        predictions = [prediction[0]]
        for token in path.token_ids:
            prediction, h, c = transducer.predict(np.array([token], np.int64), h, c)
            predictions.append(prediction[0])
        frames, contexts = path_steps(
            path, encoded.shape[0], transducer.config.max_symbols_per_step
        )
        if not frames:
            return np.zeros((0, transducer.num_classes), np.float32)
        return transducer.joint(encoded[frames], np.stack(predictions)[contexts])


def path_steps(path: Output, num_frames: int, max_symbols: int) -> tuple[list[int], list[int]]:
    """(frame, tokens emitted before it) of every joint evaluation of a greedy path."""
    emitted_at = Counter(path.frames)
    frames: list[int] = []
    contexts: list[int] = []
    context = 0
    for t in range(num_frames):
        count = emitted_at.get(t, 0)
        steps = count if count == max_symbols else count + 1  # + the blank ending frame t
        frames += [t] * steps
        contexts += range(context, context + steps)
        context += count
    return frames, contexts


def torch_system(source: SourceModel) -> System:
    """The PyTorch original as the gate's reference."""
    if isinstance(source.model, TransducerModel):
        return TorchTransducerSystem(source.model, source.vocabulary)
    frame_seconds = source.frontend.hop_length * source.subsampling / source.frontend.sample_rate
    return CtcSystem(torch_log_probs(source.model), source.vocabulary, frame_seconds)


def onnx_system(bundle: ModelBundle) -> System:
    """A (staged) bundle's graphs, as the runtime runs them, one thread."""
    if bundle.config.transducer is not None:
        return OnnxTransducerSystem(bundle)
    model = OnnxAcousticModel(bundle, threads=1)
    return CtcSystem(model, bundle.vocabulary, bundle.config.frame_seconds)


def torch_log_probs(model: torch.nn.Module) -> LogProbsFn:
    def run(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            batch = torch.from_numpy(features[None].astype(np.float32))
            lengths = torch.tensor([features.shape[1]], dtype=torch.int64)
            log_probs, _ = model(batch, lengths)
        return np.asarray(log_probs[0].numpy(), dtype=np.float32)

    return run


def _output(
    vocabulary: Vocabulary, token_ids: Sequence[int], frames: Sequence[int], log_probs: np.ndarray
) -> Output:
    times = np.zeros(len(token_ids))
    text = hypothesis(vocabulary, token_ids, times, times, times + 1.0).text
    return Output(tuple(token_ids), text, log_probs, tuple(frames))
