"""Output formats: JSON (with the Transcribe-style block), text, SRT and WebVTT read back by
real parsers (``srt``, ``webvtt-py``), on synthetic transcripts and on the demo model's."""

from __future__ import annotations

import html
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import srt  # type: ignore[import-untyped]  # no stubs or py.typed
import webvtt
from asr.errors import InvalidRequest, stable_codes
from asr.formats import (
    EXTENSIONS,
    FORMATS,
    MAX_CUE_GAP_SECONDS,
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    MAX_LINES,
    UnknownFormat,
    parse_format,
    render,
    subtitle_cues,
)
from asr.results import Segment, Transcript
from asr.transcribe import Transcriber
from asr.words import Word
from asr_service.output_selection import format_from_accept, requested_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DEMO

TIMESTAMP = re.compile(r"(\d{2,}):(\d{2}):(\d{2})\.(\d{3})")


def transcript_of(segments: list[Segment], duration: float | None = None) -> Transcript:
    words = tuple(w for s in segments for w in s.words)
    return Transcript(
        text=" ".join(s.text for s in segments),
        words=words,
        duration=duration if duration is not None else (segments[-1].end if segments else 1.0),
        model_id="test",
        segments=tuple(segments),
    )


def segment_of(words: list[tuple[str, float, float]], confidence: float = 0.9) -> Segment:
    timed = tuple(Word(text, start, end, confidence) for text, start, end in words)
    return Segment(timed[0].start, timed[-1].end, " ".join(w.text for w in timed), timed)


def evenly_spoken(text: str, start: float, word_s: float = 0.4, gap_s: float = 0.1) -> Segment:
    words, at = [], start
    for token in text.split():
        words.append((token, at, at + word_s))
        at += word_s + gap_s
    return segment_of(words)


def vtt_seconds(stamp: str) -> float:
    match = TIMESTAMP.fullmatch(stamp)
    assert match, stamp
    hours, minutes, seconds, millis = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def srt_cues(body: str) -> list[tuple[float, float, str]]:
    cues = list(srt.parse(body, ignore_errors=False))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    return [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues]


def vtt_cues(body: str) -> list[tuple[float, float, str]]:
    assert body.startswith("WEBVTT\n\n")
    captions = webvtt.from_buffer(io.StringIO(body), strict=True).captions
    return [(vtt_seconds(c.start), vtt_seconds(c.end), html.unescape(c.text)) for c in captions]


def check_cues(cues: list[tuple[float, float, str]], transcript: Transcript) -> None:
    """Ordered, non-overlapping, readable cues whose times are their words' times (to 1 ms)
    and whose words, in order, are the transcript's."""
    words = [w for w in transcript.words if w.text.strip()]
    taken = 0
    previous_end = 0.0
    for start, end, text in cues:
        assert previous_end <= start < end, (previous_end, start, end)
        previous_end = end
        lines = text.split("\n")
        assert 1 <= len(lines) <= MAX_LINES
        cue_words = text.split()
        if len(cue_words) > 1:
            assert all(len(line) <= MAX_LINE_CHARS for line in lines), lines
        mine = words[taken : taken + len(cue_words)]
        assert [w.text for w in mine] == cue_words
        assert start == pytest.approx(mine[0].start, abs=0.0015)
        assert end == pytest.approx(mine[-1].end, abs=0.0015)
        assert end - start <= MAX_CUE_SECONDS + 0.002 or len(cue_words) == 1
        gaps = [b.start - a.end for a, b in itertools.pairwise(mine)]
        assert all(gap <= MAX_CUE_GAP_SECONDS for gap in gaps)
        taken += len(cue_words)
    assert taken == len(words)


LONG = (
    "сегодня мы поговорим о том как устроено распознавание речи на серверах без видеокарт "
    "и почему короткие модели работают быстрее чем длинные когда звук приходит по частям"
)


@pytest.fixture
def two_segments() -> Transcript:
    first = evenly_spoken(LONG, start=0.32)
    second = evenly_spoken("а это второй кусок a&b <тег> с символами", start=first.end + 3.0)
    return transcript_of([first, second], duration=second.end + 0.5)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_long_segments_become_readable_cues(two_segments: Transcript, fmt: str) -> None:
    rendered = render(two_segments, fmt)
    cues = srt_cues(rendered.body) if fmt == "srt" else vtt_cues(rendered.body)
    check_cues(cues, two_segments)
    assert len(cues) >= 4  # 29 words of 0.5 s: no 7 s cue or 2×42 characters holds them all
    assert " ".join(text.replace("\n", " ") for *_, text in cues) == two_segments.text
    # No cue spans the 3 s pause between the segments.
    first_end = two_segments.segments[0].end
    assert all(end <= first_end or start >= first_end for start, end, _ in cues)


