"""What every decoder returns: token ids, and the words they spell with times and confidences.

A token whose text begins with a space (the char vocabulary's space, or SentencePiece's
"▁") starts a new word; a word's confidence is the lowest of its tokens' (NeMo's "min"
aggregation), so one doubtful letter marks the word as doubtful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .tokens import Vocabulary


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    confidence: float
    # Set when the channels of a call were transcribed apart (asr.channels).
    channel: int | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class Hypothesis:
    """One utterance's decoding: its text, words and the token ids they came from."""

    text: str
    words: tuple[Word, ...]
    token_ids: tuple[int, ...]


EMPTY = Hypothesis("", (), ())


def hypothesis(
    vocabulary: Vocabulary,
    token_ids: Sequence[int],
    starts: np.ndarray,
    ends: np.ndarray,
    confidences: np.ndarray,
) -> Hypothesis:
    """Tokens with their start/end times (seconds) and confidences → a Hypothesis."""
    words = group_words(vocabulary, token_ids, starts, ends, confidences)
    return Hypothesis(
        " ".join(word.text for word in words), tuple(words), tuple(int(t) for t in token_ids)
    )


def group_words(
    vocabulary: Vocabulary,
    token_ids: Sequence[int],
    starts: np.ndarray,
    ends: np.ndarray,
    confidences: np.ndarray,
) -> list[Word]:
    words: list[Word] = []
    pieces: list[str] = []
    first = last = 0

    def close() -> None:
        if pieces:
            words.append(
                Word(
                    text="".join(pieces),
                    start=round(float(starts[first]), 3),
                    end=round(float(ends[last]), 3),
                    confidence=round(float(confidences[first : last + 1].min()), 4),
                )
            )
            pieces.clear()

    for index, token_id in enumerate(token_ids):
        piece = vocabulary.piece(int(token_id))
        if piece.startswith(" "):
            close()
            piece = piece.lstrip(" ")
        if piece:
            if not pieces:
                first = index
            pieces.append(piece)
            last = index
    close()
    return words
