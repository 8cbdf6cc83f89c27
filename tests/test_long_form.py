"""Long recordings: VAD segmentation, streamed decoding, batches, absolute times.

The recording is built here from the demo model's held-out clips (known transcripts), laid
end to end with pauses of digital silence, some holding a burst of low noise, to over ten
minutes, and written as a WAV so the file path is decoded block by block. The trained demo
models (QuartzNet, and the GigaAM-v3-shaped Conformer CTC and RNNT) must give every clip its
own segment, with boundaries in the pauses, the clip's known text, and word times within one
output frame of where the clip was placed; with Silero VAD and with the energy fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from asr.audio import decode_audio_blocks
from asr.deadline import Deadline
from asr.errors import DeadlineExceeded
from asr.pcm import SampleBlocks
from asr.resample import resample
from asr.resample_stream import StreamResampler
from asr.results import Transcript
from asr.transcribe import Transcriber
from asr.vad import EnergyVad, SileroVad, VadKind, make_detector

from tests.conftest import DEMO

RATE = 16000
MINUTES = 10.5
VAD_CHOICES: tuple[VadKind, ...] = ("silero", "energy")


@dataclass(frozen=True)
class Placed:
    start: int  # samples: where the clip's first and after its last non-zero sample lie
    stop: int
    text: str
    clip: int  # index into the clip list
    origin: int  # where the clip's first sample lies


@dataclass(frozen=True)
class Recording:
    path: Path
    audio: np.ndarray
    placed: list[Placed]


def demo_clips() -> list[tuple[np.ndarray, str]]:
    audio_dir = DEMO / "audio"
    clips = []
    for line in (audio_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        audio, rate = sf.read(audio_dir / entry["audio_filepath"], dtype="float32")
        assert rate == RATE
        clips.append((audio, entry["text"]))
    return clips


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Clips in a seeded random order; pauses of 1-3 s, every third with up to 1 s of white
    noise (-50 dBFS) in its middle; 20 s of noise and silence without speech at 5 min."""
    rng = np.random.default_rng(5)
    clips = demo_clips()
    pieces: list[np.ndarray] = []
    placed: list[Placed] = []
    position = 0
    while position < MINUTES * 60 * RATE:
        pause = np.zeros(int(rng.uniform(1.0, 3.0) * RATE), np.float32)
        if len(placed) % 3 == 1:
            # At least 0.6 s from the clips: the demo model never heard noise next to
            # speech, and a segment's padding (0.5 s) reaching into it garbles the clip.
            burst = max(0, min(int(rng.uniform(0.3, 1.0) * RATE), pause.size - int(1.2 * RATE)))
            offset = (pause.size - burst) // 2
            pause[offset : offset + burst] = rng.normal(0, 0.003, burst)
        if len(placed) == 100:
            pause = np.zeros(20 * RATE, np.float32)
            pause[5 * RATE : 15 * RATE] = rng.normal(0, 0.003, 10 * RATE)
        index = int(rng.integers(len(clips)))
        audio, text = clips[index]
        pieces += [pause, audio]
        position += pause.size
        nonzero = np.flatnonzero(audio)
        placed.append(
            Placed(
                position + int(nonzero[0]), position + int(nonzero[-1]) + 1, text, index, position
            )
        )
        position += audio.size
    pieces.append(np.zeros(RATE, np.float32))
    long_audio = np.concatenate(pieces)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    # The clips are 16-bit WAVs, so PCM_16 keeps them bit for bit.
    sf.write(path, long_audio, RATE, subtype="PCM_16")
    return Recording(path, sf.read(path, dtype="float32")[0], placed)


def built(name: str, script: str) -> Path:
    bundle = DEMO / name
    if not (bundle / "config.json").is_file():
        pytest.fail(f"demo/{name} is missing: run scripts/{script}")
    return bundle


@pytest.fixture(scope="module")
def conformer_bundle() -> Path:
    return built("conformer_bundle", "build_demo_conformer.sh")


