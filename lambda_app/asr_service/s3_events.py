"""S3 ``ObjectCreated`` records → one result object per input, never a silent drop.

For ``s3://in/<key>`` the function writes ``s3://<OUTPUT_BUCKET>/<OUTPUT_PREFIX><key>.json``:
the transcript, or an error record with a stable code when the object cannot be
transcribed. Keys under the output prefix of the output bucket are never processed, so
a trigger misconfigured to watch the outputs cannot loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from asr.errors import AsrError, InvalidRequest
from asr.transcribe import Transcriber, Transcript

from .s3_objects import read_object, write_json
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


def is_s3_event(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


def output_key_for(key: str, settings: Settings) -> str:
    return f"{settings.output_prefix}{key}{RESULT_SUFFIX}"


def process_record(
    record: dict[str, Any],
    settings: Settings,
    transcriber_factory: Callable[[], Transcriber],
    request_id: str,
) -> RecordOutcome:
    s3 = record.get("s3", {})
    bucket = str(s3.get("bucket", {}).get("name", ""))
    key = unquote_plus(str(s3.get("object", {}).get("key", "")))
    output_bucket = settings.output_bucket or bucket
    if output_bucket == bucket and key.startswith(settings.output_prefix):
        return RecordOutcome(bucket, key, "skipped", None)
    output_key = output_key_for(key, settings)
    source = {"bucket": bucket, "key": key, "etag": s3.get("object", {}).get("eTag")}
    started = time.perf_counter()
    try:
        if not bucket or not key:
            raise InvalidRequest("the S3 record names no bucket or key", code="invalid_s3_event")
        obj = read_object(bucket, key, max_bytes=settings.max_s3_object_bytes)
        source["etag"] = obj.etag or source["etag"]
        transcript = transcriber_factory().transcribe(
            obj.data, max_duration_s=settings.max_s3_audio_seconds
        )
    except AsrError as exc:
        payload = _error_payload(source, exc.code, exc.message, request_id)
        write_json(output_bucket, output_key, payload)
        return RecordOutcome(bucket, key, "failed", output_key, exc.code)
    except Exception:
        # Record the failure for the user, then let the invocation fail so Lambda's retry
        # (at-least-once) gets another chance; the retry overwrites this record.
        payload = _error_payload(
            source, "internal_error", "an internal error occurred; it will be retried", request_id
        )
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
    return RecordOutcome(bucket, key, "done", output_key, transcript=transcript)


def _error_payload(
    source: dict[str, Any], code: str, message: str, request_id: str
) -> dict[str, Any]:
    return {
        "status": "failed",
        "input": source,
        "error": {"code": code, "message": message},
        "request_id": request_id,
    }
