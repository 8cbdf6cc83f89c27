"""One audio → text path for every entry point (API, S3, CLI, evaluation).

transcriber = Transcriber.from_dir("demo/bundle")
result = transcriber.transcribe("clip.mp3")            # a path
result = transcriber.transcribe(wav_bytes)              # bytes
result = transcriber.transcribe(samples, sample_rate=8000)  # a numpy array
result = transcriber.transcribe(data, limits=AudioLimits(max_duration_s=60), deadline=deadline)
result = transcriber.transcribe(data, decoding=DecodingOptions(method="beam", hotwords=...))

Audio up to one model pass long (the bundle's ``max_window_seconds``; 30 s for bundles
without a cap) is transcribed in one pass, as a whole. Longer audio is a long recording:
a VAD (``asr.vad``: Silero, or the energy fallback) finds the speech, ``windows.
plan_segments`` cuts it into segments of at most one pass at pauses, and the segments go
through the acoustic model in batches of similar lengths; each becomes one
``Transcript.segments`` entry with absolute times. Decoding is streamed (``audio.
decode_audio_blocks``), so memory holds the mono signal at the model's rate and one batch's
features, whatever the file's length, channels or source rate.

``decoding`` overrides the bundle's default decoder (``asr.decoding``); the transcriber's
``hotwords`` (the deployment's) apply to every request that does not choose greedy.

``limits`` caps what is accepted before decoding (``asr.limits``); ``deadline`` is checked
after decoding, during the VAD, and before every segment's features and every batch's model
run, and bounds ffmpeg.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from .acoustic_model import OnnxAcousticModel
from .audio import DEFAULT_LIMITS, decode_audio_blocks
from .bundle import ModelBundle, load_bundle
from .deadline import Deadline
from .decoding import Decoding, DecodingOptions, resolve
from .errors import AudioTooLong, EmptyAudio, InvalidRequest, NonFiniteAudio
from .frontend import make_frontend
from .hotwords import Hotword
from .limits import AudioLimits
from .pcm import SampleBlocks
from .resample import resample
from .search import make_search
from .vad import VAD_KINDS, SpeechDetector, VadKind, make_detector
from .windows import plan_segments
from .words import Word

VAD_ENV: Final = "ASR_VAD"
# One pass at most for bundles without a cap (QuartzNet: linear in length, but a whole hour
# in one pass would hold an hour of features and activations).
DEFAULT_MAX_SEGMENT_SECONDS: Final = 30.0
# A batch holds at most this much padded audio, this many segments, and segments at least
# this fraction of its longest (padding is wasted work).
_BATCH_SECONDS: Final = 120.0
_BATCH_SIZE: Final = 8
_BATCH_MIN_FILL: Final = 0.75

AudioInput = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage of one transcription: audio decoding, features (with the
    VAD), the acoustic model (a transducer's encoder), and the decoder search (greedy CTC,
    or the transducer's prediction-network/joint loop)."""

    decode: float = 0.0
    features: float = 0.0
    model: float = 0.0
    decoder: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.features + self.model + self.decoder


