"""Lambda entry point: API Gateway (HTTP API payload 2.0 and REST API 1.0) and S3 events.

Thin by design: requests become audio bytes (asr_service.api_request), audio becomes a
Transcript (asr.transcribe), and errors become responses in one place (``_error_response``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from asr.errors import AsrError, AudioTooLong
from asr.transcribe import Transcriber
from asr_service import model_cache
from asr_service.api_request import audio_from_request
from asr_service.s3_events import is_s3_event, process_record
from asr_service.settings import Settings
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

# The template sets POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE; these are defaults.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "asr"))
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LambdaAsr"),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "asr"),
)
settings = Settings.from_env()

http_api = APIGatewayHttpResolver()
rest_api = APIGatewayRestResolver()


def _transcriber() -> Transcriber:
    return model_cache.get_transcriber(settings)


def _register_routes(app: ApiGatewayResolver) -> None:
    @app.post("/transcribe")
    def transcribe() -> dict[str, Any]:
        event = app.current_event
        audio = audio_from_request(
            event.body,
            bool(event.is_base64_encoded),
            event.headers.get("content-type") or event.headers.get("Content-Type") or "",
            settings,
        )
        try:
            transcript = _transcriber().transcribe(
                audio, max_duration_s=settings.max_sync_audio_seconds
            )
        except AudioTooLong as exc:
            raise AudioTooLong(
                f"{exc.message}. Audio longer than {settings.max_sync_audio_seconds:g} s is "
                "transcribed through S3: upload it to the input bucket and read "
                "<key>.json from the output bucket."
            ) from exc
        _record_metrics(transcript.duration, transcript.timings.total)
        return {**transcript.to_dict(), "request_id": app.lambda_context.aws_request_id}

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
    metrics.add_metric(name=f"Error_{code}", unit=MetricUnit.Count, value=1)
    request_id = app.lambda_context.aws_request_id if app.lambda_context else None
    logger.info("request refused", extra={"status": status, "code": code, "error": message})
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message}, "request_id": request_id},
    )


def _record_metrics(audio_seconds: float, processing_seconds: float) -> None:
    metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=audio_seconds)
    metrics.add_metric(name="ProcessingSeconds", unit=MetricUnit.Seconds, value=processing_seconds)
    if audio_seconds > 0:
        rtf = processing_seconds / audio_seconds
        metrics.add_metric(name="RealTimeFactor", unit=MetricUnit.NoUnit, value=rtf)


_register_routes(http_api)
_register_routes(rest_api)


def _handle_s3(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcomes, internal_failures = [], 0
    for record in event["Records"]:
        try:
            outcome = process_record(record, settings, _transcriber, context.aws_request_id)
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
        if outcome.transcript is not None:
            _record_metrics(outcome.transcript.duration, outcome.transcript.timings.total)
        elif outcome.error_code:
            metrics.add_metric(name=f"Error_{outcome.error_code}", unit=MetricUnit.Count, value=1)
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


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_s3_event(event):
        return _handle_s3(event, context)
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        logger.warning(
            "unsupported event",
            extra={"keys": sorted(event)[:10] if isinstance(event, dict) else None},
        )
        body = {"code": "unsupported_event", "message": "expected an API Gateway or S3 event"}
        return {"statusCode": 400, "body": json.dumps({"error": body})}
    app = http_api if event.get("version") == "2.0" else rest_api
    return app.resolve(event, context)
