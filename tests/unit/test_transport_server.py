"""The connection layer's server side fed bytes directly (a fake transport, no sockets).

As for the client side (``test_simulator_framing.py``): the same client byte stream fed whole
and byte by byte gives the same messages, broken frames close with websockets' codes, and
what the server writes parses as unmasked frames. Client frames are built with websockets'
own ``Frame.serialize`` (an independent encoder). Also the one backpressure policy.
"""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from bridge.pacing import FakeClock
from bridge.transport.connection import WRITE_BUFFER_ABORT_BYTES
from bridge.transport.lifecycle import Outcome, Phase
from bridge.transport.server import ServerConnection


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass


class Recorder(ServerConnection):
    def __init__(self) -> None:
        super().__init__(clock=FakeClock(), max_size=100_000)
        self.messages: list[bytes | str] = []

    def on_binary(self, data: bytes, now_ns: int) -> None:
        self.messages.append(bytes(data))

    def on_text(self, text: str, now_ns: int) -> None:
        self.messages.append(text)


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def server_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(opcode, fin, payload) of each frame the server wrote after its 101; none masked."""
    data = data[data.index(b"\r\n\r\n") + 4 :]
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames must not be masked"
        length, pos = b1 & 0x7F, pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        out.append((b0 & 0x0F, bool(b0 & 0x80), bytes(data[pos : pos + length])))
        pos += length
    return out


def opened() -> tuple[Recorder, FakeTransport]:
    conn = Recorder()
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    request = ClientProtocol(parse_uri("ws://127.0.0.1/socket")).connect()
    conn.data_received(request.serialize())
    assert bytes(transport.written).startswith(b"HTTP/1.1 101")
    assert conn.is_open and conn.lifecycle.phase is Phase.OPEN
    return conn, transport


STREAM = b"".join(
    [
        client_frame(Opcode.BINARY, bytes(range(256)) * 2 + bytes(128)),  # 640: 16-bit length
        client_frame(Opcode.BINARY, b"short"),
        client_frame(Opcode.BINARY, bytes(70_000)),  # 64-bit length
        client_frame(Opcode.TEXT, b'{"event":"websocket:dtmf","digit":"5"}'),
        client_frame(Opcode.BINARY, b"frag", fin=False),
        client_frame(Opcode.PING, b"p1"),
        client_frame(Opcode.CONT, b"mented", fin=True),
        client_frame(Opcode.TEXT, "é".encode()[:1], fin=False),
        client_frame(Opcode.CONT, "é".encode()[1:] + b"!", fin=True),
    ]
)
EXPECTED: list[bytes | str] = [
    bytes(range(256)) * 2 + bytes(128),
    b"short",
    bytes(70_000),
    '{"event":"websocket:dtmf","digit":"5"}',
    b"fragmented",
    "é!",
]


@pytest.mark.parametrize("chunk", [len(STREAM), 1, 7, 648, 1000])
async def test_same_messages_whole_or_in_any_chunks(chunk: int) -> None:
    conn, transport = opened()
    for i in range(0, len(STREAM), chunk):
        conn.data_received(STREAM[i : i + chunk])
    assert conn.messages == EXPECTED
    assert server_frames(bytes(transport.written)) == [(Opcode.PONG.value, True, b"p1")]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (Frame(Opcode.BINARY, b"x" * 10).serialize(mask=False, extensions=[]), 1002),
        (bytes((0xC2, 0x81)) + bytes(4) + b"x", 1002),  # RSV1 set, masked
        (client_frame(Opcode.CONT, b"x"), 1002),
        (bytes((0x83, 0x81)) + bytes(4) + b"x", 1002),  # reserved opcode 3
        (client_frame(Opcode.TEXT, b"\xff\xfe"), 1007),
        (client_frame(Opcode.BINARY, bytes(100_001)), 1009),
    ],
)
async def test_broken_frames_fail_the_connection(frame: bytes, code: int) -> None:
    conn, transport = opened()
    conn.data_received(frame + client_frame(Opcode.BINARY, b"after"))
    frames = server_frames(bytes(transport.written))
    assert frames[-1][0] == Opcode.CLOSE.value
    assert int.from_bytes(frames[-1][2][:2], "big") == code
    assert conn.messages == []
    assert conn.lifecycle.outcome is Outcome.PROTOCOL_ERROR
    assert transport.closed  # a server fails the connection by closing TCP at once


async def test_sent_frames_are_unmasked_and_nothing_after_close() -> None:
    conn, transport = opened()
    for size in (10, 640, 70_000):
        conn.send_binary(bytes(size))
    conn.send_text("hi")
    conn.close(1000, "bye")
    conn.send_binary(b"too late")
    frames = server_frames(bytes(transport.written))
    assert [(op, len(p)) for op, _, p in frames] == [(2, 10), (2, 640), (2, 70_000), (1, 2), (8, 5)]
    assert conn.lifecycle.phase is Phase.CLOSING


async def test_a_peer_that_stops_reading_is_cut_off_once_past_the_limit() -> None:
    conn, transport = opened()
    conn.send_binary(bytes(640))
    conn.pause_writing()  # asyncio: the buffer passed its high-water mark
    transport.buffered = WRITE_BUFFER_ABORT_BYTES  # at the limit: still patient
    conn.send_binary(bytes(640))
    assert not transport.aborted
    transport.buffered = WRITE_BUFFER_ABORT_BYTES + 1
    conn.send_binary(bytes(640))
    assert transport.aborted


async def test_plain_http_answer_is_built_by_websockets_and_ends_the_handshake() -> None:
    class Health(Recorder):
        def on_request(self, request: object) -> None:
            self.respond(503, b"draining\n", headers=[("Retry-After", "5")])

    conn = Health()
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"Content-Length: 9" in head and b"Retry-After: 5" in head
    assert b"Cache-Control: no-store" in head
    assert body == b"draining\n"
    assert transport.closed
    assert conn.lifecycle.phase is Phase.CLOSING and not conn.lifecycle.upgraded
