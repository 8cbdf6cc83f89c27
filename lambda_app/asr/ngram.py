"""A word n-gram language model with ARPA back-off semantics, read from the bundle's
compiled ``.ngram`` file (``export.lm`` compiles ARPA into it).

File layout: the magic line, an 8-byte little-endian header length, a JSON header, then
64-byte-aligned arrays that are memory-mapped, not read (cold start does not grow with the
LM, and concurrent processes share the pages):

- ``words``: the vocabulary as UTF-8, sorted, one per line; a word's id is its line number;
- ``logprob_1`` / ``backoff_1``: the unigrams, indexed by word id;
- for each order k >= 2, ``keys_k`` (sorted uint64 hashes of the k word ids), ``logprob_k``
  and, below the top order, ``backoff_k``.

Scores are natural logs (ARPA's log10 x ln 10). ``p(w | c)`` is the stored n-gram's if it
exists, else ``backoff(c) + p(w | c minus its oldest word)``: the ARPA definition, which
KenLM's queries follow too.
"""

from __future__ import annotations

import bisect
import json
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from .errors import BundleError

MAGIC: Final = b"ASR-NGRAM 1\n"
ALIGN: Final = 64
BOS: Final = "<s>"
EOS: Final = "</s>"
UNK: Final = "<unk>"
# log(p) of a word the LM has never seen when the ARPA file has no <unk> entry (SRILM's
# and KenLM's convention for a missing <unk>: log10 p = -100 would forbid it outright;
# -7 (log10) keeps it possible but expensive).
DEFAULT_UNK_LOGPROB: Final = -7.0 * float(np.log(10.0))

_MASK: Final = (1 << 64) - 1
_MIX_1: Final = 0xBF58476D1CE4E5B9
_MIX_2: Final = 0x94D049BB133111EB
_SEED: Final = 0x9E3779B97F4A7C15

State = tuple[int, ...]


