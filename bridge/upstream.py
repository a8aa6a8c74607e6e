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

Nothing here blocks the event loop or waits on another call: each call owns one task.

Import rule: asyncio, websockets' client, the standard library; nothing else from bridge
except ``bridge.__version__`` and ``bridge.units``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from bridge import __version__
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

    def __post_init__(self) -> None:
        if not FRAME_MS <= self.replay_max_ms < self.buffer_ms:
            raise ValueError("need 20 ms <= replay_max_ms < buffer_ms")
        if self.max_attempts < 1 or self.backoff_ms < 1 or not self.timeout_s > 0:
            raise ValueError("max_attempts, backoff_ms and timeout_s must be positive")


@dataclass
class UpstreamStats:
    """One link's counters; audio in 20 ms frames (``*_ms`` in the summary)."""

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
    gave_up: bool = False
    last_error: str | None = None

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for name in list(out):
            if name.startswith("frames_") or name == "peak_buffer_frames":
                out[name.replace("frames", "ms")] = out.pop(name) * FRAME_MS
        return out


class _StalledError(Exception):
    """The upstream confirmed nothing for ``timeout_s`` while audio was waiting."""


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
    ) -> None:
        self.options = options
        self.stats = UpstreamStats()
        self._on_message = on_message
        self._on_give_up = on_give_up
        self._hello = hello
        self._call_id = call_id
        self._max_items = max(2, options.buffer_ms // FRAME_MS)
        self._window = max(1, options.replay_max_ms // FRAME_MS)
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
        self.connected = False

    # --- the call's side -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send_audio(self, frame: bytes) -> None:
        """Queue one 20 ms frame for the upstream; never blocks."""
        self._append(frame)

    def send_text(self, text: str) -> None:
        """Queue a text message, in order with the audio around it."""
        self._append(text)

    @property
    def buffered_ms(self) -> int:
        return sum(FRAME_MS for item in self._items if isinstance(item, bytes))

    async def close(self) -> None:
        """The call is over: deliver what is buffered (up to ``drain_s``), then close."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=self.options.drain_s)
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
        self._wake.set()

    def _drop_oldest(self) -> None:
        item = self._items.popleft()
        seq = self._first_seq
        self._first_seq += 1
        self._next_send = max(self._next_send, self._first_seq)
        if not isinstance(item, bytes):
            return
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
        self._first_seq = seq + 1
        self._confirmed_this_connection = True
        self._progress_at = asyncio.get_running_loop().time()
        self._wake.set()

    def _backoff_s(self, failures: int) -> float:
        delay_ms: int = min(BACKOFF_MAX_MS, self.options.backoff_ms << min(failures - 1, 20))
        return delay_ms * random.uniform(0.5, 1.0) / 1000

    def _drained(self) -> bool:
        return self._first_seq == self._end_seq

    async def _run(self) -> None:
        failures = 0
        while not (self._closing and self._drained()):
            try:
                ws = await connect(
                    self.options.url,
                    open_timeout=self.options.timeout_s,
                    compression=None,  # docs/lessons.md s.7: deflate costs CPU, buys nothing on PCM
                    ping_interval=None,  # our own pings confirm audio (module doc)
                    close_timeout=1,
                    max_size=MAX_MESSAGE_BYTES,
                    proxy=None,
                    user_agent_header=f"bridge/{__version__}",
                )
            except (OSError, TimeoutError, WebSocketException) as exc:
                self.stats.failed_attempts += 1
                self.stats.last_error = _one_line(exc)
                failures += 1
                log.warning(
                    "upstream connection failed",
                    extra={
                        "call_id": self._call_id,
                        "attempt": failures,
                        "error": self.stats.last_error,
                    },
                )
            else:
                if not await self._session(ws):
                    return  # finished: everything delivered and confirmed
                failures = 0 if self._confirmed_this_connection else failures + 1
            if failures >= self.options.max_attempts:
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

    async def _session(self, ws: ClientConnection) -> bool:
        """Run one connection; returns ``True`` to reconnect, ``False`` when all is done."""
        self._connection += 1
        connection = self._connection
        self._confirmed_this_connection = False
        self._pinged_high = self._first_seq - 1
        self.stats.connects += 1
        if self.stats.connects > 1:
            first_new = self._sent_high + 1 - self._first_seq
            resent = sum(1 for i in list(self._items)[:first_new] if isinstance(i, bytes))
            backlog = sum(1 for i in list(self._items)[first_new:] if isinstance(i, bytes))
            self.stats.frames_backlog += backlog
            log.info(
                "upstream reconnected",
                extra={
                    "call_id": self._call_id,
                    "replay_ms": resent * FRAME_MS,
                    "backlog_ms": backlog * FRAME_MS,
                    "lost_ms": self._lost_run * FRAME_MS,
                },
            )
        self._lost_run = 0
        self._next_send = self._first_seq
        self._progress_at = asyncio.get_running_loop().time()
        self.connected = True
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            if self._hello is not None:
                await ws.send(self._hello)
            while True:
                if self._closing and self._drained():
                    await ws.close(1000, "call ended")
                    return False
                await self._send_ready(ws, connection)
                await self._wait(reader)
        except _StalledError:
            self.stats.stalls += 1
            self.stats.last_error = f"no pong for {self.options.timeout_s:g} s"
            log.warning(
                "upstream stalled: reconnecting",
                extra={"call_id": self._call_id, "unconfirmed": self._next_send - self._first_seq},
            )
            ws.transport.abort()
        except (ConnectionClosed, OSError) as exc:
            self.stats.disconnects += 1
            self.stats.last_error = _one_line(exc)
            log.warning(
                "upstream connection lost",
                extra={"call_id": self._call_id, "error": self.stats.last_error},
            )
        finally:
            self.connected = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await reader  # (its error, if any, is why we got here: already reported)
            if ws.state is not State.CLOSED:
                ws.transport.abort()
        return True

    async def _send_ready(self, ws: ClientConnection, connection: int) -> None:
        """Send what the window allows, with pings that will confirm it."""
        while self._next_send < self._end_seq and self._next_send - self._first_seq < self._window:
            seq = self._next_send
            item = self._items[seq - self._first_seq]
            if seq == self._first_seq:  # nothing outstanding: the stall clock starts now
                self._progress_at = asyncio.get_running_loop().time()
            await ws.send(item)
            self._next_send = seq + 1
            if isinstance(item, bytes):
                self.stats.frames_sent += 1
                if seq <= self._sent_high:
                    self.stats.frames_resent += 1
            else:
                self.stats.texts_sent += 1
            self._sent_high = max(self._sent_high, seq)
            if seq - self._pinged_high >= self._ping_every:
                await self._ping(ws, seq, connection)
        if self._next_send - 1 > self._pinged_high:
            # Waiting now (window full or nothing left): make sure a pong is on its way.
            await self._ping(ws, self._next_send - 1, connection)

    async def _ping(self, ws: ClientConnection, seq: int, connection: int) -> None:
        self._pinged_high = seq
        waiter = asyncio.ensure_future(await ws.ping())

        def done(future: asyncio.Future[float]) -> None:
            if not future.cancelled() and future.exception() is None:
                self._confirm(seq, connection)

        waiter.add_done_callback(done)

    async def _wait(self, reader: asyncio.Task[None]) -> None:
        """Until something changes: new items, a confirmation, the reader ending, a stall."""
        self._wake.clear()
        if reader.done():
            reader.result()  # re-raise why the connection ended
            raise ConnectionClosed(None, None)
        timeout = None
        if self._next_send > self._first_seq:  # audio waits for a pong: stall deadline
            timeout = self._progress_at + self.options.timeout_s - asyncio.get_running_loop().time()
            if timeout <= 0:
                raise _StalledError
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait(
                {wake, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
        if not done:
            raise _StalledError
        if reader in done:
            reader.result()
            raise ConnectionClosed(None, None)

    async def _read(self, ws: ClientConnection) -> None:
        async for message in ws:
            self.stats.messages_received += 1
            try:
                self._on_message(message)
            except Exception:
                log.exception("upstream message handler failed", extra={"call_id": self._call_id})


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
