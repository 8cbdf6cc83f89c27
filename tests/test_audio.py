"""decode_audio on real speech in every format users send, and on everything that goes wrong.

Lossy encodes of a real clip are made here with the static ffmpeg (scripts/place_ffmpeg.py).
"""

from __future__ import annotations

import dataclasses
import io
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from asr import ffmpeg as ffmpeg_module
from asr.audio import DecodedAudio, decode_audio
from asr.deadline import Deadline
from asr.errors import (
    AsrError,
    AudioDecodeError,
    AudioTooLong,
    DeadlineExceeded,
    DecoderUnavailable,
    DecodeTimeout,
    EmptyAudio,
    NonFiniteAudio,
)
from asr.ffmpeg import find_ffmpeg
from asr.limits import AudioLimits, FfmpegLimits
from asr.resample import output_length

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
SR = 16000
FloatArray = npt.NDArray[np.float32]


def data_file(relative: str) -> Path:
    path = SPEECH / relative
    if not path.is_file():
        pytest.skip(f"shared speech data not found at {path}")
    return path


def reference(path: Path) -> FloatArray:
    """The clip down-mixed and resampled to 16 kHz by soundfile + soxr (librosa's soxr_hq)."""
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono: FloatArray = data.mean(axis=1, dtype=np.float32)
    if rate == SR:
        return mono
    return np.asarray(
        librosa.resample(mono, orig_sr=rate, target_sr=SR, res_type="soxr_hq"), np.float32
    )


def aligned_correlation(a: FloatArray, b: FloatArray, max_lag: int = 1600) -> float:
    """Normalised cross-correlation at the best lag within ±100 ms."""
    n = min(a.size, b.size)
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]])
    return float(np.max(lags) / (np.linalg.norm(x) * np.linalg.norm(y)))


def assert_matches(decoded: DecodedAudio, expected: FloatArray, min_corr: float = 0.9) -> None:
    assert decoded.sample_rate == SR
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert abs(decoded.duration_s - expected.size / SR) <= 0.05
    corr = aligned_correlation(decoded.samples, expected)
    print(
        f"{decoded.decoder}: {decoded.duration_s:.3f} s vs {expected.size / SR:.3f} s, r={corr:.4f}"
    )
    assert corr > min_corr


def assert_clean_message(error: AsrError) -> None:
    assert "Traceback" not in error.message
    assert "asr-audio-" not in error.message
    assert tempfile.gettempdir() not in error.message


@pytest.fixture(scope="session")
def ffmpeg_bin() -> Path:
    found = find_ffmpeg()
    if found is None:
        pytest.skip("no ffmpeg binary: run python scripts/place_ffmpeg.py")
    return found


