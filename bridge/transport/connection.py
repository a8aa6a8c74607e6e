"""One websocket connection layer for every socket bridge speaks, server side and client side.

websockets' sans-I/O core (``ServerProtocol`` / ``ClientProtocol``) does what it is best at:
the HTTP upgrade, received pings and close frames, the closing handshake and its codes. Data
frames, 99.99 % of the traffic (a 20 ms audio frame every 20 ms each way), take a shorter
path here: parsed from the read buffer and built as header + payload by hand, about 30 lines
each way, with websockets' own C ``apply_mask``. Its generator-based parser and ``Frame``
objects cost about 5 us per frame; this path costs about 1 us. Pings we send and valid pongs
we receive take the same path (the core keeps no state for either, and forward mode's
upstream link exchanges one per frame); every other control frame is handed to the core
whole, so its parser is always at a frame boundary, and its view of the connection's state
stays the truth (``proto.state``, ``close_code``...).

One policy for everything built on it (bridge's server, the simulator and load generator,
forward mode's upstream link, the test upstreams):

* messages go to :meth:`on_binary` / :meth:`on_text` synchronously, from ``data_received``,
  with one clock reading per read: no task, queue or future per message;
* sends are synchronous writes; a peer that stops reading is cut off once the write buffer
  passes ``WRITE_BUFFER_ABORT_BYTES`` (checked only while asyncio says writing is paused, so
  it costs nothing per frame otherwise);
* one close procedure: the core sends the close frame; once it expects TCP to end, the
  socket is aborted if that has not happened within ``CLOSE_TIMEOUT_S``;
* the lifecycle is a :class:`~bridge.transport.lifecycle.Lifecycle` (table-driven phases and
  an :class:`~bridge.transport.lifecycle.Outcome`), never a set of flags.

permessage-deflate is never negotiated (docs/lessons.md s.7), so data frames carry no RSV bits.

Import rule: asyncio, websockets, ``bridge.pacing`` (the clock), ``bridge.transport``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import cast

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from bridge.pacing import Clock, MonotonicClock
from bridge.transport.lifecycle import Event, Lifecycle, Phase

log = logging.getLogger("bridge.transport")

#: Headers whose values websockets' debug log may show; every other value (Authorization,
#: a service's key header, a subprotocol carrying a token, a user's own header) is redacted.
SAFE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-accept",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "user-agent",
        "server",
        "date",
        "content-type",
        "content-length",
        "cache-control",
        "retry-after",
        "origin",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
_SECRET_QUERY = ("token", "key", "jwt", "secret", "auth", "signature", "password")


def _redact_path(path: str) -> str:
    base, sep, query = path.partition("?")
    if not sep:
        return path
    items = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        secret = eq and any(word in name.lower() for word in _SECRET_QUERY)
        items.append(f"{name}=[redacted]" if secret else item)
    return f"{base}?{'&'.join(items)}"


class CredentialFilter(logging.Filter):
    """Keeps credentials out of websockets' debug log of the handshake (``--log-level
    debug``): header values other than :data:`SAFE_HEADERS`, and credential-like query
    values (``?token=``), are replaced by ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or not args:
            return True
        if record.msg in ("> %s: %s", "< %s: %s") and len(args) == 2:
            if str(args[0]).lower() not in SAFE_HEADERS:
                record.args = (args[0], "[redacted]")
        elif record.msg == "> GET %s HTTP/1.1" and len(args) == 1:
            record.args = (_redact_path(str(args[0])),)
        elif record.msg == "< %s %s %s" and len(args) == 3:
            record.args = (args[0], _redact_path(str(args[1])), args[2])
        return True


#: How long the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT_S = 2.0
#: A peer whose unread data passes this is not reading: the connection is aborted.
WRITE_BUFFER_ABORT_BYTES = 4 << 20
#: asyncio's high-water mark: above it ``pause_writing`` turns the abort check on.
WRITE_BUFFER_HIGH_BYTES = 256 << 10
#: The HTTP head of a request or response, at most (websockets refuses larger ones itself).
MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_PING, _OP_PONG = 0, 1, 2, 9, 10
#: RFC 6455 s.5.5: a control frame's payload is at most 125 bytes.
MAX_CONTROL_PAYLOAD = 125


