"""Every bad input closes only its own call, with its documented code, while a parallel call
stays byte-exact (README: "Bad input")."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.sim import CallOptions, run_call
from tests.helpers import running_server, url_of, wait_s

GOOD_FIRST = json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"})

CASES: list[tuple[str, list[str | bytes], int, str]] = [
    ("binary first", [b"\x00" * 640], 1002, "binary frame before websocket:connected"),
    ("not json", ["hello"], 1007, "first message is not JSON"),
    ("not an object", ['["websocket:connected"]'], 1007, "first message is not a JSON object"),
    (
        "no content-type",
        ['{"event": "websocket:connected"}'],
        1003,
        "first message has no content-type",
    ),
    (
        "unsupported rate",
        ['{"event": "websocket:connected", "content-type": "audio/l16;rate=44100"}'],
        1003,
        "unsupported content-type",
    ),
    (
        "not audio/l16",
        ['{"content-type": "audio/pcmu;rate=8000"}'],
        1003,
        "unsupported content-type",
    ),
    ("too big", [GOOD_FIRST, b"\x00" * 70_000], 1009, ""),
    (
        "bad dtmf event",
        [GOOD_FIRST, '{"event": "websocket:dtmf", "digit": "x"}'],
        1007,
        "invalid event",
    ),
]


async def _close_of(url: str, messages: list[str | bytes]) -> tuple[int, str]:
    async with connect(url, compression=None, max_size=None) as ws:
        for message in messages:
            await ws.send(message)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(wait_s(5)):
                while True:
                    await ws.recv()
    rcvd = info.value.rcvd
    assert rcvd is not None, "the server must send a close frame, not drop the TCP connection"
    return rcvd.code, rcvd.reason


@pytest.mark.parametrize(("name", "messages", "code", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_closes_only_that_call(
    name: str, messages: list[str | bytes], code: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server() as server:
        url = url_of(server)
        good = asyncio.create_task(run_call(CallOptions(url=url, rate=16000, seconds=1.5)))
        await asyncio.sleep(wait_s(0.3))
        with caplog.at_level(logging.WARNING, logger="bridge.server"):
            got_code, got_reason = await _close_of(url, messages)
        report = await good
    assert got_code == code
    assert got_reason.startswith(reason)
    refusals = [r for r in caplog.records if r.name == "bridge.server" and "refused" in r.message]
    assert len(refusals) == 1, "exactly one log line per refused call"
    assert str(code) in refusals[0].getMessage()
    assert report.exact and report.frames_sent >= 70


async def test_no_first_message_times_out() -> None:
    async with running_server(first_message_timeout_s=wait_s(0.3)) as server:
        url = url_of(server)
        good = asyncio.create_task(run_call(CallOptions(url=url, rate=8000, seconds=1.0)))
        code, reason = await _close_of(url, [])
        report = await good
    assert code == 1008
    assert reason.startswith("no websocket:connected in time")
    assert report.exact


async def test_lenient_mode_keeps_audio_sent_before_metadata() -> None:
    early = bytes(range(256)) * 2 + bytes(128)  # one 640-byte frame
    async with (
        running_server(lenient=True) as server,
        connect(url_of(server), compression=None) as ws,
    ):
        await ws.send(early)
        await ws.send(GOOD_FIRST)
        async with asyncio.timeout(wait_s(2)):
            echoed = await ws.recv()
    assert echoed == early


async def test_wrong_path_gets_404() -> None:
    async with running_server() as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url_of(server, path="/elsewhere")):
                pass
    assert info.value.response.status_code == 404
