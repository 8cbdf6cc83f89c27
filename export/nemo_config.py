"""``model_config.yaml`` dicts in NeMo's layout for QuartzNet-shaped models (tests, the demo
model, benchmarks). Reading a config's preprocessor is export.nemo_preprocessor's job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .quartznet import JasperBlockSpec, QuartzNetSpec


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
