"""Prometheus metrics (prometheus-client), kept off the per-frame path.

Nothing here runs per audio frame. The server calls :meth:`Metrics.sample` about once a second
(and once more when a call ends, and before every scrape): it reads each call's own counters
(``call.stats``, ``call.summary()``), adds the differences since the last look to the process
counters in one ``inc`` per metric, and observes one value per call for the per-call
histograms. Rare events (an inbound gap, a ``websocket:cleared``) are observed individually.
The pacing timer's lateness is observed once per timer wake-up (at most about a thousand a
second, whatever the number of calls).

With ``--workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before starting the
workers, prometheus-client's multiprocess mode writes every value to a file there, and any
worker's ``/metrics`` sums all of them (gauges of live processes only). Reading and summing
every worker's files takes milliseconds of pure Python (5 ms measured with five processes'
files), which on the event loop would stall every call, and in a thread would hold the GIL
as long: so a helper process renders them (:class:`_Renderer`: ``python -c`` with a pipe each
way, started at a worker's first scrape, gone when its pipe closes, so it never outlives its
worker, even one killed with SIGKILL) about once a second, when the call counters are
sampled, and a scrape answers with its latest render, at once. Single-process mode keeps values in memory and adds
the process collector (CPU, memory, open files); rendering those is cheap and stays inline.

Import rule: standard library, ``prometheus_client``, ``bridge.units``, ``bridge.call`` (types
only), ``bridge.transcript_post`` (its process-wide counters).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from bridge.transcript_post import POST_STATS, PostStats
from bridge.units import FRAME_MS

if TYPE_CHECKING:
    from bridge.call import Call, UpstreamCounters

log = logging.getLogger("bridge.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Outcomes of an upgraded websocket (the ``outcome`` label of ``bridge_calls_total``).
OUTCOMES = (
    "completed",
    "protocol_error",
    "first_message_timeout",
    "idle_timeout",
    "max_duration",
    "handler_error",
    "shutdown",
    "dropped",
)
#: Reasons an upgrade is refused (the ``reason`` label of ``bridge_upgrades_refused_total``).
REFUSALS = ("unauthorized", "capacity", "draining", "bad_handshake")

_MS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.0)
_GAP_BUCKETS = (0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
_FINE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_QUEUE_BUCKETS = (0.0, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


@dataclass
class CallMeter:
    """What :meth:`Metrics.sample` last saw of one call, so it adds only the difference."""

    frames_in: int = 0
    frames_out: int = 0
    inbound_dropped: int = 0
    underruns: int = 0
    upstream_reconnects: int = 0
    upstream_replayed_ms: float = 0.0
    upstream_lost_ms: float = 0.0
    service_errors: dict[str, int] = field(default_factory=dict)


class Metrics:
    """Every metric of one process, registered in a registry of its own."""

    def __init__(self) -> None:
        # The *_created series double the text and say nothing a restart counter doesn't.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_mode()
        self._renderer: _Renderer | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if not self.multiprocess:
            ProcessCollector(registry=r)
        self.calls_active = Gauge(
            "bridge_calls_active",
            "Calls in progress (websocket:connected received, socket not yet closed)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.calls = Counter(
            "bridge_calls",
            "Upgraded websockets, by how they ended",
            ["outcome"],
            registry=r,
        )
        self.refused = Counter(
            "bridge_upgrades_refused",
            "Websocket upgrades refused before any websocket existed, by reason",
            ["reason"],
            registry=r,
        )
        self.frames_in = Counter("bridge_frames_in", "20 ms frames received", registry=r)
        self.frames_out = Counter("bridge_frames_out", "20 ms frames sent", registry=r)
        self.inbound_dropped = Counter(
            "bridge_inbound_dropped_frames",
            "Inbound frames dropped because a handler fell more than 1 s behind",
            registry=r,
        )
        self.underruns = Counter(
            "bridge_underrun_frames",
            "Outbound 20 ms slots that passed with nothing queued, mid-stream",
            registry=r,
        )
        self.jitter = Histogram(
            "bridge_inbound_jitter_seconds",
            "RFC 3550 inter-arrival jitter of inbound audio; one observation per call per second",
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.gaps = Histogram(
            "bridge_inbound_gap_seconds",
            "Inbound inter-arrival gaps longer than two frames (40 ms); one per gap",
            buckets=_GAP_BUCKETS,
            registry=r,
        )
        self.pacing = Histogram(
            "bridge_pacing_lateness_seconds",
            "How late the outbound pacing timer fired after the earliest due frame",
            buckets=_FINE_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "bridge_playout_queue_seconds",
            "Outbound audio queued in bridge; one observation per call per second",
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.clear_to_cleared = Histogram(
            "bridge_clear_to_cleared_seconds",
            "Time from our clear to Vonage's websocket:cleared",
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.upstream_reconnects = Counter(
            "bridge_upstream_reconnects", "Upstream reconnections (forward mode)", registry=r
        )
        self.upstream_replayed = Counter(
            "bridge_upstream_replayed_seconds",
            "Caller audio replayed to the upstream after a reconnect (forward mode)",
            registry=r,
        )
        self.upstream_lost = Counter(
            "bridge_upstream_lost_seconds",
            "Caller audio the upstream never got (forward mode)",
            registry=r,
        )
        self.transcription_failures = Counter(
            "bridge_transcription_failures",
            "Calls whose transcription failed (the recogniser raised or its process died)",
            registry=r,
        )
        self.transcription_not_decoded = Counter(
            "bridge_transcription_not_decoded_seconds",
            "Caller audio the recogniser never decoded (overload or failure)",
            registry=r,
        )
        #: Counters fed from a mode's process-wide totals (``BuiltHandler.counters``).
        self._totals: dict[str, Counter] = {
            "transcription_failures": self.transcription_failures,
            "transcription_not_decoded_seconds": self.transcription_not_decoded,
        }
        self._totals_seen: dict[str, float] = {}
        self.service_errors = Counter(
            "bridge_upstream_service_errors",
            "Errors a speech service reported (error messages, closes, refusals), by service "
            "and by the service's own reason",
            ["source", "reason"],
            registry=r,
        )
        self.transcript_posts = Counter(
            "bridge_transcript_posts",
            "Final transcripts for --transcript-url: sent, failed after retries, or dropped "
            "from a full queue",
            ["result"],
            registry=r,
        )
        self._posts_seen = PostStats()
        self.loop_lag = Histogram(
            "bridge_event_loop_lag_seconds",
            "How late the event-loop watchdog's heartbeat (every 20 ms) ran",
            buckets=_FINE_BUCKETS,
            registry=r,
        )
        self.loop_stalls = Counter(
            "bridge_event_loop_stalls",
            "Times the event loop was blocked for 100 ms or more (each logged with its call)",
            registry=r,
        )
        self.tasks = Gauge(
            "bridge_event_loop_tasks",
            "asyncio tasks alive in the process (about one per call; sampled once a second)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Gauge(
            "bridge_connections",
            "TCP connections held by the call server, upgraded or not (sampled once a second)",
            registry=r,
            multiprocess_mode="livesum",
        )
        for result in ("sent", "failed", "dropped"):
            self.transcript_posts.labels(result)
        for outcome in OUTCOMES:
            self.calls.labels(outcome)
        for reason in REFUSALS:
            self.refused.labels(reason)

    def sample(self, calls: Iterable[tuple[Call, CallMeter]], per_second: bool = True) -> None:
        """Add what each call did since the last look; ``per_second`` also observes the
        per-call-second histograms (off for the extra look at a call's end or a scrape)."""
        frames_in = frames_out = dropped = underruns = reconnects = 0
        replayed_ms = lost_ms = 0.0
        for call, seen in calls:
            stats = call.stats
            frames_in += stats.frames_in - seen.frames_in
            frames_out += stats.frames_out - seen.frames_out
            dropped += stats.inbound_dropped - seen.inbound_dropped
            seen.frames_in, seen.frames_out = stats.frames_in, stats.frames_out
            seen.inbound_dropped = stats.inbound_dropped
            summary = call.summary()
            under = int(summary.get("underrun_frames", 0))
            underruns += under - seen.underruns
            seen.underruns = under
            # Forward mode's link counters (bridge.upstream.UpstreamStats), when it set them.
            rec, rep, lost = _upstream_figures(call.upstream_stats)
            reconnects += rec - seen.upstream_reconnects
            replayed_ms += rep - seen.upstream_replayed_ms
            lost_ms += lost - seen.upstream_lost_ms
            seen.upstream_reconnects, seen.upstream_replayed_ms = rec, rep
            seen.upstream_lost_ms = lost
            link = call.upstream_stats
            if link is not None and link.service_errors:
                for reason, count in link.service_errors.items():
                    new = count - seen.service_errors.get(reason, 0)
                    if new > 0:
                        self.service_errors.labels(link.source, reason).inc(new)
                        seen.service_errors[reason] = count
            gaps = stats.pending_gaps_ms
            while gaps:
                self.gaps.observe(gaps.popleft() / 1000)
            cleared = stats.pending_cleared_ms
            while cleared:
                self.clear_to_cleared.observe(cleared.popleft() / 1000)
            if per_second and not call.ended:
                if stats.frames_in > 1:
                    self.jitter.observe(stats.jitter_ms / 1000)
                self.queue.observe(call.queued_ms / 1000)
        for counter, amount in (
            (self.frames_in, frames_in),
            (self.frames_out, frames_out),
            (self.inbound_dropped, dropped),
            (self.underruns, underruns),
            (self.upstream_reconnects, reconnects),
        ):
            if amount > 0:
                counter.inc(amount)
        if replayed_ms > 0:
            self.upstream_replayed.inc(replayed_ms / 1000)
        if lost_ms > 0:
            self.upstream_lost.inc(lost_ms / 1000)
        self._sample_posts()

    def _sample_posts(self) -> None:
        """The process's transcript POST counters (``bridge.transcript_post``)."""
        seen = self._posts_seen
        for name in ("sent", "failed", "dropped"):
            new = getattr(POST_STATS, name) - getattr(seen, name)
            if new > 0:
                self.transcript_posts.labels(name).inc(new)
        for f in fields(PostStats):
            setattr(seen, f.name, getattr(POST_STATS, f.name))

    def sample_totals(self, totals: Mapping[str, float]) -> None:
        """Add what a mode's cumulative totals grew by since the last look (names unknown
        here are ignored)."""
        for name, value in totals.items():
            counter = self._totals.get(name)
            if counter is None:
                continue
            grown = value - self._totals_seen.get(name, 0.0)
            if grown > 0:
                counter.inc(grown)
                self._totals_seen[name] = value

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``: this process, or all workers' files.

        With ``--workers`` the answer is the helper process's latest render (at most about a
        second old, like the call counters it sums); only the first scrape of a worker, and
        a scrape while its helper is being replaced, renders here.
        """
        if not self.multiprocess:
            return generate_latest(self.registry)
        renderer = self._renderer
        if renderer is not None and renderer.failed:
            log.warning("metrics helper process failed: %s", renderer.failed)
            self.close()
            renderer = None
        if renderer is None:
            try:
                self._renderer = _Renderer()
            except (OSError, RuntimeError) as exc:  # no loop, or no process could start
                log.warning("cannot start the metrics helper process: %s", exc)
        elif renderer.latest is not None:
            return renderer.latest
        return render_multiprocess()

    def refresh(self) -> None:
        """Ask the helper for a new render (about once a second; no-op without one)."""
        if self._renderer is not None:
            self._renderer.request()

    def close(self) -> None:
        """Stop the render helper process, if one was started."""
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()


_LENGTH = struct.Struct("<Q")


class _Renderer:
    """A helper process that renders the multiprocess metrics on request, one at a time.

    Protocol: a newline on its stdin asks for a render; it answers on stdout with the
    length (8 bytes) and the text. It exits when its stdin closes (this process is gone).
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from bridge.metrics import render_loop; render_loop()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        self._fd = self._stdout.fileno()
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)
        self._buffer = bytearray()
        self._in_flight = False
        #: The last render, and why the helper stopped working (``None`` while it works).
        self.latest: bytes | None = None
        self.failed: str | None = None
        self.request()

    def request(self) -> None:
        if self._in_flight or self.failed:
            return
        try:
            self._stdin.write(b"\n")
            self._stdin.flush()
        except OSError as exc:
            self.failed = str(exc) or type(exc).__name__
            return
        self._in_flight = True

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        self._proc.kill()
        self._proc.wait()
        self._stdin.close()
        self._stdout.close()

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk, self.failed = b"", str(exc)
        if not chunk:
            self._loop.remove_reader(self._fd)
            self.failed = self.failed or "it exited"
            return
        self._buffer += chunk
        if len(self._buffer) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack_from(self._buffer)
        if len(self._buffer) < _LENGTH.size + size:
            return
        self.latest = bytes(self._buffer[_LENGTH.size : _LENGTH.size + size])
        del self._buffer[: _LENGTH.size + size]
        self._in_flight = False


