"""A strict fake of AssemblyAI's Universal Streaming v3 (``wss://streaming.assemblyai.com/v3/ws``).

As assemblyai.com/docs documents it (see ``bridge/services/assemblyai.py`` for the pages):

* the upgrade: path ``/v3/ws``; ``speech_model`` is required ("There is no default model"),
  ``sample_rate`` an integer, ``encoding`` ``pcm_s16le`` or ``pcm_mulaw``; the key in
  ``Authorization``; a wrong key: an ``Error`` frame, then close 1008 "Unauthorized
  Connection: ..." ("Common session errors and closures");
* the server speaks first: ``Begin {id, expires_at}``;
* binary audio, each message 50-1000 ms, else ``Error`` 3007 "Input duration violation" and
  close 3007; text messages ``Terminate``, ``ForceEndpoint``, ``KeepAlive``,
  ``UpdateConfiguration``; invalid JSON or another type: ``Error`` 3006 and close 3006;
* ``Turn`` messages: ``end_of_turn: false`` partials as words come, then at the end of a turn
  ``end_of_turn: true`` unformatted and, with ``format_turns=true``, again formatted
  (``turn_is_formatted: true``); ``words[].start/end`` in ms;
* ``Terminate``: the turns in flight, ``Termination {audio_duration_seconds,
  session_duration_seconds}``, close 1000.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.fakes.base import FakeConnection, FakeService, Session
from tests.fakes.recognizer import Result

MIN_CHUNK_MS = 50
MAX_CHUNK_MS = 1000
CLIENT_TYPES = ("Terminate", "ForceEndpoint", "KeepAlive", "UpdateConfiguration")


class AssemblyAIConnection(FakeConnection):
    service: FakeAssemblyAI

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        if session.path != "/v3/ws":
            return 404, "Not Found", []
        query = session.query
        if not query.get("speech_model"):
            return 400, "speech_model is required", []
        if query.get("encoding", "pcm_s16le") not in ("pcm_s16le", "pcm_mulaw"):
            return 400, "unsupported encoding", []
        rate = query.get("sample_rate", "16000")
        if not rate.isdigit():
            return 400, "Sample rate must be a positive integer", []
        self.rate = int(rate)
        return None

    def opened(self) -> None:
        assert self.session is not None
        self.started = time.monotonic()
        self.turn_order = 0
        if self.session.headers.get("authorization") != self.service.key:
            reason = "Unauthorized Connection: Invalid API key"
            self._error(1008, reason)
            return
        self.send_json({"type": "Begin", "id": str(uuid.uuid4()), "expires_at": 1_900_000_000})

    def _error(self, code: int, text: str) -> None:
        self.send_json({"type": "Error", "error_code": code, "error": text})
        self.end(code, text[:120])

    def binary(self, data: bytes, now_ns: int) -> None:
        ms = len(data) / 2 / self.rate * 1000
        if not MIN_CHUNK_MS <= round(ms, 3) <= MAX_CHUNK_MS:
            self.violation(f"a {ms:g} ms audio message")
            self._error(
                3007, f"Input duration violation: {ms:g} ms. Expected between 50 and 1000 ms"
            )
            return
        for result in self.audio(data, now_ns):
            self._turn(result)

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        if not isinstance(message, dict):
            self.violation(f"invalid JSON {raw[:60]!r}")
            self._error(3006, f"Invalid JSON: {raw[:60]}")
            return
        kind = message.get("type")
        if kind not in CLIENT_TYPES:
            self.violation(f"message type {kind!r}")
            self._error(3006, f"Invalid Message Type: {kind}")
            return
        if kind == "Terminate":
            if self.recognizer is not None:
                for result in self.recognizer.flush():
                    self._turn(result)
            assert self.session is not None
            self.send_json(
                {
                    "type": "Termination",
                    "audio_duration_seconds": round(len(self.session.audio) / 2 / self.rate),
                    "session_duration_seconds": round(time.monotonic() - self.started),
                }
            )
            self.end(1000, "")

    def _turn(self, result: Result) -> None:
        words = [
            {
                "start": round(w.start_s * 1000),
                "end": round(w.end_s * 1000),
                "text": w.text,
                "confidence": 0.99,
                "word_is_final": True,
            }
            for w in result.words
        ]
        base = {
            "type": "Turn",
            "turn_order": self.turn_order,
            "end_of_turn_confidence": 0.9 if result.final else 0.1,
            "words": words,
            "utterance": "",
        }
        self.send_json(
            {
                **base,
                "end_of_turn": result.final,
                "turn_is_formatted": False,
                "transcript": result.text,
            }
        )
        assert self.session is not None
        if result.final and self.session.query.get("format_turns") == "true":
            formatted = result.text[:1].upper() + result.text[1:] + "."
            self.send_json(
                {**base, "end_of_turn": True, "turn_is_formatted": True, "transcript": formatted}
            )
        if result.final:
            self.turn_order += 1


class FakeAssemblyAI(FakeService):
    connection_class = AssemblyAIConnection
    path = "/v3/ws"
