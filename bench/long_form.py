"""Benchmark: a 60-minute recording through the long-form path, 1 thread, 1 CPU.

    .venv/bin/python bench/long_form.py [--minutes 60] [--work .cache/long_form]
                                        [--models quartznet gigaam] [--paths transcriber s3]

The recording: the real Russian clips of ../shared/data/speech in a seeded random order,
separated by pauses of 0.3-3 s (digital silence, some holding low white noise), with
-50 dBFS background noise throughout, as a 16 kHz 16-bit WAV (115 MB for an hour).

Bundles (random weights: speed and memory only, the transcripts are noise): the
QuartzNet15x5 and GigaAM v3 CTC shapes, int8, from ``bench/models.py`` (built once, cached).

Every measurement runs in a fresh process pinned to one CPU, as a 1,769 MB Lambda has one
vCPU: the ``transcriber`` path calls ``Transcriber.transcribe(path)``; the ``s3`` path runs
the Lambda handler on an S3 event for the uploaded WAV (S3 emulated by moto, in the same
process: moto's copy of the object counts in the peak). Wall time, RTF, the stage timings,
segments (how many, and the audio they cover: the model never sees the pauses the VAD
left out) and peak RSS (``VmHWM``) go to bench/results/long_form.json, and a table is
printed. RTF = transcription time (decoding included, model loading not) / audio length.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
RATE = 16000
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lambda_app"))

from asr.resample import resample  # noqa: E402

from bench.models import Family, shape_bundle  # noqa: E402
from bench.pinned import run_pinned  # noqa: E402

CHILD = """
import json, os, sys, time
path, bundle, mode = {path!r}, {bundle!r}, {mode!r}
started = time.perf_counter()
if mode == "transcriber":
    from asr.transcribe import Transcriber
    transcriber = Transcriber.from_dir(bundle, threads=1)
    loaded = time.perf_counter()
    transcript = transcriber.transcribe(path)
    report = {{"segments": len(transcript.segments), "duration": transcript.duration,
              "speech_s": sum(s.end - s.start for s in transcript.segments),
              "timings": transcript.to_dict()["timings"]}}
else:
    os.environ.update({{"MODEL_DIR": bundle, "OUTPUT_BUCKET": "asr-out", "ASR_THREADS": "1",
                       "MAX_S3_AUDIO_SECONDS": "4000", "AWS_DEFAULT_REGION": "us-east-1",
                       "POWERTOOLS_METRICS_NAMESPACE": "bench", "FFMPEG_TIMEOUT_SECONDS": "300"}})
    import boto3
    from moto import mock_aws
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="asr-in")
        s3.create_bucket(Bucket="asr-out")
        with open(path, "rb") as f:
            s3.put_object(Bucket="asr-in", Key="uploads/hour.wav", Body=f)
        import handler

        class Context:
            aws_request_id = "bench"
            function_name = "asr"
            memory_limit_in_mb = 1769
            invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:asr"
            def __init__(self):
                self.end = time.monotonic() + 900
            def get_remaining_time_in_millis(self):
                return int((self.end - time.monotonic()) * 1000)

        event = {{"Records": [{{"eventVersion": "2.1", "eventSource": "aws:s3",
                   "eventName": "ObjectCreated:Put",
                   "s3": {{"bucket": {{"name": "asr-in"}},
                          "object": {{"key": "uploads/hour.wav", "eTag": "x"}}}}}}]}}
        loaded = time.perf_counter()
        outcome = handler.lambda_handler(event, Context())
        body = s3.get_object(Bucket="asr-out", Key="transcripts/uploads/hour.wav.json")["Body"]
        result = json.loads(body.read())
        assert result["status"] == "done", result
        segments = result["transcript"]["segments"]
        report = {{"segments": len(segments), "duration": result["transcript"]["duration"],
                  "speech_s": sum(s["end"] - s["start"] for s in segments),
                  "timings": result["transcript"]["timings"]}}
