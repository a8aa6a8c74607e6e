"""The websocket server: a lean asyncio protocol driving websockets' sans-I/O core.

Why not ``websockets.asyncio.server``: each call's outbound frames are written from the
process-wide pacing timer, synchronously, in one pass over every due call; the sans-I/O
``ServerProtocol`` lets us do exactly that with no task or queue per connection, and it keeps
permessage-deflate off (lessons.md: it costs a lot on 20 ms PCM and buys nothing).

This module alone maps failures to close codes (``CLOSE_CODES``) and logs them, once.

Import rule: the only module besides ``simulator`` that imports websockets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from bridge.audio.resample import Resampler
from bridge.call import Call, Handler
from bridge.config import ServerConfig
from bridge.errors import Fault, PeerError
from bridge.pacing import Clock, MonotonicClock, Scheduler
from bridge.protocol.vonage import SUPPORTED_RATES, parse_connected, parse_event

log = logging.getLogger("bridge.server")
_ws_log = logging.getLogger("bridge.websocket")

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
INTERNAL_ERROR = 1011

#: One close code per peer fault; the README's table is generated from this mapping.
CLOSE_CODES: dict[Fault, int] = {
    Fault.BINARY_BEFORE_METADATA: 1002,
    Fault.FIRST_MESSAGE_NOT_JSON: 1007,
    Fault.FIRST_MESSAGE_NOT_OBJECT: 1007,
    Fault.MISSING_CONTENT_TYPE: 1003,
    Fault.UNSUPPORTED_CONTENT_TYPE: 1003,
    Fault.MESSAGE_TOO_BIG: 1009,
    Fault.FIRST_MESSAGE_TIMEOUT: 1008,
    Fault.INVALID_EVENT: 1007,
}

CLOSE_TIMEOUT_S = 2.0
LENIENT_MAX_EARLY_FRAMES = 50
WRITE_BUFFER_ABORT_BYTES = 4 << 20


def close_reason(fault: Fault, detail: str = "") -> str:
    """A close reason within the 123 bytes RFC 6455 allows."""
    text = f"{fault.value}: {detail}" if detail else fault.value
    return text.encode()[:123].decode(errors="ignore")


class BridgeServer:
    """Accepts Vonage websocket calls at ``config.path`` and runs ``handler`` for each."""

    def __init__(self, config: ServerConfig, handler: Handler, clock: Clock | None = None) -> None:
        self.config = config
        self.handler = handler
        self.clock = clock or MonotonicClock()
        self.scheduler = Scheduler(self.clock, config.lead_ms, arm=self._arm_timer)
        self.connections: set[CallConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls_total = 0
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ns: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self.connections if c.call is not None and not c.call.ended)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.config.pipeline_rate is not None:
            # Filter design takes ~20 ms per rate pair; do it now, not on a live call.
            for rate in SUPPORTED_RATES:
                Resampler(rate, self.config.pipeline_rate)
                Resampler(self.config.pipeline_rate, rate)
        self._server = await self._loop.create_server(
            lambda: CallConnection(self), self.config.host, self.config.port
        )

    async def close(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop accepting, close every call with ``code``, wait for handlers to finish."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown(code, reason)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=CLOSE_TIMEOUT_S + 1)
        lost = [c.lost for c in self.connections]
        if lost:
            await asyncio.wait(lost, timeout=CLOSE_TIMEOUT_S + 1)
        if self._server is not None:
            await self._server.wait_closed()
        if self._timer is not None:
            self._timer.cancel()

    # One timer for the whole process: the scheduler asks for the earliest wake-up.
    def _arm_timer(self, wake_ns: int) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._timer is not None and self._timer_ns is not None and self._timer_ns <= wake_ns:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (wake_ns - self.clock.now_ns()) / 1e9)
        self._timer_ns = wake_ns
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_ns = None
        self.scheduler.service()


class CallConnection(asyncio.Protocol):
    """One TCP connection: handshake, first message, then one :class:`Call`."""

    def __init__(self, server: BridgeServer) -> None:
        self.server = server
        self.config = server.config
        self.proto = ServerProtocol(max_size=server.config.max_message_bytes, logger=_ws_log)
        self.transport: asyncio.Transport | None = None
        self.call: Call | None = None
        self.query = ""
        self.peer = "?"
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._early: list[bytes] = []
        self._fragments: bytearray | None = None
        self._fragment_text = False
        self._first_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._closing_logged = False

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._first_timer = loop.call_later(
            self.config.first_message_timeout_s, self._first_message_timeout
        )

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        events = proto.events_received()
        self._flush()
        try:
            for event in events:
                if isinstance(event, Request):
                    self._on_request(event)
                elif isinstance(event, Frame) and proto.state is State.OPEN:
                    self._on_frame(event.opcode, bytes(event.data), event.fin)
        except PeerError as exc:
            self._refuse(exc)
        self._after_io()

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        self._after_io()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.receive_eof()
        for timer in (self._first_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self.server.connections.discard(self)
        call = self.call
        if call is not None:
            call.end()
            code = self.proto.close_rcvd.code if self.proto.close_rcvd else None
            log.info(
                "call ended",
                extra={"close_code": code, **call.summary()},
            )
        if not self.lost.done():
            self.lost.set_result(None)

    # --- CallIO (what the Call uses) ----------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        if self.proto.state is not State.OPEN or self.transport is None:
            return
        self.proto.send_binary(data)
        self._flush()
        if self.transport.get_write_buffer_size() > WRITE_BUFFER_ABORT_BYTES:
            log.warning("peer is not reading; aborting", extra={"peer": self.peer})
            self.transport.abort()

    def send_text(self, text: str) -> None:
        if self.proto.state is not State.OPEN:
            return
        self.proto.send_text(text.encode())
        self._flush()

    def close(self, code: int, reason: str) -> None:
        if self.proto.state is not State.OPEN:
            return
        self._closing_logged = True
        self.proto.send_close(code, reason)
        self._flush()
        self._after_io()

    # --- internals ----------------------------------------------------------------------

    def shutdown(self, code: int, reason: str) -> None:
        if self.proto.state is State.OPEN:
            self.close(code, reason)
        elif self.transport is not None and self.proto.state is State.CONNECTING:
            self.transport.close()

    def _on_request(self, request: Request) -> None:
        path, _, self.query = request.path.partition("?")
        if path != self.config.path:
            response = self.proto.reject(404, "Not Found\n")
        else:
            response = self.proto.accept(request)
        self.proto.send_response(response)
        self._flush()
        if response.status_code != 101:
            log.info(
                "upgrade refused",
                extra={"peer": self.peer, "status": response.status_code, "path": path},
            )

    def _on_frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not fin:
                self._fragments = bytearray(data)
                self._fragment_text = opcode is Opcode.TEXT
                return
            self._on_message(opcode is Opcode.TEXT, data)
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments += data
            if fin:
                whole, self._fragments = bytes(self._fragments), None
                self._on_message(self._fragment_text, whole)

    def _on_message(self, is_text: bool, data: bytes) -> None:
        call = self.call
        if call is not None:
            if is_text:
                event = parse_event(_decode(data, Fault.INVALID_EVENT))
                if event is not None:
                    call.feed_event(event)
            else:
                call.feed_audio(data)
            return
        if not is_text:
            if not self.config.lenient:
                raise PeerError(Fault.BINARY_BEFORE_METADATA)
            if len(self._early) < LENIENT_MAX_EARLY_FRAMES:
                self._early.append(bytes(data))
            return
        connected = parse_connected(_decode(data, Fault.FIRST_MESSAGE_NOT_JSON), self.query)
        self._start_call(
            Call(
                connected,
                self,
                self.server.scheduler,
                pipeline_rate=self.config.pipeline_rate,
                playout_max_ms=self.config.playout_max_ms,
            )
        )

    def _start_call(self, call: Call) -> None:
        if self._first_timer is not None:
            self._first_timer.cancel()
        self.call = call
        self.server.calls_total += 1
        log.info(
            "call started",
            extra={
                "call_id": call.id,
                "rate": call.rate,
                "peer": self.peer,
                "metadata": dict(call.metadata),
                "query": dict(call.query),
            },
        )
        for early in self._early:
            call.feed_audio(early)
        self._early.clear()
        task = asyncio.get_running_loop().create_task(self._run_handler(call))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _run_handler(self, call: Call) -> None:
        try:
            await self.server.handler(call)
            if not call.ended:
                await call.flush()
                await call.drain()
                call.hangup(NORMAL_CLOSURE, "call complete")
        except Exception as exc:
            log.error(
                "handler failed: %s: %s",
                type(exc).__name__,
                exc,
                extra={"call_id": call.id},
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            call.hangup(INTERNAL_ERROR, "handler error")

    def _refuse(self, exc: PeerError) -> None:
        code = CLOSE_CODES[exc.fault]
        reason = close_reason(exc.fault, exc.detail)
        log.warning(
            "call refused: %d %s",
            code,
            reason,
            extra={"peer": self.peer, "call_id": self.call.id if self.call else None},
        )
        self._closing_logged = True
        if self.proto.state is State.OPEN:
            self.proto.send_close(code, reason)
            self._flush()

    def _first_message_timeout(self) -> None:
        if self.call is not None:
            return
        if self.proto.state is State.OPEN:
            self._refuse(
                PeerError(Fault.FIRST_MESSAGE_TIMEOUT, f"{self.config.first_message_timeout_s:g} s")
            )
            self._after_io()
        elif self.transport is not None:
            self.transport.close()

    def _after_io(self) -> None:
        proto = self.proto
        if proto.state is State.OPEN or proto.state is State.CONNECTING:
            return
        if not self._closing_logged and proto.close_sent is not None:
            # websockets failed the connection itself (e.g. message too big, bad framing).
            self._closing_logged = True
            code, reason = proto.close_sent.code, proto.close_sent.reason
            if proto.close_rcvd is None:
                log.warning(
                    "call refused: %d %s",
                    code,
                    reason,
                    extra={"peer": self.peer, "call_id": self.call.id if self.call else None},
                )
        if self.call is not None:
            self.call.end()
        if proto.close_expected() and self._close_timer is None and self.transport is not None:
            self._close_timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_S, self.transport.close
            )

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.proto.data_to_send():
            if data:
                transport.write(data)
            else:
                transport.close()


def _decode(data: bytes, fault: Fault) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise PeerError(fault, "not UTF-8") from exc


async def serve(config: ServerConfig, handler: Handler, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then close every call with 1001 and return."""
    server = BridgeServer(config, handler)
    await server.start()
    log.info("listening", extra={"url": f"ws://{config.host}:{server.port}{config.path}"})
    await stop.wait()
    log.info("shutting down", extra={"active_calls": server.active_calls})
    await server.close()
