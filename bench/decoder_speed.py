"""Beam search cost: decoder time per audio second at beam 1/8/16/32, with and without a
100k-word 3-gram, as a share of the acoustic model's time at 1 thread; the LM's size and
load cost; KenLM + pyctcdecode (option (a)) against the decoder and n-gram file written here.

Posteriors: the trained demo models (QuartzNet layout at 20 ms per frame, GigaAM v3 layout
at 40 ms) on 60 s of (1) held-out synthetic speech of their domain: a trained model's
peaky output, what a real model gives on the speech it knows, and (2) real speech they
never learned: flat, uncertain frames, the search's worst case. Model time: the full-size
int8 shapes (random weights, same cost) on 60 s of real speech, 1 thread.

The LM is estimated here (``export.ngram_estimate``) from generated text: Zipf-distributed
words over a 100k vocabulary of syllable strings plus the demo's phrases.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from asr.bundle import load_bundle
from asr.ctc_beam import BeamSettings, CtcBeamSearch, Fusion
from asr.decoding import DecoderConfig
from asr.language_model import CompiledNgram, KenlmBinary
from asr.transcribe import Transcriber

from bench.common import BenchOptions, bench_main, markdown_table, real_speech, write_wav
from bench.models import DEMO_BUNDLES, bundle_for
from export.arpa import compile_arpa
from export.ngram_estimate import estimate, write_arpa
from scripts.train_demo_model import PHRASES, VAL_VOICES, normalize_text

NAME = "decoder_speed"
TITLE = "Beam search and LM cost"
SHAPES = ("quartznet15x5", "gigaam_v3")
BEAMS = (1, 8, 16, 32)
SYLLABLES = tuple(c + v for c in "бвгдзклмнпрстфхчшщ" for v in "аеиоуыэюя")


def generated_corpus(words: int, sentences: int, seed: int = 0) -> list[str]:
    """Sentences of Zipf-distributed words (a ``words``-long vocabulary) and the demo's."""
    rng = np.random.default_rng(seed)
    vocabulary: set[str] = set()
    while len(vocabulary) < words:
        count = int(rng.integers(1, 5))
        vocabulary.add("".join(rng.choice(SYLLABLES, count)))
    ordered = sorted(vocabulary)
    rng.shuffle(ordered)
    ranks = np.arange(1, len(ordered) + 1, dtype=np.float64)
    weights = 1.0 / ranks
    weights /= weights.sum()
    lengths = rng.integers(3, 12, sentences)
    picks = rng.choice(len(ordered), int(lengths.sum()), p=weights)
    # Every word at least once, so the vocabulary really has ``words`` entries.
    picks[: len(ordered)] = rng.permutation(len(ordered))
    corpus, start = [], 0
    for length in lengths.tolist():
        corpus.append(" ".join(ordered[i] for i in picks[start : start + length]))
        start += length
    return corpus + [normalize_text(p) for p in PHRASES] * 20


def _posteriors(bundle: Path, audio: np.ndarray) -> np.ndarray:
    transcriber = Transcriber(load_bundle(bundle), threads=1)
    features = transcriber.frontend(audio)
    return transcriber.model.batch([features])[0]


def _synthetic_speech(seconds: float) -> np.ndarray:
    from export.synth import synthesize_clips  # noqa: PLC0415  (espeak-ng: only here)

    clips = synthesize_clips(PHRASES, VAL_VOICES, seed=11)
    gap = np.zeros(4800, np.float32)
    audio = np.concatenate([np.concatenate([a.astype(np.float32), gap]) for _, a in clips])
    while audio.size < seconds * 16000:
        audio = np.concatenate([audio, audio])
    return audio[: int(seconds * 16000)]


