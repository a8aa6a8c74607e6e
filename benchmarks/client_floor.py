"""The floor under any load generator on this machine: N clients that only send and count.

``python -m benchmarks.client_floor [--calls N] [--seconds S]``: a bare picows echo server on
core 0; on core 1, N websocket clients send a 640-byte frame every 20 ms each (one loop pass
for all, as ``bridge load``'s sender does) and count the echoes, nothing else: no stamps, no
histograms. Measured twice, on bridge's client connection (``bridge.transport.client``) and on
a picows client. The CPU per frame sent and received is what a generator pays before it
measures anything; ``1e6 / (that * 50)`` bounds the calls one core can drive.
Writes ``benchmarks/results/client_floor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks import harness
from bridge.runtime import run
from bridge.transport.client import connect

FRAME = bytes(640)


class _Count:
    received = 0

    def on_binary(self, data: bytes, now_ns: int) -> None:
        _Count.received += 1

    def on_text(self, text: str, now_ns: int) -> None:
        pass


class _PicowsCount(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            _Count.received += 1


def _picows_sender(transport: WSTransport) -> Callable[[bytes], None]:
    def send(data: bytes) -> None:
        transport.send(WSMsgType.BINARY, data)

    return send


async def _drive(kind: str, url: str, calls: int, seconds: float) -> dict[str, Any]:
    senders: list[Callable[[bytes], None]] = []
    for _ in range(calls):
        if kind == "bridge":
            conn = await connect(url, _Count())
            senders.append(conn.send_binary)
        else:
            transport, _ = await ws_connect(_PicowsCount, url)
            senders.append(_picows_sender(transport))
    _Count.received = 0
    begin_cpu, begin = os.times(), time.monotonic()
    ticks = 0
    while time.monotonic() - begin < seconds:
        for send in senders:
            send(FRAME)
        ticks += 1
        await asyncio.sleep(max(0.0, begin + ticks * 0.02 - time.monotonic()))
    await asyncio.sleep(0.2)
    end_cpu = os.times()
    pairs = calls * ticks
    user = (end_cpu.user - begin_cpu.user) / pairs * 1e6
    system = (end_cpu.system - begin_cpu.system) / pairs * 1e6
    return {
        "client": kind,
        "calls": calls,
        "us_per_frame_pair": round(user + system, 1),
        "user_us": round(user, 1),
        "system_us": round(system, 1),
        "received": _Count.received,
        "sent": pairs,
        "calls_per_core_bound": round(1e6 / ((user + system) * 50)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    argv_server = [harness.PYTHON, "-m", "benchmarks.servers.picows_echo", "0"]
    rows = []
    for kind in ("bridge", "picows"):
        with harness.server("floor", argv_server) as srv:
            port = srv.url.split(":")[2].split("/")[0]
            if harness.pinning_available():
                os.sched_setaffinity(0, {int(harness.LOAD_CPU)})
            rows.append(run(_drive(kind, f"ws://127.0.0.1:{port}/", args.calls, args.seconds)))
        row = rows[-1]
        print(
            f"{kind:7} client, {row['calls']} calls: {row['us_per_frame_pair']} us per frame "
            f"sent and received (user {row['user_us']}, system {row['system_us']}): at most "
            f"{row['calls_per_core_bound']} calls per core"
        )
    harness.write_json("client_floor.json", {"machine": harness.machine(), "rows": rows})


if __name__ == "__main__":
    main()
