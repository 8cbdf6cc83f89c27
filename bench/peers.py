"""Benchmark: the peers as users get them. onnx-asr and sherpa-onnx each run their own int8
file (made by their own recipe, ``bench.peer_recipes``) in their own runtime with its
defaults; we run our int8 bundle. All three start from the same fp32 graph.

Shapes: GigaAM v3 CTC and v2 CTC, random weights (speed does not depend on them). Workloads:
the 17 real clips one at a time (the API's case) and one 60 s WAV of real speech. Threads 1
and 2. Warm: each engine is loaded once and warmed up by one pass, then timed ``repeats``
times, the three interleaved with a rotating order; the fastest pass is kept. Cold: a fresh
process pinned to one CPU imports the runtime, loads the model and transcribes one 5 s clip,
the engines interleaved, median of the runs.

Transcripts from random weights are noise, so agreement is measured on the trained demo
Conformer: each recipe is applied to its fp32 graph, and each runtime's transcripts are
compared with the PyTorch original's.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import soundfile as sf
from asr.bundle import load_bundle

from bench.common import (
    BenchOptions,
    bench_main,
    markdown_table,
    real_speech,
    speech_clips,
    write_wav,
)
from bench.models import FAMILY_INFO, PEER_FAMILIES, Family, bundle_for, gigaam_graph
from bench.onnx_asr_engines import QUICK_CLIPS, Ours, Pass, Theirs, agreement
from bench.onnx_asr_layout import write_layout
from bench.peer_engines import Sherpa, cold_start, trained_graph
from bench.peer_recipes import onnx_asr_int8, sherpa_int8, write_sherpa_layout

NAME = "peers"
TITLE = "Peers as users get them"
ENGINES = ("ours", "onnx_asr", "sherpa_onnx")
ENGINE_LABELS = {"ours": "ours", "onnx_asr": "onnx-asr", "sherpa_onnx": "sherpa-onnx"}
THREADS = (1, 2)
LONG_SECONDS = 60.0
QUICK_LONG_SECONDS = 4.0
Recogniser = Callable[[Sequence[Path]], Pass]


def measure(options: BenchOptions) -> dict[str, Any]:
    clips = speech_clips()[:QUICK_CLIPS] if options.quick else speech_clips()
    families: tuple[Family, ...] = PEER_FAMILIES[:1] if options.quick else PEER_FAMILIES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        long_seconds = QUICK_LONG_SECONDS if options.quick else LONG_SECONDS
        long_wav = write_wav(root / "speech.wav", real_speech(long_seconds))
        workloads: dict[str, tuple[Sequence[Path], float]] = {
            f"{len(clips)} clips, one at a time": (clips, sum(sf.info(p).duration for p in clips)),
            f"{long_seconds:g} s WAV": ([long_wav], long_seconds),
        }
        warm: list[dict[str, Any]] = []
        cold: list[dict[str, Any]] = []
        for family in families:
            layouts = _layouts(family, options, root / family)
            for threads in THREADS:
                warm += _warm_rows(family, layouts, threads, workloads, options.repeats)
            runs = 1 if options.quick else max(options.repeats, 3)
            cold.append(
                {"family": family, **cold_start(layouts, speech_clips()[4], runs)}
            )  # fmt: skip
        trained = _trained_agreement(clips, root / "trained")
    return {
        "quick": options.quick,
        "versions": {"onnx_asr": version("onnx-asr"), "sherpa_onnx": version("sherpa-onnx")},
        "repeats": options.repeats,
        "statistic": "best (minimum) of the interleaved repeats; the median is kept too",
        "warm": warm,
        "cold": cold,
        "trained": trained,
    }


def _layouts(family: Family, options: BenchOptions, out: Path) -> dict[str, Path]:
    """Each engine's model directory: our int8 bundle, onnx-asr's and sherpa-onnx's own int8
    files made from the fp32 graph our bundle was exported from."""
    bundle = bundle_for(family, "int8", options)
    # Quick runs use the demo bundle: its fp32 graph comes from the demo checkpoint.
    graph = trained_graph(out / "graph") if options.quick else gigaam_graph(family)
    vocab_size = len(load_bundle(bundle).vocabulary.tokens)
    onnx_asr_dir = write_layout(bundle, out / "onnx-asr", int8_file=onnx_asr_int8(graph)).root
    sherpa = write_sherpa_layout(sherpa_int8(graph, vocab_size=vocab_size), bundle, out / "sherpa")
    return {"ours": bundle, "onnx_asr": onnx_asr_dir, "sherpa_onnx": sherpa}


def _engines(layouts: dict[str, Path], threads: int) -> dict[str, Recogniser]:
    from bench.onnx_asr_layout import OnnxAsrModel  # noqa: PLC0415

    onnx_asr_dir = layouts["onnx_asr"]
    (model_file,) = onnx_asr_dir.glob("v?_ctc.int8.onnx")
    model = OnnxAsrModel(onnx_asr_dir, f"gigaam-{model_file.name[:2]}-ctc", "int8", model_file)
    return {
        "ours": Ours(layouts["ours"], threads),
        "onnx_asr": Theirs(model, threads, as_shipped=True),
        "sherpa_onnx": Sherpa(layouts["sherpa_onnx"], threads),
    }


def _warm_rows(
    family: Family,
    layouts: dict[str, Path],
    threads: int,
    workloads: dict[str, tuple[Sequence[Path], float]],
    repeats: int,
) -> list[dict[str, Any]]:
    engines = _engines(layouts, threads)
    rows = []
    for workload, (paths, audio_seconds) in workloads.items():
        timed = interleaved(engines, paths, repeats)
        row = {
            "family": family,
            "threads": threads,
            "workload": workload,
            "audio_seconds": round(float(audio_seconds), 3),
            **timed,
        }
        print({k: v for k, v in row.items() if k != "texts"}, flush=True)
        rows.append(row)
    return rows


def interleaved(
    engines: dict[str, Recogniser], paths: Sequence[Path], repeats: int
) -> dict[str, Any]:
    """One warm-up pass each, then ``repeats`` rounds in which every engine runs once, the
    order rotating so machine noise hits all; best and median seconds per engine, and the
    ratio of each peer's best to ours (> 1: we are faster)."""
    names = list(engines)
    for name in names:
        engines[name](paths)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(max(1, repeats)):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(engines[name](paths).total)
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "best_s": {name: round(value, 4) for name, value in best.items()},
        "median_s": {name: round(statistics.median(v), 4) for name, v in seconds.items()},
        "ratio_to_ours": {name: round(best[name] / best["ours"], 3) for name in names},
    }