def _best(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _model_ms(family: str, options: BenchOptions, wav: Path, seconds: float) -> float:
    transcriber = Transcriber(load_bundle(bundle_for(family, "int8", options)), threads=1)  # type: ignore[arg-type]
    transcriber.transcribe(wav)
    return (
        min(transcriber.transcribe(wav).timings.model for _ in range(options.repeats))
        * 1000
        / seconds
    )


def _rss_mb() -> float:
    """The process's resident memory now (not its peak: the LM estimate came before)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(options: BenchOptions) -> dict[str, Any]:
    seconds = 10.0 if options.quick else 60.0
    words = 5_000 if options.quick else 100_000
    repeats = 1 if options.quick else options.repeats
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        corpus = generated_corpus(words, words * 3)
        tables = estimate(corpus, 3)
        arpa = root / "lm.arpa"
        write_arpa(tables, arpa)
        estimate_s = time.perf_counter() - started
        del corpus, tables
        gc.collect()
        started = time.perf_counter()
        compile_arpa(arpa, root / "lm.ngram")
        compile_s = time.perf_counter() - started
        lm_info = _lm_costs(arpa, root / "lm.ngram")
        lm_info.update(estimate_s=round(estimate_s, 1), compile_s=round(compile_s, 1))
        print(lm_info, flush=True)
        wav = write_wav(root / "speech.wav", real_speech(seconds))
        inputs = {
            "in-domain (synthetic)": _synthetic_speech(seconds),
            "real speech": real_speech(seconds),
        }
        rows = []
        compiled = CompiledNgram(root / "lm.ngram")
        kenlm_model = _kenlm(arpa)
        for family in SHAPES:
            model_ms = _model_ms(family, options, wav, seconds)
            bundle = load_bundle(DEMO_BUNDLES[family])  # type: ignore[index]
            frame_s = bundle.config.frame_seconds
            defaults = DecoderConfig()
            for input_name, audio in inputs.items():
                log_probs = _posteriors(DEMO_BUNDLES[family], audio)  # type: ignore[index]
                audio_s = log_probs.shape[0] * frame_s
                for lm_name, lm in (("none", None), ("3-gram", compiled)):
                    for beam in BEAMS:
                        settings = BeamSettings(
                            beam, defaults.token_min_logp, defaults.top_k, defaults.beam_prune_logp
                        )
                        fusion = Fusion(lm, 0.5, 1.0, defaults.oov_penalty) if lm else None
                        search = CtcBeamSearch(bundle.vocabulary, frame_s, settings, fusion=fusion)
                        decode_ms = (
                            _best(partial(search.decode, log_probs), repeats) * 1000 / audio_s
                        )
                        rows.append(
                            {
                                "shape": family,
                                "input": input_name,
                                "lm": lm_name,
                                "decoder": "ours",
                                "beam": beam,
                                "decoder_ms_per_audio_s": round(decode_ms, 3),
                                "model_ms_per_audio_s": round(model_ms, 3),
                                "share_of_model": round(decode_ms / model_ms, 3),
                            }
                        )
                        print(rows[-1], flush=True)
                if kenlm_model is not None:
                    rows.append(
                        _pyctcdecode_row(
                            family, input_name, bundle, log_probs, arpa, audio_s, model_ms, repeats
                        )
                    )
                    print(rows[-1], flush=True)
    return {
        "audio_seconds": seconds,
        "quick": options.quick,
        "lm": lm_info,
        "rows": rows,
    }


def _kenlm(arpa: Path) -> KenlmBinary | None:
    try:
        import kenlm  # type: ignore[import-not-found,unused-ignore]  # noqa: F401, PLC0415
    except ImportError:
        return None
    return KenlmBinary(arpa, None)


def _lm_costs(arpa: Path, compiled: Path) -> dict[str, Any]:
    before = _rss_mb()
    started = time.perf_counter()
    lm = CompiledNgram(compiled)
    lm.score(lm.begin_state, "привет")
    load_s = time.perf_counter() - started
    info: dict[str, Any] = {
        "words": len(lm.lm.words),
        "ngrams": list(lm.lm.header.counts),
        "arpa_mb": round(arpa.stat().st_size / 1e6, 1),
        "ngram_mb": round(compiled.stat().st_size / 1e6, 1),
        "ngram_load_ms": round(load_s * 1000, 1),
        "ngram_load_rss_mb": round(_rss_mb() - before, 1),
        "ngram_query_us": round(_query_us(lm, lm.lm.words[:2000]), 2),
    }
    try:
        import kenlm  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError:
        return info
    before = _rss_mb()
    started = time.perf_counter()
    model = KenlmBinary(arpa, None)
    info["kenlm_arpa_load_ms"] = round((time.perf_counter() - started) * 1000, 1)
    info["kenlm_arpa_load_rss_mb"] = round(_rss_mb() - before, 1)
    info["kenlm_query_us"] = round(_query_us(model, lm.lm.words[:2000]), 2)
    info["kenlm_module_mb"] = round(Path(kenlm.__file__).stat().st_size / 1e6, 1)
    return info


def _query_us(lm: CompiledNgram | KenlmBinary, sample: list[str]) -> float:
    started = time.perf_counter()
    state = lm.begin_state
    for word in sample:
        _, state = lm.score(state, word)
    return (time.perf_counter() - started) * 1e6 / len(sample)


def _pyctcdecode_row(  # noqa: PLR0917
    family: str,
    input_name: str,
    bundle: Any,
    log_probs: np.ndarray,
    arpa: Path,
    audio_s: float,
    model_ms: float,
    repeats: int,
) -> dict[str, Any]:
    from pyctcdecode import build_ctcdecoder  # type: ignore[attr-defined,import-not-found,unused-ignore]  # noqa: PLC0415

    labels = [
        bundle.vocabulary.piece(i) if i != bundle.vocabulary.blank_id else ""
        for i in range(len(bundle.vocabulary))
    ]
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(arpa), alpha=0.5, beta=1.0)
    decode_ms = _best(lambda: decoder.decode(log_probs, beam_width=16), repeats) * 1000 / audio_s
    return {
        "shape": family,
        "input": input_name,
        "lm": "3-gram",
        "decoder": "pyctcdecode+kenlm",
        "beam": 16,
        "decoder_ms_per_audio_s": round(decode_ms, 3),
        "model_ms_per_audio_s": round(model_ms, 3),
        "share_of_model": round(decode_ms / model_ms, 3),
    }


def markdown(result: dict[str, Any]) -> str:
    lm = result["lm"]
    parts = [
        f"Decoder time per second of audio, as a share of the int8 model's at 1 thread "
        f"({result['audio_seconds']:g} s). LM: a generated 3-gram of {lm['words']:,} words "
        f"({', '.join(f'{n:,}' for n in lm['ngrams'])} 1/2/3-grams), alpha 0.5, beta 1.",
    ]
    rows = []
    for row in result["rows"]:
        rows.append(
            [
                row["shape"],
                row["input"],
                row["decoder"],
                row["lm"],
                row["beam"],
                f"{row['decoder_ms_per_audio_s']:.2f}",
                f"{row['model_ms_per_audio_s']:.1f}",
                f"{100 * row['share_of_model']:.0f} %",
            ]
        )
    parts.append(
        markdown_table(
            ["shape", "posteriors", "decoder", "LM", "beam", "decoder ms/s", "model ms/s", "share"],
            rows,
        )
    )
    costs = [
        ["ARPA text", f"{lm['arpa_mb']} MB", "-", "-", "-"],
        [
            "compiled `lm.ngram` (ours, mmap)",
            f"{lm['ngram_mb']} MB",
            f"{lm['ngram_load_ms']} ms",
            f"{lm['ngram_load_rss_mb']} MB",
            f"{lm['ngram_query_us']} µs",
        ],
    ]
    if "kenlm_arpa_load_ms" in lm:
        costs.append(
            [
                f"KenLM reading the ARPA (module {lm['kenlm_module_mb']} MB, unstripped)",
                f"{lm['arpa_mb']} MB",
                f"{lm['kenlm_arpa_load_ms']} ms",
                f"{lm['kenlm_arpa_load_rss_mb']} MB",
                f"{lm['kenlm_query_us']} µs",
            ]
        )
    parts.append(markdown_table(["LM form", "size", "load", "RSS added", "query"], costs))
    parts.append(
        f"Estimating the LM took {lm['estimate_s']} s, compiling it {lm['compile_s']} s "
        "(`attach-lm`, once, offline)."
    )
    return "\n\n".join(parts)


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
