"""Cut long audio into windows one forward pass can take, at the quietest nearby moment.

Conformer attention costs memory and time quadratic in length, and the models were trained
on utterances of at most ~25 s, so a bundle's ``max_window_seconds`` caps one pass. Until
VAD segmentation lands this is the long-audio path: each window ends at the lowest-energy
point (50 ms moving RMS) in the last ``search_seconds`` before the cap, so cuts fall in
pauses between words whenever the speech has one.
"""

from __future__ import annotations

import numpy as np

_FRAME_SECONDS = 0.01
_SMOOTH_FRAMES = 5  # 50 ms: a pause, not a quiet instant inside a word


def plan_windows(
    samples: np.ndarray,
    sample_rate: int,
    max_window_seconds: float,
    search_seconds: float = 5.0,
) -> list[tuple[int, int]]:
    """[start, stop) sample ranges covering the audio, each at most the cap long."""
    num_samples = samples.shape[0]
    limit = int(max_window_seconds * sample_rate)
    if num_samples <= limit:
        return [(0, num_samples)]
    frame = max(1, int(_FRAME_SECONDS * sample_rate))
    search = min(int(search_seconds * sample_rate), limit // 2)
    windows: list[tuple[int, int]] = []
    start = 0
    while num_samples - start > limit:
        lowest = start + limit - search
        stop = _quietest(samples[lowest : start + limit], frame) + lowest
        windows.append((start, stop))
        start = stop
    windows.append((start, num_samples))
    return windows


def _quietest(region: np.ndarray, frame: int) -> int:
    """Offset of the centre of the lowest-energy 50 ms stretch in ``region``."""
    frames = region.shape[0] // frame
    if frames <= _SMOOTH_FRAMES:
        return int(region.shape[0])
    energy = np.square(region[: frames * frame], dtype=np.float64).reshape(frames, frame).sum(1)
    smoothed = np.convolve(energy, np.ones(_SMOOTH_FRAMES), mode="valid")
    # Ties (digital silence) resolve to the latest frame: the longest window wins.
    best = smoothed.shape[0] - 1 - int(np.argmin(smoothed[::-1]))
    return int((best + _SMOOTH_FRAMES // 2) * frame + frame // 2)
