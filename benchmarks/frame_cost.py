"""Server CPU per echoed frame, the development figure: one load step per server.

``python -m benchmarks.frame_cost [--calls N] [--seconds S] [--server NAME ...]``. Each
server is pinned to core 0, ``bridge load`` to core 1; the server's CPU seconds over the
steady window (/proc) divided by the frames it echoed there (50 per call-second, in + out)
give microseconds of CPU per echoed frame. CPU time, unlike latency, is barely disturbed by
other load on a shared machine, so this is the figure to compare while changing code.
Writes ``benchmarks/results/frame_cost.json``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from benchmarks import harness

FRAMES_PER_CALL_S = 50


def servers() -> dict[str, list[str]]:
    py = harness.PYTHON
    return {
        "bridge": harness.bridge_argv("--transport", "picows"),
        "bridge-websockets": harness.bridge_argv("--transport", "websockets"),
        "bridge-play": harness.bridge_argv("--mode", "play", "--tone", "440"),
        "websockets": [py, "-m", "benchmarks.servers.websockets_echo", "0"],
        "picows": [py, "-m", "benchmarks.servers.picows_echo", "0"],
    }


@contextlib.contextmanager
def started(name: str) -> Iterator[harness.Server]:
    with harness.server(name, servers()[name]) as srv:
        yield srv


def measure(name: str, calls: int, seconds: float) -> dict[str, Any]:
    with started(name) as srv:
        step = harness.run_step(srv, calls, seconds)
    us = step.cpu_ms_per_call_s * 1000 / FRAMES_PER_CALL_S
    return {
        "server": name,
        "calls": calls,
        "us_per_echoed_frame": round(us, 2),
        "server_cpu_pct": round(step.server_cpu_pct, 1),
        "rss_per_call_kb": round(step.rss_per_call_kb, 1),
        "other_cpu_pct": round(step.other_cpu_pct, 1),
        "rtt_p99_ms": step.load.get("rtt_p99_ms"),
        "frames_lost": step.load.get("frames_lost"),
        "client_lateness_p99_ms": step.load.get("lateness_p99_ms"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--server", action="append", choices=sorted(servers()))
    args = parser.parse_args(argv)
    rows = [measure(name, args.calls, args.seconds) for name in args.server or ["bridge"]]
    for row in rows:
        print(
            f"{row['server']:18} {row['calls']:5d} calls  {row['us_per_echoed_frame']:6.2f} us "
            f"per echoed frame  CPU {row['server_cpu_pct']:5.1f} %  RSS/call "
            f"{row['rss_per_call_kb']} KiB  rtt p99 {row['rtt_p99_ms']} ms  "
            f"lost {row['frames_lost']}  other CPU {row['other_cpu_pct']} %"
        )
    harness.write_json("frame_cost.json", {"machine": harness.machine(), "rows": rows})


if __name__ == "__main__":
    main()
