"""A Transcript rendered as JSON, plain text, SRT or WebVTT.

    rendered = render(transcript, "srt")   # Rendered(body=..., content_type=...)

JSON keeps the fields every earlier response had (``text``, ``words``, ``segments``,
``duration``, ``model_id``, ``timings``) and adds a ``results`` block shaped like Amazon
Transcribe's batch output, so code written against Transcribe reads it unchanged:

    results.transcripts     [{"transcript": text}]
    results.items           one per word: {"id", "type": "pronunciation", "start_time",
                            "end_time", "alternatives": [{"content", "confidence"}]}; trailing
                            punctuation a word carries (cased/punctuated models) becomes a
                            following {"type": "punctuation"} item without times, as Transcribe
                            writes it. Times, confidences: decimal strings, as Transcribe's.
    results.audio_segments  one per segment: {"id", "transcript", "start_time", "end_time",
                            "items": [item ids]}

A call transcribed channel by channel (``channel_mode`` "split", ``asr.channels``) adds
Transcribe's channel identification layout: ``channel_label`` ("ch_0", "ch_1") on every
item and audio segment, and ``results.channel_labels`` = {"channels": [{"channel_label",
"items"}], "number_of_channels"}. Its text is one line per turn, "speaker: text"; its cues
name the speaker ("speaker: " in SRT, a ``<v speaker>`` voice span in WebVTT) and may
overlap another speaker's (both talk at once).

Subtitles: one or more cues per segment, split at word boundaries so a cue has at most two
lines of ``MAX_LINE_CHARS`` characters, lasts at most ``MAX_CUE_SECONDS`` and spans no pause
longer than ``MAX_CUE_GAP_SECONDS``; a cue runs from its first word's start to its last
word's end (the CTC word times), so cues are ordered and never overlap.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from .errors import InvalidRequest
from .results import Segment, Transcript
from .words import Word

OutputFormat = Literal["json", "text", "srt", "vtt"]
FORMATS: Final[tuple[OutputFormat, ...]] = get_args(OutputFormat)
CONTENT_TYPES: Final[dict[OutputFormat, str]] = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
# File name extensions for results written to S3 or disk.
EXTENSIONS: Final[dict[OutputFormat, str]] = {
    "json": ".json",
    "text": ".txt",
    "srt": ".srt",
    "vtt": ".vtt",
}

MAX_LINE_CHARS: Final = 42
MAX_LINES: Final = 2
MAX_CUE_SECONDS: Final = 7.0
MAX_CUE_GAP_SECONDS: Final = 1.5
# Control characters and separators (line breaks would end a cue early) become spaces.
_BREAKING: Final = frozenset({"Cc", "Zs", "Zl", "Zp"})


class UnknownFormat(InvalidRequest):
    """An output format other than json, text, srt or vtt."""

    code = "invalid_format"


@dataclass(frozen=True)
class Rendered:
    body: str
    content_type: str


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None  # a call's turn (asr.channels)


def parse_format(name: str) -> OutputFormat:
    """``name`` as an output format (case-insensitive; "txt" means text), or UnknownFormat."""
    lowered = name.strip().lower()
    if lowered == "txt":
        lowered = "text"
    for candidate in FORMATS:
        if candidate == lowered:
            return candidate
    raise UnknownFormat(f"unknown output format {name[:40]!r}; use one of: {', '.join(FORMATS)}")


def render(transcript: Transcript, fmt: str) -> Rendered:
    output = parse_format(fmt)
    if output == "json":
        body = json.dumps(transcript_document(transcript), ensure_ascii=False)
    elif output == "text":
        body = plain_text(transcript)
    elif output == "srt":
        body = to_srt(subtitle_cues(transcript))
    else:
        body = to_vtt(subtitle_cues(transcript))
    return Rendered(body=body, content_type=CONTENT_TYPES[output])


def plain_text(transcript: Transcript) -> str:
    """The text: one line, or a call's turns one per line as "speaker: text"."""
    if transcript.channel_mode != "split":
        return transcript.text + "\n"
    return "".join(f"{s.speaker}: {_clean(s.text)}\n" for s in transcript.segments)


def transcript_document(transcript: Transcript) -> dict[str, Any]:
    """The JSON document: the established fields plus the Transcribe-style ``results``."""
    return {**transcript.to_dict(), "results": transcribe_results(transcript)}


def transcribe_results(transcript: Transcript) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    audio_segments: list[dict[str, Any]] = []
    for segment in speech_segments(transcript):
        ids: list[int] = []
        for word in segment.words:
            for item in _word_items(word):
                item["id"] = len(items)
                ids.append(item["id"])
                items.append(item)
        audio_segment: dict[str, Any] = {
            "id": len(audio_segments),
            "transcript": segment.text,
            "start_time": _seconds(segment.start),
            "end_time": _seconds(segment.end),
            "items": ids,
        }
        if segment.channel is not None:
            audio_segment["channel_label"] = channel_label(segment.channel)
        audio_segments.append(audio_segment)
    results: dict[str, Any] = {
        "transcripts": [{"transcript": transcript.text}],
        "items": items,
        "audio_segments": audio_segments,
    }
    if transcript.channel_mode == "split":
        results["channel_labels"] = {
            "channels": [
                {
                    "channel_label": channel_label(c.channel),
                    "items": [i for i in items if i["channel_label"] == channel_label(c.channel)],
                }
                for c in transcript.channels
            ],
            "number_of_channels": len(transcript.channels),
        }
    return results


