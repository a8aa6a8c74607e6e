"""NCCO endpoints and the connect action (docs/protocol.md s.2): one table per rule, both ways.

Every valid row must build, serialise and parse back to an equal model; every invalid row
must raise :class:`EndpointError` whose message names the field (and, where it helps, the
rule), whether the bad value came through the constructor or through a parsed dict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.endpoints import (
    Authorization,
    Connect,
    DtmfStep,
    Endpoint,
    EndpointError,
    PhoneEndpoint,
    PhoneFacts,
    SipEndpoint,
    SipFacts,
    VbcEndpoint,
    VbcFacts,
    WebsocketEndpoint,
    WebsocketFacts,
    endpoint_from_dict,
    ncco,
    validate_ncco,
    websocket_ncco,
)
from bridge.errors import BridgeError
from bridge.protocol.vonage import build_connected
from bridge.units import CONTENT_TYPES

FROM = "447700900000"


def headers_of_size(size: int) -> dict[str, str]:
    """A headers object whose compact JSON is exactly ``size`` bytes: {"k":"..."} is 8 + n."""
    return {"k": "v" * (size - 8)}


def raises_on(field: str, *needles: str) -> Callable[[Callable[[], object]], EndpointError]:
    """Run ``make`` and return its EndpointError, checking the message names ``field``."""

    def check(make: Callable[[], object]) -> EndpointError:
        with pytest.raises(EndpointError) as info:
            make()
        message = str(info.value)
        assert message.startswith(f"{field}: "), message
        for needle in needles:
            assert needle in message, message
        assert isinstance(info.value, BridgeError)
        assert "\n" not in message
        return info.value

    return check


# --- numbers (phone endpoint and connect.from) ---------------------------------------------

VALID_NUMBERS = [
    ("UK mobile", "447700900123"),
    ("US", "14155550100"),
    ("shortest, 7 digits", "1234567"),
    ("longest, 15 digits", "123456789012345"),
]
INVALID_NUMBERS: list[tuple[str, object]] = [
    ("plus sign", "+447700900123"),
    ("leading zero", "0447700900123"),
    ("letter", "44770090012a"),
    ("too short, 6 digits", "123456"),
    ("too long, 16 digits", "1234567890123456"),
    ("spaces", "44 7700 900123"),
    ("empty", ""),
    ("non-ASCII digits", "٤٤٧٧٠٠٩٠٠١٢٣"),
    ("trailing newline", "447700900123\n"),
    ("int, not string", 447700900123),
]


@pytest.mark.parametrize("number", [r[1] for r in VALID_NUMBERS], ids=[r[0] for r in VALID_NUMBERS])
def test_valid_phone_numbers(number: str) -> None:
    endpoint = PhoneEndpoint(number)
    assert endpoint.to_dict() == {"type": "phone", "number": number}
    assert Connect(endpoint, from_=number).to_dict()["from"] == number


@pytest.mark.parametrize(
    "number", [r[1] for r in INVALID_NUMBERS], ids=[r[0] for r in INVALID_NUMBERS]
)
def test_invalid_phone_numbers_name_the_field(number: Any) -> None:
    raises_on("endpoint.number")(lambda: PhoneEndpoint(number))
    raises_on("endpoint.number")(lambda: endpoint_from_dict({"type": "phone", "number": number}))
    raises_on("connect.from")(lambda: Connect(VbcEndpoint("1234"), from_=number))


def test_number_message_states_the_rule_and_the_value() -> None:
    error = raises_on("endpoint.number", "E.164", "'+'", "leading zero", "'+447700900123'")(
        lambda: PhoneEndpoint("+447700900123")
    )
    assert error.field == "endpoint.number"


# --- dtmfAnswer ----------------------------------------------------------------------------

VALID_DTMF_ANSWERS = ["12p#*", "0", "pppp1", "0123456789*#p"]
INVALID_DTMF_ANSWERS: list[tuple[object, str]] = [
    ("12x", "0-9, *, # and p"),
    ("", "one or more"),
    ("12P", "0-9"),
    ("1 2", "0-9"),
    ("A", "0-9"),
    (12, "string"),
]


@pytest.mark.parametrize("digits", VALID_DTMF_ANSWERS)
def test_valid_dtmf_answer(digits: str) -> None:
    endpoint = PhoneEndpoint("447700900123", dtmf_answer=digits)
    assert endpoint.to_dict() == {"type": "phone", "number": "447700900123", "dtmfAnswer": digits}


@pytest.mark.parametrize(("digits", "needle"), INVALID_DTMF_ANSWERS)
def test_invalid_dtmf_answer(digits: Any, needle: str) -> None:
    raises_on("endpoint.dtmfAnswer", needle)(lambda: PhoneEndpoint("447700900123", digits))
    raises_on("endpoint.dtmfAnswer", needle)(
        lambda: endpoint_from_dict(
            {"type": "phone", "number": "447700900123", "dtmfAnswer": digits}
        )
    )


# --- SIP URIs ------------------------------------------------------------------------------

VALID_SIP = [
    "sip:alice@example.com",
    "sip:alice@example.com:5061",
    "sip:alice@example.com;transport=tls",
    "sip:alice@example.com:5061;transport=tls",
    "sip:alice@example.com;transport=TLS",
    "sip:alice@example.com;transport=udp",
    "sip:alice@example.com;transport=tcp",
    "sip:+447700900123@sip.example.com",
    "sip:1234@192.0.2.10:1",
    "sip:bob@[2001:db8::1]:65535",
    "sip:a.b-c_d@host",
]
INVALID_SIP: list[tuple[str, object, str]] = [
    ("missing user", "sip:example.com", "no user"),
    ("empty user", "sip:@example.com", "no user"),
    ("port 0", "sip:alice@example.com:0", "port"),
    ("port too big", "sip:alice@example.com:65536", "port"),
    ("port not a number", "sip:alice@example.com:http", "port"),
    ("empty port", "sip:alice@example.com:", "port"),
    ("wrong scheme", "sips:alice@example.com", "sip:"),
    ("no scheme", "alice@example.com", "sip:"),
    ("http scheme", "http://example.com", "sip:"),
    ("empty host", "sip:alice@", "host"),
    ("bad host", "sip:alice@exa mple.com", "host"),
    ("host with underscore", "sip:alice@ex_ample.com", "host"),
    ("unclosed IPv6", "sip:alice@[2001:db8::1", "host"),
    ("space in user", "sip:al ice@example.com", "user"),
    ("unknown transport", "sip:alice@example.com;transport=sctp", "transport"),
    ("other parameter", "sip:alice@example.com;lr", "transport"),
    ("two parameters", "sip:alice@example.com;transport=tls;transport=udp", "one parameter"),
    ("not a string", 5060, "string"),
]


@pytest.mark.parametrize("uri", VALID_SIP)
def test_valid_sip_uris(uri: str) -> None:
    endpoint = SipEndpoint(uri)
    assert endpoint.to_dict() == {"type": "sip", "uri": uri}


@pytest.mark.parametrize(
    ("uri", "needle"), [r[1:] for r in INVALID_SIP], ids=[r[0] for r in INVALID_SIP]
)
def test_invalid_sip_uris(uri: Any, needle: str) -> None:
    raises_on("endpoint.uri", needle)(lambda: SipEndpoint(uri))
    raises_on("endpoint.uri", needle)(lambda: endpoint_from_dict({"type": "sip", "uri": uri}))


# --- websocket URIs and content-type -------------------------------------------------------

VALID_WEBSOCKET_URIS = [
    "ws://127.0.0.1:8080/socket",
    "wss://bridge.example.com/socket?call=CALL_UUID",
    "wss://bridge.example.com",
    "ws://[::1]:9000/socket",
    "ws://x",
]
INVALID_WEBSOCKET_URIS: list[tuple[str, object, str]] = [
    ("http", "http://x", "'ws://' or 'wss://'"),
    ("https", "https://bridge.example.com/socket", "'ws://'"),
    ("upper-case scheme", "WSS://bridge.example.com", "'ws://'"),
    ("no scheme", "bridge.example.com/socket", "'ws://'"),
    ("no host", "ws:///socket", "host"),
    ("only a port", "ws://:8080/socket", "host"),
    ("port too big", "ws://x:65536/", "port"),
    ("port 0", "ws://x:0/", "port"),
    ("port not a number", "ws://x:abc/", "port"),
    ("space", "ws://x/a b", "whitespace"),
    ("fragment", "ws://x/socket#part", "fragment"),
    ("not a string", None, "string"),
]


@pytest.mark.parametrize("uri", VALID_WEBSOCKET_URIS)
def test_valid_websocket_uris(uri: str) -> None:
    assert WebsocketEndpoint(uri).to_dict() == {"type": "websocket", "uri": uri}


@pytest.mark.parametrize(
    ("uri", "needle"),
    [r[1:] for r in INVALID_WEBSOCKET_URIS],
    ids=[r[0] for r in INVALID_WEBSOCKET_URIS],
)
def test_invalid_websocket_uris(uri: Any, needle: str) -> None:
    raises_on("endpoint.uri", needle)(lambda: WebsocketEndpoint(uri))
    raises_on("endpoint.uri", needle)(lambda: endpoint_from_dict({"type": "websocket", "uri": uri}))


@pytest.mark.parametrize(
    ("content_type", "rate"),
    [
        ("audio/l16;rate=8000", 8000),
        ("audio/l16;rate=16000", 16000),
        ("audio/l16;rate=24000", 24000),
    ],
)
def test_each_content_type_is_accepted_and_serialised_hyphenated(
    content_type: str, rate: int
) -> None:
    endpoint = WebsocketEndpoint("wss://x/socket", content_type=content_type)
    assert endpoint.sample_rate == rate
    data = endpoint.to_dict()
    assert data["content-type"] == content_type
    assert "contentType" not in json.dumps(data)
    assert endpoint_from_dict(data) == endpoint


def test_content_types_are_exactly_the_three_rates() -> None:
    assert CONTENT_TYPES == (
        "audio/l16;rate=8000",
        "audio/l16;rate=16000",
        "audio/l16;rate=24000",
    )
    assert WebsocketEndpoint("ws://x").sample_rate is None


INVALID_CONTENT_TYPES: list[object] = [
    "audio/l16;rate=44100",
    "audio/l16;rate=48000",
    "AUDIO/L16;RATE=16000",
    "audio/l16; rate=16000",
    "audio/pcmu;rate=8000",
    "",
    16000,
]


@pytest.mark.parametrize("content_type", INVALID_CONTENT_TYPES)
def test_invalid_content_types(content_type: Any) -> None:
    raises_on("endpoint.content-type")(lambda: WebsocketEndpoint("ws://x", content_type))
    raises_on("endpoint.content-type")(
        lambda: endpoint_from_dict(
            {"type": "websocket", "uri": "ws://x", "content-type": content_type}
        )
    )


def test_content_type_message_lists_the_allowed_values() -> None:
    raises_on("endpoint.content-type", *CONTENT_TYPES, "44100")(
        lambda: WebsocketEndpoint("ws://x", "audio/l16;rate=44100")
    )


def test_camel_case_content_type_key_is_rejected_when_parsing() -> None:
    data = {"type": "websocket", "uri": "ws://x", "contentType": "audio/l16;rate=8000"}
    raises_on("endpoint.contentType", "'content-type'", "16000")(lambda: endpoint_from_dict(data))


# --- headers -------------------------------------------------------------------------------

VALID_HEADERS: list[tuple[str, dict[str, Any]]] = [
    ("empty", {}),
    ("protocol example", {"language": "en-GB", "caller": "447700900123"}),
    ("nested values", {"a": [1, 2.5, None, True], "b": {"c": "d"}}),
    ("exactly 512 bytes", headers_of_size(512)),
]
INVALID_HEADERS: list[tuple[str, object, str, str]] = [
    ("513 bytes", headers_of_size(513), "endpoint.headers", "513 bytes"),
    ("a list", ["a"], "endpoint.headers", "JSON object"),
    ("a string", '{"a": 1}', "endpoint.headers", "JSON object"),
    ("int key", {1: "a"}, "endpoint.headers", "keys must be strings"),
    ("not serialisable", {"a": object()}, "endpoint.headers", "JSON-serialisable"),
    ("NaN", {"a": float("nan")}, "endpoint.headers", "JSON-serialisable"),
    ("event key", {"event": "x"}, "endpoint.headers.event", "first message"),
    ("content-type key", {"content-type": "x"}, "endpoint.headers.content-type", "replace"),
    # Counted escaped, each "é" is 6 bytes ("\u00e9"): 84 of them make 512, 85 make 518.
    ("non-ASCII counted escaped", {"k": "é" * 85}, "endpoint.headers", "bytes"),
]


@pytest.mark.parametrize(
    "headers", [r[1] for r in VALID_HEADERS], ids=[r[0] for r in VALID_HEADERS]
)
def test_valid_headers(headers: dict[str, Any]) -> None:
    endpoint = WebsocketEndpoint("ws://x", headers=headers)
    assert endpoint.to_dict()["headers"] == headers
    assert endpoint_from_dict(endpoint.to_dict()) == endpoint


def test_headers_at_exactly_512_bytes() -> None:
    headers = headers_of_size(512)
    assert len(json.dumps(headers, separators=(",", ":")).encode()) == 512
    WebsocketEndpoint("ws://x", headers=headers)
    escaped = {"k": "é" * 84}
    assert len(json.dumps(escaped, separators=(",", ":"))) == 512
    WebsocketEndpoint("ws://x", headers=escaped)


@pytest.mark.parametrize(
    ("headers", "field", "needle"),
    [r[1:] for r in INVALID_HEADERS],
    ids=[r[0] for r in INVALID_HEADERS],
)
def test_invalid_headers(headers: Any, field: str, needle: str) -> None:
    raises_on(field, needle)(lambda: WebsocketEndpoint("ws://x", headers=headers))


def test_null_headers_are_rejected_when_parsing() -> None:
    data = {"type": "websocket", "uri": "ws://x", "headers": None}
    raises_on("endpoint.headers", "null")(lambda: endpoint_from_dict(data))


def test_headers_are_a_private_read_only_copy() -> None:
    headers: dict[str, Any] = {"a": {"b": 1}}
    endpoint = WebsocketEndpoint("ws://x", headers=headers)
    headers["a"]["b"] = 2
    headers["c"] = 3
    assert endpoint.to_dict()["headers"] == {"a": {"b": 1}}
    assert endpoint.headers is not None
    with pytest.raises(TypeError):
        endpoint.headers["c"] = 3  # type: ignore[index]
    out = endpoint.to_dict()
    out["headers"]["a"]["b"] = 9
    assert endpoint.to_dict()["headers"] == {"a": {"b": 1}}
    hash(endpoint)  # frozen models stay hashable despite the mapping


# --- authorization -------------------------------------------------------------------------

VALID_AUTHORIZATIONS: list[tuple[str, Authorization, dict[str, str]]] = [
    ("vonage", Authorization("vonage"), {"type": "vonage"}),
    (
        "custom",
        Authorization("custom", "Bearer abc.def"),
        {"type": "custom", "value": "Bearer abc.def"},
    ),
    ("custom space and tilde", Authorization("custom", " ~"), {"type": "custom", "value": " ~"}),
    (
        "custom 8191 chars",
        Authorization("custom", "x" * 8191),
        {"type": "custom", "value": "x" * 8191},
    ),
]
INVALID_AUTHORIZATIONS: list[tuple[str, object, str, str]] = [
    ("non-printable", {"type": "custom", "value": "Bearer\x01x"}, ".value", "printable ASCII"),
    ("newline", {"type": "custom", "value": "a\nb"}, ".value", "printable ASCII"),
    ("non-ASCII", {"type": "custom", "value": "café"}, ".value", "printable ASCII"),
    ("8192 chars", {"type": "custom", "value": "x" * 8192}, ".value", "8191"),
    ("empty value", {"type": "custom", "value": ""}, ".value", "1 to"),
    ("custom without value", {"type": "custom"}, ".value", "required"),
    ("value not a string", {"type": "custom", "value": 5}, ".value", "string"),
    ("vonage with value", {"type": "vonage", "value": "x"}, ".value", "not a field"),
    ("unknown type", {"type": "basic"}, ".type", "'vonage' or 'custom'"),
    ("no type", {}, ".type", "'vonage' or 'custom'"),
    ("extra key", {"type": "vonage", "scheme": "x"}, ".scheme", "not a field"),
    ("not an object", "vonage", "", "JSON object"),
]


@pytest.mark.parametrize(
    ("auth", "data"),
    [r[1:] for r in VALID_AUTHORIZATIONS],
    ids=[r[0] for r in VALID_AUTHORIZATIONS],
)
def test_valid_authorizations(auth: Authorization, data: dict[str, str]) -> None:
    assert auth.to_dict() == data
    assert Authorization.from_dict(data) == auth
    endpoint = WebsocketEndpoint("wss://x", authorization=auth)
    assert endpoint.to_dict()["authorization"] == data


@pytest.mark.parametrize(
    ("data", "suffix", "needle"),
    [r[1:] for r in INVALID_AUTHORIZATIONS],
    ids=[r[0] for r in INVALID_AUTHORIZATIONS],
)
def test_invalid_authorizations(data: Any, suffix: str, needle: str) -> None:
    field = "endpoint.authorization" + suffix
    raises_on(field, needle)(
        lambda: endpoint_from_dict({"type": "websocket", "uri": "ws://x", "authorization": data})
    )


def test_custom_authorization_value_is_never_echoed() -> None:
    secret = "s3cret-token\x7f"
    error = raises_on("endpoint.authorization.value")(lambda: Authorization("custom", secret))
    assert "s3cret" not in str(error)
    assert "index 12" in str(error)


def test_vonage_authorization_with_value_is_rejected_on_construction() -> None:
    raises_on("endpoint.authorization.value", "custom")(lambda: Authorization("vonage", "x"))


# --- vbc -----------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["1", "1234", "1234567890"])
def test_valid_vbc_extensions(extension: str) -> None:
    assert VbcEndpoint(extension).to_dict() == {"type": "vbc", "extension": extension}


@pytest.mark.parametrize("extension", ["", "12345678901", "12a", "+1234", 1234])
def test_invalid_vbc_extensions(extension: Any) -> None:
    raises_on("endpoint.extension")(lambda: VbcEndpoint(extension))


# --- parsing endpoint dicts ----------------------------------------------------------------

INVALID_ENDPOINT_DICTS: list[tuple[str, object, str, str]] = [
    ("unknown type", {"type": "skype", "uri": "x"}, "endpoint.type", "phone, sip, websocket, vbc"),
    ("no type", {"number": "447700900123"}, "endpoint.type", "got None"),
    ("not an object", ["phone"], "endpoint", "JSON object"),
    ("missing number", {"type": "phone"}, "endpoint.number", "required"),
    ("missing uri (sip)", {"type": "sip"}, "endpoint.uri", "required"),
    ("missing uri (websocket)", {"type": "websocket"}, "endpoint.uri", "required"),
    ("missing extension", {"type": "vbc"}, "endpoint.extension", "required"),
    (
        "unknown phone key",
        {"type": "phone", "number": "447700900123", "onAnswer": {}},
        "endpoint.onAnswer",
        "not a field of a phone endpoint",
    ),
    (
        "unknown sip key",
        {"type": "sip", "uri": "sip:a@b", "headers": {}},
        "endpoint.headers",
        "not a field",
    ),
]


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [r[1:] for r in INVALID_ENDPOINT_DICTS],
    ids=[r[0] for r in INVALID_ENDPOINT_DICTS],
)
def test_invalid_endpoint_dicts(data: object, field: str, needle: str) -> None:
    raises_on(field, needle)(lambda: endpoint_from_dict(data))


def test_a_class_parses_only_its_own_type() -> None:
    raises_on("endpoint.type", "'sip'")(
        lambda: SipEndpoint.from_dict({"type": "phone", "number": "447700900123"})
    )


ROUND_TRIP_ENDPOINTS: list[tuple[str, Endpoint]] = [
    ("phone", PhoneEndpoint("447700900123")),
    ("phone with dtmf", PhoneEndpoint("14155550100", dtmf_answer="p1#")),
    ("sip", SipEndpoint("sip:alice@example.com:5061;transport=tls")),
    ("websocket bare", WebsocketEndpoint("ws://127.0.0.1:8080/socket")),
    (
        "websocket full",
        WebsocketEndpoint(
            "wss://bridge.example.com/socket?call=CALL_UUID",
            content_type="audio/l16;rate=24000",
            headers={"language": "en-GB", "caller": "447700900123"},
            authorization=Authorization("custom", "Bearer t"),
        ),
    ),
    ("vbc", VbcEndpoint("1234")),
]


@pytest.mark.parametrize(
    "endpoint", [r[1] for r in ROUND_TRIP_ENDPOINTS], ids=[r[0] for r in ROUND_TRIP_ENDPOINTS]
)
def test_endpoint_round_trip(endpoint: Endpoint) -> None:
    data = endpoint.to_dict()
    assert endpoint_from_dict(data) == endpoint
    assert endpoint_from_dict(json.loads(json.dumps(data))).to_dict() == data
    assert type(endpoint).from_dict(data) == endpoint


# --- the connect action --------------------------------------------------------------------

PROTOCOL_EXAMPLE: list[dict[str, Any]] = [
    {
        "action": "connect",
        "eventType": "synchronous",
        "eventUrl": ["https://bridge.example.com/event"],
        "eventMethod": "GET",
        "from": "447700900000",
        "endpoint": [
            {
                "type": "websocket",
                "uri": "wss://bridge.example.com/socket?call=CALL_UUID",
                "content-type": "audio/l16;rate=16000",
                "headers": {"language": "en-GB", "caller": "447700900123"},
                "authorization": {"type": "vonage"},
            }
        ],
    }
]


def _docs_example(section: int) -> Any:
    """The JSON example of docs/protocol.md's section ``section``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    body = text.split(f"\n## {section}. ", 1)[1].split("\n## ", 1)[0]
    return json.loads(body.split("```json", 1)[1].split("```", 1)[0])