def test_timestamps_are_spelled_as_each_format_requires() -> None:
    late = segment_of([("поздно", 3723.0451, 3724.4996)])
    transcript = transcript_of([late])
    assert "01:02:03,045 --> 01:02:04,500\nпоздно\n" in render(transcript, "srt").body
    assert render(transcript, "vtt").body == "WEBVTT\n\n01:02:03.045 --> 01:02:04.500\nпоздно\n\n"


def test_vtt_escapes_markup_and_srt_keeps_it() -> None:
    transcript = transcript_of([segment_of([("a&b", 0.0, 0.5), ("<i>x</i>", 0.5, 1.0)])])
    vtt = render(transcript, "vtt").body
    assert "a&amp;b &lt;i&gt;x&lt;/i&gt;" in vtt and "<" not in vtt
    assert vtt_cues(vtt)[0][2] == "a&b <i>x</i>"
    assert "a&b <i>x</i>" in render(transcript, "srt").body


def test_line_breaks_inside_words_never_end_a_cue() -> None:
    transcript = transcript_of([segment_of([("раз\nдва", 0.0, 0.5), ("три\r\n\r\n", 0.6, 0.9)])])
    for fmt, parse in (("srt", srt_cues), ("vtt", vtt_cues)):
        assert [text for *_, text in parse(render(transcript, fmt).body)] == ["раз два три"]


def test_a_word_longer_than_a_line_is_a_cue_of_its_own() -> None:
    giant = "а" * (MAX_LINE_CHARS + 8)
    transcript = transcript_of(
        [segment_of([("до", 0.0, 0.2), (giant, 0.3, 1.0), ("после", 1.1, 1.4)])]
    )
    assert [text for *_, text in srt_cues(render(transcript, "srt").body)] == ["до", giant, "после"]


NUMBERS = ("один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять")


def test_two_lines_are_balanced() -> None:
    words = [(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(NUMBERS)]
    (cue,) = subtitle_cues(transcript_of([segment_of(words)]))
    assert len(cue.lines) == 2 and abs(len(cue.lines[0]) - len(cue.lines[1])) <= 8, cue.lines


def test_no_speech_gives_empty_but_valid_subtitles() -> None:
    silent = Transcript(text="", words=(), duration=2.0, model_id="test")
    assert srt_cues(render(silent, "srt").body) == []
    assert vtt_cues(render(silent, "vtt").body) == []
    assert render(silent, "text").body == "\n"
    assert json.loads(render(silent, "json").body)["results"]["items"] == []


def test_a_transcript_without_segments_is_one_segment_of_its_words() -> None:
    words = (Word("без", 0.1, 0.3, 0.8), Word("сегментов", 0.4, 0.9, 0.7))
    transcript = Transcript(text="без сегментов", words=words, duration=1.0, model_id="test")
    assert [c[2] for c in srt_cues(render(transcript, "srt").body)] == ["без сегментов"]
    segments = json.loads(render(transcript, "json").body)["results"]["audio_segments"]
    assert segments == [
        {
            "id": 0,
            "transcript": "без сегментов",
            "start_time": "0.100",
            "end_time": "0.900",
            "items": [0, 1],
        }
    ]


def test_json_keeps_the_old_fields_and_adds_transcribe_results(two_segments: Transcript) -> None:
    rendered = render(two_segments, "json")
    assert rendered.content_type == "application/json"
    document = json.loads(rendered.body)
    results = document.pop("results")
    assert document == json.loads(json.dumps(two_segments.to_dict()))
    assert results["transcripts"] == [{"transcript": two_segments.text}]
    items = results["items"]
    assert [i["id"] for i in items] == list(range(len(items)))
    assert all(i["type"] == "pronunciation" for i in items)
    assert [i["alternatives"][0]["content"] for i in items] == [w.text for w in two_segments.words]
    for item, word in zip(items, two_segments.words, strict=True):
        assert isinstance(item["start_time"], str) and isinstance(item["end_time"], str)
        assert float(item["start_time"]) == pytest.approx(word.start, abs=5e-4)
        assert float(item["end_time"]) == pytest.approx(word.end, abs=5e-4)
        assert float(item["alternatives"][0]["confidence"]) == pytest.approx(word.confidence)
    first, second = results["audio_segments"]
    assert first["transcript"] == two_segments.segments[0].text
    assert first["items"] + second["items"] == list(range(len(items)))
    assert float(second["start_time"]) == pytest.approx(two_segments.segments[1].start, abs=5e-4)


def test_trailing_punctuation_becomes_a_punctuation_item() -> None:
    segment = segment_of([("Привет,", 0.0, 0.4), ("мир!", 0.5, 0.8), ("—", 0.9, 1.0)])
    items = json.loads(render(transcript_of([segment]), "json").body)["results"]["items"]
    shape = [(i["type"], i["alternatives"][0]["content"], "start_time" in i) for i in items]
    assert shape == [
        ("pronunciation", "Привет", True),
        ("punctuation", ",", False),
        ("pronunciation", "мир", True),
        ("punctuation", "!", False),
        ("punctuation", "—", False),
    ]
    assert json.loads(render(transcript_of([segment]), "json").body)["results"]["audio_segments"][
        0
    ]["items"] == [0, 1, 2, 3, 4]


def test_text_and_content_types() -> None:
    transcript = transcript_of([segment_of([("да", 0.0, 0.3)])])
    assert render(transcript, "text").body == "да\n"
    assert {f: render(transcript, f).content_type for f in FORMATS} == {
        "json": "application/json",
        "text": "text/plain; charset=utf-8",
        "srt": "application/x-subrip; charset=utf-8",
        "vtt": "text/vtt; charset=utf-8",
    }
    assert EXTENSIONS == {"json": ".json", "text": ".txt", "srt": ".srt", "vtt": ".vtt"}


def test_format_names_and_refusals() -> None:
    assert [parse_format(n) for n in ("JSON", " srt ", "txt", "Vtt", "text")] == [
        "json", "srt", "text", "vtt", "text",
    ]  # fmt: skip
    with pytest.raises(UnknownFormat) as refused:
        parse_format("docx")
    assert isinstance(refused.value, InvalidRequest) and refused.value.http_status == 400
    assert refused.value.code == "invalid_format" and "invalid_format" in stable_codes()


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        (None, None, "json"),
        (None, "*/*", "json"),
        (None, "text/html,application/xhtml+xml,*/*;q=0.8", "json"),
        (None, "text/vtt", "vtt"),
        (None, "application/x-subrip", "srt"),
        (None, "text/srt;q=0.5, text/plain", "text"),
        (None, "application/json, text/plain, */*", "json"),
        (None, "text/plain;q=0, text/vtt;q=0.1", "vtt"),
        (None, "text/plain;q=0", "json"),
        (None, "text/plain;q=nan", "json"),
        ({"format": "srt"}, "text/vtt", "srt"),
        ({"other": "1"}, "text/plain", "text"),
    ],
)
def test_requested_format(query: dict[str, str] | None, accept: str | None, expected: str) -> None:
    assert requested_format(query, accept) == expected


