"""``POST /emotion``: the emotion of one short clip, from the deployment's emotion bundle.

The body is ``POST /transcribe``'s (JSON ``{"audio": "<base64>"}`` or ``{"s3": ...}``, or
the raw audio); the clip is down-mixed and capped like a synchronous transcription. The
answer: ``{"emotion": {"label", "probabilities"}, "duration", "model_id", "timings"}``. A
deployment without an emotion bundle (``EMOTION_MODEL_DIR`` / ``EMOTION_MODEL_S3_URI``)
answers 400 ``emotion_not_available`` without loading any model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from asr.audio import decode_audio
from asr.errors import AudioTooLong, EmotionNotAvailable
from asr.transcribe import Transcriber
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from .api_request import audio_request
from .budget import api_deadline, api_limits
from .settings import Settings

ROUTE: Final = "/emotion"


def register(
    app: ApiGatewayResolver,
    current_settings: Callable[[], Settings],
    transcriber: Callable[[], Transcriber],
) -> None:
    @app.post(ROUTE)
    def emotion() -> dict[str, Any]:
        settings = current_settings()
        if not settings.has_emotion:
            raise EmotionNotAvailable(
                "this deployment has no emotion model: set EMOTION_MODEL_DIR or "
                "EMOTION_MODEL_S3_URI to an emotion bundle (python -m export gigaam emo.ckpt)"
            )
        event = app.current_event
        deadline = api_deadline(app.lambda_context, settings)
        audio = audio_request(
            event.body,
            bool(event.is_base64_encoded),
            event.headers.get("content-type") or event.headers.get("Content-Type") or "",
            settings,
        )
        classifier = transcriber().emotion
        if classifier is None:  # has_emotion, so the load attached one
            raise EmotionNotAvailable("the emotion model did not load")
        started = time.perf_counter()
        try:
            decoded = decode_audio(
                audio, classifier.sample_rate, limits=api_limits(settings), deadline=deadline
            )
        except AudioTooLong as exc:
            raise AudioTooLong(f"{exc.message}: POST /emotion classifies short clips") from exc
        decoded_at = time.perf_counter()
        emotion = classifier.classify(decoded.samples)
        return {
            "emotion": emotion.to_dict(),
            "duration": round(decoded.samples.size / classifier.sample_rate, 3),
            "model_id": classifier.model_id,
            "timings": {
                "decode": round(decoded_at - started, 4),
                "emotion": round(time.perf_counter() - decoded_at, 4),
            },
            "request_id": app.lambda_context.aws_request_id,
        }