@pytest.fixture(scope="module")
def transducer_bundle() -> Path:
    return built("transducer_bundle", "build_demo_transducer.sh")


def check_transcript(transcriber: Transcriber, result: Transcript, recording: Recording) -> None:
    clips = demo_clips()
    frame = transcriber.bundle.config.frame_seconds
    alone = [transcriber.transcribe(audio, sample_rate=RATE) for audio, _ in clips]
    # The demo model knows its held-out clips: the short-clip transcripts are the texts.
    assert [a.text for a in alone] == [text for _, text in clips]
    assert result.duration == pytest.approx(recording.audio.size / RATE)
    assert len(result.segments) == len(recording.placed)
    previous_stop = 0
    for index, (segment, placed) in enumerate(zip(result.segments, recording.placed, strict=True)):
        start, stop = round(segment.start * RATE), round(segment.end * RATE)
        # The clip is inside its segment, and the boundaries are in the pauses around it.
        assert previous_stop <= start <= placed.start, index
        following = recording.placed[index + 1].start if index + 1 < len(recording.placed) else None
        assert placed.stop <= stop <= (following or recording.audio.size), index
        assert stop - start <= transcriber.max_segment_seconds * RATE
        previous_stop = placed.stop
        assert segment.text == placed.text, index
        expected = alone[placed.clip].words
        assert [w.text for w in segment.words] == [w.text for w in expected]
        offset = placed.origin / RATE
        tolerance = frame + 1e-3  # one output frame, and word times are rounded to 1 ms
        for word, reference in zip(segment.words, expected, strict=True):
            assert abs(word.start - (reference.start + offset)) <= tolerance
            assert abs(word.end - (reference.end + offset)) <= tolerance
    assert result.text == " ".join(p.text for p in recording.placed)
    assert result.words == tuple(w for s in result.segments for w in s.words)


@pytest.mark.parametrize("vad", VAD_CHOICES)
def test_quartznet_long_recording(demo_bundle: Path, recording: Recording, vad: VadKind) -> None:
    transcriber = Transcriber.from_dir(demo_bundle, threads=1, vad=vad)
    result = transcriber.transcribe(recording.path)
    check_transcript(transcriber, result, recording)


@pytest.mark.parametrize("vad", VAD_CHOICES)
def test_conformer_long_recording(
    conformer_bundle: Path, recording: Recording, vad: VadKind
) -> None:
    transcriber = Transcriber.from_dir(conformer_bundle, threads=1, vad=vad)
    assert transcriber.max_segment_seconds == 25.0
    result = transcriber.transcribe(recording.path)
    check_transcript(transcriber, result, recording)


@pytest.mark.parametrize("vad", VAD_CHOICES)
def test_transducer_long_recording(
    transducer_bundle: Path, recording: Recording, vad: VadKind
) -> None:
    """The RNN-T greedy loop decodes a batch of segments together, each as alone."""
    transcriber = Transcriber.from_dir(transducer_bundle, threads=1, vad=vad)
    assert transcriber.bundle.config.transducer is not None
    result = transcriber.transcribe(recording.path)
    check_transcript(transcriber, result, recording)


def test_an_array_gives_the_same_transcript_as_a_file(
    demo_bundle: Path, recording: Recording, tmp_path: Path
) -> None:
    """One block (an array) or many (a file read block by block): the same segments."""
    transcriber = Transcriber.from_dir(demo_bundle, threads=1)
    minute = recording.audio[: 100 * RATE]
    path = tmp_path / "minute.wav"
    sf.write(path, minute, RATE, subtype="PCM_16")
    assert len(list(decode_audio_blocks(path, RATE).blocks)) > 1
    from_array = transcriber.transcribe(minute, sample_rate=RATE)
    assert from_array.segments == transcriber.transcribe(path).segments
    assert len(from_array.segments) >= 20


