"""Async job records in DynamoDB (``JOBS_TABLE``), and where a job's upload lives in S3.

A job is one upload. ``POST /jobs`` (asr_service.jobs) creates the record, in state
``awaiting_upload``, with a presigned form for ``<input prefix>jobs/<job id>/<file name>``
of the input bucket; the S3 path (asr_service.job_tracking) moves it to ``running`` and then
``done`` or ``failed``; ``GET /jobs/{id}`` reads it, and marks it ``queued`` once the upload
is in the bucket. Records expire through the table's TTL (``expires_at``).

Every transition after creation is a conditional update naming the upload's bucket and
key, so an object that only looks like a job upload (a key under ``jobs/`` with an unknown
or expired id) never creates or changes a record.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from .settings import Settings

JOBS_SEGMENT: Final = "jobs/"
AWAITING_UPLOAD: Final = "awaiting_upload"
QUEUED: Final = "queued"
RUNNING: Final = "running"
DONE: Final = "done"
FAILED: Final = "failed"

_JOB_ID: Final = re.compile(r"[0-9a-f]{32}")
_NUMBERS: Final = {"expires_at", "upload_expires_at", "attempts"}
_FLOATS: Final = {"audio_seconds"}


@dataclass(frozen=True)
class Job:
    job_id: str
    status: str
    created_at: str
    updated_at: str
    expires_at: int  # epoch seconds: the TTL attribute
    upload_bucket: str
    upload_key: str
    upload_expires_at: int
    output_format: str
    language: str | None = None
    content_type: str | None = None
    decoding: str | None = None  # the request's decoding fields, as a JSON object
    channels: str | None = None  # its channels/speakers fields (asr.channels), likewise
    attempts: int = 0
    input_etag: str | None = None
    result_bucket: str | None = None
    result_key: str | None = None
    format_key: str | None = None
    audio_seconds: float | None = None
    error_code: str | None = None
    error_message: str | None = None


def new_job_id() -> str:
    """122 random bits (uuid4 reads os.urandom): unguessable, and safe in a key."""
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    return bool(_JOB_ID.fullmatch(text))


def jobs_upload_prefix(settings: Settings) -> str:
    """Where every job upload lives; template.yaml grants s3:PutObject on exactly this."""
    return f"{settings.input_prefix}{JOBS_SEGMENT}"


def upload_key_for(job_id: str, filename: str, settings: Settings) -> str:
    return f"{jobs_upload_prefix(settings)}{job_id}/{filename}"


def job_id_for_key(key: str, settings: Settings) -> str | None:
    """The job id in an upload key shaped like ``upload_key_for``'s; None for other keys."""
    prefix = jobs_upload_prefix(settings)
    if not key.startswith(prefix):
        return None
    job_id, slash, name = key[len(prefix) :].partition("/")
    return job_id if slash and name and "/" not in name and is_job_id(job_id) else None


def now_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@cache
def dynamodb_client() -> Any:
    return boto3.client("dynamodb")


