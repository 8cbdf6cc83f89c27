"""Turn uploaded audio (bytes or a file) into mono float32 samples at the model's rate.

libsndfile (through soundfile) decodes WAV, FLAC, OGG Vorbis/Opus and MP3 in process; anything
it cannot open goes to ffmpeg. Both are read block by block: each block's channels are
averaged (or one ``channel`` kept) and it is resampled as it arrives (``tracks``), so memory
holds one mono track at the model's rate, never every channel or the source rate of a long
recording. ``decode_audio_blocks`` keeps the blocks (``pcm.SampleBlocks``); ``decode_audio``
joins them.

Truncation policy: a file cut short decodes to what is there when the decoder can tell
(WAV whose header claims more data, MP3, anything ffmpeg reads), as recorders that were
stopped mid-write produce such files; a decoder that loses sync mid-stream (a truncated
FLAC) is an AudioDecodeError rather than a silently partial transcript. A WAV whose header
says 0 frames over real data (never finalised) is read to its end by ffmpeg.

``AudioLimits`` (``asr.limits``) caps channels, sample rate and duration before decoding:
libsndfile's header (channels, rate, declared length) is checked before any sample is read,
ffmpeg's output header before any sample is consumed, and both decoders stop as soon as
the duration bound is passed (measured at the source rate, codec padding included: AAC adds
up to one frame). A ``Deadline`` stops either decoder when the request runs out of time.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import numpy as np
import numpy.typing as npt
import soundfile as sf

from .deadline import Deadline
from .errors import (
    AudioDecodeError,
    AudioTooLong,
    DecoderUnavailable,
    DecodeTimeout,
    EmptyAudio,
    NonFiniteAudio,
)
from .ffmpeg import ffmpeg_decode
from .limits import AudioLimits
from .pcm import SampleBlocks
from .tracks import Track, TrackBuilder, check_channel

Decoder = Literal["soundfile", "ffmpeg"]

# Samples (frames x channels) read per block: 4 MB whatever the channel count.
_BLOCK_SAMPLES: Final = 1 << 20
DEFAULT_LIMITS: Final = AudioLimits()


@dataclass(frozen=True)
class DecodedAudio:
    samples: npt.NDArray[np.float32]  # 1-D, at sample_rate
    sample_rate: int
    original_sample_rate: int  # of the decoded stream
    channels: int  # of the decoded stream, before down-mixing
    decoder: Decoder

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass(frozen=True)
class DecodedBlocks:
    """As ``DecodedAudio``, the samples kept in the blocks they were decoded in."""

    blocks: SampleBlocks  # mono float32 at sample_rate
    sample_rate: int
    original_sample_rate: int
    channels: int
    decoder: Decoder
    channel: int | None = None  # the one kept; None: the down-mix
    max_channel_difference: float = 0.0  # tracks.Track's: 0 when every channel is the same

    @property
    def duration_s(self) -> float:
        return self.blocks.size / self.sample_rate


def decode_audio(
    source: bytes | str | os.PathLike[str],
    sample_rate: int,
    *,
    limits: AudioLimits = DEFAULT_LIMITS,
    deadline: Deadline | None = None,
    channel: int | None = None,
) -> DecodedAudio:
    """Decode ``source`` (file contents or a path) to mono float32 at ``sample_rate`` Hz:
    the channels' average, or only ``channel`` (0-based).

    Raises EmptyAudio (no bytes or no samples), AudioTooManyChannels and
    SampleRateUnsupported (from the header, before decoding), AudioTooLong (longer than
    ``limits.max_duration_s``, from the header when it declares a length), AudioDecodeError
    (not audio, corrupt, truncated beyond use), NonFiniteAudio (NaN/inf samples),
    DecodeTimeout (ffmpeg over its time or CPU limit), DeadlineExceeded (``deadline``
    passed) and DecoderUnavailable (the format needs ffmpeg, none found).
    A path that does not exist raises FileNotFoundError: that is the caller's bug.
    """
    decoded = decode_audio_blocks(
        source, sample_rate, limits=limits, deadline=deadline, channel=channel
    )
    return DecodedAudio(
        samples=decoded.blocks.to_array(),
        sample_rate=decoded.sample_rate,
        original_sample_rate=decoded.original_sample_rate,
        channels=decoded.channels,
        decoder=decoded.decoder,
    )


def decode_audio_blocks(
    source: bytes | str | os.PathLike[str],
    sample_rate: int,
    *,
    limits: AudioLimits = DEFAULT_LIMITS,
    deadline: Deadline | None = None,
    channel: int | None = None,
) -> DecodedBlocks:
    """``decode_audio`` without joining the blocks: for long recordings. ``channel`` keeps
    only that channel (0-based; AudioDecodeError when the stream has no such channel)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if isinstance(source, bytes):
        if not source:
            raise EmptyAudio("the audio is empty (0 bytes)")
    elif os.stat(source).st_size == 0:
        raise EmptyAudio("the audio file is empty (0 bytes)")
    if deadline is not None:
        deadline.check("decoding")

    opened = _open_soundfile(source)
    if opened is not None:
        with opened:
            track = _read_soundfile(opened, sample_rate, limits, deadline, channel)
        if track.samples.size:
            return _finish(track, sample_rate, channel, "soundfile")
        # A WAV whose header was never finalised says "0 frames" over real data; ffmpeg
        # reads such files to the end. Anything else without samples is empty.
        try:
            track = _decode_ffmpeg(source, sample_rate, limits, deadline, channel)
        except DecodeTimeout:
            raise
        except (AudioDecodeError, DecoderUnavailable):
            raise EmptyAudio("the audio contains no samples") from None
    else:
        track = _decode_ffmpeg(source, sample_rate, limits, deadline, channel)
    return _finish(track, sample_rate, channel, "ffmpeg")


