"""NeMo's log-mel front end (FilterbankFeatures, inference mode) in numpy.

Audio → pre-emphasis → centred STFT (zero padding) → power → mel → log(x + guard) →
per-feature normalisation, returning only the valid frames. By default this is
FilterbankFeatures as of NeMo 2.5 (zero padding, len // hop frames); ``stft_pad_mode=
"reflect"`` with ``valid_frames="all"`` is the earlier releases' (reflection, one frame
more). Computed in float64, returned as float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .config import FrontendConfig
from .mel import mel_filterbank

Features = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]

# Frames per FFT batch: bounds the temporaries (windowed frames, spectrum, power) to a few
# MB whatever the audio length, and keeps them cache-sized.
_FRAMES_PER_CHUNK = 512


class NemoMelFrontend:
    """Turns mono float samples at ``config.sample_rate`` into features [n_mels, T]."""

    def __init__(self, config: FrontendConfig) -> None:
        self.config = config
        self._window = _torch_hann_window(config.win_length)
        fmax = config.sample_rate / 2 if config.fmax is None else config.fmax
        filterbank = mel_filterbank(
            config.sample_rate,
            config.n_fft,
            config.n_mels,
            fmin=config.fmin,
            fmax=fmax,
            norm=config.mel_norm,
        )
        # NeMo holds the filterbank as a float32 buffer.
        self._filterbank = filterbank.astype(np.float32).astype(np.float64)
        # torch.stft centres a shorter window inside n_fft, starting at this offset.
        self._window_offset = (config.n_fft - config.win_length) // 2

    def num_frames(self, num_samples: int) -> int:
        """NeMo's valid length, len // hop for even n_fft; the STFT's extra frame is dropped.

        NeMo (get_seq_len) computes (len + 2 * (n_fft // 2) - n_fft) // hop, which is
        (len - 1) // hop when n_fft is odd.
        """
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        config = self.config
        floor = (num_samples + 2 * (config.n_fft // 2) - config.n_fft) // config.hop_length
        if config.valid_frames == "all" and num_samples > 0:
            return max(0, floor + 1)
        return max(0, floor)

    def __call__(self, audio: npt.NDArray[np.floating[Any]]) -> Features:
        if audio.ndim != 1:
            raise ValueError(f"expected mono samples (a 1-D array), got shape {audio.shape}")
        num_frames = self.num_frames(audio.shape[0])
        if num_frames == 0:
            return np.zeros((self.config.n_mels, 0), dtype=np.float32)
        features = self._mel_power(audio, num_frames)
        features += self.config.log_guard
        np.log(features, out=features)
        if self.config.normalize == "per_feature":
            self._normalize_per_feature(features)
        return features.astype(np.float32)

    def _mel_power(self, audio: npt.NDArray[np.floating[Any]], num_frames: int) -> Float64Array:
        config = self.config
        pad = config.n_fft // 2
        padded = np.zeros(audio.shape[0] + 2 * pad, dtype=np.float64)
        signal = padded[pad : pad + audio.shape[0]]
        signal[:] = audio
        # Pre-emphasis before padding, as NeMo does: y[0] = x[0], y[t] = x[t] - a * x[t-1].
        signal[1:] -= config.preemph * signal[:-1]
        # torch.stft's reflect padding needs more samples than the pad; shorter clips keep
        # the zeros (older NeMo raised on them).
        if config.stft_pad_mode == "reflect" and audio.shape[0] > pad:
            padded[:pad] = signal[pad:0:-1]
            padded[pad + audio.shape[0] :] = signal[-2 : -pad - 2 : -1]

        # Frame t of torch.stft(center=True) spans padded[t*hop : t*hop + n_fft], and the
        # window is non-zero only on win_length samples at _window_offset within it. Framing
        # just those samples and zero-filling to n_fft in rfft shifts the frame circularly,
        # which changes the phase but not |X|, and saves the work on the zeros.
        frames = np.lib.stride_tricks.sliding_window_view(padded, config.win_length)
        frames = frames[self._window_offset :: config.hop_length][:num_frames]

        mel_power = np.empty((config.n_mels, num_frames), dtype=np.float64)
        for start in range(0, num_frames, _FRAMES_PER_CHUNK):
            stop = min(start + _FRAMES_PER_CHUNK, num_frames)
            spectrum = np.fft.rfft(frames[start:stop] * self._window, n=config.n_fft)
            if config.mag_power == 2.0:
                power = spectrum.real**2 + spectrum.imag**2
            else:
                power = np.abs(spectrum) ** config.mag_power
            np.matmul(self._filterbank, power.T, out=mel_power[:, start:stop])
        return mel_power

    def _normalize_per_feature(self, features: Float64Array) -> None:
        """In place: (x - mean) / (std + eps) per mel bin, std with the N-1 denominator.

        NeMo takes these statistics in float32, where the mean of a constant bin (digital
        silence: every value is log(guard)) can miss the value by an ulp or two; divided by
        std + eps that becomes a constant of a few tenths (0.28 on 2 s of silence), its sign
        set by summation order. Subtracting each bin's first value before averaging keeps a
        constant bin at exactly 0, the exact-arithmetic result.
        """
        num_frames = features.shape[1]
        features -= features[:, :1].copy()
        features -= features.mean(axis=1, keepdims=True)
        # One frame: torch.std gives NaN (0/0); NeMo >= 2.5 replaces it by 0, so the frame
        # normalises to 0 / eps = 0. max(..., 1) yields the same 0 without a NaN.
        variance = np.einsum("ij,ij->i", features, features) / max(num_frames - 1, 1)
        std = np.sqrt(variance)[:, np.newaxis]
        features /= std + self.config.normalize_std_eps


def _torch_hann_window(length: int) -> Float64Array:
    """NeMo's window buffer: torch.hann_window(length, periodic=False), built in float32.

    torch computes 0.5 - 0.5 * cos(n * 2 pi / (length - 1)) in float32. We repeat its float32
    angle and rounding around an exact cos; torch's float32 cos is within one ulp, so a few
    values still differ by one ulp. The bits matter: in deep spectral notches (~90 dB under
    the frame's energy) one-ulp window changes move normalised features by ~1e-4.
    """
    if length == 1:
        return np.ones(1)
    angle = np.arange(length, dtype=np.float32) * np.float32(2.0 * np.pi / (length - 1))
    cosine = np.cos(angle.astype(np.float64)).astype(np.float32)
    return (np.float32(0.5) - np.float32(0.5) * cosine).astype(np.float64)
