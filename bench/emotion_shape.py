"""GigaAM-Emo's published shape with random weights, exported once as emotion bundles.

The checkpoint is written in upstream's layout (``tests.gigaam_checkpoints.emo_cfg``: the
v1-era encoder, conv2d subsampling, relative-position attention, batch norm, conv kernel 31)
at full size (16 layers, d_model 768, 16 heads) and goes through the real export
(``python -m export gigaam emo.ckpt``'s code). Random weights cannot agree on labels between
fp32 and int8, so the int8 label gate is opened: the bundles measure speed and memory only.
Cached under ``.cache/bench/bundles/gigaam_emo-<precision>``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.common import RATE, speech_clips
from bench.models import BUNDLES, Precision
from export.clips import file_clips
from export.emotion_export import EmotionExportOptions, export_emotion_bundle
from export.emotion_verify import EmotionThresholds
from export.gigaam_emo import load_gigaam_emo
from tests.gigaam_checkpoints import emo_cfg, save_gigaam, upstream_state_dict

FULL_SIZE: dict[str, Any] = {"n_layers": 16, "d_model": 768, "n_heads": 16, "conv_kernel_size": 31}
SPEED_ONLY = EmotionThresholds(min_int8_label_agreement=0.0)


def emotion_shape_bundle(precision: Precision, *, cache: Path = BUNDLES) -> Path:
    """The bundle directory, exported on first use."""
    out = cache / f"gigaam_emo-{precision}"
    if (out / "SHA256SUMS").is_file():  # written last by the export
        return out
    if out.exists():
        shutil.rmtree(out)
    options = EmotionExportOptions(
        model_id=f"gigaam-emo-shape-{precision}", precision=precision, thresholds=SPEED_ONLY
    )
    clips = file_clips(speech_clips()[4:8], RATE)
    export_emotion_bundle(load_gigaam_emo(checkpoint(cache)), out, clips, options, step=print)
    return out


def checkpoint(cache: Path = BUNDLES) -> Path:
    path = cache / "gigaam_emo.ckpt"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cfg = emo_cfg(**FULL_SIZE)
        partial = path.with_suffix(".partial.ckpt")
        save_gigaam(partial, cfg, upstream_state_dict(cfg, seed=0))
        partial.rename(path)
    return path
