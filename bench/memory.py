"""Peak memory of one transcription: 10 s, 10 min and 60 min recordings, per family.

Each run is a fresh process on one CPU with one onnxruntime thread (``bench.pinned``; a
1,769 MB Lambda has one vCPU) that calls ``Transcriber.from_dir(bundle, threads=1)
.transcribe(path)`` on a WAV file: the Lambda's path for S3 uploads, so inputs longer than
one model pass go through the VAD and segment batching. The recordings are
``bench.long_form.build_recording``'s (real clips, pauses, noise), cached under
``.cache/bench/memory``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import CACHE, BenchOptions, bench_main, markdown_table
from bench.long_form import build_recording
from bench.models import FAMILIES, FAMILY_INFO, Family, Precision, bundle_for
from bench.pinned import run_pinned

NAME = "memory"
TITLE = "Peak memory"
LAMBDA_MEMORY_MB = (1769, 3008)  # 1 vCPU; 1.7 vCPUs of time on 2 (the priced sizes)
INPUT_SECONDS = (10, 600, 3600)
QUICK_INPUT_SECONDS = (10, 60)
FP32_INPUT_SECONDS = 10  # fp32 is not the deployable precision: one short input only
RECORDINGS = CACHE / "memory"
# glibc raises its mmap threshold when large blocks are freed, so after onnxruntime frees
# its load-time copies, later allocations may stay on the heap and the RSS after loading
# lands in one of two modes from run to run (GigaAM v3 int8: ~350 or ~495 MB). A fixed
# threshold keeps large blocks in mmap, which returns them to the OS.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def recording(seconds: int, directory: Path = RECORDINGS) -> Path:
    """The cached WAV of ``seconds`` seconds, built on first use."""
    path = directory / f"recording-{seconds}s.wav"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.wav")
        build_recording(partial, seconds / 60)
        partial.rename(path)
    return path


@dataclass(frozen=True)
class Case:
    family: Family
    precision: Precision
    seconds: int
    # glibc's malloc by default, or with a fixed mmap threshold (see MALLOC_TUNED).
    malloc_tuned: bool = False


def cases(options: BenchOptions) -> list[Case]:
    """What to measure. Quick mode: the demo bundles (int8), short inputs."""
    if options.quick:
        return [Case(family, "int8", s) for family in FAMILIES for s in QUICK_INPUT_SECONDS]
    runs: list[Case] = []
    for family in FAMILIES:
        runs += [Case(family, "int8", s) for s in INPUT_SECONDS]
        runs.append(Case(family, "fp32", FP32_INPUT_SECONDS))
    runs += [Case("gigaam_v3", "int8", s, malloc_tuned=True) for s in (10, INPUT_SECONDS[-1])]
    return runs


def runs_for(case: Case, options: BenchOptions) -> int:
    """Short inputs run ``repeats`` times (RSS after loading varies from run to run); a 10 or
    60 minute input once."""
    return 1 if options.quick or case.seconds > 60 else max(options.repeats, 1)


def peak_in_child(bundle: Path, audio: Path, *, malloc_tuned: bool = False) -> dict[str, Any]:
    code = f"from bench.memory_child import main\nmain({str(bundle)!r}, {str(audio)!r})\n"
    return run_pinned(code, extra_env=MALLOC_TUNED if malloc_tuned else None)


def headroom_mb(peak_mb: float) -> dict[str, float]:
    """Lambda memory size (MB) → what is left of it at ``peak_mb`` (negative: out of memory)."""
    return {str(size): round(size - peak_mb, 1) for size in LAMBDA_MEMORY_MB}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several children's reports of one case: memory at its worst (what sizing needs), the
    spread of RSS after loading, seconds as the median."""

    def worst(key: str) -> float:
        return round(max(float(run[key]) for run in runs), 1)

    def median(key: str) -> float:
        return float(statistics.median(float(run[key]) for run in runs))

    load_s, transcribe_s, audio_s = median("load_s"), median("transcribe_s"), runs[0]["audio_s"]
    return {
        "runs": len(runs),
        "audio_s": round(audio_s, 2),
        "imports_rss_mb": worst("imports_rss_mb"),
        "loaded_rss_mb": worst("loaded_rss_mb"),
        "loaded_rss_mb_range": [
            round(min(r["loaded_rss_mb"] for r in runs), 1),
            worst("loaded_rss_mb"),
        ],
        "load_peak_mb": worst("load_peak_mb"),
        "peak_rss_mb": worst("peak_rss_mb"),
        "load_s": round(load_s, 2),
        "transcribe_s": round(transcribe_s, 2),
        "wall_s": round(load_s + transcribe_s, 2),
        "rtf": round(transcribe_s / audio_s, 4),
        "segments": runs[0]["segments"],
        "timings_s": runs[0]["timings_s"],
        "headroom_mb": headroom_mb(worst("peak_rss_mb")),
    }


