"""Vonage's side of a call, played faithfully over a real websocket; and a load generator.

One call (docs/protocol.md s.1-5): connect, send ``websocket:connected``, then exact 20 ms binary
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
back from echoed frames and checked against what was sent with that number, so echoes match
even when the far end drops or reorders frames. Everything kept per call is bounded however
long the call runs: histograms (``bridge.stats``) instead of sample lists, a fixed ring of
recent send times, recordings streamed to disk.

As a load generator it must stay cheaper than the servers it measures, so the per-frame path
has no task, future, queue or sleep: each call is a client of bridge's connection layer
(``bridge.transport.client``: websockets' sans-I/O ``ClientProtocol`` for the handshake and
control frames, data frames framed by hand), received messages are handled synchronously in
the read, and one sender per process (:class:`_Ticker`, one timer and a heap) sends every
call's due frames. Per-call state the garbage collector would
walk is kept in typed arrays, and a load process freezes its imports out of the collector's
way: a full collection used to stall every sender for 10-20 ms. ``run_load(..., procs=N)``
spreads calls over N processes, each with its own uvloop loop, and merges their histograms.
The generator reports its own health: when its send lateness p99 exceeds 2 ms it says so, and
its figures are not to be trusted. About 30 us of CPU per frame sent and echoed, over half of
it the kernel's socket calls.

Other carriers (``--carrier twilio|telnyx|plivo|exotel``): the same paced sender and matcher,
with the carrier's side of the protocol played by ``bridge.carrier_peer`` (messages, wire
encoding, stamps in the wire samples, answers to marks and clears); the hooks here are the
``link`` calls.

Import rule: ``bridge.audio``, ``bridge.carrier_peer``, ``bridge.errors``, ``bridge.pacing``,
``bridge.protocol``, ``bridge.runtime``, ``bridge.settings``, ``bridge.stats``,
``bridge.transport``, ``bridge.units``; it uses websockets' URI parser and exceptions, the
connection layer does the rest (docs/architecture.md s.2).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import multiprocessing
import sys
import time
from array import array
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import WebSocketException
from websockets.uri import WebSocketURI, parse_uri

from bridge.audio.pcm import Samples, to_bytes, to_samples, tone
from bridge.audio.resample import resample_whole
from bridge.audio.wav import WavWriter, read_wav
from bridge.carrier_peer import CarrierLink, PeerOptions
from bridge.errors import BridgeError, ConfigError
from bridge.pacing import Clock, MonotonicClock
from bridge.protocol.carrier import CARRIER_NAMES
from bridge.protocol.twilio import twilio_signature
from bridge.protocol.vonage import (
    DTMF_DIGITS,
    PLAYBACK_BUFFER_FRAMES,
    build_cleared_event,
    build_connected,
    build_dtmf_event,
    build_notify_event,
    parse_command,
)
from bridge.runtime import freeze_startup_heap, run
from bridge.settings import parse_pairs
from bridge.stats import Histogram
from bridge.transport.client import ClientConnection, Receiver, ssl_context
from bridge.units import FRAME_NS, MS, SUPPORTED_RATES, frame_bytes, frame_samples
from bridge.units import SECOND as S

DTMF_SPACING_NS = 300 * MS
#: ``bridge call --carrier``'s default rate: the one every carrier supports.
CARRIER_RATE = 8000
#: Close code for a wrong-sized binary frame. Real Vonage drops the socket (the far end sees
#: 1006, docs/protocol.md s.4); a clean 1002 "protocol error" with Vonage's message is easier to
#: diagnose and to assert on, and still ends the call at once.
BAD_FRAME_CLOSE_CODE = 1002
#: Sender lateness p99 (or event loop lag p99) above this means the client could not keep its
#: own schedule, or read what came back in time, so its latencies include its own queueing.
OVERLOAD_LATENESS_MS = 2.0
#: Round trips over these count as late frames (20, 50, 100 ms).
LATE_MS = (20, 50, 100)
_LATE_NS = tuple(ms * MS for ms in LATE_MS)
#: How long the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT_S = 5.0
#: The sender serves every call due within this of now in one wake-up (see _Ticker): it
#: sends in 1 ms ticks, a frame up to 1 ms before its deadline, never after it by design.
_EARLY_NS = MS
_NEVER = 1 << 62
#: Recent sent frames kept for matching echoes: 512 frames, 10.24 s (a power of two).
_RING = 512
_RING_MASK = _RING - 1
#: Without stamps, an echo is searched for this many frames past the next expected one.
_UNSTAMPED_SEARCH = 50
_MAX_EVENTS_KEPT = 1000
_MAX_ERRORS_KEPT = 20
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_STAMP_SAMPLES = 16
#: Stamped frames kept per process (see _Source.stamped): 1024 frames, 20 s of a ramp.
_STAMP_CACHE = 1024
_STAMP_CACHE_MASK = _STAMP_CACHE - 1
_SEQ_MASK = 0xFFFF
#: Pacing is measured from the second second on: a sender with a lead (bridge sends up to
#: 100 ms ahead) bursts at the start, which is by design, not a pacing error.
_PACING_SKIP_FRAMES = 50
#: Drift compares the mean offset of the first and the last this many frames.
_PACING_WINDOW = 50
#: Offsets are recorded relative to the first measured frame, plus this to keep them
#: non-negative (that frame may itself have been up to this late).
_PACING_BIAS_NS = 50 * MS
#: Load processes must be up (imports done) within this; they all start together after it.
_PROC_START_TIMEOUT_S = 60.0
_PROC_START_MARGIN_NS = 100 * MS


class LoadProcessError(BridgeError):
    """A load process failed to start, died, or did not finish in time."""


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
    #: Measure how evenly the far end's audio arrives (for servers that play, not echo).
    measure_pacing: bool = False
    #: HTTP headers on the upgrade request (e.g. ``Authorization``), unlike ``headers``.
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    #: For ``wss://``: trust this CA bundle (PEM) instead of the system's; or verify nothing.
    ca_file: Path | str | None = None
    insecure: bool = False
    #: Play this carrier's side instead of Vonage's (``bridge.carrier_peer``): its messages,
    #: encoding and answers; ``headers`` become its custom parameters.
    carrier: str = "vonage"
    #: The carrier's wire encoding (default: its own; see ``bridge.carrier_peer.ENCODINGS``).
    encoding: str | None = None
    #: Telnyx: every N-th media message is sent after the next one (0: in order).
    reorder_every: int = 0
    #: Twilio: sign the upgrade (``X-Twilio-Signature``) with this account auth token.
    twilio_auth_token: str | None = None
    #: Telnyx: send this stream auth token (``x-telnyx-streaming-auth-token``).
    telnyx_token: str | None = None
    #: No frames from ``pause_at_s`` for ``pause_s`` seconds: a held or muted leg, a stalled
    #: network (the schedule goes on; the frames of the pause are never sent).
    pause_at_s: float = 0.0
    pause_s: float = 0.0

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
        if not (0 <= self.pause_at_s < math.inf and 0 <= self.pause_s < math.inf):
            raise ConfigError("pause-at and pause must be >= 0")
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
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"CA file not found: {self.ca_file}")
        if self.carrier != "vonage":
            self.peer_options()  # checks the carrier, its encoding and rate
        elif self.encoding or self.reorder_every or self.twilio_auth_token or self.telnyx_token:
            raise ConfigError("--encoding, --reorder-every and the carrier tokens need --carrier")

    def peer_options(self, call_id: str = "CA0000") -> PeerOptions:
        return PeerOptions(
            self.carrier,
            self.rate,
            self.encoding,
            {str(k): str(v) for k, v in self.headers.items()},
            call_id,
            self.reorder_every,
            self.telnyx_token,
        )

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
        self._cache_keys = [-1] * _STAMP_CACHE
        self._cache_frames = [self.silence] * _STAMP_CACHE
        #: The stamp of each cached stamped frame, by the hash of its bytes: an echo that
        #: came back unchanged is matched by the hash it needs anyway, without reading the
        #: stamp out of its samples (which returns the same number, at several times the cost).
        self.stamp_of: dict[int, int] = {}
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

    def stamped(self, k: int) -> bytes:
        """Frame ``k`` stamped with its number, from a small cache.

        Every call of a load run sends the same frame ``k`` (calls start within a ramp of
        each other), so one process makes each stamped frame once, and its hash, which
        bytes objects keep, once too.
        """
        slot = k & _STAMP_CACHE_MASK
        keys = self._cache_keys
        if keys[slot] == k:
            return self._cache_frames[slot]
        frame = stamp_frame(self.frame(k), k & _SEQ_MASK)
        if keys[slot] >= 0:
            self.stamp_of.pop(hash(self._cache_frames[slot]), None)
        keys[slot] = k
        self._cache_frames[slot] = frame
        self.stamp_of[hash(frame)] = k & _SEQ_MASK
        return frame


def _spread(value: int) -> int:
    """Bit ``i`` of a byte value moved to bit 0 of byte ``i`` of an 8-byte little-endian int."""
    return sum(((value >> i) & 1) << (8 * i) for i in range(8))


_SPREAD = [_spread(v) for v in range(256)]
_GATHER = {s: v for v, s in enumerate(_SPREAD)}
_LSBS = int.from_bytes(b"\x01" * _STAMP_SAMPLES, "little")
_NOT_LSBS = int.from_bytes(b"\xfe" * _STAMP_SAMPLES, "little")
_LOW64 = (1 << 64) - 1


def stamp_frame(frame: bytes, seq: int) -> bytes:
    """Write ``seq`` (16 bits) into the LSB of the first 16 samples (bit i in sample i).

    Little-endian PCM puts each sample's LSB in bit 0 of its even byte, so this touches
    16 bytes and changes no sample by more than 1 (-90 dBFS). The 16 even bytes are handled
    as one 128-bit integer (two table look-ups, no Python loop): about 0.5 us per frame.
    """
    out = bytearray(frame)
    low = int.from_bytes(out[0 : 2 * _STAMP_SAMPLES : 2], "little") & _NOT_LSBS
    bits = _SPREAD[seq & 0xFF] | (_SPREAD[(seq >> 8) & 0xFF] << 64)
    out[0 : 2 * _STAMP_SAMPLES : 2] = (low | bits).to_bytes(_STAMP_SAMPLES, "little")
    return bytes(out)


def read_stamp(frame: bytes) -> int:
    """The 16-bit number :func:`stamp_frame` wrote (garbage for an unstamped frame)."""
    lsbs = int.from_bytes(frame[0 : 2 * _STAMP_SAMPLES : 2], "little") & _LSBS
    return _GATHER[lsbs & _LOW64] | (_GATHER[lsbs >> 64] << 8)


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
    #: At each ``clear``: how much of the audio received so far had played (ms), i.e. what
    #: the caller had heard when the clear arrived (cleared audio never plays).
    heard_at_clears_ms: tuple[float, ...] = ()
    playback_overflow_frames: int = 0
    playback_peak_ms: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None
    connect_ms: float | None = None
    duration_s: float = 0.0
    #: Echoes whose round trip exceeded 20, 50 and 100 ms (each count includes the next).
    frames_late_20ms: int = 0
    frames_late_50ms: int = 0
    frames_late_100ms: int = 0
    lateness_p50_ms: float | None = None
    #: How late the sender's timer ran (p99): the event loop's lag, receipts included.
    loop_lag_p99_ms: float | None = None
    #: With ``measure_pacing``: how far each received frame arrived from a drift-free 20 ms
    #: grid (after the first second), and how far the grid moved over the call.
    pacing_error_p50_ms: float | None = None
    pacing_error_p99_ms: float | None = None
    pacing_error_max_ms: float | None = None
    pacing_drift_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["text_events"] = list(self.text_events)
        return out


@dataclass(frozen=True)
class LoadReport:
    """N concurrent calls, aggregated. Percentiles merge every call's histogram.

    ``call_jitter_*`` and ``pacing_*`` describe the spread over calls of one figure per call
    (its inbound jitter p99, its pacing error): median call and worst call.
    """

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
    procs: int = 1
    frames_not_exact: int = 0
    out_of_order: int = 0
    frames_late_20ms: int = 0
    frames_late_50ms: int = 0
    frames_late_100ms: int = 0
    rtt_p90_ms: float | None = None
    rtt_p999_ms: float | None = None
    lateness_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    call_jitter_p50_ms: float | None = None
    worst_call_rfc3550_jitter_ms: float | None = None
    pacing_error_p50_ms: float | None = None
    pacing_error_p99_ms: float | None = None
    worst_call_pacing_error_p99_ms: float | None = None
    pacing_error_max_ms: float | None = None
    pacing_drift_max_ms: float | None = None
    #: CPU seconds the load generator's own processes used (user + system).
    client_cpu_s: float | None = None

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
    #: How late the sender's timer callbacks ran: the event loop's own lag, which includes the
    #: time spent reading echoes (sends do not wait for that, see _Ticker; receipts do).
    loop_lag: Histogram = field(default_factory=Histogram)
    #: Arrival offsets from the 20 ms grid, biased by ``_PACING_BIAS_NS`` (``measure_pacing``);
    #: 12 sub-bits: buckets of 25 us at the bias, where the default's would be 400 us.
    pacing: Histogram = field(default_factory=lambda: Histogram(sub_bits=12))


# --- the client: bridge's connection layer ------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Connection(ClientConnection):
    """One simulated caller's websocket, on bridge's connection layer (``bridge.transport``).

    No task, queue or future per message: each read is handled at once and its messages go
    synchronously to the call, stamped with one clock reading taken when the read arrived;
    sends are synchronous writes. The simulator waits longer for a closing handshake than
    bridge does (``CLOSE_TIMEOUT_S``), as a phone network would. permessage-deflate is never
    offered (docs/lessons.md s.7) and no User-Agent is sent (docs/protocol.md s.1).
    """

    close_timeout_s = CLOSE_TIMEOUT_S

    def __init__(
        self, uri: WebSocketURI, headers: Mapping[str, str], receiver: Receiver, clock: Clock
    ) -> None:
        super().__init__(uri, headers, receiver, clock, max_size=_MAX_MESSAGE_BYTES)


async def _open(opts: CallOptions, receiver: Receiver, clock: Clock) -> _Connection:
    """Connect and complete the opening handshake within ``connect_timeout_s``."""
    uri = parse_uri(opts.url)
    loop = asyncio.get_running_loop()
    headers = _handshake_headers(opts)
    conn: _Connection | None = None
    try:
        async with asyncio.timeout(opts.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: _Connection(uri, headers, receiver, clock),
                uri.host,
                uri.port,
                ssl=(
                    ssl_context(str(opts.ca_file) if opts.ca_file else None, opts.insecure)
                    if uri.secure
                    else None
                ),
            )
            await conn.opened
    except BaseException:
        if conn is not None:
            conn.abort()
        raise
    return conn


def _handshake_headers(opts: CallOptions) -> Mapping[str, str]:
    """Extra HTTP headers for the upgrade request (and a carrier's credentials)."""
    headers = dict(opts.extra_headers)
    if opts.twilio_auth_token is not None:
        headers["X-Twilio-Signature"] = twilio_signature(opts.twilio_auth_token, opts.url)
    if opts.telnyx_token is not None:
        headers["x-telnyx-streaming-auth-token"] = opts.telnyx_token
    return headers


class _Ticker:
    """The one sender of a process: every call's frames leave from one timer.

    A heap holds each call's next due time; one loop timer is armed for the earliest. On each
    wake every call due within ``_EARLY_NS`` (1 ms) is served, so calls whose deadlines are
    close share one wake-up: uvloop's timers have 1 ms granularity and fire up to 1 ms early
    or late, so waking per frame would cost CPU and still be late. Sending a frame up to 1 ms
    before its deadline is harmless (round trips are timed from the actual send; Vonage's own
    frames jitter by more), and it keeps the timer's granularity out of the lateness the
    generator reports about itself. No task and no sleep per call per frame.

    Connections also call :meth:`poll` when data arrives: a burst of echoes handled in one
    loop iteration would otherwise hold back every send due meanwhile (timers run only
    between iterations), and the generator would report its own queueing as lateness.
    """

    def __init__(self, clock: Clock, loop_lag: Histogram | None = None) -> None:
        self.clock = clock
        self.loop_lag = Histogram() if loop_lag is None else loop_lag
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[int, int, _Call]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ns = 0
        #: The earliest due time in the heap (``_NEVER`` when empty), read per received frame.
        self.next_due_ns = _NEVER

    def add(self, call: _Call, due_ns: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ns, self._seq, call))
        self.next_due_ns = min(self.next_due_ns, due_ns)
        self._arm(due_ns)

    def poll(self, now_ns: int) -> None:
        """Send what is due, if anything is (cheap when nothing is)."""
        if now_ns + _EARLY_NS >= self.next_due_ns:
            self._run(now_ns)

    def _arm(self, due_ns: int) -> None:
        if self._timer is not None:
            if self._timer_ns <= due_ns:
                return
            self._timer.cancel()
        self._timer_ns = due_ns
        delay = max(0, due_ns - self.clock.now_ns()) / S
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.clock.now_ns()
        self.loop_lag.record(now - self._timer_ns)
        self._run(now)

    def _run(self, now_ns: int) -> None:
        heap = self._heap
        horizon = now_ns + _EARLY_NS
        seq = self._seq
        while heap and heap[0][0] <= horizon:
            call = heap[0][2]
            try:
                due = call.tick(horizon)
            except BaseException:
                heapq.heappop(heap)  # (a bug: that call stops sending, the others do not)
                raise
            if due is None:
                heapq.heappop(heap)
            else:  # one sift instead of a pop and a push
                seq += 1
                heapq.heapreplace(heap, (due, seq, call))
        self._seq = seq
        if heap:
            self.next_due_ns = heap[0][0]
            self._arm(self.next_due_ns)
        else:
            self.next_due_ns = _NEVER


