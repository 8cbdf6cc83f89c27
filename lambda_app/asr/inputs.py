"""Which files a batch transcribes: named files, folders (recursively) and lists of paths.

inputs = collect_inputs(["talks/", "extra.mp3", "@more.txt", "-"], stdin=sys.stdin)

A folder contributes every file under it with an audio extension, sorted by path; a file
named directly is taken whatever its extension (ffmpeg decides whether it is audio). A list
(``@list.txt``, or ``-`` for standard input) holds one path per line, blank lines and
``#`` comments skipped; its relative paths are relative to the list's own folder (to the
working directory for ``-``) and may name folders too. The same file reached twice is
transcribed once, at its first position.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

AUDIO_EXTENSIONS = frozenset(
    {
        ".3gp", ".aac", ".aif", ".aiff", ".amr", ".au", ".caf", ".flac", ".m4a", ".mka",
        ".mkv", ".mov", ".mp2", ".mp3", ".mp4", ".oga", ".ogg", ".opus", ".wav", ".webm",
        ".wma",
    }
)  # fmt: skip


class InputListError(ValueError):
    """A list of inputs (``@file``) that cannot be read: a usage error, not a per-file one."""


@dataclass(frozen=True)
class InputFile:
    """One file to transcribe; ``relative`` is where its outputs go under an output folder:
    its path inside the folder it was found in, or its bare name when named directly."""

    path: Path
    relative: Path


def is_audio_name(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def walk_audio(root: Path) -> list[Path]:
    """Audio files under ``root``, sorted by path (folder by folder); hidden entries skipped."""
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(
            Path(folder, name)
            for name in names
            if not name.startswith(".") and is_audio_name(Path(name))
        )
    return sorted(found, key=lambda path: path.relative_to(root).parts)


def read_list(lines: Iterable[str], base: Path) -> Iterator[Path]:
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            path = Path(entry).expanduser()
            yield path if path.is_absolute() else base / path


def _expand(arguments: Iterable[str], stdin: TextIO | None) -> Iterator[InputFile]:
    for argument in arguments:
        if argument == "-" and stdin is not None:
            yield from _expand_paths(read_list(stdin, Path()))
        elif argument.startswith("@") and len(argument) > 1:
            listing = Path(argument[1:]).expanduser()
            try:
                lines = listing.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputListError(f"cannot read the list {listing}: {exc}") from exc
            yield from _expand_paths(read_list(lines, listing.parent))
        else:
            yield from _expand_paths([Path(argument).expanduser()])


def _expand_paths(paths: Iterable[Path]) -> Iterator[InputFile]:
    for path in paths:
        if path.is_dir():
            for found in walk_audio(path):
                yield InputFile(found, found.relative_to(path))
        else:  # missing files too: the batch reports them as a per-file error
            yield InputFile(path, Path(path.name))


def collect_inputs(arguments: Iterable[str], *, stdin: TextIO | None = None) -> list[InputFile]:
    """Every file the arguments name, in order, each once. ``-`` reads ``stdin``."""
    seen: set[Path] = set()
    found: list[InputFile] = []
    for item in _expand(arguments, stdin):
        key = Path(os.path.realpath(item.path))
        if key not in seen:
            seen.add(key)
            found.append(item)
    return found
