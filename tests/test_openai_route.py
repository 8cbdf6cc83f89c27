"""``POST /v1/audio/transcriptions`` driven by the official ``openai`` client through the local
API Gateway emulator, with the demo bundle (its held-out clips have known transcripts); and
``POST /transcribe``'s output selection over the same emulator."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile as sf
import srt  # type: ignore[import-untyped]  # no stubs or py.typed
import webvtt
from asr.errors import stable_codes
from asr.formats import render
from asr.results import Transcript
from asr.transcribe import Transcriber
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from openai import OpenAI
from openai.types.audio import Transcription

from local.runtime import (
    Handler,
    LocalContext,
    LocalEnvironment,
    call_handler,
    handler_in_environment,
)
from local.server import ApiGatewayEmulator, serving_in_thread
from tests.conftest import DEMO

MANIFEST = DEMO / "audio" / "manifest.jsonl"
HTTP_TIMEOUT_S = 30


def demo_clips() -> list[tuple[Path, str, float]]:
    entries = [json.loads(line) for line in MANIFEST.read_text(encoding="utf-8").splitlines()]
    return [(DEMO / "audio" / e["audio_filepath"], e["text"], e["duration"]) for e in entries]


CLIPS = demo_clips()
CLIP, CLIP_TEXT, CLIP_DURATION = CLIPS[0]


@pytest.fixture(scope="module")
def demo_handler(demo_bundle: Path) -> Iterator[Handler]:
    with handler_in_environment(LocalEnvironment(model_dir=demo_bundle)) as handler:
        yield handler


@pytest.fixture(scope="module")
def server(demo_handler: Handler) -> Iterator[ApiGatewayEmulator]:
    emulator = ApiGatewayEmulator(0, lambda event: call_handler(demo_handler, event), log=False)
    with serving_in_thread(emulator):
        yield emulator


@pytest.fixture(scope="module")
def client(server: ApiGatewayEmulator) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as openai_client:
        yield openai_client


@pytest.mark.parametrize(("clip", "text", "duration"), CLIPS, ids=[c[0].name for c in CLIPS])
def test_json_is_the_text(client: OpenAI, clip: Path, text: str, duration: float) -> None:
    with clip.open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert isinstance(result, Transcription)
    assert result.model_dump(exclude_none=True) == {"text": text}


def test_text_srt_and_vtt_come_back_as_text(client: OpenAI) -> None:
    def create(fmt: Any) -> str:
        result = client.audio.transcriptions.create(
            model="demo-quartznet-ru", file=CLIP, response_format=fmt
        )
        assert isinstance(result, str)
        return result

    assert create("text") == CLIP_TEXT + "\n"
    (cue,) = srt.parse(create("srt"), ignore_errors=False)
    assert cue.index == 1 and cue.content == CLIP_TEXT
    assert 0 <= cue.start.total_seconds() < cue.end.total_seconds() <= CLIP_DURATION
    (caption,) = webvtt.from_buffer(io.StringIO(create("vtt")), strict=True).captions
    assert caption.text == CLIP_TEXT
    assert (caption.start, caption.end) == (
        f"00:00:{cue.start.total_seconds():06.3f}",
        f"00:00:{cue.end.total_seconds():06.3f}",
    )


def test_verbose_json_gives_segments_by_default(client: OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=CLIP, response_format="verbose_json", language="ru"
    )
    assert result.model_dump()["task"] == "transcribe"  # not a declared field of the client's
    assert (result.language, result.text) == ("russian", CLIP_TEXT)
    assert result.duration == pytest.approx(CLIP_DURATION, abs=0.002)
    assert result.words is None
    assert result.segments is not None
    (segment,) = result.segments
    assert segment.id == 0 and segment.text == " " + CLIP_TEXT
    assert 0 <= segment.start < segment.end <= result.duration
    assert segment.seek == round(segment.start * 100)
    assert (segment.tokens, segment.temperature, segment.no_speech_prob) == ([], 0.0, 0.0)
    assert -1.0 < segment.avg_logprob <= 0.0 and segment.compression_ratio > 0


@pytest.mark.parametrize(
    "granularities", [["word"], ["segment"], ["word", "segment"]], ids="+".join
)
def test_timestamp_granularities(
    client: OpenAI, demo_bundle: Path, granularities: list[Any]
) -> None:
    path, text, duration = CLIPS[1]
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=path,
        response_format="verbose_json",
        timestamp_granularities=granularities,
    )
    assert result.text == text
    assert (result.words is not None) == ("word" in granularities)
    assert (result.segments is not None) == ("segment" in granularities)
    if result.words is not None:
        assert [w.word for w in result.words] == text.split()
        expected = Transcriber.from_dir(demo_bundle).transcribe(path).words
        for word, reference in zip(result.words, expected, strict=True):
            assert (word.start, word.end) == (round(reference.start, 3), round(reference.end, 3))
        ends = [0.0] + [w.end for w in result.words]
        assert all(a <= w.start < w.end for a, w in zip(ends, result.words, strict=False))
        assert result.words[-1].end <= duration


def expect_error(error: openai.APIStatusError, status: int, code: str, param: str | None) -> None:
    assert error.status_code == status
    assert error.body == {
        "message": error.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }
    assert code in stable_codes()
    assert error.request_id  # the x-request-id header: the Lambda request id


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"response_format": "xml"}, "response_format", "invalid_format"),
        ({"response_format": "diarized_json"}, "response_format", "invalid_format"),
        ({"language": "en"}, "language", "unsupported_language"),
        ({"language": "russian"}, "language", "invalid_request"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities", "invalid_request"),
        (
            {"response_format": "verbose_json", "timestamp_granularities": ["char"]},
            "timestamp_granularities",
            "invalid_request",
        ),
        ({"temperature": float("nan")}, "temperature", "invalid_request"),
    ],
)
def test_bad_fields_are_400s_in_openais_shape(
    client: OpenAI, fields: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=CLIP, **fields)
    expect_error(refused.value, 400, code, param)


def test_ignored_fields_are_accepted(client: OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="anything", file=CLIP, prompt="ignored", temperature=0.7, language="RU"
    )
    assert result.text == CLIP_TEXT


@pytest.fixture
def decoders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``decoder`` of every transcript made (the OpenAI responses do not carry it)."""
    made: list[str] = []
    real_transcribe = Transcriber.transcribe

    def recording(self: Transcriber, *args: Any, **kwargs: Any) -> Transcript:
        transcript = real_transcribe(self, *args, **kwargs)
        made.append(transcript.decoder)
        return transcript

    monkeypatch.setattr(Transcriber, "transcribe", recording)
    return made


