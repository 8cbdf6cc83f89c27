"""Evaluation datasets: a NeMo JSON-lines manifest, or a folder of audio/ + transcriptions/.

dataset = load_dataset(Path("dev.jsonl"))     # a file: a manifest
dataset = load_dataset(Path("corpus/"))       # a folder: audio/ + transcriptions/

Manifest: one JSON object per line with ``audio_filepath`` (relative to the manifest's folder,
or absolute) and ``text``; ``duration`` (seconds) is optional; other keys are ignored, blank
lines skipped. Folder: ``audio/<rel>/<name>.<audio extension>`` is paired with
``transcriptions/<rel>/<name>.txt`` (UTF-8, its lines joined by spaces). Files of either side
without a partner, and files that are neither audio nor .txt, are listed in
``Dataset.skipped`` with the reason, for the caller to report.

Anything that makes the dataset unusable raises ``DatasetError`` with a stable ``code``: a
missing manifest/folder or audio file, a malformed line (with its number), a missing or
mistyped key, two audio files for one transcription, an unreadable transcription, no
utterances at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.inputs import is_audio_name

# At most this many missing audio files are named in the error message.
_NAMED_MISSING = 5


class DatasetError(ValueError):
    """The dataset cannot be evaluated as given; ``code`` is stable, the message says where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Utterance:
    id: str  # manifest: audio_filepath as written; folder: <rel>/<name> without extension
    audio: Path
    reference: str
    duration: float | None = None  # as the manifest declares it; the audio decides the scores


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass(frozen=True)
class Dataset:
    source: Path
    kind: str  # "manifest" | "folder"
    utterances: tuple[Utterance, ...]
    skipped: tuple[SkippedFile, ...] = ()


def load_dataset(path: Path) -> Dataset:
    """A manifest file or an audio/ + transcriptions/ folder, by what ``path`` is."""
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        return load_manifest(path)
    raise DatasetError("dataset_not_found", f"no such manifest or folder: {path}")


def load_manifest(path: Path) -> Dataset:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DatasetError("dataset_not_found", f"no such manifest: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError("manifest_unreadable", f"cannot read {path}: {exc}") from None
    utterances = [
        _manifest_entry(line, path, number)
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    _require_audio(utterances, path)
    return _checked(Dataset(path, "manifest", tuple(utterances)))


def _manifest_entry(line: str, manifest: Path, number: int) -> Utterance:
    where = f"{manifest}:{number}"
    try:
        entry: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError("manifest_invalid_json", f"{where}: not JSON: {exc.msg}") from None
    if not isinstance(entry, dict):
        raise DatasetError("manifest_invalid_entry", f"{where}: not a JSON object")
    missing = [key for key in ("audio_filepath", "text") if key not in entry]
    if missing:
        raise DatasetError("manifest_missing_key", f"{where}: no {' and no '.join(missing)}")
    audio, text, duration = entry["audio_filepath"], entry["text"], entry.get("duration")
    if not isinstance(audio, str) or not audio:
        raise DatasetError("manifest_invalid_entry", f"{where}: audio_filepath is not a path")
    if not isinstance(text, str):
        raise DatasetError("manifest_invalid_entry", f"{where}: text is not a string")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0
    ):
        raise DatasetError("manifest_invalid_entry", f"{where}: duration is not seconds")
    resolved = Path(audio) if os.path.isabs(audio) else manifest.parent / audio
    seconds = None if duration is None else float(duration)
    return Utterance(id=audio, audio=resolved, reference=text, duration=seconds)


def load_folder(root: Path) -> Dataset:
    audio_root, text_root = root / "audio", root / "transcriptions"
    for folder in (audio_root, text_root):
        if not folder.is_dir():
            raise DatasetError(
                "dataset_layout",
                f"{root} has no {folder.name}/ folder (need audio/ + transcriptions/)",
            )
    skipped: list[SkippedFile] = []
    audio: dict[Path, Path] = {}  # <rel>/<name> → its audio file
    for path in _files(audio_root):
        stem = path.relative_to(audio_root).with_suffix("")
        if not is_audio_name(path):
            skipped.append(SkippedFile(path, "not an audio file extension"))
        elif stem in audio:
            raise DatasetError(
                "dataset_ambiguous", f"two audio files for {stem}: {audio[stem].name}, {path.name}"
            )
        else:
            audio[stem] = path
    texts: dict[Path, Path] = {}
    for path in _files(text_root):
        if path.suffix.lower() == ".txt":
            texts[path.relative_to(text_root).with_suffix("")] = path
        else:
            skipped.append(SkippedFile(path, "not a .txt transcription"))
    skipped += [
        SkippedFile(path, "no transcription") for s, path in audio.items() if s not in texts
    ]
    skipped += [SkippedFile(path, "no audio") for s, path in texts.items() if s not in audio]
    utterances = tuple(
        Utterance(id=stem.as_posix(), audio=audio[stem], reference=_read_text(texts[stem]))
        for stem in sorted(audio, key=lambda s: s.parts)
        if stem in texts
    )
    skipped.sort(key=lambda item: item.path.parts)
    return _checked(Dataset(root, "folder", utterances, tuple(skipped)))


def _files(root: Path) -> list[Path]:
    """Every file under ``root``; hidden files and folders skipped (as by ``asr.inputs``)."""
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(Path(folder, name) for name in names if not name.startswith("."))
    return sorted(found, key=lambda path: path.parts)


def _read_text(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8-sig").split())
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError("transcription_unreadable", f"cannot read {path}: {exc}") from None


def _require_audio(utterances: list[Utterance], manifest: Path) -> None:
    """Refuse a manifest naming audio that is not there: scoring a silent subset would
    report numbers for a different dataset."""
    missing = [u for u in utterances if not u.audio.is_file()]
    if missing:
        named = ", ".join(str(u.audio) for u in missing[:_NAMED_MISSING])
        more = f" and {len(missing) - _NAMED_MISSING} more" if len(missing) > _NAMED_MISSING else ""
        raise DatasetError(
            "audio_missing", f"{manifest}: {len(missing)} audio file(s) not found: {named}{more}"
        )


def _checked(dataset: Dataset) -> Dataset:
    if not dataset.utterances:
        unpaired = f" ({len(dataset.skipped)} unpaired file(s))" if dataset.skipped else ""
        raise DatasetError("dataset_empty", f"{dataset.source} holds no utterances{unpaired}")
    return dataset
