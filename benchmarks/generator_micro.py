"""The load generator's own Python per frame sent and received, with no sockets.

``python -m benchmarks.generator_micro [--frames N]``: one simulated call (``bridge load``'s
``_Call``) on a fake clock and a connection that discards, sending frame ``k`` and receiving
its echo 1 ms later, ``N`` times: stamping, ring, histograms, the playback model. Prints
microseconds of CPU (``time.process_time``) per frame pair, best of 5. What is left of a
generator's cost beside it is the connection layer and the kernel
(``benchmarks/client_floor.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bridge.pacing import FakeClock
from bridge.simulator import CallOptions, _Call, _Histograms


class _Discard:
    is_open = True

    def send_binary(self, data: bytes) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass


async def _one_run(frames: int) -> float:
    clock = FakeClock(10**12)
    call = _Call(CallOptions("ws://127.0.0.1/", seconds=3600), clock, shared=_Histograms())
    call.conn = _Discard()  # type: ignore[assignment]
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
            call.tick(clock.now_ns())
            call.on_binary(echo, clock.now_ns() + 1_000_000)
        elapsed += time.process_time() - begin
    if call.frames_matched < frames * 0.99:
        raise RuntimeError(f"only {call.frames_matched} of {frames} echoes matched")
    return elapsed / frames * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=50_000)
    args = parser.parse_args(argv)
    best = min(asyncio.run(_one_run(args.frames)) for _ in range(5))
    print(f"bridge load, Python only: {best:.2f} us per frame sent and received (best of 5)")


if __name__ == "__main__":
    main()