def test_protocol_md_example_is_the_one_tested_here() -> None:
    assert _docs_example(1) == PROTOCOL_EXAMPLE
    metadata = {"language": "en-GB", "caller": "447700900123"}
    assert _docs_example(3) == json.loads(build_connected(16000, metadata))


def test_protocol_md_example_validates_and_round_trips() -> None:
    (connect,) = validate_ncco(PROTOCOL_EXAMPLE)
    assert isinstance(connect.endpoint, WebsocketEndpoint)
    assert connect.endpoint.sample_rate == 16000
    assert ncco(connect) == PROTOCOL_EXAMPLE


VALID_CONNECTS: list[tuple[str, Connect, dict[str, Any]]] = [
    (
        "phone with from",
        Connect(PhoneEndpoint("447700900123"), from_=FROM),
        {
            "action": "connect",
            "from": FROM,
            "endpoint": [{"type": "phone", "number": "447700900123"}],
        },
    ),
    (
        "sip with everything",
        Connect(
            SipEndpoint("sip:alice@example.com"),
            from_=FROM,
            event_type="synchronous",
            event_url=("http://127.0.0.1:8080/event",),
            event_method="POST",
            timeout=30,
            limit=7200,
        ),
        {
            "action": "connect",
            "eventType": "synchronous",
            "eventUrl": ["http://127.0.0.1:8080/event"],
            "eventMethod": "POST",
            "from": FROM,
            "timeout": 30,
            "limit": 7200,
            "endpoint": [{"type": "sip", "uri": "sip:alice@example.com"}],
        },
    ),
    (
        "websocket without from",
        Connect(WebsocketEndpoint("ws://x"), limit=1, timeout=1),
        {
            "action": "connect",
            "timeout": 1,
            "limit": 1,
            "endpoint": [{"type": "websocket", "uri": "ws://x"}],
        },
    ),
    (
        "vbc without from",
        Connect(VbcEndpoint("42")),
        {"action": "connect", "endpoint": [{"type": "vbc", "extension": "42"}]},
    ),
]


