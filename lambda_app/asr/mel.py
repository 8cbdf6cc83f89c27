"""Triangular mel filterbanks in numpy (Slaney or HTK scale): librosa.filters.mel's float64
maths, and torchaudio's melscale_fbanks as its float32 arithmetic rounds it."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Slaney's Auditory Toolbox scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above,
# with 27 mels per factor of 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = float(np.log(6.4) / 27.0)


def hz_to_mel(hz: FloatArray, *, htk: bool = False) -> FloatArray:
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / _SLANEY_HZ_PER_MEL
    # np.maximum keeps log() away from 0 Hz in the branch np.where discards.
    logarithmic = (
        _SLANEY_BREAK_MEL
        + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    )
    return np.where(hz >= _SLANEY_BREAK_HZ, logarithmic, linear)


def mel_to_hz(mel: FloatArray, *, htk: bool = False) -> FloatArray:
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, logarithmic, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    *,
    fmin: float,
    fmax: float,
    norm: Literal["slaney"] | None,
    htk: bool = False,
) -> FloatArray:
    """Weights [n_mels, n_fft // 2 + 1] mapping a power spectrum onto mel bands (float64).

    Triangles peak at n_mels points evenly spaced in mel between fmin and fmax (the two
    extra points are the outer edges). ``norm="slaney"`` scales each triangle by
    2 / (its width in Hz), so every band has unit area; ``None`` leaves peaks at 1.
    """
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_low, mel_high = hz_to_mel(np.array([fmin, fmax], dtype=np.float64), htk=htk)
    mel_edges = np.linspace(mel_low, mel_high, n_mels + 2)
    edge_hz = mel_to_hz(mel_edges, htk=htk)
    edge_gap_hz = np.diff(edge_hz)
    # offsets[i, k]: how far edge i lies above FFT bin k, in Hz.
    offsets = edge_hz[:, np.newaxis] - bin_hz[np.newaxis, :]
    rising = -offsets[:-2] / edge_gap_hz[:-1, np.newaxis]
    falling = offsets[2:] / edge_gap_hz[1:, np.newaxis]
    weights: FloatArray = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (edge_hz[2:] - edge_hz[:-2]))[:, np.newaxis]
    return weights


def torchaudio_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    *,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: Literal["htk", "slaney"],
    norm: Literal["slaney"] | None,
) -> npt.NDArray[np.float32]:
    """torchaudio's melscale_fbanks(n_fft // 2 + 1, fmin, fmax, n_mels, sr, norm, scale),
    transposed to [n_mels, n_fft // 2 + 1].

    The same triangles as ``mel_filterbank``, but torchaudio builds them in float32
    arithmetic, which moves weights by up to ~5e-6 relative (and, after GigaAM's bfloat16
    rounding, lands some on the neighbouring bfloat16 value), so its float32 steps are
    repeated here: band edges from a float32 linspace in mel, every product, difference and
    quotient rounded to float32.
    """
    f32 = np.float32
    nyquist = sample_rate // 2  # integer division in torchaudio, for odd rates too
    top = float(nyquist) if fmax is None else fmax
    bin_hz = _torch_linspace(0.0, float(nyquist), n_fft // 2 + 1)
    mel_range = hz_to_mel(np.array([fmin, top], dtype=np.float64), htk=scale == "htk")
    mels = _torch_linspace(float(mel_range[0]), float(mel_range[1]), n_mels + 2)
    edge_hz = _mel_to_hz_float32(mels, scale)
    edge_gap_hz = np.diff(edge_hz)
    offsets = edge_hz[:, np.newaxis] - bin_hz[np.newaxis, :]
    rising = -offsets[:-2] / edge_gap_hz[:-1, np.newaxis]
    falling = offsets[2:] / edge_gap_hz[1:, np.newaxis]
    weights: npt.NDArray[np.float32] = np.maximum(f32(0.0), np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (f32(2.0) / (edge_hz[2:] - edge_hz[:-2]))[:, np.newaxis]
    return weights


def _mel_to_hz_float32(mels: npt.NDArray[np.float32], scale: str) -> npt.NDArray[np.float32]:
    """torchaudio's _mel_to_hz on a float32 tensor. torch's float32 pow and exp are not
    correctly rounded and these are, so ~1 edge in 40 differs from torch's by one ulp
    (weights move by up to ~1e-5 relative)."""
    f32 = np.float32
    if scale == "htk":
        powers = (10.0 ** (mels / f32(2595.0)).astype(np.float64)).astype(np.float32)
        hz: npt.NDArray[np.float32] = f32(700.0) * (powers - f32(1.0))
        return hz
    hz = f32(_SLANEY_HZ_PER_MEL) * mels
    logarithmic = mels >= f32(_SLANEY_BREAK_MEL)
    exponent = f32(_SLANEY_LOG_STEP) * (mels[logarithmic] - f32(_SLANEY_BREAK_MEL))
    hz[logarithmic] = f32(_SLANEY_BREAK_HZ) * np.exp(exponent.astype(np.float64)).astype(f32)
    return hz


def _torch_linspace(start: float, end: float, steps: int) -> npt.NDArray[np.float32]:
    """torch.linspace(start, end, steps) in float32 as torch's CPU kernel computes it:
    start + i * step over the first half, end - (steps - 1 - i) * step over the rest, each
    with a single rounding (a fused multiply-add; float64 holds these products exactly)."""
    first, last = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([first], dtype=np.float32)
    step = np.float64((last - first) / np.float32(steps - 1))
    index = np.arange(steps, dtype=np.float64)
    values = np.where(index < steps // 2, first + index * step, last - (steps - 1 - index) * step)
    return values.astype(np.float32)
