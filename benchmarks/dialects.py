"""What a speech-service dialect adds to a call's latency, at 100 calls, against local fakes.

``python -m benchmarks.dialects [--calls N] [--seconds S] [--only NAME ...]``. For each
dialect, and for ``raw`` (bridge's own protocol, the baseline measured in the same run):

* bridge (``bridge serve --upstream-dialect ...``) runs pinned to one core, the fake service
  (``benchmarks/servers/fake_service.py``, the strict fakes of ``tests/fakes``) and this
  process's callers on the other;
* N callers send 20 ms frames on a drift-free schedule and note when each left; the fake
  notes when each audio message arrived and how much audio it held by then. **Caller to
  service**: for every frame, the time from its send to the arrival of the message that
  completed it. For AssemblyAI (50 ms messages) that includes waiting for the rest of the
  chunk; the frames that complete a chunk (every fifth) measure bridge alone;
* voice agents (and ``raw``): every 2 s the fake answers with 200 ms of audio and notes when;
  each caller notes when the first frame of an answer arrived. **Service to caller**: the
  time between the two (bridge sends an answer's first frame as soon as it has it).

"Added" is the dialect's p99 minus ``raw``'s p99 at the same rate in the same run. Frames of
the first 2 s (connecting, the services' ready messages) are left out. The machine is
shared: the CPU that other processes used during each run is reported beside it.

Import rule: standard library, ``bridge``, ``benchmarks`` and the fakes of ``tests``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness
from bridge.protocol.vonage import build_connected
from bridge.services import DIALECTS
from bridge.transport.client import ClientConnection, connect
from bridge.units import FRAME_NS, MS, frame_bytes
from tests.fakes import FAKES, KEY

#: (dialect, call rate); OpenAI takes 24 kHz PCM, so it and its baseline run at 24 kHz.
RUNS = (
    ("raw", 16000),
    ("deepgram", 16000),
    ("assemblyai", 16000),
    ("elevenlabs", 16000),
    ("speechmatics", 16000),
    ("raw", 24000),
    ("openai-realtime", 24000),
)
SPEAKS = ("raw", "openai-realtime")
WARMUP_NS = 2_000 * MS
ANSWER_GAP_NS = 100 * MS
KEY_ENVS = {
    "DEEPGRAM_API_KEY": KEY,
    "ASSEMBLYAI_API_KEY": KEY,
    "OPENAI_API_KEY": KEY,
    "ELEVENLABS_API_KEY": KEY,
    "SPEECHMATICS_API_KEY": KEY,
}


@dataclass
class Caller:
    """One call: frames sent (monotonic ns each) and answers' first frames received."""

    index: int
    rate: int
    conn: ClientConnection | None = None
    sent_ns: array[int] = field(default_factory=lambda: array("q"))
    answers_ns: list[int] = field(default_factory=list)
    last_rx_ns: int = 0

    def on_binary(self, data: bytes, now_ns: int) -> None:
        # now_ns: when the read began (monotonic, system-wide), before any handling.
        if now_ns - self.last_rx_ns > ANSWER_GAP_NS:
            self.answers_ns.append(now_ns)
        self.last_rx_ns = now_ns

    def on_text(self, text: str, now_ns: int) -> None:
        pass


async def drive(url: str, calls: int, seconds: float, rate: int) -> list[Caller]:
    """``calls`` callers on one 20 ms grid for ``seconds``; returns what each recorded."""
    callers = [Caller(i + 1, rate) for i in range(calls)]
    for caller in callers:
        caller.conn = await connect(url, caller, timeout_s=10)
        caller.conn.send_text(build_connected(rate))
    silence = bytes(frame_bytes(rate))
    first = [(c.index).to_bytes(2, "little", signed=True) + silence[2:] for c in callers]
    start = time.monotonic_ns() + 20 * MS
    n_frames = int(seconds * 50)
    for k in range(n_frames):
        due = start + k * FRAME_NS
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        for caller in callers:
            conn = caller.conn
            if conn is None or not conn.is_open:
                continue
            caller.sent_ns.append(time.monotonic_ns())
            conn.send_binary(first[caller.index - 1] if k == 0 else silence)
    await asyncio.sleep(0.5)
    for caller in callers:
        if caller.conn is not None and caller.conn.is_open:
            caller.conn.close(1000, "bye")
    await asyncio.sleep(1.0)
    return callers


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(ordered[-1], 3),
        "n": len(ordered),
    }


