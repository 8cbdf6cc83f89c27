"""The local tooling: sample events through the handler, the API Gateway emulator, the demo."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from asr.transcribe import Transcriber

from local import EVENTS_DIR
from local.demo import run_demo
from local.events import EventError, Fill, fill_event, load_event
from local.invoke import Invoker
from local.runtime import (
    Handler,
    LocalEnvironment,
    call_handler,
    handler_in_environment,
)
from local.server import ApiGatewayEmulator, build_event, serving_in_thread
from tests.conftest import REPO, speech_dir

API_EVENTS = [
    "http_api_transcribe_json.json",
    "http_api_transcribe_raw.json",
    "http_api_transcribe_s3.json",
    "rest_api_transcribe_json.json",
]
HTTP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def clip() -> Path:
    return speech_dir() / "ru" / "golos_04.wav"


@pytest.fixture(scope="module")
def local_handler(tiny_bundle: Path) -> Iterator[Handler]:
    """The handler imported under the local environment; the environment is restored after."""
    with handler_in_environment(LocalEnvironment(model_dir=tiny_bundle)) as handler:
        yield handler


@pytest.mark.parametrize("name", API_EVENTS)
def test_api_sample_events_return_200(local_handler: Handler, clip: Path, name: str) -> None:
    result = Invoker(local_handler).invoke(load_event(EVENTS_DIR / name), audio=clip)
    assert result.error is None
    assert result.response is not None and result.response["statusCode"] == 200, result.body()
    body = result.body()
    assert body["model_id"] == "tiny-random"
    assert isinstance(body["text"], str)
    assert body["duration"] == pytest.approx(sf_duration(clip), abs=0.01)


def sf_duration(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


def test_health_event(local_handler: Handler) -> None:
    result = Invoker(local_handler).invoke(load_event(EVENTS_DIR / "http_api_health.json"))
    assert result.ok
    assert result.body() == {"status": "ok", "model_id": "tiny-random"}


def test_s3_event_writes_the_transcript_object(local_handler: Handler, clip: Path) -> None:
    key = "uploads/meeting notes/golos 04+final.wav"  # S3 sends it URL-encoded
    template = load_event(EVENTS_DIR / "s3_object_created.json")
    result = Invoker(local_handler).invoke(template, audio=clip, key=key)
    assert result.ok, result.to_display()
    output_key = f"transcripts/{key}.json"
    assert list(result.outputs) == [output_key]
    document = result.outputs[output_key]
    assert document["status"] == "done"
    assert document["input"]["key"] == key
    assert document["transcript"]["model_id"] == "tiny-random"


def test_fill_event_encodes_keys_and_keeps_bodies_valid() -> None:
    key = 'uploads/a "quoted" name+1.wav'
    fill = Fill(audio=b"RIFF0000", bucket="in", key=key, etag="abc")
    s3_request = fill_event(load_event(EVENTS_DIR / "http_api_transcribe_s3.json"), fill)
    assert json.loads(s3_request["body"]) == {"s3": {"bucket": "in", "key": key}}
    assert s3_request["headers"]["content-length"] == str(len(s3_request["body"].encode()))

    raw = fill_event(load_event(EVENTS_DIR / "http_api_transcribe_raw.json"), fill)
    assert base64.b64decode(raw["body"]) == b"RIFF0000"
    assert raw["headers"]["content-length"] == "8"

    record = fill_event(load_event(EVENTS_DIR / "s3_object_created.json"), fill)["Records"][0]
    assert record["s3"]["bucket"]["name"] == "in"
    assert record["s3"]["bucket"]["arn"] == "arn:aws:s3:::in"
    assert record["s3"]["object"] == {
        **record["s3"]["object"],
        "key": "uploads/a+%22quoted%22+name%2B1.wav",
        "size": 8,
        "eTag": "abc",
    }


def test_an_audio_event_without_audio_is_refused() -> None:
    with pytest.raises(EventError, match="--audio"):
        fill_event(load_event(EVENTS_DIR / "http_api_transcribe_json.json"), Fill())


def test_build_event_matches_api_gateway() -> None:
    headers = Message()
    headers["Content-Type"] = "audio/wav"
    headers["X-Tag"] = "a"
    headers["X-Tag"] = "b"
    headers["Cookie"] = "c1=1; c2=2"
    event = build_event("POST", "/transcribe?x=1&x=2", headers, b"\x00\xff", "127.0.0.1")
    assert event["version"] == "2.0"
    assert event["routeKey"] == event["requestContext"]["routeKey"] == "POST /transcribe"
    assert event["rawPath"] == "/transcribe" and event["rawQueryString"] == "x=1&x=2"
    assert event["queryStringParameters"] == {"x": "1,2"}
    assert event["headers"]["x-tag"] == "a,b"
    assert event["cookies"] == ["c1=1", "c2=2"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\xff"
    headers.replace_header("Content-Type", "application/json")
    text = build_event("POST", "/transcribe", headers, b'{"a": 1}', "127.0.0.1")
    assert text["isBase64Encoded"] is False and text["body"] == '{"a": 1}'


@pytest.fixture
def server(local_handler: Handler) -> Iterator[ApiGatewayEmulator]:
    emulator = ApiGatewayEmulator(0, lambda event: call_handler(local_handler, event), log=False)
    with serving_in_thread(emulator):
        yield emulator


def http(url: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_answers_over_loopback(server: ApiGatewayEmulator, clip: Path) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    status, body = http(f"{server.url}/transcribe", clip.read_bytes(), "audio/wav")
    assert status == 200 and body["model_id"] == "tiny-random", body
    encoded = json.dumps({"audio": base64.b64encode(clip.read_bytes()).decode()}).encode()
    status, body = http(f"{server.url}/transcribe", encoded, "application/json")
    assert status == 200 and isinstance(body["text"], str), body
    assert http(f"{server.url}/health") == (200, {"status": "ok", "model_id": "tiny-random"})
    status, body = http(f"{server.url}/transcribe", b"not audio", "audio/wav")
    assert status == 422 and body["error"]["code"] == "audio_undecodable", body


def _manifest(tmp_path: Path, clip: Path, text: str) -> Path:
    manifest = tmp_path / "manifest.jsonl"
    entry = {"audio_filepath": str(clip), "text": text, "duration": 1.0}
    manifest.write_text(json.dumps(entry, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def test_demo_reports_ok_and_mismatch(
    local_handler: Handler, tiny_bundle: Path, clip: Path, tmp_path: Path
) -> None:
    expected = Transcriber.from_dir(tiny_bundle).transcribe(clip).text
    lines: list[str] = []
    assert run_demo(tiny_bundle, _manifest(tmp_path, clip, expected), lines.append) == 0
    output = "\n".join(lines)
    assert "DEMO MODEL" in output and "NOT a production" in output
    assert output.count(" OK ") == 3, output

    lines.clear()
    assert run_demo(tiny_bundle, _manifest(tmp_path, clip, expected + " лишнее"), lines.append) == 1
    assert "\n".join(lines).count("MISMATCH") == 3


def test_cli_invokes_an_s3_event_in_a_fresh_process(tiny_bundle: Path, clip: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"MODEL_DIR", "OUTPUT_BUCKET"}}
    result = subprocess.run(
        [sys.executable, "-m", "local", "invoke", "events/s3_object_created.json",
         "--audio", str(clip), "--bundle", str(tiny_bundle)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["ok"] is True
    assert shown["output_objects"][f"transcripts/uploads/{clip.name}.json"]["status"] == "done"
