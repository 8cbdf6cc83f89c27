"""NeMo's FilterbankFeaturesTA (``use_torchaudio: true``) rebuilt in torch, for the tests.

torchaudio cannot be installed here, so its parts are written out from its documented maths:
``melscale_fbanks`` (Slaney scale, float32 tensors, [n_freqs, n_mels]) and ``MelSpectrogram``
(centred torch.stft with reflect padding, |X|**2, then the filterbank). FilterbankFeaturesTA
adds pre-emphasis, log(x + guard) or log(max(x, guard)), len // hop + 1 frames, and per-feature
statistics whose variance is clamped at the guard before the square root.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL


@dataclass(frozen=True)
class TorchaudioFeaturizer:
    """FilterbankFeaturesTA's arguments as AudioToMelSpectrogramPreprocessor passes them."""

    sample_rate: int = 16000
    win_length: int = 320
    hop_length: int = 160
    n_fft: int = 512
    n_mels: int = 64
    preemph: float | None = 0.97
    lowfreq: float = 0.0
    highfreq: float | None = None
    guard_type: Literal["add", "clamp"] = "add"
    guard: float = 2.0**-24
    normalize: Literal["per_feature"] | None = "per_feature"

    def preprocessor_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``preprocessor:`` section of a model_config.yaml that builds this featurizer."""
        return {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": self.sample_rate,
            "window_size": self.win_length / self.sample_rate,
            "window_stride": self.hop_length / self.sample_rate,
            "window": "hann",
            "n_fft": self.n_fft,
            "features": self.n_mels,
            "preemph": self.preemph,
            "lowfreq": self.lowfreq,
            "highfreq": self.highfreq,
            "log_zero_guard_type": self.guard_type,
            "log_zero_guard_value": self.guard,
            "normalize": self.normalize,
            "dither": 1e-5,
            "pad_to": 0,
            "use_torchaudio": True,
            **overrides,
        }

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def window(self) -> torch.Tensor:
        return torch.hann_window(self.win_length, periodic=False)

    def filterbank(self) -> torch.Tensor:
        """torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")."""
        n_freqs = self.n_fft // 2 + 1
        f_max = float(self.sample_rate // 2) if self.highfreq is None else self.highfreq
        all_freqs = torch.linspace(0, self.sample_rate // 2, n_freqs)
        m_pts = torch.linspace(_hz_to_mel(self.lowfreq), _hz_to_mel(f_max), self.n_mels + 2)
        f_pts = _mel_to_hz(m_pts)
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
        down = -slopes[:, :-2] / f_diff[:-1]
        up = slopes[:, 2:] / f_diff[1:]
        fb = torch.max(torch.zeros(1), torch.min(down, up))
        return fb * (2.0 / (f_pts[2 : self.n_mels + 2] - f_pts[: self.n_mels])).unsqueeze(0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The buffers a checkpoint trained with this featurizer stores, by their real keys."""
        prefix = "preprocessor.featurizer._mel_spec_extractor."
        return {
            f"{prefix}spectrogram.window": self.window(),
            f"{prefix}mel_scale.fb": self.filterbank(),
        }

    def __call__(self, audio: npt.NDArray[np.float32], dtype: torch.dtype) -> npt.NDArray[Any]:
        """forward() in eval mode on a batch of one; float64 out. ``dtype`` runs the maths in
        float32 (as NeMo does) or float64 (its arithmetic without the rounding)."""
        x = torch.from_numpy(audio).to(dtype).unsqueeze(0)
        if self.preemph is not None:
            x = x - self.preemph * torch.nn.functional.pad(x, (1, 0))[:, :-1]
        spectrum = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window().to(dtype),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = spectrum.abs().pow(2.0)
        mel = torch.matmul(power.transpose(-1, -2), self.filterbank().to(dtype)).transpose(-1, -2)
        mel = mel + self.guard if self.guard_type == "add" else mel.clamp(min=self.guard)
        features = mel.log()[0].to(torch.float64)
        assert features.shape[1] == self.num_frames(audio.shape[0])
        if self.normalize == "per_feature":
            # In float64 for the reason test_frontend.nemo_reference gives: float32 means of a
            # constant bin miss it by an ulp, which the division then magnifies.
            length = features.shape[1]
            means = features.sum(dim=1, keepdim=True) / length
            variance = (features - means).pow(2.0).sum(dim=1, keepdim=True) / (length - 1)
            features = (features - means) / (variance.clamp(min=self.guard).sqrt() + 1e-5)
        return features.numpy()


def _hz_to_mel(hz: float) -> float:
    if hz < _SLANEY_BREAK_HZ:
        return hz / _SLANEY_HZ_PER_MEL
    return _SLANEY_BREAK_MEL + math.log(hz / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    hz = _SLANEY_HZ_PER_MEL * mels
    logarithmic = mels >= _SLANEY_BREAK_MEL
    exponent = _SLANEY_LOG_STEP * (mels[logarithmic] - _SLANEY_BREAK_MEL)
    hz[logarithmic] = _SLANEY_BREAK_HZ * torch.exp(exponent)
    return hz
