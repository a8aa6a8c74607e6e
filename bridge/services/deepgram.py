"""Deepgram live transcription (``--upstream-dialect deepgram``).

Every rule below is from developers.deepgram.com:

* Endpoint ``wss://api.deepgram.com/v1/listen`` ("Live Audio" API reference,
  /reference/speech-to-text/listen-streaming).
* Raw audio needs ``encoding`` and ``sample_rate`` in the query ("Encoding", /docs/encoding:
  "If you are using the Encoding feature, the Sample Rate feature is also required";
  "Determining Your Audio Format for Live Streaming Audio"): ``encoding=linear16`` (16-bit
  little-endian signed PCM), ``sample_rate`` = the rate sent, ``channels=1``.
* ``interim_results=true`` gives interim then final results ("Using Interim Results");
  ``utterance_end_ms`` needs it ("Utterance End"); ``vad_events=true`` adds
  ``SpeechStarted`` ("Speech Started").
* Auth: header ``Authorization: Token <key>`` (API reference; the Python SDK skill: "NOT
  Bearer"); the ``token, <key>`` subprotocol is for browsers only ("Using the
  Sec-WebSocket-Protocol": "only required when making client side connections").
* Audio: binary frames, no setup message.
* Keep-alive: ``{"type":"KeepAlive"}`` as a *text* frame every 3-5 s while no audio flows;
  without audio or KeepAlive for 10 s the service closes with NET-0001 ("Audio Keep Alive",
  /docs/audio-keep-alive). bridge sends one after 3 s without sending anything, then every 3 s.
* End: ``{"type":"CloseStream"}`` makes the service process what it has, send the last
  results and a ``Metadata`` summary, then close ("Close Stream", /docs/close-stream);
  ``Finalize`` flushes without closing ("Finalize"), not needed at the end of a call.
* Results: ``{"type":"Results","channel":{"alternatives":[{"transcript",...}]},"is_final",
  "speech_final","start","duration"}`` (API reference, SDK ``LiveTranscriptionEvent``);
  ``start``/``duration`` are seconds in the stream.
* Errors: a close frame with a code and a payload naming the error: 1008 ``DATA-0000``
  (audio cannot be decoded), 1011 ``NET-0000`` / ``NET-0001`` (timeouts) ("STT
  Troubleshooting WebSocket, NET, and DATA Errors"); a handshake refusal is HTTP 4xx with a
  ``dg-error`` header (changelog 2022-11-08).

Import rule: the standard library and ``bridge.services``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from bridge.services.base import (
    Auth,
    Dialect,
    Ended,
    Info,
    ServiceError,
    ServiceEvent,
    SpeechStarted,
    Transcript,
    compact,
    json_object,
    one_line,
    reason_label,
    seconds,
)

DEFAULT_MODEL = "nova-3"
_ERROR_CODE = re.compile(r"\b([A-Z]{3,4}-\d{4})\b")


class Deepgram(Dialect):
    name: ClassVar[str] = "deepgram"
    key_env: ClassVar[str] = "DEEPGRAM_API_KEY"
    default_url: ClassVar[str] = "wss://api.deepgram.com/v1/listen"
    keepalive_s: ClassVar[float | None] = 3.0

    def query(self) -> list[tuple[str, str]]:
        params = [
            ("encoding", "linear16"),
            ("sample_rate", str(self.rate)),
            ("channels", "1"),
            ("model", self.settings.model or DEFAULT_MODEL),
            ("interim_results", "true"),
            ("punctuate", "true"),
            ("smart_format", "true"),
            ("utterance_end_ms", "1000"),
            ("vad_events", "true"),
        ]
        if self.settings.language:
            params.append(("language", self.settings.language))
        return params

    @classmethod
    def auth(cls, key: str) -> Auth:
        return Auth(headers=(("Authorization", f"Token {key}"),))

    def keepalive(self) -> str:
        return compact({"type": "KeepAlive"})

    def closing(self) -> str:
        super().closing()
        return compact({"type": "CloseStream"})

    def parse(self, message: bytes | str) -> list[ServiceEvent]:
        obj = json_object(message)
        kind = obj.get("type")
        if kind == "Results":
            return self._results(obj)
        if kind == "Metadata":
            info = Info("metadata", {"request_id": obj.get("request_id")})
            return [info, Ended()] if self.closing_sent else [info]
        if kind == "SpeechStarted":
            return [SpeechStarted()]
        if kind == "UtteranceEnd":
            return [Info("utterance end", {"last_word_end": obj.get("last_word_end")})]
        if kind == "Error":
            code = obj.get("variant") or obj.get("err_code") or "Error"
            words = obj.get("description") or obj.get("message") or obj.get("err_msg") or ""
            return [ServiceError(reason_label(code), one_line(str(words)))]
        return [Info("unhandled message", {"type": one_line(str(kind), 40)})]

    def _results(self, obj: dict[str, object]) -> list[ServiceEvent]:
        channel = obj.get("channel")
        alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
        if not isinstance(alternatives, list) or not alternatives:
            return []
        best = alternatives[0]
        text = best.get("transcript") if isinstance(best, dict) else None
        if not isinstance(text, str) or not text.strip():
            return []  # silence: Deepgram sends empty results too
        start = seconds(obj.get("start"))
        duration = seconds(obj.get("duration"))
        end = None if start is None or duration is None else start + duration
        return [Transcript(bool(obj.get("is_final")), text.strip(), "caller", start, end)]

    def on_close(self, code: int | None, reason: str) -> ServiceError | None:
        if code is None or code in (1000, 1001, 1005):
            return None
        match = _ERROR_CODE.search(reason)
        label = match.group(1) if match else f"close {code}"
        return ServiceError(reason_label(label), one_line(reason) or f"closed with {code}")
