"""Hotword biasing for the beam search: a character trie walked as hypotheses grow.

Matching is on the text a hypothesis spells, not on token ids, so one list serves char and
SentencePiece vocabularies alike (no tokenizer is needed at run time). A match starts at a
word boundary; every character matched adds the hotword's ``boost`` (natural log) to the
hypothesis. When the match breaks before a hotword's end, the bonus it had earned is taken
back (the context-graph rule of sherpa-onnx and icefall), so only hypotheses that spell a
whole hotword keep it; a hotword may be followed by more letters (Russian endings:
"иванов" also rewards "иванову").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

ROOT: Final = 0  # at a word boundary: a match may start
DEAD: Final = -1  # inside a word that did not start a match: wait for the next boundary


@dataclass(frozen=True)
class Hotword:
    text: str
    boost: float


@dataclass(frozen=True)
class HotwordState:
    node: int = ROOT
    locked: float = 0.0  # bonus of completed hotwords: kept
    pending: float = 0.0  # bonus of the match in progress: taken back if it breaks

    @property
    def score(self) -> float:
        return self.locked + self.pending


START: Final = HotwordState()


class HotwordTrie:
    def __init__(self, hotwords: Iterable[Hotword]) -> None:
        self._children: list[dict[str, int]] = [{}]
        self._boost: list[float] = [0.0]  # of the edge into each node
        self._terminal: list[bool] = [False]
        self.hotwords = tuple(hotwords)
        for hotword in self.hotwords:
            node = ROOT
            for char in hotword.text:
                child = self._children[node].get(char)
                if child is None:
                    child = len(self._children)
                    self._children[node][char] = child
                    self._children.append({})
                    self._boost.append(0.0)
                    self._terminal.append(False)
                self._boost[child] = max(self._boost[child], hotword.boost)
                node = child
            self._terminal[node] = True
        self._cache: dict[tuple[HotwordState, str], HotwordState] = {}

    def __bool__(self) -> bool:
        return bool(self.hotwords)

    def advance(self, state: HotwordState, text: str) -> HotwordState:
        """The state after ``text`` (a token's piece; " " is a word boundary)."""
        key = (state, text)
        cached = self._cache.get(key)
        if cached is None:
            cached = state
            for char in text:
                cached = self._step(cached, char)
            self._cache[key] = cached
        return cached

    def _step(self, state: HotwordState, char: str) -> HotwordState:
        if state.node == DEAD:
            return _boundary(state, char)
        child = self._children[state.node].get(char)
        if child is not None:
            pending = state.pending + self._boost[child]
            if self._terminal[child]:
                return HotwordState(child, state.locked + pending, 0.0)
            return HotwordState(child, state.locked, pending)
        # The match (if any) broke: its unfinished bonus is taken back.
        return _boundary(HotwordState(DEAD, state.locked, 0.0), char)

    def finish(self, state: HotwordState) -> float:
        """The bonus a hypothesis keeps when the utterance ends in ``state``."""
        return state.locked

    def is_prefix(self, text: str) -> bool:
        """Whether ``text`` (a partial word) is the start of a hotword."""
        node = ROOT
        for char in text:
            child = self._children[node].get(char)
            if child is None:
                return False
            node = child
        return True

    def covers(self, word: str) -> bool:
        """Whether ``word`` begins with a whole hotword (so an LM's OOV penalty is waived)."""
        node = ROOT
        for char in word:
            node = self._children[node].get(char, DEAD)
            if node == DEAD:
                return False
            if self._terminal[node]:
                return True
        return False


def _boundary(state: HotwordState, char: str) -> HotwordState:
    """A char outside any match: a space returns to the root (a new word may match)."""
    if char == " ":
        return HotwordState(ROOT, state.locked, 0.0)
    return HotwordState(DEAD, state.locked, 0.0)


def spell_check(hotwords: Sequence[Hotword], alphabet: frozenset[str]) -> list[str]:
    """Messages for hotwords with characters the model cannot write."""
    problems = []
    for hotword in hotwords:
        missing = sorted({c for c in hotword.text if c != " " and c not in alphabet})
        if missing:
            problems.append(f"{hotword.text!r} has {''.join(missing)!r}")
    return problems
