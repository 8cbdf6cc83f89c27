"""S3 ``ObjectCreated`` records → one result object per input, never a silent drop.

For ``s3://in/<key>`` the function writes ``s3://<OUTPUT_BUCKET>/<OUTPUT_PREFIX><key>.json``:
the transcript, or an error record with a stable code when the object cannot be
transcribed. Objects the function could have written itself (in the output bucket, under
the output prefix, ending in ``.json``) are never processed, so a trigger that sees the
outputs — the same bucket with the output prefix under the watched prefix — cannot loop.

User errors (an ``AsrError`` with a 4xx status: corrupt audio, too long, missing object)
become error records. Faults on our side (5xx ``AsrError``s such as a broken bundle or a
missed deadline, S3 errors, anything unexpected) are raised, so the delivery is retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import unquote_plus

from asr.deadline import Deadline
from asr.errors import AsrError, InvalidRequest
from asr.formats import render
from asr.results import Transcript
from asr.transcribe import Transcriber

from . import job_tracking
from .budget import s3_limits
from .s3_objects import downloaded_object, s3_client, write_json
from .settings import Settings

RESULT_SUFFIX = ".json"


@dataclass(frozen=True)
class RecordOutcome:
    bucket: str
    key: str
    status: str  # "done", "failed" or "skipped"
    output_key: str | None
    error_code: str | None = None
    transcript: Transcript | None = None


@dataclass(frozen=True)
class ObjectRef:
    """The object version an S3 notification record names; ``key`` is URL-decoded."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ObjectRef:
        s3 = _mapping(record.get("s3"))
        bucket, obj = _mapping(s3.get("bucket")), _mapping(s3.get("object"))
        return cls(
            bucket=str(bucket.get("name") or ""),
            key=unquote_plus(str(obj.get("key") or "")),
            etag=_optional_str(obj.get("eTag")),
            version_id=_optional_str(obj.get("versionId")),
        )

    def source(self) -> dict[str, Any]:
        """The ``input`` block of the result object."""
        source: dict[str, Any] = {"bucket": self.bucket, "key": self.key, "etag": self.etag}
        if self.version_id:
            source["version_id"] = self.version_id
        return source


def is_s3_event(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


def is_object_created(record: dict[str, Any]) -> bool:
    return str(record.get("eventName", "")).startswith("ObjectCreated:")


def output_key_for(key: str, settings: Settings) -> str:
    return f"{settings.output_prefix}{key}{RESULT_SUFFIX}"


def is_output_object(bucket: str, key: str, settings: Settings) -> bool:
    """Could this object be one of our results? Every key ``output_key_for`` makes is."""
    output_bucket = settings.output_bucket or bucket
    return (
        bucket == output_bucket
        and key.startswith(settings.output_prefix)
        and key.endswith(RESULT_SUFFIX)
    )


def is_user_error(exc: BaseException) -> TypeGuard[AsrError]:
    """A failure the input caused, final for this object version: it gets an error record."""
    return isinstance(exc, AsrError) and exc.http_status < 500


def process_record(
    record: dict[str, Any],
    settings: Settings,
    transcriber_factory: Callable[[], Transcriber],
    request_id: str,
    *,
    record_internal_errors: bool = True,
    deadline: Deadline | None = None,
) -> RecordOutcome:
    """Transcribe the object ``record`` names and write its result object: a job's upload
    with the job's decoding and channel options, any other object with the deployment's
    defaults (channels: ``Settings.channels_for_key``).

    ``record_internal_errors``: before re-raising an internal fault, write an
    ``internal_error`` record that the retry overwrites (the direct S3 trigger, whose
    retries are few and leave no other trace). The SQS path passes False: its failed
    messages are retried and then kept in the dead-letter queue, and the one result
    object is written once, with the final outcome.

    ``deadline`` (``budget.invocation_deadline``) bounds decoding and transcription; when
    it passes, ``DeadlineExceeded`` (a 5xx ``AsrError``) is raised like any internal fault,
    so the object is retried instead of getting a final error record.
    """
    ref = ObjectRef.from_record(record)
    if is_output_object(ref.bucket, ref.key, settings):
        return RecordOutcome(ref.bucket, ref.key, "skipped", None)
    output_bucket = settings.output_bucket or ref.bucket
    output_key = output_key_for(ref.key, settings)
    source = ref.source()
    job = job_tracking.start(ref.bucket, ref.key, ref.etag, settings)
    started = time.perf_counter()
    try:
        if not ref.bucket or not ref.key:
            raise InvalidRequest("the S3 record names no bucket or key", code="invalid_s3_event")
        with downloaded_object(ref.bucket, ref.key, max_bytes=settings.max_s3_object_bytes) as obj:
            source["etag"] = obj.etag or source["etag"]
            transcript = transcriber_factory().transcribe(
                obj.path,
                limits=s3_limits(settings),
                deadline=deadline,
                decoding=job_tracking.decoding(job),
                channels=job_tracking.channels(job, settings.channels_for_key(ref.key)),
            )
    except Exception as exc:
        if is_user_error(exc):
            payload = _error_payload(source, exc.code, exc.message, request_id)
            write_json(output_bucket, output_key, payload)
            job_tracking.failed(job, output_bucket, output_key, exc.code, exc.message)
            return RecordOutcome(ref.bucket, ref.key, "failed", output_key, exc.code)
        if record_internal_errors:
            message = "an internal error occurred; it will be retried"
            payload = _error_payload(source, "internal_error", message, request_id)
            write_json(output_bucket, output_key, payload)
        raise
    write_json(
        output_bucket,
        output_key,
        {
            "status": "done",
            "input": source,
            "transcript": transcript.to_dict(),
            "processing_seconds": round(time.perf_counter() - started, 3),
            "request_id": request_id,
        },
    )
    write_configured_formats(output_bucket, output_key, transcript, settings)
    job_tracking.done(job, output_bucket, output_key, transcript)
    return RecordOutcome(ref.bucket, ref.key, "done", output_key, transcript=transcript)


def write_configured_formats(
    output_bucket: str, output_key: str, transcript: Transcript, settings: Settings
) -> list[str]:
    """``S3_OUTPUT_FORMATS`` next to the JSON result: ``<key>.srt``, ``.vtt``, ``.txt``."""
    written = []
    for name in dict.fromkeys(settings.s3_output_formats):
        if name == "json":
            continue  # the result object itself
        key = job_tracking.format_key_for(output_key, name)
        rendered = render(transcript, name)
        s3_client().put_object(
            Bucket=output_bucket,
            Key=key,
            Body=rendered.body.encode("utf-8"),
            ContentType=rendered.content_type,
        )
        written.append(key)
    return written


def _error_payload(
    source: dict[str, Any], code: str, message: str, request_id: str
) -> dict[str, Any]:
    return {
        "status": "failed",
        "input": source,
        "error": {"code": code, "message": message},
        "request_id": request_id,
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _optional_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
