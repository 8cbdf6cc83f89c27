"""Benchmark: QuartzNet15x5-shaped bundles (random weights: speed only), warm RTF at 1 and 2
threads, fp32 vs int8, split by stage; first-request time in a fresh process.

    .venv/bin/python bench/quartznet_speed.py [--out bench/results/quartznet_speed.json]

Audio: real Russian clips from ../shared/data/speech concatenated to 60 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
sys.path.insert(0, str(REPO))

from asr.bundle import load_bundle  # noqa: E402
from asr.transcribe import Transcriber  # noqa: E402

from bench.quartznet_shape import export_quartznet15x5, random_quartznet15x5  # noqa: E402

COLD_START = """
import time, sys
t0 = time.perf_counter()
sys.path.insert(0, {lambda_dir!r})
from asr.transcribe import Transcriber
t1 = time.perf_counter()
transcriber = Transcriber.from_dir({bundle!r})
t2 = time.perf_counter()
transcriber.transcribe({clip!r})
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def sixty_seconds() -> np.ndarray:
    clips = sorted((SPEECH / "ru").glob("*.wav"))
    audio = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in clips])
    while audio.size < 60 * 16000:
        audio = np.concatenate([audio, audio])
    return audio[: 60 * 16000]


def warm(bundle: Path, audio: np.ndarray, threads: int, repeats: int) -> dict[str, float]:
    transcriber = Transcriber(load_bundle(bundle), threads=threads)
    transcriber.transcribe(audio, sample_rate=16000)
    runs = [transcriber.transcribe(audio, sample_rate=16000).timings for _ in range(repeats)]
    seconds = audio.size / 16000
    best = min(runs, key=lambda t: t.total)
    return {
        "rtf": best.total / seconds,
        "features_ms_per_s": 1000 * best.features / seconds,
        "model_ms_per_s": 1000 * best.model / seconds,
        "ctc_ms_per_s": 1000 * best.ctc / seconds,
    }


def cold_start(bundle: Path, clip: Path) -> dict[str, float]:
    code = COLD_START.format(
        lambda_dir=str(REPO / "lambda_app"), bundle=str(bundle), clip=str(clip)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imports, load, first = (float(x) for x in out.stdout.split())
    return {
        "imports_s": imports,
        "bundle_load_s": load,
        "first_5s_clip_s": first,
        "total_s": imports + load + first,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "quartznet_speed.json"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    audio = sixty_seconds()
    clip = SPEECH / "ru" / "golos_03.wav"
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "cpu": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        nemo = random_quartznet15x5(Path(tmp) / "q15x5.nemo")
        for precision in ("fp32", "int8"):
            bundle = export_quartznet15x5(nemo, Path(tmp) / precision, precision, clip)
            size_mb = (bundle / "model.onnx").stat().st_size / 1e6
            for threads in (1, 2):
                row = {
                    "model": "QuartzNet15x5 shape",
                    "precision": precision,
                    "threads": threads,
                    "model_mb": round(size_mb, 1),
                    **warm(bundle, audio, threads, args.repeats),
                }
                results["rows"].append(row)
            results.setdefault("cold_start", {})[precision] = cold_start(bundle, clip)
    demo = REPO / "demo" / "bundle"
    if demo.is_dir():
        results["rows"].append(
            {
                "model": "demo (trained)",
                "precision": "int8",
                "threads": 1,
                "model_mb": round((demo / "model.onnx").stat().st_size / 1e6, 2),
                **warm(demo, audio, 1, args.repeats),
            }
        )
        results.setdefault("cold_start", {})["demo"] = cold_start(demo, clip)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(
        "| model | precision | threads | model MB | RTF | features ms/s | model ms/s | CTC ms/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        cells = [r["model"], r["precision"], r["threads"], r["model_mb"], f"{r['rtf']:.4f}"]
        cells += [f"{r[k]:.2f}" for k in ("features_ms_per_s", "model_ms_per_s")]
        cells.append(f"{r['ctc_ms_per_s']:.3f}")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("\n| bundle | imports s | bundle load s | first 5 s clip s | total s |")
    print("|---|---|---|---|---|")
    for name, c in results["cold_start"].items():
        keys = ("imports_s", "bundle_load_s", "first_5s_clip_s", "total_s")
        print(f"| {name} | " + " | ".join(f"{c[k]:.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
