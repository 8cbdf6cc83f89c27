"""Find the static ffmpeg binary and decode a file with it to float32 mono PCM.

ffmpeg is the fallback for what libsndfile cannot open (M4A/AAC, WebM, MP4, AMR, WMA ...).
It is treated as a parser of hostile input:

* it runs from an argument list (never a shell) and reads only the one local file: the
  protocol whitelist is ``file`` (no network, no pipes, no nested protocols) and the demuxer
  whitelist leaves out playlists and other formats that open further files or URLs;
* the kernel bounds it: RLIMIT_CPU (killed after ``FfmpegLimits.cpu_seconds`` of CPU),
  RLIMIT_AS (allocations fail past ``memory_bytes``) and RLIMIT_FSIZE (its error log stays
  under 1 MB of /tmp), set with ``prlimit`` on the child right after it starts
  (``preexec_fn`` is unsafe in a threaded program, and requests run in threads under load);
* its output is bounded: ``-t`` stops it a second after the duration cap, ``-fs`` at a
  byte count, and the reader stops and kills it as soon as either is passed;
* a timer kills it after ``timeout_s``, or earlier when the caller's deadline comes first.

ffmpeg writes a float WAV at the stream's own rate and channel count to a pipe. Its header
is checked against the caps before any sample is consumed; then the samples are read block
by block, and each block's channels are averaged and resampled as it arrives, as for
libsndfile: memory holds the mono signal at the target rate, not ffmpeg's output.
(ffmpeg's ``-ac 1`` is not an average: it mixes stereo as 0.707·(L+R) and 5.1 louder still.)
"""

from __future__ import annotations

import math
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import numpy as np
import numpy.typing as npt

from .deadline import Deadline, exceeded_message
from .errors import (
    AudioDecodeError,
    AudioTooLong,
    DeadlineExceeded,
    DecoderUnavailable,
    DecodeTimeout,
)
from .limits import AudioLimits, FfmpegLimits
from .pcm import SampleBlocks
from .tracks import Track, TrackBuilder, check_channel

FFMPEG_ENV: Final = "ASR_FFMPEG_PATH"
LAYER_PATH: Final = Path("/opt/bin/ffmpeg")
REPO_PATH: Final = Path(__file__).resolve().parents[2] / "bin" / "ffmpeg"

# Demuxers for audio and the containers audio arrives in. Deliberately absent: hls, concat,
# image2, tty and the like, which open further files or read text.
_DEMUXERS: Final = (
    "aac,ac3,aiff,amr,amrnb,amrwb,ape,asf,au,avi,caf,dts,eac3,flac,flv,loas,matroska,mov,"
    "mp3,mpeg,mpegts,ogg,tta,w64,wav,wv"
)
_BLOCK_SAMPLES: Final = 1 << 20  # frames x channels per read: 4 MB
_MAX_HEADER_CHUNK: Final = 1 << 20
# Room for ffmpeg's WAV header (RIFF, fmt, LIST) in the derived -fs bound.
_HEADER_ALLOWANCE: Final = 4096
# ffmpeg runs to this far past the duration cap, so "too long" is seen rather than cut.
_EXTRA_SECONDS: Final = 1.0
_MAX_MESSAGE_CHARS: Final = 200
_MAX_LOG_BYTES: Final = 1 << 20  # ffmpeg's stderr (RLIMIT_FSIZE)
_COMPONENT_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-fA-F]+\]\s*")
_DEFAULT_LIMITS: Final = AudioLimits()


@dataclass(frozen=True)
class FfmpegAudio:
    """Mono float32 PCM at the requested rate (the down-mix, or one channel), and what the
    decoded stream was."""

    blocks: SampleBlocks
    original_sample_rate: int
    channels: int
    max_channel_difference: float = 0.0  # tracks.Track's

    @property
    def samples(self) -> npt.NDArray[np.float32]:
        return self.blocks.to_array()


class _NoOutputError(Exception):
    """ffmpeg closed its output before a complete WAV header (it failed)."""


def find_ffmpeg() -> Path | None:
    """The ffmpeg to use, or None.

    Order: ``$ASR_FFMPEG_PATH`` (when set and non-empty it is the only candidate, so a wrong
    setting fails loudly instead of silently using another binary), ``/opt/bin/ffmpeg``
    (the Lambda layer), ``<repo>/bin/ffmpeg``, then ``ffmpeg`` on ``PATH``.
    """
    configured = os.environ.get(FFMPEG_ENV, "")
    if configured:
        return _executable(Path(configured))
    for candidate in (LAYER_PATH, REPO_PATH):
        found = _executable(candidate)
        if found is not None:
            return found
    on_path = shutil.which("ffmpeg")
    return Path(on_path) if on_path else None


