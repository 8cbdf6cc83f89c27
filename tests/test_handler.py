from __future__ import annotations

import base64
import importlib
import io
import json
import sys
import time
import types
from collections.abc import Iterator, Sequence
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

from tests.conftest import REPO, speech_dir

INPUT, OUTPUT = "asr-input", "asr-output"
REPO_DEMO_AUDIO = REPO / "demo" / "audio"


class FakeContext:
    aws_request_id = "req-test-1"
    function_name = "asr"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:asr"

    def __init__(self, remaining_s: float = 60.0) -> None:
        self._deadline = time.monotonic() + remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def serving(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, buckets: Sequence[str] = ()
) -> Iterator[Any]:
    """The handler module serving ``settings``, S3 emulated by moto with ``buckets`` made; the
    model and S3 client caches are reset around it. For fixtures: ``yield from serving(...)``."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import handler as module
    from asr_service.s3_objects import s3_client

    monkeypatch.setattr(module, "settings", settings)
    model_cache.reset()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        s3_client.cache_clear()
        yield module
        s3_client.cache_clear()
    model_cache.reset()


@pytest.fixture
def handler(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    settings = Settings(model_dir=tiny_bundle, output_bucket=OUTPUT, max_request_bytes=2_000_000)
    yield from serving(settings, monkeypatch, (INPUT, OUTPUT))


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


def invoke(
    module: Any, event: dict[str, Any], context: FakeContext | None = None
) -> tuple[int, dict[str, Any]]:
    response = module.lambda_handler(event, context or FakeContext())
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
    assert set(body["timings"]) == {"decode", "features", "model", "decoder", "emotion", "total"}
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


def test_s3_references_are_limited_to_the_input_prefix(
    handler: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scoped = replace(handler.settings, input_bucket=INPUT, input_prefix="uploads/")
    monkeypatch.setattr(handler, "settings", scoped)
    s3 = boto3.client("s3")
    for key in ("uploads/a.wav", "private/a.wav"):
        s3.put_object(Bucket=INPUT, Key=key, Body=clip.read_bytes())
    ok = {"s3": {"bucket": INPUT, "key": "uploads/a.wav"}}
    assert invoke(handler, http_event(json.dumps(ok)))[0] == 200
    for ref in (
        {"bucket": INPUT, "key": "private/a.wav"},
        {"bucket": INPUT, "key": "uploadsX/a.wav"},
        {"bucket": OUTPUT, "key": "uploads/a.wav"},
    ):
        status, body = invoke(handler, http_event(json.dumps({"s3": ref})))
        assert (status, body["error"]["code"]) == (403, "s3_ref_not_allowed"), ref


def _emf_documents(output: str) -> list[dict[str, Any]]:
    documents = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def _metric_names(document: dict[str, Any]) -> set[str]:
    directives = document["_aws"]["CloudWatchMetrics"]
    return {m["Name"] for d in directives for m in d["Metrics"]}


def test_metrics_logs_and_correlation_ids(
    handler: Any, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Metrics are printed (capsys sees them); the Logger writes to the stream it was given
    # when first imported, so its lines are read from a stream of our own.
    log_stream = io.StringIO()
    previous = handler.logger.registered_handler.setStream(log_stream)
    try:
        _check_metrics_and_logs(handler, clip, capsys, log_stream)
    finally:
        handler.logger.registered_handler.setStream(previous)


def _check_metrics_and_logs(
    handler: Any, clip: Path, capsys: pytest.CaptureFixture[str], log_stream: io.StringIO
) -> None:
    assert invoke(handler, http_event(audio_json(clip.read_bytes())))[0] == 200
    first = capsys.readouterr().out
    # Powertools writes the ColdStart metric (first invocation of a container) apart.
    (emf,) = [d for d in _emf_documents(first) if "AudioSeconds" in _metric_names(d)]
    assert {"AudioSeconds", "ProcessingSeconds", "RealTimeFactor", "ModelLoadMs"} <= (
        _metric_names(emf)
    )
    (audio_s,), (processing_s,), (rtf,) = (
        emf[name] for name in ("AudioSeconds", "ProcessingSeconds", "RealTimeFactor")
    )
    assert audio_s == pytest.approx(sf.info(str(clip)).duration, abs=0.01)
    assert rtf == pytest.approx(processing_s / audio_s)
    logs = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    loaded = [entry for entry in logs if entry["message"] == "model loaded"]
    assert len(loaded) == 1 and loaded[0]["correlation_id"] == "api-1"

    # A refusal: an Errors metric with its code as a dimension, in its own EMF document;
    # the model load is not reported again and the request's body never reaches the logs.
    event = http_event(json.dumps({"audio": "@@secret-token@@"}))
    assert invoke(handler, event)[0] == 400
    second = capsys.readouterr().out
    assert "secret-token" not in second + log_stream.getvalue()
    documents = _emf_documents(second)
    errors = [d for d in documents if "Errors" in _metric_names(d)]
    assert len(errors) == 1 and errors[0]["ErrorCode"] == "invalid_base64"
    assert errors[0]["Errors"] in (1, [1], 1.0, [1.0])
    assert errors[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "ErrorCode"]]
    assert not any("ModelLoadMs" in _metric_names(d) for d in documents)


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
        (json.dumps({"s3": {"bucket": "a/b", "key": "k"}}), 400, "invalid_s3_ref"),
        (json.dumps({"s3": {"bucket": "b", "key": "\ud800"}}), 400, "invalid_s3_ref"),
        (json.dumps({"s3": {"bucket": "b", "key": "k" * 1025}}), 400, "invalid_s3_ref"),
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


def test_s3_output_formats_from_the_configuration(
    handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srt  # type: ignore[import-untyped]  # no stubs or py.typed
    import webvtt

    clip = REPO_DEMO_AUDIO / "heldout_01.wav"
    configured = replace(handler.settings, s3_output_formats=("srt", "vtt", "text", "json"))
    monkeypatch.setattr(handler, "settings", configured)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=INPUT, Key="uploads/a.wav", Body=clip.read_bytes())
    s3.put_object(Bucket=INPUT, Key="uploads/bad.wav", Body=b"not audio at all" * 20)
    handler.lambda_handler(s3_event(INPUT, "uploads/a.wav", "uploads/bad.wav"), FakeContext())

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=OUTPUT)["Contents"])
    stem = "transcripts/uploads/a.wav"
    # A failed input gets its error record only; a done one its JSON plus each format.
    assert keys == [
        f"{stem}.json",
        f"{stem}.srt",
        f"{stem}.txt",
        f"{stem}.vtt",
        "transcripts/uploads/bad.wav.json",
    ]
    result = read_result(f"{stem}.json")["transcript"]

    def body(key: str) -> str:
        return str(s3.get_object(Bucket=OUTPUT, Key=key)["Body"].read().decode("utf-8"))

    assert body(f"{stem}.txt").strip() == result["text"]
    cues = list(srt.parse(body(f"{stem}.srt"), ignore_errors=False))
    assert " ".join(c.content.replace("\n", " ") for c in cues) == result["text"]
    assert cues[0].start.total_seconds() == pytest.approx(result["words"][0]["start"], abs=2e-3)
    vtt = webvtt.from_buffer(io.StringIO(body(f"{stem}.vtt")), strict=True).captions
    assert " ".join(c.text.replace("\n", " ") for c in vtt) == result["text"]


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


def test_channel_and_rate_caps_refuse_before_decoding(handler: Any) -> None:
    hostile = wav_bytes(np.zeros((4800, 8), np.float32), rate=192_000, subtype="FLOAT")
    status, body = invoke(handler, http_event(audio_json(hostile)))
    assert (status, body["error"]["code"]) == (422, "audio_too_many_channels")
    ultrasonic = wav_bytes(np.zeros(4800, np.float32), rate=192_000, subtype="FLOAT")
    status, body = invoke(handler, http_event(audio_json(ultrasonic)))
    assert (status, body["error"]["code"]) == (422, "audio_sample_rate_unsupported")


def slow_frontend(module: Any, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    transcriber: Transcriber = module.model_cache.get_transcriber(module.settings)
    frontend = transcriber.frontend

    def slow(samples: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        return frontend(samples)

    monkeypatch.setattr(transcriber, "frontend", slow)


def test_api_deadline_is_a_504_in_time(
    handler: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler, "settings", replace(handler.settings, deadline_margin_seconds=0.5))
    slow_frontend(handler, monkeypatch, 0.6)
    context = FakeContext(remaining_s=1.0)
    status, body = invoke(handler, http_event(audio_json(clip.read_bytes())), context)
    assert (status, body["error"]["code"]) == (504, "deadline_exceeded")
    assert context.get_remaining_time_in_millis() > 0  # answered before Lambda's own timeout


def test_s3_deadline_is_retried_not_recorded_as_final(
    handler: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3").put_object(Bucket=INPUT, Key="uploads/a.wav", Body=clip.read_bytes())
    monkeypatch.setattr(handler, "settings", replace(handler.settings, deadline_margin_seconds=0.5))
    slow_frontend(handler, monkeypatch, 0.6)
    with pytest.raises(RuntimeError, match="retrying"):
        handler.lambda_handler(s3_event(INPUT, "uploads/a.wav"), FakeContext(remaining_s=1.0))
    # The placeholder the retry overwrites, not a final deadline_exceeded record.
    assert read_result("transcripts/uploads/a.wav.json")["error"]["code"] == "internal_error"


def test_budget_from_settings_and_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from asr_service.budget import api_deadline, api_limits, invocation_deadline, s3_limits

    for name, value in {
        "MODEL_DIR": str(tmp_path),
        "MAX_AUDIO_CHANNELS": "2",
        "MAX_AUDIO_SAMPLE_RATE": "48000",
        "FFMPEG_CPU_SECONDS": "5",
        "FFMPEG_MEMORY_MB": "256",
        "FFMPEG_TIMEOUT_SECONDS": "9",
        "DEADLINE_MARGIN_SECONDS": "3",
        "MAX_SYNC_AUDIO_SECONDS": "20",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    limits = api_limits(settings)
    assert (limits.max_duration_s, limits.max_channels, limits.max_sample_rate) == (20, 2, 48000)
    assert (limits.ffmpeg.cpu_seconds, limits.ffmpeg.memory_bytes) == (5, 256 << 20)
    assert limits.ffmpeg.timeout_s == 9.0
    assert s3_limits(settings).max_duration_s == settings.max_s3_audio_seconds
    # A function timeout sized for S3 (15 min) does not stretch an API request past API
    # Gateway's 29 s.
    context = FakeContext(remaining_s=900.0)
    assert 25.5 < api_deadline(context, settings).remaining() <= 26.0
    assert 896.5 < invocation_deadline(context, settings).remaining() <= 897.0


def test_snapstart_preloads_only_bundles_shipped_with_the_function(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asr_service import snapstart

    layer = Settings(model_dir=tiny_bundle)
    from_s3 = replace(layer, model_s3_uri="s3://models/bundle/")
    init = {snapstart.INIT_TYPE_ENV: "snap-start"}
    assert snapstart.should_preload(layer, init)
    assert not snapstart.should_preload(from_s3, init)  # /tmp is not in the snapshot
    assert not snapstart.should_preload(layer, {})  # not in Lambda: load on first use

    # Outside Lambda's runtime there is no snapshot_restore_py; inside, callbacks register.
    monkeypatch.delitem(sys.modules, "snapshot_restore_py", raising=False)
    assert not snapstart.register_after_restore(lambda: None)
    registered: list[Any] = []
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_after_restore = registered.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    assert snapstart.register_after_restore(print)
    assert registered == [print]


def test_handler_import_preloads_the_model_and_registers_the_restore_hook(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asr_service import s3_objects

    registered: list[Any] = []
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_after_restore = registered.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    monkeypatch.setenv("MODEL_DIR", str(tiny_bundle))
    monkeypatch.delenv("MODEL_S3_URI", raising=False)
    model_cache.reset()
    monkeypatch.delitem(sys.modules, "handler", raising=False)
    try:
        importlib.import_module("handler")
        load = model_cache.last_load()
        assert load is not None and load.location == str(tiny_bundle)  # loaded during init
        (after_restore,) = registered
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = s3_objects.s3_client()
        after_restore()
        assert s3_objects.s3_client() is not client  # a fresh client, fresh connections
    finally:
        model_cache.reset()
        sys.modules.pop("handler", None)