def test_long_audio_without_speech_is_an_empty_transcript(demo_bundle: Path) -> None:
    rng = np.random.default_rng(0)
    audio = np.zeros(45 * RATE, np.float32)
    audio[10 * RATE : 30 * RATE] = rng.normal(0, 0.003, 20 * RATE)
    for vad in VAD_CHOICES:
        result = Transcriber.from_dir(demo_bundle, threads=1, vad=vad).transcribe(
            audio, sample_rate=RATE
        )
        assert (result.text, result.segments, result.duration) == ("", (), 45.0)


class ExpiresAfter(Deadline):
    """A deadline that passes at its ``checks``-th transcription check."""

    def __init__(self, checks: int) -> None:
        super().__init__(float("inf"))
        self.left = checks
        self.stages: list[str] = []

    def check(self, stage: str) -> None:
        self.stages.append(stage)
        if stage == "transcription":
            self.left -= 1
            if self.left < 0:
                raise DeadlineExceeded(f"the request ran out of time during {stage}")


def test_the_deadline_is_checked_between_segments(demo_bundle: Path, recording: Recording) -> None:
    transcriber = Transcriber.from_dir(demo_bundle, threads=1)
    deadline = ExpiresAfter(5)
    with pytest.raises(DeadlineExceeded):
        transcriber.transcribe(recording.audio[: 60 * RATE], sample_rate=RATE, deadline=deadline)
    assert "voice activity detection" in deadline.stages
    assert deadline.stages.count("transcription") == 6


def test_streamed_decoding_downmixes_and_resamples_block_by_block(tmp_path: Path) -> None:
    """A 48 kHz stereo FLAC longer than several read blocks: the blocks, joined, are the
    mono average resampled as a whole."""
    rng = np.random.default_rng(1)
    stereo = rng.normal(0, 0.1, (48000 * 50, 2)).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, stereo, 48000, subtype="PCM_24")
    stored = sf.read(path, dtype="float32")[0]
    decoded = decode_audio_blocks(path, RATE)
    assert len(list(decoded.blocks)) > 1
    expected = resample(stored.mean(axis=1, dtype=np.float32), 48000, RATE)
    np.testing.assert_allclose(decoded.blocks.to_array(), expected, atol=1e-6)
    assert (decoded.original_sample_rate, decoded.channels) == (48000, 2)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_stream_resampler_matches_whole_signal_resampling(rate: int) -> None:
    rng = np.random.default_rng(rate)
    signal = rng.normal(0, 0.1, rate * 100 + 17).astype(np.float32)
    resampler = StreamResampler(rate, RATE)
    parts, position = [], 0
    while position < signal.size:
        size = int(rng.integers(1, 1_500_000))
        parts.append(resampler.push(signal[position : position + size]))
        position += size
    parts.append(resampler.finish())
    np.testing.assert_allclose(np.concatenate(parts), resample(signal, rate, RATE), atol=1e-6)


def test_sample_blocks_read_across_block_boundaries() -> None:
    signal = np.arange(1000, dtype=np.float32)
    blocks = SampleBlocks([signal[:300], signal[300:301], signal[301:]])
    for start, stop in [(0, 1000), (250, 320), (300, 301), (299, 302), (-5, 10), (990, 2000)]:
        np.testing.assert_array_equal(blocks.read(start, stop), signal[max(start, 0) : stop])
    frames = np.concatenate(list(blocks.frames(64)))
    assert frames.shape == (16, 64)
    np.testing.assert_array_equal(frames.reshape(-1)[:1000], signal)
    assert not frames.reshape(-1)[1000:].any()


def test_silero_is_checked_by_its_sha256(tmp_path: Path) -> None:
    from asr.errors import BundleError
    from asr.vad.silero import MODEL_PATH

    corrupt = tmp_path / "silero_vad.onnx"
    corrupt.write_bytes(MODEL_PATH.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match="corrupt"):
        SileroVad(RATE, path=corrupt)
    assert isinstance(make_detector("auto", RATE), SileroVad)
    assert isinstance(make_detector("auto", 22050), EnergyVad)
    assert isinstance(make_detector("energy", RATE), EnergyVad)
