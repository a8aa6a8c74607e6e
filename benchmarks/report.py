"""docs/benchmarks.md (and its plot) from benchmarks/results/*.json; the README's headline.

Run ``python -m benchmarks.report`` after the benchmarks (``scripts/bench`` does). Nothing here
measures: every number comes from the JSON files, so the report can be rebuilt at any time.
The plot needs matplotlib (the ``bench`` extra); without it the report says so. The README's
"Benchmarks" section is rewritten between its ``<!-- benchmarks:begin -->`` and
``<!-- benchmarks:end -->`` markers and nowhere else.
"""

from __future__ import annotations

import importlib
import json
import time
from types import ModuleType
from typing import Any

from benchmarks import capacity, cpu_profile, pacing
from benchmarks.harness import RESULTS, ROOT

DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks-capacity.png"
README = ROOT / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _pyplot() -> ModuleType | None:
    """matplotlib's pyplot drawing to files, or None without the ``bench`` extra.

    Imported by name so that the type check sees the same thing whether or not matplotlib is
    installed (a plain ``import`` would type-check the plot against matplotlib's own types
    only on machines that have it, and fail on those that do not).
    """
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(cap: dict[str, Any]) -> str:
    """p99 round trip against calls, one line per server; returns a Markdown line."""
    plt = _pyplot()
    if plt is None:
        return "_(plot not drawn: matplotlib is not installed; `pip install -e .[bench]`)_"
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in cap["servers"]:
        points = sorted(
            {s["calls"]: s["rtt_p99_ms"] for s in r["steps"] if s["rtt_p99_ms"]}.items()
        )
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=r["server"])
    ax.axhline(capacity.RTT_P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent 16 kHz calls")
    ax.set_ylabel("round trip p99 (ms)")
    ax.set_title("Echo round trip vs load (server on one core, generator on another)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT)
    plt.close(fig)
    return f"![p99 round trip against calls]({PLOT.name})"


def _steps_table(r: dict[str, Any]) -> str:
    lines = [
        "| calls | rtt p99 ms | rtt max ms | late > 20 / 50 ms | lost | generator lateness "
        "p99 / max, loop lag p99 ms | server CPU % | ms per call-s | other CPU % | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        failed = [k for k, v in s["criteria"].items() if not v]
        verdict = "pass" if s["passed"] else "fail: " + ", ".join(failed)
        lines.append(
            f"| {s['calls']} | {s['rtt_p99_ms']} | {s['rtt_max_ms']} | {s['frames_late_20ms']} / "
            f"{s['frames_late_50ms']} | {s['frames_lost']} | {s['lateness_p99_ms']} / "
            f"{s.get('lateness_max_ms', '-')}, {s.get('loop_lag_p99_ms', '-')} | "
            f"{s['server_cpu_pct']} | "
            f"{s['cpu_ms_per_call_s']} | {s['other_cpu_pct']} | {verdict} |"
        )
    return "\n".join(lines)


def _generator_cost(cap: dict[str, Any]) -> str:
    """The generator's own CPU per frame pair, from the steps (client_cpu_s / frames)."""
    costs = [
        (s["calls"], 1e6 * s["client_cpu_s"] / s["frames_sent"])
        for r in cap["servers"]
        for s in r["steps"]
        if s.get("client_cpu_s") and s.get("frames_sent")
    ]
    if not costs:
        return "not measured"
    top = max(costs)
    return f"{top[1]:.0f} us of CPU per frame sent and received at {top[0]} calls"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _recost(cap: dict[str, Any] | None) -> None:
    """CPU per call-second as the mean of every try at the first rung (what capacity.py now
    records), so results written by earlier versions read the same."""
    if not cap:
        return
    for r in cap["servers"]:
        tries = [s["cpu_ms_per_call_s"] for s in r["steps"] if s["calls"] == r.get("cost_at_calls")]
        if tries:
            cost = sum(tries) / len(tries)
            r["cpu_ms_per_call_s"] = round(cost, 3)
            r["calls_per_core_at_100pct"] = round(1000 / cost)
    base = next((r for r in cap["servers"] if r["server"] == "websockets"), None)
    for r in cap["servers"]:
        if base and base["cpu_ms_per_call_s"] and r["cpu_ms_per_call_s"]:
            r["cpu_vs_websockets"] = round(r["cpu_ms_per_call_s"] / base["cpu_ms_per_call_s"], 2)


def _us_per_frame(r: dict[str, Any] | None) -> float | None:
    """Server CPU per echoed frame (one in, one out): CPU per call-second / 50 frames."""
    if not r or not r.get("cpu_ms_per_call_s"):
        return None
    return round(float(r["cpu_ms_per_call_s"]) * 1000 / 50, 1)


def _verdict(cap: dict[str, Any] | None, prof: dict[str, Any] | None) -> str:
    """The one paragraph a reader needs: the goals, met or not, and why."""
    if not cap:
        return ""
    by = {r["server"]: r for r in cap["servers"]}
    bridge = by.get("bridge")
    if bridge is None:
        return ""
    if bridge["max_calls"] == 0 and bridge.get("generator_limited"):
        bits = [
            "**bridge's capacity could not be measured in this run**: the load generator "
            f"reported itself overloaded at the first step ({bridge['first_failure']} calls), "
            "so every step measured the generator, not the server (its own send lateness and "
            "loop lag are in each row; *other CPU %* says whether the machine was shared)"
        ]
    else:
        held = f"{bridge['max_calls']}" + (
            " (the generator's limit, not bridge's)" if bridge.get("generator_limited") else ""
        )
        bits = [f"**bridge (echo, whole pipeline, picows backend) held {held} calls on one core**"]
    for other in ("bridge-websockets", "bridge-play", "websockets", "picows", "node-ws"):
        r = by.get(other)
        if r and r["max_calls"]:
            bits.append(
                f"{other} {r['max_calls']}"
                + (" (generator-limited)" if r.get("generator_limited") else "")
            )
    text = "; ".join(bits) + ". "
    us = _us_per_frame(bridge)
    if us is not None:
        floor = _us_per_frame(by.get("picows"))
        text += (
            f"Server CPU per echoed frame: bridge {us} us"
            + (f", a bare picows echo {floor} us" if floor is not None else "")
            + (
                f", a bare websockets echo {_us_per_frame(by['websockets'])} us"
                if by.get("websockets")
                else ""
            )
            + f" (goal <= 20 us: {'met' if us <= 20 else '**not met**'}); "
            f"RSS per call {bridge['rss_per_call_kb']} KiB (goal <= 20 KiB: "
            f"{'met' if (bridge['rss_per_call_kb'] or 99) <= 20 else '**not met**'}). "
        )
    goal_met = bridge["max_calls"] >= 1000
    text += (
        "The goal of 1000 calls per core is met."
        if goal_met
        else "The goal of 1000 calls per core is **not met** on this machine; *Where the CPU "
        "goes* below shows what is left per frame, why it cannot go much lower in this design, "
        "and the design that would."
    )
    return text


def _client_floor() -> str:
    """The bare-client floor from benchmarks/client_floor.py, when it ran."""
    floor = _load("client_floor.json")
    if not floor:
        return ""
    bits = [
        f"{r['client']} {r['us_per_frame_pair']} us (at most {r['calls_per_core_bound']} calls)"
        for r in floor["rows"]
    ]
    calls = floor["rows"][0]["calls"] if floor["rows"] else "?"
    return (
        "Clients that only send and count, with no measuring at all "
        f"(`benchmarks/client_floor.py`, {calls} calls), cost per frame sent and received: "
        + ", ".join(bits)
        + ". "
    )


def _generator_limit(cap: dict[str, Any]) -> str:
    steps = [s for r in cap["servers"] for s in r["steps"]]
    over = sorted(s["calls"] for s in steps if s.get("client_overloaded"))
    if over:
        return f"In this run it first reported itself overloaded at {over[0]} calls."
    top = max((s["calls"] for s in steps), default=0)
    return f"In this run it never reported itself overloaded (steps up to {top} calls)."


def _resampling(res: dict[str, Any] | None) -> str:
    if res is None:
        return "_not run_"
    lines = [
        "| pair | implementation | added delay ms | alias rejection dB | SINAD dB | "
        "mean us per 20 ms frame |",
        "|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        if row["implementation"] not in ("bridge FIR", "soxr HQ", "passthrough"):
            continue
        rejection, sinad = row["alias_rejection_db"], row["sinad_db"]
        lines.append(
            f"| {row['pair']} | {row['implementation']} | {row['delay_ms']:.2f} | "
            f"{_num(rejection)} | {_num(sinad)} | {row['mean_us_per_frame']:.1f} |"
        )
    return "\n".join(lines)


def _multicore(mc: dict[str, Any] | None) -> str:
    if mc is None:
        return "_not run_"
    if not mc.get("available"):
        return f"**Not available** in this checkout: {mc.get('reason')}."
    lines = [
        "| workers | server cores | generator cores | calls held | ms per call-s | note |",
        "|---|---|---|---|---|---|",
    ]
    for p in mc["points"]:
        note = "generator shares a core with a worker" if p["generator_shares_cores"] else ""
        if p["generator_limited"]:
            note = (note + "; " if note else "") + "generator saturated first"
        lines.append(
            f"| {p['workers']} | {p['server_cpus']} | {p['load_cpus']} | {p['max_calls']} | "
            f"{p['cpu_ms_per_call_s']} | {note} |"
        )
    return "\n".join(lines)


def _headline(cap: dict[str, Any] | None) -> str:
    if cap is None:
        return "_capacity not run_"
    return capacity.markdown(cap)


def _where(prof: dict[str, Any] | None) -> str:
    if prof is None:
        return "_not run_"
    return cpu_profile.markdown(prof)


def _bucket_us(prof: dict[str, Any] | None, *names: str) -> float:
    if not prof or not prof.get("profile"):
        return float("nan")
    return float(sum(r["us_per_frame_pair"] for r in prof["profile"] if r["bucket"] in names))


def build() -> str:
    cap, pac = _load("capacity.json"), _load("pacing.json")
    _recost(cap)
    res, mc, prof = _load("resampling.json"), _load("multicore.json"), _load("profile.json")
    when = time.strftime("%Y-%m-%d", time.gmtime())
    quick = any(d.get("quick") for d in (cap, pac, mc, prof) if d)
    m = (cap or pac or prof or {}).get("machine", {})
    picture = plot(cap) if cap else ""
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/bench{' --quick' if quick else ''}` on {when} from "
        "`benchmarks/results/*.json` (`python -m benchmarks.report` rebuilds this page). "
        f"Machine: {m.get('cpus')} cores ({m.get('cpu_model')}), Python {m.get('python')}, "
        f"Linux {m.get('kernel')}. Server pinned to core {m.get('server_cpu')}, load generator "
        f"(`bridge load`) to core {m.get('load_cpu')}; loopback only; 16 kHz calls, 640-byte "
        "frames every 20 ms each way."
        + (
            " **Quick run**: 4-6 s steps, a coarse ladder without retries and a 15 s drift call; "
            "the full run (`scripts/bench`) uses 20-30 s steps, bisection, retries and a "
            "10-minute drift call."
            if quick
            else ""
        )
        + (
            " The pacing section comes from a full run (`python -m benchmarks.pacing`: 30 s "
            "steps and the 10-minute drift call)."
            if quick and pac and not pac.get("quick")
            else ""
        ),
        "",
        _verdict(cap, prof),
        "",
        "## Capacity",
        "",
        "The bar, per step: every call completes, 0 frames lost, 0 frames back later than "
        "20 ms, round-trip p99 under 10 ms, and the generator not overloaded (its own send "
        "lateness p99 and event loop lag p99 <= 2 ms). For `bridge-play` (bridge playing a "
        "tone, paced outbound audio only) the echo criteria are replaced by the worst call's "
        "deadline error p99 under 10 ms. The ladder steps up until a step fails, then bisects "
        "(full run); every failed step is tried once more (full run; *other CPU %* is what "
        "other processes used meanwhile: this machine is shared). CPU and RSS per call are taken at the first rung, the same "
        "load for every server; *calls per core at 100 % CPU* is 1 / that CPU per "
        "call-second: what the server's CPU cost alone allows, independent of the generator.",
        "",
        _headline(cap),
        "",
        picture,
        "",
    ]
    for r in (cap or {}).get("servers", []):
        parts += [f"### {r['server']}", "", _steps_table(r), ""]
    for name, why in (cap or {}).get("skipped", {}).items():
        parts += [f"### {name}", "", f"Skipped: {why}.", ""]
    parts += [
        "### The load generator's own limit",
        "",
        f"`bridge load` costs about {_generator_cost(cap) if cap else 'n/a'} "
        "(the connection layer's client side: websockets' sans-I/O core for the handshake "
        "and control frames, data frames framed by hand, one sender tick per process). "
        "Like a server, it pays one `send` and one `recv` per frame, which alone is "
        + (
            f"{(prof or {})['syscall_floor']['system_us']} us of kernel time here"
            if (prof or {}).get("syscall_floor")
            else "over 10 us here"
        )
        + ": 1500 calls (75 000 frames each way per second) would need under 13 us per "
        "frame sent and received, below that floor, so no single-core client on this machine "
        f"drives 1500 calls. {_client_floor()}{_generator_limit(cap) if cap else ''} A step whose "
        "`generator_not_overloaded` criterion failed measured the generator, not the server. "
        "On a machine with more cores, `bridge load --procs N` spreads the calls over N "
        "processes (one event loop and sender each) and the ladder can go past it.",
        "",
        "## Pacing",
        "",
        "bridge playing a tone through the public Call API (`benchmarks/servers/"
        "play_server.py`), measured where Vonage would be: the error of each frame's arrival "
        "from a drift-free 20 ms grid (per call: offset minus the call's best offset; the first "
        "second, when bridge sends its 100 ms lead at once, left out), and drift (mean offset "
        "of the last 50 frames minus the first 50).",
        "",
        pacing.markdown(pac) if pac else "_not run_",
        "",
        "## Resampling",
        "",
        "From `python -m benchmarks.resampling` (all rows, including soxr's other recipes, in "
        "`benchmarks/results/resampling.json`; the README's Resampling section explains them).",
        "",
        _resampling(res),
        "",
        "## Multi-core",
        "",
        _multicore(mc),
        "",
        "Expected curve: `--workers N` runs N independent event loops sharing the port; calls "
        "share nothing, so with one core per worker and the generator on other cores, calls "
        "held should grow linearly, N x the one-core figure, less a few percent for "
        "SO_REUSEPORT's uneven hashing of connections (its spread over N workers is within "
        "about 2 x sqrt(calls / N) of even) and the supervisor. On this 2-core machine that "
        "curve cannot be drawn: two workers leave no core for the generator.",
        "",
        "## Where the CPU goes",
        "",
        _where(prof),
        "",
        "1000 calls on one core need 1000 x 50 = 50 000 frames echoed per second in under "
        "1 s of CPU, i.e. under 20 us per echoed frame with headroom for latency.",
        "",
        next_steps(prof, cap),
        "",
    ]
    return "\n".join(parts)


def next_steps(prof: dict[str, Any] | None, cap: dict[str, Any] | None) -> str:
    """What is left per frame, why this design cannot go much lower, and what would.

    Every figure comes from the profile's buckets and the capacity run's bare servers.
    """
    if not prof or not prof.get("profile"):
        return "_The analysis needs the profile (py-spy)._"
    us = {r["bucket"]: r["us_per_frame_pair"] for r in prof["profile"]}
    pair = prof["us_per_frame_pair"]
    kernel = us.get("kernel: socket writes", 0.0) + us.get("kernel: socket reads", 0.0)
    ours = sum(
        us.get(b, 0.0)
        for b in (
            "bridge: connection layer",
            "bridge: server glue",
            "bridge: call pipeline",
            "bridge: pacing",
            "bridge: metrics",
        )
    )
    loop = us.get("event loop", 0.0) + us.get("asyncio: tasks and futures", 0.0)
    framing = (
        us.get("picows: framing", 0.0)
        + us.get("websockets: parse", 0.0)
        + us.get("websockets: serialize", 0.0)
    )
    by = {r["server"]: r for r in (cap or {}).get("servers", [])}
    floor = prof.get("syscall_floor") or {}
    floor_text = (
        f" A bare `send` of one frame and the `recv` of it on loopback TCP, in a hot loop with "
        f"nothing else, cost {floor['system_us']} us of kernel time here "
        f"(`benchmarks/cpu_profile.py`, `syscall_floor`)."
        if floor.get("system_us") is not None
        else ""
    )
    bare = _us_per_frame(by.get("picows"))
    bare_text = (
        f" A bare picows echo, with no Python per frame beyond one callback, costs {bare} us "
        "per echoed frame on this machine in the same run: that is the floor of any server "
        "built on asyncio sockets here."
        if bare is not None
        else ""
    )
    return "\n".join(
        [
            f"What is left per echoed frame ({pair} us at {prof.get('calls')} calls): "
            f"{kernel:.1f} us in the kernel's socket calls (one `recv` and one `send`: on "
            f"loopback the sender's `send` also runs the receiver's TCP input), "
            f"{loop:.1f} us in the event loop (epoll, uvloop's read callback, timers), "
            f"{framing:.1f} us in websocket framing and {ours:.1f} us in bridge's own Python "
            "(connection layer, call pipeline with its arrival statistics, pacing, metrics)."
            + floor_text
            + bare_text,
            "",
            "Why this design cannot go much lower: every frame costs two system calls and one "
            "trip through the event loop, per call, 50 times a second each way. Those alone are "
            f"{kernel + loop:.1f} us here, so even with bridge's Python at zero the server "
            f"would stop near {20000 / max(kernel + loop, 1):.0f} calls per core at 100 % CPU. "
            "bridge's remaining Python is a handful of attribute reads and one call per layer "
            "(connection -> call -> pacing -> connection); moving it into Cython would save at "
            f"most the {ours:.1f} us above.",
            "",
            "The next design: batch the system calls across calls. All calls' frames are due "
            "on one 20 ms grid, so one pacing tick could submit every due `send` (and keep "
            "every socket's `recv` armed) in a single `io_uring_enter`, turning 2 x N system "
            "calls per 20 ms into about one; the per-frame work left is a copy into a "
            "registered buffer. That needs an io_uring event loop (liburing from C or Cython; "
            "no asyncio loop offers it today) under the same connection interface "
            "(`bridge/transport/base.py`): the call server, the lifecycle and the handlers "
            "would not change. Until then, `--workers N` scales across cores (one event loop "
            "each, nothing shared), which is how to plan capacity.",
        ]
    )


def _goal_line(cap: dict[str, Any] | None) -> str:
    bridge = next((r for r in (cap or {}).get("servers", []) if r["server"] == "bridge"), None)
    if bridge is None:
        return ""
    if bridge["max_calls"] >= 1000:
        return "The goal of 1000 calls per core is met."
    return (
        "The goal of 1000 calls per core is not met on this machine: the page above shows "
        "what is left per frame, why, and the design that would go further."
    )


def readme_section(cap: dict[str, Any] | None, pac: dict[str, Any] | None) -> str:
    lines = [
        BEGIN,
        "",
        "Measured by `scripts/bench` on this repository's 2-core machine (server on one core, "
        "`bridge load` on the other); method, all steps, pacing, the profile and the next "
        "steps in [docs/benchmarks.md](docs/benchmarks.md).",
        "",
        _headline(cap),
        "",
        "Figures move by about 20 % from run to run on this shared 2-core VM. " + _goal_line(cap),
    ]
    if pac:
        rows = {r["step"]: r for r in pac["rows"]}
        bits = [
            f"{step}: deadline error p50 {r['error_p50_ms']} ms, p99 {r['error_p99_ms']} ms"
            + (
                f" (the generator was overloaded, lateness p99 "
                f"{r['generator_lateness_p99_ms']} ms: not bridge's figure)"
                if r.get("generator_overloaded")
                else ""
            )
            for step, r in rows.items()
            if not r.get("long_call")
        ]
        long = next((r for r in rows.values() if r.get("long_call")), None)
        if long:
            bits.append(
                f"drift over a {long['step'].split(', ')[1]} call {long['drift_max_ms']} ms"
            )
        lines += ["", "Pacing (bridge playing audio): " + "; ".join(bits) + "."]
    lines += ["", END]
    return "\n".join(lines)


def update_readme(section: str) -> bool:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(head + section + tail)
    return True


def main() -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(build())
    print(f"wrote {DOC}")
    cap = _load("capacity.json")
    _recost(cap)
    if update_readme(readme_section(cap, _load("pacing.json"))):
        print(f"updated the Benchmarks section of {README}")


if __name__ == "__main__":
    main()
