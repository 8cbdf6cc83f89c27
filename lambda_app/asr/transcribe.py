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
``channels=ChannelOptions(mode="split")`` transcribes each channel of a call on its own
and returns one dialogue (``asr.channels``); memory holds one channel at a time (each is
decoded in its own pass).

``limits`` caps what is accepted before decoding (``asr.limits``); ``deadline`` is checked
after decoding, during the VAD, and before every segment's features and every batch's model
run, and bounds ffmpeg.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

import numpy as np

from .acoustic_model import OnnxAcousticModel
from .audio import DEFAULT_LIMITS, decode_audio_blocks
from .bundle import ModelBundle, load_bundle
from .channels import IDENTICAL_CHANNELS, MAX_SPLIT_CHANNELS, ChannelOptions, dialogue, turns
from .deadline import Deadline
from .decoding import Decoding, DecodingOptions, resolve
from .emotion import EmotionClassifier
from .errors import (
    AudioNotMultichannel,
    AudioTooLong,
    AudioTooManyChannels,
    EmptyAudio,
    InvalidRequest,
    NonFiniteAudio,
)
from .frontend import make_frontend
from .hotwords import Hotword
from .limits import AudioLimits
from .pcm import SampleBlocks
from .resample import resample
from .results import ChannelText, Segment, Timings, Transcript
from .search import make_search
from .segment_emotion import with_emotions
from .vad import VAD_KINDS, SpeechDetector, VadKind, make_detector
from .windows import plan_segments

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