def test_decoding_form_fields_reach_the_transcript(client: OpenAI, decoders: list[str]) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=CLIP, extra_body={"hotwords": "включи, кухне:3"}
    )
    assert result.text == CLIP_TEXT and decoders == ["beam16+hotwords(2)"]
    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=CLIP,
        response_format="verbose_json",
        extra_body={"decoder": "beam", "beam_width": "8"},
    )
    assert verbose.text == CLIP_TEXT and decoders[-1] == "beam8"


def test_the_prompt_is_not_read_as_hotwords(client: OpenAI, decoders: list[str]) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=CLIP, prompt="Кухня, X")
    assert result.text == CLIP_TEXT and decoders == ["greedy"]


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"decoder": "foo"}, None, "invalid_decoding"),
        ({"beam_width": "0"}, None, "invalid_decoding"),
        ({"beam_width": "65"}, None, "invalid_decoding"),
        ({"beam_width": "x"}, None, "invalid_decoding"),
        ({"hotwords": "Кухне"}, "hotwords", "hotword_not_in_vocabulary"),
        ({"hotwords": "kitchen"}, "hotwords", "hotword_not_in_vocabulary"),
        ({"hotwords": ",".join(["да"] * 101)}, "hotwords", "invalid_hotwords"),
        ({"hotwords": "кухне, :3"}, "hotwords", "invalid_hotwords"),
        ({"hotwords": "кухне:0"}, "hotwords", "invalid_hotwords"),
        ({"lm": "true"}, "lm", "lm_not_available"),
        ({"hotwords": "кухне", "decoder": "greedy"}, "hotwords", "invalid_hotwords"),
    ],
)
def test_bad_decoding_fields_are_400s_in_openais_shape(
    client: OpenAI, fields: dict[str, str], param: str | None, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=CLIP, extra_body=fields)
    expect_error(refused.value, 400, code, param)


@pytest.mark.parametrize(
    ("body", "param"),
    [({"model": "whisper-1"}, "file"), ({"file": "clip"}, "model"), ({}, "file")],
)
def test_missing_fields_are_400s(client: OpenAI, body: dict[str, Any], param: str) -> None:
    files = [("file", ("clip.wav", CLIP.read_bytes(), "audio/wav"))] if "file" in body else []
    with pytest.raises(openai.BadRequestError) as refused:
        client.post(
            "/audio/transcriptions",
            cast_to=Transcription,
            body={k: v for k, v in body.items() if k != "file"},
            files=files,
            options={"headers": {"Content-Type": "multipart/form-data"}},
        )
    expect_error(refused.value, 400, "invalid_request", param)


def test_audio_errors_keep_their_status_and_code(client: OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"not audio"))
    expect_error(refused.value, 422, "audio_undecodable", None)


def test_audio_over_the_synchronous_limit_is_a_413(client: OpenAI) -> None:
    silence = io.BytesIO()
    sf.write(silence, np.zeros(61 * 8000, dtype=np.int16), 8000, format="WAV")
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=("long.wav", silence.getvalue()))
    expect_error(refused.value, 413, "audio_too_long", None)
    assert "S3" in refused.value.message


