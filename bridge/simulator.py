"""Vonage's side of a call, played faithfully over a real websocket; and a load generator.

One call (protocol.md s.1-5): connect, send ``websocket:connected``, then exact 20 ms binary
frames on a drift-free schedule (frame ``k`` leaves at ``start + k * 20 ms`` on a monotonic
clock; a late sender sends every overdue frame at once instead of sliding the grid, so a stall
shows up as lateness, never as drift), DTMF events interleaved, and a normal close (1000) after
the audio plus a short linger, like a caller hanging up.

The receiving side behaves like Vonage: a binary frame that is not exactly one 20 ms frame is
counted and ends the call (Vonage drops the socket; we close with 1002 and Vonage's wording so
the far end sees why); received audio goes into a model of Vonage's playback buffer, played at
real time, so ``clear`` (answered by ``websocket:cleared``) and ``notify`` (answered when
playback reaches it) behave as on a real call.

Round trips are measured per frame without any help from the far end: the 16-bit frame number
is stamped into the least significant bits of the first 16 samples (-90 dB, inaudible), read
back from echoed frames and checked against what was sent with that number. Everything kept
per call is bounded however long the call runs: histograms (``bridge.stats``) instead of sample
lists, a fixed ring of recent send times, recordings streamed to disk.

Import rule: this module and ``server`` are the only ones that import ``websockets``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Coroutine, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bridge.audio.pcm import Samples, to_bytes, to_samples, tone
from bridge.audio.resample import resample_whole
from bridge.audio.wav import WavWriter, read_wav
from bridge.errors import ConfigError
from bridge.pacing import FRAME_NS, MS, Clock, MonotonicClock
from bridge.protocol.vonage import (
    DTMF_DIGITS,
    SUPPORTED_RATES,
    build_cleared_event,
    build_connected,
    build_dtmf_event,
    build_notify_event,
    frame_bytes,
    frame_samples,
    parse_command,
)
from bridge.stats import Histogram

T = TypeVar("T")

S = 1_000_000_000
DTMF_SPACING_NS = 300 * MS
#: Close code for a wrong-sized binary frame. Real Vonage drops the socket (the far end sees
#: 1006, protocol.md s.4); a clean 1002 "protocol error" with Vonage's message is easier to
#: diagnose and to assert on, and still ends the call at once.
BAD_FRAME_CLOSE_CODE = 1002
#: Vonage's playback buffer in current docs: 3072 frames, about 60 s (protocol.md s.4).
PLAYBACK_BUFFER_FRAMES = 3072
#: Sender lateness p99 above this means the client could not keep its own schedule, so the
#: latency it measured includes its own queueing.
OVERLOAD_LATENESS_MS = 2.0
#: Recent sent frames kept for matching echoes: 512 frames, 10.24 s (a power of two).
_RING = 512
_RING_MASK = _RING - 1
#: Without stamps, an echo is searched for this many frames past the next expected one.
_UNSTAMPED_SEARCH = 50
_MAX_EVENTS_KEPT = 1000
_STAMP_SAMPLES = 16
_SEQ_MASK = 0xFFFF


def _scale_ns(seconds: float) -> int:
    """Seconds from the CLI or config to integer ns, once, at the boundary."""
    return round(seconds * S)


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class CallOptions:
    """One simulated call. Invalid values raise ``ConfigError`` on construction."""

    url: str
    rate: int = 16000
    seconds: float = 5.0
    headers: Mapping[str, Any] = field(default_factory=dict)
    wav: Path | str | None = None
    tone_hz: float | None = None
    dtmf: str = ""
    dtmf_at_s: float = 1.0
    linger_s: float = 0.5
    stamp: bool = True
    record: Path | str | None = None
    record_sent: Path | str | None = None
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rate not in SUPPORTED_RATES:
            rates = ", ".join(map(str, SUPPORTED_RATES))
            raise ConfigError(f"rate must be one of {rates}, got {self.rate}")
        if not self.seconds > 0 or not math.isfinite(self.seconds):
            raise ConfigError(f"seconds must be positive, got {self.seconds}")
        bad = [d for d in self.dtmf if d not in DTMF_DIGITS]
        if bad:
            raise ConfigError(f"DTMF digits must be 0-9, * or #, got {bad[0]!r}")
        if self.dtmf_at_s < 0 or self.linger_s < 0:
            raise ConfigError("dtmf-at and linger must be >= 0")
        if not self.connect_timeout_s > 0:
            raise ConfigError("connect timeout must be positive")
        if self.wav is not None and self.tone_hz is not None:
            raise ConfigError("give either a WAV file or a tone, not both")
        if self.tone_hz is not None and not 0 < self.tone_hz < self.rate / 2:
            raise ConfigError(f"tone must be between 0 and {self.rate // 2} Hz")
        if self.wav is not None and not Path(self.wav).is_file():
            raise ConfigError(f"WAV file not found: {self.wav}")
        for path in (self.record, self.record_sent):
            if path is not None and not Path(path).resolve().parent.is_dir():
                raise ConfigError(f"no directory for the recording: {path}")

    @property
    def n_frames(self) -> int:
        return max(1, round(self.seconds * 1000 / 20))


# --- audio source and stamps -----------------------------------------------------------


class _Source:
    """Frame ``k`` of the call's audio, made on demand: a long call holds one file at most."""

    def __init__(self, opts: CallOptions) -> None:
        self.n = frame_samples(opts.rate)
        self.rate = opts.rate
        self.tone_hz = opts.tone_hz
        self.silence = bytes(frame_bytes(opts.rate))
        self.data: Samples | None = None
        if opts.wav is not None:
            try:
                samples, file_rate = read_wav(opts.wav)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read WAV file: {exc}") from exc
            if file_rate != opts.rate and len(samples):
                samples = resample_whole(samples, file_rate, opts.rate)
            if len(samples):
                self.data = samples

    def frame(self, k: int) -> bytes:
        if self.data is not None:
            # Looped: frame k starts at sample k*n of an endless repeat of the file.
            data = self.data
            start = (k * self.n) % len(data)
            if start + self.n <= len(data):
                return to_bytes(data[start : start + self.n])
            return to_bytes(np.take(data, np.arange(start, start + self.n), mode="wrap"))
        if self.tone_hz is not None:
            return to_bytes(tone(self.tone_hz, self.rate, self.n, start_sample=k * self.n))
        return self.silence


