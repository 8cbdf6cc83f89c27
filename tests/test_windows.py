"""Long audio is cut into capped windows at pauses, and transcripts keep absolute times."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from asr.bundle import load_bundle, write_checksums
from asr.config import BundleConfig
from asr.transcribe import Transcriber
from asr.windows import plan_windows

RATE = 16000


def test_short_audio_is_one_window() -> None:
    assert plan_windows(np.zeros(RATE * 10, np.float32), RATE, 25.0) == [(0, RATE * 10)]


def test_windows_cover_the_audio_within_the_cap() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, RATE * 95).astype(np.float32)
    windows = plan_windows(audio, RATE, 25.0)
    assert windows[0][0] == 0 and windows[-1][1] == audio.size
    for (_, stop), (start, _) in itertools.pairwise(windows):
        assert stop == start  # contiguous: no sample dropped or repeated
    assert all(0 < stop - start <= 25 * RATE for start, stop in windows)
    assert all(stop - start >= 20 * RATE for start, stop in windows[:-1])


def test_cuts_fall_in_the_pause() -> None:
    """Loud noise everywhere except a 0.3 s silence at 22.0–22.3 s: the cut lands there."""
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 0.2, RATE * 40).astype(np.float32)
    audio[int(22.0 * RATE) : int(22.3 * RATE)] = 0.0
    (_, cut), _ = plan_windows(audio, RATE, 25.0)
    assert 22.0 * RATE <= cut <= 22.3 * RATE


def capped_bundle(source: Path, target: Path, seconds: float) -> Path:
    shutil.copytree(source, target)
    config = load_bundle(target).config
    capped = replace(config, model=replace(config.model, max_window_seconds=seconds))
    (target / "config.json").write_text(json.dumps(capped.to_dict(), ensure_ascii=False))
    write_checksums(target, BundleConfig.from_dict(capped.to_dict()))
    return target


def test_windowed_transcript_is_the_windows_transcripts_with_absolute_times(
    tmp_path: Path, demo_bundle: Path
) -> None:
    """The demo model on its held-out clips, each padded with silence to 3 s, capped at 4 s
    per pass: every cut must land in a pause."""
    demo_audio = sorted((demo_bundle.parent / "audio").glob("heldout_*.wav")) * 2
    pieces: list[np.ndarray] = []
    for path in demo_audio:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == RATE
        pieces.append(np.pad(audio, (0, 3 * RATE - audio.size)))
    long_audio = np.concatenate(pieces)
    whole = Transcriber.from_dir(demo_bundle, threads=1)
    capped = Transcriber.from_dir(capped_bundle(demo_bundle, tmp_path / "capped", 4.0), threads=1)

    result = capped.transcribe(long_audio, sample_rate=RATE)

    windows = plan_windows(long_audio, RATE, 4.0)
    assert len(windows) > 1
    expected_texts = []
    for start, stop in windows:
        part = whole.transcribe(long_audio[start:stop], sample_rate=RATE)
        expected_texts.append(part.text)
        shifted = [w.start + start / RATE for w in part.words]
        in_window = [w.start for w in result.words if start / RATE <= w.start < stop / RATE]
        assert in_window == pytest.approx(shifted, abs=1e-6)
    assert result.text == " ".join(t for t in expected_texts if t)
    # Every cut fell in a pause (the 10 ms either side are silent), none inside a phrase.
    for _, cut in windows[:-1]:
        assert np.abs(long_audio[cut - RATE // 100 : cut + RATE // 100]).max() < 1e-3
    assert all(0 <= w.start <= w.end <= result.duration for w in result.words)
