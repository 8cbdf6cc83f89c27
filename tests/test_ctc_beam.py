"""The CTC prefix beam search: agreement with greedy, LM fusion and hotwords on the trained
demo model, the hotword trie, and how request options resolve."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pytest
from asr.bundle import load_bundle
from asr.ctc_beam import BeamSettings, CtcBeamSearch
from asr.decoding import DecoderConfig, DecodingOptions, parse_hotwords, parse_options, resolve
from asr.errors import InvalidRequest
from asr.hotwords import START, Hotword, HotwordTrie
from asr.resample import resample
from asr.tokens import Vocabulary
from asr.transcribe import Transcriber

from export.__main__ import main as export_main
from export.lm_attach import attach_lm
from export.ngram_estimate import estimate, write_arpa
from scripts.train_demo_model import PHRASES, VAL_VOICES, normalize_text

SAMPLE_RATE = 16000
GREEDY = DecodingOptions(method="greedy")
BEAM = DecodingOptions(method="beam", use_lm=False)


@pytest.fixture(scope="module")
def lm_bundle(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model with a 3-gram of its phrase domain (the phrases it was trained on)."""
    root = tmp_path_factory.mktemp("lm-bundle")
    arpa = root / "demo.arpa"
    write_arpa(estimate([normalize_text(p) for p in PHRASES], 3), arpa)
    shutil.copytree(demo_bundle, root / "bundle")
    attach_lm(root / "bundle", arpa)
    return root / "bundle"


@pytest.fixture(scope="module")
def transcriber(lm_bundle: Path) -> Transcriber:
    return Transcriber.from_dir(lm_bundle, threads=1)


@pytest.fixture(scope="module")
def heldout_voices() -> list[tuple[str, np.ndarray]]:
    synth = pytest.importorskip("export.synth")
    clips = synth.synthesize_clips(PHRASES[:30], VAL_VOICES, seed=3)
    return [(normalize_text(text), audio.astype(np.float32)) for text, audio in clips]


def degrade(audio: np.ndarray, snr_db: float, speed: float, seed: int) -> np.ndarray:
    """White noise at ``snr_db`` and a tempo+pitch change (resampled playback)."""
    if speed != 1.0:
        audio = resample(audio, round(SAMPLE_RATE * speed), SAMPLE_RATE)
    noise = np.random.default_rng(seed).standard_normal(audio.size).astype(np.float32)
    noise *= math.sqrt(float(np.mean(audio**2)) / 10 ** (snr_db / 10))
    return audio + noise


def test_beam_without_lm_agrees_with_greedy(transcriber: Transcriber, demo_bundle: Path) -> None:
    """On clean held-out clips the peaky CTC posteriors leave the beam nothing to change;
    words and times stay within a frame of greedy's."""
    frame = transcriber.bundle.config.frame_seconds
    for wav in sorted((demo_bundle.parent / "audio").glob("heldout_*.wav")):
        greedy = transcriber.transcribe(str(wav), decoding=GREEDY)
        beam = transcriber.transcribe(str(wav), decoding=BEAM)
        assert beam.decoder == "beam16" and greedy.decoder == "greedy"
        assert beam.text == greedy.text
        for ours, theirs in zip(beam.words, greedy.words, strict=True):
            assert abs(ours.start - theirs.start) <= frame + 1e-9
            assert abs(ours.end - theirs.end) <= frame + 1e-9
            assert ours.confidence == pytest.approx(theirs.confidence, abs=1e-3)


def test_lm_corrects_degraded_speech(
    transcriber: Transcriber, heldout_voices: list[tuple[str, np.ndarray]]
) -> None:
    """Unheard voices in noise (0 dB) and played 20 % fast: the phrase-domain LM repairs
    most of what greedy gets wrong."""
    references, greedy, beam, fused = [], [], [], []
    for index, (text, audio) in enumerate(heldout_voices):
        noisy = degrade(audio, snr_db=3.0, speed=1.2, seed=index)
        references.append(text)
        greedy.append(transcriber.transcribe(noisy, SAMPLE_RATE, decoding=GREEDY).text)
        beam.append(transcriber.transcribe(noisy, SAMPLE_RATE, decoding=BEAM).text)
        result = transcriber.transcribe(noisy, SAMPLE_RATE)  # the bundle's default: beam + LM
        assert result.decoder.startswith("beam16+lm")
        fused.append(result.text)
    greedy_wer, beam_wer = jiwer.wer(references, greedy), jiwer.wer(references, beam)
    fused_wer = jiwer.wer(references, fused)
    print(f"WER greedy {greedy_wer:.3f}, beam {beam_wer:.3f}, beam+LM {fused_wer:.3f}")
    assert greedy_wer >= 0.15, "the degradation must make greedy err for this test to mean much"
    assert beam_wer <= greedy_wer + 0.01
    assert fused_wer <= 0.5 * greedy_wer