def run_ffmpeg(binary: Path, *args: str) -> None:
    subprocess.run(
        [str(binary), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def source_clip() -> Path:
    return data_file("en/en-0532.wav")  # 16 kHz mono read speech


@pytest.fixture(scope="session")
def encoded(
    tmp_path_factory: pytest.TempPathFactory, ffmpeg_bin: Path, source_clip: Path
) -> dict[str, Path]:
    """The source clip as M4A/AAC, WebM/Opus, OGG/Vorbis, MP4 with video, and 8 kHz WAV."""
    out = tmp_path_factory.mktemp("encoded")
    src = str(source_clip)
    duration = soundfile.info(source_clip).duration
    files = {
        "m4a": out / "clip.m4a",
        "webm": out / "clip.webm",
        "ogg": out / "clip.ogg",
        "mp4": out / "clip.mp4",
        "wav8k": out / "clip8k.wav",
    }
    # AAC at 44.1 kHz as phones record it (at 16 kHz its 64 ms frames pad ~50 ms at the end).
    aac = ["-ar", "44100", "-c:a", "aac", "-b:a", "96k"]
    run_ffmpeg(ffmpeg_bin, "-i", src, *aac, str(files["m4a"]))
    run_ffmpeg(ffmpeg_bin, "-i", src, "-c:a", "libopus", "-b:a", "48k", str(files["webm"]))
    run_ffmpeg(ffmpeg_bin, "-i", src, "-c:a", "libvorbis", "-q:a", "4", str(files["ogg"]))
    run_ffmpeg(
        ffmpeg_bin,
        "-f",
        "lavfi",
        "-i",
        f"color=c=blue:s=64x48:r=10:d={duration:.3f}",
        "-i",
        src,
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        *aac,
        str(files["mp4"]),
    )
    run_ffmpeg(ffmpeg_bin, "-i", src, "-ar", "8000", str(files["wav8k"]))
    return files


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point tempfile at an empty directory that must be empty again afterwards."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp
    assert list(tmp.iterdir()) == []


@pytest.fixture
def no_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_FFMPEG_PATH", str(tmp_path / "missing" / "ffmpeg"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    assert find_ffmpeg() is None


# --- real clips through soundfile -------------------------------------------------------


def test_16k_wav_is_returned_unchanged() -> None:
    path = data_file("ru/golos_00.wav")
    decoded = decode_audio(path, SR)
    expected, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(decoded.samples, expected)
    assert (decoded.decoder, decoded.original_sample_rate, decoded.channels) == ("soundfile", SR, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.sample_rate = 8000  # type: ignore[misc]


def test_jfk_flac_is_downmixed_and_resampled() -> None:
    path = data_file("en/jfk.flac")
    for source in (path, str(path), path.read_bytes()):
        decoded = decode_audio(source, SR)
        assert (decoded.decoder, decoded.original_sample_rate, decoded.channels) == (
            "soundfile",
            44100,
            2,
        )
        assert decoded.samples.size == output_length(485100, 44100, SR)  # 11.0 s
        assert_matches(decoded, reference(path), min_corr=0.999)


@pytest.mark.parametrize("name", ["tinkoff_sample_1.mp3", "tinkoff_sample_2.mp3"])
def test_mp3_decodes_in_process_and_agrees_with_ffmpeg(name: str, ffmpeg_bin: Path) -> None:
    path = data_file(f"ru_untranscribed/{name}")
    decoded = decode_audio(path.read_bytes(), SR)
    assert decoded.decoder == "soundfile"
    assert abs(decoded.duration_s - soundfile.info(path).duration) <= 0.05
    via_ffmpeg = ffmpeg_module.ffmpeg_decode(path, SR)
    assert aligned_correlation(decoded.samples, via_ffmpeg.samples) > 0.99


@pytest.mark.parametrize(
    "name", ["tinkoff_sample_4.wav", "tinkoff_sample_5.wav", "tinkoff_stierlitz.wav"]
)
def test_48k_wav_is_resampled(name: str) -> None:
    path = data_file(f"ru_untranscribed/{name}")
    decoded = decode_audio(path, SR)
    assert (decoded.decoder, decoded.original_sample_rate) == ("soundfile", 48000)
    assert decoded.samples.size == output_length(soundfile.info(path).frames, 48000, SR)
    assert_matches(decoded, reference(path), min_corr=0.999)


# --- formats made with ffmpeg -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("m4a", ("ffmpeg", 44100, 0.95)),
        ("webm", ("ffmpeg", 48000, 0.9)),
        ("ogg", ("soundfile", 16000, 0.95)),
        ("mp4", ("ffmpeg", 44100, 0.95)),
        ("wav8k", ("soundfile", 8000, 0.95)),
    ],
)
def test_encoded_formats_decode(
    encoded: dict[str, Path], source_clip: Path, kind: str, expected: tuple[str, int, float]
) -> None:
    decoder, rate, min_corr = expected
    decoded = decode_audio(encoded[kind].read_bytes(), SR)
    assert (decoded.decoder, decoded.original_sample_rate, decoded.channels) == (decoder, rate, 1)
    assert_matches(decoded, reference(source_clip), min_corr)


def test_ffmpeg_downmix_is_the_channel_average(tmp_path: Path, ffmpeg_bin: Path) -> None:
    # ffmpeg's own -ac 1 would give 0.707*(L+R) for stereo; we average.
    clip = reference(data_file("ru/golos_01.wav"))
    rng = np.random.default_rng(0)
    for channels in (2, 6):
        gains = rng.uniform(-1.0, 1.0, channels).astype(np.float32)
        wav, mka = tmp_path / f"c{channels}.wav", tmp_path / f"c{channels}.mka"
        soundfile.write(wav, clip[:, None] * gains[None, :], SR, subtype="FLOAT")
        run_ffmpeg(ffmpeg_bin, "-i", str(wav), "-c:a", "pcm_f32le", str(mka))
        decoded = decode_audio(mka, SR)
        assert (decoded.decoder, decoded.channels) == ("ffmpeg", channels)
        np.testing.assert_allclose(decoded.samples, clip * gains.mean(), atol=1e-6)


def test_wav_with_unfinalised_header_is_read_to_the_end(ffmpeg_bin: Path) -> None:
    path = data_file("ru/golos_00.wav")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = bytes(4)  # a recorder that never wrote the data size
    decoded = decode_audio(bytes(data), SR)
    assert decoded.decoder == "ffmpeg"
    np.testing.assert_array_equal(decoded.samples, soundfile.read(path, dtype="float32")[0])


# --- errors -----------------------------------------------------------------------------


def test_empty_input(tmp_path: Path) -> None:
    with pytest.raises(EmptyAudio):
        decode_audio(b"", SR)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudio):
        decode_audio(empty, SR)


