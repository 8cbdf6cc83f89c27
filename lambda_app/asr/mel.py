"""Triangular mel filterbanks in numpy, equal to librosa.filters.mel (Slaney or HTK scale)."""

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
