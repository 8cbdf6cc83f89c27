"""One audio → text path for every entry point (API, S3, CLI, evaluation).

transcriber = Transcriber.from_dir("demo/bundle")
result = transcriber.transcribe("clip.mp3")            # a path
result = transcriber.transcribe(wav_bytes)              # bytes
result = transcriber.transcribe(samples, sample_rate=8000)  # a numpy array
result = transcriber.transcribe(data, limits=AudioLimits(max_duration_s=60), deadline=deadline)

``limits`` caps what is accepted before decoding (``asr.limits``); ``deadline`` is checked
after decoding and before every window's features and model run, and bounds ffmpeg.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .acoustic_model import OnnxAcousticModel
from .audio import DEFAULT_LIMITS, decode_audio
from .bundle import ModelBundle, load_bundle
from .ctc import CtcHypothesis, Word, greedy_decode
from .deadline import Deadline
from .errors import AudioTooLong, EmptyAudio, InvalidRequest, NonFiniteAudio
from .frontend import make_frontend
from .limits import AudioLimits
from .resample import resample
from .windows import plan_windows

AudioInput = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage of one transcription."""

    decode: float = 0.0
    features: float = 0.0
    model: float = 0.0
    ctc: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.features + self.model + self.ctc


@dataclass(frozen=True)
class Segment:
    """A stretch of speech transcribed in one model pass, with absolute times in seconds."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]
    duration: float
    model_id: str
    timings: Timings = field(default_factory=Timings)
    segments: tuple[Segment, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["words"] = [asdict(word) for word in self.words]
        data["segments"] = [
            {
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "words": [asdict(word) for word in s.words],
            }
            for s in self.segments
        ]
        data["timings"] = {k: round(v, 4) for k, v in asdict(self.timings).items()}
        data["timings"]["total"] = round(self.timings.total, 4)
        data["duration"] = round(self.duration, 3)
        return data


class Transcriber:
    def __init__(self, bundle: ModelBundle, *, threads: int | None = None) -> None:
        self.bundle = bundle
        self.frontend = make_frontend(bundle.config.frontend)
        self.model = OnnxAcousticModel(bundle, threads=threads)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> Transcriber:
        return cls(load_bundle(Path(path)), threads=threads)

    @property
    def sample_rate(self) -> int:
        return self.bundle.config.sample_rate

    @property
    def model_id(self) -> str:
        return self.bundle.config.model_id

    def transcribe(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        max_duration_s: float | None = None,
        limits: AudioLimits = DEFAULT_LIMITS,
        deadline: Deadline | None = None,
    ) -> Transcript:
        """Transcribe a file path, encoded audio bytes, or samples (with their rate).

        ``max_duration_s``, when given, replaces ``limits.max_duration_s``.
        """
        if max_duration_s is not None:
            limits = replace(limits, max_duration_s=max_duration_s)
        started = time.perf_counter()
        samples = self._samples(audio, sample_rate, limits, deadline)
        duration = samples.size / self.sample_rate
        timings = Timings(decode=time.perf_counter() - started)
        texts: list[str] = []
        words: list[Word] = []
        segments: list[Segment] = []
        recognised = False
        for start, stop in self._windows(samples):
            if deadline is not None:
                deadline.check("transcription")
            hypothesis, spent = self._recognise(
                samples[start:stop], start / self.sample_rate, deadline
            )
            if hypothesis is None:  # a window shorter than one feature frame
                continue
            recognised = True
            texts.append(hypothesis.text)
            words.extend(hypothesis.words)
            if hypothesis.text:
                segments.append(
                    Segment(
                        start=start / self.sample_rate,
                        end=stop / self.sample_rate,
                        text=hypothesis.text,
                        words=hypothesis.words,
                    )
                )
            timings = Timings(
                decode=timings.decode,
                features=timings.features + spent.features,
                model=timings.model + spent.model,
                ctc=timings.ctc + spent.ctc,
            )
        if not recognised:
            raise EmptyAudio(f"audio of {duration:.3f} s is too short to transcribe")
        return Transcript(
            text=" ".join(text for text in texts if text),
            words=tuple(words),
            duration=duration,
            model_id=self.model_id,
            timings=timings,
            segments=tuple(segments),
        )

    def _windows(self, samples: np.ndarray) -> list[tuple[int, int]]:
        cap = self.bundle.config.model.max_window_seconds
        if cap is None:
            return [(0, samples.size)]
        return plan_windows(samples, self.sample_rate, cap)

    def _recognise(
        self, samples: np.ndarray, offset: float, deadline: Deadline | None
    ) -> tuple[CtcHypothesis | None, Timings]:
        """Features → acoustic model → greedy CTC for one window starting at ``offset`` s."""
        started = time.perf_counter()
        features = self.frontend(samples)
        features_at = time.perf_counter()
        if features.shape[1] == 0:
            return None, Timings(features=features_at - started)
        if deadline is not None:
            deadline.check("transcription")
        log_probs = self.model(features)
        model_at = time.perf_counter()
        hypothesis = greedy_decode(
            log_probs,
            self.bundle.vocabulary,
            self.bundle.config.frame_seconds,
            time_offset=offset,
        )
        spent = Timings(
            features=features_at - started,
            model=model_at - features_at,
            ctc=time.perf_counter() - model_at,
        )
        return hypothesis, spent

    def _samples(
        self,
        audio: AudioInput,
        sample_rate: int | None,
        limits: AudioLimits,
        deadline: Deadline | None,
    ) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise InvalidRequest("samples given as an array need their sample_rate")
            return self._array_samples(audio, sample_rate, limits)
        if sample_rate is not None:
            raise InvalidRequest("sample_rate applies only to arrays; files carry their own")
        source = bytes(audio) if isinstance(audio, bytearray | memoryview) else audio
        return decode_audio(source, self.sample_rate, limits=limits, deadline=deadline).samples

    def _array_samples(
        self, audio: np.ndarray, sample_rate: int, limits: AudioLimits
    ) -> np.ndarray:
        if sample_rate <= 0:
            raise InvalidRequest(f"sample_rate must be positive, got {sample_rate}")
        if audio.ndim not in (1, 2):
            raise InvalidRequest(
                f"samples must be [frames] or [frames, channels], got {audio.shape}"
            )
        limits.check_stream(sample_rate, 1 if audio.ndim == 1 else audio.shape[1], self.sample_rate)
        if audio.ndim == 2:  # [frames, channels], soundfile's layout
            audio = audio.mean(axis=1)
        if audio.size == 0:
            raise EmptyAudio("the audio holds no samples")
        cap = limits.max_duration_s
        if cap is not None and audio.size / sample_rate > cap:
            raise AudioTooLong(
                f"audio is {audio.size / sample_rate:.1f} s; the limit here is {cap:g} s"
            )
        if np.issubdtype(audio.dtype, np.integer):  # PCM: scale to [-1, 1)
            full_scale = float(2 ** (8 * audio.dtype.itemsize - 1))
            offset = full_scale if np.issubdtype(audio.dtype, np.unsignedinteger) else 0.0
            samples = ((audio.astype(np.float64) - offset) / full_scale).astype(np.float32)
        else:
            samples = np.asarray(audio, dtype=np.float32)
        if not np.isfinite(samples).all():
            raise NonFiniteAudio("the samples contain NaN or infinite values")
        return resample(samples, sample_rate, self.sample_rate)
