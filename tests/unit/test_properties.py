"""Property-based tests (Hypothesis) of the sans-I/O protocol modules: whatever a peer sends,
each parser returns its documented values or raises its one documented error, and what bridge
builds, its peer's parser reads back exactly (docs/reliability.md s.3).

Bounded so that the whole file runs in a few seconds: ``max_examples`` per property, a
``deadline`` per example, no stored database (the suite runs from a fresh checkout). The
fuzzer (scripts/fuzz) sends the same kinds of input to a live server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.carriers import CarrierSession, CarrierStats, Reorder
from bridge.errors import PeerError
from bridge.protocol.carrier import CARRIER_NAMES, Stopped
from bridge.protocol.vonage import (
    DTMF_DIGITS,
    Cleared,
    Dtmf,
    Notified,
    build_connected,
    build_dtmf_event,
    build_notify_event,
    parse_connected,
    parse_event,
)
from bridge.services import DIALECTS
from bridge.services.base import AgentAudio, ServiceMessageError, Transcript
from bridge.sim.carrier_peer import CarrierPeer, PeerOptions
from bridge.transport.connection import frame_head
from bridge.transport.server import ServerConnection
from bridge.units import SUPPORTED_RATES

BOUNDED = settings(
    max_examples=60,
    deadline=1000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Any JSON value (finite numbers: JSON has no others, though Python's parser takes them).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
#: Texts a peer might send: JSON of any shape, near-JSON, raw tokens Python's parser takes.
peer_texts = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=60),
    st.sampled_from(["1e400", "NaN", "-Infinity", "[" * 5000, "1" * 5000, '{"a":', '"\\ud800"']),
)


def _with_fields(template: dict[str, Any]) -> st.SearchStrategy[str]:
    """``template`` with any of its fields (at any depth) replaced by any JSON value."""
    paths: list[tuple[str, ...]] = []

    def walk(obj: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                paths.append((*prefix, key))
                walk(value, (*prefix, key))

    walk(template, ())

    def build(choices: list[tuple[tuple[str, ...], Any]]) -> str:
        obj = json.loads(json.dumps(template))
        for path, value in choices:
            node = obj
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node[path[-1]] = value
        return json.dumps(obj)

    return st.lists(st.tuples(st.sampled_from(paths), json_values), min_size=1, max_size=3).map(
        build
    )


# --- Vonage ----------------------------------------------------------------------------------


def _check_event(text: str) -> None:
    try:
        event = parse_event(text)
    except PeerError:
        return
    assert event is None or isinstance(event, Dtmf | Cleared | Notified)
    if isinstance(event, Dtmf):
        assert event.digit in DTMF_DIGITS
        assert event.duration_ms is None or isinstance(event.duration_ms, int)


@BOUNDED
@given(peer_texts)
def test_a_vonage_event_is_an_event_none_or_a_peer_error(text: str) -> None:
    _check_event(text)


@BOUNDED
@given(
    _with_fields({"event": "websocket:dtmf", "digit": "5", "duration": 100, "dtmf": {"digit": "1"}})
)
def test_a_dtmf_event_with_any_field_of_any_type_parses_or_is_refused(text: str) -> None:
    _check_event(text)


@BOUNDED
@given(peer_texts, st.text(max_size=30))
def test_the_first_message_is_a_supported_rate_or_a_peer_error(text: str, query: str) -> None:
    try:
        connected = parse_connected(text, query)
    except PeerError:
        return
    assert connected.sample_rate in SUPPORTED_RATES


@BOUNDED
@given(
    st.sampled_from(SUPPORTED_RATES),
    st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=4),
)
def test_vonage_first_message_round_trip(rate: int, headers: dict[str, Any]) -> None:
    connected = parse_connected(build_connected(rate, headers))
    assert connected.sample_rate == rate
    for key, value in headers.items():
        if key not in ("event", "content-type"):
            assert connected.metadata[key] == value


@BOUNDED
@given(st.sampled_from(sorted(DTMF_DIGITS)), st.integers(0, 10_000), json_values)
def test_vonage_dtmf_and_notify_round_trip(digit: str, duration: int, payload: Any) -> None:
    assert parse_event(build_dtmf_event(digit, duration)) == Dtmf(digit, duration)
    assert parse_event(build_notify_event(payload)) == Notified(payload)


# --- the carriers --------------------------------------------------------------------------------


def _opened(carrier: str, forced: bool) -> tuple[CarrierSession, CarrierPeer]:
    peer = CarrierPeer(PeerOptions(carrier=carrier))
    session = CarrierSession(carrier if forced else None, lambda _text: None, "")
    for message in peer.opening():
        session.feed(message)
    assert session.started
    return session, peer


def _templates(carrier: str) -> list[dict[str, Any]]:
    peer = CarrierPeer(PeerOptions(carrier=carrier))
    out = [json.loads(m) for m in peer.opening()]
    for _ in range(10):
        out += [json.loads(m) for m in peer.frame(bytes(peer.frame_wire_bytes))]
    out += [json.loads(peer.dtmf("5")), json.loads(peer.mark_done("m"))]
    stop = peer.stop()
    if stop is not None:
        out.append(json.loads(stop))
    return out


@pytest.mark.parametrize("carrier", CARRIER_NAMES)
def test_any_carrier_message_gives_items_or_a_peer_error(carrier: str) -> None:
    messages = st.one_of(peer_texts, st.sampled_from(_templates(carrier)).flatmap(_with_fields))

    @BOUNDED
    @given(st.lists(messages, min_size=1, max_size=6), st.booleans())
    def check(texts: list[str], forced: bool) -> None:
        session, _ = _opened(carrier, forced)
        for text in texts:
            try:
                items = session.feed(text)
            except PeerError:
                return  # the call ends here, with the fault's close code
            for item in items:
                if isinstance(item, bytes):
                    assert len(item) % 2 == 0 or session.codec.sample_bytes == 2
            if any(isinstance(i, Stopped) for i in items):
                return

    check()


@pytest.mark.parametrize("carrier", CARRIER_NAMES)
def test_carrier_media_of_any_length_decodes_exactly(carrier: str) -> None:
    @BOUNDED
    @given(st.binary(max_size=4096))
    def check(payload: bytes) -> None:
        session, _peer = _opened(carrier, forced=True)
        media = next(m for m in _templates(carrier) if m.get("event") == "media")
        media["media"]["payload"] = base64.b64encode(payload).decode()
        items = session.feed(json.dumps(media))
        pcm = b"".join(i for i in items if isinstance(i, bytes))
        assert pcm == session.codec.decode(payload)

    check()


@BOUNDED
@given(st.integers(1, 60), st.integers(0, 8), st.randoms(use_true_random=False))
def test_reorder_gives_each_chunk_once_in_order(n: int, window: int, rnd: Any) -> None:
    """Telnyx's media: any arrival order comes out in order, never twice; when no chunk is
    more than ``window`` places late, none is lost."""
    order = list(range(1, n + 1))
    # Each chunk moves at most ``window`` places: a bounded shuffle.
    keyed = sorted(order, key=lambda c: c + rnd.uniform(0, window + 0.5))
    stats = CarrierStats()
    reorder = Reorder(window, stats)
    out: list[bytes] = []
    for chunk in keyed:
        out += reorder.push(chunk, chunk.to_bytes(2, "big"))
    out += reorder.flush()
    got = [int.from_bytes(b, "big") for b in out]
    assert got == sorted(set(got)), "in order, each once"
    late = max(keyed.index(c) - (c - 1) for c in order)
    if window > 0 and late <= window:
        assert got == order


# --- the speech services -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_any_service_message_gives_events_or_a_message_error(name: str) -> None:
    dialect_cls = DIALECTS[name]

    @BOUNDED
    @given(st.lists(st.one_of(peer_texts, st.binary(max_size=64)), min_size=1, max_size=6))
    def check(messages: list[str | bytes]) -> None:
        dialect = dialect_cls(16000)
        dialect.opening()
        for message in messages:
            try:
                events = dialect.parse(message)
            except ServiceMessageError:
                continue
            for event in events:
                if isinstance(event, Transcript):
                    assert isinstance(event.text, str)
                    for t in (event.start_s, event.end_s):
                        assert t is None or isinstance(t, float)
                if isinstance(event, AgentAudio):
                    assert len(event.pcm) % 2 == 0

    check()


SERVICE_TEMPLATES: dict[str, list[dict[str, Any]]] = {
    "deepgram": [
        {
            "type": "Results",
            "channel": {"alternatives": [{"transcript": "hi"}]},
            "is_final": True,
            "start": 0.5,
            "duration": 1.0,
        },
        {"type": "Error", "variant": "DATA-0000", "description": "x"},
    ],
    "assemblyai": [
        {
            "type": "Turn",
            "transcript": "hi",
            "end_of_turn": True,
            "turn_is_formatted": True,
            "words": [{"start": 1, "end": 2}],
        }
    ],
    "openai-realtime": [
        {"type": "response.output_audio.delta", "item_id": "i", "delta": "AAAA"},
        {"type": "input_audio_buffer.speech_started", "item_id": "c", "audio_start_ms": 5},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "c", "audio_end_ms": 9},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "c",
            "transcript": "hi",
        },
        {"type": "error", "error": {"code": "x", "message": "y"}},
    ],
    "elevenlabs": [
        {
            "message_type": "committed_transcript_with_timestamps",
            "text": "hi",
            "words": [{"start": 0.1, "end": 0.2, "type": "word"}],
        }
    ],
    "speechmatics": [
        {
            "message": "AddTranscript",
            "metadata": {"transcript": "hi", "start_time": 0.1, "end_time": 1},
        }
    ],
}


@pytest.mark.parametrize("name", sorted(SERVICE_TEMPLATES))
def test_service_messages_with_any_field_of_any_type(name: str) -> None:
    dialect_cls = DIALECTS[name]
    texts = st.sampled_from(SERVICE_TEMPLATES[name]).flatmap(_with_fields)

    @BOUNDED
    @given(st.lists(texts, min_size=1, max_size=4))
    def check(messages: list[str]) -> None:
        dialect = dialect_cls(16000)
        dialect.opening()
        for message in messages:
            try:
                events = dialect.parse(message)
            except ServiceMessageError:
                continue
            for event in events:
                if isinstance(event, Transcript) and event.start_s is not None:
                    assert not math.isnan(event.start_s)

    check()


# --- the connection layer's framer -------------------------------------------------------------

UPGRADE = (
    b"GET /socket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport:
    """Enough of an asyncio transport for a connection fed by hand."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass


class _Recorder(ServerConnection):
    def __init__(self) -> None:
        super().__init__(max_size=1 << 16)
        self.messages: list[bytes | str] = []

    def on_binary(self, data: bytes, now_ns: int) -> None:
        self.messages.append(bytes(data))

    def on_text(self, text: str, now_ns: int) -> None:
        self.messages.append(text)


def _masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    key = b"\x01\x02\x03\x04"
    head = bytearray(frame_head(opcode, len(payload), True))
    if not fin:
        head[0] &= 0x7F
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _feed(chunks: list[bytes]) -> _Recorder:
    async def go() -> _Recorder:
        conn = _Recorder()
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        for chunk in chunks:
            conn.data_received(chunk)
        return conn

    return asyncio.run(go())


messages = st.lists(
    st.one_of(st.binary(max_size=700), st.text(max_size=200)), min_size=1, max_size=8
)


@BOUNDED
@given(messages, st.data())
def test_the_framer_gives_every_message_whole_however_the_stream_is_cut(
    sent: list[bytes | str], data: st.DataObject
) -> None:
    """Messages, some in fragments with pings between them, in reads cut anywhere: each
    arrives once, whole, in order (the fast path and the general parser agree)."""
    stream = bytearray(UPGRADE)
    for message in sent:
        raw = message.encode() if isinstance(message, str) else message
        opcode = 1 if isinstance(message, str) else 2
        pieces = data.draw(st.integers(1, 3)) if len(raw) > 2 else 1
        if pieces == 1:
            stream += _masked(opcode, raw)
            continue
        cut = len(raw) // pieces
        parts = [
            raw[i * cut : (i + 1) * cut if i < pieces - 1 else len(raw)] for i in range(pieces)
        ]
        stream += _masked(opcode, parts[0], fin=False)
        for i, part in enumerate(parts[1:], 1):
            if data.draw(st.booleans()):
                stream += _masked(9, b"ping")
            stream += _masked(0, part, fin=i == pieces - 1)
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=10, unique=True)))
    chunks = [bytes(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    conn = _feed(chunks)
    assert conn.messages == sent
    assert conn.is_open


@BOUNDED
@given(st.binary(min_size=1, max_size=300), st.lists(st.integers(1, 299), max_size=5))
def test_any_bytes_after_the_upgrade_are_read_or_refused_with_a_close_code(
    garbage: bytes, cuts: list[int]
) -> None:
    stream = UPGRADE + _masked(2, b"ok") + garbage
    points = sorted({c for c in cuts if c < len(garbage)})
    tail = [garbage[a:b] for a, b in zip([0, *points], [*points, len(garbage)], strict=True)]
    conn = _feed([UPGRADE + _masked(2, b"ok"), *tail])
    assert conn.messages[:1] == [b"ok"]
    assert stream  # (the whole stream, for a failing example's report)
    sent = conn.close_sent
    assert conn.is_open or sent is None or sent[0] in (1002, 1007, 1009)
