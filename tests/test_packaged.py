"""The deployable artifact runs: the `sam build` output, executed the way Lambda executes it.

``local.lambda_sandbox`` runs the built function directory with the built layers merged at
/opt, Python 3.12 with ``-S``, Lambda's environment, a read-only code directory, an
unprivileged uid and a size-capped /tmp, in a fresh process. S3 and DynamoDB are a moto
server. The transcripts must equal what the repository's own Transcriber gives for the same
audio, and removing any one required file from a layer must make this check fail.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from asr.transcribe import Transcriber

from local import lambda_sandbox as sandbox
from local.events import Fill, fill_event, load_event
from scripts.place_ffmpeg import packaged_ffmpeg
from tests.conftest import DEMO, speech_dir
from tests.sam_artifact import REPO, built, python312

pytestmark = pytest.mark.slow  # one `sam build` (shared with tests/test_sam.py) and 4 runs

EVENTS = REPO / "events"
COLD_START_RESULTS = REPO / "bench" / "results" / "packaged_cold_start.json"
REGION = "us-east-1"
UPLOAD_KEY = "uploads/held out 1.wav"  # a space: S3 sends keys URL-encoded
# Powertools modules the function uses besides what the handler imports at the top.
POWERTOOLS_MODULES = (
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.tracing",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes.sqs_event",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.idempotency.persistence.dynamodb",
    "aws_lambda_powertools.utilities.typing",
    "aws_xray_sdk.core",
)


def _require_sandbox() -> None:
    missing = [tool for tool in ("unshare", "setpriv", "taskset") if shutil.which(tool) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "the Lambda sandbox mounts file systems: run the tests as root"
    elif missing:
        reason = f"the Lambda sandbox needs {', '.join(missing)} (util-linux)"
    if reason and os.environ.get("CI"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


@dataclass(frozen=True)
class Audio:
    wav: bytes  # real speech
    m4a: bytes  # the same, AAC in MP4: only ffmpeg decodes it
    upload: bytes  # a held-out clip of the demo phrases, for the S3 path
    upload_text: str  # its reference transcript


@dataclass(frozen=True)
class Moto:
    url: str
    client: Callable[[str], Any]


@pytest.fixture(scope="module")
def function() -> sandbox.BuiltFunction:
    _require_sandbox()
    return sandbox.load_built_function(built("x86_64").build_dir, region=REGION)


@pytest.fixture(scope="module")
def runtime_sdk() -> Path:
    return sandbox.ensure_runtime_sdk(python312())


@pytest.fixture(scope="module")
def staged(
    function: sandbox.BuiltFunction, tmp_path_factory: pytest.TempPathFactory
) -> sandbox.StagedFunction:
    return sandbox.stage(function, tmp_path_factory.mktemp("sandbox") / "function")


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    speech = speech_dir() / "ru" / "golos_00.wav"
    m4a = tmp_path_factory.mktemp("audio") / "golos_00.m4a"
    # The layer's ffmpeg only decodes: encode with the full build of the dev tools.
    encode = [
        str(packaged_ffmpeg()), "-nostdin", "-loglevel", "error", "-i", str(speech),
        "-c:a", "aac", "-b:a", "48k", str(m4a),
    ]  # fmt: skip
    subprocess.run(encode, check=True, timeout=60)
    manifest = (DEMO / "audio" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    held_out = json.loads(manifest[0])
    return Audio(
        wav=speech.read_bytes(),
        m4a=m4a.read_bytes(),
        upload=(DEMO / "audio" / held_out["audio_filepath"]).read_bytes(),
        upload_text=held_out["text"],
    )


@pytest.fixture(scope="module")
def expected(
    audio: Audio, staged: sandbox.StagedFunction, monkeypatch_module: pytest.MonkeyPatch
) -> dict[str, str]:
    """The repository's Transcriber on the same audio: one thread (as on 1 vCPU), the
    layer's ffmpeg (another build could decode AAC a little differently)."""
    monkeypatch_module.setenv("ASR_FFMPEG_PATH", str(staged.opt / "bin" / "ffmpeg"))
    transcriber = Transcriber.from_dir(DEMO / "bundle", threads=1)
    texts = {
        "wav": transcriber.transcribe(audio.wav).text,
        "m4a": transcriber.transcribe(audio.m4a).text,
        "s3": transcriber.transcribe(audio.upload).text,
    }
    assert texts["s3"] == audio.upload_text  # the demo model knows its phrases
    assert texts["wav"] and texts["m4a"]
    return texts


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def moto(function: sandbox.BuiltFunction) -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"

    def client(service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
        )

    sandbox.create_data_resources(function, client)
    try:
        yield Moto(url, client)
    finally:
        server.stop()


