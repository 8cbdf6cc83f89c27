"""The runtime's two log-mel front ends computed the librosa way, for ``bench.frontend_vs_librosa``.

What a user would write with librosa for the same features: ``librosa.effects.preemphasis``,
``librosa.stft``, ``librosa.filters.get_window`` / ``librosa.filters.mel`` and numpy for the
rest. Window and filterbank are built once, as the runtime's front ends build theirs.
"""

from __future__ import annotations

from typing import Any

import librosa
import numpy as np
import numpy.typing as npt
from asr.config import AnyFrontendConfig, FrontendConfig, GigaamMelConfig
from asr.frontend import round_to_bfloat16

Audio = npt.NDArray[np.floating[Any]]
Features = npt.NDArray[np.floating[Any]]


class LibrosaNemoMel:
    """NeMo's FilterbankFeatures: pre-emphasis, centred STFT of a symmetric Hann window,
    power, Slaney mel, log(x + guard), valid frames, per-feature normalisation."""

    def __init__(self, config: FrontendConfig) -> None:
        self.config = config
        self.window = librosa.filters.get_window("hann", config.win_length, fftbins=False)
        self.filterbank = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.sample_rate / 2 if config.fmax is None else config.fmax,
            norm=config.mel_norm,
        )

    def __call__(self, audio: Audio) -> Features:
        config = self.config
        # zi=0 leaves the first sample as it is (NeMo: y[0] = x[0]); librosa's default
        # extrapolates a sample before it.
        emphasised = librosa.effects.preemphasis(audio, coef=config.preemph, zi=0.0)
        spectrum = librosa.stft(
            emphasised,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.win_length,
            window=self.window,
            center=True,
            pad_mode=config.stft_pad_mode,
        )
        power = np.abs(spectrum) ** config.mag_power
        features = np.log(self.filterbank @ power + config.log_guard)
        # NeMo's get_seq_len; releases before 2.5 kept the last STFT frame too.
        valid = (audio.shape[0] + 2 * (config.n_fft // 2) - config.n_fft) // config.hop_length
        features = features[:, : valid + (config.valid_frames == "all")]
        if config.normalize == "per_feature":
            mean = features.mean(axis=1, keepdims=True)
            std = features.std(axis=1, ddof=1, keepdims=True)
            features = (features - mean) / (std + config.normalize_std_eps)
        result: Features = features
        return result


class LibrosaGigaamMel:
    """GigaAM's torchaudio MelSpectrogram: STFT of a periodic Hann window (reflection padding
    when centred), power, HTK mel without norm, log(clamp(x)); v3's window and filterbank
    rounded to bfloat16 as its checkpoints store them."""

    def __init__(self, config: GigaamMelConfig) -> None:
        self.config = config
        window = librosa.filters.get_window("hann", config.win_length, fftbins=True)
        filterbank = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=0.0,
            fmax=float(config.sample_rate // 2),
            htk=True,
            norm=None,
        )
        if config.bf16_buffers:
            window, filterbank = round_to_bfloat16(window), round_to_bfloat16(filterbank)
        self.window, self.filterbank = window, filterbank

    def __call__(self, audio: Audio) -> Features:
        config = self.config
        spectrum = librosa.stft(
            audio,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.win_length,
            window=self.window,
            center=config.center,
            pad_mode="reflect",
        )
        mel = self.filterbank @ (np.abs(spectrum) ** 2)
        features: Features = np.log(np.clip(mel, config.clamp_min, config.clamp_max))
        return features


def make_librosa_frontend(config: AnyFrontendConfig) -> LibrosaNemoMel | LibrosaGigaamMel:
    if isinstance(config, FrontendConfig):
        return LibrosaNemoMel(config)
    return LibrosaGigaamMel(config)
