"""The load generator's client connection, fed bytes directly (no sockets, a fake transport).

``bridge.sim.client.SimConnection`` lets websockets' ``ClientProtocol`` do the handshake and the
control frames and frames data messages itself, for speed. These tests hold it to RFC 6455
the h11 way: the same server byte stream fed whole and byte by byte gives the same messages;
every broken frame closes with websockets' code; what it sends parses as masked frames.
Server frames are built with websockets' own ``Frame.serialize`` (an independent encoder).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from dataclasses import dataclass, field

import pytest
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri
from websockets.utils import apply_mask

from bridge.pacing import FakeClock
from bridge.sim.client import SimConnection as _Connection  # the connection layer's client side

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.eof = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


@dataclass
class Received:
    messages: list[bytes | str] = field(default_factory=list)

    def on_binary(self, data: bytes, now_ns: int) -> None:
        self.messages.append(bytes(data))

    def on_text(self, text: str, now_ns: int) -> None:
        self.messages.append(text)


def server_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False, extensions=[])


def client_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(opcode, fin, unmasked payload) of each frame the client wrote; all must be masked."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b1 & 0x80, "client frames must be masked"
        assert not b0 & 0x70
        length, pos = b1 & 0x7F, pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        mask, pos = data[pos : pos + 4], pos + 4
        out.append((b0 & 0x0F, bool(b0 & 0x80), apply_mask(data[pos : pos + length], mask)))
        pos += length
    return out


async def opened(
    headers: dict[str, str] | None = None,
) -> tuple[_Connection, FakeTransport, Received]:
    received = Received()
    conn = _Connection(parse_uri("ws://127.0.0.1:1/socket"), headers or {}, received, FakeClock())
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    request = bytes(transport.written)
    match = re.search(rb"Sec-WebSocket-Key: (\S+)", request)
    assert match is not None
    accept = base64.b64encode(hashlib.sha1(match.group(1) + GUID).digest())
    transport.written.clear()
    conn.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    assert conn.opened.done() and conn.opened.exception() is None
    assert conn.is_open
    return conn, transport, received


def close_code(transport: FakeTransport) -> int:
    frames = client_frames(bytes(transport.written))
    closes = [payload for opcode, _, payload in frames if opcode == Opcode.CLOSE.value]
    assert closes, frames
    return int.from_bytes(closes[0][:2], "big")


async def test_request_has_our_headers_and_offers_no_compression() -> None:
    received = Received()
    conn = _Connection(
        parse_uri("ws://h:9/socket?call=1"), {"X-Trace": "abc"}, received, FakeClock()
    )
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    request = bytes(transport.written).decode()
    assert request.startswith("GET /socket?call=1 HTTP/1.1\r\n")
    assert "X-Trace: abc\r\n" in request
    assert "User-Agent" not in request
    assert "Sec-WebSocket-Extensions" not in request
    conn.connection_lost(None)
    with pytest.raises(Exception):  # noqa: B017 - whatever websockets says about no response
        await conn.opened


STREAM = b"".join(
    [
        server_frame(Opcode.BINARY, bytes(range(256)) * 2 + bytes(128)),  # 640: 16-bit length
        server_frame(Opcode.BINARY, b"short"),  # 7-bit length
        server_frame(Opcode.BINARY, bytes(70_000)),  # 64-bit length
        server_frame(Opcode.TEXT, b'{"action":"clear"}'),
        server_frame(Opcode.BINARY, b"frag", fin=False),
        server_frame(Opcode.PING, b"p1"),  # a control frame between fragments
        server_frame(Opcode.CONT, b"mented", fin=True),
        server_frame(Opcode.TEXT, "é".encode()[:1], fin=False),  # UTF-8 split across frames
        server_frame(Opcode.CONT, "é".encode()[1:] + b"!", fin=True),
        server_frame(Opcode.PONG, b"ignored"),
    ]
)
EXPECTED: list[bytes | str] = [
    bytes(range(256)) * 2 + bytes(128),
    b"short",
    bytes(70_000),
    '{"action":"clear"}',
    b"fragmented",
    "é!",
]


@pytest.mark.parametrize("chunk", [len(STREAM), 1, 3, 641, 1000])
async def test_same_messages_whole_or_in_any_chunks(chunk: int) -> None:
    conn, transport, received = await opened()
    for i in range(0, len(STREAM), chunk):
        conn.data_received(STREAM[i : i + chunk])
    assert received.messages == EXPECTED
    # The ping was answered with a pong carrying its payload, and nothing else was sent.
    assert client_frames(bytes(transport.written)) == [(Opcode.PONG.value, True, b"p1")]
    assert conn.is_open


async def test_frames_right_after_the_handshake_response_are_kept() -> None:
    received = Received()
    conn = _Connection(parse_uri("ws://h/"), {}, received, FakeClock())
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    match = re.search(rb"Sec-WebSocket-Key: (\S+)", bytes(transport.written))
    assert match is not None
    accept = base64.b64encode(hashlib.sha1(match.group(1) + GUID).digest())
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    data = response + server_frame(Opcode.BINARY, b"early")
    for i in range(len(data)):  # the blank line itself split across reads
        conn.data_received(data[i : i + 1])
    assert conn.opened.done()
    assert received.messages == [b"early"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (Frame(Opcode.BINARY, b"x" * 10).serialize(mask=True, extensions=[]), 1002),  # masked
        (bytes((0xC2, 0x01)) + b"x", 1002),  # RSV1 set: no extension was negotiated
        (server_frame(Opcode.CONT, b"x"), 1002),  # continuation of nothing
        (bytes((0x83, 0x01)) + b"x", 1002),  # reserved data opcode 3
        (server_frame(Opcode.TEXT, b"\xff\xfe"), 1007),  # not UTF-8
        (bytes((0x82, 0x7F)) + (5 * 2**20).to_bytes(8, "big"), 1009),  # over 4 MiB
    ],
)
async def test_broken_frames_fail_the_connection_with_websockets_codes(
    frame: bytes, code: int
) -> None:
    conn, transport, received = await opened()
    conn.data_received(frame + server_frame(Opcode.BINARY, b"after"))
    assert close_code(transport) == code
    assert not conn.is_open
    assert received.messages == []  # nothing is read after a failure
    conn.data_received(server_frame(Opcode.BINARY, b"later"))
    assert received.messages == []


async def test_fragment_interrupted_by_a_new_message_fails_1002() -> None:
    conn, transport, _ = await opened()
    conn.data_received(
        server_frame(Opcode.BINARY, b"a", fin=False) + server_frame(Opcode.BINARY, b"b")
    )
    assert close_code(transport) == 1002


async def test_server_close_is_answered_and_ends_the_connection() -> None:
    conn, transport, _ = await opened()
    conn.data_received(server_frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    assert not conn.is_open
    assert close_code(transport) == 1000  # the echo of the server's close
    conn.connection_lost(None)
    assert conn.lost.done()
    assert conn.proto.close_code == 1000 and conn.proto.close_reason == "bye"
    assert conn.proto.close_rcvd_then_sent is True


async def test_sent_frames_are_masked_binary_and_text() -> None:
    conn, transport, _ = await opened()
    for size in (10, 640, 70_000):
        conn.send_binary(bytes(range(256)) * (size // 256) + bytes(size % 256))
    conn.send_text('{"event":"websocket:dtmf"}')
    frames = client_frames(bytes(transport.written))
    assert [(op, fin, len(p)) for op, fin, p in frames] == [
        (2, True, 10),
        (2, True, 640),
        (2, True, 70_000),
        (1, True, 26),
    ]
    assert frames[1][2] == bytes(range(256)) * 2 + bytes(128)
    transport.written.clear()
    conn.send_binary(bytes(640))
    conn.send_binary(bytes(640))
    wire = bytes(transport.written)
    assert wire[:648] != wire[648:]  # a fresh masking key per frame
    conn.close(1000)
    assert close_code(transport) == 1000
    conn.send_binary(b"too late")  # after our close: nothing more is written
    assert client_frames(bytes(transport.written))[-1][0] == Opcode.CLOSE.value


async def test_refused_upgrade_is_an_error_for_the_caller() -> None:
    received = Received()
    conn = _Connection(parse_uri("ws://h/"), {}, received, FakeClock())
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n")
    with pytest.raises(InvalidStatus):
        await asyncio.wait_for(conn.opened, 1)
    assert not conn.is_open
