"""Score systems on a dataset: WER/CER against references, and systems against a baseline.

report = evaluate(load_dataset(Path("dev.jsonl")), [BundleSystem(Path("b/fp32")), ...])
print(report.systems[0].wer, report.comparisons[0].token_agreement)

Scores (jiwer, after ``text_normalize.normalize_russian`` on both sides unless
``normalize=False``):

- per utterance: word and character edit operations (substitutions, deletions, insertions)
  against the reference; WER = word errors / reference words, CER = character errors /
  reference characters, spaces included (as jiwer counts them);
- per system: corpus-level rates, total errors / total reference words (characters), over
  the utterances it transcribed. An utterance whose audio it could not use is recorded with
  the runtime's stable error code (``AsrError.code``), counted, and left out of its scores.

Comparisons: the first system is the baseline; every other one is compared with it over
the utterances both transcribed: WER and CER deltas in percentage points (system minus
baseline, each against the references), token agreement = 1 − Σ edit distance(baseline,
system) / Σ baseline length, pooled over utterances, on the decoders' token ids (greedy CTC
or RNN-T) when both systems expose them (``token_unit`` "token_ids"), else on the
transcripts' characters ("characters"), and how many transcripts are identical.

Timing: ``processing_seconds`` sums each utterance's wall time in ``System.recognise``
(decoding + features + model + CTC), warm (see ``evaluate``'s ``warm_up``); RTF =
processing seconds / audio seconds. With
``jobs > 1`` utterances overlap, so ``wall_seconds`` (the system's whole pass) is smaller.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jiwer
from asr.errors import AsrError

from .eval_data import Dataset, Utterance
from .eval_systems import Recognition, System
from .text_normalize import DESCRIPTION, normalize_russian
from .verify import edit_distance


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations turning a reference into a hypothesis, in words or characters."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        """errors / reference length; None for an empty reference."""
        return self.errors / self.reference_length if self.reference_length else None

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "errors": self.errors,
            "reference_length": self.reference_length,
            "rate": self.rate,
        }


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    reference_words, hypothesis_words = reference.split(), hypothesis.split()
    if not reference_words or not hypothesis_words:
        return ErrorCounts(0, len(reference_words), len(hypothesis_words), len(reference_words))
    out = jiwer.process_words(reference, hypothesis)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, len(reference_words))


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    reference, hypothesis = reference.strip(), hypothesis.strip()  # as jiwer's CER does
    if not reference or not hypothesis:
        return ErrorCounts(0, len(reference), len(hypothesis), len(reference))
    out = jiwer.process_characters(reference, hypothesis)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, len(reference))


@dataclass(frozen=True)
class UtteranceError:
    code: str
    message: str


@dataclass(frozen=True)
class SystemOutput:
    """One system on one utterance: its transcript and scores, or the error it met."""

    text: str | None
    hypothesis: str | None  # the text as scored (normalised unless normalize=False)
    token_ids: tuple[int, ...] | None
    duration: float | None
    seconds: float
    words: ErrorCounts | None = None
    chars: ErrorCounts | None = None
    error: UtteranceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class UtteranceResult:
    utterance: Utterance
    reference: str  # as scored
    outputs: tuple[SystemOutput, ...]  # one per system, in the report's order

    @property
    def duration(self) -> float | None:
        """Seconds of audio as decoded (by the first system that could), else as declared."""
        decoded = [o.duration for o in self.outputs if o.duration is not None]
        return decoded[0] if decoded else self.utterance.duration


@dataclass(frozen=True)
class SystemSummary:
    name: str
    description: str
    utterances: int  # scored
    failed: int
    error_codes: dict[str, int]
    words: ErrorCounts
    chars: ErrorCounts
    audio_seconds: float
    processing_seconds: float
    wall_seconds: float

    @property
    def wer(self) -> float | None:
        return self.words.rate

    @property
    def cer(self) -> float | None:
        return self.chars.rate

    @property
    def rtf(self) -> float | None:
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "utterances": self.utterances,
            "failed": self.failed,
            "error_codes": self.error_codes,
            "wer": self.wer,
            "cer": self.cer,
            "words": self.words.to_dict(),
            "chars": self.chars.to_dict(),
            "audio_hours": self.audio_seconds / 3600,
            "processing_seconds": round(self.processing_seconds, 4),
            "wall_seconds": round(self.wall_seconds, 4),
            "rtf": self.rtf,
        }


@dataclass(frozen=True)
class Comparison:
    """``system`` against the baseline, over the ``utterances`` both transcribed."""

    baseline: str
    system: str
    utterances: int
    wer_delta_points: float | None  # (system WER − baseline WER) × 100, vs references
    cer_delta_points: float | None
    token_unit: str  # "token_ids" | "characters"
    token_edits: int
    baseline_tokens: int
    identical: int  # utterances with the same transcript

    @property
    def token_agreement(self) -> float | None:
        if not self.baseline_tokens:
            return None
        return 1.0 - self.token_edits / self.baseline_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "system": self.system,
            "utterances": self.utterances,
            "wer_delta_points": self.wer_delta_points,
            "cer_delta_points": self.cer_delta_points,
            "token_agreement": self.token_agreement,
            "token_unit": self.token_unit,
            "token_edits": self.token_edits,
            "baseline_tokens": self.baseline_tokens,
            "identical_transcripts": self.identical,
        }


@dataclass(frozen=True)
class EvaluationReport:
    dataset: Dataset
    normalized: bool
    systems: tuple[SystemSummary, ...]
    comparisons: tuple[Comparison, ...]
    utterances: tuple[UtteranceResult, ...]
    jobs: int

    @property
    def baseline(self) -> str:
        return self.systems[0].name

    @property
    def failures(self) -> int:
        return sum(system.failed for system in self.systems)

    @property
    def audio_seconds(self) -> float:
        return sum(result.duration or 0.0 for result in self.utterances)

    def summary(self) -> dict[str, Any]:
        """The corpus metrics and comparisons, JSON-able."""
        return {
            "dataset": {
                "source": str(self.dataset.source),
                "kind": self.dataset.kind,
                "utterances": len(self.utterances),
                "audio_hours": self.audio_seconds / 3600,
                "skipped_files": [
                    {"path": str(item.path), "reason": item.reason} for item in self.dataset.skipped
                ],
            },
            "normalization": NORMALIZATION if self.normalized else None,
            "scoring": SCORING,
            "jobs": self.jobs,
            "baseline": self.baseline,
            "systems": [system.to_dict() for system in self.systems],
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
        }


NORMALIZATION = f"russian: {DESCRIPTION}"
SCORING = (
    "jiwer; corpus WER/CER = total errors / total reference words (characters, spaces "
    "included); utterances a system failed on are excluded from its scores and counted"
)


def evaluate(
    dataset: Dataset,
    systems: Sequence[System],
    *,
    normalize: bool = True,
    jobs: int = 1,
    warm_up: bool = True,
    on_result: Callable[[], object] = lambda: None,
) -> EvaluationReport:
    """Transcribe every utterance with every system (one system after the other, ``jobs``
    utterances at once) and score them. ``warm_up``: each system first transcribes the first
    utterance once, untimed (first runs pay one-off initialisation). ``on_result`` is called
    once per utterance and system. Never raises for an utterance: failures are recorded in
    its output."""
    if not systems:
        raise ValueError("evaluate needs at least one system")
    if not dataset.utterances:
        raise ValueError("the dataset holds no utterances")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    clean: Callable[[str], str] = normalize_russian if normalize else _as_is
    references = [clean(utterance.reference) for utterance in dataset.utterances]
    columns: list[list[SystemOutput]] = []
    walls: list[float] = []
    for system in systems:
        if warm_up:
            _recognise(system, dataset.utterances[0])
        started = time.perf_counter()
        column = []
        runs = _recognise_all(system, dataset.utterances, jobs)
        for reference, run in zip(references, runs, strict=True):
            column.append(_scored(run, reference, clean))
            on_result()
        walls.append(time.perf_counter() - started)
        columns.append(column)
    results = tuple(
        UtteranceResult(utterance, reference, tuple(outputs))
        for utterance, reference, *outputs in zip(
            dataset.utterances, references, *columns, strict=True
        )
    )
    summaries = tuple(
        _summary(system, column, wall)
        for system, column, wall in zip(systems, columns, walls, strict=True)
    )
    comparisons = tuple(
        _compare(summaries[0].name, columns[0], summaries[index].name, columns[index])
        for index in range(1, len(systems))
    )
    return EvaluationReport(dataset, normalize, summaries, comparisons, results, jobs)


def _as_is(text: str) -> str:
    return text


def _recognise_all(
    system: System, utterances: Sequence[Utterance], jobs: int
) -> Iterator[tuple[Recognition | UtteranceError, float]]:
    if jobs == 1:
        yield from (_recognise(system, utterance) for utterance in utterances)
        return
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="asr-eval")
    try:
        yield from pool.map(lambda utterance: _recognise(system, utterance), utterances)
    finally:  # interrupted: drop the utterances not started
        pool.shutdown(wait=True, cancel_futures=True)


def _recognise(system: System, utterance: Utterance) -> tuple[Recognition | UtteranceError, float]:
    started = time.perf_counter()
    outcome: Recognition | UtteranceError
    try:
        outcome = system.recognise(utterance.audio)
    except AsrError as exc:
        outcome = UtteranceError(exc.code, exc.message)
    except Exception as exc:  # a fault on one utterance must not end the evaluation
        outcome = UtteranceError("internal_error", f"{type(exc).__name__}: {exc}")
    return outcome, time.perf_counter() - started


def _scored(
    run: tuple[Recognition | UtteranceError, float], reference: str, clean: Callable[[str], str]
) -> SystemOutput:
    outcome, seconds = run
    if isinstance(outcome, UtteranceError):
        return SystemOutput(None, None, None, None, seconds, error=outcome)
    hypothesis = clean(outcome.text)
    return SystemOutput(
        text=outcome.text,
        hypothesis=hypothesis,
        token_ids=outcome.token_ids,
        duration=outcome.duration,
        seconds=seconds,
        words=word_errors(reference, hypothesis),
        chars=char_errors(reference, hypothesis),
    )


def _summary(system: System, column: Sequence[SystemOutput], wall: float) -> SystemSummary:
    done = [output for output in column if output.ok]
    codes = Counter(output.error.code for output in column if output.error is not None)
    return SystemSummary(
        name=system.name,
        description=system.description,
        utterances=len(done),
        failed=len(column) - len(done),
        error_codes=dict(sorted(codes.items())),
        words=_total(output.words for output in done),
        chars=_total(output.chars for output in done),
        audio_seconds=sum(output.duration or 0.0 for output in done),
        processing_seconds=sum(output.seconds for output in done),
        wall_seconds=wall,
    )


def _total(counts: Iterator[ErrorCounts | None]) -> ErrorCounts:
    total = ErrorCounts()
    for count in counts:
        if count is not None:
            total += count
    return total


def _compare(
    baseline: str,
    base_column: Sequence[SystemOutput],
    name: str,
    column: Sequence[SystemOutput],
) -> Comparison:
    pairs = [(a, b) for a, b in zip(base_column, column, strict=True) if a.ok and b.ok]
    use_ids = all(a.token_ids is not None and b.token_ids is not None for a, b in pairs)
    edits = length = identical = 0
    for a, b in pairs:
        left, right = _units(a, use_ids), _units(b, use_ids)
        edits += edit_distance(left, right)
        length += len(left)
        identical += a.text == b.text
    return Comparison(
        baseline=baseline,
        system=name,
        utterances=len(pairs),
        wer_delta_points=_delta([a.words for a, _ in pairs], [b.words for _, b in pairs]),
        cer_delta_points=_delta([a.chars for a, _ in pairs], [b.chars for _, b in pairs]),
        token_unit="token_ids" if use_ids else "characters",
        token_edits=edits,
        baseline_tokens=length,
        identical=identical,
    )


def _units(output: SystemOutput, use_ids: bool) -> tuple[int, ...]:
    if use_ids and output.token_ids is not None:
        return output.token_ids
    return tuple(ord(char) for char in output.text or "")


def _delta(
    baseline: Sequence[ErrorCounts | None], system: Sequence[ErrorCounts | None]
) -> float | None:
    base_rate = _total(iter(baseline)).rate
    rate = _total(iter(system)).rate
    if base_rate is None or rate is None:
        return None
    return (rate - base_rate) * 100