@pytest.mark.parametrize(
    ("connect", "data"), [r[1:] for r in VALID_CONNECTS], ids=[r[0] for r in VALID_CONNECTS]
)
def test_valid_connects_round_trip(connect: Connect, data: dict[str, Any]) -> None:
    assert connect.to_dict() == data
    assert Connect.from_dict(data) == connect
    assert validate_ncco([data]) == [connect]


def test_event_url_given_as_a_list_is_stored_as_a_tuple() -> None:
    connect = Connect(VbcEndpoint("1"), event_url=["https://x/e"])  # type: ignore[arg-type]
    assert connect.event_url == ("https://x/e",)


PHONE = {"type": "phone", "number": "447700900123"}
INVALID_CONNECT_DICTS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "two endpoints",
        {"endpoint": [PHONE, PHONE], "from": FROM},
        "connect.endpoint",
        "exactly one endpoint, got 2",
    ),
    (
        "no endpoints",
        {"endpoint": [], "from": FROM},
        "connect.endpoint",
        "exactly one endpoint, got 0",
    ),
    ("endpoint not a list", {"endpoint": PHONE, "from": FROM}, "connect.endpoint", "list"),
    ("missing endpoint", {"from": FROM}, "connect.endpoint", "list"),
    ("phone without from", {"endpoint": [PHONE]}, "connect.from", "required for a phone endpoint"),
    (
        "sip without from",
        {"endpoint": [{"type": "sip", "uri": "sip:a@b"}]},
        "connect.from",
        "required for a sip endpoint",
    ),
    ("from with plus", {"endpoint": [PHONE], "from": "+447700900000"}, "connect.from", "E.164"),
    (
        "limit 7201",
        {"endpoint": [PHONE], "from": FROM, "limit": 7201},
        "connect.limit",
        "1 to 7200",
    ),
    ("limit 0", {"endpoint": [PHONE], "from": FROM, "limit": 0}, "connect.limit", "1 to 7200"),
    (
        "limit a string",
        {"endpoint": [PHONE], "from": FROM, "limit": "60"},
        "connect.limit",
        "integer",
    ),
    (
        "limit a float",
        {"endpoint": [PHONE], "from": FROM, "limit": 60.0},
        "connect.limit",
        "integer",
    ),
    (
        "limit a bool",
        {"endpoint": [PHONE], "from": FROM, "limit": True},
        "connect.limit",
        "integer",
    ),
    ("timeout 0", {"endpoint": [PHONE], "from": FROM, "timeout": 0}, "connect.timeout", "positive"),
    (
        "timeout negative",
        {"endpoint": [PHONE], "from": FROM, "timeout": -5},
        "connect.timeout",
        "positive",
    ),
    (
        "eventType async",
        {"endpoint": [PHONE], "from": FROM, "eventType": "asynchronous"},
        "connect.eventType",
        "'synchronous'",
    ),
    (
        "eventMethod PUT",
        {"endpoint": [PHONE], "from": FROM, "eventMethod": "PUT"},
        "connect.eventMethod",
        "GET or POST",
    ),
    (
        "eventMethod lower",
        {"endpoint": [PHONE], "from": FROM, "eventMethod": "post"},
        "connect.eventMethod",
        "GET or POST",
    ),
    (
        "eventUrl a string",
        {"endpoint": [PHONE], "from": FROM, "eventUrl": "https://x/e"},
        "connect.eventUrl",
        "list of exactly one",
    ),
    (
        "eventUrl two URLs",
        {"endpoint": [PHONE], "from": FROM, "eventUrl": ["https://x/a", "https://x/b"]},
        "connect.eventUrl",
        "exactly one",
    ),
    (
        "eventUrl empty",
        {"endpoint": [PHONE], "from": FROM, "eventUrl": []},
        "connect.eventUrl",
        "exactly one",
    ),
    (
        "eventUrl ws scheme",
        {"endpoint": [PHONE], "from": FROM, "eventUrl": ["ws://x/e"]},
        "connect.eventUrl",
        "'http://' or 'https://'",
    ),
    (
        "eventUrl no host",
        {"endpoint": [PHONE], "from": FROM, "eventUrl": ["https:///e"]},
        "connect.eventUrl",
        "host",
    ),
    (
        "unknown key",
        {"endpoint": [PHONE], "from": FROM, "machineDetection": "hangup"},
        "connect.machineDetection",
        "not a field",
    ),
    (
        "bad endpoint inside",
        {"endpoint": [{"type": "phone", "number": "0123"}], "from": FROM},
        "endpoint.number",
        "E.164",
    ),
]


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [r[1:] for r in INVALID_CONNECT_DICTS],
    ids=[r[0] for r in INVALID_CONNECT_DICTS],
)
def test_invalid_connects(data: dict[str, Any], field: str, needle: str) -> None:
    raises_on(field, needle)(lambda: Connect.from_dict({"action": "connect", **data}))


