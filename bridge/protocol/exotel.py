"""Exotel AgentStream (the Voicebot applet, bidirectional), both directions.

Facts (docs/carriers.md s.5; Exotel: "WebSocket protocol",
https://developer.exotel.com/docs/agentstream/websocket-protocol, and "Working with the Stream
and Voicebot Applet", https://developer.exotel.com/docs/agentstream/stream-voicebot-applet):
Twilio-like JSON in snake_case. ``connected``, then ``start`` with a top-level
``stream_sid`` and ``start.stream_sid``, ``call_sid``, ``account_sid``, ``from``, ``to``,
``custom_parameters`` and ``media_format`` (``encoding: "audio/x-raw"``: base64 16-bit
little-endian PCM, not mu-law; ``sample_rate`` 8000, 16000 or 24000, sent as text, chosen
with ``?sample-rate=`` on the URL; ``bit_rate: "16"``); ``media`` about every 100 ms;
``dtmf`` (``digit``, ``duration``); ``mark``; ``stop``. Bridge sends ``media``, ``mark``
and ``clear`` with the ``stream_sid``.

Outbound chunks: "a multiple of 320 bytes", "minimum 3.2 KB (100 ms of data)", at most 100 KB.
3.2 KB is 100 ms only at 16 kHz (it is 200 ms at 8 kHz, 67 ms at 24 kHz), so bridge meets
every clause: a chunk is the smallest whole number of 20 ms frames that is a multiple of 320
bytes, at least 3200 bytes and at least 100 ms (8 kHz: 10 frames; 16 and 24 kHz: 5).

Exotel's beta extension guide also names mu-law at 8 kHz as a media format; bridge accepts
``audio/x-mulaw`` at 8000 Hz and answers in it.

Import rule: standard library, ``bridge.errors``, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from bridge.errors import Fault, PeerError
from bridge.protocol.carrier import (
    Command,
    Dialect,
    PeerWire,
    StreamStart,
    command,
    dumps,
    int_field,
    metadata,
    obj_field,
    require,
    text_field,
)
from bridge.units import FRAME_MS, SUPPORTED_RATES, frame_bytes

RAW = "audio/x-raw"
MULAW = "audio/x-mulaw"
#: Outbound chunk rules (docs/carriers.md s.5).
CHUNK_MULTIPLE_BYTES = 320
CHUNK_MIN_BYTES = 3200
CHUNK_MAX_BYTES = 100_000
CHUNK_MIN_MS = 100


def chunk_frames(sample_rate: int, sample_bytes: int = 2) -> int:
    """The 20 ms frames in one outbound chunk at ``sample_rate``."""
    per_frame = frame_bytes(sample_rate) * sample_bytes // 2
    frames = max(1, -(-CHUNK_MIN_MS // FRAME_MS))
    while frames * per_frame < CHUNK_MIN_BYTES or (frames * per_frame) % CHUNK_MULTIPLE_BYTES:
        frames += 1
    return frames


def chunk_ok(size: int) -> bool:
    """Whether Exotel takes a payload of ``size`` bytes (the simulator's check)."""
    return CHUNK_MIN_BYTES <= size <= CHUNK_MAX_BYTES and size % CHUNK_MULTIPLE_BYTES == 0


class Exotel(Dialect):
    name = "exotel"
    stream_key = "stream_sid"
    chunk_frames_by_rate = MappingProxyType({rate: chunk_frames(rate) for rate in SUPPORTED_RATES})

    @classmethod
    def recognizes(cls, obj: Mapping[str, Any]) -> bool:
        start = obj_field(obj, "start")
        return "call_sid" in start and ("stream_sid" in start or "stream_sid" in obj)

    def chunk_frames(self, sample_rate: int) -> int:
        if self.start is not None and self.start.encoding == "PCMU":
            return chunk_frames(sample_rate, sample_bytes=1)
        return super().chunk_frames(sample_rate)

    def parse_start(self, obj: dict[str, Any]) -> StreamStart:
        start = obj_field(obj, "start")
        stream = require(
            text_field(obj, "stream_sid") or text_field(start, "stream_sid"), "stream_sid"
        )
        fmt = obj_field(start, "media_format")
        name = fmt.get("encoding", RAW)
        rate = int_field(fmt.get("sample_rate", 8000))
        bits = int_field(fmt.get("bit_rate", "16"))
        if name == RAW and rate in SUPPORTED_RATES and bits == 16:
            encoding = "L16LE"
        elif name == MULAW and rate == 8000:
            encoding = "PCMU"
        else:
            raise PeerError(Fault.UNSUPPORTED_MEDIA_FORMAT, f"{name} at {rate} Hz, {bits} bits")
        assert rate is not None
        return StreamStart(
            encoding,
            rate,
            stream,
            metadata(
                obj_field(start, "custom_parameters"),
                self.name,
                call_id=require(text_field(start, "call_sid"), "call_sid"),
                stream_id=stream,
                account_id=text_field(start, "account_sid"),
                from_=text_field(start, "from"),
                to=text_field(start, "to"),
            ),
        )


# --- Exotel's side, for the simulator ---------------------------------------------------

WIRE = PeerWire("sequence_number", "stream_sid")
ACCOUNT_SID = "ACxxxxxxxxxxxxxxxxxxxxxxxx"


def build_connected() -> str:
    return dumps({"event": "connected"})


def build_start(
    seq: int,
    *,
    stream_sid: str,
    call_sid: str,
    sample_rate: int,
    custom: Mapping[str, str],
    from_: str = "+919876543210",
    to: str = "+918047491899",
) -> str:
    return dumps(
        {
            "event": "start",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "start": {
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "account_sid": ACCOUNT_SID,
                "from": from_,
                "to": to,
                "custom_parameters": dict(custom),
                "media_format": {
                    "encoding": RAW,
                    "sample_rate": str(sample_rate),
                    "bit_rate": "16",
                },
            },
        }
    )


def build_media(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    return WIRE.media(seq, stream_sid, payload, chunk=str(chunk), timestamp=str(timestamp_ms))


def build_dtmf(seq: int, stream_sid: str, digit: str, duration_ms: int = 100) -> str:
    return WIRE.dtmf(seq, stream_sid, digit, duration=str(duration_ms))


def build_mark(seq: int, stream_sid: str, name: str) -> str:
    return WIRE.mark(seq, stream_sid, name)


def build_stop(seq: int, stream_sid: str, call_sid: str) -> str:
    stop = {"call_sid": call_sid, "account_sid": ACCOUNT_SID, "reason": "callended"}
    return WIRE.message("stop", seq, stream_sid, stop=stop)


def parse_command(obj: Mapping[str, Any], stream_sid: str) -> Command:
    """Bridge's message as Exotel reads it; ``ValueError`` for anything it would refuse."""
    return command(obj, "stream_sid", stream_sid)
