"""Greedy RNN-T decoding over the bundle's decoder and joint graphs, batched over utterances.

The rules are upstream's (GigaAM ``RNNTGreedyDecoding``, NeMo ``GreedyRNNTInfer``):

- the prediction network starts from a zero input (the blank label) and a zero state;
- at encoder frame t the joint scores (frame t, prediction output); a blank moves to frame
  t + 1 with the prediction unchanged; any other token is emitted at frame t, fed to the
  prediction network, and frame t is scored again with its new output;
- at most ``max_symbols_per_step`` tokens are emitted at one frame, then the frame advances.

Every utterance of a batch takes the same decisions it would alone: the utterances still at
a frame's inner loop are scored together (one joint run), and those that emitted are fed
together (one decoder run). Per token: its frame, and its probability under the joint's
softmax (the confidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .acoustic_model import onnx_session, require_names
from .bundle import ModelBundle
from .errors import BundleError
from .tokens import Vocabulary
from .words import Hypothesis, hypothesis

# The decoder and joint are small (one LSTM step, two projections): a second thread costs
# more in hand-offs than it saves.
_STEP_THREADS = 1


@dataclass
class TransducerPath:
    """One utterance's greedy result: tokens, the frame each was emitted at, and its
    probability."""

    token_ids: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)

    def to_hypothesis(
        self, vocabulary: Vocabulary, frame_seconds: float, time_offset: float = 0.0
    ) -> Hypothesis:
        """Token times are their frame: [frame, frame + 1) × frame_seconds (GigaAM's
        ``frames_to_words``)."""
        frames = np.asarray(self.frames, dtype=np.float64)
        return hypothesis(
            vocabulary,
            self.token_ids,
            frames * frame_seconds + time_offset,
            (frames + 1) * frame_seconds + time_offset,
            np.asarray(self.confidences, dtype=np.float64),
        )


class OnnxTransducer:
    """The bundle's decoder.onnx and joint.onnx, and greedy decoding with them."""

    def __init__(self, bundle: ModelBundle) -> None:
        config = bundle.config.transducer
        if config is None:
            raise BundleError(f"{bundle.root} is not a transducer bundle")
        self.config = config
        self.blank_id = bundle.vocabulary.blank_id
        self.num_classes = len(bundle.vocabulary)
        self._decoder = onnx_session(bundle.root / config.decoder_file, _STEP_THREADS)
        require_names(
            self._decoder, config.decoder_file, config.decoder_inputs, config.decoder_outputs
        )
        self._joint = onnx_session(bundle.root / config.joint_file, _STEP_THREADS)
        require_names(self._joint, config.joint_file, config.joint_inputs, (config.joint_output,))

    def initial_state(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prediction after the start-of-sequence input: output [B, H], h, c."""
        shape = (self.config.pred_layers, batch, self.config.pred_hidden)
        zeros = np.zeros(shape, dtype=np.float32)
        labels = np.full(batch, self.blank_id, dtype=np.int64)
        return self.predict(labels, zeros, zeros)

    def predict(
        self, labels: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prediction-network step: labels [B] → output [B, H], h and c [L, B, H]."""
        names = self.config.decoder_inputs
        output, h_out, c_out = self._decoder.run(
            list(self.config.decoder_outputs),
            {names[0]: labels.reshape(-1, 1), names[1]: h, names[2]: c},
        )
        return np.asarray(output).reshape(labels.shape[0], -1), h_out, c_out

    def joint(self, encoded: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """Log-probs [B, V] of encoder frames [B, D] with prediction outputs [B, H]."""
        enc_name, dec_name = self.config.joint_inputs
        (log_probs,) = self._joint.run(
            [self.config.joint_output],
            {
                enc_name: np.ascontiguousarray(encoded[:, :, None]),
                dec_name: np.ascontiguousarray(prediction[:, :, None]),
            },
        )
        return np.asarray(log_probs).reshape(encoded.shape[0], self.num_classes)

    def greedy(self, encoded: Sequence[np.ndarray]) -> list[TransducerPath]:
        """Greedy paths of utterances' encoded frames [T_i, D], decoded together.

        Rows are held longest first, so the utterances still running at frame t are a
        prefix of the batch (a slice, not a gather, for the frame's first joint run)."""
        if len(encoded) == 1:
            return [self._greedy_one(np.ascontiguousarray(encoded[0], dtype=np.float32))]
        order = sorted(range(len(encoded)), key=lambda i: -encoded[i].shape[0])
        paths = [TransducerPath() for _ in encoded]
        if not encoded:
            return paths
        lengths = np.array([encoded[i].shape[0] for i in order], dtype=np.int64)
        frames = np.zeros((len(encoded), int(lengths[0]), encoded[0].shape[1]), np.float32)
        for row, index in zip(frames, order, strict=True):
            row[: encoded[index].shape[0]] = encoded[index]
        prediction, h, c = self.initial_state(len(encoded))
        running = len(encoded)
        for t in range(frames.shape[1]):
            while lengths[running - 1] <= t:
                running -= 1
            active = np.arange(running)
            log_probs = self.joint(frames[:running, t], prediction[:running])
            for symbol in range(1, self.config.max_symbols_per_step + 1):
                best = log_probs.argmax(axis=1)
                emitted = best != self.blank_id
                if not emitted.any():
                    break
                active, tokens = active[emitted], best[emitted]
                probabilities = np.exp(log_probs[emitted, tokens].astype(np.float64))
                for row, token, probability in zip(
                    active.tolist(), tokens.tolist(), probabilities.tolist(), strict=True
                ):
                    path = paths[order[row]]
                    path.token_ids.append(token)
                    path.frames.append(t)
                    path.confidences.append(probability)
                output, h_new, c_new = self.predict(tokens, h[:, active], c[:, active])
                prediction[active], h[:, active], c[:, active] = output, h_new, c_new
                if symbol < self.config.max_symbols_per_step:  # else the frame is done
                    log_probs = self.joint(frames[active, t], prediction[active])
        return paths

    def _greedy_one(self, frames: np.ndarray) -> TransducerPath:
        """``greedy`` for one utterance (the API's case), without the batch bookkeeping."""
        path = TransducerPath()
        prediction, h, c = self.initial_state(1)
        blank, cap = self.blank_id, self.config.max_symbols_per_step
        for t in range(frames.shape[0]):
            frame = frames[t : t + 1]
            for _ in range(cap):
                log_probs = self.joint(frame, prediction)[0]
                token = int(log_probs.argmax())
                if token == blank:
                    break
                path.token_ids.append(token)
                path.frames.append(t)
                path.confidences.append(float(np.exp(np.float64(log_probs[token]))))
                prediction, h, c = self.predict(np.array([token], dtype=np.int64), h, c)
        return path