def _sqs_event(s3_notification: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The S3 notification as the upload queue delivers it to the function."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"handle-{message_id}",
                "body": json.dumps(s3_notification),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1710270243512",
                    "SenderId": "AIDAEXAMPLESENDER",
                    "ApproximateFirstReceiveTimestamp": "1710270243520",
                },
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:sandbox-uploadqueue",
                "awsRegion": REGION,
            }
        ]
    }


def _invocations(
    function: sandbox.BuiltFunction, audio: Audio, moto: Moto
) -> list[sandbox.Invocation]:
    bucket = function.names["InputBucket"]
    put = moto.client("s3").put_object(Bucket=bucket, Key=UPLOAD_KEY, Body=audio.upload)
    notification = fill_event(
        load_event(EVENTS / "s3_object_created.json"),
        Fill(audio=audio.upload, bucket=bucket, key=UPLOAD_KEY, etag=put["ETag"].strip('"')),
    )
    return [
        sandbox.Invocation("health", load_event(EVENTS / "http_api_health.json")),
        sandbox.Invocation(
            "wav", fill_event(load_event(EVENTS / "http_api_transcribe_raw.json"), Fill(audio.wav))
        ),
        sandbox.Invocation(
            "m4a", fill_event(load_event(EVENTS / "http_api_transcribe_json.json"), Fill(audio.m4a))
        ),
        sandbox.Invocation("sqs", _sqs_event(notification, "message-1")),
    ]


def _run(
    staged: sandbox.StagedFunction,
    invocations: list[sandbox.Invocation],
    moto: Moto,
    runtime_sdk: Path,
    probe_modules: tuple[str, ...] = (),
) -> sandbox.SandboxRun:
    return sandbox.run(
        staged,
        invocations,
        extra_env={"AWS_ENDPOINT_URL": moto.url},
        region=REGION,
        probe_modules=probe_modules,
        python=python312(),
        runtime_sdk=runtime_sdk,
        process_timeout_s=300,
    )


def _function_modules(task: Path) -> tuple[str, ...]:
    """Every module of the function's code directory, by import name."""
    names = []
    for path in sorted(task.rglob("*.py")):
        parts = path.relative_to(task).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return tuple(names)


@pytest.fixture(scope="module")
def packaged_run(
    function: sandbox.BuiltFunction,
    staged: sandbox.StagedFunction,
    audio: Audio,
    moto: Moto,
    runtime_sdk: Path,
) -> sandbox.SandboxRun:
    """One cold start of the packaged function serving every kind of request."""
    probe = _function_modules(staged.task) + POWERTOOLS_MODULES
    run = _run(staged, _invocations(function, audio, moto), moto, runtime_sdk, probe)
    assert run.report is not None, run.stderr[-4000:]
    return run


def _body(response: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response["body"])
    return body


def check_transcripts(
    run: sandbox.SandboxRun, expected: dict[str, str], moto: Moto, output_bucket: str
) -> None:
    """What a deployed function must answer; AssertionError on the first difference."""
    health = run.response("health")
    assert health["statusCode"] == 200, health
    assert _body(health)["model_id"] == "demo-quartznet-ru"
    for name in ("wav", "m4a"):
        response = run.response(name)
        assert response["statusCode"] == 200, (name, response)
        assert _body(response)["text"] == expected[name], name
    assert run.response("sqs") == {"batchItemFailures": []}
    result_key = f"transcripts/{UPLOAD_KEY}.json"
    body = moto.client("s3").get_object(Bucket=output_bucket, Key=result_key)["Body"].read()
    result = json.loads(body)
    assert result["status"] == "done", result
    assert result["transcript"]["text"] == expected["s3"], result


def test_the_packaged_function_transcribes_like_the_repository(
    packaged_run: sandbox.SandboxRun,
    expected: dict[str, str],
    moto: Moto,
    function: sandbox.BuiltFunction,
) -> None:
    check_transcripts(packaged_run, expected, moto, function.names["OutputBucket"])


def test_the_run_is_confined_like_lambda(
    packaged_run: sandbox.SandboxRun, function: sandbox.BuiltFunction
) -> None:
    report = packaged_run.report
    assert report is not None
    assert report["uid"] == sandbox.SANDBOX_UID
    # Code and layers are read-only; /tmp is the only writable place, capped as configured.
    assert all(report["write_refusals"].values()), report["write_refusals"]
    assert report["tmp"] == {"dir": "/tmp", "bytes": function.ephemeral_mb * 1024 * 1024}
    # -S: the interpreter's own site-packages are not on the path; packages come from the
    # layers, boto3 from the runtime's SDK, the handler from the code directory.
    assert not [p for p in report["sys_path"] if "site-packages" in p and "/opt/" not in p]
    origins = report["origins"]
    for name in ("numpy", "onnxruntime", "soundfile", "aws_lambda_powertools"):
        assert origins[name].startswith("/opt/python/"), origins
    assert origins["boto3"].startswith("/var/runtime/"), origins
    assert origins["handler"] == "/var/task/handler.py", origins


