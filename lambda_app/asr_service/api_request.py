"""Turn a ``POST /transcribe`` request into audio bytes, decoding and channel options.

Accepted bodies: JSON ``{"audio": "<base64>"}``, JSON ``{"s3": {"bucket", "key"}}``, or
the raw audio itself (any non-JSON content type; API Gateway base64-encodes binary).

Decoding options (``asr.decoding.REQUEST_FIELDS``: ``decoder``, ``beam_width``, ``hotwords``,
…) sit next to ``audio``/``s3`` in a JSON body, and are query parameters with a raw body
(``?decoder=beam&hotwords=иванов,сбербанк:3``); so do ``channels``/``speakers``
(``asr.channels``: ``?channels=split&speakers=agent,client``), whose default is the
deployment's (``Settings.channels``). A JSON body's other keys are ignored, as before;
these query parameters with a JSON body are refused (they belong in the body).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from asr import channels
from asr.channels import ChannelOptions, parse_channel_options
from asr.decoding import REQUEST_FIELDS, DecodingOptions, parse_options
from asr.errors import InvalidRequest, PayloadTooLarge, S3RefNotAllowed

from .s3_objects import read_object
from .settings import Settings

JSON_TYPES = ("application/json", "text/json")
# Bucket names S3 has ever allowed (legacy us-east-1 names included): what botocore accepts.
_BUCKET_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,255}")
_MAX_KEY_BYTES: Final = 1024
OPTION_FIELDS: Final = REQUEST_FIELDS | channels.REQUEST_FIELDS


@dataclass(frozen=True)
class TranscribeRequest:
    audio: bytes
    decoding: DecodingOptions
    channels: ChannelOptions


def transcribe_request(
    body: str | None,
    is_base64: bool,
    content_type: str,
    query: Mapping[str, str] | None,
    settings: Settings,
) -> TranscribeRequest:
    """The audio and options of a request; ``query``: its query parameters."""
    query_fields = {name: value for name, value in (query or {}).items() if name in OPTION_FIELDS}
    raw, document = _read_body(body, is_base64, content_type, settings)
    if document is None:
        return TranscribeRequest(
            raw, parse_options(query_fields), parse_channel_options(query_fields, settings.channels)
        )
    if query_fields:
        raise InvalidRequest(
            f"with a JSON body, give {', '.join(sorted(query_fields))} in the body, "
            "not as query parameters",
            code="invalid_request",
        )
    # The options before the audio: a bad one costs no S3 read.
    decoding = parse_options(document)
    split = parse_channel_options(document, settings.channels)
    return TranscribeRequest(_audio_of(document, settings), decoding, split)


def audio_request(
    body: str | None, is_base64: bool, content_type: str, settings: Settings
) -> bytes:
    """The audio of a request that takes no options (``POST /emotion``), in the same bodies."""
    raw, document = _read_body(body, is_base64, content_type, settings)
    return raw if document is None else _audio_of(document, settings)


def _read_body(
    body: str | None, is_base64: bool, content_type: str, settings: Settings
) -> tuple[bytes, dict[str, Any] | None]:
    """The raw audio and None, or the body and its JSON object (``audio`` xor ``s3``)."""
    if not body:
        raise InvalidRequest(
            "the request has no body: send audio or a JSON object", code="empty_body"
        )
    if len(body) > settings.max_request_bytes * 4 // 3 + 4:
        raise _too_large(len(body), settings)
    raw = _b64decode(body, "request body") if is_base64 else body.encode("utf-8")
    if content_type.split(";", maxsplit=1)[0].strip().lower() not in JSON_TYPES and raw[:1] != b"{":
        if len(raw) > settings.max_request_bytes:
            raise _too_large(len(raw), settings)
        return raw, None
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("the JSON body must be an object", code="invalid_json")
    if ("audio" in document) == ("s3" in document):
        raise InvalidRequest(
            'the JSON body needs exactly one of "audio" (base64) or "s3" ({"bucket", "key"})',
            code="invalid_request",
        )
    return raw, document


def _audio_of(document: dict[str, Any], settings: Settings) -> bytes:
    if "audio" not in document:
        return _audio_from_s3_ref(document["s3"], settings)
    encoded = document["audio"]
    if not isinstance(encoded, str):
        raise InvalidRequest('"audio" must be a base64 string', code="invalid_base64")
    audio = _b64decode(encoded, '"audio"')
    if len(audio) > settings.max_request_bytes:
        raise _too_large(len(audio), settings)
    return audio


def _audio_from_s3_ref(ref: Any, settings: Settings) -> bytes:
    if not isinstance(ref, dict) or not all(
        isinstance(ref.get(field), str) and ref.get(field) for field in ("bucket", "key")
    ):
        raise InvalidRequest('"s3" must be {"bucket": "...", "key": "..."}', code="invalid_s3_ref")
    bucket, key = ref["bucket"], ref["key"]
    # Refused here rather than by botocore, whose validation errors are not S3 answers.
    if not _BUCKET_NAME.fullmatch(bucket):
        raise InvalidRequest('"s3.bucket" is not a valid bucket name', code="invalid_s3_ref")
    try:
        key_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        key_bytes = 0
    if not 0 < key_bytes <= _MAX_KEY_BYTES:
        raise InvalidRequest(
            f'"s3.key" must be 1-{_MAX_KEY_BYTES} bytes of UTF-8', code="invalid_s3_ref"
        )
    if settings.input_bucket is not None and (
        bucket != settings.input_bucket or not key.startswith(settings.input_prefix)
    ):
        raise S3RefNotAllowed(
            f"this API reads only s3://{settings.input_bucket}/{settings.input_prefix}…: "
            "upload the audio there"
        )
    return read_object(bucket, key, max_bytes=settings.max_s3_object_bytes).data


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{what} is not valid base64: {exc}", code="invalid_base64") from exc


def _too_large(size: int, settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request carries {size:,} bytes; the synchronous limit is "
        f"{settings.max_request_bytes:,} bytes. Upload large audio to the input bucket "
        "(S3) instead and read the transcript from the output bucket."
    )
