"""The front-end comparison itself, run in a pinned child by ``bench.frontend_vs_librosa``.

Kept apart from that module so the child imports neither torch nor the bundle builders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from asr.config import frontend_config_from_dict
from asr.frontend import make_frontend

from bench.common import real_speech
from bench.librosa_frontend import make_librosa_frontend


def best_seconds(call: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def difference(ours: npt.NDArray[Any], reference: npt.NDArray[Any]) -> dict[str, float]:
    """Max |ours − reference|, and that relative to the reference's largest magnitude."""
    if ours.shape != reference.shape:
        raise ValueError(f"feature shapes differ: {ours.shape} vs {reference.shape}")
    delta = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
    largest = float(np.abs(reference).max(initial=0.0))
    max_abs = float(delta.max(initial=0.0))
    return {"max_abs": max_abs, "relative": max_abs / largest if largest else max_abs}


def compare(frontend: dict[str, Any], seconds: float, repeats: int) -> dict[str, Any]:
    """Ours vs librosa for the bundle config's ``frontend`` section on ``seconds`` of real
    speech: best time per call, feature shape, and the differences."""
    config = frontend_config_from_dict(frontend)
    audio = real_speech(seconds)
    ours, theirs = make_frontend(config), make_librosa_frontend(config)
    features = ours(audio)
    # librosa on float32 samples (what librosa.load returns: float32 FFTs where the window is
    # float32 too) and on float64, the precision ours computes in.
    inputs = {"float32": audio, "float64": audio.astype(np.float64)}
    return {
        "frontend": config.kind,
        "shape": list(features.shape),
        "ours_ms": best_seconds(lambda: ours(audio), repeats) * 1000,
        "librosa_ms": {
            dtype: best_seconds(partial(theirs, x), repeats) * 1000 for dtype, x in inputs.items()
        },
        "diff": {dtype: difference(features, theirs(x)) for dtype, x in inputs.items()},
    }