def test_every_module_the_function_uses_imports_from_the_packaged_layers(
    packaged_run: sandbox.SandboxRun,
) -> None:
    report = packaged_run.report
    assert report is not None
    assert report["failed_imports"] == {}
    assert {"numpy", "onnxruntime", "soundfile", "aws_xray_sdk"} <= set(report["layer_packages"])
    # Only X-Ray's marker may outlive the requests in /tmp (the SDK writes it in Lambda too).
    assert [e for e in report["tmp_entries"] if not e.startswith("/tmp/.aws-xray")] == []


def _emf_metric(logs: str, name: str) -> float | None:
    """A metric the function published as an embedded-metric-format log line."""
    for line in logs.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            value = json.loads(line).get(name)
            if isinstance(value, list) and value:
                return float(value[0])
            if isinstance(value, (int, float)):
                return float(value)
    return None


def test_cold_start_of_the_packaged_artifact(
    packaged_run: sandbox.SandboxRun, function: sandbox.BuiltFunction
) -> None:
    report = packaged_run.report
    assert report is not None
    seconds = {entry["name"]: entry["seconds"] for entry in report["invocations"]}
    model_load_ms = _emf_metric(packaged_run.stdout, "ModelLoadMs")
    start = packaged_run.spawn_to_bootstrap_s
    assert start is not None
    phases = {
        "process_start_s": start,
        "imports_s": report["preload_s"],
        "handler_init_s": report["handler_init_s"],
        "first_request_health_s": seconds["health"],
        "first_transcription_s": seconds["wav"],
    }
    total = sum(phases.values())
    results = {
        "what": (
            "cold start of the sam build output in a fresh sandboxed process "
            "(local/lambda_sandbox.py): process_start = namespace, mounts and interpreter "
            "start; imports = numpy, onnxruntime, soundfile, Powertools from the layer; "
            "handler_init = importing the handler (model preloaded at init when the "
            "function does so, see model_load_ms); then GET /health and the first "
            "POST /transcribe (a 4 s WAV). OS file cache warm."
        ),
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, pinned to "
        f"{max(1, function.memory_mb // sandbox.MB_PER_VCPU)} (MemorySize {function.memory_mb})",
        "architecture": function.architecture,
        "model": "demo-quartznet-ru (demo/bundle)",
        **{k: round(v, 3) for k, v in phases.items()},
        "model_load_ms": round(model_load_ms, 1) if model_load_ms is not None else None,
        "cold_start_to_first_transcript_s": round(total, 3),
    }
    COLD_START_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    COLD_START_RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    # The demo model is tiny: most of this is imports. Far above this, something is wrong
    # (bytecode not used, a layer file compiled at every start, an import of a big module).
    assert total < 5.0, results


# Each of these is required: removing it from a copy of the layers must break the run.
REQUIRED_FILES = {
    "numpy extension module": "python/numpy/_core/_multiarray_umath.cpython-312-*.so",
    "model tokens": "model/tokens.txt",
    "ffmpeg": "bin/ffmpeg",
}


@dataclass(frozen=True)
class Setup:
    function: sandbox.BuiltFunction
    audio: Audio
    expected: dict[str, str]
    moto: Moto
    runtime_sdk: Path


@pytest.fixture(scope="module")
def setup(
    function: sandbox.BuiltFunction,
    audio: Audio,
    expected: dict[str, str],
    moto: Moto,
    runtime_sdk: Path,
) -> Setup:
    return Setup(function, audio, expected, moto, runtime_sdk)


@pytest.mark.parametrize("what", sorted(REQUIRED_FILES))
def test_a_missing_layer_file_fails_the_packaged_run(
    what: str, setup: Setup, tmp_path: Path
) -> None:
    staged = sandbox.stage(setup.function, tmp_path / "function")
    (required,) = staged.opt.glob(REQUIRED_FILES[what])
    required.unlink()
    invocations = _invocations(setup.function, setup.audio, setup.moto)
    run = _run(staged, invocations, setup.moto, setup.runtime_sdk)
    output_bucket = setup.function.names["OutputBucket"]
    with pytest.raises(AssertionError):
        check_transcripts(run, setup.expected, setup.moto, output_bucket)
    if what == "numpy extension module":
        assert run.init_error is not None and "numpy" in json.dumps(run.init_error)
    elif what == "model tokens":
        assert run.init_error is not None or run.response("health")["statusCode"] == 500
    else:
        assert run.response("wav")["statusCode"] == 200  # WAV needs no ffmpeg
        assert run.response("m4a")["statusCode"] != 200
