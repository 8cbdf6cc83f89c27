"""The bundle's language model behind one Protocol: the compiled n-gram file (always
available) or a KenLM binary read by the ``kenlm`` module (where the runtime has it).

Scores are natural logs; a state is whatever the model needs to continue a sentence
(hashable: the beam search caches scores by state and word).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Protocol

from .decoding import LanguageModelConfig
from .errors import BundleError
from .ngram import NgramLM

LN10 = math.log(10.0)


class LanguageModel(Protocol):
    @property
    def begin_state(self) -> Hashable: ...

    def score(self, state: Any, word: str) -> tuple[float, Hashable]:
        """log p(word | state) and the next state; ``</s>`` ends the sentence."""

    def knows(self, word: str) -> bool: ...

    def is_prefix(self, text: str) -> bool:
        """Whether some word of the LM's vocabulary starts with ``text``."""


class CompiledNgram:
    def __init__(self, path: Path) -> None:
        self.lm = NgramLM(path)

    @property
    def begin_state(self) -> Hashable:
        return self.lm.begin_state

    def score(self, state: Any, word: str) -> tuple[float, Hashable]:
        return self.lm.score(state, self.lm.word_id(word))

    def knows(self, word: str) -> bool:
        return self.lm.word_id(word) >= 0

    def is_prefix(self, text: str) -> bool:
        return self.lm.is_prefix(text)


class KenlmBinary:
    """A KenLM binary (or ARPA) through the kenlm module; its vocabulary from the unigrams
    file, since KenLM does not list it."""

    def __init__(self, path: Path, unigrams: Path | None) -> None:
        try:
            import kenlm  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
        except ImportError as exc:
            raise BundleError(
                f"the bundle's language model {path.name} is a KenLM binary, which needs the "
                "kenlm module in the runtime (pip install kenlm, with a C++ compiler); or "
                "attach the ARPA file instead, which this runtime reads without it"
            ) from exc
        self._kenlm = kenlm
        try:
            self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError) as exc:
            raise BundleError(f"kenlm cannot load {path.name}: {exc}") from exc
        words = unigrams.read_text(encoding="utf-8").split() if unigrams else []
        self.words = sorted(set(words))
        self._known = frozenset(self.words)
        start = kenlm.State()
        self.model.BeginSentenceWrite(start)
        self._begin = start

    @property
    def begin_state(self) -> Hashable:
        begin: Hashable = self._begin
        return begin

    def score(self, state: Any, word: str) -> tuple[float, Hashable]:
        after = self._kenlm.State()
        log10 = self.model.BaseScore(state, word, after)
        return log10 * LN10, after

    def knows(self, word: str) -> bool:
        return word in self._known or (not self._known and word in self.model)

    def is_prefix(self, text: str) -> bool:
        if not self.words:
            return True
        index = bisect.bisect_left(self.words, text)
        return index < len(self.words) and self.words[index].startswith(text)


def load_language_model(root: Path, config: LanguageModelConfig) -> LanguageModel:
    if config.kind == "ngram":
        return CompiledNgram(root / config.file)
    unigrams = root / config.unigrams_file if config.unigrams_file else None
    return KenlmBinary(root / config.file, unigrams)
