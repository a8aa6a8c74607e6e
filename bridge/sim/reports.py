"""What the simulator reports: one report type per measurement, each one table of fields.

* :class:`CallReport`: one call (frames, echo round trips, jitter, events, playback);
* :class:`LoadReport`: many calls, with the load generator's own health;
* :class:`TurnReport`: a conversation (turn latency, barge-in reaction), per call or merged;
* :class:`ImpairmentReport`: the network impairments injected and what they did;
* :class:`BridgeReport`: what bridge itself counted meanwhile (its ``/metrics``).

Every figure is declared once with ``bridge.sim.fields.metric``: its text line, unit,
meaning and source; the JSON, the text and the HTML tables come from that declaration.
Times are in ms unless the name says otherwise.

Import rule: standard library, ``bridge.stats``, ``bridge.units`` and ``bridge.sim.fields``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.sim.fields import (
    Count,
    Derived,
    Max,
    OverCalls,
    Pct,
    Sum,
    metric,
    show,
    text_lines,
    to_dict,
)
from bridge.units import FRAME_NS

#: Sender lateness p99 (or event loop lag p99) above this means the client could not keep its
#: own schedule, or read what came back in time, so its latencies include its own queueing.
OVERLOAD_LATENESS_MS = 2.0


def overloaded(late99_ms: float | None, lag99_ms: float | None) -> bool:
    return any(v is not None and v > OVERLOAD_LATENESS_MS for v in (late99_ms, lag99_ms))


#: Text lines about echoes, left out of a conversation's report (JSON keeps them).
ECHO_LINES = ("echo", "exact", "round trip", "late")


def _overload_line(late99: float | None, lag99: float | None) -> list[str]:
    if not overloaded(late99, lag99):
        return []
    return [
        f"WARNING: client overloaded (sender lateness p99 {show(late99)} ms, event loop lag "
        f"p99 {show(lag99)} ms; limit {OVERLOAD_LATENESS_MS:g} ms): its latency figures are "
        "not trustworthy"
    ]


# --- a conversation ------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnReport:
    """Turn-taking with a voice agent (``bridge.sim.turns``), judged on the playout clock."""

    turns: int = metric(0, "turns", "planned", help="utterances the caller was to say")
    turns_done: int = metric(
        0, "turns", "done", source=Count("turns_done"), help="turns whose outcome is known"
    )
    answered: int = metric(
        0,
        "turns",
        "answered",
        source=Count("answered"),
        help="turns the agent answered (speech heard within the answer timeout)",
    )
    unanswered: int = metric(
        0, "turns", "unanswered", source=Count("unanswered"), help="turns with no answer"
    )
    overlaps: int = metric(
        0,
        "turns",
        "agent talking at end",
        source=Count("overlaps"),
        help="turns where the agent was still talking when the caller stopped",
    )
    latency_p50_ms: float | None = metric(
        None,
        "latency",
        "p50",
        unit="ms",
        source=Pct("latency", 50),
        help="turn latency: the caller's last speech sample to the first of the agent's "
        "answer, as heard (median)",
    )
    latency_p95_ms: float | None = metric(
        None, "latency", "p95", unit="ms", source=Pct("latency", 95), help="turn latency, p95"
    )
    latency_max_ms: float | None = metric(
        None, "latency", "max", unit="ms", source=Max("latency"), help="turn latency, worst"
    )
    barge_ins: int = metric(
        0,
        "barge-in",
        "tried",
        source=Count("barge_ins"),
        help="utterances started over the agent's answer (--barge-in-after-ms)",
    )
    barge_in_stopped: int = metric(
        0,
        "barge-in",
        "stopped",
        source=Count("barge_in_stopped"),
        help="barge-ins after which the agent's audio stopped",
    )
    barge_in_cleared: int = metric(
        0,
        "barge-in",
        "by clear",
        source=Count("barge_in_cleared"),
        help="of those, stopped by a clear of the caller's buffer",
    )
    barge_in_not_talking: int = metric(
        0,
        "barge-in",
        "agent silent",
        source=Count("barge_in_not_talking"),
        help="barge-ins that found the agent already silent",
    )
    barge_in_not_stopped: int = metric(
        0,
        "barge-in",
        "not stopped",
        source=Count("barge_in_not_stopped"),
        help="barge-ins the agent talked through until the turn ended",
    )
    barge_in_p50_ms: float | None = metric(
        None,
        "reaction",
        "p50",
        unit="ms",
        source=Pct("barge_in", 50),
        help="barge-in reaction: the caller's first speech sample to the end of the agent's "
        "last one heard (median)",
    )
    barge_in_p95_ms: float | None = metric(
        None, "reaction", "p95", unit="ms", source=Pct("barge_in", 95), help="reaction, p95"
    )
    barge_in_max_ms: float | None = metric(
        None, "reaction", "max", unit="ms", source=Max("barge_in"), help="reaction, worst"
    )
    threshold_dbfs: float = metric(
        -40.0, "settings", "speech threshold", unit="dBFS", help="a sample at this level is speech"
    )
    gap_ms: int = metric(
        300, "settings", "gap", unit="ms", help="a shorter silence does not end speech"
    )
    pause_ms: int = metric(
        0, "settings", "pause", unit="ms", help="silence before the caller speaks again"
    )
    barge_in_after_ms: int | None = metric(
        None,
        "settings",
        "barge in after",
        unit="ms",
        help="the caller barges in this far into the answer",
    )
    rows: tuple[Any, ...] = metric((), None, help="one row per turn (ms since the call started)")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def text(self) -> list[str]:
        lines = text_lines(self)
        if self.rows:
            lines.append(
                "turn  speech ends  answer heard  latency  reply ends  barge-in  reaction  stopped by"
            )
            lines += [
                f"{r.turn:>4}  {show(r.speech_end_ms):>11}  {show(r.answer_start_ms):>12}  "
                f"{show(r.latency_ms):>7}  {show(r.reply_end_ms):>10}  "
                f"{show(r.barge_in):>8}  {show(r.barge_in_ms):>8}  {r.stopped_by or '-'}"
                for r in self.rows
            ]
        return lines


# --- network impairments -------------------------------------------------------------------


def _path_delay(path: str, q: float | None) -> Derived:
    def value(stats: Any) -> float | None:
        hist = getattr(stats, path).delay
        if not hist.count:
            return None
        value = hist.max_ns if q is None else hist.percentile_ns(q)
        return None if value is None else round(value / 1e6, 3)

    return Derived(value)


def _path_count(path: str, name: str) -> Derived:
    return Derived(lambda stats: getattr(getattr(stats, path), name))


def _path_max_gap(path: str) -> Derived:
    return Derived(lambda stats: round(getattr(stats, path).max_gap_ns / 1e6, 3))


@dataclass(frozen=True)
class ImpairmentReport:
    """The impairments set, what they did to each path, and the clocks' drift."""

    jitter_ms: float = metric(0.0, "settings", "jitter", unit="ms", help="mean added delay")
    burst_ms: int = metric(
        0, "settings", "burst", unit="ms", help="nothing delivered for this long..."
    )
    burst_every_s: float = metric(0.0, "settings", "every", unit="s", help="...every this often")
    stall_ms: int = metric(0, "settings", "stall", unit="ms", help="one stall this long...")
    stall_at_s: float = metric(0.0, "settings", "at", unit="s", help="...this far into the call")
    drift_ppm: float = metric(
        0.0, "settings", "drift", unit="ppm", help="the carrier's clock is this much fast"
    )
    paths: str = metric("both", "settings", "paths", help="where impairments apply")
    seed: int = metric(0, "settings", "seed", help="the same seed gives the same delays")
    sent_gaps: int = metric(
        0,
        "sent",
        "gaps",
        source=_path_count("send", "gaps"),
        help="gaps over 40 ms between the caller's messages as they left (bridge counts the same)",
    )
    sent_max_gap_ms: float = metric(
        0.0, "sent", "max gap", unit="ms", source=_path_max_gap("send"), help="the longest"
    )
    sent_delayed: int = metric(
        0, "sent", "delayed", source=_path_count("send", "delayed"), help="messages held back"
    )
    sent_delay_p50_ms: float | None = metric(
        None, "sent", "delay p50", unit="ms", source=_path_delay("send", 50), help="added delay"
    )
    sent_delay_p99_ms: float | None = metric(
        None, "sent", "p99", unit="ms", source=_path_delay("send", 99), help="added delay, p99"
    )
    sent_delay_max_ms: float | None = metric(
        None, "sent", "max", unit="ms", source=_path_delay("send", None), help="added delay, max"
    )
    received_gaps: int = metric(
        0,
        "received",
        "gaps",
        source=_path_count("receive", "gaps"),
        help="gaps over 40 ms in what bridge sent, as it arrived (before the receive path)",
    )
    received_max_gap_ms: float = metric(
        0.0, "received", "max gap", unit="ms", source=_path_max_gap("receive"), help="the longest"
    )
    arrival_jitter_p99_ms: float | None = metric(
        None,
        "received",
        "jitter p99",
        unit="ms",
        source=Pct("arrival_jitter", 99),
        help="how far bridge's messages arrived from 20 ms after the one before (p99)",
    )
    received_delayed: int = metric(
        0,
        "received",
        "delayed",
        source=_path_count("receive", "delayed"),
        help="messages held back",
    )
    received_delay_p99_ms: float | None = metric(
        None,
        "received",
        "delay p99",
        unit="ms",
        source=_path_delay("receive", 99),
        help="added delay, p99",
    )
    frames_sent: int = metric(
        0, "drift", "frames sent", source=Count("frames_sent"), help="frames the caller sent"
    )
    elapsed_s: float = metric(
        0.0,
        "drift",
        "over",
        unit="s",
        source=Derived(lambda s: round(s.elapsed_ns / 1e9, 3)),
        help="from the first frame sent to the last, on bridge's clock",
    )
    frames_at_20ms: int = metric(
        0,
        "drift",
        "at 20 ms",
        source=Derived(lambda s: s.elapsed_ns // FRAME_NS + 1 if s.frames_sent else 0),
        help="frames a clock without drift would have sent meanwhile",
    )
    frames_received: int = metric(
        0,
        "drift",
        "frames received",
        source=Count("frames_received"),
        help="frames bridge sent back",
    )
    rtt_drift_ms: float | None = metric(
        None,
        "drift",
        "round trip rise",
        unit="ms",
        source=Derived(
            lambda s: None if s.rtt_drift_ns is None else round(s.rtt_drift_ns / 1e6, 3)
        ),
        help="echo round trip over the last 50 frames minus the first 50: a queue growing in bridge",
    )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def text(self) -> list[str]:
        return text_lines(self)


# --- what bridge counted -------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeReport:
    """bridge's own counters over the run: ``/metrics`` read before and after (differences).

    Histogram figures are bucket bounds (bridge keeps buckets, not values): "p99 <= 2 ms"
    means 99 % of the observations were in buckets up to 2 ms.
    """

    url: str = metric("", None, help="the /metrics URL read")
    error: str | None = metric(None, "bridge", "error", help="why /metrics could not be read")
    calls: int | None = metric(None, "bridge", "calls ended", help="calls bridge ended meanwhile")
    frames_in: int | None = metric(None, "bridge", "frames in", help="frames bridge received")
    frames_out: int | None = metric(None, "bridge", "frames out", help="frames bridge sent")
    inbound_gaps: int | None = metric(
        None, "inbound", "gaps", help="inbound gaps over 40 ms bridge counted"
    )
    inbound_gap_max_le_ms: float | None = metric(
        None, "inbound", "longest <=", unit="ms", help="the longest gap, as its bucket's bound"
    )
    inbound_gap_total_ms: float | None = metric(
        None, "inbound", "total", unit="ms", help="all the gaps together"
    )
    underrun_frames: int | None = metric(
        None,
        "outbound",
        "underruns",
        help="20 ms slots bridge had nothing to send for, mid-stream",
    )
    pacing_wakeups: int | None = metric(
        None, "outbound", "pacing wake-ups", help="times bridge's pacing timer fired"
    )
    pacing_error_p99_le_ms: float | None = metric(
        None,
        "outbound",
        "pacing error p99 <=",
        unit="ms",
        help="how late bridge's pacing timer fired after the frames it was due to send (p99)",
    )
    queue_max_le_ms: float | None = metric(
        None,
        "outbound",
        "queue max <=",
        unit="ms",
        help="the most outbound audio queued in bridge at a once-a-second look",
    )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def text(self) -> list[str]:
        return text_lines(self)


# --- one call ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallReport:
    """What one call measured."""

    url: str = metric("", None, help="the websocket URL called")
    rate: int = metric(0, None, help="the call's sample rate (Hz)")
    connected: bool = metric(False, None, help="the websocket opened")
    error: str | None = metric(None, None, help="what went wrong, in one line")
    completed: bool = metric(False, None, help="closed normally (1000) with nothing wrong")
    frames_sent: int = metric(0, "frames", "sent", source=Count("frames_sent"), help="frames sent")
    frames_received: int = metric(
        0, "frames", "received", source=Count("frames_received"), help="frames received"
    )
    bad_frames: int = metric(
        0, "frames", "bad size", source=Count("bad_frames"), help="frames Vonage would refuse"
    )
    exact: bool = metric(
        False,
        "exact",
        "",
        source=Count("exact"),
        help="every frame came back byte for byte, once, in order",
    )
    frames_matched: int = metric(
        0,
        "echo",
        "matched",
        source=Count("frames_matched"),
        help="echoes matched to a frame sent",
    )
    frames_lost: int = metric(
        0, "echo", "lost", source=Count("frames_lost"), help="frames that never came back"
    )
    frames_not_exact: int = metric(
        0,
        "echo",
        "not exact",
        source=Count("frames_not_exact"),
        help="frames that came back changed",
    )
    out_of_order: int = metric(
        0, "echo", "out of order", source=Count("out_of_order"), help="echoes out of order"
    )
    rtt_p50_ms: float | None = metric(
        None, "round trip", "p50", unit="ms", source=Pct("rtt", 50), help="echo round trip"
    )
    rtt_p99_ms: float | None = metric(
        None, "round trip", "p99", unit="ms", source=Pct("rtt", 99), help="echo round trip, p99"
    )
    rtt_max_ms: float | None = metric(
        None, "round trip", "max", unit="ms", source=Max("rtt"), help="echo round trip, max"
    )
    jitter_p50_ms: float | None = metric(
        None,
        "jitter",
        "p50",
        unit="ms",
        source=Pct("jitter", 50),
        help="how far each frame received arrived from 20 ms after the one before",
    )
    jitter_p99_ms: float | None = metric(
        None, "jitter", "p99", unit="ms", source=Pct("jitter", 99), help="jitter, p99"
    )
    jitter_max_ms: float | None = metric(
        None, "jitter", "max", unit="ms", source=Max("jitter"), help="jitter, max"
    )
    rfc3550_jitter_ms: float | None = metric(
        None,
        "jitter",
        "RFC 3550",
        unit="ms",
        source=Count("rfc3550_jitter_ms"),
        help="the RTP interarrival jitter estimate at the end",
    )
    lateness_p99_ms: float | None = metric(
        None,
        "lateness",
        "p99",
        unit="ms",
        source=Pct("lateness", 99),
        help="how late the simulator sent its own frames (its health), p99",
    )
    lateness_max_ms: float | None = metric(
        None, "lateness", "max", unit="ms", source=Max("lateness"), help="sender lateness, max"
    )
    client_overloaded: bool = metric(
        False,
        None,
        source=Count("client_overloaded"),
        help="the simulator could not keep its schedule: its figures are not trustworthy",
    )
    dtmf_sent: int = metric(0, "events", "dtmf sent", source=Count("dtmf_sent"), help="DTMF sent")
    text_events: tuple[str, ...] = metric(
        (), None, source=Count("text_events"), help="text messages received (the first 1000)"
    )
    text_events_total: int = metric(
        0,
        "events",
        "text received",
        source=Count("text_events_total"),
        help="text messages received",
    )
    clears: int = metric(0, "events", "clear", source=Count("clears"), help="clears received")
    notifies: int = metric(
        0, "events", "notify", source=Count("notifies"), help="notifies received"
    )
    notifies_answered: int = metric(
        0,
        "events",
        "answered",
        source=Count("notifies_answered"),
        help="notifies answered when played",
    )
    notifies_dropped: int = metric(
        0, "events", "dropped", source=Count("notifies_dropped"), help="notifies a clear dropped"
    )
    unknown_commands: int = metric(
        0,
        "events",
        "unknown",
        source=Count("unknown_commands"),
        help="text Vonage would not understand",
    )
    frames_cleared: int = metric(
        0,
        "playback",
        "cleared",
        unit="frames",
        source=Count("frames_cleared"),
        help="frames a clear dropped unplayed",
    )
    heard_at_clears_ms: tuple[float, ...] = metric(
        (), None, source=Count("heard_at_clears_ms"), help="at each clear: ms of audio heard so far"
    )
    playback_overflow_frames: int = metric(
        0,
        "playback",
        "overflow",
        unit="frames",
        source=Count("playback_overflow_frames"),
        help="frames past Vonage's buffer",
    )
    playback_peak_ms: int = metric(
        0,
        "playback",
        "peak",
        unit="ms",
        source=Count("playback_peak_ms"),
        help="the most audio buffered for the caller",
    )
    close_code: int | None = metric(None, None, help="the websocket close code")
    close_reason: str = metric("", None, help="the close reason")
    closed_by: str | None = metric(None, None, help="who closed first: server or simulator")
    connect_ms: float | None = metric(None, None, help="connecting and the upgrade")
    duration_s: float = metric(0.0, None, help="from connected to closed")
    frames_late_20ms: int = metric(
        0, "late", "over 20 ms", source=Count("frames_late_20ms"), help="echoes later than 20 ms"
    )
    frames_late_50ms: int = metric(
        0, "late", "over 50 ms", source=Count("frames_late_50ms"), help="echoes later than 50 ms"
    )
    frames_late_100ms: int = metric(
        0, "late", "over 100 ms", source=Count("frames_late_100ms"), help="echoes later than 100 ms"
    )
    lateness_p50_ms: float | None = metric(
        None, "lateness", "p50", unit="ms", source=Pct("lateness", 50), help="sender lateness"
    )
    loop_lag_p99_ms: float | None = metric(
        None,
        "lateness",
        "event loop lag p99",
        unit="ms",
        source=Pct("loop_lag", 99),
        help="how late the simulator's timer ran (its health)",
    )
    pacing_error_p50_ms: float | None = metric(
        None,
        "pacing",
        "error p50",
        unit="ms",
        source=Count("pacing_error_p50_ms"),
        help="--measure-pacing: how far frames arrived from a drift-free 20 ms grid",
    )
    pacing_error_p99_ms: float | None = metric(
        None,
        "pacing",
        "p99",
        unit="ms",
        source=Count("pacing_error_p99_ms"),
        help="pacing error, p99",
    )
    pacing_error_max_ms: float | None = metric(
        None,
        "pacing",
        "max",
        unit="ms",
        source=Count("pacing_error_max_ms"),
        help="pacing error, max",
    )
    pacing_drift_ms: float | None = metric(
        None,
        "pacing",
        "drift",
        unit="ms",
        source=Count("pacing_drift_ms"),
        help="how far the grid moved from the first second to the last",
    )
    turns: TurnReport | None = metric(None, None, help="--turns: the conversation")
    impairments: ImpairmentReport | None = metric(
        None, None, help="the impairments and their effect"
    )
    bridge: BridgeReport | None = metric(None, None, help="--metrics-url: what bridge counted")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def text(self) -> str:
        """A short human-readable summary."""
        if not self.connected:
            return f"call {self.url}: could not connect: {self.error}"
        # A conversation's far end is an agent, not an echo: its echo figures mean nothing.
        skip = ECHO_LINES if self.turns is not None else ()
        lines = [
            f"call {self.url}  rate {self.rate}  connected in {show(self.connect_ms)} ms  "
            f"lasted {self.duration_s:.2f} s",
            *text_lines(self, skip=skip),
            f"close      {self.close_code} {self.close_reason!r} by "
            f"{self.closed_by or 'nobody (dropped)'}"
            + (f"  error: {self.error}" if self.error else ""),
        ]
        lines += _sections(self.turns, self.impairments, self.bridge)
        return "\n".join(lines + _overload_line(self.lateness_p99_ms, self.loop_lag_p99_ms))


def _sections(*reports: Any) -> list[str]:
    titles = {
        TurnReport: "conversation",
        ImpairmentReport: "impairments",
        BridgeReport: "bridge's own counters (/metrics)",
    }
    out: list[str] = []
    for report in reports:
        if report is not None:
            out += ["", f"-- {titles[type(report)]}", *report.text()]
    return out


# --- load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """N concurrent calls, aggregated. Percentiles merge every call's histogram.

    ``call_jitter_*`` and ``pacing_*`` describe the spread over calls of one figure per call
    (its inbound jitter p99, its pacing error): median call and worst call.
    """

    url: str = metric("", None, help="the websocket URL called")
    calls: int = metric(0, "calls", "made", source=Count("calls"), help="calls made")
    calls_connected: int = metric(
        0, "calls", "connected", source=Sum("connected"), help="calls whose websocket opened"
    )
    calls_ok: int = metric(0, "calls", "ok", source=Sum("completed"), help="calls that completed")
    calls_failed: int = metric(
        0,
        "calls",
        "failed",
        source=Derived(lambda p: p.counter("calls") - p.counter("sum:completed")),
        help="calls that did not complete",
    )
    calls_exact: int = metric(
        0, "calls", "exact", source=Sum("exact"), help="calls whose every echo was exact"
    )
    frames_sent: int = metric(0, "frames", "sent", source=Sum("frames_sent"), help="frames sent")
    frames_received: int = metric(
        0, "frames", "received", source=Sum("frames_received"), help="frames received"
    )
    frames_lost: int = metric(
        0, "echo", "lost", source=Sum("frames_lost"), help="frames that never came back"
    )
    bad_frames: int = metric(
        0, "frames", "bad size", source=Sum("bad_frames"), help="frames Vonage would refuse"
    )
    rtt_p50_ms: float | None = metric(
        None, "round trip", "p50", unit="ms", source=Pct("rtt", 50), help="echo round trip"
    )
    rtt_p99_ms: float | None = metric(
        None, "round trip", "p99", unit="ms", source=Pct("rtt", 99), help="echo round trip, p99"
    )
    rtt_max_ms: float | None = metric(
        None, "round trip", "max", unit="ms", source=Max("rtt"), help="echo round trip, max"
    )
    jitter_p99_ms: float | None = metric(
        None,
        "jitter",
        "p99",
        unit="ms",
        source=Pct("jitter", 99),
        help="inbound jitter, all frames",
    )
    worst_call_jitter_p99_ms: float | None = metric(
        None,
        "jitter",
        "worst call p99",
        unit="ms",
        source=OverCalls("jitter_p99_ms"),
        help="the worst call's jitter p99",
    )
    lateness_p99_ms: float | None = metric(
        None,
        "lateness",
        "p99",
        unit="ms",
        source=Pct("lateness", 99),
        help="how late the generator sent its frames (its health)",
    )
    lateness_max_ms: float | None = metric(
        None, "lateness", "max", unit="ms", source=Max("lateness"), help="sender lateness, max"
    )
    client_overloaded: bool = metric(
        False,
        None,
        source=Count("client_overloaded"),
        help="the generator could not keep its schedule: its figures are not trustworthy",
    )
    close_codes: Mapping[str, int] = metric(
        None, None, source=Count("close_codes"), factory=dict, help="close codes: calls"
    )
    errors: Mapping[str, int] = metric(
        None, None, source=Count("errors"), factory=dict, help="errors: calls"
    )
    ramp_s: float = metric(0.0, None, help="the calls started evenly over this long")
    duration_s: float = metric(0.0, None, help="the whole run")
    procs: int = metric(1, None, help="load processes")
    frames_not_exact: int = metric(
        0,
        "echo",
        "not exact",
        source=Sum("frames_not_exact"),
        help="frames that came back changed",
    )
    out_of_order: int = metric(
        0, "echo", "out of order", source=Sum("out_of_order"), help="echoes out of order"
    )
    frames_late_20ms: int = metric(
        0, "late", "over 20 ms", source=Sum("frames_late_20ms"), help="echoes later than 20 ms"
    )
    frames_late_50ms: int = metric(
        0, "late", "over 50 ms", source=Sum("frames_late_50ms"), help="echoes later than 50 ms"
    )
    frames_late_100ms: int = metric(
        0, "late", "over 100 ms", source=Sum("frames_late_100ms"), help="echoes later than 100 ms"
    )
    rtt_p90_ms: float | None = metric(
        None, "round trip", "p90", unit="ms", source=Pct("rtt", 90), help="echo round trip, p90"
    )
    rtt_p999_ms: float | None = metric(
        None,
        "round trip",
        "p99.9",
        unit="ms",
        source=Pct("rtt", 99.9),
        help="echo round trip, p99.9",
    )
    lateness_p50_ms: float | None = metric(
        None, "lateness", "p50", unit="ms", source=Pct("lateness", 50), help="sender lateness"
    )
    loop_lag_p99_ms: float | None = metric(
        None,
        "lateness",
        "event loop lag p99",
        unit="ms",
        source=Pct("loop_lag", 99),
        help="how late the generator's timer ran (its health)",
    )
    call_jitter_p50_ms: float | None = metric(
        None,
        "jitter",
        "median call p99",
        unit="ms",
        source=OverCalls("jitter_p99_ms", 50),
        help="the median call's jitter p99",
    )
    worst_call_rfc3550_jitter_ms: float | None = metric(
        None,
        "jitter",
        "worst call RFC 3550",
        unit="ms",
        source=OverCalls("rfc3550_jitter_ms"),
        help="the worst call's RFC 3550 jitter",
    )
    pacing_error_p50_ms: float | None = metric(
        None,
        "pacing",
        "error p50",
        unit="ms",
        source=OverCalls("pacing_error_p50_ms", 50),
        help="--measure-pacing: the median call's pacing error p50",
    )
    pacing_error_p99_ms: float | None = metric(
        None,
        "pacing",
        "p99",
        unit="ms",
        source=OverCalls("pacing_error_p99_ms", 50),
        help="the median call's pacing error p99",
    )
    worst_call_pacing_error_p99_ms: float | None = metric(
        None,
        "pacing",
        "worst call p99",
        unit="ms",
        source=OverCalls("pacing_error_p99_ms"),
        help="the worst call's pacing error p99",
    )
    pacing_error_max_ms: float | None = metric(
        None,
        "pacing",
        "max",
        unit="ms",
        source=OverCalls("pacing_error_max_ms"),
        help="pacing error, max",
    )
    pacing_drift_max_ms: float | None = metric(
        None,
        "pacing",
        "drift max",
        unit="ms",
        source=OverCalls("pacing_drift_ms"),
        help="the most any call's grid moved",
    )
    client_cpu_s: float | None = metric(
        None,
        "generator",
        "CPU",
        unit="s",
        source=Derived(lambda p: round(p.counter("cpu_s"), 3)),
        help="CPU the load generator's own processes used (user + system)",
    )
    turns: TurnReport | None = metric(None, None, help="--turns: every call's turns together")
    impairments: ImpairmentReport | None = metric(None, None, help="the impairments, all calls")
    bridge: BridgeReport | None = metric(None, None, help="--metrics-url: what bridge counted")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def text(self) -> str:
        """A short human-readable summary of a load run."""
        procs = f" in {self.procs} processes" if self.procs > 1 else ""
        skip = ECHO_LINES if self.turns is not None else ()
        lines = [
            f"load {self.url}  {self.calls} calls{procs} over {self.ramp_s:.2f} s ramp, "
            f"lasted {self.duration_s:.2f} s",
            *text_lines(self, skip=skip),
            "close      "
            + (", ".join(f"{k}: {v}" for k, v in sorted(self.close_codes.items())) or "-"),
        ]
        lines += [f"error      {n} x {e}" for e, n in self.errors.items()]
        lines += _sections(self.turns, self.impairments, self.bridge)
        return "\n".join(lines + _overload_line(self.lateness_p99_ms, self.loop_lag_p99_ms))


def format_call_report(report: CallReport) -> str:
    return report.text()


def format_load_report(report: LoadReport) -> str:
    return report.text()