def measure(options: BenchOptions) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for case in cases(options):
        bundle = bundle_for(case.family, case.precision, options)
        audio = recording(case.seconds)
        runs = [
            peak_in_child(bundle, audio, malloc_tuned=case.malloc_tuned)
            for _ in range(runs_for(case, options))
        ]
        label = f"demo ({bundle.name})" if options.quick else FAMILY_INFO[case.family].label
        row = {
            "family": case.family,
            "model": label,
            "precision": case.precision,
            "malloc_tuned": case.malloc_tuned,
            "input_s": case.seconds,
            "model_mb": round((bundle / "model.onnx").stat().st_size / 1e6, 1),
            **summarise(runs),
        }
        rows.append(row)
        print(row, flush=True)
    return {
        "quick": options.quick,
        "cpus": 1,
        "threads": 1,
        "malloc_tuned_env": MALLOC_TUNED,
        "rows": rows,
    }


def duration_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def after_load(row: dict[str, Any]) -> str:
    """RSS after loading: one figure, or the range over the runs when it varied."""
    low, high = row["loaded_rss_mb_range"]
    return f"{high:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"


def markdown(result: dict[str, Any]) -> str:
    sizes = [f"{size:,} MB" for size in LAMBDA_MEMORY_MB]
    headers = ["model (shape)", "precision", "input", "runs", "model MB", "after load MB"]
    headers += ["peak MB", "load s", "transcribe s", "RTF", "segments"]
    headers += [f"headroom at {size}" for size in sizes]
    tuned = " ".join(f"`{k}={v}`" for k, v in result["malloc_tuned_env"].items())
    rows = [
        [
            row["model"] + (f", {tuned}" if row["malloc_tuned"] else ""),
            row["precision"],
            duration_label(row["input_s"]),
            row["runs"],
            row["model_mb"],
            after_load(row),
            f"**{row['peak_rss_mb']:.0f}**",
            f"{row['load_s']:.2f}",
            f"{row['transcribe_s']:.2f}",
            f"{row['rtf']:.4f}",
            row["segments"],
            *(f"{row['headroom_mb'][str(size)]:.0f} MB" for size in LAMBDA_MEMORY_MB),
        ]
        for row in result["rows"]
    ]
    note = (
        "Peak RSS (`VmHWM`, MB = MiB as Lambda counts) of a fresh process pinned to one CPU "
        "with one onnxruntime thread that loads the bundle (`Transcriber.from_dir`, checksums "
        "and session included) and transcribes one 16 kHz WAV file with `.transcribe(path)`, "
        "the path S3 uploads take: inputs longer than one model pass are decoded in blocks "
        "into one signal at 16 kHz (60 min = 220 MiB of float32, most of the growth with "
        "length), run through the VAD, cut at pauses and batched. *After load*: RSS once the "
        "model is loaded, before any audio. Inputs up to 60 s run several times: memory is "
        "the worst run, seconds the median; the RSS after loading falls in one of two modes "
        "from run to run with glibc's default malloc (its mmap threshold rises when "
        "onnxruntime frees its load-time copies), so a single 10 or 60 minute run may have "
        f"caught either; the rows with {tuned} fix the threshold. Recordings: real Russian "
        "clips with 0.3-3 s pauses and background noise (`bench/long_form.py`'s "
        "`build_recording`). Headroom = Lambda memory size − peak; Lambda also counts its "
        "runtime client (a few tens of MB) that this process lacks. RTF = transcribe seconds "
        "/ audio seconds (decoding included, loading not; the VAD leaves pauses out of long "
        "inputs). Random weights: speed and memory are real, transcripts are noise."
    )
    return markdown_table(headers, rows) + "\n\n" + note


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