def channel_label(channel: int) -> str:
    """Transcribe's name for a channel (speaker names are ours: ``speaker``)."""
    return f"ch_{channel}"


def _word_items(word: Word) -> list[dict[str, Any]]:
    items = _items(word)
    if word.channel is not None:
        for item in items:
            item["channel_label"] = channel_label(word.channel)
    return items


def _items(word: Word) -> list[dict[str, Any]]:
    content = _clean(word.text)
    spoken = content
    while spoken and unicodedata.category(spoken[-1]).startswith("P"):
        spoken = spoken[:-1]
    items: list[dict[str, Any]] = []
    if spoken:
        items.append(
            {
                "type": "pronunciation",
                "start_time": _seconds(word.start),
                "end_time": _seconds(word.end),
                "alternatives": [{"content": spoken, "confidence": f"{word.confidence:.4f}"}],
            }
        )
    if len(spoken) < len(content):
        punctuation = content[len(spoken) :]
        items.append(
            {"type": "punctuation", "alternatives": [{"content": punctuation, "confidence": "0.0"}]}
        )
    return items


def speech_segments(transcript: Transcript) -> tuple[Segment, ...]:
    """The transcript's segments; a transcript built without any is one segment of its words."""
    if transcript.segments or not transcript.text:
        return transcript.segments
    words = transcript.words
    start = words[0].start if words else 0.0
    end = words[-1].end if words else transcript.duration
    return (Segment(start=start, end=end, text=transcript.text, words=words),)


def subtitle_cues(transcript: Transcript) -> list[Cue]:
    """Cues in time order; one speaker's never overlap (another's may: cross-talk)."""
    cues: list[Cue] = []
    last_end: dict[str | None, float] = {}
    for segment in speech_segments(transcript):
        for group in _cue_words(_timed_words(segment)):
            start = max(group[0].start, last_end.get(segment.speaker, 0.0))
            end = max(group[-1].end, start + 0.002)  # ≥ 1 ms once rounded
            last_end[segment.speaker] = end
            lines = _lines([w.text for w in group])
            cues.append(Cue(start=start, end=end, lines=lines, speaker=segment.speaker))
    cues.sort(key=lambda c: c.start)
    return cues


def _timed_words(segment: Segment) -> list[Word]:
    """The segment's words with clean text; a segment without word times gets them spread
    over its span in proportion to each word's length."""
    if segment.words:
        cleaned = [Word(_clean(w.text), w.start, w.end, w.confidence) for w in segment.words]
        return [w for w in cleaned if w.text]
    texts = _clean(segment.text).split()
    total = sum(len(t) for t in texts)
    words, at = [], segment.start
    for text in texts:
        step = (segment.end - segment.start) * len(text) / total
        words.append(Word(text, at, at + step, 0.0))
        at += step
    return words


def _cue_words(words: Sequence[Word]) -> Iterator[list[Word]]:
    group: list[Word] = []
    for word in words:
        if group and not _fits(group, word):
            yield group
            group = []
        group.append(word)
    if group:
        yield group


def _fits(group: list[Word], word: Word) -> bool:
    if word.start - group[-1].end > MAX_CUE_GAP_SECONDS:
        return False
    if word.end - group[0].start > MAX_CUE_SECONDS:
        return False
    return _best_split([w.text for w in [*group, word]]) is not None


def _best_split(texts: Sequence[str]) -> tuple[str, ...] | None:
    """The words as one line, or as two lines as even as possible; None when they do not fit."""
    one = " ".join(texts)
    if len(one) <= MAX_LINE_CHARS:
        return (one,)
    best: tuple[str, ...] | None = None
    for cut in range(1, len(texts)):
        first, second = " ".join(texts[:cut]), " ".join(texts[cut:])
        widest = max(len(first), len(second))
        if widest <= MAX_LINE_CHARS and (best is None or widest < max(map(len, best))):
            best = (first, second)
    return best


def _lines(texts: Sequence[str]) -> tuple[str, ...]:
    # A single word longer than a line is its own cue, on one over-long line.
    return _best_split(texts) or (" ".join(texts),)


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{n}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n"
        + "\n".join(_named(c.lines, f"{_clean(c.speaker)}: " if c.speaker else ""))
        for n, c in enumerate(cues, start=1)
    ]
    return "".join(block + "\n\n" for block in blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n"
        + "\n".join(
            _named(
                [_vtt_escape(line) for line in c.lines],
                f"<v {_vtt_escape(_clean(c.speaker))}>" if c.speaker else "",
            )
        )
        for c in cues
    ]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def _named(lines: Sequence[str], prefix: str) -> list[str]:
    """The cue's lines, the first after ``prefix`` (its speaker)."""
    return [prefix + lines[0], *lines[1:]] if lines else []


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _timestamp(seconds: float, decimal_mark: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _clean(text: str) -> str:
    """One line of text: no line breaks or other control characters inside a cue."""
    kept = "".join(" " if unicodedata.category(c) in _BREAKING else c for c in text)
    return " ".join(kept.split())
