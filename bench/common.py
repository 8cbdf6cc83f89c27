"""What every benchmark shares: paths, the machine description, real speech, results files.

Each benchmark module has ``run(args) -> dict`` (measures, returns a JSON-able result) and
``markdown(result) -> str`` (the README tables); ``python -m bench`` runs them in order, writes
``bench/results/<name>.json`` and regenerates the README section and the chart from those files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
RESULTS = REPO / "bench" / "results"
CACHE = REPO / ".cache" / "bench"
RATE = 16000

for _path in (str(REPO), str(REPO / "lambda_app")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from asr.resample import resample  # noqa: E402


@dataclass(frozen=True)
class BenchOptions:
    """``quick``: tiny inputs and the small demo bundles instead of the full-size shapes. It
    proves a benchmark runs end to end (the tests use it); its figures mean nothing."""

    quick: bool = False
    repeats: int = 3
    results_dir: Path = RESULTS  # where results are written (and earlier ones read)


Measure = Callable[[BenchOptions], dict[str, Any]]
Render = Callable[[dict[str, Any]], str]


def machine() -> dict[str, Any]:
    """Where and with what a result was measured (the README quotes it)."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_flags": _cpu_flags(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The SIMD extensions onnxruntime's int8 and fp32 kernels pick between."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}
    return sorted(wanted & flags)


def speech_clips() -> list[Path]:
    """The transcribed real Russian clips (16 kHz WAV), in a fixed order."""
    return sorted((SPEECH / "ru").glob("*.wav"))


def read_clip(path: Path | str) -> np.ndarray:
    """A speech file as float32 mono samples at 16 kHz."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return resample(audio.mean(axis=1), rate, RATE)


def real_speech(seconds: float, *, gap_seconds: float = 0.3) -> np.ndarray:
    """Real Russian speech at 16 kHz: the clips concatenated with short gaps, repeated and cut
    to ``seconds``."""
    pieces: list[np.ndarray] = []
    gap = np.zeros(int(gap_seconds * RATE), np.float32)
    wanted = int(seconds * RATE)
    total = 0
    while total < wanted:
        for path in speech_clips():
            pieces += [read_clip(path), gap]
            total += pieces[-2].size + gap.size
    return np.concatenate(pieces)[:wanted]


def write_wav(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


def write_result(name: str, result: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    """``bench/results/<name>.json``, with the machine it was measured on."""
    path = results_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **result}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_result(name: str, results_dir: Path = RESULTS) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results_dir / f"{name}.json").read_text("utf-8"))
    return data


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def bench_main(
    name: str, measure: Measure, markdown: Render, argv: Sequence[str] | None = None
) -> None:
    """A benchmark module's ``__main__``: measure, write ``bench/results/<name>.json``, print
    the tables."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}")
    parser.add_argument("--quick", action="store_true", help=BenchOptions.__doc__)
    parser.add_argument("--repeats", type=int, default=BenchOptions.repeats)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    options = BenchOptions(quick=args.quick, repeats=args.repeats, results_dir=args.results_dir)
    result = measure(options)
    path = write_result(name, result, args.results_dir)
    print(markdown(read_result(name, args.results_dir)))
    print(f"\nwritten: {path}")
