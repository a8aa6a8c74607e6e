"""How much of the audio bridge sent has the caller actually heard (docs/lessons.md s.4: bytes
sent are not audio played).

The estimate comes from bridge's own send schedule (``bridge.pacing``): Vonage plays what it
receives back to back at real time, so the frame sent for slot ``s`` plays during
``[deadline(s), deadline(s + 1))``, and what Vonage still holds at time ``t`` is the audio
between ``t`` and the scheduled end of the last frame sent. Then

    heard = sent - still in Vonage's buffer - dropped by a clear

Two answers from Vonage correct it (docs/protocol.md s.5):

* ``websocket:notify`` for a marker placed after ``N`` samples means those ``N`` samples had
  played when it arrived. That is a floor for the position from then on, and the difference
  between the arrival and the scheduled end of the marker's audio is Vonage's playback lag
  (network one way plus its own start-up), applied to the schedule from then on.
* ``clear``: whatever the estimate still had in Vonage's buffer is dropped, never heard; the
  frames sent before the clear can no longer be pending.

Nothing here runs per frame: the position is computed when asked, from counters the pacing
scheduler keeps anyway. Integer samples at the call's rate throughout.

Import rule: standard library, ``bridge.pacing`` and ``bridge.units`` only (no asyncio).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from bridge.pacing import OutboundStream
from bridge.units import SECOND

#: Markers awaiting their ``notify`` answer; Vonage may never answer some (after a clear).
MAX_PENDING_MARKERS = 256


class HeardPosition:
    """The play-out position of one call's outbound audio, in samples at the call's rate."""

    __slots__ = (
        "_frames_at_clear",
        "_markers",
        "_stream",
        "confirmed_samples",
        "discarded_samples",
        "final_samples",
        "frame_samples",
        "lag_ns",
        "rate",
    )

    def __init__(self, stream: OutboundStream, rate: int, frame_samples: int) -> None:
        self._stream = stream
        self.rate = rate
        self.frame_samples = frame_samples
        #: Vonage's playback lag behind the schedule, measured by the last notify answer.
        self.lag_ns: int | None = None
        #: Sent, then dropped by a clear before it played.
        self.discarded_samples = 0
        #: Heard for certain: the position of the last answered marker.
        self.confirmed_samples = 0
        #: Set when the call ends: nothing more is heard after that.
        self.final_samples: int | None = None
        self._frames_at_clear = 0
        # (payload, samples sent before it, discarded before it, scheduled end of its audio)
        self._markers: deque[tuple[Any, int, int, int]] = deque(maxlen=MAX_PENDING_MARKERS)

    @property
    def sent_samples(self) -> int:
        return self._stream.frames_sent * self.frame_samples

    def buffered_samples(self, now_ns: int) -> int:
        """Audio sent and, by the schedule, still waiting in Vonage's buffer at ``now_ns``."""
        stream = self._stream
        since_clear = stream.frames_sent - self._frames_at_clear
        if since_clear <= 0:
            return 0
        end_ns = stream.deadline_ns(stream.next_slot) + (self.lag_ns or 0)
        pending_ns = end_ns - now_ns
        if pending_ns <= 0:
            return 0
        pending = -(-pending_ns * self.rate // SECOND)  # ceil: a started sample is unheard
        return min(since_clear * self.frame_samples, pending)

    def heard_samples(self, now_ns: int) -> int:
        if self.final_samples is not None:
            return self.final_samples
        estimate = self.sent_samples - self.discarded_samples - self.buffered_samples(now_ns)
        return max(estimate, self.confirmed_samples)

    def on_clear(self, now_ns: int) -> None:
        """A ``clear`` went to Vonage: its buffered audio is dropped unheard."""
        self.discarded_samples += self.buffered_samples(now_ns)
        self._frames_at_clear = self._stream.frames_sent
        self._markers.clear()  # docs/protocol.md s.5: their answers may never come

    def on_marker(self, payload: Any) -> None:
        """A ``notify`` left for Vonage, right after every frame queued before it."""
        stream = self._stream
        self._markers.append(
            (
                payload,
                self.sent_samples,
                self.discarded_samples,
                stream.deadline_ns(stream.next_slot),
            )
        )

    def on_notified(self, payload: Any, now_ns: int) -> bool:
        """Vonage reached a marker; returns whether it was one of ours still pending."""
        markers = self._markers
        index = next((i for i, marker in enumerate(markers) if marker[0] == payload), None)
        if index is None:
            return False
        for _ in range(index):
            markers.popleft()  # answered in order: earlier markers were passed too
        _, sent, discarded, end_ns = markers.popleft()
        self.confirmed_samples = max(self.confirmed_samples, sent - discarded)
        self.lag_ns = now_ns - end_ns
        return True

    def freeze(self, now_ns: int) -> None:
        """The call is over: audio still buffered in Vonage was never heard."""
        if self.final_samples is None:
            self.final_samples = self.heard_samples(now_ns)

    def ms(self, samples: int) -> int:
        return samples * 1000 // self.rate