def _finish(track: Track, sample_rate: int, channel: int | None, decoder: Decoder) -> DecodedBlocks:
    samples = track.samples
    if samples.size == 0:
        raise EmptyAudio("the audio contains no samples")
    if not all(np.isfinite(block).all() for block in samples):
        raise NonFiniteAudio("the audio contains NaN or infinite sample values")
    return DecodedBlocks(
        blocks=samples,
        sample_rate=sample_rate,
        original_sample_rate=track.source_rate,
        channels=track.channels,
        decoder=decoder,
        channel=channel,
        max_channel_difference=track.max_channel_difference,
    )


def _open_soundfile(source: bytes | str | os.PathLike[str]) -> sf.SoundFile | None:
    """The file opened by libsndfile, or None when it does not recognise the format."""
    target: BinaryIO | str | os.PathLike[str] = (
        io.BytesIO(source) if isinstance(source, bytes) else source
    )
    try:
        return sf.SoundFile(target)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None


def _read_soundfile(
    f: sf.SoundFile,
    target_rate: int,
    limits: AudioLimits,
    deadline: Deadline | None,
    channel: int | None,
) -> Track:
    """Read, down-mix (or keep ``channel``) and resample block by block: memory is one
    mono track at ``target_rate``, not every channel at the source rate."""
    rate, channels = int(f.samplerate), int(f.channels)
    if rate <= 0 or channels <= 0:
        raise AudioDecodeError(f"the audio header is invalid ({rate} Hz, {channels} channels)")
    limits.check_stream(rate, channels, target_rate)
    check_channel(channel, channels)
    limit = limits.max_frames(rate)
    declared = int(f.frames) if f.frames > 0 else 0
    if limit is not None and declared > limit:
        raise AudioTooLong(
            f"audio is {declared / rate:.1f} s, longer than the maximum of "
            f"{limits.max_duration_s:g} s"
        )
    block_frames = max(1, _BLOCK_SAMPLES // channels)
    builder = TrackBuilder(rate, target_rate, channels, channel=channel)
    while True:
        if deadline is not None:
            deadline.check("decoding")
        try:
            block = f.read(block_frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            reason = getattr(exc, "error_string", "") or "read error"
            raise AudioDecodeError(
                f"the audio data is corrupt or truncated ({reason.strip().rstrip('.')})"
            ) from None
        if block.shape[0] == 0:
            break
        if limit is not None and builder.frames + block.shape[0] > limit:
            raise AudioTooLong(f"audio is longer than the maximum of {limits.max_duration_s:g} s")
        builder.push(block)
    return builder.finish()


def _decode_ffmpeg(
    source: bytes | str | os.PathLike[str],
    sample_rate: int,
    limits: AudioLimits,
    deadline: Deadline | None,
    channel: int | None,
) -> Track:
    if isinstance(source, bytes):
        # ffmpeg needs a seekable file for MP4 (moov at the end): a private directory that
        # is removed whatever happens, timeout and errors included.
        with tempfile.TemporaryDirectory(prefix="asr-audio-") as tmp:
            path = Path(tmp) / "input"
            path.write_bytes(source)
            result = ffmpeg_decode(
                path, sample_rate, limits=limits, deadline=deadline, channel=channel
            )
    else:
        result = ffmpeg_decode(
            source, sample_rate, limits=limits, deadline=deadline, channel=channel
        )
    return Track(
        result.blocks, result.original_sample_rate, result.channels, result.max_channel_difference
    )
