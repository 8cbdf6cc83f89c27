"""Logs, metrics and traces: one Logger, one Metrics, one Tracer for the function.

Metrics (CloudWatch embedded metric format, namespace POWERTOOLS_METRICS_NAMESPACE):

* per transcription: ``AudioSeconds``, ``ProcessingSeconds``, ``RealTimeFactor``;
* per container: ``ColdStart`` (Powertools) and ``ModelLoadMs`` (plus ``ModelDownloadMs``
  when the bundle came from S3), reported by the first invocation after the load;
* per failure: ``Errors`` with an ``ErrorCode`` dimension, one metric per stable code, so
  a dashboard can split 4xx causes without a metric per code name.

Correlation ids: the API Gateway request id for API calls, the SQS message id or the
S3 object for upload processing; every log line of the invocation carries it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from . import model_cache
from .model_cache import ModelLoad

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "asr")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LambdaAsr")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Disabled outside Lambda and when POWERTOOLS_TRACE_DISABLED is true (template: Tracing).
tracer = Tracer(service=SERVICE)
_reported_load: ModelLoad | None = None


def record_transcription(audio_seconds: float, processing_seconds: float) -> None:
    metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=audio_seconds)
    metrics.add_metric(name="ProcessingSeconds", unit=MetricUnit.Seconds, value=processing_seconds)
    if audio_seconds > 0:
        rtf = processing_seconds / audio_seconds
        metrics.add_metric(name="RealTimeFactor", unit=MetricUnit.NoUnit, value=rtf)


def record_error(code: str) -> None:
    # A separate EMF document: the ErrorCode dimension must not split the request's other
    # metrics.
    with single_metric(
        name="Errors",
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE},
    ) as metric:
        metric.add_dimension(name="ErrorCode", value=code)


def record_model_load() -> None:
    """Report the model load once per load (at init or in the invocation that loaded it)."""
    global _reported_load  # noqa: PLW0603 - one model per container
    load = model_cache.last_load()
    if load is None or load is _reported_load:
        return
    _reported_load = load
    metrics.add_metric(
        name="ModelLoadMs", unit=MetricUnit.Milliseconds, value=load.load_seconds * 1e3
    )
    if load.source != "dir":
        download_ms = load.download_seconds * 1e3
        metrics.add_metric(name="ModelDownloadMs", unit=MetricUnit.Milliseconds, value=download_ms)
    logger.info(
        "model loaded",
        extra={
            "model_source": load.source,
            "model_location": load.location,
            "load_ms": round(load.load_seconds * 1e3, 1),
            "downloaded_bytes": load.downloaded_bytes,
        },
    )


def correlation_id(event: Any) -> str | None:
    """The id that ties this invocation's logs to what the caller sees."""
    if not isinstance(event, dict):
        return None
    context = event.get("requestContext")
    if isinstance(context, dict) and isinstance(context.get("requestId"), str):
        return str(context["requestId"])
    records = event.get("Records")
    if isinstance(records, list) and len(records) == 1 and isinstance(records[0], dict):
        record = records[0]
        if isinstance(record.get("messageId"), str):
            return str(record["messageId"])
        s3 = record.get("s3")
        if isinstance(s3, dict):
            bucket = s3.get("bucket", {}).get("name", "")
            key = s3.get("object", {}).get("key", "")
            return f"s3://{bucket}/{key}"
    return None