def test_invalid_connects_through_the_constructor() -> None:
    phone = PhoneEndpoint("447700900123")
    raises_on("connect.endpoint", "exactly one endpoint, got 2")(
        lambda: Connect((phone, phone), from_=FROM)  # type: ignore[arg-type]
    )
    raises_on("connect.endpoint", "must be an endpoint")(
        lambda: Connect({"type": "phone"}, from_=FROM)  # type: ignore[arg-type]
    )
    raises_on("connect.from", "required")(lambda: Connect(phone))
    raises_on("connect.limit", "7200")(lambda: Connect(phone, from_=FROM, limit=7201))
    raises_on("connect.eventUrl", "exactly one")(
        lambda: Connect(phone, from_=FROM, event_url="https://x/e")  # type: ignore[arg-type]
    )
    raises_on("connect.action", "'connect'")(
        lambda: Connect.from_dict({"action": "talk", "endpoint": [PHONE], "from": FROM})
    )


# --- whole NCCOs ---------------------------------------------------------------------------


def test_ncco_accepts_other_actions_as_plain_objects() -> None:
    talk = {"action": "talk", "text": "Connecting you"}
    connect = Connect(PhoneEndpoint("447700900123"), from_=FROM)
    document = ncco(talk, connect)
    assert document == [talk, connect.to_dict()]
    assert validate_ncco(document) == [connect]


