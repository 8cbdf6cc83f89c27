"""An emotion per transcribed segment: each segment's audio through an emotion bundle.

The transcriber calls ``with_emotions`` while the segments' signal is still in memory (for
a call split by channel: each channel's turns from that channel alone). Segments shorter
than the classifier's ``MIN_EMOTION_SECONDS`` keep ``emotion=None``: a syllable or two
carries too little prosody to judge by. Segments are classified in groups of about
``BATCH_SECONDS`` of audio (the classifier's padded batches within each group), so an hour
of segments never holds more than a model window of extra samples and features at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from .emotion import BATCH_SECONDS, MIN_EMOTION_SECONDS, EmotionClassifier
from .pcm import SampleBlocks
from .resample import resample
from .results import Segment


def with_emotions(
    segments: Sequence[Segment],
    signal: SampleBlocks,
    sample_rate: int,
    classifier: EmotionClassifier | None,
) -> tuple[list[Segment], float]:
    """``segments`` (times in seconds of ``signal``, sampled at ``sample_rate``) with their
    emotions, and the seconds it took."""
    if classifier is None:
        return list(segments), 0.0
    started = time.perf_counter()
    labelled = list(segments)
    for group in _groups(segments, signal, sample_rate, classifier):
        emotions = classifier.classify_many([clip for _, clip in group])
        for (index, _), emotion in zip(group, emotions, strict=True):
            labelled[index] = replace(labelled[index], emotion=emotion)
    return labelled, time.perf_counter() - started


def _groups(
    segments: Sequence[Segment],
    signal: SampleBlocks,
    sample_rate: int,
    classifier: EmotionClassifier,
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """(segment index, its audio at the classifier's rate) for the segments long enough to
    judge, in groups of at least ``BATCH_SECONDS`` of audio (the last one may be shorter)."""
    shortest = MIN_EMOTION_SECONDS * classifier.sample_rate
    group_samples = BATCH_SECONDS * classifier.sample_rate
    group: list[tuple[int, np.ndarray]] = []
    grouped = 0
    for index, segment in enumerate(segments):
        clip = signal.read(round(segment.start * sample_rate), round(segment.end * sample_rate))
        if sample_rate != classifier.sample_rate:
            clip = resample(clip, sample_rate, classifier.sample_rate)
        if clip.size < shortest:
            continue
        group.append((index, clip))
        grouped += clip.size
        if grouped >= group_samples:
            yield group
            group, grouped = [], 0
    if group:
        yield group
