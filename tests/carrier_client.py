"""A small carrier-speaking client for the server-side tests: the carrier's messages come from
``bridge.sim.carrier_peer``; the socket is websockets' asyncio client. No pacing, no playback
model (the simulator, ``bridge call --carrier``, has those): a test says what to send and
reads what comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.protocol.carrier import Command
from bridge.sim.carrier_peer import CarrierPeer, PeerOptions
from tests.helpers import wait_s


@dataclass
class Received:
    commands: list[Command] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def audio(self) -> bytes:
        return b"".join(c.payload for c in self.commands if c.kind == "media")

    def names(self, kind: str) -> list[str]:
        return [c.name for c in self.commands if c.kind == kind]


class CarrierClient:
    """One carrier call against a bridge URL."""

    def __init__(self, ws: ClientConnection, peer: CarrierPeer) -> None:
        self.ws = ws
        self.peer = peer
        self.received = Received()

    @classmethod
    async def open(
        cls, url: str, opts: PeerOptions, headers: Mapping[str, str] | None = None
    ) -> CarrierClient:
        ws = await connect(
            url, compression=None, additional_headers=dict(headers or {}), open_timeout=wait_s(5)
        )
        client = cls(ws, CarrierPeer(opts))
        for message in client.peer.opening():
            await ws.send(message)
        return client

    async def send_frames(self, pcm_frames: list[bytes], frame_s: float = 0.01) -> bytes:
        """Caller audio (PCM frames at the call's rate), ``frame_s`` per frame (twice real
        time by default: a call's inbox holds a second, so a handler starting late loses
        nothing); returns what went on the wire."""
        wire = b""
        for pcm in pcm_frames:
            encoded = self.peer.codec.encode(pcm)
            wire += encoded
            messages = self.peer.frame(encoded)
            for message in messages:
                await self.ws.send(message)
            await asyncio.sleep(frame_s)
        for message in self.peer.finish():
            await self.ws.send(message)
        return wire

    async def send(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def read_until(
        self, done: Callable[[Received], bool], timeout_s: float = 5.0
    ) -> Received:
        """Read bridge's messages until ``done`` says so (or the socket closes)."""
        try:
            async with asyncio.timeout(wait_s(timeout_s)):
                while not done(self.received):
                    message = await self.ws.recv()
                    assert isinstance(message, str), "bridge sends carriers JSON text only"
                    self.received.commands.append(self.peer.read(message))
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.received.close_code = exc.rcvd.code
                self.received.close_reason = exc.rcvd.reason
        return self.received

    async def close(self) -> Received:
        """Hang up: ``stop`` (bridge then closes with 1000), or just closing (Plivo)."""
        stop = self.peer.stop()
        if stop is not None:
            await self.ws.send(stop)
            await self.read_until(lambda r: r.close_code is not None, timeout_s=5)
        await self.ws.close()
        return self.received