INVALID_NCCOS: list[tuple[str, object, str, str]] = [
    ("not a list", {"action": "connect"}, "ncco", "JSON list"),
    ("empty", [], "ncco", "at least one action"),
    ("action not an object", ["connect"], "ncco[0]", "JSON object"),
    ("no action key", [{"text": "hi"}], "ncco[0].action", "string"),
    (
        "connect with two endpoints",
        [
            {"action": "talk", "text": "hi"},
            {"action": "connect", "from": FROM, "endpoint": [PHONE, PHONE]},
        ],
        "ncco[1].endpoint",
        "exactly one",
    ),
    (
        "bad number deep inside",
        [
            {
                "action": "connect",
                "from": FROM,
                "endpoint": [{"type": "phone", "number": "+447700900123"}],
            }
        ],
        "ncco[0].endpoint.number",
        "E.164",
    ),
    (
        "camelCase content type",
        [
            {
                "action": "connect",
                "endpoint": [
                    {"type": "websocket", "uri": "ws://x", "contentType": "audio/l16;rate=8000"}
                ],
            }
        ],
        "ncco[0].endpoint.contentType",
        "content-type",
    ),
    ("connect not an object", [{"action": "connect", "endpoint": "x"}], "ncco[0].endpoint", "list"),
]


@pytest.mark.parametrize(
    ("obj", "field", "needle"),
    [r[1:] for r in INVALID_NCCOS],
    ids=[r[0] for r in INVALID_NCCOS],
)
def test_invalid_nccos_name_the_action_and_field(obj: object, field: str, needle: str) -> None:
    raises_on(field, needle)(lambda: validate_ncco(obj))


