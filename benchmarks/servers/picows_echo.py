"""Bare ``picows`` echo (Cython websocket on uvloop): the capacity benchmark's C baseline.

Binary frames come straight back, text (the Vonage first message) is dropped, close frames
are answered; no pipeline. What a websocket costs when neither framing nor the event loop's
protocol callbacks run Python per frame. Run ``python -m benchmarks.servers.picows_echo
[PORT]``; prints ``listening PORT`` once bound to 127.0.0.1 and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            transport.send(WSMsgType.BINARY, frame.get_payload_as_memoryview())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def listener(request: WSUpgradeRequest) -> Echo:
        return Echo()

    server = await ws_create_server(listener, "127.0.0.1", port)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
