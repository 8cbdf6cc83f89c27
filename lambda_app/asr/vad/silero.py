"""Silero VAD v5 (MIT, snakers4/silero-vad) run with onnxruntime and numpy: no torch.

``silero_vad.onnx`` is the file the ``silero-vad`` 5.1.2 wheel ships
(``silero_vad/data/silero_vad.onnx``), vendored here with its licence
(``LICENSE.silero-vad``); its sha256 is checked when it is loaded.

The model is recurrent: it takes one frame of 512 samples at 16 kHz (256 at 8 kHz), preceded
by the last 64 (32) samples of the previous frame as context, and an LSTM state
[2, batch, 128] carried from frame to frame; it returns the frame's speech probability and
the next state. The first frame's context and state are zeros.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from ..deadline import Deadline
from ..errors import BundleError
from ..pcm import SampleBlocks

MODEL_PATH: Final = Path(__file__).with_name("silero_vad.onnx")
MODEL_SHA256: Final = "2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f"
# Frame and context samples per supported rate.
FRAMES: Final = {16000: (512, 64), 8000: (256, 32)}
_STATE_SHAPE: Final = (2, 1, 128)
# Frames between deadline checks: 16 s of audio at 16 kHz.
_CHECK_EVERY: Final = 500


class SileroVad:
    """Speech probability per frame of ``frame_samples`` (32 ms) for mono audio."""

    def __init__(
        self, sample_rate: int, path: Path = MODEL_PATH, sha256: str = MODEL_SHA256
    ) -> None:
        if sample_rate not in FRAMES:
            raise ValueError(f"Silero VAD runs at 8 or 16 kHz, not {sample_rate} Hz")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise BundleError(f"{path.name} is corrupt: sha256 {digest}, expected {sha256}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        self.sample_rate = sample_rate
        self.frame_samples, self._context = FRAMES[sample_rate]
        self._rate = np.array(sample_rate, dtype=np.int64)

    def speech_probabilities(
        self, audio: SampleBlocks, deadline: Deadline | None = None
    ) -> npt.NDArray[np.float32]:
        """[ceil(len / frame_samples)] probabilities; the last frame is zero-padded."""
        frame, context = self.frame_samples, self._context
        probabilities = np.empty(-(-audio.size // frame), dtype=np.float32)
        state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        previous = np.zeros(context, dtype=np.float32)
        index = 0
        for frames in audio.frames(frame):
            # Each model input: the previous frame's last ``context`` samples, then the frame.
            inputs = np.empty((frames.shape[0], context + frame), dtype=np.float32)
            inputs[:, context:] = frames
            inputs[0, :context] = previous
            inputs[1:, :context] = frames[:-1, -context:]
            previous = frames[-1, -context:].copy()
            for row in inputs:
                if deadline is not None and index % _CHECK_EVERY == 0:
                    deadline.check("voice activity detection")
                probability, state = self._session.run(
                    None, {"input": row[None], "state": state, "sr": self._rate}
                )
                probabilities[index] = probability[0, 0]
                index += 1
        return probabilities
