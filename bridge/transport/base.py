"""What server-side logic may use of a connection, whichever library carries it.

bridge's call server (``bridge.server``) is written against :class:`ServerSide` only; two
backends implement it: ``bridge.transport.server.ServerConnection`` (websockets' sans-I/O
core, pure Python framing) and ``bridge.transport.picows_server.PicowsServerConnection``
(picows, Cython framing on uvloop). Both deliver messages synchronously from the read, keep
the same :class:`~bridge.transport.lifecycle.Lifecycle`, and take the same decisions
(:meth:`accept`, :meth:`respond`) on the same request type (websockets' ``Request``).

Import rule: asyncio, websockets' data types, ``bridge.transport.lifecycle``, ``bridge.pacing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from websockets.http11 import Request

from bridge.pacing import Clock
from bridge.transport.lifecycle import Event, Lifecycle

#: A close frame as (code, reason).
CloseInfo = tuple[int, str]


class ServerSide:
    """The interface of an accepted connection (see the module doc)."""

    lifecycle: Lifecycle
    #: Whether the websocket is open (data may be sent); read for every frame.
    is_open: bool
    peer: str
    clock: Clock
    loop: asyncio.AbstractEventLoop
    #: Resolved when TCP is gone.
    lost: asyncio.Future[None]

    # --- what the logic calls -------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        raise NotImplementedError

    def send_text(self, text: str) -> None:
        raise NotImplementedError

    def close(self, code: int, reason: str = "", event: Event = Event.CLOSE) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        """Close TCP now, without a closing handshake (before the upgrade, or a dead peer)."""
        raise NotImplementedError

    def accept(self, request: Request) -> int:
        """Answer the upgrade; returns the status sent (101, or a refusal of a bad one)."""
        raise NotImplementedError

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A plain HTTP answer; the connection then closes."""
        raise NotImplementedError

    @property
    def close_sent(self) -> CloseInfo | None:
        raise NotImplementedError

    @property
    def close_rcvd(self) -> CloseInfo | None:
        raise NotImplementedError

    # --- hooks the logic overrides ----------------------------------------------------------

    def on_connect(self) -> None:
        """A TCP connection (or, for picows, its request) arrived: before :meth:`on_request`."""

    def on_request(self, request: Request) -> None:
        """Decide: :meth:`accept` or :meth:`respond`."""
        self.accept(request)

    def on_open(self) -> None:
        """The websocket is open."""

    def on_binary(self, data: bytes, now_ns: int) -> None:
        """A whole binary message."""

    def on_text(self, text: str, now_ns: int) -> None:
        """A whole text message (valid UTF-8)."""

    def on_pong(self, data: bytes) -> None:
        """A pong came in."""

    def on_closing(self) -> None:
        """The websocket left OPEN (a close frame went either way, or it failed)."""

    def on_lost(self, exc: Exception | None) -> None:
        """TCP is gone; the last hook called."""
