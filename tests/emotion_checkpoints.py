"""Shared by the GigaAM-Emo tests: random-weight emo checkpoints in upstream's layout and
deterministic voiced test clips (the fixtures built from them: tests/emotion_fixtures.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from asr.frontend import make_frontend

from export.gigaam_emo import EmotionSource
from export.verify import Clip
from tests.gigaam_checkpoints import emo_cfg, save_gigaam, upstream_state_dict

RATE = 16000


def voiced(seconds: float, seed: int) -> np.ndarray:
    """A harmonic tone with vibrato and a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    pitch = rng.uniform(90, 260) * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(3, 7) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 7))
    envelope = np.sin(np.pi * rng.uniform(2, 5) * t) ** 2
    audio = 0.15 * tone * envelope + 0.005 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def clips(lengths: list[float], seed: int = 0) -> list[Clip]:
    return [
        Clip(f"tone {i}", voiced(seconds, seed + i), None, "test tone")
        for i, seconds in enumerate(lengths)
    ]


VERIFY = clips([1.2, 3.7, 0.8, 5.1, 2.4, 1.9, 4.4, 2.8])
HELD_OUT = clips([2.2, 0.9, 4.8, 1.4, 3.1], seed=100)


def write_emo(path: Path, cfg: dict[str, Any] | None = None, seed: int = 3) -> Path:
    cfg = emo_cfg() if cfg is None else cfg
    return save_gigaam(path, cfg, upstream_state_dict(cfg, seed))


def torch_probs(source: EmotionSource, samples: np.ndarray) -> np.ndarray:
    matrix = make_frontend(source.frontend)(samples)
    probs = source.probabilities(torch.from_numpy(matrix[None]), torch.tensor([matrix.shape[1]]))
    return probs[0].numpy()
