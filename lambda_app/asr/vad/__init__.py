"""Voice activity detection: speech probability per 32 ms frame of a mono signal.

``make_detector("auto")`` is Silero VAD when its model ships with the runtime (it does in
this repository and the Lambda package) and the rate is 8 or 16 kHz, else the energy
fallback; ``"silero"`` insists on Silero, ``"energy"`` picks the fallback.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..deadline import Deadline
from ..pcm import SampleBlocks
from .energy import EnergyVad
from .silero import FRAMES, MODEL_PATH, SileroVad

VadKind = Literal["auto", "silero", "energy"]
VAD_KINDS: tuple[VadKind, ...] = ("auto", "silero", "energy")

logger = logging.getLogger(__name__)


class SpeechDetector(Protocol):
    @property
    def frame_samples(self) -> int: ...

    def speech_probabilities(
        self, audio: SampleBlocks, deadline: Deadline | None = None
    ) -> npt.NDArray[np.float32]: ...


def make_detector(kind: VadKind, sample_rate: int) -> SpeechDetector:
    if kind not in VAD_KINDS:
        raise ValueError(f"unknown VAD {kind!r}; choose one of {', '.join(VAD_KINDS)}")
    if kind == "energy":
        return EnergyVad(sample_rate)
    if kind == "silero":
        return SileroVad(sample_rate)
    if sample_rate not in FRAMES:
        logger.warning("Silero VAD needs 8 or 16 kHz, not %d Hz: using the energy VAD", sample_rate)
        return EnergyVad(sample_rate)
    if not MODEL_PATH.is_file():
        logger.warning("%s is missing: using the energy VAD", MODEL_PATH.name)
        return EnergyVad(sample_rate)
    return SileroVad(sample_rate)


__all__ = ["VAD_KINDS", "EnergyVad", "SileroVad", "SpeechDetector", "VadKind", "make_detector"]