def test_hotword_recovers_an_unseen_name(
    transcriber: Transcriber, demo_bundle: Path, lm_bundle: Path
) -> None:
    """ "маше" never occurs in training (the model knows "маме"): as a hotword it is written
    where greedy (and the LM, which does not know it) writes something else, and it does
    not leak into clips that do not say it."""
    synth = pytest.importorskip("export.synth")
    voices = [*VAL_VOICES, synth.Voice("m4", 165, 60), synth.Voice("f4", 150, 40)]
    clips = synth.synthesize_clips(["позвони маше"], voices, seed=5)
    plain = Transcriber.from_dir(demo_bundle, threads=1)
    hotword = DecodingOptions(hotwords=parse_hotwords("маше"))
    references = [normalize_text(text) for text, _ in clips]
    greedy, boosted, fused = [], [], []
    for _, audio in clips:
        samples = audio.astype(np.float32)
        greedy.append(plain.transcribe(samples, SAMPLE_RATE).text)
        boosted.append(plain.transcribe(samples, SAMPLE_RATE, decoding=hotword).text)
        fused.append(transcriber.transcribe(samples, SAMPLE_RATE, decoding=hotword).text)
    print("greedy", greedy, "hotword", boosted, "LM+hotword", fused)
    recovered = sum("маше" in text for text in boosted)
    assert sum("маше" in text for text in greedy) <= 1
    assert recovered >= len(clips) // 2 and recovered > sum("маше" in text for text in greedy)
    assert jiwer.wer(references, boosted) < jiwer.wer(references, greedy)
    assert jiwer.wer(references, fused) < jiwer.wer(references, greedy)
    for wav in sorted((demo_bundle.parent / "audio").glob("heldout_*.wav")):
        assert plain.transcribe(str(wav), decoding=hotword).text == plain.transcribe(str(wav)).text


def _spell(trie: HotwordTrie, text: str) -> float:
    state = START
    for char in text:
        state = trie.advance(state, char)
    return trie.finish(state)


@pytest.mark.parametrize(
    ("text", "bonus"),
    [
        ("позвони маше", 4.0),
        ("позвони маме", 0.0),  # the match broke at "м": its bonus is taken back
        ("ромаша", 0.0),  # matches start at a word boundary
        ("маше машенька", 8.0),  # endings after a whole hotword keep it
        ("сбер банк", 4.5),
        ("сбер бан", 0.0),
    ],
)
def test_hotword_bonus(text: str, bonus: float) -> None:
    trie = HotwordTrie([Hotword("маше", 1.0), Hotword("сбер банк", 0.5)])
    assert _spell(trie, text) == pytest.approx(bonus)


ALPHABET = frozenset(" абвгдежзийклмнопрстуфхцчшщъыьэюя")


def _resolve(fields: dict[str, object], **config: object) -> object:
    return resolve(
        DecoderConfig(**config),  # type: ignore[arg-type]
        parse_options(fields),
        deployment_hotwords=(),
        alphabet=ALPHABET,
        beam_supported=True,
    )


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"decoder": "viterbi"}, "invalid_decoding"),
        ({"decoder": "beam", "beam_width": 0}, "invalid_decoding"),
        ({"decoder": "beam", "beam_width": "65"}, "invalid_decoding"),
        ({"decoder": "beam", "beam_width": 2.5}, "invalid_decoding"),
        ({"decoder": "greedy", "beam_width": 8}, "invalid_decoding"),
        ({"hotwords": "Маша"}, "hotword_not_in_vocabulary"),
        ({"hotwords": ["masha"]}, "hotword_not_in_vocabulary"),
        ({"hotwords": ["ок"] * 101}, "invalid_hotwords"),
        ({"hotwords": [" "]}, "invalid_hotwords"),
        ({"hotwords": [{"text": "маша", "boost": 0}]}, "invalid_hotwords"),
        ({"hotwords": [{"text": "маша", "weight": 2}]}, "invalid_hotwords"),
        ({"hotwords": "маша:много"}, "invalid_decoding"),
        ({"hotwords": 5}, "invalid_hotwords"),
        ({"hotwords": "маша", "decoder": "greedy"}, "invalid_hotwords"),
        ({"lm": True}, "lm_not_available"),
        ({"decoder": "beam", "alpha": 9}, "invalid_decoding"),
    ],
)
def test_bad_options_have_stable_codes(fields: dict[str, object], code: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        _resolve(fields)
    assert raised.value.code == code


def test_options_resolve() -> None:
    chosen = _resolve({"hotwords": "маша:3, сбер банк", "hotword_boost": "1.5"})
    assert chosen.method == "beam" and chosen.hotwords is not None  # type: ignore[attr-defined]
    assert [(h.text, h.boost) for h in chosen.hotwords.hotwords] == [  # type: ignore[attr-defined]
        ("маша", 3.0),
        ("сбер банк", 1.5),
    ]
    assert _resolve({}).method == "greedy"  # type: ignore[attr-defined]
    assert _resolve({}, method="beam").method == "beam"  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest) as raised:
        resolve(
            DecoderConfig(),
            parse_options({"decoder": "beam"}),
            deployment_hotwords=(),
            alphabet=ALPHABET,
            beam_supported=False,
        )
    assert raised.value.code == "decoder_not_supported"


