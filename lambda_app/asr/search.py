"""The decoder search after the acoustic model: one call per batch of utterances.

A bundle whose config has a ``transducer`` section decodes its encoder frames with the RNN-T
prediction network and joint (``asr.transducer``), greedily; any other bundle's log-probs
are decoded as CTC, greedily (``asr.ctc``) or by the prefix beam search with the bundle's
LM and the hotwords (``asr.ctc_beam``), as ``asr.decoding.Decoding`` says. All return
``asr.words.Hypothesis`` with absolute times.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .bundle import ModelBundle
from .ctc import greedy_decode
from .ctc_beam import BeamSettings, CtcBeamSearch, Fusion
from .decoding import Decoding
from .language_model import LanguageModel, load_language_model
from .transducer import OnnxTransducer
from .words import Hypothesis


class Search(Protocol):
    def __call__(
        self, outputs: Sequence[np.ndarray], offsets: Sequence[float], decoding: Decoding
    ) -> list[Hypothesis]:
        """The acoustic model's outputs of utterances starting at ``offsets`` seconds."""


class CtcSearch:
    def __init__(self, bundle: ModelBundle) -> None:
        self.vocabulary = bundle.vocabulary
        self.frame_seconds = bundle.config.frame_seconds
        self.config = bundle.config.decoder
        lm = self.config.lm
        # Loaded with the bundle (at init: SnapStart snapshots it); a compiled n-gram file
        # is memory-mapped, so this costs little whatever its size.
        self.language_model: LanguageModel | None = (
            load_language_model(bundle.root, lm) if lm is not None else None
        )
        self._local = threading.local()

    def __call__(
        self, outputs: Sequence[np.ndarray], offsets: Sequence[float], decoding: Decoding
    ) -> list[Hypothesis]:
        if decoding.method == "greedy":
            return [
                greedy_decode(log_probs, self.vocabulary, self.frame_seconds, time_offset=offset)
                for log_probs, offset in zip(outputs, offsets, strict=True)
            ]
        search = self._beam_search(decoding)
        return [
            search.decode(log_probs, time_offset=offset)
            for log_probs, offset in zip(outputs, offsets, strict=True)
        ]

    def _beam_search(self, decoding: Decoding) -> CtcBeamSearch:
        """One search per thread and decoding choice: its LM score cache is reused while
        requests keep the same weights and hotwords."""
        cached: tuple[Decoding, CtcBeamSearch] | None = getattr(self._local, "search", None)
        if cached is not None and cached[0] == decoding:
            return cached[1]
        config = self.config
        fusion = None
        if decoding.use_lm and self.language_model is not None:
            fusion = Fusion(self.language_model, decoding.alpha, decoding.beta, config.oov_penalty)
        search = CtcBeamSearch(
            self.vocabulary,
            self.frame_seconds,
            BeamSettings(
                beam_width=decoding.beam_width,
                token_min_logp=config.token_min_logp,
                top_k=config.top_k,
                beam_prune_logp=config.beam_prune_logp,
            ),
            fusion=fusion,
            hotwords=decoding.hotwords,
        )
        self._local.search = (decoding, search)
        return search


class TransducerGreedySearch:
    def __init__(self, bundle: ModelBundle) -> None:
        self.vocabulary = bundle.vocabulary
        self.frame_seconds = bundle.config.frame_seconds
        self.transducer = OnnxTransducer(bundle)

    def __call__(
        self, outputs: Sequence[np.ndarray], offsets: Sequence[float], decoding: Decoding
    ) -> list[Hypothesis]:
        if decoding.method != "greedy":
            raise ValueError("a transducer decodes greedily (asr.decoding.resolve refuses beam)")
        paths = self.transducer.greedy(outputs)
        return [
            path.to_hypothesis(self.vocabulary, self.frame_seconds, offset)
            for path, offset in zip(paths, offsets, strict=True)
        ]


def make_search(bundle: ModelBundle) -> Search:
    if bundle.config.transducer is not None:
        return TransducerGreedySearch(bundle)
    return CtcSearch(bundle)