def render_loop() -> None:
    """The helper process's main: one render per line on stdin, until stdin closes."""
    out = sys.stdout.buffer
    for _ in sys.stdin.buffer:
        text = render_multiprocess()
        out.write(_LENGTH.pack(len(text)) + text)
        out.flush()


def render_multiprocess() -> bytes:
    """Every worker's values summed, from the files in ``PROMETHEUS_MULTIPROC_DIR``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _upstream_figures(link: UpstreamCounters | None) -> tuple[int, float, float]:
    """(reconnects, replayed ms, lost ms) from an upstream link's counters."""
    if link is None:
        return 0, 0.0, 0.0
    reconnects = max(0, link.connects - 1)
    # Replayed: audio sent after a reconnect, whether resent (unconfirmed) or held back.
    chunk_ms = getattr(link, "chunk_ms", FRAME_MS)
    replayed_ms = float(link.frames_resent + link.frames_backlog) * chunk_ms
    lost_ms = float(link.frames_lost) * chunk_ms
    return reconnects, replayed_ms, lost_ms


def deviation_p99_ms(counts: list[int], bucket_ms: float) -> float | None:
    """The 99th percentile of per-frame deviations kept as counts of ``bucket_ms`` buckets
    (the bucket's upper edge: a figure never below the truth by more than a bucket)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = 0.99 * total
    seen = 0
    for index, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return round((index + 1) * bucket_ms, 3)
    return round(len(counts) * bucket_ms, 3)
