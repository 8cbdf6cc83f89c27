"""Estimate a word n-gram LM from text and write it as ARPA, for users without KenLM's
``lmplz`` (and for the tests' and benchmarks' LMs).

Interpolated absolute discounting (Ney, Essen & Kneser 1994), one discount per order from
the counts of counts, ``D = n1 / (n1 + 2 n2)``:

    p(w | c) = max(N(c w) - D, 0) / N(c .) + D * T(c .) / N(c .) * p(w | c')

where ``N(c .)`` counts the context's tokens, ``T(c .)`` its distinct followers and ``c'``
drops the oldest word. Interpolated models are exact in ARPA form: a seen n-gram stores
its interpolated p, the context stores ``D T / N`` as its back-off weight. The unigrams
interpolate with a uniform distribution over the vocabulary plus ``<unk>``.

    python -m export build-lm corpus.txt --order 3 --out lm.arpa
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from asr.ngram import BOS, EOS, UNK

# log10 p of <s>: it is never predicted (ARPA's convention).
_BOS_LOGPROB = -99.0


def _discount(counts: Counter[tuple[str, ...]]) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9)


def estimate(
    sentences: Iterable[str], order: int
) -> list[dict[tuple[str, ...], tuple[float, float]]]:
    """n-gram → (log10 p, log10 back-off), per order; ``sentences`` are space-separated words."""
    if order < 1:
        raise ValueError("order must be >= 1")
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        tokens = [BOS, *words, EOS]
        for k in range(1, order + 1):
            grams = counts[k - 1]
            for start in range(len(tokens) - k + 1):
                gram = tuple(tokens[start : start + k])
                if k == 1 and gram[0] == BOS:
                    continue
                grams[gram] += 1
    if not counts[0]:
        raise ValueError("the corpus has no words")
    vocabulary = [*counts[0], (UNK,)]
    probabilities: list[dict[tuple[str, ...], float]] = []
    backoffs: list[dict[tuple[str, ...], float]] = [defaultdict(float) for _ in range(order)]

    total = sum(counts[0].values())
    discount = _discount(counts[0])
    uniform = discount * len(counts[0]) / total / len(vocabulary)
    unigrams = {gram: max(n - discount, 0.0) / total + uniform for gram, n in counts[0].items()}
    unigrams[(UNK,)] = uniform
    probabilities.append(unigrams)
    for k in range(2, order + 1):
        grams = counts[k - 1]
        discount = _discount(grams)
        context_tokens: Counter[tuple[str, ...]] = Counter()
        context_types: Counter[tuple[str, ...]] = Counter()
        for gram, n in grams.items():
            context_tokens[gram[:-1]] += n
            context_types[gram[:-1]] += 1
        weights = {c: discount * context_types[c] / n for c, n in context_tokens.items()}
        lower = probabilities[-1]
        probabilities.append(
            {
                gram: (n - discount) / context_tokens[gram[:-1]]
                + weights[gram[:-1]] * lower[gram[1:]]
                for gram, n in grams.items()
            }
        )
        for context, weight in weights.items():
            backoffs[k - 2][context] = math.log10(weight)
    tables: list[dict[tuple[str, ...], tuple[float, float]]] = []
    for k, table in enumerate(probabilities):
        entries = {gram: (math.log10(p), backoffs[k].get(gram, 0.0)) for gram, p in table.items()}
        if k == 0:
            entries[(BOS,)] = (_BOS_LOGPROB, backoffs[0].get((BOS,), 0.0))
        tables.append(entries)
    return tables


def write_arpa(tables: list[dict[tuple[str, ...], tuple[float, float]]], path: Path) -> None:
    order = len(tables)
    with path.open("w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        for k, table in enumerate(tables, start=1):
            out.write(f"ngram {k}={len(table)}\n")
        for k, table in enumerate(tables, start=1):
            out.write(f"\n\\{k}-grams:\n")
            for gram, (logprob, backoff) in sorted(table.items()):
                text = f"{logprob:.6f}\t{' '.join(gram)}"
                out.write(f"{text}\t{backoff:.6f}\n" if k < order else f"{text}\n")
        out.write("\n\\end\\\n")


def build_arpa(corpus: Path, out: Path, order: int) -> int:
    """Estimate from a text file (one sentence per line); returns the vocabulary size."""
    with corpus.open(encoding="utf-8") as handle:
        tables = estimate(handle, order)
    write_arpa(tables, out)
    return len(tables[0])
