"""The soak: many calls for a long time, a mix of every mode, the upstream killed on a timer.

``scripts/soak --minutes 30 --calls 200``: five ``bridge serve`` children (echo; echo with
``--record-dir``; play with ``--barge-in``; forward to an upstream that is SIGKILLed and
restarted every ``--kill-every-s`` (120 s); transcribe), and ``--calls`` simulated calls spread
over them, each slot calling again as soon as its call ends (calls last 20-90 s, so every
kind of call starts and ends all along). Every 10 s each server's RSS, open file descriptors,
asyncio tasks and event-loop lag (the watchdog's 20 ms heartbeat, ``/metrics``) are sampled,
and every call that ended is counted with its lost caller audio: frames the caller sent that
never came back (echo, record, forward) or were not decoded (transcribe, its summary).

Goals (docs/reliability.md s.4), each judged and written to ``benchmarks/results/soak.json``:
RSS growth of at most 5 % from the end of the warm-up (5 minutes, or a third of a shorter run)
to the end, per server; no caller audio lost outside the upstream's outages (a forward call
that lived through a kill is counted apart); event-loop lag p99 at most 5 ms per window; no
traceback, no unexpected error line. ``--plot`` draws the curves (matplotlib, the bench extra).

Import rule: the standard library, ``benchmarks`` and ``bridge``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.live import LiveServer, histogram_delta, histogram_quantile, other_cpu_pct
from bridge.runtime import freeze_startup_heap, run
from bridge.sim import CallOptions, CallReport, run_call

SAMPLE_S = 10.0
LAG = "bridge_event_loop_lag_seconds"
RSS_GROWTH_GOAL = 0.05
LOOP_LAG_P99_GOAL_S = 0.005
WARMUP_S = 300.0
SPEECH = harness.ROOT / "tests" / "data" / "fox_slt_16k.wav"
#: The transcribed caller pauses this long after each sentence. Looped back to back, the
#: sentence's own 0.3 s of edges rarely ended an utterance, so a call was one long utterance
#: whose decoding at the hang-up took more than the 10 s the handler allows.
PAUSE_S = 1.0
#: Transcribed calls at most, whatever --calls (2 cores cannot decode more in real time).
MAX_TRANSCRIBED = 4
ECHO = "picows_echo" if importlib.util.find_spec("picows") else "websockets_echo"
#: The callers' and the upstream's priority (as root), between the servers' (-10, as in
#: every benchmark) and the default. At 0 the callers starved on 2 cores and the echoes they
#: read too late counted as lost audio; at -10 beside the servers, those woke behind them
#: and the servers' loop-lag windows were 10-20 ms (docs/reliability.md s.4).
CALLERS_NICE = -5
#: The mix: share of the calls per server.
MIX = {"echo": 0.35, "record": 0.2, "play": 0.2, "forward": 0.2, "transcribe": 0.05}


@dataclass
class Ended:
    kind: str
    at_s: float
    started_s: float
    frames_sent: int
    frames_lost: int
    exact: bool
    close_code: int | None
    in_outage: bool
    clears: int
    error: str | None
    rtt_p99_ms: float | None


@dataclass
class Soak:
    minutes: float
    calls: int
    kill_every_s: float
    t0: float = 0.0
    ended: list[Ended] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    stop_at: float = 0.0
    speech: Path = SPEECH
    #: Each server's event-loop lag histogram (cumulative) at its first and latest sample.
    lag_first: dict[str, dict[str, float]] = field(default_factory=dict)
    lag_last: dict[str, dict[str, float]] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.t0


class Upstream:
    """The forward servers' upstream, killed and restarted: a bare echo, picows' where it is
    installed. It stands for a service on another machine, so it should cost this one as
    little as it can: picows' echo took about a third of the CPU of ``websockets``' (7 % of
    a core against 22 % for 40 forwarded calls)."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        argv = [sys.executable, "-m", f"benchmarks.servers.{ECHO}", str(self.port)]
        if harness.NICE_OK:  # the callers' priority, wherever this process's is now
            step = CALLERS_NICE - os.getpriority(os.PRIO_PROCESS, 0)
            argv = ["nice", "-n", str(step), *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            cwd=harness.ROOT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.port = int(line.split()[1])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def with_pause(wav: Path, out: Path, pause_s: float) -> Path:
    """``wav`` followed by ``pause_s`` of silence: a caller who speaks, then listens."""
    with wave.open(str(wav)) as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    with wave.open(str(out), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(frames + bytes(int(params.framerate * pause_s) * params.sampwidth))
    return out


async def call_slot(soak: Soak, kind: str, url: str, rng: random.Random, offset_s: float) -> None:
    await asyncio.sleep(offset_s)
    n = 0
    while soak.now() < soak.stop_at - 25:
        n += 1
        seconds = min(rng.uniform(20, 90), soak.stop_at - soak.now() - 5)
        opts = CallOptions(
            url=f"{url}?call={kind}-{id(rng) % 10000}-{n}",
            rate=16000,
            seconds=seconds,
            # Long enough for every echo to come back before the caller hangs up: after a
            # stall, a live stream's echo is later by the stall less the 100 ms lead.
            linger_s=2.5,
            dtmf="5" if kind == "play" else "",
            dtmf_at_s=rng.uniform(2, 10),
            wav=soak.speech if kind == "transcribe" else None,
            stamp=kind != "transcribe",
            measure_pacing=kind == "play",
        )
        started = soak.now()
        report: CallReport = await run_call(opts)
        at = soak.now()
        in_outage = kind == "forward" and any(a < at and b > started for a, b in soak.outages)
        echoed = kind in ("echo", "record", "forward")
        soak.ended.append(
            Ended(
                kind,
                round(at, 1),
                round(started, 1),
                report.frames_sent,
                report.frames_lost if echoed else 0,
                report.exact,
                report.close_code,
                in_outage,
                report.clears,
                report.error,
                report.rtt_p99_ms,
            )
        )


async def killer(soak: Soak, upstream: Upstream) -> None:
    while True:
        await asyncio.sleep(soak.kill_every_s)
        if soak.now() > soak.stop_at - 30:
            return
        killed = soak.now()
        upstream.kill()
        await asyncio.sleep(1.0)  # down for a second, then back on the same port
        await asyncio.get_running_loop().run_in_executor(None, upstream.start)
        # The outage, with the time the links take to come back (backoff up to 5 s).
        soak.outages.append((killed, soak.now() + 6.0))


async def sampler(soak: Soak, servers: dict[str, LiveServer]) -> None:
    loop = asyncio.get_running_loop()
    last: dict[str, dict[str, float]] = {}
    while soak.now() < soak.stop_at:
        await asyncio.sleep(SAMPLE_S)
        row: dict[str, Any] = {"t_s": round(soak.now(), 1)}
        for name, server in servers.items():
            metrics = await loop.run_in_executor(None, server.metrics)
            before = last.get(name, {})
            window = histogram_delta(metrics, before, LAG)
            soak.lag_first.setdefault(name, histogram_delta(metrics, {}, LAG))
            soak.lag_last[name] = histogram_delta(metrics, {}, LAG)
            dropped = "bridge_inbound_dropped_frames_total"
            last[name] = metrics
            p99 = histogram_quantile(window, LAG, 0.99)
            row[name] = {
                "rss_mib": round(server.rss() / (1 << 20), 2),
                "fds": server.fds(),
                "tasks": metrics.get("bridge_event_loop_tasks", -1),
                "calls": metrics.get("bridge_calls_active", -1),
                "loop_lag_p99_ms": None if p99 is None else round(p99 * 1000, 2),
                # Caller frames the server dropped because its handler fell 1 s behind (a
                # burst after a stall): where lost audio went, on the server's side.
                "dropped_behind": metrics.get(dropped, 0.0) - before.get(dropped, 0.0),
                "alive": server.alive(),
            }
        t = soak.now()
        window_calls = [e for e in soak.ended if t - SAMPLE_S < e.at_s <= t]
        row["calls_ended"] = len(window_calls)
        row["frames_lost"] = sum(e.frames_lost for e in window_calls if not e.in_outage)
        row["frames_lost_in_outages"] = sum(e.frames_lost for e in window_calls if e.in_outage)
        soak.samples.append(row)
        print(json.dumps(row), flush=True)


def transcribe_losses(directory: Path) -> dict[str, Any]:
    not_decoded = []
    for path in directory.glob("*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        summary = [line for line in lines if line.get("type") == "summary"]
        if summary:
            not_decoded.append(summary[-1].get("not_decoded_ms", 0))
    return {"calls": len(not_decoded), "not_decoded_ms": sum(not_decoded)}


def judge(soak: Soak, minutes: float) -> dict[str, Any]:
    warmup = min(WARMUP_S, minutes * 60 / 3)
    growth: dict[str, float | None] = {}
    names = (
        [k for k in soak.samples[0] if isinstance(soak.samples[0][k], dict)] if soak.samples else []
    )
    for name in names:
        after = [s[name]["rss_mib"] for s in soak.samples if s["t_s"] >= warmup]
        growth[name] = round((after[-1] - after[0]) / after[0], 4) if len(after) >= 2 else None
    # The goal is each server's loop-lag p99 over the run (its heartbeat, every 20 ms, from
    # the first sample to the last); the worst 10-s window is reported beside it.
    lag_run: dict[str, float | None] = {}
    for name in names:
        run_hist = histogram_delta(soak.lag_last.get(name, {}), soak.lag_first.get(name, {}), LAG)
        p99 = histogram_quantile(run_hist, LAG, 0.99)
        lag_run[name] = None if p99 is None else round(p99 * 1000, 2)
    windows = [
        s[name]["loop_lag_p99_ms"]
        for s in soak.samples
        for name in names
        if s[name]["loop_lag_p99_ms"] is not None
    ]
    lost = sum(e.frames_lost for e in soak.ended if not e.in_outage)
    failures = []
    for name, g in growth.items():
        if g is not None and g > RSS_GROWTH_GOAL:
            failures.append(f"{name}: RSS grew {g:.1%} after the warm-up")
    if lost:
        failures.append(f"{lost} caller frames lost outside outages")
    for name, p99 in lag_run.items():
        if p99 is not None and p99 > LOOP_LAG_P99_GOAL_S * 1000:
            failures.append(f"loop lag p99 {p99} ms over the run ({name})")
    over = [w for w in windows if w > LOOP_LAG_P99_GOAL_S * 1000]
    return {
        "warmup_s": warmup,
        "rss_growth_after_warmup": growth,
        "frames_lost_outside_outages": lost,
        "frames_lost_in_outages": sum(e.frames_lost for e in soak.ended if e.in_outage),
        "server_dropped_behind": {
            name: sum(s[name].get("dropped_behind", 0) for s in soak.samples) for name in names
        },
        "loop_lag_p99_ms_run": lag_run,
        "loop_lag_p99_ms_worst_window": max(windows) if windows else None,
        "loop_lag_windows_over_goal": f"{len(over)} of {len(windows)}",
        "failures": failures,
    }


async def soak_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    soak = Soak(args.minutes, args.calls, args.kill_every_s)
    soak.speech = with_pause(SPEECH, tmp / "speech.wav", PAUSE_S)
    upstream = Upstream()
    rec, tr = tmp / "rec", tmp / "tr"
    common = ["--max-calls", "100000", "--transport", args.transport]

    def started(name: str, *argv: str) -> LiveServer:
        return LiveServer([*argv, *common], name=name)  # at nice -10 where allowed

    servers = {
        "echo": started("echo", "--mode", "echo"),
        "record": started("record", "--mode", "echo", "--record-dir", str(rec)),
        "play": started("play", "--mode", "play", "--tone", "440", "--barge-in"),
        "forward": started(
            "forward", "--mode", "forward", "--upstream", f"ws://127.0.0.1:{upstream.port}/"
        ),
        "transcribe": started("transcribe", "--mode", "transcribe", "--transcripts", str(tr)),
    }
    if harness.NICE_OK:
        os.setpriority(os.PRIO_PROCESS, 0, CALLERS_NICE)  # after starting the servers
    busy0 = harness.machine_busy_seconds()
    cpu0 = sum(s.cpu_s() for s in servers.values()) + harness.cpu_seconds(os.getpid())
    try:
        soak.t0 = time.monotonic()
        soak.stop_at = args.minutes * 60
        rng = random.Random(14)
        slots = []
        for kind, share in MIX.items():
            n = max(1, round(args.calls * share))
            if kind == "transcribe":
                n = min(n, args.max_transcribed)  # pocketsphinx: 0.15 s of CPU per second
            for i in range(n):
                offset = rng.uniform(0, min(30.0, args.minutes * 60 / 6))
                slot_rng = random.Random(hash((kind, i)))
                slots.append(call_slot(soak, kind, servers[kind].url, slot_rng, offset))
        sample = asyncio.ensure_future(sampler(soak, servers))
        kill = asyncio.ensure_future(killer(soak, upstream))
        await asyncio.gather(*slots)
        kill.cancel()
        await sample
        for server in servers.values():  # the last calls' work (a transcript) is done
            await asyncio.get_running_loop().run_in_executor(None, server.wait_quiet, 1.0)
        wall = soak.now()
        ours = sum(s.cpu_s() for s in servers.values()) + harness.cpu_seconds(os.getpid()) - cpu0
        other = other_cpu_pct(busy0, harness.machine_busy_seconds(), ours, wall)
    finally:
        codes = {name: s.stop() for name, s in servers.items()}
        upstream.stop()
    verdict = judge(soak, args.minutes)
    problems = {n: s.tally.problems[:5] for n, s in servers.items() if s.tally.problems}
    if problems:
        verdict["failures"].append(f"error lines or tracebacks: {problems}")
    if any(code != 0 for code in codes.values()):
        verdict["failures"].append(f"exit codes {codes}")
    by_kind: dict[str, dict[str, int]] = {}
    for e in soak.ended:
        k = by_kind.setdefault(
            e.kind,
            {"calls": 0, "exact": 0, "frames_sent": 0, "frames_lost": 0, "rtt_p99_ms_max": 0},
        )
        k["rtt_p99_ms_max"] = max(k["rtt_p99_ms_max"], int(e.rtt_p99_ms or 0))
        k["calls"] += 1
        k["exact"] += int(e.exact)
        k["frames_sent"] += e.frames_sent
        k["frames_lost"] += e.frames_lost
    return {
        "command": " ".join(["scripts/soak", *sys.argv[1:]]),
        "minutes": args.minutes,
        "calls": args.calls,
        "kill_every_s": args.kill_every_s,
        "upstream_kills": len(soak.outages),
        "outages": soak.outages,
        "other_cpu_pct": other,
        "calls_ended": len(soak.ended),
        "by_kind": by_kind,
        "barge_ins": sum(1 for e in soak.ended if e.kind == "play" and e.clears),
        "transcribe": transcribe_losses(tr),
        "recordings": len(list(rec.glob("*.wav"))),
        "exit_codes": codes,
        "tracebacks": {n: s.tally.tracebacks for n, s in servers.items()},
        "verdict": verdict,
        "samples": soak.samples,
        "machine": harness.machine(),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    from benchmarks.report import _pyplot  # noqa: PLC0415 - matplotlib: the bench extra

    plt = _pyplot()
    if plt is None:
        print("plot not drawn: matplotlib is not installed (scripts/soak --plot installs it)")
        return

    samples = result["samples"]
    names = [k for k in samples[0] if isinstance(samples[0][k], dict)]
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for name in names:
        axes[0].plot(t, [s[name]["rss_mib"] for s in samples], label=name)
        axes[1].plot(t, [s[name]["fds"] for s in samples], label=name)
        axes[2].plot(t, [s[name]["tasks"] for s in samples], label=name)
        axes[3].plot(t, [s[name]["loop_lag_p99_ms"] or 0 for s in samples], label=name)
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].set_ylabel("open fds")
    axes[2].set_ylabel("asyncio tasks")
    axes[3].set_ylabel("loop lag p99 (ms)")
    axes[3].axhline(LOOP_LAG_P99_GOAL_S * 1000, color="grey", linestyle=":")
    axes[3].set_xlabel("minutes")
    for a, b in [(a / 60, b / 60) for a, b in result.get("outages", [])]:
        for ax in axes:
            ax.axvspan(a, b, color="red", alpha=0.1)
    axes[0].legend(loc="upper left", fontsize="small")
    fig.suptitle(
        f"soak: {result['calls']} calls, {result['minutes']:g} min ({result['calls_ended']} calls ended)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--kill-every-s", type=float, default=120.0)
    parser.add_argument("--transport", default="auto")
    parser.add_argument(
        "--max-transcribed",
        type=int,
        default=MAX_TRANSCRIBED,
        help=f"transcribed call slots at most (default {MAX_TRANSCRIBED}; a recogniser starved "
        "of CPU fails its calls after the hang-up)",
    )
    parser.add_argument(
        "--out", default="soak.json", help="file name under benchmarks/results (or a full path)"
    )
    parser.add_argument("--plot", metavar="PNG", help="draw the curves here")
    parser.add_argument(
        "--ci",
        action="store_true",
        help="CI's short run: fail on crashes, tracebacks, error lines and lost audio only; "
        "RSS growth and loop lag are printed (a minute cannot show growth after a 5-minute "
        "warm-up, and CI's machine is shared)",
    )
    args = parser.parse_args(argv)
    # As a load process does: its 200 callers share this process, and a full collection
    # walking the imports too paused them all (186 ms measured at 85 s of a soak).
    freeze_startup_heap()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(soak_async(args, Path(tmp)))
    verdict = result["verdict"]
    if args.ci:
        printed = [f for f in verdict["failures"] if ": RSS grew" in f or f.startswith("loop lag")]
        verdict["not_judged_in_ci"] = printed
        verdict["failures"] = [f for f in verdict["failures"] if f not in printed]
    path = harness.write_json(args.out, result)
    if args.plot:
        plot(result, Path(args.plot))
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("samples", "machine")}, indent=1)
    )
    print(f"wrote {path}")
    return 1 if verdict["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
