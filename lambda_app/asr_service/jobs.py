"""Async jobs for audio beyond the synchronous limits: ``POST /jobs`` and ``GET /jobs/{id}``.

``POST /jobs`` (optional JSON body ``{"filename", "content_type", "format", "language"}``)
answers 201 with the job id and a presigned S3 POST form for the job's upload key,
``<input prefix>jobs/<job id>/<file name>`` of the input bucket. The client sends
multipart/form-data to ``upload.url``: every field of ``upload.fields``, then the audio as
the last field, named ``file``. S3 enforces the signed policy: that key only, 1 byte to
``MAX_S3_OBJECT_BYTES`` (``content-length-range``), the content type if one was named,
until ``expires_in`` seconds have passed. A PUT URL could not cap the size.

A job's body may also carry the decoding options of ``POST /transcribe`` (``decoder``,
``beam_width``, ``lm``, ``alpha``, ``beta``, ``hotwords``, ``hotword_boost``): checked
against the model when the job is created, kept in its record, applied to its upload;
and ``channels``/``speakers`` (``asr.channels``), kept likewise.

The upload then takes the ordinary S3 path (S3 → SQS → this function), which transcribes it
to ``<output prefix><key>.json`` and moves the job to running, done or failed
(job_tracking). ``GET /jobs/{id}`` reports the state: ``awaiting_upload``, ``queued`` (the
upload is in the bucket), ``running``, ``done`` — the transcript inline when the result is
small, and presigned URLs of the JSON result and of the requested format's file — or
``failed`` with the error's stable code and message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import boto3
from asr import channels
from asr.decoding import REQUEST_FIELDS, DecodingOptions, parse_options
from asr.errors import AsrError, InvalidRequest, PayloadTooLarge
from asr.formats import OutputFormat, parse_format
from asr.transcribe import Transcriber
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from botocore.config import Config
from botocore.exceptions import ClientError

from .job_store import (
    AWAITING_UPLOAD,
    DONE,
    FAILED,
    Job,
    JobStore,
    is_job_id,
    new_job_id,
    now_iso,
    upload_key_for,
)
from .s3_objects import MISSING_CODES, s3_client
from .settings import Settings

JOBS_ROUTE: Final = "/jobs"
MAX_BODY_BYTES: Final = 16_384
MAX_FILENAME_CHARS: Final = 100
DEFAULT_FILENAME: Final = "audio"
# An upload that started just before its form expired may still be arriving; after this
# grace an absent upload fails the job (a late one still revives it).
UPLOAD_GRACE_SECONDS: Final = 900
_FIELDS: Final = (
    frozenset({"filename", "content_type", "format", "language"})
    | REQUEST_FIELDS
    | channels.REQUEST_FIELDS
)
_CONTENT_TYPE: Final = re.compile(r"[A-Za-z0-9][\w.+-]{0,63}/[A-Za-z0-9][\w.+-]{0,63}")
_LANGUAGE: Final = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "asr"), child=True)


class InvalidJobRequest(InvalidRequest):
    """A ``POST /jobs`` body field has the wrong type or value, or is unknown."""

    code = "invalid_job_request"


class JobNotFound(AsrError):
    """No job has this id (never created, or its record expired)."""

    code = "job_not_found"
    http_status = 404


class JobsUnavailable(AsrError):
    """This deployment has no jobs table or input bucket configured."""

    code = "jobs_unavailable"
    http_status = 503


@dataclass(frozen=True)
class JobRequest:
    filename: str
    content_type: str | None
    output_format: OutputFormat
    language: str | None
    # The decoding fields as sent (JSON values), kept with the job for its transcription.
    decoding: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, Any] = field(default_factory=dict)  # channels/speakers, likewise

    @property
    def decoding_options(self) -> DecodingOptions:
        return parse_options(self.decoding)

    @classmethod
    def parse(cls, body: str | None) -> JobRequest:
        document = _json_object(body)
        unknown = sorted(set(document) - _FIELDS)
        if unknown:
            raise InvalidJobRequest(
                f"unknown field(s) {', '.join(unknown)[:200]}; "
                f"accepted: {', '.join(sorted(_FIELDS))}"
            )
        filename = _optional_str(document, "filename", 1024)
        content_type = _optional_str(document, "content_type", 128)
        if content_type is not None and not _CONTENT_TYPE.fullmatch(content_type):
            raise InvalidJobRequest('"content_type" must be a media type such as audio/wav')
        language = _optional_str(document, "language", 35)
        if language is not None and not _LANGUAGE.fullmatch(language):
            raise InvalidJobRequest('"language" must be a language tag such as ru or en-US')
        output_format = parse_format(_optional_str(document, "format", 16) or "json")
        decoding = _present(document, REQUEST_FIELDS)
        parse_options(decoding)  # refuses what asr.decoding would, with its codes
        split = _present(document, channels.REQUEST_FIELDS)
        channels.parse_channel_options(split)
        return cls(safe_filename(filename), content_type, output_format, language, decoding, split)


def _present(document: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {name: document[name] for name in sorted(names) if document.get(name) is not None}


def safe_filename(name: str | None) -> str:
    """The last path component, reduced to ASCII letters, digits, ``.``, ``_`` and ``-``:
    the name is data in the key, never a path (no ``..``, no slashes, no hidden files)."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    stem, dot, extension = base.rpartition(".")
    if not dot:
        stem, extension = base, ""
    stem = _UNSAFE.sub("_", stem).strip("._-")
    extension = re.sub(r"[^A-Za-z0-9]", "", extension)[:10]
    stem = (stem or DEFAULT_FILENAME)[: MAX_FILENAME_CHARS - len(extension) - 1]
    return f"{stem}.{extension}" if extension else stem


