"""CTC prefix beam search with shallow fusion of a word LM and hotword biasing.

The search of Hannun et al. (2014, "First-Pass Large Vocabulary Continuous Speech
Recognition using Bi-Directional Recurrent DNNs"), as pyctcdecode and flashlight run it:
every prefix keeps two log-probabilities, of the alignments ending in a blank and of those
ending in its last token, so repeats merge exactly as CTC collapses them. A prefix's score
is its acoustic log-prob plus

- for each completed word, ``alpha * log p_LM(word | history) + beta`` (a word ends at a
  space token, or where a SentencePiece "▁" piece starts the next one; the last word and
  ``</s>`` are scored at the end of the utterance),
- ``oov_penalty`` while its partial word is the start of no LM word, and for a finished
  word the LM does not know (waived for hotwords),
- the hotword bonus (``asr.hotwords``).

Pruning: per frame only tokens with log-prob >= ``token_min_logp`` (at most ``top_k``, the
blank always) are tried; ``beam_width`` prefixes survive, none more than
``beam_prune_logp`` below the best. A frame where only the blank qualifies just adds the
blank's log-prob to every prefix, so confident blank stretches cost almost nothing.

Times and confidences are those of the winning prefix: a token spans the frames where it
had probability above one half (where greedy's argmax run is), or, when it never had, from
the frame that emitted it to the last its path stayed on it; its confidence is the highest
probability it had on those frames (the greedy decoder's measures).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np

from .hotwords import START, HotwordState, HotwordTrie
from .language_model import LanguageModel
from .ngram import EOS
from .tokens import Vocabulary
from .words import EMPTY, Hypothesis, hypothesis

NEG_INF: Final = -math.inf
_LOG_HALF: Final = math.log(0.5)
# [prefix, log p(alignments ending in blank), log p(ending in its last token)]
_Entry = list[Any]


@dataclass(frozen=True)
class BeamSettings:
    beam_width: int = 16
    token_min_logp: float = -8.0
    top_k: int = 12
    beam_prune_logp: float = -12.0


@dataclass(frozen=True)
class Fusion:
    """A word LM's weights: ``alpha`` scales its log-probs, ``beta`` rewards each word."""

    lm: LanguageModel
    alpha: float
    beta: float
    oov_penalty: float


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _Prefix:
    """One hypothesis: a token appended to its parent prefix, with what it scored."""

    __slots__ = (
        "best_logp",
        "confident_end",
        "confident_start",
        "end",
        "hot",
        "key",
        "lm_score",
        "lm_state",
        "parent",
        "start",
        "static",
        "token",
        "word",
    )

    def __init__(  # noqa: PLR0917  (built in the search's innermost loop)
        self,
        key: int,
        parent: _Prefix | None,
        token: int,
        start: int,
        word: str,
        lm_state: Hashable,
        lm_score: float,
        hot: HotwordState,
        static: float,
    ) -> None:
        self.key = key
        self.parent = parent
        self.token = token
        self.start = start
        self.end = start
        self.confident_start = -1  # the first and last+1 frames with p > 1/2
        self.confident_end = -1
        self.best_logp = NEG_INF
        self.word = word  # the partial word at the prefix's end
        self.lm_state = lm_state
        self.lm_score = lm_score  # of the completed words
        self.hot = hot
        self.static = static  # everything but the acoustic log-prob


