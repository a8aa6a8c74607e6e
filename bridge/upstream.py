"""The upstream link of ``--mode forward``: one reconnecting websocket client per call.

Every message for the upstream (caller audio in 20 ms frames, and call events as text) first
goes into a bounded replay buffer, and leaves it only once the upstream has *confirmed* it.
Confirmation is a pong: RFC 6455 requires a peer to answer a ping, and it reads the stream in
order, so the pong to a ping sent after message ``N`` proves messages ``<= N`` were read. The
sender never has more than ``replay_max_ms`` of audio unconfirmed (it waits for a pong beyond
that), which is what bounds the repeats after a reconnect.

When the link fails (refused, closed by the upstream, no handshake within ``timeout_s``, or no
pong within ``timeout_s`` while audio waits: a stall) the call goes on: audio keeps collecting
in the buffer, the link reconnects with exponential backoff and jitter, sends the hello again,
replays every unconfirmed message in order, then continues live. So the upstream receives every
sample the caller sent, in order; only the unconfirmed tail before a failure (at most
``replay_max_ms``) can arrive twice, and it is counted. An outage longer than ``buffer_ms``
drops the oldest audio, counted and logged. ``max_attempts`` consecutive failed connections
(a connection that got something confirmed resets the count) end the link for good.

Built on bridge's connection layer (``bridge.transport.client``): messages are written
synchronously as the call hands them over, pongs confirm synchronously as they arrive, and
received messages go to ``on_message`` from the read itself. The one task per call only
connects, backs off, and watches for a stall or the end: it does not wake per frame. The
upgrade request can carry headers and subprotocols (``UpstreamOptions.headers``,
``subprotocols``): what speech services authenticate with.

A :class:`Wire` (a speech service's dialect, ``bridge.services``) decides what goes on the
wire: its ``opening`` messages on every new connection (the setup, sent again after a
reconnect), each audio chunk encoded as it is *sent* (binary, or base64 in JSON; chunks of
``chunk_ms``), a keep-alive after ``keepalive_s`` without sending anything, audio held until
the handler reports the service ready (``ready()``), and at the end a ``closing`` message
after which the link waits (up to ``end_timeout_s``) for the service's last results
(``ended()``, or the service closing) instead of closing at once. A wire that does not
``resume`` makes a reconnect a new session: what was buffered is dropped, counted and logged.

Nothing here blocks the event loop or waits on another call.

Import rule: asyncio, websockets' exceptions, ``bridge.transport``, the standard library;
nothing else from bridge except ``bridge.__version__`` and ``bridge.units``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from websockets.exceptions import InvalidStatus, WebSocketException

from bridge import __version__
from bridge.transport.client import ClientConnection, connect
from bridge.units import FRAME_MS

log = logging.getLogger("bridge.upstream")

BACKOFF_MAX_MS = 5000
#: A ping at least every this many frames while audio flows (fewer if the window is smaller).
PING_EVERY_FRAMES = 5
MAX_MESSAGE_BYTES = 4 << 20

Item = bytes | str


@dataclass(frozen=True)
class UpstreamOptions:
    """How one call's link behaves (``bridge serve --upstream-*``; see ``bridge.config``)."""

    url: str
    buffer_ms: int = 10_000
    replay_max_ms: int = 200
    max_attempts: int = 10
    backoff_ms: int = 100
    timeout_s: float = 5.0
    #: How long, after the call ended, the link may take to deliver what is still buffered.
    drain_s: float = 2.0
    #: Extra headers on the upgrade request (e.g. ``("Authorization", "Token KEY")``); kept
    #: out of ``repr``: they carry credentials.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: Subprotocols offered on the upgrade (``Sec-WebSocket-Protocol``), in order.
    subprotocols: tuple[str, ...] = field(default=(), repr=False)
    #: Length of each audio message (a service may want other than 20 ms, e.g. 50 ms).
    chunk_ms: int = FRAME_MS
    #: After a wire's ``closing`` message: how long the service may take to send its last
    #: results and close (on top of ``drain_s``).
    end_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.chunk_ms <= self.replay_max_ms < self.buffer_ms:
            raise ValueError("need chunk_ms <= replay_max_ms < buffer_ms")
        if self.chunk_ms < 1 or self.end_timeout_s < 0:
            raise ValueError("chunk_ms must be positive, end_timeout_s not negative")
        if self.max_attempts < 1 or self.backoff_ms < 1 or not self.timeout_s > 0:
            raise ValueError("max_attempts, backoff_ms and timeout_s must be positive")


