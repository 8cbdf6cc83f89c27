"""Reading audio objects from S3 and writing results, with S3 errors mapped to AsrErrors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
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


@dataclass(frozen=True)
class S3File:
    """An object downloaded to a private temporary file (deleted when its context ends)."""

    bucket: str
    key: str
    path: Path
    size: int
    etag: str | None
    version_id: str | None


# Bytes per read from the response stream: the most of an object held in memory at once.
_CHUNK_BYTES = 1 << 20


@cache
def s3_client() -> Any:
    return boto3.client("s3")


def read_object(bucket: str, key: str, *, max_bytes: int) -> S3Object:
    """The whole object in memory (the API's S3 references: short audio)."""
    response = _open_object(bucket, key, max_bytes)
    data = response["Body"].read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"s3://{bucket}/{key} exceeds the limit of {max_bytes:,} bytes")
    return S3Object(
        bucket, key, data, _strip_quotes(response.get("ETag")), response.get("VersionId")
    )


@contextmanager
def downloaded_object(bucket: str, key: str, *, max_bytes: int) -> Iterator[S3File]:
    """The object streamed to a temporary file in the system's temp directory (Lambda:
    /tmp), so a long recording is never held as bytes beside its decoded samples; the file
    is removed when the context exits, whatever happens inside it."""
    response = _open_object(bucket, key, max_bytes)
    descriptor, name = tempfile.mkstemp(prefix="asr-s3-")
    path = Path(name)
    try:
        size = 0
        with os.fdopen(descriptor, "wb") as out:
            for chunk in response["Body"].iter_chunks(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"s3://{bucket}/{key} exceeds the limit of {max_bytes:,} bytes"
                    )
                out.write(chunk)
        yield S3File(
            bucket,
            key,
            path,
            size,
            _strip_quotes(response.get("ETag")),
            response.get("VersionId"),
        )
    finally:
        path.unlink(missing_ok=True)


def _open_object(bucket: str, key: str, max_bytes: int) -> Any:
    """GET the object after a HEAD that refuses it when it is over ``max_bytes``; S3's
    not-found and access-denied answers become ObjectNotFound."""
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
        return s3_client().get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in MISSING_CODES:
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist or is not readable") from exc
        raise


def write_json(bucket: str, key: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8")
    s3_client().put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json; charset=utf-8"
    )


def _strip_quotes(etag: Any) -> str | None:
    return etag.strip('"') if isinstance(etag, str) else None
