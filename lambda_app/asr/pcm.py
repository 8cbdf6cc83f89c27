"""A mono float32 signal held as the blocks it was decoded in.

Long recordings are decoded block by block; joining the blocks into one array would hold
the signal twice at the moment of the copy (an hour at 16 kHz is 230 MB). Readers take
the stretches they need with ``read``, which copies only that stretch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]


class SampleBlocks:
    def __init__(self, blocks: Iterable[Float32Array] = ()) -> None:
        self._blocks: list[Float32Array] = []
        self._starts: list[int] = []
        self.size = 0
        for block in blocks:
            self.append(block)

    def append(self, block: Float32Array) -> None:
        if block.ndim != 1:
            raise ValueError(f"blocks must be 1-D, got shape {block.shape}")
        if block.size:
            self._starts.append(self.size)
            self._blocks.append(np.asarray(block, dtype=np.float32))
            self.size += block.size

    def __iter__(self) -> Iterator[Float32Array]:
        return iter(self._blocks)

    def read(self, start: int, stop: int) -> Float32Array:
        """Samples [start, stop), clipped to the signal: a view when one block holds them."""
        start, stop = max(0, start), min(self.size, stop)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        offset = start - self._starts[first]
        block = self._blocks[first]
        if offset + (stop - start) <= block.size:
            return block[offset : offset + stop - start]
        out = np.empty(stop - start, dtype=np.float32)
        filled = 0
        index = first
        while filled < out.size:
            piece = self._blocks[index][offset : offset + out.size - filled]
            out[filled : filled + piece.size] = piece
            filled += piece.size
            index += 1
            offset = 0
        return out

    def frames(self, frame: int) -> Iterator[Float32Array]:
        """Consecutive [n, frame] arrays of non-overlapping frames, block by block; the
        last frame is zero-padded. ceil(size / frame) frames in all."""
        if frame <= 0:
            raise ValueError(f"frame must be positive, got {frame}")
        carry = np.zeros(0, dtype=np.float32)
        for block in self._blocks:
            joined = np.concatenate([carry, block]) if carry.size else block
            whole = joined.size // frame * frame
            if whole:
                yield joined[:whole].reshape(-1, frame)
            carry = joined[whole:]
        if carry.size:
            yield np.concatenate([carry, np.zeros(frame - carry.size, np.float32)])[None]

    def to_array(self) -> Float32Array:
        if len(self._blocks) == 1:
            return self._blocks[0]
        if not self._blocks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._blocks)
