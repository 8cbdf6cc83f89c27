"""``python -m export attach-lm BUNDLE lm.arpa|lm.arpa.gz|lm.bin``: put a word LM into a
CTC bundle and make the beam search its default decoder.

- ARPA (text or gzip) is compiled into ``lm.ngram`` (``asr.ngram``: memory-mapped, read
  by the runtime without KenLM);
- a KenLM binary is copied as ``lm.bin`` with its word list (``--unigrams``: KenLM's
  binary does not list its vocabulary) as ``unigrams.txt``; serving it needs the kenlm
  module in the runtime.

The LM's words must be spelled as the model writes: most of them must use only the
model's characters (a cased LM for a lower-case model is refused, naming the mismatch).
The bundle's config.json and SHA256SUMS are rewritten; its other files stay as they are.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Final

from asr.bundle import CONFIG_FILE, load_bundle, write_checksums
from asr.decoding import ALPHA_RANGE, BETA_RANGE, DecoderMethod, LanguageModelConfig
from asr.errors import BundleError
from asr.ngram import BOS, EOS, UNK, NgramLM

from .arpa import KENLM_BINARY_MAGIC, ArpaError, compile_arpa

NGRAM_FILE: Final = "lm.ngram"
KENLM_FILE: Final = "lm.bin"
UNIGRAMS_FILE: Final = "unigrams.txt"
# Below this share of spellable LM words the LM is for another alphabet or casing.
MIN_SPELLABLE: Final = 0.5


def is_kenlm_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC


def attach_lm(
    bundle_dir: Path,
    lm_path: Path,
    *,
    alpha: float = 0.5,
    beta: float = 1.0,
    unigrams: Path | None = None,
    default: DecoderMethod = "beam",
) -> LanguageModelConfig:
    bundle = load_bundle(bundle_dir)
    if bundle.config.transducer is not None:
        raise ValueError("LM fusion is for CTC bundles; this bundle is a transducer")
    for value, (low, high), name in ((alpha, ALPHA_RANGE, "alpha"), (beta, BETA_RANGE, "beta")):
        if not low <= value <= high:
            raise ValueError(f"--{name} must be in [{low:g}, {high:g}]")
    if not lm_path.is_file():
        raise ValueError(f"{lm_path} is not a file")
    for stale in (NGRAM_FILE, KENLM_FILE, UNIGRAMS_FILE):
        (bundle_dir / stale).unlink(missing_ok=True)
    alphabet = frozenset("".join(bundle.vocabulary.piece(i) for i in range(len(bundle.vocabulary))))
    if is_kenlm_binary(lm_path):
        if unigrams is None:
            raise ValueError(
                f"{lm_path.name} is a KenLM binary: give its word list with --unigrams "
                "(one word per line or space-separated; KenLM binaries do not list them)"
            )
        words = unigrams.read_text(encoding="utf-8").split()
        _check_spelling(words, alphabet, lm_path.name)
        shutil.copyfile(lm_path, bundle_dir / KENLM_FILE)
        (bundle_dir / UNIGRAMS_FILE).write_text("\n".join(sorted(set(words))) + "\n", "utf-8")
        lm = LanguageModelConfig(
            file=KENLM_FILE,
            kind="kenlm",
            alpha=alpha,
            beta=beta,
            unigrams_file=UNIGRAMS_FILE,
            source={"file": lm_path.name, "words": len(set(words))},
        )
    else:
        if unigrams is not None:
            raise ValueError("--unigrams is for KenLM binaries: an ARPA file lists its words")
        try:
            source = compile_arpa(lm_path, bundle_dir / NGRAM_FILE)
        except ArpaError as exc:
            raise ValueError(str(exc)) from exc
        try:
            _check_spelling(NgramLM(bundle_dir / NGRAM_FILE).words, alphabet, lm_path.name)
        except ValueError:
            (bundle_dir / NGRAM_FILE).unlink()
            raise
        lm = LanguageModelConfig(file=NGRAM_FILE, alpha=alpha, beta=beta, source=source)
    decoder = replace(bundle.config.decoder, method=default, lm=lm)
    config = replace(bundle.config, decoder=decoder)
    (bundle_dir / CONFIG_FILE).write_text(
        json.dumps(config.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8"
    )
    write_checksums(bundle_dir, config)
    try:
        load_bundle(bundle_dir)
    except BundleError as exc:
        raise ValueError(f"the bundle does not load after attaching the LM: {exc}") from exc
    return lm


def _check_spelling(words: list[str], alphabet: frozenset[str], name: str) -> None:
    plain = [w for w in words if w not in (BOS, EOS, UNK)]
    if not plain:
        raise ValueError(f"{name} has no words")
    spellable = [w for w in plain if set(w) <= alphabet]
    if len(spellable) < MIN_SPELLABLE * len(plain):
        odd = sorted({c for w in plain[:1000] for c in w if c not in alphabet})[:20]
        raise ValueError(
            f"only {len(spellable)} of {len(plain)} words of {name} use the model's characters "
            f"(others have {''.join(odd)!r}): the LM must be spelled as the model writes "
            "(lower case for the char models, no punctuation)"
        )