def stamp_frame(frame: bytes, seq: int) -> bytes:
    """Write ``seq`` (16 bits) into the LSB of the first 16 samples (bit i in sample i).

    Little-endian PCM puts each sample's LSB in bit 0 of its even byte, so this touches
    16 bytes and changes no sample by more than 1 (-90 dBFS).
    """
    out = bytearray(frame)
    low = out[0 : 2 * _STAMP_SAMPLES : 2]
    out[0 : 2 * _STAMP_SAMPLES : 2] = bytes(
        (b & 0xFE) | ((seq >> i) & 1) for i, b in enumerate(low)
    )
    return bytes(out)


def read_stamp(frame: bytes) -> int:
    """The 16-bit number :func:`stamp_frame` wrote (garbage for an unstamped frame)."""
    seq = 0
    for i, b in enumerate(frame[0 : 2 * _STAMP_SAMPLES : 2]):
        seq |= (b & 1) << i
    return seq


# --- reports ---------------------------------------------------------------------------


def _ms(value_ns: float | None) -> float | None:
    return None if value_ns is None else round(value_ns / MS, 3)


@dataclass(frozen=True)
class CallReport:
    """What one call measured. Times in ms unless the name says otherwise."""

    url: str
    rate: int
    connected: bool
    error: str | None
    completed: bool
    frames_sent: int = 0
    frames_received: int = 0
    bad_frames: int = 0
    exact: bool = False
    frames_matched: int = 0
    frames_lost: int = 0
    frames_not_exact: int = 0
    out_of_order: int = 0
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None
    rtt_max_ms: float | None = None
    jitter_p50_ms: float | None = None
    jitter_p99_ms: float | None = None
    jitter_max_ms: float | None = None
    rfc3550_jitter_ms: float | None = None
    lateness_p99_ms: float | None = None
    lateness_max_ms: float | None = None
    client_overloaded: bool = False
    dtmf_sent: int = 0
    text_events: tuple[str, ...] = ()
    text_events_total: int = 0
    clears: int = 0
    notifies: int = 0
    notifies_answered: int = 0
    notifies_dropped: int = 0
    unknown_commands: int = 0
    frames_cleared: int = 0
    playback_overflow_frames: int = 0
    playback_peak_ms: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None
    connect_ms: float | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["text_events"] = list(self.text_events)
        return out


