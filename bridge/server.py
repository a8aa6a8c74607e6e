"""The call server, on bridge's connection layer (``bridge.transport``, docs/transport.md).

Why not ``websockets.asyncio.server``: each call's outbound frames are written from the
process-wide pacing timer or straight from the read, synchronously; the connection layer lets
us do exactly that with no task or queue per connection or per frame, and it keeps
permessage-deflate off (docs/lessons.md s.7: it costs a lot on 20 ms PCM and buys nothing).
:class:`CallLogic` holds every decision and runs on either backend (``--transport``):
:class:`CallConnection` (websockets' sans-I/O core with our framer) or picows.

This module alone maps failures to close codes (``CLOSE_CODES``) and logs them, once. It also
decides, at the upgrade, who gets a websocket (README, "Security model" and "Limits"):
credentials (``bridge.auth``) else HTTP 401, draining else 503, ``--max-calls`` else 503 with
Retry-After; other paths are plain HTTP (``bridge.http``). Calls past ``--idle-timeout-s`` or
``--max-call-s`` are closed with 1008; on SIGTERM the server drains (``BridgeServer.drain``).
Metrics are sampled about once a second from the calls' own counters (``bridge.metrics``),
never per frame.

Import rule: anything in the package except ``cli``; websockets for its request and header
types only (the connection layer does the rest; docs/architecture.md s.2).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from websockets.datastructures import Headers
from websockets.http11 import Request

from bridge.audio.resample import Resampler
from bridge.auth import Authenticator, Credentials, check_exposure
from bridge.banner import print_banner
from bridge.call import DEVIATION_BUCKET_MS, INTERNAL_ERROR, Call, Handler
from bridge.carriers import CarrierSession
from bridge.config import ServerConfig
from bridge.endpoints import EndpointError
from bridge.errors import ConfigError, Fault, PeerError
from bridge.filewriter import written as file_writes_done
from bridge.http import UNAUTHORIZED, HttpResponse, HttpRoutes, phone_url, unavailable
from bridge.metrics import CallMeter, Metrics, deviation_p99_ms
from bridge.pacer import Pacer
from bridge.pacing import Clock, MonotonicClock
from bridge.protocol.carrier import CARRIER_NAMES, CarrierError, Stopped
from bridge.protocol.dialects import CARRIER_CHOICES, PENDING, UNKNOWN, first_message_dialect
from bridge.protocol.vonage import Connected, parse_connected, parse_event
from bridge.runtime import freeze_startup_heap
from bridge.startup import bind_error
from bridge.transport.base import ServerSide
from bridge.transport.connection import CLOSE_TIMEOUT_S
from bridge.transport.lifecycle import Event, Outcome, Phase
from bridge.transport.server import ServerConnection
from bridge.units import FRAME_NS, MS, SUPPORTED_RATES
from bridge.watchdog import ACTIVE, TASK_PREFIX, Stall, Watchdog
from bridge.webhooks import answer_ncco

log = logging.getLogger("bridge.server")

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
    Fault.BINARY_ON_TEXT_SOCKET: 1003,
    Fault.MEDIA_BEFORE_START: 1002,
    Fault.INVALID_START: 1007,
    Fault.UNSUPPORTED_MEDIA_FORMAT: 1003,
    Fault.INVALID_MEDIA: 1007,
    Fault.WRONG_CARRIER: 1008,
}

#: How often call counters are added to the metrics and idle calls are looked for.
SAMPLE_PERIOD_S = 1.0
LENIENT_MAX_EARLY_FRAMES = 50
#: The pacing timer serves every call due within this of its wake-up, in one pass.
TICK_EARLY_NS = 1 * MS


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
        #: One timer for the whole process: the scheduler asks for the earliest wake-up,
        #: and each wake-up's lateness is bridge's outbound pacing error (the metric).
        self.pacer = Pacer(
            self.clock,
            config.lead_ms,
            TICK_EARLY_NS,
            on_fire=lambda late_ns: self.metrics.pacing.observe(max(0, late_ns) / 1e9),
        )
        self.scheduler = self.pacer.scheduler
        self.auth = Authenticator.from_config(config)
        self.metrics = Metrics()
        self.routes = HttpRoutes(config, self.auth, self._metrics_text, lambda: not self.draining)
        self.connections: set[CallLogic] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls_total = 0
        #: Websockets past the 101 and not yet closed: what --max-calls counts.
        self.upgraded = 0
        self.draining = False
        self.scheme = "wss" if config.tls_cert else "ws"
        #: The backend carrying the calls (``--transport``, resolved at start).
        self.transport_name = resolve_transport(config.transport)
        self._no_upgraded: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._tick_due = 0.0
        self._sample_period_s = max(0.05, min(SAMPLE_PERIOD_S, config.idle_timeout_s / 4))
        self._loop: asyncio.AbstractEventLoop | None = None
        self.watchdog: Watchdog | None = None

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
        self.pacer.loop = self._loop
        self._no_upgraded = asyncio.Event()
        self._no_upgraded.set()
        if self.config.pipeline_rate is not None:
            # Filter design takes ~20 ms per rate pair; do it now, not on a live call.
            for rate in SUPPORTED_RATES:
                Resampler(rate, self.config.pipeline_rate)
                Resampler(self.config.pipeline_rate, rate)
        self.transport_name = resolve_transport(self.config.transport)
        try:
            if self.transport_name == "picows":
                self._server = await self._picows_server(ssl_context, reuse_port)
            else:
                self._server = await self._loop.create_server(
                    lambda: CallConnection(self),
                    self.config.host,
                    self.config.port,
                    ssl=ssl_context,
                    reuse_port=reuse_port or None,
                )
        except OSError as exc:  # port taken, privileged, address not here: one line, exit 2
            raise bind_error(self.config.host, self.config.port, exc) from exc
        self._tick_due = self._loop.time() + self._sample_period_s
        self._tick = self._loop.call_at(self._tick_due, self._on_tick)
        # Loop lag for the metrics, and a line naming the call when one blocks the loop.
        self.watchdog = Watchdog(
            self._loop, on_lag=self.metrics.loop_lag.observe, on_stall=self._on_stall
        )
        self.watchdog.start()
        self.pacer.open()  # listening: the pacing timer exists from now to close()

    def _on_stall(self, seconds: float, seen: Stall | None) -> None:
        self.metrics.loop_stalls.inc()

    async def _picows_server(
        self, ssl_context: ssl.SSLContext | None, reuse_port: bool
    ) -> asyncio.Server:
        try:
            from bridge.transport.picows_server import serve as picows_serve  # noqa: PLC0415
        except ImportError as exc:
            option = self.config.option("transport", "picows")
            raise ConfigError(f"{option}: picows cannot be imported ({exc})") from exc
        connection = picows_connection_class()
        return await picows_serve(
            lambda: connection(self),
            self.config.host,
            self.config.port,
            max_size=self.config.max_message_bytes,
            handshake_timeout_s=self.config.first_message_timeout_s,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
            use_aiofastnet=False,  # uvloop's transports, as the websockets backend
        )

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
        self.pacer.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
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

    # Once a second: metrics from the calls' counters, idle calls, event-loop lag.
    def _on_tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        self._sample(per_second=True)
        self.metrics.tasks.set(len(asyncio.all_tasks(loop)))
        self.metrics.connections.set(len(self.connections))
        self.metrics.refresh()  # --workers: the helper renders what the next scrape answers
        idle_ns = round(self.config.idle_timeout_s * 1e9)
        now_ns = self.clock.now_ns()
        for conn in list(self.connections):
            call = conn.call
            if call is None or call.ended:
                continue
            last = call.stats.last_arrival_ns or conn.started_ns
            if now_ns - last > idle_ns:
                conn.limit_close(
                    Event.IDLE_TIMEOUT,
                    f"idle timeout: no audio for {self.config.idle_timeout_s:g} s",
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
        if self._loop is not None:
            self.metrics.tasks.set(len(asyncio.all_tasks(self._loop)))
        self.metrics.connections.set(len(self.connections))
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


class CallLogic(ServerSide):
    """One accepted connection: upgrade decision, first message, then one :class:`Call`.

    Written against the connection layer's interface (``bridge.transport.base``), so the
    same logic runs on either backend (:class:`CallConnection`, websockets;
    ``PicowsCallConnection``, picows). Messages arrive synchronously from the read; audio
    goes straight into ``Call.feed_audio``. How the call ends is its lifecycle's outcome.
    """

    def _init_call(self, server: BridgeServer) -> None:
        self.server = server
        self.config = server.config
        self.call: Call | None = None
        self.query = ""
        self.forwarded_for: str | None = None
        self.meter = CallMeter()
        self.started_ns = 0
        self._early: list[bytes] = []
        #: ``--carrier``, or the carrier a ``PATH/<carrier>`` path names.
        self.dialect_choice: str = self.config.carrier
        #: A Twilio/Telnyx/Plivo/Exotel call's dialect session (docs/carriers.md s.1).
        self.carrier: CarrierSession | None = None
        self._first_timer: asyncio.TimerHandle | None = None
        self._duration_timer: asyncio.TimerHandle | None = None
        self._refusal_logged = False

    # --- the connection layer's hooks ---------------------------------------------------

    def on_connect(self) -> None:
        self.server.connections.add(self)
        self._first_timer = self.loop.call_later(
            self.config.first_message_timeout_s, self._first_message_timeout
        )

    def on_binary(self, data: bytes, now_ns: int) -> None:
        call = self.call
        if call is not None and self.carrier is None:
            ACTIVE.call_id = call.id  # for the watchdog: whose work this is
            try:
                call.feed_audio(data, now_ns)
            except Exception as exc:  # a tap or a synchronous handler failed: this call only
                self._sync_handler_failed(call, exc)
            finally:
                ACTIVE.call_id = None
            return
        if self.carrier is not None or self.dialect_choice in CARRIER_NAMES:
            self._refuse(PeerError(Fault.BINARY_ON_TEXT_SOCKET, f"{len(data)} bytes"))
            return
        if not self.config.lenient:
            self._refuse(PeerError(Fault.BINARY_BEFORE_METADATA))
        elif len(self._early) < LENIENT_MAX_EARLY_FRAMES:
            self._early.append(data)

    def on_text(self, text: str, now_ns: int) -> None:
        if self.carrier is not None:
            call = self.call
            ACTIVE.call_id = call.id if call is not None else None
            try:
                self._carrier_text(self.carrier, text, now_ns)
            finally:
                ACTIVE.call_id = None
            return
        try:
            call = self.call
            if call is not None:
                event = parse_event(text)
                if event is not None:
                    call.feed_event(event)
                return
            seen = first_message_dialect(text)
            choice = self.dialect_choice
            if choice == "auto":
                dialect = "vonage" if seen == UNKNOWN else seen
            elif seen in (UNKNOWN, choice) or (seen == PENDING and choice != "vonage"):
                dialect = choice
            else:
                raise PeerError(Fault.WRONG_CARRIER, f"{seen} on a {choice} socket")
            if dialect != "vonage":
                name = None if dialect == PENDING else dialect
                self.carrier = CarrierSession(name, self.send_text, self.query)
                self._carrier_text(self.carrier, text, now_ns)
                return
            connected = parse_connected(text, self.query)
        except PeerError as exc:
            self._refuse(exc)
            return
        self._start_call(self._new_call(connected))

    def _new_call(self, connected: Connected) -> Call:
        return Call(
            connected,
            self,
            self.server.scheduler,
            pipeline_rate=self.config.pipeline_rate,
            playout_max_ms=self.config.playout_max_ms,
            wire=self.carrier,
        )

    def _carrier_text(self, session: CarrierSession, text: str, now_ns: int) -> None:
        """A JSON dialect's message: the session turns it into the call's inputs."""
        try:
            items = session.feed(text)
        except PeerError as exc:
            self._refuse(exc)
            return
        for item in items:
            call = self.call
            if isinstance(item, bytes):
                if call is None or call.ended:
                    continue
                try:
                    call.feed_audio(item, now_ns)
                except Exception as exc:  # a tap or a synchronous handler failed
                    self._sync_handler_failed(call, exc)
                    return
            elif isinstance(item, Connected):
                self._start_call(self._new_call(item))
            elif isinstance(item, Stopped):
                if self.is_open:
                    self.close(NORMAL_CLOSURE, "stream stopped")
                return
            elif isinstance(item, CarrierError):
                log.warning(
                    "carrier error: %s",
                    item.detail,
                    extra={"call_id": call.id if call else None, "carrier": session.name},
                )
            elif call is not None:
                call.feed_event(item)

    def _sync_handler_failed(self, call: Call, exc: Exception) -> None:
        log.error(
            "handler failed: %s: %s",
            type(exc).__name__,
            exc,
            extra={"call_id": call.id},
            exc_info=True,
        )
        call.hangup(INTERNAL_ERROR, "handler error")

    def on_closing(self) -> None:
        sent = self.close_sent
        if (
            not self._refusal_logged
            and self.lifecycle.outcome is Outcome.PROTOCOL_ERROR
            and sent is not None
        ):
            # The connection layer failed the connection (message too big, bad framing).
            self._log_refusal(*sent)
        if self.call is not None:
            self.call.end()

    def on_lost(self, exc: Exception | None) -> None:
        for timer in (self._first_timer, self._duration_timer):
            if timer is not None:
                timer.cancel()
        server = self.server
        server.connections.discard(self)
        call = self.call
        if call is not None:
            call.end()
            server.metrics.sample([(call, self.meter)], per_second=False)
            server.metrics.calls_active.dec()
        if self.lifecycle.upgraded:
            outcome = self.lifecycle.outcome or Outcome.DROPPED
            server.metrics.calls.labels(outcome.value).inc()
            server.upgrade_done(-1)
            if call is not None:
                log.info("call ended", extra={"outcome": outcome.value, **self._summary(call)})
        self.call = None  # the call holds this connection: no cycle left for the collector

    # --- CallIO (what the Call uses): send_binary, send_text from Connection ------------

    def close(self, code: int, reason: str = "", event: Event | None = None) -> None:
        if event is None:
            event = Event.HANDLER_ERROR if code == INTERNAL_ERROR else Event.CLOSE
        super().close(code, reason, event)

    # --- the server's decisions ---------------------------------------------------------

    def shutdown(self, code: int, reason: str) -> None:
        if self.is_open:
            self.close(code, reason, Event.SHUTDOWN)
        elif self.lifecycle.phase is Phase.HANDSHAKE:
            self.drop()

    def limit_close(self, event: Event, reason: str) -> None:
        """A limit ended the call (idle, duration): 1008 with ``reason``, logged once."""
        if not self.is_open:
            return
        log.info(
            "call closed by limit: %s",
            reason,
            extra={"call_id": self.call.id if self.call else None, "peer": self.peer},
        )
        self.close(LIMIT_CLOSE, reason, event)

    def _summary(self, call: Call) -> dict[str, object]:
        stats = call.stats
        summary: dict[str, object] = dict(call.summary())
        now_ns = self.server.clock.now_ns()
        summary["duration_s"] = round((now_ns - self.started_ns) / 1e9, 3)
        summary["jitter_p99_ms"] = deviation_p99_ms(stats.deviation_counts, DEVIATION_BUCKET_MS)
        summary["drift_ppm"] = _drift_ppm(
            stats.first_arrival_ns, stats.last_arrival_ns, stats.frames_in
        )
        sent, rcvd = self.close_sent, self.close_rcvd
        summary["close_code"] = rcvd[0] if rcvd is not None else None
        summary["close_sent"] = sent[0] if sent is not None else None
        session = self.carrier
        summary["carrier"] = session.name if session is not None else "vonage"
        if session is not None:
            seen = session.stats
            summary["media_reordered"] = seen.reordered
            summary["media_late_dropped"] = seen.late_dropped
            summary["media_gaps_skipped"] = seen.gaps_skipped
        return summary

    def on_request(self, request: Request) -> None:
        path, _, query_string = request.path.partition("?")
        server = self.server
        pairs = parse_qsl(query_string, keep_blank_values=True)
        query = dict(pairs)
        headers = request.headers
        creds = Credentials(
            _one_header(headers, "Authorization"),
            query.get("token"),
            twilio_signature=_one_header(headers, "X-Twilio-Signature"),
            twilio_urls=self._signed_urls(request.path, headers),
            telnyx_token=_one_header(headers, "x-telnyx-streaming-auth-token"),
        )
        self.forwarded_for = _one_header(headers, "X-Forwarded-For")
        forced = self._dialect_of_path(path)
        if forced is not None:
            self.dialect_choice = forced
        else:
            reply, why = server.routes.handle(path, query, creds)
            self._answer(reply)
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
            self._answer(reply)
            log.warning(
                "upgrade refused: %d %s",
                reply.status,
                why,
                extra={"peer": self.peer, "forwarded_for": self.forwarded_for},
            )
            return
        status = self.accept(request)
        if status != 101:
            server.refused("bad_handshake")
            log.info("upgrade refused", extra={"peer": self.peer, "status": status, "path": path})
            return
        server.upgrade_done(+1)
        # The token is a credential: it never becomes call metadata (nor a log line).
        self.query = urlencode([(k, v) for k, v in pairs if k != "token"])

    def _dialect_of_path(self, path: str) -> str | None:
        """``--carrier`` for ``--path``; the carrier for ``PATH/<carrier>``; else ``None``."""
        base = self.config.path
        if path == base:
            return self.config.carrier
        prefix = base.rstrip("/") + "/"
        if path.startswith(prefix):
            name = path[len(prefix) :]
            if name in CARRIER_CHOICES and name != "auto":
                return name
        return None

    def _signed_urls(self, target: str, headers: Headers) -> tuple[str, ...]:
        """The URLs Twilio may have signed for this request (docs/carriers.md s.6): on
        ``--public-url``'s host, else the ``Host`` header's, with the scheme Twilio used
        (``wss``/``https`` behind TLS or a TLS proxy that says so, else ``ws``/``http``)."""
        websocket = headers.get("Upgrade", "").lower() == "websocket"
        public = self.config.public_url
        if public is not None:
            secure = public.startswith("wss:")
            host = public.split("://", 1)[1].split("/", 1)[0]
        else:
            host = _one_header(headers, "Host") or ""
            proto = (_one_header(headers, "X-Forwarded-Proto") or "").split(",")[0].strip()
            secure = proto in ("https", "wss") or (not proto and self.server.scheme == "wss")
        if not host:
            return ()
        scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
        return (f"{scheme}://{host}{target}",)

    def _answer(self, reply: HttpResponse) -> None:
        self.respond(reply.status, reply.body, reply.content_type, reply.headers)

    def _start_call(self, call: Call) -> None:
        if self._first_timer is not None:
            self._first_timer.cancel()
        self.call = call
        server = self.server
        server.calls_total += 1
        server.metrics.calls_active.inc()
        self.started_ns = server.clock.now_ns()
        max_s = self.config.max_call_s
        self._duration_timer = self.loop.call_later(
            max_s, self.limit_close, Event.MAX_DURATION, f"maximum call duration {max_s:g} s"
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
        # The name tells the watchdog (bridge.watchdog) whose handler blocked the loop.
        task = self.loop.create_task(self._run_handler(call), name=f"{TASK_PREFIX}{call.id}")
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
            call.hangup(INTERNAL_ERROR, "handler error")

    def _refuse(self, exc: PeerError) -> None:
        code = CLOSE_CODES[exc.fault]
        reason = close_reason(exc.fault, exc.detail)
        self._log_refusal(code, reason)
        timeout = exc.fault is Fault.FIRST_MESSAGE_TIMEOUT
        self.close(code, reason, Event.FIRST_MESSAGE_TIMEOUT if timeout else Event.PEER_FAULT)

    def _log_refusal(self, code: int, reason: str) -> None:
        self._refusal_logged = True
        log.warning(
            "call refused: %d %s",
            code,
            reason,
            extra={"peer": self.peer, "call_id": self.call.id if self.call else None},
        )

    def _first_message_timeout(self) -> None:
        if self.call is not None:
            return
        if self.is_open:
            self._refuse(
                PeerError(Fault.FIRST_MESSAGE_TIMEOUT, f"{self.config.first_message_timeout_s:g} s")
            )
        else:
            self.drop()


class CallConnection(CallLogic, ServerConnection):
    """:class:`CallLogic` on the websockets backend (pure Python framing)."""

    def __init__(self, server: BridgeServer) -> None:
        ServerConnection.__init__(
            self, clock=server.clock, max_size=server.config.max_message_bytes
        )
        self._init_call(server)


def resolve_transport(setting: str) -> str:
    """``auto``: picows when it can be imported (it has no wheel on some platforms)."""
    if setting != "auto":
        return setting
    try:
        import picows  # noqa: F401, PLC0415
    except ImportError:
        return "websockets"
    return "picows"


@functools.cache
def picows_connection_class() -> Callable[[BridgeServer], Any]:
    """:class:`CallLogic` on the picows backend, built on first use (picows is optional)."""
    from bridge.transport.picows_server import PicowsServerConnection  # noqa: PLC0415

    class PicowsCallConnection(CallLogic, PicowsServerConnection):
        def __init__(self, server: BridgeServer) -> None:
            PicowsServerConnection.__init__(
                self, clock=server.clock, max_size=server.config.max_message_bytes
            )
            self._init_call(server)

    return PicowsCallConnection


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
        log.info(
            "listening",
            extra={
                "url": url,
                "transport": server.transport_name,
                **phone_url(config, server.port),
            },
        )
        print_banner(config, server.port)  # at a terminal only: what to do next
    await stop.wait()
    stop.clear()
    log.info(
        "shutting down",
        extra={"active_calls": server.active_calls, "drain_seconds": config.drain_seconds},
    )
    await server.drain(config.drain_seconds, hurry=stop)
