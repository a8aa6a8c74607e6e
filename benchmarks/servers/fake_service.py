"""A fake speech service in a process of its own, for ``benchmarks/dialects.py``.

``python -m benchmarks.servers.fake_service DIALECT OUT.json [--respond-every S]``: runs the
strict fake of ``tests/fakes`` for DIALECT (``raw``: a plain websocket that takes binary
audio and answers with binary audio, bridge's own protocol), prints ``listening PORT``, and
on SIGTERM writes what it measured to OUT.json, then exits:

* for every connection, the call it belongs to (the first sample of its first audio message,
  which the benchmark's caller sets to the call's number) and, per audio message, the bytes
  of audio received so far and the monotonic time it arrived;
* with ``--respond-every``, for voice agents (``openai-realtime``) and ``raw``: every so many
  seconds the service "answers" with 200 ms of audio (two 100 ms messages, at once, as a
  service does), and the monotonic time the first of them was sent.

Monotonic time is system-wide on Linux, so the caller's send times and these arrival times
can be subtracted across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import struct
import time
from pathlib import Path
from typing import Any

from bridge.audio.pcm import tone
from tests.fakes import FAKES, FakeService
from tests.fakes.base import FakeConnection, Session
from tests.fakes.openai_realtime import OpenAIConnection

ANSWER_MS = 100


class RawConnection(FakeConnection):
    """bridge's own upstream protocol: binary PCM both ways, text events ignored."""

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        self.rate = int(session.query.get("rate", "16000"))
        return None

    def binary(self, data: bytes, now_ns: int) -> None:
        self.audio(data, now_ns)

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        pass


class FakeRaw(FakeService):
    connection_class = RawConnection
    path = "/raw"


def _answer(connection: FakeConnection, dialect: str, sent: list[int]) -> None:
    if not connection.is_open:
        return
    pcm = tone(440, connection.rate, connection.rate * ANSWER_MS // 1000, amplitude=6000)
    chunk = pcm.astype("<i2").tobytes()
    sent.append(time.monotonic_ns())
    for _ in range(2):
        if isinstance(connection, OpenAIConnection):
            connection.send_event(
                "response.output_audio.delta",
                response_id="resp_bench",
                item_id=f"item_bench_{len(sent)}",
                output_index=0,
                content_index=0,
                delta=base64.b64encode(chunk).decode(),
            )
        else:
            connection.send_binary(chunk)


async def main(dialect: str, out: Path, respond_every_s: float | None) -> None:
    cls = FakeRaw if dialect == "raw" else FAKES[dialect]
    service = cls(record_arrivals=True, recognise=False)
    answers: dict[int, list[int]] = {}
    first_sample: dict[int, int] = {}
    loop = asyncio.get_running_loop()

    def on_audio(connection: FakeConnection, pcm: bytes, now_ns: int) -> None:
        key = id(connection.session)
        if key in first_sample:
            return
        first_sample[key] = struct.unpack_from("<h", pcm)[0]
        if respond_every_s is not None:
            sent = answers.setdefault(key, [])

            def tick() -> None:
                _answer(connection, dialect, sent)
                connection.later(respond_every_s, tick)

            connection.later(respond_every_s, tick)

    service.on_audio = on_audio
    port = await service.start()
    print(f"listening {port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    result = [
        {
            "call": first_sample.get(id(session)),
            "arrivals": session.arrivals,
            "answers": answers.get(id(session), []),
            "violations": session.violations,
        }
        for session in service.sessions
    ]
    await asyncio.to_thread(out.write_text, json.dumps(result))
    await service.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dialect")
    parser.add_argument("out", type=Path)
    parser.add_argument("--respond-every", type=float, default=None)
    args = parser.parse_args()
    asyncio.run(main(args.dialect, args.out, args.respond_every))