@dataclass(frozen=True)
class Segment:
    """A stretch of speech transcribed in one model pass, with absolute times in seconds."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    token_ids: tuple[int, ...] = ()  # the decoder's tokens (evaluation compares systems by them)


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]
    duration: float
    model_id: str
    timings: Timings = field(default_factory=Timings)
    segments: tuple[Segment, ...] = ()
    decoder: str = "greedy"  # Decoding.describe(): "beam16+lm(alpha=0.5,beta=1)+hotwords(2)"

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
    def __init__(
        self,
        bundle: ModelBundle,
        *,
        threads: int | None = None,
        vad: VadKind | None = None,
        max_segment_seconds: float | None = None,
        hotwords: tuple[Hotword, ...] = (),
    ) -> None:
        """``vad``: "auto" (Silero when available), "silero" or "energy"; default
        ``$ASR_VAD`` or "auto". ``max_segment_seconds`` lowers the bundle's cap on one pass.
        ``hotwords``: the deployment's, checked here (a misspelt one fails the load)."""
        self.bundle = bundle
        self.frontend = make_frontend(bundle.config.frontend)
        self.model = OnnxAcousticModel(bundle, threads=threads)
        self.search = make_search(bundle)
        self.alphabet = frozenset(
            "".join(bundle.vocabulary.piece(i) for i in range(len(bundle.vocabulary)))
        )
        self.hotwords = hotwords
        self.default_decoding = self.decoding(DecodingOptions())
        self.vad_kind = vad or _vad_from_env()
        if self.vad_kind not in VAD_KINDS:
            raise ValueError(f"unknown VAD {self.vad_kind!r}; choose one of {VAD_KINDS}")
        cap = bundle.config.model.max_window_seconds or DEFAULT_MAX_SEGMENT_SECONDS
        if max_segment_seconds is not None:
            if max_segment_seconds < 1.0:
                raise ValueError(f"max_segment_seconds must be >= 1, got {max_segment_seconds}")
            cap = min(cap, max_segment_seconds)
        self.max_segment_seconds = cap
        self._detector: SpeechDetector | None = None
        self._detector_lock = threading.Lock()

    @classmethod
    def from_dir(
        cls,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        vad: VadKind | None = None,
        max_segment_seconds: float | None = None,
        hotwords: tuple[Hotword, ...] = (),
    ) -> Transcriber:
        return cls(
            load_bundle(Path(path)),
            threads=threads,
            vad=vad,
            max_segment_seconds=max_segment_seconds,
            hotwords=hotwords,
        )

    def decoding(self, options: DecodingOptions) -> Decoding:
        """What ``options`` resolve to for this bundle and deployment (InvalidRequest when
        they cannot apply: ``asr.decoding``)."""
        return resolve(
            self.bundle.config.decoder,
            options,
            deployment_hotwords=self.hotwords,
            alphabet=self.alphabet,
            beam_supported=self.bundle.config.transducer is None,
        )

    @property
    def sample_rate(self) -> int:
        return self.bundle.config.sample_rate

    @property
    def model_id(self) -> str:
        return self.bundle.config.model_id

    @property
    def detector(self) -> SpeechDetector:
        """The VAD, loaded on the first long recording."""
        with self._detector_lock:
            if self._detector is None:
                self._detector = make_detector(self.vad_kind, self.sample_rate)
            return self._detector

    def transcribe(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        max_duration_s: float | None = None,
        limits: AudioLimits = DEFAULT_LIMITS,
        deadline: Deadline | None = None,
        decoding: DecodingOptions | None = None,
    ) -> Transcript:
        """Transcribe a file path, encoded audio bytes, or samples (with their rate).

        ``max_duration_s``, when given, replaces ``limits.max_duration_s``.
        """
        chosen = (
            self.default_decoding
            if decoding is None or decoding.is_default
            else self.decoding(decoding)
        )
        if max_duration_s is not None:
            limits = replace(limits, max_duration_s=max_duration_s)
        started = time.perf_counter()
        signal = self._samples(audio, sample_rate, limits, deadline)
        duration = signal.size / self.sample_rate
        decoded_at = time.perf_counter()
        spans = self.plan(signal, deadline)
        timings = Timings(decode=decoded_at - started, features=time.perf_counter() - decoded_at)
        segments: list[Segment] = []
        recognised = False
        for batch in _batches(spans, _BATCH_SECONDS * self.sample_rate):
            results, spent = self._recognise(signal, batch, deadline, chosen)
            timings = Timings(
                decode=timings.decode,
                features=timings.features + spent.features,
                model=timings.model + spent.model,
                decoder=timings.decoder + spent.decoder,
            )
            recognised = recognised or bool(results)
            segments.extend(results)
        if spans and not recognised:
            raise EmptyAudio(f"audio of {duration:.3f} s is too short to transcribe")
        segments.sort(key=lambda s: s.start)
        spoken = [s for s in segments if s.text]
        return Transcript(
            text=" ".join(s.text for s in spoken),
            words=tuple(word for s in spoken for word in s.words),
            duration=duration,
            model_id=self.model_id,
            timings=timings,
            segments=tuple(spoken),
            decoder=chosen.describe(),
        )

    def plan(self, signal: SampleBlocks, deadline: Deadline | None = None) -> list[tuple[int, int]]:
        """[start, stop) sample ranges to transcribe: the whole of audio up to one pass long,
        else the VAD's speech segments."""
        if signal.size <= self.max_segment_seconds * self.sample_rate:
            return [(0, signal.size)]
        detector = self.detector
        probabilities = detector.speech_probabilities(signal, deadline)
        return plan_segments(
            probabilities,
            detector.frame_samples,
            signal,
            self.sample_rate,
            max_segment_seconds=self.max_segment_seconds,
        )

    def _recognise(
        self,
        signal: SampleBlocks,
        spans: Sequence[tuple[int, int]],
        deadline: Deadline | None,
        decoding: Decoding,
    ) -> tuple[list[Segment], Timings]:
        """Features → acoustic model (one batch) → decoder search for ``spans`` of
        ``signal``. Spans shorter than one feature frame give nothing."""
        started = time.perf_counter()
        features: list[np.ndarray] = []
        kept: list[tuple[int, int]] = []
        for start, stop in spans:
            if deadline is not None:
                deadline.check("transcription")
            item = self.frontend(signal.read(start, stop))
            if item.shape[1]:
                features.append(item)
                kept.append((start, stop))
        features_at = time.perf_counter()
        if not features:
            return [], Timings(features=features_at - started)
        if deadline is not None:
            deadline.check("transcription")
        outputs = self.model.batch(features)
        del features
        model_at = time.perf_counter()
        offsets = [start / self.sample_rate for start, _ in kept]
        hypotheses = self.search(outputs, offsets, decoding)
        segments = []
        for (start, stop), hypothesis in zip(kept, hypotheses, strict=True):
            segments.append(
                Segment(
                    start=start / self.sample_rate,
                    end=stop / self.sample_rate,
                    text=hypothesis.text,
                    words=hypothesis.words,
                    token_ids=hypothesis.token_ids,
                )
            )
        spent = Timings(
            features=features_at - started,
            model=model_at - features_at,
            decoder=time.perf_counter() - model_at,
        )
        return segments, spent

    def _samples(
        self,
        audio: AudioInput,
        sample_rate: int | None,
        limits: AudioLimits,
        deadline: Deadline | None,
    ) -> SampleBlocks:
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise InvalidRequest("samples given as an array need their sample_rate")
            return SampleBlocks([self._array_samples(audio, sample_rate, limits)])
        if sample_rate is not None:
            raise InvalidRequest("sample_rate applies only to arrays; files carry their own")
        source = bytes(audio) if isinstance(audio, bytearray | memoryview) else audio
        return decode_audio_blocks(
            source, self.sample_rate, limits=limits, deadline=deadline
        ).blocks

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


def _vad_from_env() -> VadKind:
    configured = os.environ.get(VAD_ENV, "").strip().lower() or "auto"
    for kind in VAD_KINDS:
        if configured == kind:
            return kind
    raise ValueError(f"{VAD_ENV}={configured!r} is not one of {', '.join(VAD_KINDS)}")


def _batches(spans: list[tuple[int, int]], budget: float) -> list[list[tuple[int, int]]]:
    """Spans grouped for the model, longest first: a batch's padded size (count x its
    longest) stays within ``budget`` samples, and its members are of similar length."""
    batches: list[list[tuple[int, int]]] = []
    for span in sorted(spans, key=lambda s: s[0] - s[1]):
        length = span[1] - span[0]
        if batches:
            batch = batches[-1]
            longest = batch[0][1] - batch[0][0]
            if (
                len(batch) < _BATCH_SIZE
                and longest * (len(batch) + 1) <= budget
                and length >= _BATCH_MIN_FILL * longest
            ):
                batch.append(span)
                continue
        batches.append([span])
    return batches
