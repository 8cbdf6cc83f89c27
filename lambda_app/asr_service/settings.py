"""Function settings, read once from the environment (template.yaml sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Where the model layer puts the bundle (layer contents land under /opt).
LAYER_MODEL_DIR = Path("/opt/model")


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    # Synchronous API: longer audio must go through S3 (API Gateway times out at 29-30 s).
    max_sync_audio_seconds: float = 60.0
    # Decoded request body cap; Lambda's synchronous payload limit is 6 MB.
    max_request_bytes: int = 6_000_000
    max_s3_object_bytes: int = 500_000_000
    # S3 path until the long-form (VAD segmentation) path lands.
    max_s3_audio_seconds: float = 900.0
    output_bucket: str | None = None
    output_prefix: str = "transcripts/"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            model_dir=Path(env.get("MODEL_DIR") or LAYER_MODEL_DIR),
            max_sync_audio_seconds=float(env.get("MAX_SYNC_AUDIO_SECONDS", 60)),
            max_request_bytes=int(env.get("MAX_REQUEST_BYTES", 6_000_000)),
            max_s3_object_bytes=int(env.get("MAX_S3_OBJECT_BYTES", 500_000_000)),
            max_s3_audio_seconds=float(env.get("MAX_S3_AUDIO_SECONDS", 900)),
            output_bucket=env.get("OUTPUT_BUCKET") or None,
            output_prefix=_as_prefix(env.get("OUTPUT_PREFIX", "transcripts/")),
        )


def _as_prefix(value: str) -> str:
    value = value.strip().lstrip("/")
    return value if not value or value.endswith("/") else value + "/"
