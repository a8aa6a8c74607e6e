"""Outbound pacing: one clock, one schedule per call, one timer for the whole process.

Frame ``k`` of a call has the deadline ``start + k * 20 ms`` on a monotonic clock and may leave
up to ``lead`` before it (docs/protocol.md s.4: Vonage buffers and plays at real time, and advises
sending slightly ahead). The grid never slides:

* after a *stall* (frames were queued but the loop did not run) every overdue frame leaves at
  once, up to the lead: the schedule catches up instead of adding permanent delay;
* after an *underrun* (nothing was queued when a slot passed) the unused slots are gone: new
  audio takes the current slot, so a burst after silence cannot be dumped into Vonage's buffer.

Everything here is synchronous and driven by ``now_ns`` values, so tests use :class:`FakeClock`
and assert exact send times. The asyncio side keeps one timer for the earliest wake-up across
all calls (the ``arm`` callback of :class:`Scheduler`; ``bridge.pacer.Pacer``): no task per
call, no timer per frame (docs/architecture.md s.5).

The scheduler paces anything :class:`Paced` (a ``pump(now)`` that says when it next needs
service): the server's outbound streams, and the simulator's senders, delay lines and agents,
so the whole project runs on one clock and one schedule.

One call's fault never stops another's audio: a stream whose send path raises (a faulty
outbound tap, a marker callback) is closed and handed to its ``on_error`` (the call decides
what that means: close it with 1011, log it); the tick goes on with every other due stream
and the next wake-up is requested before any error is reported. The guard is one ``try``
around each stream's pump, not one per frame.

Import rule: standard library, ``bridge.audio`` and ``bridge.units`` only (no asyncio).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Any, Protocol

from bridge.audio.playout import Marker, PlayoutBuffer
from bridge.units import FRAME_NS, MS

#: "No wake-up pending": later than any monotonic reading.
NEVER_NS = 1 << 62


class Clock(Protocol):
    def now_ns(self) -> int:
        """Monotonic time in integer nanoseconds."""
        ...


class MonotonicClock:
    """The production clock: ``time.monotonic_ns``, the same clock asyncio's loop uses.

    ``now_ns`` is the C function itself, not a method wrapping it: it is read for every
    frame on both sides of every connection, and a Python frame per reading costs more than
    the reading.
    """

    __slots__ = ()

    now_ns = staticmethod(time.monotonic_ns)


class FakeClock:
    """A clock that moves only when a test says so."""

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance_ms(self, ms: float) -> None:
        self._now += round(ms * MS)

    def set_ns(self, now_ns: int) -> None:
        if now_ns < self._now:
            raise ValueError("a monotonic clock cannot go back")
        self._now = now_ns


class OutboundStream:
    """One call's outbound schedule: drains a :class:`PlayoutBuffer` onto the 20 ms grid."""

    __slots__ = (
        "_cleared",
        "buffer",
        "closed",
        "frames_sent",
        "lead_ns",
        "max_lateness_ns",
        "next_slot",
        "on_error",
        "on_room",
        "send_frame",
        "send_marker",
        "start_ns",
        "underrun_slots",
        "wake_ns",
    )

    def __init__(
        self,
        buffer: PlayoutBuffer,
        send_frame: Callable[[bytes], None],
        send_marker: Callable[[Any], None],
        start_ns: int,
        lead_ns: int,
    ) -> None:
        self.buffer = buffer
        self.send_frame = send_frame
        self.send_marker = send_marker
        self.start_ns = start_ns
        self.lead_ns = lead_ns
        self.next_slot = 0
        self.frames_sent = 0
        self.underrun_slots = 0
        self.max_lateness_ns = 0
        self.wake_ns: int | None = None
        self.closed = False
        self.on_room: Callable[[], None] | None = None
        #: Called with the exception when this stream's send path raised (the stream is
        #: closed by then); without it the scheduler raises it after finishing its tick.
        self.on_error: Callable[[Exception], None] | None = None
        self._cleared = False

    def deadline_ns(self, slot: int) -> int:
        return self.start_ns + slot * FRAME_NS

    def current_slot(self, now_ns: int) -> int:
        """The slot whose deadline is the latest one not after ``now_ns``."""
        return (now_ns - self.start_ns) // FRAME_NS

    def push(self, frame: bytes, now_ns: int) -> int | None:
        """Queue one exact frame and send what the schedule allows; returns the next wake."""
        buffer = self.buffer
        if not buffer:
            self._resync(now_ns)
            release = self.start_ns + self.next_slot * FRAME_NS - self.lead_ns
            if release <= now_ns:
                # Nothing queued and its slot is within the lead (an echo, a live stream):
                # it leaves now, without a trip through the buffer.
                lateness = now_ns - release - self.lead_ns
                self.max_lateness_ns = max(self.max_lateness_ns, lateness)
                self.send_frame(frame)
                self.next_slot += 1
                self.frames_sent += 1
                self._after_send(True)
                return None
        buffer.push(frame)
        return self.pump(now_ns)

    def mark(self, payload: Any, now_ns: int) -> int | None:
        """Queue a notify marker behind the audio queued so far.

        On an idle stream the marker's place on the grid is now (the slot the next frame will
        take), not the stale slot after the last frame sent long ago: the play-out position
        (``bridge.heard``) measures Vonage's lag from it.
        """
        if not self.buffer:
            self._resync(now_ns)
        self.buffer.mark(payload)
        return self.pump(now_ns)

    def pump(self, now_ns: int) -> int | None:
        """Send every item whose release time (deadline minus lead) has come.

        Returns the time this stream next needs service, or ``None`` when its queue is empty.
        """
        buffer = self.buffer
        sent = False
        while buffer:
            item = buffer.peek()
            if isinstance(item, Marker):
                buffer.pop()
                self.send_marker(item.payload)
                continue
            release = self.start_ns + self.next_slot * FRAME_NS - self.lead_ns
            if release > now_ns:
                self._after_send(sent)
                return release
            buffer.pop()
            lateness = now_ns - release - self.lead_ns
            self.max_lateness_ns = max(self.max_lateness_ns, lateness)
            self.send_frame(item)
            self.next_slot += 1
            self.frames_sent += 1
            sent = True
        self._after_send(sent)
        return None

    def clear(self) -> int:
        """Drop all queued audio and markers (barge-in); returns the frames dropped.

        Barge-in also empties Vonage's buffer (``{"action":"clear"}``), so the frames we had
        sent up to ``lead`` ahead are gone: the next audio takes the current slot, as after an
        underrun, instead of waiting behind slots nobody will play (which would leave Vonage
        with one frame of margin instead of ``lead``).
        """
        dropped = self.buffer.clear()
        self._cleared = True
        if self.on_room is not None:
            self.on_room()
        return dropped

    def queued_ms(self) -> int:
        return self.buffer.frames * FRAME_NS // MS

    def _resync(self, now_ns: int) -> None:
        current = self.current_slot(now_ns)
        if self._cleared:
            self._cleared = False
            self.next_slot = max(current, 0)
            return
        if current > self.next_slot:
            if self.frames_sent:
                self.underrun_slots += current - self.next_slot
            self.next_slot = current

    def _after_send(self, sent: bool) -> None:
        if sent and self.on_room is not None:
            self.on_room()


