"""Pacing: how exactly bridge's outbound audio keeps the 20 ms grid, under load and over time.

Run ``python -m benchmarks.pacing [--quick]``; prints a table and writes
``benchmarks/results/pacing.json``. The server is ``benchmarks/servers/play_server.py``:
bridge with a handler that plays a tone through the public Call API (not echo: echo would
only return the generator's own timing). Server pinned to core 0, ``bridge load
--measure-pacing`` to core 1.

What is measured, per call, at the receiving end (as Vonage would see it): frame ``j``
arrives at ``t_j``; its offset from a drift-free grid is ``t_j - j * 20 ms``. The deadline
error of a frame is its offset minus the call's smallest offset (the best-kept deadline), so
it is >= 0 and includes everything between bridge's scheduler and the caller: timer wake-up,
the pass over all due calls, the socket write, loopback, and the generator's own reading (its
health is reported alongside). The first second is left out: bridge sends its lead (100 ms)
at once when audio starts, by design. Drift is the mean offset of the last 50 frames minus
that of the first 50: a pacer that sleeps "one frame" instead of keeping deadlines grows it
without bound; bridge's should stay at zero however long the call.

Steps: 100 and 800 concurrent calls (goal at 800: deadline error p99 <= 2 ms); and one long call (10 minutes; 15 s with ``--quick``)
for drift, sent while nothing else runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks import harness
from benchmarks.harness import Step

SERVER = ["-m", "benchmarks.servers.play_server", "0"]
#: Concurrent calls per step; the goal is a deadline error p99 <= 2 ms at 800 calls.
STEPS = (100, 800)
GOAL_P99_MS = 2.0


def _row(label: str, step: Step) -> dict[str, Any]:
    d = step.to_dict()
    return {
        "step": label,
        "calls": step.calls,
        "seconds": step.seconds,
        "error_p50_ms": d["pacing_error_p50_ms"],
        "error_p99_ms": d["pacing_error_p99_ms"],
        "worst_call_error_p99_ms": d["worst_call_pacing_error_p99_ms"],
        "error_max_ms": d["pacing_error_max_ms"],
        "drift_max_ms": d["pacing_drift_max_ms"],
        "server_cpu_pct": d["server_cpu_pct"],
        "generator_lateness_p99_ms": d["lateness_p99_ms"],
        "generator_overloaded": d["client_overloaded"],
        "other_cpu_pct": d["other_cpu_pct"],
        "calls_ok": d["calls_ok"],
    }


def run(quick: bool) -> dict[str, Any]:
    seconds = 6.0 if quick else 30.0
    long_s = 15.0 if quick else 600.0
    rows = []
    with harness.server("play", [harness.PYTHON, *SERVER]) as srv:
        for calls in STEPS:
            step = harness.run_step(srv, calls, seconds, extra=["--measure-pacing"])
            rows.append(_row(f"{calls} calls", step))
            print(f"  {_line(rows[-1])}")
        step = harness.run_step(srv, 1, long_s, ramp_s=0.0, extra=["--measure-pacing"])
        length = f"{long_s / 60:g} min" if long_s >= 60 else f"{long_s:g} s"
        rows.append({**_row(f"1 call, {length}", step), "long_call": True})
        print(f"  {_line(rows[-1])}")
    return {"quick": quick, "machine": harness.machine(), "lead_ms": 100, "rows": rows}


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['step']:18} error p50 {row['error_p50_ms']}  p99 {row['error_p99_ms']} "
        f"(worst call {row['worst_call_error_p99_ms']})  max {row['error_max_ms']} ms  "
        f"drift {row['drift_max_ms']} ms  server {row['server_cpu_pct']}%  "
        f"generator late p99 {row['generator_lateness_p99_ms']} ms"
    )


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "| step | deadline error p50 ms | p99 ms (median call / worst call) | max ms | "
        "drift ms (worst call) | server CPU % | generator lateness p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['step']} | {r['error_p50_ms']} | {r['error_p99_ms']} / "
            f"{r['worst_call_error_p99_ms']} | {r['error_max_ms']} | {r['drift_max_ms']} | "
            f"{r['server_cpu_pct']} | {r['generator_lateness_p99_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="6 s steps and a 15 s long call")
    args = parser.parse_args(argv)
    data = run(args.quick)
    print(markdown(data))
    print(f"wrote {harness.write_json('pacing.json', data)}")


if __name__ == "__main__":
    main()
