"""The connection layer's client side against real servers on loopback: what the upgrade
carries (the headers and subprotocols speech services authenticate with), refusals, and
forward mode's link using them end to end."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from bridge.config import ServerConfig
from bridge.errors import ConfigError
from bridge.handlers import echo
from bridge.server import BridgeServer, resolve_transport
from bridge.sim import CallOptions, run_call
from bridge.transport.client import connect
from bridge.upstream import UpstreamLink, UpstreamOptions
from tests.helpers import running_server, url_of, wait_s
from tests.upstreams import RecordingUpstream, read_connections


class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes | str] = []
        self.got = asyncio.Event()

    def on_binary(self, data: bytes, now_ns: int) -> None:
        self.messages.append(bytes(data))
        self.got.set()

    def on_text(self, text: str, now_ns: int) -> None:
        self.messages.append(text)


async def test_upgrade_carries_headers_and_subprotocols_and_echo_comes_back(
    tmp_path: Path,
) -> None:
    upstream = RecordingUpstream(tmp_path, echo=True, subprotocols=("token",))
    port = await upstream.start()
    sink = Sink()
    try:
        conn = await connect(
            f"ws://127.0.0.1:{port}/v1/listen?encoding=linear16",
            sink,
            headers=[("Authorization", "Token secret-key"), ("xi-api-key", "k2")],
            subprotocols=["token", "secret-key"],
            timeout_s=wait_s(5),
        )
        assert conn.subprotocol == "token"
        conn.send_binary(bytes(range(256)) * 2 + bytes(128))
        conn.send_text('{"type":"KeepAlive"}')
        await asyncio.wait_for(sink.got.wait(), wait_s(5))
        conn.close(1000, "done")
        await asyncio.wait_for(conn.lost, wait_s(5))
    finally:
        await upstream.close()
    (request,) = upstream.requests
    assert request.path == "/v1/listen?encoding=linear16"
    assert request.headers["Authorization"] == "Token secret-key"
    assert request.headers["xi-api-key"] == "k2"
    assert request.headers["Sec-WebSocket-Protocol"] == "token, secret-key"
    assert "Sec-WebSocket-Extensions" not in request.headers  # never offers compression
    assert sink.messages == [bytes(range(256)) * 2 + bytes(128)]
    assert conn.proto.close_code == 1000
    assert read_connections(tmp_path)[0].texts == ['{"type":"KeepAlive"}']


async def test_a_refused_upgrade_raises_with_the_status() -> None:
    async with running_server() as server:
        with pytest.raises(InvalidStatus) as info:
            await connect(url_of(server, path="/nowhere"), Sink(), timeout_s=wait_s(5))
    assert info.value.response.status_code == 404


async def test_forward_link_authenticates_with_headers_and_subprotocol(tmp_path: Path) -> None:
    upstream = RecordingUpstream(tmp_path, subprotocols=("token",))
    port = await upstream.start()
    link = UpstreamLink(
        UpstreamOptions(
            url=f"ws://127.0.0.1:{port}/",
            headers=(("Authorization", "Token abc"),),
            subprotocols=("token", "abc"),
        ),
        on_message=lambda item: None,
        on_give_up=lambda reason: None,
        hello='{"hello":1}',
    )
    try:
        link.start()
        for i in range(10):
            link.send_audio(bytes([i]) * 640)
        await link.close()
    finally:
        await upstream.close()
    (request,) = upstream.requests
    assert request.headers["Authorization"] == "Token abc"
    assert request.headers["Sec-WebSocket-Protocol"] == "token, abc"
    assert request.headers["User-Agent"].startswith("bridge/")
    (received,) = read_connections(tmp_path)
    assert received.texts == ['{"hello":1}']
    assert received.audio.tobytes() == b"".join(bytes([i]) * 640 for i in range(10))
    assert link.stats.frames_confirmed == 10


async def test_without_picows_auto_falls_back_to_websockets_and_forcing_it_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a platform without a picows wheel: importing it fails.
    monkeypatch.setitem(sys.modules, "picows", None)
    monkeypatch.setitem(sys.modules, "bridge.transport.picows_server", None)
    assert resolve_transport("auto") == "websockets"
    async with running_server(transport="auto") as server:
        assert server.transport_name == "websockets"
        report = await run_call(CallOptions(url=url_of(server), seconds=0.5))
    assert report.exact
    forced = BridgeServer(ServerConfig(port=0, transport="picows"), echo)
    with pytest.raises(ConfigError, match="--transport picows"):
        await forced.start()


async def test_pings_written_with_messages_are_answered_by_a_websockets_server_in_order() -> None:
    """The upstream link writes its ping in the same write as the frame it confirms, built
    by hand, and reads the pong by hand: a real ``websockets`` server must see both frames
    and answer every ping with its own payload, in order."""
    from websockets.asyncio.server import ServerConnection, serve  # noqa: PLC0415

    received: list[bytes | str] = []

    async def record(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)

    pongs: list[bytes] = []
    async with serve(record, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await connect(
            f"ws://127.0.0.1:{port}/", Sink(), timeout_s=wait_s(5), on_pong=pongs.append
        )
        frame = bytes(range(256)) * 2 + bytes(128)
        conn.send_binary(frame, ping=b"after-binary")
        conn.send_text('{"event":"x"}', ping=b"after-text")
        conn.ping(b"alone")
        conn.send_binary(frame)
        with pytest.raises(ValueError, match="125 bytes"):
            conn.ping(bytes(126))
        for _ in range(200):
            if len(pongs) == 3 and len(received) == 3:
                break
            await asyncio.sleep(0.01)
        conn.close(1000, "done")
        await asyncio.wait_for(conn.lost, wait_s(5))
    assert pongs == [b"after-binary", b"after-text", b"alone"]
    assert received == [frame, '{"event":"x"}', frame]
    assert conn.proto.close_code == 1000
