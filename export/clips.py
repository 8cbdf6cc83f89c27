"""Verification audio: the export's own synthetic Russian clips plus the user's.

Synthetic clips are spoken by espeak-ng (several voices and speeds) so every export is
checked on speech-like input even when the user passes none; the user's files or NeMo
manifests add real speech, and manifests add references for the CER comparison.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from asr.audio import decode_audio
from asr.resample import resample

from .synth import Voice, synthesize
from .verify import Clip

SYNTHETIC_PHRASES = (
    "включи свет на кухне",
    "какая погода будет завтра в москве",
    "позвони маме",
    "сколько стоит билет до санкт петербурга",
    "поставь будильник на семь утра",
    "найди ближайшую аптеку",
)
SYNTHETIC_VOICES = (("m1", 150), ("f2", 175), ("m3", 130), ("f4", 190))


def synthetic_clips(sample_rate: int, *, seed: int = 0) -> list[Clip]:
    """espeak-ng clips (empty when espeak-ng is not installed: the user's audio then
    carries the verification alone)."""
    if shutil.which("espeak-ng") is None:
        return []
    voices = [Voice(variant, wpm) for variant, wpm in SYNTHETIC_VOICES]
    clips = []
    for index, phrase in enumerate(SYNTHETIC_PHRASES):
        voice = voices[index % len(voices)]
        audio = synthesize(phrase, voice, seed=seed)  # 16 kHz
        samples = audio if sample_rate == 16000 else resample(audio, 16000, sample_rate)
        clips.append(Clip(f"espeak:{voice.label}:{phrase}", samples, None, "espeak-ng"))
    return clips


def file_clips(paths: Iterable[Path], sample_rate: int) -> list[Clip]:
    return [
        Clip(str(path), decode_audio(path, sample_rate).samples, None, "user file")
        for path in paths
    ]


def manifest_clips(manifests: Sequence[Path], sample_rate: int) -> list[Clip]:
    """NeMo JSON-lines manifests: audio_filepath (relative to the manifest) and text."""
    clips = []
    for manifest in manifests:
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                audio_path = manifest.parent / entry["audio_filepath"]
                text = str(entry.get("text", "")) or None
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{manifest}:{number} is not a manifest entry: {exc}") from exc
            samples = decode_audio(audio_path, sample_rate).samples
            clips.append(Clip(str(audio_path), samples, normalize_text(text), "user manifest"))
    return clips


def normalize_text(text: str | None) -> str | None:
    """Lower case, ё→е, letters and single spaces only (the references' convention)."""
    if text is None:
        return None
    lowered = text.lower().replace("ё", "е")
    kept = "".join(ch if ch.isalpha() or ch == "'" else " " for ch in lowered)
    return " ".join(kept.split()) or None
