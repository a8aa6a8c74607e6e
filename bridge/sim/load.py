"""Many simulated calls at once: the load generator.

Calls start evenly over a ramp, each on its own phase of the 20 ms grid (``phase_ns``: as
real calls' grids, which start whenever the phone was answered; ``ramp * i / calls`` alone put
200 calls over a 2 s ramp on two phases, so the server saw 100 frames arrive at once, twice
every 20 ms), in one process or spread over several (``procs``), each
process with its own uvloop loop and one :class:`~bridge.pacer.Pacer` serving every call's
frames. What a call measured is folded into its process's :class:`LoadPart` as soon as the
call ends (counters, histograms: bounded however many calls run), and the parent merges the
parts. A load process freezes its imports out of the garbage collector's way: a full
collection used to stall every sender for 10-20 ms.

The generator reports its own health (its send lateness and event-loop lag): when either p99
exceeds 2 ms it says so, and its figures are not to be trusted. About 30 us of CPU per frame
sent and echoed, over half of it the kernel's socket calls.

Import rule: asyncio, multiprocessing, ``bridge.errors``, ``bridge.pacer``, ``bridge.pacing``,
``bridge.runtime``, ``bridge.stats``, ``bridge.units`` and ``bridge.sim``.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError, ConfigError
from bridge.pacer import Pacer
from bridge.pacing import MonotonicClock
from bridge.runtime import freeze_startup_heap, run
from bridge.sim.call import (
    EARLY_NS,
    CallHistograms,
    Prepared,
    SimulatedCall,
    impairment_report,
    one_line,
    turn_report,
)
from bridge.sim.client import CLOSE_TIMEOUT_S
from bridge.sim.fields import OverCalls, Sum, build, declared, ms
from bridge.sim.impair import ImpairStats
from bridge.sim.options import CallOptions, scale_ns
from bridge.sim.reports import CallReport, LoadReport, overloaded
from bridge.sim.timeline import Timeline
from bridge.sim.turns import TurnStats
from bridge.stats import Histogram
from bridge.units import FRAME_NS, MS, SECOND

_MAX_ERRORS_KEPT = 20
#: Load processes must be up (imports done) within this; they all start together after it.
_PROC_START_TIMEOUT_S = 60.0
_PROC_START_MARGIN_NS = 100 * MS

#: The per-call figures a load run adds up, and those whose spread over calls it reports
#: (from LoadReport's declarations: one place).
_SUMS = tuple(m.source.field for _, m in declared(LoadReport) if isinstance(m.source, Sum))
_OVER = tuple(
    dict.fromkeys(
        m.source.field for _, m in declared(LoadReport) if isinstance(m.source, OverCalls)
    )
)


class LoadProcessError(BridgeError):
    """A load process failed to start, died, or did not finish in time."""


@dataclass
class LoadPart:
    """What some of a load run's calls measured, in bounded memory: histograms and counters.

    One per process; the parent merges them. Figures that exist once per call (its jitter
    p99, its pacing error) go into histograms too, so 100 000 calls cost no more than 100.
    """

    calls: int = 0
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SUMS, 0))
    over: dict[str, Histogram] = field(default_factory=lambda: {f: Histogram() for f in _OVER})
    hist: CallHistograms = field(default_factory=CallHistograms)
    close_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    turns: TurnStats | None = None
    impair: ImpairStats | None = None
    #: The first call's timeline, for the report.
    timeline: Timeline | None = None

    def add(self, report: CallReport, call: SimulatedCall) -> None:
        self.calls += 1
        for name in _SUMS:
            self.sums[name] += int(getattr(report, name))
        for name in _OVER:
            value = getattr(report, name)
            if value is not None:
                self.over[name].record(abs(round(value * MS)))
        self.hist.jitter.merge(call.hist.jitter)
        key = str(report.close_code)
        self.close_codes[key] = self.close_codes.get(key, 0) + 1
        error = report.error
        if error is not None and (error in self.errors or len(self.errors) < _MAX_ERRORS_KEPT):
            self.errors[error] = self.errors.get(error, 0) + 1
        if call.turns is not None:
            self.turns = self.turns or TurnStats()
            self.turns.merge(call.turns.stats)
        stats = call.impair_stats()
        if stats is not None:
            self.impair = self.impair or ImpairStats()
            self.impair.merge(stats)
        if call.timeline is not None and self.timeline is None:
            self.timeline = call.timeline

    def merge(self, other: LoadPart) -> None:
        self.calls += other.calls
        self.cpu_s += other.cpu_s
        for name, n in other.sums.items():
            self.sums[name] += n
        for name, hist in other.over.items():
            self.over[name].merge(hist)
        for mine, theirs in (
            (self.hist.rtt, other.hist.rtt),
            (self.hist.jitter, other.hist.jitter),
            (self.hist.lateness, other.hist.lateness),
            (self.hist.loop_lag, other.hist.loop_lag),
        ):
            mine.merge(theirs)
        for key, n in other.close_codes.items():
            self.close_codes[key] = self.close_codes.get(key, 0) + n
        for error, n in other.errors.items():
            if error in self.errors or len(self.errors) < _MAX_ERRORS_KEPT:
                self.errors[error] = self.errors.get(error, 0) + n
        if other.turns is not None:
            self.turns = self.turns or TurnStats()
            self.turns.merge(other.turns)
        if other.impair is not None:
            self.impair = self.impair or ImpairStats()
            self.impair.merge(other.impair)
        if self.timeline is None:
            self.timeline = other.timeline

    # bridge.sim.fields reads it by name
    def counter(self, name: str) -> Any:
        if name.startswith("sum:"):
            return self.sums[name[4:]]
        return getattr(self, name)

    def histogram(self, name: str) -> Histogram:
        if name.startswith("calls:"):
            return self.over[name[6:]]
        hist: Histogram = getattr(self.hist, name)
        return hist

    @property
    def lateness_p99_ms(self) -> float | None:
        return ms(self.hist.lateness.percentile_ns(99))

    @property
    def loop_lag_p99_ms(self) -> float | None:
        return ms(self.hist.loop_lag.percentile_ns(99))

    @property
    def client_overloaded(self) -> bool:
        return overloaded(self.lateness_p99_ms, self.loop_lag_p99_ms)

    def report(
        self, opts: CallOptions, calls: int, ramp_s: float, duration_ns: int, procs: int
    ) -> LoadReport:
        return build(
            LoadReport,
            self,
            url=opts.url,
            calls=calls,
            ramp_s=ramp_s,
            duration_s=round(duration_ns / SECOND, 3),
            procs=procs,
            turns=None if self.turns is None else turn_report(opts, self.turns),
            impairments=None if self.impair is None else impairment_report(opts, self.impair),
        )


def _suffixed(path: Path | str | None, i: int) -> Path | None:
    """One recording per call in a load test: ``out.wav`` -> ``out-0007.wav``."""
    if path is None:
        return None
    p = Path(path)
    return p.with_name(f"{p.stem}-{i:04d}{p.suffix}")


def _per_call(opts: CallOptions, i: int) -> CallOptions:
    if opts.record is None and opts.record_sent is None and not (opts.envelope and i):
        return opts
    return replace(
        opts,
        record=_suffixed(opts.record, i),
        record_sent=_suffixed(opts.record_sent, i),
        envelope=opts.envelope and i == 0,  # the report shows the first call's timeline
    )


#: The golden ratio's fraction as a 32-bit fixed-point number: ``i * PHI32 mod 2**32`` spreads
#: any run of call indices evenly over the frame (a low-discrepancy sequence).
PHI32 = 2654435769


def phase_ns(i: int) -> int:
    """Call ``i``'s offset into the 20 ms frame: consecutive calls land far apart, and any
    number of calls covers the frame evenly, whatever the ramp."""
    return (i * PHI32 & 0xFFFFFFFF) * FRAME_NS >> 32


async def run_part(
    opts: CallOptions, calls: int, indices: range, begin_ns: int, ramp_ns: int
) -> LoadPart:
    """Calls ``indices`` of ``calls``, call ``i`` starting at ``begin + ramp * i / calls``
    plus its ``phase_ns``."""
    clock = MonotonicClock()
    prepared = Prepared.of(opts)  # read (and resample) a WAV once, not once per call
    part = LoadPart()
    pacer = Pacer(
        clock, early_ns=EARLY_NS, on_fire=part.hist.loop_lag.record, loop=asyncio.get_running_loop()
    )
    shared = CallHistograms(rtt=part.hist.rtt, lateness=part.hist.lateness)
    cpu = time.process_time()

    async def one(i: int) -> None:
        call = SimulatedCall(_per_call(opts, i), clock, prepared, shared, index=i)
        start = begin_ns + ramp_ns * i // calls + phase_ns(i)
        now = clock.now_ns()
        if start > now:
            await asyncio.sleep((start - now) / SECOND)
        report = await call.run(pacer)
        part.add(report, call)  # folded at once: nothing per call is kept

    try:
        await asyncio.gather(*(one(i) for i in indices))
    finally:
        pacer.close()
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
        part = run(run_part(opts, calls, indices, begin_ns, ramp_ns))
        pipe.send(("done", part))
    except Exception as exc:
        pipe.send(("error", one_line(exc)))
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


def _budget_s(opts: CallOptions, ramp_ns: int) -> float:
    """How long a load process may take before it is given up for dead."""
    seconds = opts.seconds
    if opts.turns is not None:
        t = opts.turns
        seconds = t.turns * (t.pause_ms + t.answer_timeout_ms + 60_000) / 1000 + 30
    return ramp_ns / SECOND + seconds + opts.linger_s + opts.connect_timeout_s + 30


async def _run_procs(
    opts: CallOptions, calls: int, procs: int, ramp_ns: int
) -> tuple[LoadPart, int]:
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
        budget = _budget_s(opts, ramp_ns)
        parts: list[LoadPart] = await asyncio.to_thread(
            _recv_all, pipes, budget + 2 * CLOSE_TIMEOUT_S
        )
    finally:
        for pipe in pipes:
            pipe.close()
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    total = LoadPart()
    for part in parts:
        total.merge(part)
    return total, begin


async def run_load_part(
    opts: CallOptions, calls: int, ramp_s: float | None = None, procs: int = 1
) -> tuple[LoadReport, LoadPart]:
    """:func:`run_load`, and the merged part it was built from (the HTML report's timeline)."""
    if calls < 1:
        raise ConfigError(f"calls must be >= 1, got {calls}")
    if procs < 1:
        raise ConfigError(f"procs must be >= 1, got {procs}")
    ramp = min(1.0, calls * 0.02) if ramp_s is None else ramp_s
    if ramp < 0 or not math.isfinite(ramp):
        raise ConfigError(f"ramp must be >= 0, got {ramp}")
    procs = min(procs, calls)
    ramp_ns = scale_ns(ramp)
    if procs == 1:
        begin = time.monotonic_ns()
        part = await run_part(opts, calls, range(calls), begin, ramp_ns)
    else:
        part, begin = await _run_procs(opts, calls, procs, ramp_ns)
    return part.report(opts, calls, ramp, time.monotonic_ns() - begin, procs), part


async def run_load(
    opts: CallOptions, calls: int, ramp_s: float | None = None, procs: int = 1
) -> LoadReport:
    """``calls`` concurrent calls started evenly over ``ramp_s``, spread over ``procs``.

    With ``procs=1`` the calls run in this event loop; otherwise call ``i`` runs in process
    ``i % procs``, each with its own (uv)loop and sender, and the parts are merged.
    """
    report, _ = await run_load_part(opts, calls, ramp_s, procs)
    return report