def ffmpeg_decode(
    path: str | os.PathLike[str],
    sample_rate: int,
    *,
    limits: AudioLimits = _DEFAULT_LIMITS,
    deadline: Deadline | None = None,
    ffmpeg: Path | None = None,
    channel: int | None = None,
) -> FfmpegAudio:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``: the
    down-mix, or only ``channel`` (0-based; AudioDecodeError if the stream lacks it).

    Raises DecoderUnavailable (no ffmpeg), AudioTooManyChannels / SampleRateUnsupported
    (the stream's header, before any sample is read), AudioTooLong (longer than the
    duration cap, or more output than ``limits.ffmpeg.output_bytes``), DecodeTimeout
    (killed at its wall-clock or CPU limit), DeadlineExceeded (killed at ``deadline``),
    AudioDecodeError (ffmpeg failed).
    """
    binary = ffmpeg or find_ffmpeg()
    if binary is None:
        raise DecoderUnavailable(
            f"this audio format needs ffmpeg and none was found (set {FFMPEG_ENV})"
        )
    timeout_s, deadline_first = _time_budget(limits.ffmpeg, deadline)
    source = Path(path).absolute()
    output_cap = output_byte_cap(limits)
    args = _arguments(binary, source, limits, output_cap)

    with tempfile.TemporaryFile() as log:  # unnamed: nothing to clean up
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )
        except OSError as exc:
            raise DecoderUnavailable(f"ffmpeg could not be started ({exc.strerror})") from None
        stopper = _Stopper(proc)
        timer = threading.Timer(timeout_s, stopper.time_out)
        try:
            _confine(proc.pid, limits.ffmpeg)
            timer.start()
            assert proc.stdout is not None
            try:
                track = _read_wav_pipe(proc.stdout, sample_rate, limits, output_cap, channel)
            except _NoOutputError:
                track = Track(SampleBlocks(), 0, 0, 0.0)
        except BaseException:
            stopper.stop()  # we stopped reading early (caps, errors): nothing more is wanted
            raise
        finally:
            # At EOF ffmpeg is exiting: wait for it, still under the timer (a child that
            # closed its output but runs on is killed there).
            proc.wait()
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        if stopper.timed_out:
            if deadline_first:
                raise DeadlineExceeded(exceeded_message("decoding"))
            raise DecodeTimeout(f"decoding did not finish within {timeout_s:g} s")
        if proc.returncode in (-signal.SIGKILL, -signal.SIGXCPU) and not stopper.killed:
            raise DecodeTimeout(
                f"decoding used more than its {limits.ffmpeg.cpu_seconds} s of CPU time"
            )
        log.seek(0)
        stderr = log.read().decode("utf-8", errors="replace")

    # ffmpeg skips corrupt frames and exits 0; only a failure that left nothing is an error.
    failed = track.source_rate == 0 or (track.samples.size == 0 and stderr.strip())
    if proc.returncode != 0 or failed:
        raise AudioDecodeError(_error_message(stderr, source, proc.returncode))
    return FfmpegAudio(
        blocks=track.samples,
        original_sample_rate=track.source_rate,
        channels=track.channels,
        max_channel_difference=track.max_channel_difference,
    )


def output_byte_cap(limits: AudioLimits) -> int:
    """ffmpeg's ``-fs``: the configured cap, or less when the duration cap implies less.

    With a duration cap it is the WAV of the longest accepted stream (cap + the extra second
    at the highest rate and channel count), so it never cuts audio the caps accept.
    """
    cap = limits.ffmpeg.output_bytes
    if limits.max_duration_s is not None:
        frames = math.ceil((limits.max_duration_s + _EXTRA_SECONDS) * limits.max_sample_rate)
        cap = min(cap, _HEADER_ALLOWANCE + 4 * limits.max_channels * frames)
    return cap


def _time_budget(bounds: FfmpegLimits, deadline: Deadline | None) -> tuple[float, bool]:
    """ffmpeg's wall-clock timeout, and whether it is the deadline's rather than its own."""
    if deadline is None:
        return bounds.timeout_s, False
    remaining = deadline.remaining()
    if remaining <= 0:
        raise DeadlineExceeded(exceeded_message("decoding"))
    if remaining < bounds.timeout_s:
        return remaining, True
    return bounds.timeout_s, False


def _arguments(binary: Path, source: Path, limits: AudioLimits, output_cap: int) -> list[str]:
    args = [
        str(binary),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        _DEMUXERS,
        "-i",
        f"file:{source}",
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-c:a",
        "pcm_f32le",
        "-fs",
        str(output_cap),
    ]
    if limits.max_duration_s is not None:
        args += ["-t", f"{limits.max_duration_s + _EXTRA_SECONDS:.6f}"]
    return [*args, "-f", "wav", "pipe:1"]


class _Stopper:
    """Kills ffmpeg once, remembering whether we did (and whether the timer did)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._lock = threading.Lock()
        self.killed = False
        self.timed_out = False

    def time_out(self) -> None:
        if self._kill():
            self.timed_out = True

    def stop(self) -> None:
        self._kill()

    def _kill(self) -> bool:
        with self._lock:
            if self.killed or self._proc.poll() is not None:
                return False
            self._proc.kill()
            self.killed = True
            return True


