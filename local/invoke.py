"""Run one event through the handler, with moto S3 when the event involves S3."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import Fill, fill_event, needs_s3
from .fake_s3 import FakeS3, fake_s3
from .runtime import DEFAULT_INPUT_BUCKET, DEFAULT_OUTPUT_BUCKET, Handler, call_handler


@dataclass(frozen=True)
class InvocationResult:
    response: dict[str, Any] | None
    outputs: dict[str, Any] = field(default_factory=dict)  # output key -> JSON document
    error: str | None = None  # traceback of an exception the handler raised
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        if self.error is not None or self.response is None:
            return False
        if "statusCode" in self.response:
            return int(self.response["statusCode"]) < 400
        processed = self.response.get("processed") or []
        return bool(processed) and all(item.get("status") == "done" for item in processed)

    def body(self) -> Any:
        """The API response body, parsed when it is JSON."""
        body = (self.response or {}).get("body")
        if not isinstance(body, str) or (self.response or {}).get("isBase64Encoded"):
            return body
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body

    def to_display(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"ok": self.ok, "seconds": round(self.seconds, 3)}
        if self.response is not None:
            shown["response"] = dict(self.response)
            if "body" in self.response:
                shown["response"]["body"] = self.body()
        if self.outputs:
            shown["output_objects"] = self.outputs
        if self.error is not None:
            shown["error"] = self.error
        return shown


class Invoker:
    """Invokes ``handler`` with sample events; reuses ``s3`` when given one."""

    def __init__(
        self,
        handler: Handler,
        *,
        input_bucket: str = DEFAULT_INPUT_BUCKET,
        output_bucket: str = DEFAULT_OUTPUT_BUCKET,
        s3: FakeS3 | None = None,
    ) -> None:
        self.handler = handler
        self.input_bucket = input_bucket
        self.output_bucket = output_bucket
        self.s3 = s3

    def invoke(
        self, template: dict[str, Any], *, audio: Path | None = None, key: str | None = None
    ) -> InvocationResult:
        data = audio.read_bytes() if audio is not None else None
        key = key or f"uploads/{audio.name if audio else 'audio'}"
        if not needs_s3(template):
            return self._call(fill_event(template, Fill(audio=data, key=key)), None)
        if self.s3 is not None:
            return self._invoke_with_s3(self.s3, template, data, key)
        with fake_s3(self.input_bucket, self.output_bucket) as s3:
            return self._invoke_with_s3(s3, template, data, key)

    def _invoke_with_s3(
        self, s3: FakeS3, template: dict[str, Any], data: bytes | None, key: str
    ) -> InvocationResult:
        etag = s3.put(self.input_bucket, key, data) if data is not None else None
        event = fill_event(template, Fill(audio=data, bucket=self.input_bucket, key=key, etag=etag))
        return self._call(event, s3)

    def _call(self, event: dict[str, Any], s3: FakeS3 | None) -> InvocationResult:
        started = time.perf_counter()
        response: dict[str, Any] | None = None
        error: str | None = None
        try:
            response = call_handler(self.handler, event)
        except Exception:
            error = traceback.format_exc()
        seconds = time.perf_counter() - started
        outputs = self._outputs(s3, response) if s3 is not None else {}
        return InvocationResult(response, outputs, error, seconds)

    def _outputs(self, s3: FakeS3, response: dict[str, Any] | None) -> dict[str, Any]:
        if response is not None and "statusCode" in response:
            return {}  # an API request: its answer is the response
        processed = (response or {}).get("processed")
        if isinstance(processed, list):
            keys = [item["output_key"] for item in processed if item.get("output_key")]
        else:  # the handler raised: show the error records it wrote
            keys = s3.keys(self.output_bucket)
        return {key: s3.read_json(self.output_bucket, key) for key in keys}