def test_ncco_needs_an_action() -> None:
    raises_on("ncco", "at least one")(ncco)


# --- the /answer helper --------------------------------------------------------------------


def test_websocket_ncco_matches_the_protocol_md_example() -> None:
    document = websocket_ncco(
        "wss://bridge.example.com/socket?call=CALL_UUID",
        16000,
        {"language": "en-GB", "caller": "447700900123"},
        Authorization("vonage"),
        "https://bridge.example.com/event",
        from_="447700900000",
    )
    assert document == PROTOCOL_EXAMPLE


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_websocket_ncco_minimal(rate: int) -> None:
    document = websocket_ncco("ws://127.0.0.1:8080/socket", rate, {}, None, None)
    assert document == [
        {
            "action": "connect",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "ws://127.0.0.1:8080/socket",
                    "content-type": f"audio/l16;rate={rate}",
                }
            ],
        }
    ]
    validate_ncco(json.loads(json.dumps(document)))


def test_websocket_ncco_post_events() -> None:
    (connect,) = websocket_ncco("ws://x", 8000, {}, None, "http://x/event", "POST")
    assert connect["eventMethod"] == "POST"
    assert connect["eventType"] == "synchronous"


INVALID_WEBSOCKET_NCCO: list[tuple[str, dict[str, Any], str, str]] = [
    ("rate 44100", {"rate": 44100}, "rate", "8000, 16000, 24000"),
    ("auth as text", {"authorization": "vonage"}, "endpoint.authorization", "an Authorization"),
    ("PUT", {"event_method": "PUT"}, "connect.eventMethod", "GET or POST"),
    ("http uri", {"uri": "http://x"}, "endpoint.uri", "'ws://'"),
    ("big headers", {"headers": headers_of_size(513)}, "endpoint.headers", "512"),
    ("bad event url", {"event_url": "ftp://x/e"}, "connect.eventUrl", "http"),
    ("bad from", {"from_": "0447700900000"}, "connect.from", "E.164"),
]


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [r[1:] for r in INVALID_WEBSOCKET_NCCO],
    ids=[r[0] for r in INVALID_WEBSOCKET_NCCO],
)
def test_websocket_ncco_rejects(changes: dict[str, Any], field: str, needle: str) -> None:
    kwargs: dict[str, Any] = {
        "uri": "ws://x",
        "rate": 16000,
        "headers": {},
        "authorization": None,
        "event_url": "https://x/event",
        **changes,
    }
    raises_on(field, needle)(lambda: websocket_ncco(**kwargs))


