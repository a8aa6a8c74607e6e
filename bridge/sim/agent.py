"""``bridge agent``: a scripted voice agent whose timing is known, to check a benchmark with.

It listens for websockets and speaks either side bridge talks to: as forward mode's upstream
(``bridge serve --mode forward --upstream ws://127.0.0.1:9000/``: raw PCM both ways, Vonage's
JSON events) or in bridge's place, to the simulator directly (a first ``websocket:connected``
sets its rate). For every utterance it hears:

* it decides the caller has finished once ``end_silence_ms`` of silence followed the last
  speech sample (``bridge.sim.level``: the simulator's own threshold), and answers so that
  the first speech sample of its reply is heard exactly ``answer_after_ms`` after the
  caller's last one: its reply leaves at that moment minus where speech starts in the reply;
* ``send="ahead"``: the whole reply at once, as text-to-speech bots do (bridge and Vonage
  buffer it); ``send="realtime"``: paced, ``lead_ms`` ahead of when it plays;
* with ``stop_after_ms``, when the caller starts speaking over it, its audio stops being heard
  that long after the caller's first speech sample: a real-time reply is cut at that sample
  (nothing after it is sent); with ``clear`` it sends ``{"action":"clear"}`` then, which
  empties bridge's queue and Vonage's buffer. An early reply without ``clear`` cannot be
  recalled: it plays out, which is what the simulator then measures.

Times are those of the agent's reads: a frame's last sample is taken to have been spoken when
the frame arrived (on loopback, within a millisecond of when the caller sent it). Replies,
cuts and clears are ``Paced`` items of one scheduler (``bridge.pacer``).

Import rule: asyncio, argparse, ``bridge.audio``, ``bridge.errors``, ``bridge.pacer``,
``bridge.pacing``, ``bridge.protocol``, ``bridge.runtime``, ``bridge.transport``,
``bridge.units``, ``bridge.sim.level`` and ``bridge.sim.source``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bridge.audio.pcm import Samples, to_bytes, to_samples, tone
from bridge.errors import ConfigError
from bridge.pacer import Pacer
from bridge.pacing import Clock, MonotonicClock, Scheduler
from bridge.protocol.vonage import parse_connected
from bridge.runtime import run
from bridge.sim.level import speech_bounds, threshold_of
from bridge.sim.source import read_samples
from bridge.transport.server import ServerConnection
from bridge.units import FRAME_NS, MS, SECOND, SUPPORTED_RATES, frame_samples

log = logging.getLogger("bridge.agent")

#: The default reply: a tone this long (a voice would do as well; this one is exact).
DEFAULT_REPLY_MS = 800
CLEAR = json.dumps({"action": "clear"})


@dataclass(frozen=True)
class AgentOptions:
    """How the agent answers (see the module doc)."""

    answer_after_ms: int = 300
    stop_after_ms: int | None = None
    clear: bool = False
    send: Literal["ahead", "realtime"] = "ahead"
    rate: int = 16000
    reply: Path | str | None = None
    reply_ms: int = DEFAULT_REPLY_MS
    threshold_dbfs: float = -40.0
    end_silence_ms: int = 200
    lead_ms: int = 40

    def __post_init__(self) -> None:
        if self.rate not in SUPPORTED_RATES:
            raise ConfigError(f"rate must be one of {', '.join(map(str, SUPPORTED_RATES))}")
        if self.end_silence_ms < 2 * FRAME_NS // MS:
            raise ConfigError("end-silence-ms must be >= 40")
        if self.answer_after_ms < self.end_silence_ms:
            raise ConfigError(
                f"answer-after-ms must be >= end-silence-ms ({self.end_silence_ms}): the agent "
                "cannot answer before it knows the caller has finished"
            )
        if (
            self.stop_after_ms is not None
            and self.stop_after_ms < self.lead_ms + 2 * FRAME_NS // MS
        ):
            raise ConfigError(f"stop-after-ms must be >= {self.lead_ms + 40}")
        if self.reply is not None and not Path(self.reply).is_file():
            raise ConfigError(f"reply WAV file not found: {self.reply}")
        if not 0 < self.reply_ms <= 60_000:
            raise ConfigError("reply-ms must be between 1 and 60000")
        if self.send not in ("ahead", "realtime"):
            raise ConfigError("send must be ahead or realtime")


def reply_audio(opts: AgentOptions, rate: int) -> Samples:
    if opts.reply is not None:
        return read_samples(opts.reply, rate)
    return tone(440, rate, rate * opts.reply_ms // 1000)


class Reply:
    """One answer being sent: ``Paced`` (the scheduler sends its frames when due)."""

    def __init__(self, call: AgentCall, frames: list[bytes], start_ns: int) -> None:
        self.call = call
        self.frames = frames
        #: When its first frame leaves (and, the caller's buffer being empty, plays).
        self.start_ns = start_ns
        self.next = 0
        self.stop_ns: int | None = None
        self.wake_ns: int | None = None
        self.closed = False

    @property
    def end_ns(self) -> int:
        """When it has been heard to the end (if nothing stops it)."""
        return self.start_ns + len(self.frames) * FRAME_NS

    def heard_ns(self, f: int) -> int:
        return self.start_ns + f * FRAME_NS

    def pump(self, now_ns: int) -> int | None:
        opts = self.call.opts
        conn = self.call.conn
        if self.closed or not conn.is_open:
            return None
        stop = self.stop_ns
        if opts.send == "ahead":
            if self.next == 0 and now_ns >= self.start_ns:
                for frame in self.frames:
                    conn.send_binary(frame)
                self.next = len(self.frames)
            if self.next == 0:
                return self.start_ns
            return self._stop(now_ns) if stop is not None and opts.clear else None
        lead = opts.lead_ms * MS
        while self.next < len(self.frames):
            f = self.next
            due = max(self.start_ns, self.heard_ns(f) - lead)
            if stop is not None and self.heard_ns(f) >= stop:
                break  # nothing from the stop on is sent
            if due > now_ns:
                return due if stop is None or not opts.clear else min(due, stop)
            frame = self.frames[f]
            if stop is not None and stop < self.heard_ns(f + 1):
                cut = (stop - self.heard_ns(f)) * self.call.rate // SECOND
                samples = to_samples(frame).copy()
                samples[cut:] = 0
                frame = to_bytes(samples)
            conn.send_binary(frame)
            self.next += 1
        if stop is not None and opts.clear:
            return self._stop(now_ns)
        self.closed = True
        return None

    def _stop(self, now_ns: int) -> int | None:
        stop = self.stop_ns
        assert stop is not None
        if now_ns < stop:
            return stop
        self.call.conn.send_text(CLEAR)
        log.info("clear sent", extra={"late_ms": (now_ns - stop) / MS})
        self.closed = True
        self.next = len(self.frames)
        return None


class AgentCall:
    """One connection's caller and answers (see the module doc)."""

    def __init__(
        self, opts: AgentOptions, conn: AgentConnection, scheduler: Scheduler, rate: int
    ) -> None:
        self.opts = opts
        self.conn = conn
        self.scheduler = scheduler
        self.rate = rate
        self.threshold = threshold_of(opts.threshold_dbfs)
        audio = reply_audio(opts, rate)
        bounds = speech_bounds(audio, self.threshold)
        if bounds is None:
            raise ConfigError("the reply has no speech above the threshold")
        n = frame_samples(rate)
        padded = np.zeros(-(-len(audio) // n) * n, dtype=np.int16)
        padded[: len(audio)] = audio
        self.frames = [to_bytes(padded[i : i + n]) for i in range(0, len(padded), n)]
        #: Where speech starts in the reply.
        self.first_ns = bounds[0] * SECOND // rate
        self.speaking = False
        self.last_end_ns = 0
        self.reply: Reply | None = None
        self.replies = 0

    def audio(self, samples: Samples, arrival_ns: int) -> None:
        """Caller audio that arrived at ``arrival_ns`` (its last sample spoken then)."""
        frame_start = arrival_ns - len(samples) * SECOND // self.rate
        bounds = speech_bounds(samples, self.threshold)
        if bounds is not None:
            start = frame_start + bounds[0] * SECOND // self.rate
            if not self.speaking:
                self.speaking = True
                self._caller_started(start)
            self.last_end_ns = frame_start + bounds[1] * SECOND // self.rate
        elif self.speaking and arrival_ns - self.last_end_ns >= self.opts.end_silence_ms * MS:
            self.speaking = False
            self._caller_stopped(self.last_end_ns)

    def _caller_started(self, start_ns: int) -> None:
        reply = self.reply
        stop_after = self.opts.stop_after_ms
        if reply is None or stop_after is None or reply.stop_ns is not None:
            return
        if start_ns < reply.end_ns:  # the caller talks over the reply
            reply.stop_ns = start_ns + stop_after * MS
            self.scheduler.add(reply, reply.stop_ns - self.opts.lead_ms * MS)

    def _caller_stopped(self, end_ns: int) -> None:
        if self.reply is not None and not self.reply.closed and self.reply.next == 0:
            self.reply.closed = True  # not started yet: the newer answer replaces it
        at = end_ns + self.opts.answer_after_ms * MS - self.first_ns
        self.reply = Reply(self, self.frames, at)
        self.replies += 1
        self.scheduler.add(self.reply, at)

    def close(self) -> None:
        if self.reply is not None:
            self.reply.closed = True


class AgentConnection(ServerConnection):
    """One websocket to the agent: upstream of bridge, or in bridge's place."""

    def __init__(self, server: AgentServer) -> None:
        super().__init__(clock=server.clock)
        self.server = server
        self.call: AgentCall | None = None

    def on_request(self, request: object) -> None:
        self.accept(request)  # type: ignore[arg-type]

    def on_open(self) -> None:
        self.server.open.add(self)

    def _call(self, rate: int) -> AgentCall:
        if self.call is None:
            self.call = AgentCall(self.server.opts, self, self.server.pacer.scheduler, rate)
        return self.call

    def on_text(self, text: str, now_ns: int) -> None:
        if self.call is None and '"websocket:connected"' in text:
            with contextlib.suppress(ValueError):
                self._call(parse_connected(text).sample_rate)

    def on_binary(self, data: bytes, now_ns: int) -> None:
        if len(data) % 2:
            return
        self._call(self.server.opts.rate).audio(to_samples(data), now_ns)

    def on_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        if self.call is not None:
            self.call.close()


class AgentServer:
    """The agent listening on ``host:port`` (port 0: one the system picks)."""

    def __init__(self, opts: AgentOptions, clock: Clock | None = None) -> None:
        self.opts = opts
        self.clock = clock or MonotonicClock()
        self.pacer = Pacer(self.clock)
        self.open: set[AgentConnection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.pacer.loop = loop
        self._server = await loop.create_server(lambda: AgentConnection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.open):
            conn.close(1001, "agent stopping")
        await asyncio.sleep(0.05)
        for conn in list(self.open):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
        self.pacer.close()


def add_agent_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = AgentOptions()
    agent = subparsers.add_parser(
        "agent",
        help="run a scripted test voice agent with known timing (to check a benchmark)",
        description="A websocket voice agent that answers each utterance exactly "
        "--answer-after-ms after its end and stops --stop-after-ms after being talked over: "
        "forward mode's upstream, or in bridge's place.",
    )
    agent.add_argument("--host", default="127.0.0.1")
    agent.add_argument("--port", type=int, default=9000)
    agent.add_argument("--answer-after-ms", type=int, default=d.answer_after_ms, metavar="MS")
    agent.add_argument(
        "--stop-after-ms",
        type=int,
        metavar="MS",
        help="stop being heard this long after the caller starts over the reply",
    )
    agent.add_argument("--clear", action="store_true", help="stop by sending a clear")
    agent.add_argument(
        "--send",
        choices=["ahead", "realtime"],
        default=d.send,
        help="the whole reply at once (default) or paced in real time",
    )
    agent.add_argument(
        "--rate", type=int, default=d.rate, help="audio rate without websocket:connected"
    )
    agent.add_argument("--reply", metavar="WAV", help="what it says (default: a 440 Hz tone)")
    agent.add_argument(
        "--reply-ms",
        type=int,
        default=d.reply_ms,
        metavar="MS",
        help="how long the tone lasts (default %(default)s)",
    )
    agent.add_argument(
        "--speech-threshold-dbfs", type=float, default=d.threshold_dbfs, metavar="DB"
    )
    agent.add_argument(
        "--end-silence-ms",
        type=int,
        default=d.end_silence_ms,
        metavar="MS",
        help="silence after which the caller has finished (default %(default)s)",
    )
    agent.set_defaults(func=_cli_agent)


def _cli_agent(args: argparse.Namespace) -> int:
    opts = AgentOptions(
        answer_after_ms=args.answer_after_ms,
        stop_after_ms=args.stop_after_ms,
        clear=args.clear,
        send=args.send,
        rate=args.rate,
        reply=args.reply,
        reply_ms=args.reply_ms,
        threshold_dbfs=args.speech_threshold_dbfs,
        end_silence_ms=args.end_silence_ms,
    )
    run(_serve(opts, args.host, args.port))
    return 0


async def _serve(opts: AgentOptions, host: str, port: int) -> None:
    server = AgentServer(opts)
    try:
        bound = await server.start(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    print(f"bridge agent listening on ws://{host}:{bound}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
