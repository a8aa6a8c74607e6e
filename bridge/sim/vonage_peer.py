"""Vonage's side of a call, sans-I/O: the messages Vonage sends, and what it makes of
bridge's (docs/protocol.md s.1-5). The same interface as ``bridge.sim.carrier_peer``'s
:class:`CarrierPeer`, so the simulator plays every carrier through one code path.

* the opening: one ``websocket:connected`` text with the content type and the NCCO's
  headers flattened in;
* caller audio: binary 20 ms frames (the call sends them itself: no text per frame);
* DTMF as ``websocket:dtmf``; no ``stop`` message (a Vonage call just closes);
* bridge's ``notify`` is answered by ``websocket:notify`` with its payload once playback has
  reached it (the playback model, ``bridge.sim.playback``, says when), ``clear`` by
  ``websocket:cleared``; queued notifies are dropped by a clear, never answered;
* anything else bridge sends as text is not a command: ``ValueError`` (counted, as Vonage
  would ignore it).

Import rule: standard library, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.protocol.carrier import Command
from bridge.protocol.vonage import (
    build_cleared_event,
    build_connected,
    build_dtmf_event,
    build_notify_event,
    parse_command,
)
from bridge.units import frame_bytes


class VonagePeer:
    """One Vonage websocket's messages, from Vonage's side."""

    #: A clear drops queued notifies: they are never answered (docs/protocol.md s.5).
    marks_back_on_clear = False

    def __init__(self, rate: int, headers: Mapping[str, Any]) -> None:
        self.rate = rate
        self.headers = headers
        self.frame_wire_bytes = frame_bytes(rate)
        self._payloads: dict[str, Any] = {}
        self._seq = 0

    def opening(self) -> list[str]:
        return [build_connected(self.rate, self.headers)]

    def dtmf(self, digit: str) -> str:
        return build_dtmf_event(digit)

    def finish(self) -> list[str]:
        """Nothing is held back: every frame was sent as it was made."""
        return []

    def stop(self) -> str | None:
        return None

    def read(self, text: str) -> Command:
        """Bridge's ``clear`` or ``notify``; ``ValueError`` for anything else."""
        command = parse_command(text)
        if command.action == "clear":
            return Command("clear")
        self._seq += 1
        name = str(self._seq)
        self._payloads[name] = command.payload
        return Command("mark", name=name)

    def mark_done(self, name: str) -> str:
        """The answer to a notify, to send once its audio has played."""
        return build_notify_event(self._payloads.pop(name, None))

    def cleared(self) -> str | None:
        self._payloads.clear()
        return build_cleared_event()
