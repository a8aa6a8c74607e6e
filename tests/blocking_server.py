"""A bridge server whose handler blocks the event loop on request: the watchdog's fault
(tests/integration/test_faults.py). Run as ``python -m tests.blocking_server SECONDS``: a call
with ``?block=1`` sleeps ``SECONDS`` synchronously one second in, then echoes, like the others
(``?play=1``: plays a 10 s tone instead, paced from bridge's queue).
Logs JSON lines on stderr; SIGTERM stops it."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from bridge.audio.pcm import tone
from bridge.call import Call
from bridge.config import ServerConfig
from bridge.handlers import echo
from bridge.logs import setup_logging
from bridge.runtime import run
from bridge.server import serve


def blocking(seconds: float) -> object:
    async def handler(call: Call) -> None:
        if call.query.get("block"):
            await asyncio.sleep(1.0)
            time.sleep(seconds)  # noqa: ASYNC251 - the fault: a handler that blocks the loop
        if call.query.get("play"):  # a prompt, queued ahead with backpressure: paced output
            call.on_audio(lambda _frame: None)
            await call.play(tone(440, call.pipeline_rate, call.pipeline_rate * 10))
            await call.wait_ended()
            return
        await echo(call)

    return handler


async def main(seconds: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await serve(ServerConfig(port=0, drain_seconds=0), blocking(seconds), stop)  # type: ignore[arg-type]


if __name__ == "__main__":
    setup_logging("info", "json")
    run(main(float(sys.argv[1])))
