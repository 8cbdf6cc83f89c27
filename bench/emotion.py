"""Emotion: GigaAM-Emo's classifier alone, and beside the GigaAM v3 CTC model (peak memory
with both loaded, the emotion pass's share of a transcription, cost per audio hour).

Every run is a fresh process on one CPU with one onnxruntime thread (``bench.pinned``, a
1,769 MB Lambda's vCPU). *Classifier*: the emotion bundle (``bench.emotion_shape``: the
published shape, random weights) classifies the 17 real clips one at a time, as
``POST /emotion`` does; RTF = seconds / audio seconds, median of ``repeats`` passes.
*With ASR*: ``Transcriber.from_dir(asr, emotion=…).transcribe(path)`` on the memory
benchmark's recordings (real clips, pauses, noise), alternating with the ASR bundle alone so
a noisy machine slows both alike; the emotion pass classifies every segment of 0.5 s or
more (``asr.segment_emotion``). Cost: ``bench.cost``'s Lambda prices for the measured RTF at
the smallest priced memory size the peak fits in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import BenchOptions, bench_main, markdown_table, speech_clips
from bench.cost import AUDIO_HOUR_S, MB_PER_VCPU, lambda_usd_per_audio_hour
from bench.memory import LAMBDA_MEMORY_MB, duration_label, recording, summarise
from bench.models import DEMO_BUNDLES, Family, Precision, bundle_for
from bench.pinned import run_pinned

NAME = "emotion"
TITLE = "Emotion: GigaAM-Emo alone and beside the ASR model"
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
ASR_FAMILY: Family = "gigaam_v3"
# (input seconds, runs of each configuration): short inputs repeat, the hour runs once.
INPUTS = ((600, 2), (3600, 1))
QUICK_INPUTS = ((60, 1),)
DEMO_EMOTION = DEMO_BUNDLES[ASR_FAMILY].parent / "emotion_bundle"
HEADROOM_MB = 100  # Lambda's runtime client and the handler's own objects


def emotion_bundle_for(precision: Precision, options: BenchOptions) -> Path:
    if options.quick:
        return DEMO_EMOTION
    from bench.emotion_shape import emotion_shape_bundle  # noqa: PLC0415 (imports torch)

    return emotion_shape_bundle(precision)


def classifier_row(precision: Precision, options: BenchOptions) -> dict[str, Any]:
    bundle = emotion_bundle_for(precision, options)
    clips = [str(path) for path in speech_clips()]
    passes = 1 if options.quick else max(options.repeats, 1)
    code = (
        f"from bench.memory_child import classify\nclassify({str(bundle)!r}, {clips!r}, {passes})\n"
    )
    run = run_pinned(code)
    return {
        "precision": precision,
        "model_mb": round((bundle / "model.onnx").stat().st_size / 1e6, 1),
        **{key: _rounded(value) for key, value in run.items()},
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return round(value, 4) if isinstance(value, float) else value


def transcribe_in_child(asr: Path, audio: Path, emotion: Path | None) -> dict[str, Any]:
    extra = f", {str(emotion)!r}" if emotion else ""
    code = f"from bench.memory_child import main\nmain({str(asr)!r}, {str(audio)!r}{extra})\n"
    return run_pinned(code)


def combined_row(seconds: int, runs: int, options: BenchOptions) -> dict[str, Any]:
    asr = bundle_for(ASR_FAMILY, "int8", options)
    emotion = emotion_bundle_for("int8", options)
    audio = recording(seconds)
    alone: list[dict[str, Any]] = []
    both: list[dict[str, Any]] = []
    for run in range(runs):
        order = (None, emotion) if run % 2 == 0 else (emotion, None)
        for with_emotion in order:
            report = transcribe_in_child(asr, audio, with_emotion)
            (both if with_emotion else alone).append(report)
            print({"input_s": seconds, "emotion": bool(with_emotion), **report}, flush=True)
    row = {
        "input_s": seconds,
        "alone": summarise(alone),
        "both": summarise(both),
        "segments_with_emotion": both[0]["segments_with_emotion"],
    }
    emotion_s = row["both"]["timings_s"]["emotion"]
    row["emotion_share_of_both"] = round(emotion_s / row["both"]["transcribe_s"], 3)
    row["emotion_rtf"] = round(emotion_s / row["both"]["audio_s"], 4)
    row["rtf_ratio"] = round(row["both"]["rtf"] / row["alone"]["rtf"], 2)
    row["peak_added_mb"] = round(row["both"]["peak_rss_mb"] - row["alone"]["peak_rss_mb"], 1)
    return row


def memory_size_for(peak_mb: float) -> int | None:
    """The smallest priced Lambda size with ``HEADROOM_MB`` left at ``peak_mb``."""
    return next((size for size in LAMBDA_MEMORY_MB if size - peak_mb >= HEADROOM_MB), None)


def cost_rows(combined: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per audio hour, from the shortest input's RTF (the repeated one) sized by the
    longest input's peak. The RTF is one thread's: at 3,008 MB the 1.7 vCPU would be
    faster, so that figure is an upper bound."""
    timed, sized = combined[0], combined[-1]
    rows = []
    for key, label in (("alone", "ASR alone"), ("both", "ASR + emotion")):
        rtf_value = timed[key]["rtf"]
        memory_mb = memory_size_for(sized[key]["peak_rss_mb"])
        usd = (
            None
            if memory_mb is None
            else lambda_usd_per_audio_hour(rtf_value, memory_mb, request_seconds=60.0)
        )
        rows.append(
            {
                "models": label,
                "rtf": rtf_value,
                "peak_rss_mb": sized[key]["peak_rss_mb"],
                "memory_mb": memory_mb,
                "seconds_per_audio_hour": round(rtf_value * AUDIO_HOUR_S, 1),
                "usd_per_audio_hour": usd,
                "upper_bound": memory_mb is not None and memory_mb > MB_PER_VCPU,
            }
        )
    return rows


