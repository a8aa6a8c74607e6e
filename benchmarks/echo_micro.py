"""bridge's own Python per echoed frame, in a hot loop with no sockets: the figure to
optimise against, free of kernel time and of other processes' load.

A real ``CallConnection`` of a real ``BridgeServer`` (echo, whole pipeline: framing,
arrival stats, pacing, the connection layer) is fed masked client frames through
``data_received`` and writes to a transport that discards; a fake clock moves 20 ms per
frame, so pacing behaves as in a live call, and the loop turns once per frame (as it would
for a read; a handler task, if the frame path has one, runs there). ``python -m benchmarks.echo_micro [--frames N]``
prints microseconds of CPU (``time.process_time``) per echoed frame, best of 5 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from bridge.config import ServerConfig
from bridge.handlers import echo
from bridge.pacing import FakeClock
from bridge.server import BridgeServer, CallConnection
from bridge.units import content_type


class _NullTransport:
    def __init__(self) -> None:
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self.bytes_written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


def _client_frame(opcode: Opcode, data: bytes) -> bytes:
    return Frame(opcode, data).serialize(mask=True, extensions=[])


async def _one_run(frames: int) -> float:
    clock = FakeClock(start_ns=10**12)
    server = BridgeServer(ServerConfig(port=0), echo, clock=clock)
    conn = CallConnection(server)
    transport = _NullTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    client = ClientProtocol(parse_uri("ws://127.0.0.1/socket"))
    conn.data_received(client.connect().serialize())
    first = {"event": "websocket:connected", "content-type": content_type(16000)}
    conn.data_received(_client_frame(Opcode.TEXT, json.dumps(first).encode()))
    for _ in range(3):
        await asyncio.sleep(0)  # the handler starts
    wire = _client_frame(Opcode.BINARY, bytes(range(256)) * 2 + bytes(128))
    written = transport.bytes_written
    begin = time.process_time()
    for _ in range(frames):
        clock.advance_ms(20)
        conn.data_received(wire)
        await asyncio.sleep(0)  # one loop iteration per read, as on a socket
    elapsed = time.process_time() - begin
    echoed = (transport.bytes_written - written) // 644
    if echoed < frames * 0.99:
        raise RuntimeError(f"only {echoed} of {frames} frames came back")
    await server.close()
    return elapsed / frames * 1e6


def _run(coro: Any) -> float:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return float(asyncio.run(coro))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return float(runner.run(coro))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=50_000)
    args = parser.parse_args(argv)
    runs = [_run(_one_run(args.frames)) for _ in range(5)]
    print(f"bridge echo, Python only: {min(runs):.2f} us per echoed frame (best of 5)")


if __name__ == "__main__":
    main()
