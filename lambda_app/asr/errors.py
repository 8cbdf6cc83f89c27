"""Errors with stable codes. Every failure a user can cause maps to one of these.

The handler turns an ``AsrError`` into ``{"error": {"code", "message"}}`` with its HTTP
status; anything else is an internal fault (500, request id, no stack trace).
"""

from __future__ import annotations


class AsrError(Exception):
    """Base class: ``code`` is stable (clients branch on it), ``message`` is for people."""

    code = "asr_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BundleError(AsrError):
    """The model bundle is missing, incomplete, corrupt or of an unknown version."""

    code = "bundle_invalid"
    http_status = 500


class InvalidRequest(AsrError):
    """The request is malformed: wrong JSON, bad base64, missing fields."""

    code = "invalid_request"
    http_status = 400
    # The finer codes raised as ``InvalidRequest(message, code=...)``.
    variants = frozenset(
        {
            "empty_body",
            "invalid_json",
            "invalid_base64",
            "invalid_s3_ref",
            "invalid_s3_event",
            # Decoding options (asr.decoding).
            "invalid_decoding",
            "invalid_hotwords",
            "hotword_not_in_vocabulary",
            "decoder_not_supported",
            "lm_not_available",
            # Channel options (asr.channels).
            "invalid_channels",
        }
    )


class AudioDecodeError(AsrError):
    """The bytes are not audio we can decode (or are truncated/corrupt)."""

    code = "audio_undecodable"
    http_status = 422


class DecodeTimeout(AudioDecodeError):
    """Decoding (ffmpeg) did not finish within its time limit and was killed."""

    code = "audio_decode_timeout"
    http_status = 422


class NonFiniteAudio(AudioDecodeError):
    """The audio decodes but holds NaN or infinite samples (float WAV/FLAC gone wrong)."""

    code = "audio_non_finite"
    http_status = 422


class AudioTooManyChannels(AsrError):
    """More channels than the cap (checked from the header, before any sample is decoded)."""

    code = "audio_too_many_channels"
    http_status = 422


class AudioNotMultichannel(AsrError):
    """Channels were to be transcribed apart, and the audio has one."""

    code = "audio_not_multichannel"
    http_status = 422


class EmotionNotAvailable(AsrError):
    """Emotion was asked of a deployment with no emotion bundle."""

    code = "emotion_not_available"
    http_status = 400


class SampleRateUnsupported(AsrError):
    """A sample rate outside the accepted range, or one that resamples only at great cost."""

    code = "audio_sample_rate_unsupported"
    http_status = 422


class EmptyAudio(AsrError):
    code = "audio_empty"
    http_status = 422


class AudioTooLong(AsrError):
    code = "audio_too_long"
    http_status = 413


class PayloadTooLarge(AsrError):
    code = "payload_too_large"
    http_status = 413


class S3RefNotAllowed(AsrError):
    """An API request named an object outside the input bucket's input prefix."""

    code = "s3_ref_not_allowed"
    http_status = 403


class ObjectNotFound(AsrError):
    """An S3 bucket or key the request named does not exist or is not readable."""

    code = "s3_object_not_found"
    http_status = 404


class DecoderUnavailable(AsrError):
    """The audio needs ffmpeg and no ffmpeg binary was found."""

    code = "decoder_unavailable"
    http_status = 500


class DeadlineExceeded(AsrError):
    """The invocation ran out of time (Lambda's remaining time, or API Gateway's limit).

    A server-side timeout on a well-formed request (input caps refuse malformed input
    before it can get here): 504 for the API; the S3/SQS paths re-raise it so the object
    is retried rather than given a final error record.
    """

    code = "deadline_exceeded"
    http_status = 504


def stable_codes() -> frozenset[str]:
    """Every code an ``AsrError`` can carry: the ones clients may branch on."""
    codes: set[str] = set()
    pending: list[type[AsrError]] = [AsrError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes | InvalidRequest.variants)
