"""Benchmark: a 60-minute 8 kHz stereo call, down-mixed vs transcribed channel by channel.

    .venv/bin/python bench/stereo_call.py [--minutes 60] [--models gigaam quartznet]

The call: the real Russian clips of ../shared/data/speech at 8 kHz (telephone rate), in
seeded random order, as turns that alternate between the two channels with 0.3-2 s pauses;
one turn in six starts 0.3-1.5 s before the other side has finished (cross-talk), and each
channel has its own -50 dBFS noise. Written as 8 kHz 16-bit stereo WAV (115 MB an hour).

Bundles (random weights: speed and memory only): the GigaAM v3 CTC and QuartzNet15x5
shapes, int8 (``bench/models.py``). Every run is a fresh process pinned to one CPU with
one thread (a 1,769 MB Lambda's vCPU): ``mix`` transcribes the file as the service does by
default (one down-mixed track), ``split`` with ``channels="split"`` (each channel decoded
and transcribed in turn). The two alternate, ``--repeats`` times each, so a noisy machine
slows both alike; the report gives the median RTF and the worst peak RSS (``VmHWM``), and
the ratios the targets are about: split RTF ≤ 2× mix, split peak RSS ≤ mix + 25 %.
Results: bench/results/stereo_call.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
RATE = 8000
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lambda_app"))

from asr.resample import resample  # noqa: E402

from bench.common import machine  # noqa: E402
from bench.models import Family, shape_bundle  # noqa: E402
from bench.pinned import run_pinned  # noqa: E402

MODELS: dict[str, Family] = {"gigaam": "gigaam_v3", "quartznet": "quartznet15x5"}
LABELS = {"gigaam": "GigaAM v3 CTC shape, int8", "quartznet": "QuartzNet15x5 shape, int8"}
MODES = ("mix", "split")

CHILD = """
import json, time
from asr.channels import ChannelOptions
from asr.transcribe import Transcriber
started = time.perf_counter()
transcriber = Transcriber.from_dir({bundle!r}, threads=1)
loaded = time.perf_counter()
channels = ChannelOptions("split") if {mode!r} == "split" else None
transcript = transcriber.transcribe({path!r}, channels=channels)
finished = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({{
    "duration": transcript.duration, "channel_mode": transcript.channel_mode,
    "segments": len(transcript.segments), "timings": transcript.to_dict()["timings"],
    "load_s": loaded - started, "transcribe_s": finished - loaded,
    "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
}}))
"""


def build_call(path: Path, minutes: float, seed: int = 0) -> dict[str, int]:
    """Write the call; returns how many turns it holds and how many overlap."""
    rng = np.random.default_rng(seed)
    clips = []
    for clip_path in sorted((SPEECH / "ru").glob("*.wav")):
        audio, rate = sf.read(clip_path, dtype="float32", always_2d=True)
        clips.append(resample(audio.mean(axis=1), rate, RATE))
    total = int(minutes * 60 * RATE)
    call = rng.normal(0, 0.003, (total, 2)).astype(np.float32)
    position, turns, overlaps, channel = 0, 0, 0, 0
    while True:
        clip = clips[int(rng.integers(len(clips)))]
        if turns % 6 == 5:  # cut in before the other side has finished
            start = max(0, position - int(rng.uniform(0.3, 1.5) * RATE))
            overlaps += 1
        else:
            start = position + int(rng.uniform(0.3, 2.0) * RATE)
        if start + clip.size > total:
            break
        call[start : start + clip.size, channel] += clip
        position = max(position, start + clip.size)
        channel = 1 - channel
        turns += 1
    np.clip(call, -1.0, 1.0, out=call)
    sf.write(path, call, RATE, subtype="PCM_16")
    return {"turns": turns, "overlapping_turns": overlaps}


def measure(path: Path, bundle: Path, mode: str) -> dict[str, Any]:
    return run_pinned(CHILD.format(path=str(path), bundle=str(bundle), mode=mode))


def summarise(model: str, bundle: Path, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "label": LABELS[model]}
    for mode in MODES:
        results = runs[mode]
        duration = results[0]["duration"]
        row[mode] = {
            "rtf": round(statistics.median(r["transcribe_s"] / duration for r in results), 4),
            "rtf_runs": [round(r["transcribe_s"] / duration, 4) for r in results],
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results)),
            "segments": results[0]["segments"],
            "channel_mode": results[0]["channel_mode"],
            "timings_s": results[-1]["timings"],
        }
    row["audio_s"] = round(runs["mix"][0]["duration"], 1)
    row["model_mb"] = round((bundle / "model.onnx").stat().st_size / 1e6, 1)
    row["split_vs_mix_rtf"] = round(row["split"]["rtf"] / row["mix"]["rtf"], 2)
    row["split_vs_mix_rss"] = round(row["split"]["peak_rss_mb"] / row["mix"]["peak_rss_mb"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "stereo_call")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/stereo_call.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    call = args.work / f"call-{args.minutes:g}min.wav"
    facts_file = call.with_suffix(".json")
    if not call.is_file() or not facts_file.is_file():
        print(f"building the {args.minutes:g}-minute call ...", flush=True)
        facts_file.write_text(json.dumps(build_call(call, args.minutes)))
    report: dict[str, Any] = {
        "call": {
            "minutes": args.minutes,
            "format": "WAV, 8 kHz, 16-bit stereo",
            "bytes": call.stat().st_size,
            **json.loads(facts_file.read_text()),
            "content": "../shared/data/speech ru clips at 8 kHz, turns alternating between "
            "the channels, 0.3-2 s pauses, one turn in six overlapping, -50 dBFS noise",
        },
        "machine": {**machine(), "cpus_used": 1, "threads": 1},
        "targets": {"split_vs_mix_rtf": 2.0, "split_vs_mix_rss": 1.25},
        "rows": [],
    }
    for model in args.models:
        bundle = shape_bundle(MODELS[model], "int8")
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                print(f"{model} / {mode} ...", flush=True)
                runs[mode].append(measure(call, bundle, mode))
                print(runs[mode][-1], flush=True)
        report["rows"].append(summarise(model, bundle, runs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(table(report["rows"]))


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | mix RTF | split RTF | ratio | mix peak RSS | split peak RSS | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['mix']['rtf']:.4f} | {row['split']['rtf']:.4f} | "
            f"{row['split_vs_mix_rtf']:.2f}× | {row['mix']['peak_rss_mb']} MB | "
            f"{row['split']['peak_rss_mb']} MB | {row['split_vs_mix_rss']:.2f}× |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
