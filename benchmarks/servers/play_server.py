"""bridge with a handler that plays audio instead of echoing: what the pacing benchmark needs.

The handler uses only the public Call API (README, "Writing a handler"): it plays a 440 Hz
tone in 100 ms pieces for as long as the call lasts, as a streaming text-to-speech reply
would, and reads and drops the caller's audio. ``call.play`` waits while the outbound queue is
full, so everything the caller hears is paced by bridge's scheduler, not by the handler.

Run ``python -m benchmarks.servers.play_server [PORT]``; prints ``listening PORT`` once bound
to 127.0.0.1 (port 0: any free one) and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from bridge.audio.pcm import Samples, tone
from bridge.call import Call
from bridge.config import ServerConfig
from bridge.runtime import run
from bridge.server import BridgeServer

PIECE_MS = 100
TONE_HZ = 440  # 44 whole cycles per 100 ms: one piece repeats without a click


async def _drop(call: Call) -> None:
    async for _ in call.audio():
        pass


async def play_tone(call: Call) -> None:
    rate = call.pipeline_rate
    piece: Samples = tone(TONE_HZ, rate, rate * PIECE_MS // 1000)
    listener = asyncio.create_task(_drop(call))
    try:
        while not call.ended:
            await call.play(piece)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # No --max-calls refusals (500 by default): capacity is what is being measured.
    config = ServerConfig(host="127.0.0.1", port=port, max_calls=100_000)
    server = BridgeServer(config, play_tone)
    await server.start()
    print(f"listening {server.port}", flush=True)
    await stop.wait()
    await server.close()


if __name__ == "__main__":
    run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
