"""Async jobs end to end in moto: POST /jobs → presigned POST upload → S3 → SQS → handler
→ GET /jobs/{id}.

moto stores what a presigned POST sends but checks neither its signature nor its policy,
so ``S3PostForm`` first applies the rules S3 documents for browser-based POST uploads
(AWS Signature Version 4): the signature over the base64 policy, its expiration, every
condition (exact match, ``starts-with``, ``content-length-range``) and no form field
outside the policy. What it accepts is then sent to moto's S3 with ``requests``, whose
bucket notifications feed the function's queue; ``Poller`` (tests/test_at_least_once.py)
plays Lambda's SQS event source mapping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
import soundfile
from asr.formats import render
from asr.transcribe import Transcriber
from asr_service import job_store, jobs, model_cache, s3_objects, sqs_batch
from asr_service.settings import Settings
from moto import mock_aws

from local.runtime import LocalContext
from tests.conftest import DEMO
from tests.test_at_least_once import (
    MAX_RECEIVE_COUNT,
    Poller,
    create_idempotency_table,
    create_queue,
    notify_on_created,
)

REGION = "us-east-1"
INPUT, OUTPUT = "asr-jobs-in", "asr-jobs-out"
INPUT_PREFIX, OUTPUT_PREFIX = "uploads/", "transcripts/"
IDEMPOTENCY, JOBS = "asr-idempotency", "asr-jobs"
MAX_BYTES = 200_000
CLIPS = DEMO / "audio"


def clip(name: str) -> tuple[bytes, str]:
    """A demo held-out clip and its transcript (the demo model reads these exactly)."""
    manifest = [json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines()]
    (entry,) = [e for e in manifest if e["audio_filepath"] == name]
    return (CLIPS / name).read_bytes(), entry["text"]


# --- S3's POST policy rules, in front of moto


class S3PostForm:
    """Upload through a presigned POST form as S3 would accept or refuse it."""

    def __init__(self, secret_key: str) -> None:
        self.secret_key = secret_key

    def post(
        self, url: str, fields: dict[str, str], data: bytes, *, now: datetime | None = None
    ) -> tuple[int, str]:
        """(HTTP status, S3 error code or "") of the upload."""
        refusal = self.refusal(url, fields, len(data), now or datetime.now(UTC))
        if refusal is not None:
            return refusal
        response = requests.post(url, data=fields, files={"file": ("audio", data)}, timeout=30)
        return response.status_code, ""

    def refusal(
        self, url: str, fields: dict[str, str], size: int, now: datetime
    ) -> tuple[int, str] | None:
        lowered = {name.lower(): value for name, value in fields.items()}
        date, region, service, _ = lowered["x-amz-credential"].split("/")[1:]
        key = f"AWS4{self.secret_key}".encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, lowered["policy"].encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, lowered.get("x-amz-signature", "")):
            return 403, "SignatureDoesNotMatch"
        policy = json.loads(base64.b64decode(lowered["policy"]))
        if datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")) <= now:
            return 403, "AccessDenied"  # Invalid according to Policy: Policy expired
        values = {**lowered, "bucket": (urlsplit(url).hostname or "").split(".s3.")[0]}
        covered = {"bucket", "policy", "x-amz-signature", "file"}
        for condition in policy["conditions"]:
            rule = _as_rule(condition)
            operator = rule[0].lower()
            if operator == "content-length-range":
                if size < rule[1]:
                    return 400, "EntityTooSmall"
                if size > rule[2]:
                    return 400, "EntityTooLarge"
                continue
            name = rule[1].lstrip("$").lower()
            covered.add(name)
            actual = values.get(name)
            if operator == "eq" and actual != rule[2]:
                return 403, "AccessDenied"
            if operator == "starts-with" and not (actual or "").startswith(rule[2]):
                return 403, "AccessDenied"
        if set(lowered) - covered:  # Invalid according to Policy: Extra input fields
            return 403, "AccessDenied"
        return None


def _as_rule(condition: Any) -> list[Any]:
    """{"name": value} is short for ["eq", "$name", value]."""
    if isinstance(condition, dict):
        ((name, value),) = condition.items()
        return ["eq", f"${name}", value]
    return list(condition)


# --- the world: buckets, queue, tables, the handler


@dataclass
class World:
    module: Any
    s3: Any
    sqs: Any
    dynamodb: Any
    queue_url: str
    queue_arn: str
    dlq_url: str
    form: S3PostForm
    writes: Counter[str]
    transcriptions: list[bytes]

    def call(
        self, method: str, path: str, body: str | None = None, *, rest: bool = False
    ) -> tuple[int, dict[str, Any]]:
        event = rest_event(method, path, body) if rest else http_event(method, path, body)
        response = self.module.lambda_handler(event, LocalContext(timeout_s=60))
        return response["statusCode"], json.loads(response["body"])

    def create_job(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        status, job = self.call("POST", "/jobs", json.dumps(request) if request else None)
        assert status == 201, job
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = self.call("GET", f"/jobs/{job_id}")
        assert status == 200, body
        return body

    def upload(self, job: dict[str, Any], data: bytes) -> tuple[int, str]:
        return self.form.post(job["upload"]["url"], job["upload"]["fields"], data)

    def poller(self) -> Poller:
        return Poller(self.sqs, self.queue_url, self.queue_arn, self.module.lambda_handler)

    def drain(self) -> None:
        self.poller().run()

    def job_items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.dynamodb.scan(TableName=JOBS)["Items"]
        return items


def http_event(method: str, path: str, body: str | None) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": method, "path": path, "sourceIp": "127.0.0.1"},
            "requestId": "api-jobs",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def rest_event(method: str, path: str, body: str | None) -> dict[str, Any]:
    """A REST API (ApiAuth API_KEY) event: BinaryMediaTypes */* base64-encodes every body."""
    encoded = base64.b64encode(body.encode()).decode() if body is not None else None
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method, "stage": "v1"},
        "body": encoded,
        "isBase64Encoded": encoded is not None,
    }


def create_jobs_table(dynamodb: Any) -> None:
    """What template.yaml creates: key "job_id" (string), TTL on "expires_at"."""
    dynamodb.create_table(
        TableName=JOBS,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=JOBS, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


def _clear_clients() -> None:
    import handler

    handler._drop_connections()  # every cached AWS client, as after a SnapStart restore
    model_cache.reset()


@pytest.fixture
def world(demo_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
    monkeypatch.setenv(sqs_batch.IDEMPOTENCY_TABLE_ENV, IDEMPOTENCY)
    import handler as module

    settings = Settings(
        model_dir=demo_bundle,
        input_bucket=INPUT,
        input_prefix=INPUT_PREFIX,
        output_bucket=OUTPUT,
        output_prefix=OUTPUT_PREFIX,
        max_s3_object_bytes=MAX_BYTES,
        max_s3_audio_seconds=30.0,
        jobs_table=JOBS,
        max_receive_count=MAX_RECEIVE_COUNT,
    )
    monkeypatch.setattr(module, "settings", settings)
    transcriptions: list[bytes] = []
    real_transcribe = Transcriber.transcribe

    def counting(self: Transcriber, audio: Any, *args: Any, **kwargs: Any) -> Any:
        transcriptions.append(bytes(audio))
        return real_transcribe(self, audio, *args, **kwargs)

    monkeypatch.setattr(Transcriber, "transcribe", counting)
    _clear_clients()
    try:
        with mock_aws():
            s3: Any = boto3.client("s3", region_name=REGION)
            sqs: Any = boto3.client("sqs", region_name=REGION)
            dynamodb: Any = boto3.client("dynamodb", region_name=REGION)
            for bucket in (INPUT, OUTPUT):
                s3.create_bucket(Bucket=bucket)
            create_idempotency_table(dynamodb)
            create_jobs_table(dynamodb)
            url, arn, dlq_url = create_queue(sqs, "asr-jobs-events")
            notify_on_created(s3, INPUT, INPUT_PREFIX, arn)
            # The s3:TestEvent that configuring the notification sent (tests count messages).
            Poller(sqs, url, arn, module.lambda_handler).invoke(
                Poller(sqs, url, arn, module.lambda_handler).receive_exactly(1)
            )
            writes: Counter[str] = Counter()

            def count_write(params: dict[str, Any], **kwargs: Any) -> None:
                writes[f"{params['Bucket']}/{params['Key']}"] += 1

            s3_objects.s3_client().meta.events.register(
                "provide-client-params.s3.PutObject", count_write
            )
            credentials = boto3.Session().get_credentials()
            assert credentials is not None  # moto's
            form = S3PostForm(credentials.secret_key)
            yield World(module, s3, sqs, dynamodb, url, arn, dlq_url, form, writes, transcriptions)
    finally:
        _clear_clients()


# --- the happy path


def test_a_job_goes_from_upload_to_transcript_and_result_urls(world: World) -> None:
    audio, text = clip("heldout_01.wav")
    job = world.create_job(
        {"filename": "../../Запись 01.wav", "format": "srt", "content_type": "audio/wav"}
    )
    job_id = job["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert (job["status"], job["format"], job["expires_in"]) == ("awaiting_upload", "srt", 3600)
    key = f"{INPUT_PREFIX}jobs/{job_id}/01.wav"  # the name is data: no path, ASCII only
    assert job["upload"]["fields"]["key"] == key
    assert job["upload"]["url"] == f"https://{INPUT}.s3.amazonaws.com/"
    assert job["upload"]["max_bytes"] == MAX_BYTES
    policy = json.loads(base64.b64decode(job["upload"]["fields"]["policy"]))
    assert ["content-length-range", 1, MAX_BYTES] in policy["conditions"]
    pending = world.job(job_id)
    assert pending["status"] == "awaiting_upload"
    expires = datetime.fromisoformat(pending["upload_expires_at"].replace("Z", "+00:00"))
    assert 3590 < (expires - datetime.now(UTC)).total_seconds() <= 3600

    assert world.upload(job, audio) == (204, "")
    assert world.job(job_id)["status"] == "queued"

    seen_while_running: list[str] = []
    real_transcribe = Transcriber.transcribe

    def observing(self: Transcriber, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen_while_running.append(world.job(job_id)["status"])
        return real_transcribe(self, data, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Transcriber, "transcribe", observing)
        world.drain()
    assert seen_while_running == ["running"]

    done = world.job(job_id)
    assert done["status"] == "done" and done["attempts"] == 1
    assert done["transcript"]["text"] == text
    assert done["audio_seconds"] == pytest.approx(1.554, abs=0.01)
    assert set(done["result_urls"]) == {"json", "srt"}
    assert done["urls_expire_in"] == 3600
    result_key = f"{OUTPUT_PREFIX}{key}.json"
    for fmt, url in done["result_urls"].items():
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        assert parts.hostname == f"{OUTPUT}.s3.amazonaws.com"
        assert parts.path == "/" + result_key.removesuffix(".json") + "." + fmt
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Expires"] == ["3600"]
    result = requests.get(done["result_urls"]["json"], timeout=30)
    assert result.status_code == 200
    assert result.json()["transcript"] == done["transcript"]
    subtitles = requests.get(done["result_urls"]["srt"], timeout=30)
    assert subtitles.status_code == 200
    expected = render(Transcriber.from_dir(DEMO / "bundle").transcribe(audio), "srt").body
    assert subtitles.text == expected and text.split()[0] in expected


def test_a_rest_api_request_creates_a_json_job(world: World) -> None:
    status, job = world.call("POST", "/jobs", json.dumps({"language": "ru"}), rest=True)
    assert status == 201 and job["format"] == "json"
    assert job["upload"]["fields"]["key"].endswith("/audio")
    audio, text = clip("heldout_02.wav")
    assert world.upload(job, audio) == (204, "")
    world.drain()
    status, done = world.call("GET", f"/jobs/{job['job_id']}", rest=True)
    assert status == 200
    assert (done["status"], done["language"], done["transcript"]["text"]) == ("done", "ru", text)
    assert set(done["result_urls"]) == {"json"}


def test_a_job_transcribes_with_the_decoding_options_it_was_created_with(world: World) -> None:
    options = {"decoder": "beam", "hotwords": ["свет", {"text": "кухне", "boost": 3}]}
    job = world.create_job({"format": "text", **options})
    assert job["decoding"] == options
    plain = world.create_job()
    assert "decoding" not in plain
    audio, text = clip("heldout_01.wav")
    assert world.upload(job, audio) == (204, "") and world.upload(plain, audio) == (204, "")
    world.drain()
    done = world.job(job["job_id"])
    assert (done["status"], done["decoding"]) == ("done", options)
    assert (done["transcript"]["text"], done["transcript"]["decoder"]) == (
        text,
        "beam16+hotwords(2)",
    )
    done = world.job(plain["job_id"])
    assert "decoding" not in done
    assert (done["transcript"]["text"], done["transcript"]["decoder"]) == (text, "greedy")


def test_a_large_result_is_not_inlined(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    small = replace(world.module.settings, job_inline_result_bytes=100)
    monkeypatch.setattr(world.module, "settings", small)
    job = world.create_job()
    assert world.upload(job, clip("heldout_03.wav")[0]) == (204, "")
    world.drain()
    done = world.job(job["job_id"])
    assert done["status"] == "done" and "transcript" not in done
    assert requests.get(done["result_urls"]["json"], timeout=30).json()["status"] == "done"


# --- the upload form: S3 enforces it


def test_the_signed_policy_refuses_what_the_job_did_not_ask_for(world: World) -> None:
    job = world.create_job({"content_type": "audio/wav"})
    url, fields = job["upload"]["url"], job["upload"]["fields"]
    assert world.form.post(url, fields, b"\0" * (MAX_BYTES + 1)) == (400, "EntityTooLarge")
    assert world.form.post(url, fields, b"") == (400, "EntityTooSmall")
    elsewhere = {**fields, "key": f"{INPUT_PREFIX}jobs/{job['job_id']}/other.wav"}
    assert world.form.post(url, elsewhere, b"RIFF") == (403, "AccessDenied")
    assert world.form.post(url, {**fields, "Content-Type": "text/html"}, b"RIFF") == (
        403,
        "AccessDenied",
    )
    # Raising the cap in the policy breaks its signature.
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [
        ["content-length-range", 1, 10**12] if c[0] == "content-length-range" else c
        for c in policy["conditions"]
        if isinstance(c, list)
    ] + [c for c in policy["conditions"] if isinstance(c, dict)]
    forged = {**fields, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}
    assert world.form.post(url, forged, b"\0" * (MAX_BYTES + 1)) == (403, "SignatureDoesNotMatch")
    later = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    assert world.form.post(url, fields, b"RIFF", now=later) == (403, "AccessDenied")

    assert world.s3.list_objects_v2(Bucket=INPUT).get("KeyCount") == 0
    assert world.job(job["job_id"])["status"] == "awaiting_upload"
    # Without a content type in the request, the form carries none and accepts none.
    plain = world.create_job()
    assert "Content-Type" not in plain["upload"]["fields"]
    with_type = {**plain["upload"]["fields"], "Content-Type": "audio/wav"}
    assert world.form.post(plain["upload"]["url"], with_type, b"RIFF") == (403, "AccessDenied")
    assert world.form.post(plain["upload"]["url"], plain["upload"]["fields"], b"R") == (204, "")


def test_an_upload_form_left_unused_fails_the_job_and_a_late_upload_revives_it(
    world: World,
) -> None:
    job = world.create_job()
    world.dynamodb.update_item(
        TableName=JOBS,
        Key={"job_id": {"S": job["job_id"]}},
        UpdateExpression="SET upload_expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(datetime.now(UTC).timestamp()) - 901)}},
    )
    failed = world.job(job["job_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "upload_expired"
    assert "result_urls" not in failed
    audio, text = clip("heldout_04.wav")
    assert world.upload(job, audio) == (204, "")
    world.drain()
    done = world.job(job["job_id"])
    assert (done["status"], done["transcript"]["text"]) == ("done", text)
    assert "error" not in done


# --- failures say why


def test_a_corrupt_upload_fails_the_job_with_its_code(world: World) -> None:
    job = world.create_job({"filename": "notes.wav"})
    assert world.upload(job, b"RIFF\0\0\0\0WAVE" + bytes(range(256)) * 8) == (204, "")
    world.drain()
    failed = world.job(job["job_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "audio_undecodable"
    assert failed["error"]["message"]
    assert "transcript" not in failed
    record = requests.get(failed["result_urls"]["json"], timeout=30).json()
    assert record["error"] == failed["error"]


def test_internal_failures_fail_the_job_on_the_last_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: Transcriber, audio: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected onnxruntime failure")

    monkeypatch.setattr(Transcriber, "transcribe", crash)
    job = world.create_job()
    assert world.upload(job, clip("heldout_01.wav")[0]) == (204, "")
    statuses = []
    poller = world.poller()
    for _ in range(MAX_RECEIVE_COUNT):
        poller.invoke(poller.receive_exactly(1))
        statuses.append(world.job(job["job_id"])["status"])
    assert statuses == ["running"] * (MAX_RECEIVE_COUNT - 1) + ["failed"]
    failed = world.job(job["job_id"])
    assert failed["attempts"] == MAX_RECEIVE_COUNT
    assert failed["error"]["code"] == "internal_error"
    assert "dead-letter queue" in failed["error"]["message"]
    poller.run()  # SQS moves the message to the dead-letter queue on the next receive
    assert len(world.sqs.receive_message(QueueUrl=world.dlq_url).get("Messages", [])) == 1


@pytest.mark.parametrize(
    ("job_id", "why"),
    [("0123456789abcdef0123456789abcdef", "never created"), ("not-a-job", "malformed")],
)
def test_an_unknown_job_is_404_job_not_found(world: World, job_id: str, why: str) -> None:
    status, body = world.call("GET", f"/jobs/{job_id}")
    assert status == 404, why
    assert body["error"]["code"] == "job_not_found"


BAD_REQUESTS: list[tuple[str, int, str]] = [
    ("not json", 400, "invalid_json"),
    ("[1, 2]", 400, "invalid_json"),
    ('{"format": "mp3"}', 400, "invalid_format"),
    ('{"filename": 5}', 400, "invalid_job_request"),
    ('{"filename": ""}', 400, "invalid_job_request"),
    ('{"audio": "UklGRg=="}', 400, "invalid_job_request"),
    ('{"content_type": "audio"}', 400, "invalid_job_request"),
    ('{"content_type": "audio/wav\\r\\nx-amz-acl: public-read"}', 400, "invalid_job_request"),
    ('{"language": "' + "x" * 40 + '"}', 400, "invalid_job_request"),
    ('{"filename": "' + "a" * 20_000 + '"}', 413, "payload_too_large"),
    ('{"decoder": "foo"}', 400, "invalid_decoding"),
    ('{"decoder": "beam", "beam_width": 65}', 400, "invalid_decoding"),
    ('{"hotwords": ["Свет"]}', 400, "hotword_not_in_vocabulary"),
    ('{"hotwords": "свет:0"}', 400, "invalid_hotwords"),
    ('{"hotwords": "свет", "decoder": "greedy"}', 400, "invalid_hotwords"),
    ('{"lm": true}', 400, "lm_not_available"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_REQUESTS)
def test_bad_job_requests_get_stable_codes(world: World, body: str, status: int, code: str) -> None:
    answer, response = world.call("POST", "/jobs", body)
    assert (answer, response["error"]["code"]) == (status, code)
    assert world.job_items() == []


def test_a_body_that_is_not_utf8_is_invalid_json(world: World) -> None:
    event = rest_event("POST", "/jobs", None)
    event["body"], event["isBase64Encoded"] = base64.b64encode(b"\xff\xfe{").decode(), True
    response = world.module.lambda_handler(event, LocalContext(timeout_s=60))
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_json"


def test_without_a_jobs_table_the_routes_say_so(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.module, "settings", replace(world.module.settings, jobs_table=None))
    for method, path in (("POST", "/jobs"), ("GET", "/jobs/0123456789abcdef0123456789abcdef")):
        status, body = world.call(method, path)
        assert (status, body["error"]["code"]) == (503, "jobs_unavailable")


# --- at least once, and only jobs


def test_redelivered_notifications_keep_one_result_and_one_attempt(world: World) -> None:
    job = world.create_job({"format": "vtt"})
    assert world.upload(job, clip("heldout_02.wav")[0]) == (204, "")
    poller = world.poller()
    (message,) = poller.receive_exactly(1)
    poller.run([message["Body"]] * 3)  # the original is still in the queue: four deliveries
    assert poller.deliveries == 4
    done = world.job(job["job_id"])
    assert (done["status"], done["attempts"]) == ("done", 1)
    assert len(world.transcriptions) == 1
    result = f"{OUTPUT}/{OUTPUT_PREFIX}{job['upload']['fields']['key']}"
    assert world.writes == Counter({f"{result}.json": 1, f"{result}.vtt": 1})
    assert requests.get(done["result_urls"]["vtt"], timeout=30).text.startswith("WEBVTT\n")


def test_uploads_that_belong_to_no_job_are_processed_as_before(world: World) -> None:
    audio, text = clip("heldout_03.wav")
    keys = [
        f"{INPUT_PREFIX}meeting.wav",  # an ordinary upload
        f"{INPUT_PREFIX}jobs/0123456789abcdef0123456789abcdef/a.wav",  # no such job
        f"{INPUT_PREFIX}jobs/not-an-id/a.wav",
    ]
    job = world.create_job()  # a real job whose key none of these is
    for key in keys:
        world.s3.put_object(Bucket=INPUT, Key=key, Body=audio)
    world.drain()
    for key in keys:
        body = world.s3.get_object(Bucket=OUTPUT, Key=f"{OUTPUT_PREFIX}{key}.json")["Body"]
        result = json.loads(body.read())
        assert (result["status"], result["transcript"]["text"]) == ("done", text)
    (item,) = world.job_items()  # nothing created, the real job untouched
    assert item["job_id"]["S"] == job["job_id"]
    assert item["status"]["S"] == "awaiting_upload"


def test_the_upload_key_is_recognised_only_in_its_own_shape() -> None:
    settings = Settings(model_dir=Path("/nonexistent"), input_prefix=INPUT_PREFIX)
    job_id = job_store.new_job_id()
    key = job_store.upload_key_for(job_id, "a.wav", settings)
    assert job_store.job_id_for_key(key, settings) == job_id
    for other in (
        f"{INPUT_PREFIX}jobs/{job_id}/",
        f"{INPUT_PREFIX}jobs/{job_id}/x/a.wav",
        f"{INPUT_PREFIX}jobs/{job_id.upper()}/a.wav",
        f"other/jobs/{job_id}/a.wav",
    ):
        assert job_store.job_id_for_key(other, settings) is None, other


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\talk.MP3", "talk.MP3"),
        (".bashrc", "audio.bashrc"),
        ("Запись.wav", "audio.wav"),
        ("café ünd  more!.flac", "cafe_und_more.flac"),
        ("a" * 300 + ".ogg", "a" * 96 + ".ogg"),
        ("..", "audio"),
        (None, "audio"),
    ],
)
def test_file_names_become_safe_key_segments(name: str | None, safe: str) -> None:
    assert jobs.safe_filename(name) == safe


def test_a_job_splits_a_call_by_channel_as_it_was_asked(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.test_channel_requests import TURNS, short_passes
    from tests.test_channel_split import write_demo_call

    short_passes(monkeypatch)
    options = {"channels": "split", "speakers": ["agent", "client"]}
    job = world.create_job({"format": "text", **options})
    assert job["channels"] == options
    mono_job = world.create_job({"channels": "split"})
    wav, _ = write_demo_call(tmp_path)
    call = io.BytesIO()  # FLAC: the WAV is over the test's upload cap
    soundfile.write(call, soundfile.read(wav, dtype="int16")[0], 8000, format="FLAC")
    mono, _ = clip("heldout_01.wav")
    assert world.upload(job, call.getvalue()) == (204, "")
    assert world.upload(mono_job, mono) == (204, "")
    world.drain()
    done = world.job(job["job_id"])
    assert (done["status"], done["channels"]) == ("done", options)
    turns = [(s["speaker"], s["text"]) for s in done["transcript"]["segments"]]
    assert turns == TURNS
    failed = world.job(mono_job["job_id"])
    assert (failed["status"], failed["error"]["code"]) == ("failed", "audio_not_multichannel")


def test_a_job_with_bad_channel_options_is_refused(world: World) -> None:
    status, body = world.call("POST", "/jobs", json.dumps({"channels": "both"}))
    assert (status, body["error"]["code"]) == (400, "invalid_channels")
