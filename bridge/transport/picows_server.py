"""The picows backend of the server side: Cython framing on uvloop's transports.

picows parses and builds every frame in C and calls :meth:`PicowsServerConnection.on_ws_frame`
once per frame with the payload already unmasked, so a 20 ms audio frame costs bridge one
Python call in and one out. Everything above the frame (the decision on the upgrade, the
close procedure, the lifecycle, the outcome, the backpressure policy) is the same as on the
websockets backend (``bridge.transport.base.ServerSide``): the call server cannot tell which
one carries it, and the integration suite runs against both.

What picows does itself: the HTTP request parsing, the 101 (after :meth:`accept` said yes),
and failing a connection whose frames break RFC 6455 (bad masking, bad opcode, a control
frame too long, a frame over ``max_size``: close 1002/1009, then TCP). What it lets through,
bridge checks here (found by the fuzzer, docs/reliability.md s.2): the upgrade's headers
(websockets' own check, so both backends refuse alike), reserved bits on any frame (pings
are answered here, after that check), and the peer's close frame (its code and reason).

Import rule: asyncio, picows, websockets' data types and its check of an upgrade request
(``ServerProtocol.accept``), ``bridge.transport``, ``bridge.pacing``.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
from collections.abc import Callable, Iterable
from typing import Any

from multidict import CIMultiDict
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)
from picows import picows as _impl
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader, ProtocolError
from websockets.frames import Close
from websockets.http11 import Request
from websockets.server import ServerProtocol

from bridge.pacing import Clock, MonotonicClock
from bridge.transport.base import CloseInfo, ServerSide
from bridge.transport.connection import (
    CLOSE_TIMEOUT_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    WRITE_BUFFER_ABORT_BYTES,
)
from bridge.transport.lifecycle import Event, Lifecycle, Phase

log = logging.getLogger("bridge.transport")
#: websockets' handshake check logs nothing bridge does not log itself.
_quiet = logging.getLogger("bridge.websocket.check")
_quiet.propagate = False

_BINARY = WSMsgType.BINARY
_TEXT = WSMsgType.TEXT
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PONG = WSMsgType.PONG
_PING = WSMsgType.PING
_ACCEPT = object()  # the decision "answer 101"
#: Initial read buffer per connection (grows as needed).
READ_BUFFER_BYTES = 2048


#: picows' own check of the upgrade headers (what it would answer 400 to after a 101 decision).
_validate_upgrade_request: Callable[[WSUpgradeRequest], bytes] = _impl._validate_upgrade_request  # type: ignore[attr-defined]


def _latin1(value: str) -> str:
    """A header value as websockets reads it: bytes 0x80-0xFF (obs-text, RFC 9110 s.5.5) as
    ISO-8859-1 characters; picows gives them as UTF-8, undecodable bytes as surrogates."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def _code(code: Any) -> int:
    return int(getattr(code, "value", code))