# --- explain(): the fine print as data ---------------------------------------------------


def test_sip_explain_gives_host_default_port_udp_media_and_the_caller_id() -> None:
    facts = Connect(SipEndpoint("sip:alice@pbx.example.com"), from_=FROM).explain()
    assert isinstance(facts, SipFacts)
    assert (facts.host, facts.port, facts.port_given) == ("pbx.example.com", 5060, False)
    assert (facts.tls, facts.transport, facts.media) == (False, None, "udp")
    assert facts.caller_id == f"{FROM}@sip.nexmo.com"


@pytest.mark.parametrize(
    ("uri", "host", "port", "tls", "transport"),
    [
        ("sip:alice@pbx.example.com;transport=tls", "pbx.example.com", 5060, True, "tls"),
        ("sip:alice@pbx.example.com:5061;transport=TLS", "pbx.example.com", 5061, True, "tls"),
        ("sip:alice@10.0.0.5:5080;transport=tcp", "10.0.0.5", 5080, False, "tcp"),
        ("sip:alice@[2001:db8::1]:5062", "[2001:db8::1]", 5062, False, None),
        ("sip:alice@[2001:db8::1]", "[2001:db8::1]", 5060, False, None),
    ],
)
def test_sip_explain_reads_port_and_transport_from_the_uri(
    uri: str, host: str, port: int, tls: bool, transport: str | None
) -> None:
    facts = SipEndpoint(uri).explain(FROM)
    assert (facts.host, facts.port, facts.tls, facts.transport) == (host, port, tls, transport)
    assert facts.media == "udp"  # whatever the signalling transport


