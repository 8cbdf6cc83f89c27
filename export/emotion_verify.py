"""The emotion export's gate: the bundle must give the PyTorch model's probabilities.

On every verification clip, one by one: PyTorch vs ONNX fp32 (max |Δ probability|, gated),
fp32 vs int8 (label agreement and max |Δ probability|). Then both graphs on padded batches
of clips of different lengths vs one by one: fp32 must agree within 1e-4 (the masked mean
works); the chosen graph is marked ``batch_invariant`` when it does, and only then does the
runtime batch (int8 is not, on deep models: a 1e-7 float difference from another GEMM
blocking flips an activation's rounding, and 16 layers amplify it to ~1e-3). Last, both
graphs' speed at one thread (CPU time of the calling thread, so a busy machine does not
decide).

Precision: ``fp32`` or ``int8`` as asked (``int8`` fails the gate when its labels
disagree), or ``auto``: int8 only where it pays — every label as fp32's and at least
``min_int8_speedup`` times fp32's speed — fp32 otherwise, with the reason in the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .verify import Clip

Precision = Literal["auto", "int8", "fp32"]
# Feature matrices [n_mels, T_i] → probabilities [n, classes], one padded batch.
ProbsFn = Callable[[Sequence[np.ndarray]], np.ndarray]
# Clips per padded batch in the batch check (in their given order, so lengths differ).
BATCH_CHECK_CLIPS = 8
TIMING_CLIPS = 16
TIMING_REPEATS = 5


@dataclass(frozen=True)
class EmotionThresholds:
    max_fp32_prob_diff: float = 1e-3
    # A classifier's label is its whole answer: int8 may not change it on the verification
    # clips (on fewer than 100 clips, 0.99 means every one). Published emotion models differ
    # by a few points of F1, so a 1 % flip rate would already be a visible loss.
    min_int8_label_agreement: float = 0.99
    # The runtime promises one-by-one results within this; it batches graphs that keep it.
    max_batch_prob_diff: float = 1e-4
    # auto only: int8 must be this much faster than fp32 to be worth its error (~0.01 in
    # probability). Small models sit near 1.0x, where repeated timings of one model moved
    # by ±0.1; a GigaAM-sized one is ~3x. A clear margin keeps the choice reproducible.
    min_int8_speedup: float = 1.25


@dataclass
class EmotionClipReport:
    name: str
    origin: str
    seconds: float
    label_torch: str
    label_fp32: str
    label_int8: str
    fp32_prob_diff: float
    int8_prob_diff: float


@dataclass
class EmotionReport:
    thresholds: EmotionThresholds
    requested: Precision
    precision: Literal["int8", "fp32"] = "fp32"
    precision_reason: str = ""
    # The chosen graph gives padded batches their one-by-one results (within the limit).
    batch_invariant: bool = False
    clips: list[EmotionClipReport] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # Empty when the export may write the bundle.
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": not self.failures,
            "kind": "emotion_classifier",
            "failures": self.failures,
            "precision": self.precision,
            "precision_requested": self.requested,
            "precision_reason": self.precision_reason,
            "batch_invariant": self.batch_invariant,
            "metrics": self.metrics,
            "thresholds": asdict(self.thresholds),
            "clips": [asdict(clip) for clip in self.clips],
        }


@dataclass(frozen=True)
class Systems:
    torch: ProbsFn
    fp32: ProbsFn
    int8: ProbsFn


def verify_emotion(
    clips: Sequence[Clip],
    features: Sequence[np.ndarray],
    labels: Sequence[str],
    systems: Systems,
    *,
    sample_rate: int,
    thresholds: EmotionThresholds,
    requested: Precision,
    progress: Callable[[Clip], object] = lambda clip: None,
) -> EmotionReport:
    """``features``: each clip's front-end output, in order."""
    report = EmotionReport(thresholds, requested)
    if not clips:
        report.failures.append("no verification clips")
        return report
    alone: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    for clip, matrix in zip(clips, features, strict=True):
        torch_p, fp32_p, int8_p = (
            system([matrix])[0] for system in (systems.torch, systems.fp32, systems.int8)
        )
        alone["fp32"].append(fp32_p)
        alone["int8"].append(int8_p)
        report.clips.append(
            EmotionClipReport(
                name=clip.name,
                origin=clip.origin,
                seconds=round(clip.samples.size / sample_rate, 3),
                label_torch=labels[int(np.argmax(torch_p))],
                label_fp32=labels[int(np.argmax(fp32_p))],
                label_int8=labels[int(np.argmax(int8_p))],
                fp32_prob_diff=_max_diff(torch_p, fp32_p),
                int8_prob_diff=_max_diff(fp32_p, int8_p),
            )
        )
        progress(clip)
    audio_seconds = sum(c.samples.size for c in clips[:TIMING_CLIPS]) / sample_rate
    fp32_seconds, int8_seconds = _seconds((systems.fp32, systems.int8), features[:TIMING_CLIPS])
    fp32_rtf, int8_rtf = fp32_seconds / audio_seconds, int8_seconds / audio_seconds
    agreement = np.mean([c.label_int8 == c.label_fp32 for c in report.clips])
    report.metrics = {
        "clips": len(clips),
        "fp32_max_prob_diff": max(c.fp32_prob_diff for c in report.clips),
        "torch_fp32_labels_identical": float(
            all(c.label_torch == c.label_fp32 for c in report.clips)
        ),
        "int8_label_agreement": round(float(agreement), 6),
        "int8_max_prob_diff": max(c.int8_prob_diff for c in report.clips),
        "fp32_batch_max_diff": _batch_diff(systems.fp32, features, alone["fp32"]),
        "int8_batch_max_diff": _batch_diff(systems.int8, features, alone["int8"]),
        "fp32_rtf_1thread": round(fp32_rtf, 5),
        "int8_rtf_1thread": round(int8_rtf, 5),
        "int8_speedup": round(fp32_rtf / max(int8_rtf, 1e-12), 3),
    }
    _decide(report)
    return report


