"""The server side of the connection layer: one accepted TCP connection.

A subclass decides what to do with the upgrade request in :meth:`ServerConnection.on_request`:
:meth:`accept` it (websockets checks the handshake and answers 101, or 400/426 for a broken
one), or :meth:`respond` with a plain HTTP answer (health checks, refusals). Answers are
built by ``ServerProtocol.reject`` and adjusted, never written by hand.

Import rule: asyncio, websockets, ``bridge.transport``, ``bridge.pacing``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from bridge.pacing import Clock
from bridge.transport.base import CloseInfo, ServerSide
from bridge.transport.connection import DEFAULT_MAX_MESSAGE_BYTES, Connection, CredentialFilter
from bridge.transport.lifecycle import Event, Phase

_ws_log = logging.getLogger("bridge.websocket")
_ws_log.addFilter(CredentialFilter())  # no key in a debug log of the handshake


class ServerConnection(Connection, ServerSide):
    """A connection accepted by a listening socket (``loop.create_server``)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_size: int = DEFAULT_MAX_MESSAGE_BYTES,
        subprotocols: Iterable[str] | None = None,
    ) -> None:
        proto = ServerProtocol(
            subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
            max_size=max_size,
            logger=_ws_log,
        )
        super().__init__(proto, masked_out=False, clock=clock, max_size=max_size)
        self.server_proto = proto
        #: The upgrade request, once it came.
        self.request: Request | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.on_connect()

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def close_sent(self) -> CloseInfo | None:
        sent = self.proto.close_sent
        return None if sent is None else (sent.code, sent.reason)

    @property
    def close_rcvd(self) -> CloseInfo | None:
        rcvd = self.proto.close_rcvd
        return None if rcvd is None else (rcvd.code, rcvd.reason)

    def on_handshake(self) -> None:
        for event in self.proto.events_received():
            if isinstance(event, Request) and self.request is None:
                self.request = event
                self.on_request(event)
        if self.server_proto.handshake_exc is not None and self.request is None:
            # Not even a request (garbage, a line too long): websockets answered 400.
            self._answered()

    def accept(self, request: Request) -> int:
        """Answer the upgrade; returns the status sent (101, or websockets' refusal)."""
        response = self.server_proto.accept(request)
        self.server_proto.send_response(response)
        if response.status_code != 101:
            self._answered()
        return int(response.status_code)

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A plain HTTP answer, then the connection closes (``Connection: close``)."""
        response = self.server_proto.reject(status, "")
        response.headers["Cache-Control"] = "no-store"
        del response.headers["Content-Length"]
        del response.headers["Content-Type"]
        if status != 204:
            response.headers["Content-Length"] = str(len(body))
            response.headers["Content-Type"] = content_type
        for key, value in headers:
            response.headers[key] = value
        response.body = body
        self.server_proto.send_response(response)
        self._answered()

    def _answered(self) -> None:
        if self.lifecycle.phase is Phase.HANDSHAKE:
            self.lifecycle.on(Event.ANSWERED)
