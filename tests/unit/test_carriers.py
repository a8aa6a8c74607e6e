"""The carrier dialects, sans-I/O (docs/carriers.md): the carrier's side built by
``bridge.sim.carrier_peer`` and read by ``bridge.carriers``, and back; detection; the reordering
window; mark names; clears; Exotel's chunks; stamps through G.711; credentials; TwiML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from bridge.audio.codec import L16_BE, L16_LE, PCMA, PCMU
from bridge.audio.pcm import to_bytes, tone
from bridge.auth import Authenticator, Credentials, twilio_signature_valid
from bridge.carriers import CarrierSession, CarrierStats, Reorder
from bridge.config import ServerConfig
from bridge.errors import ConfigError, Fault, PeerError
from bridge.protocol import exotel, plivo
from bridge.protocol.carrier import CarrierError, Stopped
from bridge.protocol.dialects import PENDING, UNKNOWN, first_message_dialect
from bridge.protocol.telnyx import Telnyx
from bridge.protocol.twilio import twilio_signature
from bridge.protocol.vonage import Cleared, Connected, Dtmf, Notified
from bridge.sim.carrier_peer import CarrierPeer, PeerOptions, read_wire_stamp, stamp_wire
from bridge.twiml import TwimlError, answer_twiml, connect_stream
from bridge.units import frame_samples

PEERS = [
    PeerOptions("twilio", 8000, params={"lang": "en"}),
    PeerOptions("telnyx", 8000, params={"lang": "en"}),
    PeerOptions("telnyx", 8000, encoding="PCMA", params={"lang": "en"}),
    PeerOptions("telnyx", 16000, encoding="L16", params={"lang": "en"}),
    PeerOptions("plivo", 8000, params={"lang": "en"}),
    PeerOptions("plivo", 16000, encoding=plivo.L16, params={"lang": "en"}),
    PeerOptions("exotel", 8000, params={"lang": "en"}),
    PeerOptions("exotel", 24000, params={"lang": "en"}),
]


def _ids(opts: PeerOptions) -> str:
    return f"{opts.carrier}-{opts.wire_encoding}-{opts.rate}"


def _frames(rate: int, n: int) -> list[bytes]:
    size = frame_samples(rate)
    return [to_bytes(tone(300, rate, size, start_sample=k * size)) for k in range(n)]


class Sent(list[str]):
    def __call__(self, text: str) -> None:
        self.append(text)


def _started(opts: PeerOptions) -> tuple[CarrierPeer, CarrierSession, Sent]:
    peer = CarrierPeer(opts)
    sent = Sent()
    session = CarrierSession(None, sent, "x=1")
    out: list[Any] = []
    for message in peer.opening():
        out += session.feed(message)
    (connected,) = out
    assert isinstance(connected, Connected)
    return peer, session, sent


@pytest.mark.parametrize("opts", PEERS, ids=_ids)
def test_start_media_and_echo_round_trip(opts: PeerOptions) -> None:
    peer, session, sent = _started(opts)
    assert session.dialect is not None and session.dialect.name == opts.carrier
    assert session.sample_rate == opts.rate
    frames = _frames(opts.rate, 20)
    wire = [peer.codec.encode(f) for f in frames]
    pcm: list[bytes] = []
    for w in wire:
        for message in peer.frame(w):
            pcm += [item for item in session.feed(message) if isinstance(item, bytes)]
    for message in peer.finish():
        pcm += [item for item in session.feed(message) if isinstance(item, bytes)]
    decoded = b"".join(pcm)
    assert decoded == b"".join(peer.codec.decode(w) for w in wire)
    # Back to the carrier: every frame, in the carrier's format, sizes it accepts.
    for frame in np.frombuffer(decoded, dtype="<i2").reshape(20, -1):
        session.send_audio(frame.tobytes())
    session.flush()
    commands = [peer.read(text) for text in sent]
    assert all(c.kind == "media" for c in commands)
    assert b"".join(c.payload for c in commands)[: len(b"".join(wire))] == b"".join(wire)


@pytest.mark.parametrize("opts", PEERS, ids=_ids)
def test_metadata_is_custom_parameters_then_the_uniform_keys(opts: PeerOptions) -> None:
    peer = CarrierPeer(
        PeerOptions(opts.carrier, opts.rate, opts.encoding, {"call_id": "mine", "k": "v"}, "CALL-9")
    )
    session = CarrierSession(opts.carrier, Sent(), "")
    items = [item for message in peer.opening() for item in session.feed(message)]
    (connected,) = items
    assert isinstance(connected, Connected)
    meta = connected.metadata
    assert meta["carrier"] == opts.carrier
    assert meta["call_id"] == "CALL-9"  # the carrier's id wins over a parameter's
    assert meta["k"] == "v"
    assert meta["stream_id"] == peer.stream_id


def test_first_message_dialect() -> None:
    assert first_message_dialect('{"event":"websocket:connected","content-type":"x"}') == "vonage"
    assert first_message_dialect('{"content-type":"audio/l16;rate=8000"}') == "vonage"
    assert first_message_dialect('{"event":"connected","protocol":"Call"}') == PENDING
    for opts in PEERS:
        start = CarrierPeer(opts).opening()[-1]
        assert first_message_dialect(start) == opts.carrier
    assert first_message_dialect('{"event":"start","start":{}}') == PENDING
    assert first_message_dialect("hello") == UNKNOWN
    assert first_message_dialect("[1]") == UNKNOWN
    assert first_message_dialect('{"event":"websocket:dtmf"}') == UNKNOWN


def test_media_before_start_and_strict_base64() -> None:
    session = CarrierSession(None, Sent(), "")
    assert session.feed('{"event":"connected"}') == []
    with pytest.raises(PeerError) as info:
        session.feed('{"event":"media","media":{"payload":"AAAA"}}')
    assert info.value.fault is Fault.MEDIA_BEFORE_START
    peer, session, _ = _started(PeerOptions("twilio"))
    for bad in ("AA=A", "AAA", "AA AA", "ÄÄÄÄ"):
        message = json.loads(peer.frame(bytes(160))[0])
        message["media"]["payload"] = bad
        with pytest.raises(PeerError) as info:
            session.feed(json.dumps(message))
        assert info.value.fault is Fault.INVALID_MEDIA


def test_formats_bridge_cannot_decode_are_refused() -> None:
    cases = [
        (
            "twilio",
            {
                "event": "start",
                "start": {
                    "streamSid": "s",
                    "callSid": "c",
                    "mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000},
                },
            },
        ),
        (
            "telnyx",
            {
                "event": "start",
                "stream_id": "s",
                "start": {
                    "call_control_id": "c",
                    "media_format": {"encoding": "G722", "sample_rate": 16000},
                },
            },
        ),
        (
            "telnyx",
            {
                "event": "start",
                "stream_id": "s",
                "start": {
                    "call_control_id": "c",
                    "media_format": {"encoding": "PCMU", "sample_rate": 16000},
                },
            },
        ),
        (
            "plivo",
            {
                "event": "start",
                "start": {
                    "streamId": "s",
                    "callId": "c",
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 16000},
                },
            },
        ),
        (
            "exotel",
            {
                "event": "start",
                "stream_sid": "s",
                "start": {
                    "call_sid": "c",
                    "media_format": {
                        "encoding": "audio/x-raw",
                        "sample_rate": "44100",
                        "bit_rate": "16",
                    },
                },
            },
        ),
    ]
    for carrier, start in cases:
        with pytest.raises(PeerError) as info:
            CarrierSession(carrier, Sent(), "").feed(json.dumps(start))
        assert info.value.fault is Fault.UNSUPPORTED_MEDIA_FORMAT, (carrier, start)
    with pytest.raises(PeerError) as info:
        CarrierSession("twilio", Sent(), "").feed('{"event":"start","start":{"streamSid":"s"}}')
    assert info.value.fault is Fault.INVALID_START


def test_events_each_carrier_sends() -> None:
    peer, session, _ = _started(PeerOptions("exotel"))
    assert session.feed(peer.dtmf("#")) == [Dtmf("#", 100)]
    assert session.feed(peer.stop() or "") == [Stopped("callended")]
    peer, session, _ = _started(PeerOptions("plivo"))
    assert session.feed(json.dumps({"event": "clearedAudio", "streamId": peer.stream_id})) == [
        Cleared()
    ]
    session.send_mark("greeting")
    for name in ("playedStream", "played"):
        session.send_mark("greeting")
        answer = json.dumps({"event": name, "streamId": peer.stream_id, "name": "greeting"})
        assert session.feed(answer) == [Notified("greeting")]
    peer, session, _ = _started(PeerOptions("telnyx"))
    (error,) = session.feed('{"event":"error","payload":{"code":100,"title":"x"}}')
    assert isinstance(error, CarrierError) and "100" in error.detail
    assert plivo.parse_extra_headers("a=1;b=2") == {"a": "1", "b": "2"}
    assert plivo.parse_extra_headers("a=1,b=2,c") == {"a": "1", "b": "2"}


def test_reorder_window() -> None:
    stats = CarrierStats()
    r = Reorder(5, stats)
    assert r.push(1, b"1") == [b"1"]
    assert r.push(3, b"3") == []
    assert r.push(2, b"2") == [b"2", b"3"]
    assert r.push(2, b"2") == []  # late duplicate
    out = [p for chunk in (5, 6, 7, 8, 9) for p in r.push(chunk, bytes([48 + chunk]))]
    assert out == []  # 4 is missing, 5 held
    assert r.push(10, b":") == [b"5", b"6", b"7", b"8", b"9", b":"]  # gap skipped
    assert r.push(4, b"4") == []  # too late now
    assert (stats.reordered, stats.gaps_skipped, stats.late_dropped) == (7, 1, 2)
    assert r.push(12, b"<") == [] and r.flush() == [b"<"]
    assert Reorder(0, stats).push(9, b"x") == [b"x"]


def test_marks_carry_any_payload_and_cleared_ones_are_dropped() -> None:
    peer, session, sent = _started(PeerOptions("twilio"))
    session.send_mark({"n": 1})
    session.send_mark("plain")
    names = [peer.read(text).name for text in sent]
    assert names == ['{"n":1}', "plain"]
    assert session.feed(peer.mark_done('{"n":1}')) == [Notified({"n": 1})]
    session.send_clear()
    clear, ack = (peer.read(text) for text in sent[2:])
    assert clear.kind == "clear" and ack.kind == "mark"
    assert session.feed(peer.mark_done("plain")) == []  # cleared before it played
    assert session.feed(peer.mark_done(ack.name)) == [Cleared()]
    assert session.stats.marks_cleared == 1
    assert session.feed(peer.mark_done("unknown")) == [Notified("unknown")]
    # Exotel: no acknowledgement of a clear, so no mark behind it.
    peer, session, sent = _started(PeerOptions("exotel"))
    session.send_clear()
    assert [peer.read(text).kind for text in sent] == ["clear"]


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_exotel_chunks_meet_every_rule(rate: int) -> None:
    peer, session, sent = _started(PeerOptions("exotel", rate))
    frames = _frames(rate, 23)
    for frame in frames:
        session.send_audio(frame)
    assert session.pending_frames == 23 % session.chunk_frames
    padded = session.flush()
    assert padded == session.chunk_frames - 23 % session.chunk_frames
    sizes = [len(peer.read(text).payload) for text in sent]
    assert all(exotel.chunk_ok(size) for size in sizes)
    assert all(size * 1000 // (rate * 2) >= 100 for size in sizes)  # at least 100 ms
    assert session.flush() == 0


def test_stamps_survive_the_codecs() -> None:
    rng = np.random.default_rng(7)
    for codec in (PCMU, PCMA, L16_LE, L16_BE):
        for seq in (0, 1, 0x7FFF, 0xFFFF, 12345):
            pcm = rng.integers(-3000, 3000, 160, dtype=np.int16).astype("<i2").tobytes()
            wire = stamp_wire(codec.encode(pcm), seq, codec)
            assert read_wire_stamp(wire, codec) == seq
            assert codec.encode(codec.decode(wire)) == wire, codec.name
    # mu-law 0x7E/0x7F would stamp into 0x7F, which does not survive: never written.
    wire = stamp_wire(bytes([0x7E, 0x7F] * 8), 0xFFFF, PCMU)
    assert 0x7F not in wire and PCMU.encode(PCMU.decode(wire)) == wire


def test_peer_options_are_checked() -> None:
    for bad in (
        {"carrier": "sinch"},
        {"carrier": "twilio", "rate": 16000},
        {"carrier": "plivo", "encoding": plivo.MULAW, "rate": 16000},
        {"carrier": "telnyx", "encoding": "OPUS"},
        {"carrier": "telnyx", "reorder_every": -1},
    ):
        with pytest.raises(ConfigError):
            PeerOptions(**bad)


# --- credentials ------------------------------------------------------------------------


def test_twilio_signature_matches_twilios_published_example() -> None:
    # The example of Twilio's "Validating requests" guide, as its SDK tests use it.
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilio_signature_variants() -> None:
    token = "tok"
    plain = "wss://bridge.example.com/socket/twilio"
    assert twilio_signature_valid(token, twilio_signature(token, plain), [plain])
    with_port = "wss://bridge.example.com:443/socket/twilio"
    assert twilio_signature_valid(token, twilio_signature(token, with_port), [plain])
    assert twilio_signature_valid(token, twilio_signature(token, plain), [with_port])
    other_port = "wss://bridge.example.com:8443/socket/twilio"
    assert not twilio_signature_valid(token, twilio_signature(token, plain), [other_port])
    query = plain + "?b=2&a=x%20y"
    assert twilio_signature_valid(token, twilio_signature(token, query), [query])
    as_params = twilio_signature(token, plain, [("a", "x y"), ("b", "2")])
    assert twilio_signature_valid(token, as_params, [query])
    assert not twilio_signature_valid("other", twilio_signature(token, plain), [plain])


def test_authenticator_with_carrier_credentials() -> None:
    auth = Authenticator(token="t" * 8, twilio_auth_token="tw", telnyx_stream_token="tx")
    url = ("ws://h/socket",)
    assert auth.check(Credentials(None, None, twilio_signature("tw", url[0]), url)) is None
    assert auth.check(Credentials(None, None, "bad", url)) == "bad twilio signature"
    assert auth.check(Credentials(None, None, telnyx_token="tx")) is None
    assert auth.check(Credentials(None, None, telnyx_token="no")) == "bad telnyx token"
    assert auth.check(Credentials(None, "t" * 8, "bad", url)) is None  # either method
    assert auth.check(Credentials(None, None)) == "missing credentials"
    only_twilio = Authenticator(twilio_auth_token="tw")
    assert only_twilio.check(Credentials("Bearer x", None)) == "missing credentials"


def test_a_carrier_credential_is_enough_to_listen_beyond_loopback() -> None:
    from bridge.auth import check_exposure  # noqa: PLC0415

    for extra in ({"twilio_auth_token": "x"}, {"telnyx_stream_token": "y"}):
        check_exposure(ServerConfig(host="0.0.0.0", **extra))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--twilio-auth-token"):
        check_exposure(ServerConfig(host="0.0.0.0"))


# --- TwiML --------------------------------------------------------------------------------


def test_twiml_is_valid_and_escaped() -> None:
    doc = connect_stream("wss://b.example/socket/twilio", {"a": 'x"<&>', "b": ""}, name="n")
    root = ET.fromstring(doc)
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://b.example/socket/twilio"
    assert stream.get("name") == "n"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [
        ("a", 'x"<&>'),
        ("b", ""),
    ]
    for bad in ("ws://b/s", "https://b/s", "wss://b/s?x=1", "wss:///s"):
        with pytest.raises(TwimlError):
            connect_stream(bad)
    answer = ET.fromstring(
        answer_twiml("wss://b.example:8443", "/socket", {"From": "+1", "Foo": "x"})
    )
    stream = answer.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://b.example:8443/socket/twilio"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [
        ("from", "+1")
    ]


def test_telnyx_recognizes_only_its_own_start() -> None:
    assert Telnyx.recognizes({"stream_id": "s", "start": {"call_control_id": "c"}})
    assert not Telnyx.recognizes({"start": {"call_control_id": "c"}})


# --- the call's wire (Call + CarrierSession, fake clock) -----------------------------------


async def test_a_mark_sends_exotels_partial_chunk_first_padded_and_the_schedule_counts_it() -> None:
    from bridge.call import Call  # noqa: PLC0415
    from bridge.pacing import FakeClock, Scheduler  # noqa: PLC0415

    peer, session, sent = _started(PeerOptions("exotel", 8000))
    clock = FakeClock(10**12)
    scheduler = Scheduler(clock, 100)
    call = Call(Connected(8000), session, scheduler, wire=session)  # type: ignore[arg-type]
    for frame in _frames(8000, 13):  # a chunk of 10, then 3 waiting
        call.play_now(frame)
    clock.advance_ms(1000)
    scheduler.service()
    assert [len(peer.read(t).payload) for t in sent] == [3200]
    assert session.pending_frames == 3
    call.notify("half")
    call.end()
    kinds = [peer.read(t) for t in sent]
    assert [c.kind for c in kinds] == ["media", "media", "mark"]
    padded = kinds[1].payload
    assert len(padded) == 3200 and padded[960:] == bytes(3200 - 960)  # 3 frames, then silence
    # The padding was played by Exotel: the next frame's slot is after it.
    assert call.stats.frames_out == 20


async def test_end_of_a_prompt_flushes_exotels_last_chunk() -> None:
    from bridge.call import Call  # noqa: PLC0415
    from bridge.pacing import FakeClock, Scheduler  # noqa: PLC0415

    peer, session, sent = _started(PeerOptions("exotel", 16000))
    clock = FakeClock(10**12)
    call = Call(Connected(16000), session, Scheduler(clock, 1000), wire=session)  # type: ignore[arg-type]
    await call.play(np.concatenate([tone(300, 16000, 320 * 7)]))  # 7 frames: chunk of 5 + 2
    await call.flush()
    assert [len(peer.read(t).payload) for t in sent] == [3200, 3200]
    assert call.stats.notifies_sent == 0  # the flush marker is no notify
    call.end()
