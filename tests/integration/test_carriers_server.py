"""The server's side of the carrier dialects (docs/carriers.md), driven by a small
carrier-speaking client (``tests/carrier_client.py``): what reaches the handler, what the
carrier gets back, marks, clears, bad input and credentials."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.audio.pcm import to_bytes, tone
from bridge.call import Call
from bridge.handlers import echo
from bridge.protocol.twilio import twilio_signature
from bridge.protocol.vonage import Cleared, Dtmf, Notified
from bridge.sim import CallOptions, run_call
from bridge.sim.carrier_peer import PeerOptions
from bridge.units import frame_samples
from tests.carrier_client import CarrierClient, Received
from tests.helpers import running_server, url_of, wait_s

CARRIERS = ["twilio", "telnyx", "plivo", "exotel"]
RATES = {"twilio": 8000, "telnyx": 8000, "plivo": 8000, "exotel": 16000}


def frames(rate: int, n: int, hz: float = 440.0) -> list[bytes]:
    size = frame_samples(rate)
    return [to_bytes(tone(hz, rate, size, start_sample=k * size)) for k in range(n)]


def options(carrier: str, **kw: Any) -> PeerOptions:
    return PeerOptions(carrier, rate=kw.pop("rate", RATES[carrier]), call_id=f"{carrier}-1", **kw)


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_the_handler_sees_the_call_and_the_carrier_gets_its_echo(carrier: str) -> None:
    seen: dict[str, Any] = {}

    async def handler(call: Call) -> None:
        seen.update(rate=call.rate, id=call.id, metadata=dict(call.metadata))
        await echo(call)

    async with running_server(handler) as server:
        opts = options(carrier, params={"lang": "en-GB", "caller_ref": "42"})
        client = await CarrierClient.open(url_of(server), opts)
        rate = opts.rate
        # 52 frames: for Exotel (5-frame chunks at 16 kHz) the last 2 make a partial chunk,
        # sent padded once the audio has stopped for a chunk's length.
        sent = await client.send_frames(frames(rate, 52))
        received = await client.read_until(lambda r: len(r.audio) >= len(sent), timeout_s=5)
        await client.close()
    assert seen["rate"] == rate
    assert seen["id"] == f"{carrier}-1"
    meta = seen["metadata"]
    assert meta["carrier"] == carrier and meta["call_id"] == f"{carrier}-1"
    assert meta["stream_id"] == client.peer.stream_id
    assert meta["lang"] == "en-GB" and meta["caller_ref"] == "42"
    if carrier in ("telnyx", "exotel"):
        assert meta["from"].startswith("+") and meta["to"].startswith("+")
    # The echo is the caller's audio, byte for byte on the wire (G.711 round trip included).
    assert received.audio[: len(sent)] == sent
    if carrier == "exotel":  # chunks of 5 frames at 16 kHz (3200 bytes), the last padded
        sizes = [len(c.payload) for c in received.commands if c.kind == "media"]
        assert set(sizes) == {3200}
    else:  # one 20 ms frame per message
        sizes = [len(c.payload) for c in received.commands if c.kind == "media"]
        assert set(sizes) == {client.peer.frame_wire_bytes}


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_dtmf_marks_and_clear_map_to_the_call_events(carrier: str) -> None:
    events: list[object] = []
    cleared = asyncio.Event()

    async def handler(call: Call) -> None:
        size = frame_samples(call.rate)
        await call.play(np.zeros(size * 10, dtype=np.int16))  # 200 ms
        call.notify({"prompt": 1})
        call.notify("done")
        async for event in call.events():
            events.append(event)
            if isinstance(event, Dtmf):
                call.clear()
            if isinstance(event, Cleared):
                cleared.set()

    async with running_server(handler) as server:
        client = await CarrierClient.open(url_of(server), options(carrier))
        got = await client.read_until(lambda r: len(r.names("mark")) >= 2)
        assert got.names("mark") == ['{"prompt":1}', "done"]
        # The carrier answers the first mark only, then the caller presses a key.
        await client.send(client.peer.mark_done('{"prompt":1}'))
        await client.send(client.peer.dtmf("7"))
        got = await client.read_until(lambda r: any(c.kind == "clear" for c in r.commands))
        if carrier in ("twilio", "telnyx"):
            # A mark right behind the clear (bridge's acknowledgement); the carrier returns
            # the pending mark ("done", cleared) and then that one.
            got = await client.read_until(lambda r: len(r.names("mark")) >= 3)
            ack = got.names("mark")[2]
            assert ack.startswith("bridge-clear-")
            await client.send(client.peer.mark_done("done"))
            await client.send(client.peer.mark_done(ack))
        elif carrier == "plivo":
            answer = client.peer.cleared()
            assert answer is not None
            await client.send(answer)
        if carrier != "exotel":
            async with asyncio.timeout(wait_s(3)):
                await cleared.wait()
        await asyncio.sleep(wait_s(0.1))
        await client.close()
    assert events[0] == Notified({"prompt": 1})  # the payload comes back as it was
    assert isinstance(events[1], Dtmf) and events[1].digit == "7"
    # "done" was cleared before it played: never Notified, on any carrier.
    assert Notified("done") not in events
    assert (Cleared() in events) == (carrier != "exotel")


async def test_telnyx_media_out_of_order_are_put_back() -> None:
    async with running_server() as server:
        client = await CarrierClient.open(url_of(server), options("telnyx", reorder_every=3))
        sent = await client.send_frames(frames(8000, 60))
        received = await client.read_until(lambda r: len(r.audio) >= len(sent))
        await client.close()
    assert received.audio == sent


# --- bad input ------------------------------------------------------------------------------


def _twilio_first() -> list[str]:
    from bridge.sim.carrier_peer import CarrierPeer  # noqa: PLC0415

    return CarrierPeer(options("twilio")).opening()


def _with_media(carrier: str, payload: object) -> list[str | bytes]:
    from bridge.sim.carrier_peer import CarrierPeer  # noqa: PLC0415

    peer = CarrierPeer(options(carrier))
    opening: list[str | bytes] = list(peer.opening())
    media = json.loads((peer.frame(bytes(peer.frame_wire_bytes)) or peer.finish())[0])
    media["media"]["payload"] = payload
    return [*opening, json.dumps(media)]


BAD: list[tuple[str, str, str, list[str | bytes], int, str]] = [
    (
        "binary to twilio",
        "twilio",
        "/socket/twilio",
        [*_twilio_first(), b"\x00" * 160],
        1003,
        "binary frame",
    ),
    (
        "binary after connected",
        "twilio",
        "/socket",
        [_twilio_first()[0], b"\x00" * 160],
        1003,
        "binary",
    ),
    (
        "media before start",
        "twilio",
        "/socket",
        [_twilio_first()[0], _with_media("twilio", "AAAA")[2]],
        1002,
        "media before start",
    ),
    (
        "twilio wrong base64",
        "twilio",
        "/socket",
        _with_media("twilio", "not base64!"),
        1007,
        "invalid media",
    ),
    (
        "telnyx wrong base64",
        "telnyx",
        "/socket",
        _with_media("telnyx", "%%%"),
        1007,
        "invalid media",
    ),
    ("plivo wrong base64", "plivo", "/socket", _with_media("plivo", "A"), 1007, "invalid media"),
    ("exotel wrong base64", "exotel", "/socket", _with_media("exotel", 12), 1007, "invalid media"),
    (
        "telnyx opus",
        "telnyx",
        "/socket",
        [
            '{"event":"connected","version":"1.0.0"}',
            json.dumps(
                {
                    "event": "start",
                    "stream_id": "s",
                    "start": {
                        "call_control_id": "c",
                        "media_format": {"encoding": "OPUS", "sample_rate": 16000},
                    },
                }
            ),
        ],
        1003,
        "unsupported media format",
    ),
    (
        "start matching no carrier",
        "exotel",
        "/socket",
        ['{"event":"connected"}', '{"event":"start","start":{"id":"x"}}'],
        1007,
        "invalid start message",
    ),
    (
        "plivo on a twilio path",
        "plivo",
        "/socket/twilio",
        _with_media("plivo", "AAAA")[:1],
        1008,
        "unexpected",
    ),
    (
        "vonage on an exotel path",
        "exotel",
        "/socket/exotel",
        ['{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}'],
        1008,
        "unexpected carrier",
    ),
    (
        "bad dtmf",
        "twilio",
        "/socket",
        [*_twilio_first(), '{"event":"dtmf","dtmf":{"digit":"x"}}'],
        1007,
        "invalid event",
    ),
]


async def _close_of(url: str, messages: list[str | bytes]) -> tuple[int, str]:
    async with connect(url, compression=None) as ws:
        for message in messages:
            await ws.send(message)
        try:
            async with asyncio.timeout(wait_s(5)):
                while True:
                    await ws.recv()
        except Exception as exc:  # ConnectionClosed, checked below
            rcvd = getattr(exc, "rcvd", None)
            assert rcvd is not None, f"no close frame: {exc!r}"
            return rcvd.code, rcvd.reason
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("name", "carrier", "path", "messages", "code", "reason"), BAD, ids=[case[0] for case in BAD]
)
async def test_bad_input_closes_only_that_call(
    name: str,
    carrier: str,
    path: str,
    messages: list[str | bytes],
    code: int,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server() as server:
        good = asyncio.create_task(
            run_call(CallOptions(url=url_of(server), rate=8000, seconds=1.2))
        )
        await asyncio.sleep(wait_s(0.3))
        with caplog.at_level(logging.WARNING, logger="bridge.server"):
            got = await _close_of(url_of(server, path=path), messages)
        report = await good
    assert got[0] == code, got
    assert got[1].startswith(reason), got
    refusals = [r for r in caplog.records if r.name == "bridge.server" and "refused" in r.message]
    assert len(refusals) == 1
    assert report.exact and report.frames_sent >= 55


# --- credentials --------------------------------------------------------------------------


async def test_twilio_signature_lets_twilio_in_and_nobody_else() -> None:
    token = "twilio-auth-token-0123456789"
    async with running_server(twilio_auth_token=token) as server:
        url = url_of(server, path="/socket/twilio")
        good = twilio_signature(token, url)
        client = await CarrierClient.open(url, options("twilio"), {"X-Twilio-Signature": good})
        sent = await client.send_frames(frames(8000, 10))
        received = await client.read_until(lambda r: len(r.audio) >= len(sent))
        await client.close()
        assert received.audio == sent
        # The same signature without the port (Twilio signs either; its validators try both).
        no_port = url.replace(f":{server.port}", "")
        assert twilio_signature(token, no_port) != good
        for headers in (
            {"X-Twilio-Signature": twilio_signature("wrong-token", url)},
            {"X-Twilio-Signature": twilio_signature(token, url + "x")},
            {},
        ):
            with pytest.raises(InvalidStatus) as info:
                await CarrierClient.open(url, options("twilio"), headers)
            assert info.value.response.status_code == 401


async def test_twilio_signature_over_the_public_url_behind_a_proxy() -> None:
    token = "twilio-auth-token-0123456789"
    public = "wss://bridge.example.com"
    async with running_server(twilio_auth_token=token, public_url=public) as server:
        signed = twilio_signature(token, f"{public}/socket/twilio")
        client = await CarrierClient.open(
            url_of(server, path="/socket/twilio"), options("twilio"), {"X-Twilio-Signature": signed}
        )
        await client.close()
        assert client.received.close_code == 1000


async def test_telnyx_stream_token() -> None:
    async with running_server(telnyx_stream_token="tx-secret") as server:
        url = url_of(server)
        client = await CarrierClient.open(
            url,
            options("telnyx", telnyx_token="tx-secret"),
            {"x-telnyx-streaming-auth-token": "tx-secret"},
        )
        received: Received = await client.close()
        assert received.close_code == 1000
        with pytest.raises(InvalidStatus) as info:
            await CarrierClient.open(
                url, options("telnyx"), {"x-telnyx-streaming-auth-token": "no"}
            )
        assert info.value.response.status_code == 401
