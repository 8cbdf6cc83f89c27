"""A SentencePiece model's pieces as a CTC token list (export time only).

Pieces are kept as SentencePiece spells them ("▁" starts a word), in id order; the CTC
blank follows them (GigaAM's CTCGreedyDecoding and NeMo's BPE models alike). Byte-fallback
pieces cannot be decoded piece by piece and are refused; ``<unk>`` and control pieces stay
as their names (the runtime prints nothing for them).
"""

from __future__ import annotations

import importlib

from asr.tokens import BLANK_TOKEN

from .quartznet import CheckpointError


def sentencepiece_pieces(model: bytes, name: str) -> list[str]:
    """The pieces of a serialized SentencePiece ``ModelProto`` (``name`` for messages)."""
    try:
        sentencepiece = importlib.import_module("sentencepiece")
    except ImportError as exc:  # pragma: no cover - requirements-dev.txt installs it
        raise CheckpointError(f"reading {name} needs `pip install sentencepiece`") from exc
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model)
    except (OSError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{name} is not a SentencePiece model: {exc}") from exc
    pieces = [str(processor.IdToPiece(i)) for i in range(int(processor.GetPieceSize()))]
    for index, piece in enumerate(pieces):
        if processor.IsByte(index):
            raise CheckpointError(f"{name}: byte-fallback pieces ({piece}) are unsupported")
        if not piece or any(ch.isspace() for ch in piece) or piece == BLANK_TOKEN:
            raise CheckpointError(f"{name}: piece {index} {piece!r} cannot be a token")
    if not pieces:
        raise CheckpointError(f"{name} holds no SentencePiece pieces")
    return pieces