@cache
def presign_client() -> Any:
    """SigV4 (the default client presigns with SigV2) on the regional virtual-hosted
    endpoint, so a bucket outside us-east-1 answers without a redirect."""
    return boto3.client(
        "s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
    )


def register(
    app: ApiGatewayResolver,
    current_settings: Callable[[], Settings],
    transcriber: Callable[[], Transcriber],
) -> None:
    @app.post(JOBS_ROUTE)
    def create_job() -> Response[str]:
        event = app.current_event
        body = _body_text(event.body, bool(event.is_base64_encoded))
        request = JobRequest.parse(body)
        if request.decoding:
            # Hotwords the model cannot write, an LM it lacks: refused now, not after the
            # upload (only requests with decoding options load the model here).
            transcriber().decoding(request.decoding_options)
        payload = create(request, current_settings())
        return Response(201, content_types.APPLICATION_JSON, json.dumps(payload))

    @app.get(f"{JOBS_ROUTE}/<job_id>")
    def get_job(job_id: str) -> dict[str, Any]:
        return describe(job_id, current_settings())


def create(request: JobRequest, settings: Settings) -> dict[str, Any]:
    store, bucket = _jobs_config(settings)
    job_id = new_job_id()
    key = upload_key_for(job_id, request.filename, settings)
    now = time.time()
    expires_in = settings.job_upload_url_seconds
    fields: dict[str, str] = {}
    conditions: list[Any] = [["content-length-range", 1, settings.max_s3_object_bytes]]
    if request.content_type is not None:
        fields["Content-Type"] = request.content_type
        conditions.append({"Content-Type": request.content_type})
    form = presign_client().generate_presigned_post(
        Bucket=bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
    )
    created = now_iso(now)
    store.create(
        Job(
            job_id=job_id,
            status=AWAITING_UPLOAD,
            created_at=created,
            updated_at=created,
            expires_at=int(now) + settings.job_ttl_seconds,
            upload_bucket=bucket,
            upload_key=key,
            upload_expires_at=int(now) + expires_in,
            output_format=request.output_format,
            language=request.language,
            content_type=request.content_type,
            decoding=_json_or_none(request.decoding),
            channels=_json_or_none(request.channels),
        )
    )
    logger.info("job created", extra={"job_id": job_id, "upload_key": key})
    return {
        "job_id": job_id,
        "status": AWAITING_UPLOAD,
        "format": request.output_format,
        **({"decoding": request.decoding} if request.decoding else {}),
        **({"channels": request.channels} if request.channels else {}),
        "upload": {
            "method": "POST",
            "url": form["url"],
            "fields": form["fields"],
            "file_field": "file",
            "max_bytes": settings.max_s3_object_bytes,
        },
        "expires_in": expires_in,
    }


def _json_or_none(fields: dict[str, Any]) -> str | None:
    return json.dumps(fields, ensure_ascii=False) if fields else None


