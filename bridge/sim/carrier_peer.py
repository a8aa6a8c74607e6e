"""The carrier's side of a Twilio, Telnyx, Plivo or Exotel call, for the simulator and tests.

Sans-I/O: the simulator (``bridge call --carrier ...``) asks it for the messages the carrier
would send and hands it what bridge sent back; it never touches a socket. What it plays
(docs/carriers.md s.2-5):

* the opening: ``connected`` (not Plivo) and ``start`` with the stream's ids, media format and
  custom parameters;
* caller audio in the carrier's encoding and message size: one 20 ms frame per ``media``
  message, except Exotel's 100 ms chunks; Telnyx's out-of-order delivery when asked
  (``reorder_every``: every N-th message is sent after the one behind it);
* DTMF, ``stop``; and the answers: marks (checkpoints) when the audio before them has played
  (the simulator's playback model decides when), the marks still queued when bridge clears
  (Twilio, Telnyx), Plivo's ``clearedAudio``.

It also checks what bridge sends as strictly as the carrier would: the stream id, the media
format, Exotel's chunk sizes (:meth:`CarrierPeer.media_ok`).

Frames are stamped with their number in the least significant bit of each of the first 16
*wire* samples (G.711 codes or L16 samples), so an echo is matched exactly whatever the codec:
G.711 decode-then-encode returns every code an encoder makes (the mu-law code 0x7F, which
comes back as 0xFF, is never stamped: its neighbour 0xFE/0xFF is used instead).

Import rule: standard library, ``bridge.audio``, ``bridge.errors``, ``bridge.protocol`` and
``bridge.units``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.audio.codec import L16_BE, L16_LE, PCMA, PCMU, Codec
from bridge.errors import ConfigError
from bridge.protocol import exotel, plivo, telnyx, twilio
from bridge.protocol.carrier import CARRIER_NAMES, Command
from bridge.units import FRAME_MS, SUPPORTED_RATES, frame_samples

#: Stamped samples per frame (one bit each: a 16-bit frame number).
STAMP_SAMPLES = 16
#: Exotel sends caller audio about every 100 ms.
EXOTEL_INBOUND_FRAMES = 5
#: Each carrier's encodings for the simulator: name -> (codec, rates).
ENCODINGS: dict[str, dict[str, tuple[Codec, tuple[int, ...]]]] = {
    "twilio": {"PCMU": (PCMU, (8000,))},
    "telnyx": {
        "PCMU": (PCMU, (8000,)),
        "PCMA": (PCMA, (8000,)),
        "L16": (L16_BE, SUPPORTED_RATES),
    },
    "plivo": {plivo.MULAW: (PCMU, (8000,)), plivo.L16: (L16_LE, (8000, 16000))},
    "exotel": {exotel.RAW: (L16_LE, SUPPORTED_RATES)},
}
DEFAULT_ENCODING = {"twilio": "PCMU", "telnyx": "PCMU", "plivo": plivo.MULAW, "exotel": exotel.RAW}


@dataclass(frozen=True)
class PeerOptions:
    """One simulated carrier call. Invalid values raise ``ConfigError``."""

    carrier: str
    rate: int = 8000
    encoding: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    call_id: str = "CA0000"
    #: Telnyx: send every N-th media message after the next one (0: in order).
    reorder_every: int = 0
    #: Telnyx: the stream auth token to send in ``connected``.
    telnyx_token: str | None = None

    def __post_init__(self) -> None:
        if self.carrier not in CARRIER_NAMES:
            raise ConfigError(f"carrier must be one of {', '.join(CARRIER_NAMES)}")
        encoding = self.encoding or DEFAULT_ENCODING[self.carrier]
        known = ENCODINGS[self.carrier]
        if encoding not in known:
            raise ConfigError(f"{self.carrier} encodings are {', '.join(known)}, got {encoding!r}")
        rates = known[encoding][1]
        if self.rate not in rates:
            listed = ", ".join(map(str, rates))
            raise ConfigError(f"{self.carrier} {encoding} rates are {listed}, got {self.rate}")
        if self.reorder_every < 0:
            raise ConfigError("reorder-every must be >= 0")

    @property
    def wire_encoding(self) -> str:
        return self.encoding or DEFAULT_ENCODING[self.carrier]


def stamp_wire(frame: bytes, seq: int, codec: Codec) -> bytes:
    """``seq`` (16 bits) into the LSB of the first 16 wire samples (bit ``i`` in sample
    ``i``); changes no sample by more than one step."""
    out = bytearray(frame)
    width = codec.sample_bytes
    lsb = 1 if codec is L16_BE else 0
    for i in range(STAMP_SAMPLES):
        at = i * width + lsb
        value = out[at]
        if codec is PCMU and value in (0x7E, 0x7F):
            value |= 0x80  # 0x7F does not survive decode + encode; 0xFE/0xFF do
        out[at] = (value & 0xFE) | ((seq >> i) & 1)
    return bytes(out)


def read_wire_stamp(frame: bytes, codec: Codec) -> int:
    """The number :func:`stamp_wire` wrote."""
    width = codec.sample_bytes
    lsb = 1 if codec is L16_BE else 0
    return sum((frame[i * width + lsb] & 1) << i for i in range(STAMP_SAMPLES))


class CarrierPeer:
    """One carrier stream's messages, from the carrier's side."""

    def __init__(self, opts: PeerOptions) -> None:
        self.opts = opts
        self.carrier = opts.carrier
        self.rate = opts.rate
        self.encoding = opts.wire_encoding
        self.codec: Codec = ENCODINGS[opts.carrier][self.encoding][0]
        self.frame_wire_bytes = frame_samples(opts.rate) * self.codec.sample_bytes
        self.inbound_frames = EXOTEL_INBOUND_FRAMES if opts.carrier == "exotel" else 1
        #: Twilio and Telnyx send back the marks still queued when bridge clears.
        self.marks_back_on_clear = opts.carrier in ("twilio", "telnyx")
        self.call_id = opts.call_id
        self.stream_id = {"twilio": "MZ", "telnyx": "", "plivo": "", "exotel": "MZ"}[
            opts.carrier
        ] + f"{opts.call_id}-stream"
        self._seq = 0
        self._chunk = 0
        self._pending: list[bytes] = []
        self._held: str | None = None
        self._media_sent = 0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- carrier -> bridge ----------------------------------------------------------------

    def opening(self) -> list[str]:
        """``connected`` (all but Plivo) and ``start``."""
        opts = self.opts
        params = dict(opts.params)
        if self.carrier == "twilio":
            return [
                twilio.build_connected(),
                twilio.build_start(
                    self._next_seq(),
                    stream_sid=self.stream_id,
                    call_sid=self.call_id,
                    custom=params,
                    account_sid="AC0000",
                ),
            ]
        if self.carrier == "telnyx":
            return [
                telnyx.build_connected(opts.telnyx_token),
                telnyx.build_start(
                    self._next_seq(),
                    stream_id=self.stream_id,
                    call_control_id=self.call_id,
                    encoding=self.encoding,
                    sample_rate=self.rate,
                    custom=params,
                ),
            ]
        if self.carrier == "plivo":
            return [
                plivo.build_start(
                    self._next_seq(),
                    stream_id=self.stream_id,
                    call_id=self.call_id,
                    content_type=self.encoding,
                    rate=self.rate,
                    extra=params,
                )
            ]
        return [
            exotel.build_connected(),
            exotel.build_start(
                self._next_seq(),
                stream_sid=self.stream_id,
                call_sid=self.call_id,
                sample_rate=self.rate,
                custom=params,
            ),
        ]

    def frame(self, wire: bytes) -> list[str]:
        """One 20 ms frame of caller audio (wire-encoded); the messages to send now."""
        self._pending.append(wire)
        if len(self._pending) < self.inbound_frames:
            return []
        return self._media_out()

    def finish(self) -> list[str]:
        """What is still held (a partial Exotel chunk, a Telnyx message sent late)."""
        out = self._media_out() if self._pending else []
        if self._held is not None:
            out.append(self._held)
            self._held = None
        return out

    def _media_out(self) -> list[str]:
        payload = b"".join(self._pending)
        frames = len(self._pending)
        self._pending.clear()
        self._chunk += 1
        timestamp_ms = (self._chunk - 1) * frames * FRAME_MS
        build = {
            "twilio": twilio.build_media,
            "telnyx": telnyx.build_media,
            "plivo": plivo.build_media,
            "exotel": exotel.build_media,
        }[self.carrier]
        message = build(self._next_seq(), self.stream_id, self._chunk, timestamp_ms, payload)
        self._media_sent += 1
        every = self.opts.reorder_every
        if self._held is not None:
            held, self._held = self._held, None
            return [message, held]
        if every and self._media_sent % every == 0:
            self._held = message  # sent after the next one: Telnyx's order is not guaranteed
            return []
        return [message]

    def dtmf(self, digit: str) -> str:
        seq = self._next_seq()
        if self.carrier == "twilio":
            return twilio.build_dtmf(seq, self.stream_id, digit)
        if self.carrier == "telnyx":
            return telnyx.build_dtmf(seq, self.stream_id, digit)
        if self.carrier == "plivo":
            return plivo.build_dtmf(seq, self.stream_id, digit)
        return exotel.build_dtmf(seq, self.stream_id, digit)

    def stop(self) -> str | None:
        """The last message (Plivo has none: it just closes)."""
        seq = self._next_seq()
        if self.carrier == "twilio":
            return twilio.build_stop(seq, self.stream_id, "AC0000", self.call_id)
        if self.carrier == "telnyx":
            return telnyx.build_stop(seq, self.stream_id)
        if self.carrier == "exotel":
            return exotel.build_stop(seq, self.stream_id, self.call_id)
        return None

    def mark_done(self, name: str) -> str:
        """The answer to a mark (checkpoint) whose audio has played."""
        seq = self._next_seq()
        if self.carrier == "twilio":
            return twilio.build_mark(seq, self.stream_id, name)
        if self.carrier == "telnyx":
            return telnyx.build_mark(seq, self.stream_id, name)
        if self.carrier == "plivo":
            return plivo.build_played(seq, self.stream_id, name)
        return exotel.build_mark(seq, self.stream_id, name)

    def cleared(self) -> str | None:
        """The acknowledgement of a clear, where the carrier sends one (Plivo)."""
        if self.carrier == "plivo":
            return plivo.build_cleared(self._next_seq(), self.stream_id)
        return None

    # --- bridge -> carrier ----------------------------------------------------------------

    def read(self, text: str) -> Command:
        """Bridge's message; ``ValueError`` for one this carrier would refuse."""
        try:
            obj: Any = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not JSON: {text[:80]!r}") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object: {text[:80]!r}")
        if self.carrier == "twilio":
            command = twilio.parse_command(obj, self.stream_id)
        elif self.carrier == "telnyx":
            command = telnyx.parse_command(obj, self.stream_id)
        elif self.carrier == "plivo":
            command = plivo.parse_command(obj, self.stream_id, self.encoding, self.rate)
        else:
            command = exotel.parse_command(obj, self.stream_id)
        if command.kind == "media" and not self.media_ok(len(command.payload)):
            raise ValueError(f"a media payload of {len(command.payload)} bytes")
        return command

    def media_ok(self, size: int) -> bool:
        """Whether the carrier takes ``size`` bytes of audio in one message: Exotel's chunk
        rules (docs/carriers.md s.5); whole 20 ms frames for the others (bridge's own rule:
        it never sends anything else, so anything else is a bug worth seeing)."""
        if self.carrier == "exotel" and self.codec is L16_LE:
            return exotel.chunk_ok(size)
        return size > 0 and size % self.frame_wire_bytes == 0


