"""The level of each 20 ms frame sent and heard, with its time: the HTML report's timeline.

Kept only when a report asks for it, and bounded (an hour of frames per direction, about
1.4 MB), so a long call cannot grow without limit.

Import rule: standard library and ``bridge.sim.level``.
"""

from __future__ import annotations

from array import array

from bridge.sim.level import peak

#: An hour of 20 ms frames.
MAX_FRAMES = 180_000


class Envelope:
    """``(time, peak)`` per frame: ms since the call's start, 16-bit magnitude."""

    __slots__ = ("levels", "start_ns", "times_ms")

    def __init__(self) -> None:
        self.start_ns = 0
        self.times_ms = array("f")
        self.levels = array("H")

    def add(self, at_ns: int, frame: bytes) -> None:
        if len(self.times_ms) >= MAX_FRAMES:
            return
        self.times_ms.append((at_ns - self.start_ns) / 1e6)
        self.levels.append(min(peak(frame), 0xFFFF))

    def cut(self, at_ns: int) -> None:
        """Frames due to play from ``at_ns`` on were cleared: they are never heard."""
        limit = (at_ns - self.start_ns) / 1e6
        while self.times_ms and self.times_ms[-1] >= limit:
            self.times_ms.pop()
            self.levels.pop()


class Timeline:
    """What the caller said (sent) and heard, frame by frame."""

    __slots__ = ("heard", "sent")

    def __init__(self) -> None:
        self.sent = Envelope()
        self.heard = Envelope()

    def begin(self, start_ns: int) -> None:
        self.sent.start_ns = self.heard.start_ns = start_ns
