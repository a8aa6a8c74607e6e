"""Fuzz a live ``bridge serve`` on both backends, while a real-time call must stay exact.

``scripts/fuzz [--inputs N] [--transports picows,websockets] [--parallel P]``: for each
backend, a fresh ``bridge serve --mode echo`` child is fed ``N`` generated inputs
(``benchmarks/fuzz_inputs.py``: raw bytes before and during the upgrade, malformed headers,
websocket frames with every opcode, bad masks, lying lengths, fragments around control
frames, invalid UTF-8, hostile JSON with wrong types in every field, binary frames of every
length 0-4096, events out of order, and each carrier dialect), ``P`` connections at a time,
many inputs per connection where the protocol allows. Then, for the upstream side, bridge
runs in forward mode with each ``--upstream-dialect`` against a hostile upstream (this
module's :class:`HostileUpstream`: refused and broken handshakes, hostile messages of the
dialect, frames a server must not send, odd close codes, dropped TCP).

Checked, and written to ``benchmarks/results/fuzz.json``:

* every input's outcome against its expectation (the RFC and bridge's own sans-I/O parsers,
  see ``fuzz_inputs``), counted per layer, with examples of anything unexpected;
* the server never dies and logs no traceback and no error line outside the documented ones
  (``benchmarks.live.ALLOWED_ERRORS``);
* a real-time call (``bridge call``, 10 s calls back to back in another process) stays
  byte-exact with a round-trip p99 of at most 10 ms throughout;
* afterwards, open file descriptors, asyncio tasks and connections are back to their
  baseline (measured after a warm-up) exactly, and RSS within ``RSS_SLACK``.

Import rule: the standard library, ``benchmarks`` and ``bridge``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks import harness
from benchmarks.fuzz_inputs import (
    ANY,
    DOCUMENTED,
    HTTP_101,
    MAX_MESSAGE_BYTES,
    NOT_101,
    OPEN,
    Input,
    Layers,
    Session,
    close_frame,
    field_mutations,
    frame,
    upgrade,
)
from benchmarks.live import LiveServer, other_cpu_pct
from bridge.runtime import run
from bridge.units import content_type

#: RSS after the run may exceed the baseline by this much (allocator arenas, caches).
RSS_SLACK = 0.10
RSS_SLACK_MIB = 8.0
RTT_P99_GOAL_MS = 10.0
REALTIME_CALL_S = 10.0
#: The fuzz server's --first-message-timeout-s: a request never finished is dropped after it.
FIRST_MESSAGE_TIMEOUT_S = 2.0
#: Share of ``--inputs`` per layer (the rest of the million is spread the same way).
SHARES = {
    "http_raw": 0.01,
    "http_headers": 0.01,
    "http_during_upgrade": 0.003,
    "ws_opcodes": 0.03,
    "ws_masks_rsv": 0.003,
    "ws_lengths": 0.003,
    "ws_fragments": 0.03,
    "ws_utf8": 0.003,
    "vonage_json": 0.3,
    "vonage_binary": 0.25,
    "vonage_order": 0.005,
    "carrier_twilio": 0.06,
    "carrier_telnyx": 0.06,
    "carrier_plivo": 0.06,
    "carrier_exotel": 0.06,
}
#: Of the inputs, the upstream side's share (split over the dialects).
UPSTREAM_SHARE = 0.13
DIALECTS = ("raw", "deepgram", "assemblyai", "openai-realtime", "elevenlabs", "speechmatics")
KEY_ENVS = {
    "DEEPGRAM_API_KEY": "fuzz-key-0000",
    "ASSEMBLYAI_API_KEY": "fuzz-key-0000",
    "OPENAI_API_KEY": "fuzz-key-0000",
    "ELEVENLABS_API_KEY": "fuzz-key-0000",
    "SPEECHMATICS_API_KEY": "fuzz-key-0000",
}
_PING_TOKEN = struct.Struct(">Q")


# --- the client side: raw bytes in, the server's answers parsed --------------------------------


class Peer(asyncio.Protocol):
    """A raw TCP client that reads the server's HTTP answer and websocket frames."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.status: int | None = None
        self.upgraded = False
        self.buf = bytearray()
        self.close: int | None = None
        self.lost = False
        self.pongs: set[bytes] = set()
        self.event = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            line_end = self.head.find(b"\r\n")
            if self.status is None and line_end > 0 and self.head.startswith(b"HTTP/"):
                parts = self.head[:line_end].split(b" ", 2)
                if len(parts) >= 2 and parts[1].isdigit():
                    self.status = int(parts[1])
            if end >= 0 and self.status == 101:
                self.upgraded = True
                self.buf += self.head[end + 4 :]
                self.head = b""
            else:
                if len(self.head) > 1 << 16:
                    self.head = self.head[: 1 << 16]
                self.event.set()
                return
        else:
            self.buf += data
        self._frames()
        self.event.set()

    def _frames(self) -> None:
        buf = self.buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:
                start += 4  # a server must not mask; counted by the caller as a close 1002
            end = start + n
            if end > size:
                break
            op = b0 & 0x0F
            if op == 8 and self.close is None:
                self.close = int.from_bytes(buf[start : start + 2], "big") if n >= 2 else 1005
            elif op == 10:
                self.pongs.add(bytes(buf[start:end]))
            pos = end
        if pos:
            del buf[:pos]

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.event.set()

    async def until(self, done: Any, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done():
            if self.lost:
                return bool(done())
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self.event.clear()
            try:
                async with asyncio.timeout(left):
                    await self.event.wait()
            except TimeoutError:
                return bool(done())
        return True


@dataclass
class LayerStats:
    inputs: int = 0
    sessions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "sessions": self.sessions,
            "unexpected": self.unexpected,
            "outcomes": dict(self.outcomes.most_common(12)),
            "examples": self.examples,
        }