# --- the simulator's hooks ------------------------------------------------------------------

#: Stamped wire frames kept per audio source (as the simulator's own stamp cache).
_WIRE_CACHE = 1024


class _WireCache:
    __slots__ = ("frames", "keys")

    def __init__(self) -> None:
        self.keys = [-1] * _WIRE_CACHE
        self.frames = [b""] * _WIRE_CACHE


#: One cache per (audio source, codec): every call of a load run sends the same frame ``k``.
_CACHES: weakref.WeakKeyDictionary[object, dict[str, _WireCache]] = weakref.WeakKeyDictionary()


class CarrierLink:
    """What the simulator's send and receive paths call for a carrier call: the peer, plus
    frames in the wire encoding, stamped and matched there (see the module doc)."""

    def __init__(self, opts: PeerOptions) -> None:
        self.peer = CarrierPeer(opts)
        self.codec = self.peer.codec
        self.frame_bytes = self.peer.frame_wire_bytes

    def wire_frame(self, source: object, k: int, pcm: bytes, stamp: bool) -> bytes:
        """Frame ``k`` of ``source`` (its PCM is ``pcm``) on the wire, stamped with ``k``."""
        if not stamp:
            return self.codec.encode(pcm)
        caches = _CACHES.setdefault(source, {})
        cache = caches.get(self.codec.name)
        if cache is None:
            cache = caches[self.codec.name] = _WireCache()
        slot = k % _WIRE_CACHE
        if cache.keys[slot] == k:
            return cache.frames[slot]
        frame = stamp_wire(self.codec.encode(pcm), k & 0xFFFF, self.codec)
        cache.keys[slot] = k
        cache.frames[slot] = frame
        return frame

    def read_stamp(self, wire: bytes) -> int:
        return read_wire_stamp(wire, self.codec)

    def to_pcm(self, wire: bytes) -> bytes:
        return self.codec.decode(wire)

    def split(self, payload: bytes) -> list[bytes]:
        """A media payload (whole frames: :meth:`CarrierPeer.media_ok`) as 20 ms frames."""
        size = self.frame_bytes
        return [payload[i : i + size] for i in range(0, len(payload), size)]
