"""Cold start: a fresh process imports the runtime, loads the bundle and transcribes a 5 s clip.

Each run is a new Python process pinned to one CPU (a 1,769 MB Lambda has one vCPU) with one
onnxruntime thread; the median of ``repeats`` runs is reported. The bundle is on local disk
and the OS file cache is warm, as on a Lambda host that has run the function before; bundle
load includes checking every file against SHA256SUMS and creating the onnxruntime session.
The packaged artifact's cold start (sam build output, Lambda's filesystem layout) is measured
separately by ``bench/packaged_cold_start.py``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import soundfile as sf

from bench.common import BenchOptions, bench_main, markdown_table, speech_clips
from bench.models import FAMILIES, FAMILY_INFO, PRECISIONS, bundle_for
from bench.pinned import run_pinned

NAME = "cold_start"
TITLE = "Cold start"
STAGES = ("imports_s", "bundle_load_s", "first_clip_s")

CHILD = """
import json, time
started = time.perf_counter()
from asr.transcribe import Transcriber
imported = time.perf_counter()
transcriber = Transcriber.from_dir({bundle!r}, threads=1)
loaded = time.perf_counter()
transcriber.transcribe({clip!r})
done = time.perf_counter()
print(json.dumps({{"imports_s": imported - started, "bundle_load_s": loaded - imported,
                  "first_clip_s": done - loaded}}))
"""


def first_request(bundle: Path, clip: Path) -> dict[str, float]:
    """One fresh process: seconds per stage."""
    stages: dict[str, float] = run_pinned(CHILD.format(bundle=str(bundle), clip=str(clip)))
    return stages


def measure(options: BenchOptions) -> dict[str, Any]:
    clip = speech_clips()[4]  # 5.2 s
    runs = 1 if options.quick else max(options.repeats, 3)
    rows: list[dict[str, Any]] = []
    for family in FAMILIES:
        for precision in PRECISIONS:
            bundle = bundle_for(family, precision, options)
            samples = [first_request(bundle, clip) for _ in range(runs)]
            row: dict[str, Any] = {"family": family, "precision": precision}
            for stage in STAGES:
                row[stage] = round(statistics.median(s[stage] for s in samples), 3)
            row["total_s"] = round(sum(row[stage] for stage in STAGES), 3)
            row["model_mb"] = round((bundle / "model.onnx").stat().st_size / 1e6, 1)
            rows.append(row)
            print(row, flush=True)
    return {
        "clip": clip.name,
        "clip_seconds": round(sf.info(str(clip)).duration, 2),
        "runs": runs,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    headers = ["model (shape)", "precision", "model MB", "imports s", "bundle load s"]
    headers += [f"first {result['clip_seconds']:.1f} s clip s", "total s"]
    rows = [
        [
            FAMILY_INFO[row["family"]].label,
            row["precision"],
            row["model_mb"],
            *(f"{row[stage]:.2f}" for stage in STAGES),
            f"**{row['total_s']:.2f}**",
        ]
        for row in result["rows"]
    ]
    return (
        markdown_table(headers, rows)
        + f"\n\nA fresh Python process per run, pinned to one CPU, one onnxruntime thread; "
        f"median of {result['runs']} runs. Bundle load = sha256 of every file + the "
        "onnxruntime session. The bundle is on local disk with a warm OS file cache; a model "
        "loaded from S3 adds its download ([Models too big for the zip]"
        "(#models-too-big-for-the-zip)); with SnapStart a restored snapshot skips imports and "
        "load."
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
