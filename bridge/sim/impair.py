"""Network impairments between the simulated caller and bridge, and what they did.

Each path (caller to bridge, bridge to caller) is a :class:`DelayLine`: every message is
held until the time its :class:`DelayModel` gives (jitter, bursts, a stall: see
``bridge.sim.options.Impairments``), never overtaking the one before, as on a TCP stream.
A delay line is a ``Paced`` item of the process's one scheduler (``bridge.pacing``), so
holding and releasing messages costs no task or timer of its own.

Drift is not a delay: the sender's frame length and the playback model's are the carrier's
(``Impairments.frame_ns``), so it sends and plays 500 ppm fast or slow for real.

What was injected is measured where it happens, on the real clock: the gaps the caller's
messages actually left with (bridge counts gaps over two frames, so the same threshold is
used here), the delays added, and what arrived from bridge before the receive path touched it.

Sans-I/O: times are given; delivery is a callback.

Import rule: standard library, ``bridge.stats``, ``bridge.units`` and ``bridge.sim.options``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.sim.options import Impairments
from bridge.stats import Histogram
from bridge.units import FRAME_NS, MS, SECOND

#: A gap: more than two frames between messages (bridge's own threshold, bridge/call.py).
GAP_NS = 2 * FRAME_NS
#: Jitter delays are capped at this many times their mean.
JITTER_CAP = 10


class DelayModel:
    """When each message of one path is delivered, given when it was sent."""

    def __init__(self, imp: Impairments, seed: str, start_ns: int, active: bool = True) -> None:
        self.rng = random.Random(seed)
        self.start_ns = start_ns
        self.jitter_ns = round(imp.jitter_ms * MS) if active else 0
        self.burst_ns = imp.burst_ms * MS if active else 0
        self.every_ns = round(imp.burst_every_s * SECOND)
        self.stall_from_ns = start_ns + round(imp.stall_at_s * SECOND)
        self.stall_to_ns = self.stall_from_ns + (imp.stall_ms * MS if active else 0)
        self.last_ns = 0

    def deliver_at(self, now_ns: int) -> int:
        at = now_ns
        if self.jitter_ns:
            mean = self.jitter_ns
            at += min(round(self.rng.expovariate(1 / mean)), JITTER_CAP * mean)
        if self.burst_ns:
            phase = at - self.start_ns
            if phase >= self.every_ns:
                window = self.start_ns + phase // self.every_ns * self.every_ns
                if at < window + self.burst_ns:  # noqa: PLR1730 - once per message
                    at = window + self.burst_ns
        if self.stall_from_ns <= at < self.stall_to_ns:
            at = self.stall_to_ns
        if at < self.last_ns:  # noqa: PLR1730 - order is kept, as on a TCP stream
            at = self.last_ns
        self.last_ns = at
        return at


@dataclass
class PathStats:
    """What one path did to its messages, and the gaps they actually had."""

    messages: int = 0
    delayed: int = 0
    delay: Histogram = field(default_factory=Histogram)
    gaps: int = 0
    max_gap_ns: int = 0
    last_ns: int = -1

    def gap(self, at_ns: int) -> None:
        if self.last_ns >= 0:
            gap = at_ns - self.last_ns
            if gap > GAP_NS:
                self.gaps += 1
            if gap > self.max_gap_ns:  # noqa: PLR1730
                self.max_gap_ns = gap
        self.last_ns = at_ns

    def merge(self, other: PathStats) -> None:
        self.messages += other.messages
        self.delayed += other.delayed
        self.delay.merge(other.delay)
        self.gaps += other.gaps
        self.max_gap_ns = max(self.max_gap_ns, other.max_gap_ns)


class DelayLine:
    """One path: messages held until their delivery time, released by the scheduler."""

    __slots__ = ("closed", "deliver", "model", "queue", "stats", "wake_ns")

    def __init__(
        self, model: DelayModel, deliver: Callable[[Any, int], None], stats: PathStats
    ) -> None:
        self.model = model
        self.deliver = deliver
        self.stats = stats
        self.queue: deque[tuple[int, Any]] = deque()
        self.wake_ns: int | None = None
        self.closed = False

    def push(self, item: Any, now_ns: int) -> int | None:
        """Send ``item`` through; returns when the line needs service (``None``: it was
        delivered at once)."""
        at = self.model.deliver_at(now_ns)
        stats = self.stats
        stats.messages += 1
        stats.delay.record(at - now_ns)
        if at > now_ns:
            stats.delayed += 1
        if at <= now_ns and not self.queue:
            self.deliver(item, now_ns)
            return None
        self.queue.append((at, item))
        return self.queue[0][0]

    def pump(self, now_ns: int) -> int | None:
        queue = self.queue
        while queue and queue[0][0] <= now_ns:
            at, item = queue.popleft()
            self.deliver(item, at)
        return queue[0][0] if queue else None


@dataclass
class ImpairStats:
    """Both paths, and the drift figures (merged over a load run's calls)."""

    send: PathStats = field(default_factory=PathStats)
    receive: PathStats = field(default_factory=PathStats)
    #: How far each message from bridge arrived from 20 ms after the one before, before the
    #: receive path touched it: bridge's outbound pacing seen from outside.
    arrival_jitter: Histogram = field(default_factory=lambda: Histogram(sub_bits=12))
    frames_sent: int = 0
    frames_received: int = 0
    #: From the first frame sent to the last, on bridge's clock (the real one).
    elapsed_ns: int = 0
    #: Echo round trip over the last frames minus over the first: a queue growing in bridge
    #: (the worst call of a load run).
    rtt_drift_ns: int | None = None

    def counter(self, name: str) -> Any:
        return getattr(self, name)

    def histogram(self, name: str) -> Histogram:
        hist: Histogram = getattr(self, name)
        return hist

    def merge(self, other: ImpairStats) -> None:
        self.send.merge(other.send)
        self.receive.merge(other.receive)
        self.arrival_jitter.merge(other.arrival_jitter)
        self.frames_sent += other.frames_sent
        self.frames_received += other.frames_received
        self.elapsed_ns = max(self.elapsed_ns, other.elapsed_ns)
        if other.rtt_drift_ns is not None and (
            self.rtt_drift_ns is None or abs(other.rtt_drift_ns) > abs(self.rtt_drift_ns)
        ):
            self.rtt_drift_ns = other.rtt_drift_ns


#: Round trips averaged at each end of a call for its drift.
TREND_WINDOW = 50


class RttTrend:
    """The mean echo round trip over the first and over the last frames of a call."""

    __slots__ = ("first", "first_n", "last", "n")

    def __init__(self) -> None:
        self.first = 0
        self.first_n = 0
        self.last = [0] * TREND_WINDOW
        self.n = 0

    def add(self, rtt_ns: int) -> None:
        if self.first_n < TREND_WINDOW:
            self.first += rtt_ns
            self.first_n += 1
        self.last[self.n % TREND_WINDOW] = rtt_ns
        self.n += 1

    def drift_ns(self) -> int | None:
        """Last window's mean minus the first's (``None`` before two full windows)."""
        if self.n < 2 * TREND_WINDOW:
            return None
        return sum(self.last) // TREND_WINDOW - self.first // TREND_WINDOW
