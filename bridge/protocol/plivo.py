"""Plivo audio streaming (``<Stream bidirectional="true">``), both directions.

Facts (docs/carriers.md s.4; Plivo: "Audio Streaming Protocol Reference",
https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference,
and the ``<Stream>`` XML element, https://docs.plivo.com/docs/voice/xml/audiostream): no
``connected``; the first message is ``start`` with ``start.callId``, ``streamId``,
``accountId``, ``tracks``, ``mediaFormat`` (``encoding`` ``audio/x-mulaw`` at 8000 Hz or
``audio/x-l16`` at 8000 or 16000 Hz) and, beside ``start``, ``extra_headers``: the
``extraHeaders`` of the XML as one string of ``key=value`` pairs. Then ``media`` (base64,
``media.chunk`` a number) and ``dtmf``. Bridge sends ``playAudio`` (``media.contentType``,
``media.sampleRate``, ``media.payload``), ``checkpoint`` (``streamId``, ``name``; answered
by ``playedStream`` once the audio before it has played) and ``clearAudio`` (answered by
``clearedAudio``).

Where Plivo's pages disagree, bridge accepts both: ``extra_headers`` pairs separated by
``;`` (the protocol reference) or ``,`` (the XML reference); the checkpoint's answer named
``playedStream`` (reference) or ``played`` (support article). L16's byte order is not stated;
bridge takes little-endian, like Vonage's L16 (docs/carriers.md s.7).

Import rule: standard library, ``bridge.errors``, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import Fault, PeerError
from bridge.protocol.carrier import (
    Command,
    Dialect,
    Item,
    MarkDone,
    PeerWire,
    StreamStart,
    b64decode,
    dumps,
    int_field,
    metadata,
    obj_field,
    require,
    text_field,
)
from bridge.protocol.vonage import Cleared

MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"
#: Plivo's content types and the rates each may have -> bridge's codec.
FORMATS = {(MULAW, 8000): "PCMU", (L16, 8000): "L16LE", (L16, 16000): "L16LE"}
_CONTENT_TYPES = {"PCMU": MULAW, "L16LE": L16}


def parse_extra_headers(value: object) -> dict[str, str]:
    """``"a=1;b=2"`` or ``"a=1,b=2"`` -> ``{"a": "1", "b": "2"}`` (pairs without ``=``
    are dropped)."""
    if not isinstance(value, str):
        return {}
    pairs = value.replace(",", ";").split(";")
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


class Plivo(Dialect):
    name = "plivo"
    sends_connected = False
    stream_key = "streamId"

    @classmethod
    def recognizes(cls, obj: Mapping[str, Any]) -> bool:
        start = obj_field(obj, "start")
        return "streamId" in start and "callId" in start

    def parse_start(self, obj: dict[str, Any]) -> StreamStart:
        start = obj_field(obj, "start")
        stream = require(text_field(start, "streamId") or text_field(obj, "streamId"), "streamId")
        fmt = obj_field(start, "mediaFormat")
        content_type = fmt.get("encoding")
        rate = int_field(fmt.get("sampleRate"))
        encoding = (
            FORMATS.get((content_type, rate))
            if isinstance(content_type, str) and rate is not None
            else None
        )
        if encoding is None or rate is None:
            raise PeerError(Fault.UNSUPPORTED_MEDIA_FORMAT, f"{content_type} at {rate} Hz")
        return StreamStart(
            encoding,
            rate,
            stream,
            metadata(
                parse_extra_headers(obj.get("extra_headers")),
                self.name,
                call_id=require(text_field(start, "callId"), "callId"),
                stream_id=stream,
                account_id=text_field(start, "accountId"),
            ),
        )

    def parse_other(self, event: str, obj: dict[str, Any]) -> list[Item]:
        if event in ("playedStream", "played"):
            name = text_field(obj, "name")
            return [MarkDone(name)] if name is not None else []
        if event == "clearedAudio":
            return [Cleared()]
        return []

    def media_message(self, payload_b64: str) -> str:
        assert self.start is not None
        return self._message(
            "playAudio",
            media={
                "contentType": _CONTENT_TYPES[self.start.encoding],
                "sampleRate": self.start.sample_rate,
                "payload": payload_b64,
            },
        )

    def mark(self, name: str) -> str:
        return self._message("checkpoint", name=name)

    def clear(self) -> str:
        return self._message("clearAudio")


# --- Plivo's side, for the simulator ----------------------------------------------------

#: Plivo numbers its messages with JSON numbers, not text.
WIRE = PeerWire("sequenceNumber", "streamId", sequence_as_text=False)


def build_start(
    seq: int,
    *,
    stream_id: str,
    call_id: str,
    content_type: str,
    rate: int,
    extra: Mapping[str, str],
) -> str:
    return dumps(
        {
            "event": "start",
            "sequenceNumber": seq,
            "start": {
                "callId": call_id,
                "streamId": stream_id,
                "accountId": "MAXXXXXXXXXXXXXXXXXX",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": content_type, "sampleRate": rate},
            },
            "extra_headers": ";".join(f"{k}={v}" for k, v in extra.items()),
        }
    )


def build_media(seq: int, stream_id: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    return WIRE.media(
        seq, stream_id, payload, track="inbound", timestamp=str(timestamp_ms), chunk=chunk
    )


def build_dtmf(seq: int, stream_id: str, digit: str) -> str:
    return WIRE.dtmf(seq, stream_id, digit)


def build_played(seq: int, stream_id: str, name: str) -> str:
    return WIRE.message("playedStream", seq, stream_id, name=name)


def build_cleared(seq: int, stream_id: str) -> str:
    return WIRE.message("clearedAudio", seq, stream_id)


def parse_command(obj: Mapping[str, Any], stream_id: str, content_type: str, rate: int) -> Command:
    """Bridge's message as Plivo reads it; ``ValueError`` for anything Plivo would refuse
    (a ``playAudio`` whose content type or rate is not the stream's)."""
    event = obj.get("event")
    if event == "playAudio":
        media = obj_field(obj, "media")
        if media.get("contentType") != content_type or media.get("sampleRate") != rate:
            raise ValueError(
                f"playAudio as {media.get('contentType')} at {media.get('sampleRate')}"
            )
        try:
            return Command("media", b64decode(media.get("payload")))
        except PeerError as exc:
            raise ValueError(str(exc)) from exc
    if obj.get("streamId") != stream_id:
        raise ValueError(f"streamId {obj.get('streamId')!r} is not this stream's")
    if event == "checkpoint":
        name = obj.get("name")
        if not isinstance(name, str):
            raise ValueError("checkpoint without a name")
        return Command("mark", name=name)
    if event == "clearAudio":
        return Command("clear")
    raise ValueError(f"not a Plivo command: {event!r}")
