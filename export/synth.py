"""Synthesise Russian speech with espeak-ng: deterministic 16 kHz float32 clips.

Used to build the demo model's training and validation data. Every clip is
``espeak-ng -v ru+<variant> -s <wpm> -p <pitch>`` resampled from 22.05 kHz to 16 kHz
(``asr.resample``, the runtime's resampler),
trimmed to ~100-200 ms of silence either side, then given a random gain and a little
white noise. All randomness comes from a generator seeded by (seed, text, voice), so the
same call always returns the same samples, whatever order the clips are made in.

CLI: ``python -m export.synth --out-dir /tmp/clips --variants m3 f2 --speeds 150
"привет" "сколько времени"`` writes 16 kHz PCM16 WAVs and prints their paths.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
from asr.resample import resample

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE = 16000
ESPEAK_LANGUAGE = "ru"
TRIM_FRAME_SECONDS = 0.01
TRIM_THRESHOLD_DB = -40.0
KEEP_SILENCE_SECONDS = (0.10, 0.20)
GAIN_RANGE = (0.3, 0.9)
SNR_DB_RANGE = (30.0, 45.0)


class EspeakMissingError(RuntimeError):
    """espeak-ng is not installed or not on PATH."""


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice setting: a ``ru+<variant>`` voice at a speed and pitch."""

    variant: str
    wpm: int
    pitch: int = 50

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.wpm}wpm/p{self.pitch}"


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakMissingError(
            "espeak-ng is not installed: install it with `apt-get install espeak-ng` "
            "(macOS: `brew install espeak-ng`)"
        )
    return path


def espeak_wav(text: str, voice: Voice, workdir: Path) -> tuple[npt.NDArray[np.float64], int]:
    """Raw espeak-ng output (mono float64 at its own rate, 22.05 kHz)."""
    out = workdir / f"{zlib.crc32(f'{text}|{voice.label}'.encode()):08x}.wav"
    command = [
        espeak_binary(),
        "-v",
        f"{ESPEAK_LANGUAGE}+{voice.variant}",
        "-s",
        str(voice.wpm),
        "-p",
        str(voice.pitch),
        "-w",
        str(out),
        text,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.is_file():
        raise RuntimeError(f"espeak-ng failed for {voice.label} {text!r}: {result.stderr.strip()}")
    audio, rate = sf.read(str(out), dtype="float64", always_2d=True)
    out.unlink()
    return audio.mean(axis=1), int(rate)


def trim_silence(audio: FloatArray, keep_seconds: float) -> FloatArray:
    """Cut leading/trailing silence (frames 40 dB below the loudest), keeping some."""
    frame = round(TRIM_FRAME_SECONDS * SAMPLE_RATE)
    n_frames = len(audio) // frame
    if n_frames == 0:
        return audio
    energy = np.square(audio[: n_frames * frame].reshape(n_frames, frame)).mean(axis=1)
    level_db = 10.0 * np.log10(energy / max(float(energy.max()), 1e-20) + 1e-20)
    voiced = np.flatnonzero(level_db > TRIM_THRESHOLD_DB)
    if len(voiced) == 0:
        return audio
    keep = round(keep_seconds * SAMPLE_RATE)
    start = max(0, voiced[0] * frame - keep)
    stop = min(len(audio), (voiced[-1] + 1) * frame + keep)
    return audio[start:stop]


def clip_rng(seed: int, text: str, voice: Voice) -> np.random.Generator:
    """A generator fixed by the seed and the clip's identity (not by call order)."""
    return np.random.default_rng([seed, zlib.crc32(f"{text}|{voice.label}".encode())])


def augment(audio: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Random peak gain plus white noise at 30-45 dB SNR."""
    peak = float(np.abs(audio).max()) or 1.0
    scaled = audio * (rng.uniform(*GAIN_RANGE) / peak)
    power = float(np.mean(np.square(scaled))) or 1e-12
    snr_db = rng.uniform(*SNR_DB_RANGE)
    noise = rng.standard_normal(len(scaled)) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    mixed: FloatArray = np.clip(scaled + noise, -1.0, 1.0).astype(np.float32)
    return mixed


def synthesize(
    text: str, voice: Voice, *, seed: int = 0, workdir: Path | None = None
) -> FloatArray:
    """One clip: 16 kHz mono float32 in [-1, 1]."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
            return synthesize(text, voice, seed=seed, workdir=Path(tmp))
    raw, rate = espeak_wav(text, voice, workdir)
    rng = clip_rng(seed, text, voice)
    audio = trim_silence(resample(raw, rate, SAMPLE_RATE), rng.uniform(*KEEP_SILENCE_SECONDS))
    return augment(audio, rng)


def voice_grid(variants: Iterable[str], speeds: Iterable[int], *, pitch: int = 50) -> list[Voice]:
    return [Voice(variant, wpm, pitch) for variant in variants for wpm in speeds]


def synthesize_clips(
    phrases: Sequence[str],
    voices: Sequence[Voice],
    *,
    seed: int = 0,
    workers: int = 2,
) -> list[tuple[str, FloatArray]]:
    """(text, audio) for every phrase × voice, phrase-major; espeak runs ``workers`` at a time."""
    espeak_binary()  # fail early with the install hint
    jobs = [(text, voice) for text in phrases for voice in voices]
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp, ThreadPoolExecutor(workers) as pool:
        audios = pool.map(lambda job: synthesize(*job, seed=seed, workdir=Path(tmp)), jobs)
        return [(text, audio) for (text, _), audio in zip(jobs, audios, strict=True)]


def synthesize_grid(
    phrases: Sequence[str],
    variants: Sequence[str],
    speeds: Sequence[int],
    *,
    pitch: int = 50,
    seed: int = 0,
) -> list[tuple[str, FloatArray]]:
    """(text, audio) for every phrase × variant × speed."""
    return synthesize_clips(phrases, voice_grid(variants, speeds, pitch=pitch), seed=seed)


def write_wav(path: Path, audio: FloatArray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phrases", nargs="+", help="Russian text to speak")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=["m3"])
    parser.add_argument("--speeds", nargs="+", type=int, default=[160])
    parser.add_argument("--pitch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    voices = voice_grid(args.variants, args.speeds, pitch=args.pitch)
    clips = synthesize_clips(args.phrases, voices, seed=args.seed)
    labels = [voice.label for _ in args.phrases for voice in voices]
    for index, ((text, audio), label) in enumerate(zip(clips, labels, strict=True)):
        path = args.out_dir / f"clip_{index:03d}.wav"
        write_wav(path, audio)
        print(f"{path}\t{len(audio) / SAMPLE_RATE:.2f}s\t{label}\t{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
