"""The export gate: the bundle must compute what the PyTorch original computes.

Three comparisons on the verification clips, each with a threshold:

1. PyTorch vs ONNX fp32: max |Δ log-prob| where either model gives the class a probability
   above 1e-6 (far tails differ by rounding only and decide nothing) — per frame for CTC,
   for a transducer at every joint step of PyTorch's greedy path (``export.verify_systems``).
2. fp32 vs int8 greedy tokens: agreement = 1 − edit distance / fp32 token count, pooled.
3. fp32 vs int8 CER: against the references where clips have them (delta in points),
   and int8 against fp32 transcripts everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jiwer
import numpy as np
from asr.frontend import Frontend
from rapidfuzz.distance import Levenshtein

from .verify_systems import System

TAIL_LOG_PROB = float(np.log(1e-6))


@dataclass(frozen=True)
class Clip:
    name: str
    samples: np.ndarray  # float32 mono at the model's sample rate
    reference: str | None = None
    origin: str = "synthetic"


@dataclass(frozen=True)
class Thresholds:
    max_fp32_logprob_diff: float = 1e-3
    min_int8_token_agreement: float = 0.995
    max_int8_cer_delta: float = 0.003  # vs references, as a fraction (0.3 points)
    max_int8_cer_vs_fp32: float = 0.01


@dataclass
class ClipReport:
    name: str
    origin: str
    seconds: float
    fp32_logprob_diff: float
    text_torch: str
    text_fp32: str
    text_int8: str
    token_errors: int
    fp32_tokens: int
    reference: str | None = None


@dataclass
class VerificationReport:
    thresholds: Thresholds
    clips: list[ClipReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "metrics": self.metrics,
            "thresholds": asdict(self.thresholds),
            "clips": [asdict(clip) for clip in self.clips],
        }


def verify(
    clips: Sequence[Clip],
    frontend: Frontend,
    *,
    reference: System,
    fp32: System,
    int8: System,
    thresholds: Thresholds,
    progress: Callable[[Clip], object] = lambda clip: None,
) -> VerificationReport:
    report = VerificationReport(thresholds)
    if not clips:
        report.failures.append("no verification clips")
        return report
    for clip in clips:
        features = frontend(clip.samples)
        original = reference.run(features)
        # Without a PyTorch original the fp32 graphs are the reference: one run serves both.
        exported = original if fp32 is reference else fp32.run(features, along=original)
        quantized = int8.run(features, with_log_probs=False)
        report.clips.append(
            ClipReport(
                name=clip.name,
                origin=clip.origin,
                seconds=round(clip.samples.size / frontend.config.sample_rate, 3),
                fp32_logprob_diff=_logprob_diff(original.log_probs, exported.log_probs),
                text_torch=original.text,
                text_fp32=exported.text,
                text_int8=quantized.text,
                token_errors=edit_distance(exported.token_ids, quantized.token_ids),
                fp32_tokens=len(exported.token_ids),
                reference=clip.reference,
            )
        )
        progress(clip)
    _score(report)
    return report


def _score(report: VerificationReport) -> None:
    limits, clips = report.thresholds, report.clips
    logprob_diff = max(clip.fp32_logprob_diff for clip in clips)
    fp32_tokens = sum(clip.fp32_tokens for clip in clips)
    agreement = 1.0 - sum(clip.token_errors for clip in clips) / max(fp32_tokens, 1)
    cer_int8_vs_fp32 = _cer([c.text_fp32 for c in clips], [c.text_int8 for c in clips])
    referenced = [clip for clip in clips if clip.reference]
    cer_fp32 = cer_int8 = cer_delta = None
    if referenced:
        references = [str(clip.reference) for clip in referenced]
        cer_fp32 = _cer(references, [clip.text_fp32 for clip in referenced])
        cer_int8 = _cer(references, [clip.text_int8 for clip in referenced])
        cer_delta = cer_int8 - cer_fp32
    report.metrics = {
        "clips": len(clips),
        "fp32_max_logprob_diff": logprob_diff,
        "int8_token_agreement": round(agreement, 6),
        "int8_cer_vs_fp32": round(cer_int8_vs_fp32, 6),
        "fp32_cer_vs_reference": cer_fp32,
        "int8_cer_vs_reference": cer_int8,
        "int8_cer_delta": cer_delta,
        "torch_fp32_transcripts_identical": float(all(c.text_torch == c.text_fp32 for c in clips)),
    }
    checks = [
        (
            logprob_diff <= limits.max_fp32_logprob_diff,
            f"ONNX fp32 log-probs differ from PyTorch by {logprob_diff:.2e} "
            f"> {limits.max_fp32_logprob_diff:.0e}",
        ),
        (
            agreement >= limits.min_int8_token_agreement,
            f"int8 greedy tokens agree with fp32 on {agreement:.2%} "
            f"< {limits.min_int8_token_agreement:.2%}",
        ),
        (
            cer_int8_vs_fp32 <= limits.max_int8_cer_vs_fp32,
            f"int8 transcripts differ from fp32 by CER {cer_int8_vs_fp32:.2%} "
            f"> {limits.max_int8_cer_vs_fp32:.2%}",
        ),
        (
            cer_delta is None or cer_delta <= limits.max_int8_cer_delta,
            f"int8 CER vs references is {cer_delta or 0:.2%} worse than fp32 "
            f"> {limits.max_int8_cer_delta:.2%}",
        ),
    ]
    report.failures = [message for ok, message in checks if not ok]


def _logprob_diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    if reference.shape != candidate.shape:
        return float("inf")
    if reference.size == 0:
        return 0.0
    relevant = np.maximum(reference, candidate) > TAIL_LOG_PROB
    return float(np.abs(reference - candidate)[relevant].max(initial=0.0))


def _cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r]
    if not pairs:
        return 0.0 if not any(hypotheses) else 1.0
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def edit_distance(left: Sequence[Hashable], right: Sequence[Hashable]) -> int:
    """Levenshtein distance between two sequences (token ids, or a string's characters)."""
    return int(Levenshtein.distance(left, right))
