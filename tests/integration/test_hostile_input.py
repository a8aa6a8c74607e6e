"""What the fuzzer (scripts/fuzz, docs/reliability.md s.2) found, each now a regression test
against a real server on both backends: a bad input gets its documented answer, one line, and
leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bridge.config import ServerConfig
from bridge.handlers import build_handler
from bridge.server import BridgeServer
from bridge.sim import CallOptions, run_call
from bridge.transcript_post import TranscriptPoster
from tests.helpers import running_server, url_of, wait_s

CONNECTED = json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"})


def _frame(opcode: int, payload: bytes, *, rsv: int = 0) -> bytes:
    """One masked client frame (payload under 126 bytes)."""
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | rsv << 4 | opcode, 0x80 | len(payload))) + key + masked


def _upgrade(host: bytes = b"127.0.0.1") -> bytes:
    return (
        b"GET /socket HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


async def _raw(server: BridgeServer, data: bytes, *, then: bytes = b"") -> bytes:
    """Everything the server sends back (until it closes) for ``data``, then ``then``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    if then:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(then)
    out = b""
    try:
        async with asyncio.timeout(wait_s(5)):
            while chunk := await reader.read(65536):
                out += chunk
    finally:
        writer.close()
    return out


def _close_code(stream: bytes) -> int | None:
    """The code of the first close frame in what the server sent after its 101."""
    pos = stream.find(b"\r\n\r\n") + 4 if stream.startswith(b"HTTP/") else 0
    while pos + 2 <= len(stream):
        opcode, n = stream[pos] & 0x0F, stream[pos + 1] & 0x7F
        start = pos + 2 + (2 if n == 126 else 8 if n == 127 else 0)
        if n >= 126:
            n = int.from_bytes(stream[pos + 2 : start], "big")
        if opcode == 8:
            return int.from_bytes(stream[start : start + 2], "big") if n >= 2 else 1005
        pos = start + n
    return None


async def _no_connections_left(server: BridgeServer) -> None:
    async with asyncio.timeout(wait_s(5)):
        while server.connections:  # noqa: ASYNC110 - polled: the set has no event
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("host", "status"),
    [(b"127.0.0.\xb1", b"101"), (b"caf\xc3\xa9", b"101"), (b"127.0\x00.0.1", None)],
    ids=["obs-text", "utf-8", "nul"],
)
async def test_header_bytes_past_ascii_are_read_as_websockets_reads_them(
    host: bytes, status: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    # On picows such a value became a header bridge could not build: an exception inside
    # picows' handshake ("Fatal error on transport", a traceback) and a connection object
    # left in the server's set for good. RFC 9110 s.5.5 allows bytes 0x80-0xFF (obs-text);
    # a control character gets no websocket (picows: 400; websockets closes without an
    # answer, as it does for any request it cannot parse).
    async with running_server() as server:
        with caplog.at_level(logging.WARNING):
            answer = await _raw(server, _upgrade(host=host) + _frame(8, (1000).to_bytes(2, "big")))
            await _no_connections_left(server)
    if status is None:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")
    else:
        assert answer.startswith(b"HTTP/1.1 " + status)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ((1005).to_bytes(2, "big"), {1002}),  # a code no endpoint may send (RFC 6455 s.7.4)
        ((999).to_bytes(2, "big"), {1002}),
        ((5000).to_bytes(2, "big"), {1002}),
        (b"\x03", {1002}),  # a one-byte payload
        ((1000).to_bytes(2, "big") + b"\xff", {1007}),  # a reason that is not UTF-8
        (b"", {1000, 1005}),  # no code: picows answered with code 0, which is no code at all
        ((4000).to_bytes(2, "big"), {4000}),  # an application's code is echoed
    ],
    ids=["1005", "999", "5000", "one byte", "reason not utf-8", "empty", "4000"],
)
async def test_the_callers_close_frame_is_checked_on_both_backends(
    payload: bytes, code: set[int]
) -> None:
    async with running_server() as server:
        answer = await _raw(
            server, _upgrade(), then=_frame(1, CONNECTED.encode()) + _frame(8, payload)
        )
    assert _close_code(answer) in code


