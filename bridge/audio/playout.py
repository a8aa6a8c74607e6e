"""The outbound playout queue: exact frames and notify markers, bounded in milliseconds.

Overflow policy: the queue never grows past ``max_ms``. ``Call.play`` waits for room
(backpressure, nothing lost); a non-waiting push that finds the queue full drops the
*oldest* queued audio and counts it, because for live audio the newest is what matters and a
bounded queue is a bounded added latency (docs/lessons.md s.3: backlogs that never drain).

Notify markers take no audio time, so they are bounded by count: at most ``max_markers``
(by default one per 20 ms frame of ``max_ms``) wait in the queue; one more drops the *oldest*
waiting marker, counted in ``dropped_markers``. ``Call.notify`` is synchronous (it cannot
wait for room), and a marker's job is to say that the audio before it has been heard: the
newest markers say the most, an upstream flooding markers gets a bounded queue, and every
audio frame is kept.

Import rule: standard library and ``bridge.units`` only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from bridge.units import FRAME_MS


@dataclass(frozen=True, slots=True)
class Marker:
    """A ``notify`` placed after the audio queued before it (docs/protocol.md s.5)."""

    payload: Any


Item = bytes | Marker


class PlayoutBuffer:
    __slots__ = (
        "_items",
        "_n_frames",
        "_n_markers",
        "dropped_frames",
        "dropped_markers",
        "max_frames",
        "max_markers",
        "peak_frames",
    )

    def __init__(
        self, max_ms: int, frame_ms: int = FRAME_MS, max_markers: int | None = None
    ) -> None:
        if max_ms < frame_ms:
            raise ValueError(f"playout buffer must hold at least one frame ({frame_ms} ms)")
        self.max_frames = max_ms // frame_ms
        self.max_markers = self.max_frames if max_markers is None else max_markers
        if self.max_markers < 1:
            raise ValueError("playout buffer must hold at least one marker")
        self._items: deque[Item] = deque()
        self._n_frames = 0
        self._n_markers = 0
        self.dropped_frames = 0
        self.dropped_markers = 0
        self.peak_frames = 0

    @property
    def frames(self) -> int:
        """Audio frames queued (markers excluded)."""
        return self._n_frames

    @property
    def markers(self) -> int:
        """Notify markers queued."""
        return self._n_markers

    @property
    def room(self) -> int:
        return self.max_frames - self._n_frames

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, frame: bytes) -> None:
        """Queue one exact frame; drop the oldest frame when full."""
        if self._n_frames >= self.max_frames:
            self._drop_oldest_frame()
        self._items.append(frame)
        self._n_frames += 1
        self.peak_frames = max(self.peak_frames, self._n_frames)

    def mark(self, payload: Any) -> None:
        """Queue a marker behind the audio queued so far; drop the oldest marker when full."""
        if self._n_markers >= self.max_markers:
            self._drop_oldest_marker()
        self._items.append(Marker(payload))
        self._n_markers += 1

    def peek(self) -> Item:
        return self._items[0]

    def pop(self) -> Item:
        item = self._items.popleft()
        if isinstance(item, Marker):
            self._n_markers -= 1
        else:
            self._n_frames -= 1
        return item

    def clear(self) -> int:
        """Drop everything (barge-in); returns the frames dropped. Markers go too."""
        n = self._n_frames
        self._items.clear()
        self._n_frames = 0
        self._n_markers = 0
        return n

    def _drop_oldest_frame(self) -> None:
        for i, item in enumerate(self._items):
            if not isinstance(item, Marker):
                del self._items[i]
                self._n_frames -= 1
                self.dropped_frames += 1
                return

    def _drop_oldest_marker(self) -> None:
        for i, item in enumerate(self._items):
            if isinstance(item, Marker):
                del self._items[i]
                self._n_markers -= 1
                self.dropped_markers += 1
                return