finished = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
report.update(
    load_s=loaded - started, transcribe_s=finished - loaded, wall_s=finished - started,
    peak_rss_mb=int(status["VmHWM"].split()[0]) / 1024,
)
print(json.dumps(report))
"""


def build_recording(path: Path, minutes: float, seed: int = 0) -> int:
    """Write the recording; returns how many clips it holds."""
    rng = np.random.default_rng(seed)
    clips = []
    for clip_path in sorted((SPEECH / "ru").glob("*.wav")):
        audio, rate = sf.read(clip_path, dtype="float32", always_2d=True)
        clips.append(resample(audio.mean(axis=1), rate, RATE))
    total = int(minutes * 60 * RATE)
    signal = np.zeros(total, np.float32)
    position, placed = 0, 0
    while True:
        pause = int(rng.uniform(0.3, 3.0) * RATE)
        clip = clips[int(rng.integers(len(clips)))]
        if position + pause + clip.size > total:
            break
        if placed % 4 == 3:  # a noise burst in the pause
            signal[position : position + pause] = rng.normal(0, 0.01, pause)
        position += pause
        signal[position : position + clip.size] = clip
        position += clip.size
        placed += 1
    signal += rng.normal(0, 0.003, total).astype(np.float32)
    np.clip(signal, -1.0, 1.0, out=signal)
    sf.write(path, signal, RATE, subtype="PCM_16")
    return placed


MODELS: dict[str, Family] = {"quartznet": "quartznet15x5", "gigaam": "gigaam_v3"}
LABELS = {"quartznet": "QuartzNet15x5 shape, int8", "gigaam": "GigaAM v3 CTC shape, int8"}


def measure(path: Path, bundle: Path, mode: str) -> dict[str, Any]:
    return run_pinned(CHILD.format(path=str(path), bundle=str(bundle), mode=mode))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "long_form")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--paths", nargs="*", default=["transcriber", "s3"])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/long_form.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    recording = args.work / f"recording-{args.minutes:g}min.wav"
    clips_file = recording.with_suffix(".clips")
    if not recording.is_file():
        print(f"building the {args.minutes:g}-minute recording ...", flush=True)
        clips_file.write_text(str(build_recording(recording, args.minutes)))
    report: dict[str, Any] = {
        "recording": {
            "minutes": args.minutes,
            "format": "WAV, 16 kHz, 16-bit mono",
            "speech_clips": int(clips_file.read_text()),
            "bytes": recording.stat().st_size,
            "content": "../shared/data/speech ru clips, 0.3-3 s pauses, noise bursts, "
            "-50 dBFS background noise",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "cpus_used": 1,
            "threads": 1,
            "date": time.strftime("%Y-%m-%d"),
        },
        "rows": [],
    }
    if args.out.is_file():  # keep rows of models/paths not re-measured
        previous = json.loads(args.out.read_text())
        report["rows"] = [
            row
            for row in previous.get("rows", [])
            if not (row["model"] in args.models and row["path"] in args.paths)
        ]
    for model in args.models:
        bundle = shape_bundle(MODELS[model], "int8")
        for mode in args.paths:
            print(f"{model} / {mode} ...", flush=True)
            result = measure(recording, bundle, mode)
            row = {
                "model": model,
                "label": LABELS[model],
                "path": mode,
                "model_mb": round((bundle / "model.onnx").stat().st_size / 1e6, 1),
                "audio_s": round(result["duration"], 1),
                "wall_s": round(result["wall_s"], 1),
                "load_s": round(result["load_s"], 2),
                "transcribe_s": round(result["transcribe_s"], 1),
                "rtf": round(result["transcribe_s"] / result["duration"], 4),
                "peak_rss_mb": round(result["peak_rss_mb"]),
                "segments": result["segments"],
                "segmented_speech_s": round(result["speech_s"], 1),
                "timings_s": result["timings"],
            }
            report["rows"].append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(table(report["rows"]))


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | path | audio | in segments | wall | RTF | peak RSS | segments |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['path']} | {row['audio_s'] / 60:.0f} min | "
            f"{row['segmented_speech_s'] / 60:.1f} min | "
            f"{row['wall_s']:.0f} s | {row['rtf']:.4f} | {row['peak_rss_mb']} MB | "
            f"{row['segments']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
