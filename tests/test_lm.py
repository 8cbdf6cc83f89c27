"""Word n-gram LMs: the estimator, ARPA compilation, queries against KenLM's, attach-lm."""

from __future__ import annotations

import gzip
import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from asr.bundle import load_bundle
from asr.errors import BundleError
from asr.language_model import KenlmBinary, load_language_model
from asr.ngram import NgramLM

from export.__main__ import main as export_main
from export.arpa import ArpaError, compile_arpa
from export.lm_attach import attach_lm
from export.ngram_estimate import estimate, write_arpa

kenlm = pytest.importorskip("kenlm")

CORPUS = (
    "включи свет на кухне",
    "выключи свет в спальне",
    "включи музыку",
    "позвони маме",
    "включи свет",
    "сделай музыку погромче",
)


@pytest.fixture(scope="module")
def arpa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    write_arpa(estimate(CORPUS, 3), path)
    return path


@pytest.fixture(scope="module")
def compiled(arpa: Path) -> NgramLM:
    out = arpa.with_suffix(".ngram")
    compile_arpa(arpa, out)
    return NgramLM(out)


def test_estimated_lm_is_a_distribution(compiled: NgramLM) -> None:
    """Interpolated absolute discounting written as ARPA sums to one in every context,
    seen or not (so back-off weights are right)."""
    vocabulary = [i for i, w in enumerate(compiled.words) if w != "<s>"]
    for context in [(), ("<s>",), ("<s>", "включи"), ("свет",), ("маме", "свет")]:
        state = tuple(compiled.word_id(w) for w in context)
        total = sum(math.exp(compiled.score(state, w)[0]) for w in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-5), context


def test_queries_equal_kenlm(arpa: Path, compiled: NgramLM) -> None:
    model = kenlm.Model(str(arpa))
    words = [w for w in compiled.words if w != "<s>"] + ["неизвестное"]
    for sentence in itertools.product(words, repeat=3):
        state, ours = compiled.begin_state, 0.0
        theirs, before, after = 0.0, kenlm.State(), kenlm.State()
        model.BeginSentenceWrite(before)
        for word in sentence:
            logp, state = compiled.score(state, compiled.word_id(word))
            ours += logp
            theirs += model.BaseScore(before, word, after)
            before, after = after, before
        assert ours == pytest.approx(theirs * math.log(10), abs=1e-5), sentence


def test_gzip_arpa_and_prefixes(arpa: Path, tmp_path: Path) -> None:
    packed = tmp_path / "lm.arpa.gz"
    packed.write_bytes(gzip.compress(arpa.read_bytes()))
    compile_arpa(packed, tmp_path / "lm.ngram")
    lm = NgramLM(tmp_path / "lm.ngram")
    assert lm.is_prefix("вкл") and lm.is_prefix("включи") and not lm.is_prefix("вклз")
    assert lm.word_id("кухне") >= 0 and lm.word_id("кухня") == -1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello\n", "no \\\\data\\\\ section"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n", "ends before"),
        ("\\data\\\nngram 1=3\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n\\end\\\n", "says 3 1-grams"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\tслово\n\\end\\\n", "no <s> unigram"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\nx\t<s>\n-1\t</s>\n\\end\\\n", "bad 1-gram line"),
    ],
)
def test_bad_arpa_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.arpa"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArpaError, match=message):
        compile_arpa(path, tmp_path / "out.ngram")


def test_corrupt_compiled_file_is_a_bundle_error(compiled: NgramLM, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.ngram"
    truncated.write_bytes(compiled.path.read_bytes()[:200])
    with pytest.raises(BundleError):
        NgramLM(truncated)
    (tmp_path / "other.ngram").write_bytes(b"not an lm")
    with pytest.raises(BundleError, match="not a compiled language model"):
        NgramLM(tmp_path / "other.ngram")


def test_attach_lm_makes_beam_the_default(demo_bundle: Path, arpa: Path, tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle_dir)
    assert export_main(["attach-lm", str(bundle_dir), str(arpa), "--alpha", "0.7"]) == 0
    bundle = load_bundle(bundle_dir)  # checksums rewritten and verified
    assert bundle.config.decoder.method == "beam"
    lm = bundle.config.decoder.lm
    assert lm is not None and lm.alpha == 0.7 and lm.kind == "ngram"
    assert lm.source["counts"][0] == len(NgramLM(bundle_dir / lm.file).words)
    assert "lm.ngram" in (bundle_dir / "SHA256SUMS").read_text()
    # A tampered LM fails the load, like any bundle file.
    with (bundle_dir / lm.file).open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\xff\xff\xff\xff")
    with pytest.raises(BundleError):
        load_bundle(bundle_dir)


def test_attach_lm_refuses_a_foreign_alphabet(demo_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle_dir)
    cased = tmp_path / "cased.arpa"
    write_arpa(estimate(["Включи Свет", "Позвони Маме"], 2), cased)
    with pytest.raises(ValueError, match="spelled as the model writes"):
        attach_lm(bundle_dir, cased)
    assert load_bundle(bundle_dir).config.decoder.lm is None
    assert not (bundle_dir / "lm.ngram").exists()


def test_kenlm_binary_is_attached_with_its_unigrams(
    demo_bundle: Path, arpa: Path, compiled: NgramLM, tmp_path: Path
) -> None:
    """A KenLM binary is kept as it is and scored through the kenlm module. Making one
    needs KenLM's build_binary tool, which the pip package does not ship."""
    build_binary = shutil.which("build_binary")
    if build_binary is None:
        pytest.skip("KenLM's build_binary tool is not installed")
    binary = tmp_path / "lm.bin"
    import subprocess

    subprocess.run([build_binary, str(arpa), str(binary)], check=True, capture_output=True)
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle_dir)
    with pytest.raises(ValueError, match="--unigrams"):
        attach_lm(bundle_dir, binary)
    words = tmp_path / "words.txt"
    words.write_text(" ".join(CORPUS), encoding="utf-8")
    attach_lm(bundle_dir, binary, unigrams=words)
    config = load_bundle(bundle_dir).config.decoder.lm
    assert config is not None and config.kind == "kenlm"
    model = load_language_model(bundle_dir, config)
    assert isinstance(model, KenlmBinary)
    logp, _ = model.score(model.begin_state, "включи")
    ours, _ = compiled.score(compiled.begin_state, compiled.word_id("включи"))
    assert logp == pytest.approx(ours, abs=1e-4)


def test_kenlm_scorer_reads_arpa_like_the_compiled_file(arpa: Path, compiled: NgramLM) -> None:
    words = arpa.parent / "words.txt"
    words.write_text("\n".join(compiled.words), encoding="utf-8")
    model = KenlmBinary(arpa, words)
    state_k, state_c = model.begin_state, compiled.begin_state
    for word in ["включи", "свет", "в", "спальне"]:
        ours, state_c = compiled.score(state_c, compiled.word_id(word))
        theirs, state_k = model.score(state_k, word)
        assert ours == pytest.approx(theirs, abs=1e-5)
    assert model.is_prefix("спал") and not model.is_prefix("спалz")
    assert np.isfinite(ours)
