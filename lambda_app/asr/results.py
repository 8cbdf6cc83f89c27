"""What a transcription returns: the transcript, its segments and words, the stage timings.

``to_dict()`` gives the JSON the service returns; a call transcribed channel by channel
(``asr.channels``) adds ``channel``/``speaker`` to its segments and words and the
per-channel texts, and an emotion bundle (``asr.emotion``) an ``emotion`` per segment;
keys that do not apply are left out rather than null.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .words import Word

if TYPE_CHECKING:
    from .emotion import Emotion


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage of one transcription: audio decoding, features (with the
    VAD), the acoustic model (a transducer's encoder), the decoder search (greedy CTC, or
    the transducer's prediction-network/joint loop), and the emotion model (if any)."""

    decode: float = 0.0
    features: float = 0.0
    model: float = 0.0
    decoder: float = 0.0
    emotion: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.features + self.model + self.decoder + self.emotion

    def __add__(self, other: Timings) -> Timings:
        return Timings(
            self.decode + other.decode,
            self.features + other.features,
            self.model + other.model,
            self.decoder + other.decoder,
            self.emotion + other.emotion,
        )


@dataclass(frozen=True)
class Segment:
    """A stretch of speech transcribed in one model pass, with absolute times in seconds."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    token_ids: tuple[int, ...] = ()  # the decoder's tokens (evaluation compares systems by them)
    # A turn of a call transcribed channel by channel (asr.channels): whose it is.
    channel: int | None = None
    speaker: str | None = None
    emotion: Emotion | None = None  # with an emotion bundle: the segment's audio classified

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "words": [_word_dict(word) for word in self.words],
        }
        if self.channel is not None:
            data["channel"], data["speaker"] = self.channel, self.speaker
        if self.emotion is not None:
            data["emotion"] = self.emotion.to_dict()
        return data


@dataclass(frozen=True)
class ChannelText:
    """One channel's whole text, when the channels were transcribed apart."""

    channel: int
    speaker: str
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]
    duration: float
    model_id: str
    timings: Timings = field(default_factory=Timings)
    segments: tuple[Segment, ...] = ()
    decoder: str = "greedy"  # Decoding.describe(): "beam16+lm(alpha=0.5,beta=1)+hotwords(2)"
    # "mix": channels averaged; "split": each transcribed apart (segments are turns, in
    # time order); "identical": split was asked, the channels held one signal, read once.
    channel_mode: str = "mix"
    channels: tuple[ChannelText, ...] = ()  # per channel, when split

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["words"] = [_word_dict(word) for word in self.words]
        data["segments"] = [s.to_dict() for s in self.segments]
        data["timings"] = {k: round(v, 4) for k, v in asdict(self.timings).items()}
        data["timings"]["total"] = round(self.timings.total, 4)
        data["duration"] = round(self.duration, 3)
        return data


def _word_dict(word: Word) -> dict[str, Any]:
    data = asdict(word)
    if word.channel is None:
        del data["channel"], data["speaker"]
    return data
