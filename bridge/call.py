"""One call: the public object a handler receives, and the paths between it and the socket.

A handler is ``async def handler(call: Call) -> None``. Inbound audio arrives as exact 20 ms
int16 frames at the handler's rate; whatever the handler plays is resampled to the call's
rate, cut into exact 20 ms frames and paced by the process-wide :class:`Scheduler`. The call
never touches a socket: the server gives it a :class:`CallIO` with three synchronous
methods, which keeps this module testable without a network.

A fault in one call's own path (an inbound tap such as the transcriber, an outbound tap such
as the recorder, a synchronous audio sink, a marker) ends that call alone: it is closed with
1011 and one error line with the traceback is logged; the transport and every other call
never see the exception.

Import rule: asyncio, the standard library, ``bridge.audio``, ``bridge.protocol``,
``bridge.pacing``, ``bridge.heard``, ``bridge.units``, ``bridge.watchdog``; never websockets.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from bridge.audio.framing import ByteFramer, SampleFramer
from bridge.audio.pcm import Samples, to_bytes, to_samples
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.resample import Resampler
from bridge.heard import HeardPosition
from bridge.pacing import Scheduler
from bridge.protocol.vonage import (
    Cleared,
    Connected,
    Event,
    Notified,
    build_clear,
    build_notify,
)
from bridge.units import FRAME_NS, MS, frame_bytes, frame_samples
from bridge.watchdog import ACTIVE

log = logging.getLogger("bridge.call")

INBOUND_QUEUE_FRAMES = 50
#: A writer waiting for room in play() is woken once this much room is free (100 ms).
ROOM_WAKE_FRAMES = 5
EVENT_QUEUE_MAX = 256
#: Close code for a call ended by a fault in its own path (RFC 6455 "internal error").
INTERNAL_ERROR = 1011
DEVIATION_BUCKETS = 256
DEVIATION_BUCKET_MS = 0.25
_DEVIATION_BUCKET_NS = 250_000
_ID_KEYS = ("call", "call_id", "uuid", "conversation_uuid")

Handler = Callable[["Call"], Awaitable[None]]
#: A marker that is no notify: the end of a prompt, where a chunking wire sends what it holds.
_FLUSH = object()
#: Sees every inbound frame at the call's rate, exactly as Vonage sent it (recorder, ASR).
InboundTap = Callable[[bytes], None]
#: Sees every frame sent to Vonage and its slot on the 20 ms send schedule.
OutboundTap = Callable[[bytes, int], None]
#: Takes caller audio synchronously, one exact 20 ms frame of 16-bit PCM at ``pipeline_rate``
#: at a time (see :meth:`Call.on_audio`).
AudioSink = Callable[[bytes], None]


def _discard(_item: object) -> None:
    """What an ended call's stream sends with: nothing (it is closed; ``Call._release``)."""


