"""Benchmark: this runtime and onnx-asr side by side on the same ONNX file, audio and threads.

For the GigaAM v3 CTC shape bundles (fp32 and int8) at 1 and 2 threads, our
``Transcriber`` and onnx-asr's recogniser (loaded from ``bench.onnx_asr_layout``'s directory,
whose model file is a link to the bundle's model.onnx) are loaded once with the same session
options, warmed up by one pass, then timed ``repeats`` times, ours and theirs interleaved
(and alternating who goes first) so machine noise hits both; the fastest pass of each is
kept. Workloads: the 17 real Russian clips, each transcribed from its WAV path one at a time
(the API's case), and one 20 s WAV of real speech (one model pass for both). Each pass is
split into front end, model and the rest (WAV reading, CTC decoding, text).

Random weights make the shape bundles' transcripts noise, so agreement is also measured on
the trained demo Conformer; the front ends are compared directly (window, filterbank,
features), and with onnx-asr given our filterbank, to say where any disagreement comes from.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import onnx_asr

from bench.common import (
    BenchOptions,
    bench_main,
    markdown_table,
    speech_clips,
)
from bench.models import FAMILY_INFO, bundle_for
from bench.onnx_asr_agreement import (
    compare_frontends,
    theirs_preprocessor,
    trained_agreement,
)
from bench.onnx_asr_engines import QUICK_CLIPS, STAGES, Ours, Theirs, timed_grid
from bench.onnx_asr_layout import OnnxAsrModel, UnsupportedBundle, write_layout

NAME = "onnx_asr"
TITLE = "Side by side with onnx-asr"


def measure(options: BenchOptions) -> dict[str, Any]:
    clips = speech_clips()[:QUICK_CLIPS] if options.quick else speech_clips()

    def engines(
        bundle: Path, layout: OnnxAsrModel, threads: int
    ) -> tuple[Ours, Theirs, dict[str, Any]]:
        ours, theirs = Ours(bundle, threads), Theirs(layout, threads)
        return ours, theirs, {"session_threads": {"ours": ours.threads, "theirs": theirs.threads}}

    with tempfile.TemporaryDirectory() as tmp:
        runs = timed_grid(
            options,
            "gigaam_v3",
            clips=clips,
            tmp=Path(tmp),
            write_layout=write_layout,
            engines=engines,
        )
        unsupported = _quartznet_attempts(options, Path(tmp))
    return {
        "quick": options.quick,
        "onnx_asr": version("onnx-asr"),
        "family": FAMILY_INFO["gigaam_v3"].shape,
        "repeats": options.repeats,
        "statistic": "best (minimum) of the repeats; the median is kept too",
        "same_model_file": True,
        "onnx_asr_frontend": type(theirs_preprocessor()).__name__,
        "runs": runs,
        "frontends": compare_frontends(clips),
        "trained": trained_agreement(clips),
        "unsupported": unsupported,
    }


def _quartznet_attempts(options: BenchOptions, tmp: Path) -> list[dict[str, Any]]:
    """QuartzNet15x5 in onnx-asr: the layout writer's refusal, and what onnx-asr does when the
    bundle is forced into its NeMo CTC layout anyway (64 mels; then 80, its smallest)."""
    bundle = bundle_for("quartznet15x5", "fp32", options)
    try:
        write_layout(bundle, tmp / "quartznet")
    except UnsupportedBundle as refusal:
        reason = refusal.message
    else:
        raise AssertionError("the layout writer accepted a QuartzNet bundle")
    attempts: list[dict[str, Any]] = []
    forced = tmp / "quartznet-forced"
    forced.mkdir()
    (forced / "model.onnx").symlink_to((bundle / "model.onnx").resolve())
    (forced / "vocab.txt").write_text((bundle / "tokens.txt").read_text("utf-8"), "utf-8")
    for features_size in (64, 80):
        settings = {
            "model_type": "nemo-conformer-ctc",
            "features_size": features_size,
            "subsampling_factor": 2,
        }
        (forced / "config.json").write_text(json.dumps(settings), "utf-8")
        try:
            recogniser = onnx_asr.load_model(
                "nemo-conformer-ctc", forced, providers=["CPUExecutionProvider"]
            )
            recogniser.recognize(str(speech_clips()[0]))
        except Exception as exc:  # whatever onnx-asr raises is the finding
            attempts.append({"config": settings, "error": f"{type(exc).__name__}: {exc}"})
        else:
            attempts.append({"config": settings, "error": None})
    return [
        {
            "family": FAMILY_INFO["quartznet15x5"].label,
            "reason": reason,
            "forced_into_nemo_conformer_ctc": attempts,
        }
    ]


def _rtf(seconds: float, audio_seconds: float) -> str:
    return f"{seconds / audio_seconds:.4f}"


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    speed = markdown_table(
        [
            "precision",
            "threads",
            "workload",
            "ours s",
            "onnx-asr s",
            "ours RTF",
            "onnx-asr RTF",
            "speed ratio (onnx-asr / ours)",
            "identical transcripts",
            "char agreement",
        ],
        [
            [
                r["precision"],
                r["threads"],
                r["workload"],
                f"{r['ours_s']:.3f}",
                f"{r['theirs_s']:.3f}",
                _rtf(r["ours_s"], r["audio_seconds"]),
                _rtf(r["theirs_s"], r["audio_seconds"]),
                f"**{r['speed_ratio']:.2f}×**",
                f"{r['agreement']['identical']} / {r['agreement']['total']}",
                f"{r['agreement']['char_agreement']:.4f}",
            ]
            for r in runs
        ],
    )
    stages = markdown_table(
        [
            "precision",
            "threads",
            "workload",
            "front end ours / onnx-asr s",
            "model ours / onnx-asr s",
            "rest ours / onnx-asr s",
        ],
        [
            [
                r["precision"],
                r["threads"],
                r["workload"],
                *(
                    f"{r['stages_s']['ours'][stage]:.3f} / {r['stages_s']['theirs'][stage]:.3f}"
                    for stage in STAGES
                ),
            ]
            for r in runs
        ],
    )
    trained = result["trained"]
    trained_rows = []
    for entry in trained["sets"]:
        note = ""
        if "ours_exact" in entry:
            note = (
                f"reference transcripts: ours {entry['ours_exact']}, "
                f"onnx-asr {entry['theirs_exact']} of {entry['total']}"
            )
        if "with_our_filterbank" in entry:
            swapped = entry["with_our_filterbank"]
            disagreeing = entry["disagreeing"]
            explained = sum(d["ours_on_their_features"] == d["theirs"] for d in disagreeing)
            note = (
                f"onnx-asr with our filterbank: {swapped['identical']} / {swapped['total']} "
                f"identical; our model and decoder on onnx-asr's features reproduce "
                f"{explained} of its {len(disagreeing)} differing transcripts"
            )
        trained_rows.append(
            [
                entry["set"],
                f"{entry['identical']} / {entry['total']}",
                f"{entry['char_agreement']:.4f}",
                note,
            ]
        )
    agreement_table = markdown_table(
        ["audio", "identical transcripts", "char agreement", "note"], trained_rows
    )
    frontends = result["frontends"]
    deltas = frontends["max_abs_log_mel_delta"]
    differing = ", ".join(
        f"mel {d['mel']} bin {d['bin']}: ours {d['ours']:.6g}, onnx-asr {d['theirs']:.6g}"
        for d in frontends["filterbank_differing"]
    )
    unsupported = "; ".join(
        f"**{u['family']}: not supported by onnx-asr** — {u['reason']}. Forced into its "
        "NeMo CTC layout anyway: "
        + "; ".join(
            f"features_size {a['config']['features_size']} → {a['error'] or 'ran'}"
            for a in u["forced_into_nemo_conformer_ctc"]
        )
        for u in result["unsupported"]
    )
    ratios = [r["speed_ratio"] for r in runs]
    quick = (
        " **Quick run (demo bundle, 2 clips): the figures mean nothing.**"
        if result["quick"]
        else ""
    )
    return "\n\n".join(
        [
            speed,
            "Where the time goes (fastest pass of each, seconds): front end, ONNX model run, "
            "and the rest (WAV reading, CTC decoding, text; ours also builds word timestamps "
            "and confidences).",
            stages,
            f"Transcript agreement on the trained demo Conformer ({trained['model_id']}, "
            f"{trained['precision']}, {trained['threads']} thread):",
            agreement_table,
            "The demo model was trained on espeak speech only: on the held-out espeak clips "
            "both runtimes give the references; real speech is outside its training, its "
            "transcripts there are gibberish close to decision boundaries, which makes them a "
            "sensitive probe of the front ends.",
            f"Front ends: onnx-asr {result['onnx_asr']}'s GigaAM v3 front end "
            f"({result['onnx_asr_frontend']}, float32 arithmetic) uses the bfloat16-rounded "
            f"window (identical to ours: {frontends['window_identical']}) and a "
            f"bfloat16-rounded filterbank that differs from ours (torch's buffers, bit for "
            f"bit) in {len(frontends['filterbank_differing'])} of "
            f"{frontends['filterbank_entries']} entries ({differing}). Max |Δ log-mel| over "
            f"{frontends['clips']} real clips: {deltas['theirs_vs_ours']:g} "
            f"(filterbank's share {deltas['filterbank_share']:g}, float32 vs float64 "
            f"arithmetic's share {deltas['arithmetic_share']:g}).",
            unsupported,
            f"Method: {result['family']}, random weights (speed only), fp32 and int8 bundles; "
            f"onnx-asr {result['onnx_asr']} loads the same model.onnx (a symlink in its "
            "local layout, `gigaam-v3-ctc`) with the same onnxruntime session options "
            "(intra-op threads as listed, inter-op 1, sequential, all optimisations), CPU "
            "provider, its numpy front end. Both transcribe each WAV from its path, one at a "
            f"time, warm (loaded once, one warm-up pass), {result['repeats']} timed passes "
            "each, interleaved and alternating order; the fastest pass is reported (medians "
            "in the JSON). Speed ratio = onnx-asr seconds / our seconds (> 1: we are faster; "
            f"here {min(ratios):.2f}–{max(ratios):.2f}×). Agreement: identical transcripts, "
            "and 1 − CER of onnx-asr's transcripts against ours; random weights make the "
            "shape models' transcripts noise, which is why the trained model's agreement is "
            "shown separately. Both run the same graph with the same options, so differing "
            "transcripts come from the front ends; dynamic int8 quantises activations with "
            "per-call scales, which can turn feature differences of 1e-5 into other tokens "
            f"where fp32 keeps them.{quick}",
        ]
    )


@dataclass(frozen=True)
class ChartRow:
    label: str
    ours_rtf: float
    theirs_rtf: float


def chart_rows(result: dict[str, Any]) -> list[ChartRow]:
    """RTFs on the clip-by-clip workload (the API's), per precision and thread count."""
    rows = []
    for run in result["runs"]:
        if "one at a time" not in run["workload"]:
            continue
        seconds = run["audio_seconds"]
        label = f"{run['precision']}\n{run['threads']} thread{'s' if run['threads'] > 1 else ''}"
        rows.append(ChartRow(label, run["ours_s"] / seconds, run["theirs_s"] / seconds))
    return rows


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
