"""Vonage's playback buffer, modelled on the caller's clock (docs/protocol.md s.4-5).

Vonage buffers what it receives (up to about a minute) and plays it at real time, one 20 ms
frame after another from when playback (re)starts. So what the caller *hears*, and when, is
decided here, not by when messages arrived (docs/lessons.md s.9): ``clear`` empties the
buffer (what was queued is never heard), ``notify`` is answered when playback reaches it.

Sans-I/O: every method takes the time. The frame's length on the caller's clock is a
parameter, so a carrier whose clock drifts plays faster or slower than bridge's 20 ms.

Import rule: ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

from bridge.protocol.vonage import PLAYBACK_BUFFER_FRAMES
from bridge.units import FRAME_NS, MS

_MAX_KEPT = 1000


class Playback:
    """What has been queued for the caller and when it plays."""

    __slots__ = (
        "capacity_ns",
        "cleared_ns",
        "clears",
        "end_ns",
        "frame_ns",
        "frames",
        "frames_cleared",
        "heard_at_clears_ms",
        "overflow",
        "peak_ns",
    )

    def __init__(self, frame_ns: int = FRAME_NS, capacity_frames: int = PLAYBACK_BUFFER_FRAMES):
        self.frame_ns = frame_ns
        self.capacity_ns = capacity_frames * frame_ns
        #: When everything queued has played (in the past: the buffer is empty).
        self.end_ns = 0
        #: Frames queued (and so played, unless cleared).
        self.frames = 0
        #: Frames that arrived with the buffer full: undocumented, assumed dropped.
        self.overflow = 0
        self.peak_ns = 0
        self.clears = 0
        self.frames_cleared = 0
        #: Queued audio that a clear dropped before it played (ns of play time).
        self.cleared_ns = 0
        #: At each clear: how much of the audio received so far had played (ms).
        self.heard_at_clears_ms: list[float] = []

    def add(self, now_ns: int) -> int:
        """A frame arrived at ``now_ns``: when it starts to play (-1: dropped, buffer full).

        Comparisons rather than ``max``: this runs for every frame received.
        """
        end = self.end_ns
        if end < now_ns:  # noqa: PLR1730
            end = now_ns
        if end - now_ns >= self.capacity_ns:
            self.end_ns = end
            self.overflow += 1
            return -1
        start = end
        end += self.frame_ns
        self.end_ns = end
        self.frames += 1
        if end - now_ns > self.peak_ns:  # noqa: PLR1730
            self.peak_ns = end - now_ns
        return start

    def pending_ns(self, now_ns: int) -> int:
        """Audio queued and not yet played at ``now_ns``."""
        return max(0, self.end_ns - now_ns)

    def clear(self, now_ns: int) -> None:
        """Empty the buffer: what was queued is never heard; note what had been."""
        self.clears += 1
        pending = self.pending_ns(now_ns)
        played = self.frames * self.frame_ns - pending - self.cleared_ns
        if len(self.heard_at_clears_ms) < _MAX_KEPT:
            self.heard_at_clears_ms.append(round(played / MS, 1))
        self.cleared_ns += pending
        if pending:
            self.frames_cleared += -(-pending // self.frame_ns)
        self.end_ns = now_ns