class Stats:
    def __init__(self) -> None:
        self.layers: dict[str, LayerStats] = {}
        self.connect_errors = 0
        self._tokens = 0

    def layer(self, name: str) -> LayerStats:
        stats = self.layers.get(name)
        if stats is None:
            stats = self.layers[name] = LayerStats()
        return stats

    def token(self) -> bytes:
        self._tokens += 1
        return _PING_TOKEN.pack(self._tokens)

    def count(
        self, inputs: list[Input], outcome: str, ok: bool, expect: Any = None, note: str = ""
    ) -> None:
        for item in inputs:
            stats = self.layer(item.layer)
            stats.inputs += 1
            stats.outcomes[outcome] += 1
            if not ok:
                stats.unexpected += 1
                if len(stats.examples) < 5:
                    stats.examples.append(
                        {
                            "expected": sorted(expect) if isinstance(expect, frozenset) else expect,
                            "got": outcome,
                            "what": note,
                            "bytes": len(item.data),
                            "head": item.data[:160].hex(),
                        }
                    )

    @property
    def inputs(self) -> int:
        return sum(s.inputs for s in self.layers.values())

    @property
    def unexpected(self) -> int:
        return sum(s.unexpected for s in self.layers.values())


def _outcome(peer: Peer) -> str:
    if peer.close is not None:
        return f"close {peer.close}"
    if peer.lost:
        return "dropped"
    return "open"


async def run_session(port: int, session: Session, stats: Stats) -> None:
    loop = asyncio.get_running_loop()
    try:
        transport, peer = await loop.create_connection(Peer, "127.0.0.1", port)
    except OSError:
        stats.connect_errors += 1
        await asyncio.sleep(0.05)
        return
    try:
        if session.raw is not None:
            await _http_session(transport, peer, session, stats)
            return
        transport.write(upgrade(session.path))
        await peer.until(lambda: peer.upgraded or peer.status is not None or peer.lost, 5)
        layer = session.inputs[0].layer if session.inputs else "?"
        stats.layer(layer).sessions += 1
        if not peer.upgraded:
            stats.count(session.inputs, f"upgrade {peer.status}", False, HTTP_101)
            return
        transport.write(session.prelude)
        await _inputs(transport, peer, session.inputs, stats)
    finally:
        if not peer.lost:
            if peer.upgraded and peer.close is None:
                transport.write(close_frame(1000))
                await peer.until(lambda: peer.close is not None, 1.0)
            elif peer.upgraded:
                transport.write(close_frame(1000))
            transport.close()


