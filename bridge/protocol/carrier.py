"""What the four JSON media-stream dialects share (docs/carriers.md s.1).

Twilio, Telnyx, Plivo and Exotel all open a websocket to bridge and send JSON text only: a
``start`` message naming the stream, the call and the audio format, then ``media`` messages
with base64 audio, DTMF, the answers to marks, and a ``stop``. Each dialect module turns one
parsed message into zero or more of the items below, and builds the messages bridge sends
back; everything is pure (dict in, items out; bytes in, text out).

The carrier's side is here too (``build_*`` in each module), for the simulator.

Import rule: standard library, ``bridge.errors``, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args

from bridge.errors import Fault, PeerError
from bridge.protocol.vonage import DTMF_DIGITS, Cleared, Dtmf

#: The carriers speaking a JSON media-stream dialect (Vonage is the binary one).
CarrierName = Literal["twilio", "telnyx", "plivo", "exotel"]
CARRIER_NAMES: tuple[str, ...] = get_args(CarrierName)

#: Stands for the base64 payload in a media message's template (JSON needs no escaping for it).
_PAYLOAD = "@PAYLOAD@"

#: Wire encodings, named as ``bridge.audio.codec`` names its codecs.
ENCODINGS = ("PCMU", "PCMA", "L16LE", "L16BE")


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The ``start`` message: the stream's identity, its audio format, the call's metadata.

    ``metadata`` holds the carrier's custom parameters flattened in, then bridge's uniform
    keys (``carrier``, ``call_id``, ``stream_id``, ``account_id``, ``from``, ``to`` where
    given), which win over a custom parameter of the same name.
    """

    encoding: str
    sample_rate: int
    stream_id: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Media:
    """Caller audio: the base64-decoded payload, still in the stream's wire encoding.

    ``chunk`` is the carrier's counter of media messages when it sends one (for reordering).
    """

    payload: bytes
    chunk: int | None = None


@dataclass(frozen=True, slots=True)
class MarkDone:
    """A mark (checkpoint) bridge sent has come back: played, or dropped by a clear."""

    name: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """The carrier ended the stream (``stop``); it closes the socket next."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class CarrierError:
    """The carrier reported an error on the stream (Telnyx ``error``); the call goes on."""

    detail: str


Item = StreamStart | Media | Dtmf | MarkDone | Cleared | Stopped | CarrierError


@dataclass(frozen=True, slots=True)
class Command:
    """What bridge sent to the carrier, as the carrier (the simulator) reads it."""

    kind: Literal["media", "mark", "clear"]
    payload: bytes = b""
    name: str = ""


def loads_object(text: str, fault: Fault) -> dict[str, Any]:
    """One JSON object, or ``PeerError(fault)``."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PeerError(fault, f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise PeerError(fault, "not a JSON object")
    return obj


def dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def b64decode(value: object) -> bytes:
    """A media payload: strict base64 (no stray characters), else ``INVALID_MEDIA``."""
    if not isinstance(value, str):
        raise PeerError(Fault.INVALID_MEDIA, "payload is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PeerError(Fault.INVALID_MEDIA, f"bad base64: {exc}") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def obj_field(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``obj[key]`` when it is an object, else an empty one."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def text_field(obj: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` holding a non-empty string (or a number, as text)."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def int_field(value: object) -> int | None:
    """An integer sent as a number or as decimal text (carriers do both), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def require(value: str | None, what: str) -> str:
    if value is None:
        raise PeerError(Fault.INVALID_START, f"no {what}")
    return value


def dtmf(obj: Mapping[str, Any]) -> Dtmf:
    """``{"dtmf": {"digit": "5", "duration": ...}}`` (or the digit at the top level)."""
    source = obj_field(obj, "dtmf") or obj
    digit = source.get("digit")
    if not isinstance(digit, str) or digit not in DTMF_DIGITS:
        raise PeerError(Fault.INVALID_EVENT, f"bad DTMF digit {digit!r}")
    return Dtmf(digit, int_field(source.get("duration")))


def metadata(custom: Mapping[str, Any], carrier: str, **ids: str | None) -> Mapping[str, Any]:
    """Custom parameters, then bridge's uniform keys (those given) over them."""
    out: dict[str, Any] = dict(custom)
    out["carrier"] = carrier
    out.update({key.rstrip("_"): value for key, value in ids.items() if value is not None})
    return MappingProxyType(out)


class Dialect:
    """One carrier's messages, both ways. Subclasses set the class constants and the parts
    that differ; an instance belongs to one stream (it keeps the stream id once started)."""

    name: ClassVar[CarrierName]
    #: Whether a ``connected`` message comes before ``start`` (all but Plivo).
    sends_connected: ClassVar[bool] = True
    #: Media may arrive out of order: hold up to this many messages to put them back in
    #: ``chunk`` order (0: take them as they come).
    reorder_window: ClassVar[int] = 0
    #: The outbound chunk, in 20 ms frames (1: a media message per frame).
    chunk_frames_by_rate: ClassVar[Mapping[int, int]] = MappingProxyType({})
    #: The key under which bridge's messages name the stream (``None``: they do not).
    stream_key: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.start: StreamStart | None = None
        self._media_template: tuple[str, str] | None = None

    @classmethod
    def recognizes(cls, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` (a ``start`` message) is this dialect's."""
        raise NotImplementedError

    def chunk_frames(self, sample_rate: int) -> int:
        return self.chunk_frames_by_rate.get(sample_rate, 1)

    @property
    def stream_id(self) -> str:
        return self.start.stream_id if self.start is not None else ""

    def parse(self, obj: dict[str, Any]) -> list[Item]:
        """One message from the carrier, as items (none for what bridge ignores)."""
        event = obj.get("event")
        if event == "start":
            if self.start is not None:
                return []  # one stream per socket: a repeated start changes nothing
            self.start = self.parse_start(obj)
            return [self.start]
        if event == "connected":
            return []
        if self.start is None:
            if event == "media":
                raise PeerError(Fault.MEDIA_BEFORE_START)
            return []
        if event == "media":
            media = obj_field(obj, "media")
            if media.get("track") == "outbound":
                return []  # our own audio, streamed back when both tracks were asked for
            return [Media(b64decode(media.get("payload")), int_field(media.get("chunk")))]
        if event == "dtmf":
            return [dtmf(obj)]
        if event == "stop":
            return [Stopped(text_field(obj_field(obj, "stop"), "reason") or "")]
        return self.parse_other(str(event), obj)

    def parse_start(self, obj: dict[str, Any]) -> StreamStart:
        raise NotImplementedError

    def parse_other(self, event: str, obj: dict[str, Any]) -> list[Item]:
        """Events beyond media, DTMF and stop; by default the Twilio-style ``mark``."""
        if event == "mark":
            name = text_field(obj_field(obj, "mark"), "name")
            return [MarkDone(name)] if name is not None else []
        return []

    # --- bridge -> carrier --------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        """Bridge's audio (wire-encoded) as this carrier's media message.

        Per frame, so the JSON around the payload is built once per stream and only the
        base64 text goes in between (``json.dumps`` per frame cost more than the rest).
        """
        template = self._media_template
        if template is None:
            prefix, _, suffix = self.media_message(_PAYLOAD).partition(_PAYLOAD)
            template = self._media_template = (prefix, suffix)
        return template[0] + b64encode(payload) + template[1]

    def media_message(self, payload_b64: str) -> str:
        """The media message holding ``payload_b64`` (the Twilio shape by default)."""
        return self._message("media", media={"payload": payload_b64})

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def clear(self) -> str:
        return self._message("clear")

    def _message(self, event: str, **body: Any) -> str:
        """``event``, the stream id under ``stream_key`` (when the dialect has one), then
        ``body``: the order every Twilio-shaped carrier's own examples use."""
        obj: dict[str, Any] = {"event": event}
        if self.stream_key is not None:
            obj[self.stream_key] = self.stream_id
        obj.update(body)
        return dumps(obj)


@dataclass(frozen=True, slots=True)
class PeerWire:
    """How one carrier spells the envelope of its own messages, for the simulator's side:
    the sequence number's key and whether it is text, and the stream id's key."""

    sequence_key: str
    stream_key: str
    sequence_as_text: bool = True

    def message(self, event: str, seq: int, stream: str, **body: Any) -> str:
        """``event``, sequence number, stream id, then ``body``."""
        return dumps(
            {
                "event": event,
                self.sequence_key: str(seq) if self.sequence_as_text else seq,
                self.stream_key: stream,
                **body,
            }
        )

    def media(self, seq: int, stream: str, payload: bytes, **media: Any) -> str:
        """A ``media`` message: ``media``'s fields, then the base64 payload."""
        return self.message("media", seq, stream, media={**media, "payload": b64encode(payload)})

    def dtmf(self, seq: int, stream: str, digit: str, **extra: Any) -> str:
        return self.message("dtmf", seq, stream, dtmf={**extra, "digit": digit})

    def mark(self, seq: int, stream: str, name: str) -> str:
        return self.message("mark", seq, stream, mark={"name": name})


def command(obj: Mapping[str, Any], stream_key: str | None, stream_id: str) -> Command:
    """Bridge's ``media`` / ``mark`` / ``clear`` in the Twilio shape, read strictly: the
    stream id (under ``stream_key``, when the dialect sends one) must be this stream's."""
    if stream_key is not None and obj.get(stream_key) != stream_id:
        raise ValueError(f"{stream_key} {obj.get(stream_key)!r} is not this stream's")
    event = obj.get("event")
    if event == "media":
        try:
            payload = b64decode(obj_field(obj, "media").get("payload"))
        except PeerError as exc:
            raise ValueError(str(exc)) from exc
        return Command("media", payload)
    if event == "mark":
        name = obj_field(obj, "mark").get("name")
        if not isinstance(name, str):
            raise ValueError("mark without a name")
        return Command("mark", name=name)
    if event == "clear":
        return Command("clear")
    raise ValueError(f"not a command: {event!r}")