def inbound(callers: list[Caller], sessions: list[dict[str, Any]], rate: int) -> dict[str, Any]:
    """Caller frame sent -> the service holds it, for every frame and for chunk-completing
    frames only."""
    by_call = {s["call"]: s for s in sessions if s["call"] is not None}
    fb = frame_bytes(rate)
    all_ms: list[float] = []
    completing_ms: list[float] = []
    for caller in callers:
        session = by_call.get(caller.index)
        if session is None or not caller.sent_ns:
            continue
        ends = [a[0] for a in session["arrivals"]]
        times = [a[1] for a in session["arrivals"]]
        t0 = caller.sent_ns[0]
        for k, sent in enumerate(caller.sent_ns):
            if sent - t0 < WARMUP_NS:
                continue
            i = bisect.bisect_left(ends, (k + 1) * fb)
            if i == len(ends):
                continue
            ms = (times[i] - sent) / MS
            all_ms.append(ms)
            if ends[i] == (k + 1) * fb:
                completing_ms.append(ms)
    return {"all": percentiles(all_ms), "chunk_completing": percentiles(completing_ms)}


def outbound(callers: list[Caller], sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """Service answer sent -> the caller's first frame of it."""
    by_call = {s["call"]: s for s in sessions if s["call"] is not None}
    values: list[float] = []
    for caller in callers:
        session = by_call.get(caller.index)
        if session is None:
            continue
        received = caller.answers_ns
        for sent in session["answers"]:
            i = bisect.bisect_left(received, sent)
            if i < len(received) and received[i] - sent < 1000 * MS:
                values.append((received[i] - sent) / MS)
    return percentiles(values)


def one_run(dialect: str, rate: int, calls: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "fake.json"
        argv = [sys.executable, "-m", "benchmarks.servers.fake_service", dialect, str(out)]
        if dialect in SPEAKS:
            argv += ["--respond-every", "2.0"]
        fake = subprocess.Popen(
            harness.pinned(harness.LOAD_CPU, argv),
            stdout=subprocess.PIPE,
            cwd=harness.ROOT,
            start_new_session=True,
        )
        assert fake.stdout is not None
        line = fake.stdout.readline().decode()
        port = int(line.split()[1])
        if dialect == "raw":
            upstream = ["--mode", "forward", "--upstream", f"ws://127.0.0.1:{port}/raw?rate={rate}"]
        else:
            path = FAKES[dialect].path
            upstream = ["--upstream-dialect", dialect, "--upstream", f"ws://127.0.0.1:{port}{path}"]
        argv = harness.bridge_argv(*upstream)
        env = {**KEY_ENVS, "BRIDGE_IDLE_TIMEOUT_S": "60"}
        try:
            with harness.server(f"dialect-{dialect}", argv, env=env) as srv:
                cpu0, fake0 = harness.cpu_seconds(srv.pid), harness.cpu_seconds(fake.pid)
                me0, busy0, t0 = _own_cpu(), harness.machine_busy_seconds(), time.monotonic()
                callers = asyncio.run(drive(srv.url, calls, seconds, rate))
                cpu1, fake1 = harness.cpu_seconds(srv.pid), harness.cpu_seconds(fake.pid)
                me1, busy1, t1 = _own_cpu(), harness.machine_busy_seconds(), time.monotonic()
        finally:
            fake.terminate()
            fake.wait(timeout=30)
        sessions: list[dict[str, Any]] = json.loads(out.read_text())
    wall = t1 - t0
    ours = (cpu1 - cpu0) + (fake1 - fake0) + (me1 - me0)
    result: dict[str, Any] = {
        "dialect": dialect,
        "rate": rate,
        "calls": calls,
        "seconds": seconds,
        "connections": len(sessions),
        "violations": sum(len(s["violations"]) for s in sessions),
        "bridge_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "other_cpu_pct": round(max(0.0, 100 * ((busy1 - busy0) - ours) / wall), 1),
        "caller_to_service": inbound(callers, sessions, rate),
    }
    if dialect in SPEAKS:
        result["service_to_caller"] = outbound(callers, sessions)
    return result


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def added(results: list[dict[str, Any]]) -> None:
    """Each dialect's p99 minus raw's at the same rate, in place."""
    base = {r["rate"]: r for r in results if r["dialect"] == "raw"}
    for r in results:
        raw = base.get(r["rate"])
        if raw is None or r["dialect"] == "raw":
            continue
        for key, part in (("caller_to_service", "all"), ("caller_to_service", "chunk_completing")):
            mine, theirs = r[key][part]["p99_ms"], raw[key]["all"]["p99_ms"]
            if mine is not None and theirs is not None:
                r[key][part]["added_p99_ms"] = round(mine - theirs, 3)
        if "service_to_caller" in r and "service_to_caller" in raw:
            mine, theirs = r["service_to_caller"]["p99_ms"], raw["service_to_caller"]["p99_ms"]
            if mine is not None and theirs is not None:
                r["service_to_caller"]["added_p99_ms"] = round(mine - theirs, 3)


def markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        "| dialect | rate | caller->service p50 / p99 ms | added p99 | completing-frame p99 (added) "
        "| service->caller p50 / p99 ms (added) | bridge CPU | others' CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        inb = r["caller_to_service"]
        comp = inb["chunk_completing"]
        out = r.get("service_to_caller")
        back = "-"
        if out is not None:
            back = f"{out['p50_ms']} / {out['p99_ms']} ({out.get('added_p99_ms', '-')})"
        rows.append(
            f"| {r['dialect']} | {r['rate']} | {inb['all']['p50_ms']} / {inb['all']['p99_ms']} "
            f"| {inb['all'].get('added_p99_ms', '-')} "
            f"| {comp['p99_ms']} ({comp.get('added_p99_ms', '-')}) | {back} "
            f"| {r['bridge_cpu_pct']} % | {r['other_cpu_pct']} % |"
        )
    return "\n".join(rows)


#: A typical message from each service (a result, or 100 ms of a voice agent's audio).
def _sample_message(dialect: str) -> str:
    words = [{"word": "hello", "start": 0.3, "end": 0.6, "confidence": 0.9}]
    if dialect == "deepgram":
        alternative = {"transcript": "hello world", "confidence": 0.9, "words": words}
        return json.dumps(
            {
                "type": "Results",
                "start": 0.3,
                "duration": 0.75,
                "is_final": False,
                "channel": {"alternatives": [alternative]},
            }
        )
    if dialect == "assemblyai":
        turn_words = [{"start": 300, "end": 600, "text": "hello", "word_is_final": True}]
        return json.dumps(
            {
                "type": "Turn",
                "transcript": "hello world",
                "end_of_turn": False,
                "turn_is_formatted": False,
                "words": turn_words,
            }
        )
    if dialect == "elevenlabs":
        return json.dumps({"message_type": "partial_transcript", "text": "hello world"})
    if dialect == "speechmatics":
        metadata = {"transcript": "hello world", "start_time": 0.3, "end_time": 1.05}
        return json.dumps({"message": "AddPartialTranscript", "metadata": metadata, "results": []})
    delta = base64.b64encode(bytes(4800)).decode()  # 100 ms at 24 kHz
    return json.dumps({"type": "response.output_audio.delta", "item_id": "item_1", "delta": delta})


def micro(repeat: int = 20000) -> list[dict[str, Any]]:
    """CPU per caller frame (encode) and per service message (parse), in microseconds: what a
    dialect adds to bridge's work, measured alone in this process."""
    rows = []
    for name, cls in DIALECTS.items():
        dialect = cls(16000)
        frame = bytes(frame_bytes(dialect.rate))
        dialect.opening()
        start = time.perf_counter()
        for _ in range(repeat):
            dialect.encode(frame)
        encode_us = (time.perf_counter() - start) / repeat * 1e6
        message = _sample_message(name)
        start = time.perf_counter()
        for _ in range(repeat // 10):
            dialect.parse(message)
        parse_us = (time.perf_counter() - start) / (repeat // 10) * 1e6
        rows.append(
            {
                "dialect": name,
                "rate": dialect.rate,
                "encode_us_per_frame": round(encode_us, 2),
                "parse_us_per_message": round(parse_us, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--only", action="append", help="dialects to run (raw always runs)")
    args = parser.parse_args(argv)
    results = []
    for dialect, rate in RUNS:
        if args.only and dialect != "raw" and dialect not in args.only:
            continue
        print(f"== {dialect} at {rate} Hz, {args.calls} calls", flush=True)
        results.append(one_run(dialect, rate, args.calls, args.seconds))
    added(results)
    print(markdown(results))
    costs = micro()
    print("\n| dialect | encode per 20 ms frame | parse per message |\n|---|---|---|")
    for row in costs:
        print(
            f"| {row['dialect']} | {row['encode_us_per_frame']} us "
            f"| {row['parse_us_per_message']} us |"
        )
    data = {"machine": harness.machine(), "runs": results, "cpu_per_message": costs}
    print(f"wrote {harness.write_json('dialects.json', data)}")


if __name__ == "__main__":
    main()