async def _http_session(
    transport: asyncio.Transport, peer: Peer, session: Session, stats: Stats
) -> None:
    layer = stats.layer(session.raw_layer)
    layer.sessions += 1
    assert session.raw is not None
    transport.write(session.raw)
    wait_s = 3.0 if session.raw_expect == HTTP_101 else 0.25
    await peer.until(lambda: peer.status is not None or peer.lost, wait_s)
    if peer.status is not None:
        outcome = f"http {peer.status}"
    else:
        outcome = "closed" if peer.lost else "waited"
    expect: Any = session.raw_expect
    ok = (
        expect == ANY
        or (expect == HTTP_101 and peer.status == 101)
        or (expect == NOT_101 and peer.status != 101)
    )
    if ok and peer.upgraded and session.inputs:  # what came after the head, in the same write
        tail_outcome, ok = await _judge(transport, peer, session.inputs[0].expect, stats)
        outcome = f"{outcome}, then {tail_outcome}"
        expect = session.inputs[0].expect
    stats.count([Input(session.raw_layer, session.raw, expect)], outcome, ok, expect, session.note)


async def _inputs(
    transport: asyncio.Transport, peer: Peer, inputs: list[Input], stats: Stats
) -> None:
    if not inputs:
        return
    last = inputs[-1]
    opens = inputs if last.expect == OPEN else inputs[:-1]
    if opens:
        transport.write(b"".join(i.data for i in opens))
        outcome, ok = await _judge(transport, peer, OPEN, stats)
        stats.count(opens, outcome, ok, OPEN)
        if not ok:
            if last is not opens[-1]:
                stats.count([last], "not sent", False, last.expect)
            return
    if last.expect != OPEN:
        transport.write(last.data)
        outcome, ok = await _judge(transport, peer, last.expect, stats)
        stats.count([last], outcome, ok, last.expect)


async def _judge(
    transport: asyncio.Transport, peer: Peer, expect: Any, stats: Stats
) -> tuple[str, bool]:
    """Wait for what the inputs just written must cause: (what happened, as expected?)."""
    if isinstance(expect, frozenset):
        await peer.until(lambda: peer.close is not None or peer.lost, 5)
        return _outcome(peer), peer.close in expect
    if expect == ANY:
        await peer.until(lambda: peer.close is not None or peer.lost, 0.3)
    if peer.close is not None or peer.lost:
        outcome = _outcome(peer)
    else:
        token = stats.token()
        transport.write(frame(9, token))
        wait_s = 5.0 if expect == OPEN else 1.0  # ANY: a lying length may hold the ping
        await peer.until(lambda: token in peer.pongs or peer.close is not None or peer.lost, wait_s)
        if token in peer.pongs:
            outcome = "open"
        elif peer.close is None and not peer.lost:
            outcome = "waits"  # no answer: the server is still reading a frame (a lying length)
        else:
            outcome = _outcome(peer)
    if expect == OPEN:
        return outcome, outcome == "open"
    return outcome, outcome in ("open", "waits") or peer.close in DOCUMENTED


async def slowloris(port: int, n: int, wait_s: float) -> int:
    """Connections that never finish their request: how many the server dropped in time."""
    loop = asyncio.get_running_loop()
    peers: list[tuple[asyncio.Transport, Peer]] = []
    for _ in range(n):
        transport, peer = await loop.create_connection(Peer, "127.0.0.1", port)
        transport.write(upgrade("/socket")[:30])
        peers.append((transport, peer))
    await asyncio.sleep(wait_s)
    dropped = sum(1 for _, p in peers if p.lost)
    for transport, _ in peers:
        transport.close()
    return dropped


def interleave(
    generators: list[tuple[str, Iterator[Session]]], rng: random.Random
) -> Iterator[Session]:
    """Sessions from every layer, mixed, until all are done."""
    live = list(generators)
    while live:
        i = rng.randrange(len(live))
        try:
            yield next(live[i][1])
        except StopIteration:
            live.pop(i)


