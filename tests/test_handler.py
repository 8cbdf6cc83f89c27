from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import soundfile as sf
from asr.transcribe import Transcriber
from asr_service import model_cache
from asr_service.settings import Settings
from moto import mock_aws

from tests.conftest import speech_dir

INPUT, OUTPUT = "asr-input", "asr-output"


class FakeContext:
    aws_request_id = "req-test-1"
    function_name = "asr"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:asr"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def handler(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import handler as module

    settings = Settings(model_dir=tiny_bundle, output_bucket=OUTPUT, max_request_bytes=2_000_000)
    monkeypatch.setattr(module, "settings", settings)
    model_cache.reset()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=INPUT)
        s3.create_bucket(Bucket=OUTPUT)
        from asr_service.s3_objects import s3_client

        s3_client.cache_clear()
        yield module
        s3_client.cache_clear()
    model_cache.reset()


@pytest.fixture
def clip() -> Path:
    return speech_dir() / "ru" / "golos_04.wav"


def http_event(
    body: str | bytes,
    *,
    content_type: str = "application/json",
    path: str = "/transcribe",
    method: str = "POST",
) -> dict[str, Any]:
    binary = isinstance(body, bytes)
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": content_type},
        "requestContext": {
            "http": {"method": method, "path": path, "sourceIp": "127.0.0.1"},
            "requestId": "api-1",
            "stage": "$default",
        },
        "body": base64.b64encode(body).decode() if isinstance(body, bytes) else body,
        "isBase64Encoded": binary,
    }


def rest_event(body: str) -> dict[str, Any]:
    return {
        "resource": "/transcribe",
        "path": "/transcribe",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "requestContext": {
            "resourcePath": "/transcribe",
            "httpMethod": "POST",
            "stage": "prod",
            "requestId": "rest-1",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def s3_event(bucket: str, *keys: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": key.replace(" ", "+"), "eTag": "x"},
                },
            }
            for key in keys
        ]
    }


def invoke(module: Any, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = module.lambda_handler(event, FakeContext())
    return response["statusCode"], json.loads(response["body"])


def audio_json(data: bytes) -> str:
    return json.dumps({"audio": base64.b64encode(data).decode()})


def expected_text(tiny_bundle: Path, clip: Path) -> str:
    return Transcriber.from_dir(tiny_bundle).transcribe(clip).text


def test_http_api_json_base64(handler: Any, clip: Path, tiny_bundle: Path) -> None:
    status, body = invoke(handler, http_event(audio_json(clip.read_bytes())))
    assert status == 200
    assert body["text"] == expected_text(tiny_bundle, clip)
    assert body["model_id"] == "tiny-random"
    assert body["duration"] == pytest.approx(sf.info(str(clip)).duration, abs=1e-3)
    assert set(body["timings"]) == {"decode", "features", "model", "ctc", "total"}
    assert body["request_id"] == "req-test-1"
    for word in body["words"]:
        assert 0 <= word["start"] < word["end"] <= body["duration"] + 0.02
        assert 0 <= word["confidence"] <= 1


def test_rest_api_and_raw_binary_give_the_same_transcript(handler: Any, clip: Path) -> None:
    _, via_http = invoke(handler, http_event(audio_json(clip.read_bytes())))
    status, via_rest = invoke(handler, rest_event(audio_json(clip.read_bytes())))
    assert status == 200 and via_rest["text"] == via_http["text"]
    status, via_raw = invoke(handler, http_event(clip.read_bytes(), content_type="audio/wav"))
    assert status == 200 and via_raw["text"] == via_http["text"]


def test_s3_reference_in_the_api(handler: Any, clip: Path) -> None:
    boto3.client("s3").put_object(Bucket=INPUT, Key="in/a.wav", Body=clip.read_bytes())
    status, body = invoke(
        handler, http_event(json.dumps({"s3": {"bucket": INPUT, "key": "in/a.wav"}}))
    )
    assert status == 200 and body["duration"] > 1
    status, body = invoke(
        handler, http_event(json.dumps({"s3": {"bucket": INPUT, "key": "nope.wav"}}))
    )
    assert (status, body["error"]["code"]) == (404, "s3_object_not_found")
    status, body = invoke(
        handler, http_event(json.dumps({"s3": {"bucket": "no-such-bucket", "key": "k"}}))
    )
    assert (status, body["error"]["code"]) == (404, "s3_object_not_found")


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype=subtype)
    return out.getvalue()