class CtcBeamSearch:
    """Decodes one utterance's log-probs [T, V]; holds the vocabulary-derived tables and
    the LM score cache (one instance per thread)."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        frame_seconds: float,
        settings: BeamSettings,
        *,
        fusion: Fusion | None = None,
        hotwords: HotwordTrie | None = None,
    ) -> None:
        self.vocabulary = vocabulary
        self.frame_seconds = frame_seconds
        self.settings = settings
        self.fusion = fusion
        self.hotwords = hotwords
        # (starts a new word, its text) per token: a char vocabulary's space is a bare
        # boundary; a SentencePiece "▁x" piece is a boundary followed by "x".
        self._pieces: list[tuple[bool, str]] = []
        for token_id in range(len(vocabulary)):
            piece = vocabulary.piece(token_id)
            starts = piece.startswith(" ")
            self._pieces.append((starts, piece.lstrip(" ") if starts else piece))
        self._word_cache: dict[tuple[Hashable, str], tuple[float, Hashable]] = {}
        self._prefix_cache: dict[str, bool] = {}

    def decode(self, log_probs: np.ndarray, *, time_offset: float = 0.0) -> Hypothesis:
        vocabulary, settings = self.vocabulary, self.settings
        if log_probs.ndim != 2 or log_probs.shape[1] != len(vocabulary):
            raise ValueError(
                f"log_probs must be [T, {len(vocabulary)}], got {list(log_probs.shape)}"
            )
        if log_probs.shape[0] == 0:
            return EMPTY
        blank = vocabulary.blank_id
        frames = _candidates(np.asarray(log_probs, dtype=np.float32), blank, settings)
        root = _Prefix(0, None, -1, 0, "", self._begin_state(), 0.0, START, 0.0)
        # key → [prefix, log p(ending in blank), log p(ending in its last token)]
        beams: dict[int, _Entry] = {0: [root, 0.0, NEG_INF]}
        blank_run = 0.0
        for t, (blank_logp, tokens) in enumerate(frames):
            if not tokens:
                blank_run += blank_logp
                continue
            if blank_run:
                for entry in beams.values():
                    entry[1], entry[2] = _logaddexp(entry[1], entry[2]) + blank_run, NEG_INF
                blank_run = 0.0
            beams = self._step(beams, t, blank_logp, tokens)
        if blank_run:
            for entry in beams.values():
                entry[1], entry[2] = _logaddexp(entry[1], entry[2]) + blank_run, NEG_INF
        best = max(beams.values(), key=lambda e: _logaddexp(e[1], e[2]) + self._final(e[0]))
        return self._hypothesis(best[0], time_offset)

    def _step(
        self, beams: dict[int, _Entry], t: int, blank_logp: float, tokens: list[tuple[int, float]]
    ) -> dict[int, _Entry]:
        following: dict[int, _Entry] = {}
        token_logps = dict(tokens)
        # Only the most promising extensions become prefixes: a child scores its parent's
        # estimate plus what its token changes (an LM word score, a hotword step), so the
        # beam's next members are among the best few estimates. A min-heap keeps the best
        # ``limit`` (estimate, n, parent, token, path log-prob, token log-prob); ``tokens``
        # come best first, so a parent's remaining tokens are skipped once one falls short.
        limit, pushed = 2 * self.settings.beam_width, 0
        extensions: list[tuple[float, int, _Prefix, int, float, float]] = []
        ranked = sorted(
            (
                (_logaddexp(p_blank, p_token), prefix, p_blank, p_token)
                for prefix, p_blank, p_token in beams.values()
            ),
            key=lambda item: item[0] + item[1].static,
            reverse=True,
        )
        for total, prefix, p_blank, p_token in ranked:
            entry = following.get(prefix.key)
            if entry is None:
                following[prefix.key] = [prefix, total + blank_logp, NEG_INF]
            else:
                entry[1] = _logaddexp(entry[1], total + blank_logp)
            repeat = token_logps.get(prefix.token)
            if repeat is not None:  # the repeat stays on the prefix
                self._add(following, prefix, p_token + repeat, repeat, t)
            static = prefix.static
            for token, logp in tokens:
                bound = total + logp + static
                if len(extensions) == limit and bound <= extensions[0][0]:
                    break
                # A new copy of the last token needs a blank between.
                path = (p_blank if token == prefix.token else total) + logp
                if path == NEG_INF:
                    continue
                pushed += 1  # unique: ties never compare prefixes
                item = (path + static, pushed, prefix, token, path, logp)
                if len(extensions) < limit:
                    heapq.heappush(extensions, item)
                elif item[0] > extensions[0][0]:
                    heapq.heapreplace(extensions, item)
        for _, _, parent, token, path, logp in sorted(extensions, key=itemgetter(0), reverse=True):
            self._add(following, self._child(parent, token, t, beams, following), path, logp, t)
        scored = [(_logaddexp(e[1], e[2]) + e[0].static, e) for e in following.values()]
        best = heapq.nlargest(self.settings.beam_width, scored, key=itemgetter(0))
        floor = best[0][0] + self.settings.beam_prune_logp
        return {entry[0].key: entry for score, entry in best if score >= floor}

    @staticmethod
    def _add(
        following: dict[int, _Entry], prefix: _Prefix, path_logp: float, logp: float, t: int
    ) -> None:
        entry = following.get(prefix.key)
        if entry is None:
            following[prefix.key] = [prefix, NEG_INF, path_logp]
        else:
            entry[2] = _logaddexp(entry[2], path_logp)
        prefix.end = max(prefix.end, t + 1)
        prefix.best_logp = max(prefix.best_logp, logp)
        if logp > _LOG_HALF:
            if prefix.confident_start < 0:
                prefix.confident_start = t
            prefix.confident_end = max(prefix.confident_end, t + 1)

    def _child(
        self,
        parent: _Prefix,
        token: int,
        t: int,
        beams: dict[int, _Entry],
        following: dict[int, _Entry],
    ) -> _Prefix:
        key = hash((parent.key, token))
        for table in (following, beams):
            entry = table.get(key)
            if entry is not None:
                return entry[0]  # type: ignore[no-any-return]
        starts_word, text = self._pieces[token]
        lm_state, lm_score, word = parent.lm_state, parent.lm_score, parent.word
        if starts_word:
            if word:
                score, lm_state = self._word_score(lm_state, word)
                lm_score += score
            word = text
        else:
            word += text
        hot = parent.hot
        if self.hotwords is not None:
            hot = self.hotwords.advance(hot, " " + text if starts_word else text)
        static = lm_score + hot.score + (self._partial_penalty(word) if word else 0.0)
        return _Prefix(key, parent, token, t, word, lm_state, lm_score, hot, static)

    def _begin_state(self) -> Hashable:
        return self.fusion.lm.begin_state if self.fusion is not None else None

    def _word_score(self, state: Hashable, word: str) -> tuple[float, Hashable]:
        fusion = self.fusion
        if fusion is None:
            return 0.0, None
        cached = self._word_cache.get((state, word))
        if cached is None:
            logp, after = fusion.lm.score(state, word)
            score = fusion.alpha * logp + fusion.beta
            if not fusion.lm.knows(word) and not (self.hotwords and self.hotwords.covers(word)):
                score += fusion.oov_penalty
            cached = (score, after)
            self._word_cache[(state, word)] = cached
        return cached

    def _partial_penalty(self, word: str) -> float:
        fusion = self.fusion
        if fusion is None:
            return 0.0
        known = self._prefix_cache.get(word)
        if known is None:
            known = fusion.lm.is_prefix(word) or bool(
                self.hotwords and self.hotwords.is_prefix(word)
            )
            self._prefix_cache[word] = known
        return 0.0 if known else fusion.oov_penalty

    def _final(self, prefix: _Prefix) -> float:
        """The prefix's score beyond acoustics once the utterance ends here."""
        score, state = prefix.lm_score, prefix.lm_state
        if self.fusion is not None:
            if prefix.word:
                word_score, state = self._word_score(state, prefix.word)
                score += word_score
            logp, _ = self.fusion.lm.score(state, EOS)
            score += self.fusion.alpha * logp
        if self.hotwords is not None:
            score += self.hotwords.finish(prefix.hot)
        return score

    def _hypothesis(self, prefix: _Prefix, time_offset: float) -> Hypothesis:
        chain = []
        node: _Prefix | None = prefix
        while node is not None and node.parent is not None:
            chain.append(node)
            node = node.parent
        chain.reverse()
        if not chain:
            return EMPTY
        seconds = self.frame_seconds
        spans = [
            (p.confident_start, p.confident_end) if p.confident_start >= 0 else (p.start, p.end)
            for p in chain
        ]
        starts = np.array([a for a, _ in spans], dtype=np.float64) * seconds + time_offset
        ends = np.array([b for _, b in spans], dtype=np.float64) * seconds + time_offset
        confidences = np.exp(np.array([p.best_logp for p in chain], dtype=np.float64))
        return hypothesis(self.vocabulary, [p.token for p in chain], starts, ends, confidences)


def _candidates(
    log_probs: np.ndarray, blank: int, settings: BeamSettings
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per frame: the blank's log-prob and the (token, log-prob) pairs worth trying, best
    first (an empty list: only the blank qualifies)."""
    blank_logp = log_probs[:, blank].astype(np.float64)
    masked = np.where(log_probs >= settings.token_min_logp, log_probs, -np.inf)
    masked[:, blank] = -np.inf
    k = min(settings.top_k, masked.shape[1] - 1)
    frames: list[tuple[float, list[tuple[int, float]]]] = []
    counts = np.isfinite(masked).sum(axis=1)
    order = np.argsort(-masked, axis=1)[:, :k] if counts.any() else None
    for t, count in enumerate(counts.tolist()):
        if count == 0 or order is None:
            frames.append((float(blank_logp[t]), []))
            continue
        ids = order[t, : min(count, k)]
        frames.append(
            (
                float(blank_logp[t]),
                list(zip(ids.tolist(), masked[t, ids].astype(np.float64).tolist(), strict=True)),
            )
        )
    return frames