class Throttle:
    """Keeps the fuzzer's own CPU under ``cap`` of one core (it shares the machine with the
    server and the real-time call it is judged by): it sleeps when over."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self._cpu0 = time.process_time()
        self._t0 = time.monotonic()

    async def tick(self) -> None:
        used = time.process_time() - self._cpu0
        wall = time.monotonic() - self._t0
        over = used / self.cap - wall
        if over > 0.01:
            await asyncio.sleep(over)
        if wall > 2.0:  # a sliding start: the cap holds per couple of seconds, not overall
            self._cpu0, self._t0 = time.process_time(), time.monotonic()


async def drive(
    port: int, sessions: Iterator[Session], parallel: int, stats: Stats, cpu_cap: float = 1.0
) -> None:
    throttle = Throttle(cpu_cap)

    async def worker() -> None:
        for session in sessions:
            await run_session(port, session, stats)
            await throttle.tick()

    await asyncio.gather(*(worker() for _ in range(parallel)))


# --- the hostile upstream ------------------------------------------------------------------------

UPSTREAM_TEMPLATES: dict[str, list[Any]] = {
    "raw": [{"action": "clear"}, {"action": "notify", "payload": {"n": 1}}, {"event": "x"}],
    "deepgram": [
        {
            "type": "Results",
            "channel": {"alternatives": [{"transcript": "hello there", "confidence": 0.9}]},
            "is_final": True,
            "speech_final": True,
            "start": 0.5,
            "duration": 1.25,
        },
        {"type": "Metadata", "request_id": "r1"},
        {"type": "SpeechStarted", "timestamp": 0.1},
        {"type": "UtteranceEnd", "last_word_end": 2.1},
        {"type": "Error", "variant": "DATA-0000", "description": "bad"},
    ],
    "assemblyai": [
        {"type": "Begin", "id": "s1", "expires_at": 1},
        {
            "type": "Turn",
            "transcript": "hello there",
            "end_of_turn": True,
            "turn_is_formatted": True,
            "words": [{"text": "hello", "start": 100, "end": 400}],
        },
        {"type": "SpeechStarted"},
        {"type": "Termination", "audio_duration_seconds": 3, "session_duration_seconds": 4},
        {"type": "Error", "error_code": 3005, "error": "bad"},
    ],
    "openai-realtime": [
        {"type": "session.created", "session": {"id": "sess_1"}},
        {"type": "response.output_audio.delta", "item_id": "item_1", "delta": "AAAAAA=="},
        {"type": "response.audio.delta", "item_id": "item_2", "delta": "AQABAA=="},
        {"type": "response.output_audio.done", "item_id": "item_1"},
        {"type": "input_audio_buffer.speech_started", "item_id": "c1", "audio_start_ms": 100},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "c1", "audio_end_ms": 900},
        {"type": "response.output_audio_transcript.delta", "item_id": "item_1", "delta": "hi"},
        {"type": "response.output_audio_transcript.done", "item_id": "item_1", "transcript": "hi"},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "c1",
            "transcript": "hello",
        },
        {"type": "conversation.item.truncated", "item_id": "item_1", "audio_end_ms": 10},
        {"type": "error", "error": {"code": "x", "message": "bad"}},
    ],
    "elevenlabs": [
        {"message_type": "session_started", "session_id": "s1"},
        {"message_type": "partial_transcript", "text": "hel"},
        {"message_type": "committed_transcript", "text": "hello"},
        {
            "message_type": "committed_transcript_with_timestamps",
            "text": "hello",
            "words": [{"text": "hello", "start": 0.1, "end": 0.5, "type": "word"}],
        },
        {"message_type": "error", "error": "bad"},
    ],
    "speechmatics": [
        {"message": "RecognitionStarted", "id": "s1"},
        {"message": "AudioAdded", "seq_no": 1},
        {
            "message": "AddTranscript",
            "metadata": {"transcript": "hello", "start_time": 0.1, "end_time": 0.6},
        },
        {
            "message": "AddPartialTranscript",
            "metadata": {"transcript": "hel", "start_time": 0.1, "end_time": 0.3},
        },
        {"message": "EndOfTranscript"},
        {"message": "Warning", "type": "duration_limit_exceeded", "reason": "x"},
        {"message": "Error", "type": "invalid_audio_type", "reason": "bad"},
    ],
}

#: A ready message the dialect waits for before sending audio (``wait_ready``).
READY = {
    "assemblyai": {"type": "Begin", "id": "s1", "expires_at": 1},
    "speechmatics": {"message": "RecognitionStarted", "id": "s1"},
}


def _accept_key(key: str) -> str:
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


class UpstreamStats:
    def __init__(self) -> None:
        self.handshakes: Counter[str] = Counter()
        self.messages = 0
        self.connections = 0
        self.endings: Counter[str] = Counter()


class HostileUpstream(asyncio.Protocol):
    """One connection from bridge's upstream link, answered with hostility (module doc)."""

    def __init__(
        self, dialect: str, rng: random.Random, stats: UpstreamStats, budget: list[int]
    ) -> None:
        self.dialect = dialect
        self.rng = rng
        self.stats = stats
        self.budget = budget
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False
        self.buf = bytearray()
        self.messages = field_mutations(UPSTREAM_TEMPLATES[dialect], rng)
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            request, rest = self.head[:end], self.head[end + 4 :]
            self._handshake(request)
            if self.open and rest:
                self._client_frames(rest)
            return
        self._client_frames(data)

    def _handshake(self, request: bytes) -> None:
        transport = self.transport
        assert transport is not None
        key = ""
        for line in request.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip().decode()
        rng = self.rng
        kind = rng.choices(
            (
                "ok",
                "500",
                "401",
                "wrong accept",
                "no upgrade",
                "200",
                "garbage",
                "hang up",
                "ok+frame",
            ),
            weights=(80, 3, 3, 2, 2, 2, 2, 2, 4),
        )[0]
        self.stats.handshakes[kind] += 1
        self.budget[0] -= 1
        accept = _accept_key(key)
        if kind in ("ok", "ok+frame"):
            transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            self.open = True
            if self.dialect in READY:
                transport.write(frame(1, json.dumps(READY[self.dialect]).encode(), masked=False))
            if kind == "ok+frame":
                transport.write(frame(1, next(self.messages).encode(), masked=False))
            self.task = asyncio.get_running_loop().create_task(self._feed())
            return
        answers = {
            "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
            "401": b"HTTP/1.1 401 Unauthorized\r\ndg-error: bad key\r\nContent-Length: 0\r\n\r\n",
            "wrong accept": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
            "no upgrade": b"HTTP/1.1 101 Switching Protocols\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode(),
            "200": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            "garbage": os.urandom(rng.randint(1, 300)) + b"\r\n\r\n",
            "hang up": b"",
        }
        transport.write(answers[kind])
        transport.close()

    def _client_frames(self, data: bytes) -> None:
        """bridge's frames (masked): answer its pings, so the link confirms its audio."""
        self.buf += data
        buf = self.buf
        pos, size = 0, len(buf)
        while size - pos >= 6:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start += 2
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start += 8
            end = start + 4 + n
            if end > size:
                break
            op = b0 & 0x0F
            if op == 9 and self.transport is not None:
                key = bytes(buf[start : start + 4])
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(buf[start + 4 : end]))
                if self.rng.random() < 0.98:
                    self.transport.write(frame(10, payload, masked=False))
            elif op == 8 and self.transport is not None:
                self.transport.write(frame(8, b"\x03\xe8", masked=False))
                self.transport.close()
            pos = end
        del buf[:pos]

    async def _feed(self) -> None:
        """Hostile messages in bursts, then an ending of some kind."""
        rng = self.rng
        transport = self.transport
        assert transport is not None
        n = rng.randint(20, 1500)
        sent = 0
        while sent < n and not transport.is_closing() and self.budget[0] > 0:
            burst = []
            for _ in range(min(50, n - sent)):
                burst.append(self._message())
                sent += 1
            self.budget[0] -= len(burst)
            self.stats.messages += len(burst)
            transport.write(b"".join(burst))
            await asyncio.sleep(0.01)
        if transport.is_closing():
            return
        ending = rng.choice(("close", "close odd", "drop", "masked frame", "too big", "stay"))
        self.stats.endings[ending] += 1
        self.stats.messages += 1
        if ending == "close":
            transport.write(
                frame(8, rng.choice((1000, 1001, 1011, 4000)).to_bytes(2, "big"), masked=False)
            )
        elif ending == "close odd":
            transport.write(
                frame(8, rng.choice((b"", b"\x03", b"\x00\x00", b"\x03\xe8\xff")), masked=False)
            )
        elif ending == "drop":
            transport.abort()
        elif ending == "masked frame":
            transport.write(frame(1, b"{}", masked=True))
        elif ending == "too big":
            transport.write(frame(2, bytes(5 << 20), masked=False))
        else:
            return  # stays open: the call's end closes it

    def _message(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            return frame(2, os.urandom(rng.choice((0, 1, 3, 320, 640, 641, 4096))), masked=False)
        if r < 0.17:
            return frame(
                1, b'{"type":"' + rng.choice((b"\xff", b"\xed\xa0\x80")) + b'"}', masked=False
            )
        if r < 0.18:
            depth = rng.choice((100, 2000, 50_000))
            return frame(1, b"[" * depth + b"]" * depth, masked=False)
        if r < 0.19:
            return frame(rng.choice((3, 11)), b"x", masked=False)
        return frame(1, next(self.messages).encode(), masked=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()


async def upstream_fuzz(
    dialect: str, transport_name: str, n_inputs: int, parallel: int, tmp: str
) -> dict[str, Any]:
    """bridge in forward mode to ``dialect`` against the hostile upstream; calls meanwhile."""
    rng = random.Random(hash((dialect, transport_name)) & 0xFFFF)
    stats = UpstreamStats()
    budget = [n_inputs]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HostileUpstream(dialect, rng, stats, budget), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    args = [
        "--transport",
        transport_name,
        "--mode",
        "forward",
        "--upstream-dialect",
        dialect,
        "--upstream",
        f"ws://127.0.0.1:{port}/up",
        "--upstream-backoff-ms",
        "10",
        "--upstream-timeout-s",
        "1",
        "--upstream-max-attempts",
        "1000",
        "--transcripts",
        tmp,
        "--max-calls",
        "100000",
    ]
    if dialect == "raw":
        args += ["--upstream-hello", '{"call":"$call_id"}']
    live = LiveServer(args, env=KEY_ENVS, name=f"forward {dialect}")
    calls = Counter[str]()
    try:
        await asyncio.sleep(0.5)
        before = live.resources()

        async def caller() -> None:
            while budget[0] > 0:
                loop_ = asyncio.get_running_loop()
                transport, peer = await loop_.create_connection(Peer, "127.0.0.1", live.port)
                transport.write(
                    upgrade("/socket")
                    + frame(
                        1,
                        json.dumps(
                            {"event": "websocket:connected", "content-type": content_type(16000)}
                        ).encode(),
                    )
                )
                await peer.until(lambda p=peer: p.upgraded, 5)
                t_end = loop_.time() + rng.uniform(2, 6)
                while loop_.time() < t_end and not peer.lost and peer.close is None:
                    transport.write(frame(2, bytes(640)))
                    await asyncio.sleep(0.02)
                outcome = _outcome(peer) if (peer.lost or peer.close) else "hung up"
                calls[outcome] += 1
                if not peer.lost:
                    transport.write(close_frame(1000))
                    await peer.until(lambda p=peer: p.close is not None, 5)
                    transport.close()

        await asyncio.gather(*(caller() for _ in range(parallel)))
        await asyncio.sleep(1.0)
        after = live.wait_quiet(before["connections"], before["tasks"])
    finally:
        server.close()
        code = live.stop()
    return {
        "dialect": dialect,
        "inputs": n_inputs - budget[0],
        "handshakes": dict(stats.handshakes),
        "messages": stats.messages,
        "upstream_connections": stats.connections,
        "endings": dict(stats.endings),
        "calls": dict(calls),
        "exit_code": code,
        "tracebacks": live.tally.tracebacks,
        "problems": live.tally.problems[:5],
        "log": dict(live.tally.counts.most_common(15)),
        "before": before,
        "after": after,
    }


# --- the real-time call, in its own process ------------------------------------------------------


def realtime_main(url: str) -> None:
    """Back-to-back real-time calls until stdin closes; one JSON report per line."""
    import select  # noqa: PLC0415

    from bridge.sim import CallOptions, run_call  # noqa: PLC0415

    while True:
        report = run(
            run_call(CallOptions(url=url, rate=16000, seconds=REALTIME_CALL_S, linger_s=0.2))
        )
        print(json.dumps(report.to_dict()), flush=True)
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready and not sys.stdin.read(1):
            return


class RealtimeCall:
    def __init__(self, url: str) -> None:
        argv = [sys.executable, "-m", "benchmarks.fuzz", "--realtime", url]
        if harness.NICE_OK:
            argv = ["nice", "-n", "-10", *argv]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=harness.ROOT, text=True
        )

    def stop(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=REALTIME_CALL_S * 3)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def summarize_calls(reports: list[dict[str, Any]]) -> dict[str, Any]:
    p99s = [r["rtt_p99_ms"] for r in reports if r.get("rtt_p99_ms") is not None]
    return {
        "calls": len(reports),
        "all_exact": bool(reports) and all(r["exact"] for r in reports),
        "frames_sent": sum(r["frames_sent"] for r in reports),
        "frames_lost": sum(r["frames_lost"] for r in reports),
        "rtt_p99_ms_worst_call": max(p99s) if p99s else None,
        "rtt_max_ms": max((r["rtt_max_ms"] or 0) for r in reports) if reports else None,
        "client_overloaded": any(r.get("client_overloaded") for r in reports),
        # Per call, in order: which calls missed the goal, and whether their own client was
        # late (sender lateness p99 over 2 ms: the machine, not the server, held it back).
        "rtt_p99_ms_per_call": [r.get("rtt_p99_ms") for r in reports],
        "client_lateness_p99_ms_per_call": [r.get("lateness_p99_ms") for r in reports],
        "calls_over_goal": sum(1 for p in p99s if p > RTT_P99_GOAL_MS),
        "calls_client_overloaded": sum(1 for r in reports if r.get("client_overloaded")),
    }


# --- one backend -----------------------------------------------------------------------------------


def quotas(total: int) -> dict[str, int]:
    """``total`` inputs split over the layers by their shares (normalised: they need not sum to 1)."""
    whole = sum(SHARES.values())
    return {name: max(1, round(total * share / whole)) for name, share in SHARES.items()}


async def fuzz_backend(
    transport_name: str, inputs: int, parallel: int, seed: int, cpu_cap: float
) -> dict[str, Any]:
    live = LiveServer(
        [
            "--transport",
            transport_name,
            "--mode",
            "echo",
            "--max-message-bytes",
            str(MAX_MESSAGE_BYTES),
            "--max-calls",
            "100000",
            "--first-message-timeout-s",
            str(FIRST_MESSAGE_TIMEOUT_S),
        ],
        name=f"echo {transport_name}",
    )
    try:
        warm = Stats()
        await drive(
            live.port,
            interleave(list(Layers(seed + 1, quotas(3000)).all()), random.Random(seed)),
            parallel,
            warm,
        )
        await asyncio.sleep(2.5)  # close timers, the first-message timeouts of the warm-up
        baseline = live.wait_quiet(1)
        call = RealtimeCall(live.url)
        await asyncio.sleep(1.0)
        stats = Stats()
        server_cpu0 = live.cpu_s()
        busy0, ours0, t0 = (
            harness.machine_busy_seconds(),
            live.cpu_s() + harness.cpu_seconds(os.getpid()),
            time.monotonic(),
        )
        await drive(
            live.port,
            interleave(list(Layers(seed, quotas(inputs)).all()), random.Random(seed)),
            parallel,
            stats,
            cpu_cap,
        )
        slow = await slowloris(live.port, 10, FIRST_MESSAGE_TIMEOUT_S + 1.5)
        wall = time.monotonic() - t0
        server_cpu = live.cpu_s()
        ours = server_cpu + harness.cpu_seconds(os.getpid()) - ours0
        other = other_cpu_pct(busy0, harness.machine_busy_seconds(), ours, wall)
        reports = await asyncio.get_running_loop().run_in_executor(None, call.stop)
        await asyncio.sleep(2.5)
        final = live.wait_quiet(baseline["connections"], baseline["tasks"])
        alive = live.alive()
    finally:
        code = live.stop()
    rss_ok = final["rss_mib"] <= baseline["rss_mib"] * (1 + RSS_SLACK) + RSS_SLACK_MIB
    return {
        "transport": transport_name,
        "inputs": stats.inputs,
        "unexpected": stats.unexpected,
        "connect_errors": stats.connect_errors,
        "wall_s": round(wall, 1),
        "inputs_per_s": round(stats.inputs / wall),
        "fuzzer_cpu_cap": cpu_cap,
        "server_cpu_pct": round((server_cpu - server_cpu0) / wall * 100, 1),
        "other_cpu_pct": other,
        "server_alive_after": alive,
        "exit_code": code,
        "tracebacks": live.tally.tracebacks,
        "problems": live.tally.problems[:10],
        "log": dict(live.tally.counts.most_common(20)),
        "slowloris_dropped_of_10": slow,
        "baseline": baseline,
        "final": final,
        "leaks": {
            "fds": final["fds"] - baseline["fds"],
            "tasks": final["tasks"] - baseline["tasks"],
            "connections": final["connections"] - baseline["connections"],
            "rss_mib": round(final["rss_mib"] - baseline["rss_mib"], 2),
            "rss_within_slack": rss_ok,
        },
        "realtime_call": summarize_calls(reports),
        "layers": {name: s.to_dict() for name, s in sorted(stats.layers.items())},
    }


def verdict(backends: list[dict[str, Any]], upstream: list[dict[str, Any]]) -> list[str]:
    """Everything that failed a goal (empty: all passed)."""
    bad: list[str] = []
    for b in backends:
        t = b["transport"]
        if b["unexpected"]:
            bad.append(f"{t}: {b['unexpected']} inputs had an unexpected outcome")
        if not b["server_alive_after"] or b["exit_code"] != 0:
            bad.append(f"{t}: server died or exited {b['exit_code']}")
        if b["tracebacks"] or b["problems"]:
            bad.append(f"{t}: {b['tracebacks']} tracebacks, {len(b['problems'])} problem lines")
        leaks = b["leaks"]
        if (
            leaks["fds"] > 0
            or leaks["tasks"] > 0
            or leaks["connections"] > 0
            or not leaks["rss_within_slack"]
        ):
            bad.append(f"{t}: resources not back to baseline: {leaks}")
        call = b["realtime_call"]
        if not call["all_exact"] or (call["rtt_p99_ms_worst_call"] or 99) > RTT_P99_GOAL_MS:
            bad.append(f"{t}: real-time call: {call}")
        if b["slowloris_dropped_of_10"] != 10:
            bad.append(f"{t}: slow requests not all dropped: {b['slowloris_dropped_of_10']}/10")
    for u in upstream:
        name = f"{u['transport']} upstream {u['dialect']}"
        if u["tracebacks"] or u["problems"] or u["exit_code"] != 0:
            bad.append(
                f"{name}: exit {u['exit_code']}, {u['tracebacks']} tracebacks, {u['problems'][:2]}"
            )
        if u["after"]["fds"] > u["before"]["fds"] or u["after"]["tasks"] > u["before"]["tasks"]:
            bad.append(f"{name}: resources not back: {u['before']} -> {u['after']}")
    return bad


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile  # noqa: PLC0415

    transports = args.transports.split(",")
    per_backend = args.inputs // len(transports)
    upstream_n = round(per_backend * UPSTREAM_SHARE)
    backends, upstream = [], []
    for name in transports:
        print(f"== {name}: {per_backend - upstream_n} inputs to the call server", flush=True)
        result = await fuzz_backend(
            name, per_backend - upstream_n, args.parallel, args.seed, args.cpu_cap
        )
        backends.append(result)
        print(_line(result), flush=True)
        for dialect in DIALECTS if args.upstream else ():
            with tempfile.TemporaryDirectory() as tmp:
                u = await upstream_fuzz(
                    dialect, name, max(200, upstream_n // len(DIALECTS)), 8, tmp
                )
            u["transport"] = name
            upstream.append(u)
            print(
                f"   upstream {dialect}: {u['inputs']} inputs, calls {u['calls']}, tracebacks {u['tracebacks']}, problems {len(u['problems'])}",
                flush=True,
            )
    total = sum(b["inputs"] for b in backends) + sum(u["inputs"] for u in upstream)
    return {
        "inputs_total": total,
        "backends": backends,
        "upstream": upstream,
        "failures": verdict(backends, upstream),
        "machine": harness.machine(),
        "command": " ".join(["scripts/fuzz", *sys.argv[1:]]),
    }


def _line(b: dict[str, Any]) -> str:
    call = b["realtime_call"]
    return (
        f"   {b['inputs']} inputs in {b['wall_s']} s ({b['inputs_per_s']}/s), unexpected "
        f"{b['unexpected']}, tracebacks {b['tracebacks']}, leaks {b['leaks']}, call exact "
        f"{call['all_exact']} rtt p99 {call['rtt_p99_ms_worst_call']} ms, other CPU "
        f"{b['other_cpu_pct']} %"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--inputs", type=int, default=1_000_000, help="inputs in all (default 1000000)"
    )
    parser.add_argument("--transports", default="picows,websockets")
    parser.add_argument("--parallel", type=int, default=16, help="connections at a time")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--cpu-cap",
        type=float,
        default=0.6,
        help="the fuzzer's own CPU, at most, in cores (default 0.6: it shares the machine "
        "with the server and the real-time call)",
    )
    parser.add_argument(
        "--no-upstream", dest="upstream", action="store_false", help="skip the upstream side"
    )
    parser.add_argument("--out", default="fuzz.json", help="file name under benchmarks/results")
    parser.add_argument("--realtime", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.realtime:
        realtime_main(args.realtime)
        return 0
    if harness.NICE_OK:
        os.nice(10)  # the fuzzer yields to the server and the real-time call
    result = run(main_async(args))
    path = harness.write_json(args.out, result)
    print(f"\n{result['inputs_total']} inputs; failures: {len(result['failures'])}")
    for line in result["failures"]:
        print(f"  FAIL {line}")
    print(f"wrote {path}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
