"""Find the static ffmpeg binary and decode a file with it to float32 mono PCM.

ffmpeg is the fallback for what libsndfile cannot open (M4A/AAC, WebM, MP4, AMR, WMA ...).
It runs from an argument list (never a shell), reads only the one local file (protocol and
demuxer whitelists: no playlists pulling in other files or URLs), is killed after a
timeout, and stops after ``max_duration_s`` so a long input cannot decode forever.

ffmpeg writes a float WAV at the stream's own rate and channel count to a pipe; we read it
block by block, average the channels and resample here, as for libsndfile. (ffmpeg's
``-ac 1`` is not an average: it mixes stereo as 0.707·(L+R) and 5.1 louder still.)
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import numpy as np
import numpy.typing as npt

from .errors import AudioDecodeError, AudioTooLong, DecoderUnavailable, DecodeTimeout
from .resample import resample

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
_MAX_MESSAGE_CHARS: Final = 200
_COMPONENT_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-fA-F]+\]\s*")


@dataclass(frozen=True)
class FfmpegAudio:
    """Mono float32 PCM at the requested rate, and what the decoded stream was."""

    samples: npt.NDArray[np.float32]
    original_sample_rate: int
    channels: int


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
    max_duration_s: float | None = None,
    timeout_s: float = 60.0,
    ffmpeg: Path | None = None,
) -> FfmpegAudio:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``.

    Raises DecoderUnavailable (no ffmpeg), DecodeTimeout (killed after ``timeout_s``),
    AudioTooLong (longer than ``max_duration_s``), AudioDecodeError (ffmpeg failed).
    """
    binary = ffmpeg or find_ffmpeg()
    if binary is None:
        raise DecoderUnavailable(
            f"this audio format needs ffmpeg and none was found (set {FFMPEG_ENV})"
        )
    source = Path(path).absolute()
    args = [
        str(binary),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file,pipe",
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
    ]
    if max_duration_s is not None:
        # A second more than allowed, so "too long" is seen rather than silently cut.
        args += ["-t", f"{max_duration_s + 1.0:.6f}"]
    args += ["-f", "wav", "pipe:1"]

    timed_out = threading.Event()
    with tempfile.TemporaryFile() as log:  # unnamed: nothing to clean up
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )
        except OSError as exc:
            raise DecoderUnavailable(f"ffmpeg could not be started ({exc.strerror})") from None

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            try:
                mono, rate, channels = _read_wav_pipe(proc.stdout, max_duration_s)
            except _NoOutputError:
                mono, rate, channels = np.zeros(0, np.float32), 0, 0
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if timed_out.is_set():
            raise DecodeTimeout(f"decoding did not finish within {timeout_s:g} s")
        log.seek(0)
        stderr = log.read().decode("utf-8", errors="replace")

    # ffmpeg skips corrupt frames and exits 0; only a failure that left nothing is an error.
    if proc.returncode != 0 or rate == 0 or (mono.size == 0 and stderr.strip()):
        raise AudioDecodeError(_error_message(stderr, source))
    return FfmpegAudio(
        samples=resample(mono, rate, sample_rate), original_sample_rate=rate, channels=channels
    )


def _executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _read_exactly(pipe: IO[bytes], n: int) -> bytes:
    data = pipe.read(n)
    if len(data) != n:
        raise _NoOutputError
    return data


def _read_wav_pipe(
    pipe: IO[bytes], max_duration_s: float | None
) -> tuple[npt.NDArray[np.float32], int, int]:
    """Parse the streamed WAV ffmpeg writes (sizes unknown: read to EOF) and down-mix it."""
    riff = _read_exactly(pipe, 12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise _NoOutputError
    channels = rate = 0
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exactly(pipe, 8))
        if chunk_id == b"data":
            break
        if size > _MAX_HEADER_CHUNK:
            raise _NoOutputError
        body = _read_exactly(pipe, size + size % 2)
        if chunk_id == b"fmt ":
            channels, rate = struct.unpack("<HI", body[2:8])
    if channels == 0 or rate == 0:
        raise _NoOutputError

    limit = None if max_duration_s is None else round(max_duration_s * rate)
    frame_bytes = 4 * channels
    blocks: list[npt.NDArray[np.float32]] = []
    total = 0
    while True:
        data = pipe.read(max(1, _BLOCK_SAMPLES // channels) * frame_bytes)
        frames = len(data) // frame_bytes
        if frames == 0:
            break
        block = np.frombuffer(data, dtype="<f4", count=frames * channels)
        block = block.reshape(frames, channels)
        blocks.append(block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0].copy())
        total += frames
        if limit is not None and total > limit:
            raise AudioTooLong(f"audio is longer than the maximum of {max_duration_s:g} s")
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return mono, int(rate), int(channels)


def _error_message(stderr: str, source: Path) -> str:
    """The first error ffmpeg logged, without our paths or its internal addresses."""
    first = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
    first = _COMPONENT_PREFIX.sub("", first)
    for leaked in (f"file:{source}", str(source), str(source.parent)):
        first = first.replace(leaked + ": ", "").replace(leaked, "<input>")
    if not first:
        return "ffmpeg could not decode the audio"
    if len(first) > _MAX_MESSAGE_CHARS:
        first = first[: _MAX_MESSAGE_CHARS - 3] + "..."
    return f"ffmpeg could not decode the audio: {first}"