class CallIO(Protocol):
    """What a call needs from its transport; every method is synchronous and never blocks."""

    def send_binary(self, data: bytes) -> None: ...

    def send_text(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Wire(Protocol):
    """How a call's output reaches a carrier that is not Vonage (``bridge.carriers``).

    Without a wire, frames go out as binary messages and markers and clears as Vonage's JSON
    commands. A wire may join frames into chunks of ``chunk_frames``; ``flush`` then sends a
    partial chunk padded with silence and returns how many silent frames it added, so the
    send schedule stays where the carrier's playback is.
    """

    chunk_frames: int

    @property
    def pending_frames(self) -> int: ...

    def send_audio(self, frame: bytes) -> None: ...

    def send_mark(self, payload: Any) -> None: ...

    def send_clear(self) -> None: ...

    def flush(self) -> int: ...


class UpstreamCounters(Protocol):
    """The counters of forward mode's link (``bridge.upstream.UpstreamStats``) that the
    metrics sampler reads; a protocol so that this module never imports the link."""

    connects: int
    frames_resent: int
    frames_backlog: int
    frames_lost: int
    #: Milliseconds per counted item (20, or a service's chunk length).
    chunk_ms: int
    #: The dialect (``raw`` or a service) and the errors it reported, by reason.
    source: str
    service_errors: dict[str, int]


@dataclass
class CallStats:
    """Per-call figures, read by handlers, logs and the end-of-call summary."""

    frames_in: int = 0
    frames_out: int = 0
    inbound_dropped: int = 0
    inbound_gaps: int = 0
    max_gap_ms: float = 0.0
    jitter_ms: float = 0.0
    clears: int = 0
    last_clear_to_cleared_ms: float | None = None
    notifies_sent: int = 0
    notifies_heard: int = 0
    #: Markers dropped because too many were queued (``bridge.audio.playout``).
    notifies_dropped: int = 0
    # For the end-of-call summary and bridge/metrics.py (read once a second, never per frame).
    first_arrival_ns: int | None = None
    last_arrival_ns: int | None = None
    #: Per-frame |inter-arrival - 20 ms| in DEVIATION_BUCKET_MS buckets (last one: beyond).
    deviation_counts: list[int] = field(default_factory=lambda: [0] * DEVIATION_BUCKETS)
    #: Rare events waiting for the metrics sampler (bounded: a stalled sampler loses some).
    pending_gaps_ms: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    pending_cleared_ms: deque[float] = field(default_factory=lambda: deque(maxlen=64))


T = TypeVar("T")


class _Inbox(Generic[T]):
    """A bounded FIFO that one coroutine iterates; drops the oldest item when full.

    Cheaper than ``asyncio.Queue`` on the per-frame path: no locks, one future only when the
    consumer actually waits.
    """

    __slots__ = ("_closed", "_items", "_limit", "_waiter", "dropped")

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        if self._closed:
            return
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def take_all(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> _Inbox[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()


class Call:
    """The handler's view of one phone call (see README, "Writing a handler")."""

    #: Forward mode sets this to its link's counters (``bridge.upstream.UpstreamStats``) so
    #: the metrics sampler can read reconnects, replayed and lost audio; ``None`` otherwise.
    upstream_stats: UpstreamCounters | None = None

    def __init__(
        self,
        connected: Connected,
        io: CallIO,
        scheduler: Scheduler,
        *,
        pipeline_rate: int | None = None,
        playout_max_ms: int = 2000,
        wire: Wire | None = None,
    ) -> None:
        self.rate = connected.sample_rate
        self.pipeline_rate = pipeline_rate or connected.sample_rate
        self.metadata: Mapping[str, Any] = connected.metadata
        self.query: Mapping[str, str] = connected.query
        self.id = _call_id(connected)
        self.stats = CallStats()
        self._io = io
        self._wire = wire
        self._send_audio: Callable[[bytes], None] = (
            io.send_binary if wire is None else wire.send_audio
        )
        #: A wire that sends chunks of several frames (Exotel): see _flush_chunk.
        self._chunked = wire is not None and wire.chunk_frames > 1
        self._idle_timer: asyncio.TimerHandle | None = None
        self._scheduler = scheduler
        self._clock = scheduler.clock
        self._frame_bytes = frame_bytes(self.rate)
        self._in_framer = ByteFramer(self._frame_bytes)
        self._resample_in = Resampler(self.rate, self.pipeline_rate)
        self._resample_out = Resampler(self.pipeline_rate, self.rate)
        self._same_rate = self.pipeline_rate == self.rate
        self._pipe_framer = SampleFramer(frame_samples(self.pipeline_rate))
        self._out_framer = SampleFramer(frame_samples(self.rate))
        self._audio: _Inbox[Samples] = _Inbox(INBOUND_QUEUE_FRAMES)
        self._events: _Inbox[Event] = _Inbox(EVENT_QUEUE_MAX)
        # Every task waiting for room (play, flush) or for the queue to empty (drain).
        self._room_waiters: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._clear_sent_ns: int | None = None
        self._ended = False
        self._hung_up = False
        self._faulted = False
        self._stream = scheduler.open_stream(
            PlayoutBuffer(playout_max_ms), self._send_frame, self._send_marker
        )
        self._stream.on_room = self._on_room
        self._stream.on_error = self._on_send_error
        buffer_frames = self._stream.buffer.max_frames
        self._room_wake_frames = max(1, min(ROOM_WAKE_FRAMES, buffer_frames // 4))
        #: The schedule's time origin: slot ``k`` plays from ``start_ns + k * 20 ms``.
        self.start_ns = self._stream.start_ns
        self.clock = self._clock
        self._heard = HeardPosition(self._stream, self.rate, frame_samples(self.rate))
        self._in_tap: InboundTap | None = None
        self._out_tap: OutboundTap | None = None
        self._sink: AudioSink | None = None
        self._max_gap_ns = 0
        self._now_ns: int | None = None
        self._ended_waiter: asyncio.Future[None] | None = None
        self._end_callbacks: list[Callable[[], None]] = []
        # Frames that arrived with the first message, before the handler could add a tap:
        # kept until the handler reads audio() (a tap added before that sees them first).
        self._early_in: list[bytes] | None = []

    # --- the handler's API ---------------------------------------------------------------

    def audio(self) -> AsyncIterator[Samples]:
        """Caller audio: int16 frames of 20 ms at ``pipeline_rate``; ends when the call ends.

        If the handler falls more than a second behind, the oldest frames are dropped and
        counted in ``stats.inbound_dropped`` rather than growing memory.
        """
        self._early_in = None
        return self._audio

    def events(self) -> AsyncIterator[Event]:
        """DTMF, notify and cleared events in arrival order; ends when the call ends."""
        return self._events

    async def play(self, audio: Samples | bytes) -> None:
        """Queue audio at ``pipeline_rate`` for the caller; waits while the queue is full.

        Any length is accepted: it is resampled to the call's rate, cut into exact 20 ms
        frames (the remainder waits for the next call, or is padded by :meth:`flush`) and sent
        on the pacing schedule.
        """
        if self._hung_up or self._ended:
            return
        if (
            self._same_rate
            and type(audio) is bytes
            and len(audio) == self._frame_bytes
            and not self._out_framer.pending_samples
        ):
            # A whole frame at the call's rate stays bytes: no array round trip.
            while self._stream.buffer.room <= 0 and not self._ended:
                await self._wait_room()
            if not self._ended and not self._faulted:
                self._scheduler.push(self._stream, audio)
            return
        samples = to_samples(audio) if isinstance(audio, bytes | bytearray) else audio
        out = samples if self._same_rate else self._resample_out.process(samples)
        for frame in self._out_framer.push(out):
            while self._stream.buffer.room <= 0 and not self._ended:
                await self._wait_room()
            if self._ended or self._faulted:
                return
            self._scheduler.push(self._stream, to_bytes(frame))

    def on_audio(self, sink: AudioSink) -> None:
        """Take caller audio synchronously instead of iterating :meth:`audio`.

        ``sink`` is called from the socket's read with every frame, as 16-bit PCM bytes at
        ``pipeline_rate`` (at the call's own rate: the very bytes Vonage sent). It must not
        block. This is how the built-in modes run: no task wakes per frame. Frames that
        arrived before it was set are handed over first.
        """
        self._early_in = None
        for samples in self._audio.take_all():
            sink(to_bytes(samples))
        self._sink = sink

    def play_now(self, audio: Samples | bytes) -> None:
        """:meth:`play` without waiting, for synchronous handlers (see :meth:`on_audio`).

        When the outbound queue (``--playout-max-ms``) is full the oldest queued frame is
        dropped and counted, where :meth:`play` would wait.
        """
        if self._hung_up or self._ended:
            return
        if (
            self._same_rate
            and type(audio) is bytes
            and len(audio) == self._frame_bytes
            and not self._out_framer.pending_samples
        ):
            self._scheduler.push(self._stream, audio, self._now_ns)  # a whole frame, as it is
            return
        samples = to_samples(audio) if isinstance(audio, bytes | bytearray) else audio
        out = samples if self._same_rate else self._resample_out.process(samples)
        for frame in self._out_framer.push(out):
            self._scheduler.push(self._stream, to_bytes(frame))

    def try_play(self, audio: Samples | bytes) -> bool:
        """:meth:`play` if the outbound queue has room for all of ``audio`` now, else nothing.

        Returns ``False`` (and queues nothing) when it would have to wait: the caller keeps
        the audio and uses :meth:`play`. For synchronous paths that hand audio over as it
        arrives (forward mode's player) without a task waking per frame.
        """
        if self._hung_up or self._ended:
            return True  # nothing more is played: taken, as play() would
        n = len(audio) // 2 if isinstance(audio, bytes | bytearray) else len(audio)
        if not self._same_rate:  # at the call's rate, with a frame for the resampler's delay
            n = -(-n * self.rate // self.pipeline_rate) + self._frame_bytes // 2
        needed = (self._out_framer.pending_samples + n) // (self._frame_bytes // 2)
        if needed > self._stream.buffer.room or self._faulted:
            return False
        self.play_now(audio)
        return True

    async def wait_ended(self) -> None:
        """Until the call ends (the caller hangs up, or :meth:`hangup`)."""
        if self._ended:
            return
        if self._ended_waiter is None:
            self._ended_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended_waiter)

    async def flush(self) -> None:
        """Send the last partial frame, zero-padded (end of a prompt or of the call).

        Waits for room like :meth:`play`: a full queue would otherwise drop its oldest frame.
        """
        frames = [] if self._same_rate else self._out_framer.push(self._resample_out.flush())
        last = self._out_framer.flush()
        if last is not None:
            frames.append(last)
        for frame in frames:
            while self._stream.buffer.room <= 0 and not self._ended:
                await self._wait_room()
            if self._ended or self._faulted:
                return
            self._scheduler.push(self._stream, to_bytes(frame))
        if self._chunked and not self._ended:
            # The end of a prompt: its last chunk goes out when its last frame does.
            self._scheduler.mark(self._stream, _FLUSH)

    async def drain(self) -> None:
        """Wait until everything queued has been sent to the caller."""
        while self._stream.buffer and not self._ended:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def clear(self) -> None:
        """Barge-in: drop our queued audio AND tell Vonage to drop what it has buffered."""
        self._stream.clear()
        self._out_framer.clear()
        self._resample_out.reset()
        self.stats.clears += 1
        self._clear_sent_ns = self._clock.now_ns()
        self._heard.on_clear(self._clear_sent_ns)
        if not self._ended:
            if self._wire is None:
                self._io.send_text(build_clear())
            else:
                self._wire.send_clear()

    def notify(self, payload: Any) -> None:
        """Place a marker after the audio queued so far; ``Notified`` comes back when heard.

        At most one marker per 20 ms of the playout bound waits in the queue; beyond that the
        oldest waiting marker is dropped (``stats.notifies_dropped``, logged once per call).
        """
        buffer = self._stream.buffer
        before = buffer.dropped_markers
        self._scheduler.mark(self._stream, payload)
        if buffer.dropped_markers != before:
            self.stats.notifies_dropped = buffer.dropped_markers
            if before == 0:
                log.warning(
                    "too many notify markers queued: dropping the oldest",
                    extra={"call_id": self.id, "max_markers": buffer.max_markers},
                )

    def hangup(self, code: int = 1000, reason: str = "") -> None:
        """End the call now (queued audio is dropped; call :meth:`drain` first to keep it)."""
        if self._hung_up or self._ended:
            return
        self._hung_up = True
        self._io.close(code, reason)

    @property
    def queued_ms(self) -> int:
        """Audio queued in bridge, not yet sent to Vonage."""
        return self._stream.queued_ms()

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def heard_ms(self) -> int:
        """Outbound audio the caller has heard so far (see ``bridge.heard``)."""
        return self._heard.ms(self.heard_samples)

    @property
    def heard_samples(self) -> int:
        """As :attr:`heard_ms`, in samples at the call's rate."""
        return self._heard.heard_samples(self._clock.now_ns())

    @property
    def outbound_samples(self) -> int:
        """Where audio played now would start on the caller's timeline, in samples at the
        call's rate: everything sent (less what a ``clear`` discarded) plus everything still
        queued in bridge. Compare with :attr:`heard_samples` (a voice agent's barge-in tells
        its service how much of an answer was heard)."""
        heard = self._heard
        queued = self._stream.buffer.frames * heard.frame_samples + self._out_framer.pending_samples
        return heard.sent_samples - heard.discarded_samples + queued

    @property
    def sent_ms(self) -> int:
        """Outbound audio sent to Vonage so far (heard, buffered there, or cleared)."""
        return self._heard.ms(self._heard.sent_samples)

    @property
    def heard(self) -> HeardPosition:
        """The play-out model behind :attr:`heard_ms`: lag, cleared and confirmed audio."""
        return self._heard

    def add_taps(
        self, inbound: InboundTap | None = None, outbound: OutboundTap | None = None
    ) -> None:
        """Watch the raw frames both ways (recorder, transcriber); taps must not block.

        Without a tap the per-frame path does nothing extra; several taps are called in the
        order they were added. An inbound tap added before the handler first reads
        :meth:`audio` is given the frames that came before it, so it misses nothing.
        """
        if inbound is not None:
            for frame in self._early_in or ():
                inbound(frame)
            self._in_tap = _chain(self._in_tap, inbound)
        if outbound is not None:
            self._out_tap = _chain(self._out_tap, outbound)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the call ends (at once if it already has)."""
        if self._ended:
            callback()
        else:
            self._end_callbacks.append(callback)

    # --- the transport's side ----------------------------------------------------------

    def feed_audio(self, data: bytes, now_ns: int | None = None) -> None:
        """A binary message from Vonage: re-framed, measured, resampled, handed on.

        ``now_ns``: when it arrived (the connection reads the clock once per read). At the
        call's own rate a whole frame stays the bytes object that arrived, end to end.
        Never raises: a fault here (an inbound tap, the sink) ends this call alone.
        """
        if self._faulted:
            return
        try:
            self._feed_audio(data, now_ns)
        except Exception as exc:
            self._fault("inbound audio path", exc)

    def _feed_audio(self, data: bytes, now_ns: int | None) -> None:
        now = self._clock.now_ns() if now_ns is None else now_ns
        frames = self._in_framer.push(data)
        sink = self._sink
        if sink is not None:
            self._now_ns = now  # what the sink's play_now takes as "now": one clock reading
            try:
                for frame in frames:
                    self._measure_arrival(now)
                    self.stats.frames_in += 1
                    if self._in_tap is not None:
                        self._in_tap(frame)
                    if self._same_rate:
                        sink(frame)
                    else:
                        samples = self._resample_in.process(to_samples(frame))
                        for piece in self._pipe_framer.push(samples):
                            sink(to_bytes(piece))
            finally:
                self._now_ns = None
            return
        for frame in frames:
            self._measure_arrival(now)
            self.stats.frames_in += 1
            if self._in_tap is not None:
                self._in_tap(frame)
            if self._early_in is not None:
                self._keep_early(frame)
            samples = to_samples(frame)
            if self._same_rate:
                self._audio.put(samples)
            else:
                for piece in self._pipe_framer.push(self._resample_in.process(samples)):
                    self._audio.put(piece)
        self.stats.inbound_dropped = self._audio.dropped

    def feed_event(self, event: Event) -> None:
        """An event from Vonage; never raises (see :meth:`feed_audio`)."""
        if self._faulted:
            return
        try:
            self._feed_event(event)
        except Exception as exc:
            self._fault("inbound event path", exc)

    def _feed_event(self, event: Event) -> None:
        if isinstance(event, Cleared) and self._clear_sent_ns is not None:
            self.stats.last_clear_to_cleared_ms = (self._clock.now_ns() - self._clear_sent_ns) / MS
            self.stats.pending_cleared_ms.append(self.stats.last_clear_to_cleared_ms)
            self._clear_sent_ns = None
        elif isinstance(event, Notified):
            self.stats.notifies_heard += 1
            self._heard.on_notified(event.payload, self._clock.now_ns())
        self._events.put(event)

    def end(self) -> None:
        """The socket is gone: finish the iterators and wake anyone waiting."""
        if self._ended:
            return
        self._ended = True
        self._heard.freeze(self._clock.now_ns())
        self._stream.closed = True
        self._stream.buffer.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._audio.close()
        self._events.close()
        self._on_room()
        waiter, self._ended_waiter = self._ended_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        callbacks, self._end_callbacks = self._end_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("end-of-call callback failed", extra={"call_id": self.id})
        self._release()

    def _release(self) -> None:
        """Let go of what points back at this call, so that it is freed when its last user
        lets go, not at the collector's next full pass.

        The stream holds this call's bound methods, and a sink (``on_audio(call.play_now)``)
        or a tap (a recorder's) holds the call: reference cycles, which left an ended call, its buffers and
        resamplers and its connection to the cyclic collector, whose full passes grow rarer as
        the heap grows (docs/reliability.md s.4). The stream is closed by now: nothing calls
        these again.
        """
        stream = self._stream
        stream.send_frame = _discard
        stream.send_marker = _discard
        stream.on_room = None
        stream.on_error = None
        self._sink = None
        self._in_tap = None
        self._out_tap = None

    # --- internals -----------------------------------------------------------------------

    def _keep_early(self, frame: bytes) -> None:
        assert self._early_in is not None
        self._early_in.append(frame)
        if len(self._early_in) >= INBOUND_QUEUE_FRAMES:
            self._early_in = None  # a handler that never reads audio(): stop keeping them

    def _send_frame(self, frame: bytes) -> None:
        self.stats.frames_out += 1
        ACTIVE.call_id = self.id  # for the watchdog: a tap or a wire that blocks is this call's
        try:
            if self._out_tap is not None:
                self._out_tap(frame, self._stream.next_slot)
            self._send_audio(frame)
        finally:
            ACTIVE.call_id = None
        if self._chunked and self._idle_timer is None:
            self._arm_idle_check()

    def _send_marker(self, payload: Any) -> None:
        wire = self._wire
        if wire is None:
            self.stats.notifies_sent += 1
            self._heard.on_marker(payload)
            self._io.send_text(build_notify(payload))
            return
        self._flush_chunk()  # a mark follows all the audio before it
        if payload is _FLUSH:
            return
        self.stats.notifies_sent += 1
        self._heard.on_marker(payload)
        wire.send_mark(payload)

    def _flush_chunk(self) -> None:
        """Send a partial chunk padded with silence, and count the padding as sent: the
        carrier plays it, so the next frame's slot comes after it."""
        if not self._chunked or self._wire is None:
            return
        padding = self._wire.flush()
        if padding:
            stream = self._stream
            stream.next_slot += padding
            stream.frames_sent += padding
            self.stats.frames_out += padding

    def _arm_idle_check(self, delay_s: float | None = None) -> None:
        """A partial chunk must not wait forever for audio that has stopped coming: once the
        playback position passes the end of what was sent by a whole chunk, it is sent."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if delay_s is None:
            delay_s = self._idle_delay_ns() / 1e9
        self._idle_timer = loop.call_later(max(0.0, delay_s), self._idle_check)

    def _idle_delay_ns(self) -> int:
        assert self._wire is not None
        stream = self._stream
        idle_at = stream.deadline_ns(stream.next_slot) + self._wire.chunk_frames * FRAME_NS
        return idle_at - self._clock.now_ns()

    def _idle_check(self) -> None:
        self._idle_timer = None
        wire = self._wire
        if self._ended or wire is None or not wire.pending_frames:
            return
        delay_ns = self._idle_delay_ns()
        if delay_ns > 0 or self._stream.buffer:
            self._arm_idle_check(max(delay_ns, FRAME_NS) / 1e9)
            return
        self._flush_chunk()

    async def _wait_room(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)
        await waiter

    def _on_room(self) -> None:
        # Called for every frame sent: cheap when nobody waits. Writers waiting in play()
        # are woken once a few frames of room have opened (_room_wake_frames), not per frame,
        # so a handler streaming a long prompt wakes every 100 ms rather than every 20 ms.
        # Every waiter is woken (any number of tasks may wait); each checks for room again.
        if self._room_waiters and (
            self._stream.buffer.room >= self._room_wake_frames or self._ended or self._faulted
        ):
            waiters, self._room_waiters = self._room_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._drain_waiters and (not self._stream.buffer or self._ended):
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _on_send_error(self, exc: Exception) -> None:
        self._fault("outbound path", exc)

    def _fault(self, where: str, exc: Exception) -> None:
        """This call's own path raised: close it with 1011, log once with the traceback.

        Its queue is dropped and anyone waiting in ``play``/``drain`` returns; the handler
        then sees the call end like a hang-up.
        """
        if self._faulted:
            return
        self._faulted = True
        self._early_in = None
        self._sink = None
        self._stream.closed = True
        self._stream.buffer.clear()
        log.error(
            "call failed in its %s: %s: %s",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"call_id": self.id},
        )
        self._on_room()
        if not self._ended and not self._hung_up:
            self._hung_up = True
            self._io.close(INTERNAL_ERROR, "internal error")

    def _measure_arrival(self, now_ns: int) -> None:
        stats = self.stats
        last = stats.last_arrival_ns
        stats.last_arrival_ns = now_ns
        if last is None:
            stats.first_arrival_ns = now_ns
            return
        gap_ns = now_ns - last
        if gap_ns > self._max_gap_ns:
            self._max_gap_ns = gap_ns
            stats.max_gap_ms = gap_ns / MS
        if gap_ns > 2 * FRAME_NS:
            stats.inbound_gaps += 1
            stats.pending_gaps_ms.append(gap_ns / MS)
        # RFC 3550 interarrival jitter against the nominal 20 ms spacing.
        deviation_ns = gap_ns - FRAME_NS if gap_ns > FRAME_NS else FRAME_NS - gap_ns
        stats.jitter_ms += (deviation_ns / MS - stats.jitter_ms) / 16
        # DEVIATION_BUCKET_MS buckets: one integer index, no allocation, per frame.
        bucket = deviation_ns // _DEVIATION_BUCKET_NS
        stats.deviation_counts[bucket if bucket < DEVIATION_BUCKETS else DEVIATION_BUCKETS - 1] += 1

    def summary(self) -> dict[str, Any]:
        """End-of-call figures for the log line."""
        s = self.stats
        return {
            "call_id": self.id,
            "rate": self.rate,
            "frames_in": s.frames_in,
            "frames_out": s.frames_out,
            "inbound_dropped": s.inbound_dropped,
            "inbound_gaps": s.inbound_gaps,
            "max_gap_ms": round(s.max_gap_ms, 2),
            "jitter_ms": round(s.jitter_ms, 3),
            "underrun_frames": self._stream.underrun_slots,
            "playout_dropped": self._stream.buffer.dropped_frames,
            "notifies_dropped": s.notifies_dropped,
            "clears": s.clears,
            **self._heard_summary(),
        }

    def _heard_summary(self) -> dict[str, Any]:
        heard = self._heard
        lag = heard.lag_ns
        return {
            "sent_ms": heard.ms(heard.sent_samples),
            "heard_ms": self.heard_ms,
            "cleared_unheard_ms": heard.ms(heard.discarded_samples),
            "heard_confirmed_ms": heard.ms(heard.confirmed_samples),
            "playback_lag_ms": None if lag is None else round(lag / MS, 1),
        }


def _chain(first: Callable[..., None] | None, second: Callable[..., None]) -> Any:
    if first is None:
        return second

    def both(*args: Any) -> None:
        first(*args)
        second(*args)

    return both


def _call_id(connected: Connected) -> str:
    for source in (connected.query, connected.metadata):
        for key in _ID_KEYS:
            value = source.get(key)
            if isinstance(value, str) and value:
                return value[:64]
    return uuid.uuid4().hex
