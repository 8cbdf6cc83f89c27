"""Read an ARPA n-gram file (KenLM's lmplz, SRILM, or ``export.ngram_estimate``) and compile
it into the runtime's memory-mapped ``.ngram`` format (``asr.ngram``).

ARPA: a ``\\data\\`` section with ``ngram k=count`` lines, then one ``\\k-grams:`` section
per order whose lines are ``log10(p) <tab> w1 .. wk [<tab> log10(backoff)]``, then
``\\end\\``. Plain text or gzip.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from asr.bundle import sha256_of
from asr.ngram import BOS, EOS, ngram_keys, write_ngram_file

LN10 = math.log(10.0)
# KenLM's binary files begin with this (lm/binary_format.cc: kMagicBeforeVersion).
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
_COUNT_LINE = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


class ArpaError(ValueError):
    """The file is not an ARPA n-gram model we can read."""


@dataclass(frozen=True)
class ArpaModel:
    """Order k's n-grams as word tuples with log10 probabilities and back-offs."""

    counts: tuple[int, ...]
    ngrams: tuple[list[tuple[tuple[str, ...], float, float]], ...]

    @property
    def order(self) -> int:
        return len(self.counts)


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        head = probe.read(len(KENLM_BINARY_MAGIC))
    if head.startswith(KENLM_BINARY_MAGIC):
        raise ArpaError(
            f"{path.name} is a KenLM binary (build_binary output). Attach it as it is only "
            "where the runtime has the kenlm module, or attach the ARPA file it was built from"
        )
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_arpa(path: Path) -> ArpaModel:
    try:
        with _open_text(path) as handle:
            return _parse(iter(handle), path.name)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise ArpaError(f"cannot read {path.name}: {exc}") from exc


def _parse(lines: Iterator[str], name: str) -> ArpaModel:
    counts: dict[int, int] = {}
    for line in lines:
        if line.strip() == "\\data\\":
            break
    else:
        raise ArpaError(f"{name} has no \\data\\ section: not an ARPA file")
    ngrams: dict[int, list[tuple[tuple[str, ...], float, float]]] = {}
    current: int | None = None
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if current is None and (match := _COUNT_LINE.fullmatch(line)):
            counts[int(match.group(1))] = int(match.group(2))
            continue
        if match := _SECTION.fullmatch(line):
            current = int(match.group(1))
            if current not in counts:
                raise ArpaError(f"{name}: section \\{current}-grams: is not in \\data\\")
            ngrams[current] = []
            continue
        if line == "\\end\\":
            break
        if current is None:
            raise ArpaError(f"{name}: unexpected line in the header: {line[:80]!r}")
        fields = line.split()
        try:
            logprob = float(fields[0])
            words = tuple(fields[1 : 1 + current])
            backoff = float(fields[1 + current]) if len(fields) > 1 + current else 0.0
        except (ValueError, IndexError) as exc:
            raise ArpaError(f"{name}: bad {current}-gram line {line[:80]!r}") from exc
        if len(words) != current or len(fields) > current + 2:
            raise ArpaError(f"{name}: bad {current}-gram line {line[:80]!r}")
        ngrams[current].append((words, logprob, backoff))
    else:
        raise ArpaError(f"{name} ends before \\end\\ (truncated?)")
    order = max(counts, default=0)
    if order < 1 or sorted(counts) != list(range(1, order + 1)):
        raise ArpaError(f"{name}: the \\data\\ section must count orders 1..N, got {counts}")
    for k in range(1, order + 1):
        found = len(ngrams.get(k, []))
        if found != counts[k]:
            raise ArpaError(f"{name}: \\data\\ says {counts[k]} {k}-grams, the file has {found}")
    return ArpaModel(
        tuple(counts[k] for k in range(1, order + 1)), tuple(ngrams[k] for k in range(1, order + 1))
    )


def compile_arpa(path: Path, out: Path) -> dict[str, object]:
    """Compile ``path`` into ``out``; returns what the bundle records of it."""
    model = read_arpa(path)
    words = sorted({words[0] for words, _, _ in model.ngrams[0]})
    for required in (BOS, EOS):
        if required not in words:
            raise ArpaError(f"{path.name} has no {required} unigram")
    if len(words) != len(model.ngrams[0]):
        raise ArpaError(f"{path.name} lists a unigram twice")
    ids = {word: index for index, word in enumerate(words)}
    tables: list[dict[str, np.ndarray]] = []
    for k, entries in enumerate(model.ngrams, start=1):
        logprob = np.array([p for _, p, _ in entries], dtype=np.float64) * LN10
        backoff = np.array([b for _, _, b in entries], dtype=np.float64) * LN10
        try:
            word_ids = np.array([[ids[w] for w in words_] for words_, _, _ in entries], np.int64)
        except KeyError as exc:
            raise ArpaError(f"{path.name}: the {k}-gram word {exc} is not a unigram") from exc
        if k == 1:
            order_ = np.argsort(word_ids[:, 0])
            tables.append(
                {
                    "logprob": logprob[order_].astype(np.float32),
                    "backoff": backoff[order_].astype(np.float32),
                }
            )
            continue
        keys = ngram_keys(word_ids.reshape(-1, k))
        order_ = np.argsort(keys, kind="stable")
        keys = keys[order_]
        if keys.size > 1 and bool((keys[1:] == keys[:-1]).any()):
            raise ArpaError(f"{path.name}: duplicate (or colliding) {k}-grams")
        table = {"keys": keys, "logprob": logprob[order_].astype(np.float32)}
        if k < model.order:
            table["backoff"] = backoff[order_].astype(np.float32)
        tables.append(table)
    source = {"file": path.name, "sha256": sha256_of(path), "order": model.order}
    write_ngram_file(out, words, tables, {**source, "counts": list(model.counts)})
    return {**source, "counts": list(model.counts)}