class _MaskPool:
    """Fresh random masking keys (RFC 6455 s.5.3) from a pool refilled 1024 keys at a time:
    one ``os.urandom`` call per frame was 4 % of the load generator's CPU."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool = os.urandom(4 * 1024)
            at = 0
        self._at = at + 4
        return self._pool[at : at + 4]


_MASKS = _MaskPool()


def frame_head(opcode: int, length: int, masked: bool) -> bytes:
    """The header of one unfragmented frame (RFC 6455 s.5.2)."""
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes((0x80 | opcode, mask_bit | length))
    if length < 65536:
        return bytes((0x80 | opcode, mask_bit | 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, mask_bit | 127)) + length.to_bytes(8, "big")


#: Binary frame headers by payload length, built once per size (320, 640, 960 bytes...).
_SERVER_BINARY_HEADS: dict[int, bytes] = {}
_CLIENT_BINARY_HEADS: dict[int, bytes] = {}


class Connection(asyncio.Protocol):
    """A websocket over an asyncio transport; subclassed by the server and client sides.

    Subclasses override the ``on_*`` hooks; everything else is shared. ``masked_out`` is
    ``True`` on the client side (clients mask, servers must not), and the reader expects the
    opposite from the peer.
    """

    #: Called with the read's clock reading before its frames are handled (the load
    #: generator sends what is due first, see ``bridge.pacer``).
    read_hook: Callable[[int], None] | None = None
    #: How long the closing handshake may take (the simulator waits longer, like a phone).
    close_timeout_s = CLOSE_TIMEOUT_S

    def __init__(
        self,
        proto: Protocol,
        *,
        masked_out: bool,
        clock: Clock | None = None,
        max_size: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.proto = proto
        self.clock = clock or MonotonicClock()
        self.max_size = max_size
        self.masked_out = masked_out
        self.lifecycle = Lifecycle()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.loop = loop
        #: Resolved when TCP is gone (the connection's end, whatever the reason).
        self.lost: asyncio.Future[None] = loop.create_future()
        #: ``lifecycle.phase is OPEN``, kept as a plain attribute: it is read for every frame.
        self.is_open = False
        self.peer = "?"
        self._head_buf = b""
        self._framing = False  # after the upgrade: data frames are parsed here
        self._discarding = False  # after a failure, or stop_reading(): read nothing more
        self._pending = b""  # the start of a frame not yet complete
        self._fragments: bytearray | None = None
        self._fragment_text = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        # Second header byte of a 16-bit-length binary frame as the peer must send it.
        self._fast_b1 = 0x7E if masked_out else 0xFE
        self._heads = _SERVER_BINARY_HEADS if not masked_out else _CLIENT_BINARY_HEADS

    # --- hooks for subclasses -----------------------------------------------------------

    def on_handshake(self) -> None:
        """The head of the request (server) or response (client) went to ``proto``."""

    def on_open(self) -> None:
        """The websocket is open."""

    def on_binary(self, data: bytes, now_ns: int) -> None:
        """A whole binary message."""

    def on_text(self, text: str, now_ns: int) -> None:
        """A whole text message (valid UTF-8)."""

    def on_pong(self, data: bytes) -> None:
        """A pong came in (an answer to :meth:`ping`)."""

    def on_closing(self) -> None:
        """The websocket left OPEN (a close frame went either way, or it failed)."""

    def on_lost(self, exc: Exception | None) -> None:
        """TCP is gone; the last hook called."""

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)

    def data_received(self, data: bytes) -> None:
        now = self.clock.now_ns()
        if self._discarding:
            return
        if self._framing:
            hook = self.read_hook
            if hook is not None:
                hook(now)
            # The common read: exactly one whole unfragmented binary frame of 126-65535
            # bytes (every 20 ms audio frame), nothing pending: no loop, no slicing of the
            # header. Anything else takes the general parser below.
            if (
                not self._pending
                and len(data) > 8
                and data[0] == 0x82
                and data[1] == self._fast_b1
                and self.is_open
                and self._fragments is None
            ):
                size = (data[2] << 8) | data[3]
                if size <= self.max_size:
                    if self._fast_b1 == 0xFE:  # masked (from a client)
                        if len(data) == size + 8:
                            self.on_binary(apply_mask(data[8:], data[4:8]), now)
                            return
                    elif len(data) == size + 4:
                        self.on_binary(data[4:], now)
                        return
            self._receive_frames(data, now)
        else:
            self._receive_head(data, now)

    def eof_received(self) -> bool | None:
        self._feed_head()
        self.proto.receive_eof()
        self._flush()
        self._after_control()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._feed_head()
        self.proto.receive_eof()
        self._framing = False
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self.is_open:
            self.is_open = False
            self.on_closing()
        self.lifecycle.on(Event.LOST)
        try:
            self.on_lost(exc)
        finally:
            if not self.lost.done():
                self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    # --- sending ------------------------------------------------------------------------

    def send_binary(self, data: bytes, ping: bytes | None = None) -> None:
        """One binary frame, written at once (nothing when not open); with ``ping``, a ping
        carrying it goes in the same write (one system call for both, see :meth:`ping`)."""
        if not self.is_open:
            return
        transport = self.transport
        assert transport is not None
        n = len(data)
        head = self._heads.get(n)
        if head is None:
            head = frame_head(_OP_BINARY, n, self.masked_out)
            if len(self._heads) < 64:
                self._heads[n] = head
        if self.masked_out:
            mask = _MASKS.next()
            out = head + mask + apply_mask(data, mask)
        else:
            out = head + data
        transport.write(out if ping is None else out + self._frame(_OP_PING, ping))
        if self._writing_paused:
            self._check_backlog()

    def send_text(self, text: str, ping: bytes | None = None) -> None:
        if not self.is_open:
            return
        out = self._frame(_OP_TEXT, text.encode())
        self._write(out if ping is None else out + self._frame(_OP_PING, ping))

    def ping(self, data: bytes = b"") -> None:
        """A ping, built here as data frames are: websockets' core keeps no state for the
        pings it sends, and its serializer cost a ``getrandom`` call per frame. Forward
        mode's upstream link pings after nearly every frame (its pongs confirm delivery)."""
        if self.is_open:
            self._write(self._frame(_OP_PING, data))

    def _frame(self, opcode: int, data: bytes) -> bytes:
        if opcode & 0x08 and len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a control frame carries at most {MAX_CONTROL_PAYLOAD} bytes")
        if self.masked_out:
            mask = _MASKS.next()
            return frame_head(opcode, len(data), True) + mask + apply_mask(data, mask)
        return frame_head(opcode, len(data), False) + data

    def _write(self, out: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(out)
        if self._writing_paused:
            self._check_backlog()

    def close(self, code: int, reason: str = "", event: Event = Event.CLOSE) -> None:
        """Start the closing handshake with ``code`` (nothing if not open); ``event`` says
        why, which decides the outcome."""
        if self.proto.state is not State.OPEN:
            return
        self.lifecycle.on(event)
        self.proto.send_close(code, reason)
        self._flush()
        self._after_control()

    def fail(self, code: int, reason: str, event: Event = Event.PEER_FAULT) -> None:
        """The peer broke the protocol: close with ``code`` and read nothing more."""
        self._framing = False
        self._discarding = True
        self._pending = b""
        if self.proto.state is State.OPEN:
            self.lifecycle.on(event)
            self.proto.fail(code, reason)
            self._flush()
        self._after_control()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def stop_reading(self) -> None:
        """Read nothing more, not even the rest of the current read (a stalled peer)."""
        self._framing = False
        self._discarding = True
        if self.transport is not None:
            self.transport.pause_reading()

    def _check_backlog(self) -> None:
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > WRITE_BUFFER_ABORT_BYTES:
            log.warning("peer is not reading; aborting", extra={"peer": self.peer})
            transport.abort()

    # --- receiving ----------------------------------------------------------------------

    def _receive_head(self, data: bytes, now: int) -> None:
        """Until the head's blank line; the head alone goes to the sans-I/O core."""
        head = self._head_buf + data
        end = head.find(b"\r\n\r\n")
        if end < 0 and len(head) <= MAX_HEAD_BYTES:
            self._head_buf = head
            return
        self._head_buf = b""
        cut = len(head) if end < 0 else end + 4
        proto = self.proto
        proto.receive_data(head[:cut])
        self.on_handshake()
        self._flush()
        rest = head[cut:]
        if proto.state is not State.OPEN:
            if rest and not self._discarding:  # a refusal's body: websockets reads it
                proto.receive_data(rest)
                self.on_handshake()
                self._flush()
            self._after_control()
            return
        self._upgraded()
        if rest:
            self._receive_frames(rest, now)

    def _upgraded(self) -> None:
        self._framing = True
        self.is_open = True
        self.lifecycle.on(Event.UPGRADED)
        self.on_open()

    def _feed_head(self) -> None:
        if self._head_buf:
            head, self._head_buf = self._head_buf, b""
            self.proto.receive_data(head)
            self.on_handshake()
            self._flush()

    def _receive_frames(self, data: bytes, now: int) -> None:
        """Split the stream into frames (RFC 6455 s.5.2); data frames handled here."""
        buf = self._pending + data if self._pending else data
        size = len(buf)
        pos = 0
        masked_in = not self.masked_out
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if (b1 & 0x80 != 0) is not masked_in or b0 & 0x70:
                if b0 & 0x70:
                    self.fail(1002, "reserved bits must be 0")
                else:
                    self.fail(1002, "incorrect masking" if masked_in else "masked frame")
                return
            if length > self.max_size:
                self.fail(1009, f"frame with {length} bytes exceeds limit of {self.max_size} bytes")
                return
            end = start + length + (4 if masked_in else 0)
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode & 0x08:
                if (
                    opcode == _OP_PONG
                    and b0 & 0x80
                    and length <= MAX_CONTROL_PAYLOAD
                    and self.is_open
                ):
                    # A valid pong: the core only drops it (RFC 6455 s.5.5.3), so it is read
                    # here, for the upstream link that gets one per frame it sends.
                    if masked_in:
                        self.on_pong(apply_mask(buf[start + 4 : end], buf[start : start + 4]))
                    else:
                        self.on_pong(buf[start:end])
                else:  # ping, close, a bad pong: the sans-I/O core's job
                    self._control(buf[pos:end])
            elif self.is_open:  # (data after a close frame is ignored, as websockets does)
                if masked_in:
                    payload = apply_mask(buf[start + 4 : end], buf[start : start + 4])
                else:
                    payload = buf[start:end]
                if opcode == _OP_BINARY and b0 & 0x80 and self._fragments is None:
                    self.on_binary(payload, now)  # the common case
                elif not self._on_data(opcode, payload, b0 & 0x80 != 0, now):
                    return
            if self._discarding:
                return  # failed, or stopped by a hook
            pos = end
        self._pending = buf[pos:] if pos < size else b""

    def _control(self, raw: bytes) -> None:
        proto = self.proto
        proto.receive_data(raw)
        for event in proto.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.PONG:
                self.on_pong(bytes(event.data))
        self._flush()
        self._after_control()

    def _on_data(self, opcode: int, data: bytes, fin: bool, now: int) -> bool:
        if opcode in {_OP_TEXT, _OP_BINARY}:
            if self._fragments is not None:
                self.fail(1002, "expected a continuation frame")
                return False
            if not fin:
                self._fragments = bytearray(data)
                self._fragment_text = opcode == _OP_TEXT
                return True
            return self._deliver(opcode == _OP_TEXT, data, now)
        if opcode == _OP_CONT and self._fragments is not None:
            self._fragments += data
            if len(self._fragments) > self.max_size:
                self.fail(1009, f"message over {self.max_size} bytes")
                return False
            if fin:
                whole, self._fragments = bytes(self._fragments), None
                return self._deliver(self._fragment_text, whole, now)
            return True
        if opcode == _OP_CONT:
            self.fail(1002, "unexpected continuation frame")
        else:
            self.fail(1002, f"invalid opcode: {opcode}")
        return False

    def _deliver(self, is_text: bool, data: bytes, now: int) -> bool:
        if not is_text:
            self.on_binary(data, now)
            return True
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            self.fail(1007, f"{exc.reason} at position {exc.start}")
            return False
        self.on_text(text, now)
        return True

    # --- after control frames: state, close timer ---------------------------------------

    def _after_control(self) -> None:
        proto = self.proto
        if self.is_open and proto.state is not State.OPEN:
            self.is_open = False
            if proto.close_rcvd is not None and self.lifecycle.phase is Phase.OPEN:
                self.lifecycle.on(Event.PEER_CLOSE)
            elif self.lifecycle.phase is Phase.OPEN:  # the core failed it (bad control frame)
                self.lifecycle.on(Event.PEER_FAULT)
            self.on_closing()
        if proto.close_expected() and self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(self.close_timeout_s, self.transport.abort)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.proto.data_to_send():
            if data:
                transport.write(data)
            elif self.masked_out and transport.can_write_eof():
                transport.write_eof()  # a client half-closes; the server closes TCP
            else:
                transport.close()
