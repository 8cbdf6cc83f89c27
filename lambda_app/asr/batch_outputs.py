"""Where and how the CLI writes a batch's results.

Per-file outputs go next to each input, or under an output folder mirroring the inputs'
tree, named like the S3 path's results: the input's full name plus the format's extension
(``talk.mp3`` → ``talk.mp3.srt``), so ``a.wav`` and ``a.mp3`` never collide. Formats:
``json``, ``text``, ``srt``, ``vtt`` (``asr.formats``) and ``tsv`` (one row per segment:
``start``, ``end`` in seconds, ``text``; a header row first). Files are written whole or
not at all (a temporary file renamed into place), so an existing output is a finished one.

A results file holds every input, in input order: JSON Lines (``{"file", ...the JSON
document}`` or ``{"file", "error": {"code", "message"}}``) or TSV (header, then one row per
input: ``file``, ``duration``, ``text``, ``error_code``, ``error_message``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal, Protocol, TextIO, get_args

from .batch import FileResult
from .formats import EXTENSIONS, render
from .inputs import InputFile
from .results import Transcript

FileFormat = Literal["json", "text", "srt", "vtt", "tsv"]
FILE_FORMATS: Final[tuple[FileFormat, ...]] = get_args(FileFormat)
ResultsFormat = Literal["jsonl", "tsv"]
RESULTS_FORMATS: Final[tuple[ResultsFormat, ...]] = get_args(ResultsFormat)
RESULTS_TSV_HEADER: Final = ("file", "duration", "text", "error_code", "error_message")
SEGMENTS_TSV_HEADER: Final = ("start", "end", "text")


def _file_extensions() -> dict[FileFormat, str]:
    extensions: dict[FileFormat, str] = {"tsv": ".tsv"}
    for fmt, extension in EXTENSIONS.items():
        extensions[fmt] = extension
    return extensions


FILE_EXTENSIONS: Final[Mapping[FileFormat, str]] = _file_extensions()


def output_paths(
    item: InputFile, formats: Iterable[FileFormat], output_dir: Path | None
) -> dict[FileFormat, Path]:
    """Each format's output file for ``item``: beside it, or mirrored under ``output_dir``."""
    base = item.path if output_dir is None else output_dir / item.relative
    return {fmt: base.with_name(base.name + FILE_EXTENSIONS[fmt]) for fmt in formats}


def render_file(transcript: Transcript, fmt: FileFormat) -> str:
    if fmt == "tsv":
        return segments_tsv(transcript)
    return render(transcript, fmt).body


def segments_tsv(transcript: Transcript) -> str:
    segments = [(s.start, s.end, s.text) for s in transcript.segments]
    if not segments and transcript.text:
        segments = [(0.0, transcript.duration, transcript.text)]
    rows = [SEGMENTS_TSV_HEADER, *((f"{a:.3f}", f"{b:.3f}", text) for a, b, text in segments)]
    return "".join(tsv_row(row) for row in rows)


def tsv_row(fields: Iterable[str]) -> str:
    """One TSV line; tabs and line breaks inside a field become spaces."""
    return "\t".join(_tsv_field(field) for field in fields) + "\n"


def _tsv_field(value: str) -> str:
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def results_format_for(path: str) -> ResultsFormat:
    return "tsv" if path.lower().endswith(".tsv") else "jsonl"


class ResultsSink(Protocol):
    def write(self, result: FileResult) -> None: ...


class JsonLinesResults:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, result: FileResult) -> None:
        record: dict[str, object] = {"file": str(result.path)}
        if result.transcript is not None:
            record.update(json.loads(render(result.transcript, "json").body))
        elif result.error is not None:
            record["error"] = result.error.to_dict()
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._stream.flush()


class TsvResults:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        stream.write(tsv_row(RESULTS_TSV_HEADER))

    def write(self, result: FileResult) -> None:
        transcript, error = result.transcript, result.error
        self._stream.write(
            tsv_row(
                (
                    str(result.path),
                    f"{transcript.duration:.3f}" if transcript else "",
                    transcript.text if transcript else "",
                    error.code if error else "",
                    error.message if error else "",
                )
            )
        )
        self._stream.flush()


class TextListing:
    """``path<TAB>text`` per transcribed file: the CLI's default on standard output."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, result: FileResult) -> None:
        if result.transcript is not None:
            self._stream.write(tsv_row((str(result.path), result.transcript.text)))
            self._stream.flush()


def results_sink(fmt: ResultsFormat, stream: TextIO) -> ResultsSink:
    return TsvResults(stream) if fmt == "tsv" else JsonLinesResults(stream)