def test_phone_explain_gives_the_number_caller_id_and_dtmf_timing() -> None:
    facts = Connect(PhoneEndpoint("447700900123", dtmf_answer="pp12p#"), from_=FROM).explain()
    assert isinstance(facts, PhoneFacts)
    assert (facts.number, facts.caller_id) == ("447700900123", FROM)
    assert facts.dtmf_steps == (DtmfStep(1000, "12"), DtmfStep(500, "#"))
    assert facts.dtmf_pause_ms == 1500
    trailing = PhoneEndpoint("447700900123", dtmf_answer="1p").explain(FROM)
    assert trailing.dtmf_steps == (DtmfStep(0, "1"), DtmfStep(500, ""))
    assert PhoneEndpoint("447700900123").explain(FROM).dtmf_steps == ()
    text = " ".join(facts.lines())
    assert "wait 1000 ms, key 1 2, wait 500 ms, key #" in text
    assert "+447700900123" in text


def test_websocket_explain_gives_rate_headers_and_their_size_against_the_limit() -> None:
    headers = headers_of_size(512)  # exactly at the limit
    endpoint = WebsocketEndpoint(
        "wss://b.example.com/socket",
        content_type="audio/l16;rate=8000",
        headers=headers,
        authorization=Authorization("vonage"),
    )
    facts = endpoint.explain()
    assert isinstance(facts, WebsocketFacts)
    assert (facts.rate, facts.rate_given, facts.bytes_per_frame) == (8000, True, 320)
    assert (facts.headers_bytes, facts.headers_limit) == (512, 512)
    assert dict(facts.headers) == headers
    assert (facts.tls, facts.authorization) == (True, "vonage")
    assert "512 of 512 bytes" in " ".join(facts.lines())
    default = WebsocketEndpoint("ws://127.0.0.1:8080/socket").explain()
    assert (default.rate, default.rate_given, default.bytes_per_frame) == (16000, False, 640)
    assert (default.headers_bytes, default.tls, default.authorization) == (0, False, None)


def test_vbc_explain_gives_the_extension() -> None:
    facts = Connect(VbcEndpoint("1234")).explain()
    assert facts == VbcFacts(extension="1234")
    assert "extension 1234" in facts.lines()[0]
