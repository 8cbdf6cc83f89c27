"""What audio is accepted, and what decoding it may cost, checked before any sample is decoded.

Defaults, and why they refuse what is hostile rather than what is merely unusual:

* at most 6 channels: 5.1 is the widest layout speech arrives in (a film or broadcast mix).
  More is a microphone array's raw capture or a forged header; every channel multiplies
  decoding work and memory for a signal that is averaged to mono anyway.
* 4-96 kHz: telephone audio is 8 kHz and studio masters 96 kHz; below 4 kHz there is no
  intelligible speech, and above 96 kHz only ultrasound, at up to twice the samples per
  second. Together with the channel cap this refuses "8 channels at 192 kHz" (12 MB of
  float PCM per second of audio) from the header.
* at most 2,000 resampling phases: the polyphase resampler's filter table grows with the
  reduced ratio ``target / gcd(rate, target)``; a rate such as 95,999 Hz needs 16,000 phases
  and ~900 MB to build the table. Every rate recorders use needs at most 2,000 for 16 kHz
  (44,100 Hz: 160; 11,025 Hz: 640; the NTSC-locked 44,056 Hz: 2,000).

``FfmpegLimits`` bounds the ffmpeg child itself (see ``asr.ffmpeg``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from .errors import AudioTooManyChannels, SampleRateUnsupported

MAX_RESAMPLE_PHASES: Final = 2000


@dataclass(frozen=True)
class FfmpegLimits:
    """Resource bounds of one ffmpeg run (kernel-enforced where possible)."""

    # Wall clock; the caller's deadline lowers it further.
    timeout_s: float = 60.0
    # RLIMIT_CPU: the kernel kills ffmpeg after this much CPU time. A legitimate decode
    # runs at hundreds of times real time, so 15 min of audio needs a few seconds.
    cpu_seconds: int = 30
    # RLIMIT_AS: address space. Audio decodes need 100-225 MB here (the static binary
    # alone maps ~90 MB; long Opus files are the largest).
    memory_bytes: int = 512 << 20
    # ``-fs``: bytes of decoded WAV ffmpeg may write, whatever the duration cap.
    output_bytes: int = 1 << 31

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.cpu_seconds <= 0:
            raise ValueError("ffmpeg time limits must be positive")
        if self.memory_bytes <= 0 or self.output_bytes <= 0:
            raise ValueError("ffmpeg size limits must be positive")


@dataclass(frozen=True)
class AudioLimits:
    """Caps on one input; ``max_duration_s`` None means no duration cap."""

    max_duration_s: float | None = None
    max_channels: int = 6
    max_sample_rate: int = 96_000
    min_sample_rate: int = 4_000
    ffmpeg: FfmpegLimits = field(default_factory=FfmpegLimits)

    def __post_init__(self) -> None:
        if self.max_duration_s is not None and not self.max_duration_s > 0:
            raise ValueError(f"max_duration_s must be positive, got {self.max_duration_s}")
        if self.max_channels < 1:
            raise ValueError(f"max_channels must be at least 1, got {self.max_channels}")
        if not 0 < self.min_sample_rate <= self.max_sample_rate:
            raise ValueError(
                f"need 0 < min_sample_rate <= max_sample_rate, got "
                f"{self.min_sample_rate} and {self.max_sample_rate}"
            )

    def check_stream(self, sample_rate: int, channels: int, target_rate: int) -> None:
        """Refuse a stream by its header: too many channels, or a rate we will not take."""
        if channels > self.max_channels:
            raise AudioTooManyChannels(
                f"the audio has {channels} channels; at most {self.max_channels} are accepted"
            )
        if not self.min_sample_rate <= sample_rate <= self.max_sample_rate:
            raise SampleRateUnsupported(
                f"the audio is sampled at {sample_rate} Hz; accepted rates are "
                f"{self.min_sample_rate}-{self.max_sample_rate} Hz"
            )
        if resample_phases(sample_rate, target_rate) > MAX_RESAMPLE_PHASES:
            raise SampleRateUnsupported(
                f"the audio is sampled at {sample_rate} Hz, which does not resample to "
                f"{target_rate} Hz at a bounded cost; use a standard rate such as 8, 16, "
                "22.05, 44.1 or 48 kHz"
            )

    def max_frames(self, sample_rate: int) -> int | None:
        """The duration cap in frames at ``sample_rate``."""
        return None if self.max_duration_s is None else round(self.max_duration_s * sample_rate)


def resample_phases(sample_rate: int, target_rate: int) -> int:
    """Filter phases the resampler needs for ``sample_rate`` → ``target_rate`` (1 if equal)."""
    return target_rate // math.gcd(sample_rate, target_rate)
