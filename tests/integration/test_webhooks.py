"""GET /answer returns an NCCO that connects the call to this bridge, and that socket is
accepted; GET /event logs the event with the call's id; both authenticated like upgrades."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.endpoints import validate_ncco
from bridge.sim import CallOptions, run_call
from tests.helpers import running_server
from tests.integration._http import get
from tests.integration.test_auth import SECRET, TOKEN, bearer, vonage_jwt
from tests.integration.test_cli import run_cli

PUBLIC = "wss://bridge.example.com:8443"
ANSWER_QUERY = "uuid=63f61863-4a51&conversation_uuid=CON-f972836a&from=447700900123&to=447700900000"


async def test_answer_ncco_connects_the_call_here_with_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="bridge.server"):
        async with running_server(
            token=TOKEN,
            public_url=PUBLIC,
            answer_rate=8000,
            answer_headers="language=en-GB,tenant=acme",
        ) as server:
            unauthenticated = await get(server.port, f"/answer?{ANSWER_QUERY}")
            reply = await get(server.port, f"/answer?{ANSWER_QUERY}&token={TOKEN}")
            assert reply.status == 200, reply.text
            ncco = json.loads(reply.body)
            (connect,) = validate_ncco(ncco)
            endpoint = ncco[0]["endpoint"][0]
            uri = urlsplit(endpoint["uri"])
            # Vonage would open PUBLIC; this test reaches the same server on loopback.
            local = f"ws://127.0.0.1:{server.port}{uri.path}?{uri.query}"
            auth_header = endpoint["authorization"]["value"]
            # Vonage calls the eventUrl as given: it must be accepted by this server.
            event = urlsplit(ncco[0]["eventUrl"][0])
            event_reply = await get(server.port, f"{event.path}?{event.query}&status=answered")
            report = await run_call(
                CallOptions(
                    url=local,
                    rate=8000,
                    seconds=0.5,
                    headers=endpoint["headers"],
                    extra_headers={"Authorization": auth_header},
                )
            )
    assert unauthenticated.status == 401
    assert reply.headers["content-type"] == "application/json"
    assert f"{uri.scheme}://{uri.netloc}" == PUBLIC and uri.path == "/socket"
    assert parse_qs(uri.query) == {
        "uuid": ["63f61863-4a51"],
        "conversation_uuid": ["CON-f972836a"],
        "from": ["447700900123"],
        "to": ["447700900000"],
    }
    assert endpoint["content-type"] == "audio/l16;rate=8000"
    assert endpoint["headers"] == {"language": "en-GB", "tenant": "acme"}
    assert endpoint["authorization"] == {"type": "custom", "value": f"Bearer {TOKEN}"}
    assert ncco[0]["eventType"] == "synchronous"
    # /event needs the token too, and Vonage sends no credential on event webhooks for a
    # token: it rides in the event URL, so the event below is accepted.
    assert ncco[0]["eventUrl"] == [f"https://bridge.example.com:8443/event?token={TOKEN}"]
    assert ncco[0]["eventMethod"] == "GET"
    assert event_reply.status == 204
    assert connect.event_method == "GET"
    assert report.exact
    (started,) = [r for r in caplog.records if r.getMessage() == "call started"]
    assert started.__dict__["call_id"] == "63f61863-4a51"
    assert started.__dict__["query"]["from"] == "447700900123"
    assert started.__dict__["metadata"]["tenant"] == "acme"


async def test_answer_with_vonage_signature_asks_for_a_signed_socket() -> None:
    async with running_server(vonage_signature_secret=SECRET, public_url=PUBLIC) as server:
        unsigned = await get(server.port, f"/answer?{ANSWER_QUERY}")
        reply = await get(server.port, f"/answer?{ANSWER_QUERY}", bearer(vonage_jwt()))
    assert unsigned.status == 401
    assert reply.status == 200
    endpoint = json.loads(reply.body)[0]["endpoint"][0]
    assert endpoint["authorization"] == {"type": "vonage"}
    assert endpoint["content-type"] == "audio/l16;rate=16000"
    assert "headers" not in endpoint


async def test_event_is_logged_with_the_call_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bridge.webhooks"):
        async with running_server(token=TOKEN, public_url=PUBLIC) as server:
            refused = await get(server.port, "/event?uuid=abc&status=answered")
            reply = await get(
                server.port,
                f"/event?uuid=abc-123&status=disconnected&direction=inbound&token={TOKEN}",
            )
    assert refused.status == 401
    assert reply.status == 204 and reply.body == b""
    events = [r for r in caplog.records if r.getMessage() == "call event"]
    assert len(events) == 1
    fields = events[0].__dict__
    assert fields["call_id"] == "abc-123" and fields["status"] == "disconnected"
    assert fields["event"] == {"uuid": "abc-123", "status": "disconnected", "direction": "inbound"}


def test_answer_settings_that_make_a_bad_ncco_refuse_to_start() -> None:
    result = run_cli(
        "serve",
        "--port",
        "0",
        "--public-url",
        PUBLIC,
        "--answer-headers",
        "content-type=audio/l16;rate=8000",
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "/answer NCCO would be invalid" in result.stderr