@pytest.fixture(scope="module")
def degraded_manifest(
    heldout_voices: list[tuple[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    import soundfile as sf

    root = tmp_path_factory.mktemp("degraded")
    lines = []
    for index, (text, audio) in enumerate(heldout_voices[:24]):
        path = root / f"clip_{index:02d}.wav"
        sf.write(path, degrade(audio, snr_db=3.0, speed=1.2, seed=index), SAMPLE_RATE)
        lines.append(json.dumps({"audio_filepath": path.name, "text": text}, ensure_ascii=False))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "manifest.jsonl"


def test_eval_compares_decoders(lm_bundle: Path, degraded_manifest: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    code = export_main(
        [
            "eval", str(degraded_manifest), "--bundle", str(lm_bundle),
            "--decoders", "greedy,beam,beam+lm,beam+lm+hotwords", "--hotwords", "маме",
            "--summary", str(summary),
        ]
    )  # fmt: skip
    assert code == 0
    systems = {s["name"]: s for s in json.loads(summary.read_text())["systems"]}
    wer = {name.split("/", 1)[1]: s["words"]["rate"] for name, s in systems.items()}
    assert set(wer) == {"greedy", "beam", "beam+lm", "beam+lm+hotwords"}
    assert wer["beam+lm"] <= 0.5 * wer["greedy"]
    assert "beam16+lm" in systems[f"{lm_bundle.name}/beam+lm"]["description"]


def test_tune_lm_finds_and_writes_weights(
    lm_bundle: Path, degraded_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(lm_bundle, bundle)
    args = ["tune-lm", str(degraded_manifest), "--bundle", str(bundle), "--limit", "12"]
    assert export_main([*args, "--alphas", "0,0.5", "--betas", "0,1", "--write"]) == 0
    table = capsys.readouterr().out
    rows = [line.split() for line in table.splitlines()[1:5]]
    wers = {(float(r[0]), float(r[1])): float(r[2]) for r in rows}
    assert len(wers) == 4 and min(wers.values()) < wers[(0.0, 0.0)]  # the LM helps
    best = min(wers, key=lambda k: wers[k])
    lm = load_bundle(bundle).config.decoder.lm
    assert lm is not None and (lm.alpha, lm.beta) == best
    assert export_main([*args, "--alphas", "x"]) == 2


def _best_labelling(log_probs: np.ndarray, blank: int) -> tuple[int, ...]:
    """The most probable CTC labelling, by summing every alignment (V^T of them)."""
    steps, classes = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for alignment in np.ndindex(*([classes] * steps)):
        labels: list[int] = []
        previous = blank
        for token in alignment:
            if token not in {blank, previous}:
                labels.append(token)
            previous = token
        logp = float(sum(log_probs[t, k] for t, k in enumerate(alignment)))
        key = tuple(labels)
        totals[key] = float(np.logaddexp(totals.get(key, -np.inf), logp))
    return max(totals, key=totals.__getitem__)


@pytest.mark.parametrize("seed", range(12))
def test_a_wide_beam_finds_the_most_probable_labelling(seed: int) -> None:
    """Unpruned, the prefix search is exact: with 2 labels over 5 frames every prefix fits a
    beam of 64, so it must pick what summing all 243 alignments picks (flat, hard posteriors)."""
    vocabulary = Vocabulary.from_labels(["а", "б"])
    logits = np.random.default_rng(seed).standard_normal((5, 3)) * 1.5
    log_probs = (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)
    unpruned = BeamSettings(beam_width=64, token_min_logp=-1e9, top_k=12, beam_prune_logp=-1e9)
    search = CtcBeamSearch(vocabulary, 0.04, unpruned)
    found = search.decode(log_probs).token_ids
    assert found == _best_labelling(log_probs.astype(np.float64), vocabulary.blank_id)