def _mix(value: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit integers that spreads every bit."""
    value = ((value ^ (value >> 30)) * _MIX_1) & _MASK
    value = ((value ^ (value >> 27)) * _MIX_2) & _MASK
    return value ^ (value >> 31)


def ngram_key(word_ids: Sequence[int]) -> int:
    """The uint64 key of an n-gram of word ids (the same as ``ngram_keys`` row-wise)."""
    key = _SEED
    for word_id in word_ids:
        key = _mix(key ^ (word_id + 1))
    return key


def ngram_keys(word_ids: np.ndarray) -> np.ndarray:
    """``ngram_key`` of every row of ``word_ids`` [N, k], vectorised."""
    keys = np.full(word_ids.shape[0], _SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in word_ids.T.astype(np.uint64):
            value = keys ^ (column + np.uint64(1))
            value = (value ^ (value >> np.uint64(30))) * np.uint64(_MIX_1)
            value = (value ^ (value >> np.uint64(27))) * np.uint64(_MIX_2)
            keys = value ^ (value >> np.uint64(31))
    return keys


@dataclass(frozen=True)
class NgramHeader:
    order: int
    counts: tuple[int, ...]
    arrays: dict[str, tuple[int, str, int]]  # name → (offset, dtype, length)
    has_unk: bool
    source: dict[str, Any]


class NgramLM:
    """Queries of a compiled n-gram file. Not thread-safe: one per decoder thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read the language model {path.name}: {exc}") from exc
        self.header = _read_header(self._map, path.name)
        self.order = self.header.order
        words = bytes(self._array("words")).decode("utf-8")
        self.words: list[str] = words.split("\n") if words else []
        self._ids = {word: index for index, word in enumerate(self.words)}
        self._unigram_logprob = self._array("logprob_1")
        self._unigram_backoff = self._array("backoff_1")
        self._keys = {k: self._array(f"keys_{k}") for k in range(2, self.order + 1)}
        self._logprob = {k: self._array(f"logprob_{k}") for k in range(2, self.order + 1)}
        self._backoff = {k: self._array(f"backoff_{k}") for k in range(2, self.order)}
        self.unk_id = self._ids.get(UNK, -1)
        self.bos_id = self._ids.get(BOS, -1)
        self.eos_id = self._ids.get(EOS, -1)
        if self.bos_id < 0 or self.eos_id < 0:
            raise BundleError(f"the language model {path.name} lacks <s> or </s>")

    def _array(self, name: str) -> np.ndarray:
        if name not in self.header.arrays:
            raise BundleError(f"the language model {self.path.name} has no {name} array")
        offset, dtype, length = self.header.arrays[name]
        return np.frombuffer(self._map, dtype=np.dtype(dtype), count=length, offset=offset)

    @property
    def begin_state(self) -> State:
        return (self.bos_id,)

    def word_id(self, word: str) -> int:
        """The word's id, or -1 when the LM does not know it."""
        return self._ids.get(word, -1)

    def is_prefix(self, text: str) -> bool:
        """Whether some vocabulary word starts with ``text`` (the words are sorted)."""
        index = bisect.bisect_left(self.words, text)
        return index < len(self.words) and self.words[index].startswith(text)

    def unknown_logprob(self) -> float:
        if self.unk_id >= 0:
            return float(self._unigram_logprob[self.unk_id])
        return DEFAULT_UNK_LOGPROB

    def score(self, state: State, word_id: int) -> tuple[float, State]:
        """log p(word | state) and the state after it; ``word_id`` -1 is an unknown word,
        scored as <unk> (a word of the context like any other, as in KenLM)."""
        if word_id < 0:
            if self.unk_id < 0:
                return DEFAULT_UNK_LOGPROB, ()
            word_id = self.unk_id
        backoff = 0.0
        for start in range(len(state)):
            context = state[start:]
            found = self._lookup(len(context) + 1, (*context, word_id))
            if found is not None:
                return backoff + found, self._next_state(state[start:], word_id)
            backoff += self._context_backoff(context)
        return backoff + float(self._unigram_logprob[word_id]), self._next_state((), word_id)

    def _next_state(self, context: State, word_id: int) -> State:
        return (*context, word_id)[-(self.order - 1) :] if self.order > 1 else ()

    def _lookup(self, order: int, word_ids: tuple[int, ...]) -> float | None:
        keys = self._keys[order]
        key = ngram_key(word_ids)
        index = int(np.searchsorted(keys, np.uint64(key)))
        if index < keys.size and int(keys[index]) == key:
            return float(self._logprob[order][index])
        return None

    def _context_backoff(self, context: State) -> float:
        if len(context) == 1:
            return float(self._unigram_backoff[context[0]])
        keys = self._keys[len(context)]
        key = ngram_key(context)
        index = int(np.searchsorted(keys, np.uint64(key)))
        if index < keys.size and int(keys[index]) == key:
            return float(self._backoff[len(context)][index])
        return 0.0


def _read_header(buffer: mmap.mmap, name: str) -> NgramHeader:
    if buffer[: len(MAGIC)] != MAGIC:
        raise BundleError(f"{name} is not a compiled language model (python -m export attach-lm)")
    start = len(MAGIC) + 8
    (length,) = struct.unpack("<Q", buffer[len(MAGIC) : start])
    try:
        data = json.loads(buffer[start : start + length])
        header = NgramHeader(
            order=int(data["order"]),
            counts=tuple(int(c) for c in data["counts"]),
            arrays={k: (int(o), str(d), int(n)) for k, (o, d, n) in data["arrays"].items()},
            has_unk=bool(data["has_unk"]),
            source=dict(data.get("source", {})),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{name} has a corrupt header: {exc}") from exc
    for offset, dtype, count in header.arrays.values():
        if offset + np.dtype(dtype).itemsize * count > len(buffer):
            raise BundleError(f"{name} is truncated")
    return header


def write_ngram_file(
    path: Path,
    words: Sequence[str],
    tables: Sequence[dict[str, np.ndarray]],
    source: dict[str, Any],
) -> None:
    """Write a compiled LM: ``words`` sorted; ``tables[k-1]`` holds order k's arrays
    (``logprob``, ``backoff`` below the top order, ``keys`` from order 2)."""
    arrays: dict[str, np.ndarray] = {"words": np.frombuffer("\n".join(words).encode(), np.uint8)}
    for order, table in enumerate(tables, start=1):
        for name, values in table.items():
            arrays[f"{name}_{order}"] = values
    layout: dict[str, tuple[int, str, int]] = {}
    header: dict[str, Any] = {
        "order": len(tables),
        "counts": [int(t["logprob"].size) for t in tables],
        "has_unk": UNK in words,
        "source": source,
    }
    # The header's size depends on the offsets it lists: lay out after a generous reserve.
    reserve = 4096 + 96 * len(arrays) + len(json.dumps(source))
    offset = _aligned(len(MAGIC) + 8 + reserve)
    for name, values in arrays.items():
        layout[name] = (offset, values.dtype.str, int(values.size))
        offset = _aligned(offset + values.nbytes)
    header["arrays"] = layout
    encoded = json.dumps(header).encode()
    if len(encoded) > reserve:
        raise ValueError("language model header overflows its reserve")
    with path.open("wb") as handle:
        handle.write(MAGIC + struct.pack("<Q", len(encoded)) + encoded)
        for name, values in arrays.items():
            handle.seek(layout[name][0])
            handle.write(np.ascontiguousarray(values).tobytes())
        handle.truncate(offset)


def _aligned(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN
