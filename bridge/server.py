"""The websocket server: a lean asyncio protocol driving websockets' sans-I/O core.

Why not ``websockets.asyncio.server``: each call's outbound frames are written from the
process-wide pacing timer, synchronously, in one pass over every due call; the sans-I/O
``ServerProtocol`` lets us do exactly that with no task or queue per connection, and it keeps
permessage-deflate off (docs/lessons.md s.7: it costs a lot on 20 ms PCM and buys nothing).

This module alone maps failures to close codes (``CLOSE_CODES``) and logs them, once. It also
decides, at the upgrade, who gets a websocket (README, "Security model" and "Limits"):
credentials (``bridge.auth``) else HTTP 401, draining else 503, ``--max-calls`` else 503 with
Retry-After; other paths are plain HTTP (``bridge.http``). Calls past ``--idle-timeout-s`` or
``--max-call-s`` are closed with 1008; on SIGTERM the server drains (``BridgeServer.drain``).
Metrics are sampled about once a second from the calls' own counters (``bridge.metrics``),
never per frame.

Import rule: anything in the package except ``cli``; one of the three modules that import
websockets (with ``simulator`` and ``upstream``; docs/architecture.md s.2).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import parse_qsl, urlencode

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from bridge.audio.resample import Resampler
from bridge.auth import Authenticator, Credentials, check_exposure
from bridge.call import DEVIATION_BUCKET_MS, INTERNAL_ERROR, Call, Handler
from bridge.config import ServerConfig
from bridge.endpoints import EndpointError
from bridge.errors import ConfigError, Fault, PeerError
from bridge.filewriter import written as file_writes_done
from bridge.http import UNAUTHORIZED, HttpResponse, HttpRoutes, phone_url, unavailable
from bridge.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bridge.metrics import CallMeter, Metrics, deviation_p99_ms
from bridge.pacing import Clock, MonotonicClock, Scheduler
from bridge.protocol.vonage import parse_connected, parse_event
from bridge.runtime import freeze_startup_heap
from bridge.units import FRAME_NS, MS, SUPPORTED_RATES
from bridge.webhooks import answer_ncco

log = logging.getLogger("bridge.server")
_ws_log = logging.getLogger("bridge.websocket")

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
#: Close code for a call ended by a limit (idle, duration): "policy violation".
LIMIT_CLOSE = POLICY_VIOLATION

#: One close code per peer fault. The README's "Bad input" table lists them, and
#: tests/integration/test_bad_input.py checks each against a real server.
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
#: How often call counters are added to the metrics and idle calls are looked for.
SAMPLE_PERIOD_S = 1.0
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
        self.auth = Authenticator.from_config(config)
        self.metrics = Metrics()
        self.routes = HttpRoutes(config, self.auth, self._metrics_text, lambda: not self.draining)
        self.connections: set[CallConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls_total = 0
        #: Websockets past the 101 and not yet closed: what --max-calls counts.
        self.upgraded = 0
        self.draining = False
        self.scheme = "wss" if config.tls_cert else "ws"
        self._no_upgraded: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ns: int | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._tick_due = 0.0
        self._sample_period_s = max(0.05, min(SAMPLE_PERIOD_S, config.idle_timeout_s / 4))
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self.connections if c.call is not None and not c.call.ended)

    async def start(self, *, reuse_port: bool = False) -> None:
        """Bind and listen. Settings that cannot work raise ``ConfigError`` (exit 2)."""
        check_exposure(self.config)
        ssl_context = _ssl_context(self.config)
        if self.config.public_url is not None:
            try:
                answer_ncco(self.config, {})
            except EndpointError as exc:
                raise ConfigError(f"the /answer NCCO would be invalid: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._no_upgraded = asyncio.Event()
        self._no_upgraded.set()
        if self.config.pipeline_rate is not None:
            # Filter design takes ~20 ms per rate pair; do it now, not on a live call.
            for rate in SUPPORTED_RATES:
                Resampler(rate, self.config.pipeline_rate)
                Resampler(self.config.pipeline_rate, rate)
        self._server = await self._loop.create_server(
            lambda: CallConnection(self),
            self.config.host,
            self.config.port,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
        )
        self._tick_due = self._loop.time() + self._sample_period_s
        self._tick = self._loop.call_at(self._tick_due, self._on_tick)

    async def drain(self, seconds: float, hurry: asyncio.Event | None = None) -> None:
        """Refuse new calls (503, /ready 503), let active ones run up to ``seconds``, then
        close what is left with 1001. Setting ``hurry`` (a second signal) cuts the wait short."""
        self.draining = True
        waiter = self._no_upgraded
        if waiter is not None and not waiter.is_set() and seconds > 0:
            waits: list[asyncio.Task[bool]] = [asyncio.ensure_future(waiter.wait())]
            if hurry is not None:
                waits.append(asyncio.ensure_future(hurry.wait()))
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
        log.info(
            "drained" if self.upgraded == 0 else "drain time over: closing calls",
            extra={"active_calls": self.active_calls},
        )
        await self.close()

    async def close(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop accepting, close every call with ``code``, wait for handlers to finish."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown(code, reason)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=CLOSE_TIMEOUT_S + 1)
        lost = [c.lost for c in self.connections]
        if lost:
            await asyncio.wait(lost, timeout=CLOSE_TIMEOUT_S + 1)
        await file_writes_done()  # recordings and call logs complete on disk
        if self._server is not None:
            await self._server.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.metrics.close()

    def refused(self, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()

    def upgrade_done(self, delta: int) -> None:
        self.upgraded += delta
        if self._no_upgraded is not None:
            if self.upgraded == 0:
                self._no_upgraded.set()
            else:
                self._no_upgraded.clear()

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
        due = self._timer_ns
        self._timer = None
        self._timer_ns = None
        now = self.clock.now_ns()
        if due is not None:
            self.metrics.pacing.observe(max(0, now - due) / 1e9)
        self.scheduler.service(now)

    # Once a second: metrics from the calls' counters, idle calls, event-loop lag.
    def _on_tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        self.metrics.loop_lag.observe(max(0.0, now - self._tick_due))
        self._sample(per_second=True)
        idle_ns = round(self.config.idle_timeout_s * 1e9)
        now_ns = self.clock.now_ns()
        for conn in list(self.connections):
            call = conn.call
            if call is None or call.ended:
                continue
            last = call.stats.last_arrival_ns or conn.started_ns
            if now_ns - last > idle_ns:
                conn.limit_close(
                    "idle_timeout", f"idle timeout: no audio for {self.config.idle_timeout_s:g} s"
                )
        self._tick_due = max(self._tick_due + self._sample_period_s, now)
        self._tick = loop.call_at(self._tick_due, self._on_tick)

    def _sample(self, per_second: bool = False) -> None:
        self.metrics.sample(
            ((c.call, c.meter) for c in self.connections if c.call is not None), per_second
        )
        counters = getattr(self.handler, "counters", None)  # a BuiltHandler's mode totals
        if counters is not None:
            self.metrics.sample_totals(counters())

    def _metrics_text(self) -> bytes:
        self._sample()
        return self.metrics.exposition()


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        pair = config.options_together("tls_cert", "tls_key")
        raise ConfigError(f"{pair}: cannot load: {exc}") from exc
    return context


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
        self.forwarded_for: str | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.meter = CallMeter()
        self.upgraded = False
        #: Set where the server decides how the call ends; else derived at connection_lost.
        self.outcome: str | None = None
        self.started_ns = 0
        self._early: list[bytes] = []
        self._fragments: bytearray | None = None
        self._fragment_text = False
        self._first_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._duration_timer: asyncio.TimerHandle | None = None
        self._closing_logged = False
        self._metrics_task: asyncio.Task[bytes] | None = None

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
        for timer in (self._first_timer, self._close_timer, self._duration_timer):
            if timer is not None:
                timer.cancel()
        server = self.server
        server.connections.discard(self)
        call = self.call
        if call is not None:
            call.end()
            server.metrics.sample([(call, self.meter)], per_second=False)
            server.metrics.calls_active.dec()
        if self.upgraded:
            outcome = self.outcome or self._derived_outcome()
            server.metrics.calls.labels(outcome).inc()
            server.upgrade_done(-1)
            if call is not None:
                log.info("call ended", extra={"outcome": outcome, **self._summary(call)})
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
        if code == INTERNAL_ERROR and self.outcome is None:
            self.outcome = "handler_error"
        self._closing_logged = True
        self.proto.send_close(code, reason)
        self._flush()
        self._after_io()

    # --- internals ----------------------------------------------------------------------

    def shutdown(self, code: int, reason: str) -> None:
        if self.proto.state is State.OPEN:
            if self.outcome is None:
                self.outcome = "shutdown"
            self.close(code, reason)
        elif self.transport is not None and self.proto.state is State.CONNECTING:
            self.transport.close()

    def limit_close(self, outcome: str, reason: str) -> None:
        """A limit ended the call (idle, duration): 1008 with ``reason``, logged once."""
        if self.proto.state is not State.OPEN:
            return
        self.outcome = self.outcome or outcome
        log.info(
            "call closed by limit: %s",
            reason,
            extra={"call_id": self.call.id if self.call else None, "peer": self.peer},
        )
        self.close(LIMIT_CLOSE, reason)

    def _derived_outcome(self) -> str:
        proto = self.proto
        if proto.close_rcvd is None and proto.close_sent is None:
            return "dropped"
        return "completed"

    def _summary(self, call: Call) -> dict[str, object]:
        stats = call.stats
        summary: dict[str, object] = dict(call.summary())
        now_ns = self.server.clock.now_ns()
        summary["duration_s"] = round((now_ns - self.started_ns) / 1e9, 3)
        summary["jitter_p99_ms"] = deviation_p99_ms(stats.deviation_counts, DEVIATION_BUCKET_MS)
        summary["drift_ppm"] = _drift_ppm(
            stats.first_arrival_ns, stats.last_arrival_ns, stats.frames_in
        )
        sent, rcvd = self.proto.close_sent, self.proto.close_rcvd
        summary["close_code"] = rcvd.code if rcvd is not None else None
        summary["close_sent"] = sent.code if sent is not None else None
        return summary

    def _on_request(self, request: Request) -> None:
        path, _, query_string = request.path.partition("?")
        server = self.server
        pairs = parse_qsl(query_string, keep_blank_values=True)
        query = dict(pairs)
        creds = Credentials(_one_header(request.headers, "Authorization"), query.get("token"))
        self.forwarded_for = _one_header(request.headers, "X-Forwarded-For")
        if path != self.config.path:
            if path == "/metrics" and server.metrics.multiprocess:
                self._send_metrics()  # all workers' files: rendered off the loop
                return
            reply, why = server.routes.handle(path, query, creds)
            self._send_plain(reply)
            if why is not None:
                log.warning("webhook refused: %s", why, extra={"peer": self.peer, "path": path})
            return
        refusal: tuple[HttpResponse, str, str] | None = None
        reason = server.auth.check(creds)
        if reason is not None:
            refusal = (UNAUTHORIZED, "unauthorized", reason)
        elif server.draining:
            refusal = (unavailable("draining"), "draining", "server draining")
        elif server.upgraded >= self.config.max_calls:
            refusal = (
                unavailable("at capacity"),
                "capacity",
                f"at --max-calls {self.config.max_calls}",
            )
        if refusal is not None:
            reply, label, why = refusal
            server.refused(label)
            self._send_plain(reply)
            log.warning(
                "upgrade refused: %d %s",
                reply.status,
                why,
                extra={"peer": self.peer, "forwarded_for": self.forwarded_for},
            )
            return
        response = self.proto.accept(request)
        self.proto.send_response(response)
        self._flush()
        if response.status_code != 101:
            server.refused("bad_handshake")
            log.info(
                "upgrade refused",
                extra={"peer": self.peer, "status": response.status_code, "path": path},
            )
            return
        self.upgraded = True
        server.upgrade_done(+1)
        # The token is a credential: it never becomes call metadata (nor a log line).
        self.query = urlencode([(k, v) for k, v in pairs if k != "token"])

    def _send_metrics(self) -> None:
        server = self.server
        server._sample()
        task = asyncio.get_running_loop().create_task(server.metrics.render())
        self._metrics_task = task  # held until answered (the loop keeps weak references)

        def send(done: asyncio.Task[bytes]) -> None:
            self._metrics_task = None
            if self.transport is None or self.transport.is_closing():
                return
            if done.cancelled() or done.exception() is not None:
                self._send_plain(unavailable("metrics unavailable"))
            else:
                self._send_plain(HttpResponse(200, done.result(), METRICS_CONTENT_TYPE))

        task.add_done_callback(send)

    def _send_plain(self, reply: HttpResponse) -> None:
        status = http.HTTPStatus(reply.status)
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Cache-Control", "no-store"),
            ]
        )
        if reply.status != 204:
            headers["Content-Length"] = str(len(reply.body))
            headers["Content-Type"] = reply.content_type
        for key, value in reply.headers:
            headers[key] = value
        self.proto.send_response(Response(status.value, status.phrase, headers, reply.body))
        self._flush()

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
        server = self.server
        server.calls_total += 1
        server.metrics.calls_active.inc()
        self.started_ns = server.clock.now_ns()
        loop = asyncio.get_running_loop()
        max_s = self.config.max_call_s
        self._duration_timer = loop.call_later(
            max_s, self.limit_close, "max_duration", f"maximum call duration {max_s:g} s"
        )
        log.info(
            "call started",
            extra={
                "call_id": call.id,
                "rate": call.rate,
                "peer": self.peer,
                "forwarded_for": self.forwarded_for,
                "metadata": dict(call.metadata),
                "query": dict(call.query),
            },
        )
        for early in self._early:
            call.feed_audio(early)
        self._early.clear()
        task = loop.create_task(self._run_handler(call))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)

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
                exc_info=exc,
            )
            self.outcome = self.outcome or "handler_error"
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
        if self.outcome is None:
            timeout = exc.fault is Fault.FIRST_MESSAGE_TIMEOUT
            self.outcome = "first_message_timeout" if timeout else "protocol_error"
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
                self.outcome = self.outcome or "protocol_error"
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


def _one_header(headers: Headers, name: str) -> str | None:
    """A header given exactly once, else ``None`` (two Authorization headers are no answer)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


def _drift_ppm(first_ns: int | None, last_ns: int | None, frames: int) -> float | None:
    """Vonage's media clock against ours: audio received vs time taken (positive: theirs is
    fast). Arrival jitter dominates below a minute or so; needs at least a second."""
    if first_ns is None or last_ns is None or frames < 2:
        return None
    elapsed = last_ns - first_ns
    if elapsed < 1_000 * MS:
        return None
    media = (frames - 1) * FRAME_NS
    return round((media - elapsed) / elapsed * 1e6, 1)


def _decode(data: bytes, fault: Fault) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise PeerError(fault, "not UTF-8") from exc


async def serve(
    config: ServerConfig,
    handler: Handler,
    stop: asyncio.Event,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[BridgeServer], None] | None = None,
) -> None:
    """Run until ``stop`` is set, then drain (``--drain-seconds``) and return.

    Setting ``stop`` again during the drain closes the remaining calls at once (1001).
    """
    server = BridgeServer(config, handler)
    await server.start(reuse_port=reuse_port)
    # Everything built so far (modules, filters, config) lives for the whole process.
    freeze_startup_heap()
    url = f"{server.scheme}://{config.host}:{server.port}{config.path}"
    if on_listening is not None:
        on_listening(server)
    else:
        log.info("listening", extra={"url": url, **phone_url(config, server.port)})
    await stop.wait()
    stop.clear()
    log.info(
        "shutting down",
        extra={"active_calls": server.active_calls, "drain_seconds": config.drain_seconds},
    )
    await server.drain(config.drain_seconds, hurry=stop)
