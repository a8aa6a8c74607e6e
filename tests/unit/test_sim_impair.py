"""Network impairments on exact times: when each message of a path is delivered, and what
a delay line on the project's scheduler does with them (fake clock, no sockets)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.pacing import FakeClock, Scheduler
from bridge.sim.impair import GAP_NS, DelayLine, DelayModel, PathStats, RttTrend
from bridge.sim.options import Impairments
from bridge.units import FRAME_NS, MS, SECOND

START = 10 * SECOND


def deliveries(imp: Impairments, frames: int, seed: str = "0:0:send") -> list[int]:
    model = DelayModel(imp, seed, START)
    return [model.deliver_at(START + k * FRAME_NS) for k in range(frames)]


def test_a_clean_path_delivers_at_once() -> None:
    assert deliveries(Impairments(), 100) == [START + k * FRAME_NS for k in range(100)]


def test_bursts_hold_everything_then_release_it_at_once() -> None:
    imp = Impairments(burst_ms=200, burst_every_s=2.0)
    times = deliveries(imp, 350)  # 7 s of frames
    for m in (1, 2, 3):
        window = START + m * 2 * SECOND
        held = [
            t for k, t in enumerate(times) if window <= START + k * FRAME_NS < window + 200 * MS
        ]
        assert len(held) == 10
        assert set(held) == {window + 200 * MS}
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Three gaps of 200 ms plus the frame before the window: bridge counts what is over 40 ms.
    assert [g for g in gaps if g > GAP_NS] == [220 * MS] * 3
    assert sorted(set(gaps)) == [0, FRAME_NS, 220 * MS]


def test_a_stall_happens_once() -> None:
    times = deliveries(Impairments(stall_ms=500, stall_at_s=1.0), 150)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert [g for g in gaps if g > GAP_NS] == [520 * MS]
    assert times.count(START + 1500 * MS) == 26  # 25 held and the one due then


def test_jitter_is_reproducible_keeps_order_and_has_its_mean() -> None:
    imp = Impairments(jitter_ms=10, seed=7)
    first = deliveries(imp, 5000, "7:0:send")
    assert first == deliveries(imp, 5000, "7:0:send")
    assert first != deliveries(imp, 5000, "7:1:send")  # another call, other delays
    assert first == sorted(first)  # a TCP stream: nothing overtakes
    delays = [t - (START + k * FRAME_NS) for k, t in enumerate(first)]
    assert min(delays) >= 0 and max(delays) <= 100 * MS + 20 * MS
    # Exponential with a 10 ms mean; holding back behind a later frame adds a little.
    mean_ms = sum(delays) / len(delays) / MS
    assert 9 <= mean_ms <= 13


def test_an_inactive_path_is_clean_whatever_is_set() -> None:
    imp = Impairments(jitter_ms=30, burst_ms=200, burst_every_s=1.0, stall_ms=300)
    model = DelayModel(imp, "x", START, active=False)
    assert [model.deliver_at(START + k * FRAME_NS) for k in range(200)] == [
        START + k * FRAME_NS for k in range(200)
    ]


def test_drift_is_a_shorter_or_longer_frame() -> None:
    assert Impairments(drift_ppm=500).frame_ns(FRAME_NS) == 19_990_005
    assert Impairments(drift_ppm=-500).frame_ns(FRAME_NS) == 20_010_005
    # 60 s of a fast clock: 1.5 frames more than bridge's clock has slots for.
    assert 60 * SECOND // Impairments(drift_ppm=500).frame_ns(FRAME_NS) - 3000 == 1


def test_a_delay_line_on_the_scheduler_delivers_on_time_and_measures_gaps() -> None:
    clock = FakeClock(START)
    scheduler = Scheduler(clock, 0)
    delivered: list[tuple[Any, int]] = []
    stats = PathStats()

    def deliver(item: Any, at: int) -> None:
        delivered.append((item, at))
        stats.gap(clock.now_ns())

    line = DelayLine(
        DelayModel(Impairments(burst_ms=100, burst_every_s=1.0), "s", START), deliver, stats
    )
    for k in range(100):
        clock.set_ns(START + k * FRAME_NS)
        scheduler.service()
        wake = line.push(k, clock.now_ns())
        if wake is not None:
            scheduler.add(line, wake)
    clock.set_ns(START + 3 * SECOND)
    scheduler.service()
    assert [item for item, _ in delivered] == list(range(100))
    held = [at for item, at in delivered if 50 <= item < 55]
    assert held == [START + 1100 * MS] * 5
    assert stats.delayed == 5 and stats.messages == 100
    assert stats.gaps == 1 and stats.max_gap_ns == 120 * MS


def test_rtt_trend_compares_the_last_frames_with_the_first() -> None:
    trend = RttTrend()
    for i in range(99):
        trend.add(1 * MS + i * 1000)
    assert trend.drift_ns() is None
    trend.add(1 * MS + 99 * 1000)
    assert trend.drift_ns() == 50 * 1000


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"burst_ms": 200}, "needs --burst-every-s"),
        ({"burst_ms": 200, "burst_every_s": 0.1}, "longer than the burst"),
        ({"burst_every_s": 2.0}, "needs --burst-ms"),
        ({"jitter_ms": -1.0}, "jitter-ms"),
        ({"drift_ppm": 20_000.0}, "drift-ppm"),
        ({"stall_ms": -5}, "stall-ms"),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Impairments(**settings)
