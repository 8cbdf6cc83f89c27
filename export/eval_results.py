"""An evaluation's files: per-utterance rows (JSON Lines or TSV) and the summary (JSON).

JSON Lines, one object per utterance, in dataset order::

    {"id", "audio", "duration", "reference", "normalized_reference",
     "systems": {NAME: {"hypothesis", "normalized_hypothesis", "wer", "cer",
                        "word_errors", "char_errors", "reference_words", "reference_chars",
                        "seconds", "error": null | {"code", "message"}}}}

TSV: a header, then one row per utterance: id, audio, duration, reference,
normalized_reference, then per system ``NAME:hypothesis``, ``NAME:wer``, ``NAME:cer``,
``NAME:word_errors``, ``NAME:char_errors``, ``NAME:error`` (the error code). Tabs and line
breaks inside a field become spaces; a field with no value is empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

from asr.batch_outputs import tsv_row, write_atomically

from .evaluate import EvaluationReport, SystemOutput, UtteranceResult

RowsFormat = Literal["jsonl", "tsv"]
ROWS_SUFFIXES: Final[dict[str, RowsFormat]] = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv"}
TSV_SYSTEM_FIELDS: Final = ("hypothesis", "wer", "cer", "word_errors", "char_errors", "error")


def rows_format_for(path: Path) -> RowsFormat:
    """By suffix: .jsonl or .json → JSON Lines, .tsv → TSV; anything else is refused."""
    found = ROWS_SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"--results {path}: the name must end in .jsonl, .json or .tsv")
    return found


def write_rows(report: EvaluationReport, path: Path) -> None:
    fmt = rows_format_for(path)
    names = [system.name for system in report.systems]
    if fmt == "jsonl":
        text = "".join(
            json.dumps(row_dict(result, names), ensure_ascii=False) + "\n"
            for result in report.utterances
        )
    else:
        header = [*_COMMON_TSV, *(f"{n}:{f}" for n in names for f in TSV_SYSTEM_FIELDS)]
        text = tsv_row(header) + "".join(tsv_row(_tsv_fields(r)) for r in report.utterances)
    write_atomically(path, text)


def write_summary(report: EvaluationReport, path: Path) -> None:
    write_atomically(path, json.dumps(report.summary(), ensure_ascii=False, indent=2) + "\n")


_COMMON_TSV: Final = ("id", "audio", "duration", "reference", "normalized_reference")


def row_dict(result: UtteranceResult, names: list[str]) -> dict[str, Any]:
    return {
        "id": result.utterance.id,
        "audio": str(result.utterance.audio),
        "duration": _rounded(result.duration),
        "reference": result.utterance.reference,
        "normalized_reference": result.reference,
        "systems": {
            name: _output_dict(output) for name, output in zip(names, result.outputs, strict=True)
        },
    }


def _output_dict(output: SystemOutput) -> dict[str, Any]:
    words, chars, error = output.words, output.chars, output.error
    return {
        "hypothesis": output.text,
        "normalized_hypothesis": output.hypothesis,
        "wer": words.rate if words else None,
        "cer": chars.rate if chars else None,
        "word_errors": words.errors if words else None,
        "char_errors": chars.errors if chars else None,
        "reference_words": words.reference_length if words else None,
        "reference_chars": chars.reference_length if chars else None,
        "seconds": round(output.seconds, 4),
        "error": {"code": error.code, "message": error.message} if error else None,
    }


def _tsv_fields(result: UtteranceResult) -> list[str]:
    utterance = result.utterance
    duration = _rounded(result.duration)
    fields = [
        utterance.id,
        str(utterance.audio),
        "" if duration is None else f"{duration:.3f}",
        utterance.reference,
        result.reference,
    ]
    for output in result.outputs:
        words, chars = output.words, output.chars
        fields += [
            output.text or "",
            _number(words.rate if words else None),
            _number(chars.rate if chars else None),
            "" if words is None else str(words.errors),
            "" if chars is None else str(chars.errors),
            output.error.code if output.error else "",
        ]
    return fields


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"
