"""A point in time by which a request's work must be finished.

The Lambda handler builds one from ``context.get_remaining_time_in_millis()`` (less a margin
for writing the response or the result object) and passes it down: ffmpeg is killed at it,
and transcription checks it between stages, raising ``DeadlineExceeded``.
"""

from __future__ import annotations

import time
from typing import Protocol

from .errors import DeadlineExceeded


class RemainingTime(Protocol):
    """What a Lambda context offers (``asr`` does not depend on the Lambda libraries)."""

    def get_remaining_time_in_millis(self) -> int: ...


class Deadline:
    """Monotonic-clock deadline: immune to wall-clock changes (and SnapStart restores)."""

    def __init__(self, at_monotonic: float) -> None:
        self._at = at_monotonic

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_context(
        cls, context: RemainingTime, *, margin_s: float, cap_s: float | None = None
    ) -> Deadline:
        """The context's remaining time (at most ``cap_s``) less ``margin_s``."""
        seconds = context.get_remaining_time_in_millis() / 1000.0
        if cap_s is not None:
            seconds = min(seconds, cap_s)
        return cls.after(seconds - margin_s)

    def remaining(self) -> float:
        """Seconds left; negative once passed."""
        return self._at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def check(self, stage: str) -> None:
        """Raise ``DeadlineExceeded`` if the deadline has passed; ``stage`` names the work."""
        if self.expired:
            raise DeadlineExceeded(exceeded_message(stage))


def exceeded_message(stage: str) -> str:
    return f"the request ran out of time during {stage}"
