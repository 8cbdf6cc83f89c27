"""Long audio is cut into capped segments at pauses (VAD probabilities → plan_segments, or the
energy-only plan_windows), and transcripts keep absolute times."""

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
from asr.pcm import SampleBlocks
from asr.transcribe import Transcriber
from asr.windows import SegmentationPolicy, plan_segments, plan_windows

RATE = 16000
FRAME = 512  # Silero's frame at 16 kHz: 32 ms


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


def speech_frames(num_frames: int, *runs: tuple[int, int]) -> np.ndarray:
    probabilities = np.full(num_frames, 0.02, np.float32)
    for start, stop in runs:
        probabilities[start:stop] = 0.97
    return probabilities


def noise(seconds: float, seed: int = 0) -> SampleBlocks:
    rng = np.random.default_rng(seed)
    return SampleBlocks([rng.normal(0, 0.1, int(seconds * RATE)).astype(np.float32)])


def test_short_pauses_stay_inside_a_segment_and_segments_are_padded() -> None:
    """Speech at frames 100-140 and 145-180 (a 0.16 s pause: one phrase), then 400-430."""
    policy = SegmentationPolicy()
    probabilities = speech_frames(600, (100, 140), (145, 180), (400, 430))
    audio = noise(600 * FRAME / RATE)
    segments = plan_segments(probabilities, FRAME, audio, RATE, max_segment_seconds=25.0)
    before, after = int(policy.pad_before_s * RATE), int(policy.pad_after_s * RATE)
    assert segments == [
        (100 * FRAME - before, 180 * FRAME + after),
        (400 * FRAME - before, 430 * FRAME + after),
    ]


def test_hysteresis_keeps_speech_through_middling_probabilities() -> None:
    probabilities = speech_frames(300, (50, 60), (75, 90))
    probabilities[60:75] = 0.4  # between neg_threshold and threshold: still speech
    probabilities[200:203] = 0.45  # never reached the threshold: not speech
    policy = SegmentationPolicy(min_pause_s=0.0, pad_before_s=0.0, pad_after_s=0.0)
    segments = plan_segments(
        probabilities, FRAME, noise(10.0), RATE, max_segment_seconds=25.0, policy=policy
    )
    assert segments == [(50 * FRAME, 90 * FRAME)]


def test_long_speech_is_cut_in_the_longest_pause_within_reach() -> None:
    """40 s of speech with a short pause (0.26 s, below min_pause_s) at 20 s and a shorter
    one at 14 s: the cut lands inside the 20 s pause, and no segment exceeds the cap."""
    frames_per_second = RATE / FRAME
    pause = (round(20.0 * frames_per_second), round(20.0 * frames_per_second) + 8)
    short = (round(14.0 * frames_per_second), round(14.0 * frames_per_second) + 3)
    total = round(45 * frames_per_second)
    probabilities = speech_frames(total, (10, total - 10))
    probabilities[pause[0] : pause[1]] = 0.01
    probabilities[short[0] : short[1]] = 0.01
    segments = plan_segments(probabilities, FRAME, noise(45.0), RATE, max_segment_seconds=25.0)
    assert len(segments) == 2
    assert all(stop - start <= 25 * RATE for start, stop in segments)
    assert segments[0][1] == segments[1][0]  # contiguous: nothing dropped at a cut
    assert pause[0] * FRAME <= segments[0][1] <= pause[1] * FRAME


def test_long_speech_without_a_pause_is_cut_at_the_quietest_moment() -> None:
    audio = noise(40.0, seed=3).to_array().copy()
    audio[int(19.0 * RATE) : int(19.2 * RATE)] *= 0.01  # quiet, but the VAD saw no pause
    total = -(-audio.size // FRAME)
    probabilities = speech_frames(total, (0, total))
    segments = plan_segments(
        probabilities, FRAME, SampleBlocks([audio]), RATE, max_segment_seconds=25.0
    )
    assert len(segments) == 2
    assert 19.0 * RATE <= segments[0][1] <= 19.2 * RATE


def test_segments_do_not_start_or_end_in_digital_silence() -> None:
    audio = noise(10.0).to_array().copy()
    audio[: 3 * RATE] = 0.0
    audio[int(4.5 * RATE) :] = 0.0
    probabilities = speech_frames(-(-audio.size // FRAME), (round(3 * RATE / FRAME), 140))
    (segment,) = plan_segments(
        probabilities, FRAME, SampleBlocks([audio]), RATE, max_segment_seconds=25.0
    )
    assert segment == (3 * RATE, int(4.5 * RATE))


def test_no_speech_gives_no_segments() -> None:
    probabilities = np.zeros(400, np.float32)
    assert plan_segments(probabilities, FRAME, noise(13.0), RATE, max_segment_seconds=25.0) == []


def test_capped_transcript_is_its_segments_transcripts_with_absolute_times(
    tmp_path: Path, demo_bundle: Path
) -> None:
    """The demo model on its held-out clips separated by 1 s pauses, capped at 4 s per pass:
    every segment is at most 4 s, its text and word times are those of its audio
    transcribed alone, shifted to where it lies."""
    demo_audio = sorted((demo_bundle.parent / "audio").glob("heldout_*.wav")) * 2
    pieces: list[np.ndarray] = []
    for path in demo_audio:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == RATE
        pieces += [np.zeros(RATE, np.float32), audio]
    long_audio = np.concatenate(pieces)
    whole = Transcriber.from_dir(demo_bundle, threads=1)
    capped = Transcriber.from_dir(capped_bundle(demo_bundle, tmp_path / "capped", 4.0), threads=1)

    result = capped.transcribe(long_audio, sample_rate=RATE)

    assert len(result.segments) == len(demo_audio)
    for segment in result.segments:
        assert 0 < segment.end - segment.start <= 4.0
        start, stop = round(segment.start * RATE), round(segment.end * RATE)
        alone = whole.transcribe(long_audio[start:stop], sample_rate=RATE)
        assert segment.text == alone.text
        shifted = [w.start + segment.start for w in alone.words]
        # Word times are rounded to the millisecond.
        assert [w.start for w in segment.words] == pytest.approx(shifted, abs=1e-3)
    assert result.text == " ".join(s.text for s in result.segments)
    assert all(0 <= w.start <= w.end <= result.duration for w in result.words)
