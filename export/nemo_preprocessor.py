"""NeMo's ``preprocessor:`` section → the runtime's FrontendConfig, option by option.

``AudioToMelSpectrogramPreprocessor`` builds ``FilterbankFeatures``, or, with
``use_torchaudio: true``, ``FilterbankFeaturesTA`` (torchaudio's MelSpectrogram), and the two
compute different features from the same options (frame count, padding, which options
count). Every argument the preprocessor accepts is reproduced, known to have no effect at
inference, or refused by name (the table is docs/nemo-preprocessor.md), so a bundle never
silently computes other features than training did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from asr.config import FrontendConfig
from asr.frontend import nemo_filterbank

from .quartznet import CheckpointError

NemoStft = Literal["2.5", "legacy"]
Featurizer = Literal["FilterbankFeatures", "FilterbankFeaturesTA"]

# Options with no effect on an eval-mode forward of one utterance: dithering, narrow-band
# augmentation and their RNG run only in training; pad_to/pad_value fill frames past the
# valid length, which the encoders mask (QuartzNet's masked convolutions, Conformer's pad
# mask) and the runtime does not compute.
NO_EFFECT_AT_INFERENCE = frozenset(
    {"dither", "rng", "nb_augmentation_prob", "nb_max_freq", "pad_to", "pad_value"}
)
# Arguments AudioToMelSpectrogramPreprocessor takes (the same set from NeMo 1.0 to 2.x, plus
# use_torchaudio and mel_norm since 1.20) that change the features: each is read below.
FEATURE_OPTIONS = frozenset(
    {
        "sample_rate", "window_size", "window_stride", "n_window_size", "n_window_stride",
        "window", "normalize", "n_fft", "preemph", "features", "lowfreq", "highfreq", "log",
        "log_zero_guard_type", "log_zero_guard_value", "frame_splicing", "exact_pad",
        "mag_power", "use_torchaudio", "mel_norm", "stft_exact_pad", "stft_conv",
    }
)  # fmt: skip
# FilterbankFeaturesTA accepts these "for config compatibility" and ignores them: it always
# computes a power spectrum with torch.stft, centred, one frame per hop.
IGNORED_BY_TORCHAUDIO = {
    "frame_splicing": 1,
    "exact_pad": False,
    "mag_power": 2.0,
    "stft_exact_pad": False,
    "stft_conv": False,
}
# Where each featurizer keeps its window and mel filterbank, under preprocessor.featurizer.
BUFFER_KEYS: dict[Featurizer, dict[str, str]] = {
    "FilterbankFeatures": {"window": "window", "fb": "fb"},
    "FilterbankFeaturesTA": {
        "window": "_mel_spec_extractor.spectrogram.window",
        "fb": "_mel_spec_extractor.mel_scale.fb",
    },
}
_FLOAT32 = np.finfo(np.float32)
# log_zero_guard_value may name a float32 constant (both featurizers compute in float32).
_NAMED_GUARDS = {"tiny": float(_FLOAT32.tiny), "eps": float(_FLOAT32.eps)}


@dataclass(frozen=True)
class NemoPreprocessor:
    """What a NeMo preprocessor section computes, as the runtime will reproduce it."""

    frontend: FrontendConfig
    featurizer: Featurizer
    # Options set off their defaults that this featurizer ignores (so does the runtime).
    ignored: tuple[str, ...] = ()

    def provenance(self) -> dict[str, Any]:
        return {"nemo_featurizer": self.featurizer, "nemo_options_ignored": list(self.ignored)}


def frontend_from_nemo(config: Mapping[str, Any], nemo_stft: NemoStft = "2.5") -> FrontendConfig:
    return read_preprocessor(config, nemo_stft).frontend


def read_preprocessor(config: Mapping[str, Any], nemo_stft: NemoStft = "2.5") -> NemoPreprocessor:
    """``nemo_stft``: the STFT of the NeMo release that trained a FilterbankFeatures model:
    "2.5" (zero padding, len // hop frames) or "legacy" (before 2.5: reflect padding, every
    frame). FilterbankFeaturesTA has one STFT in every release, so it ignores the choice."""
    pre = _section(config)
    unknown = sorted(set(pre) - FEATURE_OPTIONS - NO_EFFECT_AT_INFERENCE - {"_target_"})
    if unknown:
        raise CheckpointError(
            f"preprocessor.{unknown[0]} is not an option of NeMo's "
            "AudioToMelSpectrogramPreprocessor; refusing a config this export cannot read"
        )
    use_torchaudio = pre.get("use_torchaudio", False)
    if not isinstance(use_torchaudio, bool):
        raise CheckpointError(f"preprocessor.use_torchaudio={use_torchaudio!r} is not a bool")
    if use_torchaudio:
        return _torchaudio_featurizer(pre, config)
    return _filterbank_features(pre, config, nemo_stft)


def _filterbank_features(
    pre: Mapping[str, Any], config: Mapping[str, Any], nemo_stft: NemoStft
) -> NemoPreprocessor:
    sample_rate, win_length, hop_length = _framing(pre, config)
    _refuse(pre, "frame_splicing", 1, "stacked frames are not reproduced")
    _refuse(pre, "exact_pad", False, "its uncentred STFT is not reproduced")
    for key in ("stft_conv", "stft_exact_pad"):
        _refuse(
            pre,
            key,
            False,
            "NeMo before 1.9 computed a convolution STFT for it, which is not reproduced; "
            "if a NeMo that ignores it trained the model, remove the key",
        )
    normalize = pre.get("normalize", "per_feature")
    if normalize == "all_features" or isinstance(normalize, Mapping):
        raise CheckpointError(f"preprocessor.normalize={normalize!r} is not reproduced")
    legacy = nemo_stft == "legacy"
    frontend = FrontendConfig(
        **_common(pre, sample_rate, win_length, hop_length),
        n_fft=int(pre.get("n_fft") or 2 ** math.ceil(math.log2(win_length))),
        fmax=float(pre["highfreq"]) if pre.get("highfreq") else None,  # falsy: sr / 2
        mag_power=_number(pre, "mag_power", 2.0),
        # normalize_batch runs for any truthy value and normalises per_feature only.
        normalize="per_feature" if normalize == "per_feature" else None,
        stft_pad_mode="reflect" if legacy else "constant",
        valid_frames="all" if legacy else "floor",
    )
    return NemoPreprocessor(frontend, "FilterbankFeatures")


def _torchaudio_featurizer(pre: Mapping[str, Any], config: Mapping[str, Any]) -> NemoPreprocessor:
    """FilterbankFeaturesTA: torchaudio's MelSpectrogram(center=True, pad_mode="reflect",
    power 2, Slaney mel), len // hop + 1 frames, all valid; per-feature statistics with the
    variance clamped at the log guard."""
    sample_rate, win_length, hop_length = _framing(pre, config)
    n_fft = pre.get("n_fft")
    if not n_fft:
        raise CheckpointError(
            "preprocessor.use_torchaudio=true needs preprocessor.n_fft: FilterbankFeaturesTA "
            "hands n_fft=None to torchaudio's MelSpectrogram, which cannot build its filterbank"
        )
    highfreq = pre.get("highfreq")
    if highfreq is not None and not highfreq:
        raise CheckpointError(
            "preprocessor.highfreq=0 with use_torchaudio=true gives torchaudio an empty mel range"
        )
    if sample_rate % 2:
        raise CheckpointError(
            f"preprocessor.sample_rate={sample_rate} with use_torchaudio=true: torchaudio's "
            "filterbank for odd rates (frequencies up to sr // 2) is not reproduced"
        )
    normalize = pre.get("normalize", "per_feature")
    if normalize not in ("per_feature", None):
        raise CheckpointError(
            f"preprocessor.normalize={normalize!r} with use_torchaudio=true is not reproduced "
            "(FilterbankFeaturesTA: per_feature or null)"
        )
    common = _common(pre, sample_rate, win_length, hop_length)
    frontend = FrontendConfig(
        **common,
        n_fft=int(n_fft),
        fmax=None if highfreq is None else float(highfreq),
        normalize=normalize,
        normalize_variance_floor=common["log_guard"] if normalize else 0.0,
        filterbank="torchaudio",
        stft_pad_mode="reflect",
        valid_frames="all",
    )
    ignored = tuple(
        key for key, default in IGNORED_BY_TORCHAUDIO.items() if pre.get(key, default) != default
    )
    return NemoPreprocessor(frontend, "FilterbankFeaturesTA", ignored)


def _common(
    pre: Mapping[str, Any], sample_rate: int, win_length: int, hop_length: int
) -> dict[str, Any]:
    """The options both featurizers read the same way."""
    _refuse(pre, "window", "hann", "only the symmetric Hann window is reproduced")
    _refuse(pre, "log", True, "linear (unlogged) mel features are not reproduced")
    guard_type = pre.get("log_zero_guard_type", "add")
    if guard_type not in ("add", "clamp"):
        raise CheckpointError(f"preprocessor.log_zero_guard_type={guard_type!r}: add or clamp")
    mel_norm = pre.get("mel_norm", "slaney")
    if mel_norm not in ("slaney", None):
        raise CheckpointError(f"preprocessor.mel_norm={mel_norm!r}: slaney or null")
    return {
        "sample_rate": sample_rate,
        "win_length": win_length,
        "hop_length": hop_length,
        "n_mels": int(pre.get("features", 64)),
        "preemph": float(pre.get("preemph", 0.97) or 0.0),
        "fmin": _number(pre, "lowfreq", 0.0),
        "mel_norm": mel_norm,
        "log_guard": _log_guard(pre.get("log_zero_guard_value", 2.0**-24)),
        "log_guard_type": guard_type,
    }


def _framing(pre: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[int, int, int]:
    """Sample rate, window and hop in samples, as AudioToMelSpectrogramPreprocessor derives
    them: ``int(seconds * sample_rate)`` (truncation), or n_window_size / n_window_stride."""
    sample_rate = int(pre.get("sample_rate", config.get("sample_rate", 16000)))
    sizes = []
    for seconds_key, samples_key, default in (
        ("window_size", "n_window_size", 0.02),
        ("window_stride", "n_window_stride", 0.01),
    ):
        seconds, samples = pre.get(seconds_key, default), pre.get(samples_key)
        if seconds and samples:
            raise CheckpointError(
                f"preprocessor has both {seconds_key} and {samples_key} (NeMo refuses this too)"
            )
        size = int(float(seconds) * sample_rate) if seconds else samples
        if not isinstance(size, int) or size <= 0:
            raise CheckpointError(f"preprocessor needs a positive {seconds_key} or {samples_key}")
        sizes.append(size)
    return sample_rate, sizes[0], sizes[1]


def _log_guard(value: Any) -> float:
    if isinstance(value, str):
        if value not in _NAMED_GUARDS:
            raise CheckpointError(
                f"preprocessor.log_zero_guard_value={value!r}: a number, 'tiny' or 'eps'"
            )
        return _NAMED_GUARDS[value]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CheckpointError(f"preprocessor.log_zero_guard_value={value!r} must be positive")
    return float(value)


def _number(pre: Mapping[str, Any], key: str, default: float) -> float:
    value = pre.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(f"preprocessor.{key}={value!r} is not a number")
    return float(value)


def _section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    section = config.get("preprocessor")
    if not isinstance(section, Mapping):
        raise CheckpointError("config has no preprocessor section")
    # NeMo before 1.0 wrote {cls: ..., params: {...}}.
    params = section.get("params")
    pre = params if isinstance(params, Mapping) else section
    target = str(pre.get("_target_", section.get("_target_", section.get("cls", ""))))
    if target and not target.endswith("AudioToMelSpectrogramPreprocessor"):
        raise CheckpointError(f"preprocessor {target} is not supported (mel spectrogram only)")
    return pre


def _refuse(section: Mapping[str, Any], key: str, supported: Any, why: str) -> None:
    value = section.get(key, supported)
    if value != supported:
        raise CheckpointError(f"preprocessor.{key}={value!r} is not supported: {why}")


def preprocessor_state(frontend: FrontendConfig) -> dict[str, torch.Tensor]:
    """The ``preprocessor.featurizer.{window,fb}`` buffers FilterbankFeatures carries."""
    return {
        f"preprocessor.featurizer.{name}": tensor
        for name, tensor in _runtime_buffers(frontend).items()
    }


def check_preprocessor_buffers(
    stored: Mapping[str, torch.Tensor], preprocessor: NemoPreprocessor
) -> None:
    """The checkpoint's stored window and filterbank (``preprocessor.featurizer.*`` without
    the prefix) must be the featurizer's the config selects, and equal what the runtime
    computes: otherwise the bundle would feed the model other features than it was trained
    on."""
    featurizer = preprocessor.featurizer
    for other, keys in BUFFER_KEYS.items():
        present = sorted(set(keys.values()) & set(stored))
        if other != featurizer and present:
            switch = "true" if featurizer == "FilterbankFeaturesTA" else "false"
            raise CheckpointError(
                f"the checkpoint stores {other}'s buffers (preprocessor.featurizer."
                f"{present[0]}) but its config selects {featurizer} (use_torchaudio={switch})"
            )
    ours = _runtime_buffers(preprocessor.frontend)
    if featurizer == "FilterbankFeaturesTA":
        ours["fb"] = ours["fb"][0].T  # torchaudio's MelScale holds it [n_freqs, n_mels]
    for name, key in BUFFER_KEYS[featurizer].items():
        if key not in stored:
            continue
        theirs = stored[key].float()
        if tuple(theirs.shape) != tuple(ours[name].shape):
            raise CheckpointError(
                f"preprocessor.featurizer.{key} has shape {tuple(theirs.shape)}, the config "
                f"implies {tuple(ours[name].shape)}"
            )
        difference = float((theirs - ours[name]).abs().max())
        if difference > 1e-5:
            raise CheckpointError(
                f"preprocessor.featurizer.{key} differs from the front end the config "
                f"describes (max |Δ| {difference:.2e}); refusing to export mismatched features"
            )


def _runtime_buffers(frontend: FrontendConfig) -> dict[str, torch.Tensor]:
    """The window and [1, n_mels, n_freqs] filterbank the runtime computes with."""
    return {
        "window": torch.hann_window(frontend.win_length, periodic=False),
        "fb": torch.from_numpy(nemo_filterbank(frontend))[None],
    }
