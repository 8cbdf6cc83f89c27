"""Greedy CTC decoding with word timestamps and confidences, vectorised over frames.

A *run* is a maximal stretch of frames with the same argmax token. Every run of a
non-blank token emits that token once (CTC collapse: repeats merge, blanks separate).

- token time: from the run's first frame to the end of its last frame;
- token confidence: the highest softmax probability within its run (NeMo's "max_prob"
  measure taken where the token fires);
- words and their confidences: ``asr.words``.
"""

from __future__ import annotations

import numpy as np

from .tokens import Vocabulary
from .words import EMPTY, Hypothesis, hypothesis


def frame_argmax(log_probs: np.ndarray) -> np.ndarray:
    """Best token per frame, [T] int64."""
    return np.asarray(log_probs.argmax(axis=-1), dtype=np.int64)


def greedy_decode(
    log_probs: np.ndarray,
    vocabulary: Vocabulary,
    frame_seconds: float,
    *,
    time_offset: float = 0.0,
) -> Hypothesis:
    """Decode ``log_probs`` [T, V] (log-softmax over V) of one utterance."""
    if log_probs.ndim != 2 or log_probs.shape[1] != len(vocabulary):
        raise ValueError(f"log_probs must be [T, {len(vocabulary)}], got {list(log_probs.shape)}")
    num_frames = log_probs.shape[0]
    if num_frames == 0:
        return EMPTY

    best = frame_argmax(log_probs)
    best_logp = np.take_along_axis(log_probs, best[:, None], axis=1)[:, 0]
    run_starts = np.concatenate(([0], np.flatnonzero(np.diff(best)) + 1))
    run_ends = np.append(run_starts[1:], num_frames)  # exclusive
    run_tokens = best[run_starts]
    run_best_prob = np.exp(np.maximum.reduceat(best_logp, run_starts).astype(np.float64))

    emitted = run_tokens != vocabulary.blank_id
    token_ids = run_tokens[emitted]
    starts = run_starts[emitted] * frame_seconds + time_offset
    ends = run_ends[emitted] * frame_seconds + time_offset
    confidences = run_best_prob[emitted]

    return hypothesis(vocabulary, token_ids.tolist(), starts, ends, confidences)
