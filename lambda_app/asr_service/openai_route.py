"""``POST /v1/audio/transcriptions``: OpenAI's transcription API, so its clients work unchanged.

multipart/form-data fields, as OpenAI reads them:

- ``file`` (required): the audio, any format the service decodes.
- ``model`` (required, any value): there is one model per deployment, so "whisper-1", the
  bundle's model id or anything else selects it.
- ``response_format``: ``json`` (default) → ``{"text"}``; ``text``, ``srt``, ``vtt`` → the
  text itself (text/plain); ``verbose_json`` → ``{task, language, duration, text, segments,
  words}``.
- ``timestamp_granularities[]``: ``segment`` (the default) and/or ``word``; only with
  ``verbose_json``, as OpenAI insists. Segments appear when ``segment`` is asked for or
  nothing is, words when ``word`` is.
- ``language``: ISO-639-1; the model's language is accepted, another is refused (a model
  for one language cannot transcribe another).
- ``prompt``, ``temperature``: accepted and ignored (CTC has no prompt or sampling; the
  prompt is not read as hotwords); ``stream=true`` is refused.
- The service's decoding options, not OpenAI's: ``decoder``, ``beam_width``, ``lm``,
  ``alpha``, ``beta``, ``hotwords`` (``"иванов, сбербанк:3"``), ``hotword_boost``, as text
  fields read like ``POST /transcribe``'s (``asr.decoding``); ``channels`` ("split")
  and ``speakers`` (``"agent, client"``, ``asr.channels``). Other fields are ignored.

verbose_json segments carry Whisper's fields: ``tokens`` is empty, ``temperature`` 0,
``seek`` the segment start in centiseconds (Whisper's mel frames), ``avg_logprob`` the mean
log of the words' confidences, ``compression_ratio`` Whisper's zlib ratio of the text,
``no_speech_prob`` 0 (segments without speech are not emitted); ``text`` starts with a
space, as Whisper's segment texts do. Ours besides: ``channel``/``speaker`` (a split call)
and ``emotion`` (with an emotion bundle), each only where it applies.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the
service's stable code in ``code`` and the same statuses as ``POST /transcribe``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Callable
from typing import Any, Final

from asr import channels
from asr.channels import ChannelOptions, parse_channel_options
from asr.decoding import REQUEST_FIELDS, DecodingOptions, parse_options
from asr.errors import AsrError, AudioTooLong, InvalidRequest, PayloadTooLarge
from asr.formats import (
    CONTENT_TYPES,
    plain_text,
    speech_segments,
    subtitle_cues,
    to_srt,
    to_vtt,
)
from asr.results import Segment, Transcript
from asr.transcribe import Transcriber
from asr.words import Word
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from .budget import api_deadline, api_limits
from .multipart import FormPart, is_multipart_form, parse_form
from .observability import logger, record_error, record_transcription
from .settings import Settings

ROUTE: Final = "/v1/audio/transcriptions"
RESPONSE_FORMATS: Final = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES: Final = ("word", "segment")
# The language of every bundle this project exports (bundles do not record one yet).
MODEL_LANGUAGE: Final = ("ru", "russian")
MAX_FIELD_BYTES: Final = 4096
# 100 hotwords of up to 64 characters (2 bytes each in Cyrillic) with their boosts.
MAX_HOTWORDS_FIELD_BYTES: Final = 16_384
# The form field a decoding error is about, for the error's ``param``.
_DECODING_PARAMS: Final = {
    "invalid_hotwords": "hotwords",
    "hotword_not_in_vocabulary": "hotwords",
    "lm_not_available": "lm",
    "decoder_not_supported": "decoder",
    "invalid_channels": "channels",
    "audio_not_multichannel": "channels",
    "audio_too_many_channels": "channels",
}


class OpenAIRequestError(InvalidRequest):
    """A form field OpenAI's API would refuse; ``param`` names it."""

    def __init__(self, message: str, param: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class UnsupportedResponseFormat(OpenAIRequestError):
    code = "invalid_format"


class UnsupportedLanguage(OpenAIRequestError):
    code = "unsupported_language"


def register(
    app: ApiGatewayResolver,
    current_settings: Callable[[], Settings],
    transcriber: Callable[[], Transcriber],
) -> None:
    @app.post(ROUTE)
    def openai_transcriptions() -> Response[str]:
        request_id = app.lambda_context.aws_request_id
        try:
            return _transcriptions(app, current_settings(), transcriber, request_id)
        except AsrError as exc:
            return openai_error(exc, request_id)


def _transcriptions(
    app: ApiGatewayResolver,
    settings: Settings,
    transcriber: Callable[[], Transcriber],
    request_id: str,
) -> Response[str]:
    event = app.current_event
    deadline = api_deadline(app.lambda_context, settings)
    content_type = event.headers.get("content-type") or event.headers.get("Content-Type") or ""
    if not is_multipart_form(content_type):
        raise OpenAIRequestError(
            "send the request as multipart/form-data with a 'file' and a 'model' field",
            "file",
        )
    body = _body_bytes(event.body, bool(event.is_base64_encoded), settings)
    form = _fields(parse_form(body, content_type))
    audio = _single(form, "file")
    if audio is None:
        raise OpenAIRequestError("the 'file' field (the audio file) is required", "file")
    if _text(form, "model") is None:
        raise OpenAIRequestError(
            "the 'model' field is required (any value selects the model)", "model"
        )
    response_format = _text(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise UnsupportedResponseFormat(
            f"response_format {response_format[:40]!r} is not supported; use one of "
            + ", ".join(RESPONSE_FORMATS),
            "response_format",
        )
    granularities = _granularities(form)
    if granularities and response_format != "verbose_json":
        raise OpenAIRequestError(
            "response_format must be 'verbose_json' when timestamp_granularities[] is given",
            "timestamp_granularities",
        )
    language = _language(_text(form, "language"))
    _check_ignored_fields(form)
    decoding = _decoding(form)
    split = _channels(form, settings.channels)
    try:
        transcript = transcriber().transcribe(
            audio.data,
            limits=api_limits(settings),
            deadline=deadline,
            decoding=decoding,
            channels=split,
        )
    except AudioTooLong as exc:
        raise AudioTooLong(
            f"{exc.message}. Longer audio is transcribed through S3 (the input bucket)."
        ) from exc
    record_transcription(transcript.duration, transcript.timings.total)
    return _response(transcript, response_format, granularities, language, request_id)


def _response(
    transcript: Transcript,
    response_format: str,
    granularities: set[str],
    language: str,
    request_id: str,
) -> Response[str]:
    headers = {"x-request-id": request_id}
    text_type = CONTENT_TYPES["text"]
    if response_format == "text":
        return Response(200, text_type, plain_text(transcript), headers)
    if response_format == "srt":
        return Response(200, text_type, to_srt(subtitle_cues(transcript)), headers)
    if response_format == "vtt":
        return Response(200, text_type, to_vtt(subtitle_cues(transcript)), headers)
    document: dict[str, Any] = {"text": transcript.text}
    if response_format == "verbose_json":
        document = verbose_json(transcript, granularities or {"segment"}, language)
    body = json.dumps(document, ensure_ascii=False)
    return Response(200, CONTENT_TYPES["json"], body, headers)


def verbose_json(transcript: Transcript, granularities: set[str], language: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    segments = speech_segments(transcript)
    if "segment" in granularities:
        document["segments"] = [
            {
                "id": index,
                "seek": round(segment.start * 100),
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "text": " " + segment.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": _avg_logprob([w.confidence for w in segment.words]),
                "compression_ratio": _compression_ratio(segment.text),
                "no_speech_prob": 0.0,
                **_channel_fields(segment),
                **({"emotion": segment.emotion.to_dict()} if segment.emotion else {}),
            }
            for index, segment in enumerate(segments)
        ]
    if "word" in granularities:
        document["words"] = [
            {
                "word": word.text,
                "start": round(word.start, 3),
                "end": round(word.end, 3),
                **_channel_fields(word),
            }
            for segment in segments
            for word in segment.words
        ]
    return document


def openai_error(exc: AsrError, request_id: str | None) -> Response[str]:
    record_error(exc.code)
    logger.info(
        "request refused",
        extra={"status": exc.http_status, "code": exc.code, "error": exc.message},
    )
    error = {
        "message": exc.message,
        "type": "server_error" if exc.http_status >= 500 else "invalid_request_error",
        "param": getattr(exc, "param", None) or _DECODING_PARAMS.get(exc.code),
        "code": exc.code,
    }
    headers = {"x-request-id": request_id} if request_id else None
    return Response(exc.http_status, CONTENT_TYPES["json"], json.dumps({"error": error}), headers)


def _body_bytes(body: str | None, is_base64: bool, settings: Settings) -> bytes:
    if not body:
        raise OpenAIRequestError("the request has no body", "file", code="empty_body")
    if len(body) > settings.max_request_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(
            f"the request carries more than {settings.max_request_bytes:,} bytes, "
            "the synchronous limit"
        )
    if not is_base64:
        return body.encode("utf-8", errors="replace")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"the body is not valid base64: {exc}", code="invalid_base64") from exc


def _fields(parts: list[FormPart]) -> dict[str, list[FormPart]]:
    form: dict[str, list[FormPart]] = {}
    for part in parts:
        form.setdefault(part.name, []).append(part)
    return form


def _single(form: dict[str, list[FormPart]], name: str) -> FormPart | None:
    parts = form.get(name, [])
    if len(parts) > 1:
        raise OpenAIRequestError(f"the '{name}' field is given more than once", name)
    return parts[0] if parts else None


def _text(
    form: dict[str, list[FormPart]], name: str, max_bytes: int = MAX_FIELD_BYTES
) -> str | None:
    part = _single(form, name)
    if part is None:
        return None
    return part.text(max_bytes).strip() or None


def _decoding(form: dict[str, list[FormPart]]) -> DecodingOptions:
    """The decoding options among the form's fields (an empty field counts as absent)."""
    fields: dict[str, str] = {}
    for name in sorted(REQUEST_FIELDS):
        limit = MAX_HOTWORDS_FIELD_BYTES if name == "hotwords" else MAX_FIELD_BYTES
        value = _text(form, name, limit)
        if value is not None:
            fields[name] = value
    return parse_options(fields)


def _channels(form: dict[str, list[FormPart]], default: ChannelOptions) -> ChannelOptions:
    fields = {name: _text(form, name) for name in channels.REQUEST_FIELDS}
    return parse_channel_options(fields, default)


def _channel_fields(labelled: Segment | Word) -> dict[str, Any]:
    """A call's turn or word: its channel and speaker (not Whisper's; absent otherwise)."""
    if labelled.channel is None:
        return {}
    return {"channel": labelled.channel, "speaker": labelled.speaker}


def _granularities(form: dict[str, list[FormPart]]) -> set[str]:
    values = {
        part.text(MAX_FIELD_BYTES).strip()
        for name in ("timestamp_granularities[]", "timestamp_granularities")
        for part in form.get(name, [])
    }
    unknown = sorted(values - set(GRANULARITIES))
    if unknown:
        raise OpenAIRequestError(
            f"timestamp_granularities {unknown[0][:40]!r} is not one of 'word', 'segment'",
            "timestamp_granularities",
        )
    return values


def _language(requested: str | None) -> str:
    code, name = MODEL_LANGUAGE
    if requested is None:
        return name
    if len(requested) != 2 or not requested.isascii() or not requested.isalpha():
        raise OpenAIRequestError(
            f"language {requested[:40]!r} must be an ISO-639-1 code such as '{code}'", "language"
        )
    if requested.lower() != code:
        raise UnsupportedLanguage(
            f"this model transcribes '{code}' ({name}) only, not {requested!r}", "language"
        )
    return name


def _check_ignored_fields(form: dict[str, list[FormPart]]) -> None:
    temperature = _text(form, "temperature")
    if temperature is not None:
        try:
            valid = math.isfinite(float(temperature))
        except ValueError:
            valid = False
        if not valid:
            raise OpenAIRequestError("temperature must be a number", "temperature")
    if (_text(form, "stream") or "false").lower() != "false":
        raise OpenAIRequestError("streaming transcription is not supported", "stream")
    _text(form, "prompt")  # only bounded in size and checked to be text


def _avg_logprob(confidences: list[float]) -> float:
    if not confidences:
        return 0.0
    return round(sum(math.log(max(c, 1e-10)) for c in confidences) / len(confidences), 4)


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0