class JobStore:
    def __init__(self, table: str, ttl_seconds: int, client: Any | None = None) -> None:
        self.table = table
        self.ttl_seconds = ttl_seconds
        self._client = client

    @classmethod
    def for_settings(cls, settings: Settings) -> JobStore:
        if settings.jobs_table is None:
            raise ValueError("JOBS_TABLE is not set")
        return cls(settings.jobs_table, settings.job_ttl_seconds)

    @property
    def client(self) -> Any:
        return self._client or dynamodb_client()

    def create(self, job: Job) -> None:
        self.client.put_item(
            TableName=self.table,
            Item=_to_item(job),
            ConditionExpression="attribute_not_exists(job_id)",
        )

    def get(self, job_id: str) -> Job | None:
        response = self.client.get_item(
            TableName=self.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return _from_item(item) if item else None

    def mark_queued(self, job_id: str) -> Job | None:
        """awaiting_upload → queued (the upload is in the bucket); None if it had moved on."""
        return self._update(
            job_id,
            "SET #status = :queued, updated_at = :now",
            "#status = :awaiting",
            {":queued": _s(QUEUED), ":awaiting": _s(AWAITING_UPLOAD)},
        )

    def mark_upload_expired(self, job_id: str, message: str) -> Job | None:
        """awaiting_upload → failed: the upload form expired unused. A late upload revives
        the job (``start`` accepts any state)."""
        return self._update(
            job_id,
            "SET #status = :failed, updated_at = :now, error_code = :code, error_message = :msg",
            "#status = :awaiting",
            {
                ":failed": _s(FAILED),
                ":awaiting": _s(AWAITING_UPLOAD),
                ":code": _s("upload_expired"),
                ":msg": _s(message),
            },
        )

    def start(self, job_id: str, bucket: str, key: str, etag: str | None) -> Job | None:
        """→ running, one more attempt; None when no job has this upload."""
        return self._update(
            job_id,
            "SET #status = :running, updated_at = :now, input_etag = :etag "
            "ADD attempts :one REMOVE error_code, error_message",
            "upload_bucket = :bucket AND upload_key = :key",
            {
                ":running": _s(RUNNING),
                ":etag": _s(etag or ""),
                ":one": {"N": "1"},
                ":bucket": _s(bucket),
                ":key": _s(key),
            },
        )

    def finish_done(
        self,
        job: Job,
        *,
        result_bucket: str,
        result_key: str,
        format_key: str | None,
        audio_seconds: float,
    ) -> Job | None:
        values = {
            ":done": _s(DONE),
            ":rb": _s(result_bucket),
            ":rk": _s(result_key),
            ":secs": {"N": repr(round(audio_seconds, 3))},
            ":exp": {"N": str(int(time.time()) + self.ttl_seconds)},
            ":bucket": _s(job.upload_bucket),
            ":key": _s(job.upload_key),
        }
        sets = "SET #status = :done, updated_at = :now, result_bucket = :rb, result_key = :rk, "
        sets += "audio_seconds = :secs, expires_at = :exp"
        if format_key is not None:
            sets += ", format_key = :fk"
            values[":fk"] = _s(format_key)
        return self._update(
            job.job_id,
            sets + " REMOVE error_code, error_message",
            "upload_bucket = :bucket AND upload_key = :key",
            values,
        )

    def finish_failed(
        self,
        job: Job,
        code: str,
        message: str,
        *,
        result_bucket: str | None = None,
        result_key: str | None = None,
        only_if_running: bool = False,
    ) -> Job | None:
        values = {
            ":failed": _s(FAILED),
            ":code": _s(code),
            ":msg": _s(message),
            ":exp": {"N": str(int(time.time()) + self.ttl_seconds)},
            ":bucket": _s(job.upload_bucket),
            ":key": _s(job.upload_key),
        }
        sets = "SET #status = :failed, updated_at = :now, error_code = :code, "
        sets += "error_message = :msg, expires_at = :exp"
        if result_bucket is not None and result_key is not None:
            sets += ", result_bucket = :rb, result_key = :rk"
            values |= {":rb": _s(result_bucket), ":rk": _s(result_key)}
        condition = "upload_bucket = :bucket AND upload_key = :key"
        if only_if_running:
            condition += " AND #status = :running"
            values[":running"] = _s(RUNNING)
        return self._update(job.job_id, sets, condition, values)

    def _update(
        self, job_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> Job | None:
        """A conditional update returning the new record; None when the condition fails
        (which includes: no such record — an update must never create one)."""
        names = {"#status": "status"} if "#status" in update + condition else {}
        try:
            response = self.client.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(job_id) AND ({condition})",
                ExpressionAttributeValues={":now": _s(now_iso(time.time())), **values},
                **({"ExpressionAttributeNames": names} if names else {}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return _from_item(response["Attributes"])


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _to_item(job: Job) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for field in fields(job):
        value = getattr(job, field.name)
        if value is None:
            continue
        if field.name in _NUMBERS or field.name in _FLOATS:
            item[field.name] = {"N": repr(value)}
        else:
            item[field.name] = _s(str(value))
    return item


def _from_item(item: dict[str, Any]) -> Job:
    values: dict[str, Any] = {}
    for field in fields(Job):
        attribute = item.get(field.name)
        if attribute is None:
            continue
        if field.name in _NUMBERS:
            values[field.name] = int(attribute["N"])
        elif field.name in _FLOATS:
            values[field.name] = float(attribute["N"])
        else:
            values[field.name] = attribute["S"]
    return Job(**values)