class Wire(Protocol):
    """What a service dialect tells the link (``bridge.services.base.Dialect`` is one)."""

    @property
    def binary_audio(self) -> bool: ...

    @property
    def keepalive_s(self) -> float | None: ...

    @property
    def wait_ready(self) -> bool: ...

    @property
    def resume(self) -> bool: ...

    def opening(self) -> list[str]: ...

    def encode(self, pcm: bytes) -> bytes | str: ...

    def keepalive(self) -> str | None: ...

    def closing(self) -> str | None: ...


@dataclass
class UpstreamStats:
    """One link's counters; audio in chunks of ``chunk_ms`` (``*_ms`` in the summary)."""

    connects: int = 0
    failed_attempts: int = 0
    disconnects: int = 0
    stalls: int = 0
    frames_sent: int = 0
    frames_confirmed: int = 0
    #: Sent again on a later connection because unconfirmed when the link failed: the only
    #: audio the upstream may have received twice (an upper bound on the duplicates).
    frames_resent: int = 0
    #: Held back during an outage and sent after reconnecting (first time, no duplicates).
    frames_backlog: int = 0
    #: Dropped from a full buffer before ever being sent: certainly lost.
    frames_lost: int = 0
    #: Dropped from a full buffer after being sent once, unconfirmed: maybe lost.
    frames_unconfirmed_dropped: int = 0
    texts_sent: int = 0
    messages_received: int = 0
    peak_buffer_frames: int = 0
    keepalives_sent: int = 0
    #: Audio dropped because a reconnect started a new session (a wire that does not resume).
    frames_new_session_dropped: int = 0
    gave_up: bool = False
    last_error: str | None = None
    #: Errors the service reported, by its reason (set by the handler that parses them).
    service_errors: dict[str, int] = field(default_factory=dict)
    #: Milliseconds per audio item (the ``frames_*`` counters count items).
    chunk_ms: int = FRAME_MS
    #: What the upstream speaks (``raw``, or a service's dialect): a metrics label.
    source: str = "raw"

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        chunk_ms = out.pop("chunk_ms")
        del out["source"]
        for name in list(out):
            if name.startswith("frames_") or name == "peak_buffer_frames":
                out[name.replace("frames", "ms")] = out.pop(name) * chunk_ms
        if not out["service_errors"]:
            del out["service_errors"]
        return out


class _StalledError(Exception):
    """The upstream confirmed nothing for ``timeout_s`` while audio was waiting (or never
    said it was ready)."""


_PING = struct.Struct(">IQ")  # connection number, highest sequence number covered


def _ignore(_item: object) -> None:
    """A closed link's callbacks (``UpstreamLink.close``)."""


class UpstreamLink:
    """Streams one call's messages to the upstream, surviving its failures (module doc)."""

    def __init__(
        self,
        options: UpstreamOptions,
        *,
        on_message: Callable[[Item], None],
        on_give_up: Callable[[str], None],
        hello: str | None = None,
        call_id: str = "",
        wire: Wire | None = None,
        on_close: Callable[[int | None, str], None] | None = None,
        redact: Callable[[str], str] | None = None,
        on_refused: Callable[[int, str], None] | None = None,
    ) -> None:
        self.options = options
        self.stats = UpstreamStats(chunk_ms=options.chunk_ms)
        self._on_message = on_message
        self._on_give_up = on_give_up
        self._on_close = on_close
        self._redact = redact
        self._on_refused = on_refused
        self._hello = hello
        self._wire = wire
        self._encode = None if wire is None else wire.encode
        self._call_id = call_id
        self._max_items = max(2, options.buffer_ms // options.chunk_ms)
        self._window = max(1, options.replay_max_ms // options.chunk_ms)
        self._ping_every = max(1, min(PING_EVERY_FRAMES, self._window // 2))
        # Unconfirmed messages: _items[i] has sequence number _first_seq + i.
        self._items: deque[Item] = deque()
        self._first_seq = 0
        self._end_seq = 0
        self._next_send = 0  # next sequence number to send on the current connection
        self._sent_high = -1  # highest sequence number ever sent
        self._pinged_high = -1  # highest sequence number covered by a ping on this connection
        self._connection = 0  # counts connections, so late pongs of a dead one are ignored
        self._confirmed_this_connection = False
        self._lost_run = 0  # frames lost in the current outage, for its log line
        self._progress_at = 0.0  # loop time of the last confirmation (or of a fresh send)
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        #: The running loop, once looked up: read per pong (``get_running_loop`` is a
        #: ``getpid`` system call on Python 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: ClientConnection | None = None
        self.connected = False
        #: Audio may flow on this connection (a wire with ``wait_ready`` waits for ready()).
        self._ready = True
        self._ended = False
        self._sent_items = 0  # items and keep-alives sent, for the keep-alive check
        self._popped_ms = 0  # audio removed from the front of the buffer, confirmed or dropped
        #: Where the current connection's audio starts in the call's audio sent upstream, ms.
        self.connection_offset_ms = 0

    # --- the call's side -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send_audio(self, frame: bytes) -> None:
        """Queue one 20 ms frame for the upstream (sent at once when the link is up)."""
        self._append(frame)

    def send_text(self, text: str) -> None:
        """Queue a text message, in order with the audio around it."""
        self._append(text)

    @property
    def buffered_ms(self) -> int:
        chunk_ms = self.options.chunk_ms
        return sum(chunk_ms for item in self._items if isinstance(item, bytes))

    def ready(self) -> None:
        """The service said it is ready for audio (a wire with ``wait_ready``)."""
        if self._ready:
            return
        self._ready = True
        if self._conn is not None:
            self._send_ready()

    def ended(self) -> None:
        """The service sent its last results after the wire's ``closing`` message."""
        self._ended = True
        self._wake.set()

    async def close(self) -> None:
        """The call is over: deliver what is buffered, end the service's stream cleanly
        (up to ``drain_s``, plus ``end_timeout_s`` for a wire with a closing message), close."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        budget = self.options.drain_s
        if self._wire is not None:
            budget += self.options.end_timeout_s
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif task.exception() is not None:  # pragma: no cover - a bug in this module
            log.error("upstream link failed", exc_info=task.exception())
        left = self._end_seq - self._first_seq
        if left:
            log.warning(
                "upstream link closed with audio undelivered",
                extra={"call_id": self._call_id, "undelivered_messages": left},
            )
        # The callbacks are the owner's bound methods, and the owner holds this link: let go,
        # so an ended call is freed without the cyclic collector (nothing is delivered now).
        self._on_message = _ignore
        self._on_give_up = _ignore

    # --- the connection's side (synchronous, from its reads) ------------------------------

    def on_binary(self, data: bytes, now_ns: int) -> None:
        self._received(data)

    def on_text(self, text: str, now_ns: int) -> None:
        self._received(text)

    def _received(self, item: Item) -> None:
        self.stats.messages_received += 1
        try:
            self._on_message(item)
        except Exception:
            log.exception("upstream message handler failed", extra={"call_id": self._call_id})

    def _on_pong(self, data: bytes) -> None:
        if len(data) != _PING.size:
            return  # not one of ours
        connection, seq = _PING.unpack(data)
        self._confirm(seq, connection)

    # --- internals -----------------------------------------------------------------------

    def _append(self, item: Item) -> None:
        if self.stats.gave_up:
            if isinstance(item, bytes):
                self.stats.frames_lost += 1
            return
        self._items.append(item)
        self._end_seq += 1
        if len(self._items) > self._max_items:
            self._drop_oldest()
        self.stats.peak_buffer_frames = max(self.stats.peak_buffer_frames, len(self._items))
        if self._conn is not None:
            self._send_ready()

    def _drop_oldest(self) -> None:
        item = self._items.popleft()
        seq = self._first_seq
        self._first_seq += 1
        self._next_send = max(self._next_send, self._first_seq)
        if not isinstance(item, bytes):
            return
        self._popped_ms += self.options.chunk_ms
        if seq <= self._sent_high:
            self.stats.frames_unconfirmed_dropped += 1
        else:
            self.stats.frames_lost += 1
        if self._lost_run == 0:
            log.warning(
                "upstream buffer full: dropping the oldest caller audio",
                extra={"call_id": self._call_id, "buffer_ms": self.options.buffer_ms},
            )
        self._lost_run += 1

    def _confirm(self, seq: int, connection: int) -> None:
        if connection != self._connection or seq < self._first_seq:
            return
        n = seq + 1 - self._first_seq
        for _ in range(n):
            if isinstance(self._items.popleft(), bytes):
                self.stats.frames_confirmed += 1
                self._popped_ms += self.options.chunk_ms
        self._first_seq = seq + 1
        self._confirmed_this_connection = True
        self._progress_at = self._time()
        if self._conn is not None:
            self._send_ready()
        if self._closing and self._drained():
            self._wake.set()

    def _time(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _backoff_s(self, failures: int) -> float:
        delay_ms: int = min(BACKOFF_MAX_MS, self.options.backoff_ms << min(failures - 1, 20))
        return delay_ms * random.uniform(0.5, 1.0) / 1000

    def _drained(self) -> bool:
        return self._first_seq == self._end_seq

    async def _run(self) -> None:
        failures = 0
        options = self.options
        wire = self._wire
        while not (self._closing and self._drained()):
            # Set before connecting: the service may speak in the same read as its 101.
            self._ready = wire is None or not wire.wait_ready
            self._ended = False
            self.connection_offset_ms = self._popped_ms
            try:
                conn = await connect(
                    options.url,
                    self,
                    headers=options.headers,
                    subprotocols=options.subprotocols or None,
                    timeout_s=options.timeout_s,
                    max_size=MAX_MESSAGE_BYTES,
                    on_pong=self._on_pong,
                    user_agent=f"bridge/{__version__}",
                )
            except (OSError, TimeoutError, WebSocketException) as exc:
                self.stats.failed_attempts += 1
                self.stats.last_error = self._scrub(_one_line(exc))
                failures += 1
                log.warning(
                    "upstream connection failed",
                    extra={
                        "call_id": self._call_id,
                        "attempt": failures,
                        "error": self.stats.last_error,
                    },
                )
                if isinstance(exc, InvalidStatus) and self._on_refused is not None:
                    status, words = _refusal(exc)
                    self._on_refused(status, self._scrub(words))
            else:
                if not await self._session(conn):
                    return  # finished: everything delivered and confirmed
                failures = 0 if self._confirmed_this_connection else failures + 1
            if failures >= options.max_attempts:
                self._give_up(failures)
                return
            await self._sleep(self._backoff_s(max(failures, 1)))

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the call ends (``close`` then decides)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._closing:
                    self._wake.clear()
                    await self._wake.wait()

    def _give_up(self, failures: int) -> None:
        self.stats.gave_up = True
        dropped = sum(1 for item in self._items if isinstance(item, bytes))
        self.stats.frames_lost += dropped
        self._popped_ms += dropped * self.options.chunk_ms
        self._items.clear()
        self._first_seq = self._next_send = self._end_seq
        log.error(
            "upstream unavailable: giving up",
            extra={
                "call_id": self._call_id,
                "attempts": failures,
                "error": self.stats.last_error,
            },
        )
        self._on_give_up(self.stats.last_error or "upstream unavailable")

    async def _session(self, conn: ClientConnection) -> bool:
        """Run one connection; returns ``True`` to reconnect, ``False`` when all is done."""
        loop = asyncio.get_running_loop()
        self._connection += 1
        self._confirmed_this_connection = False
        self._pinged_high = self._first_seq - 1
        self.stats.connects += 1
        wire = self._wire
        if self.stats.connects > 1 and wire is not None and not wire.resume:
            self._new_session()
        elif self.stats.connects > 1:
            first_new = self._sent_high + 1 - self._first_seq
            resent = sum(1 for i in list(self._items)[:first_new] if isinstance(i, bytes))
            backlog = sum(1 for i in list(self._items)[first_new:] if isinstance(i, bytes))
            self.stats.frames_backlog += backlog
            log.info(
                "upstream reconnected",
                extra={
                    "call_id": self._call_id,
                    "replay_ms": resent * self.options.chunk_ms,
                    "backlog_ms": backlog * self.options.chunk_ms,
                    "lost_ms": self._lost_run * self.options.chunk_ms,
                },
            )
        self._lost_run = 0
        self._next_send = self._first_seq
        self._progress_at = loop.time()
        self.connection_offset_ms = self._popped_ms
        self.connected = True
        self._conn = conn
        self._session_at = loop.time()
        self._keepalive_mark = self._sent_items
        keepalive_s = wire.keepalive_s if wire is not None else None
        self._keepalive_at = None if keepalive_s is None else self._session_at + keepalive_s
        try:
            if self._hello is not None:
                conn.send_text(self._hello)
            for text in wire.opening() if wire is not None else ():
                conn.send_text(text)
                self.stats.texts_sent += 1
            self._send_ready()
            while True:
                if self._closing and self._drained():
                    await self._finish(conn)
                    return False
                await self._wait(conn)
        except _StalledError as exc:
            self.stats.stalls += 1
            self.stats.last_error = str(exc) or f"no pong for {self.options.timeout_s:g} s"
            log.warning(
                "upstream stalled: reconnecting",
                extra={"call_id": self._call_id, "unconfirmed": self._next_send - self._first_seq},
            )
        except ConnectionError as exc:
            self.stats.disconnects += 1
            self.stats.last_error = self._scrub(_one_line(exc))
            log.warning(
                "upstream connection lost",
                extra={"call_id": self._call_id, "error": self.stats.last_error},
            )
        finally:
            self.connected = False
            self._conn = None
            if not conn.lost.done():
                conn.abort()
            self._report_close(conn)
        return True

    def _scrub(self, text: str) -> str:
        """An error for the log, with every secret the handler knows of taken out."""
        return text if self._redact is None else self._redact(text)

    def _report_close(self, conn: ClientConnection) -> None:
        if self._on_close is None:
            return
        rcvd = conn.proto.close_rcvd
        try:
            self._on_close(None if rcvd is None else rcvd.code, "" if rcvd is None else rcvd.reason)
        except Exception:
            log.exception("upstream close handler failed", extra={"call_id": self._call_id})

    async def _finish(self, conn: ClientConnection) -> None:
        """Everything is confirmed: end the service's stream cleanly, then close."""
        closing = self._wire.closing() if self._wire is not None else None
        if closing is not None and conn.is_open:
            conn.send_text(closing)
            self.stats.texts_sent += 1
            wake: asyncio.Future[Any] | None = None
            deadline = asyncio.get_running_loop().time() + self.options.end_timeout_s
            while not self._ended and not conn.lost.done() and conn.is_open:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    log.warning(
                        "upstream did not finish its stream in time",
                        extra={"call_id": self._call_id, "timeout_s": self.options.end_timeout_s},
                    )
                    break
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {wake, conn.lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    wake.cancel()
        if conn.is_open:
            conn.close(1000, "call ended")
        await asyncio.wait({conn.lost}, timeout=1.0)

    def _new_session(self) -> None:
        """A wire that cannot resume: this connection is a new session, the old audio goes."""
        dropped = sum(1 for item in self._items if isinstance(item, bytes))
        self.stats.frames_new_session_dropped += dropped
        self._popped_ms += dropped * self.options.chunk_ms
        self._items.clear()
        self._first_seq = self._next_send = self._end_seq
        self._sent_high = max(self._sent_high, self._end_seq - 1)
        log.warning(
            "upstream reconnected: a new session (the conversation so far is lost)",
            extra={
                "call_id": self._call_id,
                "dropped_ms": dropped * self.options.chunk_ms,
            },
        )

    def _send_ready(self) -> None:
        """Send what the window allows, with pings that will confirm it.

        A ping goes after every ``_ping_every`` messages and after the last one this call
        sends (so a pong is always on its way while anything waits), in the same write as
        the message it covers: audio arriving in real time gets one write per frame.
        """
        conn = self._conn
        assert conn is not None
        if not conn.is_open or not self._ready:
            return
        encode = self._encode
        end = min(self._end_seq, self._first_seq + self._window)
        while self._next_send < end:
            seq = self._next_send
            item = self._items[seq - self._first_seq]
            if seq == self._first_seq:  # nothing outstanding: the stall clock starts now
                self._progress_at = self._time()
            ping = None
            if seq + 1 == end or seq - self._pinged_high >= self._ping_every:
                self._pinged_high = seq
                ping = _PING.pack(self._connection, seq)
            self._sent_items += 1
            if isinstance(item, bytes):
                if encode is None:
                    conn.send_binary(item, ping)
                else:
                    message = encode(item)  # as it is sent: per connection (seq_no, base64)
                    if type(message) is str:
                        conn.send_text(message, ping)
                    else:
                        conn.send_binary(message, ping)  # type: ignore[arg-type]
                self.stats.frames_sent += 1
                if seq <= self._sent_high:
                    self.stats.frames_resent += 1
            else:
                conn.send_text(item, ping)
                self.stats.texts_sent += 1
            self._next_send = seq + 1
            self._sent_high = max(self._sent_high, seq)
        if self._next_send - 1 > self._pinged_high:
            # Waiting now with nothing pinged for (not expected: the last send pings).
            self._ping(conn, self._next_send - 1)

    def _ping(self, conn: ClientConnection, seq: int) -> None:
        self._pinged_high = seq
        conn.ping(_PING.pack(self._connection, seq))

    async def _wait(self, conn: ClientConnection) -> None:
        """Until the call ends, the connection does, or the upstream stalls.

        Sending and confirming happen in callbacks; this wakes only at the stall deadline
        (then checks whether progress moved it) or when something ends.
        """
        if conn.lost.done() or not conn.is_open:
            raise ConnectionError(self._scrub(_closed_why(conn)))
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = self.options.timeout_s
        if not self._ready:  # the service has not said it is ready: bounded like a stall
            timeout = self._session_at + self.options.timeout_s - now
            if timeout <= 0:
                raise _StalledError(f"not ready after {self.options.timeout_s:g} s")
        elif self._next_send > self._first_seq:  # audio waits for a pong: stall deadline
            timeout = self._progress_at + self.options.timeout_s - now
            if timeout <= 0:
                raise _StalledError(f"no pong for {self.options.timeout_s:g} s")
        if self._keepalive_at is not None:
            if now >= self._keepalive_at:
                self._keep_alive(conn, now)
            timeout = min(timeout, self._keepalive_at - now)
        self._wake.clear()
        wake: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {wake, conn.lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
        if conn.lost.done() or not conn.is_open:
            raise ConnectionError(self._scrub(_closed_why(conn)))

    def _keep_alive(self, conn: ClientConnection, now: float) -> None:
        """Nothing sent since the last check, ``keepalive_s`` ago: send the wire's keep-alive.

        The link's task wakes once per ``keepalive_s`` for this, never per frame; so the first
        keep-alive leaves between one and two intervals after the last audio, then one per
        interval.
        """
        wire = self._wire
        assert wire is not None and wire.keepalive_s is not None
        self._keepalive_at = now + wire.keepalive_s
        if self._sent_items != self._keepalive_mark or not self._ready:
            self._keepalive_mark = self._sent_items
            return
        text = wire.keepalive()
        if text is not None and conn.is_open:
            conn.send_text(text)
            self.stats.keepalives_sent += 1


def _closed_why(conn: ClientConnection) -> str:
    proto = conn.proto
    rcvd = proto.close_rcvd
    if rcvd is not None:
        return f"closed by the upstream: {rcvd.code} {rcvd.reason}".strip()
    if proto.close_sent is not None:
        return f"closed: {proto.close_sent.code} {proto.close_sent.reason}".strip()
    return "connection dropped without a close frame"


def _refusal(exc: InvalidStatus) -> tuple[int, str]:
    """The HTTP status of a refused upgrade and the service's words for it: an error header
    (Deepgram's ``dg-error``) or the start of the body."""
    response = exc.response
    for name, value in response.headers.raw_items():
        if name.lower().endswith("error"):
            return response.status_code, " ".join(value.split())[:300]
    body = response.body.decode("utf-8", "replace") if response.body else ""
    return response.status_code, " ".join(body.split())[:300] or response.reason_phrase


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
