"""Limits (README: "Limits"): --max-calls answers 503 + Retry-After before any websocket;
idle and duration limits close only their own call with 1008; message size closes with 1009.
A good call running alongside stays byte-exact."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.sim import CallOptions, run_call
from tests.helpers import running_server, url_of, wait_s
from tests.integration._http import get

FIRST = json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"})
FRAME = bytes(640)


async def _open_call(url: str) -> ClientConnection:
    ws = await connect(url, compression=None, ping_interval=None)
    await ws.send(FIRST)
    return ws


async def _wait_closed(ws: ClientConnection, timeout_s: float) -> tuple[int, str, float]:
    """Read until the server closes; the close code, reason, and when (loop time)."""
    loop = asyncio.get_running_loop()
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(wait_s(timeout_s)):
            while True:
                await ws.recv()
    rcvd = info.value.rcvd
    assert rcvd is not None, "the server must close with a close frame"
    return rcvd.code, rcvd.reason, loop.time()


async def test_max_calls_gives_503_with_retry_after_then_recovers() -> None:
    async with running_server(max_calls=2) as server:
        url = url_of(server)
        first = await _open_call(url)
        first_conn = next(iter(server.connections))
        second = await _open_call(url)
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, compression=None):
                pass
        response = info.value.response
        ready = await get(server.port, "/ready")
        await first.close()
        await first.wait_closed()
        # The slot is free once the server has seen the close.
        await asyncio.wait_for(first_conn.lost, wait_s(5))
        report = await run_call(CallOptions(url=url, seconds=0.5))
        await second.close()
        refused = server.metrics.refused.labels("capacity")._value.get()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert b"capacity" in response.body
    assert ready.status == 200, "a full server is still ready: it will take calls again"
    assert report.exact
    assert refused == 1


async def test_idle_call_is_closed_with_1008_and_others_continue() -> None:
    idle_s = 0.5
    async with running_server(idle_timeout_s=idle_s) as server:
        url = url_of(server)
        good = asyncio.create_task(run_call(CallOptions(url=url, seconds=2.0)))
        ws = await _open_call(url)
        for _ in range(5):
            await ws.send(FRAME)
        loop = asyncio.get_running_loop()
        last_audio = loop.time()
        code, reason, closed_at = await _wait_closed(ws, 5)
        never_spoke = await _open_call(url)  # metadata, then no audio at all
        started = loop.time()
        code2, reason2, closed2 = await _wait_closed(never_spoke, 5)
        report = await good
        outcome = server.metrics.calls.labels("idle_timeout")._value.get()
    assert (code, code2) == (1008, 1008)
    assert reason.startswith("idle timeout: no audio for 0.5 s")
    assert reason2.startswith("idle timeout")
    # Checked every idle/4: closed after the limit, and within limit + 2 checks + slack.
    assert idle_s <= closed_at - last_audio <= idle_s + wait_s(0.6)
    assert idle_s <= closed2 - started <= idle_s + wait_s(0.6)
    assert report.exact, "a call that keeps sending audio is never idle"
    assert outcome == 2


async def test_call_longer_than_max_call_s_is_closed_with_1008() -> None:
    async with running_server(max_call_s=0.8) as server:
        url = url_of(server)
        report = await run_call(CallOptions(url=url, seconds=3.0))
        outcome = server.metrics.calls.labels("max_duration")._value.get()
    assert report.close_code == 1008
    assert report.close_reason == "maximum call duration 0.8 s"
    assert report.closed_by == "server"
    # 0.8 s is 40 frames; the close cuts the call there, give or take scheduling.
    assert 30 <= report.frames_received <= 50 + 10 * wait_s(1)
    assert outcome == 1


async def test_message_size_limit_is_configurable() -> None:
    async with running_server(max_message_bytes=4096) as server:
        ws = await _open_call(url_of(server))
        await ws.send(bytes(4096))  # at the limit: fine (echoed as 6.4 frames' worth)
        await ws.send(bytes(4097))
        code, _, _ = await _wait_closed(ws, 5)
    assert code == 1009