class _Call:
    """One call's state, driven by callbacks: the ticker sends, the connection delivers."""

    def __init__(
        self,
        opts: CallOptions,
        clock: Clock,
        source: _Source | None = None,
        shared: _Histograms | None = None,
    ) -> None:
        self.opts = opts
        self.clock = clock
        #: A carrier's side (``bridge.carrier_peer``), or ``None`` for Vonage's.
        self.link: CarrierLink | None = None
        self.frame_bytes = frame_bytes(opts.rate)
        if opts.carrier != "vonage":
            self.link = CarrierLink(opts.peer_options(f"CA{id(self):x}"))
            self.frame_bytes = self.link.frame_bytes
        self.n_frames = opts.n_frames
        self.hist = _Histograms()
        # In a load run, round trips and lateness go straight into the process's histograms:
        # one hot dict instead of one cold dict per call (a cache miss per frame each). The
        # call's own report then has no percentiles for them.
        self.shared = shared is not None
        self.rtt = self.hist.rtt if shared is None else shared.rtt
        self.lateness = self.hist.lateness if shared is None else shared.lateness
        self.source = _Source(opts) if source is None else source
        self.conn: _Connection | None = None
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
        self.clears = 0
        self.notifies = 0
        self.notifies_answered = 0
        self.notifies_dropped = 0
        self.unknown_commands = 0
        self.play_end_ns = 0
        self.frames_cleared = 0
        self.cleared_ns = 0
        self.heard_at_clears_ms: list[float] = []
        self.pause_from = (
            _scale_ns(opts.pause_at_s) // FRAME_NS if opts.pause_s > 0 else self.n_frames
        )
        self.pause_until = self.pause_from + _scale_ns(opts.pause_s) // FRAME_NS
        self.playback_overflow = 0
        self.playback_peak_ns = 0
        self.notify_timers: dict[int, asyncio.TimerHandle] = {}
        self.notify_answers: dict[int, str] = {}
        self.notify_seq = 0
        self.recorder: WavWriter | None = None
        self.sent_recorder: WavWriter | None = None
        self.error: str | None = None

    # sending (called by the ticker) -----------------------------------------------------

    def start(self, ticker: _Ticker, start_ns: int) -> None:
        """Frame ``k`` is due at ``start_ns + k * 20 ms``; DTMF digits 300 ms apart."""
        opts = self.opts
        self.start_ns = start_ns
        dtmf_at = start_ns + _scale_ns(opts.dtmf_at_s)
        self.dtmf = [(dtmf_at + i * DTMF_SPACING_NS, d) for i, d in enumerate(opts.dtmf)]
        self.dtmf.reverse()  # pop() from the end in time order
        if self.conn is not None:
            # Sends that are due go before the echoes that arrived (see _Ticker).
            self.conn.read_hook = ticker.poll
        ticker.add(self, start_ns)

    def tick(self, horizon_ns: int) -> int | None:
        """Send everything due by ``horizon_ns``; the next due time, or ``None`` when done.

        A late tick sends every overdue frame at once: the grid never slides, so a stall shows
        up as lateness, never as drift.
        """
        conn = self.conn
        if conn is None or not conn.is_open:
            self._finish_sending()
            return None
        now = self.clock.now_ns()
        dtmf = self.dtmf
        k = self.next_k
        n = self.n_frames
        deadline = self.start_ns + k * FRAME_NS
        while True:
            while dtmf and dtmf[-1][0] <= horizon_ns and (k >= n or dtmf[-1][0] <= deadline):
                digit = dtmf.pop()[1]
                link = self.link
                conn.send_text(build_dtmf_event(digit) if link is None else link.peer.dtmf(digit))
                self.dtmf_sent += 1
            if k >= n or deadline > horizon_ns:
                break
            if not self.pause_from <= k < self.pause_until:
                self._send_frame(conn, k, deadline, now)
            k += 1
            deadline += FRAME_NS
        self.next_k = k
        if k < n:
            return min(deadline, dtmf[-1][0]) if dtmf else deadline
        if dtmf:
            return dtmf[-1][0]
        if self.link is not None:
            for message in self.link.peer.finish():
                conn.send_text(message)
        self._finish_sending()
        return None

    def _send_frame(self, conn: _Connection, k: int, deadline: int, now: int) -> None:
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
            conn.send_binary(frame)
        else:
            for message in link.peer.frame(frame):
                conn.send_text(message)
        self.frames_sent += 1
        if self.sent_recorder is not None:
            self.sent_recorder.write(to_samples(frame if link is None else link.to_pcm(frame)))

    def _finish_sending(self) -> None:
        if self.sending_done is not None and not self.sending_done.done():
            self.sending_done.set_result(None)

    # receiving (called by the connection) -----------------------------------------------

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
            self.error = _one_line(exc)
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
        self._play(now)
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

    def _match(self, data: bytes, now: int) -> None:
        digest = hash(data)
        ring_index = self.ring_index
        if self.opts.stamp:
            top = self.frames_sent - 1
            if self.link is None:
                stamp = self.source.stamp_of.get(digest)
                if stamp is None:  # not one of ours as sent (or no longer cached)
                    stamp = read_stamp(data)
            else:
                stamp = self.link.read_stamp(data)
            index = top - ((top - stamp) & _SEQ_MASK)
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

    def _play(self, now: int) -> None:
        """Vonage's playback buffer: frames play back to back from when playback (re)starts.

        Comparisons rather than ``max``: this runs for every frame received.
        """
        end = self.play_end_ns
        if end < now:  # noqa: PLR1730
            end = now
        if end - now >= PLAYBACK_BUFFER_FRAMES * FRAME_NS:
            self.play_end_ns = end
            self.playback_overflow += 1  # past the buffer: undocumented, assume dropped
            return
        end += FRAME_NS
        self.play_end_ns = end
        if end - now > self.playback_peak_ns:  # noqa: PLR1730
            self.playback_peak_ns = end - now

    def on_text(self, text: str, now: int) -> None:
        if self.link is not None:
            self._on_carrier_text(self.link, text, now)
            return
        self.text_events_total += 1
        if len(self.events) < _MAX_EVENTS_KEPT:
            self.events.append(text)
        try:
            command = parse_command(text)
        except ValueError:
            self.unknown_commands += 1  # docs/protocol.md s.5: send nothing else as text
            return
        conn = self.conn
        if conn is None:
            return
        if command.action == "clear":
            self._clear_playback(now)
            # docs/protocol.md s.5: after a clear, a pending notify may never come.
            self.notifies_dropped += len(self.notify_timers)
            self._cancel_notifies()
            conn.send_text(build_cleared_event())
            return
        self._answer_when_played(conn, build_notify_event(command.payload), now)

    def _clear_playback(self, now: int) -> None:
        """A clear: the playback buffer is emptied; what had been heard by then is noted."""
        self.clears += 1
        pending_ns = max(0, self.play_end_ns - now)
        played_ns = (
            (self.frames_received - self.playback_overflow) * FRAME_NS
            - pending_ns
            - self.cleared_ns
        )
        if len(self.heard_at_clears_ms) < _MAX_EVENTS_KEPT:
            self.heard_at_clears_ms.append(round(played_ns / MS, 1))
        self.cleared_ns += pending_ns
        if self.play_end_ns > now:
            self.frames_cleared += -(-(self.play_end_ns - now) // FRAME_NS)
        self.play_end_ns = now

    def _answer_when_played(self, conn: _Connection, answer: str, now: int) -> None:
        """A notify (mark): answered once playback reaches it, at once if nothing is queued."""
        self.notifies += 1
        if self.play_end_ns <= now:
            conn.send_text(answer)
            self.notifies_answered += 1
            return
        self.notify_seq += 1
        key = self.notify_seq
        delay = (self.play_end_ns - now) / S
        loop = asyncio.get_running_loop()
        self.notify_timers[key] = loop.call_later(delay, self._notify_due, key)
        self.notify_answers[key] = answer

    def _notify_due(self, key: int) -> None:
        del self.notify_timers[key]
        answer = self.notify_answers.pop(key)
        if self.conn is not None and self.conn.is_open:
            self.conn.send_text(answer)
            self.notifies_answered += 1

    def _cancel_notifies(self) -> None:
        for timer in self.notify_timers.values():
            timer.cancel()
        self.notify_timers.clear()
        self.notify_answers.clear()

    def _on_carrier_text(self, link: CarrierLink, text: str, now: int) -> None:
        """Bridge's message to a carrier: media into the playback model (and the echo match),
        marks answered when played, clear as that carrier answers it (docs/carriers.md)."""
        conn = self.conn
        try:
            command = link.peer.read(text)
        except ValueError as exc:
            if "media payload" in str(exc):
                # The carrier would play this badly or not at all (Exotel's chunk rules).
                self.bad_frames += 1
                if conn is not None and conn.is_open:
                    conn.close(BAD_FRAME_CLOSE_CODE, str(exc)[:120])
            else:
                self.unknown_commands += 1
                self.text_events_total += 1
                if len(self.events) < _MAX_EVENTS_KEPT:
                    self.events.append(text)
            return
        if command.kind == "media":
            for frame in link.split(command.payload):
                self.on_binary_frame(frame, now)
            return
        # Everything but audio is kept, as Vonage's text events are.
        self.text_events_total += 1
        if len(self.events) < _MAX_EVENTS_KEPT:
            self.events.append(text)
        if conn is None:
            return
        if command.kind == "mark":
            self._answer_when_played(conn, link.peer.mark_done(command.name), now)
            return
        self._clear_playback(now)
        if link.peer.marks_back_on_clear:  # Twilio, Telnyx: queued marks come back at once
            for key in sorted(self.notify_answers):
                conn.send_text(self.notify_answers[key])
                self.notifies_answered += 1
        else:  # Plivo, Exotel: their audio was not played, so they are never answered
            self.notifies_dropped += len(self.notify_timers)
        self._cancel_notifies()
        cleared = link.peer.cleared()
        if cleared is not None:
            conn.send_text(cleared)

    # the call --------------------------------------------------------------------------

    async def run(self, ticker: _Ticker | None = None) -> CallReport:
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
            return await self._run(ticker or _Ticker(self.clock, self.hist.loop_lag))
        finally:
            self.n_frames = 0  # a cancelled call leaves the ticker at its next tick
            self._cancel_notifies()
            if self.conn is not None and not self.conn.lost.done():
                self.conn.abort()
            self._close_recorders()

    def _close_recorders(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.sent_recorder is not None:
            self.sent_recorder.close()

    async def _run(self, ticker: _Ticker) -> CallReport:
        opts = self.opts
        clock = self.clock
        begin = clock.now_ns()
        try:
            conn = await _open(opts, self, clock)
        except (OSError, TimeoutError, WebSocketException) as exc:
            return CallReport(
                url=opts.url,
                rate=opts.rate,
                connected=False,
                error=_one_line(exc),
                completed=False,
                duration_s=round((clock.now_ns() - begin) / S, 3),
            )
        self.conn = conn
        connected = clock.now_ns()
        loop = asyncio.get_running_loop()
        self.sending_done = loop.create_future()
        if self.link is None:
            conn.send_text(build_connected(opts.rate, opts.headers))
        else:
            for message in self.link.peer.opening():
                conn.send_text(message)
        self.start(ticker, clock.now_ns())
        await asyncio.wait({self.sending_done, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        if conn.is_open and self.frames_matched < self.frames_sent:
            # Linger for the last echoes (not at all once every frame came back).
            self.all_back = loop.create_future()
            await asyncio.wait(
                {self.all_back, conn.lost},
                timeout=opts.linger_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        stop = self.link.peer.stop() if self.link is not None else None
        if stop is not None and conn.is_open:
            # The carrier ends the stream: bridge closes the socket (1000) on its stop.
            conn.send_text(stop)
            await asyncio.wait({conn.lost}, timeout=CLOSE_TIMEOUT_S + 1)
        conn.close(1000)  # the caller hangs up (a no-op if already closed)
        await asyncio.wait({conn.lost}, timeout=CLOSE_TIMEOUT_S + 1)
        if not conn.lost.done():
            conn.abort()
            await conn.lost
        return self._report(conn, connected - begin, clock.now_ns() - connected)

    def _report(self, conn: _Connection, connect_ns: int, duration_ns: int) -> CallReport:
        hist = self.hist
        rtt50, rtt99 = hist.rtt.percentiles_ns([50, 99])
        jit50, jit99 = hist.jitter.percentiles_ns([50, 99])
        late50, late99 = hist.lateness.percentiles_ns([50, 99])
        proto = conn.proto
        closed_by = None
        if proto.close_rcvd_then_sent is True:
            closed_by = "server"
        elif proto.close_rcvd_then_sent is False:
            closed_by = "simulator"
        code = proto.close_code
        exact = (
            self.frames_sent > 0
            and self.frames_matched == self.frames_sent
            and self.frames_received == self.frames_sent
            and self.out_of_order == 0
            and self.bad_frames == 0
        )
        late99_ms = _ms(late99)
        lag99_ms = _ms(hist.loop_lag.percentile_ns(99))
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
            # A frame that came back changed (a resampling far end) is "not exact", not lost:
            # lost counts only what never came back in any form.
            frames_lost=max(0, self.frames_sent - self.frames_matched - self.frames_not_exact),
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
            client_overloaded=_overloaded(late99_ms, lag99_ms),
            dtmf_sent=self.dtmf_sent,
            text_events=tuple(self.events),
            text_events_total=self.text_events_total,
            clears=self.clears,
            notifies=self.notifies,
            notifies_answered=self.notifies_answered,
            notifies_dropped=self.notifies_dropped,
            unknown_commands=self.unknown_commands,
            frames_cleared=self.frames_cleared,
            heard_at_clears_ms=tuple(self.heard_at_clears_ms),
            playback_overflow_frames=self.playback_overflow,
            playback_peak_ms=self.playback_peak_ns // MS,
            close_code=code,
            close_reason=proto.close_reason or "",
            closed_by=closed_by,
            connect_ms=_ms(connect_ns),
            duration_s=round(duration_ns / S, 3),
            frames_late_20ms=self.late[0],
            frames_late_50ms=self.late[1],
            frames_late_100ms=self.late[2],
            lateness_p50_ms=_ms(late50),
            loop_lag_p99_ms=lag99_ms,
            **self._pacing_report(),
        )

    def _pacing_report(self) -> dict[str, float | None]:
        pacing = self.hist.pacing
        if not pacing.count:
            return {}
        low = pacing.min_ns
        p50, p99 = pacing.percentiles_ns([50, 99])
        assert p50 is not None and p99 is not None
        seen = min(pacing.count, _PACING_WINDOW)
        first = sum(self.pacing_first[:seen]) / seen
        last = sum(self.pacing_last) / _PACING_WINDOW if pacing.count >= _PACING_WINDOW else first
        return {
            "pacing_error_p50_ms": _ms(p50 - low),
            "pacing_error_p99_ms": _ms(p99 - low),
            "pacing_error_max_ms": _ms(pacing.max_ns - low),
            "pacing_drift_ms": _ms(last - first),
        }


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


def _replace_records(opts: CallOptions, i: int) -> CallOptions:
    return replace(
        opts, record=_suffixed(opts.record, i), record_sent=_suffixed(opts.record_sent, i)
    )


@dataclass
class _LoadPart:
    """What some of a load run's calls measured, in bounded memory: histograms and counters.

    One per process; the parent merges them. Figures that exist once per call (its jitter
    p99, its pacing error) go into histograms too, so 100 000 calls cost no more than 100.
    """

    calls: int = 0
    connected: int = 0
    ok: int = 0
    exact: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_lost: int = 0
    frames_not_exact: int = 0
    out_of_order: int = 0
    bad_frames: int = 0
    late: list[int] = field(default_factory=lambda: [0, 0, 0])
    hist: _Histograms = field(default_factory=_Histograms)
    call_jitter: Histogram = field(default_factory=Histogram)
    call_rfc3550_max_ns: int | None = None
    pacing_p50: Histogram = field(default_factory=Histogram)
    pacing_p99: Histogram = field(default_factory=Histogram)
    pacing_max: Histogram = field(default_factory=Histogram)
    pacing_drift: Histogram = field(default_factory=Histogram)
    close_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0

    def add(self, report: CallReport, hist: _Histograms) -> None:
        self.calls += 1
        self.connected += report.connected
        self.ok += report.completed
        self.exact += report.exact
        self.frames_sent += report.frames_sent
        self.frames_received += report.frames_received
        self.frames_lost += report.frames_lost
        self.frames_not_exact += report.frames_not_exact
        self.out_of_order += report.out_of_order
        self.bad_frames += report.bad_frames
        for i, n in enumerate(
            (report.frames_late_20ms, report.frames_late_50ms, report.frames_late_100ms)
        ):
            self.late[i] += n
        self.hist.rtt.merge(hist.rtt)
        self.hist.jitter.merge(hist.jitter)
        self.hist.lateness.merge(hist.lateness)
        if report.jitter_p99_ms is not None:
            self.call_jitter.record(round(report.jitter_p99_ms * MS))
        if report.rfc3550_jitter_ms is not None:
            value = round(report.rfc3550_jitter_ms * MS)
            self.call_rfc3550_max_ns = max(self.call_rfc3550_max_ns or 0, value)
        for h, value_ms in (
            (self.pacing_p50, report.pacing_error_p50_ms),
            (self.pacing_p99, report.pacing_error_p99_ms),
            (self.pacing_max, report.pacing_error_max_ms),
            (self.pacing_drift, report.pacing_drift_ms),
        ):
            if value_ms is not None:
                h.record(abs(round(value_ms * MS)))
        key = str(report.close_code)
        self.close_codes[key] = self.close_codes.get(key, 0) + 1
        error = report.error
        if error is not None and (error in self.errors or len(self.errors) < _MAX_ERRORS_KEPT):
            self.errors[error] = self.errors.get(error, 0) + 1

    def merge(self, other: _LoadPart) -> None:
        for name in (
            "calls",
            "connected",
            "ok",
            "exact",
            "frames_sent",
            "frames_received",
            "frames_lost",
            "frames_not_exact",
            "out_of_order",
            "bad_frames",
            "cpu_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.late = [a + b for a, b in zip(self.late, other.late, strict=True)]
        for mine, theirs in (
            (self.hist.rtt, other.hist.rtt),
            (self.hist.jitter, other.hist.jitter),
            (self.hist.lateness, other.hist.lateness),
            (self.hist.loop_lag, other.hist.loop_lag),
            (self.call_jitter, other.call_jitter),
            (self.pacing_p50, other.pacing_p50),
            (self.pacing_p99, other.pacing_p99),
            (self.pacing_max, other.pacing_max),
            (self.pacing_drift, other.pacing_drift),
        ):
            mine.merge(theirs)
        if other.call_rfc3550_max_ns is not None:
            self.call_rfc3550_max_ns = max(self.call_rfc3550_max_ns or 0, other.call_rfc3550_max_ns)
        for key, n in other.close_codes.items():
            self.close_codes[key] = self.close_codes.get(key, 0) + n
        for error, n in other.errors.items():
            if error in self.errors or len(self.errors) < _MAX_ERRORS_KEPT:
                self.errors[error] = self.errors.get(error, 0) + n

    def report(
        self, url: str, calls: int, ramp_s: float, duration_ns: int, procs: int
    ) -> LoadReport:
        rtt, lateness = self.hist.rtt, self.hist.lateness
        rtt50, rtt90, rtt99, rtt999 = rtt.percentiles_ns([50, 90, 99, 99.9])
        late50, late99 = lateness.percentiles_ns([50, 99])
        late99_ms = _ms(late99)
        lag99_ms = _ms(self.hist.loop_lag.percentile_ns(99))
        call_jitter = self.call_jitter
        return LoadReport(
            url=url,
            calls=calls,
            calls_connected=self.connected,
            calls_ok=self.ok,
            calls_failed=calls - self.ok,
            calls_exact=self.exact,
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            frames_lost=self.frames_lost,
            bad_frames=self.bad_frames,
            rtt_p50_ms=_ms(rtt50),
            rtt_p99_ms=_ms(rtt99),
            rtt_max_ms=_ms(rtt.max_ns) if rtt.count else None,
            jitter_p99_ms=_ms(self.hist.jitter.percentile_ns(99)),
            worst_call_jitter_p99_ms=_ms(call_jitter.max_ns) if call_jitter.count else None,
            lateness_p99_ms=late99_ms,
            lateness_max_ms=_ms(lateness.max_ns) if lateness.count else None,
            client_overloaded=_overloaded(late99_ms, lag99_ms),
            close_codes=self.close_codes,
            errors=self.errors,
            ramp_s=ramp_s,
            duration_s=round(duration_ns / S, 3),
            procs=procs,
            frames_not_exact=self.frames_not_exact,
            out_of_order=self.out_of_order,
            frames_late_20ms=self.late[0],
            frames_late_50ms=self.late[1],
            frames_late_100ms=self.late[2],
            rtt_p90_ms=_ms(rtt90),
            rtt_p999_ms=_ms(rtt999),
            lateness_p50_ms=_ms(late50),
            loop_lag_p99_ms=lag99_ms,
            call_jitter_p50_ms=_ms(call_jitter.percentile_ns(50)),
            worst_call_rfc3550_jitter_ms=_ms(self.call_rfc3550_max_ns),
            pacing_error_p50_ms=_ms(self.pacing_p50.percentile_ns(50)),
            pacing_error_p99_ms=_ms(self.pacing_p99.percentile_ns(50)),
            worst_call_pacing_error_p99_ms=(
                _ms(self.pacing_p99.max_ns) if self.pacing_p99.count else None
            ),
            pacing_error_max_ms=_ms(self.pacing_max.max_ns) if self.pacing_max.count else None,
            pacing_drift_max_ms=(
                _ms(self.pacing_drift.max_ns) if self.pacing_drift.count else None
            ),
            client_cpu_s=round(self.cpu_s, 3),
        )


async def _run_part(
    opts: CallOptions, calls: int, indices: range, begin_ns: int, ramp_ns: int
) -> _LoadPart:
    """Calls ``indices`` of ``calls``, call ``i`` starting at ``begin + ramp * i / calls``."""
    clock = MonotonicClock()
    source = _Source(opts)  # read (and resample) a WAV once, not once per call
    part = _LoadPart()
    ticker = _Ticker(clock, part.hist.loop_lag)
    shared = _Histograms(rtt=part.hist.rtt, lateness=part.hist.lateness)
    cpu = time.process_time()

    async def one(i: int) -> None:
        call_opts = opts
        if opts.record is not None or opts.record_sent is not None:
            call_opts = _replace_records(opts, i)
        call = _Call(call_opts, clock, source, shared)
        start = begin_ns + ramp_ns * i // calls
        now = clock.now_ns()
        if start > now:
            await asyncio.sleep((start - now) / S)
        report = await call.run(ticker)
        part.add(report, call.hist)  # folded at once: nothing per call is kept

    await asyncio.gather(*(one(i) for i in indices))
    part.cpu_s = time.process_time() - cpu
    return part


def _load_worker(
    pipe: Connection, opts: CallOptions, calls: int, indices: range, ramp_ns: int
) -> None:
    """One load process: say ready, wait for the common start time, run, send the part."""
    try:
        freeze_startup_heap()
        pipe.send(("ready", None))
        begin_ns = pipe.recv()
        part = run(_run_part(opts, calls, indices, begin_ns, ramp_ns))
        pipe.send(("done", part))
    except Exception as exc:
        pipe.send(("error", _one_line(exc)))
    finally:
        pipe.close()


def _recv_all(pipes: list[Connection], timeout_s: float) -> list[Any]:
    """One message from each pipe, in order, within ``timeout_s`` in all."""
    deadline = time.monotonic() + timeout_s
    out: dict[int, Any] = {}
    pending = dict(enumerate(pipes))
    while pending:
        left = deadline - time.monotonic()
        ready = mp_wait(list(pending.values()), timeout=max(0.0, left))
        if not ready:
            raise LoadProcessError(f"load processes did not answer within {timeout_s:g} s")
        for i, pipe in list(pending.items()):
            if pipe in ready:
                try:
                    kind, value = pipe.recv()
                except EOFError as exc:
                    raise LoadProcessError("a load process died") from exc
                if kind == "error":
                    raise LoadProcessError(f"a load process failed: {value}")
                out[i] = value
                del pending[i]
    return [out[i] for i in range(len(pipes))]


async def _run_procs(
    opts: CallOptions, calls: int, procs: int, ramp_ns: int
) -> tuple[_LoadPart, int]:
    """Spread calls over ``procs`` processes (spawned: each imports afresh, own uvloop loop)."""
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    workers = []
    try:
        for p in range(procs):
            mine, theirs = ctx.Pipe()
            worker = ctx.Process(
                target=_load_worker,
                args=(theirs, opts, calls, range(p, calls, procs), ramp_ns),
                daemon=True,
                name=f"bridge-load-{p}",
            )
            worker.start()
            theirs.close()
            pipes.append(mine)
            workers.append(worker)
        await asyncio.to_thread(_recv_all, pipes, _PROC_START_TIMEOUT_S)
        begin = time.monotonic_ns() + _PROC_START_MARGIN_NS  # CLOCK_MONOTONIC: system-wide
        for pipe in pipes:
            pipe.send(begin)
        budget = ramp_ns / S + opts.seconds + opts.linger_s + opts.connect_timeout_s + 30
        parts: list[_LoadPart] = await asyncio.to_thread(
            _recv_all, pipes, budget + 2 * CLOSE_TIMEOUT_S
        )
    finally:
        for pipe in pipes:
            pipe.close()
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    total = _LoadPart()
    for part in parts:
        total.merge(part)
    return total, begin


async def run_load(
    opts: CallOptions, calls: int, ramp_s: float | None = None, procs: int = 1
) -> LoadReport:
    """``calls`` concurrent calls started evenly over ``ramp_s``, spread over ``procs``.

    With ``procs=1`` the calls run in this event loop; otherwise call ``i`` runs in process
    ``i % procs``, each with its own (uv)loop and sender, and the parts are merged.
    """
    if calls < 1:
        raise ConfigError(f"calls must be >= 1, got {calls}")
    if procs < 1:
        raise ConfigError(f"procs must be >= 1, got {procs}")
    ramp = min(1.0, calls * 0.02) if ramp_s is None else ramp_s
    if ramp < 0 or not math.isfinite(ramp):
        raise ConfigError(f"ramp must be >= 0, got {ramp}")
    procs = min(procs, calls)
    ramp_ns = _scale_ns(ramp)
    if procs == 1:
        begin = time.monotonic_ns()
        part = await _run_part(opts, calls, range(calls), begin, ramp_ns)
    else:
        part, begin = await _run_procs(opts, calls, procs, ramp_ns)
    return part.report(opts.url, calls, ramp, time.monotonic_ns() - begin, procs)


# --- text reports ----------------------------------------------------------------------


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _overloaded(late99_ms: float | None, lag99_ms: float | None) -> bool:
    return any(v is not None and v > OVERLOAD_LATENESS_MS for v in (late99_ms, lag99_ms))


def _overload_line(late99: float | None, lag99: float | None = None) -> list[str]:
    if not _overloaded(late99, lag99):
        return []
    return [
        f"WARNING: client overloaded (sender lateness p99 {_f(late99)} ms, event loop lag p99 "
        f"{_f(lag99)} ms; limit {OVERLOAD_LATENESS_MS:g} ms): its latency figures are not "
        "trustworthy"
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
        f"late       over 20 ms {r.frames_late_20ms}  over 50 ms {r.frames_late_50ms}  "
        f"over 100 ms {r.frames_late_100ms}",
        f"jitter     p50 {_f(r.jitter_p50_ms)}  p99 {_f(r.jitter_p99_ms)}  "
        f"max {_f(r.jitter_max_ms)} ms  (RFC 3550 {_f(r.rfc3550_jitter_ms)} ms)",
        f"lateness   p50 {_f(r.lateness_p50_ms)}  p99 {_f(r.lateness_p99_ms)}  "
        f"max {_f(r.lateness_max_ms)} ms  (event loop lag p99 {_f(r.loop_lag_p99_ms)} ms)",
        f"events     dtmf sent {r.dtmf_sent}; received {r.text_events_total} text: "
        f"clear {r.clears}, notify {r.notifies} (answered {r.notifies_answered}, "
        f"dropped {r.notifies_dropped}), unknown {r.unknown_commands}",
        f"playback   peak {r.playback_peak_ms} ms  cleared {r.frames_cleared} frames  "
        f"overflow {r.playback_overflow_frames} frames",
    ]
    if r.pacing_error_p50_ms is not None:
        lines.append(
            f"pacing     error p50 {_f(r.pacing_error_p50_ms)}  p99 {_f(r.pacing_error_p99_ms)}  "
            f"max {_f(r.pacing_error_max_ms)} ms  drift {_f(r.pacing_drift_ms)} ms"
        )
    lines.append(
        f"close      {r.close_code} {r.close_reason!r} by {r.closed_by or 'nobody (dropped)'}"
        + (f"  error: {r.error}" if r.error else "")
    )
    return "\n".join(lines + _overload_line(r.lateness_p99_ms, r.loop_lag_p99_ms))


def format_load_report(r: LoadReport) -> str:
    """A short human-readable summary of a load run."""
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(r.close_codes.items())) or "-"
    procs = f" in {r.procs} processes" if r.procs > 1 else ""
    cpu = "" if r.client_cpu_s is None else f", client CPU {r.client_cpu_s:.2f} s"
    lines = [
        f"load {r.url}  {r.calls} calls{procs} over {r.ramp_s:.2f} s ramp, "
        f"lasted {r.duration_s:.2f} s{cpu}",
        f"calls      connected {r.calls_connected}  ok {r.calls_ok}  failed {r.calls_failed}  "
        f"exact {r.calls_exact}",
        f"frames     sent {r.frames_sent}  received {r.frames_received}  lost {r.frames_lost}  "
        f"not exact {r.frames_not_exact}  out of order {r.out_of_order}  "
        f"bad size {r.bad_frames}",
        f"round trip p50 {_f(r.rtt_p50_ms)}  p90 {_f(r.rtt_p90_ms)}  p99 {_f(r.rtt_p99_ms)}  "
        f"p99.9 {_f(r.rtt_p999_ms)}  max {_f(r.rtt_max_ms)} ms",
        f"late       over 20 ms {r.frames_late_20ms}  over 50 ms {r.frames_late_50ms}  "
        f"over 100 ms {r.frames_late_100ms}",
        f"jitter     p99 {_f(r.jitter_p99_ms)} ms  per call p99: median "
        f"{_f(r.call_jitter_p50_ms)}  worst {_f(r.worst_call_jitter_p99_ms)} ms",
        f"lateness   p50 {_f(r.lateness_p50_ms)}  p99 {_f(r.lateness_p99_ms)}  "
        f"max {_f(r.lateness_max_ms)} ms  (event loop lag p99 {_f(r.loop_lag_p99_ms)} ms)",
    ]
    if r.pacing_error_p50_ms is not None:
        lines.append(
            f"pacing     error p50 {_f(r.pacing_error_p50_ms)}  p99 {_f(r.pacing_error_p99_ms)} "
            f"(worst call {_f(r.worst_call_pacing_error_p99_ms)})  "
            f"max {_f(r.pacing_error_max_ms)} ms  drift max {_f(r.pacing_drift_max_ms)} ms"
        )
    lines.append(f"close      {codes}")
    lines += [f"error      {n} x {e}" for e, n in r.errors.items()]
    return "\n".join(lines + _overload_line(r.lateness_p99_ms, r.loop_lag_p99_ms))


# --- CLI -------------------------------------------------------------------------------


def _add_call_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CallOptions("ws://x")
    parser.add_argument("url", help="websocket URL of the bridge, e.g. ws://127.0.0.1:8080/socket")
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        help=f"8000, 16000 or 24000 (default {defaults.rate}; with --carrier, 8000)",
    )
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
        "--pause-at",
        type=float,
        default=defaults.pause_at_s,
        metavar="SECONDS",
        help="stop sending audio at this point of the call (with --pause)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=defaults.pause_s,
        metavar="SECONDS",
        help="send no audio for this long from --pause-at, as a held leg (default none)",
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
    parser.add_argument(
        "--measure-pacing",
        action="store_true",
        help="measure how evenly the server's audio arrives: error from a 20 ms grid, drift",
    )
    parser.add_argument(
        "--http-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header on the upgrade, e.g. 'Authorization: Bearer TOKEN' (repeatable)",
    )
    parser.add_argument("--ca-file", metavar="PEM", help="for wss://: trust this CA bundle")
    parser.add_argument(
        "--insecure", action="store_true", help="for wss://: do not verify the certificate"
    )
    carrier = parser.add_argument_group("other carriers (docs/carriers.md)")
    carrier.add_argument(
        "--carrier",
        choices=["vonage", *CARRIER_NAMES],
        default="vonage",
        help="play this carrier's side: its messages, encoding and answers (--header values "
        "become its custom parameters)",
    )
    carrier.add_argument(
        "--encoding",
        metavar="NAME",
        help="the carrier's wire encoding: telnyx PCMU, PCMA or L16; plivo audio/x-mulaw or "
        "audio/x-l16 (default: the carrier's own)",
    )
    carrier.add_argument(
        "--reorder-every",
        type=int,
        default=0,
        metavar="N",
        help="telnyx: send every N-th media message after the next one (0: in order)",
    )
    carrier.add_argument(
        "--twilio-auth-token", metavar="TOKEN", help="twilio: sign the upgrade with this token"
    )
    carrier.add_argument(
        "--telnyx-token", metavar="TOKEN", help="telnyx: send this streaming auth token"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def options_from_args(args: argparse.Namespace) -> CallOptions:
    """Build :class:`CallOptions` from parsed arguments; bad values raise ``ConfigError``."""
    return CallOptions(
        url=args.url,
        rate=args.rate or (CallOptions.rate if args.carrier == "vonage" else CARRIER_RATE),
        seconds=args.seconds,
        headers=parse_pairs(args.header, "--header"),
        wav=args.wav,
        tone_hz=args.tone,
        dtmf=args.dtmf,
        dtmf_at_s=args.dtmf_at,
        pause_at_s=args.pause_at,
        pause_s=args.pause,
        linger_s=args.linger,
        stamp=not args.no_stamp,
        record=args.record,
        record_sent=args.record_sent,
        connect_timeout_s=args.connect_timeout,
        measure_pacing=args.measure_pacing,
        extra_headers=parse_pairs(args.http_header, "--http-header", separator=":"),
        ca_file=args.ca_file,
        insecure=args.insecure,
        carrier=args.carrier,
        encoding=args.encoding,
        reorder_every=args.reorder_every,
        twilio_auth_token=args.twilio_auth_token,
        telnyx_token=args.telnyx_token,
    )


def _cli_call(args: argparse.Namespace) -> int:
    report = run(run_call(options_from_args(args)))
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_call_report(report))
    return 0 if report.completed else 1


def _cli_load(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if args.calls < 1:
        raise ConfigError(f"--calls must be >= 1, got {args.calls}")
    if args.procs < 1:
        raise ConfigError(f"--procs must be >= 1, got {args.procs}")
    freeze_startup_heap()
    try:
        report = run(run_load(opts, args.calls, args.ramp, procs=args.procs))
    except LoadProcessError as exc:
        sys.stderr.write(f"bridge: load failed: {exc}\n")
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_load_report(report))
    return 0 if report.calls_failed == 0 else 1


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``call URL`` and ``load URL --calls N``; each sets ``func(args) -> int``."""
    call = subparsers.add_parser(
        "call",
        help="play one Vonage (or --carrier) call against a bridge and report",
        description="Connect like Vonage, send paced 20 ms frames, measure what comes back.",
    )
    _add_call_arguments(call)
    call.set_defaults(func=_cli_call)
    load = subparsers.add_parser(
        "load",
        help="play N concurrent Vonage (or --carrier) calls and report aggregates",
        description=(
            "N simulated calls started evenly over --ramp, in one process or spread over "
            "--procs processes (one event loop and one sender each)."
        ),
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
    load.add_argument(
        "--procs",
        type=int,
        default=1,
        metavar="P",
        help="spread the calls over P processes (default 1); use one per spare core",
    )
    load.set_defaults(func=_cli_load)
