"""The numpy front ends against the same features computed with librosa.

Per family's front end (NeMo's for QuartzNet15x5, GigaAM v3's; configs from the bundles):
time per call on real speech, best of ``repeats`` after a warm-up, in a fresh process on one
CPU with one BLAS thread; how far the features are from librosa's; and what a cold process
pays to import each and compute its first features.
"""

from __future__ import annotations

import json
import statistics
from importlib import metadata
from typing import Any

from bench.common import RATE, BenchOptions, bench_main, markdown_table
from bench.models import DEMO_BUNDLES, FAMILY_INFO, Family
from bench.pinned import run_pinned

NAME = "frontend"
TITLE = "Front end vs librosa"
SECONDS = 60.0
QUICK_SECONDS = 5.0
FIRST_CALL_SECONDS = 5.0

# A fresh process: import numpy, then the front end's module, then build the QuartzNet front
# end and compute the first features of FIRST_CALL_SECONDS of noise.
_COLD = """
import json, time
started = time.perf_counter()
import numpy
numpy_done = time.perf_counter()
{imports}
imported = time.perf_counter()
from asr.config import FrontendConfig
audio = numpy.random.default_rng(0).standard_normal({samples}).astype(numpy.float32)
{make}(FrontendConfig())(audio)
finished = time.perf_counter()
print(json.dumps({{"numpy_s": numpy_done - started, "import_s": imported - numpy_done,
                  "first_call_s": finished - imported}}))
"""
# One family per front end (GigaAM v3 RNNT computes GigaAM v3 CTC's features).
FRONTEND_FAMILIES: tuple[Family, ...] = ("quartznet15x5", "gigaam_v3")
COLD_IMPORTS = {
    "asr.frontend": ("from asr.frontend import make_frontend", "make_frontend"),
    # librosa attaches its submodules lazily: touching them is part of importing it.
    "librosa": (
        "import librosa\nlibrosa.stft, librosa.filters.mel, librosa.effects.preemphasis\n"
        "from bench.librosa_frontend import make_librosa_frontend",
        "make_librosa_frontend",
    ),
}


def frontend_section(family: Family) -> dict[str, Any]:
    """The family's front end, as its bundles' config.json holds it (the demo bundles carry
    the same front-end section as the full-size shapes)."""
    config = json.loads((DEMO_BUNDLES[family] / "config.json").read_text("utf-8"))
    section: dict[str, Any] = config["frontend"]
    return section


def compare_in_child(seconds: float, repeats: int) -> dict[str, dict[str, Any]]:
    """Family → ``bench.frontend_compare.compare``'s result, from one pinned child."""
    sections = {family: frontend_section(family) for family in FRONTEND_FAMILIES}
    code = (
        "import json\nfrom bench.frontend_compare import compare\n"
        f"sections, seconds, repeats = {sections!r}, {seconds!r}, {repeats!r}\n"
        "print(json.dumps({family: compare(section, seconds, repeats)"
        " for family, section in sections.items()}))\n"
    )
    return run_pinned(code)


def cold_start(module: str, runs: int) -> dict[str, float]:
    """Median seconds over ``runs`` fresh processes: numpy import, module import, first call."""
    imports, make = COLD_IMPORTS[module]
    code = _COLD.format(imports=imports, make=make, samples=int(FIRST_CALL_SECONDS * RATE))
    samples = [run_pinned(code) for _ in range(runs)]
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def measure(options: BenchOptions) -> dict[str, Any]:
    seconds = QUICK_SECONDS if options.quick else SECONDS
    rows = []
    compared = compare_in_child(seconds, options.repeats)
    for family in FRONTEND_FAMILIES:
        rows.append({"family": family, "model": FAMILY_INFO[family].label, **compared[family]})
        print(rows[-1], flush=True)
    runs = 1 if options.quick else max(options.repeats, 3)
    cold = {module: cold_start(module, runs) for module in COLD_IMPORTS}
    print(cold, flush=True)
    return {
        "audio_s": seconds,
        "repeats": options.repeats,
        "cold_runs": runs,
        "librosa": metadata.version("librosa"),
        "rows": rows,
        "cold": cold,
    }


def both(values: dict[str, float], spec: str) -> str:
    """ "float32 / float64" cells: librosa on float32 and on float64 samples."""
    return " / ".join(spec.format(values[dtype]) for dtype in ("float32", "float64"))


def markdown(result: dict[str, Any]) -> str:
    seconds = result["audio_s"]
    speed = markdown_table(
        [
            "front end", "ours ms", "librosa ms (float32 / float64 input)",
            "librosa ÷ ours", "ours ms per audio s",
            "max \\|Δ\\| vs librosa", "relative to max \\|feature\\|",
        ],
        [
            [
                f"{row['model']} (`{row['frontend']}`)",
                f"{row['ours_ms']:.1f}",
                both(row["librosa_ms"], "{:.1f}"),
                both({k: v / row["ours_ms"] for k, v in row["librosa_ms"].items()}, "{:.2f}×"),
                f"{row['ours_ms'] / seconds:.3f}",
                both({k: v["max_abs"] for k, v in row["diff"].items()}, "{:.1e}"),
                both({k: v["relative"] for k, v in row["diff"].items()}, "{:.1e}"),
            ]
            for row in result["rows"]
        ],
    )  # fmt: skip
    cold = markdown_table(
        ["module", "import numpy s", "import module s", "first features s", "total s"],
        [
            [
                "`asr.frontend` (ours)"
                if module == "asr.frontend"
                else f"librosa {result['librosa']}",
                f"{times['numpy_s']:.3f}",
                f"{times['import_s']:.3f}",
                f"{times['first_call_s']:.3f}",
                f"**{sum(times.values()):.2f}**",
            ]
            for module, times in result["cold"].items()
        ],
    )
    note = (
        f"Time per call on {seconds:g} s of real Russian speech (16 kHz), best of "
        f"{result['repeats']} after a warm-up, in a fresh process pinned to one CPU with one "
        "BLAS thread; columns with two figures give librosa fed float32 samples (what "
        "`librosa.load` returns; librosa then keeps float32 and complex64 arrays) / "
        "float64 samples (ours computes in float64). librosa computes the same "
        "features the librosa way "
        "(`bench/librosa_frontend.py`: `effects.preemphasis`, `stft`, `filters.get_window`, "
        "`filters.mel`, numpy for log and normalisation; for GigaAM v3 its window and "
        "filterbank rounded to bfloat16, as v3 checkpoints hold them), window and filterbank "
        "built once for both; both spend their time in numpy's FFT and one matrix product. "
        "The differences are float rounding (our front end is tested against the PyTorch "
        "originals to ≤ 1e-4 in `tests/test_frontend*.py`). "
        f"Cold: median of {result['cold_runs']} fresh processes importing numpy, then the "
        "module (librosa's lazily attached submodules touched: numba, scipy and scikit-learn "
        f"come with them), then building the QuartzNet front end and computing the features "
        f"of {FIRST_CALL_SECONDS:g} s of audio; a cold Lambda pays that, and the runtime ships "
        "without librosa."
    )
    return f"{speed}\n\n{cold}\n\n{note}"


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
