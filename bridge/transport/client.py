"""The client side of the connection layer, and :func:`connect`.

Used by the simulator and load generator (a caller, as Vonage) and by forward mode's upstream
link (bridge as a client of a speech or bot service). The upgrade request carries what such
services authenticate with: extra headers (``Authorization: Token <key>``, ``xi-api-key``)
and subprotocols (``Sec-WebSocket-Protocol: token, <key>``); the negotiated subprotocol is
``proto.subprotocol`` once open. No User-Agent is sent unless asked for (docs/protocol.md s.1:
Vonage sends none), and compression is never offered (docs/lessons.md s.7).

Import rule: asyncio, ssl, websockets, ``bridge.transport``, ``bridge.pacing``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from websockets.client import ClientProtocol
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI, parse_uri

from bridge.pacing import Clock
from bridge.transport.connection import DEFAULT_MAX_MESSAGE_BYTES, Connection, CredentialFilter
from bridge.transport.lifecycle import Event, Phase

_ws_log = logging.getLogger("bridge.simulator.websocket")
_ws_log.addFilter(CredentialFilter())  # no key in a debug log of the handshake

HeaderItems = Mapping[str, str] | Iterable[tuple[str, str]]


class Receiver(Protocol):
    """What a client connection hands its messages to."""

    def on_binary(self, data: bytes, now_ns: int) -> None: ...

    def on_text(self, text: str, now_ns: int) -> None: ...


class ClientConnection(Connection):
    """A connection we opened; messages go to ``receiver``."""

    def __init__(
        self,
        uri: WebSocketURI,
        headers: HeaderItems,
        receiver: Receiver,
        clock: Clock | None = None,
        *,
        subprotocols: Sequence[str] | None = None,
        max_size: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_pong: Callable[[bytes], None] | None = None,
    ) -> None:
        proto = ClientProtocol(
            uri,
            subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
            max_size=max_size,
            logger=_ws_log,
        )
        super().__init__(proto, masked_out=True, clock=clock, max_size=max_size)
        self.client_proto = proto
        self.headers = list(headers.items() if isinstance(headers, Mapping) else headers)
        self.receiver = receiver
        self._pong = on_pong
        #: Resolved once the upgrade succeeded; fails with websockets' handshake error.
        self.opened: asyncio.Future[None] = self.loop.create_future()
        # The receiver's methods, bound once: called for every message.
        self.on_binary = receiver.on_binary  # type: ignore[method-assign]
        self.on_text = receiver.on_text  # type: ignore[method-assign]

    @property
    def subprotocol(self) -> str | None:
        return self.client_proto.subprotocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        request = self.client_proto.connect()
        for key, value in self.headers:
            request.headers[key] = value
        self.client_proto.send_request(request)
        self._flush()

    def on_handshake(self) -> None:
        self.proto.events_received()
        error = self.client_proto.handshake_exc
        if error is not None:
            if self.lifecycle.phase is Phase.HANDSHAKE:
                self.lifecycle.on(Event.ANSWERED)
            if not self.opened.done():
                self.opened.set_exception(error)

    def on_open(self) -> None:
        if not self.opened.done():
            self.opened.set_result(None)

    def on_pong(self, data: bytes) -> None:
        if self._pong is not None:
            self._pong(data)

    def on_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            error = (
                self.client_proto.handshake_exc or exc or ConnectionError("closed during handshake")
            )
            self.opened.set_exception(error)
            self.opened.exception()  # retrieved: nobody may be waiting any more


def ssl_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(
    url: str,
    receiver: Receiver,
    *,
    headers: HeaderItems = (),
    subprotocols: Sequence[str] | None = None,
    timeout_s: float = 10.0,
    clock: Clock | None = None,
    max_size: int = DEFAULT_MAX_MESSAGE_BYTES,
    ssl_ctx: ssl.SSLContext | None = None,
    on_pong: Callable[[bytes], None] | None = None,
    user_agent: str | None = None,
) -> ClientConnection:
    """Connect and complete the opening handshake within ``timeout_s``.

    Raises ``OSError``, ``TimeoutError`` or websockets' ``InvalidHandshake`` (a refusal:
    ``InvalidStatus`` carries the response).
    """
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    items = list(headers.items() if isinstance(headers, Mapping) else headers)
    if user_agent is not None:
        items.append(("User-Agent", user_agent))
    conn: ClientConnection | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_connection(
                lambda: ClientConnection(
                    uri,
                    items,
                    receiver,
                    clock,
                    subprotocols=subprotocols,
                    max_size=max_size,
                    on_pong=on_pong,
                ),
                uri.host,
                uri.port,
                ssl=(ssl_ctx or ssl_context()) if uri.secure else None,
            )
            await conn.opened
    except BaseException:
        if conn is not None:
            conn.abort()
        raise
    return conn


__all__ = ["ClientConnection", "Receiver", "connect", "ssl_context"]
