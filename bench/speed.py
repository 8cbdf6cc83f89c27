"""Warm real-time factor per family, precision and thread count, split by stage.

Each bundle is loaded once, transcribes the audio once to warm up, then ``repeats`` times; the
fastest run is kept (noise on a shared machine only ever adds time). The audio is a 60 s WAV
of real Russian speech, transcribed from the file as the Lambda does (decode included).
RTF = processing seconds / audio seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from asr.bundle import load_bundle
from asr.results import Timings
from asr.transcribe import Transcriber

from bench.common import (
    BenchOptions,
    bench_main,
    markdown_table,
    real_speech,
    write_wav,
)
from bench.models import FAMILIES, FAMILY_INFO, PRECISIONS, bundle_for

NAME = "speed"
TITLE = "Speed: warm real-time factor"
THREADS = (1, 2)
STAGES = ("decode", "features", "model", "decoder")


def measure(options: BenchOptions) -> dict[str, Any]:
    seconds = 10.0 if options.quick else 60.0
    repeats = 1 if options.quick else options.repeats
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(Path(tmp) / "speech.wav", real_speech(seconds))
        for family in FAMILIES:
            for precision in PRECISIONS:
                bundle = bundle_for(family, precision, options)
                for threads in THREADS:
                    best = _best_run(bundle, wav, threads, repeats)
                    rows.append(
                        {
                            "family": family,
                            "precision": precision,
                            "threads": threads,
                            "model_mb": round((bundle / "model.onnx").stat().st_size / 1e6, 1),
                            "rtf": round(best.total / seconds, 5),
                            **{
                                f"{stage}_ms_per_audio_s": round(
                                    1000 * getattr(best, stage) / seconds, 3
                                )
                                for stage in STAGES
                            },
                        }
                    )
                    print(rows[-1], flush=True)
    return {"audio_seconds": seconds, "repeats": repeats, "quick": options.quick, "rows": rows}


def _best_run(bundle: Path, wav: Path, threads: int, repeats: int) -> Timings:
    transcriber = Transcriber(load_bundle(bundle), threads=threads)
    transcriber.transcribe(wav)
    runs = [transcriber.transcribe(wav).timings for _ in range(repeats)]
    return min(runs, key=lambda timings: timings.total)


def rtf(result: dict[str, Any], family: str, precision: str, threads: int) -> float:
    """The measured RTF of one configuration (the cost and the chart read it)."""
    for row in result["rows"]:
        if (row["family"], row["precision"], row["threads"]) == (family, precision, threads):
            return float(row["rtf"])
    raise KeyError(f"no speed row for {family} {precision} {threads} threads")


def markdown(result: dict[str, Any]) -> str:
    headers = ["model (shape)", "precision", "threads", "model MB", "RTF", "× real time"]
    stages = ("decode", "VAD + features", "model", "decoder")
    headers += [f"{stage} ms per audio s" for stage in stages]
    rows = [
        [
            FAMILY_INFO[row["family"]].label,
            row["precision"],
            row["threads"],
            row["model_mb"],
            f"**{row['rtf']:.4f}**" if row["threads"] == 1 else f"{row['rtf']:.4f}",
            f"{1 / row['rtf']:.0f}",
            *(f"{row[f'{stage}_ms_per_audio_s']:.2f}" for stage in ("decode", "features")),
            f"{row['model_ms_per_audio_s']:.1f}",
            f"{row['decoder_ms_per_audio_s']:.3f}",
        ]
        for row in result["rows"]
    ]
    shapes = "; ".join(f"{FAMILY_INFO[f].label}: {FAMILY_INFO[f].shape}" for f in FAMILIES)
    return (
        markdown_table(headers, rows)
        + f"\n\nAudio: {result['audio_seconds']:.0f} s of the real Russian clips as one 16 kHz "
        f"WAV, transcribed from the file (decode included), warm, best of {result['repeats']}. "
        f"Random weights in the published shapes ({shapes}): speed does not depend on the "
        "weights. Audio longer than one model window goes through the production long-form "
        "path: Silero VAD (counted under features) cuts it at pauses into segments (≤ 25 s "
        "for Conformers, ≤ 30 s for QuartzNet) batched through the model. For GigaAM v3 RNNT "
        "“model” is the encoder and “decoder” the greedy prediction-network/joint loop over "
        "the same segments (its head trained to emit at the clips' real token rate: see "
        "bench/models.py); for the CTC models “decoder” is greedy CTC. "
        "1 thread is a 1,769 MB Lambda (1 vCPU)."
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
