"""Rational-ratio resampling with a Kaiser-windowed sinc, in numpy only.

The rates are reduced to ``up/down``; output sample ``n`` sits at input time ``n * down / up``
and is the windowed-sinc interpolation of the input there, low-passed at the lower of the
two Nyquist frequencies. The passband ends at ``PASSBAND`` of that Nyquist and the stopband
starts at it, with ``STOPBAND_DB`` of attenuation, so nothing above the new Nyquist aliases.

Two evaluation strategies give the same result:

* block GEMM (common rates such as 48k/44.1k/22.05k/8k -> 16k): ``up`` consecutive outputs
  read the same input pattern shifted by ``down`` samples, so one dense ``[up, width]``
  matrix turns a chunk of input windows into outputs with a single matrix product;
* gather (unusual ratios, where that matrix would be huge): a polyphase table, one row per
  fractional phase, and a per-output gather of input taps.

Both work on bounded chunks, so memory is the input, the output and a few MB.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]

PASSBAND: Final = 0.913  # as soxr
STOPBAND_DB: Final = 90.0
# A block holds at least this many outputs, so small ``up`` (48k -> 16k has up=1) still
# makes a matrix-matrix product rather than one strided copy per output.
_MIN_BLOCK_OUTPUTS: Final = 160
# Floats touched per chunk (input windows or gathered taps): 4 MB of float32.
_CHUNK_ELEMENTS: Final = 1 << 20
# The block-GEMM matrix is at most this many coefficients (16 MB) ...
_MAX_BLOCK_COEFFS: Final = 1 << 22
# ... and does at most this many times the work of a plain polyphase filter.
_MAX_BLOCK_OVERHEAD: Final = 8


def output_length(n_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples that ``resample`` returns: ``n * target / orig`` rounded half up (exact ints)."""
    return (2 * n_samples * target_sr + orig_sr) // (2 * orig_sr)


def resample(samples: npt.ArrayLike, orig_sr: int, target_sr: int) -> Float32Array:
    """Resample 1-D audio from ``orig_sr`` to ``target_sr`` Hz; returns float32.

    The result has exactly ``output_length(len(samples), orig_sr, target_sr)`` samples and is
    time-aligned with the input (zero delay; the signal is taken as zero outside it). With
    equal rates the input is returned as float32 (the same array if it already is).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects 1-D samples, got shape {x.shape}")
    if orig_sr == target_sr:
        return x
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    n_out = output_length(x.size, orig_sr, target_sr)
    if n_out == 0 or x.size == 0:
        return np.zeros(n_out, dtype=np.float32)
    design = _design(up, down)
    if design.use_blocks:
        return _resample_blocks(x, up, down, n_out)
    return _resample_gather(x, up, down, n_out)


class _Design:
    """Kaiser-windowed sinc for ``up/down``, in units of input samples."""

    def __init__(self, up: int, down: int) -> None:
        nyquist = 0.5 * min(1.0, up / down)  # cycles per input sample
        transition = nyquist * (1.0 - PASSBAND)
        self.cutoff = nyquist * (1.0 + PASSBAND) / 2.0  # the -6 dB point
        self.beta = 0.1102 * (STOPBAND_DB - 8.7)
        # Kaiser's length estimate; half of it on each side of the output instant.
        self.half_width = (STOPBAND_DB - 7.95) / (2.285 * 2.0 * math.pi * transition) / 2.0
        taps = 2.0 * self.half_width
        # Block layout: outputs b*block_up + r read inputs b*block_down + base + j for j in
        # [0, width); a block is a whole number of up/down periods.
        group = -(-_MIN_BLOCK_OUTPUTS // up)
        self.block_up, self.block_down = group * up, group * down
        self.base = math.floor(-self.half_width)
        last = math.floor((self.block_up - 1) * down / up + self.half_width)
        self.width = last - self.base + 1
        self.use_blocks = (
            self.block_up * self.width <= _MAX_BLOCK_COEFFS
            and self.width <= _MAX_BLOCK_OVERHEAD * taps
        )

    def kernel(self, d: npt.NDArray[np.float64]) -> Float32Array:
        """The filter at distances ``d`` (input samples) from the output instant."""
        r = np.clip(d / self.half_width, -1.0, 1.0)
        window = np.i0(self.beta * np.sqrt(1.0 - r * r)) / np.i0(self.beta)
        h = 2.0 * self.cutoff * np.sinc(2.0 * self.cutoff * d) * window
        h[np.abs(d) >= self.half_width] = 0.0
        return h.astype(np.float32)


@lru_cache(maxsize=16)
def _design(up: int, down: int) -> _Design:
    return _Design(up, down)


@lru_cache(maxsize=8)
def _block_matrix(up: int, down: int) -> Float32Array:
    """``[width, block_up]``: column ``r`` maps a block's input window to its output ``r``."""
    design = _design(up, down)
    r = np.arange(design.block_up)[None, :]
    j = np.arange(design.width)[:, None] + design.base
    matrix = design.kernel(r * down / up - j)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=8)
def _phase_table(up: int, down: int) -> tuple[Float32Array, int]:
    """``[up, taps]`` coefficients per phase and the tap offset of column 0."""
    design = _design(up, down)
    first = math.floor(-design.half_width)
    last = math.floor(design.half_width + (up - 1) / up)
    k = np.arange(first, last + 1)[None, :]
    phase = np.arange(up)[:, None] / up
    table = design.kernel(phase - k)
    table.setflags(write=False)
    return table, first


def _segment(x: Float32Array, start: int, stop: int) -> Float32Array:
    """``x[start:stop]`` with zeros where the range falls outside ``x``."""
    if start >= 0 and stop <= x.size:
        return x[start:stop]
    out = np.zeros(stop - start, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, x.size)
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out


def _resample_blocks(x: Float32Array, up: int, down: int, n_out: int) -> Float32Array:
    design = _design(up, down)
    matrix = _block_matrix(up, down)
    width, base = design.width, design.base
    b_up, b_down = design.block_up, design.block_down
    n_blocks = -(-n_out // b_up)
    per_chunk = max(1, _CHUNK_ELEMENTS // width)
    out = np.empty((n_blocks, b_up), dtype=np.float32)
    for b0 in range(0, n_blocks, per_chunk):
        b1 = min(b0 + per_chunk, n_blocks)
        start = b0 * b_down + base
        seg = _segment(x, start, start + (b1 - b0 - 1) * b_down + width)
        windows = np.lib.stride_tricks.sliding_window_view(seg, width)[::b_down]
        # Overlapping strided rows are not BLAS-able; one contiguous copy keeps matmul fast.
        np.matmul(np.ascontiguousarray(windows), matrix, out=out[b0:b1])
    return out.reshape(-1)[:n_out]


def _resample_gather(x: Float32Array, up: int, down: int, n_out: int) -> Float32Array:
    table, first = _phase_table(up, down)
    taps = table.shape[1]
    per_chunk = max(1, _CHUNK_ELEMENTS // taps)
    offsets = np.arange(taps)
    out = np.empty(n_out, dtype=np.float32)
    for n0 in range(0, n_out, per_chunk):
        t = np.arange(n0, min(n0 + per_chunk, n_out), dtype=np.int64) * down
        whole, phase = np.divmod(t, up)
        start = int(whole[0]) + first
        seg = _segment(x, start, int(whole[-1]) + first + taps)
        gathered = seg[(whole - whole[0])[:, None] + offsets[None, :]]
        out[n0 : n0 + t.size] = np.einsum("ij,ij->i", gathered, table[phase])
    return out
