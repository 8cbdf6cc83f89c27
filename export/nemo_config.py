"""NeMo ``model_config.yaml`` ↔ this project's bundle config.

``frontend_from_nemo`` reads the ``preprocessor:`` section with NeMo's defaults
(``AudioToMelSpectrogramPreprocessor``) and refuses options the runtime does not
reproduce, so a bundle never silently computes other features than training did.
``quartznet_config`` writes a config in NeMo's layout (tests, the demo model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from asr.config import FrontendConfig
from asr.mel import mel_filterbank

from .quartznet import CheckpointError, JasperBlockSpec, QuartzNetSpec

NemoStft = Literal["2.5", "legacy"]


def frontend_from_nemo(config: Mapping[str, Any], nemo_stft: NemoStft = "2.5") -> FrontendConfig:
    """``nemo_stft``: the STFT of the NeMo release that trained the model: "2.5" (zero
    padding, len // hop frames) or "legacy" (before 2.5: reflect padding, every frame)."""
    section = config.get("preprocessor")
    if not isinstance(section, Mapping):
        raise CheckpointError("config has no preprocessor section")
    pre = section.get("params") if isinstance(section.get("params"), Mapping) else section
    assert isinstance(pre, Mapping)
    target = str(pre.get("_target_", section.get("_target_", section.get("cls", ""))))
    if target and not target.endswith("AudioToMelSpectrogramPreprocessor"):
        raise CheckpointError(f"preprocessor {target} is not supported (mel spectrogram only)")

    sample_rate = int(pre.get("sample_rate", config.get("sample_rate", 16000)))
    win_length = round(float(pre.get("window_size", 0.02)) * sample_rate)
    hop_length = round(float(pre.get("window_stride", 0.01)) * sample_rate)
    n_fft = pre.get("n_fft") or 2 ** math.ceil(math.log2(win_length))
    _refuse(pre, "window", "hann")
    _refuse(pre, "frame_splicing", 1)
    _refuse(pre, "log", True)
    _refuse(pre, "log_zero_guard_type", "add")
    _refuse(pre, "exact_pad", False)
    _refuse(pre, "stft_exact_pad", False)
    _refuse(pre, "stft_conv", False)
    _refuse(pre, "nb_augmentation_prob", 0.0)
    normalize = pre.get("normalize", "per_feature")
    if normalize not in ("per_feature", None, "NA"):
        raise CheckpointError(f"preprocessor.normalize={normalize!r} is not supported")
    mel_norm = pre.get("mel_norm", "slaney")
    if mel_norm not in ("slaney", None):
        raise CheckpointError(f"preprocessor.mel_norm={mel_norm!r} is not supported")
    guard = pre.get("log_zero_guard_value", 2**-24)
    if isinstance(guard, str):
        raise CheckpointError(f"preprocessor.log_zero_guard_value={guard!r} is not supported")
    highfreq = pre.get("highfreq")
    return FrontendConfig(
        sample_rate=sample_rate,
        n_fft=int(n_fft),
        win_length=win_length,
        hop_length=hop_length,
        n_mels=int(pre.get("features", 64)),
        preemph=float(pre.get("preemph", 0.97) or 0.0),
        fmin=float(pre.get("lowfreq", 0.0) or 0.0),
        fmax=None if highfreq is None else float(highfreq),
        mel_norm=mel_norm,
        mag_power=float(pre.get("mag_power", 2.0)),
        log_guard=float(guard),
        normalize="per_feature" if normalize == "per_feature" else None,
        stft_pad_mode="reflect" if nemo_stft == "legacy" else "constant",
        valid_frames="all" if nemo_stft == "legacy" else "floor",
    )


def quartznet_config(
    vocabulary: Sequence[str],
    blocks: Sequence[JasperBlockSpec],
    *,
    n_mels: int = 64,
    sample_rate: int = 16000,
) -> dict[str, Any]:
    """A model_config.yaml dict in NeMo's layout for a QuartzNet-shaped model."""
    spec = QuartzNetSpec(feat_in=n_mels, vocabulary=tuple(vocabulary), blocks=tuple(blocks))
    return {
        "sample_rate": sample_rate,
        "labels": list(vocabulary),
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.02,
            "sample_rate": sample_rate,
            "window_stride": 0.01,
            "window": "hann",
            "features": n_mels,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 1e-5,
        },
        **spec.to_nemo_encoder_decoder(),
        "target": "nemo.collections.asr.models.ctc_models.EncDecCTCModel",
    }


def quartznet15x5_blocks() -> list[JasperBlockSpec]:
    """The published QuartzNet15x5 layout (NeMo examples/asr/conf/quartznet_15x5.yaml)."""
    blocks = [JasperBlockSpec(256, 1, 33, stride=2, residual=False)]
    for filters, kernel in ((256, 33), (256, 39), (512, 51), (512, 63), (512, 75)):
        blocks += [JasperBlockSpec(filters, 5, kernel, residual=True)] * 3
    blocks.append(JasperBlockSpec(512, 1, 87, dilation=2, residual=False))
    blocks.append(JasperBlockSpec(1024, 1, 1, residual=False, separable=False))
    return blocks


def _refuse(section: Mapping[str, Any], key: str, supported: Any) -> None:
    value = section.get(key, supported)
    if value != supported:
        raise CheckpointError(
            f"preprocessor.{key}={value!r} is not supported (needs {supported!r})"
        )


def preprocessor_state(frontend: FrontendConfig) -> dict[str, torch.Tensor]:
    """The ``preprocessor.featurizer.{window,fb}`` buffers a NeMo checkpoint carries."""
    fb = mel_filterbank(
        frontend.sample_rate,
        frontend.n_fft,
        frontend.n_mels,
        fmin=frontend.fmin,
        fmax=frontend.fmax if frontend.fmax is not None else frontend.sample_rate / 2,
        norm=frontend.mel_norm,
    )
    return {
        "preprocessor.featurizer.window": torch.hann_window(frontend.win_length, periodic=False),
        "preprocessor.featurizer.fb": torch.from_numpy(np.asarray(fb, dtype=np.float32))[None],
    }


def check_preprocessor_buffers(
    stored: Mapping[str, torch.Tensor], frontend: FrontendConfig
) -> None:
    """The checkpoint's stored window and filterbank (``preprocessor.featurizer.*`` without
    the prefix) must equal what the runtime computes: otherwise the bundle would feed the
    model other features than it was trained on."""
    ours = {k.rsplit(".", 1)[-1]: v for k, v in preprocessor_state(frontend).items()}
    for name in ("window", "fb"):
        if name not in stored:
            continue
        theirs = stored[name].float()
        if tuple(theirs.shape) != tuple(ours[name].shape):
            raise CheckpointError(
                f"preprocessor.featurizer.{name} has shape {tuple(theirs.shape)}, the config "
                f"implies {tuple(ours[name].shape)}"
            )
        difference = float((theirs - ours[name]).abs().max())
        if difference > 1e-5:
            raise CheckpointError(
                f"preprocessor.featurizer.{name} differs from the front end the config "
                f"describes (max |Δ| {difference:.2e}); refusing to export mismatched features"
            )
