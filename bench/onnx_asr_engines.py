"""The two recognisers the onnx-asr benchmark times: ours and onnx-asr's, on WAV paths, each
pass split into front end, model and the rest (WAV reading, CTC decoding, text)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import soundfile as sf
from asr.bundle import load_bundle
from asr.transcribe import Transcriber
from onnx_asr.models.gigaam import GigaamV2Ctc
from onnx_asr.preprocessors.numpy_preprocessor import GigaamPreprocessorNumpy

from bench.common import BenchOptions, real_speech, write_wav
from bench.models import PRECISIONS, Family, Precision, bundle_for
from bench.onnx_asr_layout import OnnxAsrModel, load_onnx_asr
from export.verify import edit_distance

STAGES = ("features", "model", "other")
THREADS = (1, 2)
LONG_SECONDS = 20.0
QUICK_LONG_SECONDS = 4.0
QUICK_CLIPS = 2
Int64Array = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]


@dataclass
class Pass:
    """One pass over a workload: the transcripts and the seconds per stage."""

    texts: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @classmethod
    def over(cls, stages: Sequence[str]) -> Pass:
        return cls(seconds=dict.fromkeys(stages, 0.0))

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def add(self, text: str, total: float, features: float, model: float) -> None:
        self.texts.append(text)
        self.seconds["features"] += features
        self.seconds["model"] += model
        self.seconds["other"] += total - features - model


class Ours:
    """Our Transcriber on WAV paths; features and model time from its own timings."""

    def __init__(self, bundle_dir: Path, threads: int) -> None:
        self.transcriber = Transcriber(load_bundle(bundle_dir), threads=threads)
        self.threads = self.transcriber.model.threads

    def __call__(self, paths: Sequence[Path]) -> Pass:
        result = Pass()
        for path in paths:
            started = time.perf_counter()
            transcript = self.transcriber.transcribe(path)
            total = time.perf_counter() - started
            timings = transcript.timings
            result.add(transcript.text, total, timings.features, timings.model)
        return result


class Theirs:
    """onnx-asr's recogniser on WAV paths (``recognize(path)``), with its front-end and model
    calls wrapped in timers (the wrappers pass arguments and results through untouched)."""

    def __init__(self, model: OnnxAsrModel, threads: int, *, as_shipped: bool = False) -> None:
        self.recogniser = load_onnx_asr(model, threads, as_shipped=as_shipped)
        self.asr = cast(GigaamV2Ctc, self.recogniser.asr)
        self.threads = int(self.asr._model.get_session_options().intra_op_num_threads)
        self.preprocessor = cast(GigaamPreprocessorNumpy, self.asr._preprocessor)
        self._features = 0.0
        self._model = 0.0
        preprocess, encode = self.asr._preprocessor, self.asr._encode

        def timed_preprocess(
            waveforms: Float32Array, waveforms_lens: Int64Array
        ) -> tuple[Float32Array, Int64Array]:
            started = time.perf_counter()
            try:
                return preprocess(waveforms, waveforms_lens)
            finally:
                self._features += time.perf_counter() - started

        def timed_encode(
            features: Float32Array, features_lens: Int64Array
        ) -> tuple[Float32Array, Int64Array]:
            started = time.perf_counter()
            try:
                return encode(features, features_lens)
            finally:
                self._model += time.perf_counter() - started

        self.asr._preprocessor = timed_preprocess
        self.asr._encode = timed_encode  # type: ignore[method-assign]

    def __call__(self, paths: Sequence[Path]) -> Pass:
        result = Pass()
        for path in paths:
            self._features = self._model = 0.0
            started = time.perf_counter()
            text = self.recogniser.recognize(str(path))
            total = time.perf_counter() - started
            result.add(text, total, self._features, self._model)
        return result


Recogniser = Callable[[Sequence[Path]], Pass]
# (bundle dir, onnx-asr layout, threads) → ours, theirs, and extra fields for each row.
Engines = Callable[[Path, OnnxAsrModel, int], tuple[Recogniser, Recogniser, dict[str, Any]]]


def timed_grid(
    options: BenchOptions,
    family: Family,
    *,
    clips: Sequence[Path],
    tmp: Path,
    write_layout: Callable[[Path, Path], OnnxAsrModel],
    engines: Engines,
) -> list[dict[str, Any]]:
    """``side_by_side`` for each precision × threads × workload: the clips one at a time (the
    API's case), and one long WAV of real speech."""
    precisions: tuple[Precision, ...] = ("int8",) if options.quick else PRECISIONS
    long_seconds = QUICK_LONG_SECONDS if options.quick else LONG_SECONDS
    long_wav = write_wav(tmp / "speech.wav", real_speech(long_seconds))
    workloads = {
        f"{len(clips)} clips, one at a time": (clips, sum(sf.info(p).duration for p in clips)),
        f"{long_seconds:g} s WAV": ([long_wav], long_seconds),
    }
    runs: list[dict[str, Any]] = []
    for precision in precisions:
        bundle = bundle_for(family, precision, options)
        layout = write_layout(bundle, tmp / f"onnx-asr-{precision}")
        for threads in THREADS:
            ours, theirs, details = engines(bundle, layout, threads)
            for workload, (paths, audio_seconds) in workloads.items():
                runs.append(
                    {"precision": precision, "threads": threads, **details, "workload": workload,
                     "audio_seconds": round(float(audio_seconds), 3),
                     **side_by_side(ours, theirs, paths, options.repeats)}
                )  # fmt: skip
            del ours, theirs  # free both sessions before the next pair loads
    return runs


def side_by_side(
    ours: Recogniser,
    theirs: Recogniser,
    paths: Sequence[Path],
    repeats: int,
) -> dict[str, Any]:
    """A warm-up pass each, then ``repeats`` passes each, interleaved (and alternating who
    goes first) so machine noise hits both; the fastest pass of each is kept, the median
    too; per-stage seconds of the fastest; agreement of the warm-up transcripts."""
    warm_ours, warm_theirs = ours(paths), theirs(paths)
    timed: dict[str, list[Pass]] = {"ours": [], "theirs": []}
    for repeat in range(max(1, repeats)):
        order = ("ours", "theirs") if repeat % 2 == 0 else ("theirs", "ours")
        for who in order:
            timed[who].append((ours if who == "ours" else theirs)(paths))
    best = {who: min(passes, key=lambda p: p.total) for who, passes in timed.items()}
    medians = {who: statistics.median(p.total for p in passes) for who, passes in timed.items()}
    return {
        "ours_s": round(best["ours"].total, 4),
        "theirs_s": round(best["theirs"].total, 4),
        "ours_median_s": round(medians["ours"], 4),
        "theirs_median_s": round(medians["theirs"], 4),
        "speed_ratio": round(best["theirs"].total / best["ours"].total, 3),
        "stages_s": {
            who: {stage: round(value, 4) for stage, value in p.seconds.items()}
            for who, p in best.items()
        },
        "agreement": agreement(warm_ours.texts, warm_theirs.texts),
        "transcripts_stable": timed["ours"][-1].texts == warm_ours.texts
        and timed["theirs"][-1].texts == warm_theirs.texts,
    }


def agreement(ours: Sequence[str], theirs: Sequence[str]) -> dict[str, Any]:
    """Identical transcripts, and 1 − CER of theirs against ours (character edits over all
    items / characters of ours)."""
    edits = sum(edit_distance(a, b) for a, b in zip(ours, theirs, strict=True))
    characters = sum(len(a) for a in ours)
    # No characters in ours: full agreement exactly when theirs are empty too.
    chars = 1.0 - edits / characters if characters else float(edits == 0)
    return {
        "identical": sum(a == b for a, b in zip(ours, theirs, strict=True)),
        "total": len(ours),
        "char_agreement": round(chars, 5),
    }
