"""What every strict fake speech service shares: a real websocket server on 127.0.0.1, built on
bridge's connection layer (server side), that records everything and refuses what its
service's documentation refuses.

A fake checks the upgrade (path, query, credentials) and answers it as its service does (an
HTTP refusal, or an accepted socket that sends an error and closes); it validates every
message it is sent, records each violation in ``Session.violations`` (a test asserts there
are none) and reacts as the service does; it produces results from the audio with
:class:`~tests.fakes.recognizer.Recognizer`. Each connection is a :class:`Session` in
``FakeService.sessions``, in order. ``drop_after`` makes the first connection fail after that
many audio messages (the reconnect tests), the way a service's process dies: TCP just ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.http11 import Request

from bridge.transport.server import ServerConnection
from tests.fakes.recognizer import Recognizer, Result

KEY = "test-key-0123456789abcdef"


@dataclass
class Session:
    """One connection's record."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    accepted: bool = False
    #: Text messages received, parsed (or the raw text when not JSON).
    texts: list[Any] = field(default_factory=list)
    #: The caller's audio as the service got it (PCM, base64 decoded).
    audio: bytearray = field(default_factory=bytearray)
    audio_messages: int = 0
    #: The rate of ``audio`` (what the service was told).
    rate: int = 0
    #: Messages sent to bridge, parsed.
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: What bridge did that the service's documentation does not allow.
    violations: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    #: (bytes of audio so far, monotonic ns) per audio message, when the fake records timing.
    arrivals: list[tuple[int, int]] = field(default_factory=list)

    def kinds(self, key: str = "type") -> list[Any]:
        return [t.get(key) for t in self.texts if isinstance(t, dict)]


class FakeConnection(ServerConnection):
    """One connection to a fake; subclasses implement the service (``opened``, ``text``,
    ``binary``)."""

    def __init__(self, service: FakeService) -> None:
        super().__init__(max_size=4 << 20, subprotocols=service.subprotocols)
        self.service = service
        self.session: Session | None = None
        self.rate = 16000
        self.recognizer: Recognizer | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self.finished = False

    # --- the upgrade ------------------------------------------------------------------------

    def on_request(self, request: Request) -> None:
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        session = Session(parts.path, query, headers)
        self.session = session
        self.service.sessions.append(session)
        refusal = self.check_request(session)
        if refusal is not None:
            status, body, extra = refusal
            self.respond(status, body.encode(), headers=extra)
            return
        if self.accept(request) == 101:
            session.accepted = True

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        """``None`` to accept, or the HTTP refusal (status, body, headers)."""
        return None

    def on_open(self) -> None:
        self.opened()

    def opened(self) -> None:
        """The socket is open: send what the service sends first."""

    # --- messages ---------------------------------------------------------------------------

    def on_binary(self, data: bytes, now_ns: int) -> None:
        session = self.session
        assert session is not None
        if self.finished:
            return
        self.binary(data, now_ns)
        self._maybe_drop()

    def on_text(self, text: str, now_ns: int) -> None:
        session = self.session
        assert session is not None
        try:
            message: Any = json.loads(text)
        except ValueError:
            message = text
        session.texts.append(message)
        if self.finished:
            return
        self.text(message, text, now_ns)
        self._maybe_drop()

    def _maybe_drop(self) -> None:
        """``drop_after``: the first connection dies (TCP ends, no close frame)."""
        service, session = self.service, self.session
        if (
            service.drop_after is not None
            and session is service.sessions[0]
            and session.audio_messages >= service.drop_after
            and self.transport is not None
        ):
            self.finished = True
            self.transport.abort()

    def binary(self, data: bytes, now_ns: int) -> None:
        self.violation(f"unexpected binary message of {len(data)} bytes")

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        self.violation(f"unexpected text message {raw[:60]!r}")

    def audio(self, pcm: bytes, now_ns: int) -> list[Result]:
        """Record caller audio and recognise it; returns new results."""
        session = self.session
        assert session is not None
        session.audio += pcm
        session.audio_messages += 1
        session.rate = self.rate
        if self.service.record_arrivals:
            # When the read that brought it began (one clock reading per read, before any
            # parsing): the fake's own work is not counted as latency.
            session.arrivals.append((len(session.audio), now_ns))
        if self.service.on_audio is not None:
            self.service.on_audio(self, pcm, now_ns)
        if not self.service.behaviour.get("recognise", True):
            return []  # a benchmark times the audio and needs no words
        if self.recognizer is None:
            self.recognizer = Recognizer(self.rate)
        return self.recognizer.feed(np.frombuffer(pcm, dtype="<i2"))

    # --- helpers ----------------------------------------------------------------------------

    def send_json(self, message: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        session.sent.append(message)
        if self.is_open:
            self.send_text(json.dumps(message))

    def violation(self, what: str) -> None:
        assert self.session is not None
        self.session.violations.append(what)

    def end(self, code: int, reason: str) -> None:
        """Close as the service does (after its own last messages)."""
        self.finished = True
        if self.session is not None:
            self.session.close_code = code
            self.session.close_reason = reason
        self.close(code, reason)

    def later(self, delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        timer = self.loop.call_later(delay_s, callback)
        self._timers.append(timer)
        return timer

    def on_lost(self, exc: Exception | None) -> None:
        self.service.open.discard(self)
        for timer in self._timers:
            timer.cancel()
        if self.session is not None and self.session.close_code is None:
            rcvd = self.proto.close_rcvd
            if rcvd is not None:
                self.session.close_code, self.session.close_reason = rcvd.code, rcvd.reason

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.service.open.add(self)


class FakeService:
    """A listening fake; ``connection_class`` is the service."""

    connection_class: type[FakeConnection] = FakeConnection
    #: The path its endpoint lives at.
    path = "/"

    def __init__(
        self,
        key: str = KEY,
        *,
        drop_after: int | None = None,
        subprotocols: tuple[str, ...] | None = None,
        record_arrivals: bool = False,
        **behaviour: Any,
    ) -> None:
        self.key = key
        self.drop_after = drop_after
        self.subprotocols = subprotocols
        self.record_arrivals = record_arrivals
        self.behaviour = behaviour
        self.sessions: list[Session] = []
        self.open: set[FakeConnection] = set()
        #: Called with every audio message (benchmarks time them).
        self.on_audio: Callable[[FakeConnection, bytes, int], None] | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self.connection_class(self), "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        """The endpoint, as ``--upstream`` (bridge merges its query in)."""
        return f"ws://127.0.0.1:{self.port}{self.path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.abort()
        await asyncio.sleep(0)

    @property
    def violations(self) -> list[str]:
        return [v for session in self.sessions for v in session.violations]

    async def __aenter__(self) -> FakeService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
