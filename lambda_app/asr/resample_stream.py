"""Resample audio that arrives block by block, with the same result as ``resample`` on the whole.

``resample`` is a zero-delay filter whose output ``n`` depends only on the input within
``half_width`` samples of ``n * down / up`` (the signal is zero outside). So the input is
cut into chunks starting at multiples of ``down`` (where an output instant falls exactly on
an input sample, so every output keeps its filter phase), each chunk is resampled with a
``margin`` of real input (or zeros, before the start and after the end) on both sides, and
only the outputs that belong to the chunk are kept. Memory is one chunk plus the margins,
not the whole signal at its source rate.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from .resample import PASSBAND, STOPBAND_DB, resample

Float32Array = npt.NDArray[np.float32]

# Inputs per chunk (rounded up to a multiple of ``down``): 4 MB of float32.
_CHUNK_SAMPLES: Final = 1 << 20


def filter_reach(orig_sr: int, target_sr: int) -> int:
    """Input samples either side of an output instant that ``resample`` reads (a bound)."""
    nyquist = 0.5 * min(1.0, target_sr / orig_sr)
    transition = nyquist * (1.0 - PASSBAND)
    half_width = (STOPBAND_DB - 7.95) / (2.285 * 2.0 * math.pi * transition) / 2.0
    return math.ceil(half_width) + 2


class StreamResampler:
    """``push`` blocks of 1-D float32 input, then ``finish``; the outputs concatenated equal
    ``resample(whole_input, orig_sr, target_sr)`` (to float32 rounding)."""

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        g = math.gcd(orig_sr, target_sr)
        self._up, self._down = target_sr // g, orig_sr // g
        self._orig_sr, self._target_sr = orig_sr, target_sr
        self._identity = orig_sr == target_sr
        self._margin = -(-filter_reach(orig_sr, target_sr) // self._down) * self._down
        self._chunk = -(-_CHUNK_SAMPLES // self._down) * self._down
        # Input not yet turned into output, starting ``margin`` samples before the next
        # chunk (zeros before the signal starts).
        self._pending = np.zeros(self._margin, dtype=np.float32)
        self._consumed = 0  # input samples pushed so far
        self._emitted = 0  # output samples returned so far

    def push(self, block: npt.ArrayLike) -> Float32Array:
        """Outputs that ``block`` completes (possibly none)."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"resampling expects 1-D blocks, got shape {x.shape}")
        self._consumed += x.size
        if self._identity:
            self._emitted += x.size
            return x
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
        outputs: list[Float32Array] = []
        # A chunk needs ``margin`` real samples after it.
        while self._pending.size >= 2 * self._margin + self._chunk:
            outputs.append(self._convert(self._chunk))
        out = _joined(outputs)
        self._emitted += out.size
        return out

    def finish(self) -> Float32Array:
        """The remaining outputs: the input is over (and taken as zero after its end)."""
        if self._identity:
            return np.zeros(0, dtype=np.float32)
        total = (2 * self._consumed * self._target_sr + self._orig_sr) // (2 * self._orig_sr)
        left = self._pending.size - self._margin
        chunk = -(-max(left, 0) // self._down) * self._down
        outputs: list[Float32Array] = []
        if chunk:
            tail = chunk + self._margin - left
            self._pending = np.concatenate([self._pending, np.zeros(tail, dtype=np.float32)])
            outputs.append(self._convert(chunk))
        out = _joined(outputs)[: max(0, total - self._emitted)]
        self._emitted += out.size
        return out

    def _convert(self, chunk: int) -> Float32Array:
        """Resample the next ``chunk`` inputs (a multiple of ``down``), consuming them."""
        window = self._pending[: chunk + 2 * self._margin]
        converted = resample(window, self._orig_sr, self._target_sr)
        skip = self._margin * self._up // self._down
        out = converted[skip : skip + chunk * self._up // self._down]
        self._pending = self._pending[chunk:].copy()
        return out


def _joined(parts: list[Float32Array]) -> Float32Array:
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
