"""Energy-based speech detection: the fallback when the Silero model is disabled or absent.

A frame is speech when its level stands out from the recording's own noise floor and is
not far below its loudest speech. The floor is a low percentile of the frames' levels
(digital silence left out, so inserted zeros do not drag it down); the reference for
"loud" a high percentile. The result is a soft score per frame on the same 32 ms grid as
Silero's, so one segmentation policy serves both.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from ..deadline import Deadline
from ..pcm import SampleBlocks

_FRAME_SECONDS: Final = 0.032
_SILENT_DB: Final = -100.0  # digital silence
_FLOOR_PERCENTILE: Final = 10.0
_LOUD_PERCENTILE: Final = 99.0
_ABOVE_FLOOR_DB: Final = 10.0
_BELOW_LOUD_DB: Final = 35.0
_MIN_SPEECH_DB: Final = -60.0
_SOFTNESS_DB: Final = 2.0


class EnergyVad:
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = max(1, round(_FRAME_SECONDS * sample_rate))

    def speech_probabilities(
        self, audio: SampleBlocks, deadline: Deadline | None = None
    ) -> npt.NDArray[np.float32]:
        """[ceil(len / frame_samples)] scores in [0, 1]; 0.5 is the speech threshold."""
        levels: list[npt.NDArray[np.float64]] = []
        for frames in audio.frames(self.frame_samples):
            if deadline is not None:
                deadline.check("voice activity detection")
            power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frames.shape[1]
            levels.append(10.0 * np.log10(np.maximum(power, 10.0 ** (_SILENT_DB / 10.0))))
        if not levels:
            return np.zeros(0, dtype=np.float32)
        db = np.concatenate(levels)
        audible = db[db > _SILENT_DB + 1.0]
        if audible.size == 0:
            return np.zeros(db.size, dtype=np.float32)
        floor = float(np.percentile(audible, _FLOOR_PERCENTILE))
        loud = float(np.percentile(audible, _LOUD_PERCENTILE))
        threshold = max(floor + _ABOVE_FLOOR_DB, loud - _BELOW_LOUD_DB, _MIN_SPEECH_DB)
        score = 1.0 / (1.0 + np.exp(-(db - threshold) / _SOFTNESS_DB))
        return score.astype(np.float32)
