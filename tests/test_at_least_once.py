"""At-least-once S3 processing: S3 → SQS (with a dead-letter queue) → the handler, in moto.

``Poller`` does what Lambda's SQS event source mapping does: receive up to 10 messages,
invoke the function with the SQS event, delete the messages it did not report in
``batchItemFailures``, and leave the others to reappear (visibility timeout 0: at once);
SQS moves a message to the dead-letter queue once it was received ``maxReceiveCount``
times. Idempotency records live in a moto DynamoDB table shaped like the template's.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import numpy as np
import pytest
import soundfile as sf
from asr.transcribe import Transcriber
from asr_service import model_cache, s3_objects, sqs_batch
from asr_service.settings import Settings
from botocore.exceptions import ClientError
from moto import mock_aws

from local.runtime import LocalContext
from tests.conftest import REPO, speech_dir

REGION = "us-east-1"
INPUT, OUTPUT = "asr-in", "asr-out"
WATCHED = "uploads/"
TABLE = "asr-idempotency"
MAX_RECEIVE_COUNT = 3
UPLOADS = 1000
RESULTS_FILE = REPO / "bench" / "results" / "s3_at_least_once.json"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def matching(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self.records if text in r.getMessage()]


@dataclass
class Poller:
    """Lambda's SQS event source mapping, one batch at a time."""

    sqs: Any
    queue_url: str
    queue_arn: str
    handler: Handler
    timeout_s: float = 60.0  # the function's timeout: each invocation's deadline
    drop_deletes_every: int = 0  # every n-th invocation the deletes are lost
    invocations: int = 0
    deliveries: int = 0
    failed_deliveries: int = 0
    lost_deletes: int = 0
    batches: list[list[str]] = field(default_factory=list)  # the bodies of each batch

    def run(self, bodies: Sequence[str] = ()) -> None:
        """Send ``bodies`` ten at a time, as they would arrive, and process until empty.

        The queue is kept short: moto's SQS scans the whole queue on every call."""
        feed = list(bodies)
        idle, limit = 0, self.invocations + 400
        while idle < 50 and self.invocations < limit:
            if feed:
                self.send(feed[:10])
                del feed[:10]
            messages = self.receive()
            if messages:
                self.invoke(messages)
            elif not feed:
                # moto shows a message sent within the same millisecond only after it
                if self.queue_is_empty():
                    return
                idle += 1
                time.sleep(0.002)
        raise AssertionError(f"the queue did not drain ({self.invocations} invocations)")

    def send(self, bodies: list[str]) -> None:
        self.sqs.send_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)],
        )

    def receive(self, count: int = 10) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=count, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        return messages

    def receive_exactly(self, count: int) -> list[dict[str, Any]]:
        """The ``count`` messages in the queue (waiting out moto's same-millisecond
        invisibility); with visibility timeout 0 they stay visible."""
        for _ in range(100):
            messages = self.receive()
            if len(messages) == count:
                return messages
            time.sleep(0.002)
        raise AssertionError(f"expected {count} messages, got {len(messages)}")

    def invoke(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        self.invocations += 1
        self.deliveries += len(messages)
        self.batches.append([m["Body"] for m in messages])
        response = self.handler(
            sqs_event(messages, self.queue_arn), LocalContext(timeout_s=self.timeout_s)
        )
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        assert failed <= {m["MessageId"] for m in messages}
        self.failed_deliveries += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        if self.drop_deletes_every and self.invocations % self.drop_deletes_every == 0:
            self.lost_deletes += len(done)
        elif done:
            delete_messages(self.sqs, self.queue_url, done)
        return response

    def queue_is_empty(self) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return all(value == "0" for value in attributes.values())


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def delete_messages(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


@dataclass
class Faults:
    """Injected internal failures (each on the first attempt only), and what really ran."""

    s3_slowdown_keys: set[str] = field(default_factory=set)
    model_crash_digests: set[str] = field(default_factory=set)
    dynamodb_put_failures: set[int] = field(default_factory=set)  # PutItem call numbers
    during_transcribe: Callable[[], None] | None = None
    dynamodb_puts: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    transcribed: Counter[str] = field(default_factory=Counter)  # content digest → model runs
    writes: Counter[str] = field(default_factory=Counter)  # "bucket/key" → PutObject calls
    written: dict[str, bytes] = field(default_factory=dict)  # "bucket/key" → last body


@dataclass
class World:
    module: Any
    s3: Any
    sqs: Any
    dynamodb: Any
    queue_url: str
    queue_arn: str
    dlq_url: str
    faults: Faults
    logs: LogRecords

    @property
    def settings(self) -> Settings:
        settings: Settings = self.module.settings
        return settings

    def poller(self, **kwargs: Any) -> Poller:
        return Poller(
            self.sqs, self.queue_url, self.queue_arn, self.module.lambda_handler, **kwargs
        )

    def notify(self, queue_arn: str) -> None:
        """Notify ``queue_arn`` of objects created under WATCHED in the input bucket."""
        notify_on_created(self.s3, INPUT, WATCHED, queue_arn)

    def receive_all(self, queue_url: str) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        while messages := self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", []):
            received.extend(messages)
            delete_messages(self.sqs, queue_url, messages)
        return received

    def keys(self, bucket: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def result(self, bucket: str, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def idempotency_items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.dynamodb.scan(TableName=TABLE)["Items"]
        return items


def notify_on_created(s3: Any, bucket: str, prefix: str, queue_arn: str) -> None:
    """The template's bucket notification: objects created under ``prefix`` → the queue."""
    rules = [{"Name": "prefix", "Value": prefix}]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": rules}},
                }
            ]
        },
    )