@pytest.mark.parametrize("opcode", [2, 9], ids=["binary", "ping"])
async def test_reserved_bits_close_the_call_with_1002(
    opcode: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server() as server:
        good = asyncio.create_task(run_call(CallOptions(url=url_of(server), seconds=1.0)))
        with caplog.at_level(logging.WARNING, logger="bridge.server"):
            answer = await _raw(
                server,
                _upgrade(),
                then=_frame(1, CONNECTED.encode()) + _frame(opcode, b"ab", rsv=4),
            )
        report = await good
    assert _close_code(answer) == 1002
    assert report.exact, "the parallel call is untouched"
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"Version: 13", b"Version: 8"), b"400"),
        (
            (b"Version: 13\r\n", b"Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
            b"400",
        ),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), b"400"),
    ],
    ids=["version 8", "two keys", "short key"],
)
async def test_an_upgrade_websockets_refuses_is_refused_on_both_backends(
    change: tuple[bytes, bytes], status: bytes
) -> None:
    # picows let a second Sec-WebSocket-Key and version 8 through to a 101.
    async with running_server() as server:
        answer = await _raw(server, _upgrade().replace(*change))
        await _no_connections_left(server)
    assert answer.startswith(b"HTTP/1.1 " + status)


async def test_a_request_never_finished_is_dropped_after_the_first_message_timeout() -> None:
    # picows dropped such a connection after its own 5 s default, whatever the setting.
    timeout_s = wait_s(0.5)
    async with running_server(first_message_timeout_s=timeout_s) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_upgrade()[:40])
        async with asyncio.timeout(timeout_s + wait_s(2)):
            assert await reader.read() == b""
        writer.close()


async def test_an_upstream_that_nests_too_deep_or_sends_lone_surrogates_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Forward mode parsed "[[[[..." from the upstream into a RecursionError, and wrote text
    # with a lone surrogate (JSON's "\ud800") to the call's log as an UnicodeEncodeError:
    # each a traceback, and the message missing from the log.
    async def hostile(ws: ServerConnection) -> None:
        await ws.send("[" * 50_000 + "]" * 50_000)
        await ws.send('{"action":"note","text":"\\ud800"}')
        async for _ in ws:
            pass

    upstream = await serve(hostile, "127.0.0.1", 0, compression=None)
    port = next(iter(upstream.sockets)).getsockname()[1]
    logs = tmp_path / "logs"
    config = ServerConfig(mode="forward", upstream=f"ws://127.0.0.1:{port}/", transcripts=str(logs))
    settings: dict[str, Any] = {"mode": "forward", "upstream": config.upstream}
    try:
        with caplog.at_level(logging.INFO):
            async with running_server(build_handler(config), **settings) as server:
                report = await run_call(
                    CallOptions(url=url_of(server, query="call=deep-1"), seconds=1.0)
                )
    finally:
        upstream.close()
        await upstream.wait_closed()
    assert report.completed
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    lines = [json.loads(line) for line in (logs / "deep-1.jsonl").read_text().splitlines()]
    messages = [line["message"] for line in lines if line["type"] == "upstream"]
    assert messages[0].startswith("[[[[")  # kept as text, as a message that is not JSON is
    assert messages[1] == {"action": "note", "text": "\ud800"}  # written, escaped


async def test_a_transcript_with_a_lone_surrogate_is_posted_and_the_queue_goes_on() -> None:
    # The poster encoded its body as UTF-8 and raised: its task died, and no transcript
    # after that one was ever posted.
    bodies: list[bytes] = []

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        bodies.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    collector = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = collector.sockets[0].getsockname()[1]
    poster = TranscriptPoster(f"http://127.0.0.1:{port}/t")
    try:
        poster.post({"call_id": "c", "text": "\ud800"})
        poster.post({"call_id": "c", "text": "after"})
        await poster.close(timeout_s=wait_s(5))
    finally:
        collector.close()
        await collector.wait_closed()
    assert [json.loads(b)["text"] for b in bodies] == ["\ud800", "after"]
