"""S3 notifications through SQS: every object gets exactly one result, whatever the delivery.

S3 delivers notifications at least once and SQS redelivers what a function did not finish,
so the same object can arrive many times. Each SQS message is handled on its own
(Powertools ``BatchProcessor``; the function reports ``batchItemFailures``):

- An S3 notification (``{"Records": [{"eventSource": "aws:s3", ...}]}``, also inside an SNS
  envelope): each ``ObjectCreated`` record is processed idempotently on the object version
  (bucket, key, ETag, version id) and the output location, with Powertools idempotency on
  a DynamoDB table. The first delivery transcribes and writes the result object; any later
  one gets the stored outcome back — no second transcription, no second write. Records of
  other S3 events and keys that are our own outputs are acknowledged and logged.
- ``s3:TestEvent`` (S3 sends one when the notification is configured): acknowledged, logged.
- Anything else is not ours to drop: it is logged with the reason and reported as failed,
  so SQS redelivers it until ``maxReceiveCount`` and then moves it to the dead-letter queue.

Per object: a user error (corrupt audio, too long, missing object: a 4xx ``AsrError``) is a
final outcome — its error record is written and the message succeeds. An internal fault
(S3 or DynamoDB errors, a broken bundle, a deadline, anything unexpected) writes nothing,
clears the idempotency record and fails only that message, so SQS retries it and, if it
keeps failing, keeps it in the dead-letter queue, whose redrive is safe for the same reason.
A delivery that finds the object in progress in another invocation fails too and is
retried after the visibility timeout, when the stored outcome is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from asr.errors import DeadlineExceeded
from asr.transcribe import Transcriber
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from . import job_tracking
from .budget import invocation_deadline
from .s3_events import (
    ObjectRef,
    RecordOutcome,
    is_object_created,
    is_output_object,
    process_record,
)
from .settings import Settings

IDEMPOTENCY_TABLE_ENV = "IDEMPOTENCY_TABLE"
# Idempotency records are keyed "<prefix>#<sha256 of the object identity>".
IDEMPOTENCY_KEY_PREFIX = "asr-s3-object"
# A redelivery within this window returns the stored outcome. SQS keeps messages at most
# 14 days; a dead-letter redrive after the window transcribes again and overwrites the
# result object with an equal one (same key), so it still leaves one object per input.
IDEMPOTENCY_EXPIRY_SECONDS = 7 * 24 * 3600
# An object is not started with less time left than this: the message is retried rather
# than cut off by the Lambda timeout. (A cut-off one is safe too: its in-progress record
# expires at the invocation's deadline, and the redelivery takes it over.)
START_MARGIN_MS = 10_000

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "asr"), child=True)


class MalformedMessage(Exception):
    """The SQS message is not an S3 notification this function can act on."""


@dataclass(frozen=True)
class S3Notification:
    records: list[dict[str, Any]]
    test_event: bool = False


def parse_notification(body: str) -> S3Notification:
    """An SQS message body → its S3 notification; raises ``MalformedMessage`` otherwise."""
    document = _json(body, "the message body")
    if isinstance(document, dict) and document.get("Type") == "Notification":
        # S3 → SNS → SQS without raw delivery: the notification is the SNS "Message".
        message = document.get("Message")
        if not isinstance(message, str):
            raise MalformedMessage("an SNS envelope without a string Message")
        document = _json(message, "the SNS Message")
    if not isinstance(document, dict):
        raise MalformedMessage(f"the body is JSON {type(document).__name__}, not an object")
    if document.get("Event") == "s3:TestEvent":
        return S3Notification(records=[], test_event=True)
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedMessage("the body has no Records list")
    if not all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records):
        raise MalformedMessage("a record's eventSource is not aws:s3")
    for record in records:
        ref = ObjectRef.from_record(record)
        if not ref.bucket or not ref.key:
            raise MalformedMessage("an S3 record names no bucket or no key")
    return S3Notification(records=records)


def is_sqs_event(event: Any) -> bool:
    """A Lambda SQS event: Records from aws:sqs, each with a message id and a body."""
    records = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(records, list)
        and bool(records)
        and all(
            isinstance(r, dict)
            and r.get("eventSource") == "aws:sqs"
            and isinstance(r.get("messageId"), str)
            and isinstance(r.get("body"), str)
            for r in records
        )
    )


@cache
def persistence_layer(table_name: str) -> DynamoDBPersistenceLayer:
    """One per container (its DynamoDB client is reused); tests clear it between mocks."""
    return DynamoDBPersistenceLayer(table_name=table_name)


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    return {**response, "replayed": True} if isinstance(response, dict) else response


IDEMPOTENCY_CONFIG = IdempotencyConfig(
    expires_after_seconds=IDEMPOTENCY_EXPIRY_SECONDS,
    raise_on_no_idempotency_key=True,
    hash_function="sha256",
    response_hook=_mark_replayed,
)


@dataclass(frozen=True)
class _Batch:
    """What every message of one invocation needs; ``process`` is the idempotent unit."""

    settings: Settings
    transcriber_factory: Callable[[], Transcriber]
    context: LambdaContext
    on_outcome: Callable[[RecordOutcome], None] | None
    process: Callable[..., dict[str, Any]]


def handle_sqs_event(
    event: dict[str, Any],
    context: LambdaContext,
    settings: Settings,
    transcriber_factory: Callable[[], Transcriber],
    *,
    on_outcome: Callable[[RecordOutcome], None] | None = None,
    table_name: str | None = None,
) -> PartialItemFailureResponse:
    """Process an SQS batch; returns the messages to retry (``batchItemFailures``).

    ``on_outcome`` sees each object transcribed or refused in this invocation (not the
    stored outcomes of redeliveries): the handler's metrics. ``table_name`` defaults to
    ``$IDEMPOTENCY_TABLE``; without one the invocation fails (every message is retried),
    since processing without it could transcribe and write an object twice.
    """
    table = table_name or os.environ.get(IDEMPOTENCY_TABLE_ENV)
    if not table:
        raise RuntimeError(f"{IDEMPOTENCY_TABLE_ENV} is not set: cannot process S3 objects")
    # In-progress records expire at this invocation's deadline (Powertools reads the
    # remaining time from the registered context), so a timed-out object is retried.
    IDEMPOTENCY_CONFIG.register_lambda_context(context)
    process = idempotent_function(
        _process_object,
        data_keyword_argument="identity",
        persistence_store=persistence_layer(table),
        config=IDEMPOTENCY_CONFIG,
        key_prefix=IDEMPOTENCY_KEY_PREFIX,
    )
    batch = _Batch(settings, transcriber_factory, context, on_outcome, process)
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(
        event=event,
        record_handler=lambda record: _handle_message(record, batch),
        processor=processor,
        context=context,
    )


def _handle_message(message: SQSRecord, batch: _Batch) -> list[dict[str, Any]]:
    log_keys = {
        "message_id": message.message_id,
        "receive_count": message.attributes.approximate_receive_count,
    }
    try:
        notification = parse_notification(message.body)
    except MalformedMessage as exc:
        logger.error(
            "SQS message is not an S3 notification: failed, so SQS retries it and then "
            "moves it to the dead-letter queue",
            extra={**log_keys, "reason": str(exc), "body_bytes": len(message.body.encode())},
        )
        raise
    if notification.test_event:
        logger.info("s3:TestEvent acknowledged (the bucket notification works)", extra=log_keys)
        return []
    return [_handle_s3_record(record, batch, log_keys) for record in notification.records]


def _handle_s3_record(
    record: dict[str, Any], batch: _Batch, log_keys: dict[str, Any]
) -> dict[str, Any]:
    ref = ObjectRef.from_record(record)
    log_keys = {**log_keys, "bucket": ref.bucket, "key": ref.key, "etag": ref.etag}
    if not is_object_created(record):
        event_name = record.get("eventName")
        logger.warning(
            "S3 event ignored: not ObjectCreated", extra={**log_keys, "event": event_name}
        )
        return {"status": "ignored", "bucket": ref.bucket, "key": ref.key}
    if is_output_object(ref.bucket, ref.key, batch.settings):
        logger.info("S3 object skipped: it is a result object, never an input", extra=log_keys)
        return {"status": "skipped", "bucket": ref.bucket, "key": ref.key}
    remaining_ms = batch.context.get_remaining_time_in_millis()
    try:
        if remaining_ms < START_MARGIN_MS:
            raise DeadlineExceeded(
                f"{remaining_ms} ms left in this invocation; the object is left for a retry"
            )
        summary = batch.process(record, batch, identity=_identity(ref, batch.settings))
    except IdempotencyAlreadyInProgressError:
        logger.info("S3 object in progress elsewhere: retried later", extra=log_keys)
        raise
    except DeadlineExceeded as exc:
        logger.warning("S3 object not finished: retried", extra={**log_keys, "reason": exc.message})
        _after_failure(ref, batch, log_keys, exc)
        raise
    except Exception as exc:
        logger.exception("S3 object failed internally: SQS retries the message", extra=log_keys)
        _after_failure(ref, batch, log_keys, exc)
        raise
    if summary.get("replayed"):
        logger.info("duplicate delivery: stored outcome returned", extra={**log_keys, **summary})
    else:
        logger.info("S3 object processed", extra={**log_keys, **summary})
    return summary


def _after_failure(
    ref: ObjectRef, batch: _Batch, log_keys: dict[str, Any], exc: BaseException
) -> None:
    """A job whose upload failed on the queue's last delivery is marked failed."""
    receive_count = int(log_keys.get("receive_count") or 0)
    job_tracking.after_internal_failure(ref.bucket, ref.key, batch.settings, receive_count, exc)


def _identity(ref: ObjectRef, settings: Settings) -> dict[str, Any]:
    """The idempotency key: this object version, and where its result goes."""
    return {
        "bucket": ref.bucket,
        "key": ref.key,
        "etag": ref.etag,
        "version_id": ref.version_id,
        "output": f"{settings.output_bucket or ref.bucket}/{settings.output_prefix}",
    }


def _process_object(
    record: dict[str, Any], batch: _Batch, *, identity: dict[str, Any]
) -> dict[str, Any]:
    """The idempotent unit: runs once per identity; what it returns is stored and replayed."""
    outcome = process_record(
        record,
        batch.settings,
        batch.transcriber_factory,
        batch.context.aws_request_id,
        record_internal_errors=False,
        deadline=invocation_deadline(batch.context, batch.settings),
    )
    if batch.on_outcome is not None:
        try:
            batch.on_outcome(outcome)
        except Exception:
            # The result is written; a failing observer must not make it be redone.
            logger.exception("outcome observer failed")
    return {
        "status": outcome.status,
        "output_key": outcome.output_key,
        "error_code": outcome.error_code,
    }


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedMessage(f"{what} is not JSON") from exc
