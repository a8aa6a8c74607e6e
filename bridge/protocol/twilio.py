"""Twilio Media Streams, bidirectional (``<Connect><Stream>``), both directions.

Facts (docs/carriers.md s.2; Twilio: "Media Streams - WebSocket Messages",
https://www.twilio.com/docs/voice/media-streams/websocket-messages, and "TwiML <Stream>",
https://www.twilio.com/docs/voice/twiml/stream): every message is JSON text. Twilio sends
``connected`` (``protocol: "Call"``), then ``start`` with ``streamSid``, ``accountSid``,
``callSid``, ``tracks``, ``customParameters`` and ``mediaFormat`` (always ``audio/x-mulaw``,
8000 Hz, one channel), then ``media`` (base64 mu-law), ``dtmf``, ``mark`` (a mark bridge sent
has played, or was cleared) and ``stop``. Bridge sends ``media``, ``mark`` and ``clear``,
each with the ``streamSid``. The ``<Stream>`` URL takes no query string: per-call values
come as ``<Parameter>`` in ``start.customParameters``.

Import rule: standard library, ``bridge.errors``, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
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

ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]] = ()) -> str:
    """``X-Twilio-Signature`` (docs/carriers.md s.6): base64 of HMAC-SHA1 keyed with the
    account's auth token, over the URL followed by each parameter's name and value, sorted."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class Twilio(Dialect):
    name = "twilio"
    stream_key = "streamSid"

    @classmethod
    def recognizes(cls, obj: Mapping[str, Any]) -> bool:
        start = obj_field(obj, "start")
        return "streamSid" in start and "callSid" in start

    def parse_start(self, obj: dict[str, Any]) -> StreamStart:
        start = obj_field(obj, "start")
        stream = require(
            text_field(start, "streamSid") or text_field(obj, "streamSid"), "streamSid"
        )
        fmt = obj_field(start, "mediaFormat")
        encoding = fmt.get("encoding", ENCODING)
        rate = int_field(fmt.get("sampleRate", SAMPLE_RATE))
        if encoding != ENCODING or rate != SAMPLE_RATE:
            raise PeerError(Fault.UNSUPPORTED_MEDIA_FORMAT, f"{encoding} at {rate} Hz")
        custom = obj_field(start, "customParameters")
        return StreamStart(
            "PCMU",
            SAMPLE_RATE,
            stream,
            metadata(
                custom,
                self.name,
                call_id=require(text_field(start, "callSid"), "callSid"),
                stream_id=stream,
                account_id=text_field(start, "accountSid"),
            ),
        )


# --- Twilio's side, for the simulator ---------------------------------------------------

WIRE = PeerWire("sequenceNumber", "streamSid")


def build_connected() -> str:
    return dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def build_start(
    seq: int, *, stream_sid: str, call_sid: str, custom: Mapping[str, str], account_sid: str
) -> str:
    return dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": ENCODING, "sampleRate": SAMPLE_RATE, "channels": 1},
                "customParameters": dict(custom),
            },
            "streamSid": stream_sid,
        }
    )


def build_media(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    return WIRE.media(
        seq, stream_sid, payload, track="inbound", chunk=str(chunk), timestamp=str(timestamp_ms)
    )


def build_dtmf(seq: int, stream_sid: str, digit: str) -> str:
    return WIRE.dtmf(seq, stream_sid, digit, track="inbound_track")


def build_mark(seq: int, stream_sid: str, name: str) -> str:
    return WIRE.mark(seq, stream_sid, name)


def build_stop(seq: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    return WIRE.message(
        "stop", seq, stream_sid, stop={"accountSid": account_sid, "callSid": call_sid}
    )


def parse_command(obj: Mapping[str, Any], stream_sid: str) -> Command:
    """Bridge's message as Twilio reads it; ``ValueError`` for anything Twilio would refuse."""
    return command(obj, "streamSid", stream_sid)