def test_header_only_wav_is_empty(ffmpeg_bin: Path) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(0, np.float32), SR, format="WAV")
    with pytest.raises(EmptyAudio):
        decode_audio(buffer.getvalue(), SR)


def test_missing_path_is_a_caller_bug(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_audio(tmp_path / "nope.wav", SR)


@pytest.mark.parametrize(
    "payload",
    [
        np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes(),
        "Это не аудио, а текст.\nThis is not audio.\n".encode() * 50,
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a WAV cut inside its header
    ],
    ids=["random", "text", "cut-header"],
)
def test_not_audio_is_undecodable(payload: bytes, ffmpeg_bin: Path, private_tmp: Path) -> None:
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(payload, SR)
    assert type(info.value) is AudioDecodeError
    assert info.value.code == "audio_undecodable"
    assert "ffmpeg could not decode the audio" in info.value.message
    assert_clean_message(info.value)


def test_text_file_path_is_undecodable(tmp_path: Path, ffmpeg_bin: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 100, encoding="utf-8")
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(text, SR)
    assert str(tmp_path) not in info.value.message


def test_truncated_wav_decodes_what_is_there() -> None:
    # Policy: a WAV whose header claims more data than the file holds decodes the part that
    # is there (an interrupted recording is still speech).
    path = data_file("ru/golos_00.wav")
    data = path.read_bytes()
    decoded = decode_audio(data[: len(data) // 2], SR)
    full = soundfile.read(path, dtype="float32")[0]
    data_offset = data.find(b"data") + 8
    assert decoded.samples.size == (len(data) // 2 - data_offset) // 2
    np.testing.assert_array_equal(decoded.samples, full[: decoded.samples.size])


def test_truncated_mp3_decodes_what_is_there() -> None:
    path = data_file("ru_untranscribed/tinkoff_sample_1.mp3")
    data = path.read_bytes()
    decoded = decode_audio(data[: len(data) // 2], SR)
    assert decoded.decoder == "soundfile"
    assert abs(decoded.duration_s - soundfile.info(path).duration / 2) < 0.1


def test_truncated_flac_is_an_error() -> None:
    # libsndfile loses sync at the cut: an error, not a silently partial transcript.
    data = data_file("en/jfk.flac").read_bytes()
    with pytest.raises(AudioDecodeError, match="corrupt or truncated") as info:
        decode_audio(data[: len(data) // 2], SR)
    assert_clean_message(info.value)


def test_truncated_m4a_is_an_error(encoded: dict[str, Path], private_tmp: Path) -> None:
    data = encoded["m4a"].read_bytes()
    with pytest.raises(AudioDecodeError, match="moov atom not found") as info:
        decode_audio(data[: len(data) // 2], SR)
    assert_clean_message(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(bad: float) -> None:
    samples = np.zeros(SR, np.float32)
    samples[1234] = bad
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SR, format="WAV", subtype="FLOAT")
    with pytest.raises(NonFiniteAudio) as info:
        decode_audio(buffer.getvalue(), SR)
    assert info.value.code == "audio_non_finite"
    assert isinstance(info.value, AudioDecodeError)


def test_too_long_is_caught_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    path = data_file("en/jfk.flac")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were read before the duration check")

    with monkeypatch.context() as patch:
        patch.setattr(soundfile.SoundFile, "read", no_reading)
        with pytest.raises(AudioTooLong, match=r"11\.0 s"):
            decode_audio(path, SR, limits=AudioLimits(max_duration_s=10.0))
    assert decode_audio(
        path, SR, limits=AudioLimits(max_duration_s=11.0)
    ).duration_s == pytest.approx(11.0)


def test_too_long_through_ffmpeg(encoded: dict[str, Path], private_tmp: Path) -> None:
    data = encoded["m4a"].read_bytes()
    with pytest.raises(AudioTooLong):
        decode_audio(data, SR, limits=AudioLimits(max_duration_s=1.5))
    assert decode_audio(data, SR, limits=AudioLimits(max_duration_s=30.0)).decoder == "ffmpeg"


def test_temp_files_are_removed(encoded: dict[str, Path], private_tmp: Path) -> None:
    decoded = decode_audio(encoded["webm"].read_bytes(), SR)
    assert decoded.decoder == "ffmpeg"
    assert list(private_tmp.iterdir()) == []


def test_ffmpeg_timeout_kills_and_cleans_up(
    encoded: dict[str, Path], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = tmp_path / "stuck-ffmpeg"
    stuck.write_text("#!/bin/sh\nexec sleep 30\n", encoding="utf-8")
    stuck.chmod(0o755)
    monkeypatch.setenv("ASR_FFMPEG_PATH", str(stuck))
    start = time.monotonic()
    with pytest.raises(DecodeTimeout) as info:
        decode_audio(
            encoded["m4a"].read_bytes(), SR, limits=AudioLimits(ffmpeg=FfmpegLimits(timeout_s=0.5))
        )
    assert time.monotonic() - start < 5.0
    assert info.value.code == "audio_decode_timeout"


def test_without_ffmpeg_only_ffmpeg_formats_fail(
    encoded: dict[str, Path], no_ffmpeg: None, private_tmp: Path
) -> None:
    for path in (
        data_file("en/jfk.flac"),
        data_file("ru_untranscribed/tinkoff_sample_1.mp3"),
        data_file("ru_untranscribed/tinkoff_stierlitz.wav"),
        encoded["ogg"],
        encoded["wav8k"],
    ):
        assert decode_audio(path.read_bytes(), SR).decoder == "soundfile"
    for kind in ("m4a", "webm", "mp4"):
        with pytest.raises(DecoderUnavailable) as info:
            decode_audio(encoded[kind].read_bytes(), SR)
        assert info.value.code == "decoder_unavailable"


# --- caps checked before decoding -------------------------------------------------------


def float_wav(channels: int, rate: int, frames: int = 1000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(
        buffer, np.zeros((frames, channels), np.float32), rate, format="WAV", subtype="FLOAT"
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("channels", "rate", "code"),
    [
        (8, 192_000, "audio_too_many_channels"),
        (7, 16_000, "audio_too_many_channels"),
        (1, 192_000, "audio_sample_rate_unsupported"),
        (1, 2_000, "audio_sample_rate_unsupported"),
        (1, 95_999, "audio_sample_rate_unsupported"),  # 16,000 resampling phases
    ],
)
def test_caps_refuse_from_the_soundfile_header_before_reading(
    channels: int, rate: int, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = float_wav(channels, rate)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were read before the caps were checked")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_reading)
    with pytest.raises(AsrError) as info:
        decode_audio(data, SR)
    assert (info.value.code, info.value.http_status) == (code, 422)
    assert_clean_message(info.value)


def test_caps_accept_what_recorders_produce() -> None:
    for channels, rate in ((6, 96_000), (2, 44_100), (1, 8_000), (1, 44_056), (2, 11_025)):
        decoded = decode_audio(float_wav(channels, rate), SR)
        assert (decoded.channels, decoded.original_sample_rate) == (channels, rate)
    wider = AudioLimits(max_channels=8, max_sample_rate=192_000)
    assert decode_audio(float_wav(8, 192_000), SR, limits=wider).channels == 8


def test_caps_refuse_through_ffmpeg(tmp_path: Path, ffmpeg_bin: Path, private_tmp: Path) -> None:
    wav, mka = tmp_path / "c8.wav", tmp_path / "c8.mka"
    wav.write_bytes(float_wav(8, 192_000, frames=192_000))
    run_ffmpeg(ffmpeg_bin, "-i", str(wav), "-c:a", "pcm_f32le", str(mka))
    with pytest.raises(AsrError) as info:
        decode_audio(mka.read_bytes(), SR)
    assert info.value.code == "audio_too_many_channels"
    wide = AudioLimits(max_channels=8)
    with pytest.raises(AsrError) as info:
        decode_audio(mka.read_bytes(), SR, limits=wide)
    assert info.value.code == "audio_sample_rate_unsupported"


def fake_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    path = tmp_path / "fake-ffmpeg"
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(0o755)
    monkeypatch.setenv("ASR_FFMPEG_PATH", str(path))
    return path


def wav_stream_header(channels: int, rate: int) -> bytes:
    """The header of the streamed float WAV ffmpeg writes (sizes unknown)."""
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    return (
        b"RIFF\xff\xff\xff\xffWAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data\xff\xff\xff\xff"
    )


def test_ffmpeg_header_is_checked_before_any_sample_and_ffmpeg_is_killed(
    encoded: dict[str, Path], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A decoder that announces 8 channels at 192 kHz and then never writes a sample: only a
    # check made on the header can answer before the 30 s timeout.
    header = tmp_path / "header.bin"
    header.write_bytes(wav_stream_header(8, 192_000))
    fake_ffmpeg(tmp_path, monkeypatch, f"cat '{header}'\nexec sleep 30\n")
    start = time.monotonic()
    with pytest.raises(AsrError) as info:
        decode_audio(encoded["m4a"].read_bytes(), SR)
    assert info.value.code == "audio_too_many_channels"
    assert time.monotonic() - start < 5.0


# --- ffmpeg confinement -----------------------------------------------------------------


def test_ffmpeg_runs_under_cpu_and_memory_limits(
    encoded: dict[str, Path], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits_file = tmp_path / "limits.txt"
    fake_ffmpeg(tmp_path, monkeypatch, f"sleep 0.3\ncat /proc/$$/limits > '{limits_file}'\n")
    bounds = FfmpegLimits(cpu_seconds=7, memory_bytes=300 << 20)
    with pytest.raises(AudioDecodeError):  # the fake writes no audio
        decode_audio(encoded["m4a"].read_bytes(), SR, limits=AudioLimits(ffmpeg=bounds))
    rows = {line[:26].strip(): line[26:].split() for line in limits_file.read_text().splitlines()}
    assert rows["Max cpu time"][:2] == ["7", "7"]
    assert rows["Max address space"][:2] == [str(300 << 20)] * 2
    assert rows["Max file size"][:2] == [str(1 << 20)] * 2  # its error log


def test_ffmpeg_error_log_is_capped(
    encoded: dict[str, Path], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A decoder that logs without end (a line per corrupt packet of a huge file) is stopped
    # at 1 MB of log instead of filling /tmp.
    fake_ffmpeg(tmp_path, monkeypatch, "sleep 0.2\nexec yes 'Invalid frame' >&2\n")
    start = time.monotonic()
    with pytest.raises(AudioDecodeError, match="Invalid frame") as info:
        decode_audio(encoded["m4a"].read_bytes(), SR)
    assert time.monotonic() - start < 10.0
    assert info.value.code == "audio_undecodable"


def test_ffmpeg_cpu_limit_is_a_decode_timeout(
    encoded: dict[str, Path], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ffmpeg(tmp_path, monkeypatch, "while :; do :; done\n")  # burns CPU, never writes
    limits = AudioLimits(ffmpeg=FfmpegLimits(cpu_seconds=1, timeout_s=60.0))
    start = time.monotonic()
    with pytest.raises(DecodeTimeout, match="CPU time") as info:
        decode_audio(encoded["m4a"].read_bytes(), SR, limits=limits)
    assert time.monotonic() - start < 30.0
    assert (info.value.code, info.value.http_status) == ("audio_decode_timeout", 422)


def test_ffmpeg_memory_limit_is_a_stable_error(encoded: dict[str, Path], private_tmp: Path) -> None:
    # The static binary alone maps ~90 MB: 64 MB makes every allocation fail.
    limits = AudioLimits(ffmpeg=FfmpegLimits(memory_bytes=64 << 20, timeout_s=10.0))
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(encoded["m4a"].read_bytes(), SR, limits=limits)
    assert info.value.code in {"audio_undecodable", "audio_decode_timeout"}
    assert_clean_message(info.value)
    assert decode_audio(encoded["m4a"].read_bytes(), SR).decoder == "ffmpeg"  # default: fits


def test_ffmpeg_output_is_capped_in_bytes(encoded: dict[str, Path], private_tmp: Path) -> None:
    # No duration cap: the byte cap (-fs, and the reader) still stops the output.
    limits = AudioLimits(ffmpeg=FfmpegLimits(output_bytes=100_000))
    with pytest.raises(AudioTooLong, match="output limit of 100,000 bytes"):
        decode_audio(encoded["m4a"].read_bytes(), SR, limits=limits)


def test_output_cap_follows_the_duration_cap() -> None:
    assert ffmpeg_module.output_byte_cap(AudioLimits()) == FfmpegLimits().output_bytes
    capped = AudioLimits(max_duration_s=60.0, max_channels=2, max_sample_rate=48_000)
    # 61 s (cap + the extra second ffmpeg runs) of 2-channel float at 48 kHz, and a header.
    assert ffmpeg_module.output_byte_cap(capped) == 4096 + 61 * 48_000 * 2 * 4


def test_ffmpeg_opens_no_network_url(
    tmp_path: Path, ffmpeg_bin: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        playlist = tmp_path / "list.m3u8"
        playlist.write_text(
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nhttp://127.0.0.1:{port}/a.ts\n"
            "#EXT-X-ENDLIST\n",
            encoding="utf-8",
        )
        with pytest.raises(AudioDecodeError):  # playlists are not a whitelisted format
            decode_audio(playlist, SR)
        # Even with the playlist demuxer allowed, the protocol whitelist stops the request.
        monkeypatch.setattr(ffmpeg_module, "_DEMUXERS", "hls,mpegts")
        with pytest.raises(AudioDecodeError, match="Protocol 'http' not on whitelist"):
            decode_audio(playlist, SR)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected


# --- the request deadline ---------------------------------------------------------------


def test_an_expired_deadline_stops_before_decoding(
    encoded: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = tmp_path / "started"
    fake_ffmpeg(tmp_path, monkeypatch, f"touch '{started}'\n")
    for data in (data_file("ru/golos_00.wav").read_bytes(), encoded["m4a"].read_bytes()):
        with pytest.raises(DeadlineExceeded) as info:
            decode_audio(data, SR, deadline=Deadline.after(-1.0))
        assert (info.value.code, info.value.http_status) == ("deadline_exceeded", 504)
    assert not started.exists()


def test_ffmpeg_is_killed_at_the_deadline(
    encoded: dict[str, Path], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ffmpeg(tmp_path, monkeypatch, "exec sleep 30\n")
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="during decoding"):
        decode_audio(encoded["m4a"].read_bytes(), SR, deadline=Deadline.after(0.5))
    assert 0.4 < time.monotonic() - start < 5.0
    # Its own timeout, when it comes first, is the 422 decode timeout.
    with pytest.raises(DecodeTimeout):
        decode_audio(
            encoded["m4a"].read_bytes(),
            SR,
            limits=AudioLimits(ffmpeg=FfmpegLimits(timeout_s=0.3)),
            deadline=Deadline.after(10.0),
        )


def test_deadline_from_a_lambda_context() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 30_000

    deadline = Deadline.from_context(Context(), margin_s=2.0)
    assert 27.5 < deadline.remaining() <= 28.0 and not deadline.expired
    capped = Deadline.from_context(Context(), margin_s=2.0, cap_s=10.0)
    assert 7.5 < capped.remaining() <= 8.0
    Deadline.after(1.0).check("anything")
    with pytest.raises(DeadlineExceeded, match="during transcription"):
        Deadline.after(0.0).check("transcription")


# --- finding ffmpeg ---------------------------------------------------------------------


def test_find_ffmpeg_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(name: str) -> Path:
        path = tmp_path / name / "ffmpeg"
        path.parent.mkdir()
        path.write_text("#!/bin/sh\n", encoding="utf-8")
        path.chmod(0o755)
        return path

    configured, layer, repo, on_path = fake("env"), fake("opt"), fake("repo"), fake("path")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setattr(ffmpeg_module, "LAYER_PATH", layer)
    monkeypatch.setattr(ffmpeg_module, "REPO_PATH", repo)
    monkeypatch.setenv("ASR_FFMPEG_PATH", str(configured))
    assert find_ffmpeg() == configured
    monkeypatch.setenv("ASR_FFMPEG_PATH", "")
    assert find_ffmpeg() == layer
    layer.unlink()
    assert find_ffmpeg() == repo
    repo.chmod(0o644)  # not executable: skipped
    assert find_ffmpeg() == on_path
    monkeypatch.setenv("ASR_FFMPEG_PATH", str(tmp_path / "absent"))
    assert find_ffmpeg() is None  # an explicit setting is never second-guessed
    monkeypatch.delenv("ASR_FFMPEG_PATH")
    assert find_ffmpeg() == on_path
