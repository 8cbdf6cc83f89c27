from __future__ import annotations

import numpy as np
import pytest
from asr.ctc import greedy_decode
from asr.tokens import Vocabulary

VOCAB = Vocabulary(("▁", "а", "б", "<blk>"), blank_id=3)
SPACE, A, B, BLANK = 0, 1, 2, 3


def log_probs_for(frames: list[int], confidence: list[float] | None = None) -> np.ndarray:
    """One-hot-ish log-probs: the chosen token gets ``confidence``, the rest share the remainder."""
    probs = np.full((len(frames), len(VOCAB)), 0.0)
    for t, token in enumerate(frames):
        p = confidence[t] if confidence else 0.9
        probs[t, :] = (1 - p) / (len(VOCAB) - 1)
        probs[t, token] = p
    log_probs: np.ndarray = np.log(probs).astype(np.float32)
    return log_probs


def naive_collapse(frames: np.ndarray) -> list[int]:
    out, previous = [], None
    for token in frames.tolist():
        if token not in (previous, BLANK):
            out.append(token)
        previous = token
    return out


def test_collapses_repeats_and_separates_by_blank() -> None:
    frames = [BLANK, A, A, BLANK, A, SPACE, B, B, BLANK]
    result = greedy_decode(log_probs_for(frames), VOCAB, frame_seconds=0.02)
    assert result.text == "аа б"
    assert result.token_ids == (A, A, SPACE, B)
    first, second = result.words
    assert (first.text, first.start, first.end) == ("аа", 0.02, 0.1)
    assert (second.text, second.start, second.end) == ("б", 0.12, 0.16)


def test_word_confidence_is_the_least_sure_token_at_its_peak() -> None:
    frames = [A, A, BLANK, B, SPACE, B]
    confidence = [0.6, 0.95, 0.9, 0.7, 0.9, 0.8]
    result = greedy_decode(log_probs_for(frames, confidence), VOCAB, frame_seconds=0.04)
    assert [w.text for w in result.words] == ["аб", "б"]
    assert result.words[0].confidence == pytest.approx(0.7, abs=1e-4)  # min(max(.6,.95), .7)
    assert result.words[1].confidence == pytest.approx(0.8, abs=1e-4)


def test_time_offset_shifts_every_word() -> None:
    result = greedy_decode(log_probs_for([A, SPACE, B]), VOCAB, 0.02, time_offset=10.0)
    assert [(w.start, w.end) for w in result.words] == [(10.0, 10.02), (10.04, 10.06)]


def test_leading_trailing_and_double_spaces_make_no_empty_words() -> None:
    result = greedy_decode(log_probs_for([SPACE, A, SPACE, BLANK, SPACE, B, SPACE]), VOCAB, 0.02)
    assert result.text == "а б"
    assert [w.text for w in result.words] == ["а", "б"]


def test_empty_and_all_blank_inputs() -> None:
    assert greedy_decode(np.zeros((0, 4), np.float32), VOCAB, 0.02).text == ""
    assert greedy_decode(log_probs_for([BLANK] * 5), VOCAB, 0.02).words == ()


def test_sentencepiece_style_pieces_start_words() -> None:
    vocab = Vocabulary(("▁при", "вет", "▁мир", "<blk>"), blank_id=3)
    probs = np.full((4, 4), 0.01)
    for t, token in enumerate([0, 1, 3, 2]):
        probs[t, token] = 0.97
    result = greedy_decode(np.log(probs), vocab, 0.04)
    assert result.text == "привет мир"
    assert [(w.text, w.start, w.end) for w in result.words] == [
        ("привет", 0.0, 0.08),
        ("мир", 0.12, 0.16),
    ]


def test_matches_a_naive_decoder_on_random_input() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        logits = rng.normal(size=(rng.integers(1, 200), len(VOCAB))) * 3
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        result = greedy_decode(log_probs.astype(np.float32), VOCAB, 0.02)
        expected = naive_collapse(log_probs.argmax(axis=1))
        assert list(result.token_ids) == expected
        assert result.text == VOCAB.decode(expected)


def test_rejects_a_vocabulary_mismatch() -> None:
    with pytest.raises(ValueError, match="log_probs must be"):
        greedy_decode(np.zeros((3, 5), np.float32), VOCAB, 0.02)


def test_sentencepiece_pieces_decode_to_words_and_special_pieces_vanish() -> None:
    vocabulary = Vocabulary(("<unk>", "▁при", "вет", "▁мир", ",", "<blk>"), blank_id=5)
    assert vocabulary.decode([1, 2, 4, 3]) == "привет, мир"
    assert vocabulary.decode([0, 1, 2, 0]) == "привет"
