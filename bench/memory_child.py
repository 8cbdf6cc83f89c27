"""The memory benchmark's child process: load a bundle, transcribe one file, report memory.

Run by ``bench.memory`` through ``bench.pinned.run_pinned`` (one CPU, one thread), so it
imports only the runtime: what it allocates is what the Lambda would.
"""

from __future__ import annotations

import json
import time

from asr.transcribe import Transcriber

from bench.pinned import status_mb


def main(bundle: str, audio: str) -> None:
    """Prints one JSON line: RSS after imports and after loading the bundle, the peak (VmHWM)
    after loading and after transcribing, the seconds each took, and what was transcribed."""
    imported_rss = status_mb("VmRSS")
    started = time.perf_counter()
    transcriber = Transcriber.from_dir(bundle, threads=1)
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
        "timings_s": transcript.to_dict()["timings"],
    }
    print(json.dumps(report))
