"""How long one full garbage collection stalls a ``bridge serve`` process.

Run ``python -m benchmarks.gc_pause``; prints JSON (the profile step records it). Imports what
``bridge serve`` imports, opens 400 calls' worth of ``Call`` objects on a scheduler (no
sockets), and times ``gc.collect()`` of every generation: that is the pause every call sees,
all at once, whenever the collector decides to run a full collection; then the same after
``gc.freeze()``, which moves everything that exists at startup out of the collector's way.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time

import bridge.cli  # noqa: F401 - everything `bridge serve` imports
from bridge.call import Call
from bridge.pacing import MonotonicClock, Scheduler
from bridge.protocol.vonage import build_connected, parse_connected

CALLS = 400


class _NoIO:
    def send_binary(self, data: bytes) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


def _full_collection_ms() -> float:
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - begin) * 1000)
    return round(min(times), 2)


async def measure() -> dict[str, float | int]:
    out: dict[str, float | int] = {
        "imports_only_ms": _full_collection_ms(),
        "tracked_objects": len(gc.get_objects()),
    }
    scheduler = Scheduler(MonotonicClock(), 100)
    first = build_connected(16000)
    calls = [Call(parse_connected(first, ""), _NoIO(), scheduler) for _ in range(CALLS)]
    out["calls"] = len(calls)
    out["with_calls_ms"] = _full_collection_ms()
    out["tracked_with_calls"] = len(gc.get_objects())
    gc.freeze()
    out["after_freeze_ms"] = _full_collection_ms()
    return out


def main() -> None:
    print(json.dumps(asyncio.run(measure())))


if __name__ == "__main__":
    main()
