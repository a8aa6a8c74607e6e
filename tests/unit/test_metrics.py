"""bridge.metrics without a server: deltas added once, percentiles from bucket counts."""

from __future__ import annotations

from bridge.call import DEVIATION_BUCKET_MS, DEVIATION_BUCKETS, Call
from bridge.metrics import CallMeter, Metrics, deviation_p99_ms
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Connected
from bridge.upstream import UpstreamStats


class _IO:
    def send_binary(self, data: bytes) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


def _value(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def test_p99_from_counts() -> None:
    counts = [0] * DEVIATION_BUCKETS
    assert deviation_p99_ms(counts, DEVIATION_BUCKET_MS) is None
    counts[0] = 99
    counts[40] = 1  # one frame 10-10.25 ms off
    assert deviation_p99_ms(counts, DEVIATION_BUCKET_MS) == 0.25
    counts[40] = 2
    assert deviation_p99_ms(counts, DEVIATION_BUCKET_MS) == 10.25


def test_sample_adds_each_frame_once_and_drains_rare_events() -> None:
    clock = FakeClock()
    call = Call(Connected(16000), _IO(), Scheduler(clock, 100))
    metrics, seen = Metrics(), CallMeter()
    for k in range(10):
        clock.set_ns((k + (5 if k >= 5 else 0)) * 20_000_000)  # a 120 ms gap after frame 4
        call.feed_audio(bytes(640))
    metrics.sample([(call, seen)])
    metrics.sample([(call, seen)])  # nothing new: nothing added
    assert _value(metrics, "bridge_frames_in_total") == 10
    assert _value(metrics, "bridge_inbound_gap_seconds_count") == 1
    assert _value(metrics, "bridge_inbound_jitter_seconds_count") == 2
    assert call.stats.first_arrival_ns == 0 and call.stats.last_arrival_ns == 280_000_000
    assert sum(call.stats.deviation_counts) == 9
    assert call.stats.deviation_counts[min(100 * 4, DEVIATION_BUCKETS - 1)] == 1


def test_forward_mode_link_counters_become_metrics() -> None:
    call = Call(Connected(8000), _IO(), Scheduler(FakeClock(), 100))
    metrics, seen = Metrics(), CallMeter()
    link = UpstreamStats(connects=1)
    call.upstream_stats = link
    metrics.sample([(call, seen)])
    assert _value(metrics, "bridge_upstream_reconnects_total") == 0
    link.connects, link.frames_resent, link.frames_lost = 3, 10, 5
    metrics.sample([(call, seen)])
    metrics.sample([(call, seen)])
    assert _value(metrics, "bridge_upstream_reconnects_total") == 2
    assert _value(metrics, "bridge_upstream_replayed_seconds_total") == 0.2
    assert _value(metrics, "bridge_upstream_lost_seconds_total") == 0.1
