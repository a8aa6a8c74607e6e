"""Telnyx media streaming over websockets, both directions.

Facts (docs/carriers.md s.3; Telnyx: "Stream call media over WebSocket",
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket, and
"Streaming start", https://developers.telnyx.com/api-reference/call-commands/streaming-start):
Twilio-like JSON in snake_case. ``connected`` (carrying ``x-telnyx-streaming-auth-token`` when
a stream auth token is configured, which also comes as that upgrade header), then ``start``
with a top-level ``stream_id`` and ``start.call_control_id``, ``call_session_id``, ``from``,
``to``, ``client_state``, ``custom_parameters`` and ``media_format`` (``encoding`` PCMU,
PCMA, G722, OPUS, AMR-WB or L16; ``sample_rate``; ``channels``); ``media`` payloads are base64
RTP payloads without the RTP header, and **their order is not guaranteed**: bridge puts them
back in ``media.chunk`` order within a window of 5 messages (100 ms). Also ``dtmf``, ``mark``
(returned when the audio before it played, or at once when nothing is queued, and by a
``clear``), ``error`` and ``stop``. Bridge sends ``media`` (RTP mode:
``stream_bidirectional_mode=rtp`` on the Telnyx side, audio sent back is otherwise dropped),
``mark`` and ``clear``.

bridge decodes PCMU, PCMA and L16 (network byte order, RFC 3551; the byte order is not stated
on Telnyx's page) and refuses the others with 1003.

Import rule: standard library, ``bridge.errors``, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import Fault, PeerError
from bridge.protocol.carrier import (
    CarrierError,
    Command,
    Dialect,
    Item,
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
from bridge.units import SUPPORTED_RATES

#: Telnyx's encoding names -> bridge's codecs (G.711 is 8 kHz by definition).
ENCODINGS = {"PCMU": "PCMU", "PCMA": "PCMA", "L16": "L16BE"}
G711_RATE = 8000
#: Media messages held back to restore their order (5 x 20 ms).
REORDER_WINDOW = 5


class Telnyx(Dialect):
    name = "telnyx"
    reorder_window = REORDER_WINDOW

    @classmethod
    def recognizes(cls, obj: Mapping[str, Any]) -> bool:
        return "stream_id" in obj and "call_control_id" in obj_field(obj, "start")

    def parse_start(self, obj: dict[str, Any]) -> StreamStart:
        start = obj_field(obj, "start")
        stream = require(
            text_field(obj, "stream_id") or text_field(start, "stream_id"), "stream_id"
        )
        fmt = obj_field(start, "media_format")
        name = fmt.get("encoding")
        rate = int_field(fmt.get("sample_rate"))
        encoding = ENCODINGS.get(name) if isinstance(name, str) else None
        if (
            encoding is None
            or rate not in SUPPORTED_RATES
            or (encoding != "L16BE" and rate != G711_RATE)
        ):
            raise PeerError(Fault.UNSUPPORTED_MEDIA_FORMAT, f"{name} at {rate} Hz")
        assert rate is not None
        return StreamStart(
            encoding,
            rate,
            stream,
            metadata(
                obj_field(start, "custom_parameters"),
                self.name,
                call_id=require(text_field(start, "call_control_id"), "call_control_id"),
                stream_id=stream,
                call_session_id=text_field(start, "call_session_id"),
                account_id=text_field(start, "user_id"),
                client_state=text_field(start, "client_state"),
                from_=text_field(start, "from"),
                to=text_field(start, "to"),
            ),
        )

    def parse_other(self, event: str, obj: dict[str, Any]) -> list[Item]:
        if event == "error":
            detail = {k: v for k, v in obj.items() if k != "event"}
            return [CarrierError(dumps(detail)[:200])]
        return super().parse_other(event, obj)


# --- Telnyx's side, for the simulator ---------------------------------------------------

WIRE = PeerWire("sequence_number", "stream_id")


def build_connected(token: str | None = None) -> str:
    obj: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
    if token is not None:
        obj["connected"] = {"x-telnyx-streaming-auth-token": token}
    return dumps(obj)


def build_start(
    seq: int,
    *,
    stream_id: str,
    call_control_id: str,
    encoding: str,
    sample_rate: int,
    custom: Mapping[str, str],
    from_: str = "+13122010094",
    to: str = "+13122123456",
) -> str:
    return dumps(
        {
            "event": "start",
            "sequence_number": str(seq),
            "stream_id": stream_id,
            "start": {
                "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
                "call_control_id": call_control_id,
                "call_session_id": f"session-{call_control_id}",
                "from": from_,
                "to": to,
                "client_state": "YnJpZGdl",
                "custom_parameters": dict(custom),
                "media_format": {"encoding": encoding, "sample_rate": sample_rate, "channels": 1},
            },
        }
    )


def build_media(seq: int, stream_id: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    return WIRE.media(
        seq, stream_id, payload, track="inbound", chunk=str(chunk), timestamp=str(timestamp_ms)
    )


def build_dtmf(seq: int, stream_id: str, digit: str) -> str:
    return WIRE.dtmf(seq, stream_id, digit)


def build_mark(seq: int, stream_id: str, name: str) -> str:
    return WIRE.mark(seq, stream_id, name)


def build_stop(seq: int, stream_id: str) -> str:
    return WIRE.message("stop", seq, stream_id)


def parse_command(obj: Mapping[str, Any], stream_id: str) -> Command:
    """Bridge's message as Telnyx reads it (no stream id in bridge's messages)."""
    return command(obj, None, stream_id)
