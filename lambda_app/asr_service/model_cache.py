"""One Transcriber per container: loaded on first use, reused by warm invocations."""

from __future__ import annotations

import threading
import time

from asr.transcribe import Transcriber

from .settings import Settings


class ModelCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transcriber: Transcriber | None = None
        self.load_seconds: float | None = None

    def get(self, settings: Settings) -> Transcriber:
        if self._transcriber is None:
            with self._lock:
                if self._transcriber is None:
                    started = time.perf_counter()
                    self._transcriber = Transcriber.from_dir(settings.model_dir)
                    self.load_seconds = time.perf_counter() - started
        return self._transcriber

    def reset(self) -> None:
        """Forget the loaded model (tests switch bundles)."""
        with self._lock:
            self._transcriber = None
            self.load_seconds = None


_cache = ModelCache()
get_transcriber = _cache.get
reset = _cache.reset