@pytest.mark.parametrize(
    ("event_body", "status", "code"),
    [
        ("", 400, "empty_body"),
        ("{broken", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        (json.dumps({"audio": "@@not base64@@"}), 400, "invalid_base64"),
        (json.dumps({"audio": 42}), 400, "invalid_base64"),
        (json.dumps({"text": "hi"}), 400, "invalid_request"),
        (json.dumps({"audio": "", "s3": {}}), 400, "invalid_request"),
        (json.dumps({"s3": {"bucket": "b"}}), 400, "invalid_s3_ref"),
        (audio_json(b"definitely not audio, just text" * 10), 422, "audio_undecodable"),
        (audio_json(b""), 422, "audio_empty"),
    ],
)
def test_bad_requests_get_stable_codes(
    handler: Any, event_body: str, status: int, code: str
) -> None:
    got_status, body = invoke(handler, http_event(event_body))
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


def test_audio_edge_cases(handler: Any, clip: Path) -> None:
    empty = wav_bytes(np.zeros(0, np.float32))
    assert invoke(handler, http_event(audio_json(empty)))[1]["error"]["code"] == "audio_empty"
    tiny = wav_bytes(np.zeros(100, np.float32))  # 6 ms: shorter than one 10 ms hop
    assert invoke(handler, http_event(audio_json(tiny)))[1]["error"]["code"] == "audio_empty"
    data = clip.read_bytes()
    status, _ = invoke(handler, http_event(audio_json(data[: len(data) // 2])))
    assert status in (200, 422)  # a truncated WAV decodes what is there or is refused: never 500
    nan = wav_bytes(np.full(16000, np.nan, np.float32), subtype="FLOAT")
    status, body = invoke(handler, http_event(audio_json(nan)))
    assert (status, body["error"]["code"]) == (422, "audio_non_finite")


def test_oversize_and_overlong_audio_get_413_pointing_to_s3(
    handler: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = wav_bytes(np.zeros(16000 * 70, np.float32))  # 2.2 MB > the 2 MB limit set above
    status, body = invoke(handler, http_event(audio_json(big)))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert "S3" in body["error"]["message"]
    monkeypatch.setattr(handler, "settings", replace(handler.settings, max_sync_audio_seconds=1.0))
    status, body = invoke(handler, http_event(audio_json(clip.read_bytes())))
    assert (status, body["error"]["code"]) == (413, "audio_too_long")
    assert "S3" in body["error"]["message"]


def test_internal_fault_is_a_500_with_request_id_and_no_trace(
    handler: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Transcriber, "transcribe", explode)
    status, body = invoke(handler, http_event(audio_json(clip.read_bytes())))
    assert status == 500
    assert body["error"]["code"] == "internal_error"
    assert body["request_id"] == "req-test-1"
    assert "secret" not in json.dumps(body)


def test_unknown_route_is_404(handler: Any) -> None:
    status, _ = invoke(handler, http_event("{}", path="/nope"))
    assert status == 404


def test_health_reports_the_model(handler: Any) -> None:
    status, body = invoke(handler, http_event("", path="/health", method="GET"))
    assert (status, body["model_id"]) == (200, "tiny-random")


def read_result(key: str) -> dict[str, Any]:
    obj = boto3.client("s3").get_object(Bucket=OUTPUT, Key=key)
    result: dict[str, Any] = json.loads(obj["Body"].read())
    return result


def test_s3_event_writes_one_result_per_object(handler: Any, clip: Path, tiny_bundle: Path) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=INPUT, Key="uploads/good clip.wav", Body=clip.read_bytes())
    s3.put_object(Bucket=INPUT, Key="uploads/bad.wav", Body=b"not audio at all" * 20)
    event = s3_event(INPUT, "uploads/good clip.wav", "uploads/bad.wav", "uploads/missing.wav")
    result = handler.lambda_handler(event, FakeContext())
    assert [r["status"] for r in result["processed"]] == ["done", "failed", "failed"]

    good = read_result("transcripts/uploads/good clip.wav.json")
    assert good["status"] == "done"
    assert good["transcript"]["text"] == expected_text(tiny_bundle, clip)
    assert good["input"]["key"] == "uploads/good clip.wav"
    bad = read_result("transcripts/uploads/bad.wav.json")
    assert bad["error"]["code"] == "audio_undecodable"
    missing = read_result("transcripts/uploads/missing.wav.json")
    assert missing["error"]["code"] == "s3_object_not_found"
    listed = s3.list_objects_v2(Bucket=OUTPUT)["Contents"]
    assert len(listed) == 3


def test_s3_outputs_never_retrigger(handler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler, "settings", replace(handler.settings, output_bucket=INPUT))
    result = handler.lambda_handler(s3_event(INPUT, "transcripts/x.wav.json"), FakeContext())
    assert result["processed"][0]["status"] == "skipped"
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=INPUT)


def test_s3_internal_fault_writes_a_record_then_fails_for_retry(
    handler: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3").put_object(Bucket=INPUT, Key="uploads/a.wav", Body=clip.read_bytes())

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Transcriber, "transcribe", explode)
    with pytest.raises(RuntimeError, match="retrying"):
        handler.lambda_handler(s3_event(INPUT, "uploads/a.wav"), FakeContext())
    assert read_result("transcripts/uploads/a.wav.json")["error"]["code"] == "internal_error"


def test_cli_transcribes_files_and_reports_bad_ones(
    tiny_bundle: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asr.__main__ import main

    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    assert main(["--bundle", str(tiny_bundle), str(clip), str(bad)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith(f"{clip}\t") and "audio_undecodable" in out.err
    assert main(["--bundle", str(tiny_bundle), "--json", str(clip)]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == "tiny-random"


def test_an_event_that_is_neither_api_nor_s3_is_refused(handler: Any) -> None:
    events: list[dict[str, Any]] = [{}, {"Records": []}, {"Records": [{"eventSource": "aws:sqs"}]}]
    for event in events:
        status, body = invoke(handler, event)
        assert (status, body["error"]["code"]) == (400, "unsupported_event")
