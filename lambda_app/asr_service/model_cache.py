"""One Transcriber per container: loaded on first use, reused by warm invocations.

The bundle comes from ``MODEL_S3_URI`` when it is set (fetched into ``MODEL_CACHE_DIR``,
see model_source), else from ``MODEL_DIR`` (the model layer, or a container image's
/opt/model). ``last_load()`` tells the metrics where it came from and what it cost. An
emotion bundle (``EMOTION_MODEL_DIR`` or ``EMOTION_MODEL_S3_URI``) is loaded with it and
handed to the transcriber, which labels every segment with it. The
deployment's ``HOTWORDS`` are checked against the model's vocabulary at the load: one it
cannot write fails every load (an internal error, not a request's 400).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

from asr.bundle import load_bundle
from asr.emotion import EmotionClassifier
from asr.emotion_bundle import load_emotion_bundle
from asr.errors import InvalidRequest
from asr.transcribe import Transcriber

from .model_source import fetch_bundle
from .settings import Settings

# "s3_cached": fetched by an earlier init of this sandbox and found intact in /tmp.
ModelSource = Literal["dir", "s3", "s3_cached"]


@dataclass(frozen=True)
class ModelLoad:
    source: ModelSource
    location: str  # the directory, or the s3:// URI
    load_seconds: float  # everything: fetch, checks, onnxruntime session
    download_seconds: float  # the fetch alone (S3 requests, download, sha256); 0 for "dir"
    downloaded_bytes: int


class ModelCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transcriber: Transcriber | None = None
        self.last_load: ModelLoad | None = None

    @property
    def load_seconds(self) -> float | None:
        return self.last_load.load_seconds if self.last_load else None

    def get(self, settings: Settings) -> Transcriber:
        if self._transcriber is None:
            with self._lock:
                if self._transcriber is None:
                    self._transcriber = self._load(settings)
        return self._transcriber

    def _load(self, settings: Settings) -> Transcriber:
        started = time.perf_counter()
        if settings.model_s3_uri:
            fetched = fetch_bundle(settings.model_s3_uri, settings.model_cache_dir)
            # Every file was hashed as it arrived (or under the cache's marker): not again.
            bundle = load_bundle(fetched.directory, known_digests=fetched.digests)
            source: ModelSource = "s3_cached" if fetched.reused else "s3"
            location, download_seconds = settings.model_s3_uri, fetched.seconds
            downloaded_bytes = fetched.downloaded_bytes
        else:
            bundle = load_bundle(settings.model_dir)
            source, location = "dir", str(settings.model_dir)
            download_seconds, downloaded_bytes = 0.0, 0
        emotion = _emotion_classifier(settings)
        try:
            transcriber = Transcriber(bundle, hotwords=settings.hotwords, emotion=emotion)
        except InvalidRequest as exc:  # the deployment is misconfigured, not the request
            raise ValueError(f"HOTWORDS do not suit this model: {exc.message}") from exc
        self.last_load = ModelLoad(
            source=source,
            location=location,
            load_seconds=time.perf_counter() - started,
            download_seconds=download_seconds,
            downloaded_bytes=downloaded_bytes,
        )
        return transcriber

    def reset(self) -> None:
        """Forget the loaded model (tests switch bundles)."""
        with self._lock:
            self._transcriber = None
            self.last_load = None


def _emotion_classifier(settings: Settings) -> EmotionClassifier | None:
    if settings.emotion_model_s3_uri:
        cache_dir = settings.model_cache_dir.with_name(settings.model_cache_dir.name + "-emotion")
        fetched = fetch_bundle(settings.emotion_model_s3_uri, cache_dir)
        # The fetch hashed every file against SHA256SUMS as it arrived: not again.
        return EmotionClassifier(load_emotion_bundle(fetched.directory, verify_checksums=False))
    if settings.emotion_model_dir is not None:
        return EmotionClassifier.load(settings.emotion_model_dir)
    return None


_cache = ModelCache()
get_transcriber = _cache.get
reset = _cache.reset


def last_load() -> ModelLoad | None:
    """How the current model was loaded (None before the first load)."""
    return _cache.last_load
