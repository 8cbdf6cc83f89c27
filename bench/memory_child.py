"""The memory benchmark's child process: load a bundle, transcribe one file, report memory.

Run by ``bench.memory`` and ``bench.emotion`` through ``bench.pinned.run_pinned`` (one CPU,
one thread), so it imports only the runtime: what it allocates is what the Lambda would.
"""

from __future__ import annotations

import json
import statistics
import time

from asr.emotion import EmotionClassifier
from asr.transcribe import Transcriber

from bench.pinned import status_mb


def main(bundle: str, audio: str, emotion: str | None = None) -> None:
    """Prints one JSON line: RSS after imports and after loading the bundle (and the
    emotion bundle, when given), the peak (VmHWM) after loading and after transcribing, the
    seconds each took, and what was transcribed."""
    imported_rss = status_mb("VmRSS")
    started = time.perf_counter()
    transcriber = Transcriber.from_dir(bundle, threads=1, emotion=emotion)
    loaded = time.perf_counter()
    loaded_rss, loaded_peak = status_mb("VmRSS"), status_mb("VmHWM")
    transcript = transcriber.transcribe(audio)
    finished = time.perf_counter()
    report = {
        "imports_rss_mb": imported_rss,
        "loaded_rss_mb": loaded_rss,
        "load_peak_mb": loaded_peak,
        "peak_rss_mb": status_mb("VmHWM"),
        "end_rss_mb": status_mb("VmRSS"),
        "load_s": loaded - started,
        "transcribe_s": finished - loaded,
        "audio_s": transcript.duration,
        "segments": len(transcript.segments),
        "segments_with_emotion": sum(s.emotion is not None for s in transcript.segments),
        "timings_s": transcript.to_dict()["timings"],
    }
    print(json.dumps(report))


def classify(bundle: str, clips: list[str], passes: int) -> None:
    """An emotion bundle alone: each clip classified on its own (as ``POST /emotion`` does),
    ``passes`` times after one warm-up clip; prints the median pass's RTF and memory."""
    from bench.common import RATE, read_clip  # noqa: PLC0415 (main() does not need it)

    imported_rss = status_mb("VmRSS")
    started = time.perf_counter()
    classifier = EmotionClassifier.load(bundle, threads=1)
    load_s = time.perf_counter() - started
    loaded_rss = status_mb("VmRSS")
    audio = [read_clip(path) for path in clips]
    classifier.classify(audio[0])
    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        for samples in audio:
            classifier.classify(samples)
        seconds.append(time.perf_counter() - started)
    audio_s = sum(samples.size for samples in audio) / RATE
    report = {
        "imports_rss_mb": imported_rss,
        "loaded_rss_mb": loaded_rss,
        "peak_rss_mb": status_mb("VmHWM"),
        "load_s": load_s,
        "audio_s": audio_s,
        "clips": len(audio),
        "rtf": statistics.median(seconds) / audio_s,
        "rtf_passes": [s / audio_s for s in seconds],
    }
    print(json.dumps(report))
