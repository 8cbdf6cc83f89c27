"""The S3 path moves a job along when the object it processes is that job's upload.

``s3_events.process_record`` calls ``start`` before reading the object (→ running) and
``done`` or ``failed`` after writing the result object, so a job reads ``done`` only once its
results exist; ``sqs_batch`` calls ``after_internal_failure`` when a delivery fails, which
marks the job failed on the queue's last try (the message then waits in the dead-letter
queue); ``decoding`` and ``channels`` give the options the job was created with. Objects that are
no job's upload — any key outside ``<input prefix>jobs/``, or a job id without a record —
are untouched: ``start`` returns None, and the others accept None.

A failed record update is an internal fault like any other: it is raised, the delivery is
retried, and the retry rewrites the same result objects before updating the record again.
"""

from __future__ import annotations

import json
import os

from asr.channels import ChannelOptions, parse_channel_options
from asr.decoding import DecodingOptions, parse_options
from asr.errors import AsrError
from asr.formats import EXTENSIONS, parse_format, render
from asr.results import Transcript
from aws_lambda_powertools import Logger

from .job_store import Job, JobStore, job_id_for_key
from .s3_objects import s3_client
from .settings import Settings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "asr"), child=True)


class JobRun:
    """A job whose upload is being processed in this invocation."""

    def __init__(self, store: JobStore, job: Job, settings: Settings) -> None:
        self.store = store
        self.job = job
        self.settings = settings


def start(bucket: str, key: str, etag: str | None, settings: Settings) -> JobRun | None:
    if settings.jobs_table is None:
        return None
    job_id = job_id_for_key(key, settings)
    if job_id is None:
        return None
    store = JobStore.for_settings(settings)
    job = store.start(job_id, bucket, key, etag)
    return JobRun(store, job, settings) if job is not None else None


def decoding(run: JobRun | None) -> DecodingOptions | None:
    """The job's decoding options; None (the deployment's default) for other objects."""
    if run is None or run.job.decoding is None:
        return None
    return parse_options(json.loads(run.job.decoding))


def channels(run: JobRun | None, default: ChannelOptions) -> ChannelOptions:
    """The job's channel handling; ``default`` (the key's, ``Settings.channels_for_key``)
    for other objects and for jobs that did not choose."""
    if run is None or run.job.channels is None:
        return default
    return parse_channel_options(json.loads(run.job.channels), default)


def done(run: JobRun | None, output_bucket: str, output_key: str, transcript: Transcript) -> None:
    if run is None:
        return
    format_key = _write_requested_format(run, output_bucket, output_key, transcript)
    run.store.finish_done(
        run.job,
        result_bucket=output_bucket,
        result_key=output_key,
        format_key=format_key,
        audio_seconds=transcript.duration,
    )
    logger.info("job done", extra={"job_id": run.job.job_id, "attempts": run.job.attempts})


def failed(
    run: JobRun | None, output_bucket: str, output_key: str, code: str, message: str
) -> None:
    if run is None:
        return
    run.store.finish_failed(
        run.job, code, message, result_bucket=output_bucket, result_key=output_key
    )
    logger.info("job failed", extra={"job_id": run.job.job_id, "error_code": code})


def after_internal_failure(
    bucket: str, key: str, settings: Settings, receive_count: int, exc: BaseException
) -> None:
    """On the queue's last delivery, the job says why it failed; never raises (the caller
    is already reporting a failure)."""
    limit = settings.max_receive_count
    if settings.jobs_table is None or limit is None or receive_count < limit:
        return
    job_id = job_id_for_key(key, settings)
    if job_id is None:
        return
    if isinstance(exc, AsrError) and exc.http_status >= 500:
        code = exc.code
        message = f"{exc.message} (on each of {receive_count} attempts)"
    else:
        code = "internal_error"
        message = f"an internal error occurred on each of {receive_count} attempts"
    message += "; the upload notification is kept in the dead-letter queue for the operator"
    try:
        store = JobStore.for_settings(settings)
        job = store.get(job_id)
        if job is not None and (job.upload_bucket, job.upload_key) == (bucket, key):
            store.finish_failed(job, code, message, only_if_running=True)
            logger.warning("job failed: retries exhausted", extra={"job_id": job_id, "code": code})
    except Exception:
        logger.exception("could not mark the job failed", extra={"job_id": job_id})


def format_key_for(output_key: str, output_format: str) -> str:
    """``<output prefix><key>.srt`` next to ``<output prefix><key>.json``."""
    stem = output_key.removesuffix(EXTENSIONS["json"])
    return stem + EXTENSIONS[parse_format(output_format)]


def _write_requested_format(
    run: JobRun, output_bucket: str, output_key: str, transcript: Transcript
) -> str | None:
    job = run.job
    if parse_format(job.output_format) == "json":
        return None  # the result object is the JSON
    key = format_key_for(output_key, job.output_format)
    if output_bucket == job.upload_bucket and key.startswith(run.settings.input_prefix):
        # Outputs inside the watched prefix (one bucket for both): only the .json, which
        # the S3 path knows to skip, may be written there.
        logger.warning("requested format not written: it would be processed as an upload")
        return None
    rendered = render(transcript, job.output_format)
    s3_client().put_object(
        Bucket=output_bucket,
        Key=key,
        Body=rendered.body.encode("utf-8"),
        ContentType=rendered.content_type,
    )
    return key