def test_the_request_id_header(client: OpenAI) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=CLIP)
    assert raw.headers["x-request-id"] and raw.parse().text == CLIP_TEXT


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_a_body_that_is_not_a_form_is_refused(server: ApiGatewayEmulator) -> None:
    url = f"{server.url}/v1/audio/transcriptions"
    status, _, body = post(url, CLIP.read_bytes(), {"Content-Type": "audio/wav"})
    assert status == 400 and json.loads(body)["error"]["param"] == "file"
    broken = {"Content-Type": "multipart/form-data; boundary=abc"}
    status, _, body = post(url, b"--abc\r\nno headers here", broken)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_multipart"


def test_rest_api_events_reach_the_route(demo_handler: Handler) -> None:
    """REST API (payload 1.0, binary media types */*): the same form, base64-encoded."""
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nsrt\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + CLIP.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    event = {
        "resource": "/{proxy+}",
        "path": "/v1/audio/transcriptions",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "stage": "prod",
            "requestId": "rest-1",
        },
        "body": base64.b64encode(form).decode(),
        "isBase64Encoded": True,
    }
    response = demo_handler(event, LocalContext())
    assert response["statusCode"] == 200, response
    (cue,) = srt.parse(response["body"], ignore_errors=False)
    assert cue.content == CLIP_TEXT


FIELD_NAMES = st.sampled_from(
    ["response_format", "language", "prompt", "temperature", "stream",
     "timestamp_granularities[]", "other", "file", "model", "decoder", "beam_width",
     "hotwords"]
)  # fmt: skip
FIELD_VALUES = st.one_of(
    st.sampled_from(
        [
            "json",
            "verbose_json",
            "srt",
            "word",
            "segment",
            "ru",
            "en",
            "1",
            "true",
            "beam",
            "свет:2",
        ]
    ),
    st.binary(max_size=64),
    st.just(CLIP.read_bytes()[:2000]),
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=6), st.booleans())
def test_any_form_gets_a_4xx_or_a_200_never_a_5xx(
    demo_handler: Handler, fields: dict[str, bytes | str], with_file: bool
) -> None:
    """Fields and values drawn at random, with or without a real clip and a model."""
    if with_file:
        fields = {**fields, "model": "whisper-1", "file": CLIP.read_bytes()}
    parts = [(name, v.encode() if isinstance(v, str) else v) for name, v in fields.items()]
    boundary = "fuzz-boundary-7f3a"
    form = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
            for name, value in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    event = {
        "version": "2.0",
        "routeKey": "POST /v1/audio/transcriptions",
        "rawPath": "/v1/audio/transcriptions",
        "rawQueryString": "",
        "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
        "requestContext": {
            "http": {"method": "POST", "path": "/v1/audio/transcriptions", "sourceIp": "1.2.3.4"},
            "requestId": "fuzz",
            "stage": "$default",
        },
        "body": base64.b64encode(form).decode(),
        "isBase64Encoded": True,
    }
    response = call_handler(demo_handler, event)
    status = response["statusCode"]
    assert status == 200 or 400 <= status < 500, response
    if status == 200:
        event_note("200")
        return
    error = json.loads(response["body"])["error"]
    event_note(f"{status} {error['code']} {error['param']}")
    assert error["type"] == "invalid_request_error" and error["code"] in stable_codes()


# POST /transcribe: ?format= or the Accept header selects the output.


@pytest.mark.parametrize(
    ("query", "accept", "content_type"),
    [
        ("?format=srt", None, "application/x-subrip; charset=utf-8"),
        ("?format=vtt", "application/json", "text/vtt; charset=utf-8"),
        ("?format=text", None, "text/plain; charset=utf-8"),
        ("", "text/vtt", "text/vtt; charset=utf-8"),
        ("", "text/plain", "text/plain; charset=utf-8"),
        ("", None, "application/json"),
    ],
)
def test_transcribe_renders_the_requested_format(
    server: ApiGatewayEmulator,
    demo_bundle: Path,
    query: str,
    accept: str | None,
    content_type: str,
) -> None:
    headers = {"Content-Type": "audio/wav", **({"Accept": accept} if accept else {})}
    status, response_headers, body = post(
        f"{server.url}/transcribe{query}", CLIP.read_bytes(), headers
    )
    assert status == 200, body
    assert response_headers.get("content-type") == content_type
    expected = Transcriber.from_dir(demo_bundle).transcribe(CLIP)
    fmt = {"application/x-subrip": "srt", "text/vtt": "vtt", "text/plain": "text"}.get(
        content_type.split(";", maxsplit=1)[0], "json"
    )
    if fmt == "json":
        document = json.loads(body)
        assert document["text"] == CLIP_TEXT and document["request_id"]
        assert document["results"]["transcripts"] == [{"transcript": CLIP_TEXT}]
        assert document["words"] == json.loads(json.dumps(expected.to_dict()))["words"]
    else:
        assert body.decode("utf-8") == render(expected, fmt).body
        assert response_headers.get("x-request-id")


def test_transcribe_refuses_an_unknown_format_before_decoding(server: ApiGatewayEmulator) -> None:
    status, _, body = post(
        f"{server.url}/transcribe?format=docx", b"not even audio", {"Content-Type": "audio/wav"}
    )
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_format"