class Paced(Protocol):
    """What the scheduler services: something that sends (or does) what is due by ``now_ns``.

    ``pump`` returns when it next needs service (``None``: not until it is added again);
    ``wake_ns`` is the scheduler's bookkeeping (the wake-up it holds for the item, if any);
    ``closed`` retires the item at its next wake-up.
    """

    wake_ns: int | None
    closed: bool

    def pump(self, now_ns: int) -> int | None: ...


class Scheduler:
    """Services every :class:`Paced` item (a call's stream, a simulated caller) from one
    clock and one pending wake-up.

    ``arm`` is how the scheduler asks its owner for a callback at an absolute time; the asyncio
    owner (``bridge.pacer.Pacer``) implements it with a single loop timer, a test with a fake
    clock calls :meth:`service` directly.
    """

    def __init__(
        self, clock: Clock, lead_ms: int, arm: Callable[[int], None] | None = None
    ) -> None:
        if lead_ms < 0:
            raise ValueError("lead_ms must be >= 0")
        self.clock = clock
        self.lead_ns = lead_ms * MS
        self._heap: list[tuple[int, int, Paced]] = []
        self._seq = 0
        self._arm = arm
        self._armed_ns: int | None = None

    def open_stream(
        self,
        buffer: PlayoutBuffer,
        send_frame: Callable[[bytes], None],
        send_marker: Callable[[Any], None],
        start_ns: int | None = None,
    ) -> OutboundStream:
        start = self.clock.now_ns() if start_ns is None else start_ns
        return OutboundStream(buffer, send_frame, send_marker, start, self.lead_ns)

    def push(self, stream: OutboundStream, frame: bytes, now_ns: int | None = None) -> None:
        """Queue ``frame`` on ``stream``; ``now_ns``: the caller's clock reading, if it has one."""
        if stream.closed:
            return
        now = self.clock.now_ns() if now_ns is None else now_ns
        try:
            wake = stream.push(frame, now)
        except Exception as exc:
            self._failed([(stream, exc)])
            return
        if wake is not None:
            self._schedule(stream, wake)

    def mark(self, stream: OutboundStream, payload: Any) -> None:
        if stream.closed:
            return
        try:
            wake = stream.mark(payload, self.clock.now_ns())
        except Exception as exc:
            self._failed([(stream, exc)])
            return
        self._schedule(stream, wake)

    def add(self, item: Paced, wake_ns: int | None) -> None:
        """Service ``item`` at ``wake_ns`` (or earlier, if it already waits for an earlier one)."""
        self._schedule(item, wake_ns)

    @property
    def next_wake_ns(self) -> int:
        """The earliest wake-up held (:data:`NEVER_NS` if none); may be a retired item's."""
        heap = self._heap
        return heap[0][0] if heap else NEVER_NS

    def service(self, now_ns: int | None = None, early_ns: int = 0) -> int | None:
        """Pump every stream that is due; returns the earliest future wake-up (or ``None``).

        ``early_ns``: also serve what falls due within this much of now (sent that much
        early), so one timer wake-up serves every call whose deadline is that close. A stream
        whose pump raises is closed and reported (``on_error``) after the others have been
        serviced and the next wake-up requested.

        An item due again is moved down the heap in place (one sift, not a pop and a push):
        with thousands of simulated callers this loop is most of the load generator's work.
        """
        now = (self.clock.now_ns() if now_ns is None else now_ns) + early_ns
        self._armed_ns = None
        heap = self._heap
        failed: list[tuple[Paced, Exception]] = []
        seq = self._seq
        while heap and heap[0][0] <= now:
            entry = heap[0]
            wake, _, stream = entry
            if stream.closed or stream.wake_ns != wake:
                heapq.heappop(heap)
                continue
            stream.wake_ns = None
            try:
                next_wake = stream.pump(now)
            except Exception as exc:
                failed.append((stream, exc))
                if heap and heap[0] is entry:
                    heapq.heappop(heap)
                continue  # (otherwise the entry is stale: wake_ns no longer matches)
            if heap and heap[0] is entry:
                if next_wake is None or stream.closed or stream.wake_ns is not None:
                    heapq.heappop(heap)  # done, or the pump re-added itself (its own entry)
                    self._seq = seq
                    self._schedule(stream, next_wake, arm=False)
                    seq = self._seq
                else:
                    seq += 1
                    stream.wake_ns = next_wake
                    heapq.heapreplace(heap, (next_wake, seq, stream))
            else:  # the pump added an earlier item: the entry moved; it is stale from now
                self._seq = seq
                self._schedule(stream, next_wake, arm=False)
                seq = self._seq
        self._seq = seq
        while heap and (heap[0][2].closed or heap[0][2].wake_ns != heap[0][0]):
            heapq.heappop(heap)
        next_wake = heap[0][0] if heap else None
        if next_wake is not None:
            self._request(next_wake)
        if failed:
            self._failed(failed)
        return next_wake

    def _failed(self, failed: list[tuple[Paced, Exception]]) -> None:
        """Close each failed stream and hand its error to its owner; an error nobody owns
        (or one its handler raised) is raised once every stream has been told."""
        unowned: Exception | None = None
        for stream, exc in failed:
            stream.closed = True
            stream.wake_ns = None
            on_error: Callable[[Exception], None] | None = getattr(stream, "on_error", None)
            if on_error is None:
                unowned = unowned or exc
                continue
            try:
                on_error(exc)
            except Exception as handler_exc:
                unowned = unowned or handler_exc
        if unowned is not None:
            raise unowned

    def _schedule(self, stream: Paced, wake_ns: int | None, arm: bool = True) -> None:
        if wake_ns is None or stream.closed:
            return
        if stream.wake_ns is not None and stream.wake_ns <= wake_ns:
            return
        stream.wake_ns = wake_ns
        self._seq += 1
        heapq.heappush(self._heap, (wake_ns, self._seq, stream))
        if arm:
            self._request(wake_ns)

    def _request(self, wake_ns: int) -> None:
        if self._arm is None:
            return
        if self._armed_ns is None or wake_ns < self._armed_ns:
            self._armed_ns = wake_ns
            self._arm(wake_ns)
