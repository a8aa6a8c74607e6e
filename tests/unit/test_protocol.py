"""The Vonage dialect (docs/protocol.md s.3-5): tables used both to parse and to build."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.errors import Fault, PeerError
from bridge.protocol.vonage import (
    Cleared,
    Command,
    Dtmf,
    Notified,
    build_clear,
    build_cleared_event,
    build_connected,
    build_dtmf_event,
    build_notify,
    build_notify_event,
    parse_command,
    parse_connected,
    parse_content_type,
    parse_event,
    parse_query,
)
from bridge.units import content_type, frame_bytes, frame_samples

# --- the first message ----------------------------------------------------------------

VALID_FIRST: list[tuple[str, str, int]] = [
    ("8 kHz", "audio/l16;rate=8000", 8000),
    ("16 kHz", "audio/l16;rate=16000", 16000),
    ("24 kHz", "audio/l16;rate=24000", 24000),
    ("upper case", "AUDIO/L16;RATE=16000", 16000),
    ("mixed case", "Audio/L16;Rate=8000", 8000),
    ("space after ;", "audio/l16; rate=16000", 16000),
    ("spaces around =", "audio/l16 ; rate = 24000", 24000),
    ("leading and trailing blanks", "  audio/l16;rate=16000\t", 16000),
]


@pytest.mark.parametrize(
    ("ctype", "rate"), [c[1:] for c in VALID_FIRST], ids=[c[0] for c in VALID_FIRST]
)
def test_first_message_gives_the_rate(ctype: str, rate: int) -> None:
    text = json.dumps({"event": "websocket:connected", "content-type": ctype})
    connected = parse_connected(text)
    assert connected.sample_rate == rate
    assert dict(connected.metadata) == {}
    assert dict(connected.query) == {}


def test_metadata_is_every_other_key_kept_as_sent() -> None:
    first = {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "language": "en-GB",
        "caller": "447700900123",
        "nested": {"a": [1, 2]},
        "some-unknown-key": None,
    }
    connected = parse_connected(json.dumps(first))
    assert dict(connected.metadata) == {
        "language": "en-GB",
        "caller": "447700900123",
        "nested": {"a": [1, 2]},
        "some-unknown-key": None,
    }


def test_event_key_is_not_required() -> None:
    assert parse_connected('{"content-type": "audio/l16;rate=8000"}').sample_rate == 8000


def test_metadata_and_query_are_read_only() -> None:
    connected = parse_connected('{"content-type": "audio/l16;rate=8000", "a": 1}', query="call=abc")
    with pytest.raises(TypeError):
        connected.metadata["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        connected.query["call"] = "x"  # type: ignore[index]


QUERIES: list[tuple[str, dict[str, str]]] = [
    ("", {}),
    ("call=abc", {"call": "abc"}),
    ("?call=abc", {"call": "abc"}),
    ("call=abc&lang=en-GB", {"call": "abc", "lang": "en-GB"}),
    ("token=a%20b%2Bc", {"token": "a b+c"}),
    ("flag=&x=1", {"flag": "", "x": "1"}),
    ("k=1&k=2", {"k": "2"}),
]


@pytest.mark.parametrize(("query", "expected"), QUERIES)
def test_query_string_becomes_query(query: str, expected: dict[str, str]) -> None:
    assert parse_query(query) == expected
    connected = parse_connected('{"content-type": "audio/l16;rate=16000"}', query=query)
    assert dict(connected.query) == expected


INVALID_FIRST: list[tuple[str, str, Fault]] = [
    ("not JSON", "hello", Fault.FIRST_MESSAGE_NOT_JSON),
    ("empty", "", Fault.FIRST_MESSAGE_NOT_JSON),
    ("truncated JSON", '{"content-type": "audio/l16;rate=16000"', Fault.FIRST_MESSAGE_NOT_JSON),
    ("deeply nested", "[" * 100_000, Fault.FIRST_MESSAGE_NOT_JSON),
    ("a list", '["websocket:connected"]', Fault.FIRST_MESSAGE_NOT_OBJECT),
    ("a string", '"websocket:connected"', Fault.FIRST_MESSAGE_NOT_OBJECT),
    ("null", "null", Fault.FIRST_MESSAGE_NOT_OBJECT),
    ("no content-type", '{"event": "websocket:connected"}', Fault.MISSING_CONTENT_TYPE),
    ("camelCase key", '{"contentType": "audio/l16;rate=16000"}', Fault.MISSING_CONTENT_TYPE),
    ("44.1 kHz", '{"content-type": "audio/l16;rate=44100"}', Fault.UNSUPPORTED_CONTENT_TYPE),
    ("48 kHz", '{"content-type": "audio/l16;rate=48000"}', Fault.UNSUPPORTED_CONTENT_TYPE),
    ("no rate", '{"content-type": "audio/l16"}', Fault.UNSUPPORTED_CONTENT_TYPE),
    ("mu-law", '{"content-type": "audio/pcmu;rate=8000"}', Fault.UNSUPPORTED_CONTENT_TYPE),
    ("trailing junk", '{"content-type": "audio/l16;rate=16000;x"}', Fault.UNSUPPORTED_CONTENT_TYPE),
    (
        "non-ASCII digits",
        '{"content-type": "audio/l16;rate=\\u0661\\u0666\\u0660\\u0660\\u0660"}',
        Fault.UNSUPPORTED_CONTENT_TYPE,
    ),
    ("number", '{"content-type": 16000}', Fault.UNSUPPORTED_CONTENT_TYPE),
    ("null content-type", '{"content-type": null}', Fault.UNSUPPORTED_CONTENT_TYPE),
    (
        "list content-type",
        '{"content-type": ["audio/l16;rate=16000"]}',
        Fault.UNSUPPORTED_CONTENT_TYPE,
    ),
]


@pytest.mark.parametrize(
    ("text", "fault"), [c[1:] for c in INVALID_FIRST], ids=[c[0] for c in INVALID_FIRST]
)
def test_invalid_first_message_raises_peer_error(text: str, fault: Fault) -> None:
    with pytest.raises(PeerError) as info:
        parse_connected(text)
    assert info.value.fault is fault
    assert str(info.value).startswith(fault.value)


def test_unsupported_content_type_names_the_value() -> None:
    with pytest.raises(PeerError) as info:
        parse_content_type("audio/l16;rate=44100")
    assert "44100" in info.value.detail


# --- events ----------------------------------------------------------------------------

EVENTS: list[tuple[str, str, object]] = [
    ("dtmf flat", '{"event":"websocket:dtmf","digit":"5","duration":260}', Dtmf("5", 260)),
    (
        "dtmf nested",
        '{"event":"websocket:dtmf","dtmf":{"digit":"5","duration":260}}',
        Dtmf("5", 260),
    ),
    ("dtmf star", '{"event":"websocket:dtmf","digit":"*"}', Dtmf("*", None)),
    ("dtmf hash", '{"event":"websocket:dtmf","digit":"#","duration":100}', Dtmf("#", 100)),
    (
        "dtmf float duration",
        '{"event":"websocket:dtmf","digit":"0","duration":99.9}',
        Dtmf("0", 99),
    ),
    (
        "dtmf string duration",
        '{"event":"websocket:dtmf","digit":"1","duration":"260"}',
        Dtmf("1", None),
    ),
    ("dtmf NaN duration", '{"event":"websocket:dtmf","digit":"1","duration":NaN}', Dtmf("1", None)),
    (
        "dtmf Infinity duration",
        '{"event":"websocket:dtmf","digit":"1","duration":Infinity}',
        Dtmf("1", None),
    ),
    (
        "dtmf huge duration",
        '{"event":"websocket:dtmf","digit":"1","duration":1e400}',
        Dtmf("1", None),
    ),
    (
        "dtmf bool duration",
        '{"event":"websocket:dtmf","digit":"1","duration":true}',
        Dtmf("1", None),
    ),
    ("cleared", '{"event":"websocket:cleared"}', Cleared()),
    (
        "notify",
        '{"event":"websocket:notify","payload":{"id":7,"tag":["a"]}}',
        Notified({"id": 7, "tag": ["a"]}),
    ),
    ("notify without payload", '{"event":"websocket:notify"}', Notified(None)),
    ("unknown event", '{"event":"websocket:something-new","x":1}', None),
    ("no event key", '{"digit":"5"}', None),
    (
        "connected again",
        '{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}',
        None,
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in EVENTS], ids=[c[0] for c in EVENTS])
def test_parse_event(text: str, expected: object) -> None:
    assert parse_event(text) == expected


BAD_EVENTS: list[tuple[str, str]] = [
    ("not JSON", "digit 5"),
    ("deeply nested", "[" * 100_000),
    ("not an object", "[1, 2]"),
    ("letter digit", '{"event":"websocket:dtmf","digit":"A"}'),
    ("two digits", '{"event":"websocket:dtmf","digit":"12"}'),
    ("no digit", '{"event":"websocket:dtmf"}'),
    ("empty digit", '{"event":"websocket:dtmf","digit":""}'),
    ("nested bad digit", '{"event":"websocket:dtmf","dtmf":{"digit":"x"}}'),
]


@pytest.mark.parametrize("text", [c[1] for c in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS])
def test_bad_event_raises_invalid_event(text: str) -> None:
    with pytest.raises(PeerError) as info:
        parse_event(text)
    assert info.value.fault is Fault.INVALID_EVENT


# --- builders round-trip through the parsers -------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_build_connected_round_trips(rate: int) -> None:
    headers = {"language": "en-GB", "caller": "447700900123", "n": 3}
    connected = parse_connected(build_connected(rate, headers), query="call=xyz")
    assert connected.sample_rate == rate
    assert dict(connected.metadata) == headers
    assert dict(connected.query) == {"call": "xyz"}


def test_build_connected_headers_cannot_override_content_type() -> None:
    text = build_connected(8000, {"content-type": "audio/l16;rate=24000", "event": "x"})
    assert json.loads(text)["content-type"] == content_type(8000)
    assert parse_connected(text).sample_rate == 8000


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_build_dtmf_event_round_trips(digit: str) -> None:
    assert parse_event(build_dtmf_event(digit, 260)) == Dtmf(digit, 260)


@pytest.mark.parametrize("digit", ["A", "", "55", "p"])
def test_build_dtmf_event_rejects_bad_digit(digit: str) -> None:
    with pytest.raises(ValueError, match="DTMF"):
        build_dtmf_event(digit)


PAYLOADS: list[Any] = [None, 1, "end-of-prompt", {"id": 42, "parts": [1, "two"]}, ["x"]]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_build_notify_round_trips(payload: Any) -> None:
    assert parse_command(build_notify(payload)) == Command("notify", payload)
    assert parse_event(build_notify_event(payload)) == Notified(payload)


def test_build_clear_round_trips() -> None:
    assert parse_command(build_clear()) == Command("clear", None)
    assert json.loads(build_clear()) == {"action": "clear"}
    assert parse_event(build_cleared_event()) == Cleared()


@pytest.mark.parametrize(
    "text",
    ['{"action":"talk"}', '{"event":"websocket:notify"}', "[]", "[" * 100_000, "nope"],
)
def test_parse_command_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_command(text)


# --- frame sizes (docs/protocol.md s.4) -----------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "samples", "nbytes"), [(8000, 160, 320), (16000, 320, 640), (24000, 480, 960)]
)
def test_frame_sizes(rate: int, samples: int, nbytes: int) -> None:
    assert frame_samples(rate) == samples
    assert frame_bytes(rate) == nbytes
    assert parse_content_type(content_type(rate)) == rate