class PicowsServerConnection(WSListener, ServerSide):
    """One accepted connection on picows; built by :func:`serve`'s listener factory."""

    def __init__(
        self, *, clock: Clock | None = None, max_size: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.clock = clock or MonotonicClock()
        self.max_size = max_size
        self.lifecycle = Lifecycle()
        self.is_open = False
        self.peer = "?"
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.transport: WSTransport | None = None
        self._decision: Any = None
        self._request: WSUpgradeRequest | None = None
        self._fragments: bytearray | None = None
        self._fragment_text = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._sent: CloseInfo | None = None
        self._rcvd: CloseInfo | None = None

    # --- the upgrade (called from the listener factory) -----------------------------------

    def decide(self, request: WSUpgradeRequest) -> Any:
        """What the listener factory returns: this listener (101) or an HTTP answer."""
        self._request = request
        self.on_connect()
        try:
            headers = Headers([(str(k), _latin1(str(v))) for k, v in request.headers.items()])
        except InvalidHeader as exc:  # a control character in a value: 400, as websockets
            self.respond(
                400,
                f"Failed to open a WebSocket connection: {exc}.\n".encode(
                    "ascii", "backslashreplace"
                ),
            )
        else:
            self.on_request(Request(request.path.decode("latin-1"), headers))
        decision = self._decision
        if decision is _ACCEPT:
            return self
        # Answered: picows writes it and closes; no listener callback will come.
        self.loop.call_soon(self._gone, None)
        return WSUpgradeResponseWithListener(decision, None)

    def accept(self, request: Request) -> int:
        # websockets' own check of the upgrade first (one Sec-WebSocket-Key of 16 bytes,
        # version 13...): picows lets a second key or version 8 through. Its refusal is
        # the websockets backend's, word for word.
        verdict = ServerProtocol(logger=_quiet).accept(request)
        if verdict.status_code != 101:
            self.respond(
                verdict.status_code,
                bytes(verdict.body),
                headers=[(k, v) for k, v in verdict.headers.raw_items() if k == "Upgrade"],
            )
            return int(verdict.status_code)
        try:
            assert self._request is not None
            _validate_upgrade_request(self._request)
        except RuntimeError as exc:  # not a websocket upgrade: as websockets answers it
            self.respond(400, f"Failed to open a WebSocket connection: {exc}.\n".encode())
            return 400
        self._decision = _ACCEPT
        return 101

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        response = WSUpgradeResponse()
        response.version = b"HTTP/1.1"
        response.status = http.HTTPStatus(status)
        fields: CIMultiDict[str] = CIMultiDict()
        fields["Date"] = email.utils.formatdate(usegmt=True)
        fields["Connection"] = "close"
        fields["Cache-Control"] = "no-store"
        if body:
            fields["Content-Type"] = content_type  # (picows adds Content-Length)
        elif status != 204:
            fields["Content-Length"] = "0"
        for key, value in headers:
            fields[key] = value
        response.headers = fields
        response.body = body or None
        self._decision = response
        if self.lifecycle.phase is Phase.HANDSHAKE:
            self.lifecycle.on(Event.ANSWERED)

    # --- picows' listener callbacks --------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        peer = transport.underlying_transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.is_open = True
        self.lifecycle.on(Event.UPGRADED)
        self.on_open()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:  # picows passes them; no extension is on
            if self.is_open:
                self.fail(1002, "reserved bits must be 0")
            return
        if kind == _BINARY and frame.fin and self._fragments is None:
            if self.is_open:  # (data after a close frame is ignored)
                self.on_binary(frame.get_payload_as_bytes(), self.clock.now_ns())
        elif kind == _CLOSE:
            self._on_close_frame(transport, frame)
        elif kind == _PING:  # answered here, not by picows: its reserved bits are checked above
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind == _PONG:
            self.on_pong(frame.get_payload_as_bytes())
        elif kind in (_BINARY, _TEXT, _CONT) and self.is_open:
            self._on_data(kind, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        handshake = transport.close_handshake
        if handshake is not None:
            if handshake.sent is not None and self._sent is None:
                self._sent = (_code(handshake.sent.code), handshake.sent.reason or "")
            if handshake.recv is not None and self._rcvd is None:
                self._rcvd = (_code(handshake.recv.code), handshake.recv.reason or "")
        if self.is_open:
            self.is_open = False
            if self._sent is not None and self._rcvd is None:
                self.lifecycle.on(Event.PEER_FAULT)  # picows failed it (bad frame, too big)
            elif self._rcvd is not None:
                self.lifecycle.on(Event.PEER_CLOSE)
            self.on_closing()
        self._gone(None)
        # picows' transport holds this listener: dropping ours ends the cycle, so the
        # connection and its call are freed when the loop lets go, not by the collector.
        self.transport = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    # --- what the logic calls --------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        if not self.is_open:
            return
        transport = self.transport
        assert transport is not None
        transport.send(_BINARY, data)
        if self._writing_paused:
            self._check_backlog(transport)

    def send_text(self, text: str) -> None:
        if self.is_open and self.transport is not None:
            self.transport.send(_TEXT, text.encode())

    def ping(self, data: bytes = b"") -> None:
        if self.is_open and self.transport is not None:
            self.transport.send_ping(data)

    def close(self, code: int, reason: str = "", event: Event = Event.CLOSE) -> None:
        if not self.is_open:
            return
        transport = self.transport
        assert transport is not None
        self.lifecycle.on(event)
        self.is_open = False
        self._sent = (code, reason)
        transport.send_close(WSCloseCode(code), reason.encode())
        self.on_closing()
        self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, transport.disconnect, False)

    def fail(self, code: int, reason: str, event: Event = Event.PEER_FAULT) -> None:
        """The peer broke the protocol: close with ``code`` and drop TCP at once."""
        self.close(code, reason, event)
        if self.transport is not None:
            self.transport.disconnect()

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(False)

    def abort(self) -> None:
        self.drop()

    @property
    def close_sent(self) -> CloseInfo | None:
        return self._sent

    @property
    def close_rcvd(self) -> CloseInfo | None:
        return self._rcvd

    # --- internals ---------------------------------------------------------------------------

    def _on_close_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            # websockets' parser checks what picows does not: a code an endpoint may send
            # (RFC 6455 s.7.4), a payload of 0 or 2+ bytes, a UTF-8 reason.
            close = Close.parse(frame.get_payload_as_bytes())
        except (ProtocolError, UnicodeDecodeError) as exc:
            if self.is_open:
                utf8 = isinstance(exc, UnicodeDecodeError)
                self.fail(1007 if utf8 else 1002, f"invalid close frame: {exc}"[:120])
            transport.disconnect()
            return
        code, reason = close.code, close.reason
        self._rcvd = (code, reason)
        if self.is_open:
            self.is_open = False
            sent = transport.close_handshake.sent if transport.close_handshake else None
            if transport.is_close_frame_sent and sent is not None:
                # picows failed the connection (a frame over max_size, bad framing) and this
                # is the peer's answer.
                self._sent = (_code(sent.code), sent.reason or "")
                self.lifecycle.on(Event.PEER_FAULT)
            else:
                # The peer closes first: answer with its code (RFC 6455 s.5.5.1), as
                # websockets does, then close TCP (the server's job).
                self.lifecycle.on(Event.PEER_CLOSE)
                reply = code if code != 1005 else 1000
                self._sent = (reply, reason)
                transport.send_close(WSCloseCode(reply), reason.encode())
            self.on_closing()
        transport.disconnect()

    def _on_data(self, kind: WSMsgType, frame: WSFrame) -> None:
        if kind != _CONT:
            if self._fragments is not None:
                self.fail(1002, "expected a continuation frame")
                return
            if not frame.fin:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                self._fragment_text = kind == _TEXT
                return
            if kind == _TEXT:
                self._deliver(True, frame.get_payload_as_bytes())
            else:
                self.on_binary(frame.get_payload_as_bytes(), self.clock.now_ns())
            return
        if self._fragments is None:
            self.fail(1002, "unexpected continuation frame")
            return
        self._fragments += frame.get_payload_as_memoryview()
        if len(self._fragments) > self.max_size:
            self.fail(1009, f"message over {self.max_size} bytes")
            return
        if frame.fin:
            whole, self._fragments = bytes(self._fragments), None
            self._deliver(self._fragment_text, whole)

    def _deliver(self, is_text: bool, data: bytes) -> None:
        now = self.clock.now_ns()
        if not is_text:
            self.on_binary(data, now)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            self.fail(1007, f"{exc.reason} at position {exc.start}")
            return
        self.on_text(text, now)

    def _check_backlog(self, transport: WSTransport) -> None:
        size = transport.underlying_transport.get_write_buffer_size()
        if size > WRITE_BUFFER_ABORT_BYTES:
            log.warning("peer is not reading; aborting", extra={"peer": self.peer})
            transport.disconnect(False)

    def _gone(self, exc: Exception | None) -> None:
        if self.lost.done():
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.lifecycle.on(Event.LOST)
        try:
            self.on_lost(exc)
        finally:
            self.lost.set_result(None)


async def serve(
    factory: Callable[[], PicowsServerConnection],
    host: str | None,
    port: int,
    *,
    max_size: int,
    handshake_timeout_s: float = CLOSE_TIMEOUT_S,
    **kwargs: Any,
) -> asyncio.Server:
    """Listen with picows; ``factory`` makes one connection object per request.

    ``handshake_timeout_s``: a connection whose request is not complete by then is dropped
    (the websockets backend arms ``--first-message-timeout-s`` at connect, which also covers
    the request; no connection object exists here before the request is whole)."""

    def listener(request: WSUpgradeRequest) -> Any:
        return factory().decide(request)

    # picows logs each frame error it fails a connection for; bridge logs the refusal itself
    # (one line per call, with its close code), so picows' own lines would be a second one.
    logging.getLogger("picows").setLevel(logging.CRITICAL)

    server: asyncio.Server = await ws_create_server(
        listener,
        host,
        port,
        max_frame_size=max_size,
        websocket_handshake_timeout=handshake_timeout_s,
        enable_auto_pong=False,  # on_ws_frame answers (after checking the frame)
        # picows' default is 16 KiB per connection; audio frames are under 1 KiB and the
        # buffer grows for a larger message, so 2 KiB keeps a call's memory small.
        read_buffer_init_size=READ_BUFFER_BYTES,
        logger_name="bridge.websocket",
        **kwargs,
    )
    return server


def available() -> bool:
    return True