def describe(job_id: str, settings: Settings) -> dict[str, Any]:
    store, _ = _jobs_config(settings)
    job = store.get(job_id) if is_job_id(job_id) else None
    if job is None or job.expires_at < time.time():  # TTL deletion can lag for days
        raise JobNotFound(
            f"no job {job_id[:64]!r}: it was never created or has expired "
            f"(jobs are kept {settings.job_ttl_seconds / 86400:g} days)"
        )
    if job.status == AWAITING_UPLOAD:
        job = _check_upload(store, job)
    return _view(job, settings)


def _check_upload(store: JobStore, job: Job) -> Job:
    if _object_exists(job.upload_bucket, job.upload_key):
        return store.mark_queued(job.job_id) or store.get(job.job_id) or job
    if time.time() > job.upload_expires_at + UPLOAD_GRACE_SECONDS:
        message = "no audio was uploaded before the upload form expired; create a new job"
        return store.mark_upload_expired(job.job_id, message) or store.get(job.job_id) or job
    return job


def _view(job: Job, settings: Settings) -> dict[str, Any]:
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status,
        "format": job.output_format,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "attempts": job.attempts,
    }
    if job.language is not None:
        view["language"] = job.language
    if job.decoding is not None:
        view["decoding"] = json.loads(job.decoding)
    if job.channels is not None:
        view["channels"] = json.loads(job.channels)
    if job.status == AWAITING_UPLOAD:
        view["upload_expires_at"] = now_iso(job.upload_expires_at)
    results = job.result_bucket is not None and job.result_key is not None
    if job.status == FAILED:
        view["error"] = {
            "code": job.error_code or "internal_error",
            "message": job.error_message or "the job failed",
        }
    if job.status not in (DONE, FAILED) or not results:
        return view
    assert job.result_bucket is not None and job.result_key is not None
    expires_in = settings.job_result_url_seconds
    urls = {"json": _presigned_get(job.result_bucket, job.result_key, expires_in)}
    if job.status == DONE:
        view["audio_seconds"] = job.audio_seconds
        if job.format_key is not None:
            urls[job.output_format] = _presigned_get(job.result_bucket, job.format_key, expires_in)
        transcript = _inline_transcript(job.result_bucket, job.result_key, settings)
        if transcript is not None:
            view["transcript"] = transcript
    view["result_urls"] = urls
    view["urls_expire_in"] = expires_in
    return view


def _inline_transcript(bucket: str, key: str, settings: Settings) -> dict[str, Any] | None:
    """The result's transcript when the result object is small enough to return inline."""
    try:
        response = s3_client().get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in MISSING_CODES:
            return None  # deleted since: the URLs say where it was
        raise
    body = response["Body"]
    try:
        if int(response.get("ContentLength", 0)) > settings.job_inline_result_bytes:
            return None
        document = json.loads(body.read())
    finally:
        body.close()
    transcript = document.get("transcript") if isinstance(document, dict) else None
    return transcript if isinstance(transcript, dict) else None


def _presigned_get(bucket: str, key: str, expires_in: int) -> str:
    url: str = presign_client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
    )
    return url


def _object_exists(bucket: str, key: str) -> bool:
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in MISSING_CODES:
            return False  # without s3:ListBucket a missing key reads as 403
        raise
    return True


def _jobs_config(settings: Settings) -> tuple[JobStore, str]:
    if settings.jobs_table is None or settings.input_bucket is None:
        raise JobsUnavailable(
            "async jobs are not configured here (JOBS_TABLE and INPUT_BUCKET); "
            "POST /transcribe takes audio directly"
        )
    return JobStore.for_settings(settings), settings.input_bucket


def _body_text(body: str | None, is_base64: bool) -> str | None:
    """The body as text (a REST API base64-encodes every body: BinaryMediaTypes */*)."""
    if not body or not is_base64:
        return body
    if len(body) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise _body_too_large()
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidRequest("the body is not UTF-8 JSON", code="invalid_json") from exc


def _body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a job request is at most {MAX_BODY_BYTES:,} bytes of JSON; "
        "the audio goes to the upload form, not in this body"
    )


def _json_object(body: str | None) -> dict[str, Any]:
    if body is None or not body.strip():
        return {}
    if len(body) > MAX_BODY_BYTES:
        raise _body_too_large()
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("the JSON body must be an object", code="invalid_json")
    return document


def _optional_str(document: dict[str, Any], name: str, max_chars: int) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise InvalidJobRequest(f'"{name}" must be a string of 1-{max_chars} characters')
    return value


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
