"""The /answer NCCO and the /event line, built without a server."""

from __future__ import annotations

import json
import logging

import pytest

from bridge.auth import Authenticator, Credentials
from bridge.cli import main
from bridge.config import HTTP_PATHS, ServerConfig
from bridge.endpoints import EndpointError, validate_ncco
from bridge.http import HttpRoutes
from bridge.webhooks import answer_ncco, event_url, log_event


@pytest.mark.parametrize(
    ("public", "expected"),
    [
        ("wss://b.example", "https://b.example/event"),
        ("wss://b.example:8443", "https://b.example:8443/event"),
        ("ws://10.0.0.1:8080", "http://10.0.0.1:8080/event"),
        ("wss://b.example/ignored/path", "https://b.example/event"),
    ],
)
def test_event_url(public: str, expected: str) -> None:
    assert event_url(public) == expected


def test_answer_carries_only_the_four_keys_escaped() -> None:
    config = ServerConfig(public_url="wss://b.example", path="/voice")
    query = {"uuid": "u 1&x=y", "from": "4477", "to": "4478", "conversation_uuid": "c", "x": "no"}
    ncco = answer_ncco(config, query)
    validate_ncco(ncco)
    uri = ncco[0]["endpoint"][0]["uri"]
    assert uri == "wss://b.example/voice?uuid=u+1%26x%3Dy&conversation_uuid=c&from=4477&to=4478"
    assert "authorization" not in ncco[0]["endpoint"][0]


def test_answer_without_query_has_no_query_string() -> None:
    ncco = answer_ncco(ServerConfig(public_url="wss://b.example"), {})
    assert ncco[0]["endpoint"][0]["uri"] == "wss://b.example/socket"


def test_signature_secret_wins_over_token() -> None:
    config = ServerConfig(public_url="wss://b.example", token="t", vonage_signature_secret="s")
    assert answer_ncco(config, {})[0]["endpoint"][0]["authorization"] == {"type": "vonage"}


def test_reserved_header_is_an_endpoint_error() -> None:
    config = ServerConfig(public_url="wss://b.example", answer_headers="event=x")
    with pytest.raises(EndpointError, match="headers"):
        answer_ncco(config, {})


def test_event_line_drops_the_token_and_bounds_values(caplog: pytest.LogCaptureFixture) -> None:
    query = {"conversation_uuid": "c1", "status": "ringing", "token": "secret", "long": "x" * 500}
    query |= {f"k{i}": "v" for i in range(50)}
    with caplog.at_level(logging.INFO, logger="bridge.webhooks"):
        log_event(query)
    (record,) = caplog.records
    fields = record.__dict__
    assert fields["call_id"] == "c1" and fields["status"] == "ringing"
    assert "token" not in fields["event"] and "secret" not in str(fields)
    assert len(fields["event"]["long"]) == 200
    assert len(fields["event"]) == 30


#: A server's authentication settings, and the ``bridge ncco`` flags that ask for the same.
#: With a token alone the event URL carries it (Vonage sends no credential on events then).
EVENT = "https://b.example:8443/event"
SAME_AUTH: list[tuple[str, dict[str, str], list[str]]] = [
    ("open", {}, ["--event-url", EVENT]),
    ("token", {"token": "t0ken"}, ["--token", "t0ken", "--event-url", f"{EVENT}?token=t0ken"]),
    ("signed", {"vonage_signature_secret": "s3cret"}, ["--auth", "vonage", "--event-url", EVENT]),
    (
        "signed wins",
        {"vonage_signature_secret": "s", "token": "t"},
        ["--auth", "vonage", "--event-url", EVENT],
    ),
]


@pytest.mark.parametrize(
    ("settings", "flags"), [row[1:] for row in SAME_AUTH], ids=[row[0] for row in SAME_AUTH]
)
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_bridge_ncco_prints_what_the_server_answers(
    settings: dict[str, str], flags: list[str], rate: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """One builder: ``bridge ncco --websocket`` and ``GET /answer`` agree for every setting."""
    config = ServerConfig(
        public_url="wss://b.example:8443",
        path="/voice",
        answer_rate=rate,  # type: ignore[arg-type]
        answer_headers="language=en-GB, tenant=acme",
        **settings,  # type: ignore[arg-type]
    )
    served = answer_ncco(config, {"uuid": "u-1", "from": "447700900123"})
    status = main(
        [
            "ncco",
            "--websocket",
            "wss://b.example:8443/voice?uuid=u-1&from=447700900123",
            "--rate",
            str(rate),
            "--header",
            "language=en-GB",
            "--header",
            "tenant=acme",
            *flags,
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert json.loads(printed.out) == served


def test_every_reserved_path_is_served_and_no_other() -> None:
    """``HTTP_PATHS`` (which ``--path`` may not take) is exactly what ``bridge.http`` serves."""
    config = ServerConfig(public_url="wss://b.example")
    routes = HttpRoutes(config, Authenticator(), lambda: b"", lambda: True)
    open_door = Credentials(authorization=None, query_token=None)
    for path in HTTP_PATHS:
        response, _ = routes.handle(path, {}, open_door)
        assert response.status != 404, path
    assert routes.handle("/other", {}, open_door)[0].status == 404
