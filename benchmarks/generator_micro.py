"""The load generator's own Python per frame sent and received, with no sockets.

``python -m benchmarks.generator_micro [--frames N]``: simulated calls (``bridge load``'s
``SimulatedCall``) on a fake clock and a connection that discards, sending frame ``k`` and
receiving its echo 1 ms later, ``N`` times: stamping, ring, histograms, the playback model.
Prints microseconds of CPU (``time.process_time``) per frame pair, best of 5: one call driven
by hand (``pump``), and 50 calls served by the process's scheduler (``bridge.pacing``) as a
load run's timer serves them. What is left of a generator's cost beside it is the connection
layer and the kernel (``benchmarks/client_floor.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bridge.pacing import FakeClock, Scheduler
from bridge.sim import CallOptions
from bridge.sim.call import CallHistograms, Prepared, SimulatedCall


class _Discard:
    is_open = True

    def send_binary(self, data: bytes) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass


async def _one_run(frames: int) -> float:
    clock = FakeClock(10**12)
    call = SimulatedCall(
        CallOptions("ws://127.0.0.1/", seconds=3600), clock, shared=CallHistograms()
    )
    sink = _Discard()
    call.conn = sink  # type: ignore[assignment]
    call._send_binary = sink.send_binary
    call.start_ns = clock.now_ns()
    elapsed = 0.0
    block = 512
    for first in range(0, frames, block):
        # A load run stamps frame k once and every call sends it from the cache; do that
        # outside the timing, as its cost is shared by all calls there.
        ks = range(first, min(frames, first + block))
        echoes = [bytes(bytearray(call.source.stamped(k))) for k in ks]  # as if received
        begin = time.process_time()
        for echo in echoes:
            clock.advance_ms(20)
            call.pump(clock.now_ns())
            call.on_binary(echo, clock.now_ns() + 1_000_000)
        elapsed += time.process_time() - begin
    if call.frames_matched < frames * 0.99:
        raise RuntimeError(f"only {call.frames_matched} of {frames} echoes matched")
    return elapsed / frames * 1e6


async def _scheduled_run(frames: int, n_calls: int) -> float:
    """``n_calls`` calls served by one scheduler pass per 20 ms, as a load process's timer
    serves them; the CPU per frame pair, scheduler included."""
    clock = FakeClock(10**12)
    scheduler = Scheduler(clock, 0)
    opts = CallOptions("ws://127.0.0.1/", seconds=3600)
    prepared, shared = Prepared.of(opts), CallHistograms()
    calls = []
    for _ in range(n_calls):
        call = SimulatedCall(opts, clock, prepared, shared)
        sink = _Discard()
        call.conn = sink  # type: ignore[assignment]
        call._send_binary = sink.send_binary
        call.start_ns = clock.now_ns()
        call.scheduler = scheduler
        scheduler.add(call, call.start_ns)
        calls.append(call)
    rounds = max(1, frames // n_calls)
    elapsed = 0.0
    block = 256
    for first in range(0, rounds, block):
        ks = range(first, min(rounds, first + block))
        echoes = [bytes(bytearray(prepared.source.stamped(k))) for k in ks]
        begin = time.process_time()
        for echo in echoes:
            now = clock.now_ns()
            scheduler.service(now, 1_000_000)
            for call in calls:
                call.on_binary(echo, now + 1_000_000)
            clock.advance_ms(20)
        elapsed += time.process_time() - begin
    if calls[0].frames_matched < rounds * 0.99:
        raise RuntimeError(f"only {calls[0].frames_matched} of {rounds} echoes matched")
    return elapsed / (rounds * n_calls) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=50_000)
    args = parser.parse_args(argv)
    best = min(asyncio.run(_one_run(args.frames)) for _ in range(5))
    print(f"bridge load, Python only: {best:.2f} us per frame sent and received (best of 5)")
    best = min(asyncio.run(_scheduled_run(args.frames, 50)) for _ in range(5))
    print(f"50 calls through the scheduler: {best:.2f} us per frame sent and received (best of 5)")


if __name__ == "__main__":
    main()
