"""Log-mel front ends in numpy: NeMo's FilterbankFeatures and GigaAM's torchaudio MelSpectrogram.

NeMo: audio → pre-emphasis → centred STFT (zero padding) → power → mel → log(x + guard) →
per-feature normalisation, returning only the valid frames. By default this is
FilterbankFeatures as of NeMo 2.5 (zero padding, len // hop frames); ``stft_pad_mode=
"reflect"`` with ``valid_frames="all"`` is the earlier releases' (reflection, one frame
more), and also FilterbankFeaturesTA's (torchaudio), which in addition floors the
normalisation variance (``normalize_variance_floor``).

GigaAM: audio → STFT (reflection padding when centred) → power → HTK mel →
log(clamp(x, 1e-9, 1e9)).

Both compute in float64 on the float32 window and filterbank that torch holds, and return
float32. ``make_frontend`` picks the one a bundle's config names.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .config import AnyFrontendConfig, FrontendConfig, GigaamMelConfig
from .mel import mel_filterbank, torchaudio_filterbank

Features = npt.NDArray[np.float32]
Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
Audio = npt.NDArray[np.floating[Any]]

# Frames per FFT batch: bounds the temporaries (windowed frames, spectrum, power) to a few
# MB whatever the audio length, and keeps them cache-sized.
_FRAMES_PER_CHUNK = 512


class Frontend(Protocol):
    """Mono float samples at ``config.sample_rate`` → features [n_mels, num_frames(len)]."""

    @property
    def config(self) -> AnyFrontendConfig: ...

    def num_frames(self, num_samples: int) -> int: ...

    def __call__(self, audio: Audio) -> Features: ...


def make_frontend(config: AnyFrontendConfig) -> Frontend:
    if isinstance(config, FrontendConfig):
        return NemoMelFrontend(config)
    if isinstance(config, GigaamMelConfig):
        return GigaamMelFrontend(config)
    raise TypeError(f"no front end for {type(config).__name__}")


class NemoMelFrontend:
    """Turns mono float samples at ``config.sample_rate`` into features [n_mels, T]."""

    def __init__(self, config: FrontendConfig) -> None:
        self.config = config
        self._window = _torch_hann_window(config.win_length, periodic=False).astype(np.float64)
        self._filterbank = nemo_filterbank(config).astype(np.float64)

    def num_frames(self, num_samples: int) -> int:
        """NeMo's valid length, len // hop for even n_fft; the STFT's extra frame is dropped.

        NeMo (get_seq_len) computes (len + 2 * (n_fft // 2) - n_fft) // hop, which is
        (len - 1) // hop when n_fft is odd.
        """
        _check_num_samples(num_samples)
        config = self.config
        floor = (num_samples + 2 * (config.n_fft // 2) - config.n_fft) // config.hop_length
        if config.valid_frames == "all" and num_samples > 0:
            return max(0, floor + 1)
        return max(0, floor)

    def __call__(self, audio: Audio) -> Features:
        _check_mono(audio)
        config = self.config
        num_frames = self.num_frames(audio.shape[0])
        if num_frames == 0:
            return np.zeros((config.n_mels, 0), dtype=np.float32)
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
        features = _mel_spectrogram(
            padded,
            self._window,
            self._filterbank,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            num_frames=num_frames,
            mag_power=config.mag_power,
        )
        if config.log_guard_type == "clamp":
            np.maximum(features, config.log_guard, out=features)
        else:
            features += config.log_guard
        np.log(features, out=features)
        if config.normalize == "per_feature":
            self._normalize_per_feature(features)
        return features.astype(np.float32)

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
        np.maximum(variance, self.config.normalize_variance_floor, out=variance)
        std = np.sqrt(variance)[:, np.newaxis]
        features /= std + self.config.normalize_std_eps


class GigaamMelFrontend:
    """GigaAM's FeatureExtractor: features [n_mels, T], T = ``num_frames(len(audio))``.

    Audio torch.stft cannot frame gives no frames instead of torch's error: a centred clip
    of n_fft // 2 samples or fewer (reflection padding needs more samples than the pad), and
    a non-centred clip shorter than n_fft.
    """

    def __init__(self, config: GigaamMelConfig) -> None:
        self.config = config
        window, filterbank = gigaam_buffers(config)
        self._window = window.astype(np.float64)
        self._filterbank = filterbank.astype(np.float64)

    def num_frames(self, num_samples: int) -> int:
        """len // hop + 1 when centred, else (len - n_fft) // hop + 1; 0 where torch raises."""
        _check_num_samples(num_samples)
        config = self.config
        if config.center:
            return num_samples // config.hop_length + 1 if num_samples > config.n_fft // 2 else 0
        return max(0, (num_samples - config.n_fft) // config.hop_length + 1)

    def __call__(self, audio: Audio) -> Features:
        _check_mono(audio)
        config = self.config
        num_frames = self.num_frames(audio.shape[0])
        if num_frames == 0:
            return np.zeros((config.n_mels, 0), dtype=np.float32)
        signal = np.asarray(audio, dtype=np.float64)
        if config.center:
            signal = np.pad(signal, config.n_fft // 2, mode="reflect")
        features = _mel_spectrogram(
            signal,
            self._window,
            self._filterbank,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            num_frames=num_frames,
            mag_power=2.0,
        )
        np.clip(features, config.clamp_min, config.clamp_max, out=features)
        return np.log(features, out=features).astype(np.float32)


def nemo_filterbank(config: FrontendConfig) -> Float32Array:
    """The float32 mel filterbank buffer [n_mels, n_fft // 2 + 1] NeMo's featurizer holds:
    librosa's float64 maths rounded once (FilterbankFeatures), or torchaudio's float32 maths
    (FilterbankFeaturesTA), which moves weights by ~1e-7 and, at the edges of a band with a
    strong tone in it, its features by ~1e-4."""
    fmax = config.sample_rate / 2 if config.fmax is None else config.fmax
    if config.filterbank == "torchaudio":
        return torchaudio_filterbank(
            config.sample_rate,
            config.n_fft,
            config.n_mels,
            fmin=config.fmin,
            fmax=fmax,
            scale="slaney",
            norm=config.mel_norm,
        )
    filterbank = mel_filterbank(
        config.sample_rate,
        config.n_fft,
        config.n_mels,
        fmin=config.fmin,
        fmax=fmax,
        norm=config.mel_norm,
    )
    return filterbank.astype(np.float32)


def gigaam_buffers(config: GigaamMelConfig) -> tuple[Float32Array, Float32Array]:
    """The window [win_length] and mel filterbank [n_mels, n_fft // 2 + 1] GigaAM's
    MelSpectrogram holds (its ``spectrogram.window`` and ``mel_scale.fb`` buffers; ``fb`` is
    stored transposed, [n_freqs, n_mels]), bfloat16-rounded if ``config.bf16_buffers``."""
    window = _torch_hann_window(config.win_length, periodic=True)
    filterbank = torchaudio_filterbank(
        config.sample_rate, config.n_fft, config.n_mels, scale="htk", norm=None
    )
    if config.bf16_buffers:
        return round_to_bfloat16(window), round_to_bfloat16(filterbank)
    return window, filterbank


def round_to_bfloat16(values: npt.ArrayLike) -> Float32Array:
    """``x.to(torch.bfloat16).to(torch.float32)``: keep the top 16 bits of each float32,
    rounding to nearest, ties to even."""
    x = np.asarray(values, dtype=np.float32)
    # In uint64, so the rounding bias cannot wrap around the top of the range.
    bits = x.view(np.uint32).astype(np.uint64)
    bits += 0x7FFF + ((bits >> 16) & 1)
    rounded = (bits & 0xFFFF0000).astype(np.uint32).view(np.float32)
    # Rounding a NaN's bits could carry it into infinity.
    return np.where(np.isnan(x), np.float32(np.nan), rounded)


def _mel_spectrogram(
    padded: Float64Array,
    window: Float64Array,
    filterbank: Float64Array,
    *,
    n_fft: int,
    hop_length: int,
    num_frames: int,
    mag_power: float,
) -> Float64Array:
    """filterbank @ |STFT|**mag_power, frame t being padded[t*hop : t*hop + n_fft]."""
    # torch.stft centres a shorter window inside n_fft. Framing just the win_length samples
    # it covers and zero-filling to n_fft in rfft shifts the frame circularly, which changes
    # the phase but not |X|, and saves the work on the zeros.
    offset = (n_fft - window.shape[0]) // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded, window.shape[0])
    frames = frames[offset::hop_length][:num_frames]
    mel = np.empty((filterbank.shape[0], num_frames), dtype=np.float64)
    for start in range(0, num_frames, _FRAMES_PER_CHUNK):
        stop = min(start + _FRAMES_PER_CHUNK, num_frames)
        spectrum = np.fft.rfft(frames[start:stop] * window, n=n_fft)
        if mag_power == 2.0:
            power = spectrum.real**2 + spectrum.imag**2
        else:
            power = np.abs(spectrum) ** mag_power
        np.matmul(filterbank, power.T, out=mel[:, start:stop])
    return mel


def _torch_hann_window(length: int, *, periodic: bool) -> Float32Array:
    """torch.hann_window(length, periodic), built in float32 as torch builds it.

    torch computes 0.5 - 0.5 * cos(n * 2 pi / (N - 1)) in float32, N = length (+ 1 when
    periodic, dropping the last point). We repeat its float32 angle and rounding around an
    exact cos; torch's float32 cos is within one ulp, so a few values still differ by one
    ulp. The bits matter: in deep spectral notches (~90 dB under the frame's energy)
    one-ulp window changes move NeMo's normalised features by ~1e-4, GigaAM's by ~6e-5.
    """
    if length == 1:
        return np.ones(1, dtype=np.float32)
    points = length + 1 if periodic else length
    angle = np.arange(points, dtype=np.float32) * np.float32(2.0 * np.pi / (points - 1))
    cosine = np.cos(angle.astype(np.float64)).astype(np.float32)
    window: Float32Array = np.float32(0.5) - np.float32(0.5) * cosine
    return window[:length]


def _check_num_samples(num_samples: int) -> None:
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")


def _check_mono(audio: Audio) -> None:
    if audio.ndim != 1:
        raise ValueError(f"expected mono samples (a 1-D array), got shape {audio.shape}")