def measure(options: BenchOptions) -> dict[str, Any]:
    classifier = [classifier_row(precision, options) for precision in PRECISIONS]
    inputs = QUICK_INPUTS if options.quick else INPUTS
    combined = [combined_row(seconds, runs, options) for seconds, runs in inputs]
    speedup = classifier[0]["rtf"] / classifier[1]["rtf"]
    return {
        "quick": options.quick,
        "cpus": 1,
        "threads": 1,
        "asr": f"{ASR_FAMILY} int8",
        "classifier": classifier,
        "int8_speedup": round(speedup, 2),
        "combined": combined,
        "cost": cost_rows(combined),
    }


def markdown(result: dict[str, Any]) -> str:
    alone = markdown_table(
        ["emotion bundle", "model MB", "after load MB", "peak MB", "load s", "RTF"],
        [
            [
                f"GigaAM-Emo shape, {row['precision']}",
                row["model_mb"],
                f"{row['loaded_rss_mb']:.0f}",
                f"{row['peak_rss_mb']:.0f}",
                f"{row['load_s']:.2f}",
                f"**{row['rtf']:.4f}**",
            ]
            for row in result["classifier"]
        ],
    )
    headers = ["input", "runs", "RTF ASR alone", "RTF ASR + emotion", "emotion's share"]
    headers += ["peak MB alone", "peak MB both", "added", "segments (with emotion)"]
    combined = markdown_table(
        headers,
        [
            [
                duration_label(row["input_s"]),
                row["both"]["runs"],
                f"{row['alone']['rtf']:.4f}",
                f"{row['both']['rtf']:.4f}",
                f"{row['emotion_share_of_both']:.0%}",
                f"{row['alone']['peak_rss_mb']:.0f}",
                f"**{row['both']['peak_rss_mb']:.0f}**",
                f"+{row['peak_added_mb']:.0f}",
                f"{row['both']['segments']} ({row['segments_with_emotion']})",
            ]
            for row in result["combined"]
        ],
    )
    cost = markdown_table(
        ["models", "RTF", "Lambda memory", "USD per audio hour"],
        [
            [
                row["models"],
                f"{row['rtf']:.4f}",
                f"{row['memory_mb']:,} MB" if row["memory_mb"] else "does not fit",
                (f"**${row['usd_per_audio_hour']:.4f}**" if row["usd_per_audio_hour"] else "–")
                + (" (upper bound)" if row["upper_bound"] else ""),
            ]
            for row in result["cost"]
        ],
    )
    return (
        f"{alone}\n\nint8 is {result['int8_speedup']:.1f}× faster than fp32 on the 17 real "
        "clips, one clip per run at one thread. Beside the GigaAM v3 CTC int8 shape on the "
        f"memory benchmark's recordings:\n\n{combined}\n\n{cost}\n\nRandom weights in the "
        "published shapes (`bench/emotion_shape.py`, the v1-era encoder GigaAM-Emo uses, "
        "16 layers, d_model 768): speed and memory are real, labels are noise. Memory size: "
        f"the smallest priced size with {HEADROOM_MB} MB left at the hour-long input's peak; "
        "cost: the 10-minute input's RTF, Lambda x86_64 prices as in the cost table."
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