class Transcriber:
    def __init__(
        self,
        bundle: ModelBundle,
        *,
        threads: int | None = None,
        vad: VadKind | None = None,
        max_segment_seconds: float | None = None,
        hotwords: tuple[Hotword, ...] = (),
        emotion: EmotionClassifier | None = None,
    ) -> None:
        """``vad``: "auto" (Silero when available), "silero" or "energy"; default
        ``$ASR_VAD`` or "auto". ``max_segment_seconds`` lowers the bundle's cap on one pass.
        ``hotwords``: the deployment's, checked here (a misspelt one fails the load).
        ``emotion``: an emotion bundle's classifier, which labels every segment."""
        self.bundle = bundle
        self.emotion = emotion
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
        emotion: str | os.PathLike[str] | None = None,
    ) -> Transcriber:
        """``emotion``: an emotion bundle's directory, loaded beside the model."""
        return cls(
            load_bundle(Path(path)),
            threads=threads,
            vad=vad,
            max_segment_seconds=max_segment_seconds,
            hotwords=hotwords,
            emotion=EmotionClassifier.load(Path(emotion), threads=threads) if emotion else None,
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
        channels: ChannelOptions | None = None,
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
        if channels is not None and channels.mode == "split":
            return self._split(
                audio, sample_rate, limits, deadline, decoding=chosen, options=channels
            )
        started = time.perf_counter()
        signal = self._samples(audio, sample_rate, limits, deadline)
        return self._whole(signal, time.perf_counter() - started, deadline, chosen)

    def _whole(
        self,
        signal: SampleBlocks,
        decode_s: float,
        deadline: Deadline | None,
        decoding: Decoding,
        channel_mode: str = "mix",
    ) -> Transcript:
        """One signal transcribed (``decode_s``: what decoding it took)."""
        segments, timings = self._run(signal, deadline, decoding)
        spoken, emotion_s = with_emotions(
            [s for s in segments if s.text], signal, self.sample_rate, self.emotion
        )
        return Transcript(
            text=" ".join(s.text for s in spoken),
            words=tuple(word for s in spoken for word in s.words),
            duration=signal.size / self.sample_rate,
            model_id=self.model_id,
            timings=replace(timings, decode=decode_s, emotion=emotion_s),
            segments=tuple(spoken),
            decoder=decoding.describe(),
            channel_mode=channel_mode,
        )

    def _run(
        self, signal: SampleBlocks, deadline: Deadline | None, decoding: Decoding
    ) -> tuple[list[Segment], Timings]:
        """VAD → batches → segments in time order; the timings without the decode."""
        started = time.perf_counter()
        spans = self.plan(signal, deadline)
        timings = Timings(features=time.perf_counter() - started)
        segments: list[Segment] = []
        recognised = False
        for batch in _batches(spans, _BATCH_SECONDS * self.sample_rate):
            results, spent = self._recognise(signal, batch, deadline, decoding)
            timings += spent
            recognised = recognised or bool(results)
            segments.extend(results)
        if spans and not recognised:
            duration = signal.size / self.sample_rate
            raise EmptyAudio(f"audio of {duration:.3f} s is too short to transcribe")
        segments.sort(key=lambda s: s.start)
        return segments, timings

    def _split(
        self,
        audio: AudioInput,
        sample_rate: int | None,
        limits: AudioLimits,
        deadline: Deadline | None,
        *,
        decoding: Decoding,
        options: ChannelOptions,
    ) -> Transcript:
        """Each channel decoded, transcribed and let go in turn; then one dialogue."""
        started = time.perf_counter()
        signal, count, difference = self._channel(audio, sample_rate, limits, deadline, 0)
        if count == 1 and options.required:
            raise AudioNotMultichannel(
                "the audio has one channel: there is nothing to split (send it without "
                '"channels": "split")'
            )
        if count > MAX_SPLIT_CHANNELS and options.required:
            raise AudioTooManyChannels(
                f"the audio has {count} channels; at most {MAX_SPLIT_CHANNELS} are "
                'transcribed apart (send it without "channels": "split" to down-mix)'
            )
        if count > MAX_SPLIT_CHANNELS:  # the deployment's split: down-mix what it cannot split
            del signal
            signal = self._samples(audio, sample_rate, limits, deadline)
        decode_s = time.perf_counter() - started
        if count == 1 or count > MAX_SPLIT_CHANNELS:
            return self._whole(signal, decode_s, deadline, decoding)
        if difference <= IDENTICAL_CHANNELS:  # one signal copied: read it once
            return self._whole(signal, decode_s, deadline, decoding, "identical")
        duration = signal.size / self.sample_rate
        per_channel, texts, timings = [], [], Timings()
        for channel in range(count):
            if channel:
                decoding_at = time.perf_counter()
                signal, _, _ = self._channel(audio, sample_rate, limits, deadline, channel)
                decode_s += time.perf_counter() - decoding_at
            segments, spent = self._run(signal, deadline, decoding)
            speaker = options.speaker(channel)
            words = [word for s in segments for word in s.words]
            labelled, emotion_s = with_emotions(
                turns(channel, speaker, words), signal, self.sample_rate, self.emotion
            )
            del signal  # one channel in memory at a time
            per_channel.append(labelled)
            texts.append(
                ChannelText(channel, speaker, " ".join(s.text for s in segments if s.text))
            )
            timings += replace(spent, emotion=emotion_s)
        ordered = dialogue(per_channel)
        return Transcript(
            text=" ".join(turn.text for turn in ordered),
            words=tuple(word for turn in ordered for word in turn.words),
            duration=duration,
            model_id=self.model_id,
            timings=replace(timings, decode=decode_s),
            segments=tuple(ordered),
            decoder=decoding.describe(),
            channel_mode="split",
            channels=tuple(texts),
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

    def _channel(
        self,
        audio: AudioInput,
        sample_rate: int | None,
        limits: AudioLimits,
        deadline: Deadline | None,
        channel: int,
    ) -> tuple[SampleBlocks, int, float]:
        """One channel of ``audio`` at the model's rate, the channel count, and the largest
        difference between channels (``tracks.Track``)."""
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise InvalidRequest("samples given as an array need their sample_rate")
            if audio.ndim != 2:
                return self._samples(audio, sample_rate, limits, deadline), 1, 0.0
            difference = float(np.max(np.abs(audio[:, 1:] - audio[:, :1]), initial=0.0))
            limits.check_stream(sample_rate, audio.shape[1], self.sample_rate)
            column = np.ascontiguousarray(audio[:, channel])
            samples = self._array_samples(column, sample_rate, limits)
            return SampleBlocks([samples]), audio.shape[1], difference
        if sample_rate is not None:
            raise InvalidRequest("sample_rate applies only to arrays; files carry their own")
        source = bytes(audio) if isinstance(audio, bytearray | memoryview) else audio
        decoded = decode_audio_blocks(
            source, self.sample_rate, limits=limits, deadline=deadline, channel=channel
        )
        return decoded.blocks, decoded.channels, decoded.max_channel_difference

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
