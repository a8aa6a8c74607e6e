"""Bare ``websockets`` echo (asyncio API, uvloop): the capacity benchmark's Python baseline.

What a developer would write first with the ``websockets`` library, and what
docs/lessons.md s.7 measured: binary messages come straight back, text (the Vonage first message) is read and
dropped, no pipeline, permessage-deflate off (as bridge has it). Run
``python -m benchmarks.servers.websockets_echo [PORT]``; prints ``listening PORT`` once bound
to 127.0.0.1 (port 0: any free one) and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        if isinstance(message, bytes):
            await ws.send(message)


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        echo, "127.0.0.1", port, compression=None, ping_interval=None, max_size=65536
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening {bound}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
