"""One simulated call: Vonage's side (or a carrier's), played faithfully over a real websocket.

Connect, send the opening (``websocket:connected``), then exact 20 ms binary frames on a
drift-free schedule (frame ``k`` leaves at ``start + k * 20 ms`` on a monotonic clock; a late
sender sends every overdue frame at once instead of sliding the grid, so a stall shows up as
lateness, never as drift), DTMF events interleaved, and a normal close (1000) after the audio
plus a short linger, like a caller hanging up.

The receiving side behaves like Vonage: a binary frame that is not exactly one 20 ms frame is
counted and ends the call (Vonage drops the socket; we close with 1002 and Vonage's wording so
the far end sees why); received audio goes into the playback model (``bridge.sim.playback``),
played at real time, so ``clear`` (answered by ``websocket:cleared``) and ``notify``
(answered when playback reaches it) behave as on a real call. The messages themselves are the
peer's (``bridge.sim.vonage_peer``, ``bridge.sim.carrier_peer``).

Round trips are measured per frame without any help from the far end, by the frame numbers
stamped in the audio (``bridge.sim.source``). Everything kept per call is bounded however
long the call runs: histograms (``bridge.stats``) instead of sample lists, a fixed ring of
recent send times, recordings streamed to disk.

As a load generator it must stay cheaper than the servers it measures, so the per-frame path
has no task, future, queue or sleep: the call is a ``Paced`` item of the process's one
scheduler (``bridge.pacer``: one timer for every call's frames), received messages are handled
synchronously in the read, and per-call state the garbage collector would walk is kept in
typed arrays. A conversation (``bridge.sim.turns``), impairments (``bridge.sim.impair``) and
the timeline (``bridge.sim.timeline``) plug in beside that path: a different frame source, a
delay line on each path, a listener on what is heard, each absent when not asked for.

Import rule: asyncio, websockets (its exceptions), ``bridge.audio``, ``bridge.errors``,
``bridge.pacer``, ``bridge.pacing``, ``bridge.protocol``, ``bridge.stats``, ``bridge.units``
and ``bridge.sim``.
"""

from __future__ import annotations

import asyncio
import statistics
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import WebSocketException

from bridge.audio.pcm import to_samples
from bridge.audio.wav import WavWriter
from bridge.errors import ConfigError
from bridge.pacer import Pacer
from bridge.pacing import Clock, MonotonicClock, Scheduler
from bridge.protocol.carrier import Command
from bridge.sim.carrier_peer import CarrierLink, CarrierPeer
from bridge.sim.client import CLOSE_TIMEOUT_S, SimConnection, open_connection
from bridge.sim.fields import build, ms
from bridge.sim.impair import DelayLine, DelayModel, ImpairStats, PathStats, RttTrend
from bridge.sim.options import CallOptions, scale_ns
from bridge.sim.playback import Playback
from bridge.sim.reports import CallReport, ImpairmentReport, TurnReport, overloaded
from bridge.sim.source import SEQ_MASK, FrameSource, Source, read_stamp
from bridge.sim.timeline import Timeline
from bridge.sim.turns import EnvelopeSource, TurnEngine, TurnSource, Utterance
from bridge.sim.vonage_peer import VonagePeer
from bridge.stats import Histogram
from bridge.units import FRAME_NS, MS, SECOND

