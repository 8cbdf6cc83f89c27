"""What one invocation may spend: audio caps per entry point, and its deadline.

The deadline is Lambda's remaining time (``context.get_remaining_time_in_millis()``) less
``deadline_margin_seconds``, kept back to write the response or the result object. An API
request also stops at API Gateway's integration timeout, which is shorter than the function
timeout sized for the S3 path. Past the deadline, decoding and transcription raise
``DeadlineExceeded``: a 504 for the API, and a retried failure (never a final error record)
for S3 and SQS deliveries.
"""

from __future__ import annotations

from asr.deadline import Deadline, RemainingTime
from asr.limits import AudioLimits, FfmpegLimits

from .settings import Settings


def api_limits(settings: Settings) -> AudioLimits:
    """Caps for ``POST /transcribe``: the synchronous duration limit."""
    return _limits(settings, settings.max_sync_audio_seconds)


def s3_limits(settings: Settings) -> AudioLimits:
    """Caps for objects arriving through S3 notifications."""
    return _limits(settings, settings.max_s3_audio_seconds)


def api_deadline(context: RemainingTime, settings: Settings) -> Deadline:
    return Deadline.from_context(
        context, margin_s=settings.deadline_margin_seconds, cap_s=settings.api_timeout_seconds
    )


def invocation_deadline(context: RemainingTime, settings: Settings) -> Deadline:
    return Deadline.from_context(context, margin_s=settings.deadline_margin_seconds)


def _limits(settings: Settings, max_duration_s: float) -> AudioLimits:
    return AudioLimits(
        max_duration_s=max_duration_s,
        max_channels=settings.max_audio_channels,
        max_sample_rate=settings.max_audio_sample_rate,
        ffmpeg=FfmpegLimits(
            timeout_s=settings.ffmpeg_timeout_seconds,
            cpu_seconds=settings.ffmpeg_cpu_seconds,
            memory_bytes=settings.ffmpeg_memory_mb << 20,
        ),
    )
