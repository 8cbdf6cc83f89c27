"""One Transcriber per container: loaded on first use, reused by warm invocations."""

from __future__ import annotations

import threading
import time

from asr.transcribe import Transcriber

from .settings import Settings

_lock = threading.Lock()
_transcriber: Transcriber | None = None
load_seconds: float | None = None


def get_transcriber(settings: Settings) -> Transcriber:
    global _transcriber, load_seconds
    if _transcriber is None:
        with _lock:
            if _transcriber is None:
                started = time.perf_counter()
                _transcriber = Transcriber.from_dir(settings.model_dir)
                load_seconds = time.perf_counter() - started
    return _transcriber


def reset() -> None:
    """Forget the loaded model (tests switch bundles)."""
    global _transcriber, load_seconds
    with _lock:
        _transcriber = None
        load_seconds = None
