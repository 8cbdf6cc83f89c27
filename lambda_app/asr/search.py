"""The decoder search after the acoustic model: one call per batch of utterances.

A bundle whose config has a ``transducer`` section decodes its encoder frames with the RNN-T
prediction network and joint (``asr.transducer``); any other bundle's log-probs are decoded
as CTC (``asr.ctc``). Both return ``asr.words.Hypothesis`` with absolute times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .bundle import ModelBundle
from .ctc import greedy_decode
from .transducer import OnnxTransducer
from .words import Hypothesis


class Search(Protocol):
    def __call__(self, outputs: Sequence[np.ndarray], offsets: Sequence[float]) -> list[Hypothesis]:
        """The acoustic model's outputs of utterances starting at ``offsets`` seconds."""


class CtcGreedySearch:
    def __init__(self, bundle: ModelBundle) -> None:
        self.vocabulary = bundle.vocabulary
        self.frame_seconds = bundle.config.frame_seconds

    def __call__(self, outputs: Sequence[np.ndarray], offsets: Sequence[float]) -> list[Hypothesis]:
        return [
            greedy_decode(log_probs, self.vocabulary, self.frame_seconds, time_offset=offset)
            for log_probs, offset in zip(outputs, offsets, strict=True)
        ]


class TransducerGreedySearch:
    def __init__(self, bundle: ModelBundle) -> None:
        self.vocabulary = bundle.vocabulary
        self.frame_seconds = bundle.config.frame_seconds
        self.transducer = OnnxTransducer(bundle)

    def __call__(self, outputs: Sequence[np.ndarray], offsets: Sequence[float]) -> list[Hypothesis]:
        paths = self.transducer.greedy(outputs)
        return [
            path.to_hypothesis(self.vocabulary, self.frame_seconds, offset)
            for path, offset in zip(paths, offsets, strict=True)
        ]


def make_search(bundle: ModelBundle) -> Search:
    if bundle.config.transducer is not None:
        return TransducerGreedySearch(bundle)
    return CtcGreedySearch(bundle)
