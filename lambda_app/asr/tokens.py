"""The bundle's token list (``tokens.txt``): one ``<token> <id>`` per line.

The format is sherpa-onnx's and onnx-asr's: a space inside a token is written as "▁"
(U+2581), so char vocabularies and SentencePiece pieces share one reader; the CTC blank
is ``<blk>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError

SPACE_MARK = "▁"
BLANK_TOKEN = "<blk>"


def _is_special(token: str) -> bool:
    return len(token) > 2 and token.startswith("<") and token.endswith(">")


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    blank_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.blank_id < len(self.tokens):
            raise BundleError(f"blank id {self.blank_id} is outside the {len(self.tokens)} tokens")

    def __len__(self) -> int:
        return len(self.tokens)

    def piece(self, token_id: int) -> str:
        """The text a token stands for: "▁" → space; the blank and SentencePiece's special
        pieces (``<unk>``, ``<s>``, ``</s>``, ``<pad>``) stand for nothing."""
        token = self.tokens[token_id]
        if token_id == self.blank_id or _is_special(token):
            return ""
        return token.replace(SPACE_MARK, " ")

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join("".join(self.piece(t) for t in token_ids).split())

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> Vocabulary:
        """NeMo CTC layout: the labels, then the blank as the last class."""
        tokens = (*(label.replace(" ", SPACE_MARK) for label in labels), BLANK_TOKEN)
        return cls(tokens, blank_id=len(labels))

    @classmethod
    def read(cls, path: Path, blank_id: int) -> Vocabulary:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"cannot read token list {path.name}: {exc}") from exc
        tokens: list[str] = []
        for number, line in enumerate(lines, start=1):
            token, _, index = line.rpartition(" ")
            if not token or not index.isdigit() or int(index) != len(tokens):
                raise BundleError(
                    f"{path.name} line {number} is not '<token> {len(tokens)}': {line!r}"
                )
            tokens.append(token)
        if not tokens:
            raise BundleError(f"{path.name} is empty")
        return cls(tuple(tokens), blank_id)

    def write(self, path: Path) -> None:
        text = "".join(f"{token} {index}\n" for index, token in enumerate(self.tokens))
        path.write_text(text, encoding="utf-8")