DTMF_SPACING_NS = 300 * MS
#: Close code for a wrong-sized binary frame. Real Vonage drops the socket (the far end sees
#: 1006, docs/protocol.md s.4); a clean 1002 "protocol error" with Vonage's message is easier to
#: diagnose and to assert on, and still ends the call at once.
BAD_FRAME_CLOSE_CODE = 1002
#: Round trips over these count as late frames (20, 50, 100 ms).
LATE_MS = (20, 50, 100)
_LATE_NS = tuple(ms_ * MS for ms_ in LATE_MS)
#: The sender serves every call due within this of now in one wake-up (see bridge.pacer):
#: it sends in 1 ms ticks, a frame up to 1 ms before its deadline, never after it by design.
EARLY_NS = MS
#: Recent sent frames kept for matching echoes: 512 frames, 10.24 s (a power of two).
_RING = 512
_RING_MASK = _RING - 1
#: Without stamps, an echo is searched for this many frames past the next expected one.
_UNSTAMPED_SEARCH = 50
_MAX_EVENTS_KEPT = 1000
#: Pacing is measured from the second second on: a sender with a lead (bridge sends up to
#: 100 ms ahead) bursts at the start, which is by design, not a pacing error.
_PACING_SKIP_FRAMES = 50
#: Drift compares the median offset of the first and the last this many frames: a median, so
#: one stall of the host (a few frames late, then a burst) does not read as the grid moving.
_PACING_WINDOW = 50
#: Offsets are recorded relative to the first measured frame, plus this to keep them
#: non-negative (that frame may itself have been up to this late).
_PACING_BIAS_NS = 50 * MS
#: How long the end of a call waits for a delay line to deliver what it still holds.
_DRAIN_S = 5.0


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class CallHistograms:
    rtt: Histogram = field(default_factory=Histogram)
    jitter: Histogram = field(default_factory=Histogram)
    lateness: Histogram = field(default_factory=Histogram)
    #: How late the sender's timer callbacks ran: the event loop's own lag, which includes the
    #: time spent reading echoes (sends do not wait for that; receipts do).
    loop_lag: Histogram = field(default_factory=Histogram)
    #: Arrival offsets from the 20 ms grid, biased by ``_PACING_BIAS_NS`` (``measure_pacing``);
    #: 12 sub-bits: buckets of 25 us at the bias, where the default's would be 400 us.
    pacing: Histogram = field(default_factory=lambda: Histogram(sub_bits=12))


@dataclass
class Prepared:
    """What every call of a process shares: the audio, read (and resampled) once."""

    source: Source
    utterance: Utterance | None = None

    @classmethod
    def of(cls, opts: CallOptions) -> Prepared:
        source = Source(opts.rate, opts.wav if opts.turns is None else None, opts.tone_hz)
        utterance = None
        if opts.turns is not None:
            assert opts.wav is not None  # CallOptions checks it
            utterance = Utterance.load(opts.wav, opts.rate, opts.turns.threshold)
        return cls(source, utterance)


class _ReceiveTap:
    """What the connection hands its messages to when the receive path is impaired: raw
    arrivals measured, then held by the delay line and delivered to the call."""

    def __init__(self, call: SimulatedCall, line: DelayLine, stats: ImpairStats) -> None:
        self.call = call
        self.line = line
        self.stats = stats
        self.last_ns = -1

    def on_binary(self, data: bytes, now_ns: int) -> None:
        self._arrived(now_ns)
        self._push((True, data), now_ns)

    def on_text(self, text: str, now_ns: int) -> None:
        self._arrived(now_ns)
        self._push((False, text), now_ns)

    def _arrived(self, now_ns: int) -> None:
        self.stats.receive.gap(now_ns)
        if self.last_ns >= 0:
            self.stats.arrival_jitter.record(abs(now_ns - self.last_ns - FRAME_NS))
        self.last_ns = now_ns

    def _push(self, item: tuple[bool, Any], now_ns: int) -> None:
        wake = self.line.push(item, now_ns)
        if wake is not None and self.call.scheduler is not None:
            self.call.scheduler.add(self.line, wake)

    def deliver(self, item: tuple[bool, Any], at_ns: int) -> None:
        binary, data = item
        if binary:
            self.call.on_binary(data, at_ns)
        else:
            self.call.on_text(data, at_ns)


