"""Answering Twilio: ``bridge twiml`` prints ``<Connect><Stream>`` TwiML; a server with
``--public-url`` answers ``GET /twiml`` with TwiML pointing at its own Twilio socket, signed
requests let in with ``--twilio-auth-token``; the CLI plays carriers (``call``/``load``)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest

from bridge.protocol.twilio import twilio_signature
from bridge.sim import CallOptions, run_call, run_load
from tests.helpers import running_server, start_server_process
from tests.integration._http import get
from tests.integration.test_cli import run_cli

PUBLIC = "wss://bridge.example.com"
TOKEN = "twilio-auth-token-for-tests"


def test_bridge_twiml_prints_a_valid_document() -> None:
    done = run_cli("twiml", "--stream", "wss://b.example/socket/twilio", "--param", "lang=en-GB")
    assert done.returncode == 0, done.stderr
    stream = ET.fromstring(done.stdout).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://b.example/socket/twilio"
    (param,) = stream.findall("Parameter")
    assert (param.get("name"), param.get("value")) == ("lang", "en-GB")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--stream", "ws://b/s"], "wss://"),
        (["--stream", "wss://b/s?call=1"], "query string"),
        (["--stream", "wss://b/s", "--param", "novalue"], "--param"),
        (["--stream", "wss://b/s", "--param", "a=1", "--param", "a=2"], "twice"),
    ],
)
def test_twiml_mistakes_print_one_line_and_exit_2(args: list[str], needle: str) -> None:
    done = run_cli("twiml", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr


async def test_twiml_answers_with_this_servers_twilio_socket_and_checks_twilios_signature() -> None:
    async with running_server(twilio_auth_token=TOKEN, public_url=PUBLIC) as server:
        query = "?CallSid=CA123&From=%2B441234&To=%2B449876&AccountSid=AC1"
        signed = twilio_signature(TOKEN, f"https://bridge.example.com/twiml{query}")
        reply = await get(server.port, f"/twiml{query}", {"X-Twilio-Signature": signed})
        unsigned = await get(server.port, f"/twiml{query}")
        forged = await get(server.port, f"/twiml{query}&x=1", {"X-Twilio-Signature": signed})
        assert reply.status == 200, reply.text
        assert reply.headers["content-type"].startswith("text/xml")
        stream = ET.fromstring(reply.body).find("./Connect/Stream")
        assert stream is not None
        url = stream.get("url") or ""
        assert url == f"{PUBLIC}/socket/twilio"
        params = {str(p.get("name")): str(p.get("value")) for p in stream.findall("Parameter")}
        assert params == {"from": "+441234", "to": "+449876"}
        # Twilio then opens that URL, signed; here it reaches the same server on loopback.
        local = f"ws://127.0.0.1:{server.port}{urlsplit(url).path}"
        report = await run_call(
            CallOptions(
                url=local,
                carrier="twilio",
                rate=8000,
                seconds=0.6,
                headers=params,
                extra_headers={"X-Twilio-Signature": twilio_signature(TOKEN, url)},
            )
        )
    assert unsigned.status == 401 and forged.status == 401
    assert report.exact and report.close_code == 1000


async def test_load_with_a_carrier() -> None:
    async with running_server() as server:
        report = await run_load(
            CallOptions(
                url=f"ws://127.0.0.1:{server.port}/socket",
                carrier="telnyx",
                rate=8000,
                seconds=1.0,
                reorder_every=9,
            ),
            calls=6,
        )
    assert report.calls_exact == 6 and report.calls_failed == 0


def test_bridge_call_carrier_from_the_command_line() -> None:
    server = start_server_process(["--twilio-auth-token", TOKEN, "--carrier", "twilio"])
    try:
        done = run_cli(
            "call",
            server.url,
            "--carrier",
            "twilio",
            "--seconds",
            "0.6",
            "--twilio-auth-token",
            TOKEN,
            "--json",
        )
        refused = run_cli("call", server.url, "--carrier", "twilio", "--seconds", "0.4", "--json")
        wrong = run_cli(
            "call",
            server.url,
            "--carrier",
            "plivo",
            "--rate",
            "16000",
            "--encoding",
            "audio/x-l16",
            "--seconds",
            "0.4",
            "--twilio-auth-token",
            TOKEN,
            "--json",
        )
    finally:
        server.stop()
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["exact"] and report["rate"] == 8000
    assert refused.returncode == 1 and "401" in json.loads(refused.stdout)["error"]
    # --carrier twilio on the server: a Plivo call is closed with 1008 "unexpected carrier".
    wrong_report = json.loads(wrong.stdout)
    assert wrong_report["close_code"] == 1008
    assert wrong_report["close_reason"].startswith("unexpected carrier")
