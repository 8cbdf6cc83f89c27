"""Where to cut long audio: speech segments from a VAD, each at most one model pass long.

``plan_segments`` turns per-frame speech probabilities (``asr.vad``) into segments:

* speech runs by hysteresis (enter at ``threshold``, leave below ``neg_threshold``), joined
  across pauses shorter than ``min_pause_s`` (so a segment is a phrase, not a word), blips
  shorter than ``min_speech_s`` dropped;
* padded (``pad_before_s``: VADs fire late on soft onsets; ``pad_after_s``), the padding
  shared out where two segments' pads would meet, so segments never overlap, and never
  into digital silence: exact zeros at a segment's edges are left out (gaps an editor or
  a codec inserted carry nothing, and models trained on recordings never heard them);
* a segment longer than the cap (``max_window_seconds`` of a Conformer bundle, a default
  for QuartzNet) is cut in the longest pause inside its last ``reach`` part (half the cap),
  so no word is cut when a pause is within reach; with no pause there, at the quietest
  50 ms (moving RMS), as ``plan_windows`` does.

``plan_windows`` is the energy-only rule (no VAD): contiguous windows up to the cap, each
ending at the quietest 50 ms in its last ``search_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .pcm import SampleBlocks

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


@dataclass(frozen=True)
class SegmentationPolicy:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_pause_s: float = 0.5
    min_speech_s: float = 0.1
    pad_before_s: float = 0.5
    pad_after_s: float = 0.4

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if min(self.min_pause_s, self.min_speech_s, self.pad_before_s, self.pad_after_s) < 0:
            raise ValueError("durations must not be negative")


DEFAULT_POLICY = SegmentationPolicy()


def plan_segments(
    probabilities: npt.NDArray[np.float32],
    frame_samples: int,
    audio: SampleBlocks,
    sample_rate: int,
    *,
    max_segment_seconds: float,
    policy: SegmentationPolicy = DEFAULT_POLICY,
) -> list[tuple[int, int]]:
    """[start, stop) sample ranges of speech, in order, disjoint, each at most the cap."""
    num_samples = audio.size
    cap = int(max_segment_seconds * sample_rate)
    speech = _hysteresis(probabilities, policy)
    runs = _runs(speech)
    frames_per_second = sample_rate / frame_samples
    runs = _join(runs, round(policy.min_pause_s * frames_per_second))
    shortest = round(policy.min_speech_s * frames_per_second)
    runs = [(a, b) for a, b in runs if b - a >= max(shortest, 1)]
    ranges = [(a * frame_samples, min(b * frame_samples, num_samples)) for a, b in runs]
    padded = _pad(
        ranges,
        num_samples,
        round(policy.pad_before_s * sample_rate),
        round(policy.pad_after_s * sample_rate),
    )
    pauses = [(a * frame_samples, b * frame_samples) for a, b in _runs(~speech)]
    segments: list[tuple[int, int]] = []
    for start, stop in padded:
        segments.extend(
            _split(start, stop, cap=cap, pauses=pauses, audio=audio, sample_rate=sample_rate)
        )
    trimmed = (_without_zero_edges(start, stop, audio) for start, stop in segments)
    return [(start, stop) for start, stop in trimmed if stop > start]


def _without_zero_edges(start: int, stop: int, audio: SampleBlocks) -> tuple[int, int]:
    nonzero = np.flatnonzero(audio.read(start, stop))
    if nonzero.size == 0:
        return start, start
    return start + int(nonzero[0]), start + int(nonzero[-1]) + 1


def _hysteresis(
    probabilities: npt.NDArray[np.float32], policy: SegmentationPolicy
) -> npt.NDArray[np.bool_]:
    """Speech per frame: on at ``threshold``, off again only below ``neg_threshold``."""
    above = probabilities >= policy.threshold
    below = probabilities < policy.neg_threshold
    speech = np.zeros(probabilities.shape[0], dtype=bool)
    on = False
    # Only the frames in between the thresholds depend on the past state: walk the
    # frames where the decision changes, not every frame.
    decided = np.flatnonzero(above | below)
    previous = 0
    for index in decided.tolist():
        speech[previous:index] = on
        on = bool(above[index])
        previous = index
    speech[previous:] = on
    return speech


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, stop) index ranges where ``mask`` is true."""
    edges = np.diff(mask.astype(np.int8), prepend=0, append=0)
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _join(runs: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    joined: list[tuple[int, int]] = []
    for start, stop in runs:
        if joined and start - joined[-1][1] < min_gap:
            joined[-1] = (joined[-1][0], stop)
        else:
            joined.append((start, stop))
    return joined


def _pad(
    ranges: list[tuple[int, int]], num_samples: int, before: int, after: int
) -> list[tuple[int, int]]:
    """Widen each range; where neighbours' pads would overlap, the gap is shared out in
    proportion to the two pads."""
    padded: list[tuple[int, int]] = []
    for index, (start, stop) in enumerate(ranges):
        if index == 0:
            new_start = max(0, start - before)
        else:
            gap = start - ranges[index - 1][1]
            new_start = start - min(before, gap * before // max(before + after, 1))
        if index == len(ranges) - 1:
            new_stop = min(num_samples, stop + after)
        else:
            gap = ranges[index + 1][0] - stop
            new_stop = stop + min(after, gap * after // max(before + after, 1))
        padded.append((new_start, new_stop))
    return padded


def _split(
    start: int,
    stop: int,
    *,
    cap: int,
    pauses: list[tuple[int, int]],
    audio: SampleBlocks,
    sample_rate: int,
) -> list[tuple[int, int]]:
    """[start, stop) cut into pieces of at most ``cap`` samples, at pauses when possible."""
    pieces: list[tuple[int, int]] = []
    while stop - start > cap:
        lowest, highest = start + cap // 2, start + cap
        cut = _cut_in_pause(lowest, highest, pauses)
        if cut is None:
            frame = max(1, int(_FRAME_SECONDS * sample_rate))
            cut = lowest + _quietest(audio.read(lowest, highest), frame)
        cut = min(max(cut, lowest + 1), highest)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, stop))
    return pieces


def _cut_in_pause(lowest: int, highest: int, pauses: list[tuple[int, int]]) -> int | None:
    """The middle of the longest pause (the latest of equals) within [lowest, highest]."""
    best: tuple[int, int] | None = None
    for pause_start, pause_stop in pauses:
        if pause_stop <= lowest:
            continue
        if pause_start >= highest:
            break
        a, b = max(pause_start, lowest), min(pause_stop, highest)
        if best is None or b - a >= best[1] - best[0]:
            best = (a, b)
    return None if best is None else (best[0] + best[1]) // 2
