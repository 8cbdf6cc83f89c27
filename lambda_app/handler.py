"""Lambda entry point: API Gateway (HTTP API payload 2.0, REST API 1.0), SQS and S3 events.

Thin by design: requests become audio bytes and decoding options (asr_service.api_request),
audio becomes a Transcript (asr.transcribe), and errors become responses in one place
(``_error_response``).
Upload notifications arrive through SQS (asr_service.sqs_batch: idempotent, partial batch
failures); direct S3 events are still accepted for stacks wired without the queue.
"""

from __future__ import annotations

import json
from typing import Any

from asr.errors import AsrError, AudioTooLong
from asr.formats import render, transcript_document
from asr.transcribe import Transcriber
from asr_service import (
    emotion_route,
    job_store,
    jobs,
    model_cache,
    openai_route,
    s3_objects,
    snapstart,
    sqs_batch,
)
from asr_service.api_request import transcribe_request
from asr_service.budget import api_deadline, api_limits, invocation_deadline
from asr_service.observability import (
    correlation_id,
    logger,
    metrics,
    record_error,
    record_model_load,
    record_transcription,
    tracer,
)
from asr_service.output_selection import requested_format
from asr_service.s3_events import RecordOutcome, is_s3_event, process_record
from asr_service.settings import Settings
from asr_service.sqs_batch import handle_sqs_event, is_sqs_event
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

settings = Settings.from_env()

http_api = APIGatewayHttpResolver()
rest_api = APIGatewayRestResolver()


@tracer.capture_method(capture_response=False)
def _transcriber() -> Transcriber:
    return model_cache.get_transcriber(settings)


def _drop_connections() -> None:
    """After a SnapStart restore: clients made before the snapshot hold stale connections."""
    s3_objects.s3_client.cache_clear()
    sqs_batch.persistence_layer.cache_clear()
    job_store.dynamodb_client.cache_clear()
    jobs.presign_client.cache_clear()


# Load the model during init when it ships with the function: SnapStart snapshots it loaded,
# and on-demand inits get it before the first request. A failure here is logged and left
# for the first request to report (a 500 bundle_invalid), rather than failing every init.
# Not through the traced _transcriber: init runs outside any X-Ray segment.
if snapstart.should_preload(settings):
    try:
        model_cache.get_transcriber(settings)
    except Exception:
        logger.exception("model preload at init failed; requests will retry the load")
snapstart.register_after_restore(_drop_connections)


def _register_routes(app: ApiGatewayResolver) -> None:
    @app.post("/transcribe")
    def transcribe() -> dict[str, Any] | Response[str]:
        event = app.current_event
        output = requested_format(
            event.query_string_parameters,
            event.headers.get("accept") or event.headers.get("Accept"),
        )
        deadline = api_deadline(app.lambda_context, settings)
        request = transcribe_request(
            event.body,
            bool(event.is_base64_encoded),
            event.headers.get("content-type") or event.headers.get("Content-Type") or "",
            event.query_string_parameters,
            settings,
        )
        try:
            transcript = _transcriber().transcribe(
                request.audio,
                limits=api_limits(settings),
                deadline=deadline,
                decoding=request.decoding,
                channels=request.channels,
            )
        except AudioTooLong as exc:
            raise AudioTooLong(
                f"{exc.message}. Audio longer than {settings.max_sync_audio_seconds:g} s is "
                "transcribed through S3: upload it to the input bucket and read "
                "<key>.json from the output bucket."
            ) from exc
        record_transcription(transcript.duration, transcript.timings.total)
        request_id = app.lambda_context.aws_request_id
        if output == "json":
            return {**transcript_document(transcript), "request_id": request_id}
        rendered = render(transcript, output)
        return Response(200, rendered.content_type, rendered.body, {"x-request-id": request_id})

    # Settings are read per request (tests replace handler.settings after import).
    openai_route.register(app, lambda: settings, _transcriber)
    jobs.register(app, lambda: settings, _transcriber)
    emotion_route.register(app, lambda: settings, _transcriber)

    @app.get("/health")
    def health() -> dict[str, Any]:
        transcriber = _transcriber()
        return {"status": "ok", "model_id": transcriber.model_id}

    @app.exception_handler(AsrError)  # type: ignore[untyped-decorator]
    def asr_error(exc: AsrError) -> Response[Any]:
        return _error_response(exc.http_status, exc.code, exc.message, app)

    @app.not_found
    def not_found(exc: NotFoundError) -> Response[Any]:
        path = app.current_event.path
        return _error_response(404, "not_found", f"no route {path}; use POST /transcribe", app)

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def internal_error(exc: Exception) -> Response[Any]:
        logger.exception("internal error")
        message = "internal error; quote the request id when reporting it"
        return _error_response(500, "internal_error", message, app)


def _error_response(status: int, code: str, message: str, app: ApiGatewayResolver) -> Response[Any]:
    record_error(code)
    request_id = app.lambda_context.aws_request_id if app.lambda_context else None
    logger.info("request refused", extra={"status": status, "code": code, "error": message})
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message}, "request_id": request_id},
    )


_register_routes(http_api)
_register_routes(rest_api)


def _handle_s3(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcomes, internal_failures = [], 0
    for record in event["Records"]:
        try:
            outcome = process_record(
                record,
                settings,
                _transcriber,
                context.aws_request_id,
                deadline=invocation_deadline(context, settings),
            )
        except Exception:
            logger.exception("S3 record failed; an error record was written, Lambda will retry")
            internal_failures += 1
            continue
        outcomes.append(outcome)
        logger.info(
            "S3 record processed",
            extra={
                "bucket": outcome.bucket,
                "key": outcome.key,
                "status": outcome.status,
                "output_key": outcome.output_key,
                "error_code": outcome.error_code,
            },
        )
        _record_outcome(outcome)
    if internal_failures:
        raise RuntimeError(f"{internal_failures} S3 record(s) failed internally; retrying")
    return {
        "processed": [
            {
                "bucket": o.bucket,
                "key": o.key,
                "status": o.status,
                "output_key": o.output_key,
                "error_code": o.error_code,
            }
            for o in outcomes
        ]
    }


def _handle_sqs(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """S3 notifications through SQS: a partial batch response (asr_service.sqs_batch)."""
    response = handle_sqs_event(event, context, settings, _transcriber, on_outcome=_record_outcome)
    return dict(response)


def _record_outcome(outcome: RecordOutcome) -> None:
    if outcome.transcript is not None:
        record_transcription(outcome.transcript.duration, outcome.transcript.timings.total)
    elif outcome.error_code:
        record_error(outcome.error_code)


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.set_correlation_id(correlation_id(event))
    try:
        return _dispatch(event, context)
    finally:
        record_model_load()


def _dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_sqs_event(event):
        return _handle_sqs(event, context)
    if is_s3_event(event):
        return _handle_s3(event, context)
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        logger.warning(
            "unsupported event",
            extra={"keys": sorted(event)[:10] if isinstance(event, dict) else None},
        )
        message = "expected an API Gateway, SQS (S3 notification) or S3 event"
        body = {"code": "unsupported_event", "message": message}
        return {"statusCode": 400, "body": json.dumps({"error": body})}
    app = http_api if event.get("version") == "2.0" else rest_api
    return app.resolve(event, context)