def _trained_agreement(clips: Sequence[Path], out: Path) -> dict[str, Any]:
    """The demo Conformer through the three runtimes at 1 thread (each with its own int8 file
    of the demo's fp32 graph), against the PyTorch original on the same audio."""
    from bench.peer_engines import DEMO_CHECKPOINT, demo_audio, torch_texts  # noqa: PLC0415

    graph = trained_graph(out / "graph")
    layouts = _layouts_for_graph(graph, out)
    engines = _engines(layouts, 1)
    sets = []
    for name, paths in (
        ("demo/audio held-out espeak clips", demo_audio()),
        (f"{len(clips)} real clips", list(clips)),
    ):
        reference = torch_texts(paths)
        entry: dict[str, Any] = {"set": name, "clips": len(paths)}
        for engine, recognise in engines.items():
            entry[engine] = agreement(reference, recognise(paths).texts)
        sets.append(entry)
    return {"checkpoint": DEMO_CHECKPOINT.name, "threads": 1, "sets": sets}


def _layouts_for_graph(graph: Path, out: Path) -> dict[str, Path]:
    from bench.peer_engines import DEMO_BUNDLE  # noqa: PLC0415

    vocab_size = len(load_bundle(DEMO_BUNDLE).vocabulary.tokens)
    cache = out / "int8"
    onnx_asr_file = onnx_asr_int8(graph, cache=cache)
    sherpa_file = sherpa_int8(graph, vocab_size=vocab_size, cache=cache)
    return {
        "ours": DEMO_BUNDLE,
        "onnx_asr": write_layout(DEMO_BUNDLE, out / "onnx-asr", int8_file=onnx_asr_file).root,
        "sherpa_onnx": write_sherpa_layout(sherpa_file, DEMO_BUNDLE, out / "sherpa"),
    }


def markdown(result: dict[str, Any]) -> str:
    labels = [ENGINE_LABELS[name] for name in ENGINES]
    warm = markdown_table(
        ["model (shape)", "threads", "workload", *(f"{label} RTF" for label in labels),
         *(f"{ENGINE_LABELS[name]} / ours" for name in ENGINES[1:])],
        [
            [
                FAMILY_INFO[row["family"]].label,
                row["threads"],
                row["workload"],
                *(f"{row['best_s'][name] / row['audio_seconds']:.4f}" for name in ENGINES),
                *(f"**{row['ratio_to_ours'][name]:.2f}×**" for name in ENGINES[1:]),
            ]
            for row in result["warm"]
        ],
    )  # fmt: skip
    cold = markdown_table(
        ["model (shape)", *(f"{label} s" for label in labels)],
        [
            [FAMILY_INFO[row["family"]].label,
             *(f"{row['total_s'][name]:.2f}" for name in ENGINES)]
            for row in result["cold"]
        ],
    )  # fmt: skip
    trained = markdown_table(
        ["audio (vs PyTorch)", *(f"{label}: identical / char agreement" for label in labels)],
        [
            [
                f"{entry['set']}",
                *(
                    f"{entry[name]['identical']} / {entry[name]['total']} · "
                    f"{entry[name]['char_agreement']:.4f}"
                    for name in ENGINES
                ),
            ]
            for entry in result["trained"]["sets"]
        ],
    )
    versions = result["versions"]
    quick = " **Quick run (demo model, tiny inputs): the figures mean nothing.**"
    return "\n\n".join(
        [
            "Warm, real-time factor (seconds per second of audio; lower is faster) and each "
            "peer's time over ours (> 1: we are faster):",
            warm,
            "Cold: a fresh process (one CPU, one thread) imports, loads the int8 model and "
            "transcribes a 5 s clip; median seconds:",
            cold,
            f"Transcripts of the trained demo Conformer ({result['trained']['checkpoint']}) "
            "against its PyTorch original, each runtime on its own int8 file:",
            trained,
            f"Method: onnx-asr {versions['onnx_asr']} and sherpa-onnx {versions['sherpa_onnx']} "
            "from PyPI, each on the int8 file its own recipe makes from the same fp32 graph "
            "(onnx-asr: onnxruntime's `quantize_dynamic` defaults, the operators its published "
            "files show; sherpa-onnx: its export scripts' metadata and "
            "`quantize_dynamic(weight_type=QUInt8)`), with onnxruntime's default session "
            "options but the thread count; ours: our int8 bundle (`python -m export`). Same "
            "WAV paths, one at a time; onnx-asr and sherpa-onnx run the 60 s file as one "
            "pass, ours through its VAD segments. Best of "
            f"{result['repeats']} interleaved passes after a warm-up (medians in the JSON). "
            "sherpa-onnx's GigaAM front end is its own approximation (pre-emphasis, a 512-point "
            "FFT), hence its agreement." + (quick if result["quick"] else ""),
        ]
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
