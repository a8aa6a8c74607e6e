"""Exact 20 ms framing with remainder carry.

Vonage drops the call on a wrong-sized outbound message (docs/protocol.md s.4), and may send
inbound frames of other sizes; both directions therefore go through a framer that re-slices
anything into exact frames and carries the remainder (odd bytes included) to the next push.

Import rule: numpy, the standard library and ``bridge.audio.pcm`` only.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.pcm import Samples


class ByteFramer:
    """Re-slices a byte stream into ``frame_bytes``-sized chunks.

    The common case (no remainder, exactly one frame) returns the input object itself, so an
    echo at the call's own rate is byte-exact and copy-free.
    """

    __slots__ = ("_pending", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError(f"frame_bytes must be positive and even, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        if not self._pending and len(data) == self.frame_bytes:
            return [data]
        self._pending += data
        size = self.frame_bytes
        n_frames = len(self._pending) // size
        if n_frames == 0:
            return []
        frames = [bytes(self._pending[i * size : (i + 1) * size]) for i in range(n_frames)]
        del self._pending[: n_frames * size]
        return frames

    def flush(self) -> bytes | None:
        """The last partial frame padded with zeros (an odd byte padded too), or ``None``."""
        if not self._pending:
            return None
        tail = bytes(self._pending) + bytes(self.frame_bytes - len(self._pending))
        self._pending.clear()
        return tail

    def clear(self) -> None:
        self._pending.clear()


class SampleFramer:
    """Re-slices int16 arrays of any length into frames of ``frame_samples``."""

    __slots__ = ("_pending", "frame_samples")

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self._pending: Samples = np.zeros(0, dtype=np.int16)

    @property
    def pending_samples(self) -> int:
        return len(self._pending)

    def push(self, samples: Samples) -> list[Samples]:
        size = self.frame_samples
        if not len(self._pending) and len(samples) == size:
            return [samples]
        data = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        n_frames = len(data) // size
        self._pending = data[n_frames * size :].copy()
        return [data[i * size : (i + 1) * size] for i in range(n_frames)]

    def flush(self) -> Samples | None:
        """The last partial frame zero-padded to full size, or ``None`` when nothing is left."""
        if not len(self._pending):
            return None
        tail = np.zeros(self.frame_samples, dtype=np.int16)
        tail[: len(self._pending)] = self._pending
        self._pending = np.zeros(0, dtype=np.int16)
        return tail

    def clear(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
