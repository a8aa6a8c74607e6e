"""The whole benchmark suite, in order; what ``scripts/bench`` runs.

``python -m benchmarks.run [--quick] [--only NAME ...]``: resampling, capacity, pacing,
multi-core, profile, the load generator's floor, then the report (docs/benchmarks.md, its
plot, the README headline). ``--quick`` (short steps, coarse ladders, a 15 s drift call)
finishes in under 4 minutes on a 2-core machine; the full run (six servers on a 9-rung
ladder of 20 s steps with bisection and retries, the 10-minute drift call) takes about 45.
Benchmarks are never run as tests.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from benchmarks import (
    capacity,
    client_floor,
    cpu_profile,
    harness,
    multicore,
    pacing,
    report,
    resampling,
)

STEPS = ("resampling", "capacity", "pacing", "multicore", "profile", "client_floor")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the under-4-minutes version")
    parser.add_argument("--only", action="append", choices=STEPS, help="run only these steps")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    wanted = args.only or list(STEPS)
    if not harness.pinning_available():
        print("note: taskset or a second core is missing; server and generator are not pinned")
    jobs: dict[str, Callable[[], None]] = {
        "resampling": lambda: resampling.main([]),  # 4 s: always the full table
        "capacity": lambda: print(
            capacity.markdown(d := capacity.run(quick)),
            f"\nwrote {harness.write_json('capacity.json', d)}",
        ),
        "pacing": lambda: print(
            pacing.markdown(d := pacing.run(quick)),
            f"\nwrote {harness.write_json('pacing.json', d)}",
        ),
        "multicore": lambda: print(
            f"wrote {harness.write_json('multicore.json', multicore.run(quick))}"
        ),
        "client_floor": lambda: client_floor.main(
            ["--calls", "200", "--seconds", "3"] if quick else ["--calls", "300", "--seconds", "8"]
        ),
        "profile": lambda: print(
            cpu_profile.markdown(d := cpu_profile.run(quick)),
            f"\nwrote {harness.write_json('profile.json', d)}",
        ),
    }
    begin = time.monotonic()
    for name in STEPS:
        if name in wanted:
            print(f"\n== {name} ({time.monotonic() - begin:.0f} s)", flush=True)
            jobs[name]()
    print(f"\n== report ({time.monotonic() - begin:.0f} s)")
    report.main()
    print(f"done in {time.monotonic() - begin:.0f} s")


if __name__ == "__main__":
    main()