def _confine(pid: int, bounds: FfmpegLimits) -> None:
    """Apply the CPU, address-space and file-size limits to the running child.

    Soft = hard for RLIMIT_CPU, so the kernel sends SIGKILL (ffmpeg catches SIGXCPU and
    would try to finish cleanly). RLIMIT_FSIZE bounds the one file it writes, its error log
    (a corrupt stream can log a line per packet; the decoded audio goes to a pipe, which the
    limit does not cover). Limits already lower (a sandbox's) are kept. Non-Linux hosts (no
    ``prlimit``) run ffmpeg unconfined: the Lambda runtime is Linux.
    """
    if not hasattr(resource, "prlimit"):
        return
    wanted = (
        (resource.RLIMIT_CPU, bounds.cpu_seconds),
        (resource.RLIMIT_AS, bounds.memory_bytes),
        (resource.RLIMIT_FSIZE, _MAX_LOG_BYTES),
    )
    try:
        for kind, value in wanted:
            _, hard = resource.getrlimit(kind)  # the child inherited ours
            limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.prlimit(pid, kind, (limit, limit))
    except ProcessLookupError:
        pass  # already exited: nothing left to confine
    except OSError as exc:
        raise DecoderUnavailable(
            f"ffmpeg could not be given its resource limits ({exc.strerror})"
        ) from None


def _executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _read_exactly(pipe: IO[bytes], n: int) -> bytes:
    data = pipe.read(n)
    if len(data) != n:
        raise _NoOutputError
    return data


def _read_wav_pipe(
    pipe: IO[bytes], target_rate: int, limits: AudioLimits, output_cap: int, channel: int | None
) -> Track:
    """Parse the streamed WAV ffmpeg writes (sizes unknown: read to EOF), down-mix it (or
    keep one channel) and resample it block by block.

    The header is checked against ``limits`` before any sample is read.
    """
    riff = _read_exactly(pipe, 12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise _NoOutputError
    consumed = len(riff)
    channels = rate = 0
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exactly(pipe, 8))
        consumed += 8
        if chunk_id == b"data":
            break
        if size > _MAX_HEADER_CHUNK:
            raise _NoOutputError
        body = _read_exactly(pipe, size + size % 2)
        consumed += len(body)
        if chunk_id == b"fmt ":
            channels, rate = struct.unpack("<HI", body[2:8])
    if channels == 0 or rate == 0:
        raise _NoOutputError
    limits.check_stream(rate, channels, target_rate)
    check_channel(channel, channels)

    limit = limits.max_frames(rate)
    frame_bytes = 4 * channels
    builder = TrackBuilder(rate, target_rate, channels, channel=channel)
    total = 0
    while True:
        data = pipe.read(max(1, _BLOCK_SAMPLES // channels) * frame_bytes)
        consumed += len(data)
        if consumed >= output_cap:
            raise AudioTooLong(
                f"the decoded audio exceeds the decoder's output limit of {output_cap:,} bytes"
            )
        frames = len(data) // frame_bytes
        if frames == 0:
            break
        block = np.frombuffer(data, dtype="<f4", count=frames * channels)
        block = block.reshape(frames, channels)
        total += frames
        if limit is not None and total > limit:
            raise AudioTooLong(f"audio is longer than the maximum of {limits.max_duration_s:g} s")
        builder.push(block)
    return builder.finish()


def _error_message(stderr: str, source: Path, returncode: int) -> str:
    """The first error ffmpeg logged, without our paths or its internal addresses."""
    first = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
    first = _COMPONENT_PREFIX.sub("", first)
    for leaked in (f"file:{source}", str(source), str(source.parent)):
        first = first.replace(leaked + ": ", "").replace(leaked, "<input>")
    if not first and returncode < 0:
        # Killed by a signal with nothing logged: a crash, typically an allocation that
        # failed at the memory limit.
        return f"ffmpeg stopped on signal {-returncode} while decoding the audio"
    if not first:
        return "ffmpeg could not decode the audio"
    if len(first) > _MAX_MESSAGE_CHARS:
        first = first[: _MAX_MESSAGE_CHARS - 3] + "..."
    return f"ffmpeg could not decode the audio: {first}"