@dataclass(frozen=True)
class LoadReport:
    """N concurrent calls, aggregated. Percentiles merge every call's histogram."""

    url: str
    calls: int
    calls_connected: int
    calls_ok: int
    calls_failed: int
    calls_exact: int
    frames_sent: int
    frames_received: int
    frames_lost: int
    bad_frames: int
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    rtt_max_ms: float | None
    jitter_p99_ms: float | None
    worst_call_jitter_p99_ms: float | None
    lateness_p99_ms: float | None
    lateness_max_ms: float | None
    client_overloaded: bool
    close_codes: Mapping[str, int]
    errors: Mapping[str, int]
    ramp_s: float
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["close_codes"] = dict(self.close_codes)
        out["errors"] = dict(self.errors)
        return out


@dataclass
class _Histograms:
    rtt: Histogram = field(default_factory=Histogram)
    jitter: Histogram = field(default_factory=Histogram)
    lateness: Histogram = field(default_factory=Histogram)


# --- one call --------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Call:
    """One call's state; the sender and receiver tasks share it (one event loop, no locks)."""

    def __init__(self, opts: CallOptions, clock: Clock, source: _Source | None = None) -> None:
        self.opts = opts
        self.clock = clock
        self.frame_bytes = frame_bytes(opts.rate)
        self.hist = _Histograms()
        self.source = _Source(opts) if source is None else source
        self.frames_sent = 0
        self.frames_received = 0
        self.bad_frames = 0
        self.frames_matched = 0
        self.frames_not_exact = 0
        self.out_of_order = 0
        self.highest_matched = -1
        self.next_expected = 0
        self.last_arrival_ns: int | None = None
        self.jitter16_ns = 0  # RFC 3550 A.8: the estimate scaled by 16, integer arithmetic
        # Ring of recent sent frames, slot = index & mask: who is there, when it left, a hash
        # of its bytes (a 64-bit hash is the identity check; keeping 10 s of bytes per call
        # would cost hundreds of MB in a load test).
        self.ring_index = [-1] * _RING
        self.ring_ns = [0] * _RING
        self.ring_hash = [0] * _RING
        self.dtmf_sent = 0
        self.events: list[str] = []
        self.text_events_total = 0
        self.clears = 0
        self.notifies = 0
        self.notifies_answered = 0
        self.notifies_dropped = 0
        self.unknown_commands = 0
        self.play_end_ns = 0
        self.frames_cleared = 0
        self.playback_overflow = 0
        self.playback_peak_ns = 0
        self.notify_tasks: set[asyncio.Task[None]] = set()
        self.recorder: WavWriter | None = None
        self.sent_recorder: WavWriter | None = None
        self.error: str | None = None

    # sending ---------------------------------------------------------------------------

    async def _wait_until(self, deadline_ns: int) -> int:
        """Sleep to an absolute deadline (never "one frame"), return the time on waking."""
        now = self.clock.now_ns()
        if deadline_ns > now:
            await asyncio.sleep((deadline_ns - now) / S)
            now = self.clock.now_ns()
        return now

    async def _send(self, ws: ClientConnection, start_ns: int) -> None:
        opts = self.opts
        dtmf_at = start_ns + _scale_ns(opts.dtmf_at_s)
        dtmf = [(dtmf_at + i * DTMF_SPACING_NS, d) for i, d in enumerate(opts.dtmf)]
        dtmf.reverse()  # pop() from the end in time order
        lateness = self.hist.lateness
        source = self.source
        stamp = opts.stamp
        for k in range(opts.n_frames):
            deadline = start_ns + k * FRAME_NS
            while dtmf and dtmf[-1][0] <= deadline:
                due, digit = dtmf.pop()
                await self._wait_until(due)
                await ws.send(build_dtmf_event(digit))
                self.dtmf_sent += 1
            now = await self._wait_until(deadline)
            frame = source.frame(k)
            if stamp:
                frame = stamp_frame(frame, k & _SEQ_MASK)
            lateness.record(now - deadline)
            slot = k & _RING_MASK
            self.ring_index[slot] = k
            self.ring_ns[slot] = now
            self.ring_hash[slot] = hash(frame)
            await ws.send(frame)
            self.frames_sent += 1
            if self.sent_recorder is not None:
                self.sent_recorder.write(to_samples(frame))
        # DTMF due after the audio still goes out at its time (the call lasts that long).
        while dtmf:
            due, digit = dtmf.pop()
            await self._wait_until(due)
            await ws.send(build_dtmf_event(digit))
            self.dtmf_sent += 1

    # receiving -------------------------------------------------------------------------

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                now = self.clock.now_ns()
                if isinstance(message, str):
                    await self._on_text(ws, message, now)
                elif len(message) != self.frame_bytes:
                    # protocol.md s.4: Vonage stops listening and drops the call.
                    self.bad_frames += 1
                    reason = (
                        f"unexpected frame size {len(message)}, when required {self.frame_bytes}"
                    )
                    await ws.close(BAD_FRAME_CLOSE_CODE, reason)
                    return
                else:
                    self._on_frame(message, now)
        except ConnectionClosed:
            return
        except OSError as exc:  # the recording could not be written: end the call cleanly
            self.error = _one_line(exc)
            await ws.close(1011, "simulator error")

    def _on_frame(self, data: bytes, now: int) -> None:
        self.frames_received += 1
        last = self.last_arrival_ns
        if last is not None:
            deviation = abs(now - last - FRAME_NS)
            self.hist.jitter.record(deviation)
            self.jitter16_ns += deviation - ((self.jitter16_ns + 8) >> 4)
        self.last_arrival_ns = now
        self._match(data, now)
        self._play(now)
        if self.recorder is not None:
            self.recorder.write(to_samples(data))

    def _match(self, data: bytes, now: int) -> None:
        digest = hash(data)
        ring_index = self.ring_index
        if self.opts.stamp:
            top = self.frames_sent - 1
            index = top - ((top - read_stamp(data)) & _SEQ_MASK)
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
        self.hist.rtt.record(now - self.ring_ns[slot])
        if index < self.highest_matched:
            self.out_of_order += 1
        else:
            self.highest_matched = index

    def _play(self, now: int) -> None:
        """Vonage's playback buffer: frames play back to back from when playback (re)starts."""
        self.play_end_ns = max(self.play_end_ns, now)
        if self.play_end_ns - now >= PLAYBACK_BUFFER_FRAMES * FRAME_NS:
            self.playback_overflow += 1  # past the buffer: undocumented, assume dropped
            return
        self.play_end_ns += FRAME_NS
        self.playback_peak_ns = max(self.playback_peak_ns, self.play_end_ns - now)

    async def _on_text(self, ws: ClientConnection, text: str, now: int) -> None:
        self.text_events_total += 1
        if len(self.events) < _MAX_EVENTS_KEPT:
            self.events.append(text)
        try:
            command = parse_command(text)
        except ValueError:
            self.unknown_commands += 1  # protocol.md s.5: send nothing else as text
            return
        if command.action == "clear":
            self.clears += 1
            if self.play_end_ns > now:
                self.frames_cleared += -(-(self.play_end_ns - now) // FRAME_NS)
            self.play_end_ns = now
            # protocol.md s.5: after a clear, a pending notify may never come.
            for task in list(self.notify_tasks):
                task.cancel()
                self.notifies_dropped += 1
            await ws.send(build_cleared_event())
            return
        self.notifies += 1
        if self.play_end_ns <= now:
            await ws.send(build_notify_event(command.payload))
            self.notifies_answered += 1
            return
        task = asyncio.create_task(self._notify_at(ws, self.play_end_ns, command.payload))
        self.notify_tasks.add(task)
        task.add_done_callback(self.notify_tasks.discard)

    async def _notify_at(self, ws: ClientConnection, due_ns: int, payload: Any) -> None:
        await self._wait_until(due_ns)
        try:
            await ws.send(build_notify_event(payload))
        except ConnectionClosed:
            return
        self.notifies_answered += 1

    # the call --------------------------------------------------------------------------

    async def run(self) -> CallReport:
        opts = self.opts
        try:
            if opts.record is not None:
                self.recorder = WavWriter(opts.record, opts.rate)
            if opts.record_sent is not None:
                self.sent_recorder = WavWriter(opts.record_sent, opts.rate)
        except OSError as exc:
            self._close_recorders()
            raise ConfigError(f"cannot write recording: {exc}") from exc
        try:
            return await self._run()
        finally:
            for task in list(self.notify_tasks):
                task.cancel()
            self._close_recorders()

    def _close_recorders(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.sent_recorder is not None:
            self.sent_recorder.close()

    async def _run(self) -> CallReport:
        opts = self.opts
        clock = self.clock
        begin = clock.now_ns()
        try:
            ws = await connect(
                opts.url,
                compression=None,  # lessons.md: deflate costs CPU and buys nothing on PCM
                max_size=4 * 1024 * 1024,
                open_timeout=opts.connect_timeout_s,
                ping_interval=None,  # protocol.md s.6: Vonage sends no keepalive
                close_timeout=5,
                proxy=None,
                user_agent_header=None,  # protocol.md s.1: no User-Agent can be relied on
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            return CallReport(
                url=opts.url,
                rate=opts.rate,
                connected=False,
                error=_one_line(exc),
                completed=False,
                duration_s=round((clock.now_ns() - begin) / S, 3),
            )
        connected = clock.now_ns()
        receiver = asyncio.create_task(self._receive(ws))
        try:
            try:
                await ws.send(build_connected(opts.rate, opts.headers))
                await self._send(ws, clock.now_ns())
            except ConnectionClosed:
                pass  # the far end hung up, or we closed on a bad frame: the call is over
            else:
                await asyncio.wait({receiver}, timeout=opts.linger_s)
            await ws.close(1000)  # the caller hangs up (a no-op if already closed)
            await receiver
        finally:
            if not receiver.done():
                receiver.cancel()
            await ws.close()
        return self._report(ws, connected - begin, clock.now_ns() - connected)

    def _report(self, ws: ClientConnection, connect_ns: int, duration_ns: int) -> CallReport:
        hist = self.hist
        rtt50, rtt99 = hist.rtt.percentiles_ns([50, 99])
        jit50, jit99 = hist.jitter.percentiles_ns([50, 99])
        (late99,) = hist.lateness.percentiles_ns([99])
        close = ws.close_exc
        closed_by = None
        if close.rcvd_then_sent is True:
            closed_by = "server"
        elif close.rcvd_then_sent is False:
            closed_by = "simulator"
        code = ws.close_code
        exact = (
            self.frames_sent > 0
            and self.frames_matched == self.frames_sent
            and self.frames_received == self.frames_sent
            and self.out_of_order == 0
            and self.bad_frames == 0
        )
        late99_ms = _ms(late99)
        return CallReport(
            url=self.opts.url,
            rate=self.opts.rate,
            connected=True,
            error=self.error,
            completed=self.error is None and self.bad_frames == 0 and code == 1000,
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            bad_frames=self.bad_frames,
            exact=exact,
            frames_matched=self.frames_matched,
            frames_lost=self.frames_sent - self.frames_matched,
            frames_not_exact=self.frames_not_exact,
            out_of_order=self.out_of_order,
            rtt_p50_ms=_ms(rtt50),
            rtt_p99_ms=_ms(rtt99),
            rtt_max_ms=_ms(hist.rtt.max_ns) if hist.rtt.count else None,
            jitter_p50_ms=_ms(jit50),
            jitter_p99_ms=_ms(jit99),
            jitter_max_ms=_ms(hist.jitter.max_ns) if hist.jitter.count else None,
            rfc3550_jitter_ms=_ms(self.jitter16_ns >> 4) if hist.jitter.count else None,
            lateness_p99_ms=late99_ms,
            lateness_max_ms=_ms(hist.lateness.max_ns) if hist.lateness.count else None,
            client_overloaded=late99_ms is not None and late99_ms > OVERLOAD_LATENESS_MS,
            dtmf_sent=self.dtmf_sent,
            text_events=tuple(self.events),
            text_events_total=self.text_events_total,
            clears=self.clears,
            notifies=self.notifies,
            notifies_answered=self.notifies_answered,
            notifies_dropped=self.notifies_dropped,
            unknown_commands=self.unknown_commands,
            frames_cleared=self.frames_cleared,
            playback_overflow_frames=self.playback_overflow,
            playback_peak_ms=self.playback_peak_ns // MS,
            close_code=code,
            close_reason=ws.close_reason or "",
            closed_by=closed_by,
            connect_ms=_ms(connect_ns),
            duration_s=round(duration_ns / S, 3),
        )


async def run_call(opts: CallOptions, clock: Clock | None = None) -> CallReport:
    """Play one call against ``opts.url``; never raises for network failures (see report)."""
    call = _Call(opts, clock or MonotonicClock())
    return await call.run()


# --- load ------------------------------------------------------------------------------


def _suffixed(path: Path | str | None, i: int) -> Path | None:
    """One recording per call in a load test: ``out.wav`` -> ``out-0007.wav``."""
    if path is None:
        return None
    p = Path(path)
    return p.with_name(f"{p.stem}-{i:04d}{p.suffix}")


async def run_load(opts: CallOptions, calls: int, ramp_s: float | None = None) -> LoadReport:
    """``calls`` concurrent calls in this event loop, started evenly over ``ramp_s``."""
    if calls < 1:
        raise ConfigError(f"calls must be >= 1, got {calls}")
    ramp = min(1.0, calls * 0.02) if ramp_s is None else ramp_s
    if ramp < 0 or not math.isfinite(ramp):
        raise ConfigError(f"ramp must be >= 0, got {ramp}")
    clock = MonotonicClock()
    begin = clock.now_ns()
    ramp_ns = _scale_ns(ramp)
    source = _Source(opts)  # read (and resample) a WAV once, not once per call

    async def one(i: int) -> tuple[CallReport, _Histograms]:
        call_opts = opts
        if opts.record is not None or opts.record_sent is not None:
            call_opts = _replace_records(opts, i)
        call = _Call(call_opts, clock, source)
        start = begin + ramp_ns * i // calls
        now = clock.now_ns()
        if start > now:
            await asyncio.sleep((start - now) / S)
        return await call.run(), call.hist

    results = await asyncio.gather(*(one(i) for i in range(calls)))
    rtt, jitter, lateness = Histogram(), Histogram(), Histogram()
    close_codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    worst_jitter: float | None = None
    for report, hist in results:
        rtt.merge(hist.rtt)
        jitter.merge(hist.jitter)
        lateness.merge(hist.lateness)
        key = str(report.close_code)
        close_codes[key] = close_codes.get(key, 0) + 1
        if report.error is not None and (report.error in errors or len(errors) < 20):
            errors[report.error] = errors.get(report.error, 0) + 1
        if report.jitter_p99_ms is not None:
            worst_jitter = max(worst_jitter or 0.0, report.jitter_p99_ms)
    reports = [r for r, _ in results]
    rtt50, rtt99 = rtt.percentiles_ns([50, 99])
    late99 = _ms(lateness.percentile_ns(99))
    ok = sum(r.completed for r in reports)
    return LoadReport(
        url=opts.url,
        calls=calls,
        calls_connected=sum(r.connected for r in reports),
        calls_ok=ok,
        calls_failed=calls - ok,
        calls_exact=sum(r.exact for r in reports),
        frames_sent=sum(r.frames_sent for r in reports),
        frames_received=sum(r.frames_received for r in reports),
        frames_lost=sum(r.frames_lost for r in reports),
        bad_frames=sum(r.bad_frames for r in reports),
        rtt_p50_ms=_ms(rtt50),
        rtt_p99_ms=_ms(rtt99),
        rtt_max_ms=_ms(rtt.max_ns) if rtt.count else None,
        jitter_p99_ms=_ms(jitter.percentile_ns(99)),
        worst_call_jitter_p99_ms=worst_jitter,
        lateness_p99_ms=late99,
        lateness_max_ms=_ms(lateness.max_ns) if lateness.count else None,
        client_overloaded=late99 is not None and late99 > OVERLOAD_LATENESS_MS,
        close_codes=close_codes,
        errors=errors,
        ramp_s=ramp,
        duration_s=round((clock.now_ns() - begin) / S, 3),
    )


def _replace_records(opts: CallOptions, i: int) -> CallOptions:
    return replace(
        opts, record=_suffixed(opts.record, i), record_sent=_suffixed(opts.record_sent, i)
    )


# --- text reports ----------------------------------------------------------------------


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _overload_line(late99: float | None) -> list[str]:
    if late99 is None or late99 <= OVERLOAD_LATENESS_MS:
        return []
    return [
        f"WARNING: client overloaded (sender lateness p99 {late99:.2f} ms > "
        f"{OVERLOAD_LATENESS_MS:g} ms): its latency figures are not trustworthy"
    ]


def format_call_report(r: CallReport) -> str:
    """A short human-readable summary of one call."""
    if not r.connected:
        return f"call {r.url}: could not connect: {r.error}"
    lines = [
        f"call {r.url}  rate {r.rate}  connected in {_f(r.connect_ms)} ms  "
        f"lasted {r.duration_s:.2f} s",
        f"frames     sent {r.frames_sent}  received {r.frames_received}  "
        f"matched {r.frames_matched}  lost {r.frames_lost}  not exact {r.frames_not_exact}  "
        f"out of order {r.out_of_order}  bad size {r.bad_frames}",
        f"exact      {'yes' if r.exact else 'no'}",
        f"round trip p50 {_f(r.rtt_p50_ms)}  p99 {_f(r.rtt_p99_ms)}  max {_f(r.rtt_max_ms)} ms",
        f"jitter     p50 {_f(r.jitter_p50_ms)}  p99 {_f(r.jitter_p99_ms)}  "
        f"max {_f(r.jitter_max_ms)} ms  (RFC 3550 {_f(r.rfc3550_jitter_ms)} ms)",
        f"lateness   p99 {_f(r.lateness_p99_ms)}  max {_f(r.lateness_max_ms)} ms",
        f"events     dtmf sent {r.dtmf_sent}; received {r.text_events_total} text: "
        f"clear {r.clears}, notify {r.notifies} (answered {r.notifies_answered}, "
        f"dropped {r.notifies_dropped}), unknown {r.unknown_commands}",
        f"playback   peak {r.playback_peak_ms} ms  cleared {r.frames_cleared} frames  "
        f"overflow {r.playback_overflow_frames} frames",
        f"close      {r.close_code} {r.close_reason!r} by {r.closed_by or 'nobody (dropped)'}"
        + (f"  error: {r.error}" if r.error else ""),
    ]
    return "\n".join(lines + _overload_line(r.lateness_p99_ms))


def format_load_report(r: LoadReport) -> str:
    """A short human-readable summary of a load run."""
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(r.close_codes.items())) or "-"
    lines = [
        f"load {r.url}  {r.calls} calls over {r.ramp_s:.2f} s ramp, lasted {r.duration_s:.2f} s",
        f"calls      connected {r.calls_connected}  ok {r.calls_ok}  failed {r.calls_failed}  "
        f"exact {r.calls_exact}",
        f"frames     sent {r.frames_sent}  received {r.frames_received}  lost {r.frames_lost}  "
        f"bad size {r.bad_frames}",
        f"round trip p50 {_f(r.rtt_p50_ms)}  p99 {_f(r.rtt_p99_ms)}  max {_f(r.rtt_max_ms)} ms",
        f"jitter     p99 {_f(r.jitter_p99_ms)} ms  worst call p99 "
        f"{_f(r.worst_call_jitter_p99_ms)} ms",
        f"lateness   p99 {_f(r.lateness_p99_ms)}  max {_f(r.lateness_max_ms)} ms",
        f"close      {codes}",
    ]
    lines += [f"error      {n} x {e}" for e, n in r.errors.items()]
    return "\n".join(lines + _overload_line(r.lateness_p99_ms))


# --- CLI -------------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed: the client's own overhead skews its latencies."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _add_call_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CallOptions("ws://x")
    parser.add_argument("url", help="websocket URL of the bridge, e.g. ws://127.0.0.1:8080/socket")
    parser.add_argument("--rate", type=int, default=defaults.rate, help="8000, 16000 or 24000")
    parser.add_argument(
        "--seconds",
        type=float,
        default=defaults.seconds,
        help="seconds of audio to send (default %(default)s)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key of the first message, like an NCCO endpoint header (repeatable)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wav", help="send this WAV file (converted to --rate, looped)")
    source.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone")
    parser.add_argument(
        "--dtmf", default="", metavar="DIGITS", help="send these DTMF digits, 300 ms apart"
    )
    parser.add_argument(
        "--dtmf-at",
        type=float,
        default=defaults.dtmf_at_s,
        metavar="SECONDS",
        help="when the first DTMF digit is sent (default %(default)s)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=defaults.linger_s,
        metavar="SECONDS",
        help="wait this long for the last echoes before hanging up",
    )
    parser.add_argument(
        "--no-stamp",
        action="store_true",
        help="send the source unchanged (no frame numbers in the LSBs)",
    )
    parser.add_argument("--record", metavar="OUT.wav", help="write the audio that came back")
    parser.add_argument("--record-sent", metavar="OUT.wav", help="write the audio sent")
    parser.add_argument(
        "--connect-timeout", type=float, default=defaults.connect_timeout_s, metavar="SECONDS"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--header needs KEY=VALUE, got {item!r}")
        headers[key] = value
    return headers


def options_from_args(args: argparse.Namespace) -> CallOptions:
    """Build :class:`CallOptions` from parsed arguments; bad values raise ``ConfigError``."""
    return CallOptions(
        url=args.url,
        rate=args.rate,
        seconds=args.seconds,
        headers=_parse_headers(args.header),
        wav=args.wav,
        tone_hz=args.tone,
        dtmf=args.dtmf,
        dtmf_at_s=args.dtmf_at,
        linger_s=args.linger,
        stamp=not args.no_stamp,
        record=args.record,
        record_sent=args.record_sent,
        connect_timeout_s=args.connect_timeout,
    )


def _cli_call(args: argparse.Namespace) -> int:
    report = _run(run_call(options_from_args(args)))
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_call_report(report))
    return 0 if report.completed else 1


def _cli_load(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if args.calls < 1:
        raise ConfigError(f"--calls must be >= 1, got {args.calls}")
    report = _run(run_load(opts, args.calls, args.ramp))
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_load_report(report))
    return 0 if report.calls_failed == 0 else 1


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``call URL`` and ``load URL --calls N``; each sets ``func(args) -> int``."""
    call = subparsers.add_parser(
        "call",
        help="play one Vonage call against a bridge and report",
        description="Connect like Vonage, send paced 20 ms frames, measure what comes back.",
    )
    _add_call_arguments(call)
    call.set_defaults(func=_cli_call)
    load = subparsers.add_parser(
        "load",
        help="play N concurrent Vonage calls and report aggregates",
        description="N simulated calls in one event loop, started evenly over --ramp.",
    )
    _add_call_arguments(load)
    load.add_argument("--calls", type=int, required=True, metavar="N")
    load.add_argument(
        "--ramp",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start the calls evenly over this long (default min(1, N*0.02))",
    )
    load.set_defaults(func=_cli_load)
