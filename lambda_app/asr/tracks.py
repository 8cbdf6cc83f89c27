"""Decoded blocks [frames, channels] at the source rate → one track at the model's rate.

The track is the down-mix (the channels averaged), or one ``channel`` of the recording, for
calls whose channels are different speakers (call centres record each side on its own).
Selecting a channel keeps memory at one track: a split call is decoded once per channel
rather than holding every channel of a long recording at once. Every decode also measures
how far the channels differ (``max_channel_difference``), so a "stereo" file holding one
signal twice is seen at no extra cost. Both decoders (soundfile in process, ffmpeg's WAV
pipe) feed their blocks here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import AudioDecodeError
from .pcm import SampleBlocks
from .resample_stream import StreamResampler


@dataclass(frozen=True)
class Track:
    samples: SampleBlocks  # at the target rate
    source_rate: int
    channels: int  # of the stream
    max_channel_difference: float  # max |x_c - x_0| over every sample: 0 for a copied mono


class TrackBuilder:
    def __init__(
        self, source_rate: int, target_rate: int, channels: int, *, channel: int | None = None
    ) -> None:
        """``channel``: the 0-based channel to keep; None for the down-mix."""
        if channel is not None and not 0 <= channel < channels:
            raise ValueError(f"channel {channel} is outside the stream's {channels}")
        self.source_rate = source_rate
        self.channels = channels
        self.channel = channel
        self.track = SampleBlocks()
        self.frames = 0  # pushed, at the source rate
        self.max_channel_difference = 0.0  # max |x_c - x_0| over samples and channels
        self._resampler = StreamResampler(source_rate, target_rate)

    def push(self, block: npt.NDArray[np.float32]) -> None:
        """One block [frames, channels] of float32 samples."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"a block must be [frames, {self.channels}], got {block.shape}")
        if self.channels > 1:
            spread = float(np.max(np.abs(block[:, 1:] - block[:, :1]), initial=0.0))
            self.max_channel_difference = max(self.max_channel_difference, spread)
        if self.channel is not None:
            samples = np.ascontiguousarray(block[:, self.channel])
        elif self.channels == 1:
            samples = block[:, 0].copy()
        else:
            samples = block.mean(axis=1, dtype=np.float32)
        self.track.append(self._resampler.push(samples))
        self.frames += block.shape[0]

    def finish(self) -> Track:
        """The track, the filter's tail flushed (nothing pushed: an empty track)."""
        if self.frames:
            self.track.append(self._resampler.finish())
        return Track(self.track, self.source_rate, self.channels, self.max_channel_difference)


def check_channel(channel: int | None, channels: int) -> None:
    """AudioDecodeError when a stream of ``channels`` has no ``channel``."""
    if channel is not None and not 0 <= channel < channels:
        raise AudioDecodeError(
            f"the audio has {channels} channel(s): there is no channel {channel}"
        )
