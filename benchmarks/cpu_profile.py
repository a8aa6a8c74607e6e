"""Where the server's CPU goes per echoed frame: a sampling profile of ``bridge serve`` under load.

Run ``python -m benchmarks.cpu_profile [--quick]``; writes ``benchmarks/results/profile.json``.
bridge (echo) is pinned to core 0 and loaded from core 1 at a call count it holds. Two
windows while every call is up:

1. CPU only (/proc, nothing attached): server CPU per frame in and out, in microseconds;
2. ``py-spy record --native`` (a sampling profiler; it pauses the process briefly per sample,
   so only the *shares* are used from it): each sample's stack is put in one bucket, from the
   leaf up, first match wins:

   - ``kernel: socket writes`` / ``kernel: socket reads``: the leaf is the write/read syscall;
   - ``websockets: parse`` / ``websockets: serialize``: a frame in the websockets package;
   - ``bridge: pacing``: ``bridge/pacing.py``; ``bridge: call pipeline``: ``bridge/call.py``,
     ``bridge/audio``, ``bridge/handlers``; ``bridge: metrics`` (and prometheus-client);
     ``picows: framing`` (picows' Cython frames, on the default backend); ``bridge:
     connection layer`` (``bridge/transport``); ``bridge: server glue``
     (``bridge/server.py``, the asyncio Protocol around ``ServerProtocol``);
   - ``asyncio: tasks and futures``: asyncio's task and future machinery (waking the handler
     coroutine, resolving its futures);
   - ``event loop``: everything left, i.e. uvloop's own loop, timers and callbacks.

   Idle samples (``epoll_wait``) are left out. Microseconds per bucket are its share times the
   CPU measured in window 1.

py-spy comes from the optional ``bench`` extra; without it, or where it may not attach to a
process, the result says so and keeps the CPU figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.uri import parse_uri

from benchmarks import harness
from bridge.pacing import MonotonicClock
from bridge.sim.client import SimConnection as _Connection

BUCKETS = (
    "kernel: socket writes",
    "kernel: socket reads",
    "websockets: parse",
    "websockets: serialize",
    "picows: framing",
    "bridge: connection layer",
    "bridge: server glue",
    "bridge: call pipeline",
    "bridge: pacing",
    "bridge: metrics",
    "asyncio: tasks and futures",
    "event loop",
)
_WRITES = ("write", "writev", "send", "sendto", "sendmsg", "__libc_write", "__send")
_READS = ("read", "readv", "recv", "recvfrom", "recvmsg", "__libc_read", "__recv")
_LOOP = {"uv_run", "Loop__run", "run_forever", "run_until_complete", "_run_once"}
_IDLE = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "select")
_PARSE_FUNCS = {"parse", "receive_data", "read_exact", "feed_data", "events_received", "recv_frame"}


def _name_and_file(frame: str) -> tuple[str, str]:
    name, _, rest = frame.partition(" (")
    return name.rsplit(".", 1)[-1], rest.rstrip(")")


def classify(stack: list[str]) -> str | None:
    """The bucket for one sample (frames root first, as py-spy writes them); None when idle."""
    leaf, _ = _name_and_file(stack[-1])
    if leaf in _IDLE:
        return None
    if leaf in _WRITES:
        return "kernel: socket writes"
    if leaf in _READS:
        return "kernel: socket reads"
    for frame in reversed(stack):
        name, where = _name_and_file(frame)
        if "websockets/" in where:
            names = {_name_and_file(f)[0] for f in stack if "websockets/" in f}
            return "websockets: parse" if names & _PARSE_FUNCS else "websockets: serialize"
        if "picows" in where:
            return "picows: framing"
        if "bridge/transport/" in where:
            return "bridge: connection layer"
        if "bridge/pacing.py" in where:
            return "bridge: pacing"
        if any(p in where for p in ("bridge/call.py", "bridge/audio/", "bridge/handlers/")):
            return "bridge: call pipeline"
        if "bridge/metrics.py" in where or "prometheus_client/" in where:
            return "bridge: metrics"
        if "bridge/server.py" in where:
            return "bridge: server glue"
        if "_asynciomodule" in where or "asyncio/futures" in where or "asyncio/tasks" in where:
            return "asyncio: tasks and futures"
        if name in _LOOP:
            break  # the loop's own frames, with no handler code below them
    return "event loop"


def breakdown(raw: Path) -> tuple[dict[str, int], int]:
    counts: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        bucket = classify(stack.split(";"))
        if bucket is None:
            idle += int(n)
        else:
            counts[bucket] += int(n)
    return {b: counts.get(b, 0) for b in BUCKETS}, idle


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


class _Sink:
    def on_binary(self, data: bytes, now_ns: int) -> None:
        pass

    def on_text(self, text: str, now_ns: int) -> None:
        pass


def framing_micro(n: int = 20_000) -> dict[str, float]:
    """Microseconds per frame pair (one in, one out) in a hot loop, no sockets: the
    simulator's hand framing against websockets' sans-I/O protocol doing the same work."""
    payload = bytes(640)
    wire = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])

    async def hand() -> float:
        conn = _Connection(parse_uri("ws://x/"), {}, _Sink(), MonotonicClock())
        conn.transport = cast(asyncio.Transport, _NullTransport())
        conn.proto.state = State.OPEN
        conn._framing = True
        conn.is_open = True
        begin = time.perf_counter()
        for _ in range(n):
            conn.data_received(wire)
            conn.send_binary(payload)
        return (time.perf_counter() - begin) / n * 1e6

    def library() -> float:
        proto = ClientProtocol(parse_uri("ws://x/"))
        proto.state = State.OPEN
        proto.parser = Protocol.parse(proto)
        next(proto.parser)
        begin = time.perf_counter()
        for _ in range(n):
            proto.receive_data(wire)
            for event in proto.events_received():
                if isinstance(event, Frame):
                    bytes(event.data)
            proto.send_binary(payload)
            proto.data_to_send()
        return (time.perf_counter() - begin) / n * 1e6

    return {"hand_us": round(asyncio.run(hand()), 2), "websockets_us": round(library(), 2)}


def syscall_floor(n: int = 100_000) -> dict[str, float]:
    """What one echoed frame costs the kernel with no websocket, no event loop and no
    Python beyond the calls: a 648-byte ``send`` on loopback TCP and the ``recv`` of it, in
    a hot loop on one connection (CPU time split into user and system, per pair)."""
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = bytes(648)
    begin = os.times()
    for _ in range(n):
        client.send(frame)
        server.recv(4096)
    end = os.times()
    for sock in (client, server, listener):
        sock.close()
    return {
        "user_us": round((end.user - begin.user) / n * 1e6, 2),
        "system_us": round((end.system - begin.system) / n * 1e6, 2),
    }


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


def run(quick: bool) -> dict[str, Any]:
    calls = 200
    cpu_window, sample_window = (3.0, 4.0) if quick else (10.0, 15.0)
    seconds = 1.5 + 1.0 + cpu_window + sample_window + 2.0
    data: dict[str, Any] = {"quick": quick, "machine": harness.machine(), "calls": calls}
    data["framing_micro"] = framing_micro()
    data["syscall_floor"] = syscall_floor()
    probe = subprocess.run(
        harness.pinned(harness.SERVER_CPU, [harness.PYTHON, "-m", "benchmarks.gc_pause"]),
        capture_output=True,
        text=True,
        check=False,
        cwd=harness.ROOT,
        timeout=120,
    )
    try:
        data["gc_pause"] = json.loads(probe.stdout)
    except ValueError:
        data["gc_pause"] = {"error": probe.stderr.strip()[-300:]}
    py_spy = _py_spy()
    with harness.server("profile", harness.bridge_argv("--mode", "echo")) as srv:
        argv = harness.load_argv(srv.url, calls, seconds, "--ramp", "1")
        load = subprocess.Popen(
            harness.pinned(harness.LOAD_CPU, argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=harness.ROOT,
        )
        time.sleep(3.0)
        cpu0, t0 = harness.cpu_seconds(srv.pid), time.monotonic()
        time.sleep(cpu_window)
        cpu1, t1 = harness.cpu_seconds(srv.pid), time.monotonic()
        frames = calls * 50 * (t1 - t0)  # each way
        data["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        data["us_per_frame_pair"] = round(1e6 * (cpu1 - cpu0) / frames, 2)
        data["us_per_message"] = round(1e6 * (cpu1 - cpu0) / (2 * frames), 2)
        data["cpu_ms_per_call_s"] = round(1000 * (cpu1 - cpu0) / (calls * (t1 - t0)), 3)
        if py_spy is None:
            data["profile"] = None
            data["reason"] = "py-spy is not installed (pip install -e .[bench])"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "server.raw"
                spy = subprocess.run(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(srv.pid),
                        "--duration",
                        str(int(sample_window)),
                        "--rate",
                        "250",
                        "--native",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=sample_window + 30,
                )
                if spy.returncode != 0 or not raw.exists():
                    data["profile"] = None
                    data["reason"] = f"py-spy failed: {spy.stderr.strip()[-300:]}"
                else:
                    counts, idle = breakdown(raw)
                    busy = sum(counts.values())
                    data["samples"] = {"busy": busy, "idle": idle}
                    pair = data["us_per_frame_pair"]
                    data["profile"] = [
                        {
                            "bucket": b,
                            "share_pct": round(100 * n / busy, 1) if busy else 0.0,
                            "us_per_frame_pair": round(pair * n / busy, 2) if busy else 0.0,
                        }
                        for b, n in counts.items()
                    ]
        out, err = load.communicate(timeout=seconds + 60)
        try:
            report = json.loads(out)
            data["load"] = {
                k: report.get(k)
                for k in ("calls_ok", "frames_lost", "rtt_p99_ms", "lateness_p99_ms")
            }
        except ValueError:
            data["load"] = {"error": err.decode(errors="replace")[-300:]}
    return data


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"bridge echo, {data['calls']} calls on one core: {data['server_cpu_pct']} % CPU, "
        f"{data['us_per_frame_pair']} us per frame echoed (in + out), "
        f"{data['cpu_ms_per_call_s']} ms per call-second.",
        "",
    ]
    if not data.get("profile"):
        lines.append(f"Profile not available: {data.get('reason')}")
        return "\n".join(lines)
    lines += ["| where | share of busy CPU | us per frame echoed |", "|---|---|---|"]
    for row in sorted(data["profile"], key=lambda r: -r["share_pct"]):
        lines.append(f"| {row['bucket']} | {row['share_pct']} % | {row['us_per_frame_pair']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 s + 4 s windows")
    args = parser.parse_args(argv)
    data = run(args.quick)
    print(markdown(data))
    print(f"wrote {harness.write_json('profile.json', data)}")


if __name__ == "__main__":
    main()
