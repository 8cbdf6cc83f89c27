"""Function settings, read once from the environment (template.yaml sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from asr.channels import MIX, ChannelOptions, deployment_channels
from asr.decoding import parse_hotwords
from asr.formats import parse_format
from asr.hotwords import Hotword

# Where the model layer puts the bundle (layer contents land under /opt).
LAYER_MODEL_DIR = Path("/opt/model")
# Where a bundle fetched from MODEL_S3_URI is kept (Lambda's /tmp: ephemeral storage).
DEFAULT_MODEL_CACHE_DIR = Path("/tmp/asr-model")


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    # Synchronous API: longer audio must go through S3 (API Gateway times out at 29-30 s).
    max_sync_audio_seconds: float = 60.0
    # Decoded request body cap; Lambda's synchronous payload limit is 6 MB.
    max_request_bytes: int = 6_000_000
    max_s3_object_bytes: int = 500_000_000
    # S3 path: long-form (VAD segments); an hour takes ~1.5 min at 1 vCPU (README).
    max_s3_audio_seconds: float = 3600.0
    output_bucket: str | None = None
    output_prefix: str = "transcripts/"
    # {"s3": ...} API requests may only name keys under input_prefix of input_bucket (the
    # function's role can read nothing else); None: any bucket (local runs and tests).
    input_bucket: str | None = None
    input_prefix: str = ""
    # Formats written next to every S3 result's JSON (<key>.srt, .vtt, .txt), besides a
    # job's own requested format: S3_OUTPUT_FORMATS="srt,vtt".
    s3_output_formats: tuple[str, ...] = ()
    # The deployment's hotwords, applied to every transcription that does not ask for
    # greedy decoding: HOTWORDS="иванов, сбербанк:3" (asr.decoding.parse_hotwords).
    hotwords: tuple[Hotword, ...] = ()
    # Channel identification by default (CHANNELS=split, SPEAKERS="agent, client"): every
    # stereo file's sides transcribed apart (asr.channels); mono files as they are.
    channels: ChannelOptions = MIX
    # S3 keys under <input prefix><one of these> are split even when CHANNELS is mix:
    # SPLIT_CHANNEL_PREFIXES="calls/,support/".
    split_channel_prefixes: tuple[str, ...] = ()
    # s3://bucket/prefix/ of a bundle too big for the zip: fetched into model_cache_dir at
    # init and used instead of model_dir.
    model_s3_uri: str | None = None
    # An emotion bundle (GigaAM-Emo) beside the ASR bundle: every segment gets an emotion,
    # and POST /emotion classifies a clip. A directory (EMOTION_MODEL_DIR: a layer's
    # /opt/emotion) or an s3:// URI fetched at init (EMOTION_MODEL_S3_URI) like the model.
    emotion_model_dir: Path | None = None
    emotion_model_s3_uri: str | None = None
    model_cache_dir: Path = DEFAULT_MODEL_CACHE_DIR
    # Input caps checked from the header before decoding (why these: asr/limits.py).
    max_audio_channels: int = 6
    max_audio_sample_rate: int = 96_000
    # ffmpeg's own bounds (asr/ffmpeg.py); the invocation's deadline lowers the timeout.
    ffmpeg_timeout_seconds: float = 60.0
    ffmpeg_cpu_seconds: int = 30
    ffmpeg_memory_mb: int = 512
    # Kept back from Lambda's remaining time to write the response or the result object.
    deadline_margin_seconds: float = 2.0
    # API Gateway stops waiting after 29 s (REST; HTTP API: 30 s), whatever the timeout.
    api_timeout_seconds: float = 29.0
    # Async jobs (asr_service.jobs): their DynamoDB table; None turns POST/GET /jobs off.
    jobs_table: str | None = None
    # A job record lives this long (DynamoDB TTL); its result objects are not deleted.
    job_ttl_seconds: int = 7 * 24 * 3600
    # Lifetime of the presigned upload form and of the presigned result URLs.
    job_upload_url_seconds: int = 3600
    job_result_url_seconds: int = 3600
    # GET /jobs/{id} returns the result JSON inline up to this size (responses cap at 6 MB).
    job_inline_result_bytes: int = 256_000
    # The queue's maxReceiveCount: the delivery that fails internally this many times marks
    # its job failed (the message then waits in the dead-letter queue). None: never.
    max_receive_count: int | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            model_dir=Path(env.get("MODEL_DIR") or LAYER_MODEL_DIR),
            max_sync_audio_seconds=float(env.get("MAX_SYNC_AUDIO_SECONDS", 60)),
            max_request_bytes=int(env.get("MAX_REQUEST_BYTES", 6_000_000)),
            max_s3_object_bytes=int(env.get("MAX_S3_OBJECT_BYTES", 500_000_000)),
            max_s3_audio_seconds=float(env.get("MAX_S3_AUDIO_SECONDS", 3600)),
            output_bucket=env.get("OUTPUT_BUCKET") or None,
            output_prefix=_as_prefix(env.get("OUTPUT_PREFIX", "transcripts/")),
            input_bucket=env.get("INPUT_BUCKET") or None,
            input_prefix=_as_prefix(env.get("INPUT_PREFIX", "")),
            # An unknown name fails the init loudly (a deployment error, not a user's).
            s3_output_formats=tuple(
                parse_format(f) for f in env.get("S3_OUTPUT_FORMATS", "").split(",") if f.strip()
            ),
            hotwords=parse_hotwords(env.get("HOTWORDS", "")),  # a bad one fails the init too
            channels=deployment_channels(env.get("CHANNELS", ""), env.get("SPEAKERS", "")),
            split_channel_prefixes=tuple(
                _as_prefix(p) for p in env.get("SPLIT_CHANNEL_PREFIXES", "").split(",") if p.strip()
            ),
            model_s3_uri=env.get("MODEL_S3_URI", "").strip() or None,
            emotion_model_dir=Path(env["EMOTION_MODEL_DIR"])
            if env.get("EMOTION_MODEL_DIR")
            else None,
            emotion_model_s3_uri=env.get("EMOTION_MODEL_S3_URI", "").strip() or None,
            model_cache_dir=Path(env.get("MODEL_CACHE_DIR") or DEFAULT_MODEL_CACHE_DIR),
            max_audio_channels=int(env.get("MAX_AUDIO_CHANNELS", 6)),
            max_audio_sample_rate=int(env.get("MAX_AUDIO_SAMPLE_RATE", 96_000)),
            ffmpeg_timeout_seconds=float(env.get("FFMPEG_TIMEOUT_SECONDS", 60)),
            ffmpeg_cpu_seconds=int(env.get("FFMPEG_CPU_SECONDS", 30)),
            ffmpeg_memory_mb=int(env.get("FFMPEG_MEMORY_MB", 512)),
            deadline_margin_seconds=float(env.get("DEADLINE_MARGIN_SECONDS", 2)),
            api_timeout_seconds=float(env.get("API_TIMEOUT_SECONDS", 29)),
            jobs_table=env.get("JOBS_TABLE", "").strip() or None,
            job_ttl_seconds=int(env.get("JOB_TTL_SECONDS", 7 * 24 * 3600)),
            job_upload_url_seconds=int(env.get("JOB_UPLOAD_URL_SECONDS", 3600)),
            job_result_url_seconds=int(env.get("JOB_RESULT_URL_SECONDS", 3600)),
            job_inline_result_bytes=int(env.get("JOB_INLINE_RESULT_BYTES", 256_000)),
            max_receive_count=int(env.get("MAX_RECEIVE_COUNT") or 0) or None,
        )

    @property
    def has_emotion(self) -> bool:
        return self.emotion_model_dir is not None or self.emotion_model_s3_uri is not None

    def channels_for_key(self, key: str) -> ChannelOptions:
        """An S3 object's channel handling: split under a split prefix, else the default."""
        relative = key[len(self.input_prefix) :] if key.startswith(self.input_prefix) else None
        if relative is not None and relative.startswith(self.split_channel_prefixes):
            return replace(self.channels, mode="split")
        return self.channels


def _as_prefix(value: str) -> str:
    value = value.strip().lstrip("/")
    return value if not value or value.endswith("/") else value + "/"