class SimulatedCall:
    """One call's state, driven by callbacks: the scheduler sends, the connection delivers."""

    def __init__(
        self,
        opts: CallOptions,
        clock: Clock,
        prepared: Prepared | None = None,
        shared: CallHistograms | None = None,
        index: int = 0,
    ) -> None:
        self.opts = opts
        self.clock = clock
        self.index = index
        # Paced (bridge.pacing): the scheduler's bookkeeping.
        self.wake_ns: int | None = None
        self.closed = False
        self.scheduler: Scheduler | None = None
        prepared = Prepared.of(opts) if prepared is None else prepared
        #: A carrier's side (``bridge.sim.carrier_peer``), or ``None`` for Vonage's.
        self.link: CarrierLink | None = None
        self.frame_bytes = len(prepared.source.silence)
        self.peer: VonagePeer | CarrierPeer
        if opts.carrier != "vonage":
            self.link = CarrierLink(opts.peer_options(f"CA{id(self):x}"))
            self.frame_bytes = self.link.frame_bytes
            self.peer = self.link.peer
        else:
            self.peer = VonagePeer(opts.rate, opts.headers)
        self.n_frames = opts.n_frames
        imp = opts.impaired
        #: One frame on the carrier's clock: its sender's period, its playback's frame.
        self.frame_ns = FRAME_NS if imp is None or not imp.on_send else imp.frame_ns(FRAME_NS)
        play_ns = FRAME_NS if imp is None or not imp.on_receive else imp.frame_ns(FRAME_NS)
        self.playback = Playback(play_ns)
        self.hist = CallHistograms()
        # In a load run, round trips and lateness go straight into the process's histograms:
        # one hot dict instead of one cold dict per call (a cache miss per frame each). The
        # call's own report then has no percentiles for them.
        self.shared = shared is not None
        self.rtt = self.hist.rtt if shared is None else shared.rtt
        self.lateness = self.hist.lateness if shared is None else shared.lateness
        self.timeline = Timeline() if opts.envelope else None
        self.turns: TurnEngine | None = None
        self.source: FrameSource = prepared.source
        #: Stamps by frame hash, when the frames sent are the shared source's stamped ones.
        self.stamp_of: dict[int, int] = prepared.source.stamp_of
        if opts.turns is not None:
            assert prepared.utterance is not None
            self.turns = TurnEngine(opts.turns, prepared.utterance)
            sent = self.timeline.sent if self.timeline is not None else None
            self.source = TurnSource(self.turns, opts.rate, sent, self._conversation_over)
            self.n_frames = 1 << 40  # the conversation ends the call (TurnEngine.deadline_ns)
        elif self.timeline is not None:
            self.source = EnvelopeSource(prepared.source, self.timeline.sent, self.frame_ns)
        #: Called with each frame heard (PCM) and when it starts to play: turns, timeline.
        self.listen: Callable[[bytes, int], None] | None = None
        if self.turns is not None or self.timeline is not None:
            self.listen = self._listen
        self.impair = ImpairStats() if imp is not None else None
        self.trend = RttTrend() if imp is not None else None
        self.send_line: DelayLine | None = None
        self.receive_tap: _ReceiveTap | None = None
        self.conn: SimConnection | None = None
        self._send_binary: Callable[[bytes], None] = _closed_sink
        self._send_text: Callable[[str], None] = _closed_sink
        self.start_ns = 0
        self.next_k = 0
        self.dtmf: list[tuple[int, str]] = []
        self.sending_done: asyncio.Future[None] | None = None
        self.all_back: asyncio.Future[None] | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.bad_frames = 0
        self.frames_matched = 0
        self.frames_not_exact = 0
        self.out_of_order = 0
        self.late = [0, 0, 0]  # round trips over _LATE_NS[i]
        self.highest_matched = -1
        self.next_expected = 0
        self.last_arrival_ns: int | None = None
        self.jitter16_ns = 0  # RFC 3550 A.8: the estimate scaled by 16, integer arithmetic
        # Ring of recent sent frames, slot = index & mask: who is there, when it left, a hash
        # of its bytes (a 64-bit hash is the identity check; keeping 10 s of bytes per call
        # would cost hundreds of MB in a load test).
        # Typed arrays, not lists: the garbage collector need not walk them (a full
        # collection walking 3 x 512 slots per call stalled a 300-call generator for 16 ms).
        self.ring_index = array("q", [-1]) * _RING
        self.ring_ns = array("q", [0]) * _RING
        self.ring_hash = array("q", [0]) * _RING
        # measure_pacing: the first frame's offset, and the first and the latest
        # _PACING_WINDOW offsets (for drift) in ns.
        self.pacing_ref_ns = 0
        self.pacing_first: list[int] = []
        self.pacing_last = array("q", [0]) * _PACING_WINDOW
        self.dtmf_sent = 0
        self.events: list[str] = []
        self.text_events_total = 0
        self.notifies = 0
        self.notifies_answered = 0
        self.notifies_dropped = 0
        self.unknown_commands = 0
        self.pause_from = (
            scale_ns(opts.pause_at_s) // FRAME_NS if opts.pause_s > 0 else self.n_frames
        )
        self.pause_until = self.pause_from + scale_ns(opts.pause_s) // FRAME_NS
        self.notify_timers: dict[int, asyncio.TimerHandle] = {}
        self.notify_answers: dict[int, str] = {}
        self.notify_seq = 0
        self.recorder: WavWriter | None = None
        self.sent_recorder: WavWriter | None = None
        self.error: str | None = None

    # --- sending (the scheduler calls pump) -------------------------------------------

    def start(self, scheduler: Scheduler, start_ns: int, poll: Callable[[int], None]) -> None:
        """Frame ``k`` is due at ``start_ns + k * frame``; DTMF digits 300 ms apart."""
        opts = self.opts
        self.scheduler = scheduler
        self.start_ns = start_ns
        if self.turns is not None:
            self.turns.begin(start_ns, self.frame_ns)
        if self.timeline is not None:
            self.timeline.begin(start_ns)
        dtmf_at = start_ns + scale_ns(opts.dtmf_at_s)
        self.dtmf = [(dtmf_at + i * DTMF_SPACING_NS, d) for i, d in enumerate(opts.dtmf)]
        self.dtmf.reverse()  # pop() from the end in time order
        if self.conn is not None:
            # Sends that are due go before the echoes that arrived (see bridge.pacer).
            self.conn.read_hook = poll
        scheduler.add(self, start_ns)

    def pump(self, horizon_ns: int) -> int | None:
        """Send everything due by ``horizon_ns``; the next due time, or ``None`` when done.

        A late pump sends every overdue frame at once: the grid never slides, so a stall
        shows up as lateness, never as drift.
        """
        conn = self.conn
        if conn is None or not conn.is_open:
            self._finish_sending()
            return None
        now = self.clock.now_ns()
        dtmf = self.dtmf
        k = self.next_k
        n = self.n_frames
        frame_ns = self.frame_ns
        deadline = self.start_ns + k * frame_ns
        while True:
            while dtmf and dtmf[-1][0] <= horizon_ns and (k >= n or dtmf[-1][0] <= deadline):
                digit = dtmf.pop()[1]
                self._send_text(self.peer.dtmf(digit))
                self.dtmf_sent += 1
            if k >= n or deadline > horizon_ns:
                break
            if not self.pause_from <= k < self.pause_until:
                self._send_frame(k, deadline, now)
            k += 1
            deadline += frame_ns
            n = self.n_frames  # a conversation may have ended at this frame
        self.next_k = k
        if k < n:
            return min(deadline, dtmf[-1][0]) if dtmf else deadline
        if dtmf:
            return dtmf[-1][0]
        for message in self.peer.finish():
            self._send_text(message)
        self._finish_sending()
        return None

    # Kept for benchmarks and tests that drive a call by hand.
    tick = pump

    def _send_frame(self, k: int, deadline: int, now: int) -> None:
        link = self.link
        if link is None:
            frame = self.source.stamped(k) if self.opts.stamp else self.source.frame(k)
        else:
            frame = link.wire_frame(self.source, k, self.source.frame(k), self.opts.stamp)
        self.lateness.record(now - deadline)
        slot = k & _RING_MASK
        self.ring_index[slot] = k
        self.ring_ns[slot] = now
        self.ring_hash[slot] = hash(frame)
        if link is None:
            self._send_binary(frame)
        else:
            for message in link.peer.frame(frame):
                self._send_text(message)
        self.frames_sent += 1
        if self.sent_recorder is not None:
            self.sent_recorder.write(to_samples(frame if link is None else link.to_pcm(frame)))

    def _conversation_over(self, k: int) -> None:
        """The last turn is over: frame ``k`` is the last one sent."""
        self.n_frames = min(self.n_frames, k + 1)

    def _finish_sending(self) -> None:
        if self.sending_done is not None and not self.sending_done.done():
            self.sending_done.set_result(None)

    # --- receiving (the connection calls these) --------------------------------------

    def on_binary(self, data: bytes, now: int) -> None:
        if self.link is not None or len(data) != self.frame_bytes:
            # docs/protocol.md s.4: Vonage stops listening and drops the call.
            self.bad_frames += 1
            if self.conn is not None and self.conn.is_open:
                reason = f"unexpected frame size {len(data)}, when required {self.frame_bytes}"
                self.conn.close(BAD_FRAME_CLOSE_CODE, reason)
            return
        self.on_binary_frame(data, now)

    def on_binary_frame(self, data: bytes, now: int) -> None:
        """One whole 20 ms frame of the far end's audio (for a carrier: on the wire)."""
        if self.bad_frames:
            return  # the call is being dropped
        try:
            self._on_frame(data, now)
        except OSError as exc:  # the recording could not be written: end the call cleanly
            self.error = one_line(exc)
            if self.conn is not None:
                self.conn.close(1011, "simulator error")

    def _on_frame(self, data: bytes, now: int) -> None:
        j = self.frames_received
        self.frames_received = j + 1
        last = self.last_arrival_ns
        if last is not None:
            deviation = abs(now - last - FRAME_NS)
            self.hist.jitter.record(deviation)
            self.jitter16_ns += deviation - ((self.jitter16_ns + 8) >> 4)
        self.last_arrival_ns = now
        self._match(data, now)
        start = self.playback.add(now)
        if self.listen is not None and start >= 0:
            self.listen(data if self.link is None else self.link.to_pcm(data), start)
        if self.opts.measure_pacing:
            self._pace(j, now)
        if self.recorder is not None:
            self.recorder.write(to_samples(data if self.link is None else self.link.to_pcm(data)))
        if (
            self.all_back is not None
            and self.frames_matched >= self.frames_sent
            and not self.all_back.done()
        ):
            self.all_back.set_result(None)

    def _listen(self, pcm: bytes, start_ns: int) -> None:
        if self.turns is not None:
            self.turns.heard(pcm, start_ns, self.playback.frame_ns)
        if self.timeline is not None:
            self.timeline.heard.add(start_ns, pcm)

    def _match(self, data: bytes, now: int) -> None:
        digest = hash(data)
        ring_index = self.ring_index
        if self.opts.stamp:
            top = self.frames_sent - 1
            if self.link is None:
                stamp = self.stamp_of.get(digest)
                if stamp is None:  # not one of ours as sent (or no longer cached)
                    stamp = read_stamp(data)
            else:
                stamp = self.link.read_stamp(data)
            index = top - ((top - stamp) & SEQ_MASK)
            slot = index & _RING_MASK
            if index < 0 or ring_index[slot] != index or self.ring_hash[slot] != digest:
                self.frames_not_exact += 1
                return
        else:
            # No stamp: the first identical frame at or after the next expected one.
            index = -1
            for j in range(
                self.next_expected, min(self.frames_sent, self.next_expected + _UNSTAMPED_SEARCH)
            ):
                slot = j & _RING_MASK
                if ring_index[slot] == j and self.ring_hash[slot] == digest:
                    index = j
                    break
            if index < 0:
                self.frames_not_exact += 1
                return
            self.next_expected = index + 1
            slot = index & _RING_MASK
        ring_index[slot] = -1  # a second copy of the same frame is not exact
        self.frames_matched += 1
        rtt = now - self.ring_ns[slot]
        self.rtt.record(rtt)
        if self.trend is not None:
            self.trend.add(rtt)
        if rtt > _LATE_NS[0]:
            late = self.late
            for i, limit in enumerate(_LATE_NS):
                if rtt > limit:
                    late[i] += 1
        if index < self.highest_matched:
            self.out_of_order += 1
        else:
            self.highest_matched = index

    def _pace(self, j: int, now: int) -> None:
        """Received frame ``j``'s offset from a 20 ms grid (after the first second's burst)."""
        if j < _PACING_SKIP_FRAMES:
            return
        offset = now - j * FRAME_NS
        if j == _PACING_SKIP_FRAMES:
            self.pacing_ref_ns = offset
        rel = offset - self.pacing_ref_ns
        self.hist.pacing.record(rel + _PACING_BIAS_NS)
        if len(self.pacing_first) < _PACING_WINDOW:
            self.pacing_first.append(rel)
        self.pacing_last[j % _PACING_WINDOW] = rel

    def on_text(self, text: str, now: int) -> None:
        """Bridge's text: media into the playback model (a carrier's), marks answered when
        played, clear as the carrier answers it (docs/protocol.md s.5, docs/carriers.md)."""
        conn = self.conn
        try:
            command = self.peer.read(text)
        except ValueError as exc:
            if "media payload" in str(exc):
                # The carrier would play this badly or not at all (Exotel's chunk rules).
                self.bad_frames += 1
                if conn is not None and conn.is_open:
                    conn.close(BAD_FRAME_CLOSE_CODE, str(exc)[:120])
            else:
                self.unknown_commands += 1  # docs/protocol.md s.5: send nothing else as text
                self._keep_event(text)
            return
        if command.kind == "media":
            assert self.link is not None
            for frame in self.link.split(command.payload):
                self.on_binary_frame(frame, now)
            return
        # Everything but audio is kept, as Vonage's text events are.
        self._keep_event(text)
        if conn is None:
            return
        if command.kind == "mark":
            self._answer_when_played(self.peer.mark_done(command.name), now)
            return
        self._clear(command, now)

    def _keep_event(self, text: str) -> None:
        self.text_events_total += 1
        if len(self.events) < _MAX_EVENTS_KEPT:
            self.events.append(text)

    def _clear(self, command: Command, now: int) -> None:
        """A clear: the playback buffer is emptied; queued notifies answered or dropped as the
        carrier does; what had been heard by then is noted."""
        self.playback.clear(now)
        if self.turns is not None:
            self.turns.cleared(now)
        if self.timeline is not None:
            self.timeline.heard.cut(now)
        if self.peer.marks_back_on_clear:  # Twilio, Telnyx: queued marks come back at once
            for key in sorted(self.notify_answers):
                self._send_text(self.notify_answers[key])
                self.notifies_answered += 1
        else:  # Vonage, Plivo, Exotel: their audio was not played, so they are never answered
            self.notifies_dropped += len(self.notify_timers)
        self._cancel_notifies()
        cleared = self.peer.cleared()
        if cleared is not None:
            self._send_text(cleared)

    def _answer_when_played(self, answer: str, now: int) -> None:
        """A notify (mark): answered once playback reaches it, at once if nothing is queued."""
        self.notifies += 1
        end = self.playback.end_ns
        if end <= now:
            self._send_text(answer)
            self.notifies_answered += 1
            return
        self.notify_seq += 1
        key = self.notify_seq
        loop = asyncio.get_running_loop()
        self.notify_timers[key] = loop.call_later((end - now) / SECOND, self._notify_due, key)
        self.notify_answers[key] = answer

    def _notify_due(self, key: int) -> None:
        del self.notify_timers[key]
        answer = self.notify_answers.pop(key)
        if self.conn is not None and self.conn.is_open:
            self._send_text(answer)
            self.notifies_answered += 1

    def _cancel_notifies(self) -> None:
        for timer in self.notify_timers.values():
            timer.cancel()
        self.notify_timers.clear()
        self.notify_answers.clear()

    # --- impairments -----------------------------------------------------------------

    def _impair(self, conn: SimConnection, start_ns: int) -> None:
        """A delay line on each path (an idle one where the path is not impaired, so what it
        carried is measured the same way)."""
        imp = self.opts.impaired
        stats = self.impair
        assert imp is not None and stats is not None
        seed = f"{imp.seed}:{self.index}"
        send = DelayModel(imp, seed + ":send", start_ns, imp.on_send)
        line = DelayLine(send, self._deliver_sent, stats.send)
        self.send_line = line
        self._send_binary = self._delay_binary
        self._send_text = self._delay_text
        receive = DelayModel(imp, seed + ":receive", start_ns, imp.on_receive)
        tap = _ReceiveTap(self, DelayLine(receive, _nothing, stats.receive), stats)
        tap.line.deliver = tap.deliver
        self.receive_tap = tap
        conn.on_binary = tap.on_binary  # type: ignore[method-assign]
        conn.on_text = tap.on_text  # type: ignore[method-assign]

    def _delay_binary(self, frame: bytes) -> None:
        self._delay((True, frame))

    def _delay_text(self, text: str) -> None:
        self._delay((False, text))

    def _delay(self, item: tuple[bool, Any]) -> None:
        line = self.send_line
        assert line is not None
        wake = line.push(item, self.clock.now_ns())
        if wake is not None and self.scheduler is not None:
            self.scheduler.add(line, wake)

    def _deliver_sent(self, item: tuple[bool, Any], at_ns: int) -> None:
        conn = self.conn
        if conn is None or not conn.is_open:
            return
        binary, data = item
        if self.impair is not None:
            self.impair.send.gap(self.clock.now_ns())
        if binary:
            conn.send_binary(data)
        else:
            conn.send_text(data)

    # --- the call --------------------------------------------------------------------

    async def run(self, pacer: Pacer | None = None) -> CallReport:
        opts = self.opts
        try:
            if opts.record is not None:
                self.recorder = WavWriter(opts.record, opts.rate)
            if opts.record_sent is not None:
                self.sent_recorder = WavWriter(opts.record_sent, opts.rate)
        except OSError as exc:
            self._close_recorders()
            raise ConfigError(f"cannot write recording: {exc}") from exc
        own = pacer is None
        if pacer is None:
            pacer = Pacer(
                self.clock,
                early_ns=EARLY_NS,
                on_fire=self.hist.loop_lag.record,
                loop=asyncio.get_running_loop(),
            )
        try:
            return await self._run(pacer)
        finally:
            self.closed = True  # a cancelled call leaves the scheduler at its next wake-up
            self.n_frames = 0
            for line in (self.send_line, self.receive_tap.line if self.receive_tap else None):
                if line is not None:
                    line.closed = True
            self._cancel_notifies()
            if self.conn is not None and not self.conn.lost.done():
                self.conn.abort()
            self._close_recorders()
            if own:
                pacer.close()

    def _close_recorders(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.sent_recorder is not None:
            self.sent_recorder.close()

    async def _run(self, pacer: Pacer) -> CallReport:
        opts = self.opts
        clock = self.clock
        begin = clock.now_ns()
        try:
            conn = await open_connection(opts, self, clock)
        except (OSError, TimeoutError, WebSocketException) as exc:
            return CallReport(
                url=opts.url,
                rate=opts.rate,
                connected=False,
                error=one_line(exc),
                completed=False,
                duration_s=round((clock.now_ns() - begin) / SECOND, 3),
            )
        self.conn = conn
        self._send_binary = conn.send_binary
        self._send_text = conn.send_text
        connected = clock.now_ns()
        if self.impair is not None:
            self._impair(conn, connected)
        loop = asyncio.get_running_loop()
        self.sending_done = loop.create_future()
        for message in self.peer.opening():
            self._send_text(message)
        self.start(pacer.scheduler, clock.now_ns(), pacer.poll)
        await asyncio.wait({self.sending_done, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        if conn.is_open and self.frames_matched < self.frames_sent:
            # Linger for the last echoes (not at all once every frame came back).
            self.all_back = loop.create_future()
            await asyncio.wait(
                {self.all_back, conn.lost},
                timeout=opts.linger_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        await self._drain_send_line(conn)
        stop = self.peer.stop()
        if stop is not None and conn.is_open:
            # The carrier ends the stream: bridge closes the socket (1000) on its stop.
            conn.send_text(stop)
            await asyncio.wait({conn.lost}, timeout=CLOSE_TIMEOUT_S + 1)
        conn.close(1000)  # the caller hangs up (a no-op if already closed)
        await asyncio.wait({conn.lost}, timeout=CLOSE_TIMEOUT_S + 1)
        if not conn.lost.done():
            conn.abort()
            await conn.lost
        end = clock.now_ns()
        if self.turns is not None:
            self.turns.finish(end)
        return self.report(conn, connected - begin, end - connected)

    async def _drain_send_line(self, conn: SimConnection) -> None:
        """Frames still held by an impaired send path leave before the hang-up."""
        line = self.send_line
        deadline = self.clock.now_ns() + scale_ns(_DRAIN_S)
        while line is not None and line.queue and conn.is_open:
            if self.clock.now_ns() > deadline:
                break
            await asyncio.sleep(0.005)

    # --- what it measured (bridge.sim.fields: counters by name) ----------------------

    def counter(self, name: str) -> Any:
        return getattr(self, name)

    def histogram(self, name: str) -> Histogram:
        hist: Histogram = getattr(self.hist, name)
        return hist

    @property
    def exact(self) -> bool:
        return (
            self.frames_sent > 0
            and self.frames_matched == self.frames_sent
            and self.frames_received == self.frames_sent
            and self.out_of_order == 0
            and self.bad_frames == 0
        )

    @property
    def frames_lost(self) -> int:
        # A frame that came back changed (a resampling far end) is "not exact", not lost:
        # lost counts only what never came back in any form.
        return max(0, self.frames_sent - self.frames_matched - self.frames_not_exact)

    @property
    def rfc3550_jitter_ms(self) -> float | None:
        return ms(self.jitter16_ns >> 4) if self.hist.jitter.count else None

    @property
    def client_overloaded(self) -> bool:
        return overloaded(
            ms(self.hist.lateness.percentile_ns(99)), ms(self.hist.loop_lag.percentile_ns(99))
        )

    @property
    def text_events(self) -> tuple[str, ...]:
        return tuple(self.events)

    @property
    def clears(self) -> int:
        return self.playback.clears

    @property
    def frames_cleared(self) -> int:
        return self.playback.frames_cleared

    @property
    def heard_at_clears_ms(self) -> tuple[float, ...]:
        return tuple(self.playback.heard_at_clears_ms)

    @property
    def playback_overflow_frames(self) -> int:
        return self.playback.overflow

    @property
    def playback_peak_ms(self) -> int:
        return self.playback.peak_ns // MS

    @property
    def frames_late_20ms(self) -> int:
        return self.late[0]

    @property
    def frames_late_50ms(self) -> int:
        return self.late[1]

    @property
    def frames_late_100ms(self) -> int:
        return self.late[2]

    def _pacing(self) -> dict[str, float | None]:
        pacing = self.hist.pacing
        if not pacing.count:
            return {}
        low = pacing.min_ns
        p50, p99 = pacing.percentiles_ns([50, 99])
        assert p50 is not None and p99 is not None
        seen = min(pacing.count, _PACING_WINDOW)
        first = statistics.median(self.pacing_first[:seen])
        last = statistics.median(self.pacing_last) if pacing.count >= _PACING_WINDOW else first
        return {
            "pacing_error_p50_ms": ms(p50 - low),
            "pacing_error_p99_ms": ms(p99 - low),
            "pacing_error_max_ms": ms(pacing.max_ns - low),
            "pacing_drift_ms": ms(last - first),
        }

    @property
    def pacing_error_p50_ms(self) -> float | None:
        return self._pacing().get("pacing_error_p50_ms")

    @property
    def pacing_error_p99_ms(self) -> float | None:
        return self._pacing().get("pacing_error_p99_ms")

    @property
    def pacing_error_max_ms(self) -> float | None:
        return self._pacing().get("pacing_error_max_ms")

    @property
    def pacing_drift_ms(self) -> float | None:
        return self._pacing().get("pacing_drift_ms")

    def impair_stats(self) -> ImpairStats | None:
        """The impairment figures, with the drift ones filled in."""
        stats = self.impair
        if stats is None:
            return None
        stats.frames_sent = self.frames_sent
        stats.frames_received = self.frames_received
        if self.frames_sent > 1 and self.next_k > 0:
            stats.elapsed_ns = (self.next_k - 1) * self.frame_ns
        if self.trend is not None:
            stats.rtt_drift_ns = self.trend.drift_ns()
        return stats

    def report(self, conn: SimConnection, connect_ns: int, duration_ns: int) -> CallReport:
        proto = conn.proto
        closed_by = None
        if proto.close_rcvd_then_sent is True:
            closed_by = "server"
        elif proto.close_rcvd_then_sent is False:
            closed_by = "simulator"
        code = proto.close_code
        opts = self.opts
        turns = None
        if self.turns is not None:
            turns = turn_report(opts, self.turns.stats)
        stats = self.impair_stats()
        return build(
            CallReport,
            self,
            url=opts.url,
            rate=opts.rate,
            connected=True,
            error=self.error,
            completed=self.error is None and self.bad_frames == 0 and code == 1000,
            close_code=code,
            close_reason=proto.close_reason or "",
            closed_by=closed_by,
            connect_ms=ms(connect_ns),
            duration_s=round(duration_ns / SECOND, 3),
            turns=turns,
            impairments=None if stats is None else impairment_report(opts, stats),
        )


def turn_report(opts: CallOptions, stats: Any) -> TurnReport:
    t = opts.turns
    assert t is not None
    return build(
        TurnReport,
        stats,
        turns=stats.turns,
        threshold_dbfs=t.threshold_dbfs,
        gap_ms=t.gap_ms,
        pause_ms=t.pause_ms,
        barge_in_after_ms=t.barge_in_after_ms,
        rows=tuple(stats.rows),
    )


def impairment_report(opts: CallOptions, stats: ImpairStats) -> ImpairmentReport:
    imp = opts.impaired
    assert imp is not None
    return build(
        ImpairmentReport,
        stats,
        jitter_ms=imp.jitter_ms,
        burst_ms=imp.burst_ms,
        burst_every_s=imp.burst_every_s,
        stall_ms=imp.stall_ms,
        stall_at_s=imp.stall_at_s,
        drift_ppm=imp.drift_ppm,
        paths=imp.paths,
        seed=imp.seed,
    )


def _closed_sink(_: Any) -> None:
    """Where sends go before the connection is open (nowhere)."""


def _nothing(_: Any, __: int) -> None:
    pass


async def run_call(opts: CallOptions, clock: Clock | None = None) -> CallReport:
    """Play one call against ``opts.url``; never raises for network failures (see report)."""
    prepared = Prepared.of(opts)
    call = SimulatedCall(opts, clock or MonotonicClock(), prepared)
    try:
        return await call.run()
    finally:
        prepared.source.release()  # this call's own: freed now, not when the collector
        # reaches the call's reference cycles


__all__ = [
    "BAD_FRAME_CLOSE_CODE",
    "EARLY_NS",
    "CallHistograms",
    "PathStats",
    "Prepared",
    "SimulatedCall",
    "run_call",
]
