"""One carrier call's dialect session: messages in, the Call's inputs out, its output in the
carrier's JSON (docs/carriers.md s.1).

The server (``bridge.server``) hands every text message of a Twilio, Telnyx, Plivo or Exotel
websocket to :meth:`CarrierSession.feed` and gets back what the :class:`~bridge.call.Call`
takes: a ``Connected`` when the stream starts (the call's rate and metadata), 16-bit PCM at
the call's rate for ``Call.feed_audio``, and DTMF / ``Notified`` / ``Cleared`` events for
``Call.feed_event``. The session is also the call's *wire* (``bridge.call.Wire``): every paced
20 ms frame, mark and clear goes out through it as the carrier's JSON.

What it adds to the dialects (``bridge.protocol``), all synchronous and without I/O of its own:

* the codec: G.711 or L16 on the wire, PCM inside (``bridge.audio.codec``);
* order: Telnyx media are put back in ``chunk`` order within a small window;
* notify payloads as mark names: a string payload is the name; anything else travels as its
  JSON text and comes back as the same value;
* clear: marks still pending when bridge clears come back from Twilio and Telnyx at the
  clear; they were not heard, so they are dropped (as Vonage never answers them). Twilio and
  Telnyx have no acknowledgement of a clear, so bridge sends a mark right behind it: the
  buffer is empty by then, so it comes back at once, and becomes ``Cleared``. Plivo answers
  ``clearAudio`` itself (``clearedAudio``); Exotel's clear has no answer (no ``Cleared``);
* Exotel's chunks: frames are joined into chunks of the size Exotel requires; a partial chunk
  is padded with silence when a mark or the end of a prompt comes, or when the audio stops.

Import rule: standard library, ``bridge.audio``, ``bridge.errors``, ``bridge.protocol`` and
``bridge.units``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bridge.audio.codec import L16_BE, L16_LE, PCMA, PCMU, Codec
from bridge.errors import Fault, PeerError
from bridge.protocol.carrier import (
    CarrierError,
    Dialect,
    MarkDone,
    Media,
    Stopped,
    StreamStart,
    loads_object,
)
from bridge.protocol.dialects import DIALECTS, recognize
from bridge.protocol.vonage import Cleared, Connected, Dtmf, Event, Notified, parse_query
from bridge.units import frame_samples

CODECS: dict[str, Codec] = {codec.name: codec for codec in (PCMU, PCMA, L16_LE, L16_BE)}
#: Marks awaiting their answer, per call (as ``bridge.heard`` keeps notify markers).
MAX_PENDING_MARKS = 256
#: Names of the marks bridge sends behind a clear to learn when it took effect.
CLEAR_MARK_PREFIX = "bridge-clear-"

Inbound = Connected | bytes | Event | Stopped | CarrierError


@dataclass
class CarrierStats:
    """What the session saw, for the end-of-call summary."""

    media_in: int = 0
    reordered: int = 0
    late_dropped: int = 0
    gaps_skipped: int = 0
    marks_cleared: int = 0


class Reorder:
    """Puts media back in ``chunk`` order, holding at most ``window`` messages for a gap.

    A gap still open when more than ``window`` later messages are held is skipped (that audio
    is lost); a message older than what was already passed on is dropped.
    """

    def __init__(self, window: int, stats: CarrierStats) -> None:
        self.window = window
        self.stats = stats
        self._next: int | None = None
        self._held: dict[int, bytes] = {}

    def push(self, chunk: int | None, payload: bytes) -> list[bytes]:
        if chunk is None or self.window <= 0:
            return [payload]
        if self._next is None:
            self._next = min(chunk, 1)  # a stream's first chunk is 1: wait for it
        if chunk < self._next or chunk in self._held:
            self.stats.late_dropped += 1
            return []
        if chunk != self._next:
            self.stats.reordered += 1
        self._held[chunk] = payload
        out: list[bytes] = []
        while True:
            while self._next in self._held:
                out.append(self._held.pop(self._next))
                self._next += 1
            if len(self._held) <= self.window:
                return out
            skip_to = min(self._held)
            self.stats.gaps_skipped += skip_to - self._next
            self._next = skip_to

    def flush(self) -> list[bytes]:
        """Everything held, in order (the stream ended)."""
        out = [self._held[chunk] for chunk in sorted(self._held)]
        self._held.clear()
        return out


class CarrierSession:
    """One websocket of a JSON dialect: parser, codec, and the call's wire."""

    def __init__(self, carrier: str | None, send_text: Callable[[str], None], query: str) -> None:
        """``carrier``: the dialect when known (forced, or seen in a first ``start``);
        ``None`` until the ``start`` message names it."""
        self.dialect: Dialect | None = DIALECTS[carrier]() if carrier is not None else None
        self.stats = CarrierStats()
        self.codec: Codec = PCMU
        self.sample_rate = 0
        #: ``bridge.call.Wire``: outbound frames per message (Exotel: a chunk of several).
        self.chunk_frames = 1
        self._send_text = send_text
        self._query = query
        self._reorder = Reorder(0, self.stats)
        self._frame_samples = 0
        self._chunk: list[bytes] = []
        self._marks: dict[str, list[Any]] = {}  # name -> [count pending, payload]
        self._cleared_marks: dict[str, int] = {}
        self._clear_marks: set[str] = set()
        self._clears = 0

    @property
    def name(self) -> str:
        return self.dialect.name if self.dialect is not None else "carrier"

    @property
    def started(self) -> bool:
        return self.dialect is not None and self.dialect.start is not None

    # --- carrier -> bridge ----------------------------------------------------------------

    def feed(self, text: str) -> list[Inbound]:
        """One text message from the carrier; raises ``PeerError`` for invalid ones."""
        fault = Fault.INVALID_EVENT if self.started else Fault.FIRST_MESSAGE_NOT_JSON
        obj = loads_object(text, fault)
        dialect = self.dialect
        if dialect is None:
            event = obj.get("event")
            if event == "media":
                raise PeerError(Fault.MEDIA_BEFORE_START)
            if event != "start":
                return []
            cls = recognize(obj)
            if cls is None:
                raise PeerError(Fault.INVALID_START, "it matches no carrier's start message")
            dialect = self.dialect = cls()
        out: list[Inbound] = []
        for item in dialect.parse(obj):
            if isinstance(item, Media):
                self.stats.media_in += 1
                for payload in self._reorder.push(item.chunk, item.payload):
                    out.append(self.codec.decode(payload))
            elif isinstance(item, MarkDone):
                event_out = self._mark_done(item.name)
                if event_out is not None:
                    out.append(event_out)
            elif isinstance(item, StreamStart):
                out.append(self._started(dialect, item))
            elif isinstance(item, Stopped):
                out.extend(self.codec.decode(p) for p in self._reorder.flush())
                out.append(item)
            else:
                out.append(item)  # Dtmf, Cleared, CarrierError
        return out

    def _started(self, dialect: Dialect, start: StreamStart) -> Connected:
        self.codec = CODECS[start.encoding]
        self.sample_rate = start.sample_rate
        self._frame_samples = frame_samples(start.sample_rate)
        self.chunk_frames = dialect.chunk_frames(start.sample_rate)
        self._reorder = Reorder(dialect.reorder_window, self.stats)
        return Connected(
            sample_rate=start.sample_rate,
            metadata=start.metadata,
            query=MappingProxyType(parse_query(self._query)),
        )

    def _mark_done(self, name: str) -> Event | None:
        if name in self._clear_marks:
            self._clear_marks.discard(name)
            return Cleared() if not self._clear_marks else None
        cleared = self._cleared_marks.get(name, 0)
        if cleared:
            # Sent before a clear: dropped unheard (docs/carriers.md s.1).
            self._cleared_marks[name] = cleared - 1
            self.stats.marks_cleared += 1
            return None
        entry = self._marks.get(name)
        if entry is None:
            return Notified(name)
        entry[0] -= 1
        if entry[0] <= 0:
            del self._marks[name]
        return Notified(entry[1])

    # --- bridge -> carrier: the call's wire -------------------------------------------------

    def send_audio(self, frame: bytes) -> None:
        """One paced 20 ms frame of PCM at the call's rate."""
        assert self.dialect is not None
        data = self.codec.encode(frame)
        if self.chunk_frames == 1:
            self._send_text(self.dialect.media(data))
            return
        chunk = self._chunk
        chunk.append(data)
        if len(chunk) >= self.chunk_frames:
            self._send_text(self.dialect.media(b"".join(chunk)))
            chunk.clear()

    @property
    def pending_frames(self) -> int:
        """Frames waiting for the rest of their chunk (Exotel)."""
        return len(self._chunk)

    def flush(self) -> int:
        """Send a partial chunk padded with silence; returns the silent frames added."""
        chunk = self._chunk
        if not chunk or self.dialect is None:
            return 0
        padding = self.chunk_frames - len(chunk)
        chunk.append(self.codec.silence(padding * self._frame_samples))
        self._send_text(self.dialect.media(b"".join(chunk)))
        chunk.clear()
        return padding

    def send_mark(self, payload: Any) -> None:
        """A notify marker, as a mark (checkpoint) named for its payload."""
        assert self.dialect is not None
        name = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        entry = self._marks.get(name)
        if entry is None:
            if len(self._marks) >= MAX_PENDING_MARKS:
                del self._marks[next(iter(self._marks))]  # the oldest will not be answered
            self._marks[name] = [1, payload]
        else:
            entry[0] += 1
        self._send_text(self.dialect.mark(name))

    def send_clear(self) -> None:
        """Barge-in: the carrier drops what it buffered; a partial chunk is dropped here."""
        dialect = self.dialect
        assert dialect is not None
        self._chunk.clear()
        for name, (count, _) in self._marks.items():
            if len(self._cleared_marks) < MAX_PENDING_MARKS or name in self._cleared_marks:
                self._cleared_marks[name] = self._cleared_marks.get(name, 0) + count
        self._marks.clear()
        self._send_text(dialect.clear())
        if dialect.name in ("twilio", "telnyx"):
            self._clears += 1
            name = f"{CLEAR_MARK_PREFIX}{self._clears}"
            if len(self._clear_marks) >= MAX_PENDING_MARKS:
                self._clear_marks.clear()  # never answered: stop waiting for them
            self._clear_marks.add(name)
            self._send_text(dialect.mark(name))


__all__ = ["CODECS", "CarrierSession", "CarrierStats", "Dtmf", "Inbound", "Reorder"]
