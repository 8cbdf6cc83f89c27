"""moto's in-process S3 with the function's input and output buckets."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from asr_service import s3_objects
from moto import mock_aws

from .runtime import DEFAULT_REGION


@dataclass(frozen=True)
class FakeS3:
    client: Any

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data``; returns the ETag without quotes."""
        response = self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return str(response["ETag"]).strip('"')

    def read_json(self, bucket: str, key: str) -> Any:
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)

    def keys(self, bucket: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@contextmanager
def fake_s3(*buckets: str) -> Iterator[FakeS3]:
    """Start moto, create ``buckets``; the function's S3 client is rebuilt inside and after."""
    region = os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    # s3_objects caches its client; one made outside the mock must not be used inside it,
    # nor one made inside the mock after it stops.
    s3_objects.s3_client.cache_clear()
    try:
        with mock_aws():
            client: Any = boto3.client("s3", region_name=region)
            for bucket in buckets:
                if region == "us-east-1":
                    client.create_bucket(Bucket=bucket)
                else:
                    client.create_bucket(
                        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
                    )
            yield FakeS3(client)
    finally:
        s3_objects.s3_client.cache_clear()