def _decide(report: EmotionReport) -> None:
    limits, m = report.thresholds, report.metrics
    if m["fp32_max_prob_diff"] > limits.max_fp32_prob_diff:
        report.failures.append(
            f"ONNX fp32 probabilities differ from PyTorch by {m['fp32_max_prob_diff']:.2e} "
            f"> {limits.max_fp32_prob_diff:.0e}"
        )
    if m["fp32_batch_max_diff"] > limits.max_batch_prob_diff:
        report.failures.append(
            f"fp32 padded batches differ from one-by-one by {m['fp32_batch_max_diff']:.2e} "
            f"> {limits.max_batch_prob_diff:.0e}"
        )
    int8_problems = []
    if m["int8_label_agreement"] < limits.min_int8_label_agreement:
        int8_problems.append(
            f"int8 labels agree with fp32 on {m['int8_label_agreement']:.2%} of clips "
            f"< {limits.min_int8_label_agreement:.2%}"
        )
    speed = f"int8 runs at {m['int8_speedup']:.2f}x fp32's speed (1 thread)"
    if report.requested == "fp32":
        report.precision, report.precision_reason = "fp32", f"fp32 requested; {speed}"
    elif report.requested == "int8":
        report.precision, report.precision_reason = "int8", f"int8 requested; {speed}"
        report.failures += int8_problems
    elif int8_problems or m["int8_speedup"] < limits.min_int8_speedup:
        slow = [] if m["int8_speedup"] >= limits.min_int8_speedup else [f"{speed} only"]
        reason = "; ".join([*int8_problems, *slow])
        report.precision, report.precision_reason = "fp32", f"kept fp32: {reason}"
    else:
        report.precision = "int8"
        report.precision_reason = f"{speed}, every label as fp32's"
    batch_diff = m[f"{report.precision}_batch_max_diff"]
    report.batch_invariant = batch_diff <= limits.max_batch_prob_diff


def _batch_diff(system: ProbsFn, features: Sequence[np.ndarray], alone: list[np.ndarray]) -> float:
    worst = 0.0
    for start in range(0, len(features), BATCH_CHECK_CLIPS):
        chunk = features[start : start + BATCH_CHECK_CLIPS]
        batched = system(chunk)
        for row, single in zip(batched, alone[start : start + len(chunk)], strict=True):
            worst = max(worst, _max_diff(row, single))
    return worst


def _seconds(systems: Sequence[ProbsFn], features: Sequence[np.ndarray]) -> list[float]:
    """Each system's best of TIMING_REPEATS passes over ``features`` one by one, the systems
    taking turns, after a warm-up run. CPU time of this thread (the graphs run on one
    thread, the caller's): other processes on the machine do not count."""
    best = [float("inf")] * len(systems)
    for system in systems:
        system(features[:1])
    for _ in range(TIMING_REPEATS):
        for index, system in enumerate(systems):
            start = time.thread_time()
            for matrix in features:
                system([matrix])
            best[index] = min(best[index], time.thread_time() - start)
    return best


def _max_diff(left: np.ndarray, right: np.ndarray) -> float:
    if left.shape != right.shape:
        return float("inf")
    return float(np.abs(left.astype(np.float64) - right.astype(np.float64)).max(initial=0.0))
