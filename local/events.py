"""Sample events (events/*.json) and their placeholders; see events/README.md."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

AUDIO = "__AUDIO_BASE64__"
BUCKET = "__INPUT_BUCKET__"
KEY = "__INPUT_KEY__"


class EventError(ValueError):
    """The event file is unusable, or needs something the command line did not give."""


@dataclass(frozen=True)
class Fill:
    """Values for the placeholders; ``etag`` is the uploaded object's, for S3 records."""

    audio: bytes | None = None
    bucket: str = ""
    key: str = ""
    etag: str | None = None


def load_event(path: Path) -> dict[str, Any]:
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EventError(f"cannot read event {path}: {exc}") from exc
    if not isinstance(event, dict):
        raise EventError(f"event {path} is not a JSON object")
    return event


def is_s3_event(event: dict[str, Any]) -> bool:
    records = event.get("Records")
    return isinstance(records, list) and any(
        isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records
    )


def mentions(event: dict[str, Any], placeholder: str) -> bool:
    return placeholder in json.dumps(event)


def needs_s3(event: dict[str, Any]) -> bool:
    """An S3 notification, or an API request that refers to an S3 object."""
    if is_s3_event(event):
        return True
    body = _json_body(event)
    return mentions(event, BUCKET) or (isinstance(body, dict) and "s3" in body)


def fill_event(template: dict[str, Any], fill: Fill) -> dict[str, Any]:
    """A copy of ``template`` with the placeholders replaced; ``fill`` must cover them."""
    if mentions(template, AUDIO) and fill.audio is None:
        raise EventError(f"this event carries audio ({AUDIO}): pass --audio FILE")
    event = copy.deepcopy(template)
    if is_s3_event(event):
        return _fill_s3_event(event, fill)
    values = {BUCKET: fill.bucket, KEY: fill.key}
    if fill.audio is not None:
        values[AUDIO] = base64.b64encode(fill.audio).decode("ascii")
    body = event.get("body")
    if isinstance(body, str):
        parsed = _json_body(event)
        # A JSON body is rebuilt rather than edited as text, so a key with quotes stays valid.
        event["body"] = (
            json.dumps(_replace(parsed, values), ensure_ascii=False)
            if isinstance(parsed, dict)
            else _replace(body, values)
        )
        _set_content_length(event)
    return event


def _fill_s3_event(event: dict[str, Any], fill: Fill) -> dict[str, Any]:
    # S3 sends keys URL-encoded (space as "+"); the handler decodes them.
    values = {BUCKET: fill.bucket, KEY: quote_plus(fill.key, safe="/")}
    filled: dict[str, Any] = _replace(event, values)
    for record in filled["Records"]:
        obj = record.get("s3", {}).get("object")
        if isinstance(obj, dict) and fill.audio is not None:
            obj["size"] = len(fill.audio)
            if fill.etag:
                obj["eTag"] = fill.etag
    return filled


def _replace(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in values.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, dict):
        return {k: _replace(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, values) for v in value]
    return value


def _json_body(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if not isinstance(body, str) or event.get("isBase64Encoded"):
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def _set_content_length(event: dict[str, Any]) -> None:
    body = event["body"]
    size = (
        len(base64.b64decode(body)) if event.get("isBase64Encoded") else len(body.encode("utf-8"))
    )
    for headers_field in ("headers", "multiValueHeaders"):
        headers = event.get(headers_field)
        if not isinstance(headers, dict):
            continue
        for name in headers:
            if name.lower() == "content-length":
                headers[name] = [str(size)] if headers_field == "multiValueHeaders" else str(size)
