"""What bridge itself counted during a run: its ``/metrics``, read before and after.

The simulator measures from outside what it injected and what came back; bridge counts from
inside what it saw: inbound gaps (the same 40 ms threshold), its outbound pacing timer's
lateness, underruns, its outbound queue. Both sides in one report is how a user tells a
network problem from bridge's (README "Benchmark your voice agent"). The figures are
differences over the run, so a bridge serving other calls meanwhile counts those too;
histogram figures are bucket bounds, as Prometheus keeps them.

The "after" read waits (up to 3 s) until bridge has ended as many calls as the run made: a
call's last figures are counted when its socket closes.

Import rule: asyncio, urllib, prometheus_client's parser, ``bridge.sim.call`` (its
one-line errors) and ``bridge.sim.reports``.
"""

from __future__ import annotations

import asyncio
import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bridge.sim.call import one_line
from bridge.sim.reports import BridgeReport

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_TIMEOUT_S = 5.0
_SETTLE_S = 3.0


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - http(s) only (CallOptions)
        body: bytes = response.read()
    return body.decode()


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(url: str) -> Samples:
    return parse(await asyncio.to_thread(_fetch, url))


def _total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def _buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """``(le, cumulative count)`` of a histogram, by bound."""
    found = [
        (float(dict(labels)["le"]), value)
        for (n, labels), value in samples.items()
        if n == f"{name}_bucket" and "le" in dict(labels)
    ]
    merged: dict[float, float] = {}
    for le, value in found:  # several workers' series add up
        merged[le] = merged.get(le, 0.0) + value
    return sorted(merged.items())


def _quantile_bound(before: Samples, after: Samples, name: str, q: float) -> float | None:
    """The smallest bucket bound (ms) holding the ``q`` share of the run's observations."""
    old = dict(_buckets(before, name))
    new = _buckets(after, name)
    if not new:
        return None
    total = new[-1][1] - old.get(new[-1][0], 0.0)
    if total <= 0:
        return None
    for le, count in new:
        if count - old.get(le, 0.0) >= q * total - 1e-9:
            return None if math.isinf(le) else round(le * 1000, 3)
    return None


class BridgeWatch:
    """``/metrics`` at ``url`` before a run, then the differences after it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before: Samples | None = None
        self.error: str | None = None

    async def start(self) -> None:
        try:
            self.before = await scrape(self.url)
        except (OSError, ValueError) as exc:
            self.error = one_line(exc)

    async def report(self, calls: int) -> BridgeReport:
        before = self.before
        if before is None:
            return BridgeReport(url=self.url, error=self.error or "not read")
        try:
            after = await scrape(self.url)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + _SETTLE_S
            while _ended(before, after) < calls and loop.time() < give_up:
                await asyncio.sleep(0.1)
                after = await scrape(self.url)
        except (OSError, ValueError) as exc:
            return BridgeReport(url=self.url, error=one_line(exc))
        return difference(self.url, before, after)


def _ended(before: Samples, after: Samples) -> int:
    return round(_total(after, "bridge_calls_total") - _total(before, "bridge_calls_total"))


def difference(url: str, before: Samples, after: Samples) -> BridgeReport:
    """What bridge counted between two reads of its ``/metrics``."""

    def delta(name: str) -> int:
        return round(_total(after, name) - _total(before, name))

    gaps = delta("bridge_inbound_gap_seconds_count")
    return BridgeReport(
        url=url,
        calls=_ended(before, after),
        frames_in=delta("bridge_frames_in_total"),
        frames_out=delta("bridge_frames_out_total"),
        inbound_gaps=gaps,
        inbound_gap_max_le_ms=(
            _quantile_bound(before, after, "bridge_inbound_gap_seconds", 1.0) if gaps else None
        ),
        inbound_gap_total_ms=round(
            (
                _total(after, "bridge_inbound_gap_seconds_sum")
                - _total(before, "bridge_inbound_gap_seconds_sum")
            )
            * 1000,
            1,
        ),
        underrun_frames=delta("bridge_underrun_frames_total"),
        pacing_wakeups=delta("bridge_pacing_lateness_seconds_count"),
        pacing_error_p99_le_ms=_quantile_bound(
            before, after, "bridge_pacing_lateness_seconds", 0.99
        ),
        queue_max_le_ms=_quantile_bound(before, after, "bridge_playout_queue_seconds", 1.0),
    )