def test_an_unknown_format_parameter_is_refused_and_accept_never_is() -> None:
    with pytest.raises(UnknownFormat):
        requested_format({"format": "pdf"}, None)
    assert format_from_accept("application/pdf") == "json"


WORDS = st.text(
    alphabet=st.sampled_from(list("абвгдежзиклмнопрстуфхцчшщыэюя&<>-,.!?")), min_size=1, max_size=20
)


@st.composite
def spoken_transcripts(draw: Any) -> Transcript:
    segments, at = [], draw(st.floats(0.0, 5.0))
    for _ in range(draw(st.integers(0, 4))):
        words = []
        for text in draw(st.lists(WORDS, min_size=1, max_size=40)):
            at += draw(st.sampled_from([0.0, 0.02, 0.3, 2.0]))
            length = draw(st.sampled_from([0.02, 0.2, 0.6, 8.0]))
            words.append((text, at, at + length))
            at += length
        segments.append(segment_of(words))
        at += draw(st.floats(0.0, 5.0))
    return transcript_of(segments, duration=at + 0.1)


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(spoken_transcripts())
def test_any_transcript_gives_subtitles_the_parsers_accept(transcript: Transcript) -> None:
    check_cues(srt_cues(render(transcript, "srt").body), transcript)
    check_cues(vtt_cues(render(transcript, "vtt").body), transcript)


@pytest.fixture(scope="module")
def demo_transcriber() -> Transcriber:
    return Transcriber.from_dir(DEMO / "bundle")


def demo_manifest() -> list[tuple[Path, str]]:
    lines = (DEMO / "audio" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [(DEMO / "audio" / e["audio_filepath"], e["text"]) for e in map(json.loads, lines)]


def test_the_demo_models_transcripts_as_subtitles(demo_transcriber: Transcriber) -> None:
    """Each held-out clip transcribed, then laid end to end 2 s apart as segments (as
    segmentation of a long recording does): real CTC word times through both formats."""
    segments, texts, offset = [], [], 0.0
    for path, text in demo_manifest():
        clip = demo_transcriber.transcribe(path)
        assert clip.text == text
        words = tuple(
            Word(w.text, w.start + offset, w.end + offset, w.confidence) for w in clip.words
        )
        segments.append(Segment(offset, offset + clip.duration, clip.text, words))
        texts.append(text)
        offset += clip.duration + 2.0
    transcript = transcript_of(segments, duration=offset)
    srt_body, vtt_body = render(transcript, "srt").body, render(transcript, "vtt").body
    for cues in (srt_cues(srt_body), vtt_cues(vtt_body)):
        check_cues(cues, transcript)
        assert " ".join(t.replace("\n", " ") for *_, t in cues) == transcript.text
    # Each phrase is its own cue: the pauses between them are never bridged.
    assert [t.replace("\n", " ") for *_, t in srt_cues(srt_body)] == texts