def create_queue(sqs: Any, name: str) -> tuple[str, str, str]:
    """A queue whose messages move to ``<name>-dlq`` after MAX_RECEIVE_COUNT receives."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    redrive = {"deadLetterTargetArn": queue_arn(sqs, dlq_url), "maxReceiveCount": MAX_RECEIVE_COUNT}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": "0", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    return url, queue_arn(sqs, url), dlq_url


def queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def create_idempotency_table(dynamodb: Any) -> None:
    """What template.yaml creates: key "id" (string), TTL on "expiration"."""
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=TABLE,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
    )


def throttled(operation: str, code: str) -> ClientError:
    """What botocore raises once its own retries of a throttled call are spent."""
    response: Any = {
        "Error": {"Code": code, "Message": "injected"},
        "ResponseMetadata": {"HTTPStatusCode": 503},
    }
    return ClientError(response, operation)


def install_faults(faults: Faults, s3_client: Any, dynamodb_client: Any) -> None:
    def get_object(params: dict[str, Any], **kwargs: Any) -> None:
        if params.get("Key") in faults.s3_slowdown_keys:
            faults.s3_slowdown_keys.discard(params["Key"])
            faults.injected["s3_get_object_slowdown"] += 1
            raise throttled("GetObject", "SlowDown")

    def put_object(params: dict[str, Any], **kwargs: Any) -> None:
        name = f"{params['Bucket']}/{params['Key']}"
        faults.writes[name] += 1
        faults.written[name] = bytes(params["Body"])

    def put_item(params: dict[str, Any], **kwargs: Any) -> None:
        faults.dynamodb_puts += 1
        if faults.dynamodb_puts in faults.dynamodb_put_failures:
            faults.injected["dynamodb_put_item_throttled"] += 1
            raise throttled("PutItem", "ProvisionedThroughputExceededException")

    s3_client.meta.events.register("provide-client-params.s3.GetObject", get_object)
    s3_client.meta.events.register("provide-client-params.s3.PutObject", put_object)
    dynamodb_client.meta.events.register("provide-client-params.dynamodb.PutItem", put_item)


def counting_transcribe(faults: Faults) -> Callable[..., Any]:
    real = Transcriber.transcribe

    def transcribe(self: Transcriber, audio: Any, *args: Any, **kwargs: Any) -> Any:
        # The S3 path hands over the object's temporary file, the API its bytes.
        key = digest(audio.read_bytes() if isinstance(audio, Path) else bytes(audio))
        if key in faults.model_crash_digests:
            faults.model_crash_digests.discard(key)
            faults.injected["model_crash"] += 1
            raise RuntimeError("injected onnxruntime failure")
        faults.transcribed[key] += 1
        if faults.during_transcribe is not None:
            faults.during_transcribe()
        return real(self, audio, *args, **kwargs)

    return transcribe


@pytest.fixture
def world(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
    monkeypatch.setenv(sqs_batch.IDEMPOTENCY_TABLE_ENV, TABLE)
    import handler as module

    settings = Settings(model_dir=tiny_bundle, output_bucket=OUTPUT, max_s3_audio_seconds=5.0)
    monkeypatch.setattr(module, "settings", settings)
    faults = Faults()
    monkeypatch.setattr(Transcriber, "transcribe", counting_transcribe(faults))
    logs = LogRecords()
    sqs_logger = logging.getLogger(sqs_batch.logger.name)
    level = sqs_logger.level
    sqs_logger.setLevel(logging.INFO)
    sqs_logger.addHandler(logs)
    model_cache.reset()
    s3_objects.s3_client.cache_clear()
    sqs_batch.persistence_layer.cache_clear()
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name=REGION)
            sqs = boto3.client("sqs", region_name=REGION)
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            for bucket in (INPUT, OUTPUT):
                s3.create_bucket(Bucket=bucket)
            create_idempotency_table(dynamodb)
            url, arn, dlq_url = create_queue(sqs, "asr-s3-events")
            persistence = sqs_batch.persistence_layer(TABLE)
            install_faults(faults, s3_objects.s3_client(), persistence.client)
            yield World(module, s3, sqs, dynamodb, url, arn, dlq_url, faults, logs)
    finally:
        sqs_logger.removeHandler(logs)
        sqs_logger.setLevel(level)
        s3_objects.s3_client.cache_clear()
        sqs_batch.persistence_layer.cache_clear()
        model_cache.reset()


def wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype=subtype)
    return out.getvalue()


def speech_snippets(count: int, seed: int = 11) -> list[bytes]:
    """``count`` distinct 0.3-0.5 s WAVs cut from the shared Russian clips."""
    paths = sorted((speech_dir() / "ru").glob("*.wav"))
    clips = [sf.read(str(path), dtype="float32")[0] for path in paths]
    rng = np.random.default_rng(seed)
    snippets = []
    for i in range(count):
        samples = clips[i % len(clips)]
        length = int(rng.integers(4800, 8000))
        start = int(rng.integers(0, samples.size - length))
        snippets.append(wav(samples[start : start + length]))
    return snippets


def corrupt_file(j: int, rng: np.random.Generator) -> tuple[bytes, str]:
    """A bad upload and the stable code its error record must carry."""
    kind = j % 10
    if kind in (0, 1, 2):
        return rng.bytes(int(rng.integers(50, 4000))), "audio_undecodable"
    if kind == 3:  # a real WAV cut inside its header
        return wav(np.zeros(1600, np.float32))[: 4 + j % 40], "audio_undecodable"
    if kind == 4:
        return b"", "audio_empty"
    if kind == 5:
        return f"meeting notes {j}: not audio\n".encode() * 20, "audio_undecodable"
    if kind == 6:
        return wav(np.full(8000, np.nan, np.float32), subtype="FLOAT"), "audio_non_finite"
    if kind == 7:
        return wav(np.zeros(0, np.float32)), "audio_empty"
    if kind == 8:  # 6 s of 8 kHz silence; the limit here is 5 s
        return wav(np.zeros(48000, np.float32), rate=8000), "audio_too_long"
    magic = (b"fLaC", b"OggS", b"RIFF\x00\x00\x00\x00WAVE")[j % 3]
    return magic + rng.bytes(int(rng.integers(50, 4000))), "audio_undecodable"


@dataclass(frozen=True)
class Upload:
    key: str
    data: bytes
    code: str | None  # the expected error code; None: a transcript


def make_uploads(total: int) -> list[Upload]:
    """Every tenth upload is corrupt; keys have spaces, "+" and Cyrillic (URL-encoded by S3)."""
    snippets = iter(speech_snippets(total - total // 10))
    rng = np.random.default_rng(5)
    uploads = []
    for i in range(total):
        if i % 7 == 0:
            key = f"{WATCHED}ru/запись {i:04d}+final.wav"
        else:
            key = f"{WATCHED}batch-{i // 100:02d}/clip {i:04d}.wav"
        if i % 10 == 7:
            data, code = corrupt_file(i // 10, rng)
            uploads.append(Upload(key, data, code))
        else:
            uploads.append(Upload(key, next(snippets), None))
    return uploads


def notification_key(body: str) -> str | None:
    """The (decoded) key an S3 notification names; None for anything else."""
    try:
        return unquote_plus(json.loads(body)["Records"][0]["s3"]["object"]["key"])
    except (ValueError, LookupError, TypeError):
        return None


def upload_and_capture(
    world: World, uploads: list[Upload]
) -> tuple[str, dict[str, str], dict[str, str]]:
    """Upload through S3 → SQS notifications into a capture queue.

    Returns the s3:TestEvent body, each key's notification body and each key's ETag."""
    capture_url, capture_arn, _ = create_queue(world.sqs, "captured-s3-events")
    world.notify(capture_arn)
    etags: dict[str, str] = {}
    bodies: list[str] = []
    for n, upload in enumerate(uploads, 1):
        response = world.s3.put_object(Bucket=INPUT, Key=upload.key, Body=upload.data)
        etags[upload.key] = response["ETag"].strip('"')
        if n % 20 == 0 or n == len(uploads):
            bodies.extend(m["Body"] for m in world.receive_all(capture_url))
    by_key = {notification_key(body): body for body in bodies}
    test_event = by_key.pop(None)
    assert json.loads(test_event)["Event"] == "s3:TestEvent"
    assert len(bodies) == len(uploads) + 1 and set(by_key) == set(etags)
    return test_event, {str(k): v for k, v in by_key.items()}, etags


POISON = [
    "this is not JSON, and not an S3 notification",
    json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": INPUT}}}]}),
]
POISON_REASONS = {"the message body is not JSON", "an S3 record names no bucket or no key"}


@pytest.mark.slow
def test_a_thousand_uploads_give_exactly_one_result_each(world: World) -> None:
    started = time.perf_counter()
    uploads = make_uploads(UPLOADS)
    total, valid = len(uploads), [u for u in uploads if u.code is None]
    test_event, notifications, etags = upload_and_capture(world, uploads)

    # Relay the notifications to the function's queue as SQS would deliver them at worst:
    # 10 % twice (half right after the original, half once it was done), the s3:TestEvent,
    # two poison messages; and fail some first attempts inside (S3, model, DynamoDB).
    rng = np.random.default_rng(3)
    twice = [uploads[i].key for i in rng.choice(total, size=total // 10, replace=False)]
    at_once, late = set(twice[: len(twice) // 2]), twice[len(twice) // 2 :]
    unlucky = [valid[i] for i in rng.choice(len(valid), size=15, replace=False)]
    world.faults.s3_slowdown_keys = {u.key for u in unlucky[:10]}
    world.faults.model_crash_digests = {digest(u.data) for u in unlucky[10:]}
    world.faults.dynamodb_put_failures = {total // 10, total * 4 // 10, total * 8 // 10}
    poller = world.poller(drop_deletes_every=25)  # and the poller loses some deletes
    poller.run(relay_order(uploads, notifications, test_event, at_once))
    transcribed, written = world.faults.transcribed.total(), world.faults.writes.total()
    poller.run([notifications[key] for key in late] + [test_event])
    elapsed = time.perf_counter() - started

    # The late duplicates changed nothing; every upload was transcribed once and has one
    # result object, written once, that carries its ETag and the expected outcome.
    assert (world.faults.transcribed.total(), world.faults.writes.total()) == (transcribed, written)
    assert world.faults.transcribed == Counter(digest(u.data) for u in uploads)
    outputs = {f"{OUTPUT}/transcripts/{u.key}.json": u for u in uploads}
    assert {f"{OUTPUT}/{key}" for key in world.keys(OUTPUT)} == set(outputs)
    assert world.faults.writes == Counter(set(outputs))
    statuses = Counter(
        check_result(world.faults.written[name], u, etags) for name, u in outputs.items()
    )
    assert statuses == Counter(done=len(valid), failed=total - len(valid))
    for name in list(outputs)[:: total // 10]:  # what was written is what S3 holds
        stored = world.result(OUTPUT, name.removeprefix(f"{OUTPUT}/"))
        assert stored == json.loads(world.faults.written[name])

    # Each injected fault cost one failed delivery; the poison messages failed every time
    # and are now in the dead-letter queue, each failure explained in the log.
    assert world.faults.injected == Counter(
        s3_get_object_slowdown=10, model_crash=5, dynamodb_put_item_throttled=3
    )
    assert poller.failed_deliveries == 18 + len(POISON) * MAX_RECEIVE_COUNT
    dead = world.receive_all(world.dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(POISON)
    delivered = Counter(body for batch in poller.batches for body in batch)
    assert [delivered[body] for body in POISON] == [MAX_RECEIVE_COUNT] * len(POISON)
    explained = world.logs.matching("is not an S3 notification")
    assert len(explained) == len(POISON) * MAX_RECEIVE_COUNT
    assert {r.__dict__["reason"] for r in explained} == POISON_REASONS
    assert len(world.logs.matching("s3:TestEvent acknowledged")) == 2

    # Duplicates shared batches with their originals; every delivery of a notification
    # that neither failed nor was the first processing returned the stored outcome.
    keys_per_batch = [Counter(map(notification_key, batch)) for batch in poller.batches]
    shared = sum(1 for c in keys_per_batch for key, n in c.items() if key and n > 1)
    assert shared > 0
    bodies = set(notifications.values())
    deliveries = sum(1 for batch in poller.batches for body in batch if body in bodies)
    replays = len(world.logs.matching("duplicate delivery"))
    assert replays == deliveries - 18 - total
    assert replays >= len(twice)
    items = world.idempotency_items()
    assert len(items) == total and {item["status"]["S"] for item in items} == {"COMPLETED"}

    model_runs = world.faults.transcribed.total()
    # The transcripts are the model's own (a sample).
    transcriber = Transcriber.from_dir(world.settings.model_dir)
    for upload in valid[:: len(valid) // 10]:
        result = json.loads(world.faults.written[f"{OUTPUT}/transcripts/{upload.key}.json"])
        assert result["transcript"]["text"] == transcriber.transcribe(upload.data).text
    write_figures(
        {
            "uploads": total,
            "valid_audio": len(valid),
            "corrupt": total - len(valid),
            "duplicate_deliveries": {"right_after_original": len(at_once), "after_done": len(late)},
            "s3_test_events": 2,
            "poison_messages": len(POISON),
            "deletes_lost_then_redelivered": poller.lost_deletes,
            "injected_internal_faults": dict(sorted(world.faults.injected.items())),
            "sqs_deliveries": poller.deliveries,
            "failed_deliveries_retried": poller.failed_deliveries,
            "batches_holding_an_object_twice": shared,
            "replayed_from_idempotency_store": replays,
            "transcriptions": model_runs,
            "result_objects": len(outputs),
            "results_transcripts": statuses["done"],
            "results_error_records": statuses["failed"],
            "dead_letter_queue": len(dead),
            "max_receive_count": MAX_RECEIVE_COUNT,
            "lambda_invocations": poller.invocations,
            "wall_seconds": round(elapsed, 1),
        }
    )


def relay_order(
    uploads: list[Upload], notifications: dict[str, str], test_event: str, at_once: set[str]
) -> list[str]:
    """The test event first, each notification (twice in a row for ``at_once``), poison
    messages at a third and two thirds of the way."""
    poison_at = {len(uploads) // 3: POISON[0], 2 * len(uploads) // 3: POISON[1]}
    relay = [test_event]
    for n, upload in enumerate(uploads):
        relay.append(notifications[upload.key])
        if upload.key in at_once:
            relay.append(notifications[upload.key])
        if n in poison_at:
            relay.append(poison_at[n])
    return relay


def check_result(body: bytes, upload: Upload, etags: dict[str, str]) -> str:
    result = json.loads(body)
    assert result["input"] == {"bucket": INPUT, "key": upload.key, "etag": etags[upload.key]}
    if upload.code is None:
        assert result["status"] == "done", result
        assert result["transcript"]["model_id"] == "tiny-random"
    else:
        assert (result["status"], result["error"]["code"]) == ("failed", upload.code), upload.key
    return str(result["status"])


def write_figures(figures: dict[str, Any]) -> None:
    if UPLOADS == 1000:  # the README quotes the full run only
        RESULTS_FILE.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def test_results_beside_the_inputs_never_trigger_the_function_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outputs in the input bucket, under the watched prefix: S3 notifies the queue of
    # every result object the function writes.
    prefix = f"{WATCHED}transcripts/"
    settings = replace(world.settings, output_bucket=INPUT, output_prefix=prefix)
    monkeypatch.setattr(world.module, "settings", settings)
    world.notify(world.queue_arn)
    good, other = speech_snippets(2, seed=1)
    inputs = {
        f"{WATCHED}a.wav": good,
        f"{WATCHED}b.wav": b"not audio" * 50,
        f"{prefix}late.wav": other,  # audio under the output prefix is still an input
    }
    for key, data in inputs.items():
        world.s3.put_object(Bucket=INPUT, Key=key, Body=data)
    world.s3.put_object(Bucket=INPUT, Key=f"{prefix}forged.wav.json", Body=b"{}")
    poller = world.poller()
    poller.run()

    outputs = {f"{prefix}{key}.json" for key in inputs}
    assert set(world.keys(INPUT)) == {*inputs, *outputs, f"{prefix}forged.wav.json"}
    assert world.faults.writes == Counter(f"{INPUT}/{key}" for key in outputs)
    assert world.faults.transcribed.total() == 3
    # Each result's own notification (and the forged one) was acknowledged and skipped.
    assert len(world.logs.matching("it is a result object")) == len(outputs) + 1
    assert poller.failed_deliveries == 0 and not world.receive_all(world.dlq_url)


def test_a_delivery_while_another_invocation_holds_the_object_is_retried(world: World) -> None:
    world.notify(world.queue_arn)
    (clip,) = speech_snippets(1)
    world.s3.put_object(Bucket=INPUT, Key=f"{WATCHED}one.wav", Body=clip)
    poller = world.poller()
    test_event, original = poller.receive_exactly(2)
    assert poller.invoke([test_event]) == {"batchItemFailures": []}
    duplicate = {**original, "MessageId": "duplicate-1", "ReceiptHandle": "r-1"}
    nested: list[dict[str, Any]] = []

    def concurrent_delivery() -> None:  # while the model runs, the duplicate arrives
        world.faults.during_transcribe = None
        nested.append(poller.invoke([duplicate]))

    world.faults.during_transcribe = concurrent_delivery
    assert poller.invoke([original]) == {"batchItemFailures": []}
    assert nested == [{"batchItemFailures": [{"itemIdentifier": "duplicate-1"}]}]
    assert len(world.logs.matching("in progress elsewhere")) == 1
    # Redelivered later, the duplicate gets the stored outcome.
    poller.run([original["Body"]])
    assert world.faults.transcribed.total() == 1 and world.faults.writes.total() == 1
    assert len(world.logs.matching("duplicate delivery")) == 1


def test_internal_faults_are_retried_not_recorded_as_user_errors(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.notify(world.queue_arn)
    (clip,) = speech_snippets(1)
    world.s3.put_object(Bucket=INPUT, Key=f"{WATCHED}one.wav", Body=clip)
    poller = world.poller()
    test_event, message = poller.receive_exactly(2)
    poller.invoke([test_event])

    # Too little time left in the invocation: not started.
    short = replace(poller, timeout_s=sqs_batch.START_MARGIN_MS / 1000 - 1)
    failures = short.invoke([message])["batchItemFailures"]
    assert failures == [{"itemIdentifier": message["MessageId"]}]
    assert len(world.logs.matching("not finished: retried")) == 1
    # A broken bundle (a 5xx AsrError) is our fault, not the upload's.
    settings = world.settings
    model_cache.reset()
    broken = replace(settings, model_dir=settings.model_dir / "missing")
    monkeypatch.setattr(world.module, "settings", broken)
    (message,) = poller.receive_exactly(1)
    failures = poller.invoke([message])["batchItemFailures"]
    assert failures == [{"itemIdentifier": message["MessageId"]}]
    assert not world.faults.writes and not world.idempotency_items()

    model_cache.reset()
    monkeypatch.setattr(world.module, "settings", settings)
    poller.run()  # the third and last delivery before the dead-letter queue
    assert world.faults.writes == Counter({f"{OUTPUT}/transcripts/{WATCHED}one.wav.json": 1})
    assert world.result(OUTPUT, f"transcripts/{WATCHED}one.wav.json")["status"] == "done"


def test_other_s3_events_are_acknowledged_without_output(world: World) -> None:
    removed = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": INPUT}, "object": {"key": "uploads/gone.wav"}},
            }
        ]
    }
    poller = world.poller()
    poller.run([json.dumps(removed)])
    assert poller.failed_deliveries == 0 and not world.faults.writes
    assert len(world.logs.matching("not ObjectCreated")) == 1


def test_without_an_idempotency_table_the_whole_batch_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(sqs_batch.IDEMPOTENCY_TABLE_ENV)
    poller = world.poller()
    poller.send([json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})])
    with pytest.raises(RuntimeError, match="IDEMPOTENCY_TABLE"):
        poller.invoke(poller.receive_exactly(1))


def s3_record(key: str = "uploads/a%20b.wav") -> dict[str, Any]:
    return {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": INPUT}, "object": {"key": key, "eTag": "e1"}},
    }


def test_parse_notification_accepts_s3_sns_wrapped_and_test_events() -> None:
    direct = json.dumps({"Records": [s3_record()]})
    assert sqs_batch.parse_notification(direct).records == [s3_record()]
    sns = json.dumps({"Type": "Notification", "TopicArn": "arn:t", "Message": direct})
    assert sqs_batch.parse_notification(sns).records == [s3_record()]
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": INPUT})
    assert sqs_batch.parse_notification(test_event).test_event


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"Records": []}', "no Records"),
        ('{"detail-type": "Object Created"}', "no Records"),
        ('{"Records": [{"eventSource": "aws:sqs"}]}', "not aws:s3"),
        (json.dumps({"Records": [s3_record(key="")]}), "no bucket or no key"),
        ('{"Type": "Notification", "Message": 5}', "SNS envelope"),
        ('{"Type": "Notification", "Message": "{oops"}', "SNS Message is not JSON"),
    ],
)
def test_parse_notification_refuses_what_is_not_an_s3_notification(body: str, reason: str) -> None:
    with pytest.raises(sqs_batch.MalformedMessage, match=reason):
        sqs_batch.parse_notification(body)


def test_sqs_events_are_told_apart_from_other_events() -> None:
    message = {"eventSource": "aws:sqs", "messageId": "m", "body": "{}"}
    assert sqs_batch.is_sqs_event({"Records": [message]})
    assert not sqs_batch.is_sqs_event({"Records": [{"eventSource": "aws:sqs"}]})
    assert not sqs_batch.is_sqs_event({"Records": [s3_record()]})
    assert not sqs_batch.is_sqs_event({"Records": []})
