"""Reading audio objects from S3 and writing results, with S3 errors mapped to AsrErrors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from asr.errors import InvalidRequest, ObjectNotFound, PayloadTooLarge
from botocore.exceptions import ClientError

MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403"}


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    data: bytes
    etag: str | None
    version_id: str | None


@cache
def s3_client() -> Any:
    return boto3.client("s3")


def read_object(bucket: str, key: str, *, max_bytes: int) -> S3Object:
    if not bucket or not key:
        raise InvalidRequest(
            "an S3 reference needs a non-empty bucket and key", code="invalid_s3_ref"
        )
    try:
        head = s3_client().head_object(Bucket=bucket, Key=key)
        size = int(head.get("ContentLength", 0))
        if size > max_bytes:
            raise PayloadTooLarge(
                f"s3://{bucket}/{key} is {size:,} bytes; the limit is {max_bytes:,} bytes"
            )
        response = s3_client().get_object(Bucket=bucket, Key=key)
        data = response["Body"].read(max_bytes + 1)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in MISSING_CODES:
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist or is not readable") from exc
        raise
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"s3://{bucket}/{key} exceeds the limit of {max_bytes:,} bytes")
    return S3Object(
        bucket, key, data, _strip_quotes(response.get("ETag")), response.get("VersionId")
    )


def write_json(bucket: str, key: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8")
    s3_client().put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json; charset=utf-8"
    )


def _strip_quotes(etag: Any) -> str | None:
    return etag.strip('"') if isinstance(etag, str) else None
